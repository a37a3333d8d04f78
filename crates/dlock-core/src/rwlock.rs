//! The reader-writer lock: many readers or one writer, writers first.
//!
//! Two locks on rows of the companion table (see `dialect/rw.rs` for the statements):
//! the **writer** is an ordinary lock of the gate row `{name}#w`; a **reader** is a lock
//! whose every acquisition inserts a row of its own, `{name}#r:{owner}`, and only while
//! the gate is free. A writer takes the gate (from then on no reader enters), then waits,
//! its gate's lease renewed, until no live reader row is left, and only then has the
//! lock. Leases, renewal, loss-first, release and waiting are the lock's own machinery
//! (`LockInner`, `attempt`, `wait`, `KeepAlive`); this file adds the gate a reader enters
//! by, and a writer's wait for the readers to leave.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::adapter::{IntoQueryInterface, QueryInterface, Statement, Value};
use crate::backoff::{Backoff, jittered};
use crate::builder::{inner, validate_name};
use crate::dialect::{GATE_SUFFIX, READER_INFIX};
use crate::inner::{LockInner, within};
use crate::lease::Taken;
use crate::lock::run_job;
use crate::options::Options;
use crate::random::OWNER_ID_LEN;
use crate::wait::{SAFETY_NET_FACTOR, Woken, wait_and_take, wait_for_notice};
use crate::{
    Attempt, DistributedLock, Error, FencingToken, Holder, Lease, LockGuard, LossReason, Outcome,
    Result, RwLockBuilder, telemetry,
};

/// A named reader-writer lock in a database: many readers at once, or one writer.
///
/// **Writers first.** Once a writer has taken the lock's gate, no new reader gets in; the
/// writer then waits only for the readers already in, each of which leaves when it
/// releases or, if it died, when its lease ends (one TTL at most). So a stream of readers
/// never starves a writer, while a stream of writers can hold readers back.
///
/// Every acquisition, read or write, is a lease of its own, renewed in the background,
/// with a loss signal that fires before the database could let a conflicting acquisition
/// in, and a fencing token. **Tokens** come from one counter per lock: a write's token is
/// greater than that of every read that came before it, and a read's greater than that of
/// every write before it. Readers between two writes share one token.
///
/// Its rows live in the companion table of the lock table (`{table}_slots`, created on
/// first use): the gate `{name}#w` and one row per reader, `{name}#r:{owner id}`. Waiting
/// never writes: a reader waits for the writer's release (woken by a notice on
/// PostgreSQL), a writer waiting for the gate as a lock waits, and a writer waiting for
/// readers reads their rows, woken on PostgreSQL by their releases, probing with
/// back-off elsewhere, and never sleeping past the end of the last reader's lease.
///
/// See [what it guarantees, and what that assumes](https://github.com/dlock-rs/dlock/blob/main/docs/rwlocks.md).
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use dlock_core::RwLock;
///
/// let catalog = RwLock::new("catalog", pool)?;
/// let read = catalog.read().await?;
/// println!("reading under token {}", read.fencing_token());
/// read.release().await?;
///
/// let write = catalog.write().await?;
/// println!("writing under token {}", write.fencing_token());
/// write.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RwLock {
    name: Arc<str>,
    reader: DistributedLock,
    writer: DistributedLock,
}

/// What a reader enters by: the gate row, made to exist before its first attempt.
#[derive(Debug)]
pub(crate) struct ReaderGate {
    /// The gate row's name, `{name}#w`, which a writer's release announces.
    pub(crate) name: String,
    create: Statement,
    readers: Statement,
    purge: Statement,
    /// Whether the gate row is known to exist: set once it was created, cleared when an
    /// attempt took nothing (the gate may be a writer's, or gone), so that a gate deleted
    /// by an operator is created again by the next attempt.
    exists: AtomicBool,
}

impl RwLock {
    /// A reader-writer lock named `name` on the database behind `pool`, with the default
    /// options.
    ///
    /// # Errors
    ///
    /// As [`RwLockBuilder::build`](crate::LockBuilder::build). Never touches the
    /// database.
    pub fn new<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> Result<Self> {
        Self::builder(name, pool).build()
    }

    /// A builder for a reader-writer lock named `name` on the database behind `pool`, to
    /// set options: the same as a lock's, applying to reads and writes alike.
    pub fn builder<M>(name: impl Into<String>, pool: impl IntoQueryInterface<M>) -> RwLockBuilder {
        RwLockBuilder::for_rw(name.into(), pool.into_query_interface())
    }

