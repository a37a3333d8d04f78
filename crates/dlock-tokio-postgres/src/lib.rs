#![doc = include_str!("../README.md")]

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::{Pool, PoolError, TimeoutType};
use tokio_postgres::types::{ToSql, Type};

#[doc(no_inline)]
pub use deadpool_postgres;
#[doc(no_inline)]
pub use dlock_core::*;
#[doc(no_inline)]
pub use tokio_postgres;

/// The query interface over a `deadpool_postgres::Pool` or a `tokio_postgres::Client`.
///
/// With a pool, every statement checks out a connection and returns it at once, so a
/// held lock holds no connection. With a client, statements share that one connection.
pub struct PostgresQueries {
    source: Source,
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
        }
    }

    /// Runs statements on `client`'s connection.
    pub fn from_client(client: Arc<tokio_postgres::Client>) -> Self {
        Self {
            source: Source::Client(client),
        }
    }

    async fn with_client<T, F>(&self, run: F) -> Result<T, QueryError>
    where
        F: AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    {
        match &self.source {
            Source::Pool(pool) => {
                let client = pool.get().await.map_err(pool_error)?;
                run(&client).await.map_err(statement_error)
            }
            Source::Client(client) => run(client).await.map_err(statement_error),
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
        self.with_client(async |client| client.execute_typed(&statement.sql, &params).await)
            .await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let params = bind(&statement.params);
        let rows = self
            .with_client(async |client| client.query_typed(&statement.sql, &params).await)
            .await?;
        rows.iter()
            .map(|row| decode(row, statement.columns))
            .collect::<Result<_, _>>()
            .map_err(statement_error)
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

impl IntoQueryInterface<TokioPostgres> for Arc<tokio_postgres::Client> {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_client(self))
    }
}

impl IntoQueryInterface<TokioPostgres> for tokio_postgres::Client {
    fn into_query_interface(self) -> Arc<dyn QueryInterface> {
        Arc::new(PostgresQueries::from_client(Arc::new(self)))
    }
}

/// Fences `transaction` with `lease`: checks, inside the transaction, that this
/// acquisition still holds the lock with its fencing token, and keeps the lock row locked
/// (`SELECT … FOR SHARE`) until the transaction ends, so nobody can take the lock over
/// before the transaction's writes commit.
///
/// Call it first in the transaction, before the writes. It returns
/// [`Error::Fenced`](dlock_core::Error::Fenced) when the lock has changed hands or the
/// lease has expired; roll back then.
///
/// Keep fenced transactions shorter than the TTL: while one runs, the lease cannot be
/// renewed (the renewal waits for the row), so a longer one makes the guard report loss.
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
pub async fn fence(
    transaction: &tokio_postgres::Transaction<'_>,
    lease: &dlock_core::Lease,
) -> dlock_core::Result<()> {
    let statement = lease.fence_statement();
    let params = bind(&statement.params);
    let rows = transaction
        .query_typed(&statement.sql, &params)
        .await
        .map_err(|error| dlock_core::Error::Database {
            action: "fence the transaction",
            source: statement_error(error),
        })?;
    lease.check_fence(rows.len())
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
    let code = error.code().map(|code| code.code().to_owned());
    QueryError::new(QueryErrorKind::Statement, code, error)
}

fn pool_error(error: PoolError) -> QueryError {
    let kind = match error {
        PoolError::Timeout(TimeoutType::Wait) => QueryErrorKind::PoolExhausted,
        _ => QueryErrorKind::Unreachable,
    };
    QueryError::new(kind, None, error)
}
