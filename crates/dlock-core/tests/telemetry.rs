//! The `tracing` events and spans of a lock's life — acquired, skipped, waiting (rate
//! limited), timed out, renewed, renewal failed, lost, released, release failed — with
//! their levels and fields, captured from the fake database on paused time.

mod capture;
mod fake;

use std::time::Duration;

use capture::{Captured, Events};
use dlock_core::Error;
use dlock_core::adapter::QueryErrorKind;
use fake::{FakeDb, Gate, Kind, NAME, RENEW, RETRY, SAFE_FOR, builder, lock, ms, settle};
use tokio::time::{Instant, sleep, timeout};
use tracing::Level;

const OTHER: &str = "other (host pid 1)";

/// Every event names the lock, and, from the acquire span or its own fields, the holder.
fn assert_identifies_the_lock(events: &Events) {
    for event in events.all() {
        assert_eq!(event.target, "dlock", "{event:#?}");
        let lock = event.fields.get("lock").map(String::as_str);
        assert_eq!(lock.or(event.span_field("lock")), Some(NAME), "{event:#?}");
        let holder = event.fields.get("holder").map(String::as_str);
        let holder = holder.or(event.span_field("holder")).unwrap_or_default();
        assert!(holder.contains(" pid "), "{event:#?}");
    }
}

/// The event happened in the span of an `acquire` (`wait`) or a `try_acquire`.
fn assert_in_acquire_span(event: &Captured, wait: bool) {
    let (name, fields) = event.spans.first().expect("in a span");
    assert_eq!(*name, "dlock.acquire", "{event:#?}");
    assert_eq!(fields["wait"], wait.to_string(), "{event:#?}");
    assert!(fields["table"].starts_with("fake_"), "{event:#?}");
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn acquire_renew_and_release_report_the_token_and_the_times() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    sleep(ms(250)).await;
    guard.release().await.unwrap();

    let acquired = events.one("dlock.acquired");
    assert_eq!(acquired.level, Level::DEBUG);
    assert_in_acquire_span(&acquired, true);
    assert_eq!(acquired.field("fencing_token"), "1");
    assert_eq!(acquired.number("wait_ms"), 0);

    let renewed = events.named("dlock.renewed");
    assert_eq!(renewed.len(), fake.count(Kind::Renew), "{renewed:#?}");
    assert_eq!(renewed.len(), 2);
    for event in &renewed {
        assert_eq!(event.level, Level::DEBUG);
        assert_eq!(event.field("fencing_token"), "1");
    }

    let released = events.one("dlock.released");
    assert_eq!(released.level, Level::DEBUG);
    assert_eq!(released.field("fencing_token"), "1");
    assert_eq!(released.number("held_ms"), 250);
    assert!(
        released.spans.is_empty(),
        "the keep-alive task is not in the acquire span"
    );
    assert_identifies_the_lock(&events);
    assert_eq!(events.all().len(), 4, "{:#?}", events.all());
}

#[tokio::test(start_paused = true)]
async fn skip_if_obtained_reports_the_skip_with_the_current_holder() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, OTHER, ms(2000));
    let lock = builder(&fake).skip_if_obtained(true).build().unwrap();

    let outcome = lock.lock(|_| async { Ok::<_, Error>(()) }).await.unwrap();

    assert!(outcome.is_skipped());
    let skipped = events.one("dlock.skipped");
    assert_eq!(skipped.level, Level::DEBUG);
    assert_in_acquire_span(&skipped, false);
    assert_eq!(skipped.field("current_holder"), OTHER);
    assert_eq!(skipped.number("lease_ends_in_ms"), 2000);
    assert_identifies_the_lock(&events);
    assert_eq!(events.all().len(), 1, "{:#?}", events.all());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_acquire_names_the_holder_at_once_then_every_5_s() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    let lease = ms(12_000);
    fake.hold_elsewhere(NAME, OTHER, lease);
    let poll = ms(100);
    let t0 = Instant::now();

    let guard = builder(&fake)
        .poll_interval(poll)
        .build()
        .unwrap()
        .acquire()
        .await
        .unwrap();

    let waiting = events.named("dlock.waiting");
    assert_eq!(waiting.len(), 3, "at 0, 5 and 10 s: {waiting:#?}");
    // The first probe comes after the first back-off pause, at most 10 ms.
    assert!(waiting[0].at - t0 <= ms(10), "{:?}", waiting[0].at - t0);
    for pair in waiting.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= ms(5000) && gap <= ms(5000) + poll, "{gap:?}");
    }
    for event in &waiting {
        assert_eq!(event.level, Level::INFO);
        assert_in_acquire_span(event, true);
        assert_eq!(event.field("current_holder"), OTHER);
        let waited = event.at - t0;
        assert_eq!(event.number("waited_ms"), millis(waited));
        assert_eq!(event.number("lease_ends_in_ms"), millis(lease - waited));
    }
    assert!(
        fake.count(Kind::Probe) >= 100,
        "the reports are fewer than the probes: {} probes",
        fake.count(Kind::Probe)
    );

    let acquired = events.one("dlock.acquired");
    assert_eq!(acquired.field("fencing_token"), "2");
    let wait_ms = acquired.number("wait_ms");
    assert!((12_000..=12_010).contains(&wait_ms), "{wait_ms}");
    assert_identifies_the_lock(&events);
    drop(guard);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_reported_with_the_last_holder_seen() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, OTHER, ms(10_000));
    let lock = builder(&fake)
        .poll_interval(ms(100))
        .acquire_timeout(ms(1000))
        .build()
        .unwrap();

    let error = lock.acquire().await.unwrap_err();

    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let timed_out = events.one("dlock.timed_out");
    assert_eq!(timed_out.level, Level::INFO);
    assert_in_acquire_span(&timed_out, true);
    assert_eq!(timed_out.number("waited_ms"), 1000);
    assert_eq!(timed_out.field("current_holder"), OTHER);
    assert!(events.named("dlock.acquired").is_empty());
    assert_identifies_the_lock(&events);
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_warn_each_time_then_the_loss_is_an_error() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Err(QueryErrorKind::Unreachable));
    let guard = lock(&fake).acquire().await.unwrap();

    guard.lost().await;
    // The lease reads its own deadline; the keep-alive task reports as it wakes too.
    settle().await;

    let failed = events.named("dlock.renewal_failed");
    assert_eq!(
        failed.len(),
        fake.count(Kind::Renew),
        "one warning per renewal"
    );
    assert!(failed.len() >= 2, "{failed:#?}");
    for event in &failed {
        assert_eq!(event.level, Level::WARN);
        assert_eq!(event.field("fencing_token"), "1");
        assert!(
            event.field("error").contains("injected failure"),
            "{event:#?}"
        );
        assert_eq!(event.number("retry_in_ms"), millis(RETRY));
    }
    assert_eq!(failed[0].number("lost_in_ms"), millis(SAFE_FOR - RENEW));

    let lost = events.one("dlock.lost");
    assert_eq!(lost.level, Level::ERROR);
    assert_eq!(lost.field("fencing_token"), "1");
    assert_eq!(lost.number("held_ms"), millis(SAFE_FOR));
    let reason = lost.field("reason");
    assert!(reason.contains("cannot reach the database"), "{lost:#?}");
    assert!(events.named("dlock.renewed").is_empty());
    assert_identifies_the_lock(&events);
    drop(guard);
}

