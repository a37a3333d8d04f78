//! Query interfaces over diesel-async's pools: every statement checks a connection out
//! and returns it as soon as the statement is done, so a held lock holds no connection.

use std::fmt;
use std::sync::Arc;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::PoolError as ManagerError;
use dlock_core::Dialect;
use dlock_core::adapter::{
    IntoQueryInterface, Listen, QueryError, QueryErrorKind, QueryInterface, ReleaseNotices, Row,
    Statement, async_trait,
};

use crate::{Diesel, DieselConnection};

/// Runs one statement (checkout, statement, return of the connection) in a task of its
/// own, so that it always runs to completion. The core drops statement futures (a
/// waiter's probe when its `acquire` is dropped or times out), and a diesel-async
/// connection dropped in the middle of a statement goes back to the pool in whatever
/// state that left it: with mysql_async, the next statement on it was seen reading an
/// answer meant for the dropped one, so an acquisition went unnoticed and its lock
/// stayed taken for a whole TTL.
async fn to_completion<T: Send + 'static>(
    statement: impl std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::spawn(statement).await.map_err(|error| {
        // The statement's task panicked (a driver bug) or the runtime is shutting down.
        QueryError::new(QueryErrorKind::Statement, None, error)
    })?
}

/// The error of a checkout that could not open a connection: the server is down,
/// refused us, or the connection's setup failed.
fn connect_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> QueryError {
    QueryError::new(QueryErrorKind::Unreachable, None, error)
}

/// The error of the pool's manager when it could not open a connection, with the
/// server's code where it refused us (a wrong password is then permanent, not a server
/// that is down).
fn manager_error(dialect: Dialect, error: ManagerError) -> QueryError {
    match error {
        ManagerError::ConnectionError(error) => {
            let code = crate::error::connection_error(dialect, &error);
            QueryError::new(QueryErrorKind::Unreachable, code, error)
        }
        ManagerError::QueryError(error) => {
            let code = crate::error::database_code(dialect, &error);
            QueryError::new(QueryErrorKind::Unreachable, code, error)
        }
    }
}

/// The key of the release notices that a pool's locks share in this process (see
/// [`Listen::source`]), from the address of the pool's shared
/// state, the same for every clone of the pool. The pool's URL would be the better key
/// (one listening connection per database, whatever the pool), but diesel-async's
/// manager does not hand it out; per pool, two pools on one database each listen, which
/// costs a connection and nothing else. An address is only reused after the pool is
/// gone, and the hub keyed by it holds the pool's interface, so two live hubs never
/// share one.
fn pool_source(pool: &str, address: String) -> String {
    format!("postgres diesel-async {pool} {address}")
}

/// The query interface over a deadpool pool of diesel-async connections
/// (`diesel_async::pooled_connection::deadpool::Pool<C>`).
///
/// A checkout that times out waiting for a free connection (the pool's `wait` timeout)
/// is [`Error::PoolExhausted`](dlock_core::Error::PoolExhausted); one that cannot open a
/// connection is [`Error::Unreachable`](dlock_core::Error::Unreachable). Without a `wait`
/// timeout, deadpool waits for a free connection for ever: set one (it needs deadpool's
/// `rt_tokio_1` feature).
///
/// On PostgreSQL, waiters listen for releases on one connection per process, pool and
/// lock table, opened with the pool's URL and connection setup but outside the pool
/// (see the crate's documentation); [`without_listening`](Self::without_listening)
/// makes them poll instead.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub struct DeadpoolQueries<C: DieselConnection + 'static>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    pool: diesel_async::pooled_connection::deadpool::Pool<C>,
    /// The notification source while this interface listens.
    source: Option<String>,
}

#[cfg(feature = "deadpool")]
impl<C: DieselConnection + 'static> DeadpoolQueries<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    /// Runs statements on connections from `pool`; on PostgreSQL, listens for releases.
    pub fn new(pool: diesel_async::pooled_connection::deadpool::Pool<C>) -> Self {
        let source = C::LISTENS.then(|| pool_source("deadpool", format!("{:p}", pool.manager())));
        Self { pool, source }
    }

    /// Waiters poll for releases instead of listening: no connection is opened outside
    /// the pool. For servers where `LISTEN` cannot work (PgBouncer in transaction mode),
    /// or a connection limit that leaves no room for it.
    #[must_use]
    pub fn without_listening(mut self) -> Self {
        self.source = None;
        self
    }

    /// The pool statements run on.
    pub fn pool(&self) -> &diesel_async::pooled_connection::deadpool::Pool<C> {
        &self.pool
    }
}

