//! Setting a lock's options: the builder.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::adapter::QueryInterface;
use crate::inner::LockInner;
use crate::listening::ReleaseBroadcast;
use crate::options::{Options, RawOptions};
use crate::telemetry::LockTelemetry;
use crate::{DistributedLock, Error, Result};

/// Sets the options of a [`DistributedLock`]; [`build`](Self::build) validates them.
#[must_use]
pub struct LockBuilder {
    name: String,
    queries: Arc<dyn QueryInterface>,
    options: RawOptions,
}

impl LockBuilder {
    pub(crate) fn new(name: String, queries: Arc<dyn QueryInterface>) -> Self {
        Self {
            name,
            queries,
            options: RawOptions::default(),
        }
    }

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

    /// How this process names itself as the lock's holder: `holder (host pid N)` is
    /// recorded in the lock table, shown to callers that find the lock held
    /// ([`Holder`](crate::Holder)) and listed by `dlock list`.
    ///
    /// Defaults to `host pid N` alone.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.options.holder = Some(holder.into());
        self
    }

    /// Whether [`lock`](DistributedLock::lock) skips the job, returning
    /// [`Outcome::Skipped`](crate::Outcome::Skipped), when a live holder has the lock, instead of waiting.
    ///
    /// The name says "skip if the lock is already obtained (by someone else)"; it is kept
    /// from the `skipIfObtained` option of the package dlock's API was seeded from, so that
    /// code ported from it reads the same.
    ///
    /// Defaults to `false`.
    pub fn skip_if_obtained(mut self, skip: bool) -> Self {
        self.options.skip_if_obtained = skip;
        self
    }

    /// Validates the name and options.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyName`], [`Error::NameTooLong`] (longer than the database's key can
    /// hold: [`Dialect::max_name_bytes`](crate::Dialect::max_name_bytes)),
    /// [`Error::InvalidTableName`], or [`Error::InvalidOption`] for a NUL character in the
    /// name or holder, a TTL under 100 ms or over a year, a renew interval that is zero or
    /// not shorter than 90 % of the TTL, or a zero poll interval. Each message says what
    /// to change. Building never touches the database.
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
        Ok(DistributedLock::from_inner(LockInner {
            releases: ReleaseBroadcast::for_table(&self.queries, &options.table, &sql),
            sql,
            courtesy_until: Mutex::new(None),
            durability_checked: AtomicBool::new(false),
            returning_refused: AtomicBool::new(false),
            telemetry: LockTelemetry::new(&self.name),
            name: self.name,
            queries: self.queries,
            dialect,
            options,
        }))
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
