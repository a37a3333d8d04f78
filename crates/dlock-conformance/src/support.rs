//! What scenarios share: the environment, unique names, waiting for conditions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dlock_core::{
    Dialect, DistributedLock, LockBuilder, QueryInterface, Statement, TableName, Value,
};
use tokio::time::Instant;

use crate::{Adapter, Target};

/// A scenario's failure message.
pub(crate) type Outcome = Result<(), String>;

/// What a scenario runs with: the adapter and the database's URL.
pub(crate) struct Env<A> {
    pub(crate) adapter: Arc<A>,
    pub(crate) url: String,
    pub(crate) target: Target,
}

impl<A: Adapter> Env<A> {
    pub(crate) fn new(adapter: Arc<A>, url: String, target: Target) -> Self {
        Self {
            adapter,
            url,
            target,
        }
    }

    /// A new pool to the database.
    pub(crate) async fn connect(&self) -> Result<Arc<dyn QueryInterface>, String> {
        self.connect_to(&self.url).await
    }

    pub(crate) async fn connect_to(&self, url: &str) -> Result<Arc<dyn QueryInterface>, String> {
        self.adapter
            .connect(url)
            .await
            .map_err(|error| format!("{}: cannot connect to {url}: {error}", self.adapter.name()))
    }

    /// A builder for a lock on a new pool, with short timings for tests.
    pub(crate) async fn lock(&self, name: &str) -> Result<LockBuilder, String> {
        Ok(quick(DistributedLock::builder(name, self.connect().await?)))
    }
}

/// Short TTL and poll interval, so tests run fast.
pub(crate) fn quick(builder: LockBuilder) -> LockBuilder {
    builder
        .ttl(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(20))
}

/// A lock name no other test or run uses.
pub(crate) fn unique_name(scenario: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "conformance/{scenario}/{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until `condition` holds, checking every 10 ms, for at most `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not so after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a new lock on `queries` can take `name` right now (and releases it again).
pub(crate) async fn is_free(queries: &Arc<dyn QueryInterface>, name: &str) -> Result<bool, String> {
    is_free_in(queries, TableName::DEFAULT, name).await
}

/// [`is_free`] for a lock in `table`.
pub(crate) async fn is_free_in(
    queries: &Arc<dyn QueryInterface>,
    table: &str,
    name: &str,
) -> Result<bool, String> {
    let lock = quick(DistributedLock::builder(name, Arc::clone(queries)))
        .table(table)
        .build()
        .map_err(|e| e.to_string())?;
    match lock
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
    {
        Some(guard) => {
            guard.release().await.map_err(|e| e.to_string())?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A statement in `dialect` with `?`-style placeholders rewritten to the dialect's.
pub(crate) fn sql(dialect: Dialect, sql: &str, params: Vec<Value>) -> Statement {
    let sql = match dialect {
        Dialect::Postgres => {
            let mut numbered = String::with_capacity(sql.len());
            let mut index = 0;
            for c in sql.chars() {
                if c == '?' {
                    index += 1;
                    numbered.push_str(&format!("${index}"));
                } else {
                    numbered.push(c);
                }
            }
            numbered
        }
        _ => sql.to_owned(),
    };
    Statement {
        sql: sql.into(),
        params,
        columns: &[],
    }
}

/// Connects and creates the default lock table: proves the database answers.
pub(crate) async fn check_reachable<A: Adapter>(adapter: &A, url: &str) -> Result<(), String> {
    let queries = tokio::time::timeout(Duration::from_secs(10), adapter.connect(url))
        .await
        .map_err(|_| "connecting took over 10 s".to_owned())?
        .map_err(|error| error.to_string())?;
    let lock = DistributedLock::new("conformance/reachable", queries).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), lock.create_table())
        .await
        .map_err(|_| "creating the lock table took over 10 s".to_owned())?
        .map_err(|error| format!("{error}: {}", source_chain(&error)))
}

/// The error's sources, joined, for messages.
pub(crate) fn source_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(error) = source {
        chain.push(error.to_string());
        source = error.source();
    }
    chain.join(": ")
}

/// The directory of this run's SQLite database: one per test-binary run, so runs never
/// share a file; child processes receive the URL, not this path.
fn sqlite_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        std::env::temp_dir().join(format!("dlock-conformance-{}-{nanos}", std::process::id()))
    })
}

/// The URL of this run's SQLite database file (created with the directory on first use).
pub(crate) fn sqlite_url() -> String {
    let dir = sqlite_dir();
    if let Err(error) = std::fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {error}", dir.display());
    }
    format!("sqlite://{}/locks.db?mode=rwc", dir.display())
}

/// Removes this run's SQLite directory, if it made one.
pub(crate) fn remove_sqlite_dir() {
    let _ = std::fs::remove_dir_all(sqlite_dir());
}
