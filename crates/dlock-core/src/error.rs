//! The one error type of dlock.

use std::fmt;
use std::time::Duration;

use crate::adapter::{QueryError, QueryErrorKind};
use crate::dialect::{self, Refusal};
use crate::{FencingToken, Holder, LossReason};

/// A `Result` whose error defaults to dlock's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with a message that says what to do.
///
/// A database error's message ends with the database's own ("permission denied for
/// table …", "Connection refused") and its code, so the first line a user sees names the
/// cause. It is therefore not also returned by [`source`](std::error::Error::source),
/// which is `None` for every variant: printers that walk the chain (`anyhow`, logging)
/// print it once. The driver's error is in the variant's `source` field, whose
/// [`code`](QueryError::code) is the database's error code.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The lock name was empty.
    EmptyName,

    /// The lock name is longer than the dialect can store in a key.
    NameTooLong {
        /// The length of the name in bytes (UTF-8).
        len: usize,
        /// The longest name the dialect accepts, in bytes.
        max: usize,
        /// The dialect's name.
        dialect: &'static str,
    },

    /// The table name is not a plain SQL identifier.
    InvalidTableName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An option is out of range.
    InvalidOption(String),

    /// No connection to the database could be made.
    Unreachable {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        source: QueryError,
    },

    /// The database rejected the credentials of the pool (a wrong password, an unknown
    /// user). Permanent: retrying cannot help until the configuration changes.
    Authentication {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        source: QueryError,
    },

    /// The database user lacks a privilege dlock needs on the lock table (or its schema
    /// or database). Permanent: retrying cannot help until an administrator grants it.
    PermissionDenied {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        source: QueryError,
    },

    /// The connection pool had no free connection in time.
    PoolExhausted {
        /// What dlock was doing.
        action: &'static str,
        /// The pool's error.
        source: QueryError,
    },

    /// A statement failed on the database.
    Database {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        source: QueryError,
    },

    /// The lock table did not exist and could not be created.
    CreateTable {
        /// The table's name.
        table: String,
        /// The driver's error.
        source: QueryError,
    },

    /// [`acquire`](crate::DistributedLock::acquire) gave up after the acquire timeout.
    Timeout {
        /// The lock's name.
        name: String,
        /// How long it waited.
        waited: Duration,
        /// The holder seen last, if one was seen.
        holder: Option<Holder>,
    },

    /// The lock was lost while held: its lease could not be renewed in time, or someone
    /// else took it over.
    Lost {
        /// The lock's name.
        name: String,
        /// The fencing token of the lost acquisition.
        token: FencingToken,
        /// Why it was lost.
        reason: LossReason,
    },

    /// The lock table does not exist (an operation of [`LockAdmin`](crate::LockAdmin),
    /// which never creates it implicitly).
    NoSuchTable {
        /// The table's name.
        table: String,
    },

    /// The lock table was created before elections and has no `value` column, which an
    /// [`Election`](crate::Election) needs to publish its leader's value. Plain locks
    /// keep working on it. dlock never alters a table by itself: the roles it needs
    /// (SELECT, INSERT, UPDATE) cannot, and on PostgreSQL an `ALTER TABLE` waits behind
    /// every open fenced transaction while blocking every statement on the table, the
    /// renewals of every holder among them.
    NoValueColumn {
        /// The table's name.
        table: String,
        /// The statements that add the columns
        /// ([`Dialect::add_value_columns_sql`](crate::Dialect::add_value_columns_sql)).
        sql: String,
    },

    /// The lock table has no row for this name: it was never acquired.
    NoSuchLock {
        /// The name looked for.
        name: String,
        /// The lock table.
        table: String,
    },

    /// A force release was refused: the lock's fencing token is no longer the one given,
    /// so the acquisition it named has ended and the lock may belong to someone else.
    TokenChanged {
        /// The lock's name.
        name: String,
        /// The token given.
        expected: FencingToken,
        /// The lock's token now.
        current: FencingToken,
        /// The holder recorded with the current token.
        holder: Option<String>,
    },

    /// Text that should have been a fencing token is not one.
    InvalidToken {
        /// The text given.
        input: String,
    },

    /// A fenced transaction found that this acquisition no longer holds the lock.
    Fenced {
        /// The lock's name.
        name: String,
        /// The fencing token the transaction was fenced with.
        token: FencingToken,
    },

    /// A [`Semaphore`](crate::Semaphore) was built with another number of permits than
    /// the one its name was defined with (by the first process that used it). The count
    /// is part of the name's definition: a mix would let more holders in than either
    /// count says.
    PermitsMismatch {
        /// The semaphore's name.
        name: String,
        /// The permits this caller asked for.
        requested: u32,
        /// The permits recorded for the name.
        defined: i64,
    },
}

