//! Listening for other processes' releases is trusted only while the listener is heard:
//! behind a deaf listener (PgBouncer in transaction mode, a half-open connection) waiters
//! poll at the normal interval, not ten times slower; a healthy listener wakes them at
//! once and they probe only as a safety net.

mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dlock_core::adapter::{
    Listen, QueryError, QueryInterface, ReleaseNotices, Row, Statement, StatementKind, Value,
    async_trait,
};
use dlock_core::{Dialect, DistributedLock};
use fake::{Effect, FakeDb, Gate, Kind, NAME, ms};
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep};

const POLL: Duration = Duration::from_secs(1);

/// One process's view of the fake database, with PostgreSQL's notifications: what any
/// process sends with `pg_notify` reaches every process's listener, which passes it on
/// only while `hearing` (a deaf listener still listens, it just never hears anything).
#[derive(Debug)]
struct Process {
    db: Arc<FakeDb>,
    name: &'static str,
    notifications: broadcast::Sender<String>,
    hearing: AtomicBool,
    listens: AtomicUsize,
    /// Listening connections closed so far.
    closed: Arc<AtomicUsize>,
    heartbeats: AtomicUsize,
}

/// A listening connection's session: its watches end with it.
struct Session {
    db: Arc<FakeDb>,
    watches: Vec<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.db.end_watches(&self.watches);
    }
}

/// Counts a listening connection as closed when dropped.
struct Closing(Arc<AtomicUsize>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Process {
    fn new(
        db: &Arc<FakeDb>,
        name: &'static str,
        notifications: &broadcast::Sender<String>,
        hearing: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            db: Arc::clone(db),
            name,
            notifications: notifications.clone(),
            hearing: AtomicBool::new(hearing),
            listens: AtomicUsize::new(0),
            closed: Arc::default(),
            heartbeats: AtomicUsize::new(0),
        })
    }

    fn lock(self: &Arc<Self>, ttl: Duration) -> DistributedLock {
        let queries: Arc<dyn QueryInterface> = self.clone();
        DistributedLock::builder(NAME, queries)
            .table(self.db.table())
            .ttl(ttl)
            .poll_interval(POLL)
            .build()
            .expect("valid options")
    }

    fn heartbeats(&self) -> usize {
        self.heartbeats.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl QueryInterface for Process {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        if statement.kind == StatementKind::Notify {
            if let Some(Value::Text(payload)) = statement.params.get(1) {
                if payload.is_empty() {
                    self.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                let _ = self.notifications.send(payload.clone());
            }
        }
        self.db.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        let rows = self.db.query(statement).await;
        // A release that finds waiters (`watched`) notifies them itself, as it commits.
        if statement.kind == StatementKind::Release && statement.sql.contains("pg_notify") {
            let watched = matches!(rows.as_deref(), Ok([row]) if row == &[Value::Int(1)]);
            if let (true, Some(Value::Text(name))) = (watched, statement.params.first()) {
                let _ = self.notifications.send(name.clone());
            }
        }
        rows
    }

    fn listener(&self) -> Option<&dyn Listen> {
        Some(self)
    }
}

#[async_trait]
impl Listen for Process {
    fn source(&self) -> String {
        format!("{} {}", self.name, self.db.table())
    }

    async fn listen(&self, _channel: &str, wake: ReleaseNotices) -> Result<(), QueryError> {
        self.listens.fetch_add(1, Ordering::Relaxed);
        let _closing = Closing(Arc::clone(&self.closed));
        let mut session = Session {
            db: Arc::clone(&self.db),
            watches: Vec::new(),
        };
        let mut notifications = self.notifications.subscribe();
        wake.listening();
        loop {
            tokio::select! {
                notification = notifications.recv() => {
                    if let Ok(payload) = notification {
                        if self.hearing.load(Ordering::Relaxed) {
                            wake.notify(&payload);
                        }
                    }
                }
                request = wake.request() => {
                    let statement = request.statement();
                    let rows = self.db.query(statement).await;
                    let done = matches!(rows.as_deref(), Ok([row]) if row == &[Value::Int(1)]);
                    if let (true, Some(Value::Text(name))) = (done, statement.params.first()) {
                        let held = &mut session.watches;
                        if statement.sql.contains("unlock") {
                            if let Some(at) = held.iter().position(|had| had == name) {
                                held.swap_remove(at);
                            }
                        } else {
                            held.push(name.clone());
                        }
                    }
                    request.reply(rows);
                }
                () = wake.closed() => return Ok(()),
            }
        }
    }
}

/// A waiter in process `waiting` for the lock that process `holding` holds; after
/// `wait`, `holding` releases it. Returns how long after the release the waiter had it.
async fn wake_after_release(
    waiting: &Arc<Process>,
    holding: &Arc<Process>,
    wait: Duration,
) -> Duration {
    let held = holding
        .lock(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    let waiter = waiting.lock(Duration::from_secs(60));
    let acquiring = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        let acquired_at = Instant::now();
        guard.release().await.unwrap();
        acquired_at
    });
    sleep(wait).await;
    held.release().await.unwrap();
    let released_at = Instant::now();
    acquiring.await.unwrap() - released_at
}

