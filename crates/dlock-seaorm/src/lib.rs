#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::Arc;

use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    QueryResult, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// What adapters implement, for code that picks a pool type at run time
/// (`Arc<dyn QueryInterface>`) or wraps one.
#[doc(no_inline)]
pub use dlock_core::adapter;
use dlock_core::adapter::{
    ColumnType, IntoQueryInterface, Listen, QueryError, QueryErrorKind, QueryInterface,
    ReleaseNotices, Row, Statement, Value, async_trait,
};
#[doc(no_inline)]
pub use dlock_core::{
    Attempt, BoxError, Dialect, DistributedLock, Durability, DurabilitySetting, Election,
    ElectionBuilder, Error, FencingToken, ForceRelease, Holder, Leader, Leadership, Lease,
    LockAdmin, LockBuilder, LockGuard, LockInfo, LockState, LossReason, Observer, Outcome, Result,
    SettingEffect, TableName,
};
#[doc(no_inline)]
pub use sea_orm;

mod connect;
pub use connect::connect_options;

/// The query interface over a [`sea_orm::DatabaseConnection`].
///
/// Every statement checks a connection out of the connection's pool and returns it at
/// once, so a held lock holds no connection. The dialect is the connection's backend.
#[derive(Clone)]
pub struct SeaOrmQueries {
    db: DatabaseConnection,
    dialect: Dialect,
    /// Whether `db` is a connected PostgreSQL pool, whose releases can be listened for.
    listens: bool,
}

impl SeaOrmQueries {
    /// Runs statements on `db`, in the dialect of its backend.
    ///
    /// A disconnected `DatabaseConnection` (its `Default`) is accepted; every statement
    /// then fails with [`Error::Unreachable`].
    pub fn new(db: DatabaseConnection) -> Self {
        let connected = !matches!(db.inner, sea_orm::DatabaseConnectionType::Disconnected);
        let dialect = if connected {
            dialect_of(db.get_database_backend())
        } else {
            // Any dialect: the connection refuses every statement anyway.
            Dialect::Postgres
        };
        let listens = cfg!(feature = "postgres") && connected && dialect == Dialect::Postgres;
        Self {
            db,
            dialect,
            listens,
        }
    }

    /// The connection statements run on.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

fn dialect_of(backend: DbBackend) -> Dialect {
    match backend {
        DbBackend::MySql => Dialect::Mysql,
        DbBackend::Sqlite => Dialect::Sqlite,
        // `DbBackend` is non-exhaustive; PostgreSQL is the only other backend today.
        _ => Dialect::Postgres,
    }
}

#[async_trait]
impl QueryInterface for SeaOrmQueries {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let statement = sea_statement(self.backend(), statement);
        self.db
            .execute_raw(statement)
            .await
            .map(|result| result.rows_affected())
            .map_err(|error| query_error(Some(&self.db), error))
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let columns = statement.columns;
        let statement = sea_statement(self.backend(), statement);
        let rows = self
            .db
            .query_all_raw(statement)
            .await
            .map_err(|error| query_error(Some(&self.db), error))?;
        rows.iter()
            .map(|row| decode(row, columns))
            .collect::<Result<_, _>>()
            .map_err(|error| query_error(None, error))
    }

    /// PostgreSQL only.
    fn listener(&self) -> Option<&dyn Listen> {
        self.listens.then_some(self as &dyn Listen)
    }
}

/// Only handed out on a connected PostgreSQL pool (`listens`).
#[async_trait]
impl Listen for SeaOrmQueries {
    /// The pool's host, port, database and user.
    fn source(&self) -> String {
        #[cfg(feature = "postgres")]
        if self.listens {
            let options = self.db.get_postgres_connection_pool().connect_options();
            return format!(
                "postgres {} {} {:?} {}",
                options.get_host(),
                options.get_port(),
                options.get_database(),
                options.get_username()
            );
        }
        String::new()
    }

    /// PostgreSQL: `LISTEN` on a connection of its own, opened with the pool's options
    /// but outside the pool, so that it never takes one of the job's connections.
    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        #[cfg(feature = "postgres")]
        if self.listens {
            use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};

            let unreachable = |error: sea_orm::sqlx::Error| {
                let code = error
                    .as_database_error()
                    .and_then(|error| error.code())
                    .map(|code| code.into_owned());
                QueryError::new(QueryErrorKind::Unreachable, code, error)
            };
            let options = self.db.get_postgres_connection_pool().connect_options();
            let own_pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with((*options).clone());
            let mut listener = PgListener::connect_with(&own_pool)
                .await
                .map_err(unreachable)?;
            listener.listen(channel).await.map_err(unreachable)?;
            notices.listening();
            loop {
                tokio::select! {
                    notice = listener.try_recv() => match notice {
                        Ok(Some(notice)) => notices.notify(notice.payload()),
                        // The connection was lost: notices may have been missed. End, so
                        // that the next waiter listens anew (and probes meanwhile).
                        Ok(None) | Err(_) => return Ok(()),
                    },
                    () = notices.closed() => return Ok(()),
                }
            }
        }
        let _ = (channel, notices);
        Ok(())
    }
}

impl SeaOrmQueries {
    fn backend(&self) -> DbBackend {
        match self.dialect {
            Dialect::Mysql => DbBackend::MySql,
            Dialect::Sqlite => DbBackend::Sqlite,
            _ => DbBackend::Postgres,
        }
    }
}

impl fmt::Debug for SeaOrmQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeaOrmQueries")
            .field("dialect", &self.dialect)
            .field("listens", &self.listens)
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

fn decode(row: &QueryResult, columns: &[ColumnType]) -> Result<Row, DbErr> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            Ok(match column {
                ColumnType::Int => row.try_get_by_index::<Option<i64>>(index)?.map(Value::Int),
                ColumnType::Text => row
                    .try_get_by_index::<Option<String>>(index)?
                    .map(Value::Text),
            }
            .unwrap_or(Value::Null))
        })
        .collect()
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
