//! The semaphore: at most N holders of a name at once.
//!
//! Permit `i` of the semaphore `name` is the lock row `{name}#{i}` of the companion table
//! (`TableName::companion`), one [`LockInner`] per permit: taken, renewed, released,
//! fenced and lost by the lock's own machinery. What the semaphore adds is choosing a
//! permit (one at random first, then any that one read of them all finds free), waiting
//! on all of them at once, and the definition of the number of permits (the row
//! `{name}#0`, see `dialect/semaphore.rs`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::adapter::{IntoQueryInterface, Value};
use crate::attempt::{attempt, attempt_in_turn};
use crate::backoff::{Backoff, jittered};
use crate::builder::{LockBuilder, inner, validate_name};
use crate::dialect::SemaphoreSql;
use crate::inner::LockInner;
use crate::lock::run_job;
use crate::name_set::json_array;
use crate::options::Options;
use crate::telemetry::{self, LockTelemetry, WaitingReports};
use crate::wait::{SAFETY_NET_FACTOR, Woken, wait_for_notice};
use crate::{
    Attempt, Error, FencingToken, Holder, Lease, LockGuard, LossReason, Outcome, Result, random,
};

/// The most permits a semaphore may have. A waiter reads every permit's row in one
/// statement and, on PostgreSQL, announces its interest in each on the listening
/// connection (one statement per permit, once per wait), so the count must stay modest;
/// for more concurrent holders than this, a counter in the application's own table fits
/// better.
pub const MAX_PERMITS: u32 = 1000;

/// Sets the options of a [`Semaphore`]: the same options as a lock's, with the same
/// defaults; [`build`](LockBuilder::build) validates them, the name and the permits.
pub type SemaphoreBuilder = LockBuilder<Semaphore>;

/// A named semaphore in a database: at most `permits` holders at any moment, across
/// every process that uses the same name and table.
///
/// Each permit is a lease of its own, with everything a [`DistributedLock`]'s lease has:
/// renewal in the background, a loss signal that fires before the database could let
/// anyone else take the permit, release on drop, and a fencing token. Tokens are per
/// permit (each permit's only grows), so **tokens of different permits are not
/// comparable**; [`SemaphorePermit::permit`] says which permit a token belongs to.
///
/// Permit `i` is the row `{name}#{i}` of the lock table's companion table
/// ([`TableName::companion`](crate::TableName::companion)), created on first use; the
/// number of permits is recorded there too, by the first process that uses the name, and
/// a process asking for another count gets [`Error::PermitsMismatch`]. Waiting never
/// writes; a waiter wakes on the release of any permit where releases are heard
/// (PostgreSQL), and probes with back-off elsewhere.
///
/// See [which primitive to pick, and what each guarantees](https://github.com/dlock-rs/dlock/blob/main/docs/primitives.md).
///
/// [`DistributedLock`]: crate::DistributedLock
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use dlock_core::Semaphore;
///
/// // At most 3 exports at once across the fleet.
/// let exports = Semaphore::new("exports", 3, pool)?;
/// let permit = exports.acquire().await?;
/// println!("export under permit {} (token {})", permit.permit(), permit.fencing_token());
/// permit.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    inner: Arc<SemaphoreInner>,
}

struct SemaphoreInner {
    name: String,
    /// The permits' locks: `slots[i - 1]` is permit `i`, the row `{name}#{i}`.
    slots: Vec<Arc<LockInner>>,
    sql: SemaphoreSql,
    /// The permits' row names as one JSON array, as `read_slots` binds them.
    slot_names: String,
    /// Set once the recorded number of permits was found to be this one's.
    defined: OnceCell<()>,
}

