//! Leader election on the lock table: a lock whose holder leads and publishes a value
//! (an address, an id) that every other node can read or watch.
//!
//! An election *is* a lock: campaigning acquires it (the lock's own acquire statement and
//! waiting), leading is holding its lease (the same renewal, loss-first deadline and
//! release), and the term is the acquisition's fencing token. What elections add is the
//! `value` column: the leader's value, stored with the fencing token it was proclaimed
//! under, so that readers never take a former leader's value for the current one's.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::adapter::{IntoQueryInterface, Value};
use crate::admin::epoch_millis;
use crate::inner::LockInner;
use crate::{DistributedLock, Error, FencingToken, Leadership, LockBuilder, Observer, Result};

/// A leader election among the processes that use the same name and lock table: at most
/// one of them leads at a time, every one of them can see which.
///
/// Built on the lock of the same name ([`DistributedLock`]): the leader holds that lock,
/// with its lease, renewal and loss signal, and its term is that acquisition's fencing
/// token, so terms strictly increase across resignations, crashes, expiries and force
/// releases. Use the name for nothing else. Creating one is cheap and does not touch the
/// database; clones share it. See [what it guarantees, and what that
/// assumes](https://github.com/dlock-rs/dlock/blob/main/docs/guarantees.md#leader-election).
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: std::sync::Arc<dyn dlock_core::adapter::QueryInterface>) -> dlock_core::Result<()> {
/// use dlock_core::Election;
///
/// let election = Election::builder("scheduler", pool)
///     .value("10.0.0.7:8080")
///     .build()?;
/// let leadership = election.campaign().await?;
/// println!("leading in term {}", leadership.term());
/// tokio::select! {
///     () = async { /* schedule, fencing writes with leadership.term() */ } => {}
///     reason = leadership.lost() => eprintln!("no longer leading: {reason}"),
/// }
/// leadership.resign().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Election {
    lock: DistributedLock,
    value: Arc<str>,
}

/// Sets the options of an [`Election`]: the lock's, and the value this candidate
/// publishes when it leads. [`build`](Self::build) validates them.
#[must_use]
pub struct ElectionBuilder {
    lock: LockBuilder,
    value: Option<String>,
}

impl Election {
    /// A builder for the election `name` on the database behind `pool` (any pool or
    /// connection type of an adapter crate).
    pub fn builder<M>(
        name: impl Into<String>,
        pool: impl IntoQueryInterface<M>,
    ) -> ElectionBuilder {
        ElectionBuilder {
            lock: DistributedLock::builder(name, pool),
            value: None,
        }
    }

    /// The election's name (its lock's).
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// The value this candidate publishes when it becomes the leader.
    pub fn value(&self) -> &str {
        &self.value
    }

    fn inner(&self) -> &Arc<LockInner> {
        self.lock.inner()
    }

    /// Waits until this candidate leads, and publishes its value.
    ///
    /// It waits as [`DistributedLock::acquire`] does (reading only, woken by a release on
    /// PostgreSQL, or at the leader's lease end), takes the lock, then proclaims its value
    /// with the lease: other nodes see it lead from then on. If the lease ends before the
    /// value is published, it campaigns again.
    ///
    /// # Errors
    ///
    /// [`Error::NoValueColumn`] for a lock table created before elections (the message
    /// gives the `ALTER TABLE` to run). As [`DistributedLock::acquire`] otherwise:
    /// errors that may pass are ridden out; the others are returned.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: dropping the future at any point leaves nothing held (a lock taken
    /// but not yet handed out is released).
    pub async fn campaign(&self) -> Result<Leadership> {
        loop {
            let guard = self.lock.acquire().await?;
            let lease = guard.lease();
            let proclaimed = self
                .inner()
                .proclaim(lease.owner_id(), lease.fencing_token(), &self.value)
                .await;
            match proclaimed {
                // Published while the lease held: leading.
                Ok(true) if guard.is_held() => return Ok(Leadership::new(guard)),
                // Lost before it was published, or the answer came past the deadline.
                Ok(_) => drop(guard.release().await),
                Err(error) if error.is_transient() => {
                    drop(guard.release().await);
                    tokio::time::sleep(self.inner().options.poll_interval).await;
                }
                Err(error) => {
                    drop(guard.release().await);
                    return Err(error);
                }
            }
        }
    }

