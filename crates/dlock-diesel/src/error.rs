//! Diesel's errors in the core's terms.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use dlock_core::Dialect;
use dlock_core::adapter::{QueryError, QueryErrorKind};

/// A statement that reached the server (or whose connection broke while it ran).
pub(crate) fn statement_error(dialect: Dialect, error: DieselError) -> QueryError {
    let code = database_code(dialect, &error);
    QueryError::new(QueryErrorKind::Statement, code, error)
}

/// The database's error code, for the few errors the core acts on.
///
/// diesel-async drops the code: it keeps a [`DatabaseErrorKind`] (a handful of
/// constraint and transaction kinds) and the server's message, and neither the SQLSTATE
/// of tokio-postgres nor the error number of mysql_async survives. The core recognises a
/// missing lock table (to create it) and a lost race (a deadlock or serialization
/// failure, reported as "not acquired"), and a lock table from before elections (a
/// missing `value` column), by code on PostgreSQL and MySQL/MariaDB, so
/// those codes are recovered here from the kind and from the server's message. Server
/// messages are English unless the server is configured otherwise (`lc_messages`); with
/// translated messages the lock table is not created on first use — create it at start-up
/// with `DistributedLock::create_table` — and a lost race on a new name is an error
/// instead of "not acquired". SQLite has no codes the core uses: it reads the message.
pub(crate) fn database_code(dialect: Dialect, error: &DieselError) -> Option<String> {
    let DieselError::DatabaseError(kind, info) = error else {
        return None;
    };
    let message = info.message();
    let code = match dialect {
        Dialect::Postgres => match kind {
            DatabaseErrorKind::SerializationFailure => "40001",
            _ if message.starts_with("relation ") && message.ends_with(" does not exist") => {
                "42P01"
            }
            _ if message.starts_with("schema ") && message.ends_with(" does not exist") => "3F000",
            _ if message.starts_with("column ") && message.ends_with(" does not exist") => "42703",
            _ if message == "deadlock detected" => "40P01",
            // Prepared statements a pooler in transaction mode lost (see dlock-core's
            // advice for these codes).
            _ if message.contains("prepared statement") && message.ends_with(" already exists") => {
                "42P05"
            }
            _ if message.contains("prepared statement") && message.ends_with(" does not exist") => {
                "26000"
            }
            _ if message.starts_with("bind message supplies") => "08P01",
            // Refusals: not transient, so a waiting `acquire` stops on them rather than
            // retry, and the message says what to fix. Credentials are refused when a
            // connection is opened (see `connection_error`).
            _ if message.starts_with("permission denied") => "42501",
            _ if message.starts_with("password authentication failed") => "28P01",
            _ if message.starts_with("role \"") && message.ends_with("\" does not exist") => {
                "28000"
            }
            _ if message.starts_with("no pg_hba.conf entry") => "28000",
            _ => return None,
        },
        Dialect::Mysql => {
            if message.starts_with("Table '") && message.ends_with("' doesn't exist") {
                "1146"
            } else if message.starts_with("Unknown column '") {
                "1054"
            } else if message.starts_with("Deadlock found when trying to get lock") {
                "1213"
            } else if message == "Subquery returns more than 1 row" {
                // How a multi-lock's acquire refuses when a name is not free.
                "1242"
            } else if message.contains(" command denied to user ") {
                "1142"
            } else if message.starts_with("Access denied for user ") {
                // 1044 names the database the user may not use; 1045 is a wrong password.
                if message.contains(" to database '") {
                    "1044"
                } else {
                    "1045"
                }
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(code.to_owned())
}

/// A connection that could not be opened. The server's refusals (a wrong password, an
/// unknown user) keep their code, so that the core reports them as permanent and not as
/// an unreachable server: with Diesel both are otherwise one `ConnectionError`. Pools
/// open connections; a connection passed alone comes open.
#[cfg(any(feature = "deadpool", feature = "bb8"))]
pub(crate) fn connection_error(
    dialect: Dialect,
    error: &diesel::ConnectionError,
) -> Option<String> {
    match error {
        diesel::ConnectionError::CouldntSetupConfiguration(error) => database_code(dialect, error),
        _ => None,
    }
}