impl SemaphoreBuilder {
    /// Validates the name, the number of permits and the options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for zero permits or more than [`MAX_PERMITS`]; for the
    /// name and options, what [`LockBuilder::build`] returns for a lock's (the name must
    /// leave room for the permit's suffix, `#` and its number); and
    /// [`Error::InvalidTableName`] when the table's name is too long to have a companion
    /// table. Building never touches the database.
    pub fn build(self) -> Result<Semaphore> {
        let dialect = self.queries.dialect();
        let permits = self.permits;
        if permits == 0 || permits > MAX_PERMITS {
            return Err(Error::InvalidOption(format!(
                "a semaphore has between 1 and {MAX_PERMITS} permits, not {permits}; give the \
                 number of holders allowed at once (1 is a lock: use DistributedLock)"
            )));
        }
        validate_name(&self.name, dialect)?;
        // The longest row name, for the key's limit.
        validate_name(&format!("{}#{permits}", self.name), dialect)?;
        let mut options = Options::validate(self.options)?;
        let companion = options.table.companion()?;
        let sql = dialect.sql(&companion);
        options.table = companion;
        // Labelled by the semaphore, not the permit: one series per semaphore.
        let telemetry = LockTelemetry::new(&self.name);
        let slots: Vec<Arc<LockInner>> = (1..=permits)
            .map(|permit| {
                let mut slot = inner(
                    slot_name(&self.name, permit),
                    None,
                    Arc::clone(&self.queries),
                    sql.clone(),
                    options.clone(),
                );
                slot.telemetry = telemetry.clone();
                Arc::new(slot)
            })
            .collect();
        let names: Vec<String> = slots.iter().map(|slot| slot.name.clone()).collect();
        Ok(Semaphore {
            inner: Arc::new(SemaphoreInner {
                sql: dialect.semaphore_sql(&options.table),
                slot_names: json_array(&names),
                name: self.name,
                slots,
                defined: OnceCell::new(),
            }),
        })
    }
}

/// The row name of permit `permit` of the semaphore `name` (0: its definition).
pub(crate) fn slot_name(name: &str, permit: u32) -> String {
    format!("{name}#{permit}")
}

/// What one read of every permit found.
struct Slots {
    /// The permits (1-based) with no live lease.
    free: Vec<u32>,
    /// The holder whose lease ends first, and when (all are held), or the lock-delay
    /// after a failover, during which no permit can be taken (PostgreSQL).
    first_to_end: Option<Holder>,
    /// A digest of which acquisitions hold the permits: a change says the semaphore is
    /// busy with short holds.
    digest: i64,
}

impl Semaphore {
    /// A semaphore named `name` with `permits` permits on the database behind `pool`,
    /// with the default options.
    ///
    /// # Errors
    ///
    /// As [`SemaphoreBuilder::build`](LockBuilder::build). Never touches the database.
    pub fn new<M>(
        name: impl Into<String>,
        permits: u32,
        pool: impl IntoQueryInterface<M>,
    ) -> Result<Self> {
        Self::builder(name, permits, pool).build()
    }

