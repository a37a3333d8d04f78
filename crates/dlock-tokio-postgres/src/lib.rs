#![doc = include_str!("../README.md")]

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{Pool, PoolError, TimeoutType};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Socket};

#[doc(no_inline)]
pub use deadpool_postgres;
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
pub use tokio_postgres;

/// The query interface over a `deadpool_postgres::Pool` or a `tokio_postgres::Client`.
///
/// With a pool, every statement checks out a connection and returns it at once, so a
/// held lock holds no connection. With a client, statements share that one connection.
///
/// On a pool, statements are prepared once per connection (deadpool's statement cache):
/// PostgreSQL then parses and plans the acquire statement once, not at every acquisition.
/// A client runs them unnamed, as does a pool [`through_pooler`](Self::through_pooler)
/// that loses prepared statements.
pub struct PostgresQueries {
    source: Source,
    listener: Option<Arc<dyn Listen>>,
    /// Whether statements run unnamed rather than prepared and cached.
    unnamed: bool,
}

enum Source {
    Pool(Pool),
    Client(Arc<tokio_postgres::Client>),
}

impl PostgresQueries {
    /// Runs statements on connections from `pool`.
    pub fn from_pool(pool: Pool) -> Self {
        Self {
            source: Source::Pool(pool),
            listener: None,
            unnamed: false,
        }
    }

    /// Runs statements on `client`'s connection.
    pub fn from_client(client: Arc<tokio_postgres::Client>) -> Self {
        Self {
            source: Source::Client(client),
            listener: None,
            unnamed: true,
        }
    }

    /// The pool reaches PostgreSQL through a connection pooler in transaction mode
    /// (PgBouncer with `pool_mode = transaction`). With
    /// [`TransactionPooler::LosesPreparedStatements`] (PgBouncer before 1.21), every
    /// statement runs unnamed — parsed and planned each time, in one round trip, on
    /// whichever server connection the pooler gives it; with
    /// [`TransactionPooler::KeepsPreparedStatements`] statements stay prepared. Listen
    /// ([`listen_with`](Self::listen_with)) with a configuration that reaches PostgreSQL
    /// directly: a pooler in transaction mode cannot carry `LISTEN`.
    #[must_use]
    pub fn through_pooler(mut self, pooler: TransactionPooler) -> Self {
        self.unnamed |= pooler == TransactionPooler::LosesPreparedStatements;
        self
    }

    /// Also opens one connection per process and lock table, with `config` and `tls`,
    /// that `LISTEN`s for releases, so waiting `acquire`s wake as soon as a lock is
    /// released — in any process — instead of polling. Waiters then only probe, slowly,
    /// as a safety net.
    ///
    /// A pool does not hand out its connection settings, hence this second argument:
    /// pass the same configuration the pool was built from.
    pub fn listen_with<T>(mut self, config: tokio_postgres::Config, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let source = format!(
            "postgres {:?} {:?} {:?} {:?}",
            config.get_hosts(),
            config.get_ports(),
            config.get_dbname(),
            config.get_user()
        );
        self.listener = Some(Arc::new(Listener {
            config,
            tls,
            source,
        }));
        self
    }

    /// Runs `run` with the client to use and `statement` prepared on it, or `None` to
    /// run it unnamed.
    async fn with_client<T, F>(&self, statement: &Statement, run: F) -> Result<T, QueryError>
    where
        F: AsyncFnOnce(
            &tokio_postgres::Client,
            Option<tokio_postgres::Statement>,
        ) -> Result<T, tokio_postgres::Error>,
    {
        match &self.source {
            Source::Pool(pool) => {
                let checkout = Checkout(Some(pool.get().await.map_err(pool_error)?));
                let client = checkout.client();
                let result = async {
                    let prepared = match self.unnamed {
                        true => None,
                        false => Some(
                            client
                                .prepare_typed_cached(&statement.sql, &types(&statement.params))
                                .await?,
                        ),
                    };
                    run(client, prepared).await
                }
                .await
                .map_err(statement_error);
                checkout.finish();
                result
            }
            Source::Client(client) => run(client, None).await.map_err(statement_error),
        }
    }
}

