//! The targets, per dialect, checked against the figures of one run. Each is a count or
//! a ratio between figures of the same run, because absolute times on a shared machine
//! drift from one minute to the next. Printed on stderr; stdout stays JSON lines.

use dlock_core::Dialect;

use crate::report::ResultLine;

/// A target as judged on this run's lines.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) target: String,
    /// `None` when the run lacks a figure the target needs (scenario not run).
    pub(crate) met: Option<bool>,
    pub(crate) detail: String,
}

/// The bounds one dialect is held to (BENCHMARKS.md, "Targets").
struct Bounds {
    /// Statements one uncontended `lock(f)` may send.
    statements: f64,
    /// Uncontended p50 ÷ `floor_commit2` p50.
    uncontended: f64,
    /// Hand-over p50 ÷ uncontended p50, at 2, 4 and 8 processes.
    handover: [f64; 3],
    /// Least share of the sections among 8 processes.
    min_share: f64,
    /// From a release to another process holding the lock, p50, in ms.
    switch_ms: f64,
    /// Eight workers' speed-up on independent names ÷ the floor pair's; `None`: not
    /// judged (SQLite has one writer: neither scales).
    independent: Option<f64>,
    /// Statements per second of an idle waiter.
    idle_statements: f64,
}

fn bounds(dialect: Dialect) -> Bounds {
    match dialect {
        Dialect::Mysql => Bounds {
            statements: 2.0,
            uncontended: 1.3,
            handover: [3.0; 3],
            min_share: 0.04,
            switch_ms: 50.0,
            independent: Some(0.8),
            idle_statements: 2.0,
        },
        Dialect::Sqlite => Bounds {
            statements: 2.0,
            uncontended: 1.2,
            handover: [3.0; 3],
            min_share: 0.04,
            switch_ms: 50.0,
            independent: None,
            idle_statements: 2.0,
        },
        // PostgreSQL, and any dialect added later until it has bounds of its own.
        _ => Bounds {
            statements: 2.0,
            uncontended: 1.25,
            handover: [1.5, 1.5, 2.0],
            min_share: 0.08,
            switch_ms: 5.0,
            independent: Some(0.9),
            idle_statements: 1.0,
        },
    }
}

/// An uncontended read of a reader-writer lock (its acquire and release) ÷ the floor
/// pair, on every database: two statements, as a lock's, on rows of the companion table.
const RW_READ: f64 = 1.5;

fn figure(lines: &[ResultLine], scenario: &str, workers: usize, key: &str) -> Option<f64> {
    lines
        .iter()
        .find(|line| line.scenario() == scenario && line.workers() == workers)
        .and_then(|line| line.number(key))
        .filter(|value| value.is_finite())
}

