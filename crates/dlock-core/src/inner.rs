//! One named lock on one database, shared by its clones, guards and leases: each
//! statement of the algorithm, run through the query interface, with its result decoded
//! and its errors classified.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::adapter::{QueryError, QueryErrorKind, QueryInterface, Row, Statement, Value};
use crate::clock;
use crate::dialect::Sql;
use crate::election::proclamation_notice;
use crate::lease::{Acquisition, Taken, lease_end};
use crate::listening::ReleaseBroadcast;
use crate::name_set::NameSet;
use crate::options::Options;
use crate::rwlock::ReaderGate;
use crate::telemetry::LockTelemetry;
use crate::{Dialect, Error, FencingToken, Holder, Leader, Result};

/// How long a process that released a contended lock waits before it tries to take the
/// same lock again: long enough for waiters woken by the release (a notification and one
/// statement away) to get there first, so a node looping back into `acquire` cannot win
/// every race. Short enough to cost nothing noticeable when nobody else was waiting.
const COURTESY: Duration = Duration::from_millis(3);
/// The same where nobody is notified (MySQL/MariaDB, SQLite) and waiters in other
/// processes poll: as long as the first pause of their back-off at its longest, which a
/// busy lock keeps them at (see `wait.rs`), so that one of them looks in that time.
const COURTESY_TO_POLLERS: Duration = crate::backoff::FIRST_PAUSE;

#[derive(Debug)]
pub(crate) struct LockInner {
    /// The lock's name; a multi-lock's is the JSON array of its names, which its
    /// statements bind where a lock's bind its name.
    pub(crate) name: String,
    /// A multi-lock's names and statements; `None` for a lock.
    pub(crate) set: Option<NameSet>,
    /// A reader-writer lock's readers: the gate row they enter by (see `rwlock.rs`);
    /// `None` for anything else.
    pub(crate) gate: Option<ReaderGate>,
    pub(crate) queries: Arc<dyn QueryInterface>,
    pub(crate) dialect: Dialect,
    pub(crate) sql: Sql,
    pub(crate) options: Options,
    pub(crate) releases: Arc<ReleaseBroadcast>,
    /// Until when this lock's next `acquire` lets others go first; see [`COURTESY`].
    pub(crate) courtesy_until: Mutex<Option<Instant>>,
    /// Whether this lock has had the database's durability checked (see
    /// `durability::check_once`): after its first acquisition, one load per acquisition.
    pub(crate) durability_checked: AtomicBool,
    /// Whether the server refused `acquire_returning` (MySQL, unlike MariaDB, has no
    /// `RETURNING`): the lock then acquires with the upsert and a read of the token.
    pub(crate) returning_refused: AtomicBool,
    pub(crate) telemetry: LockTelemetry,
}

/// `operation`'s result, or, if it has not finished within `limit`, the error of a
/// statement abandoned unanswered (one that may have committed): no statement of the core
/// waits for a connection that will never answer.
pub(crate) async fn within<T>(
    action: &'static str,
    limit: Duration,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or_else(|_unanswered| {
            Err(Error::query(
                action,
                QueryError::new(
                    QueryErrorKind::Statement,
                    None,
                    format!("no answer within {} ms", limit.as_millis()),
                ),
            ))
        })
}

/// Runs `CREATE TABLE IF NOT EXISTS`. PostgreSQL and MariaDB check the right to create
/// tables even when the table exists, so a role given only what dlock needs (SELECT,
/// INSERT, UPDATE) fails it; when the table can be read, it is there, and that is success.
pub(crate) async fn create_table(
    queries: &dyn QueryInterface,
    sql: &Sql,
    table: &crate::TableName,
) -> Result<()> {
    let Err(source) = queries.execute(&sql.create_table()).await else {
        return Ok(());
    };
    if queries.query(&sql.probe("", Duration::ZERO)).await.is_ok() {
        return Ok(());
    }
    Err(Error::create_table(table, source))
}

/// What a probe saw: who holds the lock, and which acquisition (its fencing token, which
/// tells a waiter whether the lock changed hands since it last looked).
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) holder: Holder,
    pub(crate) token: Option<i64>,
}

