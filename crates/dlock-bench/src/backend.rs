//! The adapters and dialects the benchmark (and the torture suite) can run against, and
//! the SQL of the benchmark's floors.
//!
//! Adding an adapter is one variant of [`Adapter`] (its name, its dialects, one arm in
//! [`Adapter::connect`]); adding a dialect is one variant of [`Dialect`] with its URL
//! variable and its [`FloorSql`].

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dlock_core::QueryInterface;
use dlock_diesel::diesel::SqliteConnection;
use dlock_diesel::diesel_async::pooled_connection::deadpool::Pool as DieselPool;
use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use dlock_diesel::diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use dlock_diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use dlock_seaorm::IntoQueryInterface;
use dlock_seaorm::sea_orm::sqlx::sqlite::SqliteJournalMode;
use dlock_seaorm::sea_orm::{ConnectOptions, Database, DatabaseConnection};
use dlock_tokio_postgres::PostgresQueries;
use dlock_tokio_postgres::deadpool_postgres::{self, Manager, Runtime, Timeouts};
use dlock_tokio_postgres::tokio_postgres::{self, NoTls};

/// A client library whose pools dlock accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// `dlock-tokio-postgres`: a `deadpool_postgres::Pool`.
    TokioPostgres,
    /// `dlock-seaorm`: a `sea_orm::DatabaseConnection` (an sqlx pool).
    SeaOrm,
    /// `dlock-diesel`: a diesel-async deadpool `Pool`.
    Diesel,
}

/// A diesel-async deadpool pool of `manager`'s connections, connecting lazily like
/// deadpool-postgres's. A macro: the pool's trait bounds differ per connection type.
macro_rules! diesel_pool {
    ($manager:expr, $pool_size:expr) => {
        DieselPool::builder($manager)
            .max_size($pool_size)
            .build()
            .map_err(|error| format!("cannot build a connection pool: {error}"))?
    };
}

impl Adapter {
    /// Every adapter.
    pub const ALL: &[Self] = &[Self::TokioPostgres, Self::SeaOrm, Self::Diesel];

