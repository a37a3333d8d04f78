//! Query interfaces over diesel-async's pools: every statement checks a connection out
//! and returns it as soon as the statement is done, so a held lock holds no connection.
//!
//! One generic [`PooledQueries`] serves both pools; what differs between deadpool and bb8
//! (how a checkout fails, how a connection outside the pool is opened, what identifies
//! the pool) is the [`DieselPool`] implementation of each.

use std::fmt;
use std::ops::DerefMut;
use std::sync::Arc;

use diesel_async::AsyncConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::PoolError as ManagerError;
use dlock_core::adapter::{
    IntoQueryInterface, Listen, QueryError, QueryErrorKind, QueryInterface, ReleaseNotices, Row,
    Statement, async_trait,
};
use dlock_core::{Dialect, TransactionPooler};

use crate::error::statement_error;
use crate::{Diesel, DieselConnection};

/// A diesel-async pool the adapter can run statements on: implemented for deadpool's and
/// bb8's `Pool<C>`. Sealed: nothing else can implement it.
#[cfg_attr(docsrs, doc(cfg(any(feature = "deadpool", feature = "bb8"))))]
pub trait DieselPool: Clone + Send + Sync + sealed::Sealed + 'static {
    /// The connection type of the pool.
    type Connection: DieselConnection + AsyncConnection + 'static;

    /// A connection checked out for one statement.
    #[doc(hidden)]
    fn checkout(
        &self,
    ) -> impl Future<Output = Result<impl DerefMut<Target = Self::Connection> + Send, QueryError>> + Send;

    /// A connection opened with the pool's URL and setup but never part of the pool.
    #[doc(hidden)]
    fn dedicated(&self) -> impl Future<Output = Result<Self::Connection, QueryError>> + Send;

    /// What tells this pool (and its clones) from every other live pool.
    #[doc(hidden)]
    fn identity(&self) -> String;

    /// The pool's name and state, for `Debug`.
    #[doc(hidden)]
    fn describe(&self) -> String;
}

mod sealed {
    pub trait Sealed {}
}

/// The query interface over a diesel-async pool: [`DeadpoolQueries`] or [`Bb8Queries`].
///
/// On PostgreSQL, waiters listen for releases on one connection per process, pool and
/// lock table, opened with the pool's URL and connection setup but outside the pool (see
/// the crate's documentation); [`without_listening`](Self::without_listening) makes them
/// poll instead.
#[cfg_attr(docsrs, doc(cfg(any(feature = "deadpool", feature = "bb8"))))]
pub struct PooledQueries<P: DieselPool> {
    pool: P,
    /// The notification source while this interface listens.
    source: Option<String>,
    /// `Some` behind a pooler in transaction mode.
    pooler: Option<TransactionPooler>,
    /// Where the listening connection goes, if not where the pool's do.
    listen_url: Option<Arc<str>>,
}

/// The query interface over a deadpool pool of diesel-async connections
/// (`diesel_async::pooled_connection::deadpool::Pool<C>`).
///
/// A checkout that times out waiting for a free connection (the pool's `wait` timeout)
/// is [`Error::PoolExhausted`](dlock_core::Error::PoolExhausted); one that cannot open a
/// connection is [`Error::Unreachable`](dlock_core::Error::Unreachable). Without a `wait`
/// timeout, deadpool waits for a free connection for ever: set one (it needs deadpool's
/// `rt_tokio_1` feature). The listening connection is one the pool's manager creates.
#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
pub type DeadpoolQueries<C> = PooledQueries<diesel_async::pooled_connection::deadpool::Pool<C>>;

/// The query interface over a bb8 pool of diesel-async connections
/// (`diesel_async::pooled_connection::bb8::Pool<C>`).
///
/// bb8 reports both a full pool and a server it cannot connect to as a timeout of the
/// checkout (it retries failed connections until the pool's `connection_timeout`, 30 s
/// by default): a timeout while every connection of the pool is open is
/// [`Error::PoolExhausted`](dlock_core::Error::PoolExhausted), otherwise
/// [`Error::Unreachable`](dlock_core::Error::Unreachable). The listening connection is
/// the pool's `dedicated_connection`.
#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
pub type Bb8Queries<C> = PooledQueries<diesel_async::pooled_connection::bb8::Pool<C>>;

