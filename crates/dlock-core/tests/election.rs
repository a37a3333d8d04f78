//! Elections on the lock's state machine: a campaign leads only with its value published
//! while the lease held, a proclamation after a takeover is a loss, and observers show
//! each change once and never a term older than one they showed.

mod fake;

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::QueryInterface;
use dlock_core::{Election, Error, LossReason};
use fake::{FakeDb, Gate, Kind, NAME, RENEW, SAFE_FOR, TTL, ms, settle};

fn election(fake: &Arc<FakeDb>, value: &str) -> Election {
    let queries: Arc<dyn QueryInterface> = fake.clone();
    Election::builder(NAME, queries)
        .table(fake.table())
        .ttl(TTL)
        .renew_interval(RENEW)
        .poll_interval(ms(50))
        .value(value)
        .build()
        .expect("valid options")
}

/// A value published only after the lease's deadline may belong to a term that others
/// already see ended: the campaign does not lead on it, but releases and campaigns again.
#[tokio::test(start_paused = true)]
async fn a_proclamation_answered_past_the_deadline_does_not_lead() {
    let fake = FakeDb::new();
    // The acquisition answers late (but in time), the renewals hang, and the
    // proclamation answers later still: it publishes while the row is live, but answers
    // past the deadline, 270 ms after the acquire was sent.
    fake.script(Kind::Acquire, [Gate::Lag(ms(200))]);
    fake.script(Kind::Renew, [Gate::Never, Gate::Never]);
    fake.script(Kind::Proclaim, [Gate::Slow(SAFE_FOR - ms(200) + ms(20))]);
    let leadership = election(&fake, "10.0.0.7").campaign().await.expect("leads");

    assert_eq!(leadership.term().get(), 2, "led on the first, late, term");
    assert!(!leadership.is_lost());
    assert_eq!(fake.count(Kind::Proclaim), 2);
    let owners = fake.acquired_owners();
    let [first, _] = owners.as_slice() else {
        panic!("two acquisitions expected: {owners:?}");
    };
    assert!(fake.was_released(first), "the late term was not released");
}

/// Proclaiming after someone else took the row over reports the loss, and publishes
/// nothing.
#[tokio::test(start_paused = true)]
async fn a_proclamation_after_a_takeover_is_a_loss() {
    let fake = FakeDb::new();
    let leadership = election(&fake, "a").campaign().await.expect("leads");
    fake.change_owner(NAME, "the operator");

    let proclaimed = leadership.proclaim("b").await;

    assert!(
        matches!(
            proclaimed,
            Err(Error::Lost {
                reason: LossReason::TakenOver,
                ..
            })
        ),
        "{proclaimed:?}"
    );
    assert_eq!(
        fake.row(NAME).and_then(|row| row.value).map(|v| v.0),
        Some("a".into())
    );
}

/// An observer shows nobody, the new leader, its new value, and nobody again after the
/// resignation: each once, woken by this process's notices.
#[tokio::test(start_paused = true)]
async fn an_observer_shows_each_change_once() {
    let fake = FakeDb::new();
    let election = election(&fake, "a");
    let mut observer = election.observe();
    assert_eq!(observer.changed().await.expect("a reading"), None);

    let leadership = election.campaign().await.expect("leads");
    let leader = observer
        .changed()
        .await
        .expect("a reading")
        .expect("a leader");
    assert_eq!(
        (leader.term, leader.value.as_str()),
        (leadership.term(), "a")
    );
    leadership.proclaim("b").await.expect("proclaimed");
    let leader = observer
        .changed()
        .await
        .expect("a reading")
        .expect("a leader");
    assert_eq!(
        (leader.term, leader.value.as_str()),
        (leadership.term(), "b")
    );
    leadership.resign().await.expect("resigned");
    assert_eq!(observer.changed().await.expect("a reading"), None);

    // Nothing changes: no reading is shown, however long it watches.
    let quiet = tokio::time::timeout(Duration::from_secs(5), observer.changed()).await;
    assert!(
        quiet.is_err(),
        "an unchanged leader was shown again: {quiet:?}"
    );
}

/// A reading with a smaller term than one shown (a replica behind) is not shown; the
/// next larger term is.
#[tokio::test(start_paused = true)]
async fn an_observer_never_goes_back_to_an_older_term() {
    let fake = FakeDb::new();
    fake.lead_elsewhere(NAME, 5, "new", Duration::from_secs(60));
    let mut observer = election(&fake, "me").observe();
    let leader = observer
        .changed()
        .await
        .expect("a reading")
        .expect("a leader");
    assert_eq!(leader.term.get(), 5);

    fake.lead_elsewhere(NAME, 3, "old", Duration::from_secs(60));
    settle().await;
    let older = tokio::time::timeout(ms(500), observer.changed()).await;
    assert!(older.is_err(), "an older term was shown: {older:?}");

    fake.lead_elsewhere(NAME, 6, "newer", Duration::from_secs(60));
    let leader = observer
        .changed()
        .await
        .expect("a reading")
        .expect("a leader");
    assert_eq!((leader.term.get(), leader.value.as_str()), (6, "newer"));
}
