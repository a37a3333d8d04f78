//! Releasing a held lock: by dropping the guard, by `release().await` (and what it reports
//! after a loss or a failure), and by `lock(job)` on every way the job can end; plus
//! `skip_if_obtained`.

mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dlock_core::adapter::QueryErrorKind;
use dlock_core::{Error, Lease, LossReason, Outcome};
use fake::{FakeDb, Gate, Kind, NAME, RETRY, SAFE_FOR, TTL, builder, lock, ms, settle};
use tokio::time::{Instant, sleep};

/// Sets its flag when dropped: tells whether a job's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn drop_flag() -> (DropFlag, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    (DropFlag(Arc::clone(&flag)), flag)
}

#[derive(Debug)]
enum JobError {
    Lock(Error),
    Failed(&'static str),
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        Self::Lock(error)
    }
}

fn owner_of_row(fake: &FakeDb) -> Option<String> {
    fake.row(NAME).and_then(|row| row.owner)
}

#[tokio::test(start_paused = true)]
async fn dropping_the_guard_releases_in_the_background() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    let owner = guard.lease().owner_id().to_owned();

    drop(guard);
    assert_eq!(
        owner_of_row(&fake).as_deref(),
        Some(owner.as_str()),
        "the release is sent after the drop returns"
    );
    settle().await;

    assert!(fake.was_released(&owner));
    assert_eq!(owner_of_row(&fake), None);
    assert_eq!(fake.count(Kind::Release), 1);
    sleep(TTL * 3).await;
    assert_eq!(fake.count(Kind::Renew), 0, "no renewal after the release");
}

#[tokio::test(start_paused = true)]
async fn release_waits_for_the_database_and_stops_renewing() {
    let fake = FakeDb::new();
    fake.script(Kind::Release, [Gate::Slow(ms(40))]);
    let guard = lock(&fake).acquire().await.unwrap();
    sleep(ms(150)).await;
    let lease = guard.lease().clone();
    let started = Instant::now();

    guard.release().await.expect("released");

    assert_eq!(started.elapsed(), ms(40), "waited for the slow release");
    assert_eq!(owner_of_row(&fake), None);
    assert!(fake.was_released(lease.owner_id()));
    let renewals = fake.count(Kind::Renew);
    sleep(TTL * 3).await;
    assert_eq!(fake.count(Kind::Renew), renewals);
    // A sub-task handed the lease learns that it no longer works under the lock.
    assert!(!lease.is_held());
    assert_eq!(lease.loss_reason(), Some(LossReason::Released));
    assert_eq!(lease.lost().await, LossReason::Released);
}

#[tokio::test(start_paused = true)]
async fn release_after_a_loss_reports_it_and_still_frees_the_row() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Never);
    let guard = lock(&fake).acquire().await.unwrap();
    let (owner, token) = (guard.lease().owner_id().to_owned(), guard.fencing_token());
    sleep(SAFE_FOR + ms(5)).await;
    assert!(guard.is_lost());

    let error = guard.release().await.expect_err("the loss is reported");

    match error {
        Error::Lost {
            name,
            token: lost,
            reason: LossReason::RenewalFailed { .. },
        } => {
            assert_eq!(name, NAME);
            assert_eq!(lost, token);
        }
        other => panic!("expected Error::Lost after a hung renewal, got {other:?}"),
    }
    assert!(
        fake.was_released(&owner),
        "the row was still ours, so it is freed"
    );
    assert_eq!(owner_of_row(&fake), None);
}

/// Found by the torture suite: on a partitioned network a statement hangs until the
/// connection dies, which can take far longer than the lease; the release must not.
#[tokio::test(start_paused = true)]
async fn a_release_that_hangs_gives_up_at_the_end_of_the_lease() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Release, Gate::Never);
    let guard = lock(&fake).acquire().await.unwrap();
    let lease = guard.lease().clone();
    let started = Instant::now();

    let error = guard
        .release()
        .await
        .expect_err("the release never completed");

    // A failed release, not a loss: the lease held while the work was done.
    assert!(
        matches!(
            &error,
            Error::Unreachable {
                action: "release the lock",
                ..
            }
        ),
        "{error:?}"
    );
    let cause = Some(error.to_string());
    assert!(
        cause
            .as_deref()
            .is_some_and(|cause| cause.contains("lease ran out")),
        "its source says why: {cause:?}"
    );
    assert!(
        started.elapsed() <= TTL,
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(
        lease.loss_reason(),
        Some(LossReason::Released),
        "the work was not cut short"
    );
}