impl Error {
    /// The error of a failed attempt to do `action` (lowercase, e.g. "fence the
    /// transaction"), classified by the adapter's error: its kind, and its code for
    /// refused credentials and privileges, which come first since a wrong password is
    /// reported when a connection is opened, which adapters call unreachable. For
    /// adapters' own statements (fencing).
    pub fn query(action: &'static str, source: QueryError) -> Self {
        if lost_prepared_statement(&source) {
            // The server answered: whatever the adapter called it, it is reachable.
            return Self::Database { action, source };
        }
        match dialect::refusal(&source) {
            Some(Refusal::Authentication) => return Self::Authentication { action, source },
            Some(Refusal::Privilege) => return Self::PermissionDenied { action, source },
            None => {}
        }
        match source.kind() {
            QueryErrorKind::Unreachable => Self::Unreachable { action, source },
            QueryErrorKind::PoolExhausted => Self::PoolExhausted { action, source },
            _ => Self::Database { action, source },
        }
    }

    /// The error of a `CREATE TABLE` of `table` that failed with `source`.
    pub(crate) fn create_table(table: &crate::TableName, source: QueryError) -> Self {
        match source.kind() {
            // The table may well exist: the pooler lost the statement, not the table.
            QueryErrorKind::Statement if lost_prepared_statement(&source) => {
                Self::query("create the lock table", source)
            }
            QueryErrorKind::Statement => Self::CreateTable {
                table: table.to_string(),
                source,
            },
            _ => Self::query("create the lock table", source),
        }
    }

    /// Whether retrying the same operation later may succeed: the database or the pool
    /// is away or busy, or a statement failed in a way that passes (a lock wait timeout, a
    /// deadlock, a lost connection). Not refused credentials or privileges, bad input, or
    /// a database error that would fail the same way again (a NUL byte in a text).
    ///
    /// The same rule decides whether a waiting [`acquire`](crate::DistributedLock::acquire)
    /// rides out an error or ends with it.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::PoolExhausted { .. } => true,
            Self::Database { source, .. } => Self::database_is_transient(source),
            _ => false,
        }
    }

    /// Whether a statement's failure may pass: a connection that broke or a statement
    /// abandoned unanswered (no code), or a code its dialect calls transient.
    fn database_is_transient(source: &QueryError) -> bool {
        source.code().is_none() || dialect::is_transient_in_any(source)
    }

    /// Whether the statement that failed may have committed before the failure reached us
    /// (the connection broke on the way back): only then is a retry's "nothing to do"
    /// ambiguous.
    pub(crate) fn may_have_committed(&self) -> bool {
        matches!(self, Self::Database { .. })
    }
}

/// Whether `source` is PostgreSQL's answer to a prepared statement that is not on the
/// server connection as the client believes: prepared already (42P05), missing (26000),
/// or another with other parameters (08P01, "bind message supplies …"). Behind a pooler in
/// transaction mode, named statements meet other clients' server connections.
fn lost_prepared_statement(source: &QueryError) -> bool {
    match source.code() {
        Some("42P05" | "26000") => true,
        Some("08P01") => source.to_string().contains("prepared statement"),
        _ => false,
    }
}

/// Written by hand rather than derived: `thiserror` would also return every field named
/// `source` from [`source`](std::error::Error::source), and the messages already print it.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName
            | Self::NameTooLong { .. }
            | Self::InvalidTableName { .. }
            | Self::InvalidOption(_)
            | Self::InvalidToken { .. }
            | Self::PermitsMismatch { .. } => self.fmt_input(f),
            Self::Unreachable { .. }
            | Self::Authentication { .. }
            | Self::PermissionDenied { .. }
            | Self::PoolExhausted { .. }
            | Self::Database { .. }
            | Self::CreateTable { .. } => self.fmt_database(f),
            Self::Timeout { .. }
            | Self::Lost { .. }
            | Self::NoSuchTable { .. }
            | Self::NoValueColumn { .. }
            | Self::NoSuchLock { .. }
            | Self::TokenChanged { .. }
            | Self::Fenced { .. } => self.fmt_lock(f),
        }
    }
}