/// A pooled connection running one statement. If the statement is abandoned before it
/// answers (the core gives up on a renewal or probe stuck on a half-open connection), the
/// connection is taken out of the pool rather than returned: its request is still in
/// flight, and the next checkout would queue behind it on a connection that may be dead.
struct Checkout(Option<deadpool_postgres::Object>);

impl Checkout {
    fn client(&self) -> &deadpool_postgres::Object {
        self.0
            .as_ref()
            .expect("BUG: a checkout is emptied only when it ends")
    }

    /// The statement answered: the connection goes back to the pool.
    fn finish(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(abandoned) = self.0.take() {
            drop(deadpool_postgres::Object::take(abandoned));
        }
    }
}

#[async_trait]
impl QueryInterface for PostgresQueries {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let params = bind(&statement.params);
        self.with_client(statement, async |client, prepared| match prepared {
            Some(prepared) => client.execute(&prepared, &values(&params)).await,
            None => client.execute_typed(&statement.sql, &params).await,
        })
        .await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.with_client(statement, async |client, prepared| {
            query_on(client, prepared, statement).await
        })
        .await
    }

    fn listener(&self) -> Option<&dyn Listen> {
        self.listener.as_deref()
    }
}

/// Opens a listening connection of its own with the configuration given to
/// [`PostgresQueries::listen_with`].
struct Listener<T> {
    config: tokio_postgres::Config,
    tls: T,
    source: String,
}

#[async_trait]
impl<T> Listen for Listener<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn source(&self) -> String {
        self.source.clone()
    }

    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(connect_error)?;
        let listen = async {
            // The channel is the core's: `dlock:` and a validated table name or a hash.
            client
                .batch_execute(&format!("LISTEN \"{channel}\""))
                .await
                .map_err(statement_error)?;
            notices.listening();
            loop {
                tokio::select! {
                    request = notices.request() => {
                        let rows = query_on(&client, None, request.statement()).await;
                        request.reply(rows.map_err(statement_error));
                    }
                    () = notices.closed() => return Ok(()),
                }
            }
        };
        // The connection delivers notifications only while it is polled, which also
        // sends the LISTEN; so poll it alongside.
        tokio::select! {
            ended = relay(connection, &notices) => ended,
            ended = listen => ended,
        }
    }
}

/// Polls a listening connection, passing each notification's payload on, until it closes.
async fn relay<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notices: &ReleaseNotices,
) -> Result<(), QueryError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notice))) => notices.notify(notice.payload()),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(statement_error(error)),
            None => return Ok(()),
        }
    }
}

impl fmt::Debug for PostgresQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Pool(pool) => format!("Pool({:?})", pool.status()),
            Source::Client(_) => "Client".to_owned(),
        };
        f.debug_struct("PostgresQueries")
            .field("source", &source)
            .field("listens", &self.listener.is_some())
            .finish()
    }
}

/// Marker that selects this adapter in [`IntoQueryInterface`].
#[derive(Debug)]
pub enum TokioPostgres {}

impl IntoQueryInterface<TokioPostgres> for Pool {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_pool(self))
    }
}

/// Clones the pool: a deadpool `Pool` is a handle to a shared pool, so `&pool` works as
/// it does with the SeaORM and Diesel adapters.
impl IntoQueryInterface<TokioPostgres> for &Pool {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_pool(self.clone()))
    }
}

impl IntoQueryInterface<TokioPostgres> for Arc<tokio_postgres::Client> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_client(self))
    }
}

/// Shares the client. A bare `&Client` cannot be accepted: the lock renews and releases
/// in the background, after the borrow has ended, so it needs a client it co-owns.
impl IntoQueryInterface<TokioPostgres> for &Arc<tokio_postgres::Client> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_client(Arc::clone(self)))
    }
}

impl IntoQueryInterface<TokioPostgres> for tokio_postgres::Client {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_client(Arc::new(self)))
    }
}

