//! For operators: every lock of a table, who holds it, and a force release that cannot
//! free a lock which changed hands since it was looked at, nor let anyone in before its
//! holder hears of it (unless asked to, for a holder known to be dead).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::adapter::{
    IntoQueryInterface, QueryError, QueryErrorKind, QueryInterface, Row, Statement, Value,
};
use crate::dialect::Sql;
use crate::listening::ReleaseBroadcast;
use crate::telemetry;
use crate::{Dialect, Error, FencingToken, Result, TableName};

/// Looks at and frees the locks of one lock table, through any adapter's pool.
///
/// Unlike [`DistributedLock`](crate::DistributedLock), it never creates the table
/// implicitly: a missing table is [`Error::NoSuchTable`], since it usually means the
/// wrong database or table name. Every time it reports comes from the database's clock.
///
/// ```no_run
/// # async fn example(pool: impl dlock_core::adapter::IntoQueryInterface<dlock_core::adapter::Direct>) -> dlock_core::Result<()> {
/// use dlock_core::{ForceRelease, LockAdmin};
///
/// let admin = LockAdmin::new(pool);
/// for lock in admin.list().await? {
///     println!("{} {} token {}", lock.name, lock.state, lock.fencing_token);
/// }
/// let stuck = admin.inspect("migrations").await?;
/// // Revokes it only if nobody acquired it since `inspect` read the token; it frees
/// // when the revoked lease ends, after its holder was told.
/// if let ForceRelease::Revoked(was) = admin.force_release("migrations", stuck.fencing_token).await? {
///     println!("revoked; it was held by {:?}", was.holder);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LockAdmin {
    pub(crate) queries: Arc<dyn QueryInterface>,
    table: TableName,
    pub(crate) sql: Sql,
    pub(crate) releases: Arc<ReleaseBroadcast>,
}

impl LockAdmin {
    /// The administration of the default lock table, `distributed_lock`, on the database
    /// behind `pool` (any pool or connection type of an adapter crate).
    pub fn new<M>(pool: impl IntoQueryInterface<M>) -> Self {
        Self::with_table(pool, TableName::default())
    }

    /// The administration of the lock table `table` (see [`TableName::parse`]).
    pub fn with_table<M>(pool: impl IntoQueryInterface<M>, table: TableName) -> Self {
        let queries = pool.into_query_interface();
        let sql = queries.dialect().sql(&table);
        // The release notices of the locks on this table in this process, so that a
        // force release wakes their waiters as a release does.
        let releases = ReleaseBroadcast::for_table(&queries, &table, &sql);
        Self {
            queries,
            table,
            sql,
            releases,
        }
    }

    /// The query interface, for the administration of other primitives' rows.
    pub(crate) fn queries(&self) -> &Arc<dyn QueryInterface> {
        &self.queries
    }

    /// The lock table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The administration of the lock table's companion, where semaphores and
    /// reader-writer locks keep their rows.
    pub(crate) fn companion(&self) -> Result<LockAdmin> {
        Ok(LockAdmin::with_table(
            Arc::clone(&self.queries),
            self.table.companion()?,
        ))
    }

    /// The SQL dialect of the database.
    pub fn dialect(&self) -> Dialect {
        self.queries.dialect()
    }

    /// Creates the lock table if it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::CreateTable`] when the table does not exist and cannot be created; the
    /// database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: `CREATE TABLE IF NOT EXISTS` either ran or did not.
    pub async fn create_table(&self) -> Result<()> {
        crate::inner::create_table(&*self.queries, &self.sql, &self.table).await
    }

