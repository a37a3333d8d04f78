//! What the algorithm tells the outside: `tracing` spans and events, and, with the
//! `metrics` feature, counters and histograms. The algorithm calls one function per thing
//! that happened; the levels, names and fields live here (and in `TELEMETRY.md`, the
//! tables of the crate docs, which must match).
//!
//! Cost when nobody listens: a `tracing` macro whose callsite no subscriber wants is a
//! check of a cached flag and evaluates none of its fields; without the `metrics`
//! feature the metric calls are not compiled at all. So durations are passed as the
//! instant they start from, and the clock is read only by a field or metric that is on.
//!
//! Errors are recorded as `&dyn Error`, so that subscribers print their sources too: the
//! driver's message (connection refused, …) is the source of ours.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{Level, Span, debug, info, info_span};

use crate::inner::LockInner;
use crate::{FencingToken, Holder, LossReason};

/// The `target` of every span and event, so that `RUST_LOG=dlock=debug` selects them.
const TARGET: &str = "dlock";

/// While an `acquire` waits, it reports the holder at its first probe and then at most
/// this often, so that a short poll interval does not flood the log.
const WAITING_REPORT_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) use meter::LockTelemetry;

/// An event of a held lock. It happens in the keep-alive task, outside the acquire span,
/// so it names the lock, the holder and the fencing token itself.
macro_rules! held_lock_event {
    ($level:expr, $name:literal, $lock:expr, $token:expr, $($fields_and_message:tt)+) => {
        tracing::event!(
            name: $name,
            target: TARGET,
            $level,
            lock = %$lock.name,
            holder = %$lock.options.holder,
            fencing_token = $token.get(),
            $($fields_and_message)+
        )
    };
}

/// The span of one `try_acquire` (`wait = false`) or `acquire` (`wait = true`), the
/// acquisitions of `lock` included.
pub(crate) fn acquire_span(lock: &LockInner, wait: bool) -> Span {
    info_span!(
        target: TARGET,
        "dlock.acquire",
        lock = %lock.name,
        table = %lock.options.table,
        holder = %lock.options.holder,
        wait,
    )
}

/// An acquire statement is about to be sent.
pub(crate) fn attempting(lock: &LockInner) {
    meter::count(&lock.telemetry, "dlock_attempts_total");
}

/// The lock was acquired; `try_acquire` or `acquire` was called at `started`.
pub(crate) fn acquired(lock: &LockInner, token: FencingToken, started: Instant) {
    debug!(
        name: "dlock.acquired",
        target: TARGET,
        fencing_token = token.get(),
        wait_ms = millis(started.elapsed()),
        "acquired the lock"
    );
    meter::count(&lock.telemetry, "dlock_acquired_total");
    meter::record_since(&lock.telemetry, "dlock_wait_seconds", started);
}

/// `try_acquire` (or `lock` with `skip_if_obtained`) found the lock held.
pub(crate) fn skipped(lock: &LockInner, holder: &Holder) {
    debug!(
        name: "dlock.skipped",
        target: TARGET,
        current_holder = %holder.holder,
        lease_ends_in_ms = millis(holder.expires_in),
        "the lock is held by another holder; not waiting"
    );
    meter::count(&lock.telemetry, "dlock_skipped_total");
}

/// Rate-limits the report of a waiting `acquire`: one at the first probe that finds a
/// holder, then at most one every [`WAITING_REPORT_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct WaitingReports {
    next_at: Option<Instant>,
}

impl WaitingReports {
    /// A probe of an `acquire` that started at `started` found `holder`.
    pub(crate) fn holder_seen(&mut self, holder: &Holder, started: Instant) {
        let now = Instant::now();
        if self.next_at.is_some_and(|next_at| now < next_at) {
            return;
        }
        self.next_at = Some(now + WAITING_REPORT_INTERVAL);
        info!(
            name: "dlock.waiting",
            target: TARGET,
            current_holder = %holder.holder,
            lease_ends_in_ms = millis(holder.expires_in),
            waited_ms = millis(now - started),
            "waiting for the lock"
        );
    }
}

