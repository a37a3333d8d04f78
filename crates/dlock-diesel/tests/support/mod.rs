//! What both pools' conformance runs share: which connection type a URL needs, and the
//! fenced write through `dlock_diesel::fence`.

use std::time::Duration;

use dlock_diesel::diesel::SqliteConnection;
use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use dlock_diesel::diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use dlock_diesel::diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection};
use dlock_diesel::{BoxError, DieselConnection, Lease, Statement};

pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// The database a URL is for, by its scheme.
pub(crate) enum Database {
    Postgres,
    Mysql,
    Sqlite,
}

impl Database {
    pub(crate) fn of(url: &str) -> Result<Self, BoxError> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("postgres" | "postgresql") => Ok(Self::Postgres),
            Some("mysql" | "mariadb") => Ok(Self::Mysql),
            Some("sqlite" | "file") => Ok(Self::Sqlite),
            _ => Err(format!("no diesel-async connection for {url:?}").into()),
        }
    }
}

/// A manager for PostgreSQL or MySQL connections, as diesel-async sets them up.
pub(crate) fn manager<C>(url: &str) -> AsyncDieselConnectionManager<C>
where
    C: DieselConnection
        + dlock_diesel::diesel_async::pooled_connection::PoolableConnection
        + 'static,
{
    AsyncDieselConnectionManager::new(over_tcp(url))
}

/// `url`, made to stay on TCP. mysql_async, on reaching a server on this host over TCP,
/// switches to the server's Unix socket (`prefer_socket`, on by default): its traffic
/// would then bypass the suite's TCP proxy, and a "partitioned" holder would go on
/// renewing its lease.
fn over_tcp(url: &str) -> String {
    if !url.starts_with("mysql") || url.contains("prefer_socket") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}prefer_socket=false")
}

/// A manager for SQLite connections with the adapter's settings (WAL, busy timeout).
pub(crate) fn sqlite_manager(url: &str) -> AsyncDieselConnectionManager<SqliteConn> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|url| Box::pin(dlock_diesel::establish_sqlite(url)));
    AsyncDieselConnectionManager::new_with_config(url, config)
}

/// In one transaction on a new connection to `url`: fence with `lease`, run `write`,
/// wait `hold`, commit.
///
/// The transaction runs on a thread of its own, in `block_on`, whose future need not be
/// `Send`: rustc cannot prove the future of diesel-async's `transaction` `Send` inside an
/// `async_trait` method (a known limitation with its higher-ranked closure bounds), while
/// plain async code, as users write it, compiles as is.
pub(crate) async fn fenced_write(
    url: &str,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    let (url, lease, write) = (url.to_owned(), lease.clone(), write.clone());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(fenced_transaction(&url, lease, write, hold))
    })
    .await?
}

async fn fenced_transaction(
    url: &str,
    lease: Lease,
    write: Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    match Database::of(url)? {
        Database::Postgres => {
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.transaction(async |conn| fenced_body(conn, &lease, &write, hold).await)
                .await
        }
        Database::Mysql => {
            let mut conn = AsyncMysqlConnection::establish(&over_tcp(url)).await?;
            conn.transaction(async |conn| fenced_body(conn, &lease, &write, hold).await)
                .await
        }
        // IMMEDIATE: the transaction holds SQLite's write lock from its start, so no
        // takeover can commit before it ends (see `dlock_diesel::fence`).
        Database::Sqlite => {
            let mut conn = dlock_diesel::establish_sqlite(url).await?;
            conn.immediate_transaction(async |conn| fenced_body(conn, &lease, &write, hold).await)
                .await
        }
    }
}

async fn fenced_body<C: DieselConnection + 'static>(
    conn: &mut C,
    lease: &Lease,
    write: &Statement,
    hold: Duration,
) -> Result<(), BoxError> {
    dlock_diesel::fence(conn, lease).await?;
    conn.execute_statement(write).await?;
    tokio::time::sleep(hold).await;
    Ok(())
}