impl<P: DieselPool> PooledQueries<P> {
    /// Runs statements on connections from `pool`; on PostgreSQL, listens for releases.
    pub fn new(pool: P) -> Self {
        // The key of the release notices that a pool's locks share in this process (see
        // [`Listen::source`]). The pool's URL would be the better key (one listening
        // connection per database, whatever the pool), but diesel-async's managers do not
        // hand it out; per pool, two pools on one database each listen, which costs a
        // connection and nothing else. A pool's identity is only reused after the pool is
        // gone, and the notices keyed by it hold the pool's interface, so two live pools
        // never share them.
        let source =
            P::Connection::LISTENS.then(|| format!("postgres diesel-async {}", pool.identity()));
        Self {
            pool,
            source,
            pooler: None,
            listen_url: None,
        }
    }

    /// The pool reaches PostgreSQL through a pooler in transaction mode (PgBouncer with
    /// `pool_mode = transaction`):
    ///
    /// - with [`TransactionPooler::LosesPreparedStatements`] (PgBouncer before 1.21, or
    ///   `max_prepared_statements = 0`) each statement runs in a transaction of its own
    ///   (`BEGIN` and `COMMIT` as simple queries, which keeps one server connection for
    ///   diesel-async's prepare and execute), with the connection's statement cache
    ///   disabled: diesel-async always prepares named statements, and a cached one would
    ///   be looked for on another server connection. Build the pool with
    ///   [`pooler_manager`](crate::pooler_manager), whose connections need no check
    ///   statement and cache nothing, so that your own queries (in transactions) work
    ///   too. With [`TransactionPooler::KeepsPreparedStatements`] statements run as
    ///   without a pooler;
    /// - waiters do not `LISTEN` through the pool: they listen on a connection to the URL
    ///   given to [`listen_at`](Self::listen_at), or, without one, poll at the lock's poll
    ///   interval (dlock says so once, at WARN).
    #[must_use]
    pub fn through_pooler(mut self, pooler: TransactionPooler) -> Self {
        self.pooler = Some(pooler);
        self
    }

    /// Waiters listen for releases on a connection to `url` — one that reaches PostgreSQL
    /// directly, not through a pooler in transaction mode — instead of one the pool's
    /// manager opens. Ignored on other databases.
    #[must_use]
    pub fn listen_at(mut self, url: &str) -> Self {
        self.listen_url = Some(url.into());
        self
    }

    /// Whether each statement runs in a transaction of its own, uncached.
    fn unnamed(&self) -> bool {
        self.pooler == Some(TransactionPooler::LosesPreparedStatements)
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
    pub fn pool(&self) -> &P {
        &self.pool
    }
}

/// Runs one statement (checkout, statement, return of the connection) in a task of its
/// own, so that it always runs to completion. The core drops statement futures (a
/// waiter's probe when its `acquire` is dropped or times out), and a diesel-async
/// connection dropped in the middle of a statement goes back to the pool in whatever
/// state that left it: with mysql_async, the next statement on it was seen reading an
/// answer meant for the dropped one, so an acquisition went unnoticed and its lock
/// stayed taken for a whole TTL.
async fn to_completion<T: Send + 'static>(
    statement: impl Future<Output = Result<T, QueryError>> + Send + 'static,
) -> Result<T, QueryError> {
    tokio::spawn(statement).await.map_err(|error| {
        // The statement's task panicked (a driver bug) or the runtime is shutting down.
        QueryError::new(QueryErrorKind::Statement, None, error)
    })?
}

