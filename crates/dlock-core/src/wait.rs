//! Waiting for a held lock: probing without writing, napping until a release notice or
//! the holder's lease end, and attempting only when the lock looks free.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::attempt::{attempt, attempt_in_turn};
use crate::backoff::{Backoff, jittered};
use crate::inner::{Held, LockInner};
use crate::listening::{Interest, RESYNC};
use crate::telemetry::{self, WaitingReports};
use crate::{Error, Holder, LockGuard, Result};

/// Waits until the lock is free and takes it; `last_holder` keeps the holder seen last,
/// for the error of a caller that stops waiting.
pub(crate) async fn wait_and_take(
    lock: &Arc<LockInner>,
    started: Instant,
    last_holder: &mut Option<Holder>,
) -> Result<LockGuard> {
    let mut waiter = Waiter::new(lock, started, last_holder);
    let mut next = waiter.first_step().await;
    loop {
        let taken = match next {
            Step::Attempt => waiter.attempt().await?,
            Step::AttemptInTurn => waiter.attempt_in_turn().await?,
            Step::Probe => Continue(waiter.probe().await?),
            Step::Wait => Continue(waiter.nap().await),
        };
        next = match taken {
            Break(guard) => return Ok(guard),
            Continue(step) => step,
        };
    }
}

/// What a waiting `acquire` does next. Only the attempts may write, and they run only
/// when the lock looks free: at first, after a probe found it free, or on a release
/// notice.
#[derive(Debug, Clone, Copy)]
enum Step {
    Attempt,
    /// On a release notice: attempt if it is this waiter's turn (see `turns_key` in
    /// `dialect/postgres.rs`).
    AttemptInTurn,
    Probe,
    /// Reading only: for a release notice, or until the next probe.
    Wait,
}

/// While other processes' releases are heard, waiters probe this many times less often.
pub(crate) const SAFETY_NET_FACTOR: u32 = 10;

/// How long after the holder's lease ends, by a probe, a waiter looks again.
const LEASE_END_MARGIN: Duration = Duration::from_millis(5);

/// One waiting `acquire` and what it has seen.
struct Waiter<'a> {
    lock: &'a Arc<LockInner>,
    started: Instant,
    releases: broadcast::Receiver<Arc<str>>,
    /// This waiter's announcement to releasers in other processes; a multi-lock's for
    /// its first name.
    interest: Interest,
    /// A multi-lock's announcements for its other names (a release of any of them may
    /// let it in); empty for a lock.
    more_interests: Vec<Interest>,
    /// Whether, at the last probe, other processes' releases of the lock were heard.
    hears_releases: bool,
    backoff: Backoff,
    reports: WaitingReports,
    /// Whether it has had to wait for another holder.
    contended: bool,
    /// When to look at the lock again, whatever wakes the waiter or not: just after the
    /// holder's lease ends, by the last probe (a holder that dies sends no notice), or,
    /// after another process took its turn to attempt, within a poll interval (whoever
    /// holds the lock now was not probed).
    look_by: Option<Instant>,
    /// The fencing token of the acquisition the last probe saw.
    seen_token: Option<i64>,
    last_holder: &'a mut Option<Holder>,
}

impl<'a> Waiter<'a> {
    fn new(
        lock: &'a Arc<LockInner>,
        started: Instant,
        last_holder: &'a mut Option<Holder>,
    ) -> Self {
        Self {
            // Subscribed before the first attempt, so that no release after it goes unseen.
            releases: lock.releases.subscribe(),
            interest: lock.releases.interest(first_name(lock)),
            more_interests: lock
                .set
                .iter()
                .flat_map(|set| set.members.iter().skip(1))
                .map(|name| lock.releases.interest(name))
                .collect(),
            hears_releases: false,
            backoff: Backoff::new(lock.options.poll_interval),
            reports: WaitingReports::default(),
            contended: false,
            look_by: None,
            seen_token: None,
            lock,
            started,
            last_holder,
        }
    }

    /// Attempt at once, unless this lock's last release was contended: then let the
    /// waiters woken by it go first, and look.
    async fn first_step(&self) -> Step {
        match self.lock.first_attempt_at() {
            Some(courtesy_until) => {
                tokio::time::sleep_until(courtesy_until).await;
                Step::Probe
            }
            None => Step::Attempt,
        }
    }

    /// Looks at the lock, after announcing to releasers that this process waits for it
    /// (where they can notify), so that no release after the look goes unheard.
    async fn probe(&mut self) -> Result<Step> {
        let mut hears = self.lock.releases.hears(&mut self.interest).await;
        for interest in &mut self.more_interests {
            hears &= self.lock.releases.hears(interest).await;
        }
        self.hears_releases = hears;
        match self.lock.probe().await {
            Ok(Some(Held { holder, token })) => {
                // The lock changed hands since the last look: it is busy with short
                // holds, and the next release is likely soon. Polling waiters (nobody
                // notifies them) look again soon rather than after a long back-off; a
                // lock held by one holder all along still backs off to the cap.
                if self.seen_token.is_some() && token != self.seen_token {
                    self.backoff = Backoff::new(self.lock.options.poll_interval);
                }
                self.seen_token = token;
                self.reports.holder_seen(&holder, self.started);
                self.look_by = Some(Instant::now() + holder.expires_in + LEASE_END_MARGIN);
                *self.last_holder = Some(holder);
                Ok(Step::Wait)
            }
            Ok(None) => Ok(Step::Attempt),
            Err(error) => self.ride_out(error).await,
        }
    }

