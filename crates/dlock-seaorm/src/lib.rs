#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::Arc;

use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// What adapters implement, for code that picks a pool type at run time
/// (`Arc<dyn QueryInterface>`) or wraps one.
#[doc(no_inline)]
pub use dlock_core::adapter;
use dlock_core::adapter::{
    IntoQueryInterface, Listen, QueryError, QueryErrorKind, QueryInterface, Row, Statement, Value,
    async_trait,
};
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
use dlock_sqlx::SqlxQueries;
#[doc(no_inline)]
pub use sea_orm;

mod connect;
pub use connect::connect_options;

/// The query interface over a [`sea_orm::DatabaseConnection`].
///
/// Every statement checks a connection out of the connection's pool and returns it at
/// once, so a held lock holds no connection. The dialect is the connection's backend.
///
/// The statements run on the sqlx pool under the connection, through
/// [`dlock_sqlx::SqlxQueries`]: the same pool and connections SeaORM uses, with the same
/// settings, including behind a pooler ([`through_pooler`](Self::through_pooler)).
#[derive(Clone)]
pub struct SeaOrmQueries {
    db: DatabaseConnection,
    /// `None` for a disconnected connection (or one whose back-end is not compiled in):
    /// every statement then fails as unreachable.
    sqlx: Option<SqlxQueries>,
}

impl SeaOrmQueries {
    /// Runs statements on `db`, in the dialect of its backend.
    ///
    /// A disconnected `DatabaseConnection` (its `Default`) is accepted; every statement
    /// then fails with [`Error::Unreachable`].
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlx = match &db.inner {
            #[cfg(feature = "postgres")]
            sea_orm::DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
                Some(SqlxQueries::new(db.get_postgres_connection_pool().clone()))
            }
            #[cfg(feature = "mysql")]
            sea_orm::DatabaseConnectionType::SqlxMySqlPoolConnection(_) => {
                Some(SqlxQueries::new(db.get_mysql_connection_pool().clone()))
            }
            #[cfg(feature = "sqlite")]
            sea_orm::DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
                Some(SqlxQueries::new(db.get_sqlite_connection_pool().clone()))
            }
            _ => None,
        };
        Self { db, sqlx }
    }

    /// The connection reaches PostgreSQL through a pooler in transaction mode (PgBouncer
    /// with `pool_mode = transaction`): dlock's statements run as
    /// [`dlock_sqlx::SqlxQueries::through_pooler`] says, and waiters do not `LISTEN`
    /// through the pooler: give [`listen_at`](Self::listen_at) a direct URL, or they poll.
    ///
    /// This covers dlock's own statements. SeaORM's (your queries, and [`fence`], which
    /// runs in your SeaORM transaction) are prepared and cached by sqlx, which only
    /// PgBouncer 1.21+ with `max_prepared_statements` carries: with
    /// [`TransactionPooler::LosesPreparedStatements`], fence with [`dlock_sqlx::fence`] in
    /// a transaction of the sqlx pool under the connection instead.
    #[must_use]
    pub fn through_pooler(mut self, pooler: TransactionPooler) -> Self {
        self.sqlx = self.sqlx.map(|sqlx| sqlx.through_pooler(pooler));
        self
    }

    /// Waiters listen for releases on a connection opened with `options` — a URL that
    /// reaches PostgreSQL directly, not through a pooler in transaction mode — instead of
    /// the pool's. Ignored on other databases.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    #[must_use]
    pub fn listen_at(mut self, options: sea_orm::sqlx::postgres::PgConnectOptions) -> Self {
        self.sqlx = self.sqlx.map(|sqlx| sqlx.listen_at(options));
        self
    }

    /// Waiters poll for releases instead of listening: no connection is opened outside
    /// the pool.
    #[must_use]
    pub fn without_listening(mut self) -> Self {
        self.sqlx = self.sqlx.map(SqlxQueries::without_listening);
        self
    }

    /// The connection statements run on.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn sqlx(&self) -> Result<&SqlxQueries, QueryError> {
        self.sqlx.as_ref().ok_or_else(|| {
            QueryError::new(
                QueryErrorKind::Unreachable,
                None,
                DbErr::Conn(sea_orm::RuntimeErr::Internal(
                    "the DatabaseConnection is disconnected".to_owned(),
                )),
            )
        })
    }
}

