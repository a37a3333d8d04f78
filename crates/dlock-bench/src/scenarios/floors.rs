//! The floors: what the database itself costs, through the same adapter and the same
//! kind of pool as the lock, for the shapes of work a lock does. Going through the
//! adapter's query interface (rather than a hand-written client loop) means the ratio
//! lock / floor isolates what dlock adds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dlock_core::{ColumnType, QueryInterface, Statement, Value};

use super::{Context, Scenario, timed_loop};
use crate::stats::{JsonLine, Latencies};

/// The pool size of every sequential scenario: room for the renewal task beside the
/// statement in flight, as a small service pool would have.
pub(crate) const POOL_SIZE: usize = 4;

fn statement(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params,
        columns: &[],
    }
}

/// `SELECT 1` round trips.
pub(super) async fn select1(context: &Context) -> Result<Vec<JsonLine>, String> {
    let queries = context.pool(POOL_SIZE).await?;
    // One result column, as adapters that decode strictly (Diesel) are told.
    let select1 = Statement {
        columns: &[ColumnType::Int],
        ..statement(context.dialect.floor_sql().select1, Vec::new())
    };
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
    upsert: Arc<str>,
    update: Arc<str>,
    /// A different owner per operation, as each acquisition has its own owner id.
    sequence: Arc<AtomicU64>,
}

impl Commit2 {
    pub(super) async fn new(context: &Context, name: String) -> Result<Self, String> {
        let queries = context.pool(POOL_SIZE).await?;
        let sql = context.dialect.floor_sql();
        queries
            .execute(&statement(sql.create_table, Vec::new()))
            .await
            .map_err(|error| format!("cannot create the floor table: {error}"))?;
        Ok(Self {
            queries,
            name,
            upsert: sql.upsert.into(),
            update: sql.update.into(),
            sequence: Arc::new(AtomicU64::new(0)),
        })
    }

    pub(super) async fn once(&self) -> Result<(), String> {
        let owner = format!("owner-{}", self.sequence.fetch_add(1, Ordering::Relaxed));
        let params = vec![Value::Text(self.name.clone()), Value::Text(owner)];
        let run = |sql: &Arc<str>| Statement {
            sql: Arc::clone(sql),
            params: params.clone(),
            columns: &[],
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
pub(super) async fn commit2(context: &Context) -> Result<Vec<JsonLine>, String> {
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
pub(super) async fn advisory(context: &Context) -> Result<Vec<JsonLine>, String> {
    let Some((lock_sql, unlock_sql)) = context.dialect.floor_sql().advisory else {
        eprintln!(
            "floor_advisory: {} has no advisory locks; skipped",
            context.dialect.name()
        );
        return Ok(Vec::new());
    };
    let queries = context.pool(1).await?;
    // A key of this process's own, so concurrent runs do not wait for each other.
    let key = Value::Int(0x646c_6f63_6b00_0000 + i64::from(std::process::id()));
    let lock = statement(lock_sql, vec![key.clone()]);
    let unlock = statement(unlock_sql, vec![key]);
    let duration = context.duration(Duration::from_secs(3), Duration::from_secs(1));
    eprintln!("floor_advisory: advisory lock + unlock for {duration:?}");
    let (latencies, elapsed) = timed_loop(duration, || {
        let queries = Arc::clone(&queries);
        let (lock, unlock) = (lock.clone(), unlock.clone());
        async move {
            queries
                .execute(&lock)
                .await
                .map_err(|error| format!("advisory lock failed: {error}"))?;
            queries
                .execute(&unlock)
                .await
                .map_err(|error| format!("advisory unlock failed: {error}"))?;
            Ok(())
        }
    })
    .await?;
    Ok(vec![context.line(Scenario::FloorAdvisory, 1).throughput(
        &Latencies::from_durations(latencies),
        elapsed,
    )])
}
