//! A held lock: the guard, the lease it shares with the job, and the keep-alive task that
//! renews the lease and tells the job when it is lost.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::context::LockContext;
use crate::query::{QueryError, QueryErrorKind, Statement};
use crate::telemetry;
use crate::{Error, Result};

/// A number that grows by one at every acquisition of a name and is never reset, so a
/// later holder always has a larger token than an earlier one — across releases,
/// expiries and restarts. Pass it to the resource the lock protects, which can refuse
/// writes carrying a token smaller than one it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub(crate) i64);

impl FencingToken {
    /// The token as stored in the lock table (`BIGINT`, always positive).
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a held lock was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The lock row no longer names this acquisition: another holder took it over after
    /// the lease expired, or an operator released or changed it.
    TakenOver,
    /// No renewal succeeded before the lease's safety deadline (90 % of the TTL after the
    /// last successful renewal was sent), so the database may soon let another holder in.
    RenewalFailed {
        /// The error of the last renewal attempt, if one failed rather than hung.
        last_error: Option<String>,
    },
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TakenOver => {
                f.write_str("the lock row was taken over or changed by someone else")
            }
            Self::RenewalFailed { last_error: None } => {
                f.write_str("no renewal of the lease succeeded in time")
            }
            Self::RenewalFailed {
                last_error: Some(error),
            } => write!(
                f,
                "no renewal of the lease succeeded in time (last error: {error})"
            ),
        }
    }
}

/// What a job needs to know about the lock it runs under: the name, the fencing token,
/// and whether the lock is still held. Cheap to clone; hand it to whatever does the work.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    context: Arc<LockContext>,
    owner: String,
    token: FencingToken,
    loss: watch::Receiver<Option<LossReason>>,
}

impl Lease {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.inner.context.name
    }

    /// The fencing token of this acquisition.
    pub fn fencing_token(&self) -> FencingToken {
        self.inner.token
    }

    /// The id of this acquisition, as stored in the lock table's `owner` column.
    pub fn owner_id(&self) -> &str {
        &self.inner.owner
    }

    /// Whether the lock has been lost.
    pub fn is_lost(&self) -> bool {
        self.inner.loss.borrow().is_some()
    }

    /// Why the lock was lost, or `None` while it is held.
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.inner.loss.borrow().clone()
    }

    /// Completes when the lock is lost, with the reason. It fires before the database
    /// could let anyone else take the lock, so stopping the work then keeps it exclusive.
    /// After a release, it never completes.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        let mut loss = self.inner.loss.clone();
        // Clone the reason out: the watch's read guard must not live across an await.
        let reason = loss
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|reason| reason.clone());
        match reason {
            Some(reason) => reason,
            // The keep-alive task ended without a loss: the lock was released.
            None => std::future::pending().await,
        }
    }

    /// The error that reports this lease's loss, for `reason`.
    pub fn lost_error(&self, reason: LossReason) -> Error {
        Error::Lost {
            name: self.name().to_owned(),
            token: self.fencing_token(),
            reason,
        }
    }

    /// The statement that fences a transaction: run it inside the transaction before its
    /// writes, then pass the number of rows it returned to [`Lease::check_fence`]. On
    /// success the lock row stays locked until the transaction ends, so nobody can take
    /// the lock over before the writes commit. Adapters wrap this in a helper.
    pub fn fence_statement(&self) -> Statement {
        let context = &self.inner.context;
        context
            .sql
            .fence(&context.name, &self.inner.owner, self.inner.token)
    }

    /// Turns the row count of [`Lease::fence_statement`] into `Ok` when this acquisition
    /// still holds the lock with this token, and [`Error::Fenced`] when it does not.
    pub fn check_fence(&self, rows: usize) -> Result<()> {
        if rows == 1 {
            Ok(())
        } else {
            Err(Error::Fenced {
                name: self.name().to_owned(),
                token: self.fencing_token(),
            })
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name())
            .field("fencing_token", &self.inner.token)
            .field("owner_id", &self.inner.owner)
            .field("lost", &self.loss_reason())
            .finish()
    }
}

type ReleaseReply = oneshot::Sender<Result<()>>;

/// A held lock.
///
/// While it lives, a background task renews the lease every renew interval, retrying
/// failed renewals until the lease's safety deadline; if none succeeds by then, or the
/// database says someone else took the lock over, the [`Lease`] reports the loss.
///
/// **Dropping the guard releases the lock in the background**: the release statement is
/// sent by the keep-alive task after the drop returns, not before. Use
/// [`LockGuard::release`] to wait for the release and see its errors. If the runtime shuts
/// down first, the lock expires after its TTL.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    lease: Lease,
    /// Dropping the sender tells the keep-alive task to release in the background;
    /// sending asks it to release and reply.
    release: Option<oneshot::Sender<ReleaseReply>>,
}