    /// The database's settings that decide whether what it acknowledges survives a crash
    /// or a failover, and what each does to the guarantees (`dlock doctor` prints them).
    /// A lock checks them too, once per process and database, and logs a `WARN`
    /// (`dlock.durability`) for each setting that breaks them.
    ///
    /// # Errors
    ///
    /// The database's error, if the settings cannot be read.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn durability(&self) -> Result<crate::Durability> {
        crate::durability::read(&*self.queries, &self.sql)
            .await
            .map_err(|error| Error::query("read the database's durability settings", error))
    }

    /// Every lock in the table, by name: held, free and expired alike.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTable`] if the table does not exist; the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .read_info("list the locks", |with_value| self.sql.list(with_value))
            .await?;
        rows.into_iter().map(LockInfo::from_row).collect()
    }

    /// The lock named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchLock`] if it was never acquired; [`Error::NoSuchTable`] if the table
    /// does not exist; the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, name: &str) -> Result<LockInfo> {
        let rows = self
            .read_info("read the lock", |with_value| {
                self.sql.inspect(name, with_value)
            })
            .await?;
        match rows.into_iter().next() {
            Some(row) => LockInfo::from_row(row),
            None => Err(Error::NoSuchLock {
                name: name.to_owned(),
                table: self.table.to_string(),
            }),
        }
    }

    /// Takes the lock `name` from whoever holds it — but only if its fencing token is
    /// still `token`, the one the operator saw with [`list`](Self::list) or
    /// [`inspect`](Self::inspect). Every acquisition changes the token, so a lock that
    /// changed hands since is never taken by mistake: that is [`Error::TokenChanged`],
    /// with the current token and holder.
    ///
    /// **It revokes; it does not free.** The holder's ownership ends at once, but the lock
    /// frees only when the revoked lease ends (within one TTL): the holder's next
    /// renewal, within its renew interval, finds the row no longer its own, so its guard
    /// reports the loss ([`LossReason::TakenOver`](crate::LossReason::TakenOver)) before
    /// anyone else can acquire. Meanwhile waiters see the lock as held "by an operator"
    /// and sleep until the lease ends. Writes fenced with the holder's lease are refused
    /// from the revocation on. To free a lock whose holder is known to be dead (its
    /// process gone), without waiting for the lease, use
    /// [`force_release_now`](Self::force_release_now).
    ///
    /// The revocation is one conditional statement (name, token, and held); a read
    /// before it says who held the lock (the holder is recorded with the token, so it is
    /// the holder of exactly the acquisition revoked) and, if the statement changes
    /// nothing, a read after it says why. A lock already revoked is
    /// [`ForceRelease::AlreadyRevoked`]. It waits for the holder's fenced transactions to
    /// end (on SQLite, for any write transaction).
    ///
    /// # Errors
    ///
    /// [`Error::TokenChanged`] if the lock's token is no longer `token` (nothing was
    /// changed); [`Error::NoSuchLock`], [`Error::NoSuchTable`]; the database's error.
    ///
    /// # Cancel Safety
    ///
    /// Dropping it between its statements leaves the lock either untouched or revoked,
    /// never half done: the revocation is one statement. Whether it ran is then unknown;
    /// [`inspect`](Self::inspect) tells (a revoked lock shows as
    /// [`LockState::Revoked`]), and calling this again is safe.
    pub async fn force_release(&self, name: &str, token: FencingToken) -> Result<ForceRelease> {
        self.take(name, token, Freeing::Revoke).await
    }

    /// Frees the lock `name` at once, held or revoked, but only if its fencing token is
    /// still `token` (as [`force_release`](Self::force_release)).
    ///
    /// **Only for a holder known to be dead.** A live holder hears of it only at its next
    /// renewal, within its renew interval, and meanwhile another process may acquire
    /// the lock: two processes then run the job at once, and only writes fenced with the
    /// holder's lease are refused. Waiters are woken as by a normal release (on
    /// PostgreSQL, the notice to other processes is sent before this returns).
    ///
    /// # Errors
    ///
    /// As [`force_release`](Self::force_release).
    ///
    /// # Cancel Safety
    ///
    /// As [`force_release`](Self::force_release): the release is one statement; if
    /// dropped after it, waiters in other processes may miss the notice and find the lock
    /// free at their next probe.
    pub async fn force_release_now(&self, name: &str, token: FencingToken) -> Result<ForceRelease> {
        self.take(name, token, Freeing::Now).await
    }

    async fn take(
        &self,
        name: &str,
        token: FencingToken,
        freeing: Freeing,
    ) -> Result<ForceRelease> {
        let before = self.inspect(name).await?;
        match (before.state, freeing) {
            (LockState::Free, _) => return Ok(ForceRelease::AlreadyFree(before)),
            (LockState::Revoked, Freeing::Revoke) if before.fencing_token == token => {
                return Ok(ForceRelease::AlreadyRevoked(before));
            }
            _ => {}
        }
        if before.fencing_token != token {
            return Err(token_changed(before, token));
        }
        let statement = match freeing {
            Freeing::Revoke => self.sql.revoke(name, token),
            Freeing::Now => self.sql.force_release(name, token),
        };
        let changed = self
            .queries
            .execute(&statement)
            .await
            .map_err(|error| self.error("release the lock", error))?;
        if changed == 1 {
            telemetry::force_released(
                &self.table.to_string(),
                name,
                token,
                before.holder.as_deref(),
                freeing == Freeing::Now,
            );
            if freeing == Freeing::Revoke {
                // Nobody can acquire before the lease ends, so there is nobody to wake;
                // waiters probing now learn when it ends.
                return Ok(ForceRelease::Revoked(before));
            }
            let notice = self.sql.notify(name);
            // Awaited: an operator's tool may exit right after this returns.
            if let Some(sending) = self.releases.announce(name, &self.queries, notice) {
                let _ = sending.await;
            }
            return Ok(ForceRelease::Freed(before));
        }
        // It changed between the read and the statement: say how it is now.
        let after = self.inspect(name).await?;
        match after.state {
            LockState::Free => Ok(ForceRelease::AlreadyFree(after)),
            LockState::Revoked if freeing == Freeing::Revoke && after.fencing_token == token => {
                Ok(ForceRelease::AlreadyRevoked(after))
            }
            _ => Err(token_changed(after, token)),
        }
    }

    /// Runs `statement(true)`, which reads the elections' values too, or, on a table
    /// created before elections (no `value` column), `statement(false)`.
    async fn read_info(
        &self,
        action: &'static str,
        statement: impl Fn(bool) -> Statement,
    ) -> Result<Vec<Row>> {
        match self.queries.query(&statement(true)).await {
            Err(error) if self.dialect().is_missing_column(&error) => {
                self.query(action, statement(false)).await
            }
            other => other.map_err(|error| self.error(action, error)),
        }
    }

    async fn query(&self, action: &'static str, statement: Statement) -> Result<Vec<Row>> {
        self.queries
            .query(&statement)
            .await
            .map_err(|error| self.error(action, error))
    }

    fn error(&self, action: &'static str, error: QueryError) -> Error {
        if self.dialect().is_missing_table(&error) {
            Error::NoSuchTable {
                table: self.table.to_string(),
            }
        } else {
            Error::query(action, error)
        }
    }
}

