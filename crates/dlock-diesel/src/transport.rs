//! Running the core's statements on one diesel-async connection.

use std::future::Future;

use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Nullable, Text};
use dlock_core::Dialect;
use dlock_core::adapter::{QueryError, ReleaseNotices, Row, Statement, Value};

use crate::decode::DynamicRows;
use crate::error::statement_error;

mod sealed {
    pub trait Sealed {}
}

/// A diesel-async connection this adapter can run statements on:
/// `AsyncPgConnection` (feature `postgres`), `AsyncMysqlConnection` (feature `mysql`) and
/// `SyncConnectionWrapper<SqliteConnection>` (feature `sqlite`), and these checked out of
/// a deadpool or bb8 pool (`Object<C>`, `PooledConnection<C>`), so that
/// [`fence`](crate::fence) takes whatever `transaction` hands its closure. The connection
/// type decides the SQL dialect.
///
/// Sealed: the adapter knows how each of these reports rows and errors.
pub trait DieselConnection: diesel_async::AsyncConnectionCore + sealed::Sealed + Send {
    /// The SQL dialect this connection speaks.
    const DIALECT: Dialect;

    /// Runs `statement` and returns the number of rows it affected.
    #[doc(hidden)]
    fn execute_statement<'a>(
        &'a mut self,
        statement: &'a Statement,
    ) -> impl Future<Output = Result<u64, QueryError>> + Send + 'a;

    /// Runs `statement` and returns its rows, decoded per `statement.columns`.
    #[doc(hidden)]
    fn query_statement<'a>(
        &'a mut self,
        statement: &'a Statement,
    ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send + 'a;

    /// Whether [`listen`](Self::listen) can hear release notices on this connection:
    /// PostgreSQL's `LISTEN`/`NOTIFY` only.
    #[doc(hidden)]
    const LISTENS: bool = false;

    /// Makes this connection, opened for the purpose outside the pool, `LISTEN` on
    /// `channel` and report what it hears to `notices`, until `notices` is closed or the
    /// connection fails. Dropping the future drops the connection, which closes it.
    #[doc(hidden)]
    fn listen(
        self,
        channel: &str,
        notices: ReleaseNotices,
    ) -> impl Future<Output = Result<(), QueryError>> + Send
    where
        Self: Sized,
    {
        let _ = (channel, notices);
        async { Ok(()) }
    }
}

/// `statement` as a diesel raw query. The core's SQL already carries the dialect's
/// placeholders (`$1`, `?`, `?1`), so the values are bound without adding any; `NULL`
/// goes as a nullable `TEXT`, the type every core parameter that may be absent has.
fn raw_query<DB>(statement: &Statement) -> BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<BigInt>
        + diesel::sql_types::HasSqlType<Text>
        + diesel::sql_types::HasSqlType<Nullable<Text>>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    String: diesel::serialize::ToSql<Text, DB>,
    Option<String>: diesel::serialize::ToSql<Nullable<Text>, DB>,
{
    let mut query = diesel::sql_query(&*statement.sql).into_boxed::<DB>();
    for value in &statement.params {
        query = match value {
            Value::Null => query.bind::<Nullable<Text>, _>(None::<String>),
            Value::Int(int) => query.bind::<BigInt, _>(*int),
            Value::Text(text) => query.bind::<Text, _>(text.clone()),
        };
    }
    query
}

macro_rules! diesel_connection {
    ($(#[$attr:meta])* $connection:ty, $dialect:expr $(, { $($listening:tt)* })?) => {
        $(#[$attr])*
        impl sealed::Sealed for $connection {}

        $(#[$attr])*
        impl DieselConnection for $connection {
            const DIALECT: Dialect = $dialect;

            fn execute_statement<'a>(
                &'a mut self,
                statement: &'a Statement,
            ) -> impl Future<Output = Result<u64, QueryError>> + Send + 'a {
                async move {
                    let query = DynamicRows(raw_query(statement));
                    let affected = diesel_async::RunQueryDsl::execute(query, self)
                        .await
                        .map_err(|error| statement_error(Self::DIALECT, error))?;
                    Ok(u64::try_from(affected).unwrap_or(0))
                }
            }

            fn query_statement<'a>(
                &'a mut self,
                statement: &'a Statement,
            ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send + 'a {
                async move {
                    let query = DynamicRows(raw_query(statement));
                    let rows = diesel_async::RunQueryDsl::load(query, self)
                        .await
                        .map_err(|error| statement_error(Self::DIALECT, error))?;
                    crate::decode::conform(rows, statement.columns)
                }
            }

            $($($listening)*)?
        }
    };
}