    /// A builder for a semaphore named `name` with `permits` permits (1 to
    /// [`MAX_PERMITS`]) on the database behind `pool`, to set options: the same as a
    /// lock's.
    pub fn builder<M>(
        name: impl Into<String>,
        permits: u32,
        pool: impl IntoQueryInterface<M>,
    ) -> SemaphoreBuilder {
        SemaphoreBuilder::for_permits(name.into(), permits, pool.into_query_interface())
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many holders it allows at once.
    pub fn permits(&self) -> u32 {
        u32::try_from(self.inner.slots.len()).expect("BUG: at most MAX_PERMITS permits")
    }

    /// Makes one attempt to take a permit: one statement for a permit picked at random
    /// (so concurrent callers spread over the permits) and, if that one is held, one read
    /// of every permit and an attempt on those it finds free. The first call on a
    /// `Semaphore` (and its clones) also checks the recorded number of permits.
    ///
    /// Returns [`Attempt::Acquired`] with a permit, or [`Attempt::Held`] naming the
    /// holder whose lease ends first, when every permit is held.
    ///
    /// # Errors
    ///
    /// [`Error::PermitsMismatch`] if the name was defined with another number of
    /// permits; otherwise as [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe, as [`DistributedLock::try_acquire`](crate::DistributedLock::try_acquire):
    /// a permit taken by a dropped attempt is released at once.
    pub async fn try_acquire(&self) -> Result<Attempt<SemaphorePermit>> {
        self.check_definition().await?;
        let started = Instant::now();
        let first = self.random_permit();
        if let Some(guard) = attempt(self.slot(first), false, started).await? {
            return Ok(Attempt::Acquired(SemaphorePermit::new(guard, first)));
        }
        // If permits free up and are taken again between our read and our attempts,
        // look again; three rounds make an unknown holder a rarity rather than a loop.
        for _ in 0..3 {
            let mut slots = self.read_slots().await?;
            if slots.free.is_empty() {
                let holder = slots.first_to_end.unwrap_or_else(changed_hands);
                telemetry::skipped(self.slot(first), &holder);
                return Ok(Attempt::Held(holder));
            }
            random::shuffle(&mut slots.free);
            for permit in slots.free {
                if let Some(guard) = attempt(self.slot(permit), false, started).await? {
                    return Ok(Attempt::Acquired(SemaphorePermit::new(guard, permit)));
                }
            }
        }
        let holder = changed_hands();
        telemetry::skipped(self.slot(first), &holder);
        Ok(Attempt::Held(holder))
    }

    /// Waits until a permit is free and takes it, or until the acquire timeout, if one is
    /// set, runs out ([`Error::Timeout`]).
    ///
    /// While waiting it only reads: one statement reads every permit, after which it naps
    /// until a release notice for any permit (PostgreSQL), a jittered back-off step
    /// (capped by the poll interval) elsewhere, and never much past the end of the first
    /// holder's lease; it attempts only permits it found free or heard released. After
    /// this process released a permit to waiters, it leaves them that permit for a few
    /// milliseconds (the lock's courtesy), but takes any other free permit at once.
    ///
    /// # Errors
    ///
    /// [`Error::PermitsMismatch`] as for [`try_acquire`](Self::try_acquire);
    /// [`Error::Timeout`] naming the holder seen last whose lease ended first. Errors
    /// that may pass are ridden out, as by [`DistributedLock::acquire`](crate::DistributedLock::acquire).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held.
    pub async fn acquire(&self) -> Result<SemaphorePermit> {
        let started = Instant::now();
        let mut last_holder = None;
        let wait = async {
            self.check_definition().await?;
            self.wait_and_take(started, &mut last_holder).await
        };
        let Some(timeout) = self.options().acquire_timeout else {
            return wait.await;
        };
        let outcome = tokio::time::timeout_at(started + timeout, wait).await;
        outcome.unwrap_or_else(|_elapsed| {
            let waited = started.elapsed();
            telemetry::timed_out(self.slot(1), waited, last_holder.as_ref());
            Err(Error::Timeout {
                name: self.name().to_owned(),
                waited,
                holder: last_holder,
            })
        })
    }

    /// Runs `job` holding a permit and releases it afterwards, on every path, as
    /// [`DistributedLock::lock`](crate::DistributedLock::lock) does (with
    /// `skip_if_obtained`, one attempt, and [`Outcome::Skipped`] when every permit is
    /// held). The job's [`Lease`] is the permit's: its name is the permit's row,
    /// `{name}#{i}`; the loss of the permit drops the job and returns [`Error::Lost`].
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::lock`](crate::DistributedLock::lock), and
    /// [`Error::PermitsMismatch`].
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and releases the permit in the background.
    pub async fn lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let permit = if self.options().skip_if_obtained {
            match self.try_acquire().await? {
                Attempt::Acquired(permit) => permit,
                Attempt::Held(holder) => return Ok(Outcome::Skipped(holder)),
            }
        } else {
            self.acquire().await?
        };
        run_job(permit.guard, job).await
    }

    /// Creates the companion table, where the semaphore's rows live, if it does not
    /// exist. Optional: it is created on first use anyway.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::create_table`](crate::DistributedLock::create_table).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe.
    pub async fn create_table(&self) -> Result<()> {
        self.slot(1).create_table().await
    }

