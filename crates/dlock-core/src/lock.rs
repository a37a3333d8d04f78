//! The lock: acquiring it, waiting for it, and running a job under it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::clock;
use crate::context::{LockContext, within};
use crate::guard::Acquisition;
use crate::options::{Options, RawOptions};
use crate::query::{IntoQueryInterface, QueryError, QueryErrorKind};
use crate::telemetry::{self, LockTelemetry, WaitingReports};
use crate::wake::{Hub, RESYNC};
use crate::{Error, FencingToken, Lease, LockGuard, LossReason, Result};

/// A named lock in a database, shared by every process that uses the same name and table.
///
/// Creating one is cheap and does not touch the database; the lock table is created on
/// first use if it does not exist. See [what it guarantees, and what that
/// assumes](https://github.com/dlock-rs/dlock#guarantees-and-what-they-assume).
#[derive(Clone)]
pub struct DistributedLock {
    context: Arc<LockContext>,
}

impl DistributedLock {
    /// A lock named `name` on the database behind `pool`, with the default options.
    ///
    /// `pool` is any pool or connection type of an adapter crate (or a
    /// [`QueryInterface`](crate::QueryInterface)). Fails if `name` is empty or too long
    /// for the database's key.
    pub fn new<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> Result<Self> {
        Self::builder(name, pool).build()
    }

