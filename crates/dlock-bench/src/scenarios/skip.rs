//! N worker processes call `lock(200 ms job)` with `skip_if_obtained` at the same moment,
//! trial after trial: exactly one must run each time.

use std::time::Duration;

use super::{Context, Scenario};
use crate::child::{Role, start_workers};
use crate::report::ResultLine;

const CALLERS: usize = 8;

pub(super) async fn run(context: &Context) -> Result<Vec<ResultLine>, String> {
    let trials = if context.quick { 3 } else { 10 };
    eprintln!("skip: {CALLERS} processes call lock(200 ms job) at once, {trials} trials");
    // The same processes serve every trial: each trial only costs the job's 200 ms.
    let mut processes =
        start_workers(context, Role::Skip, &context.lock_name("skip"), CALLERS).await?;
    let mut ran_per_trial = Vec::with_capacity(trials);
    let mut worst_spread_ms: f64 = 0.0;
    for _ in 0..trials {
        for process in &mut processes {
            process.send("GO").await?;
        }
        let mut ran: u64 = 0;
        let mut starts = Vec::with_capacity(CALLERS);
        for process in &mut processes {
            let line = process.next_line(Duration::from_secs(60)).await?;
            let (verdict, start) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match verdict {
                "RAN" => ran += 1,
                "SKIPPED" => {}
                _ => {
                    return Err(format!("{}: unexpected line {line:?}", process.name()));
                }
            }
            starts.push(
                start
                    .parse::<u64>()
                    .map_err(|_| format!("bad start time in {line:?}"))?,
            );
        }
        // How far apart the callers really started: a caller starting after the job
        // had finished would rightly run it again.
        let spread_ns = starts.iter().max().unwrap_or(&0) - starts.iter().min().unwrap_or(&0);
        worst_spread_ms = worst_spread_ms.max(spread_ns as f64 / 1e6);
        ran_per_trial.push(ran);
    }
    for process in processes {
        process.finish(Duration::from_secs(10)).await?;
    }
    // The trial farthest from exactly one.
    let worst = ran_per_trial
        .iter()
        .copied()
        .max_by_key(|ran| ran.abs_diff(1))
        .unwrap_or(0);
    let exactly_one = ran_per_trial.iter().filter(|ran| **ran == 1).count();
    Ok(vec![
        context
            .line(Scenario::Skip, CALLERS)
            .int("ran", worst)
            .int("skipped", CALLERS as u64 - worst)
            .int("trials", trials as u64)
            .int("trials_exactly_one", exactly_one as u64)
            .ints("ran_per_trial", &ran_per_trial)
            .float("start_spread_max_ms", worst_spread_ms)
            .int("job_ms", 200),
    ])
}
