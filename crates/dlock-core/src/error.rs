//! The one error type of dlock.

use std::time::Duration;

use crate::query::{QueryError, QueryErrorKind};
use crate::{FencingToken, LossReason};

/// A `Result` whose error defaults to dlock's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each with a message that says what to do.
///
/// Database errors carry the driver's error as their [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name was empty.
    #[error("the lock name is empty; give every lock a non-empty name")]
    EmptyName,

    /// The lock name is longer than the dialect can store in a key.
    #[error(
        "the lock name is {len} bytes long, but {dialect} keys hold at most {max} bytes; \
         use a shorter name (a hash of a long one works)"
    )]
    NameTooLong {
        /// The length of the name in bytes (UTF-8).
        len: usize,
        /// The longest name the dialect accepts, in bytes.
        max: usize,
        /// The dialect's name.
        dialect: &'static str,
    },

    /// The table name is not a plain SQL identifier.
    #[error(
        "invalid lock table name {name:?}: {reason} (expected `table` or `schema.table`, \
         e.g. the default `distributed_lock`)"
    )]
    InvalidTableName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An option is out of range.
    #[error("invalid lock option: {0}")]
    InvalidOption(String),

    /// No connection to the database could be made.
    #[error(
        "cannot reach the database to {action}; check that the server is running and that \
         the URL, host, port and credentials of your pool are right"
    )]
    Unreachable {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: QueryError,
    },

    /// The connection pool had no free connection in time.
    #[error(
        "the connection pool had no free connection to {action}; raise the pool's size or \
         its wait timeout, or hold fewer connections across long jobs"
    )]
    PoolExhausted {
        /// What dlock was doing.
        action: &'static str,
        /// The pool's error.
        #[source]
        source: QueryError,
    },

    /// A statement failed on the database.
    #[error("the database failed to {action}")]
    Database {
        /// What dlock was doing.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: QueryError,
    },

    /// The lock table did not exist and could not be created.
    #[error(
        "the lock table {table} does not exist and could not be created; create it \
         yourself or let the database user create tables in that schema"
    )]
    CreateTable {
        /// The table's name.
        table: String,
        /// The driver's error.
        #[source]
        source: QueryError,
    },

    /// [`acquire`](crate::DistributedLock::acquire) gave up after the acquire timeout.
    #[error(
        "timed out after {waited:?} waiting for lock {name:?}{}; raise the acquire timeout \
         or find out why the holder keeps it so long",
        holder.as_deref().map(|h| format!(", held by {h}")).unwrap_or_default()
    )]
    Timeout {
        /// The lock's name.
        name: String,
        /// How long it waited.
        waited: Duration,
        /// The holder seen last, if one was seen.
        holder: Option<String>,
    },

    /// The lock was lost while held: its lease could not be renewed in time, or someone
    /// else took it over.
    #[error(
        "lock {name:?} (fencing token {token}) was lost: {reason}; the work done under it \
         may overlap with the next holder's, so make it idempotent or fence its writes"
    )]
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
    #[error(
        "the lock table {table} does not exist in this database; check the database and \
         the table name, or create the table (`LockAdmin::create_table`, `dlock init`)"
    )]
    NoSuchTable {
        /// The table's name.
        table: String,
    },

    /// The lock table has no row for this name: it was never acquired.
    #[error("there is no lock named {name:?} in table {table}; list the locks to see their names")]
    NoSuchLock {
        /// The name looked for.
        name: String,
        /// The lock table.
        table: String,
    },

    /// A force release was refused: the lock's fencing token is no longer the one given,
    /// so the acquisition it named has ended and the lock may belong to someone else.
    #[error(
        "lock {name:?} was not released: its fencing token is now {current}{}, not \
         {expected}, so it changed hands since that token was read; inspect it again and, \
         if it still needs freeing, release it with the current token",
        holder.as_deref().map(|h| format!(" (holder {h})")).unwrap_or_default()
    )]
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
    #[error(
        "{input:?} is not a fencing token; tokens are positive whole numbers, as listed \
         with each lock"
    )]
    InvalidToken {
        /// The text given.
        input: String,
    },

    /// A fenced transaction found that this acquisition no longer holds the lock.
    #[error(
        "fenced write refused: lock {name:?} is no longer held with fencing token {token}; \
         roll back this transaction and do not retry it under the lost lock"
    )]
    Fenced {
        /// The lock's name.
        name: String,
        /// The fencing token the transaction was fenced with.
        token: FencingToken,
    },
}

impl Error {
    /// Classifies an adapter's error for a failed attempt to do `action`.
    pub(crate) fn query(action: &'static str, source: QueryError) -> Self {
        match source.kind() {
            QueryErrorKind::Unreachable => Self::Unreachable { action, source },
            QueryErrorKind::PoolExhausted => Self::PoolExhausted { action, source },
            _ => Self::Database { action, source },
        }
    }

    /// The error of a `CREATE TABLE` of `table` that failed with `source`.
    pub(crate) fn create_table(table: &crate::TableName, source: QueryError) -> Self {
        match source.kind() {
            QueryErrorKind::Statement => Self::CreateTable {
                table: table.to_string(),
                source,
            },
            _ => Self::query("create the lock table", source),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::PoolExhausted { .. } | Self::Database { .. }
        )
    }

    /// Whether the statement that failed may have committed before the failure reached us
    /// (the connection broke on the way back): only then is a retry's "nothing to do"
    /// ambiguous.
    pub(crate) fn may_have_committed(&self) -> bool {
        matches!(self, Self::Database { .. })
    }
}
