//! Watching an election's leader: reads only, woken by notices where the database sends
//! them, at the leader's lease end, and by polling.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::election::proclamation_notice;
use crate::inner::LockInner;
use crate::listening::Interest;
use crate::wait::{SAFETY_NET_FACTOR, wait_for_notice};
use crate::{FencingToken, Leader, Result};

/// The leader of an election as it changes: the leader now, then every change — a new
/// term, a new value proclaimed, a resignation or an expiry (`None`). Made by
/// [`Election::observe`](crate::Election::observe); it only reads.
///
/// Read it with [`changed`](Self::changed), or as a [`Stream`] (of
/// `Result<Option<Leader>>`, which never ends). Errors are yielded as they come and
/// observing goes on; the next read follows a poll interval later.
///
/// **How soon it sees a change.** On PostgreSQL, a resignation and a new leader's
/// proclamation send a notice (`NOTIFY`), so observers see them within milliseconds;
/// they still read every ten poll intervals, in case a notice was lost. Elsewhere, or
/// while the notices are not heard, they read every poll interval. Everywhere, they read
/// again just after the leader's lease ends, so a crashed leader is seen gone then.
/// Changes closer together than that may be seen as one: an observer can miss a term
/// that began and ended between two reads, but never sees terms go backwards (a read
/// with a smaller term than one already seen is ignored).
pub struct Observer {
    next: Pin<Box<dyn Future<Output = (Reading, Watch)> + Send>>,
}

/// One reading of the leader.
type Reading = Result<Option<Leader>>;

/// An observer's state between reads.
struct Watch {
    lock: Arc<LockInner>,
    notices: broadcast::Receiver<Arc<str>>,
    /// What the last yielded reading showed; `None` before the first.
    shown: Option<Option<Leader>>,
    /// The largest term seen.
    highest: Option<FencingToken>,
    /// When the leader's lease ends unless renewed, by the last reading.
    lease_end: Option<Instant>,
    /// Whether to read at once rather than wait first.
    read_now: bool,
    /// The observer's announcement to releasers in other processes: a release of the
    /// election's lock is how a resignation is heard.
    interest: Interest,
    /// Whether, at the last read, other processes' releases and proclamations were heard.
    hears_releases: bool,
}

impl Observer {
    pub(crate) fn new(lock: Arc<LockInner>) -> Self {
        let watch = Watch {
            // Subscribed before the first read, so that no change after it goes unseen.
            notices: lock.releases.subscribe(),
            interest: lock.releases.interest(&lock.name),
            hears_releases: false,
            lock,
            shown: None,
            highest: None,
            lease_end: None,
            read_now: true,
        };
        Self {
            next: Box::pin(watch.next_change()),
        }
    }

    /// The leader now, at the first call; then waits for the next change and returns it.
    ///
    /// # Errors
    ///
    /// A failed read: [`Error::NoValueColumn`](crate::Error::NoValueColumn) for a lock
    /// table created before elections, or the database's error. The next call reads
    /// again after a poll interval.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: the observer keeps its place, and the next call picks up the read or
    /// wait in progress.
    pub async fn changed(&mut self) -> Result<Option<Leader>> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Leader>>> {
        let (reading, watch) = std::task::ready!(self.next.as_mut().poll(cx));
        self.next = Box::pin(watch.next_change());
        Poll::Ready(reading)
    }
}

impl Stream for Observer {
    type Item = Result<Option<Leader>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_change(cx).map(Some)
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Watch {
    /// Waits for and reads until the leader differs from the one shown last.
    async fn next_change(mut self) -> (Result<Option<Leader>>, Self) {
        loop {
            if !std::mem::take(&mut self.read_now) {
                self.nap().await;
            }
            self.hears_releases = self.lock.releases.hears(&mut self.interest).await;
            let leader = match self.lock.leader().await {
                Ok(leader) => leader,
                Err(error) => return (Err(error), self),
            };
            self.lease_end = leader
                .as_ref()
                .map(|leader| Instant::now() + leader.lease_ends_in);
            if let Some(leader) = &leader {
                // A read that is older than one already shown (overtaken by it): skip it.
                if self.highest.is_some_and(|highest| leader.term < highest) {
                    continue;
                }
                self.highest = Some(leader.term);
            }
            let changed = match (&self.shown, &leader) {
                (Some(Some(shown)), Some(leader)) => !shown.same_as(leader),
                (Some(None), None) => false,
                _ => true,
            };
            if changed {
                self.shown = Some(leader.clone());
                return (Ok(leader), self);
            }
        }
    }

    /// Waits for a notice about this election, for the poll interval (ten of them while
    /// notices are heard), or until just after the leader's lease ends.
    async fn nap(&mut self) {
        let poll_interval = self.lock.options.poll_interval;
        let mut nap = if self.hears_releases {
            poll_interval * SAFETY_NET_FACTOR
        } else {
            poll_interval
        };
        if let Some(lease_end) = self.lease_end {
            let left = lease_end.saturating_duration_since(Instant::now());
            nap = nap.min(left + Duration::from_millis(5));
        }
        let name = &*self.lock.name;
        let proclaimed = proclamation_notice(name);
        let about_this_election = |notice: &str| notice == name || notice == proclaimed;
        wait_for_notice(&mut self.notices, about_this_election, nap).await;
    }
}
