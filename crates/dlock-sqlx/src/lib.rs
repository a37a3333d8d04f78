#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a database feature there is no pool to run statements on; it still compiles,
// so that any feature set builds.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused)
)]

mod backend;
mod error;
mod listen;

use std::fmt;
use std::sync::Arc;

/// What adapters implement, for code that picks a pool type at run time
/// (`Arc<dyn QueryInterface>`) or wraps one.
#[doc(no_inline)]
pub use dlock_core::adapter;
use dlock_core::adapter::{IntoQueryInterface, Listen, QueryError, QueryInterface, Row, Statement};
#[doc(no_inline)]
pub use dlock_core::{
    Attempt, BoxError, Dialect, DistributedLock, Durability, DurabilitySetting, Election,
    ElectionBuilder, Error, FencingToken, ForceRelease, Holder, Leader, Leadership, Lease,
    LockAdmin, LockBuilder, LockGuard, LockInfo, LockState, LossReason, MultiLock,
    MultiLockBuilder, MultiLockGuard, Observer, Outcome, Result, SettingEffect, TableName,
    TransactionPooler,
};
#[doc(no_inline)]
pub use dlock_core::{
    MAX_PERMITS, PermitInfo, Semaphore, SemaphoreBuilder, SemaphoreInfo, SemaphorePermit,
    SemaphoreRemoval,
};
pub use dlock_core::{RwHolder, RwLock, RwLockBuilder, RwLockInfo, RwReadGuard, RwWriteGuard};
#[doc(no_inline)]
pub use sqlx;

pub use backend::SqlxDatabase;

/// A pool of one of the compiled-in back-ends.
#[derive(Clone)]
pub(crate) enum AnyPool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// The query interface over an sqlx pool: `PgPool` (feature `postgres`), `MySqlPool`
/// (`mysql`) or `SqlitePool` (`sqlite`).
///
/// Every statement checks a connection out of the pool and returns it at once, so a held
/// lock holds no connection. On PostgreSQL, waiters listen for releases on one connection
/// per process, database and lock table, opened with the pool's connect options outside
/// the pool (so it never takes one of the job's connections).
#[derive(Clone)]
pub struct SqlxQueries {
    pool: AnyPool,
    /// `Some` behind a pooler in transaction mode.
    pooler: Option<TransactionPooler>,
    /// How waiters hear releases (PostgreSQL only).
    listening: listen::Listening,
}

impl SqlxQueries {
    /// Runs statements on connections from `pool`, in the dialect of its database.
    pub fn new<DB: SqlxDatabase>(pool: sqlx::Pool<DB>) -> Self {
        let pool = DB::wrap(pool);
        Self {
            listening: listen::Listening::new(&pool),
            pool,
            pooler: None,
        }
    }

    /// The pool reaches PostgreSQL through a pooler in transaction mode (PgBouncer with
    /// `pool_mode = transaction`):
    ///
    /// - with [`TransactionPooler::LosesPreparedStatements`] (PgBouncer before 1.21, or
    ///   `max_prepared_statements = 0`) each statement runs unnamed (sqlx's
    ///   `persistent(false)`) in a transaction of its own, which keeps one server
    ///   connection for the statement's two round trips; with
    ///   [`TransactionPooler::KeepsPreparedStatements`] statements stay prepared and
    ///   cached, as without a pooler;
    /// - waiters do not `LISTEN` through the pool: they listen on the connection given to
    ///   [`listen_at`](Self::listen_at), or, without one, poll at the lock's poll interval
    ///   (dlock says so once, at WARN).
    ///
    /// See the crate documentation for what each costs.
    #[must_use]
    pub fn through_pooler(mut self, pooler: TransactionPooler) -> Self {
        self.pooler = Some(pooler);
        self.listening = self.listening.through_pooler();
        self
    }

    /// Waiters listen for releases on a connection opened with `options` — a URL that
    /// reaches PostgreSQL directly, not through a pooler in transaction mode — instead of
    /// the pool's. Ignored on other databases.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[must_use]
    pub fn listen_at(mut self, options: sqlx::postgres::PgConnectOptions) -> Self {
        self.listening = self.listening.at(options);
        self
    }

    /// Waiters poll for releases instead of listening: no connection is opened outside
    /// the pool.
    #[must_use]
    pub fn without_listening(mut self) -> Self {
        self.listening = listen::Listening::Off;
        self
    }

    /// Whether each statement runs unnamed in a transaction of its own.
    fn unnamed(&self) -> bool {
        self.pooler == Some(TransactionPooler::LosesPreparedStatements)
    }
}

