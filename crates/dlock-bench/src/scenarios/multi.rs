//! A multi-lock of three names, uncontended: `lock(empty job)` back to back, beside the
//! floor pair run alternately with it (as the uncontended lock is measured).

use std::time::Duration;

use dlock_core::{Error, MultiLock};
use dlock_testkit::error_chain;

use super::floors::{Commit2, POOL_SIZE};
use super::{Context, Scenario, WARM_UP_OPERATIONS, measure_for};
use crate::report::{Latencies, ResultLine};

/// How many names the multi-lock takes together.
const NAMES: usize = 3;

/// Slices of this length alternate between the multi-lock and the floor pair.
const SLICE: Duration = Duration::from_millis(250);

async fn lock_empty(lock: &MultiLock) -> Result<(), String> {
    lock.lock(|_lease| async { Ok::<_, Error>(()) })
        .await
        .map(drop)
        .map_err(|error| error_chain(&error))
}

pub(super) async fn uncontended(context: &Context) -> Result<Vec<ResultLine>, String> {
    let names = (0..NAMES).map(|n| context.lock_name(&format!("multi/{n}")));
    let lock = MultiLock::new(names, context.pool(POOL_SIZE).await?)
        .map_err(|error| error_chain(&error))?;
    let floor = Commit2::new(context, context.lock_name("multi-floor")).await?;
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    eprintln!(
        "multi_uncontended: lock(empty job) on a multi-lock of {NAMES} names for \
         {duration:?}, alternating every {SLICE:?} with the floor pair"
    );
    for _ in 0..WARM_UP_OPERATIONS {
        lock_empty(&lock).await?;
        floor.once().await?;
    }
    let (mut lock_latencies, mut floor_latencies) = (Vec::new(), Vec::new());
    let (mut lock_elapsed, mut floor_elapsed) = (Duration::ZERO, Duration::ZERO);
    while lock_elapsed < duration {
        lock_elapsed += measure_for(SLICE, &mut lock_latencies, || lock_empty(&lock)).await?;
        floor_elapsed += measure_for(SLICE, &mut floor_latencies, || floor.once()).await?;
    }
    let lock_latencies = Latencies::from_durations(lock_latencies);
    let floor_latencies = Latencies::from_durations(floor_latencies);
    let ratio = lock_latencies.percentile(50.0) / floor_latencies.percentile(50.0);
    Ok(vec![
        context
            .line(Scenario::MultiUncontended, 1)
            .throughput(&lock_latencies, lock_elapsed)
            .float("names", NAMES as f64)
            .float("floor_commit2_p50_ms", floor_latencies.percentile(50.0))
            .float("p50_vs_floor_commit2", ratio),
    ])
}