#[cfg(feature = "deadpool")]
async fn deadpool_checkout<C: DieselConnection + 'static>(
    pool: &diesel_async::pooled_connection::deadpool::Pool<C>,
) -> Result<diesel_async::pooled_connection::deadpool::Object<C>, QueryError>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    {
        use deadpool::managed::{PoolError, TimeoutType};
        pool.get().await.map_err(|error| match error {
            PoolError::Timeout(TimeoutType::Wait) => {
                QueryError::new(QueryErrorKind::PoolExhausted, None, error)
            }
            PoolError::Backend(ManagerError::QueryError(ref query_error)) => {
                let code = crate::error::database_code(C::DIALECT, query_error);
                QueryError::new(QueryErrorKind::Unreachable, code, error)
            }
            PoolError::Backend(ManagerError::ConnectionError(ref connection_error)) => {
                let code = crate::error::connection_error(C::DIALECT, connection_error);
                QueryError::new(QueryErrorKind::Unreachable, code, error)
            }
            // Timed out opening or checking a connection, failed to open one, or the
            // pool is closed or misconfigured: no connection to be had.
            _ => connect_error(error),
        })
    }
}

#[cfg(feature = "deadpool")]
#[async_trait]
impl<C: DieselConnection + 'static> QueryInterface for DeadpoolQueries<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    fn dialect(&self) -> Dialect {
        C::DIALECT
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let (pool, statement) = (self.pool.clone(), statement.clone());
        to_completion(async move {
            let mut conn = deadpool_checkout(&pool).await?;
            conn.execute_statement(&statement).await
        })
        .await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let (pool, statement) = (self.pool.clone(), statement.clone());
        to_completion(async move {
            let mut conn = deadpool_checkout(&pool).await?;
            conn.query_statement(&statement).await
        })
        .await
    }

    /// PostgreSQL, unless [`without_listening`](DeadpoolQueries::without_listening).
    fn listener(&self) -> Option<&dyn Listen> {
        self.source.is_some().then_some(self as &dyn Listen)
    }
}

#[cfg(feature = "deadpool")]
#[async_trait]
impl<C: DieselConnection + 'static> Listen for DeadpoolQueries<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    /// This pool.
    fn source(&self) -> String {
        self.source.clone().unwrap_or_default()
    }

    /// PostgreSQL: `LISTEN` on a connection the pool's manager opens (its URL and
    /// `custom_setup`, so TLS and settings are the pool's) but that never enters the
    /// pool, so that it takes none of the job's connections.
    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        use deadpool::managed::Manager;

        if self.source.is_none() {
            return Ok(());
        }
        let conn = self
            .pool
            .manager()
            .create()
            .await
            .map_err(|error| manager_error(C::DIALECT, error))?;
        conn.listen(channel, notices).await
    }
}

#[cfg(feature = "deadpool")]
impl<C: DieselConnection + 'static> fmt::Debug for DeadpoolQueries<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadpoolQueries")
            .field("dialect", &C::DIALECT)
            .field("status", &self.pool.status())
            .field("listens", &self.source.is_some())
            .finish()
    }
}

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl<C: DieselConnection + 'static> IntoQueryInterface<Diesel>
    for diesel_async::pooled_connection::deadpool::Pool<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(DeadpoolQueries::new(self))
    }
}

/// Clones the pool: a deadpool `Pool` is a handle to a shared pool.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl<C: DieselConnection + 'static> IntoQueryInterface<Diesel>
    for &diesel_async::pooled_connection::deadpool::Pool<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(DeadpoolQueries::new(self.clone()))
    }
}

/// The query interface over a bb8 pool of diesel-async connections
/// (`diesel_async::pooled_connection::bb8::Pool<C>`).
///
/// bb8 reports both a full pool and a server it cannot connect to as a timeout of the
/// checkout (it retries failed connections until the pool's `connection_timeout`, 30 s
/// by default): a timeout while every connection of the pool is open is
/// [`Error::PoolExhausted`](dlock_core::Error::PoolExhausted), otherwise
/// [`Error::Unreachable`](dlock_core::Error::Unreachable).
///
/// On PostgreSQL, waiters listen for releases on one connection per process, pool and
/// lock table, the pool's `dedicated_connection` (its URL and connection setup, outside
/// the pool; see the crate's documentation);
/// [`without_listening`](Self::without_listening) makes them poll instead.
#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub struct Bb8Queries<C: DieselConnection + 'static>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    pool: diesel_async::pooled_connection::bb8::Pool<C>,
    /// The notification source while this interface listens.
    source: Option<String>,
}