#[dlock_core::adapter::async_trait]
impl QueryInterface for SqlxQueries {
    fn dialect(&self) -> Dialect {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            AnyPool::MySql(_) => Dialect::Mysql,
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite(_) => Dialect::Sqlite,
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            _ => match self.pool {},
        }
    }

    async fn execute(&self, statement: &Statement) -> std::result::Result<u64, QueryError> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(pool) => backend::execute(pool, statement, self.unnamed()).await,
            #[cfg(feature = "mysql")]
            AnyPool::MySql(pool) => backend::execute(pool, statement, self.unnamed()).await,
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite(pool) => backend::execute(pool, statement, self.unnamed()).await,
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            _ => match self.pool {},
        }
    }

    async fn query(&self, statement: &Statement) -> std::result::Result<Vec<Row>, QueryError> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(pool) => backend::query(pool, statement, self.unnamed()).await,
            #[cfg(feature = "mysql")]
            AnyPool::MySql(pool) => backend::query(pool, statement, self.unnamed()).await,
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite(pool) => backend::query(pool, statement, self.unnamed()).await,
            #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
            _ => match self.pool {},
        }
    }

    fn listener(&self) -> Option<&dyn Listen> {
        self.listening.listener()
    }
}

impl fmt::Debug for SqlxQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxQueries")
            .field("dialect", &self.dialect())
            .field("pooler", &self.pooler)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

/// Marker that selects this adapter in [`IntoQueryInterface`].
#[derive(Debug)]
pub enum Sqlx {}

impl<DB: SqlxDatabase> IntoQueryInterface<Sqlx> for sqlx::Pool<DB> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(SqlxQueries::new(self))
    }
}

/// Clones the pool: an sqlx `Pool` is a handle to a shared pool.
impl<DB: SqlxDatabase> IntoQueryInterface<Sqlx> for &sqlx::Pool<DB> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(SqlxQueries::new(self.clone()))
    }
}

/// Fences `transaction` with `lease`: checks, inside the transaction, that this
/// acquisition still holds the lock with its fencing token, so that a holder whose lease
/// was taken over cannot commit its writes. Call it first in the transaction, before the
/// writes; it returns [`Error::Fenced`] when the lock has changed hands or the lease has
/// expired: roll back then.
///
/// What keeps anyone from taking the lock over until the transaction ends depends on the
/// database:
///
/// - **PostgreSQL** (`FOR KEY SHARE`) and **MySQL/MariaDB** (`LOCK IN SHARE MODE`): the
///   lock row stays share-locked until the transaction ends; a takeover waits for it.
/// - **SQLite** has no row locks: the database's single writer does it. Begin the
///   transaction with `pool.begin_with("BEGIN IMMEDIATE")`, so that it holds the write
///   lock from its start and no takeover can commit before it ends; in a `DEFERRED` one
///   (`pool.begin()`), a takeover committed after the fence's read makes the
///   transaction's first write fail (`SQLITE_BUSY_SNAPSHOT` in WAL mode).
///
/// How long a fenced transaction may run is as with the other adapters: on PostgreSQL as
/// long as the job needs; on MySQL/MariaDB and SQLite the renewal waits for it, so it must
/// end within 0.9·TTL − renew interval (see `dlock_seaorm::fence`).
///
/// The fence's statement runs unnamed (not prepared and cached), so it works through a
/// pooler in transaction mode whatever it does with prepared statements.
///
/// # Errors
///
/// [`Error::Fenced`] when the lock has changed hands or the lease has expired; the
/// database's error if the statement fails.
///
/// # Cancel Safety
///
/// Cancel safe as far as dlock goes: it only reads. A dropped call leaves the
/// transaction with or without the row lock; roll it back.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn example(pool: sqlx::PgPool, lease: dlock_sqlx::Lease) -> Result<(), Box<dyn std::error::Error>> {
/// let mut transaction = pool.begin().await?;
/// dlock_sqlx::fence(&mut transaction, &lease).await?;
/// sqlx::query("UPDATE report SET done = TRUE, token = $1")
///     .bind(lease.fencing_token().get())
///     .execute(&mut *transaction)
///     .await?;
/// transaction.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn fence<DB: SqlxDatabase>(
    transaction: &mut sqlx::Transaction<'_, DB>,
    lease: &Lease,
) -> Result<()> {
    dlock_core::adapter::fence(lease, async |statement| {
        Ok(DB::fetch(&mut *transaction, &statement, true).await?.len())
    })
    .await
}