    pub(crate) fn from_parts(
        name: String,
        queries: Arc<dyn QueryInterface>,
        options: Options,
    ) -> Result<Self> {
        let dialect = queries.dialect();
        validate_name(&name, dialect)?;
        // Room for a reader's row name.
        let longest = dialect.max_name_bytes() - READER_INFIX.len() - OWNER_ID_LEN;
        if name.len() > longest {
            return Err(Error::NameTooLong {
                len: name.len(),
                max: longest,
                dialect: dialect.name(),
            });
        }
        let companion = options.table.companion()?;
        let rw = dialect.rw_sql(&companion);
        let options = Options {
            table: companion,
            ..options
        };
        let gate = ReaderGate {
            name: format!("{name}{GATE_SUFFIX}"),
            create: rw.create_gate(&name),
            readers: rw.readers(&name),
            purge: rw.purge(&name),
            exists: AtomicBool::new(false),
        };
        let writer = inner(
            gate.name.clone(),
            None,
            Arc::clone(&queries),
            rw.writer,
            options.clone(),
        );
        let mut reader = inner(name.clone(), None, queries, rw.reader, options);
        reader.gate = Some(gate);
        Ok(Self {
            name: name.into(),
            reader: DistributedLock::from_inner(reader),
            writer: DistributedLock::from_inner(writer),
        })
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes one attempt to read: one statement (MySQL: a second reads the token), which
    /// enters only if no writer holds the gate.
    ///
    /// Returns [`Attempt::Acquired`] with a guard, or [`Attempt::Held`] naming the writer.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe, as [`DistributedLock::try_acquire`].
    pub async fn try_read(&self) -> Result<Attempt<RwReadGuard>> {
        Ok(match self.reader.try_acquire().await? {
            Attempt::Acquired(guard) => Attempt::Acquired(RwReadGuard { guard }),
            Attempt::Held(holder) => Attempt::Held(holder),
        })
    }

    /// Waits until no writer holds or waits for the lock and enters as a reader, or until
    /// the acquire timeout, if one is set, runs out ([`Error::Timeout`]). Waiting only
    /// reads, as a lock's.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held.
    pub async fn read(&self) -> Result<RwReadGuard> {
        let guard = self.reader.acquire().await?;
        Ok(RwReadGuard { guard })
    }

    /// Runs `job` as a reader and leaves afterwards, on every path, as
    /// [`DistributedLock::lock`] does (with `skip_if_obtained`: one attempt, skipped while
    /// a writer holds the gate). The job's [`Lease`] is the read's.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::lock`].
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and leaves in the background.
    pub async fn read_lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        self.reader.lock(job).await
    }

    /// Makes one attempt to write: takes the gate if no writer holds it (one statement),
    /// then looks for readers once (one more); if any is in, it gives the gate back and
    /// reports that reader.
    ///
    /// Returns [`Attempt::Acquired`] with a guard, or [`Attempt::Held`] naming the writer
    /// or the reader whose lease ends last.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::try_acquire`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: a gate taken by a dropped attempt is given back in the background.
    pub async fn try_write(&self) -> Result<Attempt<RwWriteGuard>> {
        let gate = match self.writer.try_acquire().await? {
            Attempt::Acquired(gate) => gate,
            Attempt::Held(writer) => return Ok(Attempt::Held(writer)),
        };
        match self.readers().await?.last_to_leave {
            None => Ok(Attempt::Acquired(RwWriteGuard { guard: gate })),
            Some(reader) => {
                // Not an error of this attempt: the gate's lease ends by itself otherwise.
                drop(gate.release().await);
                telemetry::skipped(self.reader.inner(), &reader);
                Ok(Attempt::Held(reader))
            }
        }
    }

    /// Waits until it holds the lock alone and returns, or until the acquire timeout, if
    /// one is set, runs out ([`Error::Timeout`], naming the writer or reader seen last).
    ///
    /// First it waits for the gate as a lock waits for its row. Once it holds the gate no
    /// new reader enters, and it waits, its lease renewed, for the readers already in to
    /// leave: on PostgreSQL it wakes when a reader releases, elsewhere it looks with
    /// back-off capped by the poll interval; it never sleeps past the end of the last
    /// reader's lease. Waiting only reads.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::acquire`]; [`Error::Lost`] if the gate was lost while it
    /// waited for readers (an operator released it, or its renewals failed).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held (a gate already
    /// taken is given back in the background).
    pub async fn write(&self) -> Result<RwWriteGuard> {
        let started = Instant::now();
        let writer = self.writer.inner();
        let mut last_holder = None;
        let writing = async {
            let gate = wait_and_take(writer, started, &mut last_holder).await?;
            self.drain(gate, &mut last_holder).await
        };
        let guard = match writer.options.acquire_timeout {
            None => writing.await,
            Some(timeout) => tokio::time::timeout_at(started + timeout, writing)
                .await
                .unwrap_or_else(|_elapsed| {
                    let waited = started.elapsed();
                    telemetry::timed_out(writer, waited, last_holder.as_ref());
                    Err(Error::Timeout {
                        name: self.name().to_owned(),
                        waited,
                        holder: last_holder,
                    })
                }),
        }?;
        Ok(RwWriteGuard { guard })
    }