pub(crate) fn judge(lines: &[ResultLine], dialect: Dialect) -> Vec<Verdict> {
    let bounds = bounds(dialect);
    let get = |scenario: &str, workers: usize, key: &str| figure(lines, scenario, workers, key);
    let verdict = |target: String, figures: Option<(bool, String)>| Verdict {
        target,
        met: figures.as_ref().map(|(met, _)| *met),
        detail: figures.map_or_else(|| "not measured in this run".to_owned(), |(_, d)| d),
    };
    let uncontended_p50 = get("uncontended", 1, "p50_ms");
    let mut verdicts = vec![
        verdict(
            format!(
                "statements per uncontended lock(f) <= {}",
                bounds.statements
            ),
            get("statements", 1, "statements_per_lock").map(|statements| {
                let notices = get("statements", 1, "notices_per_lock").unwrap_or(f64::NAN);
                (
                    statements <= bounds.statements,
                    format!("{statements:.2} ({notices:.2} of them release notices)"),
                )
            }),
        ),
        verdict(
            format!(
                "uncontended p50 <= {} x floor_commit2 p50 (floor measured alternately)",
                bounds.uncontended
            ),
            uncontended_p50
                .zip(get("uncontended", 1, "floor_commit2_p50_ms"))
                .map(|(lock, floor)| {
                    (
                        lock <= bounds.uncontended * floor,
                        format!("{lock:.3} ms / {floor:.3} ms = {:.2}", lock / floor),
                    )
                }),
        ),
    ];
    verdicts.push(verdict(
        format!(
            "rw read uncontended p50 <= {RW_READ} x floor_commit2 p50 (floor measured alternately)"
        ),
        get("rw_read_uncontended", 1, "p50_ms")
            .zip(get("rw_read_uncontended", 1, "floor_commit2_p50_ms"))
            .map(|(read, floor)| {
                (
                    read <= RW_READ * floor,
                    format!("{read:.3} ms / {floor:.3} ms = {:.2}", read / floor),
                )
            }),
    ));
    for (workers, bound) in [2, 4, 8].into_iter().zip(bounds.handover) {
        verdicts.push(verdict(
            format!("contended {workers} processes: hand-over p50 <= {bound} x uncontended p50"),
            get("contended", workers, "handover_p50_ms")
                .zip(uncontended_p50)
                .map(|(handover, lock)| {
                    (
                        handover <= bound * lock,
                        format!("{handover:.3} ms / {lock:.3} ms = {:.2}", handover / lock),
                    )
                }),
        ));
    }
    verdicts.extend([
        verdict(
            format!("contended 8 processes: min_share >= {}", bounds.min_share),
            get("contended", 8, "min_share").map(|share| {
                (
                    share >= bounds.min_share,
                    format!("{share:.3} (fair: 0.125)"),
                )
            }),
        ),
        verdict(
            format!(
                "contended: release -> another process holds it, p50 <= {} ms (2, 4, 8 processes)",
                bounds.switch_ms
            ),
            [2, 4, 8]
                .iter()
                .map(|workers| get("contended", *workers, "switch_p50_ms"))
                .collect::<Option<Vec<_>>>()
                .map(|switches| {
                    (
                        switches.iter().all(|ms| *ms <= bounds.switch_ms),
                        format!("{switches:.3?} ms"),
                    )
                }),
        ),
        verdict(
            "contended: no overlaps at 2, 4 and 8 processes".to_owned(),
            [2, 4, 8]
                .iter()
                .map(|workers| get("contended", *workers, "overlaps"))
                .sum::<Option<f64>>()
                .map(|overlaps| (overlaps == 0.0, format!("{overlaps} overlaps"))),
        ),
    ]);
    if let Some(bound) = bounds.independent {
        verdicts.push(verdict(
            format!("independent names, 8 workers: speed-up >= {bound} x the floor pair's"),
            get("independent", 8, "speedup")
                .zip(get("independent", 8, "floor_commit2_speedup"))
                .map(|(speedup, floor)| {
                    (
                        speedup >= bound * floor,
                        format!("{speedup:.2} x / {floor:.2} x = {:.2}", speedup / floor),
                    )
                }),
        ));
    }
    verdicts.extend([
        verdict(
            "skip: exactly 1 of 8 runs, every trial".to_owned(),
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
            format!(
                "idle waiters: <= {} statement/s per waiter",
                bounds.idle_statements
            ),
            get("idle_waiters", 4, "statements_per_s")
                .zip(get("idle_waiters", 4, "steady_statements_per_s"))
                .map(|(whole, steady)| {
                    (
                        whole <= bounds.idle_statements,
                        format!("{whole:.2}/s over the whole wait, {steady:.2}/s once backed off"),
                    )
                }),
        ),
        verdict(
            "idle waiters: no writes while waiting".to_owned(),
            get("idle_waiters", 4, "writes")
                .map(|writes| (writes == 0.0, format!("{writes} writes"))),
        ),
    ]);
    verdicts.extend(semaphore_verdicts(lines, &bounds));
    verdicts
}

/// The semaphore's: a permit costs what a lock costs, and a freed permit is handed over
/// as a lock is.
fn semaphore_verdicts(lines: &[ResultLine], bounds: &Bounds) -> Vec<Verdict> {
    const PERMIT_UNCONTENDED: f64 = 1.5;
    let get = |scenario: &str, workers: usize, key: &str| figure(lines, scenario, workers, key);
    let verdict = |target: String, figures: Option<(bool, String)>| Verdict {
        target,
        met: figures.as_ref().map(|(met, _)| *met),
        detail: figures.map_or_else(|| "not measured in this run".to_owned(), |(_, d)| d),
    };
    let permit_p50 = get("semaphore_uncontended", 1, "p50_ms");
    let handover_bound = bounds.handover[0];
    vec![
        verdict(
            format!(
                "permit uncontended acquire+release p50 <= {PERMIT_UNCONTENDED} x floor_commit2 p50 \
                 (floor measured alternately)"
            ),
            permit_p50
                .zip(get("semaphore_uncontended", 1, "floor_commit2_p50_ms"))
                .map(|(permit, floor)| {
                    (
                        permit <= PERMIT_UNCONTENDED * floor,
                        format!("{permit:.3} ms / {floor:.3} ms = {:.2}", permit / floor),
                    )
                }),
        ),
        verdict(
            format!(
                "permit hand-over (4 processes, 2 permits) p50 <= {handover_bound} x permit \
                 uncontended p50"
            ),
            get("semaphore_handover", 4, "handover_p50_ms")
                .zip(permit_p50)
                .map(|(handover, permit)| {
                    (
                        handover <= handover_bound * permit,
                        format!(
                            "{handover:.3} ms / {permit:.3} ms = {:.2}",
                            handover / permit
                        ),
                    )
                }),
        ),
        verdict(
            "permit hand-over: never more than 2 at once, no overlap on a permit".to_owned(),
            get("semaphore_handover", 4, "most_at_once")
                .zip(get("semaphore_handover", 4, "overlaps"))
                .map(|(most, overlaps)| {
                    (
                        most <= 2.0 && overlaps == 0.0,
                        format!("{most} at once, {overlaps} overlaps"),
                    )
                }),
        ),
    ]
}
