//! A scripted fake database for the lock's state machine: no server, paused tokio time.
//!
//! [`FakeDb`] implements [`QueryInterface`] for the PostgreSQL dialect. It recognises each
//! statement the core sends, emulates its effect on an in-memory model of the lock table
//! (with tokio's clock as the database clock, so `start_paused` tests control it), and
//! before answering consults a per-statement-kind script of [`Gate`]s, so a test can make
//! any step fail, slow down or hang. Every statement is logged with the time it was sent.
//!
//! Shared by every test file; each uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dlock_core::adapter::{
    ColumnType, Listen, QueryError, QueryErrorKind, QueryInterface, Row, Statement, Value,
    async_trait,
};
use dlock_core::{Dialect, DistributedLock, LockBuilder};
use tokio::sync::watch;
use tokio::time::Instant;

/// The kinds of statement the core sends; the fake knows those of a lock and of a
/// semaphore (not the administration's).
pub(crate) use dlock_core::adapter::StatementKind as Kind;

/// Checks the shape of `statement`, sent with `query` (`wants_rows`) or `execute`.
fn check(statement: &Statement, wants_rows: bool) {
    use ColumnType::{Int, Text};
    let (columns, params): (&[&[ColumnType]], &[usize]) = match statement.kind {
        Kind::CreateTable => (&[&[]], &[0]),
        Kind::Acquire => (&[&[Int]], &[4]),
        // With the prober's TTL on PostgreSQL (the lock-delay after a failover); a
        // semaphore's `read_slots` also names each permit it found held.
        Kind::Probe => (&[&[Text, Int, Int], &[Text, Text, Int, Int]], &[1, 2]),
        // A semaphore's definition: read back, and recorded if missing.
        Kind::Inspect => (&[&[Text, Text, Int, Text, Int, Int, Int, Int, Text]], &[1]),
        Kind::CreateRows => (&[&[]], &[3]),
        // Returns the database's clock when it renewed.
        Kind::Renew => (&[&[Int]], &[3]),
        // Returns whether any process waits (`watched`) when it released.
        Kind::Release => (&[&[Int]], &[3]),
        Kind::Fence => (&[&[Int]], &[3]),
        Kind::Notify => (&[&[]], &[2]),
        Kind::Watch => (&[&[Int]], &[1]),
        Kind::Proclaim => (&[&[]], &[3]),
        Kind::Leader => (&[&[Text, Text, Int, Int, Int]], &[1]),
        other => panic!("the fake does not know {other:?} statements"),
    };
    let kind = statement.kind;
    assert!(
        columns.contains(&statement.columns),
        "{kind:?} with columns {:?}",
        statement.columns
    );
    assert!(
        params.contains(&statement.params.len()),
        "{kind:?} with params {:?}",
        statement.params
    );
    assert_eq!(
        !statement.columns.is_empty(),
        wants_rows,
        "{kind:?} sent with {} but its columns are {:?}",
        if wants_rows { "query" } else { "execute" },
        statement.columns
    );
}

/// What the fake does with one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Runs it at once.
    Ok,
    /// Fails at once with this kind of error; the statement has no effect.
    Err(QueryErrorKind),
    /// A slow statement: waits this long, then runs it and answers.
    Slow(Duration),
    /// A slow answer: runs it at once (the database commits), answers this much later.
    Lag(Duration),
    /// Never answers, and never reaches the database.
    Never,
    /// Refused by the database for lack of a privilege (SQLSTATE 42501): an error that
    /// does not pass by itself.
    Denied,
    /// Rolled back as a serialization failure (SQLSTATE 40001), changing nothing.
    Conflict,
    /// Runs it at once (the database commits), but the answer is lost: fails with this
    /// kind of error, as when the connection breaks after the commit.
    AnswerLost(QueryErrorKind),
}

impl Gate {
    pub(crate) fn is_never(self) -> bool {
        self == Gate::Never
    }
}

/// One row of the lock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockRow {
    pub(crate) owner: Option<String>,
    pub(crate) fencing: i64,
    pub(crate) holder: Option<String>,
    pub(crate) expires_at: Option<Instant>,
    /// An election's value, and the term (fencing token) it was proclaimed in.
    pub(crate) value: Option<(String, i64)>,
}

impl LockRow {
    /// Whether an owner has a lease that has not expired at `now`.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.owner.is_some() && self.expires_at.is_some_and(|at| at > now)
    }
}

