#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a database feature there is no connection to run statements on, and the
// shared machinery is unused; it still compiles, so that any feature set builds.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused)
)]

mod decode;
mod error;
mod transport;

#[cfg(any(feature = "deadpool", feature = "bb8"))]
mod pool;

#[doc(no_inline)]
pub use diesel;
#[doc(no_inline)]
pub use diesel_async;
/// What adapters implement, for code that picks a pool type at run time
/// (`Arc<dyn QueryInterface>`) or wraps one.
#[doc(no_inline)]
pub use dlock_core::adapter;
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

#[cfg(feature = "bb8")]
pub use pool::Bb8Queries;
#[cfg(feature = "deadpool")]
pub use pool::DeadpoolQueries;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
pub use pool::{DieselPool, PooledQueries};
pub use transport::DieselConnection;

/// A manager of PostgreSQL connections for a pool behind a pooler in transaction mode
/// that loses prepared statements (PgBouncer before 1.21, or `max_prepared_statements =
/// 0`). Use it with [`PooledQueries::through_pooler`].
///
/// diesel-async prepares every statement, named, in a round trip of its own before it
/// runs it, and outside a transaction the two may land on different server connections
/// — starting with the two `SET`s it sends when a connection opens. So each connection is
/// opened inside a transaction (which keeps one server connection), caches no statement
/// (closing the two `SET`s' before the transaction ends), and the pool checks a
/// connection it hands out with a simple query (`SELECT 1` in one message) instead of a
/// prepared one. Run your own queries in transactions (`conn.transaction(…)`) too.
///
/// Without TLS (`NoTls`): for TLS, do the same in your `custom_setup` with your connector.
///
/// ```no_run
/// use dlock_diesel::diesel_async::pooled_connection::deadpool::Pool;
/// use dlock_diesel::{DeadpoolQueries, DistributedLock, TransactionPooler};
///
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = dlock_diesel::pooler_manager("postgres://app@pgbouncer:6432/app");
/// let pool = Pool::builder(manager).max_size(8).build()?;
/// let queries = DeadpoolQueries::new(pool)
///     .through_pooler(TransactionPooler::LosesPreparedStatements)
///     .listen_at("postgres://app@db:5432/app");
/// let lock = DistributedLock::new("nightly-report", queries)?;
/// # Ok(())
/// # }
/// ```
#[cfg(all(feature = "postgres", any(feature = "deadpool", feature = "bb8")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "postgres", any(feature = "deadpool", feature = "bb8"))))
)]
pub fn pooler_manager(
    url: impl Into<String>,
) -> diesel_async::pooled_connection::AsyncDieselConnectionManager<diesel_async::AsyncPgConnection>
{
    use diesel_async::pooled_connection::{ManagerConfig, RecyclingMethod};
    use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(|url| Box::pin(establish_behind_pooler(url.to_owned())));
    config.recycling_method =
        RecyclingMethod::CustomFunction(Box::new(|conn| Box::pin(conn.batch_execute("SELECT 1"))));
    diesel_async::pooled_connection::AsyncDieselConnectionManager::new_with_config(url, config)
}

/// Opens a connection for [`pooler_manager`]: diesel-async's set-up inside a transaction,
/// and its statement cache disabled (which closes what the set-up prepared) before the
/// transaction ends.
#[cfg(all(feature = "postgres", any(feature = "deadpool", feature = "bb8")))]
async fn establish_behind_pooler(
    url: String,
) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

    let failed =
        |error: tokio_postgres::Error| diesel::ConnectionError::BadConnection(error.to_string());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .map_err(failed)?;
    // Driven until the client is dropped with the connection it ends up in.
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.map_err(failed)?;
    let conn = AsyncPgConnection::try_from(client).await;
    let mut conn = conn?;
    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    conn.batch_execute("COMMIT")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}
#[cfg(feature = "sqlite")]
pub use transport::establish_sqlite;

/// Marker that selects this adapter in
/// [`IntoQueryInterface`](dlock_core::adapter::IntoQueryInterface).
#[derive(Debug)]
pub enum Diesel {}

/// Fences the transaction open on `conn` with `lease`: checks, inside the transaction,
/// that this acquisition still holds the lock with its fencing token, so that a holder
/// whose lease was taken over cannot commit its writes. Call it first in the
/// transaction, before the writes; it returns [`Error::Fenced`]
/// when the lock has changed hands or the lease has expired: return the error from the
/// transaction's closure so that it rolls back.
///
/// What keeps anyone from taking the lock over until the transaction ends depends on the
/// database:
///
/// - **PostgreSQL** (`FOR KEY SHARE`) and **MySQL/MariaDB** (`LOCK IN SHARE MODE`): the
///   lock row stays share-locked until the transaction ends; a takeover waits for it. Use
///   [`AsyncConnection::transaction`](diesel_async::AsyncConnection::transaction).
/// - **SQLite** has no row locks: the database's single writer does it. Use
///   `conn.immediate_transaction(…)`: begun `IMMEDIATE`, the transaction holds the write
///   lock from its start, so no takeover can commit before it ends. In a `DEFERRED` one
///   (`transaction(…)`), a takeover committed after the fence's read makes the
///   transaction's first write fail (`SQLITE_BUSY_SNAPSHOT` in WAL mode), so stale writes
///   still never commit, but unrelated writes make it fail too.
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
/// Not calling it inside a transaction is allowed but pointless: the check then protects
/// nothing that follows it.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn example(
/// #     conn: &mut dlock_diesel::diesel_async::AsyncPgConnection,
/// #     lease: dlock_diesel::Lease,
/// # ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use dlock_diesel::diesel_async::{AsyncConnection, RunQueryDsl};
///
/// conn.transaction(async |conn| {
///     dlock_diesel::fence(conn, &lease).await?;
///     dlock_diesel::diesel::sql_query("UPDATE report SET done = TRUE")
///         .execute(conn)
///         .await?;
///     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
/// })
/// .await
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Fenced`] when the lock has changed hands or the lease has expired; the
/// database's error if the statement fails.
///
/// # Cancel Safety
///
/// Dropping the future drops the statement; the transaction is as diesel-async leaves a
/// cancelled one.
pub async fn fence<C: DieselConnection>(conn: &mut C, lease: &Lease) -> Result<()> {
    dlock_core::adapter::fence(lease, async |statement| {
        Ok(conn.query_statement(&statement).await?.len())
    })
    .await
}