/// `acquire` gave up after `waited`; `holder` is the last holder a probe saw.
pub(crate) fn timed_out(lock: &LockInner, waited: Duration, holder: Option<&Holder>) {
    info!(
        name: "dlock.timed_out",
        target: TARGET,
        waited_ms = millis(waited),
        current_holder = holder.map_or("unknown", |holder| holder.holder.as_str()),
        "timed out waiting for the lock"
    );
    meter::count(&lock.telemetry, "dlock_timeouts_total");
}

/// An acquisition nobody claimed (its caller was cancelled, or the answer was lost on
/// the way back) was released.
pub(crate) fn unclaimed_released() {
    debug!(
        name: "dlock.unclaimed_released",
        target: TARGET,
        "released an acquisition nobody claimed (its caller was cancelled or lost the answer)"
    );
}

/// An acquire statement took the lock, but its answer arrived after the acquisition's
/// own deadline: it is released, and the attempt counts as not acquired.
pub(crate) fn answered_too_late(lock: &LockInner, token: FencingToken) {
    held_lock_event!(
        Level::WARN,
        "dlock.answered_too_late",
        lock,
        token,
        "the acquire statement answered after its lease's deadline; releasing it unused"
    );
}

/// A waiting `acquire` hit an error that may pass, and looks again after `retry_in`.
pub(crate) fn waiting_error(lock: &LockInner, error: &crate::Error, retry_in: Duration) {
    tracing::warn!(
        name: "dlock.waiting_error",
        target: TARGET,
        lock = %lock.name,
        error = error as &dyn std::error::Error,
        retry_in_ms = millis(retry_in),
        "waiting for the lock failed for now; trying again"
    );
}

/// The database's settings, read at the first acquisition: one WARN per setting that can
/// lose acknowledged acquisitions.
pub(crate) fn durability(lock: &LockInner, durability: &crate::Durability) {
    for setting in &durability.settings {
        if let crate::SettingEffect::Breaks(problem) = &setting.effect {
            tracing::warn!(
                name: "dlock.durability",
                target: TARGET,
                dialect = %lock.dialect,
                setting = %setting.name,
                value = %setting.value,
                problem = %problem,
                "the database can lose acquisitions it acknowledged"
            );
        }
    }
}

/// The database's settings could not be read at the first acquisition.
pub(crate) fn durability_unknown(lock: &LockInner, error: &crate::adapter::QueryError) {
    debug!(
        name: "dlock.durability_unknown",
        target: TARGET,
        dialect = %lock.dialect,
        error = error as &dyn std::error::Error,
        "could not read the database's durability settings"
    );
}

/// The database's clock ran `ahead` of the local one between two renewals; the lease's
/// deadline was pulled in by as much.
pub(crate) fn database_clock_ahead(lock: &LockInner, token: FencingToken, ahead: Duration) {
    held_lock_event!(
        Level::WARN,
        "dlock.database_clock_ahead",
        lock,
        token,
        ahead_ms = millis(ahead),
        "the database's clock ran ahead of this host's; the lease's deadline moves in"
    );
}

/// A held lock's keep-alive task was dropped before anything released it (its runtime
/// shut down, typically at the end of `main`): the lock stays held for up to `left`.
pub(crate) fn abandoned(lock: &LockInner, token: FencingToken, left: Duration) {
    held_lock_event!(
        Level::WARN,
        "dlock.abandoned",
        lock,
        token,
        held_for_ms = millis(left),
        "the runtime ended while the lock was held; it stays held until its lease expires. \
         Release it first: `guard.release().await`, or run the work in `lock(f)`"
    );
}