/// What a statement did, filled in once it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Not run (yet): it failed, hangs, or is still slow.
    None,
    /// An acquire that returned this fencing token.
    Acquired(i64),
    /// A statement that found the row not free / not ours / not held: no rows, 0 affected.
    Nothing,
    /// A probe that found this holder.
    Held(String),
    /// An acquire in turn (after a release notice) that found another waiter's statement
    /// in the lock's turn: it answered a row `(NULL)` without looking at the lock.
    NotOurTurn,
    /// A renew or release that affected the row.
    Done,
}

/// One logged statement.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    /// When the core sent it.
    pub(crate) at: Instant,
    pub(crate) gate: Gate,
    /// The `owner` parameter, for the statements that have one.
    pub(crate) owner: Option<String>,
    pub(crate) effect: Effect,
}

#[derive(Debug, Default)]
struct State {
    table_exists: bool,
    rows: HashMap<String, LockRow>,
    scripts: HashMap<Kind, VecDeque<Gate>>,
    defaults: HashMap<Kind, Gate>,
    log: Vec<Entry>,
    /// Every owner an acquire statement of the core gave the lock to.
    acquired: Vec<String>,
    /// Every owner a release statement freed the lock of.
    released: HashSet<String>,
    /// How many `watch`es of each lock name are in place (PostgreSQL: shared advisory
    /// locks on listening connections), less the `unwatch`es.
    watchers: HashMap<String, usize>,
    /// The lock names whose turn (PostgreSQL: an exclusive advisory lock for the
    /// transaction) an acquire statement in flight holds.
    turns: HashSet<String>,
    /// How far the database's clock is ahead of tokio's (see [`FakeDb::step_clock`]).
    clock_ahead: Duration,
}

/// The lock name whose turn `statement` attempts in: an acquire after a release notice
/// (PostgreSQL's, which tries to take the turn for its transaction).
fn in_turn(statement: &Statement) -> Option<&str> {
    match (statement.kind, statement.params.first()) {
        (Kind::Acquire, Some(Value::Text(name)))
            if statement.sql.contains("pg_try_advisory_xact_lock") =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// A statement's turn to attempt a lock; given back when the statement ends.
struct TurnHeld<'a> {
    db: &'a FakeDb,
    name: String,
}

impl Drop for TurnHeld<'_> {
    fn drop(&mut self) {
        self.db.state().turns.remove(&self.name);
    }
}

/// The fake database. Keep an `Arc<FakeDb>` to inspect it, and hand the lock a clone as
/// `Arc<dyn QueryInterface>`.
pub(crate) struct FakeDb {
    /// A lock table name of its own: the core shares its in-process release notices
    /// between every lock on the same table of interfaces that cannot name their
    /// database, so fakes sharing a table would wake each other's waiters.
    table: String,
    state: Mutex<State>,
    /// Bumped whenever a statement is sent or finishes, so tests can wait for one.
    changed: watch::Sender<u64>,
}

impl fmt::Debug for FakeDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeDb").finish_non_exhaustive()
    }
}

pub(crate) const NAME: &str = "job";

/// The origin of the fake database's clock readings: a fixed instant, so that readings
/// in milliseconds measure tokio's (paused) time plus any [`FakeDb::step_clock`].
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

