//! Semaphores. Uncontended: `lock(empty job)` on a semaphore of 3 permits back to back,
//! beside the floor pair run alternately with it (as the uncontended lock is measured).
//! Hand-over: 4 worker processes on a semaphore of 2 permits, 1 ms sections; per permit,
//! the gap from one section's exit to the next one's entry.

use std::collections::BTreeMap;
use std::time::Duration;

use dlock_core::{Error, Semaphore};
use dlock_testkit::{ChildProcess, error_chain, wall_ns};

use super::floors::{Commit2, POOL_SIZE};
use super::{Context, Scenario, WARM_UP_OPERATIONS, measure_for};
use crate::child::{HANDOVER_PERMITS, Role, start_workers};
use crate::report::{Latencies, ResultLine};

/// The permits of the uncontended semaphore: more than one, so that the first attempt
/// picks a permit at random, as in use.
const PERMITS: u32 = 3;
/// Processes contending for the [`HANDOVER_PERMITS`] permits.
const HANDOVER_WORKERS: usize = 4;
/// Slices of this length alternate between the semaphore and the floor pair.
const SLICE: Duration = Duration::from_millis(250);

async fn lock_empty(semaphore: &Semaphore) -> Result<(), String> {
    semaphore
        .lock(|_lease| async { Ok::<_, Error>(()) })
        .await
        .map(drop)
        .map_err(|error| error_chain(&error))
}

pub(super) async fn uncontended(context: &Context) -> Result<Vec<ResultLine>, String> {
    let name = context.lock_name("semaphore");
    let semaphore = Semaphore::new(name, PERMITS, context.pool(POOL_SIZE).await?)
        .map_err(|error| error_chain(&error))?;
    let floor = Commit2::new(context, context.lock_name("semaphore-floor")).await?;
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    eprintln!(
        "semaphore_uncontended: lock(empty job) on a semaphore of {PERMITS} permits for \
         {duration:?}, alternating every {SLICE:?} with the floor pair"
    );
    for _ in 0..WARM_UP_OPERATIONS {
        lock_empty(&semaphore).await?;
        floor.once().await?;
    }
    let (mut lock_latencies, mut floor_latencies) = (Vec::new(), Vec::new());
    let (mut lock_elapsed, mut floor_elapsed) = (Duration::ZERO, Duration::ZERO);
    while lock_elapsed < duration {
        lock_elapsed += measure_for(SLICE, &mut lock_latencies, || lock_empty(&semaphore)).await?;
        floor_elapsed += measure_for(SLICE, &mut floor_latencies, || floor.once()).await?;
    }
    let lock_latencies = Latencies::from_durations(lock_latencies);
    let floor_latencies = Latencies::from_durations(floor_latencies);
    let ratio = lock_latencies.percentile(50.0) / floor_latencies.percentile(50.0);
    Ok(vec![
        context
            .line(Scenario::SemaphoreUncontended, 1)
            .throughput(&lock_latencies, lock_elapsed)
            .float("permits", f64::from(PERMITS))
            .float("floor_commit2_p50_ms", floor_latencies.percentile(50.0))
            .float("p50_vs_floor_commit2", ratio),
    ])
}

/// One section as a worker reported it.
#[derive(Debug, Clone, Copy)]
struct Section {
    permit: u32,
    token: i64,
    entry_ns: u64,
    exit_ns: u64,
}

pub(super) async fn handover(context: &Context) -> Result<Vec<ResultLine>, String> {
    let duration = context.duration(Duration::from_secs(5), Duration::from_secs(2));
    eprintln!(
        "semaphore_handover: {HANDOVER_WORKERS} processes on {HANDOVER_PERMITS} permits, 1 ms \
         sections, for {duration:?}"
    );
    let name = context.lock_name("semaphore-handover");
    let mut processes =
        start_workers(context, Role::PermitContend, &name, HANDOVER_WORKERS).await?;
    let start_ns = wall_ns();
    let stop_ns = start_ns + u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    for process in &mut processes {
        process.send(&format!("RUN {stop_ns}")).await?;
    }
    let mut sections = Vec::new();
    for process in &mut processes {
        sections.extend(collect(process, duration).await?);
    }
    for process in processes {
        process.finish(Duration::from_secs(10)).await?;
    }
    Ok(vec![summarise(context, &sections, start_ns, stop_ns)])
}

/// Reads a worker's sections until it says `DONE`.
async fn collect(process: &mut ChildProcess, duration: Duration) -> Result<Vec<Section>, String> {
    let limit = duration + Duration::from_secs(60);
    let mut sections = Vec::new();
    loop {
        let line = process.next_line(limit).await?;
        if line == "DONE" {
            return Ok(sections);
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            ["SECTION", permit, token, entry, exit] => (|| {
                Some(Section {
                    permit: permit.parse().ok()?,
                    token: token.parse().ok()?,
                    entry_ns: entry.parse().ok()?,
                    exit_ns: exit.parse().ok()?,
                })
            })(),
            _ => None,
        };
        sections
            .push(parsed.ok_or_else(|| format!("{}: unexpected line {line:?}", process.name()))?);
    }
}

/// Per permit: the gaps between consecutive sections entered in the window (the
/// hand-over), overlaps and token inversions (which must never happen); across permits,
/// the most sections at once (at most the permits).
fn summarise(context: &Context, sections: &[Section], start_ns: u64, stop_ns: u64) -> ResultLine {
    let mut by_permit: BTreeMap<u32, Vec<Section>> = BTreeMap::new();
    for section in sections {
        by_permit.entry(section.permit).or_default().push(*section);
    }
    let (mut overlaps, mut token_inversions, mut gaps) = (0_u64, 0_u64, Vec::new());
    for sections in by_permit.values_mut() {
        sections.sort_by_key(|section| section.entry_ns);
        for pair in sections.windows(2) {
            if pair[1].entry_ns < pair[0].exit_ns {
                overlaps += 1;
            }
            if pair[1].token <= pair[0].token {
                token_inversions += 1;
            }
            if (start_ns..stop_ns).contains(&pair[1].entry_ns) {
                gaps.push(pair[1].entry_ns.saturating_sub(pair[0].exit_ns) as f64 / 1e6);
            }
        }
    }
    let mut events: Vec<(u64, i32)> = sections
        .iter()
        .flat_map(|section| [(section.entry_ns, 1), (section.exit_ns, -1)])
        .collect();
    events.sort_unstable();
    let (mut running, mut most) = (0_i32, 0_i32);
    for (_, change) in events {
        running += change;
        most = most.max(running);
    }
    let in_window = sections
        .iter()
        .filter(|section| (start_ns..stop_ns).contains(&section.entry_ns))
        .count();
    let handovers = Latencies::from_ms(gaps);
    let seconds = (stop_ns - start_ns) as f64 / 1e9;
    context
        .line(Scenario::SemaphoreHandover, HANDOVER_WORKERS)
        .float("permits", f64::from(HANDOVER_PERMITS))
        .float("ops_per_s", in_window as f64 / seconds)
        .float("handover_p50_ms", handovers.percentile(50.0))
        .float("handover_p99_ms", handovers.percentile(99.0))
        .int("most_at_once", u64::try_from(most).unwrap_or(0))
        .int("overlaps", overlaps)
        .int("token_inversions", token_inversions)
}