#[tokio::test(start_paused = true)]
async fn a_release_after_a_loss_that_hangs_gives_up_too() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Never);
    fake.set_default(Kind::Release, Gate::Never);
    let guard = lock(&fake).acquire().await.unwrap();
    sleep(SAFE_FOR + ms(5)).await;
    assert!(guard.is_lost());
    let started = Instant::now();

    let error = guard.release().await.expect_err("the loss is reported");

    assert!(matches!(error, Error::Lost { .. }), "{error:?}");
    assert!(
        started.elapsed() <= TTL - SAFE_FOR + RETRY,
        "gave up after {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn release_of_a_row_someone_changed_reports_a_takeover_and_frees_nothing() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    sleep(ms(50)).await;
    fake.change_owner(NAME, "an operator");

    let error = guard.release().await.expect_err("not ours any more");

    assert!(
        matches!(
            error,
            Error::Lost {
                reason: LossReason::TakenOver,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(owner_of_row(&fake).as_deref(), Some("an operator"));
}

/// Review finding L3: an explicit release made one attempt, and its caller (which gave up
/// the guard) could not retry, so the name stayed blocked for the rest of the lease.
#[tokio::test(start_paused = true)]
async fn an_explicit_release_retries_a_transient_failure() {
    let fake = FakeDb::new();
    fake.script(Kind::Release, [Gate::Err(QueryErrorKind::Unreachable)]);
    let guard = lock(&fake).acquire().await.unwrap();
    let owner = guard.lease().owner_id().to_owned();
    let t0 = Instant::now();

    guard
        .release()
        .await
        .expect("released on the second attempt");

    let sent: Vec<_> = fake
        .entries(Kind::Release)
        .iter()
        .map(|entry| entry.at - t0)
        .collect();
    assert_eq!(sent, [ms(0), RETRY]);
    assert!(fake.was_released(&owner));
    assert_eq!(owner_of_row(&fake), None);
}

/// Review finding L3, through `lock(f)`, which swallowed the release's error.
#[tokio::test(start_paused = true)]
async fn lock_retries_a_transient_release_failure() {
    let fake = FakeDb::new();
    fake.script(Kind::Release, [Gate::Err(QueryErrorKind::PoolExhausted)]);

    let outcome = lock(&fake)
        .lock(|_lease: Lease| async { Ok::<_, Error>(()) })
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Ran(()));
    assert_eq!(fake.count(Kind::Release), 2);
    assert_eq!(owner_of_row(&fake), None, "free at once, not after the TTL");
}

/// Review finding L4: a retried release whose first attempt committed (its answer was
/// lost) was reported as a takeover: an ERROR, the lost metric, and `TakenOver` on every
/// clone of the lease.
#[tokio::test(start_paused = true)]
async fn a_retry_after_a_release_whose_answer_was_lost_is_not_a_takeover() {
    let fake = FakeDb::new();
    fake.script(Kind::Release, [Gate::AnswerLost(QueryErrorKind::Statement)]);
    let guard = lock(&fake).acquire().await.unwrap();
    let lease = guard.lease().clone();

    guard
        .release()
        .await
        .expect("released by the first attempt");

    assert_eq!(fake.count(Kind::Release), 2);
    assert_eq!(lease.loss_reason(), Some(LossReason::Released));
    assert_eq!(owner_of_row(&fake), None);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_guard_retries_a_transient_release_failure() {
    let fake = FakeDb::new();
    fake.script(
        Kind::Release,
        [
            Gate::Err(QueryErrorKind::PoolExhausted),
            Gate::Err(QueryErrorKind::Statement),
        ],
    );
    let guard = lock(&fake).acquire().await.unwrap();
    let owner = guard.lease().owner_id().to_owned();
    let t0 = Instant::now();

    drop(guard);
    sleep(ms(100)).await;

    let sent: Vec<_> = fake
        .entries(Kind::Release)
        .iter()
        .map(|entry| entry.at - t0)
        .collect();
    assert_eq!(sent, [ms(0), RETRY, RETRY * 2]);
    assert!(fake.was_released(&owner));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_guard_stops_retrying_its_release_at_the_end_of_the_lease() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Release, Gate::Err(QueryErrorKind::Unreachable));
    let guard = lock(&fake).acquire().await.unwrap();
    let t0 = Instant::now();

    drop(guard);
    sleep(TTL * 4).await;

    let releases = fake.entries(Kind::Release);
    assert!(releases.len() >= 2, "retried: {releases:?}");
    assert!(
        releases.iter().all(|entry| entry.at - t0 < TTL),
        "no retry once the row has freed itself: {releases:?}"
    );
    assert_eq!(fake.count(Kind::Renew), 0, "a dropped guard does not renew");
}

#[tokio::test(start_paused = true)]
async fn lock_releases_after_the_job_succeeds() {
    let fake = FakeDb::new();
    let outcome = lock(&fake)
        .lock(|lease: Lease| async move {
            sleep(ms(250)).await;
            Ok::<_, Error>((lease.fencing_token(), lease.owner_id().to_owned()))
        })
        .await
        .expect("ran");

    let (token, owner) = outcome.ran().expect("not skipped");
    assert_eq!(token.get(), 1);
    assert!(fake.was_released(&owner), "released before lock() returned");
    assert_eq!(owner_of_row(&fake), None);
    assert_eq!(fake.count(Kind::Renew), 2, "renewed while the job ran");
}

#[tokio::test(start_paused = true)]
async fn lock_releases_after_the_job_fails_and_returns_its_error() {
    let fake = FakeDb::new();
    let result = lock(&fake)
        .lock(|_lease| async {
            sleep(ms(10)).await;
            Err::<(), _>(JobError::Failed("disk full"))
        })
        .await;

    assert!(
        matches!(result, Err(JobError::Failed("disk full"))),
        "{result:?}"
    );
    assert_eq!(fake.count(Kind::Release), 1);
    assert_eq!(owner_of_row(&fake), None);
    assert_eq!(fake.acquired_owners().len(), 1);
    assert!(fake.was_released(&fake.acquired_owners()[0]));
}

#[tokio::test(start_paused = true)]
async fn lock_releases_when_the_job_panics() {
    let fake = FakeDb::new();
    let lock = lock(&fake);
    let task = tokio::spawn(async move {
        lock.lock(|_lease| async {
            sleep(ms(10)).await;
            panic!("the job panicked");
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        })
        .await
    });

    let error = task.await.expect_err("the panic propagates");
    assert!(error.is_panic());
    settle().await;

    assert_eq!(fake.acquired_owners().len(), 1);
    assert!(fake.was_released(&fake.acquired_owners()[0]));
    assert_eq!(owner_of_row(&fake), None);
}

#[tokio::test(start_paused = true)]
async fn lock_releases_when_its_future_is_dropped() {
    let fake = FakeDb::new();
    let (flag, job_dropped) = drop_flag();
    let lock = lock(&fake);
    let run = lock.lock(move |_lease| async move {
        let _flag = flag;
        std::future::pending::<Result<(), Error>>().await
    });

    assert!(tokio::time::timeout(ms(150), run).await.is_err());
    assert!(job_dropped.load(Ordering::SeqCst));
    settle().await;

    assert_eq!(fake.acquired_owners().len(), 1);
    assert!(fake.was_released(&fake.acquired_owners()[0]));
    assert_eq!(owner_of_row(&fake), None);
}

#[tokio::test(start_paused = true)]
async fn lock_drops_the_job_and_reports_the_loss_when_renewals_fail() {
    let fake = FakeDb::new();
    fake.set_default(Kind::Renew, Gate::Err(QueryErrorKind::Unreachable));
    let (flag, job_dropped) = drop_flag();
    let job_dropped_at_loss = Arc::clone(&job_dropped);
    let t0 = Instant::now();

    let result = lock(&fake)
        .lock(move |lease: Lease| async move {
            let _flag = flag;
            sleep(ms(10_000)).await;
            Ok::<_, Error>(lease.is_lost())
        })
        .await;

    assert_eq!(t0.elapsed(), SAFE_FOR, "returned at the loss deadline");
    assert!(
        matches!(
            result,
            Err(Error::Lost {
                reason: LossReason::RenewalFailed {
                    last_error: Some(_)
                },
                ..
            })
        ),
        "{result:?}"
    );
    assert!(job_dropped_at_loss.load(Ordering::SeqCst));
    assert_eq!(owner_of_row(&fake), None, "still ours, so released");
}

#[tokio::test(start_paused = true)]
async fn lock_drops_the_job_and_reports_a_takeover() {
    let fake = FakeDb::new();
    let (flag, job_dropped) = drop_flag();
    let changer = {
        let fake = Arc::clone(&fake);
        tokio::spawn(async move {
            sleep(ms(150)).await;
            fake.change_owner(NAME, "an operator");
        })
    };

    let result = lock(&fake)
        .lock(move |_lease| async move {
            let _flag = flag;
            std::future::pending::<Result<(), JobError>>().await
        })
        .await;

    changer.await.unwrap();
    assert!(
        matches!(
            result,
            Err(JobError::Lock(Error::Lost {
                reason: LossReason::TakenOver,
                ..
            }))
        ),
        "{result:?}"
    );
    assert!(job_dropped.load(Ordering::SeqCst));
    assert_eq!(owner_of_row(&fake).as_deref(), Some("an operator"));
}

#[tokio::test(start_paused = true)]
async fn skip_if_obtained_skips_the_job_and_names_the_holder() {
    let fake = FakeDb::new();
    fake.hold_elsewhere(NAME, "nightly-report (db-host pid 7)", ms(10_000));
    let ran = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let outcome = builder(&fake)
        .skip_if_obtained(true)
        .build()
        .unwrap()
        .lock({
            let ran = Arc::clone(&ran);
            move |_lease| async move {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            }
        })
        .await
        .expect("skipped, not failed");

    let Outcome::Skipped(holder) = outcome else {
        panic!("expected Outcome::Skipped, got {outcome:?}");
    };
    assert_eq!(holder.as_str(), "nightly-report (db-host pid 7)");
    assert_eq!(holder.expires_in(), ms(10_000));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(t0.elapsed(), ms(0), "did not wait");
    assert_eq!((fake.count(Kind::Acquire), fake.count(Kind::Probe)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn skip_if_obtained_runs_the_job_when_the_lock_is_free() {
    let fake = FakeDb::new();
    let outcome = builder(&fake)
        .skip_if_obtained(true)
        .build()
        .unwrap()
        .lock(|lease: Lease| async move { Ok::<_, Error>(lease.fencing_token().get()) })
        .await
        .unwrap();

    assert_eq!(outcome, Outcome::Ran(1));
    assert_eq!(owner_of_row(&fake), None);
}
