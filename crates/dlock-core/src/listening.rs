//! Waking waiters when a lock is released, instead of making them poll.
//!
//! One [`ReleaseBroadcast`] per process, database and lock table, shared by every waiter: a broadcast
//! channel of released lock names. Releases in this process feed it directly; on
//! databases that can notify (PostgreSQL's `LISTEN`/`NOTIFY`), one listening connection
//! per hub feeds it the releases of every other process. Waiters still poll, slowly, as a
//! safety net for lost notifications and for leases that expire without a release.
//!
//! A listening connection can be deaf without anything failing: half-open TCP, a
//! listener that reconnected and missed notices in the gap, or PgBouncer in transaction
//! mode (where `LISTEN` succeeds and nothing ever arrives). So the hub trusts its listener
//! only while it hears it: while anyone waits and the channel has been quiet for a while,
//! it sends a heartbeat — a notification with the empty payload, which no lock name can
//! be — and if nothing comes back in time, it declares the listener deaf, closes it and
//! tells the waiters to look for themselves ([`RESYNC`]); the next waiter listens anew.
//!
//! Releases send a notice only when some process waits for the lock (where the dialect
//! has `watch`): a waiter announces itself through its hub ([`Interest`]), which has the
//! adapter run `watch` on the listening connection — the announcement lasts as long as
//! that session — before the waiter looks at the lock, and `unwatch` when it stops
//! waiting. An uncontended lock thus costs two statements, its acquire and its release.
//!
//! A release notice wakes every waiting process, and only one of them can get the lock.
//! So a waiter woken by one attempts in the lock's turn, which one transaction at a time
//! can have (see `turns_key` in `dialect/postgres.rs`), and one waiter per process asks
//! ([`ReleaseBroadcast::take_turn`]); the others wait for the next notice — one attempt
//! per release instead of one per waiting process, each of which would wait for the
//! winner's row lock, fail, and look at the lock again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::TableName;
use crate::adapter::{QueryError, QueryInterface, Row, Statement, Value};
use crate::dialect::Sql;

/// How long sending a release notice may take: past it, waiters have probed by themselves
/// (their safety-net poll, ten poll intervals of the default 1 s).
const NOTICE_LIMIT: Duration = Duration::from_secs(10);

/// How many release notices a slow waiter may fall behind before it just re-probes.
const BACKLOG: usize = 256;

/// Sent on the hub instead of a lock name (which is never empty): every waiter should
/// probe now, because notices may have been missed — a listener started or was lost.
/// Also the payload of the heartbeat, which is why an empty payload heard on the channel
/// is not passed on as a release.
pub(crate) const RESYNC: &str = "";

// The heartbeat's timing. The cost while nobody waits is nothing: no heartbeat is sent.
// While someone waits it is at most one `SELECT pg_notify` per process and table every 2–3
// s, and only when the channel has been quiet that long (any notification proves the
// listener alive, including other processes' heartbeats, so a busy table sends none and
// N waiting processes send fewer than N between them). That is a fraction of what the
// waiters' own safety-net probes cost, and a notification writes no WAL. In exchange a
// deaf listener is found within 4 s of silence, instead of costing every waiter ten poll
// intervals per nap for as long as it stays deaf.

/// How long the channel may be quiet, while someone waits, before a heartbeat is sent;
/// jittered up to 1.5 times, so that processes on the same table drift apart.
const QUIET: Duration = Duration::from_secs(2);
/// How soon the heartbeat (or anything else) must be heard after it is sent, the pool
/// checkout included: a notification makes the round trip in milliseconds, and a
/// database that cannot run one statement in a second is better polled anyway.
const ECHO_WITHIN: Duration = Duration::from_secs(1);
/// How long after the last notification heard the listener is trusted: the longest
/// quiet period and the echo's bound. By then the heartbeat's echo has refreshed it, or
/// the listener is declared deaf.
const TRUSTED_FOR: Duration = Duration::from_millis(3_000 + 1_000);
/// How long the adapter may take to open its connection and `LISTEN`.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);
/// The pause before listening again after a listener that was never heard, doubling
/// with each such failure (PgBouncer in transaction mode: every `LISTEN` is deaf) up to
/// [`RELISTEN_PAUSE_MAX`]. A listener that had been heard is replaced at once.
const RELISTEN_PAUSE: Duration = Duration::from_secs(1);
const RELISTEN_PAUSE_MAX: Duration = Duration::from_secs(60);

