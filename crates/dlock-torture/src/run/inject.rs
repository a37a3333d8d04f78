//! The faults, one function each: how each is aimed and injected, and what the
//! coordinator checks right after it.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::Value;
use dlock_core::{Dialect, LockInfo};
use dlock_testkit::failover::Replication;
use dlock_testkit::proxy::{ConnectionFault, Proxy};
use tokio::time::Instant;

use super::{Coordinator, epoch_us, micros, patiently};
use crate::faults::FaultKind;
use crate::worker_main;
use crate::worker_process::{Hold, WorkerState};

/// When a short stop resumes its holder: this percentage of the TTL after the renewal it
/// follows ran, between the holder's local deadline (90 %, counted from the renewal's
/// send, which came first) and the lease's end by the database's clock (100 %), leaving
/// the resumed worker time to send its exit write before the lease ends.
const SHORT_STOP_RESUME_PERCENT: i64 = 93;

/// How late, in TTLs after the statement, the reply to a delayed acquire arrives, in
/// turn: past the lease's end, when another worker may have taken the lock over (on
/// MySQL/MariaDB the token is then read after the delay, and finds the takeover), and
/// past the holder's deadline (0.9 TTL) but within the lease, when the lock is still the
/// acquirer's by the database.
const DELAYED_REPLIES: [f64; 2] = [1.25, 0.95];

impl Coordinator {
    /// Injects one fault of `kind`; returns whether it was injected.
    pub(super) async fn inject(&mut self, kind: FaultKind) -> Result<bool, String> {
        match kind {
            FaultKind::Kill => self.kill().await,
            FaultKind::Stop => self.stop().await,
            FaultKind::Terminate => self.terminate().await,
            FaultKind::Unreachable => self.unreachable().await,
            FaultKind::ShortStop => self.short_stop().await,
            FaultKind::DelayedAcquire => self.delayed_acquire().await,
            FaultKind::HungRenewal => self.hung_renewal().await,
            FaultKind::Restart => self.restart().await,
            FaultKind::Failover => self.failover().await,
        }
    }

    /// `kill`: a holder at work killed with SIGKILL, and a new worker in its place.
    async fn kill(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let Some((position, _)) = self.working_worker(ttl * 2).await else {
            return Ok(false);
        };
        let at_us = self.db_now_us();
        let victim = self.workers.remove(position);
        let state = Arc::clone(&victim.state);
        victim.kill().await?;
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .killed_at = Some(Instant::now());
        let hold = held_when_signalled(&state).await;
        self.departed.push(state);
        self.record(FaultKind::Kill, at_us, hold);
        self.start_worker().await?;
        Ok(true)
    }

    /// `stop`: a holder at work frozen with SIGSTOP for 1.5 TTL, past its lease, then
    /// resumed; it must notice its loss at once and have its late write refused.
    async fn stop(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let Some((position, _)) = self.working_worker(ttl * 2).await else {
            return Ok(false);
        };
        let at_us = self.db_now_us();
        let worker = &self.workers[position];
        worker.signal("STOP").await?;
        let hold = held_when_signalled(&worker.state).await;
        let working = worker.state().working;
        tokio::time::sleep(ttl.mul_f64(1.5)).await;
        worker.signal("CONT").await?;
        if let Some(hold) = &hold {
            self.check_resumed(position, hold, working, "SIGSTOP").await;
        }
        self.record(FaultKind::Stop, at_us, hold);
        Ok(true)
    }

    /// `terminate`: the database connections of some workers terminated by the server.
    async fn terminate(&mut self) -> Result<bool, String> {
        let at_us = self.db_now_us();
        let terminated = self.terminate_connections().await?;
        if terminated == 0 {
            return Ok(false);
        }
        self.record(FaultKind::Terminate, at_us, None);
        Ok(true)
    }