#[async_trait]
impl QueryInterface for SeaOrmQueries {
    fn dialect(&self) -> Dialect {
        match &self.sqlx {
            Some(sqlx) => sqlx.dialect(),
            // Any dialect: the connection refuses every statement anyway.
            None => Dialect::Postgres,
        }
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.sqlx()?.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.sqlx()?.query(statement).await
    }

    /// PostgreSQL only.
    fn listener(&self) -> Option<&dyn Listen> {
        self.sqlx.as_ref()?.listener()
    }
}

impl fmt::Debug for SeaOrmQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeaOrmQueries")
            .field("sqlx", &self.sqlx)
            .finish_non_exhaustive()
    }
}

/// Marker that selects this adapter in [`IntoQueryInterface`].
#[derive(Debug)]
pub enum SeaOrm {}

impl IntoQueryInterface<SeaOrm> for DatabaseConnection {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(SeaOrmQueries::new(self))
    }
}

/// Clones the connection: a `DatabaseConnection` is a handle to a shared pool.
impl IntoQueryInterface<SeaOrm> for &DatabaseConnection {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(SeaOrmQueries::new(self.clone()))
    }
}

/// Fences `transaction` with `lease`: checks, inside the transaction, that this
/// acquisition still holds the lock with its fencing token, so that a holder whose lease
/// was taken over cannot commit its writes. Call it first in the transaction, before the
/// writes; it returns [`Error::Fenced`] when the lock has
/// changed hands or the lease has expired: roll back then.
///
/// What keeps anyone from taking the lock over until the transaction ends depends on the
/// database:
///
/// - **PostgreSQL** (`FOR KEY SHARE`) and **MySQL/MariaDB** (`LOCK IN SHARE MODE`): the
///   lock row stays share-locked until the transaction ends; a takeover waits for it.
/// - **SQLite** has no row locks: the database's single writer does it. In a transaction
///   begun `IMMEDIATE` (use [`begin_fenced`]) nobody else can write until it ends. In a
///   `DEFERRED` one (SeaORM's `begin()`), the guarantee starts at the transaction's first
///   write: if anyone wrote to the database after the fence's read, that write fails with
///   `SQLITE_BUSY_SNAPSHOT` (in WAL mode) — a takeover cannot slip in, but unrelated
///   writes also make the transaction fail, so prefer [`begin_fenced`].
///
/// How long a fenced transaction may run: on **PostgreSQL**, as long as the job needs —
/// the fence's `FOR KEY SHARE` does not conflict with the renewal, an `UPDATE` of the
/// lease's end alone, so the lease goes on being renewed (a takeover, which locks the row
/// `FOR UPDATE`, still waits for the commit). On **MySQL/MariaDB** and **SQLite** the
/// renewal waits for the transaction (for the row's share lock, or for SQLite's write
/// lock), and the guard is lost if no renewal succeeds within 90 % of the TTL of the last
/// one sent: a transaction opened just before a renewal must therefore end within
/// 0.9·TTL − renew interval — 57 % of the TTL with the default renew interval (a third of
/// it), 17 s of a 30 s TTL — or the guard reports loss (and `lock(f)` drops the job,
/// rolling the transaction back).
///
/// # Errors
///
/// [`Error::Fenced`] when the lock has changed hands or the lease has expired (roll
/// back then); the database's error if the statement fails.
///
/// # Cancel Safety
///
/// Cancel safe as far as dlock goes: it only reads. A dropped call leaves the
/// transaction with or without the row lock; roll it back.
///
/// ```no_run
/// # async fn example(db: sea_orm::DatabaseConnection, lease: dlock_seaorm::Lease) -> Result<(), Box<dyn std::error::Error>> {
/// use dlock_seaorm::sea_orm::{ConnectionTrait, Statement, TransactionTrait};
///
/// let transaction = db.begin().await?;
/// dlock_seaorm::fence(&transaction, &lease).await?;
/// transaction
///     .execute_raw(Statement::from_sql_and_values(
///         db.get_database_backend(),
///         "UPDATE report SET done = TRUE, token = $1",
///         [lease.fencing_token().get().into()],
///     ))
///     .await?;
/// transaction.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn fence(transaction: &DatabaseTransaction, lease: &Lease) -> Result<()> {
    let backend = transaction.get_database_backend();
    dlock_core::adapter::fence(lease, async |statement| {
        let rows = transaction
            .query_all_raw(sea_statement(backend, &statement))
            .await;
        Ok(rows.map_err(|error| query_error(None, error))?.len())
    })
    .await
}

