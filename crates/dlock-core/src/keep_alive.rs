//! The task that keeps one acquisition alive: it renews the lease, publishes where the
//! lease stands, and releases the lock when the guard asks or drops.
//!
//! The loss deadline is measured on the local clock ([`clock::now`], which counts a
//! suspended host) from the moment the last successful acquire or renewal was *sent*: the
//! database's expiry is at least a TTL after that moment, so the deadline, at 90 % of the
//! TTL, passes before anyone else can get in.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::clock;
use crate::guard::ReleaseReply;
use crate::inner::{LockInner, Released, Renewal, within};
use crate::lease::{Acquisition, Status, Taken, lease_end};
use crate::telemetry;
use crate::{Lease, LossReason, Result};

/// The keep-alive task's state: the lease it publishes to, and its deadline.
pub(crate) struct KeepAlive {
    lease: Lease,
    status: watch::Sender<Status>,
    safe_until: Instant,
    /// The send time and database clock (epoch ms) of the last renewal that reported it.
    last_clock_reading: Option<(Instant, i64)>,
}

/// What woke the keep-alive task.
enum Event {
    /// The guard asked for a release (with a reply channel) or was dropped (`None`).
    Release(Option<ReleaseReply>),
    /// The deadline's timer fired.
    Deadline,
    /// A renewal sent at this instant answered.
    Renewal(Instant, Result<Renewal>),
}

impl KeepAlive {
    /// Spawns the task for an acquisition whose deadline has not passed, and returns the
    /// lease it keeps. The task releases when `release` delivers a request or is dropped.
    pub(crate) fn spawn(
        lock: Arc<LockInner>,
        acquisition: Acquisition,
        taken: Taken,
        release: oneshot::Receiver<ReleaseReply>,
    ) -> Lease {
        let safe_until = acquisition.safe_until(&lock.options);
        let (status, status_rx) = watch::channel(Status::Held {
            safe_until,
            last_error: None,
        });
        let lease = Lease::new(lock, acquisition, taken, status_rx);
        let task = Self {
            lease: lease.clone(),
            status,
            safe_until,
            last_clock_reading: None,
        };
        tokio::spawn(task.run(release));
        lease
    }

    fn lock(&self) -> &LockInner {
        self.lease.lock()
    }

    /// Renews until the guard asks for a release or drops (then releases), or until the
    /// lock is lost (then still releases once asked, and reports the loss).
    async fn run(mut self, mut release: oneshot::Receiver<ReleaseReply>) {
        let renew_interval = self.lock().options.renew_interval;
        let mut next_renewal = self.lease.acquisition().sent_at + renew_interval;
        let reason = loop {
            let event = tokio::select! {
                biased;
                request = &mut release => Event::Release(request.ok()),
                () = clock::sleep_until(self.safe_until) => Event::Deadline,
                (sent_at, renewed) = self.renew_at(next_renewal) => Event::Renewal(sent_at, renewed),
            };
            match event {
                Event::Release(reply) => return self.release(reply).await,
                // The timer wakes late after a suspend, never early; the clock decides.
                Event::Deadline if clock::now() < self.safe_until => {}
                Event::Deadline => break self.renewal_failed(),
                Event::Renewal(sent_at, Ok(Renewal::Renewed { database_ms })) => {
                    if !self.extend(sent_at, database_ms) {
                        break self.renewal_failed();
                    }
                    next_renewal = sent_at + renew_interval;
                }
                Event::Renewal(_, Ok(Renewal::NotOurs)) => break LossReason::TakenOver,
                Event::Renewal(_, Err(error)) => next_renewal = self.renewal_error(&error),
            }
        };
        self.lose(reason.clone());
        // Still release once asked: the row may be ours yet (the database was unreachable,
        // not taken over), and the release is owner-checked, so it cannot free another's lock.
        let request = release.await.ok();
        let _ = self.release_row().await;
        if let Some(reply) = request {
            let _ = reply.send(Err(self.lease.lost_error(reason)));
        }
    }

    /// One renewal attempt at `at`, bounded so that one hung on a dead connection is
    /// abandoned and retried (on another checkout) before the deadline.
    async fn renew_at(&self, at: Instant) -> (Instant, Result<Renewal>) {
        let lock = self.lock();
        clock::sleep_until(at).await;
        let sent_at = clock::now();
        let bound = lock.options.renew_attempt_bound();
        let owner = &self.lease.acquisition().owner;
        let renewed = within("renew the lease", bound, lock.renew(owner)).await;
        (sent_at, renewed)
    }

    /// Reports a failed renewal, keeps its error for the loss reason, and says when to try
    /// again.
    fn renewal_error(&self, error: &crate::Error) -> Instant {
        let retry_in = self.lock().options.renew_retry_delay();
        let token = self.lease.fencing_token();
        telemetry::renewal_failed(self.lock(), token, error, retry_in, self.safe_until);
        self.status.send_if_modified(|status| {
            if let Status::Held { last_error, .. } = status {
                *last_error = Some(error.to_string());
            }
            // Nobody waits on the error alone.
            false
        });
        clock::now() + retry_in
    }