/// The release notices of one database and lock table, in this process.
pub(crate) struct ReleaseBroadcast {
    shared: Arc<Shared>,
    /// Dropped with the hub, which stops the listening task.
    alive: watch::Sender<()>,
    queries: Arc<dyn QueryInterface>,
    /// Set where the database can notify and the adapter can listen.
    notices: Option<NoticeChannel>,
}

/// The channel to listen on, the heartbeat to send on it, and the statements with which
/// waiters announce themselves.
struct NoticeChannel {
    channel: Arc<str>,
    heartbeat: Statement,
    sql: Sql,
}

struct Shared {
    released: broadcast::Sender<Arc<str>>,
    listener: Mutex<Listener>,
    /// Pinged whenever the listener's watchdog may have something to do: the adapter
    /// listens, something was heard, a waiter asked.
    changed: Notify,
    /// The locks for which a waiter of this process is attempting in turn: the others
    /// woken with it leave the turn to it rather than lose it on the database.
    turns: Mutex<HashSet<Arc<str>>>,
}

/// The listener's state. One listening session at a time, numbered so that a stale
/// session's [`ReleaseNotices`] cannot speak for the current one.
#[derive(Debug, Default)]
struct Listener {
    state: State,
    session: u64,
    /// When anything was last heard in this session.
    last_heard: Option<Instant>,
    /// Sessions in a row that ended without ever being heard.
    failures: u32,
    /// No new session before this.
    not_before: Option<Instant>,
    /// Whether the WARN that waiters poll because no listener was ever heard was logged.
    warned: bool,
    /// Where this session takes statements for its connection, while it runs.
    requests: Option<mpsc::UnboundedSender<ListenerRequest>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nobody listens.
    #[default]
    Idle,
    /// The adapter is connecting and sending `LISTEN`.
    Starting,
    /// `LISTEN` is in place.
    Listening,
}

impl Listener {
    /// Whether releases by other processes reach the hub: the listener listens and was
    /// heard recently enough.
    fn is_live(&self, now: Instant) -> bool {
        self.state == State::Listening
            && self
                .last_heard
                .is_some_and(|heard| now.saturating_duration_since(heard) < TRUSTED_FOR)
    }
}

type Registry = Mutex<HashMap<(String, String), Weak<ReleaseBroadcast>>>;

impl ReleaseBroadcast {
    /// The hub for `table` (whose statements are `sql`) on the database behind `queries`,
    /// shared with every lock of this process on the same database and table.
    pub(crate) fn for_table(
        queries: &Arc<dyn QueryInterface>,
        table: &TableName,
        sql: &Sql,
    ) -> Arc<ReleaseBroadcast> {
        static HUBS: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        // Interfaces without a notification source share a hub per table: at worst a
        // release on one database wakes a waiter for the same name on another, which
        // then makes one needless acquire attempt.
        let key = (
            queries
                .listener()
                .map(|listener| listener.source())
                .unwrap_or_default(),
            table.to_string(),
        );
        let mut hubs = HUBS
            .get_or_init(Registry::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            return hub;
        }
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let hub = Arc::new(ReleaseBroadcast {
            shared: Arc::new(Shared {
                released: broadcast::channel(BACKLOG).0,
                listener: Mutex::default(),
                changed: Notify::new(),
                turns: Mutex::default(),
            }),
            alive: watch::channel(()).0,
            queries: Arc::clone(queries),
            // Listen only where the adapter can, and where a heartbeat can check it.
            // The heartbeat is the dialect's release notice with the empty payload.
            notices: sql
                .channel
                .clone()
                .filter(|_| queries.listener().is_some())
                .and_then(|channel| {
                    Some(NoticeChannel {
                        heartbeat: sql.notify(RESYNC)?,
                        channel,
                        sql: sql.clone(),
                    })
                }),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        hub
    }

    /// Tells waiters that `name` was released: this process's at once, and other
    /// processes' by sending `notice` through `queries` (where the dialect has one), in
    /// the background: not on the release path (see `notify` in the dialect). Returns the
    /// task sending the notice, for a caller that may exit before it would run.
    pub(crate) fn announce(
        &self,
        name: &str,
        queries: &Arc<dyn QueryInterface>,
        notice: Option<Statement>,
    ) -> Option<JoinHandle<()>> {
        let _ = self.shared.released.send(name.into());
        // A lost notice costs a waiter one safety-net poll interval, no more; so does one
        // that takes longer than this, after which the task gives up rather than pile up
        // with its connection against a database that does not answer.
        notice.map(|notice| {
            let queries = Arc::clone(queries);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(NOTICE_LIMIT, queries.execute(&notice)).await;
            })
        })
    }

