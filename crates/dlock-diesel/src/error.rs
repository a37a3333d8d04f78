//! Diesel's errors in the core's terms.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use dlock_core::{Dialect, QueryError, QueryErrorKind};

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
/// failure, reported as "not acquired") by code on PostgreSQL and MySQL/MariaDB, so
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
            _ if message == "deadlock detected" => "40P01",
            // Not transient: a waiting `acquire` must stop on it rather than retry.
            _ if message.starts_with("permission denied") => "42501",
            _ => return None,
        },
        Dialect::Mysql => {
            if message.starts_with("Table '") && message.ends_with("' doesn't exist") {
                "1146"
            } else if message.starts_with("Deadlock found when trying to get lock") {
                "1213"
            } else if message.contains(" command denied to user ") {
                // Not transient: a waiting `acquire` must stop on it rather than retry.
                "1142"
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(code.to_owned())
}
