//! What adapter crates implement and use; applications need none of it.
//!
//! The core owns every SQL statement; an adapter only transports them. It implements
//! [`QueryInterface`]: run a [`Statement`] with bound parameters on a connection of its
//! own choosing (typically a fresh checkout from the user's pool, returned right after)
//! and hand back the rows or the affected-row count. An adapter whose database can notify
//! (PostgreSQL's `LISTEN`) also implements [`Listen`], so that waiters in this process
//! hear releases by other processes. [`IntoQueryInterface`] lets
//! [`DistributedLock::new`](crate::DistributedLock::new) accept the driver's pool types,
//! and [`fence`] runs the fencing statement in the user's transaction.
//!
//! The items here may change in minor releases more readily than the crate root's.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

pub use async_trait::async_trait;

pub use crate::listening::{ListenerRequest, ReleaseNotices};
use crate::{Dialect, Error, Lease};

/// A boxed error from a database driver or pool.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A value bound to a statement parameter or read from a result column.
///
/// Every statement of the core binds and returns only these three kinds, so an adapter
/// maps them onto its driver's `TEXT`/`BIGINT` types and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit integer (`BIGINT`).
    Int(i64),
    /// A string (`TEXT`).
    Text(String),
}

/// The SQL type of a result column, so adapters whose drivers decode by static type know
/// what to ask for. Every result column may be `NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `BIGINT`, read as [`Value::Int`].
    Int,
    /// `TEXT`, read as [`Value::Text`].
    Text,
}

/// Which statement of the core a [`Statement`] is, so that wrappers and test doubles can
/// tell them apart without reading the SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatementKind {
    /// `CREATE TABLE IF NOT EXISTS` of the lock table.
    CreateTable,
    /// Takes the lock if it is free or expired (the only statement that acquires).
    Acquire,
    /// Reads the fencing token after an `Acquire` that cannot return it (MySQL).
    ReadToken,
    /// Adds the missing rows of a multi-lock's names, free, before it acquires them all.
    CreateRows,
    /// Reads who holds the lock and until when; never writes.
    Probe,
    /// Extends a held lease.
    Renew,
    /// Frees a held lock (owner-checked).
    Release,
    /// Tells other processes that a lock was released (PostgreSQL `pg_notify`), or, with
    /// an empty payload, checks that the listening connection still hears.
    Notify,
    /// Locks the row of a held lock inside the user's transaction; see [`fence`].
    Fence,
    /// Reads every lock of the table (administration).
    List,
    /// Reads one lock (administration).
    Inspect,
    /// Ends the holder's ownership without freeing the lock (administration).
    Revoke,
    /// Frees the lock at once (administration).
    ForceRelease,
    /// Publishes an election leader's value with its lease (owner-checked).
    Proclaim,
    /// Reads an election's current leader; never writes.
    Leader,
    /// Reads the database's settings that decide whether what it acknowledges survives a
    /// crash or a failover; never writes.
    Durability,
    /// Announces on the listening connection that this process waits for a lock, or
    /// withdraws that (PostgreSQL advisory locks), so that its release is notified.
    Watch,
    /// Not a statement of the core: SQL that a tool or a test runs through an adapter.
    Other,
}

/// A statement of the core: what it is, SQL with positional parameters in the dialect's
/// placeholder syntax, the values to bind, and the types of the columns it returns (empty
/// for statements run with [`QueryInterface::execute`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Which statement this is.
    pub kind: StatementKind,
    /// The SQL text.
    pub sql: Arc<str>,
    /// The values bound to the placeholders, in order.
    pub params: Vec<Value>,
    /// The types of the result columns, in order.
    pub columns: &'static [ColumnType],
}

/// One result row: one [`Value`] per column of [`Statement::columns`], in order.
pub type Row = Vec<Value>;

