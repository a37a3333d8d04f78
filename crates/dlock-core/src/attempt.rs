//! One attempt to take the lock: one acquire statement, run in the caller's task. A
//! caller dropped while the statement is in flight hands it to a task of its own, so
//! that it cannot leave an acquisition nobody knows of.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::Instrument;

use crate::adapter::{QueryError, QueryErrorKind};
use crate::clock;
use crate::inner::{LockInner, Released, within};
use crate::lease::{Acquisition, Taken};
use crate::telemetry;
use crate::{Error, LockGuard, Result};

type Answer = Result<Option<Taken>>;

/// The acquire statement, bounded by the TTL: any acquisition it made has expired by
/// then anyway.
type Taking = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// Makes one acquisition attempt, as the waiting `acquire` does after another holder when
/// `contended`. Whoever ends up with an unclaimed acquisition — this function, or the
/// task an [`InFlight`] statement goes on in when the caller is dropped — releases it.
///
/// An answer that arrives after the acquisition's own deadline (the reply was delayed
/// past 90 % of the TTL) counts as not acquired: the lease may already have expired and
/// another holder got in, so the acquisition is released and never handed out.
pub(crate) async fn attempt(
    lock: &Arc<LockInner>,
    contended: bool,
    started: tokio::time::Instant,
) -> Result<Option<LockGuard>> {
    attempt_with(lock, contended, false, started).await
}

/// [`attempt`] by a waiter woken by a release notice, which attempts only if it gets the
/// lock's turn (where the dialect has turns): `Ok(None)` too when another waiter had it.
pub(crate) async fn attempt_in_turn(
    lock: &Arc<LockInner>,
    started: tokio::time::Instant,
) -> Result<Option<LockGuard>> {
    attempt_with(lock, true, true, started).await
}

async fn attempt_with(
    lock: &Arc<LockInner>,
    contended: bool,
    in_turn: bool,
    started: tokio::time::Instant,
) -> Result<Option<LockGuard>> {
    let acquisition = Acquisition::start(contended);
    telemetry::attempting(lock);
    // From here to the guard, nothing is awaited that a cancelled caller could leave
    // with an acquisition in hand: the answer comes back in the same poll that ends the
    // statement, and the guard that will release it is built without a pause.
    let taken = match InFlight::start(lock, &acquisition, in_turn).answer().await {
        Ok(Some(taken)) => taken,
        Ok(None) => return Ok(None),
        Err(error) => {
            // A connection lost on the way back: the statement may have committed.
            if error.may_have_committed() {
                release_in_background(Arc::clone(lock), acquisition);
            }
            return Err(error);
        }
    };
    if clock::now() >= acquisition.safe_until(&lock.options) {
        telemetry::answered_too_late(lock, taken.token);
        // In a task of its own, so that a cancelled caller still frees it; awaited, so
        // that the probe which follows does not find this acquisition holding it.
        let lock = Arc::clone(lock);
        let release = async move { release_unclaimed(&lock, &acquisition).await };
        let _ = tokio::spawn(release.in_current_span()).await;
        return Ok(None);
    }
    telemetry::acquired(lock, taken.token, started);
    crate::durability::check_once(lock);
    Ok(Some(LockGuard::start(Arc::clone(lock), acquisition, taken)))
}

/// Releases an acquisition nobody will hear of. Nobody else would retry it, so transient
/// errors (a pool checkout that timed out under load) are retried while the lease could
/// still be ours; otherwise the name would be blocked for a whole TTL.
async fn release_unclaimed(lock: &LockInner, acquisition: &Acquisition) {
    let safe_until = acquisition.safe_until(&lock.options);
    if let Ok(Released::Now) = lock.release(acquisition, safe_until).await {
        telemetry::unclaimed_released();
    }
}

fn release_in_background(lock: Arc<LockInner>, acquisition: Acquisition) {
    let release = async move { release_unclaimed(&lock, &acquisition).await };
    tokio::spawn(release.in_current_span());
}

/// The acquire statement in flight, polled by the caller's task — a task of its own
/// would cost a spawn and a hand-off between threads on every attempt. Dropped before
/// it has answered, it goes on in a task of its own, which releases what it took.
struct InFlight {
    /// `None` once answered: nothing is left for the drop.
    taking: Option<Taking>,
    lock: Arc<LockInner>,
    acquisition: Acquisition,
}

impl InFlight {
    fn start(lock: &Arc<LockInner>, acquisition: &Acquisition, in_turn: bool) -> Self {
        let taking: Taking = {
            let lock = Arc::clone(lock);
            let owner = acquisition.owner.clone();
            Box::pin(async move {
                let ttl = lock.options.ttl;
                within("acquire the lock", ttl, lock.try_take(&owner, in_turn)).await
            })
        };
        Self {
            taking: Some(taking),
            lock: Arc::clone(lock),
            acquisition: acquisition.clone(),
        }
    }

    async fn answer(mut self) -> Answer {
        let answer = std::future::poll_fn(|cx| match self.taking.as_mut() {
            Some(taking) => poll_catching_panics(taking, cx),
            None => Poll::Ready(Ok(None)),
        })
        .await;
        self.taking = None;
        answer
    }
}

/// Polls the statement; an adapter that panics fails the attempt, as a task of its own
/// would have, rather than the caller's task. Whatever it may have taken expires with
/// its lease.
fn poll_catching_panics(taking: &mut Taking, cx: &mut Context<'_>) -> Poll<Answer> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| taking.as_mut().poll(cx))) {
        Ok(poll) => poll,
        Err(_panic) => Poll::Ready(Err(Error::query(
            "acquire the lock",
            QueryError::new(
                QueryErrorKind::Statement,
                None,
                "the adapter panicked while running the acquire statement",
            ),
        ))),
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(taking) = self.taking.take() else {
            return;
        };
        // Without a runtime (it is shutting down) the statement is abandoned: an
        // acquisition it made expires with its lease.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (lock, acquisition) = (Arc::clone(&self.lock), self.acquisition.clone());
        let finish = async move {
            let taken = taking.await;
            let may_have_taken = match &taken {
                Ok(taken) => taken.is_some(),
                Err(error) => error.may_have_committed(),
            };
            if may_have_taken {
                release_unclaimed(&lock, &acquisition).await;
            }
        };
        runtime.spawn(finish.in_current_span());
    }
}
