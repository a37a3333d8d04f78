//! Waiting: it never writes, and a release wakes waiters — at once where the adapter can
//! listen for releases, within the poll interval elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::adapter::{
    ColumnType, Listen, QueryError, QueryInterface, ReleaseNotices, Row, Statement, StatementKind,
    Value, async_trait,
};
use dlock_core::{
    Dialect, DistributedLock, ForceRelease, LockAdmin, LockGuard, Semaphore, SemaphorePermit,
    TableName,
};
use dlock_testkit::{Flow, Tap, only_reads, wall_ns};

use crate::child::{self, Mode};
use crate::support::{
    Env, Verdict, after_first_attempt, eventually, quick, unique_identifier, unique_name,
};

/// How late a woken waiter may be: scheduling on a busy 2-core machine, not polling.
pub(crate) const WAKE_SLACK: Duration = Duration::from_millis(250);

pub(crate) async fn waiter_in_another_process_wakes_on_release(env: Env) -> Verdict {
    wakes_waiter(env, Freeing::Release).await
}

/// An operator's force release wakes waiters as a release does.
pub(crate) async fn waiter_in_another_process_wakes_on_force_release(env: Env) -> Verdict {
    wakes_waiter(env, Freeing::ForceRelease).await
}

/// Who frees the lock a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freeing {
    /// The holder, with `release`.
    Release,
    /// An operator, with `LockAdmin::force_release_now` on another pool.
    ForceRelease,
}

async fn wakes_waiter(env: Env, freeing: Freeing) -> Verdict {
    let name = unique_name(&format!("wake_{freeing:?}"));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&sent);
    let queries: Arc<dyn QueryInterface> =
        Arc::new(Tap::new(env.connect().await?, move |statement| {
            if let Ok(mut recorded) = recorded.lock() {
                recorded.push(statement.clone());
            }
            Flow::Forward
        }));
    let listens = queries.listener().is_some();
    let holder = quick(DistributedLock::builder(&name, queries))
        .build()
        .map_err(|e| e.to_string())?;
    let admin = LockAdmin::new(env.connect().await?);
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let mut waiter = child::spawn(&env, &name, Mode::Wait, Duration::from_secs(5))?;
    let line = waiter.next_line(Duration::from_secs(30)).await?;
    if line != "WAITING" {
        return Err(format!("unexpected child output {line:?}"));
    }
    // Long enough for the waiter's back-off to reach its cap (the default 1 s poll
    // interval), so only a wake-up can make it fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    match freeing {
        Freeing::Release => guard.release().await.map_err(|e| e.to_string())?,
        Freeing::ForceRelease => {
            let token = guard.fencing_token();
            match admin.force_release_now(&name, token).await {
                Ok(ForceRelease::Freed(_)) => drop(guard),
                other => return Err(format!("the force release gave {other:?}")),
            }
        }
    }
    let released_at = wall_ns();
    let acquired_at: u64 = waiter
        .expect_parsed("ACQUIRED", Duration::from_secs(10))
        .await?;
    waiter.finish(Duration::from_secs(10)).await?;
    let gap = Duration::from_nanos(acquired_at.saturating_sub(released_at));
    let limit = if listens {
        WAKE_SLACK
    } else {
        Duration::from_secs(1) + WAKE_SLACK
    };
    eprintln!(
        "wake: a waiter in another process acquired {} ms after the {freeing:?} ({})",
        gap.as_millis(),
        if listens {
            "woken by a notification"
        } else {
            "polling"
        }
    );
    if gap > limit {
        return Err(format!(
            "the waiter took {gap:?} after the release; the limit is {limit:?}"
        ));
    }
    // Where releases are heard, the release notified the waiter itself, in its own
    // transaction: no notice of the lock followed it.
    let notices = sent
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|statement| statement.kind == StatementKind::Notify)
        .filter(|statement| statement.params.get(1) == Some(&Value::Text(name.clone())))
        .count();
    if freeing == Freeing::Release && listens && notices > 0 {
        return Err(format!(
            "the release was followed by {notices} notice(s); it notifies in its own \
             transaction"
        ));
    }
    Ok(())
}