    /// A builder for a lock named `name` on the database behind `pool`, to set options.
    pub fn builder<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> LockBuilder {
        LockBuilder {
            name: name.into(),
            queries: pool.into_query_interface(),
            options: RawOptions::default(),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// Makes one attempt to take the lock: one statement.
    ///
    /// Returns [`Attempt::Acquired`] with a guard, or [`Attempt::Held`] naming the
    /// current holder.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe. The statement runs in a task of its own; if this future is dropped
    /// while it runs and it acquires, the task releases the lock right away.
    pub async fn try_acquire(&self) -> Result<Attempt> {
        let span = telemetry::acquire_span(&self.context, false);
        self.attempt_once().instrument(span).await
    }

    async fn attempt_once(&self) -> Result<Attempt> {
        let started = Instant::now();
        // If the holder releases between our attempt and our probe, try again; three
        // rounds make an unknown holder a rarity rather than a loop.
        for _ in 0..3 {
            if let Some(guard) = self.attempt(false, started).await? {
                return Ok(Attempt::Acquired(guard));
            }
            if let Some(holder) = self.context.probe().await? {
                telemetry::skipped(&self.context, &holder);
                return Ok(Attempt::Held(holder));
            }
        }
        let holder = Holder {
            description: "another process (it changed hands while we looked)".into(),
            expires_in: Duration::ZERO,
        };
        telemetry::skipped(&self.context, &holder);
        Ok(Attempt::Held(holder))
    }

    /// Waits until the lock is free and takes it, or until the acquire timeout, if one is
    /// set, runs out ([`Error::Timeout`]).
    ///
    /// While waiting it only reads: it probes the lock row with a jittered exponential
    /// back-off (capped by the poll interval, and never sleeping much past the holder's
    /// lease), and attempts to take the lock only when a probe finds it free.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held (see
    /// [`try_acquire`](Self::try_acquire)).
    pub async fn acquire(&self) -> Result<LockGuard> {
        let span = telemetry::acquire_span(&self.context, true);
        self.acquire_in_time().instrument(span).await
    }

    async fn acquire_in_time(&self) -> Result<LockGuard> {
        let started = Instant::now();
        let mut last_holder = None;
        let wait = self.wait_and_take(started, &mut last_holder);
        match self.context.options.acquire_timeout {
            None => wait.await,
            Some(timeout) => tokio::time::timeout_at(started + timeout, wait)
                .await
                .unwrap_or_else(|_elapsed| {
                    let waited = started.elapsed();
                    telemetry::timed_out(&self.context, waited, last_holder.as_ref());
                    Err(Error::Timeout {
                        name: self.name().to_owned(),
                        waited,
                        holder: last_holder.map(|holder: Holder| holder.description),
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
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and releases the lock in the background.
    pub async fn lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let guard = if self.context.options.skip_if_obtained {
            match self.try_acquire().await? {
                Attempt::Acquired(guard) => guard,
                Attempt::Held(holder) => return Ok(Outcome::Skipped(holder)),
            }
        } else {
            self.acquire().await?
        };
        let lease = guard.lease().clone();
        let mut job = std::pin::pin!(job(lease.clone()));
        let mut lost = std::pin::pin!(lease.lost());
        // The lease's own clock is read before every poll of the job, so the job is never
        // polled past the deadline, even when its thread was blocked and no timer has
        // fired yet.
        let result = std::future::poll_fn(|cx| {
            if let Some(reason) = lease.loss_reason() {
                return Poll::Ready(Err(lease.lost_error(reason).into()));
            }
            if let Poll::Ready(reason) = lost.as_mut().poll(cx) {
                return Poll::Ready(Err(lease.lost_error(reason).into()));
            }
            job.as_mut().poll(cx)
        })
        .await;
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

    /// Creates the lock table if it does not exist. Optional: the table is created on
    /// first use anyway; call this at start-up to surface a missing privilege early.
    pub async fn create_table(&self) -> Result<()> {
        self.context.create_table().await
    }

    /// One acquire statement, run in its own task so that a dropped caller cannot leave
    /// an acquisition nobody knows of: whoever ends up with an unclaimed acquisition —
    /// the task, or the caller's [`PendingAnswer`] when dropped — releases it.
    ///
    /// An answer that arrives after the acquisition's own deadline (the reply was delayed
    /// past 90 % of the TTL) counts as not acquired: the lease may already have expired and
    /// another holder got in, so the acquisition is released and never handed out.
    async fn attempt(&self, contended: bool, started: Instant) -> Result<Option<LockGuard>> {
        let context = &self.context;
        let owner = crate::random::owner_id();
        let (answer_tx, answer_rx) = oneshot::channel();
        telemetry::attempting(context);
        let sent_at = clock::now();
        tokio::spawn(
            take_or_release(Arc::clone(context), owner.clone(), answer_tx).in_current_span(),
        );
        let mut answer = PendingAnswer {
            receiver: answer_rx,
            context: Arc::clone(context),
            owner: owner.clone(),
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
        let Some(token) = taken? else {
            return Ok(None);
        };
        if clock::now() >= sent_at + context.options.safe_for() {
            telemetry::answered_too_late(context, token);
            // In a task of its own, so that a cancelled caller still frees it; awaited, so
            // that the probe which follows does not find this acquisition holding it.
            let (context, owner) = (Arc::clone(context), owner);
            let release = tokio::spawn(
                async move { release_unclaimed(&context, &owner, sent_at).await }.in_current_span(),
            );
            let _ = release.await;
            return Ok(None);
        }
        telemetry::acquired(context, token, started);
        let acquisition = Acquisition { sent_at, contended };
        Ok(Some(LockGuard::start(
            Arc::clone(context),
            owner,
            token,
            acquisition,
        )))
    }

    async fn wait_and_take(
        &self,
        started: Instant,
        last_holder: &mut Option<Holder>,
    ) -> Result<LockGuard> {
        let context = &self.context;
        let poll_interval = context.options.poll_interval;
        let mut reports = WaitingReports::default();
        // Subscribe before the first attempt, so that no release after it goes unseen.
        let mut releases = context.hub.subscribe();
        let mut backoff = Backoff::new(poll_interval);
        let mut contended = false;
        // When the holder's lease ends unless renewed, by the last probe.
        let mut lease_end = None;
        let mut next = match context.first_attempt_at() {
            // Let the waiters woken by our last release go first, then look.
            Some(courtesy_until) => {
                tokio::time::sleep_until(courtesy_until).await;
                Step::Probe
            }
            None => Step::Attempt,
        };
        loop {
            next = match next {
                Step::Attempt => match self.attempt(contended, started).await {
                    Ok(Some(guard)) => return Ok(guard),
                    // Someone else has it: find out who, and until when.
                    Ok(None) => Step::Probe,
                    Err(error) => self.ride_out(error, &mut backoff).await?,
                },
                Step::Probe => match context.probe().await {
                    Ok(Some(holder)) => {
                        reports.holder_seen(&holder, started);
                        lease_end = Some(Instant::now() + holder.expires_in);
                        *last_holder = Some(holder);
                        Step::Wait
                    }
                    Ok(None) => Step::Attempt,
                    Err(error) => self.ride_out(error, &mut backoff).await?,
                },
                // Reading only: for a release notice, or until the next probe.
                Step::Wait => {
                    contended = true;
                    let mut nap = if context.hub.hears_other_processes() {
                        // Notices wake us; probing is only a safety net, so no ramp either.
                        jittered(poll_interval * SAFETY_NET_FACTOR)
                    } else {
                        backoff.next(poll_interval)
                    };
                    if let Some(lease_end) = lease_end {
                        // Whatever wakes us or not, look again just after the holder's
                        // lease ends: a holder that died sends no notice.
                        let left = lease_end.saturating_duration_since(Instant::now());
                        nap = nap.min(left + Duration::from_millis(5));
                    }
                    match wait_for_release(&mut releases, &context.name, nap).await {
                        // Just released: attempt at once, without a probe's round trip.
                        Woken::Released => Step::Attempt,
                        Woken::Resync | Woken::Timeout => Step::Probe,
                    }
                }
            };
        }
    }

    /// What a waiting `acquire` does after `error`: waits a back-off step and looks again
    /// if the error may pass (the database or the pool is busy, or briefly away), else
    /// returns it. The wait has no other end than the acquire timeout, if one is set.
    async fn ride_out(&self, error: Error, backoff: &mut Backoff) -> Result<Step> {
        if !error.is_transient() {
            return Err(error);
        }
        let retry_in = backoff.next(self.context.options.poll_interval);
        telemetry::waiting_error(&self.context, &error, retry_in);
        tokio::time::sleep(retry_in).await;
        Ok(Step::Probe)
    }
}

/// What a waiting `acquire` does next. Only [`Step::Attempt`] may write, and it runs only
/// when the lock looks free: at first, after a probe found it free, or on a release notice.
#[derive(Debug, Clone, Copy)]
enum Step {
    Attempt,
    Probe,
    Wait,
}

type Answer = Result<Option<FencingToken>>;

/// Runs the acquire statement and hands the answer to the caller, releasing the lock
/// when nobody will: the caller is gone, or the statement failed in a way that may have
/// come after it committed (a connection lost on the way back). The release is
/// owner-checked, so it is harmless when nothing was taken.
async fn take_or_release(
    context: Arc<LockContext>,
    owner: String,
    answer: oneshot::Sender<Answer>,
) {
    let sent_at = clock::now();
    // Bounded by the TTL: any acquisition it made has expired by then anyway.
    let ttl = context.options.ttl;
    let taken = within("acquire the lock", ttl, context.try_take(&owner)).await;
    let may_have_taken = matches!(&taken, Err(error) if error.may_have_committed());
    let unheard = matches!(answer.send(taken), Err(Ok(Some(_))));
    if unheard || may_have_taken {
        release_unclaimed(&context, &owner, sent_at).await;
    }
}

/// Releases an acquisition nobody will hear of. Nobody else would retry it, so transient
/// errors (a pool checkout that timed out under load) are retried while the lease could
/// still be ours; otherwise the name would be blocked for a whole TTL.
async fn release_unclaimed(context: &LockContext, owner: &str, sent_at: Instant) {
    let safe_until = sent_at + context.options.safe_for();
    let released = crate::guard::release_with_retries(context, owner, false, safe_until).await;
    if let Ok(crate::guard::Released::Now) = released {
        telemetry::unclaimed_released();
    }
}

/// The caller's end of an attempt. Dropped with an acquisition in it that the caller
/// never read (the caller was cancelled between the answer and its next poll), it
/// releases that acquisition.
struct PendingAnswer {
    receiver: oneshot::Receiver<Answer>,
    context: Arc<LockContext>,
    owner: String,
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        // After close(), the task's send fails (and it releases) or has succeeded, in
        // which case the answer is here: exactly one of the two sees it.
        self.receiver.close();
        if let Ok(Ok(Some(_))) = self.receiver.try_recv() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (context, owner) = (Arc::clone(&self.context), std::mem::take(&mut self.owner));
                // The acquisition happened at most a TTL ago: its lease ends no sooner.
                let answered_at = clock::now();
                runtime.spawn(
                    async move {
                        release_unclaimed(&context, &owner, answered_at).await;
                    }
                    .in_current_span(),
                );
            }
        }
    }
}

/// While other processes' releases are heard, waiters probe this many times less often.
const SAFETY_NET_FACTOR: u32 = 10;

/// What ended a waiter's nap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    /// A notice that the lock was released.
    Released,
    /// Notices may have been missed (the listener was found deaf or reconnected, or this
    /// waiter fell behind): look at the lock rather than attempt blindly.
    Resync,
    /// The nap ran out.
    Timeout,
}

/// Waits up to `nap` for a notice that `name` was released, or the hub's call to resync
/// ([`RESYNC`], which no lock name can be).
async fn wait_for_release(
    releases: &mut broadcast::Receiver<Arc<str>>,
    name: &str,
    nap: Duration,
) -> Woken {
    let deadline = Instant::now() + nap;
    loop {
        match tokio::time::timeout_at(deadline, releases.recv()).await {
            Err(_elapsed) => return Woken::Timeout,
            Ok(Ok(released)) if &*released == name => return Woken::Released,
            Ok(Ok(released)) if &*released == RESYNC => return Woken::Resync,
            Ok(Ok(_other_lock)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Woken::Resync,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(deadline).await;
                return Woken::Timeout;
            }
        }
    }
}

impl fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedLock")
            .field("name", &self.context.name)
            .field("dialect", &self.context.dialect)
            .field("options", &self.context.options)
            .finish()
    }
}

/// Sets the options of a [`DistributedLock`]; [`build`](Self::build) validates them.
#[must_use]
pub struct LockBuilder {
    name: String,
    queries: Arc<dyn crate::QueryInterface>,
    options: RawOptions,
}

impl LockBuilder {
    /// The lock table, `table` or `schema.table`, made of lower-case ASCII letters, digits
    /// and `_` (upper case is refused: SQLite folds it, so two names differing only in
    /// case would be one table there and two elsewhere).
    ///
    /// Defaults to `distributed_lock`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.options.table = Some(table.into());
        self
    }

    /// How long a lease lasts without renewal: how long a crashed holder can block the
    /// lock. The lease is renewed while the lock is held, so jobs may run far longer.
    /// Whole milliseconds (the database is sent those, and the holder's deadline is
    /// derived from the same value); at least 100 ms, or [`build`](Self::build) fails.
    ///
    /// Defaults to 30 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = Some(ttl);
        self
    }

    /// How often a held lock's lease is renewed; must be shorter than 90 % of the TTL.
    ///
    /// Defaults to a third of the TTL.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.options.renew_interval = Some(interval);
        self
    }

