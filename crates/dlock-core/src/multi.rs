//! The multi-lock: several names taken together, all or none, held by one guard.
//!
//! It is a lock whose statements act on a set of rows (see `name_set.rs` and
//! `dialect::SetTemplates`): waiting, the lease, its renewal, loss and release are the
//! lock's own machinery, run once for the whole set.

use std::fmt;

use crate::adapter::IntoQueryInterface;
use crate::{
    Attempt, DistributedLock, Error, FencingToken, Lease, LockGuard, LossReason, MultiLockBuilder,
    Outcome, Result,
};

/// Several named locks taken together: all of them or none, never some.
///
/// Each name is the row of a [`DistributedLock`] of that name, with its own fencing token
/// from the same counter, so a lock and a multi-lock over a common name exclude each
/// other. One acquisition takes every name in one statement, or nothing (no other holder
/// ever sees it holding only some), and never waits for another multi-lock while it holds
/// a name, so multi-locks over overlapping names cannot deadlock. One lease covers them
/// all: one renewal statement for the set, and the loss of any name is the loss of the
/// lease, signalled before the database could let anyone else take it. Waiting never
/// writes; a waiter wakes on the release of any of its names where releases are heard
/// (PostgreSQL), and probes with back-off elsewhere.
///
/// See [what it guarantees, and what that assumes](https://github.com/dlock-rs/dlock/blob/main/docs/multi-locks.md).
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use dlock_core::MultiLock;
///
/// let accounts = MultiLock::new(["account/17", "account/42"], pool)?;
/// let guard = accounts.acquire().await?;
/// for (name, token) in guard.fencing_tokens() {
///     println!("{name} held with fencing token {token}");
/// }
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MultiLock {
    lock: DistributedLock,
}

impl MultiLock {
    pub(crate) fn from_lock(lock: DistributedLock) -> Self {
        Self { lock }
    }

    /// A multi-lock of `names` on the database behind `pool`, with the default options.
    ///
    /// # Errors
    ///
    /// As [`MultiLockBuilder::build`](crate::LockBuilder::build). Never touches the
    /// database.
    pub fn new<M, N>(
        names: impl IntoIterator<Item = N>,
        pool: impl IntoQueryInterface<M>,
    ) -> Result<Self>
    where
        N: Into<String>,
    {
        Self::builder(names, pool).build()
    }

    /// A builder for a multi-lock of `names` (a set: duplicates are merged) on the
    /// database behind `pool`, to set options: the same as a lock's.
    pub fn builder<M, N>(
        names: impl IntoIterator<Item = N>,
        pool: impl IntoQueryInterface<M>,
    ) -> MultiLockBuilder
    where
        N: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        MultiLockBuilder::for_names(names, pool.into_query_interface())
    }

    /// The names, distinct and in name order: the order they are taken in.
    pub fn names(&self) -> &[String] {
        members(self.lock.inner())
    }

    /// The names as one JSON array (`["a","b"]`): how the multi-lock is named in its
    /// lease, errors and telemetry.
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// Makes one attempt to take every name: one statement (MySQL/MariaDB: a second reads
    /// the tokens), which takes all of them or none.
    ///
    /// Returns [`Attempt::Acquired`] with a guard, or [`Attempt::Held`] naming the holder
    /// of a name that is held (the one whose lease ends last).
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe, as [`DistributedLock::try_acquire`].
    pub async fn try_acquire(&self) -> Result<Attempt<MultiLockGuard>> {
        Ok(match self.lock.try_acquire().await? {
            Attempt::Acquired(guard) => Attempt::Acquired(MultiLockGuard { guard }),
            Attempt::Held(holder) => Attempt::Held(holder),
        })
    }

    /// Waits until every name is free and takes them all, or until the acquire timeout,
    /// if one is set, runs out ([`Error::Timeout`]). Waiting only reads, as a lock's.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held.
    pub async fn acquire(&self) -> Result<MultiLockGuard> {
        let guard = self.lock.acquire().await?;
        Ok(MultiLockGuard { guard })
    }

    /// Runs `job` holding every name and releases them afterwards, on every path, as
    /// [`DistributedLock::lock`] does (with `skip_if_obtained`, one attempt). The job's
    /// [`Lease`] gives each name's token ([`Lease::fencing_tokens`]); the loss of any
    /// name drops the job and returns [`Error::Lost`].
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::lock`].
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and releases every name in the background.
    pub async fn lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.lock.lock(job).await
    }

    /// Creates the lock table if it does not exist, as [`DistributedLock::create_table`].
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::create_table`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe.
    pub async fn create_table(&self) -> Result<()> {
        self.lock.create_table().await
    }
}

impl fmt::Debug for MultiLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLock")
            .field("names", &self.names())
            .field("lock", &self.lock)
            .finish()
    }
}

fn members(lock: &crate::inner::LockInner) -> &[String] {
    lock.set
        .as_ref()
        .map(|set| set.members.as_slice())
        .expect("BUG: a multi-lock is built with its set of names")
}

/// Every name of a [`MultiLock`], held together: one lease, renewed for all names by one
/// statement, lost as soon as any name is.
///
/// **Dropping the guard releases every name**, as dropping a [`LockGuard`] does (before
/// the drop returns in the runtime's main future on a multi-threaded runtime, in the
/// background elsewhere); [`release`](Self::release) waits and reports.
#[must_use = "the names are released as soon as the guard is dropped"]
pub struct MultiLockGuard {
    guard: LockGuard,
}

impl MultiLockGuard {
    /// The lease of the whole set: loss signal, tokens. Clone it into the job.
    pub fn lease(&self) -> &Lease {
        self.guard.lease()
    }

    /// The names held, in name order.
    pub fn names(&self) -> &[String] {
        members(self.guard.lease().lock())
    }

    /// Each name with its fencing token, in name order.
    pub fn fencing_tokens(&self) -> impl Iterator<Item = (&str, FencingToken)> {
        self.guard.lease().fencing_tokens()
    }

    /// The fencing token of `name`, if it is one of the names held.
    pub fn fencing_token(&self, name: &str) -> Option<FencingToken> {
        self.guard.lease().fencing_token_of(name)
    }

    /// Whether every name is still held. See [`Lease::is_held`].
    pub fn is_held(&self) -> bool {
        self.guard.is_held()
    }

    /// Whether the names are no longer held (any of them lost, or released). See
    /// [`Lease::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    /// Completes when any name is lost, or all are released. See [`Lease::lost`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        self.guard.lost().await
    }

    /// Releases every name (one statement) and waits for the database to confirm, as
    /// [`LockGuard::release`].
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`]; [`Error::Lost`] also when some name had been taken from
    /// this acquisition (the others are freed).
    ///
    /// # Cancel Safety
    ///
    /// As [`LockGuard::release`]: the release goes on; only its result is lost.
    pub async fn release(self) -> Result<()> {
        self.guard.release().await
    }
}

impl fmt::Debug for MultiLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLockGuard")
            .field("lease", self.guard.lease())
            .finish()
    }
}