/// How a statement failed, as far as the adapter can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryErrorKind {
    /// No connection could be opened: the server is down, unreachable or refused us.
    Unreachable,
    /// The pool had no free connection within its wait timeout.
    PoolExhausted,
    /// The statement reached the server and failed, or the connection broke while it ran.
    Statement,
}

/// The error an adapter returns: what kind of failure, the database's error code when
/// there is one (SQLSTATE on PostgreSQL), and the driver's error.
#[derive(Debug)]
pub struct QueryError {
    kind: QueryErrorKind,
    code: Option<String>,
    source: BoxError,
}

impl QueryError {
    /// An error of `kind`, with the database's error `code` if the driver reported one.
    pub fn new(kind: QueryErrorKind, code: Option<String>, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            code,
            source: source.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> QueryErrorKind {
        self.kind
    }

    /// The database's error code (SQLSTATE on PostgreSQL), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

/// The driver's error with its own causes ("error connecting to server: Connection
/// refused"), each printed once, since this is the last error in dlock's chain.
impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Drivers often repeat a cause in their own message (sqlx, deadpool): each text
        // is printed once.
        let mut message = self.source.to_string();
        let mut cause = self.source.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&message)?;
        match &self.code {
            Some(code) => write!(f, " (code {code})"),
            None => Ok(()),
        }
    }
}

impl StdError for QueryError {}

/// A connection pooler in transaction mode between an adapter's pool and PostgreSQL
/// (PgBouncer with `pool_mode = transaction`), and what it does with prepared statements.
/// Adapters whose driver prepares named statements take it in their `through_pooler`
/// setting, which also keeps `LISTEN` off the pooler: it would hear nothing, and the server
/// connection it leaves listening would hand notifications to other clients. Waiters then
/// listen on a direct URL given to the adapter (its `listen_at`), or poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransactionPooler {
    /// The pooler keeps each client's prepared statements across server connections:
    /// PgBouncer 1.21 or later with `max_prepared_statements` above 0. The adapter
    /// prepares and caches statements as it does without a pooler.
    KeepsPreparedStatements,
    /// A prepared statement stays on the server connection it was prepared on, which the
    /// next statement may not get: PgBouncer before 1.21, or `max_prepared_statements = 0`.
    /// The adapter runs each statement unnamed, in a transaction of its own (which keeps
    /// one server connection for it), at the cost of more round trips per statement.
    LosesPreparedStatements,
}

/// What every adapter implements: say which dialect the connection speaks, run a statement,
/// and say whether it can listen for releases.
///
/// Implementations must not hold a pooled connection between calls: a held lock makes a
/// call only every renewal interval, and the job needs the pool meanwhile.
///
/// Every method is required, so that a wrapper (one that counts statements, injects
/// faults) forwards all of them and cannot silently change what the lock does.
#[async_trait]
pub trait QueryInterface: fmt::Debug + Send + Sync + 'static {
    /// The SQL dialect of the database behind this interface.
    fn dialect(&self) -> Dialect;

    /// Runs a statement that returns no rows and returns the number of rows it affected.
    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError>;

    /// Runs a statement and returns its rows, each decoded per [`Statement::columns`].
    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError>;

    /// How this interface hears releases by other processes, if it can: `None` where the
    /// database cannot notify or the adapter does not listen, and waiters poll.
    fn listener(&self) -> Option<&dyn Listen>;
}

/// Listening for release notices from other processes (PostgreSQL's `LISTEN`), on a
/// connection of the adapter's own: never a pooled one, which another user of the pool
/// would then receive notifications on.
#[async_trait]
pub trait Listen: Send + Sync {
    /// Where the notifications come from: a key equal for every interface on the same
    /// database (host, port, database name), so that a process opens one listening
    /// connection per database and lock table.
    fn source(&self) -> String;