/// A waiter, while the lock stays held, sends only reads, and few of them.
pub(crate) async fn waiting_only_reads(env: Env) -> Verdict {
    const WAIT: Duration = Duration::from_secs(3);
    let name = unique_name("waiting_reads");
    let holder = env.lock(&name).await?.build().map_err(|e| e.to_string())?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let statements = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&statements);
    let counting = Tap::new(env.connect().await?, move |statement| {
        if let Ok(mut recorded) = recorded.lock() {
            recorded.push(statement.clone());
        }
        Flow::Forward
    });
    let waiter = DistributedLock::builder(&name, Arc::new(counting) as Arc<dyn QueryInterface>)
        .build()
        .map_err(|e| e.to_string())?;
    if tokio::time::timeout(WAIT, waiter.acquire()).await.is_ok() {
        return Err("acquire returned while the lock was held".into());
    }
    guard.release().await.map_err(|e| e.to_string())?;
    let statements = statements.lock().map_err(|e| e.to_string())?.clone();
    // The first attempt found the lock held; the rest is waiting.
    let waiting = after_first_attempt(&statements)?;
    let writes: Vec<&str> = waiting
        .iter()
        .filter(|statement| !only_reads(statement.kind))
        .map(|statement| &*statement.sql)
        .collect();
    eprintln!(
        "waiting_reads: {} statements in {} s of waiting, {} writes",
        waiting.len(),
        WAIT.as_secs(),
        writes.len()
    );
    if !writes.is_empty() {
        return Err(format!("a waiter wrote: {writes:?}"));
    }
    // Back-off from 10 ms doubling to the 1 s cap, each pause random in [3/4, whole]:
    // at the shortest pauses (7.5, 15, 30 … 480 ms, then 750 ms) 9 probes in 3 s, after
    // the probe that follows the first attempt; and one more where a listener is found
    // deaf or starts hearing (a resync probe), with room for timers firing late on a
    // loaded machine. A busy loop makes hundreds.
    if waiting.len() > 13 {
        return Err(format!(
            "{} statements in {WAIT:?} of waiting",
            waiting.len()
        ));
    }
    Ok(())
}