#[async_trait]
impl<P: DieselPool> QueryInterface for PooledQueries<P> {
    fn dialect(&self) -> Dialect {
        P::Connection::DIALECT
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let (pool, statement, unnamed) = (self.pool.clone(), statement.clone(), self.unnamed());
        to_completion(async move {
            let mut conn = pool.checkout().await?;
            if !unnamed {
                return conn.execute_statement(&statement).await;
            }
            begin_uncached(&mut *conn).await?;
            let affected = conn.execute_statement(&statement).await;
            end(&mut *conn, affected).await
        })
        .await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let (pool, statement, unnamed) = (self.pool.clone(), statement.clone(), self.unnamed());
        to_completion(async move {
            let mut conn = pool.checkout().await?;
            if !unnamed {
                return conn.query_statement(&statement).await;
            }
            begin_uncached(&mut *conn).await?;
            let rows = conn.query_statement(&statement).await;
            end(&mut *conn, rows).await
        })
        .await
    }

    /// PostgreSQL, unless [`without_listening`](PooledQueries::without_listening).
    fn listener(&self) -> Option<&dyn Listen> {
        self.source.is_some().then_some(self as &dyn Listen)
    }
}

#[async_trait]
impl<P: DieselPool> Listen for PooledQueries<P> {
    /// This pool.
    fn source(&self) -> String {
        self.source.clone().unwrap_or_default()
    }

    /// `LISTEN` on a connection opened with the pool's URL and connection setup (so TLS
    /// and settings are the pool's) but never part of the pool, so that it takes none of
    /// the job's connections.
    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        let dialect = P::Connection::DIALECT;
        let conn = match (&self.listen_url, self.pooler) {
            (Some(url), _) => P::Connection::establish(url).await.map_err(|error| {
                let code = crate::error::connection_error(dialect, &error);
                QueryError::new(QueryErrorKind::Unreachable, code, error)
            })?,
            (None, Some(_)) => {
                return Err(QueryError::new(
                    QueryErrorKind::Unreachable,
                    None,
                    "the pool goes through a pooler in transaction mode, which cannot carry \
                     LISTEN, and no direct URL was given to listen on: give the adapter a \
                     URL that reaches PostgreSQL directly (`listen_at`)",
                ));
            }
            (None, None) => self.pool.dedicated().await?,
        };
        conn.listen(channel, notices).await
    }
}

impl<P: DieselPool> fmt::Debug for PooledQueries<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledQueries")
            .field("dialect", &P::Connection::DIALECT)
            .field("pool", &self.pool.describe())
            .field("listens", &self.source.is_some())
            .field("pooler", &self.pooler)
            .field("listen_url", &self.listen_url.is_some())
            .finish()
    }
}

/// Begins a transaction, as a simple query, on a connection that caches no statement:
/// behind a pooler that loses prepared statements, the transaction keeps one server
/// connection for diesel-async's prepare and execute, and nothing prepared outlives it.
async fn begin_uncached<C: DieselConnection + AsyncConnection>(
    conn: &mut C,
) -> Result<(), QueryError> {
    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    conn.batch_execute("BEGIN")
        .await
        .map_err(|error| statement_error(C::DIALECT, error))
}

/// Commits the transaction of [`begin_uncached`] after `result`, or rolls it back.
async fn end<C: DieselConnection + AsyncConnection, T>(
    conn: &mut C,
    result: Result<T, QueryError>,
) -> Result<T, QueryError> {
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.batch_execute(end).await;
    let value = result?;
    ended.map_err(|error| statement_error(C::DIALECT, error))?;
    Ok(value)
}

/// Implements `IntoQueryInterface` for a pool type and its references (clones the pool:
/// a deadpool or bb8 `Pool` is a handle to a shared pool). Concrete impls, since the
/// orphan rule forbids one for every `P: DieselPool`.
macro_rules! into_query_interface {
    ($feature:literal, $pool:ty, $($bound:tt)+) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl<C: DieselConnection + AsyncConnection + 'static> IntoQueryInterface<Diesel> for $pool
        where
            $($bound)+
        {
            fn into_query_interface(self) -> Arc<dyn QueryInterface> {
                Arc::new(PooledQueries::new(self))
            }
        }

        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl<C: DieselConnection + AsyncConnection + 'static> IntoQueryInterface<Diesel> for &$pool
        where
            $($bound)+
        {
            fn into_query_interface(self) -> Arc<dyn QueryInterface> {
                Arc::new(PooledQueries::new(self.clone()))
            }
        }
    };
}

