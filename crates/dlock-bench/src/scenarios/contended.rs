//! W worker processes on one name, each taking the lock for a busy-waited 1 ms section
//! again and again. Their sections, merged in entry order, give the throughput, the
//! hand-over gaps, each worker's share, and any overlap (which must never happen).

use std::time::Duration;

use dlock_testkit::{ChildProcess, wall_ns};

use super::{Context, Scenario, floor_sql};
use crate::child::{Role, start_workers};
use crate::report::{Latencies, ResultLine};

const WORKER_COUNTS: [usize; 3] = [2, 4, 8];

/// One critical section as a worker reported it.
#[derive(Debug, Clone, Copy)]
struct Section {
    worker: usize,
    token: i64,
    entry_ns: u64,
    exit_ns: u64,
}

pub(super) async fn run(context: &Context) -> Result<Vec<ResultLine>, String> {
    let duration = context.duration(Duration::from_secs(5), Duration::from_secs(2));
    let mut lines = Vec::new();
    let solo_duration = context.duration(Duration::from_secs(1), Duration::from_millis(500));
    for workers in WORKER_COUNTS {
        eprintln!(
            "contended: {workers} processes on one name, 1 ms sections, for {duration:?} \
             (after {solo_duration:?} of the first alone)"
        );
        let name = context.lock_name(&format!("contended/{workers}"));
        let floor = floor_handover(context, &name, workers).await?;
        let mut processes = start_workers(context, Role::Contend, &name, workers).await?;
        // The first worker alone, just before: its gaps are what a hand-over costs with
        // nobody to hand over to, measured under the same background load.
        let solo_start_ns = wall_ns();
        let solo_stop_ns = solo_start_ns + nanos(solo_duration);
        processes[0].send(&format!("RUN {solo_stop_ns}")).await?;
        let solo = collect(&mut processes[0], 0, solo_duration).await?;
        let solo_gaps = Latencies::from_ms(in_order(solo).windows(2).map(gap_ms));

        let (sections, start_ns, stop_ns) = run_all(processes, duration).await?;
        let solo_p50 = solo_gaps.percentile(50.0);
        let line = summarise(context, workers, &sections, start_ns, stop_ns);
        let handover_p50 = line.number("handover_p50_ms").unwrap_or(f64::NAN);
        let mut line = line
            .float("solo_handover_p50_ms", solo_p50)
            .float("handover_p50_vs_solo", handover_p50 / solo_p50);
        if let Some(floor) = floor {
            line = line
                .float("floor_handover_p50_ms", floor.p50_ms)
                .float("floor_handover_p99_ms", floor.p99_ms)
                .float("floor_min_share", floor.min_share)
                .float("handover_p50_vs_floor", handover_p50 / floor.p50_ms);
        }
        lines.push(line);
    }
    Ok(lines)
}

/// What the database's own session lock does in the contended loop.
#[derive(Debug)]
struct FloorHandover {
    p50_ms: f64,
    p99_ms: f64,
    min_share: f64,
}

/// `workers` processes in the contended loop on the database's session lock
/// (`pg_advisory_lock`, `GET_LOCK`) instead of the lock, for a shorter while: the gap
/// from one section to the next when the server itself queues the waiters and wakes
/// the next, with nothing durable written — how fast this machine hands over between
/// that many processes at all. `None` where the database has no such lock (SQLite).
async fn floor_handover(
    context: &Context,
    name: &str,
    workers: usize,
) -> Result<Option<FloorHandover>, String> {
    if floor_sql(context.dialect).advisory.is_none() {
        return Ok(None);
    }
    let duration = context.duration(Duration::from_secs(2), Duration::from_secs(1));
    let processes = start_workers(context, Role::FloorContend, name, workers).await?;
    let (sections, start_ns, stop_ns) = run_all(processes, duration).await?;
    let sections = in_order(sections);
    let window = within(&sections, start_ns, stop_ns);
    let handovers = Latencies::from_ms(window.windows(2).map(gap_ms));
    Ok(Some(FloorHandover {
        p50_ms: handovers.percentile(50.0),
        p99_ms: handovers.percentile(99.0),
        min_share: shares(&window, workers).0,
    }))
}

/// Runs every worker in `processes` from now for `duration`, then ends them; returns
/// their sections and the window's start and stop, wall clock.
async fn run_all(
    mut processes: Vec<ChildProcess>,
    duration: Duration,
) -> Result<(Vec<Section>, u64, u64), String> {
    let start_ns = wall_ns();
    let stop_ns = start_ns + nanos(duration);
    for process in &mut processes {
        process.send(&format!("RUN {stop_ns}")).await?;
    }
    let mut sections = Vec::new();
    for (index, process) in processes.iter_mut().enumerate() {
        sections.extend(collect(process, index, duration).await?);
    }
    for process in processes {
        process.finish(Duration::from_secs(10)).await?;
    }
    Ok((sections, start_ns, stop_ns))
}

/// Sections sorted by entry time.
fn in_order(mut sections: Vec<Section>) -> Vec<Section> {
    sections.sort_by_key(|section| section.entry_ns);
    sections
}

