//! The floors: what the database itself costs, through the same adapter and the same
//! kind of pool as the lock, for the shapes of work a lock does. Going through the
//! adapter's query interface (rather than a hand-written client loop) means the ratio
//! lock / floor isolates what dlock adds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dlock_core::Dialect;
use dlock_core::adapter::{ColumnType, QueryInterface, Statement, Value};
use dlock_testkit::statement;

use super::{Context, Scenario, timed_loop};
use crate::report::{Latencies, ResultLine};

/// The statements of the floors in `dialect`.
pub(crate) fn floor_sql(dialect: Dialect) -> &'static FloorSql {
    match dialect {
        Dialect::Mysql => &MYSQL_FLOORS,
        Dialect::Sqlite => &SQLITE_FLOORS,
        _ => &POSTGRES_FLOORS,
    }
}

/// The pool size of every sequential scenario: room for the renewal task beside the
/// statement in flight, as a small service pool would have.
pub(crate) const POOL_SIZE: usize = 4;

/// `SELECT 1` round trips.
pub(super) async fn select1(context: &Context) -> Result<Vec<ResultLine>, String> {
    let queries = context.pool(POOL_SIZE).await?;
    // One result column, as adapters that decode strictly (Diesel) are told.
    let select1 = statement(
        context.dialect,
        floor_sql(context.dialect).select1,
        Vec::new(),
        &[ColumnType::Int],
    );
    let duration = context.duration(Duration::from_secs(3), Duration::from_secs(1));
    eprintln!("floor_select1: SELECT 1 round trips for {duration:?}");
    let (latencies, elapsed) = timed_loop(duration, || {
        let queries = Arc::clone(&queries);
        let select1 = select1.clone();
        async move {
            queries
                .query(&select1)
                .await
                .map(drop)
                .map_err(|error| format!("SELECT 1 failed: {error}"))
        }
    })
    .await?;
    Ok(vec![context.line(Scenario::FloorSelect1, 1).throughput(
        &Latencies::from_durations(latencies),
        elapsed,
    )])
}

/// A row taken and freed the way a lock is: an upsert, then an update, each its own
/// autocommitted (durable) transaction.
#[derive(Debug, Clone)]
pub(super) struct Commit2 {
    queries: Arc<dyn QueryInterface>,
    name: String,
    /// The statements without their parameters.
    upsert: Statement,
    update: Statement,
    /// A different owner per operation, as each acquisition has its own owner id.
    sequence: Arc<AtomicU64>,
}

impl Commit2 {
    pub(super) async fn new(context: &Context, name: String) -> Result<Self, String> {
        let queries = context.pool(POOL_SIZE).await?;
        let sql = floor_sql(context.dialect);
        queries
            .execute(&statement(
                context.dialect,
                sql.create_table,
                Vec::new(),
                &[],
            ))
            .await
            .map_err(|error| format!("cannot create the floor table: {error}"))?;
        Ok(Self {
            queries,
            name,
            upsert: statement(context.dialect, sql.upsert, Vec::new(), &[]),
            update: statement(context.dialect, sql.update, Vec::new(), &[]),
            sequence: Arc::new(AtomicU64::new(0)),
        })
    }

    pub(super) async fn once(&self) -> Result<(), String> {
        let owner = format!("owner-{}", self.sequence.fetch_add(1, Ordering::Relaxed));
        let params = vec![Value::Text(self.name.clone()), Value::Text(owner)];
        let run = |template: &Statement| Statement {
            params: params.clone(),
            ..template.clone()
        };
        self.queries
            .execute(&run(&self.upsert))
            .await
            .map_err(|error| format!("floor upsert failed: {error}"))?;
        self.queries
            .execute(&run(&self.update))
            .await
            .map_err(|error| format!("floor update failed: {error}"))?;
        Ok(())
    }
}

/// The durable upsert + update pair: what one acquire + release must at least cost.
pub(super) async fn commit2(context: &Context) -> Result<Vec<ResultLine>, String> {
    let floor = Commit2::new(context, context.lock_name("floor_commit2")).await?;
    let duration = context.duration(Duration::from_secs(3), Duration::from_secs(1));
    eprintln!("floor_commit2: upsert + update (two commits) for {duration:?}");
    let (latencies, elapsed) = timed_loop(duration, || floor.once()).await?;
    Ok(vec![context.line(Scenario::FloorCommit2, 1).throughput(
        &Latencies::from_durations(latencies),
        elapsed,
    )])
}

