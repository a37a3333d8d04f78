//! Waiting rides out transient errors (L5): an `acquire` without a timeout was told to
//! wait as long as it takes, so a pool checkout that times out or a database that is
//! briefly unreachable while it waits must not end it. The herd a release wakes makes
//! such errors likely: every woken waiter attempts at once through the same pool.

mod fake;

use std::time::Duration;

use dlock_core::adapter::QueryErrorKind;
use fake::{FakeDb, Gate, Kind, NAME, builder, lock, ms};
use tokio::time::sleep;

/// Long enough for any back-off of the waiting loop; an `acquire` still waiting by then
/// has not recovered.
const RECOVERED_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_attempt_after_a_release_times_out_keeps_waiting() {
    let fake = FakeDb::new();
    let (holder, waiter) = (lock(&fake), lock(&fake));
    let held = holder.acquire().await.unwrap();
    // The waiter's first attempt finds the lock held; the one its release notice
    // triggers finds the pool exhausted by the herd.
    fake.script(
        Kind::Acquire,
        [Gate::Ok, Gate::Err(QueryErrorKind::PoolExhausted)],
    );
    let waiting = tokio::spawn(async move { waiter.acquire().await });
    fake.sent(Kind::Acquire, 2).await;
    sleep(ms(50)).await;

    held.release().await.unwrap();
    let acquired = tokio::time::timeout(RECOVERED_WITHIN, waiting)
        .await
        .expect("the waiter neither acquired nor gave up")
        .unwrap();

    let guard = acquired.expect("a pool timeout ended an acquire without a timeout");
    assert!(
        fake.count(Kind::Acquire) >= 4,
        "the waiter did not try again"
    );
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_rides_out_probes_that_fail_for_a_while() {
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, "other (host pid 1)", ms(3_000));
    fake.script(
        Kind::Probe,
        [
            Gate::Ok,
            Gate::Err(QueryErrorKind::Unreachable),
            Gate::Err(QueryErrorKind::PoolExhausted),
            Gate::Err(QueryErrorKind::Unreachable),
        ],
    );

    let acquired = tokio::time::timeout(
        RECOVERED_WITHIN,
        builder(&fake)
            .poll_interval(ms(100))
            .build()
            .unwrap()
            .acquire(),
    )
    .await
    .expect("the waiter neither acquired nor gave up");

    let guard = acquired.expect("transient probe errors ended an acquire without a timeout");
    assert!(fake.count(Kind::Probe) >= 5);
    guard.release().await.unwrap();
}
