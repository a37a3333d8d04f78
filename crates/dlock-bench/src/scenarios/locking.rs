//! `lock(empty job)` back to back: on one name (uncontended), and on W names at once
//! (independent), the latter beside the floor pair run the same way.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::{DistributedLock, Error};
use tokio::sync::Barrier;

use super::floors::{Commit2, POOL_SIZE};
use super::{
    Context, Scenario, WARM_UP_OPERATIONS, describe, measure_for, run_parallel, timed_loop,
};
use crate::stats::{JsonLine, Latencies};

/// The independent scenario compares this many workers with one.
const INDEPENDENT_WORKERS: usize = 8;

/// A lock with the default options on a fresh pool.
fn lock(context: &Context, name: &str) -> Result<DistributedLock, String> {
    DistributedLock::new(name, context.pool(POOL_SIZE)?).map_err(|error| describe(&error))
}

/// One `lock(empty job)`: acquire, run nothing, release.
async fn lock_empty(lock: &DistributedLock) -> Result<(), String> {
    lock.lock(|_lease| async { Ok::<_, Error>(()) })
        .await
        .map(drop)
        .map_err(|error| describe(&error))
}

/// Slices of this length alternate between the lock and the floor pair, so that both
/// see the same background load on a shared machine and their ratio stays meaningful.
const SLICE: Duration = Duration::from_millis(250);

pub(super) async fn uncontended(context: &Context) -> Result<Vec<JsonLine>, String> {
    let lock = lock(context, &context.lock_name("uncontended"))?;
    let floor = Commit2::new(context, context.lock_name("uncontended-floor")).await?;
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    eprintln!(
        "uncontended: lock(empty job) on one name for {duration:?}, alternating every \
         {SLICE:?} with the floor pair"
    );
    for _ in 0..WARM_UP_OPERATIONS {
        lock_empty(&lock).await?;
        floor.once().await?;
    }
    let (mut lock_latencies, mut floor_latencies) = (Vec::new(), Vec::new());
    let mut lock_elapsed = Duration::ZERO;
    while lock_elapsed < duration {
        lock_elapsed += measure_for(SLICE, &mut lock_latencies, || lock_empty(&lock)).await?;
        measure_for(SLICE, &mut floor_latencies, || floor.once()).await?;
    }
    let lock_latencies = Latencies::from_durations(lock_latencies);
    let floor_latencies = Latencies::from_durations(floor_latencies);
    Ok(vec![
        context
            .line(Scenario::Uncontended, 1)
            .throughput(&lock_latencies, lock_elapsed)
            .float("floor_commit2_p50_ms", floor_latencies.percentile(50.0))
            .float("floor_commit2_p99_ms", floor_latencies.percentile(99.0))
            .float(
                "p50_vs_floor_commit2",
                lock_latencies.percentile(50.0) / floor_latencies.percentile(50.0),
            ),
    ])
}

/// Throughput of `workers` tasks, each with its own pool and name, all measured over
/// the same stretch of time.
#[derive(Debug)]
struct Parallel {
    latencies: Latencies,
    ops_per_s: f64,
}

impl Parallel {
    fn from_workers(results: Vec<(Vec<Duration>, Duration)>) -> Self {
        let longest = results
            .iter()
            .map(|(_, elapsed)| *elapsed)
            .max()
            .unwrap_or_default();
        let latencies = Latencies::from_durations(results.into_iter().flat_map(|(l, _)| l));
        Self {
            ops_per_s: latencies.len() as f64 / longest.as_secs_f64(),
            latencies,
        }
    }
}

async fn parallel_locks(
    context: &Context,
    workers: usize,
    duration: Duration,
) -> Result<Parallel, String> {
    let barrier = Arc::new(Barrier::new(workers));
    let results = run_parallel(workers, |index| {
        let lock = lock(
            context,
            &context.lock_name(&format!("independent/{workers}/{index}")),
        );
        let barrier = Arc::clone(&barrier);
        async move {
            let lock = lock?;
            timed_loop(duration, Some(&barrier), || lock_empty(&lock)).await
        }
    })
    .await?;
    Ok(Parallel::from_workers(results))
}

async fn parallel_floor(
    context: &Context,
    workers: usize,
    duration: Duration,
) -> Result<Parallel, String> {
    let barrier = Arc::new(Barrier::new(workers));
    let mut floors = Vec::with_capacity(workers);
    for index in 0..workers {
        let name = context.lock_name(&format!("independent-floor/{workers}/{index}"));
        floors.push(Commit2::new(context, name).await?);
    }
    let results = run_parallel(workers, |index| {
        let floor = floors[index].clone();
        let barrier = Arc::clone(&barrier);
        async move { floor.measure(duration, Some(&barrier)).await }
    })
    .await?;
    Ok(Parallel::from_workers(results))
}

pub(super) async fn independent(context: &Context) -> Result<Vec<JsonLine>, String> {
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    let mut lines = Vec::new();
    let mut alone = None;
    for workers in [1, INDEPENDENT_WORKERS] {
        eprintln!(
            "independent: {workers} worker(s) on as many names, lock(empty job), \
             then the floor pair, {duration:?} each"
        );
        let locks = parallel_locks(context, workers, duration).await?;
        let floor = parallel_floor(context, workers, duration).await?;
        let (single_locks, single_floor) = *alone.get_or_insert((locks.ops_per_s, floor.ops_per_s));
        lines.push(
            context
                .line(Scenario::Independent, workers)
                .float("ops_per_s", locks.ops_per_s)
                .float("p50_ms", locks.latencies.percentile(50.0))
                .float("p99_ms", locks.latencies.percentile(99.0))
                .float("speedup", locks.ops_per_s / single_locks)
                .float("floor_commit2_ops_per_s", floor.ops_per_s)
                .float("floor_commit2_speedup", floor.ops_per_s / single_floor),
        );
    }
    Ok(lines)
}
