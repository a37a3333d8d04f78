//! Renewal of a held lock's lease: success, transient and lasting failures, hangs, the
//! loss deadline (90 % of the TTL after the last successful statement was *sent*), and
//! takeovers, against the fake database on paused time.

mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dlock_core::adapter::QueryErrorKind;
use dlock_core::{Error, Lease, LockGuard, LossReason};
use fake::{FakeDb, Gate, Kind, NAME, RENEW, RETRY, SAFE_FOR, TTL, builder, lock, ms, settle};
use tokio::time::{Instant, sleep};

fn assert_at(what: &str, t0: Instant, expected: Duration) {
    let actual = t0.elapsed();
    assert!(
        actual >= expected && actual <= expected + ms(1),
        "{what} at {actual:?} after the acquire was sent, expected {expected:?}"
    );
}

/// Acquires on `fake` at `Instant::now()`, returning the guard and the send time.
async fn acquire(fake: &std::sync::Arc<FakeDb>) -> (LockGuard, Instant) {
    let t0 = Instant::now();
    let guard = lock(fake).acquire().await.expect("the lock is free");
    (guard, t0)
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_the_lease_alive() {
    let fake = FakeDb::new();
    let (guard, t0) = acquire(&fake).await;

    sleep(ms(1050)).await;

    assert!(!guard.is_lost(), "{:?}", guard.lease().loss_reason());
    let renewals = fake.entries(Kind::Renew);
    assert_eq!(renewals.len(), 10, "one renewal every {RENEW:?}");
    for (i, renewal) in (1u32..).zip(&renewals) {
        assert_eq!(renewal.at - t0, RENEW * i, "renewal {i}");
        assert_eq!(renewal.owner.as_deref(), Some(guard.lease().owner_id()));
    }
    let row = fake.row(NAME).expect("row");
    assert_eq!(row.expires_at, Some(renewals[9].at + TTL));
    assert_eq!(fake.count(Kind::Acquire), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transient_renewal_failure_is_retried_soon() {
    let fake = FakeDb::new();
    fake.script(Kind::Renew, [Gate::Err(QueryErrorKind::Unreachable)]);
    let (guard, t0) = acquire(&fake).await;

    sleep(ms(450)).await;

    assert!(!guard.is_lost(), "{:?}", guard.lease().loss_reason());
    let sent: Vec<Duration> = fake
        .entries(Kind::Renew)
        .iter()
        .map(|entry| entry.at - t0)
        .collect();
    // Failed at 100 ms, retried a quarter interval later, then back on the interval from
    // the successful retry.
    let retry = RENEW + RETRY;
    assert_eq!(
        sent,
        [
            RENEW,
            retry,
            retry + RENEW,
            retry + RENEW * 2,
            retry + RENEW * 3
        ],
        "renewals sent at"
    );
    assert!(fake.is_held(NAME));
}

#[tokio::test(start_paused = true)]
async fn renewals_failing_for_good_lose_the_lease_at_90_percent_of_the_ttl() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Err(QueryErrorKind::Statement));
    let (guard, t0) = acquire(&fake).await;

    let reason = guard.lost().await;

    assert_at("the loss", t0, SAFE_FOR);
    match &reason {
        LossReason::RenewalFailed {
            last_error: Some(error),
        } => assert!(error.contains("renew"), "{error}"),
        other => panic!("expected a renewal failure with its error, got {other:?}"),
    }
    assert_eq!(guard.lease().loss_reason(), Some(reason));
    // 100 ms, then every 25 ms while before the deadline: 125, 150, ..., 250.
    assert_eq!(fake.count(Kind::Renew), 7);
    assert!(
        fake.is_held(NAME),
        "the loss fires while the database still holds the lease for us"
    );
}

/// Review finding L2: a renewal stuck on a half-open connection was awaited until the
/// deadline, so the lease was lost although the database answered every other statement.
#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_is_abandoned_and_retried() {
    let fake = FakeDb::new();
    fake.script(Kind::Renew, [Gate::Never]);
    let (guard, t0) = acquire(&fake).await;

    sleep(TTL * 3).await;

    assert!(guard.is_held(), "{:?}", guard.lease().loss_reason());
    let sent: Vec<_> = fake
        .entries(Kind::Renew)
        .iter()
        .map(|e| e.at - t0)
        .collect();
    // Abandoned after four retry delays (100 ms), retried one retry delay later.
    assert_eq!(
        &sent[..3],
        [RENEW, RENEW + RETRY * 5, RENEW * 2 + RETRY * 5]
    );
}

