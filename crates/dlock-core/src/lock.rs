//! The lock: acquiring it, waiting for it, and running a job under it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::adapter::IntoQueryInterface;
use crate::attempt::attempt;
use crate::inner::{Held, LockInner};
use crate::telemetry;
use crate::wait::wait_and_take;
use crate::{Attempt, Error, Holder, Lease, LockBuilder, LockGuard, LossReason, Outcome, Result};

/// A named lock in a database, shared by every process that uses the same name and table.
///
/// Creating one is cheap and does not touch the database; the lock table is created on
/// first use if it does not exist. Clones share the lock's state. See [what it
/// guarantees, and what that
/// assumes](https://github.com/dlock-rs/dlock#guarantees-and-what-they-assume).
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use std::time::Duration;
/// use dlock_core::{DistributedLock, Outcome};
///
/// let lock = DistributedLock::builder("migrations", pool)
///     .ttl(Duration::from_secs(10))
///     .build()?;
/// let outcome = lock
///     .lock(|lease| async move {
///         println!("migrating under fencing token {}", lease.fencing_token());
///         Ok::<_, dlock_core::Error>(())
///     })
///     .await?;
/// assert!(matches!(outcome, Outcome::Ran(())));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DistributedLock {
    inner: Arc<LockInner>,
}

