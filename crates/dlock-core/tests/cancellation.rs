//! Cancellation safety, deadpool-`managed_cancellation` style: a gate (ok, error, slow,
//! lagging, hanging) on every step of a lock's life (the first acquire statement, a probe,
//! the acquire that takes the lock, a renewal, the release), crossed with every way the
//! caller can stop (it completes, it is dropped when the gated statement is sent, it is
//! timed out at one of many moments), for each way of using the lock. Afterwards nothing
//! may be left held: every acquisition was released unless the database failed that
//! release, no renewal outlives its caller, and the lock is free again.

mod fake;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::QueryErrorKind;
use dlock_core::{Attempt, DistributedLock, Error};
use fake::{FakeDb, Gate, Kind, NAME, TTL, lock, ms, settle};
use tokio::time::{Instant, sleep, timeout};

/// How long a caller holds the lock: past one renewal, short of the loss deadline.
const HOLD: Duration = Duration::from_millis(150);
/// How long the crashed holder's lease still runs when a case starts.
const FOREIGN_LEASE: Duration = Duration::from_millis(30);
/// The bound on a caller that hangs.
const PATIENCE: Duration = Duration::from_millis(2000);
const SLOW: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first acquire statement, which finds the lock held.
    FirstAcquire,
    /// The first probe of a waiter.
    Probe,
    /// The acquire statement that takes the lock.
    Acquire,
    /// The first renewal.
    Renew,
    /// The release.
    Release,
}

impl Step {
    const ALL: [Step; 5] = [
        Step::FirstAcquire,
        Step::Probe,
        Step::Acquire,
        Step::Renew,
        Step::Release,
    ];

    /// The statement kind, and which statement of that kind this step is.
    fn statement(self) -> (Kind, usize) {
        match self {
            Step::FirstAcquire => (Kind::Acquire, 1),
            Step::Probe => (Kind::Probe, 1),
            Step::Acquire => (Kind::Acquire, 2),
            Step::Renew => (Kind::Renew, 1),
            Step::Release => (Kind::Release, 1),
        }
    }
}

const GATES: [Gate; 6] = [
    Gate::Ok,
    Gate::Err(QueryErrorKind::Unreachable),
    Gate::Slow(SLOW),
    Gate::Lag(SLOW),
    Gate::Never,
    Gate::AnswerLost(QueryErrorKind::Statement),
];

/// The ways of using a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// `acquire()`, hold, `release().await`.
    AcquireRelease,
    /// `lock(job)` with a job that holds.
    LockJob,
    /// `try_acquire()` until acquired, hold, drop the guard.
    TryAcquireDrop,
}

impl Caller {
    async fn run(self, lock: DistributedLock) -> Result<(), Error> {
        match self {
            Caller::AcquireRelease => {
                let guard = lock.acquire().await?;
                sleep(HOLD).await;
                guard.release().await
            }
            Caller::LockJob => lock
                .lock(|_lease| async {
                    sleep(HOLD).await;
                    Ok::<_, Error>(())
                })
                .await
                .map(|outcome| assert!(!outcome.is_skipped())),
            Caller::TryAcquireDrop => loop {
                match lock.try_acquire().await? {
                    Attempt::Acquired(guard) => {
                        sleep(HOLD).await;
                        drop(guard);
                        return Ok(());
                    }
                    Attempt::Held(holder) => sleep(holder.expires_in() + ms(1)).await,
                }
            },
        }
    }

    /// What an uninterrupted caller returns with `gate` on `step`: `Some(true)` for
    /// `Ok`, `Some(false)` for an error (no statement hangs the caller any more).
    fn expected(self, step: Step, gate: Gate) -> Option<bool> {
        let gate = match gate {
            // For the caller, a lost answer is an error.
            Gate::AnswerLost(kind) => Gate::Err(kind),
            gate => gate,
        };
        let waits = self != Caller::TryAcquireDrop;
        match (gate, step) {
            (Gate::Ok | Gate::Slow(_) | Gate::Lag(_), _) => Some(true),
            // A renewal is retried, and so is a release, whoever asked for it.
            (Gate::Err(_), Step::Renew | Step::Release) => Some(true),
            // A waiting `acquire` rides out errors (and statements that hang are abandoned
            // after a TTL); one attempt (`try_acquire`) reports them.
            (Gate::Err(_) | Gate::Never, Step::FirstAcquire | Step::Probe | Step::Acquire) => {
                Some(waits)
            }
            (Gate::Never, Step::Renew) => Some(true),
            // A release gives up at the end of the lease, when the row frees itself; an
            // explicit one then reports that it could not confirm it.
            (Gate::Never, Step::Release) => Some(self != Caller::AcquireRelease),
            (Gate::AnswerLost(_) | Gate::Denied | Gate::Conflict, _) => {
                unreachable!("not among the gates")
            }
        }
    }
}