    /// A subscription to release notices; subscribe before probing, so that no release
    /// between the probe and the wait goes unseen. A notice is a released lock's name,
    /// or [`RESYNC`]. While anyone holds a subscription, the listener is kept checked.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.released.subscribe()
    }

    /// Whether releases by other processes reach this hub: true only while a listener is
    /// known to be live (heard within the last few seconds). If the database can notify
    /// and nobody listens, starts listening in the background.
    pub(crate) fn ensure_listening(&self) -> bool {
        let Some(notices) = &self.notices else {
            return false;
        };
        let now = Instant::now();
        let mut listener = self.shared.listener();
        match listener.state {
            State::Listening => {
                let live = listener.is_live(now);
                drop(listener);
                // Someone waits: the watchdog checks the listener while anyone does.
                self.shared.changed.notify_one();
                live
            }
            State::Starting => false,
            State::Idle if listener.not_before.is_some_and(|at| now < at) => false,
            State::Idle => {
                listener.state = State::Starting;
                listener.session += 1;
                listener.last_heard = None;
                let (requests, requested) = mpsc::unbounded_channel();
                listener.requests = Some(requests);
                let session = listener.session;
                drop(listener);
                self.start_listening(notices, session, requested);
                false
            }
        }
    }

    /// A waiter's interest in the releases of lock `name`, not yet announced.
    pub(crate) fn interest(&self, name: &str) -> Interest {
        Interest {
            name: name.into(),
            announced: None,
        }
    }

    /// Whether releases of `interest`'s lock by other processes reach this hub: the
    /// listener is live and has announced the interest. Announces it first if need be,
    /// waiting for that (one statement on the listening connection), so that a look at
    /// the lock after this returned `true` misses no release (see `waiters_key` in
    /// `dialect/postgres.rs`). Starts listening if nobody does.
    pub(crate) async fn hears(&self, interest: &mut Interest) -> bool {
        let Some(notices) = &self.notices else {
            return false;
        };
        let live = self.ensure_listening();
        let (session, requests) = {
            let listener = self.shared.listener();
            match (&listener.state, &listener.requests) {
                (State::Listening, Some(requests)) => (listener.session, requests.clone()),
                _ => return false,
            }
        };
        if interest
            .announced
            .as_ref()
            .is_some_and(|announced| announced.session == session)
        {
            return live;
        }
        // An announcement of an earlier session ended with its connection.
        interest.announced = None;
        let (Some(watch), Some(unwatch)) = (
            notices.sql.watch(&interest.name),
            notices.sql.unwatch(&interest.name),
        ) else {
            return live;
        };
        let (reply, replied) = oneshot::channel();
        let request = ListenerRequest {
            statement: watch,
            reply: Some(reply),
            undo: Some((unwatch.clone(), requests.clone())),
        };
        if requests.send(request).is_err() {
            return false;
        }
        // Not announced in time (or a release held the key: see `waiters_key`): the
        // waiter naps as one that hears nothing, and asks again after. A `watch` that
        // runs after all is withdrawn by its undo.
        let announced = matches!(
            tokio::time::timeout(ECHO_WITHIN, replied).await,
            Ok(Ok(Ok(rows))) if is_done(&rows)
        );
        if announced {
            interest.announced = Some(Announced {
                session,
                requests,
                unwatch,
            });
        }
        announced && live
    }

    /// Whether this waiter, woken by a release notice of lock `name`, may ask the
    /// database for the lock's turn: one waiter of this process at a time does, until it
    /// drops the [`Turn`]; the others would only lose it to that one.
    pub(crate) fn take_turn(&self, name: &str) -> Option<Turn> {
        self.shared.turns().insert(name.into()).then(|| Turn {
            name: name.into(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// Runs one listening session in the background: the adapter's `listen` alongside a
    /// watchdog that ends the session (dropping the adapter's future, which closes its
    /// connection) when the listener turns out deaf. Either way, when the session ends
    /// the hub is idle again and waiters are told to resync.
    fn start_listening(
        &self,
        notices: &NoticeChannel,
        session: u64,
        requested: mpsc::UnboundedReceiver<ListenerRequest>,
    ) {
        let shared = Arc::clone(&self.shared);
        let mut alive = self.alive.subscribe();
        let queries = Arc::clone(&self.queries);
        let channel = Arc::clone(&notices.channel);
        let heartbeat = notices.heartbeat.clone();
        let (over, over_seen) = watch::channel(());
        let notices = ReleaseNotices {
            shared: Arc::clone(&shared),
            session,
            alive: alive.clone(),
            over: over_seen,
            requested: tokio::sync::Mutex::new(requested),
        };
        // Moved into the task, so that it ends the session however the task ends: also
        // when it is dropped with its runtime, even before it first ran.
        let end = SessionEnd {
            shared: Arc::clone(&shared),
            session,
            _over: over,
        };
        tokio::spawn(async move {
            let _end = end;
            let failure = tokio::select! {
                ended = listen(&*queries, &channel, notices) => ended.err(),
                deaf = watch_over(&shared, &*queries, &heartbeat, session) => Some(deaf),
                () = until_closed(&mut alive) => None,
            };
            if let Some(failure) = failure {
                shared.warn_once_if_never_heard(session, &failure);
            }
        });
    }
}

impl Shared {
    fn listener(&self) -> MutexGuard<'_, Listener> {
        self.listener
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of `session`, or `None` once another session has replaced it.
    fn state_of(&self, session: u64) -> Option<State> {
        let listener = self.listener();
        (listener.session == session).then_some(listener.state)
    }

    /// Logs, once per hub, that releases by other processes are not heard and waiters
    /// poll, when `session` ends having never heard anything: the setup is wrong (LISTEN
    /// through a pooler in transaction mode, a listening URL that does not connect), not
    /// a connection that was lost and will be replaced.
    fn warn_once_if_never_heard(&self, session: u64, failure: &str) {
        let mut listener = self.listener();
        if listener.session != session || listener.last_heard.is_some() || listener.warned {
            return;
        }
        listener.warned = true;
        drop(listener);
        crate::telemetry::not_listening(failure);
    }

    fn turns(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        self.turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When `session` last heard anything.
    fn last_heard(&self, session: u64) -> Option<Instant> {
        let listener = self.listener();
        listener.last_heard.filter(|_| listener.session == session)
    }
}

/// The watchdog of one listening session. Returns when the listener must be given up —
/// it did not `LISTEN` in time, or it did not hear a heartbeat in time — saying which.
async fn watch_over(
    shared: &Shared,
    queries: &dyn QueryInterface,
    heartbeat: &Statement,
    session: u64,
) -> String {
    let listen_by = Instant::now() + LISTEN_WITHIN;
    loop {
        match shared.state_of(session) {
            Some(State::Listening) => break,
            Some(State::Starting) => {}
            _ => return "the listening session was replaced".to_owned(),
        }
        if tokio::time::timeout_at(listen_by, shared.changed.notified())
            .await
            .is_err()
        {
            return format!("the listening connection did not LISTEN within {LISTEN_WITHIN:?}");
        }
    }
    loop {
        let heard = shared.last_heard(session);
        // A new listener is checked at once; a heard one after a quiet period.
        let quiet = QUIET.mul_f64(1.0 + 0.5 * crate::random::fraction());
        let ask_at = heard.map_or_else(Instant::now, |heard| heard + quiet);
        tokio::time::sleep_until(ask_at).await;
        if shared.last_heard(session) != heard {
            continue;
        }
        if shared.released.receiver_count() == 0 {
            // Nobody waits, so nobody needs the check: send nothing until someone does.
            shared.changed.notified().await;
            continue;
        }
        let asked_at = Instant::now();
        let echo_by = asked_at + ECHO_WITHIN;
        // Whether sending failed does not matter: what is not heard back is not heard.
        let _ = tokio::time::timeout_at(echo_by, queries.execute(heartbeat)).await;
        // Anything heard since the heartbeat was sent proves the listener alive.
        while shared
            .last_heard(session)
            .is_none_or(|heard| heard < asked_at)
        {
            if tokio::time::timeout_at(echo_by, shared.changed.notified())
                .await
                .is_err()
            {
                tracing::debug!(
                    "the listening connection did not hear its heartbeat within {ECHO_WITHIN:?}; \
                     closing it, waiters poll until a new one is heard"
                );
                return format!(
                    "the listening connection did not hear its own notification within \
                     {ECHO_WITHIN:?}"
                );
            }
        }
    }
}

/// The adapter's listening session; only started where the adapter has a listener.
/// Returns how it failed, if it did.
async fn listen(
    queries: &dyn QueryInterface,
    channel: &str,
    notices: ReleaseNotices,
) -> Result<(), String> {
    match queries.listener() {
        Some(listener) => listener
            .listen(channel, notices)
            .await
            .map_err(|error| format!("the listening connection failed: {error}")),
        None => Ok(()),
    }
}

/// Completes when the sender of `receiver` is dropped.
async fn until_closed(receiver: &mut watch::Receiver<()>) {
    while receiver.changed().await.is_ok() {}
}

/// Ends a listening session when dropped: the hub goes idle (after a pause if the
/// session was never heard) and, if the session had been listening, waiters resync.
struct SessionEnd {
    shared: Arc<Shared>,
    session: u64,
    /// Dropped with this, which completes the session's [`ReleaseNotices::closed`].
    _over: watch::Sender<()>,
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        let mut listener = self.shared.listener();
        if listener.session != self.session {
            return;
        }
        let was_listening = listener.state == State::Listening;
        if listener.last_heard.is_some() {
            listener.failures = 0;
            listener.not_before = None;
        } else {
            listener.failures = listener.failures.saturating_add(1);
            let doublings = listener.failures.saturating_sub(1).min(16);
            let pause = RELISTEN_PAUSE
                .saturating_mul(1 << doublings)
                .min(RELISTEN_PAUSE_MAX);
            listener.not_before = Some(Instant::now() + pause);
        }
        listener.state = State::Idle;
        listener.last_heard = None;
        listener.requests = None;
        drop(listener);
        if was_listening {
            // NoticeChannel may have been missed; waiters napping on the listener's word look.
            let _ = self.shared.released.send(RESYNC.into());
        }
    }
}

impl fmt::Debug for ReleaseBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseBroadcast")
            .field("channel", &self.notices.as_ref().map(|n| &n.channel))
            .field("listener", &*self.shared.listener())
            .finish_non_exhaustive()
    }
}

/// Handed to [`Listen::listen`](crate::adapter::Listen::listen): the adapter calls
/// [`listening`](Self::listening) once its `LISTEN` is in place, reports each
/// notification's payload with [`notify`](Self::notify), runs each statement of
/// [`request`](Self::request) on the listening connection, and stops when
/// [`closed`](Self::closed) completes (the core may also simply drop the `listen`
/// future, which must close the connection).
pub struct ReleaseNotices {
    shared: Arc<Shared>,
    session: u64,
    alive: watch::Receiver<()>,
    over: watch::Receiver<()>,
    requested: tokio::sync::Mutex<mpsc::UnboundedReceiver<ListenerRequest>>,
}

impl ReleaseNotices {
    /// Reports that `LISTEN` is in place. Waiters are told to look once (releases before
    /// this went unheard), and rely on notifications once one has been heard.
    pub fn listening(&self) {
        let mut listener = self.shared.listener();
        if listener.session != self.session || listener.state != State::Starting {
            return;
        }
        listener.state = State::Listening;
        drop(listener);
        let _ = self.shared.released.send(RESYNC.into());
        self.shared.changed.notify_one();
    }

    /// Reports a notification: `payload` is the name of the released lock, or empty for
    /// a heartbeat. Either proves the listener alive.
    pub fn notify(&self, payload: &str) {
        if payload != RESYNC {
            let _ = self.shared.released.send(payload.into());
        }
        let mut listener = self.shared.listener();
        if listener.session == self.session {
            listener.last_heard = Some(Instant::now());
        }
        drop(listener);
        self.shared.changed.notify_one();
    }

    /// The next statement to run on the listening connection, once it listens: waiters
    /// announcing that this process waits for a lock, or withdrawing that (session-level
    /// advisory locks, which is why they must run on the listening session and nowhere
    /// else). Pending while there is none. Run it, between notifications, and hand its
    /// result to [`ListenerRequest::reply`].
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: a request is taken only when this returns it.
    pub async fn request(&self) -> ListenerRequest {
        match self.requested.lock().await.recv().await {
            Some(request) => request,
            // The hub keeps a sender while this session is current; after, nothing comes.
            None => std::future::pending().await,
        }
    }

    /// Completes when the notifications are not needed any more (no lock of this process
    /// uses them) or this listener was given up (it did not hear its heartbeat); the
    /// listening connection should then be closed.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only watches.
    pub async fn closed(&self) {
        let (mut alive, mut over) = (self.alive.clone(), self.over.clone());
        tokio::select! {
            () = until_closed(&mut alive) => {}
            () = until_closed(&mut over) => {}
        }
    }
}

/// A statement for the listening connection, from [`ReleaseNotices::request`].
#[derive(Debug)]
pub struct ListenerRequest {
    statement: Statement,
    reply: Option<oneshot::Sender<Result<Vec<Row>, QueryError>>>,
    /// What withdraws the statement's effect if nobody is left to hear that it succeeded
    /// (the waiter stopped waiting for the answer), and where to send it.
    undo: Option<(Statement, mpsc::UnboundedSender<ListenerRequest>)>,
}

impl ListenerRequest {
    /// The statement to run, with [`QueryInterface::query`]'s contract: its rows decoded
    /// per [`Statement::columns`].
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Hands the statement's rows, or its error, back to the core.
    pub fn reply(self, result: Result<Vec<Row>, QueryError>) {
        let Some(reply) = self.reply else {
            return;
        };
        if let Err(Ok(rows)) = reply.send(result) {
            if let Some((undo, requests)) = self.undo.filter(|_| is_done(&rows)) {
                let _ = requests.send(ListenerRequest {
                    statement: undo,
                    reply: None,
                    undo: None,
                });
            }
        }
    }
}

/// Whether `watch` or `unwatch` answered that it did its part.
fn is_done(rows: &[Row]) -> bool {
    matches!(rows, [row] if matches!(row.as_slice(), [Value::Int(1)]))
}

/// A waiter's interest in the releases of one lock by other processes: announced on the
/// listening connection by [`ReleaseBroadcast::hears`], withdrawn when dropped.
#[derive(Debug)]
pub(crate) struct Interest {
    name: Arc<str>,
    announced: Option<Announced>,
}

/// Where an [`Interest`] was announced, and how to withdraw it there.
#[derive(Debug)]
struct Announced {
    session: u64,
    requests: mpsc::UnboundedSender<ListenerRequest>,
    unwatch: Statement,
}

impl Drop for Interest {
    fn drop(&mut self) {
        // Not awaited: the waiter is done. If the session has ended, the send fails, and
        // the announcement has already ended with the session's connection.
        if let Some(announced) = self.announced.take() {
            let _ = announced.requests.send(ListenerRequest {
                statement: announced.unwatch,
                reply: None,
                undo: None,
            });
        }
    }
}

/// This process's turn to ask for a lock's turn after a release notice, from
/// [`ReleaseBroadcast::take_turn`]; given back when dropped.
pub(crate) struct Turn {
    name: Arc<str>,
    shared: Arc<Shared>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.shared.turns().remove(&self.name);
    }
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn").field("name", &self.name).finish()
    }
}