impl FakeDb {
    /// A database whose lock table exists and is empty, where every statement succeeds.
    pub(crate) fn new() -> Arc<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Arc::new(Self {
            table: format!("fake_{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            state: Mutex::new(State {
                table_exists: true,
                ..State::default()
            }),
            changed: watch::channel(0).0,
        })
    }

    /// An operator drops the lock table (and with it every row).
    pub(crate) fn drop_table(&self) {
        let mut state = self.state();
        state.table_exists = false;
        state.rows.clear();
    }

    /// A database without the lock table.
    pub(crate) fn without_table() -> Arc<Self> {
        let fake = Self::new();
        fake.state().table_exists = false;
        fake
    }

    /// The name of this database's lock table.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// Queues gates for the next statements of `kind`, after those already queued.
    pub(crate) fn script(&self, kind: Kind, gates: impl IntoIterator<Item = Gate>) {
        self.state().scripts.entry(kind).or_default().extend(gates);
    }

    /// Drops every queued gate and default: every statement succeeds from now on.
    pub(crate) fn clear_scripts(&self) {
        let mut state = self.state();
        state.scripts.clear();
        state.defaults.clear();
    }

    /// The gate for statements of `kind` once their script is used up ([`Gate::Ok`] unless set).
    pub(crate) fn set_default(&self, kind: Kind, gate: Gate) {
        self.state().defaults.insert(kind, gate);
    }

    /// Steps the database's clock forward by `step` (an NTP step on the server): leases
    /// end earlier by tokio's clock.
    pub(crate) fn step_clock(&self, step: Duration) {
        self.state().clock_ahead += step;
    }

    /// The database's clock now.
    pub(crate) fn now(&self) -> Instant {
        Instant::now() + self.state().clock_ahead
    }

    /// The row of lock `name`, if it exists.
    pub(crate) fn row(&self, name: &str) -> Option<LockRow> {
        self.state().rows.get(name).cloned()
    }

    /// Whether someone holds a live lease on `name` by the database's clock now.
    pub(crate) fn is_held(&self, name: &str) -> bool {
        let now = self.now();
        self.row(name).is_some_and(|row| row.is_live(now))
    }

    /// Another process's acquisition of `name`: it holds the lock for `ttl` from now and
    /// never renews.
    pub(crate) fn hold_elsewhere(&self, name: &str, holder: &str, ttl: Duration) {
        let now = self.now();
        let mut state = self.state();
        let fencing = state.rows.get(name).map_or(1, |row| row.fencing + 1);
        state.rows.insert(
            name.to_owned(),
            LockRow {
                owner: Some("someone-else".to_owned()),
                fencing,
                holder: Some(holder.to_owned()),
                expires_at: Some(now + ttl),
                value: None,
            },
        );
    }

    /// Another process leads election `name` with `value` in term `fencing` for `ttl`
    /// from now; or the row a reader sees says so (a replica behind the primary, when
    /// `fencing` is smaller than before).
    pub(crate) fn lead_elsewhere(&self, name: &str, fencing: i64, value: &str, ttl: Duration) {
        let now = self.now();
        self.state().rows.insert(
            name.to_owned(),
            LockRow {
                owner: Some("someone-else".to_owned()),
                fencing,
                holder: Some("elsewhere".to_owned()),
                expires_at: Some(now + ttl),
                value: Some((value.to_owned(), fencing)),
            },
        );
    }

    /// An operator (or a takeover) rewrites the owner of `name`'s row.
    pub(crate) fn change_owner(&self, name: &str, owner: &str) {
        let mut state = self.state();
        let row = state.rows.get_mut(name).expect("no row to change");
        row.owner = Some(owner.to_owned());
        row.fencing += 1;
    }

    /// Every statement sent so far.
    pub(crate) fn log(&self) -> Vec<Entry> {
        self.state().log.clone()
    }

    /// The statements of `kind` sent so far.
    pub(crate) fn entries(&self, kind: Kind) -> Vec<Entry> {
        self.state()
            .log
            .iter()
            .filter(|entry| entry.kind == kind)
            .cloned()
            .collect()
    }

    /// How many statements of `kind` were sent so far.
    /// Withdraws `names`' watches, as PostgreSQL does when the listening session that
    /// took them ends.
    pub(crate) fn end_watches(&self, names: &[String]) {
        let mut state = self.state();
        for name in names {
            if let Some(count) = state.watchers.get_mut(name) {
                *count = count.saturating_sub(1);
            }
        }
    }

    /// The turn to attempt `name` held, as by an acquire statement elsewhere that hangs.
    pub(crate) fn hold_turn(&self, name: &str) {
        self.state().turns.insert(name.to_owned());
    }

    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.state()
            .log
            .iter()
            .filter(|entry| entry.kind == kind)
            .count()
    }

    /// Every owner the core acquired the lock for.
    pub(crate) fn acquired_owners(&self) -> Vec<String> {
        self.state().acquired.clone()
    }

    /// Whether a release statement freed the lock of `owner`.
    pub(crate) fn was_released(&self, owner: &str) -> bool {
        self.state().released.contains(owner)
    }

    /// Waits until `n` statements of `kind` have been sent.
    pub(crate) async fn sent(&self, kind: Kind, n: usize) {
        self.wait_for_log(|log| log.iter().filter(|entry| entry.kind == kind).count() >= n)
            .await;
    }

    /// Waits until the log (statements sent, with the effects of those that ran) satisfies
    /// `condition`.
    pub(crate) async fn wait_for_log(&self, condition: impl Fn(&[Entry]) -> bool) {
        let mut changed = self.changed.subscribe();
        changed
            .wait_for(|_| condition(&self.state().log))
            .await
            .expect("the fake's sender lives as long as the fake");
    }

    /// Runs one statement: log it, pass its gate, emulate it.
    async fn run(&self, statement: &Statement, wants_rows: bool) -> Result<Vec<Row>, QueryError> {
        let kind = statement.kind;
        if kind == Kind::Durability {
            // The first acquisition of the process reads the settings in the background.
            // Answered outside the log, so that no test depends on which ran first.
            return Ok(vec![]);
        }
        check(statement, wants_rows);
        let (index, gate) = {
            let mut state = self.state();
            let gate = match state.scripts.get_mut(&kind).and_then(VecDeque::pop_front) {
                Some(gate) => gate,
                None => state.defaults.get(&kind).copied().unwrap_or(Gate::Ok),
            };
            let owner = match (kind, statement.params.get(1)) {
                (
                    Kind::Acquire | Kind::Renew | Kind::Release | Kind::Fence | Kind::Proclaim,
                    Some(Value::Text(o)),
                ) => Some(o.clone()),
                _ => None,
            };
            state.log.push(Entry {
                kind,
                at: Instant::now(),
                gate,
                owner,
                effect: Effect::None,
            });
            (state.log.len() - 1, gate)
        };
        self.bump();
        // The lock's turn, held from the statement's start to its end, as PostgreSQL holds
        // a transaction's advisory lock; a dropped statement gives it back too.
        let _turn = match in_turn(statement) {
            Some(name) => match self.take_turn(name) {
                Some(turn) => Some(turn),
                None => {
                    self.state().log[index].effect = Effect::NotOurTurn;
                    self.bump();
                    return Ok(vec![vec![Value::Null]]);
                }
            },
            None => None,
        };
        let result = match gate {
            Gate::Ok => self.apply(index, statement),
            Gate::Err(error) => Err(QueryError::new(error, None, "injected failure")),
            Gate::Slow(delay) => {
                tokio::time::sleep(delay).await;
                self.apply(index, statement)
            }
            Gate::Lag(delay) => {
                let result = self.apply(index, statement);
                tokio::time::sleep(delay).await;
                result
            }
            Gate::Never => std::future::pending().await,
            Gate::Conflict => Err(QueryError::new(
                QueryErrorKind::Statement,
                Some("40001".into()),
                "could not serialize access due to read/write dependencies among transactions",
            )),
            Gate::Denied => Err(QueryError::new(
                QueryErrorKind::Statement,
                Some("42501".into()),
                format!("permission denied for table {}", self.table),
            )),
            Gate::AnswerLost(error) => self.apply(index, statement).and(Err(QueryError::new(
                error,
                None,
                "connection reset",
            ))),
        };
        self.bump();
        result
    }

    fn take_turn(&self, name: &str) -> Option<TurnHeld<'_>> {
        self.state()
            .turns
            .insert(name.to_owned())
            .then(|| TurnHeld {
                db: self,
                name: name.to_owned(),
            })
    }

    /// The database's side: the statement's effect on the model, and its answer.
    fn apply(&self, index: usize, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let kind = statement.kind;
        let mut state = self.state();
        if !state.table_exists && kind != Kind::CreateTable {
            return Err(QueryError::new(
                QueryErrorKind::Statement,
                Some("42P01".into()),
                format!("relation \"{}\" does not exist", self.table),
            ));
        }
        let now = Instant::now() + state.clock_ahead;
        let text = |i: usize| match statement.params.get(i) {
            Some(Value::Text(text)) => text.clone(),
            other => panic!("{kind:?} parameter {i} is not text: {other:?}"),
        };
        let int = |i: usize| match statement.params.get(i) {
            Some(Value::Int(int)) => *int,
            other => panic!("{kind:?} parameter {i} is not an integer: {other:?}"),
        };
        let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).expect("negative ms"));
        let (effect, rows) = match kind {
            Kind::CreateTable => {
                state.table_exists = true;
                (Effect::Done, affected(0))
            }
            // Nobody listens to the fake: a notice changes nothing.
            Kind::Notify => (Effect::Nothing, affected(1)),
            Kind::Watch => {
                let watchers = state.watchers.entry(text(0)).or_default();
                let done = if statement.sql.contains("unlock") {
                    let had = *watchers > 0;
                    *watchers = watchers.saturating_sub(1);
                    had
                } else {
                    *watchers += 1;
                    true
                };
                (Effect::Done, vec![vec![Value::Int(i64::from(done))]])
            }
            Kind::Acquire => {
                let (name, owner, holder, ttl) = (text(0), text(1), text(2), millis(int(3)));
                let taken = LockRow {
                    owner: Some(owner.clone()),
                    fencing: 1,
                    holder: Some(holder),
                    expires_at: Some(now + ttl),
                    value: None,
                };
                let fencing = match state.rows.get_mut(&name) {
                    None => {
                        state.rows.insert(name, taken);
                        Some(1)
                    }
                    // Free when released or past its lease's end, whatever its owner:
                    // a revoked row (no owner, lease running) is not free yet.
                    Some(row) if row.expires_at.is_none_or(|at| at <= now) => {
                        let fencing = row.fencing + 1;
                        // The last leader's value stays, disowned by the new term.
                        let value = row.value.take();
                        *row = LockRow {
                            fencing,
                            value,
                            ..taken
                        };
                        Some(fencing)
                    }
                    Some(_) => None,
                };
                match fencing {
                    Some(fencing) => {
                        state.acquired.push(owner);
                        (Effect::Acquired(fencing), vec![vec![Value::Int(fencing)]])
                    }
                    None => (Effect::Nothing, vec![]),
                }
            }
            Kind::Probe if statement.columns.len() == 4 => {
                let live = permit_names(&text(0))
                    .filter_map(|name| {
                        let row = state.rows.get(&name).filter(|row| row.is_live(now))?;
                        let left = row.expires_at.expect("live rows expire") - now;
                        Some(vec![
                            Value::Text(name),
                            Value::Text(row.holder.clone().expect("live rows name a holder")),
                            Value::Int(i64::try_from(left.as_millis()).expect("short leases")),
                            Value::Int(row.fencing),
                        ])
                    })
                    .collect();
                (Effect::Nothing, live)
            }
            Kind::Inspect => match state.rows.get(&text(0)) {
                // Only the permits (the fencing column) of a definition are read.
                Some(row) => {
                    let mut info = vec![Value::Null; 9];
                    info[2] = Value::Int(row.fencing);
                    (Effect::Nothing, vec![info])
                }
                None => (Effect::Nothing, vec![]),
            },
            Kind::CreateRows => {
                let (name, permits, holder) = (text(0), int(1), text(2));
                let added = !state.rows.contains_key(&name);
                if added {
                    let definition = LockRow {
                        owner: None,
                        fencing: permits,
                        holder: Some(holder),
                        expires_at: None,
                        value: None,
                    };
                    state.rows.insert(name, definition);
                }
                (Effect::Done, affected(u64::from(added)))
            }
            Kind::Probe => match state.rows.get(&text(0)) {
                Some(row) if row.expires_at.is_some_and(|at| at > now) => {
                    let left = row.expires_at.expect("live rows expire") - now;
                    let holder = row.holder.clone().expect("live rows name a holder");
                    let holder = match row.owner {
                        Some(_) => holder,
                        None => format!("revoked by an operator (was: {holder})"),
                    };
                    let ms = i64::try_from(left.as_millis()).expect("short leases");
                    (
                        Effect::Held(holder.clone()),
                        vec![vec![
                            Value::Text(holder),
                            Value::Int(ms),
                            Value::Int(row.fencing),
                        ]],
                    )
                }
                _ => (Effect::Nothing, vec![]),
            },
            Kind::Renew => {
                let (owner, ttl) = (text(1), millis(int(2)));
                match state.rows.get_mut(&text(0)) {
                    Some(row) if row.owner.as_ref() == Some(&owner) && row.is_live(now) => {
                        row.expires_at = Some(now + ttl);
                        let clock = i64::try_from((now - *EPOCH).as_millis()).expect("short tests");
                        (Effect::Done, vec![vec![Value::Int(clock)]])
                    }
                    _ => (Effect::Nothing, vec![]),
                }
            }
            Kind::Release => {
                let (name, owner) = (text(0), text(1));
                let freed = match state.rows.get_mut(&name) {
                    Some(row) if row.owner.as_ref() == Some(&owner) => {
                        row.owner = None;
                        row.expires_at = None;
                        true
                    }
                    _ => false,
                };
                let effect = if freed {
                    state.released.insert(owner);
                    Effect::Done
                } else {
                    Effect::Nothing
                };
                let watched = state.watchers.get(&name).is_some_and(|count| *count > 0);
                let rows = match freed {
                    true => vec![vec![Value::Int(i64::from(watched))]],
                    false => vec![],
                };
                (effect, rows)
            }
            Kind::Fence => {
                let (owner, fencing) = (text(1), int(2));
                match state.rows.get(&text(0)) {
                    Some(row)
                        if row.owner.as_ref() == Some(&owner)
                            && row.fencing == fencing
                            && row.is_live(now) =>
                    {
                        (Effect::Done, vec![vec![Value::Int(fencing)]])
                    }
                    _ => (Effect::Nothing, vec![]),
                }
            }
            Kind::Proclaim => {
                let (owner, value) = (text(1), text(2));
                match state.rows.get_mut(&text(0)) {
                    Some(row) if row.owner.as_ref() == Some(&owner) && row.is_live(now) => {
                        row.value = Some((value, row.fencing));
                        (Effect::Done, affected(1))
                    }
                    _ => (Effect::Nothing, affected(0)),
                }
            }
            Kind::Leader => match state.rows.get(&text(0)) {
                Some(LockRow {
                    value: Some((value, term)),
                    fencing,
                    holder,
                    expires_at: Some(expires_at),
                    ..
                }) if term == fencing && state.rows[&text(0)].is_live(now) => {
                    let left = i64::try_from((*expires_at - now).as_millis()).expect("short");
                    let holder = holder.clone().expect("live rows name a holder");
                    (
                        Effect::Held(holder.clone()),
                        vec![vec![
                            Value::Text(value.clone()),
                            Value::Text(holder),
                            Value::Int(*fencing),
                            Value::Int(0),
                            Value::Int(left),
                        ]],
                    )
                }
                _ => (Effect::Nothing, vec![]),
            },
            other => panic!("the fake does not know {other:?} statements"),
        };
        state.log[index].effect = effect;
        Ok(rows)
    }
}