    /// Moves the deadline after a renewal sent at `sent_at` succeeded; `false` if the old
    /// deadline had passed by now (a lease seen lost stays lost).
    ///
    /// `database_ms` is the database's clock when it renewed, where the dialect reports it:
    /// if the database's clock ran ahead of ours since the last renewal (an NTP step, a
    /// failover to a host whose clock is ahead), the lease it grants ends earlier by our
    /// clock, so the deadline is pulled in by as much.
    fn extend(&mut self, sent_at: Instant, database_ms: Option<i64>) -> bool {
        let mut safe_until = sent_at + self.lock().options.safe_for();
        if let Some(database_ms) = database_ms {
            let ahead = self.database_ahead_by(sent_at, database_ms);
            if !ahead.is_zero() {
                let token = self.lease.fencing_token();
                telemetry::database_clock_ahead(self.lock(), token, ahead);
                safe_until = safe_until.checked_sub(ahead).unwrap_or(sent_at);
            }
        }
        let old_safe_until = self.safe_until;
        let extended = self.status.send_if_modified(|status| {
            if clock::now() >= old_safe_until {
                return false;
            }
            *status = Status::Held {
                safe_until,
                last_error: None,
            };
            true
        });
        if extended {
            self.safe_until = safe_until;
            telemetry::renewed(self.lock(), self.lease.fencing_token());
        }
        extended
    }

    /// How much further the database's clock moved than ours since the last renewal that
    /// reported it (both readings lie between that renewal's send and this answer); and
    /// records this reading, sent at `sent_at`.
    fn database_ahead_by(&mut self, sent_at: Instant, database_ms: i64) -> Duration {
        let last = self.last_clock_reading.replace((sent_at, database_ms));
        let Some((last_sent_at, last_database_ms)) = last else {
            return Duration::ZERO;
        };
        let local = clock::now().saturating_duration_since(last_sent_at);
        let database = u64::try_from(database_ms - last_database_ms).unwrap_or(0);
        Duration::from_millis(database).saturating_sub(local)
    }

    /// The loss when no renewal succeeded in time, with the last renewal error.
    fn renewal_failed(&self) -> LossReason {
        let last_error = match &*self.status.borrow() {
            Status::Held { last_error, .. } => last_error.clone(),
            Status::Ended(_) => None,
        };
        LossReason::RenewalFailed { last_error }
    }

    fn lose(&self, reason: LossReason) {
        let token = self.lease.fencing_token();
        let sent_at = self.lease.acquisition().sent_at;
        telemetry::lost(self.lock(), token, &reason, sent_at);
        self.status.send_replace(Status::Ended(reason));
    }

    /// Releases at the guard's request (`reply` is `None` when the guard was dropped),
    /// unless the lock was lost first, and reports.
    async fn release(self, reply: Option<ReleaseReply>) {
        let result = if clock::now() >= self.safe_until {
            let reason = self.renewal_failed();
            self.lose(reason.clone());
            let _ = self.release_row().await;
            Err(self.lease.lost_error(reason))
        } else {
            let released = self.release_row().await;
            self.report(released)
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    /// Publishes how a release asked for in time went, and says it to the guard.
    fn report(&self, released: Result<Released>) -> Result<()> {
        let (lock, token) = (self.lock(), self.lease.fencing_token());
        let lease_start = self.lease.acquisition().sent_at;
        match released {
            Ok(Released::Now) => telemetry::released(lock, token, lease_start),
            // A retry found the row freed: by an earlier attempt whose answer was lost
            // (most likely), or by a takeover nobody can tell apart from it now.
            Ok(Released::Earlier) => telemetry::released_earlier(lock, token, lease_start),
            Ok(Released::NotOurs) => {
                // Someone else changed the row while we held it.
                self.lose(LossReason::TakenOver);
                return Err(self.lease.lost_error(LossReason::TakenOver));
            }
            Err(ref error) => telemetry::release_failed(lock, token, error, lease_start),
        }
        self.status
            .send_replace(Status::Ended(LossReason::Released));
        released.map(drop)
    }

    async fn release_row(&self) -> Result<Released> {
        let acquisition = self.lease.acquisition();
        self.lock().release(acquisition, self.safe_until).await
    }
}

impl Drop for KeepAlive {
    /// Dropped while the lease was still held: its runtime shut down (or the task
    /// panicked) before anything released it. Nothing will; say so.
    fn drop(&mut self) {
        if matches!(&*self.status.borrow(), Status::Held { .. }) {
            let lock = self.lock();
            let left =
                lease_end(self.safe_until, &lock.options).saturating_duration_since(clock::now());
            telemetry::abandoned(lock, self.lease.fencing_token(), left);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::adapter::Listen;
    use crate::adapter::{QueryError, QueryInterface, Row, Statement, Value};
    use crate::{Dialect, DistributedLock, adapter::async_trait};

    /// A database on which every acquire succeeds with token 1 and every statement
    /// affects one row.
    #[derive(Debug)]
    struct Agreeable;

    #[async_trait]
    impl QueryInterface for Agreeable {
        fn dialect(&self) -> Dialect {
            Dialect::Postgres
        }

        async fn execute(&self, _: &Statement) -> Result<u64, QueryError> {
            Ok(1)
        }

        async fn query(&self, _: &Statement) -> Result<Vec<Row>, QueryError> {
            Ok(vec![vec![Value::Int(1)]])
        }

        fn listener(&self) -> Option<&dyn Listen> {
            None
        }
    }

    /// Review finding S5: the monotonic clock stops while the host is suspended, but the
    /// database's lease runs on. After a resume the lease must be lost at once, without
    /// waiting for a timer on the stopped clock.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_longer_than_the_lease_loses_it_at_once() {
        let lock = DistributedLock::builder("suspended", Agreeable)
            .ttl(Duration::from_secs(3))
            .build()
            .unwrap();
        let guard = lock.acquire().await.unwrap();
        assert!(guard.is_held());

        crate::clock::tests::suspend(Duration::from_secs(6));

        assert_eq!(
            guard.lease().loss_reason(),
            Some(super::LossReason::RenewalFailed { last_error: None })
        );
    }
}