    /// The adapter's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::TokioPostgres => "tokio-postgres",
            Self::SeaOrm => "seaorm",
            Self::Diesel => "diesel",
        }
    }

    /// The dialects this adapter speaks; the first is the default.
    pub fn dialects(self) -> &'static [Dialect] {
        match self {
            Self::TokioPostgres => &[Dialect::Postgres],
            Self::SeaOrm | Self::Diesel => &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
        }
    }

    /// The message for a dialect the adapter does not speak.
    pub fn unsupported(self, dialect: Dialect) -> String {
        format!(
            "adapter {} does not support dialect {}; it supports: {}",
            self.name(),
            dialect.name(),
            names(self.dialects().iter().map(|dialect| dialect.name()))
        )
    }

    /// The adapter named `name`, or a message listing the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|adapter| adapter.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown adapter {name:?}; known adapters: {}",
                    names(Self::ALL.iter().map(|adapter| adapter.name()))
                )
            })
    }

    /// A pool of at most `pool_size` connections to `url`, as the adapter's query
    /// interface. Each adapter's pool connects as it does in a service: deadpool lazily
    /// (the first statement finds out whether the server is there), SeaORM with one
    /// connection at once (so this fails when the server is not there).
    pub async fn connect(
        self,
        dialect: Dialect,
        url: &str,
        pool_size: usize,
    ) -> Result<Arc<dyn QueryInterface>, String> {
        Ok(self.pool(dialect, url, pool_size).await?.1)
    }

    /// Like [`Adapter::connect`], and also the pool itself, for work of the caller's
    /// own on the same connections (fenced transactions).
    pub async fn pool(
        self,
        dialect: Dialect,
        url: &str,
        pool_size: usize,
    ) -> Result<(Pool, Arc<dyn QueryInterface>), String> {
        let (pool, queries): (Pool, Arc<dyn QueryInterface>) = match (self, dialect) {
            // With LISTEN, as a service that wants waiters woken on release sets it up.
            (Self::TokioPostgres, Dialect::Postgres) => {
                let config = tokio_postgres::Config::from_str(url)
                    .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))?;
                let pool = deadpool_postgres_pool(url, pool_size)?;
                let queries = PostgresQueries::from_pool(pool.clone()).listen_with(config, NoTls);
                (Pool::TokioPostgres(pool), Arc::new(queries))
            }
            // The dialect comes from the URL's scheme; checked below. On PostgreSQL the
            // adapter listens for releases by itself.
            (Self::SeaOrm, Dialect::Postgres | Dialect::Mysql | Dialect::Sqlite) => {
                let db = seaorm_connection(url, pool_size).await?;
                (Pool::SeaOrm(db.clone()), db.into_query_interface())
            }
            (Self::Diesel, Dialect::Postgres) => {
                let manager: AsyncDieselConnectionManager<AsyncPgConnection> =
                    AsyncDieselConnectionManager::new(url);
                let pool = diesel_pool!(manager, pool_size);
                (
                    Pool::DieselPostgres(pool.clone()),
                    pool.into_query_interface(),
                )
            }
            (Self::Diesel, Dialect::Mysql) => {
                let manager: AsyncDieselConnectionManager<AsyncMysqlConnection> =
                    AsyncDieselConnectionManager::new(url);
                let pool = diesel_pool!(manager, pool_size);
                (Pool::DieselMysql(pool.clone()), pool.into_query_interface())
            }
            (Self::Diesel, Dialect::Sqlite) => {
                // WAL and a busy timeout, as the adapter's README asks of SQLite pools.
                let mut config = ManagerConfig::default();
                config.custom_setup = Box::new(|url| Box::pin(dlock_diesel::establish_sqlite(url)));
                let manager: AsyncDieselConnectionManager<SqliteConn> =
                    AsyncDieselConnectionManager::new_with_config(url, config);
                let pool = diesel_pool!(manager, pool_size);
                (
                    Pool::DieselSqlite(pool.clone()),
                    pool.into_query_interface(),
                )
            }
            (Self::TokioPostgres, Dialect::Mysql | Dialect::Sqlite) => {
                return Err(self.unsupported(dialect));
            }
        };
        // A URL of another database would measure the wrong one under this one's name.
        if queries.dialect() != dialect.core() {
            return Err(format!(
                "the URL {url:?} is for {}, not {}",
                queries.dialect().name(),
                dialect.core().name()
            ));
        }
        Ok((pool, queries))
    }
}

/// A diesel-async SQLite connection, as the adapter runs it.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// The pool an [`Adapter`] built: cheap to clone, shared with its query interface.
#[derive(Clone)]
pub enum Pool {
    /// `dlock-tokio-postgres`.
    TokioPostgres(deadpool_postgres::Pool),
    /// `dlock-seaorm`, any dialect.
    SeaOrm(DatabaseConnection),
    /// `dlock-diesel` on PostgreSQL.
    DieselPostgres(DieselPool<AsyncPgConnection>),
    /// `dlock-diesel` on MySQL/MariaDB.
    DieselMysql(DieselPool<AsyncMysqlConnection>),
    /// `dlock-diesel` on SQLite.
    DieselSqlite(DieselPool<SqliteConn>),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TokioPostgres(_) => "Pool::TokioPostgres",
            Self::SeaOrm(_) => "Pool::SeaOrm",
            Self::DieselPostgres(_) => "Pool::DieselPostgres",
            Self::DieselMysql(_) => "Pool::DieselMysql",
            Self::DieselSqlite(_) => "Pool::DieselSqlite",
        })
    }
}

/// The connection a service would open: SeaORM's defaults (which include a ping on every
/// checkout; the floors go through the same pool, so they pay it too), with bounded waits
/// so that a stuck benchmark fails instead of hanging. SQLite as dlock-seaorm's README
/// asks for several processes: WAL, so that readers never block the writer, and a busy
/// timeout, so that a writer waits for the write lock instead of failing at once.
async fn seaorm_connection(url: &str, pool_size: usize) -> Result<DatabaseConnection, String> {
    let max_connections = u32::try_from(pool_size)
        .map_err(|_| format!("a pool of {pool_size} connections is too large"))?;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        // Connections open on demand, as deadpool's do, so that pool sizes compare.
        .min_connections(0)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options| {
            options
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
        });
    Database::connect(options)
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))
}