fn notifications() -> broadcast::Sender<String> {
    broadcast::channel(64).0
}

/// PgBouncer in transaction mode: `LISTEN` succeeds, nothing ever arrives. The waiter
/// never trusts the listener, so it polls at the normal interval.
#[tokio::test(start_paused = true)]
async fn behind_a_deaf_listener_waiters_poll_at_the_normal_interval() {
    let (db, bus) = (FakeDb::new(), notifications());
    let deaf = Process::new(&db, "deaf", &bus, false);
    let other = Process::new(&db, "other", &bus, true);

    let late = wake_after_release(&deaf, &other, Duration::from_secs(30)).await;

    assert!(
        late <= POLL + ms(10),
        "behind a deaf listener the waiter found the release {late:?} late; one poll \
         interval is {POLL:?}"
    );
    // It kept trying to listen, but ever more rarely (a pause that doubles from 1 s).
    let listens = deaf.listens.load(Ordering::Relaxed);
    assert!((2..=6).contains(&listens), "{listens} listens in 30 s");
}

/// A healthy listener is trusted: the waiter probes only as a safety net, wakes as soon
/// as the release is heard, and the heartbeat costs a statement every few seconds while
/// it waits and nothing while nobody waits.
#[tokio::test(start_paused = true)]
async fn a_healthy_listener_is_trusted_and_costs_nothing_when_nobody_waits() {
    let (db, bus) = (FakeDb::new(), notifications());
    let listening = Process::new(&db, "listening", &bus, true);
    let other = Process::new(&db, "other", &bus, true);

    let late = wake_after_release(&listening, &other, Duration::from_secs(60)).await;

    assert!(late <= ms(5), "a notified waiter took {late:?}");
    let probes = db.count(Kind::Probe);
    assert!(
        probes <= 20,
        "{probes} probes in 60 s: the waiter did not trust its listener"
    );
    let heartbeats = listening.heartbeats();
    assert!(
        (20..=31).contains(&heartbeats),
        "{heartbeats} heartbeats in 60 s of waiting; one per 2–3 s of silence expected"
    );
    assert_eq!(listening.listens.load(Ordering::Relaxed), 1);
    sleep(Duration::from_secs(600)).await;
    assert_eq!(
        listening.heartbeats(),
        heartbeats,
        "heartbeats while nobody waits"
    );
}

