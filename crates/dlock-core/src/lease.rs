//! A held lease: its fencing token, its loss signal, and the facts of the acquisition
//! that made it.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::adapter::Statement;
use crate::clock;
use crate::inner::LockInner;
use crate::options::Options;
use crate::{Error, Result};

/// The facts of one acquisition, known from the moment its acquire statement is sent:
/// they travel together from the attempt to the keep-alive task and the release.
#[derive(Debug, Clone)]
pub(crate) struct Acquisition {
    /// The id stored in the lock row's `owner` column: unique per acquisition.
    pub(crate) owner: String,
    /// When the acquire statement was sent, on [`clock::now`]'s clock.
    pub(crate) sent_at: Instant,
    /// Whether it had to wait for another holder: then the lock's next `acquire` in this
    /// process lets the other waiters go first.
    pub(crate) contended: bool,
}

impl Acquisition {
    /// A new acquisition, about to be sent.
    pub(crate) fn start(contended: bool) -> Self {
        Self {
            owner: crate::random::owner_id(),
            sent_at: clock::now(),
            contended,
        }
    }

    /// Until when the lease it took is safe without a renewal.
    pub(crate) fn safe_until(&self, options: &Options) -> Instant {
        self.sent_at + options.safe_for()
    }
}

/// When a lease whose safety deadline is `safe_until` ends in the database: a tenth of
/// the TTL later, the margin [`Options::safe_for`] keeps.
pub(crate) fn lease_end(safe_until: Instant, options: &Options) -> Instant {
    safe_until + (options.ttl - options.safe_for())
}

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

/// The fencing tokens an acquisition took: a lock's one, or a multi-lock's, one per name.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    /// The lock's token; a multi-lock's first name's (in name order).
    pub(crate) token: FencingToken,
    /// A multi-lock's tokens, one per name in name order; empty for a lock (no allocation
    /// on the lock's path).
    pub(crate) tokens: Vec<FencingToken>,
}

impl Taken {
    pub(crate) fn one(token: FencingToken) -> Self {
        Self {
            token,
            tokens: Vec::new(),
        }
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
pub(crate) enum Status {
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
    lock: Arc<LockInner>,
    acquisition: Acquisition,
    taken: Taken,
    status: watch::Receiver<Status>,
}

impl Lease {
    pub(crate) fn new(
        lock: Arc<LockInner>,
        acquisition: Acquisition,
        taken: Taken,
        status: watch::Receiver<Status>,
    ) -> Self {
        Self {
            inner: Arc::new(LeaseInner {
                lock,
                acquisition,
                taken,
                status,
            }),
        }
    }

    pub(crate) fn lock(&self) -> &Arc<LockInner> {
        &self.inner.lock
    }

    pub(crate) fn acquisition(&self) -> &Acquisition {
        &self.inner.acquisition
    }

    /// The lock's name; a [`MultiLock`](crate::MultiLock)'s is the JSON array of its
    /// names (see [`MultiLock::name`](crate::MultiLock::name)).
    pub fn name(&self) -> &str {
        &self.inner.lock.name
    }

    /// The fencing token of this acquisition; of a [`MultiLock`](crate::MultiLock)'s, the
    /// token of its first name, in name order (each name has its own: see
    /// [`fencing_tokens`](Self::fencing_tokens)).
    pub fn fencing_token(&self) -> FencingToken {
        self.inner.taken.token
    }

    /// Each name this acquisition holds with its fencing token, in name order: the lock's
    /// one, or each name of a [`MultiLock`](crate::MultiLock). A name's token is the one
    /// a [`DistributedLock`](crate::DistributedLock) of that name gets, from the same
    /// counter, so a resource can order writes under either.
    pub fn fencing_tokens(&self) -> impl Iterator<Item = (&str, FencingToken)> {
        let lock = &self.inner.lock;
        let taken = &self.inner.taken;
        let single = lock
            .set
            .is_none()
            .then(|| (lock.name.as_str(), taken.token));
        let members = lock.set.iter().flat_map(|set| set.members.iter());
        let multi = members
            .map(String::as_str)
            .zip(taken.tokens.iter().copied());
        single.into_iter().chain(multi)
    }

    /// The fencing token of `name`, if this acquisition holds it: see
    /// [`fencing_tokens`](Self::fencing_tokens).
    pub fn fencing_token_of(&self, name: &str) -> Option<FencingToken> {
        self.fencing_tokens()
            .find(|(held, _)| *held == name)
            .map(|(_, token)| token)
    }

    /// The id of this acquisition, as stored in the lock table's `owner` column.
    pub fn owner_id(&self) -> &str {
        &self.inner.acquisition.owner
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

    /// Runs `work` while the lease is held: its output, or, at the moment of a loss (or
    /// a release) the reason, `work` then being dropped unfinished. The lease's own clock
    /// is read before every poll of `work`, so it is never polled past the deadline, even
    /// when its thread was blocked and no timer has fired yet.
    pub(crate) async fn run_while_held<F: Future>(&self, work: F) -> Result<F::Output, LossReason> {
        let mut work = std::pin::pin!(work);
        let mut lost = std::pin::pin!(self.lost());
        std::future::poll_fn(|cx| {
            if let Some(reason) = self.loss_reason() {
                return Poll::Ready(Err(reason));
            }
            if let Poll::Ready(reason) = lost.as_mut().poll(cx) {
                return Poll::Ready(Err(reason));
            }
            work.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// The error that reports this lease's loss, for `reason`.
    pub(crate) fn lost_error(&self, reason: LossReason) -> Error {
        Error::Lost {
            name: self.name().to_owned(),
            token: self.fencing_token(),
            reason,
        }
    }

    /// The statement that fences a transaction; see [`adapter::fence`](crate::adapter::fence).
    pub(crate) fn fence_statement(&self) -> Statement {
        let lock = &self.inner.lock;
        let owner = &self.inner.acquisition.owner;
        lock.sql.fence(&lock.name, owner, self.inner.taken.token)
    }

    /// `Ok` when the fence found this acquisition holding the lock with this token (one
    /// row; a multi-lock: one per name) and the lease is still held by the local clock
    /// after it ran.
    pub(crate) fn check_fence(&self, rows: usize) -> Result<()> {
        if u64::try_from(rows) == Ok(self.inner.lock.rows()) && self.is_held() {
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
            .field("fencing_token", &self.inner.taken.token)
            .field("owner_id", &self.inner.acquisition.owner)
            .field("ended", &self.loss_reason())
            .finish()
    }
}
