//! A held lock: the guard, the lease it shares with the job, and the keep-alive task that
//! renews the lease and tells the job when it is lost.

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::clock;
use crate::context::{LockContext, Renewal, within};
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

/// Why a lease ended: it was lost, or this holder released it.
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
    /// The task that renews the lease ended while the lock was held: its runtime shut
    /// down, or it panicked (in the adapter, a tracing layer or a metrics recorder).
    /// Nothing renews the lease any more.
    KeepAliveEnded,
    /// This holder released the lock: its guard was released or dropped, or the job of
    /// [`lock`](crate::DistributedLock::lock) returned. Not a failure, but whatever still
    /// holds the lease no longer works under the lock.
    Released,
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
            Self::KeepAliveEnded => f.write_str(
                "the task renewing the lease ended (its runtime shut down or it panicked)",
            ),
            Self::Released => f.write_str("the lock was released by its holder"),
        }
    }
}

/// Where one acquisition stands, as its keep-alive task publishes it. While `Held`, the
/// lease is only as good as its deadline, which every reader checks against the clock
/// itself: a keep-alive task that is starved, or dead, cannot make a lease look live.
#[derive(Debug, Clone)]
enum Status {
    /// Held until `safe_until` (on [`clock::now`]'s clock) unless renewed before then;
    /// `last_error` is that of the last failed renewal since the last success.
    Held {
        safe_until: Instant,
        last_error: Option<String>,
    },
    Ended(LossReason),
}

/// What a job needs to know about the lock it runs under: the name, the fencing token,
/// and whether the lock is still held. Cheap to clone; hand it to whatever does the work.
///
/// The lease checks its own deadline: [`is_held`](Self::is_held),
/// [`is_lost`](Self::is_lost) and [`lost`](Self::lost) turn at the deadline by the local
/// clock, whether or not the task that renews the lease has run — a job that blocks its
/// thread past the deadline finds the lease lost when it looks. Once lost or released,
/// a lease never becomes held again.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<LeaseInner>,
}

struct LeaseInner {
    context: Arc<LockContext>,
    owner: String,
    token: FencingToken,
    status: watch::Receiver<Status>,
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

    /// Whether the lock is still held: not lost, not released, and its deadline not
    /// passed.
    pub fn is_held(&self) -> bool {
        self.loss_reason().is_none()
    }

    /// Whether the lock is no longer held: lost, or released by its holder
    /// ([`LossReason::Released`]). The opposite of [`is_held`](Self::is_held).
    pub fn is_lost(&self) -> bool {
        !self.is_held()
    }

    /// Why the lock is no longer held, or `None` while it is.
    pub fn loss_reason(&self) -> Option<LossReason> {
        ended(&self.inner.status)
    }

    /// Completes when the lock is lost, with the reason, or when it is released
    /// ([`LossReason::Released`]), so that a sub-task handed the lease stops either way.
    /// A loss fires before the database could let anyone else take the lock, so stopping
    /// the work then keeps it exclusive.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        let mut status = self.inner.status.clone();
        loop {
            let safe_until = match &*status.borrow_and_update() {
                Status::Held { safe_until, .. } => *safe_until,
                Status::Ended(reason) => return reason.clone(),
            };
            if let Some(reason) = self.loss_reason() {
                return reason;
            }
            tokio::select! {
                // A renewal moved the deadline, the lease ended, or its task is gone (the
                // next round reads that as a loss).
                changed = status.changed() => if changed.is_err() {
                    return self.loss_reason().unwrap_or(LossReason::KeepAliveEnded);
                },
                () = clock::sleep_until(safe_until) => {}
            }
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
    ///
    /// The lease must also still be held by the local clock *after* the fence ran: a fence
    /// that answers past the deadline is refused whatever the row says, so nothing is
    /// written under a lock whose loss has been (or is about to be) signalled. A loss
    /// signalled after this returned `Ok` does not undo the transaction: its row lock keeps
    /// every takeover out until it ends, so its writes still commit safely.
    pub fn check_fence(&self, rows: usize) -> Result<()> {
        if rows == 1 && self.is_held() {
            Ok(())
        } else {
            Err(Error::Fenced {
                name: self.name().to_owned(),
                token: self.fencing_token(),
            })
        }
    }
}

/// The reason a lease has ended, reading its deadline on the clock. Read under the watch's
/// lock, which the keep-alive task takes to publish a renewal: a reader that saw the
/// deadline pass and a renewal published after it cannot both win (the clock is
/// monotonic), so a lease seen lost stays lost.
fn ended(status: &watch::Receiver<Status>) -> Option<LossReason> {
    let closed = status.has_changed().is_err();
    match &*status.borrow() {
        Status::Ended(reason) => Some(reason.clone()),
        Status::Held {
            safe_until,
            last_error,
        } if clock::now() >= *safe_until => Some(LossReason::RenewalFailed {
            last_error: last_error.clone(),
        }),
        // The keep-alive task ended without saying why: it did not release.
        Status::Held { .. } if closed => Some(LossReason::KeepAliveEnded),
        Status::Held { .. } => None,
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name())
            .field("fencing_token", &self.inner.token)
            .field("owner_id", &self.inner.owner)
            .field("ended", &self.loss_reason())
            .finish()
    }
}