    /// How long [`acquire`](DistributedLock::acquire) (and [`lock`](DistributedLock::lock)
    /// without `skip_if_obtained`) waits before giving up with [`Error::Timeout`].
    ///
    /// Defaults to waiting indefinitely.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.options.acquire_timeout = Some(timeout);
        self
    }

    /// The longest pause between two probes of a waiting [`acquire`](DistributedLock::acquire).
    /// Waiting starts with short pauses that double, with jitter, up to this.
    ///
    /// Defaults to 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.options.poll_interval = Some(interval);
        self
    }

    /// A label for the holder, stored with the host name and process id in the lock
    /// table and shown to callers that find the lock held.
    ///
    /// Defaults to none: `host pid N` alone.
    pub fn holder_label(mut self, label: impl Into<String>) -> Self {
        self.options.label = Some(label.into());
        self
    }

    /// Whether [`lock`](DistributedLock::lock) skips the job, returning
    /// [`Outcome::Skipped`], when a live holder has the lock, instead of waiting.
    ///
    /// Defaults to `false`.
    pub fn skip_if_obtained(mut self, skip: bool) -> Self {
        self.options.skip_if_obtained = skip;
        self
    }

    /// Validates the name and options.
    pub fn build(self) -> Result<DistributedLock> {
        let dialect = self.queries.dialect();
        if self.name.is_empty() {
            return Err(Error::EmptyName);
        }
        if self.name.contains('\0') {
            return Err(Error::InvalidOption(
                "the lock name contains a NUL character, which PostgreSQL cannot store; \
                 remove it (or use a hash of the name)"
                    .into(),
            ));
        }
        if self.name.len() > dialect.max_name_bytes() {
            return Err(Error::NameTooLong {
                len: self.name.len(),
                max: dialect.max_name_bytes(),
                dialect: dialect.name(),
            });
        }
        let options = Options::validate(self.options)?;
        let sql = dialect.sql(&options.table);
        Ok(DistributedLock {
            context: Arc::new(LockContext {
                hub: Hub::for_table(&self.queries, &options.table, &sql),
                sql,
                courtesy_until: Mutex::new(None),
                telemetry: LockTelemetry::new(&self.name),
                name: self.name,
                queries: self.queries,
                dialect,
                options,
            }),
        })
    }
}