    fn options(&self) -> &Options {
        &self.slot(1).options
    }

    fn slot(&self, permit: u32) -> &Arc<LockInner> {
        let index = usize::try_from(permit - 1).expect("BUG: permits fit in usize");
        &self.inner.slots[index]
    }

    fn random_permit(&self) -> u32 {
        let index = random::below(self.inner.slots.len());
        u32::try_from(index + 1).expect("BUG: at most MAX_PERMITS permits")
    }

    /// The permit whose row is named `name`, if it is one of this semaphore's.
    fn permit_named(&self, name: &str) -> Option<u32> {
        let number = name.strip_prefix(&self.inner.name)?.strip_prefix('#')?;
        let permit: u32 = number.parse().ok()?;
        // `parse` accepts a leading `+`; a row name never has one.
        let canonical = !number.starts_with(['+', '0']);
        (canonical && (1..=self.permits()).contains(&permit)).then_some(permit)
    }

    /// Checks, once per `Semaphore` and its clones, that the name is defined with this
    /// number of permits, recording it if the name has no definition yet.
    async fn check_definition(&self) -> Result<()> {
        self.inner
            .defined
            .get_or_try_init(|| self.define())
            .await
            .map(|_| ())
    }

    async fn define(&self) -> Result<()> {
        let lock = self.slot(1);
        let definition = slot_name(&self.inner.name, 0);
        let read = lock.sql.inspect(&definition, false);
        let action = "read the semaphore's definition";
        for _ in 0..2 {
            let first = lock.queries.query(&read).await;
            let rows = lock
                .or_create_table(action, first, || lock.queries.query(&read))
                .await?;
            // `INFO`: name, owner, fencing (the permits), …
            if let Some(row) = rows.first() {
                let defined = match row.get(2) {
                    Some(Value::Int(permits)) => *permits,
                    _ => 0,
                };
                if defined != i64::from(self.permits()) {
                    return Err(Error::PermitsMismatch {
                        name: self.inner.name.clone(),
                        requested: self.permits(),
                        defined,
                    });
                }
                return Ok(());
            }
            let holder = format!(
                "dlock: semaphore {:?} has {} permits (its definition, never held)",
                self.inner.name,
                self.permits()
            );
            let define = self
                .inner
                .sql
                .define(&definition, i64::from(self.permits()), &holder);
            lock.queries
                .execute(&define)
                .await
                .map_err(|error| Error::query("define the semaphore", error))?;
            // Read it back: a concurrent definer may have recorded another count first.
        }
        Err(Error::query(
            action,
            crate::adapter::QueryError::new(
                crate::adapter::QueryErrorKind::Statement,
                None,
                "the definition row vanished right after it was written; is something \
                 deleting rows of the companion table?",
            ),
        ))
    }