#[tokio::test(start_paused = true)]
async fn a_takeover_found_by_a_renewal_is_reported_as_lost() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    fake.change_owner(NAME, "an operator");

    guard.lost().await;

    let lost = events.one("dlock.lost");
    assert_eq!(lost.level, Level::ERROR);
    assert_eq!(lost.field("fencing_token"), "1");
    assert_eq!(
        lost.number("held_ms"),
        millis(RENEW),
        "the first renewal found it"
    );
    assert!(lost.field("reason").contains("taken over"), "{lost:#?}");
    assert_identifies_the_lock(&events);
    drop(guard);
}

#[tokio::test(start_paused = true)]
async fn a_takeover_found_by_the_release_is_reported_as_lost() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    sleep(ms(50)).await;
    fake.change_owner(NAME, "an operator");

    let released = guard.release().await;

    assert!(matches!(released, Err(Error::Lost { .. })), "{released:?}");
    let lost = events.one("dlock.lost");
    assert_eq!(lost.level, Level::ERROR);
    assert_eq!(lost.number("held_ms"), 50);
    assert!(lost.field("reason").contains("taken over"), "{lost:#?}");
    assert!(events.named("dlock.released").is_empty());
    assert_identifies_the_lock(&events);
}

#[tokio::test(start_paused = true)]
async fn a_failed_release_warns_that_the_lease_is_left_to_expire() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    // Every attempt fails: it is retried until the lease ends.
    fake.set_default(Kind::Release, Gate::Err(QueryErrorKind::Unreachable));
    let guard = lock(&fake).acquire().await.unwrap();

    guard.release().await.unwrap_err();

    let failed = events.one("dlock.release_failed");
    assert_eq!(failed.level, Level::WARN);
    assert_eq!(failed.field("fencing_token"), "1");
    assert!(
        failed.field("error").contains("injected failure"),
        "{failed:#?}"
    );
    assert!(events.named("dlock.released").is_empty());
    assert_identifies_the_lock(&events);
}

#[tokio::test(start_paused = true)]
async fn an_acquisition_whose_caller_was_cancelled_is_reported_when_released() {
    let (events, _guard) = capture::install();
    let fake = FakeDb::new();
    // The acquire commits at once and answers 50 ms later, after its caller gave up.
    fake.script(Kind::Acquire, [Gate::Lag(ms(50))]);

    let cancelled = timeout(ms(10), lock(&fake).acquire()).await;

    assert!(cancelled.is_err(), "the caller gave up first");
    fake.wait_for_log(|log| log.iter().any(|entry| entry.kind == Kind::Release))
        .await;
    settle().await;
    let owner = fake.acquired_owners().pop().expect("it acquired");
    assert!(fake.was_released(&owner));
    let released = events.one("dlock.unclaimed_released");
    assert_eq!(released.level, Level::DEBUG);
    assert_in_acquire_span(&released, true);
    assert!(events.named("dlock.acquired").is_empty());
    assert_identifies_the_lock(&events);
}

/// Issue 19, item 1: where a dropped guard can only release in the background (a
/// current-thread runtime), a runtime that ends first leaves the lock held; say so.
#[test]
fn a_lock_still_held_when_its_runtime_ends_is_reported() {
    let (events, _guard) = capture::install();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = FakeDb::new();
    runtime.block_on(async {
        let guard = lock(&fake).acquire().await.unwrap();
        drop(guard);
    });
    drop(runtime);

    let abandoned = events.one("dlock.abandoned");
    assert_eq!(abandoned.level, Level::WARN);
    assert_eq!(abandoned.field("fencing_token"), "1");
    assert!(abandoned.number("held_for_ms") <= 300, "{abandoned:#?}");
    assert!(fake.is_held(NAME), "nothing released it");
}
