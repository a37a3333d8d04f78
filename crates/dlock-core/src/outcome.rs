//! What an attempt or a locked job came to.

use std::fmt;
use std::time::Duration;

use crate::LockGuard;

/// The result of [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire)
/// (and, with a [`MultiLockGuard`](crate::MultiLockGuard), of
/// [`MultiLock::try_acquire`](crate::MultiLock::try_acquire)).
#[derive(Debug)]
#[must_use]
pub enum Attempt<G = LockGuard> {
    /// The lock is ours.
    Acquired(G),
    /// Someone else holds a live lease.
    Held(Holder),
}

impl<G> Attempt<G> {
    /// The guard, if the lock was acquired.
    pub fn acquired(self) -> Option<G> {
        match self {
            Self::Acquired(guard) => Some(guard),
            Self::Held(_) => None,
        }
    }
}

/// Who holds a lock, as recorded in the lock table, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub(crate) holder: String,
    pub(crate) expires_in: Duration,
}

impl Holder {
    /// The holder as recorded: the name it gave with
    /// [`LockBuilder::holder`](crate::LockBuilder::holder), if any, its host and its
    /// process id (`billing-worker (web-1 pid 42)`).
    pub fn as_str(&self) -> &str {
        &self.holder
    }

    /// How long its lease has left, by the database's clock, when it was read. The
    /// holder renews it while it is alive.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (lease ends in {} ms unless renewed)",
            self.holder,
            self.expires_in.as_millis()
        )
    }
}

/// The result of [`DistributedLock::lock`](crate::DistributedLock::lock): the job ran, or
/// was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome<T> {
    /// The job ran under the lock and returned this value.
    Ran(T),
    /// `skip_if_obtained` was set and this holder had the lock, so the job did not run.
    Skipped(Holder),
}

impl<T> Outcome<T> {
    /// The job's value, if it ran.
    pub fn ran(self) -> Option<T> {
        match self {
            Self::Ran(value) => Some(value),
            Self::Skipped(_) => None,
        }
    }

    /// Whether the job was skipped.
    pub fn is_skipped(&self) -> bool {
        matches!(self, Self::Skipped(_))
    }
}
