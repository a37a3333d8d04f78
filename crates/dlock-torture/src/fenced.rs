//! A write in a fenced transaction, through each adapter's own fence helper, as a user
//! of that adapter writes it.

use dlock_bench::backend::Pool;
use dlock_bench::describe;
use dlock_core::{BoxError, Error, Lease, Statement, Value};
use dlock_diesel::DieselConnection;
use dlock_diesel::diesel_async::AsyncConnection;
use dlock_seaorm::sea_orm::{self, ConnectionTrait};
use dlock_tokio_postgres::tokio_postgres::types::{ToSql, Type};

/// What became of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// The fence passed and the transaction committed.
    Committed,
    /// The fence refused: the lease is no longer this acquisition's.
    Refused,
}

/// In one transaction: fence with `lease`, run `write`, commit. SQLite transactions are
/// begun `IMMEDIATE`, so that no takeover can commit between the fence and the commit.
pub(crate) async fn write(
    pool: &Pool,
    lease: &Lease,
    write: &Statement,
) -> Result<Written, String> {
    let result: Result<(), BoxError> = match pool {
        Pool::TokioPostgres(pool) => tokio_postgres_write(pool, lease, write).await,
        Pool::SeaOrm(db) => seaorm_write(db, lease, write).await,
        Pool::DieselPostgres(pool) => match pool.get().await {
            Ok(mut conn) => {
                conn.transaction(async |conn| diesel_body(conn, lease, write).await)
                    .await
            }
            Err(error) => Err(error.into()),
        },
        Pool::DieselMysql(pool) => match pool.get().await {
            Ok(mut conn) => {
                conn.transaction(async |conn| diesel_body(conn, lease, write).await)
                    .await
            }
            Err(error) => Err(error.into()),
        },
        Pool::DieselSqlite(pool) => match pool.get().await {
            Ok(mut conn) => {
                conn.immediate_transaction(async |conn| diesel_body(conn, lease, write).await)
                    .await
            }
            Err(error) => Err(error.into()),
        },
    };
    match result {
        Ok(()) => Ok(Written::Committed),
        Err(error) => match error.downcast_ref::<Error>() {
            Some(Error::Fenced { .. }) => Ok(Written::Refused),
            _ => Err(describe(&*error)),
        },
    }
}

async fn tokio_postgres_write(
    pool: &dlock_tokio_postgres::deadpool_postgres::Pool,
    lease: &Lease,
    write: &Statement,
) -> Result<(), BoxError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    dlock_tokio_postgres::fence(&transaction, lease).await?;
    let params: Vec<(&(dyn ToSql + Sync), Type)> = write
        .params
        .iter()
        .map(|value| match value {
            Value::Int(int) => (int as &(dyn ToSql + Sync), Type::INT8),
            Value::Text(text) => (text as &(dyn ToSql + Sync), Type::TEXT),
            Value::Null => (&NULL as &(dyn ToSql + Sync), Type::TEXT),
        })
        .collect();
    transaction.query_typed(&write.sql, &params).await?;
    transaction.commit().await?;
    Ok(())
}

const NULL: Option<&str> = None;

async fn seaorm_write(
    db: &sea_orm::DatabaseConnection,
    lease: &Lease,
    write: &Statement,
) -> Result<(), BoxError> {
    let transaction = dlock_seaorm::begin_fenced(db, lease).await?;
    let values = write.params.iter().map(|value| match value {
        Value::Int(int) => sea_orm::Value::BigInt(Some(*int)),
        Value::Text(text) => sea_orm::Value::String(Some(text.clone())),
        Value::Null => sea_orm::Value::String(None),
    });
    let statement =
        sea_orm::Statement::from_sql_and_values(db.get_database_backend(), &*write.sql, values);
    transaction.execute_raw(statement).await?;
    transaction.commit().await?;
    Ok(())
}

async fn diesel_body<C: DieselConnection>(
    conn: &mut C,
    lease: &Lease,
    write: &Statement,
) -> Result<(), BoxError> {
    dlock_diesel::fence(conn, lease).await?;
    conn.execute_statement(write).await?;
    Ok(())
}