/// The lease was renewed.
pub(crate) fn renewed(lock: &LockInner, token: FencingToken) {
    held_lock_event!(
        Level::DEBUG,
        "dlock.renewed",
        lock,
        token,
        "renewed the lease"
    );
}

/// A renewal failed; it is retried after `retry_in`, and the lock is lost if none has
/// succeeded by `safe_until`.
pub(crate) fn renewal_failed(
    lock: &LockInner,
    token: FencingToken,
    error: &crate::Error,
    retry_in: Duration,
    safe_until: Instant,
) {
    held_lock_event!(
        Level::WARN,
        "dlock.renewal_failed",
        lock,
        token,
        error = error as &dyn std::error::Error,
        retry_in_ms = millis(retry_in),
        lost_in_ms = millis(safe_until.saturating_duration_since(Instant::now())),
        "renewing the lease failed; retrying"
    );
}

/// The lock was lost; it was held from `lease_start` (when the acquire statement that
/// took it was sent).
pub(crate) fn lost(
    lock: &LockInner,
    token: FencingToken,
    reason: &LossReason,
    lease_start: Instant,
) {
    held_lock_event!(
        Level::ERROR,
        "dlock.lost",
        lock,
        token,
        %reason,
        held_ms = millis(lease_start.elapsed()),
        "lost the lock"
    );
    let reason = match reason {
        LossReason::TakenOver => "taken_over",
        LossReason::RenewalFailed { .. } => "renewal_failed",
        LossReason::KeepAliveEnded => "keep_alive_ended",
        // Not reported as a loss; listed so that a new reason is a compile error here.
        LossReason::Released => "released",
    };
    meter::lost(&lock.telemetry, reason);
    meter::record_since(&lock.telemetry, "dlock_hold_seconds", lease_start);
}

/// The lock was released; it was held from `lease_start`.
pub(crate) fn released(lock: &LockInner, token: FencingToken, lease_start: Instant) {
    held_lock_event!(
        Level::DEBUG,
        "dlock.released",
        lock,
        token,
        held_ms = millis(lease_start.elapsed()),
        "released the lock"
    );
    meter::record_since(&lock.telemetry, "dlock_hold_seconds", lease_start);
}

/// A retried release found the row no longer ours: the earlier attempt, whose answer was
/// lost, most likely freed it. WARN, not a loss: a takeover cannot be told apart now.
pub(crate) fn released_earlier(lock: &LockInner, token: FencingToken, lease_start: Instant) {
    held_lock_event!(
        Level::WARN,
        "dlock.released_earlier",
        lock,
        token,
        held_ms = millis(lease_start.elapsed()),
        "released the lock (an earlier attempt whose answer was lost had freed it)"
    );
    meter::record_since(&lock.telemetry, "dlock_hold_seconds", lease_start);
}

/// The release statement failed (the lock stays taken until its lease expires); it was
/// held from `lease_start`.
pub(crate) fn release_failed(
    lock: &LockInner,
    token: FencingToken,
    error: &crate::Error,
    lease_start: Instant,
) {
    held_lock_event!(
        Level::WARN,
        "dlock.release_failed",
        lock,
        token,
        error = error as &dyn std::error::Error,
        held_ms = millis(lease_start.elapsed()),
        "releasing the lock failed; it frees itself when the lease expires"
    );
    meter::record_since(&lock.telemetry, "dlock_hold_seconds", lease_start);
}

/// An operator force-released the lock `name` of `table` (see
/// [`LockAdmin::force_release`](crate::LockAdmin::force_release)), which `holder` held with
/// `token`: revoked (`mode=revoke`: it frees when the lease ends) or freed at once
/// (`mode=now`). WARN: someone's lock was taken from it, which the holder only learns at
/// its next renewal.
pub(crate) fn force_released(
    table: &str,
    name: &str,
    token: FencingToken,
    holder: Option<&str>,
    at_once: bool,
) {
    tracing::warn!(
        name: "dlock.force_released",
        target: TARGET,
        %table,
        lock = %name,
        fencing_token = token.get(),
        holder = %holder.unwrap_or("unknown"),
        mode = if at_once { "now" } else { "revoke" },
        "force-released the lock"
    );
}