impl DistributedLock {
    pub(crate) fn from_inner(inner: LockInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<LockInner> {
        &self.inner
    }

    /// A lock named `name` on the database behind `pool`, with the default options.
    ///
    /// `pool` is any pool or connection type of an adapter crate (or a
    /// [`QueryInterface`](crate::adapter::QueryInterface)).
    ///
    /// # Errors
    ///
    /// As [`LockBuilder::build`]: [`Error::EmptyName`], or [`Error::NameTooLong`] for a
    /// name longer than the database's key holds, or [`Error::InvalidOption`] for a name
    /// with a NUL character. Never touches the database.
    pub fn new<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> Result<Self> {
        Self::builder(name, pool).build()
    }

    /// A builder for a lock named `name` on the database behind `pool`, to set options.
    pub fn builder<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> LockBuilder {
        LockBuilder::new(name.into(), pool.into_query_interface())
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Makes one attempt to take the lock: one statement.
    ///
    /// Returns [`Attempt::Acquired`] with a guard, or [`Attempt::Held`] naming the
    /// current holder.
    ///
    /// # Errors
    ///
    /// The database's error, as [`Error::Unreachable`], [`Error::PoolExhausted`],
    /// [`Error::Authentication`], [`Error::PermissionDenied`], [`Error::CreateTable`] or
    /// [`Error::Database`]; [`Error::is_transient`] says whether trying again may help.
    /// A lock held by someone else is not an error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
    /// use dlock_core::{Attempt, DistributedLock};
    ///
    /// let lock = DistributedLock::new("cleanup", pool)?;
    /// match lock.try_acquire().await? {
    ///     Attempt::Acquired(guard) => {
    ///         // … the work …
    ///         guard.release().await?;
    ///     }
    ///     Attempt::Held(holder) => println!("{holder} is cleaning up"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe. The statement runs in a task of its own; if this future is dropped
    /// while it runs and it acquires, the task releases the lock right away.
    pub async fn try_acquire(&self) -> Result<Attempt> {
        let span = telemetry::acquire_span(&self.inner, false);
        self.attempt_once().instrument(span).await
    }

    async fn attempt_once(&self) -> Result<Attempt> {
        let started = Instant::now();
        // If the holder releases between our attempt and our probe, try again; three
        // rounds make an unknown holder a rarity rather than a loop.
        for _ in 0..3 {
            if let Some(guard) = attempt(&self.inner, false, started).await? {
                return Ok(Attempt::Acquired(guard));
            }
            if let Some(Held { holder, .. }) = self.inner.probe().await? {
                telemetry::skipped(&self.inner, &holder);
                return Ok(Attempt::Held(holder));
            }
        }
        let holder = Holder {
            holder: "another process (it changed hands while we looked)".into(),
            expires_in: Duration::ZERO,
        };
        telemetry::skipped(&self.inner, &holder);
        Ok(Attempt::Held(holder))
    }

    /// Waits until the lock is free and takes it, or until the acquire timeout, if one is
    /// set, runs out ([`Error::Timeout`]).
    ///
    /// While waiting it only reads: it probes the lock row with a jittered exponential
    /// back-off (capped by the poll interval, and never sleeping much past the holder's
    /// lease), and attempts to take the lock only when a probe finds it free.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the acquire timeout runs out, naming the holder seen last.
    /// Errors that may pass (the database or pool busy or briefly away) are ridden out
    /// while waiting; the others are returned at once, as for
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held (see
    /// [`try_acquire`](Self::try_acquire)).
    pub async fn acquire(&self) -> Result<LockGuard> {
        let span = telemetry::acquire_span(&self.inner, true);
        self.acquire_in_time().instrument(span).await
    }

    async fn acquire_in_time(&self) -> Result<LockGuard> {
        let started = Instant::now();
        let mut last_holder = None;
        let wait = wait_and_take(&self.inner, started, &mut last_holder);
        match self.inner.options.acquire_timeout {
            None => wait.await,
            Some(timeout) => tokio::time::timeout_at(started + timeout, wait)
                .await
                .unwrap_or_else(|_elapsed| {
                    let waited = started.elapsed();
                    telemetry::timed_out(&self.inner, waited, last_holder.as_ref());
                    Err(Error::Timeout {
                        name: self.name().to_owned(),
                        waited,
                        holder: last_holder,
                    })
                }),
        }
    }

    /// Runs `job` under the lock and releases it afterwards, on every path: when the job
    /// succeeds, fails, panics, or this future is dropped.
    ///
    /// The job receives the [`Lease`] (fencing token, loss signal). Without
    /// `skip_if_obtained` this waits like [`acquire`](Self::acquire); with it, it makes one
    /// attempt and returns [`Outcome::Skipped`] if a live holder has the lock.
    ///
    /// **If the lock is lost while the job runs, the job's future is dropped** at the
    /// moment of the loss — before the database could let another holder in — and this
    /// returns [`Error::Lost`]. A job that must not be interrupted at an arbitrary await
    /// point should watch [`Lease::lost`] itself, or fence its writes. The job is never
    /// polled once the lease's deadline has passed, even if no timer has fired yet (the
    /// thread was blocked); a job whose last poll ran past the deadline (it blocked its
    /// thread) also returns [`Error::Lost`], since its end was not protected.
    ///
    /// # Errors
    ///
    /// The job's own error, converted into `E`; [`acquire`](Self::acquire)'s (or
    /// [`try_acquire`](Self::try_acquire)'s) errors, converted; [`Error::Lost`] as above. A
    /// failed release after the job succeeded is not an error: the lease then expires by
    /// its TTL, and the job's value is returned.
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and releases the lock in the background.
    pub async fn lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let guard = if self.inner.options.skip_if_obtained {
            match self.try_acquire().await? {
                Attempt::Acquired(guard) => guard,
                Attempt::Held(holder) => return Ok(Outcome::Skipped(holder)),
            }
        } else {
            self.acquire().await?
        };
        run_job(guard, job).await
    }

    /// Creates the lock table if it does not exist. Optional: the table is created on
    /// first use anyway; call this at start-up to surface a missing privilege early.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTable`] when the table does not exist and cannot be created (the
    /// message says what to grant or run instead); the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: `CREATE TABLE IF NOT EXISTS` either ran or did not.
    pub async fn create_table(&self) -> Result<()> {
        self.inner.create_table().await
    }
}

/// Runs `job` under `guard`'s lease and releases it afterwards, as
/// [`DistributedLock::lock`] describes: the job is dropped at a loss, a job that blocked
/// its thread past the deadline reports the loss, and a failed release after a job that
/// succeeded is not an error.
pub(crate) async fn run_job<F, Fut, T, E>(guard: LockGuard, job: F) -> Result<Outcome<T>, E>
where
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    let lease = guard.lease().clone();
    let result = match lease.run_while_held(job(lease.clone())).await {
        Ok(result) => result,
        Err(reason) => Err(lease.lost_error(reason).into()),
    };
    // A job that blocked its thread past the deadline finished unprotected.
    let result = match (result, lease.loss_reason()) {
        (Ok(_), Some(reason)) if reason != LossReason::Released => {
            Err(lease.lost_error(reason).into())
        }
        (result, _) => result,
    };
    let released = guard.release().await;
    match result {
        // The job finished while the lock was held (the select above would have caught
        // a loss first). A failed release only means the lease expires by its TTL, so
        // the job's value is not thrown away for it.
        Ok(value) => {
            drop(released);
            Ok(Outcome::Ran(value))
        }
        Err(error) => Err(error),
    }
}

impl fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedLock")
            .field("name", &self.inner.name)
            .field("dialect", &self.inner.dialect)
            .field("options", &self.inner.options)
            .finish()
    }
}
