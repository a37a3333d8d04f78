//! The adapters × the dialects: a pool of each adapter on each database.
//!
//! Adding an adapter is one variant of [`Backend`] (its dialects, one arm in
//! [`Backend::pool`]) and its [`Pool`] variants.

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use dlock_core::Dialect;
use dlock_core::TransactionPooler;
use dlock_core::adapter::{IntoQueryInterface, QueryInterface};
use dlock_diesel::diesel::SqliteConnection;
use dlock_diesel::diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, bb8,
    deadpool as diesel_deadpool,
};
use dlock_diesel::diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use dlock_diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use dlock_diesel::{Bb8Queries, DeadpoolQueries, DieselConnection};
use dlock_seaorm::SeaOrmQueries;
use dlock_seaorm::sea_orm::{Database, DatabaseConnection, TransactionTrait};
use dlock_sqlx::{SqlxQueries, sqlx};
use dlock_tokio_postgres::PostgresQueries;
use dlock_tokio_postgres::deadpool_postgres::{self, Manager, Runtime, Timeouts};
use dlock_tokio_postgres::tokio_postgres::{self, NoTls};

/// A client library whose pools dlock accepts, with its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// dlock-tokio-postgres on a deadpool-postgres pool, listening for releases.
    TokioPostgres,
    /// dlock-seaorm on a SeaORM connection (an sqlx pool).
    #[value(name = "seaorm")]
    SeaOrm,
    /// dlock-diesel on a diesel-async deadpool pool (alias: diesel).
    #[value(alias = "diesel")]
    DieselDeadpool,
    /// dlock-diesel on a diesel-async bb8 pool.
    DieselBb8,
    /// dlock-sqlx on an sqlx pool.
    Sqlx,
}

/// Every dialect, in the order the tools list them.
const DIALECTS: [Dialect; 3] = [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite];

/// The dialect's name on command lines, in test names and in result lines: `postgres`,
/// `mysql` or `sqlite` (`Dialect::name` is the one for messages).
pub fn dialect_key(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Mysql => "mysql",
        Dialect::Sqlite => "sqlite",
        _ => "postgres",
    }
}

/// The dialect whose [`dialect_key`] is `key`, as a child process is told.
pub fn dialect_named(key: &str) -> Result<Dialect, String> {
    DIALECTS
        .into_iter()
        .find(|dialect| dialect_key(*dialect) == key)
        .ok_or_else(|| format!("unknown dialect {key:?}"))
}

/// A clap value parser for [`Dialect`] by its name, so that `--help` lists them:
/// `#[arg(long, value_parser = dialect_parser())]`.
pub fn dialect_parser() -> impl TypedValueParser<Value = Dialect> {
    PossibleValuesParser::new(DIALECTS.map(dialect_key))
        .map(|name| dialect_named(&name).expect("BUG: the parser accepts only dialect names"))
}

/// How a pool reaches its database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Route {
    /// Straight to the server.
    #[default]
    Direct,
    /// Through a pooler in transaction mode (PgBouncer): the adapter is set up as its
    /// documentation says for one.
    TransactionPooler,
    /// Straight to the server, with the adapter set up as for a pooler that loses
    /// prepared statements: what that setting costs without the pooler's own hop.
    DirectUnnamed,
}

impl Route {
    /// The route's name in test names, on command lines and in child processes:
    /// `direct` or `pgbouncer`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::TransactionPooler => "pgbouncer",
            Self::DirectUnnamed => "direct-unnamed",
        }
    }

    /// The route whose [`key`](Self::key) is `key`.
    pub fn named(key: &str) -> Result<Self, String> {
        [Self::Direct, Self::TransactionPooler, Self::DirectUnnamed]
            .into_iter()
            .find(|route| route.key() == key)
            .ok_or_else(|| format!("unknown route {key:?}"))
    }
}

/// How large a pool is, how long it waits, and how it reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// The most connections it opens.
    pub size: usize,
    /// How long a checkout waits for a free connection before it fails.
    pub checkout: Duration,
    /// How long opening a connection may take.
    pub connect: Duration,
    /// Straight to the database or through a pooler.
    pub route: Route,
}