    /// Runs `job` as the writer and releases afterwards, on every path, as
    /// [`DistributedLock::lock`] does (with `skip_if_obtained`: one
    /// [`try_write`](Self::try_write)). The job's [`Lease`] is the gate's.
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::lock`].
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future drops the job and releases in the background.
    pub async fn write_lock<F, Fut, T, E>(&self, job: F) -> Result<Outcome<T>, E>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let guard = if self.writer.inner().options.skip_if_obtained {
            match self.try_write().await? {
                Attempt::Acquired(guard) => guard.guard,
                Attempt::Held(holder) => return Ok(Outcome::Skipped(holder)),
            }
        } else {
            self.write().await?.guard
        };
        run_job(guard, job).await
    }

    /// Creates the companion table, where the lock's rows live, if it does not exist
    /// (it is created on first use anyway), as [`DistributedLock::create_table`].
    ///
    /// # Errors
    ///
    /// As [`DistributedLock::create_table`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe.
    pub async fn create_table(&self) -> Result<()> {
        self.writer.create_table().await
    }

    /// The readers in: the one whose lease ends last, named with how many others are
    /// in; and how many reader rows have ended. Never writes; bounded by the TTL, as a
    /// probe.
    async fn readers(&self) -> Result<Readers> {
        let lock = self.reader.inner();
        let gate = lock.gate.as_ref().expect("BUG: a reader has its gate");
        let action = "read the readers";
        let reading = async {
            match lock.query(&gate.readers).await {
                // No table, no readers.
                Err(error) if lock.dialect.is_missing_table(&error) => Ok(Vec::new()),
                other => other.map_err(|error| Error::query(action, error)),
            }
        };
        let rows = within(action, lock.options.ttl, reading).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(Readers::default());
        };
        let count = |value: Option<&Value>| match value {
            Some(Value::Int(count)) => u64::try_from(*count).unwrap_or(0),
            _ => 0,
        };
        let (live, rows) = (count(row.get(2)), count(row.get(3)));
        let ended = rows.saturating_sub(live);
        if live == 0 {
            return Ok(Readers {
                last_to_leave: None,
                ended,
            });
        }
        let holder = match row.first() {
            Some(Value::Text(holder)) => holder.clone(),
            _ => "an unnamed reader".to_owned(),
        };
        let expires_in = match row.get(1) {
            Some(Value::Int(ms)) => Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
            _ => Duration::ZERO,
        };
        let holder = match live {
            1 => format!("{holder}, reading"),
            _ => format!("{holder}, reading with {} others", live - 1),
        };
        Ok(Readers {
            last_to_leave: Some(Holder { holder, expires_in }),
            ended,
        })
    }

    /// Holding the gate, waits until no live reader is left; `last_holder` keeps the
    /// reader seen last. Only reads. Ends with the gate's loss, if it comes first.
    async fn drain(&self, gate: LockGuard, last_holder: &mut Option<Holder>) -> Result<LockGuard> {
        let readers = self.reader.inner();
        let poll_interval = readers.options.poll_interval;
        // Subscribed, and the interest announced, before each look: no reader's release
        // after the look goes unheard.
        let mut releases = readers.releases.subscribe();
        let mut interest = readers.releases.interest(&readers.name);
        let mut backoff = Backoff::new(poll_interval);
        loop {
            let hears = readers.releases.hears(&mut interest).await;
            let nap = match self.readers().await {
                Ok(Readers {
                    last_to_leave: None,
                    ended,
                }) => match self.purge(ended).await {
                    Ok(()) if gate.is_held() => return Ok(gate),
                    Ok(()) => break,
                    Err(error) if error.is_transient() => backoff.next(poll_interval),
                    Err(error) => return Err(error),
                },
                Ok(Readers {
                    last_to_leave: Some(reader),
                    ..
                }) => {
                    let nap = if hears {
                        jittered(poll_interval * SAFETY_NET_FACTOR)
                    } else {
                        backoff.next(poll_interval)
                    };
                    // A reader that died sends no notice: look again when its lease ends.
                    let nap = nap.min(reader.expires_in + Duration::from_millis(5));
                    *last_holder = Some(reader);
                    nap
                }
                Err(error) if error.is_transient() => backoff.next(poll_interval),
                Err(error) => return Err(error),
            };
            let name = &*readers.name;
            tokio::select! {
                woken = wait_for_notice(&mut releases, |notice| notice == name, nap) => {
                    if woken == Woken::Released {
                        // Busy readers: look again soon.
                        backoff = Backoff::new(poll_interval);
                    }
                }
                _reason = gate.lost() => break,
            }
        }
        let reason = gate
            .lease()
            .loss_reason()
            .unwrap_or(LossReason::KeepAliveEnded);
        Err(gate.lease().lost_error(reason))
    }
}

/// What a writer's look for readers found.
#[derive(Debug, Default)]
struct Readers {
    /// The live reader whose lease ends last, if any is in.
    last_to_leave: Option<Holder>,
    /// How many reader rows have ended (crashed or revoked readers).
    ended: u64,
}

impl RwLock {
    /// Deletes the rows of readers whose lease has ended (they crashed, or were revoked;
    /// none can be renewed again), if the last look saw `ended` such rows. A delete waits
    /// for any transaction fenced with such a reader's lease (PostgreSQL: its `FOR KEY
    /// SHARE`; MySQL/MariaDB: its shared lock; SQLite: the write lock of an `IMMEDIATE`
    /// one) to end, so the writer gets in only after it: a read's fence holds writers
    /// back as a lock's holds a takeover back. Bounded by the TTL.
    async fn purge(&self, ended: u64) -> Result<()> {
        if ended == 0 {
            return Ok(());
        }
        let lock = self.reader.inner();
        let gate = lock.gate.as_ref().expect("BUG: a reader has its gate");
        let action = "delete the rows of ended readers";
        let purging = async {
            lock.queries
                .execute(&gate.purge)
                .await
                .map_err(|error| Error::query(action, error))
        };
        within(action, lock.options.ttl, purging).await.map(drop)
    }
}

