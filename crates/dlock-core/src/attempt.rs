//! One attempt to take the lock: one acquire statement, run in a task of its own so that
//! a dropped caller cannot leave an acquisition nobody knows of.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use crate::adapter::{QueryError, QueryErrorKind};
use crate::clock;
use crate::inner::{LockInner, Released, within};
use crate::lease::{Acquisition, Taken};
use crate::telemetry;
use crate::{Error, LockGuard, Result};

type Answer = Result<Option<Taken>>;

/// Makes one acquisition attempt, as the waiting `acquire` does after another holder when
/// `contended`. Whoever ends up with an unclaimed acquisition — the statement's task, or
/// the caller's [`PendingAnswer`] when dropped — releases it.
///
/// An answer that arrives after the acquisition's own deadline (the reply was delayed
/// past 90 % of the TTL) counts as not acquired: the lease may already have expired and
/// another holder got in, so the acquisition is released and never handed out.
pub(crate) async fn attempt(
    lock: &Arc<LockInner>,
    contended: bool,
    started: tokio::time::Instant,
) -> Result<Option<LockGuard>> {
    let acquisition = Acquisition::start(contended);
    let (answer_tx, answer_rx) = oneshot::channel();
    telemetry::attempting(lock);
    let task = take_or_release(Arc::clone(lock), acquisition.clone(), answer_tx);
    tokio::spawn(task.in_current_span());
    let mut answer = PendingAnswer {
        receiver: answer_rx,
        lock: Arc::clone(lock),
        acquisition: Some(acquisition.clone()),
    };
    let Ok(taken) = (&mut answer.receiver).await else {
        // The task ended without answering: the adapter panicked, or the runtime is
        // shutting down. An acquisition it made expires with its lease.
        return Err(Error::query(
            "acquire the lock",
            QueryError::new(
                QueryErrorKind::Statement,
                None,
                "the acquire statement's task ended without an answer (the adapter \
                 panicked or the runtime is shutting down)",
            ),
        ));
    };
    let Some(taken) = taken? else {
        return Ok(None);
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

/// Runs the acquire statement and hands the answer to the caller, releasing the lock
/// when nobody will: the caller is gone, or the statement failed in a way that may have
/// come after it committed (a connection lost on the way back). The release is
/// owner-checked, so it is harmless when nothing was taken.
async fn take_or_release(
    lock: Arc<LockInner>,
    acquisition: Acquisition,
    answer: oneshot::Sender<Answer>,
) {
    // Bounded by the TTL: any acquisition it made has expired by then anyway.
    let taking = lock.try_take(&acquisition.owner);
    let taken = within("acquire the lock", lock.options.ttl, taking).await;
    let may_have_taken = matches!(&taken, Err(error) if error.may_have_committed());
    let unheard = matches!(answer.send(taken), Err(Ok(Some(_))));
    if unheard || may_have_taken {
        release_unclaimed(&lock, &acquisition).await;
    }
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

/// The caller's end of an attempt. Built before the first await, so that a caller
/// dropped with an acquisition in it that it never read (cancelled between the answer and
/// its next poll) still releases that acquisition.
struct PendingAnswer {
    receiver: oneshot::Receiver<Answer>,
    lock: Arc<LockInner>,
    /// Taken by the drop.
    acquisition: Option<Acquisition>,
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        // After close(), the task's send fails (and it releases) or has succeeded, in
        // which case the answer is here: exactly one of the two sees it.
        self.receiver.close();
        let Ok(Ok(Some(_))) = self.receiver.try_recv() else {
            return;
        };
        let (Ok(runtime), Some(mut acquisition)) = (
            tokio::runtime::Handle::try_current(),
            self.acquisition.take(),
        ) else {
            return;
        };
        // The acquisition happened at most a TTL ago: its lease ends no sooner.
        acquisition.sent_at = clock::now();
        let lock = Arc::clone(&self.lock);
        let release = async move { release_unclaimed(&lock, &acquisition).await };
        runtime.spawn(release.in_current_span());
    }
}