/// Begins a transaction on `db` and [`fence`]s it with `lease`: the transaction to make
/// the job's writes in. On SQLite it is begun `IMMEDIATE`, so it holds the database's
/// write lock from the start and no takeover can commit before it ends (see [`fence`]).
///
/// # Errors
///
/// The database's error if the transaction cannot begin; [`fence`]'s errors, after which
/// the transaction has been rolled back (dropped).
///
/// # Cancel Safety
///
/// Cancel safe: a dropped call drops the transaction, which rolls it back.
///
/// ```no_run
/// # async fn example(db: sea_orm::DatabaseConnection, lease: dlock_seaorm::Lease) -> Result<(), Box<dyn std::error::Error>> {
/// let transaction = dlock_seaorm::begin_fenced(&db, &lease).await?;
/// // … the job's writes, through `&transaction` …
/// transaction.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn begin_fenced(db: &DatabaseConnection, lease: &Lease) -> Result<DatabaseTransaction> {
    let options = TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    let transaction = db.begin_with_options(options).await.map_err(|error| {
        dlock_core::Error::query("begin the fenced transaction", query_error(Some(db), error))
    })?;
    fence(&transaction, lease).await?;
    Ok(transaction)
}

fn sea_statement(backend: DbBackend, statement: &Statement) -> sea_orm::Statement {
    let values = statement.params.iter().map(|value| match value {
        Value::Null => sea_orm::Value::String(None),
        Value::Int(int) => sea_orm::Value::BigInt(Some(*int)),
        Value::Text(text) => sea_orm::Value::String(Some(text.clone())),
    });
    sea_orm::Statement::from_sql_and_values(backend, &*statement.sql, values)
}

/// Classifies a SeaORM error. `db` is the pool the statement waited for, if it did.
fn query_error(db: Option<&DatabaseConnection>, error: DbErr) -> QueryError {
    let kind = match &error {
        // sqlx reports a full pool and a server that refuses connections alike, as a
        // timeout of the checkout: only a pool with all its connections open was full.
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => match db {
            Some(db) if !pool_is_full(db) => QueryErrorKind::Unreachable,
            _ => QueryErrorKind::PoolExhausted,
        },
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => QueryErrorKind::Unreachable,
        _ => QueryErrorKind::Statement,
    };
    let code = database_code(&error);
    QueryError::new(kind, code, error)
}

/// The database's error code: SQLSTATE on PostgreSQL, the error number on MySQL/MariaDB
/// (its SQLSTATE is too coarse: 42000 is a missing privilege and a syntax error alike),
/// the extended result code on SQLite. Kept for connections the server refused too (a
/// wrong password), which the core then reports as permanent.
fn database_code(error: &DbErr) -> Option<String> {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    if let DbErr::Exec(sea_orm::RuntimeErr::SqlxError(error))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(error))
    | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(error)) = error
    {
        let error = error.as_database_error()?;
        #[cfg(feature = "mysql")]
        if let Some(error) = error.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>() {
            return Some(error.number().to_string());
        }
        return error.code().map(|code| code.into_owned());
    }
    let _ = error;
    None
}

fn pool_is_full(db: &DatabaseConnection) -> bool {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    fn full<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> bool {
        pool.size() >= pool.options().get_max_connections()
    }
    match &db.inner {
        #[cfg(feature = "postgres")]
        sea_orm::DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            full(db.get_postgres_connection_pool())
        }
        #[cfg(feature = "mysql")]
        sea_orm::DatabaseConnectionType::SqlxMySqlPoolConnection(_) => {
            full(db.get_mysql_connection_pool())
        }
        #[cfg(feature = "sqlite")]
        sea_orm::DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
            full(db.get_sqlite_connection_pool())
        }
        _ => true,
    }
}