/// A reader's acquire: its row, entered by the gate (see `dialect/rw.rs`).
impl LockInner {
    pub(crate) async fn take_read(&self, gate: &ReaderGate, owner: &str) -> Result<Option<Taken>> {
        if !gate.exists.load(Ordering::Relaxed) {
            let first = self.queries.execute(&gate.create).await;
            self.or_create_table("create the reader-writer lock's gate", first, || {
                self.queries.execute(&gate.create)
            })
            .await?;
            gate.exists.store(true, Ordering::Relaxed);
        }
        let taken = self.take(owner, false).await?;
        if taken.is_none() {
            gate.exists.store(false, Ordering::Relaxed);
        }
        Ok(taken)
    }
}

impl fmt::Debug for RwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("name", &self.name)
            .field("writer", &self.writer)
            .finish()
    }
}

/// The methods both guards have: each is a [`LockGuard`] of the acquisition's row.
macro_rules! rw_guard {
    ($guard:ident, $what:literal) => {
        impl $guard {
            #[doc = concat!("The lease of this ", $what, ": loss signal, token. Clone it into the job.")]
            pub fn lease(&self) -> &Lease {
                self.guard.lease()
            }

            #[doc = concat!("The fencing token of this ", $what, " (see [`RwLock`]).")]
            pub fn fencing_token(&self) -> FencingToken {
                self.guard.fencing_token()
            }

            /// Whether it is still held. See [`Lease::is_held`].
            pub fn is_held(&self) -> bool {
                self.guard.is_held()
            }

            /// Whether it has been lost (or released). See [`Lease::is_lost`].
            pub fn is_lost(&self) -> bool {
                self.guard.is_lost()
            }

            /// Completes when it is lost or released. See [`Lease::lost`].
            ///
            /// # Cancel Safety
            ///
            /// Cancel safe: it only watches.
            pub async fn lost(&self) -> LossReason {
                self.guard.lost().await
            }

            /// Releases it and waits for the database to confirm, as
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

        impl fmt::Debug for $guard {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("lease", self.guard.lease())
                    .finish()
            }
        }
    };
}

/// A read of an [`RwLock`]: its own row and lease, renewed in the background; no writer
/// holds the lock while it is held. Its [`Lease`] is named as the lock is; its owner id
/// names its row (`{name}#r:{owner id}`).
///
/// **Dropping the guard leaves** (deletes the reader's row), as dropping a [`LockGuard`]
/// releases (before the drop returns in the runtime's main future on a multi-threaded
/// runtime, in the background elsewhere); [`release`](Self::release) waits and reports.
#[must_use = "the read ends as soon as the guard is dropped"]
pub struct RwReadGuard {
    guard: LockGuard,
}

/// The write of an [`RwLock`]: the gate's lease, renewed in the background; nobody else,
/// reader or writer, holds the lock while it is held. Its [`Lease`] is the gate row's,
/// named `{name}#w` (as [`Error::Lost`] names it).
///
/// **Dropping the guard releases the lock**, as dropping a [`LockGuard`] does;
/// [`release`](Self::release) waits and reports.
#[must_use = "the write ends as soon as the guard is dropped"]
pub struct RwWriteGuard {
    guard: LockGuard,
}

rw_guard!(RwReadGuard, "read");
rw_guard!(RwWriteGuard, "write");
