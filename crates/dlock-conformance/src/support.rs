//! What scenarios share: the environment, unique names, waiting for conditions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dlock_core::adapter::{BoxError, QueryInterface, Statement, StatementKind, Value};
use dlock_core::{Dialect, DistributedLock, Lease, LockBuilder, TableName};
use dlock_testkit::{Backend, Partition, PoolOptions, Route};
use tokio::time::Instant;

/// A scenario's verdict: passed, or why not.
pub(crate) type Verdict = Result<(), String>;

/// What a scenario runs with: the adapter, the database, its URL and the route there.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub(crate) backend: Backend,
    pub(crate) dialect: Dialect,
    pub(crate) url: String,
    pub(crate) route: Route,
}

/// How long a checkout of the suite's pools waits for a free connection.
fn checkout(backend: Backend) -> Duration {
    match backend {
        Backend::TokioPostgres | Backend::SeaOrm | Backend::Sqlx => Duration::from_millis(500),
        Backend::DieselDeadpool => Duration::from_secs(5),
        // bb8 reports a failure to connect only as a checkout timeout, so with a longer
        // one a renewal through a cut connection would wait past the 4 s lease of the
        // unreachable-database scenario without ever seeing an error; a shorter one
        // (500 ms) failed contenders that were merely slow to connect on a loaded machine.
        Backend::DieselBb8 => Duration::from_secs(2),
    }
}

impl Env {
    pub(crate) fn new(backend: Backend, dialect: Dialect, url: String, route: Route) -> Self {
        Self {
            backend,
            dialect,
            url,
            route,
        }
    }

    fn options(&self, size: usize) -> PoolOptions {
        PoolOptions {
            size,
            checkout: checkout(self.backend),
            connect: Duration::from_secs(5),
            route: self.route,
        }
    }

    /// A new pool to the database. Every call gives connections of its own: contenders
    /// use one each.
    pub(crate) async fn connect(&self) -> Result<Arc<dyn QueryInterface>, String> {
        self.connect_to(&self.url).await
    }

    pub(crate) async fn connect_to(&self, url: &str) -> Result<Arc<dyn QueryInterface>, String> {
        self.backend
            .connect(self.dialect, url, self.options(4))
            .await
            .map_err(|error| format!("{}: {error}", self.backend.name()))
    }

    /// A new pool that sends every statement over one connection, kept for the pool's
    /// life: a session setting made through it (`SET SESSION sql_mode = …`) applies to
    /// every statement that follows.
    pub(crate) async fn connect_single(&self) -> Result<Arc<dyn QueryInterface>, String> {
        self.backend
            .connect(self.dialect, &self.url, self.options(1))
            .await
    }

    /// A query interface whose pool has no free connection and a short wait timeout, and
    /// the value that holds that connection.
    pub(crate) async fn connect_exhausted(
        &self,
    ) -> Result<(Arc<dyn QueryInterface>, Box<dyn std::any::Any + Send>), String> {
        let options = self.options(1).with_checkout(Duration::from_millis(500));
        let (pool, queries) = self.backend.pool(self.dialect, &self.url, options).await?;
        Ok((queries, pool.check_out().await?))
    }

    /// In one transaction on a new connection: fence with `lease`, run `write`, wait
    /// `hold`, commit. Errors from the fence come back unchanged (`Error::Fenced`).
    ///
    /// The transaction runs on a thread of its own, in `block_on`, whose future need not
    /// be `Send`: rustc cannot prove diesel-async's `transaction` future `Send` across
    /// its higher-ranked closure bounds, while scenarios spawn this.
    pub(crate) async fn fenced_write(
        &self,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError> {
        let (pool, _) = self
            .backend
            .pool(self.dialect, &self.url, self.options(1))
            .await?;
        let (lease, write) = (lease.clone(), write.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(pool.fenced_write(&lease, &write, hold))
        })
        .await?
    }

    /// A partition between the database and the pools of [`Env::connect_through`].
    pub(crate) async fn partition(&self) -> Result<Partition, String> {
        Partition::start(self.dialect, &self.url).await
    }

    /// A new pool whose statements `partition` can cut off.
    pub(crate) async fn connect_through(
        &self,
        partition: &Partition,
    ) -> Result<Arc<dyn QueryInterface>, String> {
        Ok(partition.wrap(self.connect_to(partition.url(&self.url)).await?))
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

/// The lock table of the election scenarios, parent and children alike: one created by
/// this version, with the `value` columns, whatever older table the shared test
/// databases keep under the default name.
pub(crate) const ELECTION_TABLE: &str = "dlock_elections";

/// An election on a new pool, in [`ELECTION_TABLE`], with short timings for tests.
impl Env {
    pub(crate) async fn election(&self, name: &str) -> Result<dlock_core::ElectionBuilder, String> {
        Ok(dlock_core::Election::builder(name, self.connect().await?)
            .table(ELECTION_TABLE)
            .ttl(Duration::from_secs(5))
            .poll_interval(Duration::from_millis(20)))
    }
}

/// A lock name no other test or run uses.
pub(crate) fn unique_name(scenario: &str) -> String {
    dlock_testkit::unique_name(&format!("conformance/{scenario}"))
}

/// A name for a user or table that no other test or run uses, short enough for MySQL's
/// user names.
pub(crate) fn unique_identifier(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until `condition` holds, checking every 10 ms, for at most `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Verdict
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
    dlock_testkit::statement(dialect, sql, params, &[])
}

/// Drops `table` if it exists.
pub(crate) async fn drop_table(queries: &Arc<dyn QueryInterface>, table: &str) -> Verdict {
    let drop = sql(
        queries.dialect(),
        &format!("DROP TABLE IF EXISTS {table}"),
        vec![],
    );
    queries
        .execute(&drop)
        .await
        .map(|_rows| ())
        .map_err(|e| format!("cannot drop {table}: {e}"))
}

/// Connects and creates the default lock table: proves the database answers.
pub(crate) async fn check_reachable(env: &Env) -> Result<(), String> {
    let queries = tokio::time::timeout(Duration::from_secs(10), env.connect())
        .await
        .map_err(|_| "connecting took over 10 s".to_owned())??;
    let lock = DistributedLock::new("conformance/reachable", queries).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(10), lock.create_table())
        .await
        .map_err(|_| "creating the lock table took over 10 s".to_owned())?
        .map_err(|error| dlock_testkit::error_chain(&error))
}

/// What a waiter sent, as a tap recorded it, split into its first attempt and the
/// statements of its waiting. The listener's checks that it still hears (a notice with an
/// empty payload, sent through the same pool when the listener decides) may come before
/// the attempt; they belong to the waiting.
pub(crate) fn after_first_attempt(statements: &[Statement]) -> Result<Vec<&Statement>, String> {
    let first = statements
        .iter()
        .position(|statement| statement.kind != StatementKind::Notify);
    match first.map(|index| (index, statements[index].kind)) {
        Some((index, StatementKind::Acquire)) => Ok(statements
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, statement)| statement)
            .collect()),
        _ => Err(format!(
            "the waiter did not start with an acquire attempt: {:?}",
            statements
                .iter()
                .map(|statement| statement.kind)
                .collect::<Vec<_>>()
        )),
    }
}