impl fmt::Debug for ReleaseNotices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseNotices")
            .field("session", &self.session)
            .field("current", &(self.shared.listener().session == self.session))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tokio::time::sleep;

    use super::*;
    use crate::Dialect;
    use crate::adapter::{Listen, Value, async_trait};
    use crate::adapter::{QueryError, QueryErrorKind, Row};

    /// A database that only carries notifications: what is sent with `pg_notify` comes
    /// back to its listener while it `echoes`.
    #[derive(Debug)]
    struct Channel {
        source: String,
        echoes: AtomicBool,
        notifications: broadcast::Sender<String>,
        /// Makes the listener's connection fail.
        cut: Notify,
        heartbeats: AtomicUsize,
        listens: AtomicUsize,
        /// Listening connections open now.
        open: Arc<AtomicUsize>,
    }

    /// Counts an open listening connection until dropped.
    struct Open(Arc<AtomicUsize>);

    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[async_trait]
    impl QueryInterface for Channel {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
            assert!(statement.sql.contains("pg_notify"), "{statement:?}");
            if statement.params.get(1) == Some(&Value::Text(String::new())) {
                self.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            if self.echoes.load(Ordering::Relaxed) {
                if let Some(Value::Text(payload)) = statement.params.get(1) {
                    let _ = self.notifications.send(payload.clone());
                }
            }
            Ok(1)
        }

        async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
            panic!("a hub only notifies: {statement:?}")
        }

        fn listener(&self) -> Option<&dyn Listen> {
            Some(self)
        }
    }

    #[async_trait]
    impl Listen for Channel {
        fn source(&self) -> String {
            self.source.clone()
        }

        async fn listen(&self, _channel: &str, wake: ReleaseNotices) -> Result<(), QueryError> {
            self.listens.fetch_add(1, Ordering::Relaxed);
            self.open.fetch_add(1, Ordering::Relaxed);
            let _open = Open(Arc::clone(&self.open));
            let mut notifications = self.notifications.subscribe();
            wake.listening();
            loop {
                tokio::select! {
                    Ok(payload) = notifications.recv() => wake.notify(&payload),
                    () = wake.closed() => return Ok(()),
                    () = self.cut.notified() => {
                        return Err(QueryError::new(QueryErrorKind::Statement, None, "cut"));
                    }
                }
            }
        }
    }

    impl Channel {
        fn heartbeats(&self) -> usize {
            self.heartbeats.load(Ordering::Relaxed)
        }

        fn listens(&self) -> usize {
            self.listens.load(Ordering::Relaxed)
        }

        fn open(&self) -> usize {
            self.open.load(Ordering::Relaxed)
        }
    }

    fn hub(echoes: bool) -> (Arc<Channel>, Arc<ReleaseBroadcast>) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let channel = Arc::new(Channel {
            source: format!("channel {}", NEXT.fetch_add(1, Ordering::Relaxed)),
            echoes: AtomicBool::new(echoes),
            notifications: broadcast::channel(16).0,
            cut: Notify::new(),
            heartbeats: AtomicUsize::new(0),
            listens: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
        });
        let queries: Arc<dyn QueryInterface> = channel.clone();
        let table = TableName::parse("locks").unwrap();
        let sql = Dialect::Postgres.sql(&table);
        let hub = ReleaseBroadcast::for_table(&queries, &table, &sql);
        (channel, hub)
    }

    /// Lets every task that can make progress run, without moving the clock.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    /// The notices a waiter has received so far.
    fn received(waiter: &mut broadcast::Receiver<Arc<str>>) -> Vec<String> {
        std::iter::from_fn(|| waiter.try_recv().ok())
            .map(|notice| notice.to_string())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_is_trusted_once_its_heartbeat_comes_back() {
        let (db, hub) = hub(true);
        let mut waiter = hub.subscribe();

        assert!(!hub.ensure_listening(), "trusted before it listens");
        settle().await;

        assert!(hub.ensure_listening(), "not trusted once heard");
        assert_eq!(db.heartbeats(), 1);
        // The LISTEN makes waiters look once; the heartbeat's echo is no release.
        assert_eq!(received(&mut waiter), [RESYNC]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deaf_listener_is_never_trusted_closed_and_retried_ever_more_rarely() {
        let (db, hub) = hub(false);
        let mut waiter = hub.subscribe();

        assert!(!hub.ensure_listening());
        settle().await;
        assert!(!hub.ensure_listening(), "trusted unheard");
        assert_eq!(db.open(), 1);
        sleep(ECHO_WITHIN + ms(1)).await;

        assert_eq!(db.open(), 0, "the deaf listener was not closed");
        // Once when it listened, once when it was given up.
        assert_eq!(received(&mut waiter), [RESYNC, RESYNC]);
        assert!(!hub.ensure_listening());
        settle().await;
        assert_eq!(db.listens(), 1, "listened again without a pause");
        sleep(RELISTEN_PAUSE).await;
        assert!(!hub.ensure_listening());
        settle().await;
        assert_eq!(db.listens(), 2, "did not listen again after the pause");
        // Given up again, and then left alone twice as long.
        sleep(ECHO_WITHIN + RELISTEN_PAUSE * 2 - ms(1)).await;
        assert!(!hub.ensure_listening());
        settle().await;
        assert_eq!(db.listens(), 2, "the pause did not double");
    }

    /// Counts the `dlock.not_listening` events of this thread while alive.
    fn count_not_listening() -> (Arc<AtomicUsize>, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> Layer<S> for Count {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                if event.metadata().name() == "dlock.not_listening" {
                    self.0.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Count(Arc::clone(&count)));
        (count, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_never_heard_is_warned_about_once_and_a_heard_one_never() {
        let (warnings, _guard) = count_not_listening();
        let (deaf, deaf_hub) = hub(false);
        let _deaf_waiter = deaf_hub.subscribe();
        for _ in 0..3 {
            assert!(!deaf_hub.ensure_listening());
            settle().await;
            sleep(RELISTEN_PAUSE_MAX).await;
        }
        assert_eq!(deaf.listens(), 3);
        assert_eq!(warnings.load(Ordering::Relaxed), 1, "deaf three times");

        let (warnings, _guard) = count_not_listening();
        let (db, hub) = hub(true);
        let _waiter = hub.subscribe();
        assert!(!hub.ensure_listening());
        settle().await;
        assert!(hub.ensure_listening());
        db.cut.notify_one();
        settle().await;
        assert_eq!(db.listens(), 1);
        assert_eq!(
            warnings.load(Ordering::Relaxed),
            0,
            "a heard listener was lost"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_heard_listener_stays_trusted_and_is_given_up_within_the_bound_once_deaf() {
        let (db, hub) = hub(true);
        let mut waiter = hub.subscribe();
        assert!(!hub.ensure_listening());
        settle().await;

        for second in 0..60 {
            assert!(hub.ensure_listening(), "doubted after {second} s");
            sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(db.listens(), 1);
        let heartbeats = db.heartbeats();
        assert!(
            (20..=31).contains(&heartbeats),
            "{heartbeats} heartbeats in 60 s; one per 2–3 s of silence expected"
        );
        assert_eq!(received(&mut waiter), [RESYNC], "heartbeats were passed on");

        db.echoes.store(false, Ordering::Relaxed);
        let deaf_since = Instant::now();
        let resync = tokio::time::timeout(TRUSTED_FOR * 2, waiter.recv()).await;

        assert_eq!(resync.unwrap().unwrap().as_ref(), RESYNC);
        assert!(
            deaf_since.elapsed() <= TRUSTED_FOR,
            "found deaf after {:?}",
            deaf_since.elapsed()
        );
        assert!(!hub.ensure_listening());
        assert_eq!(db.open(), 0);
        settle().await;
        assert_eq!(
            db.listens(),
            2,
            "a listener that was heard is replaced at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_while_nobody_waits_and_silence_is_not_trusted() {
        let (db, hub) = hub(true);
        let waiter = hub.subscribe();
        assert!(!hub.ensure_listening());
        settle().await;
        assert!(hub.ensure_listening());
        drop(waiter);

        sleep(Duration::from_secs(600)).await;
        assert_eq!(db.heartbeats(), 1, "heartbeats while nobody waits");

        let _waiter = hub.subscribe();
        assert!(!hub.ensure_listening(), "trusted after ten silent minutes");
        settle().await;
        assert!(hub.ensure_listening());
        assert_eq!((db.heartbeats(), db.listens()), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_listener_is_replaced_at_once_and_waiters_look() {
        let (db, hub) = hub(true);
        let mut waiter = hub.subscribe();
        assert!(!hub.ensure_listening());
        settle().await;
        assert!(hub.ensure_listening());

        db.cut.notify_one();
        settle().await;

        assert_eq!(received(&mut waiter), [RESYNC, RESYNC]);
        assert!(!hub.ensure_listening());
        settle().await;
        assert!(hub.ensure_listening());
        assert_eq!(db.listens(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_is_closed_with_the_hub() {
        let (db, hub) = hub(true);
        let _waiter = hub.subscribe();
        assert!(!hub.ensure_listening());
        settle().await;
        assert_eq!(db.open(), 1);

        drop(hub);
        settle().await;

        assert_eq!(db.open(), 0);
    }

    #[test]
    fn a_session_dropped_with_its_runtime_before_it_ran_does_not_block_the_next() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let (db, hub) = hub(true);
        let _waiter = hub.subscribe();
        // The listening task is spawned, and dropped with the runtime before it runs.
        runtime().block_on(async { assert!(!hub.ensure_listening()) });
        assert_eq!(db.listens(), 0);

        runtime().block_on(async {
            sleep(RELISTEN_PAUSE).await;
            assert!(!hub.ensure_listening());
            settle().await;
            assert!(hub.ensure_listening(), "never listened again");
        });
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}