impl Error {
    /// A bad name, option or token given by the user.
    fn fmt_input(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyName => {
                f.write_str("the lock name is empty; give every lock a non-empty name")
            }
            Self::NameTooLong { len, max, dialect } => write!(
                f,
                "the lock name is {len} bytes long, but {dialect} keys hold at most {max} \
                     bytes; use a shorter name (a hash of a long one works)"
            ),
            Self::InvalidTableName { name, reason } => write!(
                f,
                "invalid lock table name {name:?}: {reason} (expected `table` or \
                     `schema.table`, e.g. the default `distributed_lock`)"
            ),
            Self::InvalidOption(reason) => write!(f, "invalid lock option: {reason}"),
            Self::InvalidToken { input } => write!(
                f,
                "{input:?} is not a fencing token; tokens are positive whole numbers, as \
                     listed with each lock"
            ),
            Self::PermitsMismatch {
                name,
                requested,
                defined,
            } => write!(
                f,
                "the semaphore {name:?} has {defined} permits, but this process asked for \
                     {requested}; every process must use the same count. To change it, stop \
                     every process using the old count, then remove the definition \
                     (`dlock release --semaphore {name:?} --definition`, or \
                     `LockAdmin::remove_semaphore`) and start them with the new one"
            ),
            _ => unreachable!("BUG: {self:?} is not an error of this kind"),
        }
    }

    /// A statement that failed in the database, or never reached it.
    fn fmt_database(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable { action, source } => write!(
                f,
                "cannot reach the database to {action}: {source}; check that the server is \
                     running and that the URL, host, port and credentials of your pool are right"
            ),
            Self::Authentication { action, source } => write!(
                f,
                "the database refused the credentials of your pool to {action}: {source}; \
                     check the user name and password in the pool's URL or configuration \
                     (retrying will not help)"
            ),
            Self::PermissionDenied { action, source } => write!(
                f,
                "the database user of your pool lacks a privilege to {action}: {source}; an \
                     administrator must grant it SELECT, INSERT and UPDATE on the lock table \
                     (and, on PostgreSQL, USAGE on its schema), e.g. `GRANT SELECT, INSERT, \
                     UPDATE ON distributed_lock TO <user>` for the default table; for \
                     semaphores and reader-writer locks, DELETE too on its companion table \
                     (`distributed_lock_slots`; `dlock init --print-sql --companion` prints it)"
            ),
            Self::PoolExhausted { action, source } => write!(
                f,
                "the connection pool had no free connection to {action}: {source}; raise the \
                     pool's size or its wait timeout, or hold fewer connections across long jobs"
            ),
            Self::Database { action, source } if lost_prepared_statement(source) => write!(
                f,
                "the database failed to {action}: {source}; a prepared statement was not on \
                     the server connection that ran it, as happens behind a pooler in \
                     transaction mode (PgBouncer) that does not keep prepared statements: tell \
                     the adapter (`through_pooler(TransactionPooler::LosesPreparedStatements)`), \
                     or set PgBouncer's `max_prepared_statements` (1.21 and later)"
            ),
            Self::Database { action, source } => {
                let advice = if Self::database_is_transient(source) {
                    "it may pass if tried again"
                } else {
                    "it will fail the same way until its cause is fixed"
                };
                write!(f, "the database failed to {action}: {source}; {advice}")
            }
            Self::CreateTable { table, source } => write!(
                f,
                "the lock table {table} does not exist and could not be created: {source}; \
                     have an administrator create it (`dlock init --print-sql` prints the \
                     statement, `Dialect::create_table_sql` returns it) or let the database \
                     user create tables in that schema"
            ),
            _ => unreachable!("BUG: {self:?} is not an error of this kind"),
        }
    }

    /// The lock, or the row an administrator named, was not as expected.
    fn fmt_lock(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout {
                name,
                waited,
                holder,
            } => {
                write!(f, "timed out after {waited:?} waiting for lock {name:?}")?;
                if let Some(holder) = holder {
                    write!(f, ", held by {holder}")?;
                }
                f.write_str(
                    "; raise the acquire timeout or find out why the holder keeps it so long",
                )
            }
            Self::Lost {
                name,
                token,
                reason,
            } => write!(
                f,
                "lock {name:?} (fencing token {token}) was lost: {reason}; the work done under \
                     it may overlap with the next holder's, so make it idempotent or fence its \
                     writes"
            ),
            Self::NoSuchTable { table } => write!(
                f,
                "the lock table {table} does not exist in this database; check the database \
                     and the table name, or create the table (`LockAdmin::create_table`, `dlock \
                     init`)"
            ),
            Self::NoValueColumn { table, sql } => write!(
                f,
                "the lock table {table} has no `value` column: it was created before \
                     elections (plain locks keep working on it); to hold elections in it, have \
                     a role allowed to alter the table run `{sql}`"
            ),
            Self::NoSuchLock { name, table } => write!(
                f,
                "there is no lock named {name:?} in table {table}; list the locks to see their \
                     names"
            ),
            Self::TokenChanged {
                name,
                expected,
                current,
                holder,
            } => token_changed(f, name, *expected, *current, holder.as_deref()),
            Self::Fenced { name, token } => write!(
                f,
                "fenced write refused: lock {name:?} is no longer held with fencing token \
                     {token}; roll back this transaction and do not retry it under the lost lock"
            ),
            _ => unreachable!("BUG: {self:?} is not an error of this kind"),
        }
    }
}

