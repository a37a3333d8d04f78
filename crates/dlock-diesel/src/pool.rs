//! Query interfaces over diesel-async's pools: every statement checks a connection out
//! and returns it as soon as the statement is done, so a held lock holds no connection.

use std::fmt;
use std::sync::Arc;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::PoolError as ManagerError;
use dlock_core::{
    Dialect, IntoQueryInterface, QueryError, QueryErrorKind, QueryInterface, Row, Statement,
    async_trait,
};

use crate::error::PrintedOnce;
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
    QueryError::new(QueryErrorKind::Unreachable, None, PrintedOnce(error))
}

/// The query interface over a deadpool pool of diesel-async connections
/// (`diesel_async::pooled_connection::deadpool::Pool<C>`).
///
/// A checkout that times out waiting for a free connection (the pool's `wait` timeout)
/// is [`Error::PoolExhausted`](dlock_core::Error::PoolExhausted); one that cannot open a
/// connection is [`Error::Unreachable`](dlock_core::Error::Unreachable). Without a `wait`
/// timeout, deadpool waits for a free connection for ever: set one (it needs deadpool's
/// `rt_tokio_1` feature).
#[cfg(feature = "deadpool")]
pub struct DeadpoolQueries<C: DieselConnection + 'static>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    pool: diesel_async::pooled_connection::deadpool::Pool<C>,
}

#[cfg(feature = "deadpool")]
impl<C: DieselConnection + 'static> DeadpoolQueries<C>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = ManagerError>,
{
    /// Runs statements on connections from `pool`.
    pub fn new(pool: diesel_async::pooled_connection::deadpool::Pool<C>) -> Self {
        Self { pool }
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
                QueryError::new(QueryErrorKind::Unreachable, code, PrintedOnce(error))
            }
            PoolError::Backend(ManagerError::ConnectionError(ref connection_error)) => {
                let code = crate::error::connection_error(C::DIALECT, connection_error);
                QueryError::new(QueryErrorKind::Unreachable, code, PrintedOnce(error))
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
            .finish()
    }
}

#[cfg(feature = "deadpool")]
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
#[cfg(feature = "bb8")]
pub struct Bb8Queries<C: DieselConnection + 'static>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    pool: diesel_async::pooled_connection::bb8::Pool<C>,
}

#[cfg(feature = "bb8")]
impl<C: DieselConnection + 'static> Bb8Queries<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    /// Runs statements on connections from `pool`.
    pub fn new(pool: diesel_async::pooled_connection::bb8::Pool<C>) -> Self {
        Self { pool }
    }

    /// The pool statements run on.
    pub fn pool(&self) -> &diesel_async::pooled_connection::bb8::Pool<C> {
        &self.pool
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
        Ok(Err(ManagerError::ConnectionError(error))) => {
            let code = crate::error::connection_error(C::DIALECT, &error);
            QueryError::new(QueryErrorKind::Unreachable, code, error)
        }
        Ok(Err(ManagerError::QueryError(error))) => {
            let code = crate::error::database_code(C::DIALECT, &error);
            QueryError::new(QueryErrorKind::Unreachable, code, error)
        }
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
            .finish()
    }
}

#[cfg(feature = "bb8")]
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
impl<C: DieselConnection + 'static> IntoQueryInterface<Diesel>
    for &diesel_async::pooled_connection::bb8::Pool<C>
where
    AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = ManagerError>,
{
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(Bb8Queries::new(self.clone()))
    }
}
