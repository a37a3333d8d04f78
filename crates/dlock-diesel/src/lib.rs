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
    LockAdmin, LockBuilder, LockGuard, LockInfo, LockState, LossReason, Observer, Outcome, Result,
    SettingEffect, TableName,
};

#[cfg(feature = "bb8")]
pub use pool::Bb8Queries;
#[cfg(feature = "deadpool")]
pub use pool::DeadpoolQueries;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
pub use pool::{DieselPool, PooledQueries};
pub use transport::DieselConnection;
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