/// The gap between two consecutive sections, in ms: the first one's exit to the second
/// one's entry (0 if they overlapped).
fn gap_ms<S: std::borrow::Borrow<Section>>(pair: &[S]) -> f64 {
    let (first, second) = (pair[0].borrow(), pair[1].borrow());
    second.entry_ns.saturating_sub(first.exit_ns) as f64 / 1e6
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads the sections of worker `index` until it says `DONE`.
async fn collect(
    process: &mut ChildProcess,
    index: usize,
    duration: Duration,
) -> Result<Vec<Section>, String> {
    // A waiter still backing off at the stop time gets its last turn within a poll
    // interval or so; a minute is far beyond any healthy finish.
    let limit = duration + Duration::from_secs(60);
    let mut sections = Vec::new();
    loop {
        let line = process.next_line(limit).await?;
        if line == "DONE" {
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            ["SECTION", token, entry, exit] => token
                .parse()
                .ok()
                .zip(entry.parse().ok())
                .zip(exit.parse().ok()),
            _ => None,
        };
        let Some(((token, entry_ns), exit_ns)) = parsed else {
            return Err(format!("{}: unexpected line {line:?}", process.name()));
        };
        sections.push(Section {
            worker: index,
            token,
            entry_ns,
            exit_ns,
        });
    }
    Ok(sections)
}

fn summarise(
    context: &Context,
    workers: usize,
    sections: &[Section],
    start_ns: u64,
    stop_ns: u64,
) -> ResultLine {
    let sections = in_order(sections.to_vec());

    // Exclusion over every section, including those after the stop time: a section that
    // starts before an earlier one has ended is an overlap. Fencing tokens must grow in
    // the same order.
    let mut overlaps = 0;
    let mut token_inversions = 0;
    let mut latest_exit = 0;
    for (index, section) in sections.iter().enumerate() {
        if section.entry_ns < latest_exit {
            overlaps += 1;
        }
        latest_exit = latest_exit.max(section.exit_ns);
        if index > 0 && section.token <= sections[index - 1].token {
            token_inversions += 1;
        }
    }

    let window = within(&sections, start_ns, stop_ns);
    let handovers = Latencies::from_ms(window.windows(2).map(gap_ms));
    // Gaps where the lock changed hands between processes: the releaser taking its own
    // lock straight back is a hand-over too, but a cheap one.
    let switches = Latencies::from_ms(
        window
            .windows(2)
            .filter(|pair| pair[0].worker != pair[1].worker)
            .map(gap_ms),
    );
    let (min_share, max_share, per_worker) = shares(&window, workers);
    let seconds = (stop_ns - start_ns) as f64 / 1e9;

    context
        .line(Scenario::Contended, workers)
        .float("ops_per_s", window.len() as f64 / seconds)
        .float("handover_p50_ms", handovers.percentile(50.0))
        .float("handover_p99_ms", handovers.percentile(99.0))
        .int("switches", switches.len() as u64)
        .float("switch_p50_ms", switches.percentile(50.0))
        .float("switch_p99_ms", switches.percentile(99.0))
        .float("min_share", min_share)
        .float("max_share", max_share)
        .ints("sections_per_worker", &per_worker)
        .int("overlaps", overlaps)
        .int("token_inversions", token_inversions)
        .int("sections", window.len() as u64)
        .text("section", "1 ms busy-wait")
}

/// Of `sections` (in entry order), those that entered within the measured window; the
/// stragglers after it are only checked for overlaps.
fn within(sections: &[Section], start_ns: u64, stop_ns: u64) -> Vec<&Section> {
    sections
        .iter()
        .filter(|section| (start_ns..stop_ns).contains(&section.entry_ns))
        .collect()
}

/// The least and the largest share of `window`'s sections among `workers`, and each
/// worker's count.
fn shares(window: &[&Section], workers: usize) -> (f64, f64, Vec<u64>) {
    let mut per_worker = vec![0_u64; workers];
    for section in window {
        per_worker[section.worker] += 1;
    }
    let total = window.len().max(1) as f64;
    let share = |count: &u64| *count as f64 / total;
    let min_share = per_worker.iter().map(share).fold(f64::INFINITY, f64::min);
    let max_share = per_worker.iter().map(share).fold(0.0, f64::max);
    (min_share, max_share, per_worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlock_core::Dialect;
    use dlock_testkit::Backend;

    fn context() -> Context {
        Context {
            adapter: Backend::TokioPostgres,
            dialect: Dialect::Postgres,
            url: String::new(),
            route: dlock_testkit::Route::Direct,
            quick: true,
            run_id: "test".into(),
        }
    }

    fn section(worker: usize, token: i64, entry_ms: u64, exit_ms: u64) -> Section {
        Section {
            worker,
            token,
            entry_ns: entry_ms * 1_000_000,
            exit_ns: exit_ms * 1_000_000,
        }
    }

    #[test]
    fn gaps_shares_and_overlaps() {
        let sections = [
            section(0, 1, 10, 11),
            section(1, 2, 13, 14),
            section(0, 3, 14, 15),
            // Enters before worker 0's section has ended, with a smaller token.
            section(2, 2, 15 - 1, 16),
        ];
        let line = summarise(&context(), 4, &sections, 0, 1_000_000_000);
        assert_eq!(line.number("overlaps"), Some(1.0));
        assert_eq!(line.number("token_inversions"), Some(1.0));
        assert_eq!(line.number("sections"), Some(4.0));
        assert_eq!(line.number("min_share"), Some(0.0), "worker 3 never got in");
        assert_eq!(line.number("max_share"), Some(0.5));
        // Gaps: 2 ms (0→1), 0 ms (1→0), 0 ms (0→2, clamped: it overlapped).
        assert_eq!(line.number("handover_p99_ms"), Some(2.0));
        assert_eq!(line.number("switches"), Some(3.0));
    }
}