/// Fences `transaction` with `lease`: checks, inside the transaction, that this
/// acquisition still holds the lock with its fencing token, and keeps the lock row locked
/// (`SELECT … FOR KEY SHARE`) until the transaction ends, so nobody can take the lock over
/// before the transaction's writes commit.
///
/// Call it first in the transaction, before the writes. It returns
/// [`Error::Fenced`] when the lock has changed hands or the
/// lease has expired; roll back then.
///
/// # Errors
///
/// [`Error::Fenced`] as above; the database's error if the statement fails (the
/// transaction is then aborted).
///
/// # Cancel Safety
///
/// Cancel safe as far as dlock goes: it only reads. A dropped call leaves the
/// transaction with or without the row lock; roll it back.
///
/// The transaction may run as long as the job needs: `FOR KEY SHARE` does not conflict
/// with the renewal (an `UPDATE` of the lease's end alone), so the lease goes on being
/// renewed meanwhile, while a takeover (which locks the row `FOR UPDATE`) waits for the
/// commit.
///
/// ```no_run
/// # async fn example(pool: deadpool_postgres::Pool, lease: dlock_core::Lease) -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = pool.get().await?;
/// let transaction = client.transaction().await?;
/// dlock_tokio_postgres::fence(&transaction, &lease).await?;
/// transaction
///     .execute("UPDATE report SET done = true, token = $1", &[&lease.fencing_token().get()])
///     .await?;
/// transaction.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn fence(transaction: &tokio_postgres::Transaction<'_>, lease: &Lease) -> Result<()> {
    dlock_core::adapter::fence(lease, async |statement| {
        let params = bind(&statement.params);
        let rows = transaction.query_typed(&statement.sql, &params).await;
        Ok(rows.map_err(statement_error)?.len())
    })
    .await
}

/// The types `bind` gives `values`: what a statement is prepared with.
fn types(values: &[Value]) -> Vec<Type> {
    bind(values).into_iter().map(|(_, type_)| type_).collect()
}

/// The values of `bind`'s pairs, for a prepared statement.
fn values<'a>(params: &[(&'a (dyn ToSql + Sync), Type)]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}

fn bind(values: &[Value]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    const NULL: Option<&str> = None;
    values
        .iter()
        .map(|value| match value {
            Value::Null => (&NULL as &(dyn ToSql + Sync), Type::TEXT),
            Value::Int(int) => (int as &(dyn ToSql + Sync), Type::INT8),
            Value::Text(text) => (text as &(dyn ToSql + Sync), Type::TEXT),
        })
        .collect()
}

/// Runs `statement` on `client` — `prepared`, or unnamed — and decodes its rows.
async fn query_on(
    client: &tokio_postgres::Client,
    prepared: Option<tokio_postgres::Statement>,
    statement: &Statement,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let params = bind(&statement.params);
    let rows = match prepared {
        Some(prepared) => client.query(&prepared, &values(&params)).await?,
        None => client.query_typed(&statement.sql, &params).await?,
    };
    rows.iter()
        .map(|row| decode(row, statement.columns))
        .collect()
}

fn decode(row: &tokio_postgres::Row, columns: &[ColumnType]) -> Result<Row, tokio_postgres::Error> {
    columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            Ok(match column {
                ColumnType::Int => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
                ColumnType::Text => row.try_get::<_, Option<String>>(index)?.map(Value::Text),
            }
            .unwrap_or(Value::Null))
        })
        .collect()
}

fn statement_error(error: tokio_postgres::Error) -> QueryError {
    QueryError::new(QueryErrorKind::Statement, sqlstate(&error), error)
}

/// A checkout's error. A connection the server refused keeps its SQLSTATE (28P01 for a
/// wrong password, 28000 for an unknown role), which tells the core it is permanent.
fn pool_error(error: PoolError) -> QueryError {
    let (kind, code) = match &error {
        PoolError::Timeout(TimeoutType::Wait) => (QueryErrorKind::PoolExhausted, None),
        PoolError::Backend(error) => (QueryErrorKind::Unreachable, sqlstate(error)),
        _ => (QueryErrorKind::Unreachable, None),
    };
    QueryError::new(kind, code, error)
}

/// A connection that could not be opened, with the server's SQLSTATE if it refused us.
fn connect_error(error: tokio_postgres::Error) -> QueryError {
    QueryError::new(QueryErrorKind::Unreachable, sqlstate(&error), error)
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.code().map(|code| code.code().to_owned())
}