type ReleaseReply = oneshot::Sender<Result<()>>;

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
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    lease: Lease,
    /// Dropping the sender tells the keep-alive task to release in the background;
    /// sending asks it to release and reply.
    release: Option<oneshot::Sender<ReleaseReply>>,
}

/// The facts of one acquisition that its keep-alive task needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acquisition {
    /// When the acquire statement was sent, on [`clock::now`]'s clock.
    pub(crate) sent_at: Instant,
    /// Whether the acquisition had to wait for another holder.
    pub(crate) contended: bool,
}

impl LockGuard {
    /// Starts the keep-alive task of an acquisition whose deadline has not passed.
    pub(crate) fn start(
        context: Arc<LockContext>,
        owner: String,
        token: FencingToken,
        acquisition: Acquisition,
    ) -> Self {
        let safe_until = acquisition.sent_at + context.options.safe_for();
        let (status_tx, status_rx) = watch::channel(Status::Held {
            safe_until,
            last_error: None,
        });
        let (release_tx, release_rx) = oneshot::channel();
        let lease = Lease {
            inner: Arc::new(LeaseInner {
                context,
                owner,
                token,
                status: status_rx,
            }),
        };
        tokio::spawn(
            KeepAlive {
                lease: lease.clone(),
                acquisition,
                status: status_tx,
                safe_until,
                last_clock_reading: None,
            }
            .run(release_rx),
        );
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

    /// Completes when the lock is lost. See [`Lease::lost`].
    pub async fn lost(&self) -> LossReason {
        self.lease.lost().await
    }

    /// Releases the lock and waits for the database to confirm, retrying transient
    /// failures while the lease lasts (the release is owner-checked, so repeating it is
    /// safe). On PostgreSQL the notice that wakes waiters in other processes is sent in
    /// the background, after this returns: a process that exits at once may not send it,
    /// and those waiters then find the lock free at their next probe.
    ///
    /// Returns [`Error::Lost`] if the lock had been lost before the release, so the caller
    /// learns that its work was not protected to the end, and the last database error if
    /// no attempt succeeded. It never waits past the end of the lease: if the database has
    /// not answered by then (it is unreachable, or a statement hangs on a dead connection),
    /// it returns [`Error::Unreachable`], and the row frees itself as the lease expires.
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

/// The task that keeps one acquisition alive: renews the lease until the guard asks for a
/// release or drops, or the lock is lost, and publishes where the lease stands.
///
/// The loss deadline is measured on the local clock ([`clock::now`], which counts a
/// suspended host) from the moment the last successful acquire or renewal was *sent*: the
/// database's expiry is at least a TTL after that moment, so the deadline, at 90 % of the
/// TTL, passes before anyone else can get in.
struct KeepAlive {
    lease: Lease,
    acquisition: Acquisition,
    status: watch::Sender<Status>,
    safe_until: Instant,
    /// The send time and database clock (epoch ms) of the last renewal that reported it.
    last_clock_reading: Option<(Instant, i64)>,
}

impl Drop for KeepAlive {
    /// Dropped while the lease was still held: its runtime shut down (or the task
    /// panicked) before anything released it. Nothing will; say so.
    fn drop(&mut self) {
        if matches!(&*self.status.borrow(), Status::Held { .. }) {
            let options = &self.lease.inner.context.options;
            let left = self.safe_until.saturating_duration_since(clock::now())
                + (options.ttl - options.safe_for());
            telemetry::abandoned(&self.lease.inner.context, self.lease.fencing_token(), left);
        }
    }
}

impl KeepAlive {
    async fn run(mut self, mut release: oneshot::Receiver<ReleaseReply>) {
        let context = Arc::clone(&self.lease.inner.context);
        let options = &context.options;
        let mut next_renewal = self.acquisition.sent_at + options.renew_interval;
        let reason = loop {
            let event = tokio::select! {
                biased;
                request = &mut release => Event::Release(request.ok()),
                () = clock::sleep_until(self.safe_until) => Event::Deadline,
                (sent_at, renewed) = self.renew_at(next_renewal) => Event::Renewal(sent_at, renewed),
            };
            match event {
                Event::Release(reply) => return self.release(reply).await,
                // The timer wakes late after a suspend, never early; the clock decides.
                Event::Deadline if clock::now() < self.safe_until => {}
                Event::Deadline => break self.renewal_failed(),
                Event::Renewal(sent_at, Ok(Renewal::Renewed { database_ms })) => {
                    if !self.extend(sent_at, database_ms) {
                        break self.renewal_failed();
                    }
                    next_renewal = sent_at + options.renew_interval;
                }
                Event::Renewal(_, Ok(Renewal::NotOurs)) => break LossReason::TakenOver,
                Event::Renewal(_, Err(error)) => {
                    let retry_in = options.renew_retry_delay();
                    let context = &self.lease.inner.context;
                    let token = self.lease.fencing_token();
                    telemetry::renewal_failed(context, token, &error, retry_in, self.safe_until);
                    self.status.send_if_modified(|status| match status {
                        Status::Held { last_error, .. } => {
                            *last_error = Some(error.to_string());
                            // Nobody waits on the error alone.
                            false
                        }
                        Status::Ended(_) => false,
                    });
                    next_renewal = clock::now() + retry_in;
                }
            }
        };
        self.lose(reason.clone());
        // Still release once asked: the row may be ours yet (the database was unreachable,
        // not taken over), and the release is owner-checked, so it cannot free another's lock.
        let request = release.await.ok();
        let _ = self.release_row().await;
        if let Some(reply) = request {
            let _ = reply.send(Err(self.lease.lost_error(reason)));
        }
    }

    /// One renewal attempt at `at`, bounded so that one hung on a dead connection is
    /// abandoned and retried (on another checkout) before the deadline.
    async fn renew_at(&self, at: Instant) -> (Instant, Result<Renewal>) {
        let context = &self.lease.inner.context;
        clock::sleep_until(at).await;
        let sent_at = clock::now();
        let bound = context.options.renew_attempt_bound();
        let renewed = within(
            "renew the lease",
            bound,
            context.renew(self.lease.owner_id()),
        )
        .await;
        (sent_at, renewed)
    }

    /// Moves the deadline after a renewal sent at `sent_at` succeeded; `false` if the old
    /// deadline had passed by now (a lease seen lost stays lost).
    ///
    /// `database_ms` is the database's clock when it renewed, where the dialect reports it:
    /// if the database's clock ran ahead of ours since the last renewal (an NTP step, a
    /// failover to a host whose clock is ahead), the lease it grants ends earlier by our
    /// clock, so the deadline is pulled in by as much.
    fn extend(&mut self, sent_at: Instant, database_ms: Option<i64>) -> bool {
        let context = Arc::clone(&self.lease.inner.context);
        let mut safe_until = sent_at + context.options.safe_for();
        if let Some(database_ms) = database_ms {
            let now = clock::now();
            if let Some((last_sent_at, last_database_ms)) = self.last_clock_reading {
                // Both database readings lie between the last send and this answer.
                let local = now.saturating_duration_since(last_sent_at);
                let database = u64::try_from(database_ms - last_database_ms).unwrap_or(0);
                let ahead = Duration::from_millis(database).saturating_sub(local);
                if !ahead.is_zero() {
                    telemetry::database_clock_ahead(&context, self.lease.fencing_token(), ahead);
                    safe_until = safe_until.checked_sub(ahead).unwrap_or(sent_at);
                }
            }
            self.last_clock_reading = Some((sent_at, database_ms));
        }
        let old_safe_until = self.safe_until;
        let extended = self.status.send_if_modified(|status| {
            if clock::now() >= old_safe_until {
                return false;
            }
            *status = Status::Held {
                safe_until,
                last_error: None,
            };
            true
        });
        if extended {
            self.safe_until = safe_until;
            telemetry::renewed(&context, self.lease.fencing_token());
        }
        extended
    }

    /// The loss when no renewal succeeded in time, with the last renewal error.
    fn renewal_failed(&self) -> LossReason {
        let last_error = match &*self.status.borrow() {
            Status::Held { last_error, .. } => last_error.clone(),
            Status::Ended(_) => None,
        };
        LossReason::RenewalFailed { last_error }
    }

    fn lose(&self, reason: LossReason) {
        let context = &self.lease.inner.context;
        let token = self.lease.fencing_token();
        telemetry::lost(context, token, &reason, self.acquisition.sent_at);
        self.status.send_replace(Status::Ended(reason));
    }

    /// Releases at the guard's request (`reply` is `None` when the guard was dropped),
    /// unless the lock was lost first, and reports.
    async fn release(self, reply: Option<ReleaseReply>) {
        let context = Arc::clone(&self.lease.inner.context);
        let token = self.lease.fencing_token();
        if clock::now() >= self.safe_until {
            let reason = self.renewal_failed();
            self.lose(reason.clone());
            let _ = self.release_row().await;
            if let Some(reply) = reply {
                let _ = reply.send(Err(self.lease.lost_error(reason)));
            }
            return;
        }
        let result = match self.release_row().await {
            Ok(Released::Now) => {
                telemetry::released(&context, token, self.acquisition.sent_at);
                self.status
                    .send_replace(Status::Ended(LossReason::Released));
                Ok(())
            }
            Ok(Released::Earlier) => {
                // A retry found the row freed: by an earlier attempt whose answer was lost
                // (most likely), or by a takeover nobody can tell apart from it now.
                telemetry::released_earlier(&context, token, self.acquisition.sent_at);
                self.status
                    .send_replace(Status::Ended(LossReason::Released));
                Ok(())
            }
            Ok(Released::NotOurs) => {
                // Someone else changed the row while we held it.
                self.lose(LossReason::TakenOver);
                Err(self.lease.lost_error(LossReason::TakenOver))
            }
            Err(error) => {
                telemetry::release_failed(&context, token, &error, self.acquisition.sent_at);
                self.status
                    .send_replace(Status::Ended(LossReason::Released));
                Err(error)
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    async fn release_row(&self) -> Result<Released> {
        let context = &self.lease.inner.context;
        release_with_retries(
            context,
            self.lease.owner_id(),
            self.acquisition.contended,
            self.safe_until,
        )
        .await
    }
}

/// What woke the keep-alive task.
enum Event {
    /// The guard asked for a release (with a reply channel) or was dropped (`None`).
    Release(Option<ReleaseReply>),
    /// The deadline's timer fired.
    Deadline,
    /// A renewal sent at this instant answered.
    Renewal(Instant, Result<Renewal>),
}

/// What a release found.
#[derive(Debug)]
pub(crate) enum Released {
    /// It freed the row.
    Now,
    /// A retry found the row no longer ours after an earlier attempt that may have
    /// committed before its answer was lost.
    Earlier,
    /// The row was not ours.
    NotOurs,
}

/// Releases the row of `owner`, retrying transient errors while the lease lasts: the
/// statement is owner-checked, so repeating it is safe, and without it the name would stay
/// blocked for the rest of the lease with nobody renewing.
///
/// It never waits past the end of the lease (the TTL after the last successful acquire or
/// renewal was sent, `safe_until` being 90 % of the way), when the row frees itself anyway:
/// a statement stuck on an unreachable database must not hang the caller for as long as
/// the partition lasts. It waits at least a retry delay, so that a release asked for late
/// still gets its chance.
pub(crate) async fn release_with_retries(
    context: &LockContext,
    owner: &str,
    contended: bool,
    safe_until: Instant,
) -> Result<Released> {
    let options = &context.options;
    let lease_end = safe_until + (options.ttl - options.safe_for());
    let deadline = lease_end.max(clock::now() + options.renew_retry_delay());
    let mut may_have_committed = false;
    let releasing = async {
        loop {
            match context.release(owner, contended).await {
                Ok(true) => return Ok(Released::Now),
                Ok(false) if may_have_committed => return Ok(Released::Earlier),
                Ok(false) => return Ok(Released::NotOurs),
                Err(error) if error.is_transient() => {
                    may_have_committed |= error.may_have_committed();
                    if clock::now() + options.renew_retry_delay() >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(options.renew_retry_delay()).await;
                }
                Err(error) => return Err(error),
            }
        }
    };
    tokio::time::timeout_at(clock::to_timer(deadline), releasing)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::query::{QueryError, QueryInterface, Row, Statement, Value};
    use crate::{Dialect, DistributedLock, async_trait};

    /// A database on which every acquire succeeds with token 1 and every statement
    /// affects one row.
    #[derive(Debug)]
    struct Agreeable;

    #[async_trait]
    impl QueryInterface for Agreeable {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        async fn execute(&self, _: &Statement) -> Result<u64, QueryError> {
            Ok(1)
        }

        async fn query(&self, _: &Statement) -> Result<Vec<Row>, QueryError> {
            Ok(vec![vec![Value::Int(1)]])
        }
    }

    /// Review finding S5: the monotonic clock stops while the host is suspended, but the
    /// database's lease runs on. After a resume the lease must be lost at once, without
    /// waiting for a timer on the stopped clock.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_longer_than_the_lease_loses_it_at_once() {
        let lock = DistributedLock::builder("suspended", Agreeable)
            .ttl(Duration::from_secs(3))
            .build()
            .unwrap();
        let guard = lock.acquire().await.unwrap();
        assert!(guard.is_held());

        crate::clock::tests::suspend(Duration::from_secs(6));

        assert_eq!(
            guard.lease().loss_reason(),
            Some(super::LossReason::RenewalFailed { last_error: None })
        );
    }
}
