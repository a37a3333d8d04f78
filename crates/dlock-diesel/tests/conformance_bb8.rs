//! The conformance suite through diesel-async's bb8 pools, on PostgreSQL, MySQL/MariaDB
//! and SQLite.

mod support;

use std::any::Any;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dlock_diesel::diesel_async::pooled_connection::bb8::Pool;
use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, PoolError};
use dlock_diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use dlock_diesel::{
    BoxError, DieselConnection, IntoQueryInterface, Lease, QueryInterface, Statement, async_trait,
};
use support::{Database, SqliteConn};

struct Bb8;

/// A pool of `max_size` for `url` whose checkouts give up after `timeout`, and (if
/// `hold`) one of its connections, checked out. bb8 opens connections lazily here, like
/// deadpool, so a closed port fails at the first statement, not at `build`.
async fn connect(
    url: &str,
    max_size: u32,
    timeout: Duration,
    hold: bool,
) -> Result<(Arc<dyn QueryInterface>, Option<Box<dyn Any + Send>>), BoxError> {
    async fn build<C: DieselConnection + 'static>(
        manager: AsyncDieselConnectionManager<C>,
        max_size: u32,
        timeout: Duration,
        hold: bool,
    ) -> Result<(Arc<dyn QueryInterface>, Option<Box<dyn Any + Send>>), BoxError>
    where
        AsyncDieselConnectionManager<C>: bb8::ManageConnection<Connection = C, Error = PoolError>,
    {
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .build_unchecked(manager);
        let held = match hold {
            true => Some(Box::new(pool.get_owned().await?) as Box<dyn Any + Send>),
            false => None,
        };
        Ok((pool.into_query_interface(), held))
    }
    match Database::of(url)? {
        Database::Postgres => {
            build::<AsyncPgConnection>(support::manager(url), max_size, timeout, hold).await
        }
        Database::Mysql => {
            build::<AsyncMysqlConnection>(support::manager(url), max_size, timeout, hold).await
        }
        Database::Sqlite => {
            build::<SqliteConn>(support::sqlite_manager(url), max_size, timeout, hold).await
        }
    }
}

#[async_trait]
impl dlock_conformance::Adapter for Bb8 {
    fn name(&self) -> &'static str {
        "diesel-bb8"
    }

    /// Checkouts give up after 2 s: bb8 reports a failure to connect only as a checkout
    /// timeout, so with a longer one a renewal through a cut connection would wait past
    /// the 4 s lease of the unreachable-database scenario without ever seeing an error;
    /// a shorter one (500 ms) failed contenders that were merely slow to connect on a
    /// loaded machine.
    async fn connect(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 4, Duration::from_secs(2), false).await?.0)
    }

    async fn connect_single(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
        Ok(connect(url, 1, Duration::from_secs(2), false).await?.0)
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
        Bb8,
        &[
            dlock_conformance::POSTGRES,
            dlock_conformance::MYSQL,
            dlock_conformance::SQLITE,
        ],
    )
}