impl PoolOptions {
    /// `size` connections, with waits bounded (30 s for a checkout, 10 s to connect) so
    /// that a stuck run fails instead of hanging.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            checkout: Duration::from_secs(30),
            connect: Duration::from_secs(10),
            route: Route::Direct,
        }
    }

    /// The same, reaching the database by `route`.
    #[must_use]
    pub fn with_route(self, route: Route) -> Self {
        Self { route, ..self }
    }

    /// The same, with checkouts giving up after `checkout`.
    #[must_use]
    pub fn with_checkout(self, checkout: Duration) -> Self {
        Self { checkout, ..self }
    }
}

impl Backend {
    /// The backend's name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::TokioPostgres => "tokio-postgres",
            Self::SeaOrm => "seaorm",
            Self::DieselDeadpool => "diesel-deadpool",
            Self::DieselBb8 => "diesel-bb8",
            Self::Sqlx => "sqlx",
        }
    }

    /// The dialects this backend speaks; the first is the default.
    pub fn dialects(self) -> &'static [Dialect] {
        match self {
            Self::TokioPostgres => &[Dialect::Postgres],
            Self::SeaOrm | Self::DieselDeadpool | Self::DieselBb8 | Self::Sqlx => &DIALECTS,
        }
    }

    /// `Ok` if the backend speaks `dialect`, else a message naming the ones it speaks.
    pub fn check(self, dialect: Dialect) -> Result<(), String> {
        if self.dialects().contains(&dialect) {
            return Ok(());
        }
        let names: Vec<_> = self.dialects().iter().map(|d| dialect_key(*d)).collect();
        Err(format!(
            "adapter {} does not support dialect {}; it supports: {}",
            self.name(),
            dialect_key(dialect),
            names.join(", ")
        ))
    }

    /// A pool to `url` as the adapter's query interface; see [`Backend::pool`].
    pub async fn connect(
        self,
        dialect: Dialect,
        url: &str,
        options: PoolOptions,
    ) -> Result<Arc<dyn QueryInterface>, String> {
        Ok(self.pool(dialect, url, options).await?.1)
    }

    /// A pool to `url`, and the adapter's query interface over it. Each pool connects as
    /// it does in a service: deadpool and bb8 lazily (the first statement finds out
    /// whether the server is there), SeaORM with one connection at once. Fails when `url`
    /// is for another dialect: figures or tests would go under the wrong name.
    pub async fn pool(
        self,
        dialect: Dialect,
        url: &str,
        options: PoolOptions,
    ) -> Result<(Pool, Arc<dyn QueryInterface>), String> {
        self.check(dialect)?;
        if options.route != Route::Direct && dialect != Dialect::Postgres {
            return Err(format!(
                "{} goes to PostgreSQL only, not {}",
                options.route.key(),
                dialect.name()
            ));
        }
        let clients = match (self, dialect) {
            (Self::TokioPostgres, _) => {
                Clients::TokioPostgres(deadpool_postgres_pool(url, options)?)
            }
            (Self::SeaOrm, _) => Clients::SeaOrm(seaorm_connection(url, options).await?),
            (Self::DieselDeadpool, Dialect::Postgres) => {
                Clients::DeadpoolPostgres(deadpool_pool(pg_manager(url, options.route), options)?)
            }
            (Self::DieselDeadpool, Dialect::Mysql) => {
                Clients::DeadpoolMysql(deadpool_pool(manager(&over_tcp(url)?), options)?)
            }
            (Self::DieselDeadpool, _) => {
                Clients::DeadpoolSqlite(deadpool_pool(sqlite_manager(url), options)?)
            }
            (Self::DieselBb8, Dialect::Postgres) => {
                Clients::Bb8Postgres(bb8_pool(pg_manager(url, options.route), options)?)
            }
            (Self::DieselBb8, Dialect::Mysql) => {
                Clients::Bb8Mysql(bb8_pool(manager(&over_tcp(url)?), options)?)
            }
            (Self::DieselBb8, _) => Clients::Bb8Sqlite(bb8_pool(sqlite_manager(url), options)?),
            (Self::Sqlx, Dialect::Postgres) => {
                Clients::SqlxPostgres(sqlx_pool::postgres(url, options)?)
            }
            (Self::Sqlx, Dialect::Mysql) => Clients::SqlxMysql(sqlx_pool::mysql(url, options)?),
            (Self::Sqlx, _) => Clients::SqlxSqlite(sqlx_pool::sqlite(url, options)?),
        };
        let pool = Pool {
            clients,
            route: options.route,
        };
        let queries = pool.query_interface(url)?;
        if queries.dialect() != dialect {
            return Err(format!(
                "the URL {url:?} is for {}, not {}",
                queries.dialect().name(),
                dialect.name()
            ));
        }
        Ok((pool, queries))
    }
}

