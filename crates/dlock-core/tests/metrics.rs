//! The `metrics` feature: counters and histograms of a lock's life, read from
//! metrics-util's debugging recorder, on the fake database and paused time. The crate's
//! dev-dependency on itself turns the feature on, so `cargo test` always runs these.

mod fake;

use std::collections::HashMap;
use std::time::Duration;

use dlock_core::adapter::QueryErrorKind;
use dlock_core::{Attempt, Error};
use fake::{FakeDb, Gate, Kind, NAME, RENEW, SAFE_FOR, builder, lock, ms, settle};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::sleep;

/// The metrics recorded since the last snapshot, by `name{label=value,...}`.
fn snapshot(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, _description, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(metrics: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match metrics.get(key) {
        Some(DebugValue::Counter(count)) => *count,
        None => 0,
        Some(other) => panic!("{key} is not a counter: {other:?}"),
    }
}

/// The values of histogram `key`, in seconds.
fn histogram(metrics: &HashMap<String, DebugValue>, key: &str) -> Vec<f64> {
    match metrics.get(key) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|value| value.0).collect(),
        other => panic!("{key} is not a histogram: {other:?} in {metrics:#?}"),
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn a_waited_acquisition_counts_its_attempts_and_times_the_wait_and_the_hold() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, "other (host pid 1)", ms(500));

    let guard = builder(&fake)
        .poll_interval(ms(100))
        .build()
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let waited = fake.entries(Kind::Acquire)[1].at - fake.entries(Kind::Acquire)[0].at;
    sleep(ms(250)).await;
    guard.release().await.unwrap();

    let metrics = snapshot(&snapshotter);
    assert_eq!(counter(&metrics, "dlock_attempts_total{lock=job}"), 2);
    assert_eq!(fake.count(Kind::Acquire), 2);
    assert_eq!(counter(&metrics, "dlock_acquired_total{lock=job}"), 1);
    assert_eq!(
        histogram(&metrics, "dlock_wait_seconds{lock=job}"),
        [seconds(waited)]
    );
    assert!(waited >= ms(500), "{waited:?}");
    assert_eq!(
        histogram(&metrics, "dlock_hold_seconds{lock=job}"),
        [seconds(ms(250))]
    );
    for absent in ["dlock_skipped_total", "dlock_timeouts_total"] {
        assert_eq!(counter(&metrics, &format!("{absent}{{lock=job}}")), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn skips_and_timeouts_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, "other (host pid 1)", ms(10_000));
    let lock = builder(&fake)
        .poll_interval(ms(100))
        .acquire_timeout(ms(1000))
        .build()
        .unwrap();

    for _ in 0..2 {
        let attempt = lock.try_acquire().await.unwrap();
        assert!(matches!(attempt, Attempt::Held(_)), "{attempt:?}");
    }
    let error = lock.acquire().await.unwrap_err();

    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let metrics = snapshot(&snapshotter);
    assert_eq!(counter(&metrics, "dlock_skipped_total{lock=job}"), 2);
    assert_eq!(counter(&metrics, "dlock_timeouts_total{lock=job}"), 1);
    assert_eq!(counter(&metrics, "dlock_attempts_total{lock=job}"), 3);
    assert_eq!(counter(&metrics, "dlock_acquired_total{lock=job}"), 0);
}

#[tokio::test(start_paused = true)]
async fn losses_are_counted_by_reason_and_end_the_hold() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let fake = FakeDb::new();
    let taken_over = lock(&fake).acquire().await.unwrap();
    fake.change_owner(NAME, "an operator");
    taken_over.lost().await;

    let other = FakeDb::new();
    other.set_default(Kind::Renew, Gate::Err(QueryErrorKind::Unreachable));
    let unrenewed = lock(&other).acquire().await.unwrap();
    unrenewed.lost().await;
    // The lease reads its deadline itself; the keep-alive task reports the loss as it
    // wakes at the same instant.
    settle().await;

    let metrics = snapshot(&snapshotter);
    for reason in ["taken_over", "renewal_failed"] {
        let key = format!("dlock_lost_total{{lock=job,reason={reason}}}");
        assert_eq!(counter(&metrics, &key), 1, "{key}");
    }
    assert_eq!(
        histogram(&metrics, "dlock_hold_seconds{lock=job}"),
        [seconds(RENEW), seconds(SAFE_FOR)]
    );
    drop((taken_over, unrenewed));
}
