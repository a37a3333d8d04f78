//! The lease keeps its own deadline: what the job sees does not depend on the keep-alive
//! task having run, or being alive (review findings S2, S6, S9).

mod fake;

use std::time::Duration;

use dlock_core::{Error, LossReason};
use fake::{FakeDb, Gate, Kind, NAME, RENEW, SAFE_FOR, TTL, lock, ms};
use tokio::time::Instant;

/// S2, trigger A: a job that blocks the runtime's only thread past the deadline starves
/// the keep-alive task; it must still find the lease lost when it looks, and `lock(f)`
/// must not report a protected run. Real time: the point is a thread that does not yield.
#[tokio::test(flavor = "current_thread")]
async fn a_job_that_blocks_its_thread_past_the_deadline_finds_the_lease_lost() {
    let fake = FakeDb::new();
    let result = lock(&fake)
        .lock(|lease| async move {
            std::thread::sleep(TTL + ms(100));
            let seen = lease.is_lost();
            Ok::<_, Error>(seen)
        })
        .await;

    assert!(
        matches!(
            result,
            Err(Error::Lost {
                reason: LossReason::RenewalFailed { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!fake.is_held(NAME), "the database let others in meanwhile");
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocked_job_sees_is_lost_when_it_looks() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    let lease = guard.lease().clone();

    std::thread::sleep(TTL + ms(100));

    assert!(
        lease.is_lost(),
        "the keep-alive task never ran, yet the lease knows"
    );
    assert!(!fake.is_held(NAME));
    assert!(
        lock(&fake)
            .try_acquire()
            .await
            .unwrap()
            .acquired()
            .is_some(),
        "a competitor gets in"
    );
}

/// S2, trigger B: the keep-alive task dies with its runtime while the lease lives on
/// elsewhere. Its loss must be signalled, and releasing must not panic.
#[test]
fn a_lease_whose_keep_alive_task_died_with_its_runtime_is_lost() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = FakeDb::new();
    let guard = runtime.block_on(lock(&fake).acquire()).unwrap();
    let lease = guard.lease().clone();
    drop(runtime);

    assert_eq!(lease.loss_reason(), Some(LossReason::KeepAliveEnded));
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reason =
        other.block_on(async { tokio::time::timeout(Duration::from_secs(1), lease.lost()).await });
    assert_eq!(reason, Ok(LossReason::KeepAliveEnded));
    let released = other.block_on(guard.release());
    assert!(
        matches!(
            released,
            Err(Error::Lost {
                reason: LossReason::KeepAliveEnded,
                ..
            })
        ),
        "{released:?}"
    );
}

/// S9: a fence sent after the loss was signalled passed while the row was still ours in
/// the database, so its writes committed after the holder had been told to stop.
#[tokio::test(start_paused = true)]
async fn a_fence_after_the_loss_is_refused_whatever_the_row_says() {
    let fake = FakeDb::new();
    fake.set_default(
        Kind::Renew,
        Gate::Err(dlock_core::adapter::QueryErrorKind::Unreachable),
    );
    let guard = lock(&fake).acquire().await.unwrap();
    let lease = guard.lease().clone();
    guard.lost().await;
    assert!(fake.is_held(NAME), "the row is still ours in the database");

    let rows_found = std::cell::Cell::new(None);
    let (db, found) = (&fake, &rows_found);
    let fenced = dlock_core::adapter::fence(&lease, |statement| async move {
        let rows = dlock_core::adapter::QueryInterface::query(&**db, &statement).await?;
        found.set(Some(rows.len()));
        Ok(rows.len())
    })
    .await;

    assert_eq!(
        rows_found.get(),
        Some(1),
        "the database would let the fence pass"
    );
    assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
}

/// S6: the database's clock ran ahead between two renewals (a step, or a faster rate):
/// the lease it grants ends earlier by the local clock, so the deadline moves in.
#[tokio::test(start_paused = true)]
async fn a_database_clock_that_runs_ahead_pulls_the_deadline_in() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    let t0 = Instant::now();
    fake.sent(Kind::Renew, 1).await;
    let step = TTL / 5;
    fake.step_clock(step);
    // The second renewal succeeds and sees the step; then renewals hang.
    fake.script(Kind::Renew, [Gate::Ok]);
    fake.set_default(Kind::Renew, Gate::Never);

    guard.lost().await;

    let lost_at = t0.elapsed();
    assert_eq!(
        lost_at,
        RENEW * 2 + SAFE_FOR - step,
        "pulled in by the step"
    );
}

/// Without a clock step, the same renewals keep the full deadline.
#[tokio::test(start_paused = true)]
async fn a_steady_database_clock_leaves_the_deadline_alone() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    let t0 = Instant::now();
    fake.sent(Kind::Renew, 1).await;
    fake.script(Kind::Renew, [Gate::Ok]);
    fake.set_default(Kind::Renew, Gate::Never);

    guard.lost().await;

    assert_eq!(t0.elapsed(), RENEW * 2 + SAFE_FOR);
}

/// Issue 19, item 1: a one-shot job whose guard goes out of scope at the end of `main`.
/// On a multi-threaded runtime the drop in the main future releases before it returns, so
/// the lock is free the moment `block_on` is done, before the runtime shuts down.
#[test]
fn a_guard_dropped_at_the_end_of_main_is_released_before_the_runtime_ends() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = FakeDb::new();
    let owner = runtime.block_on(async {
        let guard = lock(&fake).acquire().await.unwrap();
        let owner = guard.lease().owner_id().to_owned();
        drop(guard);
        owner
    });

    assert!(
        fake.was_released(&owner),
        "released before block_on returned"
    );
    drop(runtime);
    assert!(!fake.is_held(NAME));
}