/// The message of [`Error::TokenChanged`].
fn token_changed(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    expected: FencingToken,
    current: FencingToken,
    holder: Option<&str>,
) -> fmt::Result {
    write!(
        f,
        "lock {name:?} was not released: its fencing token is now {current}"
    )?;
    if let Some(holder) = holder {
        write!(f, " (holder {holder})")?;
    }
    if expected > current {
        // A token the lock has never had: mistyped, or from another lock.
        write!(
            f,
            ", older than the {expected} given, which this lock has never had; check the \
             token (and the lock's name and table) with `inspect`"
        )
    } else {
        write!(
            f,
            ", not {expected}, so it changed hands since that token was read; inspect it \
             again and, if it still needs freeing, release it with the current token"
        )
    }
}

/// No [`source`](std::error::Error::source): each message includes its cause (see
/// [`Error`]).
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::Dialect;

    /// Issue 19, item 8: a token the lock never had is not "changed hands".
    #[test]
    fn a_token_newer_than_the_locks_is_told_apart_from_one_that_changed_hands() {
        let refused = |expected, current| {
            Error::TokenChanged {
                name: "job".into(),
                expected: FencingToken(expected),
                current: FencingToken(current),
                holder: None,
            }
            .to_string()
        };
        let mistyped = refused(70, 7);
        assert!(mistyped.contains("never had"), "{mistyped}");
        assert!(!mistyped.contains("changed hands"), "{mistyped}");
        let stale = refused(6, 7);
        assert!(stale.contains("changed hands"), "{stale}");
    }

    fn statement_error(code: &str) -> QueryError {
        QueryError::new(
            QueryErrorKind::Statement,
            Some(code.into()),
            "from the server",
        )
    }

    /// `Error::is_transient` decides a user's retry loop; `Dialect::is_transient` a
    /// waiting `acquire`. They must agree for every code a dialect reports, although an
    /// `Error` does not know its dialect.
    #[test]
    fn is_transient_agrees_with_the_dialect_that_reported_the_code() {
        let codes: &[(Dialect, &str, bool)] = &[
            (Dialect::Postgres, "40001", true),
            (Dialect::Postgres, "40P01", true),
            (Dialect::Postgres, "08006", true),
            (Dialect::Postgres, "53300", true),
            (Dialect::Postgres, "57P01", true),
            (Dialect::Postgres, "55P03", true),
            (Dialect::Postgres, "25006", true), // a standby, during a failover
            (Dialect::Postgres, "22021", false), // a NUL byte in a text
            (Dialect::Postgres, "42601", false),
            (Dialect::Postgres, "42501", false),
            (Dialect::Postgres, "28P01", false),
            (Dialect::Postgres, "28000", false),
            (Dialect::Mysql, "1205", true),
            (Dialect::Mysql, "1213", true),
            (Dialect::Mysql, "1040", true),
            (Dialect::Mysql, "2013", true),
            (Dialect::Mysql, "1142", false),
            (Dialect::Mysql, "1045", false),
            (Dialect::Mysql, "1064", false),
            // A MySQL number that starts like a PostgreSQL class, and one that SQLite's
            // busy mask would match.
            (Dialect::Mysql, "4025", false),
            (Dialect::Mysql, "1030", false),
            (Dialect::Sqlite, "5", true),
            (Dialect::Sqlite, "517", true),
            (Dialect::Sqlite, "6", true),
            (Dialect::Sqlite, "8", false),
            (Dialect::Sqlite, "19", false),
        ];
        for &(dialect, code, transient) in codes {
            let source = statement_error(code);
            assert_eq!(dialect.is_transient(&source), transient, "{dialect} {code}");
            let error = Error::query("acquire the lock", source);
            assert_eq!(error.is_transient(), transient, "{dialect} {code}: {error}");
        }
    }

    /// A wrong password is reported when a connection is opened, which adapters call
    /// unreachable; it must not be retried as if the server were down.
    #[test]
    fn a_prepared_statement_a_pooler_lost_is_named_as_such_not_a_missing_table_or_server() {
        let lost = [
            ("42P05", "prepared statement \"sqlx_s_1\" already exists"),
            ("26000", "prepared statement \"s318\" does not exist"),
            (
                "08P01",
                "bind message supplies 1 parameters, but prepared statement \"s6\" requires 5",
            ),
        ];
        let table = crate::TableName::parse("distributed_lock").unwrap();
        for (code, message) in lost {
            for kind in [QueryErrorKind::Unreachable, QueryErrorKind::Statement] {
                let source = || QueryError::new(kind, Some(code.into()), message);
                for error in [
                    Error::query("acquire the lock", source()),
                    Error::create_table(&table, source()),
                ] {
                    assert!(matches!(error, Error::Database { .. }), "{code}: {error:?}");
                    let text = error.to_string();
                    assert!(text.contains("through_pooler"), "{text}");
                    assert!(!text.contains("could not be created"), "{text}");
                }
            }
        }
        let other_protocol_violation = QueryError::new(
            QueryErrorKind::Statement,
            Some("08P01".into()),
            "invalid frame",
        );
        let error = Error::query("acquire the lock", other_protocol_violation);
        assert!(!error.to_string().contains("through_pooler"), "{error}");
    }

    #[test]
    fn refused_credentials_are_permanent_wherever_they_are_reported() {
        for code in ["28P01", "28000", "1045", "1698"] {
            for kind in [QueryErrorKind::Unreachable, QueryErrorKind::Statement] {
                let source = QueryError::new(kind, Some(code.into()), "access denied");
                let error = Error::query("acquire the lock", source);
                assert!(
                    matches!(error, Error::Authentication { .. }),
                    "{code}: {error:?}"
                );
                assert!(!error.is_transient(), "{code}");
                assert!(error.to_string().contains("password"), "{error}");
            }
        }
    }

    #[test]
    fn missing_privileges_are_permanent_and_say_what_to_grant() {
        for code in ["42501", "1142", "1143", "1044", "1227"] {
            let error = Error::query("acquire the lock", statement_error(code));
            assert!(
                matches!(error, Error::PermissionDenied { .. }),
                "{code}: {error:?}"
            );
            assert!(!error.is_transient(), "{code}");
            assert!(
                error
                    .to_string()
                    .contains("GRANT SELECT, INSERT, UPDATE ON distributed_lock"),
                "{error}"
            );
        }
        // MySQL's SQLSTATE for 1142 is also that of syntax errors: not a privilege.
        let error = Error::query("acquire the lock", statement_error("42000"));
        assert!(matches!(error, Error::Database { .. }), "{error:?}");
    }

    /// The database's message is on the first line, and printed once by a printer that
    /// walks the chain.
    #[test]
    fn the_message_names_the_cause_once() {
        let source = QueryError::new(
            QueryErrorKind::Statement,
            Some("22021".into()),
            "invalid byte sequence for encoding \"UTF8\": 0x00",
        );
        let error = Error::query("acquire the lock", source);
        let message = error.to_string();
        assert!(
            message.starts_with(
                "the database failed to acquire the lock: invalid byte sequence for encoding \
                 \"UTF8\": 0x00 (code 22021); "
            ),
            "{message}"
        );
        assert!(error.source().is_none());
        assert!(!message.ends_with('.'), "{message}");
    }
}