into_query_interface!(
    "deadpool",
    diesel_async::pooled_connection::deadpool::Pool<C>,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>
);
into_query_interface!(
    "bb8",
    diesel_async::pooled_connection::bb8::Pool<C>,
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>
);

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

#[cfg(feature = "deadpool")]
impl<C: DieselConnection + 'static> sealed::Sealed
    for diesel_async::pooled_connection::deadpool::Pool<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
}

#[cfg(feature = "deadpool")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
impl<C: DieselConnection + AsyncConnection + 'static> DieselPool
    for diesel_async::pooled_connection::deadpool::Pool<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    type Connection = C;

    async fn checkout(&self) -> Result<impl DerefMut<Target = C> + Send, QueryError> {
        use deadpool::managed::{PoolError, TimeoutType};
        self.get().await.map_err(|error| match error {
            PoolError::Timeout(TimeoutType::Wait) => {
                QueryError::new(QueryErrorKind::PoolExhausted, None, error)
            }
            PoolError::Backend(ManagerError::QueryError(ref query_error)) => {
                // The server answered the pool's check with an error (a prepared
                // statement a pooler lost, say): it is reachable, the statement failed.
                let kind = match query_error {
                    diesel::result::Error::DatabaseError(..) => QueryErrorKind::Statement,
                    _ => QueryErrorKind::Unreachable,
                };
                let code = crate::error::database_code(C::DIALECT, query_error);
                QueryError::new(kind, code, error)
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

    /// A connection the pool's manager creates (its URL and `custom_setup`), which never
    /// enters the pool.
    async fn dedicated(&self) -> Result<C, QueryError> {
        use deadpool::managed::Manager;
        let created = self.manager().create().await;
        created.map_err(|error| manager_error(C::DIALECT, error))
    }

    /// The address of the pool's manager, the same for every clone of the pool.
    fn identity(&self) -> String {
        format!("deadpool {:p}", self.manager())
    }

    fn describe(&self) -> String {
        format!("deadpool {:?}", self.status())
    }
}

#[cfg(feature = "bb8")]
impl<C: DieselConnection + 'static> sealed::Sealed for diesel_async::pooled_connection::bb8::Pool<C> where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>
{
}

#[cfg(feature = "bb8")]
#[cfg_attr(docsrs, doc(cfg(feature = "bb8")))]
impl<C: DieselConnection + AsyncConnection + 'static> DieselPool
    for diesel_async::pooled_connection::bb8::Pool<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    type Connection = C;

    async fn checkout(&self) -> Result<impl DerefMut<Target = C> + Send, QueryError> {
        match self.get().await {
            Ok(connection) => Ok(connection),
            Err(bb8::RunError::TimedOut) if self.state().connections >= self.config().max_size => {
                Err(QueryError::new(
                    QueryErrorKind::PoolExhausted,
                    None,
                    bb8::RunError::<ManagerError>::TimedOut,
                ))
            }
            Err(bb8::RunError::TimedOut) => Err(bb8_diagnose(self).await),
            Err(error) => Err(connect_error(error)),
        }
    }

    /// The pool's `dedicated_connection`: its URL and connection setup, outside the pool.
    async fn dedicated(&self) -> Result<C, QueryError> {
        let opened = self.dedicated_connection().await;
        opened.map_err(|error| manager_error(C::DIALECT, error))
    }

    /// The address of the pool's shared state, the same for every clone of the pool. bb8
    /// has no accessor for it, but its `Debug` prints exactly that pointer
    /// (`Pool(PoolInner(0x…))`). Should a bb8 release print something else, each
    /// interface gets a number of its own: notices per interface, never shared by two
    /// pools (whose waiters would listen on the wrong database).
    fn identity(&self) -> String {
        static UNIQUE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let printed = format!("{self:?}");
        let is_pointer = |text: &str| {
            text.strip_prefix("Pool(PoolInner(0x")
                .and_then(|rest| rest.strip_suffix("))"))
                .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        };
        if is_pointer(&printed) {
            format!("bb8 {printed}")
        } else {
            let unique = UNIQUE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("bb8 interface {unique}")
        }
    }

    fn describe(&self) -> String {
        format!("bb8 {:?}", self.state())
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