/// Session advisory lock + unlock on one connection (a pool of one, so both statements
/// run in the same session): the cheapest lock the database has, not durable, held by a
/// connection.
pub(super) async fn advisory(context: &Context) -> Result<Vec<ResultLine>, String> {
    // A key of this process's own, so concurrent runs do not wait for each other.
    let key = 0x646c_6f63_6b00_0000 + i64::from(std::process::id());
    let Some(session_lock) = SessionLock::new(context.dialect, context.pool(1).await?, key) else {
        eprintln!(
            "floor_advisory: {} has no advisory locks; skipped",
            context.dialect.name()
        );
        return Ok(Vec::new());
    };
    let duration = context.duration(Duration::from_secs(3), Duration::from_secs(1));
    eprintln!("floor_advisory: advisory lock + unlock for {duration:?}");
    let (latencies, elapsed) = timed_loop(duration, || async {
        session_lock.lock().await?;
        session_lock.unlock().await
    })
    .await?;
    Ok(vec![context.line(Scenario::FloorAdvisory, 1).throughput(
        &Latencies::from_durations(latencies),
        elapsed,
    )])
}

/// The database's own session lock on one key (`pg_advisory_lock`, `GET_LOCK`), through
/// a pool of one connection: the lock and the unlock must reach the same session.
pub(crate) struct SessionLock {
    queries: Arc<dyn QueryInterface>,
    lock: Statement,
    unlock: Statement,
}

impl SessionLock {
    /// `None` where the database has no session locks (SQLite).
    pub(crate) fn new(
        dialect: Dialect,
        queries: Arc<dyn QueryInterface>,
        key: i64,
    ) -> Option<Self> {
        let (lock, unlock) = floor_sql(dialect).advisory?;
        let key = vec![Value::Int(key)];
        Some(Self {
            lock: statement(dialect, lock, key.clone(), &[ColumnType::Int]),
            unlock: statement(dialect, unlock, key, &[ColumnType::Int]),
            queries,
        })
    }

    /// Waits until this session holds the lock.
    pub(crate) async fn lock(&self) -> Result<(), String> {
        self.run(&self.lock, "lock").await
    }

    pub(crate) async fn unlock(&self) -> Result<(), String> {
        self.run(&self.unlock, "unlock").await
    }

    /// Runs `statement`, which answers 1 when it did what it says: a lock not granted
    /// (MariaDB answers `GET_LOCK` with a negative timeout with NULL, at once) would time
    /// an error, and let sections overlap.
    async fn run(&self, statement: &Statement, what: &str) -> Result<(), String> {
        let rows = self
            .queries
            .query(statement)
            .await
            .map_err(|error| format!("the session {what} failed: {error}"))?;
        match rows.as_slice() {
            [row] if row.as_slice() == [Value::Int(1)] => Ok(()),
            other => Err(format!("the session {what} answered {other:?}, not 1")),
        }
    }
}

/// The statements of the floors: what the database itself costs for the shapes of work a
/// lock does. Each dialect writes its own placeholders (`$1`, `?`, `?1`), as the query
/// interface passes the SQL through unchanged. Parameters are described in the
/// PostgreSQL form.
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
    /// Session-level advisory lock and unlock of key `$1`, where the database has them,
    /// each answering one row of 1 when it locked or unlocked.
    pub(crate) advisory: Option<(&'static str, &'static str)>,
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
    // `pg_advisory_lock` returns nothing to check: one row of 1 once it has returned.
    advisory: Some((
        "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_lock($1)) AS locked",
        "SELECT CAST(CASE WHEN pg_advisory_unlock($1) THEN 1 ELSE 0 END AS BIGINT)",
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
    // of one. An hour is as good as waiting forever here; MariaDB answers a negative
    // timeout (MySQL's "forever") with NULL at once, without locking.
    advisory: Some((
        "SELECT CAST(GET_LOCK(CONCAT('dlock-bench-floor-', ?), 3600) AS SIGNED)",
        "SELECT CAST(RELEASE_LOCK(CONCAT('dlock-bench-floor-', ?)) AS SIGNED)",
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
