//! A held lock: the guard the caller keeps, whose drop or release ends the lease.

use std::fmt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::inner::LockInner;
use crate::keep_alive::KeepAlive;
use crate::lease::{Acquisition, Taken};
use crate::{FencingToken, Lease, LossReason, Result};

/// Where the keep-alive task reports how a release asked for by the guard went.
pub(crate) type ReleaseReply = oneshot::Sender<Result<()>>;

/// A held lock.
///
/// While it lives, a background task renews the lease every renew interval, retrying
/// failed or hung renewals until the lease's safety deadline; if none succeeds by then,
/// or the database says someone else took the lock over, the [`Lease`] reports the loss.
///
/// **Dropping the guard releases the lock**, retrying while the lease lasts:
/// - in the runtime's main future (what `#[tokio::main]` runs, `Runtime::block_on`) on a
///   multi-threaded runtime, *before the drop returns*, so a one-shot job whose guard goes
///   out of scope at the end of `main` leaves the lock free when the process exits (the
///   drop blocks that thread for the release's round trip);
/// - everywhere else (in a spawned task, or on a current-thread runtime), in the
///   background: the keep-alive task sends the release after the drop returns. If the
///   runtime shuts down first, the lock stays held until its lease expires, and a WARN
///   (`dlock.abandoned`) says so.
///
/// Use [`LockGuard::release`] (or `lock(f)`) to wait for the release and see its errors.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use dlock_core::DistributedLock;
///
/// let lock = DistributedLock::new("reports/nightly", pool)?;
/// let guard = lock.acquire().await?;
/// let lease = guard.lease().clone();
/// tokio::select! {
///     () = async { /* the work, handed `lease` for its fencing token */ } => {}
///     reason = lease.lost() => eprintln!("lock lost, work stopped: {reason}"),
/// }
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    lease: Lease,
    /// Dropping the sender tells the keep-alive task to release in the background;
    /// sending asks it to release and reply.
    release: Option<oneshot::Sender<ReleaseReply>>,
}

impl LockGuard {
    /// Starts the keep-alive task of an acquisition whose deadline has not passed.
    pub(crate) fn start(lock: Arc<LockInner>, acquisition: Acquisition, taken: Taken) -> Self {
        let (release_tx, release_rx) = oneshot::channel();
        let lease = KeepAlive::spawn(lock, acquisition, taken, release_rx);
        Self {
            lease,
            release: Some(release_tx),
        }
    }

    /// The lease: name, fencing token, loss signal. Clone it into the job.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The fencing token of this acquisition.
    pub fn fencing_token(&self) -> FencingToken {
        self.lease.fencing_token()
    }

    /// Whether the lock is still held. See [`Lease::is_held`].
    pub fn is_held(&self) -> bool {
        self.lease.is_held()
    }

    /// Whether the lock has been lost. See [`Lease::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Completes when the lock is lost or released. See [`Lease::lost`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        self.lease.lost().await
    }

    /// Releases the lock and waits for the database to confirm, retrying transient
    /// failures while the lease lasts (the release is owner-checked, so repeating it is
    /// safe). On PostgreSQL the notice that wakes waiters in other processes is sent in
    /// the background, after this returns: a process that exits at once may not send it,
    /// and those waiters then find the lock free at their next probe.
    ///
    /// It never waits past the end of the lease: if the database has not answered by then
    /// (it is unreachable, or a statement hangs on a dead connection), it gives up, and the
    /// row frees itself as the lease expires.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`](crate::Error::Lost) if the lock had been lost before the release, so
    /// the caller learns that its work was not protected to the end; the last database
    /// error if no attempt succeeded; [`Error::Unreachable`](crate::Error::Unreachable) if
    /// no attempt was answered before the lease ran out.
    ///
    /// # Cancel Safety
    ///
    /// The release is carried out by the keep-alive task, so dropping this future does not
    /// stop it; only its result is lost.
    pub async fn release(mut self) -> Result<()> {
        let ended = |reason| Err(self.lease.lost_error(reason));
        let Some(release) = self.release.take() else {
            return ended(LossReason::Released);
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if release.send(reply_tx).is_err() {
            return ended(
                self.lease
                    .loss_reason()
                    .unwrap_or(LossReason::KeepAliveEnded),
            );
        }
        match reply_rx.await {
            Ok(result) => result,
            // The task ended while releasing (its runtime shut down, or it panicked).
            Err(_) => ended(LossReason::KeepAliveEnded),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        // Only where waiting cannot stall the keep-alive task itself: a multi-threaded
        // runtime runs it on a worker while this thread waits, and the main future (not a
        // task: `try_id` is `None`) is never being dropped by a shutting-down runtime.
        let waits = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                && tokio::task::try_id().is_none()
        });
        if !waits {
            // Dropping the sender asks for a release in the background.
            return;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        if release.send(reply_tx).is_err() {
            return;
        }
        // A thread of its own may block; this one is inside the runtime's `block_on`.
        // The keep-alive task answers by the end of the lease at the latest.
        std::thread::scope(|scope| {
            let _ = scope.spawn(|| reply_rx.blocking_recv()).join();
        });
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.lease)
            .finish()
    }
}