#[cfg(feature = "bb8")]
impl<C: DieselConnection + 'static> Bb8Queries<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    /// Runs statements on connections from `pool`; on PostgreSQL, listens for releases.
    pub fn new(pool: diesel_async::pooled_connection::bb8::Pool<C>) -> Self {
        let source = C::LISTENS.then(|| pool_source("bb8", bb8_identity(&pool)));
        Self { pool, source }
    }

    /// Waiters poll for releases instead of listening: no connection is opened outside
    /// the pool. For servers where `LISTEN` cannot work (PgBouncer in transaction mode),
    /// or a connection limit that leaves no room for it.
    #[must_use]
    pub fn without_listening(mut self) -> Self {
        self.source = None;
        self
    }

    /// The pool statements run on.
    pub fn pool(&self) -> &diesel_async::pooled_connection::bb8::Pool<C> {
        &self.pool
    }
}

/// The address of a bb8 pool's shared state, the same for every clone of the pool. bb8
/// has no accessor for it, but its `Debug` prints exactly that pointer
/// (`Pool(PoolInner(0x…))`). Should a bb8 release print something else, each interface
/// gets a number of its own: a hub per interface, never one shared by two pools (whose
/// waiters would listen on the wrong database).
#[cfg(feature = "bb8")]
fn bb8_identity<M: bb8::ManageConnection>(pool: &bb8::Pool<M>) -> String {
    static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let printed = format!("{pool:?}");
    let is_pointer = |text: &str| {
        text.strip_prefix("Pool(PoolInner(0x")
            .and_then(|rest| rest.strip_suffix("))"))
            .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if is_pointer(&printed) {
        printed
    } else {
        let unique = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("interface {unique}")
    }
}

#[cfg(feature = "bb8")]
async fn bb8_checkout<C: DieselConnection + 'static>(
    pool: &diesel_async::pooled_connection::bb8::Pool<C>,
) -> Result<diesel_async::pooled_connection::bb8::PooledConnection<'_, C>, QueryError>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    {
        match pool.get().await {
            Ok(connection) => Ok(connection),
            Err(bb8::RunError::TimedOut) if pool.state().connections >= pool.config().max_size => {
                Err(QueryError::new(
                    QueryErrorKind::PoolExhausted,
                    None,
                    bb8::RunError::<ManagerError>::TimedOut,
                ))
            }
            Err(bb8::RunError::TimedOut) => Err(bb8_diagnose(pool).await),
            Err(error) => Err(connect_error(error)),
        }
    }
}

/// Why a bb8 pool could not open a connection. bb8 retries failed connections until its
/// timeout and reports only "timed out", so a wrong password would look like a server
/// that is down (and be retried for ever as transient): one connection is opened outside
/// the pool to learn the reason. Only on this failure path.
#[cfg(feature = "bb8")]
async fn bb8_diagnose<C: DieselConnection + 'static>(
    pool: &diesel_async::pooled_connection::bb8::Pool<C>,
) -> QueryError
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    let limit = pool.config().connection_timeout;
    match tokio::time::timeout(limit, pool.dedicated_connection()).await {
        Ok(Err(error)) => manager_error(C::DIALECT, error),
        // It connected now, or it hangs: the pool's own timeout is the error to report.
        Ok(Ok(_)) | Err(_) => connect_error(bb8::RunError::<ManagerError>::TimedOut),
    }
}

#[cfg(feature = "bb8")]
#[async_trait]
impl<C: DieselConnection + 'static> QueryInterface for Bb8Queries<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    fn dialect(&self) -> Dialect {
        C::DIALECT
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let (pool, statement) = (self.pool.clone(), statement.clone());
        to_completion(async move {
            let mut conn = bb8_checkout(&pool).await?;
            conn.execute_statement(&statement).await
        })
        .await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let (pool, statement) = (self.pool.clone(), statement.clone());
        to_completion(async move {
            let mut conn = bb8_checkout(&pool).await?;
            conn.query_statement(&statement).await
        })
        .await
    }

    /// PostgreSQL, unless [`without_listening`](Bb8Queries::without_listening).
    fn listener(&self) -> Option<&dyn Listen> {
        self.source.is_some().then_some(self as &dyn Listen)
    }
}

