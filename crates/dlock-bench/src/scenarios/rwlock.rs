//! A reader-writer lock, read uncontended: `read_lock(empty job)` back to back (its
//! acquire and release), beside the floor pair run alternately with it (as the
//! uncontended lock and the multi-lock are measured).

use std::time::Duration;

use dlock_core::{Error, RwLock};
use dlock_testkit::error_chain;

use super::floors::{Commit2, POOL_SIZE};
use super::{Context, Scenario, WARM_UP_OPERATIONS, measure_for};
use crate::report::{Latencies, ResultLine};

/// Slices of this length alternate between the reads and the floor pair.
const SLICE: Duration = Duration::from_millis(250);

async fn read_empty(lock: &RwLock) -> Result<(), String> {
    lock.read_lock(|_lease| async { Ok::<_, Error>(()) })
        .await
        .map(drop)
        .map_err(|error| error_chain(&error))
}

pub(super) async fn read_uncontended(context: &Context) -> Result<Vec<ResultLine>, String> {
    let lock = RwLock::new(context.lock_name("rw"), context.pool(POOL_SIZE).await?)
        .map_err(|error| error_chain(&error))?;
    let floor = Commit2::new(context, context.lock_name("rw-floor")).await?;
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    eprintln!(
        "rw_read_uncontended: read_lock(empty job) for {duration:?}, alternating every \
         {SLICE:?} with the floor pair"
    );
    for _ in 0..WARM_UP_OPERATIONS {
        read_empty(&lock).await?;
        floor.once().await?;
    }
    let (mut read_latencies, mut floor_latencies) = (Vec::new(), Vec::new());
    let (mut read_elapsed, mut floor_elapsed) = (Duration::ZERO, Duration::ZERO);
    while read_elapsed < duration {
        read_elapsed += measure_for(SLICE, &mut read_latencies, || read_empty(&lock)).await?;
        floor_elapsed += measure_for(SLICE, &mut floor_latencies, || floor.once()).await?;
    }
    let read_latencies = Latencies::from_durations(read_latencies);
    let floor_latencies = Latencies::from_durations(floor_latencies);
    let ratio = read_latencies.percentile(50.0) / floor_latencies.percentile(50.0);
    Ok(vec![
        context
            .line(Scenario::RwReadUncontended, 1)
            .throughput(&read_latencies, read_elapsed)
            .float("floor_commit2_p50_ms", floor_latencies.percentile(50.0))
            .float("p50_vs_floor_commit2", ratio),
    ])
}
