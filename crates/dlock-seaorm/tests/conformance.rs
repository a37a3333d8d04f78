//! The conformance suite through SeaORM on PostgreSQL, MySQL/MariaDB and SQLite.

use std::any::Any;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dlock_seaorm::sea_orm::sqlx::sqlite::SqliteJournalMode;
use dlock_seaorm::sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait,
};
use dlock_seaorm::{
    BoxError, IntoQueryInterface, Lease, QueryInterface, Statement, Value, async_trait,
};

struct SeaOrm;

/// A pool of `max_size` connections whose checkouts give up after 500 ms. SQLite
/// connections use WAL (readers never block the writer, so waiters' probes do not stall
/// it) and wait up to 10 s for the write lock, well past any write of the suite.
async fn connect(url: &str, max_size: u32) -> Result<DatabaseConnection, BoxError> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_size)
        .min_connections(0)
        .connect_timeout(Duration::from_millis(500))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options| {
            options
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
        });
    Ok(Database::connect(options).await?)
}

#[async_trait]
impl dlock_conformance::Adapter for SeaOrm {
    fn name(&self) -> &'static str {
        "seaorm"
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 4).await?.into_query_interface())
    }

    async fn connect_single(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 1).await?.into_query_interface())
    }

    async fn connect_exhausted(
        &self,
        url: &str,
    ) -> Result<Option<(Arc<dyn QueryInterface>, Box<dyn Any + Send>)>, BoxError> {
        let db = connect(url, 1).await?;
        let held = db.begin().await?;
        Ok(Some((db.into_query_interface(), Box::new(held))))
    }

    async fn fenced_write(
        &self,
        url: &str,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError> {
        let db = connect(url, 1).await?;
        let transaction = dlock_seaorm::begin_fenced(&db, lease).await?;
        let values = write.params.iter().map(|value| match value {
            Value::Null => dlock_seaorm::sea_orm::Value::String(None),
            Value::Int(int) => (*int).into(),
            Value::Text(text) => text.clone().into(),
        });
        let statement = dlock_seaorm::sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            &*write.sql,
            values,
        );
        transaction.execute_raw(statement).await?;
        tokio::time::sleep(hold).await;
        transaction.commit().await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    dlock_conformance::run(
        SeaOrm,
        &[
            dlock_conformance::POSTGRES,
            dlock_conformance::MYSQL,
            dlock_conformance::SQLITE,
        ],
    )
}