    /// Reads every permit in one statement. Never writes; bounded by the TTL, as a probe.
    async fn read_slots(&self) -> Result<Slots> {
        let lock = self.slot(1);
        let statement = self
            .inner
            .sql
            .read_slots(&self.inner.slot_names, lock.options.ttl);
        let action = "read the semaphore's permits";
        let reading = async {
            lock.query(&statement)
                .await
                .map_err(|error| Error::query(action, error))
        };
        let rows = crate::inner::within(action, lock.options.ttl, reading).await?;
        let mut held = vec![false; self.inner.slots.len()];
        let mut first_to_end: Option<Holder> = None;
        let mut digest = 0_i64;
        let mut all_held = false;
        for row in rows {
            let Ok([Value::Text(name), holder, remaining, token]) = <[Value; 4]>::try_from(row)
            else {
                continue;
            };
            let permit = self.permit_named(&name);
            let lock_delay = name.is_empty();
            if permit.is_none() && !lock_delay {
                continue;
            }
            let expires_in = match remaining {
                Value::Int(ms) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                _ => Duration::ZERO,
            };
            let holder = match holder {
                Value::Text(holder) if lock_delay => holder,
                Value::Text(holder) => format!(
                    "{holder}, holding permit {} of {}",
                    permit.unwrap_or(0),
                    self.permits()
                ),
                _ => "an unnamed holder".to_owned(),
            };
            if let Value::Int(token) = token {
                digest =
                    digest.wrapping_add(token.wrapping_mul(i64::from(permit.unwrap_or(0)) + 1));
            }
            let holder = Holder { holder, expires_in };
            match permit {
                Some(permit) => {
                    held[usize::try_from(permit - 1).unwrap_or(0)] = true;
                    if !all_held
                        && first_to_end
                            .as_ref()
                            .is_none_or(|first| holder.expires_in < first.expires_in)
                    {
                        first_to_end = Some(holder);
                    }
                }
                None => {
                    // The lock-delay after a failover holds every permit.
                    all_held = true;
                    first_to_end = Some(holder);
                }
            }
        }
        let free = if all_held {
            Vec::new()
        } else {
            (1..=self.permits())
                .zip(held)
                .filter(|(_, held)| !held)
                .map(|(permit, _)| permit)
                .collect()
        };
        Ok(Slots {
            free,
            first_to_end,
            digest,
        })
    }

    /// The permits this process released to waiters (see `LockInner::release_once`),
    /// which its next `acquire` leaves to them until their courtesy ends.
    fn yielded_permits(&self) -> Yielded {
        Yielded(
            (1..=self.permits())
                .filter_map(|permit| Some((permit, self.slot(permit).first_attempt_at()?)))
                .collect(),
        )
    }