/// A diesel-async SQLite connection, as the adapter runs it.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// The pool a [`Backend`] built: cheap to clone, shared with its query interface, for
/// work of the caller's own on the same connections (fenced transactions).
#[derive(Clone)]
pub struct Pool {
    pub(crate) clients: Clients,
    pub(crate) route: Route,
}

/// The client library's pool.
#[derive(Clone)]
pub(crate) enum Clients {
    /// `dlock-tokio-postgres`.
    TokioPostgres(deadpool_postgres::Pool),
    /// `dlock-seaorm`, any dialect.
    SeaOrm(DatabaseConnection),
    /// `dlock-diesel` with deadpool on PostgreSQL.
    DeadpoolPostgres(diesel_deadpool::Pool<AsyncPgConnection>),
    /// `dlock-diesel` with deadpool on MySQL/MariaDB.
    DeadpoolMysql(diesel_deadpool::Pool<AsyncMysqlConnection>),
    /// `dlock-diesel` with deadpool on SQLite.
    DeadpoolSqlite(diesel_deadpool::Pool<SqliteConn>),
    /// `dlock-diesel` with bb8 on PostgreSQL.
    Bb8Postgres(bb8::Pool<AsyncPgConnection>),
    /// `dlock-diesel` with bb8 on MySQL/MariaDB.
    Bb8Mysql(bb8::Pool<AsyncMysqlConnection>),
    /// `dlock-diesel` with bb8 on SQLite.
    Bb8Sqlite(bb8::Pool<SqliteConn>),
    /// `dlock-sqlx` on PostgreSQL.
    SqlxPostgres(sqlx::PgPool),
    /// `dlock-sqlx` on MySQL/MariaDB.
    SqlxMysql(sqlx::MySqlPool),
    /// `dlock-sqlx` on SQLite.
    SqlxSqlite(sqlx::SqlitePool),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.clients {
            Clients::TokioPostgres(_) => "TokioPostgres",
            Clients::SeaOrm(_) => "SeaOrm",
            Clients::DeadpoolPostgres(_) => "DeadpoolPostgres",
            Clients::DeadpoolMysql(_) => "DeadpoolMysql",
            Clients::DeadpoolSqlite(_) => "DeadpoolSqlite",
            Clients::Bb8Postgres(_) => "Bb8Postgres",
            Clients::Bb8Mysql(_) => "Bb8Mysql",
            Clients::Bb8Sqlite(_) => "Bb8Sqlite",
            Clients::SqlxPostgres(_) => "SqlxPostgres",
            Clients::SqlxMysql(_) => "SqlxMysql",
            Clients::SqlxSqlite(_) => "SqlxSqlite",
        };
        write!(f, "Pool::{name} ({})", self.route.key())
    }
}

/// The URL of the PostgreSQL behind the pooler, for the listening connection: the test
/// database without the pooler.
fn direct_postgres_url() -> Result<String, String> {
    Ok(crate::TestDatabase::new(Dialect::Postgres, "dlock-direct")?
        .url()
        .to_owned())
}