impl LockGuard {
    /// Starts the keep-alive task of a lock acquired by a statement sent at `sent_at`.
    pub(crate) fn start(
        context: Arc<LockContext>,
        owner: String,
        token: FencingToken,
        sent_at: Instant,
        contended: bool,
    ) -> Self {
        let (loss_tx, loss_rx) = watch::channel(None);
        let (release_tx, release_rx) = oneshot::channel();
        let lease = Lease {
            inner: Arc::new(LeaseInner {
                context,
                owner,
                token,
                loss: loss_rx,
            }),
        };
        tokio::spawn(keep_alive(
            lease.clone(),
            sent_at,
            contended,
            loss_tx,
            release_rx,
        ));
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

    /// Whether the lock has been lost.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Completes when the lock is lost. See [`Lease::lost`].
    pub async fn lost(&self) -> LossReason {
        self.lease.lost().await
    }

    /// Releases the lock and waits for the database to confirm.
    ///
    /// Returns [`Error::Lost`] if the lock had been lost before the release, so the caller
    /// learns that its work was not protected to the end, and a database error if the
    /// release statement failed (the lock then expires after its TTL). It never waits past
    /// the end of the lease: if the database has not answered by then (it is unreachable,
    /// or a statement hangs on a dead connection), it returns [`Error::Unreachable`], and
    /// the row frees itself as the lease expires.
    ///
    /// # Cancel Safety
    ///
    /// The release is carried out by the keep-alive task, so dropping this future does not
    /// stop it; only its result is lost.
    pub async fn release(mut self) -> Result<()> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let release = self
            .release
            .take()
            .expect("BUG: release sender taken twice");
        release
            .send(reply_tx)
            .expect("BUG: keep-alive task ended before its guard");
        reply_rx
            .await
            .expect("BUG: keep-alive task dropped a release request")
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.lease)
            .finish()
    }
}

/// Renews the lease until the guard asks for a release or drops, or the lock is lost.
///
/// The loss deadline is measured on the local monotonic clock from the moment the last
/// successful acquire or renewal was *sent*: the database's expiry is at least a TTL after
/// that moment, so firing at 90 % of the TTL fires before anyone else can get in.
async fn keep_alive(
    lease: Lease,
    sent_at: Instant,
    contended: bool,
    loss: watch::Sender<Option<LossReason>>,
    mut release: oneshot::Receiver<ReleaseReply>,
) {
    let context = &lease.inner.context;
    let owner = lease.owner_id();
    let token = lease.fencing_token();
    let options = &context.options;
    let mut safe_until = sent_at + options.safe_for();
    let mut next_renewal = sent_at + options.renew_interval;
    let mut last_error = None;

    let reason = loop {
        tokio::select! {
            biased;
            request = &mut release => {
                let dropped = request.is_err();
                let released =
                    release_with_retries(context, owner, contended, dropped, safe_until).await;
                let result = match released {
                    Ok(true) => {
                        telemetry::released(context, token, sent_at);
                        Ok(())
                    }
                    Ok(false) => {
                        // Someone else changed the row while we held it.
                        telemetry::lost(context, token, &LossReason::TakenOver, sent_at);
                        loss.send_replace(Some(LossReason::TakenOver));
                        Err(lease.lost_error(LossReason::TakenOver))
                    }
                    Err(error) => {
                        telemetry::release_failed(context, token, &error, sent_at);
                        Err(error)
                    }
                };
                if let Ok(reply) = request {
                    let _ = reply.send(result);
                }
                return;
            }
            () = sleep_until(safe_until) => break LossReason::RenewalFailed { last_error },
            (attempt_sent_at, renewed) = renew_at(context, owner, next_renewal) => match renewed {
                Ok(true) => {
                    safe_until = attempt_sent_at + options.safe_for();
                    next_renewal = attempt_sent_at + options.renew_interval;
                    last_error = None;
                    telemetry::renewed(context, token);
                }
                Ok(false) => break LossReason::TakenOver,
                Err(error) => {
                    let retry_in = options.renew_retry_delay();
                    telemetry::renewal_failed(context, token, &error, retry_in, safe_until);
                    last_error = Some(error.to_string());
                    next_renewal = Instant::now() + retry_in;
                }
            },
        }
    };

    telemetry::lost(context, token, &reason, sent_at);
    loss.send_replace(Some(reason.clone()));
    // Still release once asked: the row may be ours yet (the database was unreachable,
    // not taken over), and the release is owner-checked, so it cannot free another's lock.
    let request = release.await;
    let _ = release_with_retries(context, owner, false, false, safe_until).await;
    if let Ok(reply) = request {
        let _ = reply.send(Err(lease.lost_error(reason)));
    }
}

async fn renew_at(context: &LockContext, owner: &str, at: Instant) -> (Instant, Result<bool>) {
    sleep_until(at).await;
    let sent_at = Instant::now();
    (sent_at, context.renew(owner).await)
}

/// A dropped guard has nobody to report to, so its release retries transient errors
/// while the lease is still ours; an explicit release makes one attempt and reports.
///
/// Either way it never waits past the end of the lease (the TTL after the last successful
/// acquire or renewal was sent, `safe_until` being 90 % of the way), when the row frees
/// itself anyway: a statement stuck on an unreachable database must not hang the caller
/// for as long as the partition lasts. It waits at least a retry delay, so that a release
/// asked for late still gets its chance.
pub(crate) async fn release_with_retries(
    context: &LockContext,
    owner: &str,
    contended: bool,
    dropped: bool,
    safe_until: Instant,
) -> Result<bool> {
    let options = &context.options;
    let lease_end = safe_until + (options.ttl - options.safe_for());
    let deadline = lease_end.max(Instant::now() + options.renew_retry_delay());
    let releasing = async {
        loop {
            match context.release(owner, contended).await {
                Err(error)
                    if dropped
                        && error.is_transient()
                        && Instant::now() + options.renew_retry_delay() < safe_until =>
                {
                    tokio::time::sleep(options.renew_retry_delay()).await;
                }
                result => return result,
            }
        }
    };
    tokio::time::timeout_at(deadline, releasing)
        .await
        .unwrap_or_else(|_lease_over| {
            // Not a loss: the work was done while the lease held, and the row frees
            // itself now, as after any failed release.
            Err(Error::query(
                "release the lock",
                QueryError::new(
                    QueryErrorKind::Unreachable,
                    None,
                    "no answer before the lease ran out; the lock frees itself as its \
                     lease has expired",
                ),
            ))
        })
}