/// The pool a service would build: deadpool's defaults (fast recycling, which sends no
/// statement on checkout), with bounded waits so that a stuck benchmark fails instead of
/// hanging.
fn deadpool_postgres_pool(url: &str, pool_size: usize) -> Result<deadpool_postgres::Pool, String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))?;
    deadpool_postgres::Pool::builder(Manager::new(config, NoTls))
        .max_size(pool_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(Duration::from_secs(30)),
            create: Some(Duration::from_secs(10)),
            recycle: Some(Duration::from_secs(10)),
        })
        .build()
        .map_err(|error| format!("cannot build a connection pool: {error}"))
}

/// A SQL dialect, i.e. a kind of database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite, in a file shared by the benchmark's processes.
    Sqlite,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: &[Self] = &[Self::Postgres, Self::Mysql, Self::Sqlite];

    /// The dialect's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    /// dlock's name for the dialect, which the adapters report.
    pub fn core(self) -> dlock_core::Dialect {
        match self {
            Self::Postgres => dlock_core::Dialect::Postgres,
            Self::Mysql => dlock_core::Dialect::Mysql,
            Self::Sqlite => dlock_core::Dialect::Sqlite,
        }
    }

    /// Whether issue 6's targets apply: they are stated for PostgreSQL only; the other
    /// dialects' figures are reported without a verdict for now.
    pub fn has_targets(self) -> bool {
        self == Self::Postgres
    }

    /// The environment variable holding the server's URL, and the URL used without it
    /// (the same as the tests' and docker-compose.yml's). SQLite has no default URL: without
    /// the variable, each run makes a file of its own (see [`RunDatabase`]).
    pub fn url_variable(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Postgres => (
                "DLOCK_BENCH_POSTGRES_URL",
                Some("postgres://postgres@127.0.0.1:5432/test"),
            ),
            Self::Mysql => (
                "DLOCK_BENCH_MYSQL_URL",
                Some("mysql://root@127.0.0.1:3306/test"),
            ),
            Self::Sqlite => ("DLOCK_BENCH_SQLITE_URL", None),
        }
    }

    /// The database this run uses: the variable's URL, else the default one, else (SQLite)
    /// a new file in a temporary directory, which the worker processes receive by URL.
    pub fn run_database(self, run_id: &str) -> Result<RunDatabase, String> {
        let (variable, default) = self.url_variable();
        if let Ok(url) = std::env::var(variable) {
            return Ok(RunDatabase::at(url));
        }
        if let Some(url) = default {
            return Ok(RunDatabase::at(url.to_owned()));
        }
        let directory = std::env::temp_dir().join(format!("dlock-bench-{run_id}"));
        std::fs::create_dir_all(&directory)
            .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
        Ok(RunDatabase {
            // `mode=rwc`: create the file on the first connection.
            url: format!("sqlite://{}/bench.db?mode=rwc", directory.display()),
            temporary_directory: Some(directory),
        })
    }

    /// The statements of the benchmark's floors in this dialect.
    pub fn floor_sql(self) -> &'static FloorSql {
        match self {
            Self::Postgres => &POSTGRES_FLOORS,
            Self::Mysql => &MYSQL_FLOORS,
            Self::Sqlite => &SQLITE_FLOORS,
        }
    }

    /// The dialect named `name`, or a message listing the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|dialect| dialect.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown dialect {name:?}; known dialects: {}",
                    names(Self::ALL.iter().map(|dialect| dialect.name()))
                )
            })
    }
}

/// The URL of the database a run uses, and the temporary directory made for it, if any:
/// removed, with the SQLite file and its WAL, when the run ends.
#[derive(Debug)]
pub struct RunDatabase {
    /// The database's URL.
    pub url: String,
    temporary_directory: Option<PathBuf>,
}