    async fn nap(&mut self) -> Step {
        self.contended = true;
        let poll_interval = self.lock.options.poll_interval;
        let mut nap = if self.hears_releases {
            // Notices wake us; probing is only a safety net, so no ramp either.
            jittered(poll_interval * SAFETY_NET_FACTOR)
        } else {
            self.backoff.next(poll_interval)
        };
        if let Some(look_by) = self.look_by {
            nap = nap.min(look_by.saturating_duration_since(Instant::now()));
        }
        let lock = self.lock;
        match wait_for_notice(
            &mut self.releases,
            |notice| lock.is_released_by(notice),
            nap,
        )
        .await
        {
            // Just released: attempt at once, without a probe's round trip; where
            // waiters take turns, only if it is ours.
            Woken::Released if takes_turns(lock) => Step::AttemptInTurn,
            Woken::Released => Step::Attempt,
            Woken::Resync | Woken::Timeout => Step::Probe,
        }
    }

    async fn attempt(&mut self) -> Result<ControlFlow<LockGuard, Step>> {
        let attempted = attempt(self.lock, self.contended, self.started).await;
        self.after_attempt(attempted).await
    }

    /// Attempts if this waiter gets the turn for this release, else waits for the next
    /// notice: the turn's winner takes the lock, and its release wakes this waiter again.
    /// One waiter per process asks; the database gives the turn to one of them.
    async fn attempt_in_turn(&mut self) -> Result<ControlFlow<LockGuard, Step>> {
        let attempted = match self.lock.releases.take_turn(&self.lock.name) {
            Some(_turn) => attempt_in_turn(self.lock, self.started).await,
            None => Ok(None),
        };
        match attempted {
            // Not our turn, or another process got in first: whoever holds the lock now
            // was not probed, so look by ourselves within a poll interval.
            Ok(None) => {
                self.look_by = Some(Instant::now() + jittered(self.lock.options.poll_interval));
                Ok(Continue(Step::Wait))
            }
            attempted => self.after_attempt(attempted).await,
        }
    }

    async fn after_attempt(
        &mut self,
        attempted: Result<Option<LockGuard>>,
    ) -> Result<ControlFlow<LockGuard, Step>> {
        match attempted {
            Ok(Some(guard)) => Ok(Break(guard)),
            // Someone else has it: find out who, and until when.
            Ok(None) => Ok(Continue(Step::Probe)),
            Err(error) => self.ride_out(error).await.map(Continue),
        }
    }

    /// What a waiting `acquire` does after `error`: waits a back-off step and looks again
    /// if the error may pass (the database or the pool is busy, or briefly away), else
    /// returns it. The wait has no other end than the acquire timeout, if one is set.
    async fn ride_out(&mut self, error: Error) -> Result<Step> {
        if !error.is_transient() {
            return Err(error);
        }
        let retry_in = self.backoff.next(self.lock.options.poll_interval);
        telemetry::waiting_error(self.lock, &error, retry_in);
        tokio::time::sleep(retry_in).await;
        Ok(Step::Probe)
    }
}

/// What ended a waiter's nap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// A notice that the lock was released.
    Released,
    /// Notices may have been missed (the listener was found deaf or reconnected, or this
    /// waiter fell behind): look at the lock rather than attempt blindly.
    Resync,
    /// The nap ran out.
    Timeout,
}

/// Waits up to `nap` for a notice that is `wanted` (that a lock was released, for a
/// waiter: its name), or the hub's call to resync ([`RESYNC`], which no lock name can be).
pub(crate) async fn wait_for_notice(
    releases: &mut broadcast::Receiver<Arc<str>>,
    wanted: impl Fn(&str) -> bool,
    nap: Duration,
) -> Woken {
    let deadline = Instant::now() + nap;
    loop {
        match tokio::time::timeout_at(deadline, releases.recv()).await {
            Err(_elapsed) => return Woken::Timeout,
            Ok(Ok(released)) if wanted(&released) => return Woken::Released,
            Ok(Ok(released)) if &*released == RESYNC => return Woken::Resync,
            Ok(Ok(_other_lock)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Woken::Resync,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                tokio::time::sleep_until(deadline).await;
                return Woken::Timeout;
            }
        }
    }
}

/// Whether waiters of `lock` take turns to attempt after a release notice: those of a
/// lock and a reader-writer lock's writers, of whom one at most can get in per release.
/// Not readers, who all get in together, nor multi-locks, whose releases notify every
/// name at once.
fn takes_turns(lock: &LockInner) -> bool {
    lock.set.is_none() && lock.gate.is_none()
}

/// The name a waiter announces its interest in first: the lock's, a multi-lock's first,
/// or, for a reader, the gate that writers hold.
fn first_name(lock: &LockInner) -> &str {
    match (&lock.set, &lock.gate) {
        (Some(set), _) => set.members.first().unwrap_or(&lock.name),
        (None, Some(gate)) => &gate.name,
        (None, None) => &lock.name,
    }
}
