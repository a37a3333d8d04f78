//! Setting a lock's options: the builder.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::adapter::QueryInterface;
use crate::dialect::Sql;
use crate::inner::LockInner;
use crate::listening::ReleaseBroadcast;
use crate::name_set::NameSet;
use crate::options::{Options, RawOptions};
use crate::telemetry::LockTelemetry;
use crate::{Dialect, DistributedLock, Error, MultiLock, Result, RwLock};

/// Sets the options of a [`DistributedLock`] (or, as [`MultiLockBuilder`], of a
/// [`MultiLock`]); [`build`](Self::build) validates them.
#[must_use]
pub struct LockBuilder<L = DistributedLock> {
    /// A lock's name; empty for a multi-lock until built.
    pub(crate) name: String,
    /// A multi-lock's names, as given.
    names: Vec<String>,
    /// A semaphore's permits, as given; 0 for other primitives.
    pub(crate) permits: u32,
    pub(crate) queries: Arc<dyn QueryInterface>,
    pub(crate) options: RawOptions,
    built: PhantomData<fn() -> L>,
}

/// Sets the options of a [`MultiLock`]: the same options as a lock's, with the same
/// defaults; [`build`](LockBuilder::build) validates them and the names.
pub type MultiLockBuilder = LockBuilder<MultiLock>;

impl<L> LockBuilder<L> {
    /// A builder for a semaphore (`L`) of `name` with `permits`.
    pub(crate) fn for_permits(
        name: String,
        permits: u32,
        queries: Arc<dyn QueryInterface>,
    ) -> Self {
        Self {
            name,
            names: Vec::new(),
            permits,
            queries,
            options: RawOptions::default(),
            built: PhantomData,
        }
    }
}

/// Sets the options of an [`RwLock`]: the same options as a lock's, with the same
/// defaults, for its readers and writers alike; [`build`](LockBuilder::build) validates
/// them and the name.
pub type RwLockBuilder = LockBuilder<RwLock>;

impl RwLockBuilder {
    pub(crate) fn for_rw(name: String, queries: Arc<dyn QueryInterface>) -> Self {
        Self {
            name,
            names: Vec::new(),
            permits: 0,
            queries,
            options: RawOptions::default(),
            built: PhantomData,
        }
    }

    /// Validates the name and options.
    ///
    /// # Errors
    ///
    /// What [`LockBuilder::build`] returns for a lock's name and options, the longest
    /// name being shorter by what a reader's row adds to it (35 bytes); and
    /// [`Error::InvalidTableName`] for a table whose companion's name would be too long
    /// (see [`TableName::companion`](crate::TableName::companion)). Building never
    /// touches the database.
    pub fn build(self) -> Result<RwLock> {
        let options = Options::validate(self.options)?;
        RwLock::from_parts(self.name, self.queries, options)
    }
}

impl LockBuilder {
    pub(crate) fn new(name: String, queries: Arc<dyn QueryInterface>) -> Self {
        Self {
            name,
            names: Vec::new(),
            permits: 0,
            queries,
            options: RawOptions::default(),
            built: PhantomData,
        }
    }
}

impl MultiLockBuilder {
    pub(crate) fn for_names(names: Vec<String>, queries: Arc<dyn QueryInterface>) -> Self {
        Self {
            name: String::new(),
            names,
            permits: 0,
            queries,
            options: RawOptions::default(),
            built: PhantomData,
        }
    }

    /// Validates the names and options.
    ///
    /// The names are a set: duplicates are merged, and the order they are given in does
    /// not matter (they are always taken in name order).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for an empty set of names; for any name, what
    /// [`LockBuilder::build`] returns for a lock's; and the same option errors. Building
    /// never touches the database.
    pub fn build(self) -> Result<MultiLock> {
        let dialect = self.queries.dialect();
        let options = Options::validate(self.options)?;
        let (sql, set_sql) = dialect.set_sql(&options.table);
        let (set, name) = NameSet::new(self.names, dialect, set_sql)?;
        let mut options = options;
        // Operators see, on each name's row, that it is held together with others.
        options.holder = format!(
            "{} in a multi-lock of {} names",
            options.holder,
            set.members.len()
        );
        let inner = inner(name, Some(set), self.queries, sql, options);
        Ok(MultiLock::from_lock(DistributedLock::from_inner(inner)))
    }
}

/// Refuses a name that no lock could have: empty, with a NUL character, or longer than
/// `dialect`'s key holds.
pub(crate) fn validate_name(name: &str, dialect: Dialect) -> Result<()> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if name.contains('\0') {
        return Err(Error::InvalidOption(
            "the lock name contains a NUL character, which PostgreSQL cannot store; \
             remove it (or use a hash of the name)"
                .into(),
        ));
    }
    if name.len() > dialect.max_name_bytes() {
        return Err(Error::NameTooLong {
            len: name.len(),
            max: dialect.max_name_bytes(),
            dialect: dialect.name(),
        });
    }
    Ok(())
}

/// The state a lock's clones share, for `name` (a multi-lock's: its JSON array, with
/// `set`).
pub(crate) fn inner(
    name: String,
    set: Option<NameSet>,
    queries: Arc<dyn QueryInterface>,
    sql: Sql,
    options: Options,
) -> LockInner {
    LockInner {
        releases: ReleaseBroadcast::for_table(&queries, &options.table, &sql),
        sql,
        courtesy_until: Mutex::new(None),
        durability_checked: AtomicBool::new(false),
        returning_refused: AtomicBool::new(false),
        telemetry: LockTelemetry::new(&name),
        name,
        set,
        gate: None,
        dialect: queries.dialect(),
        queries,
        options,
    }
}

impl<L> LockBuilder<L> {
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
}

impl LockBuilder {
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
        validate_name(&self.name, dialect)?;
        let options = Options::validate(self.options)?;
        let sql = dialect.sql(&options.table);
        let inner = inner(self.name, None, self.queries, sql, options);
        Ok(DistributedLock::from_inner(inner))
    }
}

impl<L> fmt::Debug for LockBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockBuilder")
            .field("name", &self.name)
            .field("names", &self.names)
            .field("permits", &self.permits)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