    /// `unreachable`: the database unreachable (the proxy frozen, then cut) for 2.5 TTL,
    /// while holders are at work; each must report its loss within about a TTL.
    async fn unreachable(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        // Only a partition that catches holders at work tests their loss signal.
        if self.working_worker(ttl * 2).await.is_none() {
            return Ok(false);
        }
        let holds = self.working_holds();
        let at_us = self.db_now_us();
        let frozen = Instant::now();
        let proxy = self.proxy()?;
        proxy.freeze();
        tokio::time::sleep(ttl.mul_f64(2.5)).await;
        // Frozen connections stay dead, as after a real partition.
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.open();
        self.record(FaultKind::Unreachable, at_us, None);
        // Loss fires at 90 % of the TTL after the last renewal was sent: before
        // the TTL from the partition, with room for a loaded machine.
        let limit = ttl + Duration::from_secs(1);
        for (position, hold) in holds {
            let Some(worker) = self.workers.get(position) else {
                continue;
            };
            let noticed = worker.state().lost_at(&hold).map(|at| at - frozen);
            if noticed.is_none_or(|after| after > limit) {
                self.problems.push(format!(
                    "worker {} holding {hold:?} did not report the loss within {limit:?} of the partition (reported after {noticed:?})",
                    worker.index
                ));
            }
        }
        Ok(true)
    }

    /// `restart`: the PostgreSQL server restarted by the user's command; holders whose
    /// server is back before their lease ends keep their locks.
    async fn restart(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let command = self
            .args
            .restart_command
            .clone()
            .ok_or("BUG: restart without a command")?;
        let holds = self.working_holds();
        let at_us = self.db_now_us();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .status()
            .await
            .map_err(|error| format!("cannot run {command:?}: {error}"))?;
        if !status.success() {
            return Err(format!("{command:?} failed: {status}"));
        }
        self.record(FaultKind::Restart, at_us, None);
        // Held locks survive a restart if the server is back before their lease
        // runs out: their holders renew and never report a loss.
        tokio::time::sleep(ttl).await;
        let kept = holds
            .iter()
            .filter(|(position, hold)| {
                self.workers
                    .get(*position)
                    .is_some_and(|worker| worker.state().lost_at(hold).is_none())
            })
            .count();
        self.restart_holds.0 += holds.len();
        self.restart_holds.1 += kept;
        Ok(true)
    }

    /// `failover`: the primary killed and the standby promoted while the workers take
    /// locks; a new standby is then made, for the next failover (and, synchronous, for
    /// the new primary to commit at all). Asynchronous, the standby stops receiving first,
    /// and a worker is caught at work under an acquisition made after that, which the new
    /// primary never hears of: it must report the loss, and fencing refuse its exit write.
    /// What all the workers saw across the failover is checked at the end
    /// (`check_failovers`).
    async fn failover(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let asynchronous = self.args.failover() == Some(Replication::Asynchronous);
        let mut lost = None;
        if asynchronous {
            self.rig()?.hold_replication().await?;
            let work = ttl * 2;
            lost = self
                .long_section(work)
                .await?
                .map(|(position, hold, _)| (position, hold, work));
        }
        let crashed = Instant::now();
        self.rig()?.crash().await?;
        let promoted = Instant::now();
        let at_us = self.db_now_us();
        self.rig()?.rebuild().await?;
        self.failovers.push((crashed, promoted));
        let target = lost.as_ref().map(|(_, hold, _)| hold.clone());
        self.record(FaultKind::Failover, at_us, target);
        if let Some((position, hold, work)) = lost {
            self.check_lost_in_failover(position, &hold, crashed + work)
                .await;
        }
        Ok(true)
    }

    /// A worker at work under an acquisition the new primary never received: by the end of
    /// its work (and two seconds more) it has reported the loss and its exit write was
    /// refused.
    async fn check_lost_in_failover(&mut self, position: usize, hold: &Hold, work_ends: Instant) {
        let Some(worker) = self.workers.get(position) else {
            return;
        };
        let limit = work_ends + Duration::from_secs(2);
        let done =
            |state: &WorkerState| state.lost_at(hold).is_some() && state.refused.contains(hold);
        while !done(&worker.state()) && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let state = worker.state();
        if !done(&state) {
            self.problems.push(format!(
                "worker {} at work under {hold:?}, an acquisition lost in a failover, did not report the loss (reported: {}) and have its exit write refused (refused: {}) by the end of its work",
                worker.index,
                state.lost_at(hold).is_some(),
                state.refused.contains(hold)
            ));
        }
    }

