//! A write in a fenced transaction, through each adapter's own fence helper, as a user of
//! that adapter writes it.

use std::time::Duration;

use dlock_core::Lease;
use dlock_core::adapter::{BoxError, Statement, Value};
use dlock_diesel::DieselConnection;
use dlock_diesel::diesel_async::AsyncConnection;
use dlock_seaorm::sea_orm::{self, ConnectionTrait};
use dlock_tokio_postgres::tokio_postgres::types::{ToSql, Type};

use dlock_sqlx::{SqlxDatabase, sqlx};

use crate::backend::{Clients, Pool, Route, SqliteConn};

impl Pool {
    /// In one transaction on a connection of this pool: fence with `lease`, run `write`,
    /// wait `hold`, commit. An error of the fence comes back as it is (a
    /// `dlock_core::Error::Fenced` when the lease is no longer this acquisition's). SQLite
    /// transactions begin `IMMEDIATE`, so that no takeover can commit between the fence
    /// and the commit.
    pub async fn fenced_write(
        &self,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError> {
        match &self.clients {
            Clients::TokioPostgres(pool) => tokio_postgres_write(pool, lease, write, hold).await,
            // SeaORM's statements are prepared and cached by sqlx, which a pooler that
            // loses prepared statements breaks: the fenced transaction then runs on the
            // sqlx pool under the connection, as dlock-seaorm's documentation says.
            Clients::SeaOrm(db) if self.route != Route::Direct => {
                sqlx_write(db.get_postgres_connection_pool(), lease, write, hold).await
            }
            Clients::SeaOrm(db) => seaorm_write(db, lease, write, hold).await,
            Clients::SqlxPostgres(pool) => sqlx_write(pool, lease, write, hold).await,
            Clients::SqlxMysql(pool) => sqlx_write(pool, lease, write, hold).await,
            Clients::SqlxSqlite(pool) => sqlx_write(pool, lease, write, hold).await,
            Clients::DeadpoolPostgres(pool) => {
                pool.get()
                    .await?
                    .transaction(async |c| diesel_body(c, lease, write, hold).await)
                    .await
            }
            Clients::DeadpoolMysql(pool) => {
                pool.get()
                    .await?
                    .transaction(async |c| diesel_body(c, lease, write, hold).await)
                    .await
            }
            Clients::DeadpoolSqlite(pool) => {
                sqlite_write(&mut *pool.get().await?, lease, write, hold).await
            }
            Clients::Bb8Postgres(pool) => {
                pool.get()
                    .await?
                    .transaction(async |c| diesel_body(c, lease, write, hold).await)
                    .await
            }
            Clients::Bb8Mysql(pool) => {
                pool.get()
                    .await?
                    .transaction(async |c| diesel_body(c, lease, write, hold).await)
                    .await
            }
            Clients::Bb8Sqlite(pool) => {
                sqlite_write(&mut *pool.get().await?, lease, write, hold).await
            }
        }
    }
}

/// Holds the transaction open for `hold`, if any: a zero hold must not cost a timer tick.
async fn pause(hold: Duration) {
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
}

async fn tokio_postgres_write(
    pool: &dlock_tokio_postgres::deadpool_postgres::Pool,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    const NULL: Option<&str> = None;
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
    pause(hold).await;
    transaction.commit().await?;
    Ok(())
}

async fn seaorm_write(
    db: &sea_orm::DatabaseConnection,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
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
    pause(hold).await;
    transaction.commit().await?;
    Ok(())
}

/// Through dlock-sqlx's fence, the write unnamed (`persistent(false)`), as behind a
/// pooler that loses prepared statements; SQLite's transaction begun `IMMEDIATE`.
async fn sqlx_write<DB: SqlxDatabase>(
    pool: &sqlx::Pool<DB>,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    let mut transaction = if DB::DIALECT == dlock_core::Dialect::Sqlite {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    dlock_sqlx::fence(&mut transaction, lease).await?;
    DB::run(&mut transaction, write, true).await?;
    pause(hold).await;
    transaction.commit().await?;
    Ok(())
}

/// IMMEDIATE: the transaction holds SQLite's write lock from its start, so no takeover can
/// commit before it ends (see `dlock_diesel::fence`).
async fn sqlite_write(
    conn: &mut SqliteConn,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    conn.immediate_transaction(async |conn| diesel_body(conn, lease, write, hold).await)
        .await
}

async fn diesel_body<C: DieselConnection>(
    conn: &mut C,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    dlock_diesel::fence(conn, lease).await?;
    conn.execute_statement(write).await?;
    pause(hold).await;
    Ok(())
}
