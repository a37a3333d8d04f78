//! Elections across processes: how soon a candidate waiting in another process leads
//! after the leader resigns, how soon after the leader is killed (about a lease), and how
//! far behind an observer in a third process sees each new leader.

use std::collections::HashMap;
use std::time::Duration;

use dlock_testkit::{ChildProcess, wall_ns};
use tokio::sync::mpsc;

use super::{Context, Scenario};
use crate::child::{Role, start_workers, start_workers_with_ttl};
use crate::report::{Latencies, ResultLine};

const CANDIDATES: usize = 3;
/// The candidates' lease: how long a killed leader goes unnoticed.
const TTL: Duration = Duration::from_secs(2);
/// The kills: every candidate but the last one standing.
const KILLS: usize = CANDIDATES - 1;
/// How long to wait for a new leader, or for the observer to see it.
const LIMIT: Duration = Duration::from_secs(10);

/// A line one of the processes printed: who (its index; the observer's is
/// [`CANDIDATES`]), the event, the term or nothing, and the wall-clock ns it gave.
struct Line {
    from: usize,
    event: String,
    term: Option<i64>,
    at: u64,
}

pub(super) async fn run(context: &Context) -> Result<Vec<ResultLine>, String> {
    let resignations = if context.quick { 5 } else { 20 };
    eprintln!(
        "election: {CANDIDATES} candidate processes and an observer (default poll interval); \
         {resignations} resignations, then {KILLS} leaders killed (TTL {TTL:?})"
    );
    let name = context.lock_name("election");
    let mut processes =
        start_workers_with_ttl(context, Role::Candidate, &name, CANDIDATES, Some(TTL)).await?;
    processes.extend(start_workers(context, Role::Observer, &name, 1).await?);
    let mut lines = follow(&mut processes)?;
    let mut leading = HashMap::new();
    let mut saw = HashMap::new();

    let (mut leader, _, _) = next_leader(&mut lines, &mut leading, &mut saw, None).await?;
    // The observer may start after the first leader: its lag is not measured.
    let first_term = leading.keys().copied().max();
    let (mut handovers, mut crashes) = (Vec::new(), Vec::new());
    for trial in 0..resignations + KILLS {
        let (from_ns, killing) = if trial < resignations {
            processes[leader].send("RESIGN").await?;
            (
                resigning(&mut lines, leader, &mut leading, &mut saw).await?,
                false,
            )
        } else {
            let killed_at = wall_ns();
            processes[leader].kill().await?;
            (killed_at, true)
        };
        let (next, term, at) =
            next_leader(&mut lines, &mut leading, &mut saw, Some(leader)).await?;
        let took_ms = at.saturating_sub(from_ns) as f64 / 1e6;
        if killing {
            crashes.push(took_ms);
        } else {
            handovers.push(took_ms);
            // Stood aside until another led; now a candidate again.
            processes[leader].send("CAMPAIGN").await?;
        }
        leader = next;
        // Until the observer has seen it: each term is then observed, none coalesced.
        seen_by_observer(&mut lines, &mut leading, &mut saw, term).await?;
    }
    // Stops the candidates and the observer.
    drop(processes);
    let lags = Latencies::from_ms(saw.iter().filter_map(|(term, seen_at)| {
        if Some(*term) <= first_term {
            return None;
        }
        let (_, led_at) = leading.get(term)?;
        Some(seen_at.saturating_sub(*led_at) as f64 / 1e6)
    }));
    let handovers = Latencies::from_ms(handovers);
    let crash_max = crashes.iter().copied().fold(0.0, f64::max);
    Ok(vec![
        context
            .line(Scenario::Election, CANDIDATES)
            .int("resignations", resignations as u64)
            .float("resign_to_leader_p50_ms", handovers.percentile(50.0))
            .float("resign_to_leader_max_ms", handovers.percentile(100.0))
            .int("kills", KILLS as u64)
            .float("kill_to_leader_max_ms", crash_max)
            .int("ttl_ms", u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX))
            .int("terms_observed", lags.len() as u64)
            .float("observer_lag_p50_ms", lags.percentile(50.0))
            .float("observer_lag_max_ms", lags.percentile(100.0)),
    ])
}

/// Every process's lines, on one channel.
fn follow(processes: &mut [ChildProcess]) -> Result<mpsc::UnboundedReceiver<Line>, String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for (from, process) in processes.iter_mut().enumerate() {
        let mut lines = process.take_lines().ok_or("a worker's output is taken")?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let words: Vec<&str> = line.split_whitespace().collect();
                let (event, term, at) = match words.as_slice() {
                    [event, at] => (*event, None, at.parse().unwrap_or(0)),
                    [event, term, at] => (*event, term.parse().ok(), at.parse().unwrap_or(0)),
                    _ => (line.as_str(), None, 0),
                };
                let line = Line {
                    from,
                    event: event.to_owned(),
                    term,
                    at,
                };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

/// The next line, recording leaders (`LEADING`) and what the observer saw (`SAW`).
async fn next_line(
    lines: &mut mpsc::UnboundedReceiver<Line>,
    leading: &mut HashMap<i64, (usize, u64)>,
    saw: &mut HashMap<i64, u64>,
) -> Result<Line, String> {
    let line = tokio::time::timeout(LIMIT, lines.recv())
        .await
        .map_err(|_| format!("no process said anything for {LIMIT:?}"))?
        .ok_or("every process has exited")?;
    match (line.event.as_str(), line.term) {
        ("LEADING", Some(term)) => {
            leading.insert(term, (line.from, line.at));
        }
        ("SAW", Some(term)) => {
            saw.entry(term).or_insert(line.at);
        }
        _ => {}
    }
    Ok(line)
}

/// Waits for a candidate other than `not` to lead; its index, its term and when it led.
async fn next_leader(
    lines: &mut mpsc::UnboundedReceiver<Line>,
    leading: &mut HashMap<i64, (usize, u64)>,
    saw: &mut HashMap<i64, u64>,
    not: Option<usize>,
) -> Result<(usize, i64, u64), String> {
    loop {
        let line = next_line(lines, leading, saw).await?;
        if let ("LEADING", Some(term)) = (line.event.as_str(), line.term)
            && Some(line.from) != not
        {
            return Ok((line.from, term, line.at));
        }
    }
}

/// Waits for `leader` to say it resigns; when it began.
async fn resigning(
    lines: &mut mpsc::UnboundedReceiver<Line>,
    leader: usize,
    leading: &mut HashMap<i64, (usize, u64)>,
    saw: &mut HashMap<i64, u64>,
) -> Result<u64, String> {
    loop {
        let line = next_line(lines, leading, saw).await?;
        if line.event == "RESIGNING" && line.from == leader {
            return Ok(line.at);
        }
    }
}

/// Waits until the observer has seen `term`.
async fn seen_by_observer(
    lines: &mut mpsc::UnboundedReceiver<Line>,
    leading: &mut HashMap<i64, (usize, u64)>,
    saw: &mut HashMap<i64, u64>,
    term: i64,
) -> Result<(), String> {
    while !saw.contains_key(&term) {
        next_line(lines, leading, saw).await?;
    }
    Ok(())
}