impl Pool {
    /// The adapter's query interface over this pool. On PostgreSQL every adapter listens
    /// for releases, as a service that wants its waiters woken sets it up; through a
    /// pooler, on a direct connection to the database behind it.
    fn query_interface(&self, url: &str) -> Result<Arc<dyn QueryInterface>, String> {
        let pooled = self.route != Route::Direct;
        let pooler = TransactionPooler::LosesPreparedStatements;
        let listen_url = match self.route {
            Route::TransactionPooler => direct_postgres_url()?,
            _ => url.to_owned(),
        };
        let pg_options = |url: &str| {
            url.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))
        };
        Ok(match self.clients.clone() {
            Clients::TokioPostgres(pool) => {
                let config = tokio_postgres::Config::from_str(&listen_url)
                    .map_err(|error| format!("invalid PostgreSQL URL {listen_url:?}: {error}"))?;
                let queries = PostgresQueries::from_pool(pool).listen_with(config, NoTls);
                Arc::new(match pooled {
                    true => queries.through_pooler(pooler),
                    false => queries,
                })
            }
            Clients::SeaOrm(db) if pooled => Arc::new(
                SeaOrmQueries::new(db)
                    .through_pooler(pooler)
                    .listen_at(pg_options(&listen_url)?),
            ),
            Clients::SeaOrm(db) => db.into_query_interface(),
            Clients::DeadpoolPostgres(pool) if pooled => Arc::new(
                DeadpoolQueries::new(pool)
                    .through_pooler(pooler)
                    .listen_at(&listen_url),
            ),
            Clients::DeadpoolPostgres(pool) => pool.into_query_interface(),
            Clients::DeadpoolMysql(pool) => pool.into_query_interface(),
            Clients::DeadpoolSqlite(pool) => pool.into_query_interface(),
            Clients::Bb8Postgres(pool) if pooled => Arc::new(
                Bb8Queries::new(pool)
                    .through_pooler(pooler)
                    .listen_at(&listen_url),
            ),
            Clients::Bb8Postgres(pool) => pool.into_query_interface(),
            Clients::Bb8Mysql(pool) => pool.into_query_interface(),
            Clients::Bb8Sqlite(pool) => pool.into_query_interface(),
            Clients::SqlxPostgres(pool) if pooled => Arc::new(
                SqlxQueries::new(pool)
                    .through_pooler(pooler)
                    .listen_at(pg_options(&listen_url)?),
            ),
            Clients::SqlxPostgres(pool) => pool.into_query_interface(),
            Clients::SqlxMysql(pool) => pool.into_query_interface(),
            Clients::SqlxSqlite(pool) => pool.into_query_interface(),
        })
    }

    /// Checks one connection out and returns it, to be held: with a pool of one, the
    /// pool is then exhausted until it is dropped.
    pub async fn check_out(&self) -> Result<Box<dyn Any + Send>, String> {
        let failed =
            |error: &dyn std::fmt::Display| format!("cannot check out a connection: {error}");
        Ok(match &self.clients {
            Clients::TokioPostgres(pool) => Box::new(pool.get().await.map_err(|e| failed(&e))?),
            // A transaction holds its connection until it ends.
            Clients::SeaOrm(db) => Box::new(db.begin().await.map_err(|e| failed(&e))?),
            Clients::DeadpoolPostgres(pool) => Box::new(pool.get().await.map_err(|e| failed(&e))?),
            Clients::DeadpoolMysql(pool) => Box::new(pool.get().await.map_err(|e| failed(&e))?),
            Clients::DeadpoolSqlite(pool) => Box::new(pool.get().await.map_err(|e| failed(&e))?),
            Clients::Bb8Postgres(pool) => Box::new(pool.get_owned().await.map_err(|e| failed(&e))?),
            Clients::Bb8Mysql(pool) => Box::new(pool.get_owned().await.map_err(|e| failed(&e))?),
            Clients::Bb8Sqlite(pool) => Box::new(pool.get_owned().await.map_err(|e| failed(&e))?),
            Clients::SqlxPostgres(pool) => Box::new(pool.acquire().await.map_err(|e| failed(&e))?),
            Clients::SqlxMysql(pool) => Box::new(pool.acquire().await.map_err(|e| failed(&e))?),
            Clients::SqlxSqlite(pool) => Box::new(pool.acquire().await.map_err(|e| failed(&e))?),
        })
    }
}

/// The pool a service would build: deadpool's defaults (fast recycling, which sends no
/// statement on checkout), with `options`' waits.
fn deadpool_postgres_pool(
    url: &str,
    options: PoolOptions,
) -> Result<deadpool_postgres::Pool, String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))?;
    deadpool_postgres::Pool::builder(Manager::new(config, NoTls))
        .max_size(options.size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(options.checkout),
            create: Some(options.connect),
            recycle: Some(options.connect),
        })
        .build()
        .map_err(|error| format!("cannot build a connection pool: {error}"))
}

/// The connection a service would open: SeaORM's defaults (which include a ping on every
/// checkout) with dlock-seaorm's connect options (SQLite: WAL and a busy timeout), and
/// connections opened on demand, as deadpool's are, so that pool sizes compare.
async fn seaorm_connection(url: &str, options: PoolOptions) -> Result<DatabaseConnection, String> {
    let max_connections = u32::try_from(options.size)
        .map_err(|_| format!("a pool of {} connections is too large", options.size))?;
    let mut connect = dlock_seaorm::connect_options(url);
    connect
        .max_connections(max_connections)
        .min_connections(0)
        // SeaORM gives both to sqlx's acquire timeout, the later winning.
        .acquire_timeout(options.checkout)
        .sqlx_logging(false);
    Database::connect(connect)
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))
}

