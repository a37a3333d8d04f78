//! Renewal of a held lock's lease: success, transient and lasting failures, hangs, the
//! loss deadline (90 % of the TTL after the last successful statement was *sent*), and
//! takeovers, against the fake database on paused time.

mod fake;

use std::time::Duration;

use dlock_core::{LockGuard, LossReason, QueryErrorKind};
use fake::{FakeDb, Gate, Kind, NAME, RENEW, RETRY, SAFE_FOR, TTL, lock, ms, settle};
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

#[tokio::test(start_paused = true)]
async fn a_hanging_renewal_loses_the_lease_with_no_error() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Never);
    let (guard, t0) = acquire(&fake).await;

    let reason = guard.lost().await;

    assert_at("the loss", t0, SAFE_FOR);
    assert_eq!(reason, LossReason::RenewalFailed { last_error: None });
    assert_eq!(
        fake.count(Kind::Renew),
        1,
        "the hung renewal is not repeated"
    );
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
    assert_eq!(renewals.len(), 2);
    assert_eq!(
        renewals[1].at - t0,
        RENEW * 2,
        "next renewal counts from the send"
    );
    assert!(fake.is_held(NAME));
}

#[tokio::test(start_paused = true)]
async fn an_acquire_answered_after_the_deadline_is_lost_at_once() {
    let fake = FakeDb::new();
    fake.script(Kind::Acquire, [Gate::Lag(ms(280))]);
    let (guard, t0) = acquire(&fake).await;
    assert_eq!(t0.elapsed(), ms(280));

    settle().await;

    assert_eq!(
        guard.lease().loss_reason(),
        Some(LossReason::RenewalFailed { last_error: None })
    );
    assert_eq!(t0.elapsed(), ms(280), "lost without waiting");
    assert_eq!(fake.count(Kind::Renew), 0);
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