fn token_changed(now: LockInfo, expected: FencingToken) -> Error {
    Error::TokenChanged {
        name: now.name,
        expected,
        current: now.fencing_token,
        holder: now.holder,
    }
}

/// How a force release takes a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freeing {
    /// Ownership ends now; the lock frees when the lease ends.
    Revoke,
    /// The lock frees now.
    Now,
}

/// What [`LockAdmin::force_release`] or [`LockAdmin::force_release_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ForceRelease {
    /// The lock was revoked: its holder no longer owns it and will hear of it at its next
    /// renewal, and it frees when the lease ends. This is how it was just before (its
    /// holder; its lease, whose end is when it frees).
    Revoked(LockInfo),
    /// The lock was already revoked, with this token, and frees when its lease ends.
    /// This is how it is now.
    AlreadyRevoked(LockInfo),
    /// The lock was freed at once; this is how it was just before (its holder, its
    /// lease).
    Freed(LockInfo),
    /// Nothing to do: the lock was already free (perhaps released by its holder
    /// meanwhile). This is how it is now.
    AlreadyFree(LockInfo),
}

/// A lock's state by the database's clock when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockState {
    /// Held with a live lease.
    Held,
    /// Nobody holds it.
    Free,
    /// Its holder's lease ran out without a release (the holder crashed, hung or lost
    /// its connection); the next acquisition takes it over.
    Expired,
    /// An operator revoked it ([`LockAdmin::force_release`]): nobody owns it, and it
    /// frees when the revoked lease ends, so that the holder hears of its loss first.
    Revoked,
}

impl LockState {
    /// `held`, `free`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Free => "free",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for LockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lock as recorded in the lock table, read by [`LockAdmin`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// Held, free, expired or revoked, by the database's clock.
    pub state: LockState,
    /// Who acquired it last (label, host, pid): the holder when held, the last holder
    /// when free or expired.
    pub holder: Option<String>,
    /// The id of the current acquisition; `None` when free or revoked.
    pub owner_id: Option<String>,
    /// The token of the last acquisition: what [`LockAdmin::force_release`] takes.
    pub fencing_token: FencingToken,
    /// When the last acquisition happened.
    pub acquired_at: Option<SystemTime>,
    /// When the lease ends (or ended) unless renewed, or when a revoked lock frees;
    /// `None` when released.
    pub expires_at: Option<SystemTime>,
    /// The database's clock when this was read: the "now" every relative time is
    /// measured from, so that the client's clock never enters.
    pub read_at: SystemTime,
    /// For the lock of an [`Election`](crate::Election): the value its leader proclaimed
    /// with the last acquisition (`None` if it proclaimed none, or for a plain lock).
    /// Shown whatever the state: a free or expired lock shows its last leader's.
    pub value: Option<String>,
}

impl LockInfo {
    /// How long the lease had left when read (for a revoked lock: how long until it
    /// frees); `None` unless held or revoked.
    pub fn remaining_lease(&self) -> Option<Duration> {
        match self.state {
            LockState::Held | LockState::Revoked => {
                self.expires_at?.duration_since(self.read_at).ok()
            }
            _ => None,
        }
    }

    /// How long before the read `at` was (zero if it was later).
    pub fn age_of(&self, at: SystemTime) -> Duration {
        self.read_at.duration_since(at).unwrap_or_default()
    }

