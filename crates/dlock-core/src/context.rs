//! One named lock on one database: each statement of the algorithm, run through the
//! query interface, with its result decoded and its errors classified.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::dialect::Sql;
use crate::options::Options;
use crate::telemetry::LockTelemetry;
use crate::wake::Hub;

/// How long a process that released a contended lock waits before it tries to take the
/// same lock again: long enough for waiters woken by the release (a notification and one
/// statement away) to get there first, so a node looping back into `acquire` cannot win
/// every race. Short enough to cost nothing noticeable when nobody else was waiting.
const COURTESY: Duration = Duration::from_millis(3);
use crate::query::{QueryError, QueryInterface, Row, Statement, Value};
use crate::{Dialect, Error, FencingToken, Holder, Result};

#[derive(Debug)]
pub(crate) struct LockContext {
    pub(crate) name: String,
    pub(crate) queries: Arc<dyn QueryInterface>,
    pub(crate) dialect: Dialect,
    pub(crate) sql: Sql,
    pub(crate) options: Options,
    pub(crate) hub: Arc<Hub>,
    /// Until when this lock's next `acquire` lets others go first; see [`COURTESY`].
    pub(crate) courtesy_until: Mutex<Option<Instant>>,
    pub(crate) telemetry: LockTelemetry,
}

fn token(rows: &[Row]) -> Option<FencingToken> {
    match rows.first().map(Vec::as_slice) {
        Some([Value::Int(token)]) => Some(FencingToken(*token)),
        _ => None,
    }
}

impl LockContext {
    /// One acquisition attempt: takes the lock for `owner` if it is free or expired.
    ///
    /// A statement that lost a race with a concurrent one (a deadlock or serialization
    /// failure, rolled back by the database) took nothing: the lock went to the other, so
    /// the attempt reports "not acquired" and the caller probes for the holder.
    pub(crate) async fn try_take(&self, owner: &str) -> Result<Option<FencingToken>> {
        match self.take(owner).await {
            Err(Error::Database { source, .. }) if self.dialect.is_conflict(&source) => Ok(None),
            other => other,
        }
    }

    async fn take(&self, owner: &str) -> Result<Option<FencingToken>> {
        let statement = self
            .sql
            .acquire(&self.name, owner, &self.options.holder, self.options.ttl);
        let Some(read_token) = self.sql.acquired(&self.name, owner) else {
            let rows = self.query("acquire the lock", &statement).await?;
            return Ok(token(&rows));
        };
        // No RETURNING (MySQL): the upsert, then an owner-checked read of the token.
        if self.execute("acquire the lock", &statement).await? == 0 {
            return Ok(None);
        }
        match self.query("read the new fencing token", &read_token).await {
            Ok(rows) => Ok(token(&rows)),
            Err(error) => {
                // The upsert may have taken the lock; nobody will hear of it, so free it
                // now rather than leave it blocked for a TTL. Owner-checked, so harmless
                // if it did not.
                let _ = self.release(owner, false).await;
                Err(error)
            }
        }
    }

    /// Who holds the lock now, if anyone holds a live lease. Never writes.
    pub(crate) async fn probe(&self) -> Result<Option<Holder>> {
        let rows = self
            .query("read the lock", &self.sql.probe(&self.name))
            .await?;
        Ok(rows.into_iter().next().map(|row| {
            let mut columns = row.into_iter();
            let description = match columns.next() {
                Some(Value::Text(holder)) => holder,
                _ => "an unnamed holder".to_owned(),
            };
            let expires_in = match columns.next() {
                Some(Value::Int(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
                _ => Duration::ZERO,
            };
            Holder {
                description,
                expires_in,
            }
        }))
    }

    /// Extends `owner`'s lease; `false` when the row is no longer `owner`'s live lease.
    pub(crate) async fn renew(&self, owner: &str) -> Result<bool> {
        let statement = self.sql.renew(&self.name, owner, self.options.ttl);
        Ok(self.execute("renew the lease", &statement).await? == 1)
    }

    /// Frees the lock if `owner` still holds it; `false` when it did not. Wakes this
    /// process's waiters at once and, where the dialect can, sends other processes a
    /// notice in the background (not on the release path: see `notify` in the dialect).
    /// `contended` says whether the acquisition had to wait: then this lock's next
    /// `acquire` lets the other waiters go first.
    pub(crate) async fn release(&self, owner: &str, contended: bool) -> Result<bool> {
        let statement = self.sql.release(&self.name, owner);
        let released = self.execute("release the lock", &statement).await? == 1;
        if released {
            // Not awaited: other processes' waiters are woken in the background.
            let _notice =
                self.hub
                    .announce_release(&self.name, &self.queries, self.sql.notify(&self.name));
            if contended {
                *self.courtesy() = Some(Instant::now() + COURTESY);
            }
        }
        Ok(released)
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
        let statement = self.sql.create_table();
        self.queries
            .execute(&statement)
            .await
            .map_err(|source| self.create_table_error(source))?;
        Ok(())
    }

    fn create_table_error(&self, source: QueryError) -> Error {
        Error::create_table(&self.options.table, source)
    }

    async fn query(&self, action: &'static str, statement: &Statement) -> Result<Vec<Row>> {
        let first = self.queries.query(statement).await;
        self.or_create_table(action, first, || self.queries.query(statement))
            .await
    }

    async fn execute(&self, action: &'static str, statement: &Statement) -> Result<u64> {
        let first = self.queries.execute(statement).await;
        self.or_create_table(action, first, || self.queries.execute(statement))
            .await
    }

    /// The table is created lazily, when a statement finds it missing: no statement is
    /// spent on it while it exists, and every process and database gets it on first use.
    /// Concurrent creators may fail with a duplicate error; the retry then succeeds.
    async fn or_create_table<T, F>(
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