#[cfg(feature = "bb8")]
#[async_trait]
impl<C: DieselConnection + 'static> Listen for Bb8Queries<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    /// This pool.
    fn source(&self) -> String {
        self.source.clone().unwrap_or_default()
    }

    /// PostgreSQL: `LISTEN` on the pool's `dedicated_connection`, opened with the pool's
    /// URL and connection setup but never part of the pool, so that it takes none of the
    /// job's connections.
    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        if self.source.is_none() {
            return Ok(());
        }
        let conn = self
            .pool
            .dedicated_connection()
            .await
            .map_err(|error| manager_error(C::DIALECT, error))?;
        conn.listen(channel, notices).await
    }
}

#[cfg(feature = "bb8")]
impl<C: DieselConnection + 'static> fmt::Debug for Bb8Queries<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bb8Queries")
            .field("dialect", &C::DIALECT)
            .field("state", &self.pool.state())
            .field("listens", &self.source.is_some())
            .finish()
    }
}

#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<C: DieselConnection + 'static> IntoQueryInterface<Diesel>
    for diesel_async::pooled_connection::bb8::Pool<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(Bb8Queries::new(self))
    }
}

/// Clones the pool: a bb8 `Pool` is a handle to a shared pool.
#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<C: DieselConnection + 'static> IntoQueryInterface<Diesel>
    for &diesel_async::pooled_connection::bb8::Pool<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(Bb8Queries::new(self.clone()))
    }
}

#[cfg(all(
    test,
    feature = "postgres",
    feature = "mysql",
    feature = "deadpool",
    feature = "bb8"
))]
mod tests {
    //! The notification source decides which locks share a hub and its listening
    //! connection: shared by every clone of a pool, never by two pools (which may be on
    //! two databases). Building the pools opens no connection.

    use diesel_async::pooled_connection::AsyncDieselConnectionManager;
    use diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
    use dlock_core::adapter::QueryInterface;

    use super::{Bb8Queries, DeadpoolQueries};

    const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn deadpool<C>(url: &str) -> diesel_async::pooled_connection::deadpool::Pool<C>
    where
        C: crate::DieselConnection + diesel_async::AsyncConnection + 'static,
        AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
    {
        diesel_async::pooled_connection::deadpool::Pool::builder(
            AsyncDieselConnectionManager::<C>::new(url),
        )
        .build()
        .expect("a pool without connections")
    }

    fn bb8(url: &str) -> diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection> {
        bb8::Pool::builder().build_unchecked(AsyncDieselConnectionManager::new(url))
    }

    #[test]
    fn a_deadpool_pool_and_its_clones_share_a_source_two_pools_do_not() {
        // All alive at once, as a hub keeps its pool: a dropped pool's address is reused.
        let pool = deadpool::<AsyncPgConnection>(PG);
        let (first, clone) = (
            DeadpoolQueries::new(pool.clone()),
            DeadpoolQueries::new(pool),
        );
        let other = DeadpoolQueries::new(deadpool::<AsyncPgConnection>(PG));
        assert!(first.listener().map(|listener| listener.source()).is_some());
        assert_eq!(
            first.listener().map(|listener| listener.source()),
            clone.listener().map(|listener| listener.source())
        );
        assert_ne!(
            first.listener().map(|listener| listener.source()),
            other.listener().map(|listener| listener.source())
        );
    }

    #[tokio::test]
    async fn a_bb8_pool_and_its_clones_share_a_source_two_pools_do_not() {
        // All alive at once, as a hub keeps its pool: a dropped pool's address is reused.
        let pool = bb8(PG);
        let (first, clone) = (Bb8Queries::new(pool.clone()), Bb8Queries::new(pool));
        let other = Bb8Queries::new(bb8(PG));
        // The pool's own address, not the per-interface fallback.
        let source = first.listener().map(|listener| listener.source());
        assert!(
            source
                .as_deref()
                .is_some_and(|source| source.contains("0x"))
        );
        assert_eq!(source, clone.listener().map(|listener| listener.source()));
        assert_ne!(source, other.listener().map(|listener| listener.source()));
    }

    #[tokio::test]
    async fn only_postgresql_listens_and_listening_can_be_turned_off() {
        let mysql = deadpool::<AsyncMysqlConnection>("mysql://root@127.0.0.1:3306/test");
        assert_eq!(
            DeadpoolQueries::new(mysql)
                .listener()
                .map(|listener| listener.source()),
            None
        );
        let pg = deadpool::<AsyncPgConnection>(PG);
        assert_eq!(
            DeadpoolQueries::new(pg)
                .without_listening()
                .listener()
                .map(|listener| listener.source()),
            None
        );
        assert_eq!(
            Bb8Queries::new(bb8(PG))
                .without_listening()
                .listener()
                .map(|listener| listener.source()),
            None
        );
    }
}