/// When the caller is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Not stopped (but bounded by [`PATIENCE`]).
    Never,
    /// Dropped when the gated statement is sent, after polling the caller (as a timeout
    /// does): the caller sees whatever answer is ready.
    AtStep,
    /// Dropped when the gated statement is sent, before polling the caller again (as a
    /// `select!` whose other branch is ready, or an aborted task): an answer that is
    /// ready is never read.
    AtStepUnread,
    /// Timed out after this long.
    After(Duration),
}

struct Case {
    caller: Caller,
    step: Step,
    gate: Gate,
    stop: Stop,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} with {:?} on {:?}, stopped {:?}",
            self.caller, self.gate, self.step, self.stop
        )
    }
}

/// Runs one case on a fresh fake; returns what went wrong, if anything.
async fn run_case(case: &Case) -> Result<(), String> {
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, "crashed (host pid 1)", FOREIGN_LEASE);
    let (kind, nth) = case.step.statement();
    fake.script(kind, std::iter::repeat_n(Gate::Ok, nth - 1));
    fake.script(kind, [case.gate]);

    let caller = case.caller.run(lock(&fake));
    let result = match case.stop {
        Stop::Never => bounded(caller).await,
        Stop::AtStep => bounded(async {
            tokio::select! {
                biased;
                result = caller => Some(result),
                () = fake.sent(kind, nth) => None,
            }
        })
        .await
        .flatten(),
        Stop::AtStepUnread => bounded(async {
            tokio::select! {
                biased;
                () = fake.sent(kind, nth) => None,
                result = caller => Some(result),
            }
        })
        .await
        .flatten(),
        Stop::After(limit) => timeout(limit, caller).await.ok(),
    };
    let stopped_at = Instant::now();

    if let Stop::Never = case.stop {
        let expected = case.caller.expected(case.step, case.gate);
        let actual = result.as_ref().map(Result::is_ok);
        if actual != expected {
            return Err(format!(
                "the caller returned {result:?}, expected {}",
                match expected {
                    Some(true) => "Ok",
                    Some(false) => "an error",
                    None => "it to hang (within the patience)",
                }
            ));
        }
    }

    // Let the background tasks finish: slow statements, release retries.
    settle().await;
    sleep(SLOW * 4).await;
    check_nothing_left_held(&fake, stopped_at).await
}

async fn bounded<T>(future: impl Future<Output = T>) -> Option<T> {
    timeout(PATIENCE, future).await.ok()
}

async fn check_nothing_left_held(fake: &Arc<FakeDb>, stopped_at: Instant) -> Result<(), String> {
    let releases = fake.entries(Kind::Release);
    for owner in fake.acquired_owners() {
        if fake.was_released(&owner) {
            continue;
        }
        let attempts: Vec<Gate> = releases
            .iter()
            .filter(|entry| entry.owner.as_deref() == Some(owner.as_str()))
            .map(|entry| entry.gate)
            .collect();
        // The core may only give up when the database failed or swallowed the release.
        if !attempts
            .iter()
            .any(|gate| matches!(gate, Gate::Err(_) | Gate::Never | Gate::AnswerLost(_)))
        {
            return Err(format!(
                "owner {owner} acquired the lock and was never released \
                 (release attempts: {attempts:?}); it stays held until its TTL runs out"
            ));
        }
    }

    let renewed_late: Vec<Duration> = fake
        .entries(Kind::Renew)
        .iter()
        .filter(|entry| entry.at > stopped_at)
        .map(|entry| entry.at - stopped_at)
        .collect();
    if !renewed_late.is_empty() {
        return Err(format!(
            "renewals sent after the caller stopped: {renewed_late:?} later"
        ));
    }
    let renewals = fake.count(Kind::Renew);
    sleep(TTL * 2).await;
    if fake.count(Kind::Renew) != renewals {
        return Err("a keep-alive task outlived its caller".into());
    }
    // The gated statement may not have been reached: clear the script for the check.
    fake.clear_scripts();
    match bounded(lock(fake).try_acquire()).await {
        Some(Ok(Attempt::Acquired(guard))) => {
            drop(guard);
            Ok(())
        }
        other => Err(format!("the lock is not free afterwards: {other:?}")),
    }
}