/// The names in a semaphore's JSON array of permit names (plain names, no escapes).
fn permit_names(array: &str) -> impl Iterator<Item = String> + '_ {
    array
        .trim_matches(['[', ']'])
        .split(',')
        .map(|name| name.trim().trim_matches('"').to_owned())
}

/// How `apply` answers a statement run with `execute`: its affected-row count.
fn affected(count: u64) -> Vec<Row> {
    vec![vec![Value::Int(
        i64::try_from(count).expect("small counts"),
    )]]
}

#[async_trait]
impl QueryInterface for FakeDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        let rows = self.run(statement, false).await?;
        match rows.as_slice() {
            [row] => match row.as_slice() {
                [Value::Int(count)] => Ok(u64::try_from(*count).expect("counts are positive")),
                other => panic!("not an affected-row count: {other:?}"),
            },
            other => panic!("not an affected-row count: {other:?}"),
        }
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.run(statement, true).await
    }

    /// A fake database does not notify; the tests that listen wrap it.
    fn listener(&self) -> Option<&dyn Listen> {
        None
    }
}

/// A builder for lock [`NAME`] on `fake`, with a 300 ms TTL renewed every 100 ms (so the
/// loss deadline is 270 ms after the last successful statement was sent).
pub(crate) fn builder(fake: &Arc<FakeDb>) -> LockBuilder {
    let queries: Arc<dyn QueryInterface> = fake.clone();
    DistributedLock::builder(NAME, queries)
        .table(fake.table())
        .ttl(TTL)
        .renew_interval(RENEW)
}

/// [`builder`], built.
pub(crate) fn lock(fake: &Arc<FakeDb>) -> DistributedLock {
    builder(fake).build().expect("valid options")
}

pub(crate) const TTL: Duration = Duration::from_millis(300);
pub(crate) const RENEW: Duration = Duration::from_millis(100);
/// 90 % of [`TTL`].
pub(crate) const SAFE_FOR: Duration = Duration::from_millis(270);
/// A quarter of [`RENEW`].
pub(crate) const RETRY: Duration = Duration::from_millis(25);

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Lets every spawned task that can make progress run, without moving the clock.
pub(crate) async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}