diesel_connection!(
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    diesel_async::AsyncPgConnection,
    Dialect::Postgres,
    {
        const LISTENS: bool = true;

        fn listen(
            mut self,
            channel: &str,
            notices: ReleaseNotices,
        ) -> impl Future<Output = Result<(), QueryError>> + Send {
            // The channel is the core's: `dlock:` and a validated table name or a hash.
            let listen = format!("LISTEN \"{channel}\"");
            async move {
                use diesel_async::SimpleAsyncConnection;

                self.batch_execute(&listen)
                    .await
                    .map_err(|error| statement_error(Dialect::Postgres, error))?;
                notices.listening();
                loop {
                    // diesel-async's connection task queues every notification from the
                    // `LISTEN` on, so none is lost while the stream is not polled (a
                    // request runs) or is dropped between notifications.
                    let request = {
                        let mut stream = std::pin::pin!(self.notifications_stream());
                        tokio::select! {
                            notice = std::future::poll_fn(|cx| {
                                futures_core::Stream::poll_next(stream.as_mut(), cx)
                            }) => {
                                match notice {
                                    Some(Ok(notice)) => {
                                        notices.notify(&notice.payload);
                                        continue;
                                    }
                                    Some(Err(error)) => {
                                        return Err(statement_error(Dialect::Postgres, error));
                                    }
                                    // The connection's task ended: the connection is closed.
                                    None => return Ok(()),
                                }
                            }
                            request = notices.request() => request,
                            () = notices.closed() => return Ok(()),
                        }
                    };
                    let rows = self.query_statement(request.statement()).await;
                    request.reply(rows);
                }
            }
        }
    }
);

diesel_connection!(
    #[cfg(feature = "mysql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
    diesel_async::AsyncMysqlConnection,
    Dialect::Mysql
);
diesel_connection!(
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    Dialect::Sqlite
);

/// A connection checked out of a pool: the connection it holds.
#[cfg(any(feature = "deadpool", feature = "bb8"))]
macro_rules! pooled_connection {
    ($(#[$attr:meta])* [$($lifetime:lifetime)?] $pooled:ty, $manager:path) => {
        $(#[$attr])*
        impl<$($lifetime,)? C: DieselConnection + 'static> sealed::Sealed for $pooled
        where
            AsyncDieselConnectionManager<C>: $manager,
        {
        }

        $(#[$attr])*
        impl<$($lifetime,)? C: DieselConnection + 'static> DieselConnection for $pooled
        where
            AsyncDieselConnectionManager<C>: $manager,
        {
            const DIALECT: Dialect = C::DIALECT;

            fn execute_statement<'a>(
                &'a mut self,
                statement: &'a Statement,
            ) -> impl Future<Output = Result<u64, QueryError>> + Send + 'a {
                (**self).execute_statement(statement)
            }

            fn query_statement<'a>(
                &'a mut self,
                statement: &'a Statement,
            ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send + 'a {
                (**self).query_statement(statement)
            }
        }
    };
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError};

#[cfg(feature = "deadpool")]
pooled_connection!(
    [] diesel_async::pooled_connection::deadpool::Object<C>,
    deadpool::managed::Manager<Type = C, Error = PoolError>
);
#[cfg(feature = "bb8")]
pooled_connection!(
    ['p] diesel_async::pooled_connection::bb8::PooledConnection<'p, C>,
    bb8::ManageConnection<Connection = C, Error = PoolError>
);

/// Opens a SQLite connection set up for locks shared by several connections and
/// processes: a busy timeout of 10 s, so that writers wait for each other instead of
/// failing at once with `database is locked` (every acquire, renewal and release is a
/// write), and WAL journaling, so that waiters' reads never block the holder's writes.
/// `url` is what `SqliteConnection::establish` takes: a path, or a `file:` or
/// `sqlite://` URI.
///
/// Use it as the pool's connection setup:
///
/// ```no_run
/// use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
/// # #[cfg(feature = "deadpool")]
/// use dlock_diesel::diesel_async::pooled_connection::deadpool::Pool;
///
/// # #[cfg(feature = "deadpool")]
/// # fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = ManagerConfig::default();
/// config.custom_setup = Box::new(|url| Box::pin(dlock_diesel::establish_sqlite(url)));
/// let manager = AsyncDieselConnectionManager::new_with_config("locks.db", config);
/// let pool = Pool::builder(manager).max_size(4).build()?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Diesel's error when the file cannot be opened or the settings cannot be applied (a
/// read-only file, a path that is not a database).
///
/// # Cancel Safety
///
/// Cancel safe: dropping it drops the half-set-up connection, which closes it.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub async fn establish_sqlite(
    url: &str,
) -> diesel::ConnectionResult<
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};

    let mut conn = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
        diesel::SqliteConnection,
    >::establish(url)
    .await?;
    // The busy timeout first: switching to WAL needs a lock that a concurrent opener
    // may hold for a moment.
    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}