/// A waiter whose listening connection dies (here: its backend is terminated; in the
/// field also a half-open connection or a listener that reconnected) learns of a release
/// by another process within about one poll interval, not the ten it naps while it
/// trusts its listener. Adapters that do not listen poll, so for them this holds anyway.
pub(crate) async fn waiter_wakes_within_a_poll_after_its_listener_dies(env: Env) -> Verdict {
    const POLL: Duration = Duration::from_secs(1);
    let name = unique_name("listener_dies");
    // A table of this trial alone, so that the listener found below is this waiter's,
    // whatever else runs at the same time — the same scenario through PgBouncer too,
    // which reaches the same database.
    let table = unique_identifier("dlock_listener_dies");
    let queries = env.connect().await?;
    let listens = queries.listener().is_some();
    let holder = DistributedLock::builder(&name, Elsewhere(env.connect().await?, 0))
        .table(&table)
        .ttl(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let waiter = DistributedLock::builder(&name, Arc::clone(&queries))
        .table(&table)
        .poll_interval(POLL)
        .build()
        .map_err(|e| e.to_string())?;
    let waiting = tokio::spawn(async move {
        let guard = waiter.acquire().await.map_err(|e| e.to_string())?;
        let acquired_at = tokio::time::Instant::now();
        guard.release().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(acquired_at)
    });
    if listens {
        eventually(
            Duration::from_secs(10),
            "the waiter listens and has announced itself",
            || async { Ok(listeners(&queries, &name, false).await? > 0) },
        )
        .await?;
        // Long enough for the waiter to trust its listener and take a long nap.
        tokio::time::sleep(Duration::from_secs(2)).await;
        listeners(&queries, &name, true).await?;
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    guard.release().await.map_err(|e| e.to_string())?;
    let released_at = tokio::time::Instant::now();
    let acquired_at = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .map_err(|_| "the waiter did not acquire within 20 s of the release".to_owned())?
        .map_err(|e| e.to_string())??;
    let gap = acquired_at.saturating_duration_since(released_at);
    eprintln!(
        "listener_dies: the waiter acquired {} ms after a release by another process \
         ({})",
        gap.as_millis(),
        if listens {
            "its listener had been terminated"
        } else {
            "polling"
        }
    );
    crate::support::drop_table(&queries, &table).await?;
    if gap > POLL + WAKE_SLACK {
        return Err(format!(
            "the waiter took {gap:?} after the release; the limit is one poll interval \
             ({POLL:?}) and {WAKE_SLACK:?}"
        ));
    }
    Ok(())
}

/// A release is followed by one attempt, not one per waiting process: it wakes them all,
/// and only the one whose turn it is looks at the lock; the others' acquires, sent while
/// its attempt runs, find the turn taken and answer at once, touching no row (PostgreSQL,
/// where releases are notified; see `turns_key` in the core's `dialect/postgres.rs`).
///
/// So that "while its attempt runs" lasts, the row is pinned: a statement holds it
/// `FOR KEY SHARE` for a while, which the release does not wait for but the attempt's
/// `FOR UPDATE` does. Without turns, every woken waiter's attempt would wait on the row.
pub(crate) async fn one_attempt_per_release_among_waiting_processes(env: Env) -> Verdict {
    turned_away_while_one_attempts(env, Primitive::Lock).await
}

/// The same for a semaphore's permit: a release of one wakes every process waiting for
/// any, and only one of them attempts that permit.
pub(crate) async fn semaphore_one_attempt_per_release_among_waiting_processes(env: Env) -> Verdict {
    turned_away_while_one_attempts(env, Primitive::Semaphore).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    Lock,
    /// Of two permits, both held until the waiters wait.
    Semaphore,
}

/// What the holder releases while the row is pinned.
enum Held {
    Lock(LockGuard),
    Permit(SemaphorePermit),
}

impl Held {
    async fn release(self) -> dlock_core::Result<()> {
        match self {
            Self::Lock(guard) => guard.release().await,
            Self::Permit(permit) => permit.release().await,
        }
    }
}

async fn turned_away_while_one_attempts(env: Env, primitive: Primitive) -> Verdict {
    const WAITERS: usize = 3;
    const PIN: Duration = Duration::from_secs(3);
    let name = unique_name("one_attempt");
    // A table of this trial alone, so that its listeners hear this trial's notices only:
    // on the shared table, other scenarios' releases can flood a waiter's backlog, and a
    // waiter that falls behind looks at the lock, and attempts if it is free.
    let table = unique_identifier("dlock_one_attempt");
    let queries = env.connect().await?;
    if queries.listener().is_none() {
        return Err("the adapter does not listen for releases on PostgreSQL".into());
    }
    // Where a semaphore keeps its permits' rows.
    let companion = TableName::parse(&table)
        .and_then(|table| table.companion())
        .map_err(|e| e.to_string())?
        .to_string();
    let attempts = Arc::new(Attempts::default());
    let waiter = |place| {
        // One pool for all, but a listening session each, as in processes of their own.
        let elsewhere: Arc<dyn QueryInterface> = Arc::new(Elsewhere(Arc::clone(&queries), place));
        Arc::new(CountsAttempts {
            inner: elsewhere,
            attempts: Arc::clone(&attempts),
        }) as Arc<dyn QueryInterface>
    };
    let mut waiting = tokio::task::JoinSet::new();
    // The row to pin, its table, and what frees it; then what frees the rest.
    let (row, row_table, held, rest) = match primitive {
        Primitive::Lock => {
            let holder = DistributedLock::builder(&name, Arc::clone(&queries))
                .table(&table)
                .build()
                .map_err(|e| e.to_string())?;
            let guard = holder.acquire().await.map_err(|e| e.to_string())?;
            for place in 1..=WAITERS {
                // A waiter that lost a turn looks by itself within a poll interval:
                // longer than this scenario lasts, so that only notices make attempts.
                let lock = DistributedLock::builder(&name, waiter(place))
                    .table(&table)
                    .poll_interval(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                waiting.spawn(async move { lock.acquire().await?.release().await });
            }
            (name.clone(), table.clone(), Held::Lock(guard), None)
        }
        Primitive::Semaphore => {
            let holder = Semaphore::builder(&name, 2, Arc::clone(&queries))
                .table(&table)
                .build()
                .map_err(|e| e.to_string())?;
            let first = holder.acquire().await.map_err(|e| e.to_string())?;
            let second = holder.acquire().await.map_err(|e| e.to_string())?;
            for place in 1..=WAITERS {
                let semaphore = Semaphore::builder(&name, 2, waiter(place))
                    .table(&table)
                    .poll_interval(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                waiting.spawn(async move { semaphore.acquire().await?.release().await });
            }
            (
                format!("{name}#{}", first.permit()),
                companion.clone(),
                Held::Permit(first),
                Some(second),
            )
        }
    };
    // Until then, a waiter whose listener is not yet heard polls, and a look that finds
    // the lock free in a hand-over's gap attempts, notice or not. Once they all hear,
    // they nap for ten poll intervals, quietly.
    eventually(
        Duration::from_secs(10),
        "every waiter has announced itself, and all have been quiet for 300 ms",
        || async {
            let quiet = attempts.quiet_for() > Duration::from_millis(300);
            Ok(quiet && listeners(&queries, &row, false).await? == WAITERS)
        },
    )
    .await?;
    let pinned = tokio::spawn(pin_row(
        Arc::clone(&queries),
        row_table.clone(),
        row.clone(),
        PIN,
    ));
    eventually(Duration::from_secs(5), "the row is pinned", || {
        pin_in_place(&queries, &row_table)
    })
    .await?;
    let before = attempts.turned_away();
    held.release().await.map_err(|e| e.to_string())?;
    let turned_away = eventually(
        PIN / 2,
        "all woken waiters but one were turned away while the row was pinned",
        || async { Ok(attempts.turned_away() - before == WAITERS - 1) },
    )
    .await;
    pinned.await.map_err(|e| e.to_string())??;
    if let Some(rest) = rest {
        rest.release().await.map_err(|e| e.to_string())?;
    }
    let limit = Duration::from_secs(30);
    let all = async {
        while let Some(finished) = waiting.join_next().await {
            finished
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(limit, all)
        .await
        .map_err(|_| format!("{WAITERS} waiters did not all get the lock within {limit:?}"))??;
    crate::support::drop_table(&queries, &table).await?;
    if primitive == Primitive::Semaphore {
        crate::support::drop_table(&queries, &companion).await?;
    }
    turned_away.map_err(|failed| {
        format!(
            "{failed} ({} of {} turned away; without turns every woken waiter's attempt \
             waits on the row)",
            attempts.turned_away() - before,
            WAITERS - 1
        )
    })
}

/// Holds the row of lock `name` `FOR KEY SHARE` for `pin`, in one statement: the row is
/// locked before the sleep, which runs once per locked row.
async fn pin_row(
    queries: Arc<dyn QueryInterface>,
    table: String,
    name: String,
    pin: Duration,
) -> Verdict {
    let statement = crate::support::sql(
        Dialect::Postgres,
        &format!(
            "WITH pinned AS (SELECT name FROM {table} WHERE name = ? FOR KEY SHARE) \
             SELECT CAST(pg_sleep({}) AS TEXT) AS dlock_pin FROM pinned",
            pin.as_secs_f64()
        ),
        vec![Value::Text(name)],
    );
    queries
        .execute(&statement)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot pin the row: {e}"))
}

/// Whether [`pin_row`]'s statement on `table` (a trial's own: scenarios on other adapters
/// may pin rows at the same time) is asleep, its row locked.
async fn pin_in_place(queries: &Arc<dyn QueryInterface>, table: &str) -> Result<bool, String> {
    let statement = dlock_testkit::statement(
        Dialect::Postgres,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event = 'PgSleep' AND query LIKE '%AS dlock_pin FROM pinned%' \
           AND strpos(query, ?) > 0",
        vec![Value::Text(format!("FROM {table} WHERE"))],
        &[ColumnType::Int],
    );
    let rows = queries
        .query(&statement)
        .await
        .map_err(|e| format!("cannot read pg_stat_activity: {e}"))?;
    Ok(matches!(rows.first().map(Vec::as_slice), Some([Value::Int(n)]) if *n > 0))
}

/// What the waiters of [`one_attempt_per_release_among_waiting_processes`] sent.
#[derive(Debug)]
struct Attempts {
    /// Acquires answered `(NULL)`: another waiter had the turn.
    turned_away: AtomicUsize,
    last_sent: Mutex<tokio::time::Instant>,
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            turned_away: AtomicUsize::new(0),
            last_sent: Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Attempts {
    fn turned_away(&self) -> usize {
        self.turned_away.load(Ordering::SeqCst)
    }

    /// How long since any waiter last sent a statement.
    fn quiet_for(&self) -> Duration {
        self.last_sent
            .lock()
            .map_or(Duration::ZERO, |sent| sent.elapsed())
    }

    fn sent(&self) {
        if let Ok(mut sent) = self.last_sent.lock() {
            *sent = tokio::time::Instant::now();
        }
    }
}

/// A waiter's queries, counted into [`Attempts`].
#[derive(Debug)]
struct CountsAttempts {
    inner: Arc<dyn QueryInterface>,
    attempts: Arc<Attempts>,
}

#[async_trait]
impl QueryInterface for CountsAttempts {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.attempts.sent();
        self.inner.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.attempts.sent();
        let rows = self.inner.query(statement).await;
        let not_our_turn = matches!(rows.as_deref(), Ok([row]) if row == &[Value::Null]);
        if statement.kind == StatementKind::Acquire && not_our_turn {
            self.attempts.turned_away.fetch_add(1, Ordering::SeqCst);
        }
        rows
    }

    fn listener(&self) -> Option<&dyn Listen> {
        self.inner.listener()
    }
}

/// How many backends other than this one wait for lock `name`: a waiting process's
/// listening session announces that with a shared advisory lock keyed by the name's
/// `hashtext` (see `waiters_key` in the core's `dialect/postgres.rs`), which no other
/// test's lock shares. With `terminate`, terminates those backends, failing if there
/// were none.
async fn listeners(
    queries: &Arc<dyn QueryInterface>,
    name: &str,
    terminate: bool,
) -> Result<usize, String> {
    let select = if terminate {
        "pg_terminate_backend(pid)"
    } else {
        "pid"
    };
    let statement = dlock_testkit::statement(
        Dialect::Postgres,
        &format!(
            "SELECT count(*) FROM (SELECT {select} FROM pg_locks \
             WHERE locktype = 'advisory' AND mode = 'ShareLock' AND objsubid = 2 \
               AND objid = CAST(hashtext(?) AS oid) AND pid <> pg_backend_pid()) AS listeners"
        ),
        vec![Value::Text(name.to_owned())],
        &[ColumnType::Int],
    );
    let rows = queries
        .query(&statement)
        .await
        .map_err(|e| format!("cannot read pg_locks: {e}"))?;
    let found = match rows.first().map(Vec::as_slice) {
        Some([Value::Int(n)]) => usize::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    if terminate && found == 0 {
        return Err(format!("no backend waits for {name:?} to terminate"));
    }
    Ok(found)
}

/// Another process's view of the database: the same connections and listener, but a
/// notification source of its own (one per place), so that its releases reach this
/// process's waiters only through the database (as another process's would), not through
/// the in-process hub.
#[derive(Debug)]
struct Elsewhere(Arc<dyn QueryInterface>, usize);

#[async_trait]
impl QueryInterface for Elsewhere {
    fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.0.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.0.query(statement).await
    }

    fn listener(&self) -> Option<&dyn Listen> {
        self.0.listener().map(|_| self as &dyn Listen)
    }
}

#[async_trait]
impl Listen for Elsewhere {
    fn source(&self) -> String {
        let inner = self.0.listener().map(Listen::source);
        format!("elsewhere {}: {inner:?}", self.1)
    }

    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        match self.0.listener() {
            Some(listener) => listener.listen(channel, notices).await,
            None => Ok(()),
        }
    }
}