/// What a renewal found.
#[derive(Debug)]
pub(crate) enum Renewal {
    /// The lease was extended; the database's clock then, in epoch milliseconds, where the
    /// dialect reports it.
    Renewed { database_ms: Option<i64> },
    /// The row is no longer this acquisition's live lease.
    NotOurs,
}

fn token(rows: &[Row]) -> Option<FencingToken> {
    match rows.first().map(Vec::as_slice) {
        Some([Value::Int(token)]) => Some(FencingToken(*token)),
        _ => None,
    }
}

impl LockInner {
    /// One acquisition attempt: takes the lock for `owner` if it is free or expired.
    ///
    /// A statement that lost a race with a concurrent one (a deadlock or serialization
    /// failure, rolled back by the database) took nothing, so it is run again at once, a
    /// few times: under `SERIALIZABLE` such failures also come from transactions on
    /// *other* names (predicate locks cover pages, not rows), and reporting them as "held"
    /// would make `skip_if_obtained` skip a job nobody runs. If it keeps losing, the lock
    /// most likely went to the other: the attempt reports "not acquired" and the caller
    /// probes for the holder.
    ///
    /// `in_turn`: a waiter woken by a release notice, which attempts a lock (or a writer
    /// its gate) only if it gets the lock's turn, where the dialect has turns.
    pub(crate) async fn try_take(&self, owner: &str, in_turn: bool) -> Result<Option<Taken>> {
        const RUNS: usize = 3;
        for run in 1..=RUNS {
            let taken = match (&self.set, &self.gate) {
                (Some(set), _) => self.take_all(set, owner).await,
                (None, Some(gate)) => self.take_read(gate, owner).await,
                (None, None) => self.take(owner, in_turn).await,
            };
            match taken {
                Err(Error::Database { source, .. }) if self.dialect.is_conflict(&source) => {
                    if run == RUNS {
                        return Ok(None);
                    }
                }
                other => return other,
            }
        }
        Ok(None)
    }

    /// A lock's acquire; a reader's too, whose statements are its own (see
    /// `dialect/rw.rs`). `in_turn`: see [`try_take`](Self::try_take).
    pub(crate) async fn take(&self, owner: &str, in_turn: bool) -> Result<Option<Taken>> {
        Ok(self.take_one(owner, in_turn).await?.map(Taken::one))
    }

    async fn take_one(&self, owner: &str, in_turn: bool) -> Result<Option<FencingToken>> {
        let action = "acquire the lock";
        if let Some(statement) = self
            .sql
            .acquire_returning(&self.name, owner, &self.options.holder, self.options.ttl)
            .filter(|_| !self.returning_refused.load(Ordering::Relaxed))
        {
            // MariaDB: the upsert returns the row; it is ours iff it names our owner.
            match self.queries.query(&statement).await {
                Err(error) if self.dialect.is_syntax_error(&error) => {
                    // MySQL, which has no RETURNING: the upsert and a read from now on.
                    self.returning_refused.store(true, Ordering::Relaxed);
                }
                first => {
                    let rows = self
                        .or_create_table(action, first, || self.queries.query(&statement))
                        .await?;
                    return Ok(match rows.first().map(Vec::as_slice) {
                        Some([Value::Text(holder), Value::Int(token)]) if holder == owner => {
                            Some(FencingToken(*token))
                        }
                        _ => None,
                    });
                }
            }
        }
        let (name, holder, ttl) = (&self.name, &self.options.holder, self.options.ttl);
        // In turn, a row `(NULL)` (another waiter's turn) reads as not acquired.
        let statement = in_turn
            .then(|| self.sql.acquire_in_turn(name, owner, holder, ttl))
            .flatten()
            .unwrap_or_else(|| self.sql.acquire(name, owner, holder, ttl));
        let Some(read_token) = self.sql.read_token(&self.name, owner) else {
            let first = self.queries.query(&statement).await;
            let rows = self
                .or_create_table(action, first, || self.queries.query(&statement))
                .await?;
            return Ok(token(&rows));
        };
        // No RETURNING (MySQL): the upsert, then an owner-checked read of the token.
        let first = self.queries.execute(&statement).await;
        let affected = self
            .or_create_table(action, first, || self.queries.execute(&statement))
            .await?;
        if affected == 0 {
            return Ok(None);
        }
        match self.query(&read_token).await {
            Ok(rows) => Ok(token(&rows)),
            Err(error) => {
                let error = Error::query("read the new fencing token", error);
                // The upsert may have taken the lock; nobody will hear of it, so free it
                // now rather than leave it blocked for a TTL. Owner-checked, so harmless
                // if it did not.
                let _ = self.release_once(owner, false).await;
                Err(error)
            }
        }
    }