/// A listener that was heard and then goes deaf (a half-open connection): the waiters,
/// napping on its word, are told to look as soon as it is found deaf, within seconds, and
/// poll from then on.
#[tokio::test(start_paused = true)]
async fn a_listener_that_goes_deaf_is_given_up_and_napping_waiters_look() {
    let (db, bus) = (FakeDb::new(), notifications());
    let listening = Process::new(&db, "listening", &bus, true);
    let other = Process::new(&db, "other", &bus, true);
    let held = other.lock(Duration::from_secs(60)).acquire().await.unwrap();
    let waiter = listening.lock(Duration::from_secs(60));
    let acquiring = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        let acquired_at = Instant::now();
        guard.release().await.unwrap();
        acquired_at
    });
    sleep(Duration::from_secs(20)).await;
    // Deaf right after a probe: the waiter trusts its listener and naps 5–10 s.
    let probes = db.count(Kind::Probe);
    db.wait_for_log(|log| log.iter().filter(|e| e.kind == Kind::Probe).count() > probes)
        .await;
    listening.hearing.store(false, Ordering::Relaxed);
    let deaf_since = Instant::now();
    // Found deaf, and closed, within 4 s: before the nap ends by itself.
    let closed = async {
        while listening.closed.load(Ordering::Relaxed) == 0 {
            sleep(ms(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), closed)
        .await
        .expect("the deaf listener was never closed");
    let found_deaf_after = deaf_since.elapsed();
    held.release().await.unwrap();
    let released_at = Instant::now();

    let late = acquiring.await.unwrap() - released_at;

    assert!(
        found_deaf_after <= Duration::from_secs(4),
        "found deaf after {found_deaf_after:?}"
    );
    assert!(
        late < POLL,
        "after its listener was found deaf the waiter found the release {late:?} late; \
         it should poll at most every {POLL:?}"
    );
}

/// The notices `bus` carried for the lock (not heartbeats) since `since` was subscribed.
fn notices_of_the_lock(since: &mut broadcast::Receiver<String>) -> usize {
    std::iter::from_fn(|| since.try_recv().ok())
        .filter(|payload| payload == NAME)
        .count()
}

/// A release sends a notice only while a process waits for the lock: waiters announce
/// themselves on their listening connection before they look, and withdraw when they
/// stop waiting. Uncontended, a lock costs its acquire and its release, nothing more.
#[tokio::test(start_paused = true)]
async fn a_release_is_notified_only_while_another_process_waits() {
    let (db, bus) = (FakeDb::new(), notifications());
    let listening = Process::new(&db, "listening", &bus, true);
    let other = Process::new(&db, "other", &bus, true);
    let mut sent = bus.subscribe();
    let lock = other.lock(Duration::from_secs(60));

    for _ in 0..3 {
        lock.acquire().await.unwrap().release().await.unwrap();
    }
    fake::settle().await;
    assert_eq!(
        notices_of_the_lock(&mut sent),
        0,
        "notices with nobody waiting"
    );
    assert_eq!(db.count(Kind::Watch), 0);

    let held = lock.acquire().await.unwrap();
    let waiter = listening.lock(Duration::from_secs(60));
    let acquiring = tokio::spawn(async move { waiter.acquire().await.unwrap() });
    sleep(Duration::from_secs(5)).await;
    held.release().await.unwrap();
    let released_at = Instant::now();
    let guard = acquiring.await.unwrap();
    let late = released_at.elapsed();
    fake::settle().await;

    assert!(late <= ms(5), "a notified waiter took {late:?}");
    assert_eq!(notices_of_the_lock(&mut sent), 1, "the waited-for release");
    // The waiter announced itself once and withdrew once it had the lock.
    assert_eq!(db.count(Kind::Watch), 2);
    guard.release().await.unwrap();
    for _ in 0..3 {
        lock.acquire().await.unwrap().release().await.unwrap();
    }
    fake::settle().await;
    assert_eq!(
        notices_of_the_lock(&mut sent),
        0,
        "notices after the waiter left"
    );
}

/// A release wakes every waiting process, but only the one whose turn it is attempts:
/// the others' acquire statements, sent while its statement runs, find the turn taken
/// and look at nothing.
#[tokio::test(start_paused = true)]
async fn a_release_is_attempted_by_one_waiting_process() {
    let (db, bus) = (FakeDb::new(), notifications());
    db.set_default(Kind::Acquire, Gate::Slow(ms(1)));
    let holding = Process::new(&db, "holding", &bus, true);
    let held = holding
        .lock(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    let mut waiting = tokio::task::JoinSet::new();
    for name in ["a", "b", "c"] {
        let waiter = Process::new(&db, name, &bus, true).lock(Duration::from_secs(60));
        waiting.spawn(async move { waiter.acquire().await.unwrap() });
    }
    sleep(Duration::from_secs(5)).await;
    let probes_before = db.count(Kind::Probe);
    let attempts = || {
        db.entries(Kind::Acquire)
            .iter()
            .filter(|entry| entry.effect != Effect::NotOurTurn)
            .count()
    };
    let attempts_before = attempts();

    held.release().await.unwrap();
    let guard = waiting.join_next().await.unwrap().unwrap();
    fake::settle().await;

    assert_eq!(
        attempts() - attempts_before,
        1,
        "acquire statements that looked at the lock after one release with three \
         processes waiting"
    );
    assert_eq!(
        db.count(Kind::Probe),
        probes_before,
        "probes after the release: waiters that lost the turn wait for the next notice"
    );
    guard.release().await.unwrap();
    waiting
        .join_next()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
    waiting
        .join_next()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// A waiter that did not get the turn does not depend on its winner: if the winner's
/// attempt never ends (it hangs on a dead connection), the waiter looks for itself within
/// a poll interval and finds the lock free.
#[tokio::test(start_paused = true)]
async fn a_turn_held_by_a_hung_attempt_delays_waiters_by_a_poll_interval_at_most() {
    let (db, bus) = (FakeDb::new(), notifications());
    let holding = Process::new(&db, "holding", &bus, true);
    let waiting = Process::new(&db, "waiting", &bus, true);
    let held = holding
        .lock(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    let waiter = waiting.lock(Duration::from_secs(60));
    let acquiring = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        (Instant::now(), guard)
    });
    sleep(Duration::from_secs(5)).await;
    db.hold_turn(NAME);

    held.release().await.unwrap();
    let released_at = Instant::now();
    let (acquired_at, guard) = acquiring.await.unwrap();

    let late = acquired_at - released_at;
    assert!(
        late <= POLL + ms(10),
        "behind a hung attempt's turn the waiter took {late:?}; one poll interval is \
         {POLL:?}"
    );
    guard.release().await.unwrap();
}

/// A holder that took the lock without waiting, and finds at its release that another
/// process waits, lets that one go first when it comes straight back for the lock:
/// otherwise its one attempt would beat the waiter's notice and attempt every time.
#[tokio::test(start_paused = true)]
async fn a_holder_coming_straight_back_lets_a_process_that_waited_go_first() {
    let (db, bus) = (FakeDb::new(), notifications());
    // Every statement a round trip of 1 ms, as on a database nearby.
    for kind in [
        Kind::Acquire,
        Kind::Probe,
        Kind::Release,
        Kind::Notify,
        Kind::Watch,
    ] {
        db.set_default(kind, Gate::Slow(ms(1)));
    }
    let looping = Process::new(&db, "looping", &bus, true).lock(Duration::from_secs(60));
    let waiter = Process::new(&db, "waiting", &bus, true).lock(Duration::from_secs(60));
    let held = looping.acquire().await.unwrap();
    let acquiring = tokio::spawn(async move {
        let guard = waiter.acquire().await.unwrap();
        let acquired_at = Instant::now();
        sleep(ms(50)).await;
        guard.release().await.unwrap();
        acquired_at
    });
    sleep(Duration::from_secs(5)).await;

    held.release().await.unwrap();
    let again = looping.acquire().await.unwrap();
    let looped_back_at = Instant::now();
    again.release().await.unwrap();

    let waiter_acquired_at = acquiring.await.unwrap();
    assert!(
        waiter_acquired_at < looped_back_at,
        "the holder took the lock back before the process that had waited for it"
    );
}