/// Every step × gate × stop for one caller; fails listing every failing case.
async fn cross(caller: Caller) {
    let mut stops = vec![Stop::Never, Stop::AtStep, Stop::AtStepUnread];
    stops.extend((0..=240).step_by(15).map(|t| Stop::After(ms(t))));
    let mut failures = Vec::new();
    let mut cases = 0;
    for step in Step::ALL {
        for gate in GATES {
            for &stop in &stops {
                let case = Case {
                    caller,
                    step,
                    gate,
                    stop,
                };
                cases += 1;
                if let Err(failure) = run_case(&case).await {
                    failures.push(format!("{case}: {failure}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(start_paused = true)]
async fn acquire_then_release_is_cancel_safe_at_every_step() {
    cross(Caller::AcquireRelease).await;
}

#[tokio::test(start_paused = true)]
async fn lock_with_a_job_is_cancel_safe_at_every_step() {
    cross(Caller::LockJob).await;
}

#[tokio::test(start_paused = true)]
async fn try_acquire_then_drop_is_cancel_safe_at_every_step() {
    cross(Caller::TryAcquireDrop).await;
}

/// A `try_acquire` dropped in the poll in which its acquire statement answered (a
/// `select!` whose other branch is ready in the same poll, `JoinHandle::abort`, a
/// runtime shutting its tasks down). The statement runs in the caller's task, so the
/// answer is read in the poll that ends the statement: the caller ends up with a guard,
/// whose drop releases, or with the statement still in flight, which goes on in a task
/// that releases. Either way nothing stays held.
#[tokio::test(start_paused = true)]
async fn a_caller_dropped_as_the_acquire_answers_leaves_nothing_held() {
    let fake = FakeDb::new();
    let lock = lock(&fake);
    let attempt = tokio::select! {
        biased;
        () = fake.sent(Kind::Acquire, 1) => None,
        attempt = lock.try_acquire() => Some(attempt),
    };
    drop(attempt);
    settle().await;
    sleep(ms(50)).await;

    let owners = fake.acquired_owners();
    assert_eq!(owners.len(), 1);
    assert!(
        fake.was_released(&owners[0]),
        "the lock was acquired for a dropped caller and never released: it stays held \
         until its TTL runs out"
    );
}

/// An acquire statement that committed on the server but whose answer was lost (the
/// connection broke after the commit: `QueryErrorKind::Statement` says it may have run).
/// The caller gets an error and believes it holds nothing; the core could release the
/// owner id it generated (the release is owner-checked, so harmless if nothing was taken).
#[tokio::test(start_paused = true)]
async fn an_acquire_whose_answer_was_lost_leaves_nothing_held() {
    let fake = FakeDb::new();
    fake.script(Kind::Acquire, [Gate::AnswerLost(QueryErrorKind::Statement)]);

    let error = lock(&fake)
        .try_acquire()
        .await
        .expect_err("the answer was lost");
    assert!(matches!(error, Error::Database { .. }), "{error:?}");
    settle().await;
    sleep(ms(50)).await;

    let owners = fake.acquired_owners();
    assert_eq!(owners.len(), 1, "the statement committed");
    assert!(
        fake.was_released(&owners[0]),
        "an acquisition nobody knows of blocks the lock until its TTL runs out"
    );
}

/// An adapter that panics while running a statement: a bug of the adapter's.
#[derive(Debug)]
struct PanickingAdapter;

#[dlock_core::adapter::async_trait]
impl dlock_core::adapter::QueryInterface for PanickingAdapter {
    fn dialect(&self) -> dlock_core::Dialect {
        dlock_core::Dialect::Postgres
    }

    async fn execute(
        &self,
        _statement: &dlock_core::adapter::Statement,
    ) -> Result<u64, dlock_core::adapter::QueryError> {
        panic!("the adapter's bug (expected by this test)")
    }

    async fn query(
        &self,
        _statement: &dlock_core::adapter::Statement,
    ) -> Result<Vec<dlock_core::adapter::Row>, dlock_core::adapter::QueryError> {
        panic!("the adapter's bug (expected by this test)")
    }

    fn listener(&self) -> Option<&dyn dlock_core::adapter::Listen> {
        None
    }
}

/// The acquire statement runs in the caller's task, but an adapter that panics in it
/// fails the attempt with an error, as a task of its own would have; the caller's task
/// goes on.
#[tokio::test]
async fn an_adapter_panicking_in_the_acquire_fails_the_attempt_not_the_caller() {
    let queries: std::sync::Arc<dyn dlock_core::adapter::QueryInterface> =
        std::sync::Arc::new(PanickingAdapter);
    let lock = dlock_core::DistributedLock::new("panicking", queries).unwrap();
    let error = lock.try_acquire().await.expect_err("the adapter panicked");
    assert!(
        error.to_string().contains("the adapter panicked"),
        "{error}"
    );
}