    /// The failover rig the run is on.
    fn rig(&self) -> Result<&dlock_testkit::failover::FailoverRig, String> {
        self.database
            .rig
            .as_ref()
            .ok_or_else(|| "BUG: a failover without the rig".to_owned())
    }

    /// After a worker frozen past its local deadline was resumed: its timers are all past
    /// due, so it must notice the loss of `hold` at once, and, stopped at work, go on to
    /// write its exit, which fencing must refuse.
    async fn check_resumed(&mut self, position: usize, hold: &Hold, working: bool, what: &str) {
        let resumed = Instant::now();
        let Some(worker) = self.workers.get(position) else {
            return;
        };
        let limit = Duration::from_secs(2);
        let done = |state: &WorkerState| {
            state.lost_at(hold).is_some() && (!working || state.refused.contains(hold))
        };
        while !done(&worker.state()) && resumed.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let state = worker.state();
        if state.lost_at(hold).is_none() {
            self.problems.push(format!(
                "worker {} resumed after {what} did not report the loss of {hold:?} within {limit:?}",
                worker.index
            ));
        }
        if working && !state.refused.contains(hold) {
            self.problems.push(format!(
                "worker {} resumed after {what} at work under {hold:?}: its late write was not refused within {limit:?}",
                worker.index
            ));
        }
    }

    /// The proxy between the workers and the database.
    fn proxy(&self) -> Result<&Proxy, String> {
        self.database
            .proxy
            .as_ref()
            .ok_or_else(|| "BUG: no proxy for a networked database".to_owned())
    }