/// Whole milliseconds, for fields: a plain integer reads and filters better than a
/// `Debug`-printed `Duration`.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The metrics, with the `metrics` feature.
#[cfg(feature = "metrics")]
mod meter {
    use std::sync::Arc;

    use tokio::time::Instant;

    use metrics::{SharedString, Unit, describe_counter, describe_histogram};

    /// Per-lock state of the metrics, made when the lock is built.
    #[derive(Debug, Clone)]
    pub(crate) struct LockTelemetry {
        /// The `lock` label, shared so that recording a metric does not copy the name.
        lock: SharedString,
    }

    impl LockTelemetry {
        pub(crate) fn new(name: &str) -> Self {
            // Descriptions go to the recorder installed now; building a lock is rare
            // enough to repeat them for a recorder installed later.
            describe();
            Self {
                lock: SharedString::from(Arc::<str>::from(name)),
            }
        }
    }

    pub(super) fn count(telemetry: &LockTelemetry, name: &'static str) {
        metrics::counter!(name, "lock" => telemetry.lock.clone()).increment(1);
    }

    /// Records the time since `start` in histogram `name`.
    pub(super) fn record_since(telemetry: &LockTelemetry, name: &'static str, start: Instant) {
        metrics::histogram!(name, "lock" => telemetry.lock.clone()).record(start.elapsed());
    }

    pub(super) fn lost(telemetry: &LockTelemetry, reason: &'static str) {
        metrics::counter!("dlock_lost_total", "lock" => telemetry.lock.clone(), "reason" => reason)
            .increment(1);
    }

    fn describe() {
        describe_counter!("dlock_attempts_total", "Acquire statements sent");
        describe_counter!("dlock_acquired_total", "Acquisitions");
        describe_counter!(
            "dlock_skipped_total",
            "Single attempts (try_acquire, skip_if_obtained) that found the lock held"
        );
        describe_counter!("dlock_timeouts_total", "Acquires that ran out of time");
        describe_counter!("dlock_lost_total", "Held locks that were lost, by reason");
        describe_histogram!(
            "dlock_wait_seconds",
            Unit::Seconds,
            "From the call of try_acquire or acquire to the acquisition"
        );
        describe_histogram!(
            "dlock_hold_seconds",
            Unit::Seconds,
            "From the acquire statement that took the lock to its release or loss"
        );
    }
}

/// Without the `metrics` feature: nothing to keep, nothing to record.
#[cfg(not(feature = "metrics"))]
mod meter {
    use tokio::time::Instant;

    #[derive(Debug, Clone)]
    pub(crate) struct LockTelemetry;

    impl LockTelemetry {
        pub(crate) fn new(_name: &str) -> Self {
            Self
        }
    }

    pub(super) fn count(_: &LockTelemetry, _name: &'static str) {}

    pub(super) fn record_since(_: &LockTelemetry, _name: &'static str, _start: Instant) {}

    pub(super) fn lost(_: &LockTelemetry, _reason: &'static str) {}
}

/// No listening connection was ever heard: waiters poll. Logged once per hub.
pub(crate) fn not_listening(failure: &str) {
    tracing::warn!(
        name: "dlock.not_listening",
        target: TARGET,
        failure,
        "dlock does not hear lock releases by other processes, so waiters poll at their \
         poll interval instead of waking at once. Behind a pooler in transaction mode \
         (PgBouncer), which cannot carry LISTEN, give the adapter a URL that reaches \
         PostgreSQL directly for the listening connection (`listen_at`; tokio-postgres: \
         `listen_with`) and say it is behind a pooler (`through_pooler`). Logged once; dlock \
         keeps trying to listen, ever more rarely"
    );
}
