//! Leading an election: the guard of its lock, with a term and a published value.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::election::check_value;
use crate::{FencingToken, Lease, LockGuard, LossReason, Result};

/// This process leads an election, until it resigns or the leadership is lost.
///
/// It is the election lock's [`LockGuard`]: a background task renews the lease, and the
/// loss signal ([`lost`](Self::lost), [`is_lost`](Self::is_lost)) fires at the lease's
/// safety deadline, before the database could let another candidate lead.
///
/// Clones share the leadership, to hand to tasks: [`resign`](Self::resign) on any of
/// them ends it for all, and **dropping the last one resigns**, as dropping a guard
/// releases.
#[derive(Clone)]
#[must_use = "the leadership is resigned as soon as it is dropped"]
pub struct Leadership {
    lease: Lease,
    /// Taken by the first resignation; dropped (releasing) with the last clone.
    guard: Arc<Mutex<Option<LockGuard>>>,
}

impl Leadership {
    pub(crate) fn new(guard: LockGuard) -> Self {
        Self {
            lease: guard.lease().clone(),
            guard: Arc::new(Mutex::new(Some(guard))),
        }
    }

    /// The term: the fencing token of this leadership, larger than every earlier
    /// leader's. Pass it with writes that only the leader may make, so that the resource
    /// can refuse those of a deposed leader.
    pub fn term(&self) -> FencingToken {
        self.lease.fencing_token()
    }

    /// The lease under the leadership (name, token, loss signal).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the leadership has been lost (or resigned). See [`Lease::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Completes when the leadership is lost, with the reason. See [`Lease::lost`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        self.lease.lost().await
    }

    /// Publishes `value` as the leader's, in place of the one published so far, without
    /// ending the term: observers see the same term with the new value.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`](crate::Error::Lost) if the leadership was lost first (nothing was
    /// published, or, if the answer came past the lease's deadline, it was published
    /// for a term that is ending); [`Error::InvalidOption`](crate::Error::InvalidOption)
    /// for a NUL character in `value`; the database's error.
    ///
    /// # Cancel Safety
    ///
    /// Dropping it leaves either value published; proclaiming again settles it.
    pub async fn proclaim(&self, value: impl Into<String>) -> Result<()> {
        let value = check_value(value.into())?;
        let lease = self.lease();
        let lost = |reason| Err(lease.lost_error(reason));
        if let Some(reason) = lease.loss_reason() {
            return lost(reason);
        }
        let lock = lease.lock();
        let proclaimed = lock
            .proclaim(lease.owner_id(), lease.fencing_token(), &value)
            .await?;
        match lease.loss_reason() {
            Some(reason) => lost(reason),
            None if !proclaimed => lost(LossReason::TakenOver),
            None => Ok(()),
        }
    }

    /// Resigns: releases the election's lock and waits for the database to confirm, so
    /// that a waiting candidate takes over at once (on PostgreSQL, woken within
    /// milliseconds by the notice the release sends as it commits; elsewhere at its next
    /// poll). See [`LockGuard::release`].
    ///
    /// Prefer it to a drop at shutdown: a dropped leadership is released too, but in the
    /// background, which a process that exits at once may never run; candidates
    /// elsewhere then find the leader gone only when they next look.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`]: [`Error::Lost`](crate::Error::Lost) if the leadership
    /// had been lost already, or resigned by a clone; the database's error if no release
    /// was answered before the lease ran out (the leadership then ends with it).
    ///
    /// # Cancel Safety
    ///
    /// The resignation goes on if this future is dropped; only its result is lost.
    pub async fn resign(self) -> Result<()> {
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(guard) = guard else {
            return Err(self.lease.lost_error(LossReason::Released));
        };
        guard.release().await
    }
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("lease", self.lease())
            .finish()
    }
}
