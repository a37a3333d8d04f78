//! Running the core's statements on each of sqlx's databases.

use std::future::Future;

use dlock_core::Dialect;
use dlock_core::adapter::{QueryError, Row, Statement, Value};
use sqlx::{AssertSqlSafe, Connection, Database};

use crate::AnyPool;
use crate::error::{checkout_error, statement_error};

mod sealed {
    pub trait Sealed {}
}

/// A database of sqlx that this adapter runs on: `Postgres` (feature `postgres`),
/// `MySql` (`mysql`) and `Sqlite` (`sqlite`). Sealed: the adapter knows how each binds,
/// decodes and reports errors.
pub trait SqlxDatabase: Database + sealed::Sealed {
    /// The SQL dialect of this database.
    const DIALECT: Dialect;

    /// The pool, as the adapter keeps it.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn wrap(pool: sqlx::Pool<Self>) -> AnyPool;

    /// Runs `statement` on `conn` and returns how many rows it affected; `unnamed` runs
    /// it without preparing a named statement.
    #[doc(hidden)]
    fn run<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        unnamed: bool,
    ) -> impl Future<Output = Result<u64, QueryError>> + Send + 'c;

    /// Runs `statement` on `conn` and returns its rows, decoded per `statement.columns`.
    #[doc(hidden)]
    fn fetch<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        unnamed: bool,
    ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send + 'c;
}

/// `statement`'s SQL as an sqlx query for `$database`, its values bound in order.
macro_rules! bound {
    ($database:ty, $statement:expr) => {{
        let mut query = sqlx::query::<$database>(AssertSqlSafe($statement.sql.clone()));
        for value in &$statement.params {
            query = match value {
                Value::Null => query.bind(None::<String>),
                Value::Int(int) => query.bind(*int),
                Value::Text(text) => query.bind(text.clone()),
            };
        }
        query
    }};
}

/// `rows` decoded per `statement.columns`, as the core's rows.
macro_rules! decoded {
    ($rows:expr, $statement:expr) => {{
        use dlock_core::adapter::{ColumnType, Row, Value};
        use sqlx::Row as _;
        $rows
            .iter()
            .map(|row| {
                $statement
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(index, column)| {
                        Ok(match column {
                            ColumnType::Int => {
                                row.try_get::<Option<i64>, _>(index)?.map(Value::Int)
                            }
                            ColumnType::Text => {
                                row.try_get::<Option<String>, _>(index)?.map(Value::Text)
                            }
                        }
                        .unwrap_or(Value::Null))
                    })
                    .collect::<Result<Row, sqlx::Error>>()
            })
            .collect::<Result<Vec<Row>, sqlx::Error>>()
    }};
}
#[cfg(feature = "postgres")]
pub(crate) use {bound, decoded};

macro_rules! database {
    ($feature:literal, $database:ty, $variant:ident, $dialect:expr) => {
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $database {}

        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl SqlxDatabase for $database {
            const DIALECT: Dialect = $dialect;

            #[allow(private_interfaces)]
            fn wrap(pool: sqlx::Pool<Self>) -> AnyPool {
                AnyPool::$variant(pool)
            }

            fn run<'c>(
                conn: &'c mut Self::Connection,
                statement: &'c Statement,
                unnamed: bool,
            ) -> impl Future<Output = Result<u64, QueryError>> + Send + 'c {
                async move {
                    let query = bound!($database, statement);
                    let result = query
                        .persistent(!unnamed)
                        .execute(conn)
                        .await
                        .map_err(|error| statement_error(Self::DIALECT, error))?;
                    Ok(result.rows_affected())
                }
            }

            fn fetch<'c>(
                conn: &'c mut Self::Connection,
                statement: &'c Statement,
                unnamed: bool,
            ) -> impl Future<Output = Result<Vec<Row>, QueryError>> + Send + 'c {
                async move {
                    let query = bound!($database, statement);
                    let rows = query
                        .persistent(!unnamed)
                        .fetch_all(conn)
                        .await
                        .map_err(|error| statement_error(Self::DIALECT, error))?;
                    decoded!(rows, statement).map_err(|error| statement_error(Self::DIALECT, error))
                }
            }
        }
    };
}

database!("postgres", sqlx::Postgres, Postgres, Dialect::Postgres);
database!("mysql", sqlx::MySql, MySql, Dialect::Mysql);
database!("sqlite", sqlx::Sqlite, Sqlite, Dialect::Sqlite);

/// Runs `statement` on a connection checked out of `pool` for it: on its own, or, when
/// `unnamed`, unnamed in a transaction of its own (which keeps one server connection for
/// it behind a pooler in transaction mode).
pub(crate) async fn execute<DB: SqlxDatabase>(
    pool: &sqlx::Pool<DB>,
    statement: &Statement,
    unnamed: bool,
) -> Result<u64, QueryError> {
    let mut conn = pool.acquire().await.map_err(|e| checkout_error(pool, e))?;
    if !unnamed {
        return DB::run(&mut conn, statement, false).await;
    }
    let mut transaction = conn
        .begin()
        .await
        .map_err(|e| statement_error(DB::DIALECT, e))?;
    let affected = DB::run(&mut transaction, statement, true).await?;
    transaction
        .commit()
        .await
        .map_err(|e| statement_error(DB::DIALECT, e))?;
    Ok(affected)
}

/// [`execute`] for a statement that returns rows.
pub(crate) async fn query<DB: SqlxDatabase>(
    pool: &sqlx::Pool<DB>,
    statement: &Statement,
    unnamed: bool,
) -> Result<Vec<Row>, QueryError> {
    let mut conn = pool.acquire().await.map_err(|e| checkout_error(pool, e))?;
    if !unnamed {
        return DB::fetch(&mut conn, statement, false).await;
    }
    let mut transaction = conn
        .begin()
        .await
        .map_err(|e| statement_error(DB::DIALECT, e))?;
    let rows = DB::fetch(&mut transaction, statement, true).await?;
    transaction
        .commit()
        .await
        .map_err(|e| statement_error(DB::DIALECT, e))?;
    Ok(rows)
}
