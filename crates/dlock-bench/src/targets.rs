//! The targets (stated for PostgreSQL), checked against the figures of one run. Each is
//! a ratio between figures of the same run, because absolute times on a shared machine
//! drift from one minute to the next. Printed on stderr; stdout stays JSON lines.

use crate::report::ResultLine;

/// A target as judged on this run's lines.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) target: &'static str,
    /// `None` when the run lacks a figure the target needs (scenario not run).
    pub(crate) met: Option<bool>,
    pub(crate) detail: String,
}

fn figure(lines: &[ResultLine], scenario: &str, workers: usize, key: &str) -> Option<f64> {
    lines
        .iter()
        .find(|line| line.scenario() == scenario && line.workers() == workers)
        .and_then(|line| line.number(key))
        .filter(|value| value.is_finite())
}

pub(crate) fn judge(lines: &[ResultLine]) -> Vec<Verdict> {
    let get = |scenario: &str, workers: usize, key: &str| figure(lines, scenario, workers, key);
    let verdict = |target: &'static str, figures: Option<(bool, String)>| Verdict {
        target,
        met: figures.as_ref().map(|(met, _)| *met),
        detail: figures.map_or_else(|| "not measured in this run".to_owned(), |(_, d)| d),
    };
    let uncontended_p50 = get("uncontended", 1, "p50_ms");
    vec![
        verdict(
            "uncontended p50 <= 1.5 x floor_commit2 p50 (floor measured alternately with it)",
            uncontended_p50
                .zip(get("uncontended", 1, "floor_commit2_p50_ms"))
                .map(|(lock, floor)| {
                    (
                        lock <= 1.5 * floor,
                        format!("{lock:.3} ms / {floor:.3} ms = {:.2}", lock / floor),
                    )
                }),
        ),
        verdict(
            "contended 8 processes: hand-over p50 <= 2 x uncontended p50",
            get("contended", 8, "handover_p50_ms")
                .zip(uncontended_p50)
                .map(|(handover, lock)| {
                    let solo = get("contended", 8, "handover_p50_vs_solo").unwrap_or(f64::NAN);
                    (
                        handover <= 2.0 * lock,
                        format!(
                            "{handover:.3} ms / {lock:.3} ms = {:.2} ({solo:.2} x the gap of \
                             one process alone, measured just before)",
                            handover / lock
                        ),
                    )
                }),
        ),
        verdict(
            "contended 8 processes: min_share >= 1/24",
            get("contended", 8, "min_share").map(|share| {
                (
                    share >= 1.0 / 24.0,
                    format!("{share:.3} (1/24 = {:.3})", 1.0 / 24.0),
                )
            }),
        ),
        verdict(
            "contended: no overlaps at 2, 4 and 8 processes",
            [2, 4, 8]
                .iter()
                .map(|workers| get("contended", *workers, "overlaps"))
                .sum::<Option<f64>>()
                .map(|overlaps| (overlaps == 0.0, format!("{overlaps} overlaps"))),
        ),
        verdict(
            "independent names, 8 workers: >= 3 x one worker's ops/s",
            get("independent", 8, "speedup").map(|speedup| {
                let floor = get("independent", 8, "floor_commit2_speedup").unwrap_or(f64::NAN);
                (
                    speedup >= 3.0,
                    format!("{speedup:.2} x (the floor pair reaches {floor:.2} x)"),
                )
            }),
        ),
        verdict(
            "skip: exactly 1 of 8 runs, every trial",
            get("skip", 8, "trials_exactly_one")
                .zip(get("skip", 8, "trials"))
                .map(|(exact, trials)| {
                    (
                        exact == trials,
                        format!("{exact} of {trials} trials had exactly one run"),
                    )
                }),
        ),
        verdict(
            "idle waiters: <= 1 statement/s per waiter",
            get("idle_waiters", 4, "statements_per_s")
                .zip(get("idle_waiters", 4, "steady_statements_per_s"))
                .map(|(whole, steady)| {
                    (
                        whole <= 1.0,
                        format!("{whole:.2}/s over the whole wait, {steady:.2}/s once backed off"),
                    )
                }),
        ),
        verdict(
            "idle waiters: no writes while waiting",
            get("idle_waiters", 4, "writes")
                .map(|writes| (writes == 0.0, format!("{writes} writes"))),
        ),
    ]
}