    /// Listens for notifications on `channel` until [`ReleaseNotices::closed`] completes or
    /// the connection fails. Calls [`ReleaseNotices::listening`] once listening, and
    /// [`ReleaseNotices::notify`] with each payload — including empty ones, which are the
    /// core's heartbeats. Meanwhile runs each statement of [`ReleaseNotices::request`] on
    /// the same connection and replies with its result: with them, waiters tell
    /// releasers that they wait, and releases are only notified then. An adapter that
    /// ignores them still works, but its waiters are not notified: they poll.
    ///
    /// The core may drop this future at any await point (when it finds the listener deaf:
    /// its own heartbeats do not come back), and dropping it must close the connection.
    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError>;
}

/// Turns a pool or connection into a [`QueryInterface`]. Each adapter implements it for
/// the pool types of its driver, with a marker type of its own as `M` (which is what lets
/// an adapter crate implement it for a pool type it does not own), so that
/// [`DistributedLock::new`](crate::DistributedLock::new) accepts those pools directly.
#[diagnostic::on_unimplemented(
    message = "dlock cannot lock with a `{Self}`: it is not a pool or connection of an adapter \
               that is compiled in",
    label = "not a pool or connection dlock accepts",
    note = "dlock accepts: `deadpool_postgres::Pool` or `&Pool`, `tokio_postgres::Client`, \
            `Arc<Client>` or `&Arc<Client>` (not `&Client`: the lock renews in the background \
            and needs a client it shares); sqlx's `PgPool`, `MySqlPool` or `SqlitePool` (or \
            a reference); `sea_orm::DatabaseConnection` or `&DatabaseConnection`; diesel-async's deadpool or bb8 `Pool` or `&Pool` of \
            `AsyncPgConnection`, `AsyncMysqlConnection` or \
            `SyncConnectionWrapper<SqliteConnection>`",
    note = "if the type is one of these, its adapter is not compiled in: the dlock features are \
            `tokio-postgres`; `sqlx-postgres`, `sqlx-mysql`, `sqlx-sqlite`; `seaorm-postgres`, \
            `seaorm-mysql`, `seaorm-sqlite`; \
            `diesel-postgres`, `diesel-mysql` or `diesel-sqlite` with `diesel-deadpool` or \
            `diesel-bb8`"
)]
pub trait IntoQueryInterface<M> {
    /// Wraps `self` in the adapter's query interface.
    fn into_query_interface(self) -> Arc<dyn QueryInterface>;
}

/// Marker for query interfaces passed as they are.
#[derive(Debug)]
pub enum Direct {}

impl<Q: QueryInterface> IntoQueryInterface<Direct> for Q {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(self)
    }
}

impl IntoQueryInterface<Direct> for Arc<dyn QueryInterface> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        self
    }
}

/// Fences a transaction with `lease`: `run` executes the given statement inside the
/// user's transaction, before its writes, and returns how many rows it returned. On
/// success the lock row stays locked until the transaction ends, so nobody can take the
/// lock over before the writes commit. Adapters wrap this in a `fence` helper for their
/// transaction type.
///
/// # Errors
///
/// [`Error::Fenced`] when this acquisition no longer holds the lock with its token, or its
/// lease is past its deadline by the local clock *after* the statement ran (a fence that
/// answers past the deadline is refused whatever the row says, so nothing is written under
/// a lock whose loss has been or is about to be signalled); the database's error, as an
/// [`Error`] saying it failed to fence the transaction, when `run` fails.
///
/// A loss signalled after this returned `Ok` does not undo the transaction: its row lock
/// keeps every takeover out until it ends, so its writes still commit safely.
///
/// # Cancel Safety
///
/// As cancel safe as `run`: dropping it leaves the transaction as `run` left it, and the
/// user's transaction, rolled back when dropped, holds nothing after that.
pub async fn fence<F, Fut>(lease: &Lease, run: F) -> crate::Result<()>
where
    F: FnOnce(Statement) -> Fut,
    Fut: Future<Output = Result<usize, QueryError>>,
{
    let rows = run(lease.fence_statement())
        .await
        .map_err(|error| Error::query("fence the transaction", error))?;
    lease.check_fence(rows)
}
