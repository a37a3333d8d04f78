//! The conformance suite on PostgreSQL through deadpool-postgres.

use std::any::Any;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dlock_tokio_postgres::deadpool_postgres::{Manager, Pool, Timeouts};
use dlock_tokio_postgres::tokio_postgres::{self, NoTls};
use dlock_tokio_postgres::{
    BoxError, IntoQueryInterface, Lease, PostgresQueries, QueryInterface, Statement, Value,
    async_trait,
};

struct TokioPostgres;

fn pool(url: &str, max_size: usize) -> Result<Pool, BoxError> {
    let config = tokio_postgres::Config::from_str(url)?;
    let manager = Manager::new(config, NoTls);
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(dlock_tokio_postgres::deadpool_postgres::Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(Duration::from_millis(500)),
            create: Some(Duration::from_secs(5)),
            recycle: Some(Duration::from_secs(5)),
        })
        .build()?)
}

#[async_trait]
impl dlock_conformance::Adapter for TokioPostgres {
    fn name(&self) -> &'static str {
        "tokio-postgres"
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        let config = tokio_postgres::Config::from_str(url)?;
        let queries = PostgresQueries::from_pool(pool(url, 4)?).listen_with(config, NoTls);
        Ok(Arc::new(queries))
    }

    async fn connect_single(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(pool(url, 1)?.into_query_interface())
    }

    async fn connect_exhausted(
        &self,
        url: &str,
    ) -> Result<Option<(Arc<dyn QueryInterface>, Box<dyn Any + Send>)>, BoxError> {
        let pool = pool(url, 1)?;
        let held = pool.get().await?;
        Ok(Some((pool.into_query_interface(), Box::new(held))))
    }

    async fn fenced_write(
        &self,
        url: &str,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError> {
        let pool = pool(url, 1)?;
        let mut client = pool.get().await?;
        let transaction = client.transaction().await?;
        dlock_tokio_postgres::fence(&transaction, lease).await?;
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = write
            .params
            .iter()
            .map(
                |value| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match value {
                        Value::Null => Box::new(None::<String>),
                        Value::Int(int) => Box::new(*int),
                        Value::Text(text) => Box::new(text.clone()),
                    }
                },
            )
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        transaction.execute(&*write.sql, &params).await?;
        tokio::time::sleep(hold).await;
        transaction.commit().await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    dlock_conformance::run(TokioPostgres, &[dlock_conformance::POSTGRES])
}