    /// Waits until a permit is free and takes it; `last_holder` keeps the holder seen
    /// last, for the error of a caller that stops waiting.
    async fn wait_and_take(
        &self,
        started: Instant,
        last_holder: &mut Option<Holder>,
    ) -> Result<SemaphorePermit> {
        let options = self.options();
        let hub = &self.slot(1).releases;
        // Subscribed before the first attempt, so that no release after it goes unseen.
        let mut releases = hub.subscribe();
        // One per permit, made at the first read (an `acquire` whose first attempt takes
        // a permit needs none).
        let mut interests = Vec::new();
        let mut backoff = Backoff::new(options.poll_interval);
        let mut reports = WaitingReports::default();
        let mut contended = false;
        let mut hears_releases = false;
        let mut first_lease_end: Option<Instant> = None;
        let mut seen_digest = None;
        // The courtesy holds back only the permits this process released, not the
        // acquire: sitting it out while other permits were free left them idle (with 4
        // processes on 2 permits, most hand-overs waited for a courtesy to end).
        let yielded = self.yielded_permits();
        let mut next = match yielded.is_empty() {
            true => Step::Attempt {
                permits: vec![self.random_permit()],
                found_free: false,
            },
            false => Step::Read,
        };
        loop {
            next = match next {
                Step::Attempt {
                    permits,
                    found_free,
                } => {
                    // Permits a read found free and that all went to others meanwhile:
                    // nap a back-off step before reading again, rather than spin.
                    let mut after = if found_free { Step::Wait } else { Step::Read };
                    for permit in permits {
                        match attempt(self.slot(permit), contended, started).await {
                            Ok(Some(guard)) => return Ok(SemaphorePermit::new(guard, permit)),
                            Ok(None) => {}
                            Err(error) => {
                                after = ride_out(error, &mut backoff, options).await?;
                                break;
                            }
                        }
                    }
                    after
                }
                Step::AttemptInTurn(permit) => {
                    let slot = self.slot(permit);
                    let attempted = match hub.take_turn(&slot.name) {
                        Some(_turn) => attempt_in_turn(slot, started).await,
                        None => Ok(None),
                    };
                    match attempted {
                        Ok(Some(guard)) => return Ok(SemaphorePermit::new(guard, permit)),
                        // Not our turn, or another process got in first: wait for the
                        // next release, but read by ourselves within a poll interval
                        // (who holds the permit now was not read), or when a lease read
                        // before ends, if sooner.
                        Ok(None) => {
                            let now = Instant::now();
                            let look_by = now + jittered(options.poll_interval);
                            first_lease_end = Some(
                                first_lease_end
                                    .filter(|end| *end > now)
                                    .map_or(look_by, |end| end.min(look_by)),
                            );
                            Step::Wait
                        }
                        Err(error) => ride_out(error, &mut backoff, options).await?,
                    }
                }
                Step::Read => {
                    // Announced before the read, so that no release after it goes
                    // unheard (see `Waiter::probe` in `wait.rs`).
                    if interests.is_empty() {
                        interests = (self.inner.slots.iter())
                            .map(|slot| hub.interest(&slot.name))
                            .collect();
                    }
                    let mut hears = true;
                    for interest in &mut interests {
                        hears &= hub.hears(interest).await;
                    }
                    hears_releases = hears;
                    match self.read_slots().await {
                        Ok(mut slots) if !slots.free.is_empty() => {
                            first_lease_end = None;
                            slots.free.retain(|permit| !yielded.holds_back(*permit));
                            random::shuffle(&mut slots.free);
                            match slots.free.is_empty() {
                                // Free only where waiters were just woken to take it:
                                // wait for another release, or the courtesy's end.
                                true => Step::Wait,
                                false => Step::Attempt {
                                    permits: slots.free,
                                    found_free: true,
                                },
                            }
                        }
                        Ok(slots) => {
                            // Permits changing hands: a release is likely soon, so
                            // pollers look again soon rather than after a long back-off.
                            if seen_digest.is_some_and(|seen| seen != slots.digest) {
                                backoff = Backoff::new(options.poll_interval);
                            }
                            seen_digest = Some(slots.digest);
                            let holder = slots.first_to_end.unwrap_or_else(changed_hands);
                            reports.holder_seen(&holder, started);
                            first_lease_end = Some(Instant::now() + holder.expires_in);
                            *last_holder = Some(holder);
                            Step::Wait
                        }
                        Err(error) => ride_out(error, &mut backoff, options).await?,
                    }
                }
                Step::Wait => {
                    contended = true;
                    let mut nap = if hears_releases {
                        // Notices wake us; reading is only a safety net.
                        jittered(options.poll_interval * SAFETY_NET_FACTOR)
                    } else {
                        backoff.next(options.poll_interval)
                    };
                    if let Some(lease_end) = first_lease_end {
                        // A holder that died sends no notice: look just after the first
                        // lease ends.
                        let left = lease_end.saturating_duration_since(Instant::now());
                        nap = nap.min(left + Duration::from_millis(5));
                    }
                    if let Some(courtesy_end) = yielded.next_end() {
                        // A permit held back may be free: look again when it may be taken.
                        nap = nap.min(courtesy_end.saturating_duration_since(Instant::now()));
                    }
                    // The permit heard released (0: none). Atomic, not a `Cell`, so that
                    // the future stays `Send`.
                    let released = AtomicU32::new(0);
                    let wanted = |notice: &str| {
                        let permit = self.permit_named(notice).unwrap_or(0);
                        released.store(permit, Ordering::Relaxed);
                        permit != 0
                    };
                    match wait_for_notice(&mut releases, wanted, nap).await {
                        // Just released: attempt it at once, without a read's round
                        // trip, where waiters take turns only in ours.
                        Woken::Released => match released.load(Ordering::Relaxed) {
                            0 => Step::Read,
                            permit => Step::AttemptInTurn(permit),
                        },
                        Woken::Resync | Woken::Timeout => Step::Read,
                    }
                }
            };
        }
    }
}