impl fmt::Debug for LockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockBuilder")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The result of [`DistributedLock::try_acquire`].
#[derive(Debug)]
#[must_use]
pub enum Attempt {
    /// The lock is ours.
    Acquired(LockGuard),
    /// Someone else holds a live lease.
    Held(Holder),
}

impl Attempt {
    /// The guard, if the lock was acquired.
    pub fn acquired(self) -> Option<LockGuard> {
        match self {
            Self::Acquired(guard) => Some(guard),
            Self::Held(_) => None,
        }
    }
}

/// Who holds a lock, as recorded in the lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub(crate) description: String,
    pub(crate) expires_in: Duration,
}

impl Holder {
    /// The holder: its label if it set one, its host and its process id.
    pub fn description(&self) -> &str {
        &self.description
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
            self.description,
            self.expires_in.as_millis()
        )
    }
}

/// The result of [`DistributedLock::lock`]: the job ran, or was skipped.
///
/// The Rust form of the Node package's `EXECUTION_SKIPPED`.
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

/// Jittered exponential back-off: each pause is random in `[current / 2, current]`, and
/// `current` doubles from 10 ms up to the cap of the moment.
#[derive(Debug)]
struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Self {
        Self {
            current: Duration::from_millis(10).min(cap),
        }
    }

    fn next(&mut self, cap: Duration) -> Duration {
        let pause = jittered(self.current.min(cap));
        self.current = (self.current * 2).min(cap);
        pause
    }
}

/// A random pause in `[pause / 2, pause]`, so that waiters drift apart.
fn jittered(pause: Duration) -> Duration {
    pause.mul_f64(0.5 + 0.5 * crate::random::fraction())
}