    /// Who holds the lock now, if anyone holds a live lease. Never writes. Bounded by the
    /// TTL, so that a waiter on a dead connection tries again rather than hang.
    pub(crate) async fn probe(&self) -> Result<Option<Held>> {
        let statement = self.sql.probe(&self.name, self.options.ttl);
        let action = "read the lock";
        let reading = async {
            self.query(&statement)
                .await
                .map_err(|error| Error::query(action, error))
        };
        let rows = within(action, self.options.ttl, reading).await?;
        Ok(rows.into_iter().next().map(|row| {
            let mut columns = row.into_iter();
            let holder = match columns.next() {
                Some(Value::Text(holder)) => holder,
                _ => "an unnamed holder".to_owned(),
            };
            let expires_in = match columns.next() {
                Some(Value::Int(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                _ => Duration::ZERO,
            };
            let token = match columns.next() {
                Some(Value::Int(token)) => Some(token),
                _ => None,
            };
            Held {
                holder: Holder { holder, expires_in },
                token,
            }
        }))
    }

    /// How many rows an acquisition holds: one, or a multi-lock's one per name. A
    /// renewal or release that finds fewer found the lock (some of its names) not ours.
    pub(crate) fn rows(&self) -> u64 {
        self.set.as_ref().map_or(1, NameSet::rows)
    }

    /// Whether a release notice for `released` (a lock's name) may let this lock in.
    pub(crate) fn is_released_by(&self, released: &str) -> bool {
        match (&self.set, &self.gate) {
            (Some(set), _) => set.contains(released),
            (None, Some(gate)) => released == gate.name,
            (None, None) => released == self.name,
        }
    }

    /// Extends `owner`'s lease, if the row (every row of a multi-lock) is still `owner`'s
    /// live lease.
    pub(crate) async fn renew(&self, owner: &str) -> Result<Renewal> {
        let statement = self.sql.renew(&self.name, owner, self.options.ttl);
        let action = "renew the lease";
        if statement.columns.is_empty() {
            // The dialect cannot return its clock from an UPDATE (MySQL).
            let renewed = self.execute(action, &statement).await? == self.rows();
            return Ok(if renewed {
                Renewal::Renewed { database_ms: None }
            } else {
                Renewal::NotOurs
            });
        }
        let rows = self
            .query(&statement)
            .await
            .map_err(|error| Error::query(action, error))?;
        if u64::try_from(rows.len()) != Ok(self.rows()) {
            // A multi-lock renewed fewer names than it holds: some are no longer its own.
            return Ok(Renewal::NotOurs);
        }
        Ok(match rows.first().map(Vec::as_slice) {
            Some([Value::Int(database_ms)]) => Renewal::Renewed {
                database_ms: Some(*database_ms),
            },
            Some(_) => Renewal::Renewed { database_ms: None },
            None => Renewal::NotOurs,
        })
    }

    /// Frees the lock if `owner` still holds it; `false` when it did not. Wakes this
    /// process's waiters at once and, where the dialect can and another process waits,
    /// those too: the release itself notifies them where it can (`release_notifies`),
    /// else a notice goes in the background, off the release's path. This lock's next `acquire` then lets the other waiters go first if
    /// the acquisition had to wait (`contended`) or, where the release can tell, another
    /// process waits.
    pub(crate) async fn release_once(&self, owner: &str, contended: bool) -> Result<bool> {
        let statement = self.sql.release(&self.name, owner);
        let action = "release the lock";
        let watched = if statement.columns.is_empty() {
            if self.execute(action, &statement).await? != self.rows() {
                return Ok(false);
            }
            true
        } else {
            let rows = self
                .query(&statement)
                .await
                .map_err(|error| Error::query(action, error))?;
            if u64::try_from(rows.len()) != Ok(self.rows()) {
                // None freed, or only some of a multi-lock's: it was not (all) ours.
                return Ok(false);
            }
            match rows.first().map(Vec::as_slice) {
                None => return Ok(false),
                Some([Value::Int(watched)]) => *watched != 0,
                // Not as expected: notify, as the safe side.
                Some(_) => true,
            }
        };
        if let Some(set) = &self.set {
            // Every name, whether or not anyone watches it (see `NameSet::announce`).
            set.announce(self);
        } else {
            let notice = match watched && !self.sql.release_notifies {
                true => self.sql.notify(&self.name),
                false => None,
            };
            // Not awaited: waiting for it would add a round trip to every release.
            let _sending = self.releases.announce(&self.name, &self.queries, notice);
        }
        // Where the release tells whether any process waits (it does for a lock, not for
        // a multi-lock), a waiter that arrived while this one held the lock counts too:
        // without a head start it would lose every race to a loop that re-acquires at
        // once, its notice and its attempt against one attempt.
        let others_wait = watched && self.set.is_none() && self.sql.watch.is_some();
        if contended || others_wait {
            let courtesy = match self.sql.notify {
                Some(_) => COURTESY,
                None => COURTESY_TO_POLLERS,
            };
            *self.courtesy() = Some(Instant::now() + courtesy);
        }
        Ok(true)
    }

    /// When to make the first attempt of an `acquire`: now, or after the courtesy
    /// period of a contended release by this lock.
    pub(crate) fn first_attempt_at(&self) -> Option<Instant> {
        self.courtesy()
            .take()
            .filter(|until| *until > Instant::now())
    }

    fn courtesy(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.courtesy_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) async fn create_table(&self) -> Result<()> {
        create_table(&*self.queries, &self.sql, &self.options.table).await
    }

    fn create_table_error(&self, source: QueryError) -> Error {
        Error::create_table(&self.options.table, source)
    }

    pub(crate) async fn query(
        &self,
        statement: &Statement,
    ) -> std::result::Result<Vec<Row>, QueryError> {
        self.queries.query(statement).await
    }

    async fn execute(&self, action: &'static str, statement: &Statement) -> Result<u64> {
        self.queries
            .execute(statement)
            .await
            .map_err(|error| Error::query(action, error))
    }

    /// The table is created lazily, when the acquire statement finds it missing: no
    /// statement is spent on it while it exists, and every process and database gets it
    /// on first use. Concurrent creators may fail with a duplicate error; the retry then
    /// succeeds. Only acquiring creates it: a renewal or release that finds it gone (an
    /// operator dropped it) must fail, not start the fencing tokens again from 1 under a
    /// live holder.
    pub(crate) async fn or_create_table<T, F>(
        &self,
        action: &'static str,
        first: std::result::Result<T, QueryError>,
        retry: impl FnOnce() -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, QueryError>>,
    {
        match first {
            Err(error) if self.dialect.is_missing_table(&error) => {
                let created = self.queries.execute(&self.sql.create_table()).await;
                match (retry().await, created) {
                    (Ok(value), _) => Ok(value),
                    (Err(error), Err(source)) if self.dialect.is_missing_table(&error) => {
                        Err(self.create_table_error(source))
                    }
                    (Err(error), _) => Err(Error::query(action, error)),
                }
            }
            other => other.map_err(|error| Error::query(action, error)),
        }
    }
}

/// The statements of elections: publishing the leader's value, reading the leader.
impl LockInner {
    /// Publishes `value` with the lease of `owner`, whose fencing token is `token`;
    /// `false` if the row is no longer `owner`'s live lease. Wakes observers (this
    /// process's at once, others' by a notice in the background, where the dialect can).
    pub(crate) async fn proclaim(
        &self,
        owner: &str,
        token: FencingToken,
        value: &str,
    ) -> Result<bool> {
        let statement = self.sql.proclaim(&self.name, owner, value);
        let action = "publish the leader's value";
        let publishing = async {
            self.queries
                .execute(&statement)
                .await
                .map_err(|error| self.election_error(action, error))
        };
        let affected = within(action, self.options.renew_attempt_bound(), publishing).await?;
        // 0 rows may be an unchanged value on MySQL; the leader's row tells.
        let proclaimed = affected == 1
            || self
                .leader()
                .await?
                .is_some_and(|leader| leader.term == token && leader.value == value);
        if proclaimed {
            let notice = proclamation_notice(&self.name);
            let _sending = self
                .releases
                .announce(&notice, &self.queries, self.sql.notify(&notice));
        }
        Ok(proclaimed)
    }

    /// The current leader, if a live lease's holder proclaimed its value. Never writes;
    /// bounded by the TTL, as a probe. A table that does not exist yet has no leader.
    pub(crate) async fn leader(&self) -> Result<Option<Leader>> {
        let statement = self.sql.leader(&self.name);
        let action = "read the leader";
        let reading = async {
            match self.queries.query(&statement).await {
                Err(error) if self.dialect.is_missing_table(&error) => Ok(Vec::new()),
                other => other.map_err(|error| self.election_error(action, error)),
            }
        };
        let rows = within(action, self.options.ttl, reading).await?;
        Ok(rows.into_iter().next().and_then(Leader::from_row))
    }

    /// A statement of elections failed: a table without the `value` column says how to
    /// add it.
    fn election_error(&self, action: &'static str, error: QueryError) -> Error {
        if self.dialect.is_missing_column(&error) {
            Error::NoValueColumn {
                table: self.options.table.to_string(),
                sql: self.dialect.add_value_columns_sql(&self.options.table),
            }
        } else {
            Error::query(action, error)
        }
    }
}

/// What a release found.
#[derive(Debug)]
pub(crate) enum Released {
    /// It freed the row.
    Now,
    /// A retry found the row no longer ours after an earlier attempt that may have
    /// committed before its answer was lost.
    Earlier,
    /// The row was not ours.
    NotOurs,
}

impl LockInner {
    /// Releases the row of `acquisition`, retrying transient errors while the lease lasts: the
    /// statement is owner-checked, so repeating it is safe, and without it the name would stay
    /// blocked for the rest of the lease with nobody renewing.
    ///
    /// It never waits past the end of the lease (the TTL after the last successful acquire or
    /// renewal was sent, `safe_until` being 90 % of the way), when the row frees itself anyway:
    /// a statement stuck on an unreachable database must not hang the caller for as long as
    /// the partition lasts. It waits at least a retry delay, so that a release asked for late
    /// still gets its chance.
    pub(crate) async fn release(
        &self,
        acquisition: &Acquisition,
        safe_until: Instant,
    ) -> Result<Released> {
        let retry_delay = self.options.renew_retry_delay();
        let deadline = lease_end(safe_until, &self.options).max(clock::now() + retry_delay);
        let releasing = self.release_until(acquisition, deadline);
        tokio::time::timeout_at(clock::to_timer(deadline), releasing)
            .await
            .unwrap_or_else(|_lease_over| {
                // Not a loss: the work was done while the lease held, and the row frees
                // itself now, as after any failed release.
                Err(Error::query(
                    "release the lock",
                    QueryError::new(
                        QueryErrorKind::Unreachable,
                        None,
                        "no answer before the lease ran out; the lock frees itself as its \
                         lease has expired",
                    ),
                ))
            })
    }

    /// [`release`](Self::release)'s attempts: transient errors are retried after a pause
    /// while one more attempt fits before `deadline`.
    async fn release_until(
        &self,
        acquisition: &Acquisition,
        deadline: Instant,
    ) -> Result<Released> {
        let retry_delay = self.options.renew_retry_delay();
        let mut may_have_committed = false;
        loop {
            let error = match self
                .release_once(&acquisition.owner, acquisition.contended)
                .await
            {
                Ok(true) => return Ok(Released::Now),
                Ok(false) if may_have_committed => return Ok(Released::Earlier),
                Ok(false) => return Ok(Released::NotOurs),
                Err(error) => error,
            };
            if !error.is_transient() || clock::now() + retry_delay >= deadline {
                return Err(error);
            }
            may_have_committed |= error.may_have_committed();
            tokio::time::sleep(retry_delay).await;
        }
    }
}