    fn from_row(row: Row) -> Result<Self> {
        let malformed = || {
            Error::query(
                "read the lock table",
                QueryError::new(
                    QueryErrorKind::Statement,
                    None,
                    "a row of the lock table has an unexpected shape; is this a dlock table?",
                ),
            )
        };
        let [
            name,
            owner,
            fencing,
            holder,
            acquired,
            expires,
            now,
            live,
            value,
        ]: [Value; 9] = row.try_into().map_err(|_| malformed())?;
        let (Value::Text(name), Value::Int(fencing), Value::Int(now)) = (name, fencing, now) else {
            return Err(malformed());
        };
        let owner_id = text(owner);
        let state = match (&owner_id, live) {
            // No owner but a lease still running: revoked, free when it ends.
            (None, Value::Int(1)) => LockState::Revoked,
            (None, _) => LockState::Free,
            (Some(_), Value::Int(1)) => LockState::Held,
            (Some(_), _) => LockState::Expired,
        };
        Ok(Self {
            name,
            state,
            holder: text(holder),
            owner_id,
            fencing_token: FencingToken(fencing),
            acquired_at: instant(acquired),
            expires_at: instant(expires),
            read_at: epoch_millis(now),
            value: text(value),
        })
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::Text(text) => Some(text),
        _ => None,
    }
}

fn instant(value: Value) -> Option<SystemTime> {
    match value {
        Value::Int(millis) => Some(epoch_millis(millis)),
        _ => None,
    }
}

pub(crate) fn epoch_millis(millis: i64) -> SystemTime {
    let offset = Duration::from_millis(millis.unsigned_abs());
    let time = if millis >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.unwrap_or(UNIX_EPOCH)
}

/// Parses a token as [`list`](LockAdmin::list) shows it, for a force release typed by
/// an operator.
impl FromStr for FencingToken {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        match input.trim().parse::<i64>() {
            Ok(token) if token > 0 => Ok(Self(token)),
            _ => Err(Error::InvalidToken {
                input: input.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(owner: Value, live: i64) -> Row {
        vec![
            Value::Text("jobs".into()),
            owner,
            Value::Int(7),
            Value::Text("web-1 pid 42".into()),
            Value::Int(1_000),
            Value::Int(31_000),
            Value::Int(19_000),
            Value::Int(live),
            Value::Text("10.0.0.7:8080".into()),
        ]
    }

    #[test]
    fn state_and_times_come_from_the_row() {
        let held = LockInfo::from_row(row(Value::Text("o".into()), 1)).unwrap();
        assert_eq!(held.state, LockState::Held);
        assert_eq!(held.fencing_token, FencingToken(7));
        assert_eq!(held.value.as_deref(), Some("10.0.0.7:8080"));
        assert_eq!(held.remaining_lease(), Some(Duration::from_secs(12)));
        assert_eq!(
            held.age_of(held.acquired_at.unwrap()),
            Duration::from_secs(18)
        );

        let expired = LockInfo::from_row(row(Value::Text("o".into()), 0)).unwrap();
        assert_eq!(expired.state, LockState::Expired);
        assert_eq!(expired.remaining_lease(), None);

        let revoked = LockInfo::from_row(row(Value::Null, 1)).unwrap();
        assert_eq!(revoked.state, LockState::Revoked);
        assert_eq!(revoked.owner_id, None);
        assert_eq!(revoked.remaining_lease(), Some(Duration::from_secs(12)));

        let free = LockInfo::from_row(row(Value::Null, 0)).unwrap();
        assert_eq!(free.state, LockState::Free);
        assert_eq!(free.remaining_lease(), None);
        assert_eq!(free.owner_id, None);
        assert_eq!(free.holder.as_deref(), Some("web-1 pid 42"));
    }

    #[test]
    fn a_row_of_another_shape_is_an_error() {
        let error = LockInfo::from_row(vec![Value::Int(1)]).unwrap_err();
        assert!(error.to_string().contains("read the lock table"), "{error}");
        let mut nameless = row(Value::Null, 0);
        nameless[0] = Value::Null;
        assert!(LockInfo::from_row(nameless).is_err());
    }

    #[test]
    fn times_before_the_epoch_do_not_panic() {
        assert_eq!(
            epoch_millis(-1_500),
            UNIX_EPOCH - Duration::from_millis(1_500)
        );
        assert_eq!(
            epoch_millis(i64::MIN),
            UNIX_EPOCH - Duration::from_millis(i64::MIN.unsigned_abs())
        );
    }

    #[test]
    fn tokens_parse_from_what_list_shows() {
        assert_eq!("12".parse::<FencingToken>().unwrap(), FencingToken(12));
        assert_eq!(" 3 ".parse::<FencingToken>().unwrap(), FencingToken(3));
        for bad in ["", "0", "-4", "1.5", "twelve", "99999999999999999999"] {
            let error = bad.parse::<FencingToken>().unwrap_err();
            assert!(
                matches!(&error, Error::InvalidToken { input } if input == bad),
                "{bad:?}: {error}"
            );
        }
    }
}