#[tokio::test(start_paused = true)]
async fn renewals_that_all_hang_lose_the_lease_at_the_deadline() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Never);
    let (guard, t0) = acquire(&fake).await;

    let reason = guard.lost().await;

    assert_at("the loss", t0, SAFE_FOR);
    assert!(
        matches!(&reason, LossReason::RenewalFailed { last_error: Some(error) } if error.contains("no answer within 100 ms")),
        "{reason:?}"
    );
    assert_eq!(fake.count(Kind::Renew), 2, "abandoned and retried once");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_when_the_acquire_was_sent_not_answered() {
    let fake = FakeDb::new();
    // The database commits the acquire at once but the answer takes 50 ms.
    fake.script(Kind::Acquire, [Gate::Lag(ms(50))]);
    fake.set_default(Kind::Renew, Gate::Never);
    let (guard, t0) = acquire(&fake).await;
    assert_eq!(t0.elapsed(), ms(50));

    guard.lost().await;

    // Counted from the answer, the deadline would be 320 ms: after the database's expiry.
    assert_at("the loss", t0, SAFE_FOR);
    assert!(fake.is_held(NAME));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_when_the_last_renewal_was_sent_not_answered() {
    let fake = FakeDb::new();
    // The first renewal commits at 100 ms and is answered at 160 ms; the next one hangs.
    fake.script(Kind::Renew, [Gate::Lag(ms(60))]);
    fake.set_default(Kind::Renew, Gate::Never);
    let (guard, t0) = acquire(&fake).await;

    guard.lost().await;

    assert_at("the loss", t0, RENEW + SAFE_FOR);
    let renewals = fake.entries(Kind::Renew);
    assert_eq!(renewals.len(), 3, "the hung one abandoned and retried once");
    assert_eq!(
        renewals[1].at - t0,
        RENEW * 2,
        "next renewal counts from the send"
    );
    assert!(fake.is_held(NAME));
}

/// Review finding S1: an acquire whose answer arrives after its own deadline took a lease
/// that may already be someone else's by the time the caller sees it; it was handed out as
/// live (and `is_lost()` stayed false until the keep-alive task ran).
#[tokio::test(start_paused = true)]
async fn an_acquire_answered_after_its_deadline_is_released_and_not_handed_out() {
    let fake = FakeDb::new();
    // Answered at 290 ms: past the deadline (270 ms), before the database's expiry.
    fake.script(Kind::Acquire, [Gate::Lag(ms(290))]);

    let guard = lock(&fake).acquire().await.unwrap();

    assert!(guard.is_held());
    assert_eq!(guard.fencing_token().get(), 2, "not the late acquisition");
    let owners = fake.acquired_owners();
    assert_eq!(owners.len(), 2);
    assert!(
        fake.was_released(&owners[0]),
        "the late one was freed unused"
    );
    assert_eq!(guard.lease().owner_id(), owners[1]);
}

/// Any acquire statement is abandoned after a TTL (review finding L9), when whatever it
/// took has expired anyway; it is released, and a competitor may take the lock meanwhile.
#[tokio::test(start_paused = true)]
async fn an_acquire_unanswered_for_a_ttl_is_abandoned_while_others_take_the_lock() {
    let fake = FakeDb::new();
    fake.script(Kind::Acquire, [Gate::Lag(ms(350))]);
    let late = builder(&fake).acquire_timeout(ms(600)).build().unwrap();
    let competitor = lock(&fake);
    let competing = tokio::spawn(async move {
        sleep(ms(301)).await;
        competitor.try_acquire().await.unwrap().acquired()
    });

    let result = late.acquire().await;

    let theirs = competing
        .await
        .unwrap()
        .expect("the lease had ended at 300 ms");
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "a guard was handed out while another holder had the lock: {result:?}"
    );
    assert!(theirs.is_held());
    assert!(fake.was_released(&fake.acquired_owners()[0]));
}