impl RunDatabase {
    fn at(url: String) -> Self {
        Self {
            url,
            temporary_directory: None,
        }
    }
}

impl Drop for RunDatabase {
    fn drop(&mut self) {
        if let Some(directory) = &self.temporary_directory
            && let Err(error) = std::fs::remove_dir_all(directory)
        {
            eprintln!(
                "dlock-bench: cannot remove {}: {error}",
                directory.display()
            );
        }
    }
}

/// The statements of the floors: what the database itself costs for the shapes of work a
/// lock does. Each dialect writes its own placeholders (`$1`, `?`, `?1`), as the query
/// interface passes the SQL through unchanged. Parameters are described in the
/// PostgreSQL form.
#[derive(Debug)]
pub struct FloorSql {
    /// The cheapest round trip.
    pub select1: &'static str,
    /// The floor table, one row per name, shaped like the lock table.
    pub create_table: &'static str,
    /// Takes a row the way an acquire does: insert, or update on conflict. `$1` name,
    /// `$2` owner.
    pub upsert: &'static str,
    /// Frees it the way a release does. `$1` name, `$2` owner.
    pub update: &'static str,
    /// Session-level advisory lock and unlock of key `$1`, where the database has them.
    pub advisory: Option<(&'static str, &'static str)>,
}

const POSTGRES_FLOORS: FloorSql = FloorSql {
    // BIGINT: the result column is read as an integer column, which the tokio-postgres
    // adapter decodes as INT8 only (a bare `1` is INT4).
    select1: "SELECT 1::BIGINT",
    create_table: "CREATE TABLE IF NOT EXISTS dlock_bench_floor (
        name TEXT PRIMARY KEY, owner TEXT, counter BIGINT NOT NULL)",
    upsert: "INSERT INTO dlock_bench_floor AS f (name, owner, counter) VALUES ($1, $2, 1)
        ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, counter = f.counter + 1",
    update: "UPDATE dlock_bench_floor SET owner = NULL WHERE name = $1 AND owner = $2",
    advisory: Some((
        "SELECT pg_advisory_lock($1)",
        "SELECT pg_advisory_unlock($1)",
    )),
};

const MYSQL_FLOORS: FloorSql = FloorSql {
    select1: "SELECT 1",
    // InnoDB cannot key on TEXT; the benchmark's names are far shorter than 255.
    create_table: "CREATE TABLE IF NOT EXISTS dlock_bench_floor (
        name VARCHAR(255) PRIMARY KEY, owner TEXT, counter BIGINT NOT NULL)",
    // `VALUES(owner)` rather than a row alias: MariaDB has no `AS new` on inserts.
    upsert: "INSERT INTO dlock_bench_floor (name, owner, counter) VALUES (?, ?, 1)
        ON DUPLICATE KEY UPDATE owner = VALUES(owner), counter = counter + 1",
    update: "UPDATE dlock_bench_floor SET owner = NULL WHERE name = ? AND owner = ?",
    // Named locks take a string (of at most 64 characters): the integer key becomes part
    // of one. A timeout of -1 waits forever, as `pg_advisory_lock` does.
    advisory: Some((
        "SELECT GET_LOCK(CONCAT('dlock-bench-floor-', ?), -1)",
        "SELECT RELEASE_LOCK(CONCAT('dlock-bench-floor-', ?))",
    )),
};

const SQLITE_FLOORS: FloorSql = FloorSql {
    select1: "SELECT 1",
    create_table: "CREATE TABLE IF NOT EXISTS dlock_bench_floor (
        name TEXT PRIMARY KEY, owner TEXT, counter BIGINT NOT NULL)",
    upsert: "INSERT INTO dlock_bench_floor (name, owner, counter) VALUES (?1, ?2, 1)
        ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, counter = counter + 1",
    update: "UPDATE dlock_bench_floor SET owner = NULL WHERE name = ?1 AND owner = ?2",
    // SQLite's only lock is the database's write lock.
    advisory: None,
};

/// `a, b, c` for error messages.
pub fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