/// What a waiting `acquire` does next. Only [`Step::Attempt`] writes, and only on
/// permits found free or heard released (or, first, one at random).
#[derive(Debug)]
enum Step {
    Attempt {
        permits: Vec<u32>,
        /// Whether a read found them free (rather than a notice or the first guess).
        found_free: bool,
    },
    /// On a release notice of this permit: attempt it if it is this waiter's turn (see
    /// `turns_key` in `dialect/postgres.rs`).
    AttemptInTurn(u32),
    Read,
    Wait,
}

/// The permits an `acquire` leaves to others for a while: those this process released
/// to waiters, each with the end of its courtesy.
struct Yielded(Vec<(u32, Instant)>);

impl Yielded {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `permit` is still left to the waiters its release woke.
    fn holds_back(&self, permit: u32) -> bool {
        let now = Instant::now();
        self.0
            .iter()
            .any(|&(held_back, until)| held_back == permit && until > now)
    }

    /// When the first courtesy still running ends.
    fn next_end(&self) -> Option<Instant> {
        let now = Instant::now();
        self.0
            .iter()
            .map(|&(_, until)| until)
            .filter(|until| *until > now)
            .min()
    }
}

/// What a waiting `acquire` does after `error`: waits a back-off step and reads again if
/// the error may pass, else returns it (as `wait.rs`'s `ride_out`).
async fn ride_out(error: Error, backoff: &mut Backoff, options: &Options) -> Result<Step> {
    if !error.is_transient() {
        return Err(error);
    }
    tokio::time::sleep(backoff.next(options.poll_interval)).await;
    Ok(Step::Read)
}

/// Who holds the permits when they changed hands while we looked.
fn changed_hands() -> Holder {
    Holder {
        holder: "other processes (the permits changed hands while we looked)".into(),
        expires_in: Duration::ZERO,
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lock = self.slot(1);
        f.debug_struct("Semaphore")
            .field("name", &self.inner.name)
            .field("permits", &self.permits())
            .field("dialect", &lock.dialect)
            .field("options", &lock.options)
            .finish()
    }
}

/// One permit of a [`Semaphore`], held: a lease of its own, renewed in the background,
/// with its own fencing token and loss signal, exactly as a [`LockGuard`]'s.
///
/// **Dropping it releases the permit**, as dropping a [`LockGuard`] releases its lock
/// (before the drop returns in the runtime's main future on a multi-threaded runtime, in
/// the background elsewhere); [`release`](Self::release) waits and reports.
#[must_use = "the permit is released as soon as it is dropped"]
pub struct SemaphorePermit {
    guard: LockGuard,
    permit: u32,
}

impl SemaphorePermit {
    fn new(guard: LockGuard, permit: u32) -> Self {
        Self { guard, permit }
    }

    /// Which permit this is, from 1 to the semaphore's number of permits: its fencing
    /// token is that permit's.
    pub fn permit(&self) -> u32 {
        self.permit
    }

    /// The permit's lease: loss signal, token. Its name is the permit's row,
    /// `{name}#{permit}`. Clone it into the job.
    pub fn lease(&self) -> &Lease {
        self.guard.lease()
    }

    /// The fencing token of this acquisition of this permit. It exceeds every earlier
    /// token of the same permit; **tokens of different permits are not comparable**.
    pub fn fencing_token(&self) -> FencingToken {
        self.guard.fencing_token()
    }

    /// Whether the permit is still held. See [`Lease::is_held`].
    pub fn is_held(&self) -> bool {
        self.guard.is_held()
    }

    /// Whether the permit is no longer held (lost, or released). See [`Lease::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    /// Completes when the permit is lost or released. See [`Lease::lost`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn lost(&self) -> LossReason {
        self.guard.lost().await
    }

    /// Releases the permit and waits for the database to confirm, as
    /// [`LockGuard::release`].
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    ///
    /// # Cancel Safety
    ///
    /// As [`LockGuard::release`]: the release goes on; only its result is lost.
    pub async fn release(self) -> Result<()> {
        self.guard.release().await
    }
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("permit", &self.permit)
            .field("lease", self.guard.lease())
            .finish()
    }
}