/// Review finding S1 through `lock(f)`: the job ran while another holder had the lock.
#[tokio::test(start_paused = true)]
async fn a_job_never_starts_under_an_acquisition_answered_too_late() {
    let fake = FakeDb::new();
    fake.script(Kind::Acquire, [Gate::Lag(ms(280))]);
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);

    let outcome = lock(&fake)
        .lock(move |lease: Lease| async move {
            flag.store(true, Ordering::SeqCst);
            Ok::<_, Error>((lease.fencing_token(), Instant::now()))
        })
        .await
        .unwrap();

    let (token, ran_at) = outcome.ran().expect("ran on the second acquisition");
    assert_eq!(
        token.get(),
        2,
        "the late acquisition (token 1) was released unused"
    );
    assert!(started.load(Ordering::SeqCst));
    assert!(fake.was_released(&fake.acquired_owners()[0]));
    assert!(ran_at.elapsed() < TTL);
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_affects_no_row_means_taken_over() {
    let fake = FakeDb::new();
    let (guard, t0) = acquire(&fake).await;
    sleep(ms(150)).await;
    assert!(!guard.is_lost());
    fake.change_owner(NAME, "an operator");

    let reason = guard.lost().await;

    assert_eq!(reason, LossReason::TakenOver);
    assert_at("the loss", t0, RENEW * 2);
    assert_eq!(fake.count(Kind::Renew), 2);
    // The release is owner-checked: it must not free the new owner's lock.
    drop(guard);
    settle().await;
    assert_eq!(
        fake.row(NAME).and_then(|row| row.owner).as_deref(),
        Some("an operator")
    );
}

/// Whatever makes the renewals fail, the loss fires while the database still holds the
/// lease for us, so nobody else can have taken the lock yet.
#[tokio::test(start_paused = true)]
async fn the_loss_fires_before_anyone_else_can_take_the_lock() {
    let patterns: [(&str, Vec<Gate>, Gate); 6] = [
        ("errors", vec![], Gate::Err(QueryErrorKind::PoolExhausted)),
        ("hangs", vec![], Gate::Never),
        ("slow renewals", vec![], Gate::Slow(ms(250))),
        ("lagging renewals", vec![Gate::Lag(ms(200))], Gate::Never),
        (
            "one success then errors",
            vec![Gate::Ok, Gate::Slow(ms(100)), Gate::Lag(ms(100))],
            Gate::Err(QueryErrorKind::Statement),
        ),
        (
            "slow, then lagging",
            vec![Gate::Slow(ms(90)), Gate::Lag(ms(260))],
            Gate::Never,
        ),
    ];
    for (what, script, default) in patterns {
        let fake = FakeDb::new();
        fake.script(Kind::Renew, script);
        fake.set_default(Kind::Renew, default);
        let (guard, _) = acquire(&fake).await;
        let competitor = lock(&fake);

        let reason = tokio::time::timeout(ms(5000), guard.lost())
            .await
            .unwrap_or_else(|_| panic!("{what}: the lease was never lost"));

        let row = fake.row(NAME).expect("row");
        assert_eq!(
            row.owner.as_deref(),
            Some(guard.lease().owner_id()),
            "{what}: {reason:?}"
        );
        let left = row.expires_at.expect("held") - Instant::now();
        assert!(
            left >= TTL / 10,
            "{what}: lost with only {left:?} of the lease left"
        );
        let attempt = competitor.try_acquire().await.expect("fake answers");
        assert!(
            attempt.acquired().is_none(),
            "{what}: someone else got in before the loss"
        );
        drop(guard);
    }
}
