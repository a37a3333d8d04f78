//! The adapters and dialects the benchmark can run against, and the SQL of the floors.
//!
//! Adding an adapter is one variant of [`Adapter`] (its name, its dialects, one arm in
//! [`Adapter::connect`]); adding a dialect is one variant of [`Dialect`] with its URL
//! variable and its [`FloorSql`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dlock_core::QueryInterface;
use dlock_tokio_postgres::PostgresQueries;
use dlock_tokio_postgres::deadpool_postgres::{Manager, Pool, Runtime, Timeouts};
use dlock_tokio_postgres::tokio_postgres::{self, NoTls};

/// A client library whose pools dlock accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adapter {
    /// `dlock-tokio-postgres`: a `deadpool_postgres::Pool`.
    TokioPostgres,
}

impl Adapter {
    pub(crate) const ALL: &[Self] = &[Self::TokioPostgres];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::TokioPostgres => "tokio-postgres",
        }
    }

    /// The dialects this adapter speaks; the first is the default.
    pub(crate) fn dialects(self) -> &'static [Dialect] {
        match self {
            Self::TokioPostgres => &[Dialect::Postgres],
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Self, String> {
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
    /// interface. The pool connects lazily; the first statement finds out whether the
    /// server is there.
    pub(crate) fn connect(
        self,
        dialect: Dialect,
        url: &str,
        pool_size: usize,
    ) -> Result<Arc<dyn QueryInterface>, String> {
        match (self, dialect) {
            // With LISTEN, as a service that wants waiters woken on release sets it up.
            (Self::TokioPostgres, Dialect::Postgres) => {
                let config = tokio_postgres::Config::from_str(url)
                    .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))?;
                let pool = deadpool_postgres_pool(url, pool_size)?;
                Ok(Arc::new(
                    PostgresQueries::from_pool(pool).listen_with(config, NoTls),
                ))
            }
        }
    }
}

/// The pool a service would build: deadpool's defaults (fast recycling, which sends no
/// statement on checkout), with bounded waits so that a stuck benchmark fails instead of
/// hanging.
fn deadpool_postgres_pool(url: &str, pool_size: usize) -> Result<Pool, String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|error| format!("invalid PostgreSQL URL {url:?}: {error}"))?;
    Pool::builder(Manager::new(config, NoTls))
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
pub(crate) enum Dialect {
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    pub(crate) const ALL: &[Self] = &[Self::Postgres];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
        }
    }

    /// The environment variable holding the server's URL, and the URL used without it
    /// (the same as the tests' and docker-compose.yml's).
    pub(crate) fn url_variable(self) -> (&'static str, &'static str) {
        match self {
            Self::Postgres => (
                "DLOCK_BENCH_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
        }
    }

    pub(crate) fn url(self) -> String {
        let (variable, default) = self.url_variable();
        std::env::var(variable).unwrap_or_else(|_| default.to_owned())
    }

    pub(crate) fn floor_sql(self) -> &'static FloorSql {
        match self {
            Self::Postgres => &POSTGRES_FLOORS,
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Self, String> {
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

/// The statements of the floors: what the database itself costs for the shapes of work a
/// lock does. `$1`-style placeholders are the PostgreSQL form; other dialects write their own.
#[derive(Debug)]
pub(crate) struct FloorSql {
    /// The cheapest round trip.
    pub(crate) select1: &'static str,
    /// The floor table, one row per name, shaped like the lock table.
    pub(crate) create_table: &'static str,
    /// Takes a row the way an acquire does: insert, or update on conflict. `$1` name,
    /// `$2` owner.
    pub(crate) upsert: &'static str,
    /// Frees it the way a release does. `$1` name, `$2` owner.
    pub(crate) update: &'static str,
    /// Session-level advisory lock and unlock of key `$1`, where the database has them.
    pub(crate) advisory: Option<(&'static str, &'static str)>,
}

const POSTGRES_FLOORS: FloorSql = FloorSql {
    select1: "SELECT 1",
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

/// `a, b, c` for error messages.
pub(crate) fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