    /// Asks a random worker for a section whose work lasts `work`, and waits (until
    /// faults must stop) for it to be at that work; then returns its position, the lock
    /// it holds and its owner id.
    async fn long_section(
        &mut self,
        work: Duration,
    ) -> Result<Option<(usize, Hold, String)>, String> {
        let position = fastrand::usize(..self.workers.len());
        self.workers[position].ask_for_long_section(work).await?;
        let worker = &self.workers[position];
        while Instant::now() < self.inject_until {
            {
                let state = worker.state();
                if let (true, Some(hold), Some(owner)) =
                    (state.working_long, &state.holding, &state.owner)
                {
                    return Ok(Some((position, hold.clone(), owner.clone())));
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(None)
    }

    /// The lock row of `name`, if it can be read.
    async fn lock_row(&self, name: &str) -> Option<LockInfo> {
        let read = tokio::time::timeout(Duration::from_secs(2), self.locks.inspect(name));
        read.await.ok()?.ok()
    }

    /// Watches the lock row of `hold` (polling every few milliseconds) until its holder
    /// renews it, and returns when that renewal ran (database clock, microseconds): its
    /// new expiry less the TTL. `None` if the holder lets go first or no renewal comes
    /// within a TTL.
    async fn renewal_of(&self, position: usize, hold: &Hold, owner: &str) -> Option<i64> {
        let ttl_us = micros(self.args.ttl());
        let watching = Instant::now();
        while watching.elapsed() < self.args.ttl() {
            let row = self.lock_row(&hold.0).await?;
            if row.fencing_token.get() != hold.1 || row.owner_id.as_deref() != Some(owner) {
                return None;
            }
            let (Some(acquired), Some(expires)) = (row.acquired_at, row.expires_at) else {
                return None;
            };
            let ran_us = epoch_us(expires) - ttl_us;
            // The acquire set the first expiry a TTL after it ran; a renewal runs at
            // least a renew interval (a third of the TTL) later.
            if ran_us > epoch_us(acquired) + ttl_us / 10 {
                return Some(ran_us);
            }
            if !self.workers.get(position)?.state().working_long {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        None
    }

    /// `short-stop`: freezes a holder just after one of its renewals and resumes it
    /// between its local deadline (0.9 TTL after the renewal was sent, which is before it
    /// ran) and the end of its lease by the database's clock (a TTL after it ran).
    ///
    /// Aimed from the lock row: the holder is asked for a section longer than a renew
    /// interval, its row is read every few milliseconds until its expiry moves (the
    /// renewal ran at the new expiry less the TTL), and the SIGCONT is sent at that
    /// instant plus [`SHORT_STOP_RESUME_PERCENT`] % of the TTL, by the database's clock.
    async fn short_stop(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let ttl_us = micros(ttl);
        // Longer than a renew interval (a third of the TTL), with room to stop the
        // worker at work after its renewal; shorter than the stop, so that its exit
        // comes right after it is resumed.
        let Some((position, hold, owner)) = self.long_section(ttl.mul_f64(0.6)).await? else {
            return Ok(false);
        };
        let Some(renewed_us) = self.renewal_of(position, &hold, &owner).await else {
            return Ok(false);
        };
        let resume_us = renewed_us + ttl_us * SHORT_STOP_RESUME_PERCENT / 100;
        // Seen too late to land between the deadline and the lease's end: try again.
        if resume_us - self.db_now_us() < ttl_us * 80 / 100 {
            return Ok(false);
        }
        let worker = &self.workers[position];
        let at_us = self.db_now_us();
        worker.signal("STOP").await?;
        let stopped = held_when_signalled(&worker.state).await;
        let working = worker.state().working;
        let wait_us = u64::try_from(resume_us - self.db_now_us()).unwrap_or(0);
        tokio::time::sleep(Duration::from_micros(wait_us)).await;
        worker.signal("CONT").await?;
        let resumed_us = self.db_now_us();
        if resumed_us < renewed_us + ttl_us {
            self.short_stops_in_window += 1;
        }
        if self.args.verbose {
            eprintln!(
                "dlock-torture: short-stop of {hold:?}: renewed at {renewed_us} us, stopped {} ms \
                 after, resumed {} ms after (lease end {} ms after)",
                (at_us - renewed_us) / 1000,
                (resumed_us - renewed_us) / 1000,
                ttl_us / 1000
            );
        }
        if stopped.as_ref() == Some(&hold) {
            self.check_resumed(
                position,
                &hold,
                working,
                "a short SIGSTOP past its deadline",
            )
            .await;
        }
        self.record(FaultKind::ShortStop, at_us, stopped);
        Ok(true)
    }

    /// `delayed-acquire`: the next acquire statement of a random worker that takes a
    /// lock commits at once, but its reply reaches the worker [`DELAYED_REPLIES`] TTLs
    /// later, after its deadline. Aimed with the holder label, which only the acquire
    /// statement carries (an attempt that took nothing has its reply let go at once, and
    /// the next is tried). The worker must not be handed that lock.
    async fn delayed_acquire(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let injected = self
            .faults
            .iter()
            .filter(|fault| fault.kind == FaultKind::DelayedAcquire)
            .count();
        let delay = ttl.mul_f64(DELAYED_REPLIES[injected % DELAYED_REPLIES.len()]);
        let position = fastrand::usize(..self.workers.len());
        let index = i64::try_from(self.workers[position].index).unwrap_or(i64::MAX);
        let label = format!("{} (", worker_main::holder_label(index));
        let (armed, at_us, struck, hold) = loop {
            if Instant::now() >= self.inject_until {
                return Ok(false);
            }
            let mut armed = self
                .proxy()?
                .arm(label.as_bytes(), ConnectionFault::HoldReplies);
            match tokio::time::timeout_at(self.inject_until, armed.struck()).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Ok(false),
            }
            let at_us = self.db_now_us();
            let struck = Instant::now();
            // The statement runs at once; its row says whether it took the lock.
            tokio::time::sleep(Duration::from_millis(30)).await;
            if let Some(hold) = self.acquisition_by(&label, at_us).await {
                break (armed, at_us, struck, hold);
            }
            armed.lift();
        };
        tokio::time::sleep_until(struck + delay).await;
        armed.lift();
        let lifted = Instant::now();
        self.record(FaultKind::DelayedAcquire, at_us, Some(hold.clone()));
        let Some(worker) = self.workers.get(position) else {
            return Ok(true);
        };
        // The reply comes in at once now; a worker handed the lock says HOLD.
        let limit = Duration::from_secs(1);
        while !worker.state().held.contains(&hold) && lifted.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if worker.state().held.contains(&hold) {
            self.problems.push(format!(
                "worker {} was handed the lock {hold:?} although the reply to its acquire came {delay:?} after the statement, past its deadline (TTL {ttl:?})",
                worker.index
            ));
        }
        Ok(true)
    }

    /// The lock a holder labelled `label` took at or after `since_us` (database clock),
    /// and still holds by the lock table.
    async fn acquisition_by(&self, label: &str, since_us: i64) -> Option<Hold> {
        for name in &self.names {
            let Some(row) = self.lock_row(name).await else {
                continue;
            };
            let recent = row
                .acquired_at
                .is_some_and(|acquired| epoch_us(acquired) + 5_000 >= since_us);
            let by_label = row
                .holder
                .as_deref()
                .is_some_and(|holder| holder.starts_with(label));
            if recent && by_label && row.owner_id.is_some() {
                return Some((name.clone(), row.fencing_token.get()));
            }
        }
        None
    }

    /// `hung-renewal`: a holder at work through a section longer than its lease; the
    /// pooled connection its next renewal is sent on goes silent (half-open at the
    /// proxy: the renewal never reaches the database, nothing comes back, nothing is
    /// closed) until the section ends, while the database answers its other connections.
    /// Aimed with the holder's owner id, which its renewals carry and, while it works, no
    /// other statement of it does. It must keep its lock and write its exit.
    async fn hung_renewal(&mut self) -> Result<bool, String> {
        let ttl = self.args.ttl();
        let Some((position, hold, owner)) = self.long_section(ttl.mul_f64(1.6)).await? else {
            return Ok(false);
        };
        let mut armed = self.proxy()?.arm(owner.as_bytes(), ConnectionFault::Stall);
        // The first renewal is due a third of the TTL after the acquire.
        match tokio::time::timeout(ttl, armed.struck()).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Ok(false),
        }
        let at_us = self.db_now_us();
        let struck = Instant::now();
        let worker = &self.workers[position];
        while worker.state().holding.as_ref() == Some(&hold) && struck.elapsed() < ttl * 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        armed.lift();
        self.record(FaultKind::HungRenewal, at_us, Some(hold.clone()));
        let worker = &self.workers[position];
        let state = worker.state();
        let mut broken = Vec::new();
        if let Some(lost) = state.lost_at(&hold) {
            broken.push(format!(
                "reported its loss {:?} after the renewal hung",
                lost.saturating_duration_since(struck)
            ));
        }
        if state.refused.contains(&hold) {
            broken.push("had its exit write refused".to_owned());
        }
        if !broken.is_empty() {
            let message = format!(
                "worker {} holding {hold:?} lost it when only the connection of its renewal went silent (the database answered its other connections): {}",
                worker.index,
                broken.join("; ")
            );
            drop(state);
            self.problems.push(message);
        }
        Ok(true)
    }

    /// Terminates the connections of some workers; returns how many.
    async fn terminate_connections(&self) -> Result<usize, String> {
        let Some(statement) = self.sql.terminate_some(&self.database.session) else {
            return Ok(0);
        };
        let admin = &self.database.admin;
        let rows = patiently(|| async {
            admin
                .query(&statement)
                .await
                .map_err(|error| format!("cannot terminate connections: {error}"))
        })
        .await?;
        let values = rows.iter().filter_map(|row| match row.first() {
            Some(Value::Int(value)) => Some(*value),
            _ => None,
        });
        if self.args.dialect != Dialect::Mysql {
            return Ok(values.sum::<i64>().try_into().unwrap_or(0));
        }
        let ids: Vec<i64> = values.collect();
        let chosen = &ids[..ids.len().div_ceil(2)];
        for id in chosen {
            let kill = format!("KILL CONNECTION {id}");
            let kill = dlock_testkit::statement(Dialect::Mysql, &kill, Vec::new(), &[]);
            // A connection may have closed meanwhile ("unknown thread id").
            let _ = admin.execute(&kill).await;
        }
        Ok(chosen.len())
    }
}

/// The lock a worker held when a signal stopped or killed it. It was chosen while at
/// work, but may have finished its section before the signal landed; what it printed
/// before then may still be in the pipe, so this first lets the reader catch up.
async fn held_when_signalled(state: &std::sync::Mutex<WorkerState>) -> Option<Hold> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .holding
        .clone()
}