    /// The current leader, read once; `None` when nobody leads (nobody holds a live
    /// lease, or its holder has not published its value yet). Never writes.
    ///
    /// # Errors
    ///
    /// [`Error::NoValueColumn`] for a lock table created before elections; the database's
    /// error otherwise (a table that does not exist yet is not an error: nobody leads).
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        self.inner().leader().await
    }

    /// Watches the leader: an [`Observer`] yields the leader as it is now, then every
    /// change — a new term, a new value proclaimed, a resignation or an expiry (`None`).
    /// Never writes. See [`Observer`] for how soon a change is seen.
    pub fn observe(&self) -> Observer {
        Observer::new(Arc::clone(self.inner()))
    }

    /// Leads whenever it can: campaigns, runs `job` while leading, and if the leadership
    /// is lost, drops the job at once (before the database could let another leader in)
    /// and campaigns again, to run the job anew. Returns when the job does, after
    /// resigning, with the job's result.
    ///
    /// The job receives the [`Leadership`] (a clone: term, loss signal,
    /// [`proclaim`](Leadership::proclaim)).
    ///
    /// # Errors
    ///
    /// The job's error, converted into `E` (it is not run again); [`campaign`]'s errors,
    /// converted. A failed resignation after the job returned is not an error: the lease
    /// then expires by its TTL.
    ///
    /// [`campaign`]: Self::campaign
    ///
    /// # Cancel Safety
    ///
    /// Dropping this future (at shutdown, say, in a `select!` with a signal) drops the job
    /// and resigns, as dropping a [`Leadership`] does: before the drop returns in the
    /// runtime's main future, in the background elsewhere.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn drain_queue(term: dlock_core::FencingToken) -> dlock_core::Result<u64> { Ok(0) }
    /// # async fn example(election: dlock_core::Election, shutdown: impl Future<Output = ()>) -> dlock_core::Result<()> {
    /// let draining = election.run_while_leader(|leadership| async move {
    ///     // Only the leader drains; dropped at once if the leadership is lost, and run
    ///     // again in the next term this process wins.
    ///     drain_queue(leadership.term()).await
    /// });
    /// tokio::select! {
    ///     drained = draining => println!("drained {} jobs", drained?),
    ///     () = shutdown => {} // dropping `draining` resigns
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_while_leader<F, Fut, T, E>(&self, mut job: F) -> Result<T, E>
    where
        F: FnMut(Leadership) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        loop {
            let leadership = self.campaign().await?;
            let ran = leadership
                .lease()
                .run_while_held(job(leadership.clone()))
                .await;
            let resigned = leadership.resign().await;
            if let Ok(result) = ran {
                drop(resigned);
                return result;
            }
        }
    }
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("lock", &self.lock)
            .field("value", &self.value)
            .finish()
    }
}

impl ElectionBuilder {
    /// The value this candidate publishes when it leads: short text for the other nodes,
    /// such as its address or id. It can be changed while leading with
    /// [`Leadership::proclaim`].
    ///
    /// Defaults to the holder's name ([`holder`](Self::holder)).
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// The lock table; see [`LockBuilder::table`]. Every candidate and observer of an
    /// election must use the same.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.lock = self.lock.table(table);
        self
    }

    /// How long a leader's lease lasts without renewal: how long the other nodes take to
    /// notice a crashed leader. See [`LockBuilder::ttl`]. Defaults to 30 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// How often the leader renews its lease; see [`LockBuilder::renew_interval`].
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.lock = self.lock.renew_interval(interval);
        self
    }

    /// The longest pause between two reads of a waiting candidate, and of an
    /// [`Observer`] where no notice wakes it; see [`LockBuilder::poll_interval`].
    /// Defaults to 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.lock = self.lock.poll_interval(interval);
        self
    }

    /// How this process names itself as the leader; see [`LockBuilder::holder`].
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.lock = self.lock.holder(holder);
        self
    }

    /// Validates the name and options.
    ///
    /// # Errors
    ///
    /// As [`LockBuilder::build`]; and [`Error::InvalidOption`] for a NUL character in the
    /// value. Never touches the database.
    pub fn build(self) -> Result<Election> {
        let lock = self.lock.build()?;
        let value = match self.value {
            Some(value) => check_value(value)?,
            None => lock.inner().options.holder.clone(),
        };
        Ok(Election {
            lock,
            value: value.into(),
        })
    }
}

impl fmt::Debug for ElectionBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectionBuilder")
            .field("lock", &self.lock)
            .field("value", &self.value)
            .finish()
    }
}

/// `value`, if the database can store it.
pub(crate) fn check_value(value: String) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::InvalidOption(
            "the leader's value contains a NUL character, which PostgreSQL cannot store; \
             remove it"
                .into(),
        ));
    }
    Ok(value)
}

/// The notice sent when a leader proclaims its value, for observers: the name behind a
/// control character, so that candidates waiting for the lock, which listen for its
/// name, are not woken by it (a lock whose own name starts so would be woken once, and
/// look: harmless).
pub(crate) fn proclamation_notice(name: &str) -> String {
    format!("\u{1}{name}")
}

/// The leader of an election, as read from the lock table (every time by the database's
/// clock).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The value the leader proclaimed: its address, its id.
    pub value: String,
    /// Who leads: the holder's name (label, host, pid), as [`LockInfo::holder`](crate::LockInfo::holder).
    pub holder: String,
    /// The term: the fencing token of the leader's acquisition, larger for every later
    /// leader.
    pub term: FencingToken,
    /// When this leader was elected.
    pub since: SystemTime,
    /// How long its lease had left when read: if it crashed, someone else may lead after
    /// that.
    pub lease_ends_in: Duration,
}

impl Leader {
    /// Decodes a `LEADER` row (see the dialect module).
    pub(crate) fn from_row(row: Vec<Value>) -> Option<Self> {
        let [value, holder, term, since, left]: [Value; 5] = row.try_into().ok()?;
        let (Value::Text(value), Value::Int(term), Value::Int(since), Value::Int(left)) =
            (value, term, since, left)
        else {
            return None;
        };
        Some(Self {
            value,
            holder: match holder {
                Value::Text(holder) => holder,
                _ => "an unnamed holder".to_owned(),
            },
            term: FencingToken(term),
            since: epoch_millis(since),
            lease_ends_in: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        })
    }

    /// Whether `other` is the same leadership, as published: the same term and value.
    pub(crate) fn same_as(&self, other: &Leader) -> bool {
        self.term == other.term && self.value == other.value
    }
}

impl fmt::Display for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, term {})", self.value, self.holder, self.term)
    }
}
