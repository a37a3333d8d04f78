//! Waking waiters when a lock is released, instead of making them poll.
//!
//! One [`Hub`] per process, database and lock table, shared by every waiter: a broadcast
//! channel of released lock names. Releases in this process feed it directly; on
//! databases that can notify (PostgreSQL's `LISTEN`/`NOTIFY`), one listening connection
//! per hub feeds it the releases of every other process. Waiters still poll, slowly, as a
//! safety net for lost notifications and for leases that expire without a release.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::query::{QueryInterface, Statement};

/// How many release notices a slow waiter may fall behind before it just re-probes.
const BACKLOG: usize = 256;

/// The release notices of one database and lock table, in this process.
pub(crate) struct Hub {
    shared: Arc<Shared>,
    queries: Arc<dyn QueryInterface>,
    channel: Option<Arc<str>>,
}

struct Shared {
    released: broadcast::Sender<Arc<str>>,
    /// Dropped with the hub, which tells the adapter's listening task to stop.
    _alive: watch::Sender<()>,
    /// [`IDLE`], [`STARTING`] or [`LISTENING`]: whether an adapter task listens.
    listening: AtomicU8,
}

const IDLE: u8 = 0;
const STARTING: u8 = 1;
const LISTENING: u8 = 2;

type Registry = Mutex<HashMap<(String, String), Weak<Hub>>>;

impl Hub {
    /// The hub for `table` on the database behind `queries`, shared with every lock of
    /// this process on the same database and table.
    pub(crate) fn for_table(
        queries: &Arc<dyn QueryInterface>,
        table: &str,
        channel: Option<Arc<str>>,
    ) -> Arc<Hub> {
        static HUBS: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        // Interfaces without a notification source share a hub per table: at worst a
        // release on one database wakes a waiter for the same name on another, which
        // then makes one needless acquire attempt.
        let key = (
            queries.notification_source().unwrap_or_default(),
            table.to_owned(),
        );
        let mut hubs = HUBS
            .get_or_init(Registry::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            return hub;
        }
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let (alive, _) = watch::channel(());
        let hub = Arc::new(Hub {
            shared: Arc::new(Shared {
                released: broadcast::channel(BACKLOG).0,
                _alive: alive,
                listening: AtomicU8::new(IDLE),
            }),
            queries: Arc::clone(queries),
            // Listen only where the adapter can.
            channel: channel.filter(|_| queries.notification_source().is_some()),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        hub
    }

    /// Tells waiters that `name` was released: this process's at once, and other
    /// processes' by sending `notice` through `queries` (where the dialect has one), in
    /// the background: not on the release path (see `notify` in the dialect). Returns the
    /// task sending the notice, for a caller that may exit before it would run.
    pub(crate) fn announce_release(
        &self,
        name: &str,
        queries: &Arc<dyn QueryInterface>,
        notice: Option<Statement>,
    ) -> Option<JoinHandle<()>> {
        let _ = self.shared.released.send(name.into());
        // A lost notice costs a waiter one safety-net poll interval, no more.
        notice.map(|notice| {
            let queries = Arc::clone(queries);
            tokio::spawn(async move {
                let _ = queries.execute(&notice).await;
            })
        })
    }

    /// A subscription to release notices; subscribe before probing, so that no release
    /// between the probe and the wait goes unseen.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.shared.released.subscribe()
    }

    /// Whether releases by other processes reach this hub; if the database can notify
    /// and nobody listens yet, starts listening in the background.
    pub(crate) fn hears_other_processes(&self) -> bool {
        let Some(channel) = &self.channel else {
            return false;
        };
        let started = self.shared.listening.compare_exchange(
            IDLE,
            STARTING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if started != Ok(IDLE) {
            return started == Err(LISTENING);
        }
        let wake = Wake {
            shared: Arc::downgrade(&self.shared),
            alive: self.shared._alive.subscribe(),
        };
        let queries = Arc::clone(&self.queries);
        let channel = Arc::clone(channel);
        tokio::spawn(async move {
            // When listening ends or fails, the wake is dropped, which sets the hub back
            // to idle: the next waiter tries again, and waiters meanwhile poll.
            let _ = queries.listen(&channel, wake).await;
        });
        false
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("channel", &self.channel)
            .field(
                "listening",
                &(self.shared.listening.load(Ordering::Relaxed) == LISTENING),
            )
            .finish_non_exhaustive()
    }
}

/// Handed to [`QueryInterface::listen`]: the adapter calls [`Wake::listening`] once its
/// `LISTEN` is in place, reports each notification's payload with [`Wake::notify`], and
/// stops when [`Wake::closed`] completes. Dropping it tells the core that nobody listens
/// any more.
pub struct Wake {
    shared: Weak<Shared>,
    alive: watch::Receiver<()>,
}

impl Wake {
    /// Reports that notifications now arrive: waiters may poll slowly from here on.
    pub fn listening(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.listening.store(LISTENING, Ordering::Release);
        }
    }

    /// Reports a notification: `payload` is the name of the released lock.
    pub fn notify(&self, payload: &str) {
        if let Some(shared) = self.shared.upgrade() {
            let _ = shared.released.send(payload.into());
        }
    }

    /// Completes when no lock of this process needs the notifications any more; the
    /// listening connection should then be closed.
    pub async fn closed(&self) {
        let mut alive = self.alive.clone();
        while alive.changed().await.is_ok() {}
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.listening.store(IDLE, Ordering::Release);
        }
    }
}

impl fmt::Debug for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wake")
            .field("open", &(self.shared.strong_count() > 0))
            .finish()
    }
}