/// A manager for PostgreSQL connections: as diesel-async sets them up, or, through a
/// pooler, as dlock-diesel's documentation says for one.
fn pg_manager(url: &str, route: Route) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    match route {
        Route::Direct => manager(url),
        Route::TransactionPooler | Route::DirectUnnamed => dlock_diesel::pooler_manager(url),
    }
}

/// A manager for PostgreSQL or MySQL connections, as diesel-async sets them up.
fn manager<C: PoolableConnection + 'static>(url: &str) -> AsyncDieselConnectionManager<C> {
    AsyncDieselConnectionManager::new(url)
}

/// A manager for SQLite connections with the adapter's settings (WAL, busy timeout).
fn sqlite_manager(url: &str) -> AsyncDieselConnectionManager<SqliteConn> {
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(|url| Box::pin(dlock_diesel::establish_sqlite(url)));
    AsyncDieselConnectionManager::new_with_config(url, config)
}

/// `url`, made to stay on TCP. mysql_async, on reaching a server on this host over TCP,
/// switches to the server's Unix socket (`prefer_socket`, on by default): its traffic
/// would then bypass a test's TCP proxy, and a "partitioned" holder would go on renewing.
pub(crate) fn over_tcp(url: &str) -> Result<String, String> {
    let mut parsed =
        url::Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    if !parsed.query_pairs().any(|(key, _)| key == "prefer_socket") {
        parsed
            .query_pairs_mut()
            .append_pair("prefer_socket", "false");
    }
    Ok(parsed.into())
}

/// A diesel-async deadpool pool of `manager`'s connections.
fn deadpool_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    options: PoolOptions,
) -> Result<diesel_deadpool::Pool<C>, String>
where
    C: DieselConnection + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C, Error = PoolError>,
{
    diesel_deadpool::Pool::builder(manager)
        .max_size(options.size)
        .wait_timeout(Some(options.checkout))
        .create_timeout(Some(options.connect))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|error| format!("cannot build a connection pool: {error}"))
}

/// A diesel-async bb8 pool of `manager`'s connections, opened on demand. bb8 reports a
/// failure to connect only as a checkout timeout.
fn bb8_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    options: PoolOptions,
) -> Result<bb8::Pool<C>, String>
where
    C: DieselConnection + 'static,
    AsyncDieselConnectionManager<C>: ::bb8::ManageConnection<Connection = C, Error = PoolError>,
{
    let max_size = u32::try_from(options.size)
        .map_err(|_| format!("a pool of {} connections is too large", options.size))?;
    Ok(bb8::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(options.checkout)
        .build_unchecked(manager))
}

/// sqlx pools, opened on demand as deadpool's are, with `options`' size and waits.
mod sqlx_pool {
    use std::str::FromStr;

    use dlock_sqlx::sqlx::mysql::MySqlConnectOptions;
    use dlock_sqlx::sqlx::pool::PoolOptions as SqlxOptions;
    use dlock_sqlx::sqlx::postgres::PgConnectOptions;
    use dlock_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use dlock_sqlx::sqlx::{self, Database};

    use super::PoolOptions;

    fn pool_options<DB: Database>(options: PoolOptions) -> Result<SqlxOptions<DB>, String> {
        let max = u32::try_from(options.size)
            .map_err(|_| format!("a pool of {} connections is too large", options.size))?;
        Ok(SqlxOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(options.checkout))
    }

    fn parse<T: FromStr<Err = sqlx::Error>>(url: &str) -> Result<T, String> {
        url.parse()
            .map_err(|error| format!("invalid URL {url:?}: {error}"))
    }

    pub(super) fn postgres(url: &str, options: PoolOptions) -> Result<sqlx::PgPool, String> {
        let connect: PgConnectOptions = parse(url)?;
        Ok(pool_options(options)?.connect_lazy_with(connect))
    }

    pub(super) fn mysql(url: &str, options: PoolOptions) -> Result<sqlx::MySqlPool, String> {
        let connect: MySqlConnectOptions = parse(url)?;
        Ok(pool_options(options)?.connect_lazy_with(connect))
    }

    /// With WAL and a busy timeout, as dlock-sqlx's documentation says for SQLite.
    pub(super) fn sqlite(url: &str, options: PoolOptions) -> Result<sqlx::SqlitePool, String> {
        let connect: SqliteConnectOptions = parse(url)?;
        let connect = connect
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        Ok(pool_options(options)?.connect_lazy_with(connect))
    }
}
