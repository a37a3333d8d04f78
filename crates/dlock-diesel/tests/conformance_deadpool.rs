//! The conformance suite through diesel-async's deadpool pools, on PostgreSQL,
//! MySQL/MariaDB and SQLite.

mod support;

use std::any::Any;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dlock_diesel::diesel_async::pooled_connection::deadpool::{Object, Pool};
use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError};
use dlock_diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use dlock_diesel::{
    BoxError, DieselConnection, IntoQueryInterface, Lease, QueryInterface, Statement, async_trait,
};
use support::{Database, SqliteConn};

struct Deadpool;

/// A pool of `max_size` connections whose checkouts wait at most `wait` for a free
/// connection and 5 s to open one.
fn pool<C: DieselConnection + 'static>(
    manager: AsyncDieselConnectionManager<C>,
    max_size: usize,
    wait: Duration,
) -> Result<Pool<C>, BoxError>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = PoolError>,
{
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?)
}

/// A pool of `max_size` for `url`, and (if `hold`) one of its connections, checked out.
async fn connect(
    url: &str,
    max_size: usize,
    wait: Duration,
    hold: bool,
) -> Result<(Arc<dyn QueryInterface>, Option<Box<dyn Any + Send>>), BoxError> {
    async fn build<C: DieselConnection + 'static>(
        manager: AsyncDieselConnectionManager<C>,
        max_size: usize,
        wait: Duration,
        hold: bool,
    ) -> Result<(Arc<dyn QueryInterface>, Option<Box<dyn Any + Send>>), BoxError>
    where
        AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = PoolError>,
        Object<C>: Send,
    {
        let pool = pool(manager, max_size, wait)?;
        let held = match hold {
            true => Some(Box::new(pool.get().await?) as Box<dyn Any + Send>),
            false => None,
        };
        Ok((pool.into_query_interface(), held))
    }
    match Database::of(url)? {
        Database::Postgres => {
            build::<AsyncPgConnection>(support::manager(url), max_size, wait, hold).await
        }
        Database::Mysql => {
            build::<AsyncMysqlConnection>(support::manager(url), max_size, wait, hold).await
        }
        Database::Sqlite => {
            build::<SqliteConn>(support::sqlite_manager(url), max_size, wait, hold).await
        }
    }
}

#[async_trait]
impl dlock_conformance::Adapter for Deadpool {
    fn name(&self) -> &'static str {
        "diesel-deadpool"
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 4, Duration::from_secs(5), false).await?.0)
    }

    async fn connect_single(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 1, Duration::from_secs(5), false).await?.0)
    }

    async fn connect_exhausted(
        &self,
        url: &str,
    ) -> Result<Option<(Arc<dyn QueryInterface>, Box<dyn Any + Send>)>, BoxError> {
        let (queries, held) = connect(url, 1, Duration::from_millis(500), true).await?;
        Ok(held.map(|held| (queries, held)))
    }

    async fn fenced_write(
        &self,
        url: &str,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError> {
        support::fenced_write(url, lease, write, hold).await
    }
}

fn main() -> ExitCode {
    dlock_conformance::run(
        Deadpool,
        &[
            dlock_conformance::POSTGRES,
            dlock_conformance::MYSQL,
            dlock_conformance::SQLITE,
        ],
    )
}
