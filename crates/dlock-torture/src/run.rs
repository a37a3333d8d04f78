//! The coordinator: prepares the database, starts the workers, injects the faults on a
//! schedule, stops the workers, checks the ledger and reports.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlock_core::adapter::{QueryInterface, Statement, Value};
use dlock_core::{Dialect, LockAdmin, LockInfo, TableName};
use dlock_testkit::proxy::{ConnectionFault, Proxy};
use dlock_testkit::{PoolOptions, TestDatabase, dialect_key, statement, wall_ns};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::Args;
use crate::check::{Verdict, check};
use crate::faults::{Fault, FaultKind};
use crate::ledger::{self, LedgerSql};
use crate::worker_main;
use crate::worker_process::{Hold, Launch, WorkerProcess, WorkerState};

/// The MySQL/MariaDB database of the suite's workers: terminating "the workers'
/// connections" means the connections to this database, and nobody else's.
const MYSQL_DATABASE: &str = "dlock_torture";

/// Why a run failed.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The database could not be reached to begin with.
    Unreachable(String),
    /// Anything else.
    Failed(String),
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// What a run found.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) verdict: Verdict,
    pub(crate) faults: Vec<(Fault, Option<i64>)>,
    /// Fenced writes refused to holders whose lease was gone.
    pub(crate) refused: u64,
    /// Losses the workers reported.
    pub(crate) losses: usize,
    /// Operations that failed in the workers (faults cause them by design).
    pub(crate) worker_errors: u64,
    /// Holders working when the server restarted, and how many of them kept their lock.
    pub(crate) restart_holds: (usize, usize),
    /// Short stops whose holder was resumed before its lease ended by the database's
    /// clock (the others came too late to test the window they aim at).
    pub(crate) short_stops_in_window: usize,
    /// Broken promises other than the checker's: hangs, losses not reported, slow or no
    /// recovery.
    pub(crate) problems: Vec<String>,
}

impl Report {
    pub(crate) fn max_recovery_ms(&self) -> i64 {
        self.faults
            .iter()
            .filter_map(|(_, recovery)| *recovery)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn passed(&self) -> bool {
        self.verdict.is_clean() && self.problems.is_empty() && self.verdict.sections > 0
    }

    pub(crate) fn print(&self) {
        for &kind in <FaultKind as clap::ValueEnum>::value_variants() {
            let recoveries: Vec<_> = self.faults.iter().filter(|(f, _)| f.kind == kind).collect();
            if recoveries.is_empty() {
                continue;
            }
            let max = recoveries.iter().filter_map(|(_, r)| *r).max().unwrap_or(0);
            let aim = match kind {
                FaultKind::ShortStop => {
                    format!(" resumed_before_expiry={}", self.short_stops_in_window)
                }
                _ => String::new(),
            };
            println!(
                "fault {kind}: injected={} max_recovery_ms={max}{aim}",
                recoveries.len()
            );
        }
        let (held, kept) = self.restart_holds;
        println!(
            "refused_late_attempts={} losses_noticed={} worker_errors={} restart_holds_kept={kept}/{held} problems={}",
            self.refused,
            self.losses,
            self.worker_errors,
            self.problems.len()
        );
        println!(
            "max_recovery_ms: the longest, over all faults, of: kill, stop, short-stop: from \
             the signal until the holder's name was entered by a later holder; \
             delayed-acquire: from the acquire until its name was entered by a later holder; \
             terminate: from the termination until the next section entered; unreachable, \
             restart, hung-renewal: from the end of the fault until the next section entered \
             (database clock)"
        );
        for detail in self.verdict.details.iter().take(20) {
            println!("violation: {detail}");
        }
        for problem in &self.problems {
            println!("problem: {problem}");
        }
        println!(
            "sections={} faults={} overlaps={} fencing_violations={} late_writes={} max_recovery_ms={}",
            self.verdict.sections,
            self.faults.len(),
            self.verdict.overlaps,
            self.verdict.fencing_violations,
            self.verdict.late_writes,
            self.max_recovery_ms()
        );
    }
}

/// The database of a run, as the workers and the coordinator reach it.
struct Database {
    /// Where the workers connect (through the proxy, for networked databases).
    worker_url: String,
    /// The coordinator's own pool, straight to the database.
    admin: Arc<dyn QueryInterface>,
    /// What selects this run's worker connections (PostgreSQL `application_name`,
    /// MySQL database).
    session: String,
    proxy: Option<Proxy>,
    /// Kept to the end of the run: a SQLite file made for it is then removed.
    _database: TestDatabase,
}

/// `url` with `key=value` added to its query.
fn with_param(url: &str, key: &str, value: &str) -> Result<String, String> {
    let mut url = url::Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    url.query_pairs_mut().append_pair(key, value);
    Ok(url.into())
}

/// `url` with its database (path) replaced by `database`.
fn with_database(url: &str, database: &str) -> Result<String, String> {
    let mut url = url::Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    url.set_path(&format!("/{database}"));
    Ok(url.into())
}

async fn admin_pool(args: &Args, url: &str) -> Result<Arc<dyn QueryInterface>, RunError> {
    let connect = args.adapter().pool(args.dialect, url, PoolOptions::new(1));
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((_, queries))) => Ok(queries),
        Ok(Err(error)) => Err(RunError::Unreachable(error)),
        Err(_) => Err(RunError::Unreachable(format!(
            "connecting to {url} took over 10 s"
        ))),
    }
}

async fn admin_execute(
    admin: &Arc<dyn QueryInterface>,
    statement: &Statement,
) -> Result<(), RunError> {
    match tokio::time::timeout(Duration::from_secs(10), admin.execute(statement)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(RunError::Unreachable(format!("{}: {error}", statement.sql))),
        Err(_) => Err(RunError::Unreachable(format!(
            "{} took over 10 s",
            statement.sql
        ))),
    }
}

async fn prepare(args: &Args, run: &str, sql: LedgerSql) -> Result<Database, RunError> {
    let database = TestDatabase::given(args.dialect, args.url.clone(), "dlock-torture")?;
    let url = database.url().to_owned();
    let (worker_url, admin_url, session) = match args.dialect {
        Dialect::Postgres => {
            let session = format!("dlock_torture_{run}");
            (
                with_param(&url, "application_name", &session)?,
                url,
                session,
            )
        }
        Dialect::Mysql => {
            let server = admin_pool(args, &url).await?;
            let create = format!("CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE}");
            let create = statement(args.dialect, &create, Vec::new(), &[]);
            admin_execute(&server, &create).await?;
            let own = with_database(&url, MYSQL_DATABASE)?;
            (own.clone(), own, MYSQL_DATABASE.to_owned())
        }
        _ => (url.clone(), url, String::new()),
    };
    let admin = admin_pool(args, &admin_url).await?;
    for statement in sql.create_tables() {
        admin_execute(&admin, &statement).await?;
    }
    let proxy = match args.dialect {
        Dialect::Sqlite => None,
        _ => Some(Proxy::start(&worker_url).await?),
    };
    Ok(Database {
        worker_url: proxy
            .as_ref()
            .map_or(worker_url, |proxy| proxy.url().to_owned()),
        admin,
        session,
        proxy,
        _database: database,
    })
}

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

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// A database time as microseconds since the epoch.
fn epoch_us(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, micros)
}

/// Wall-clock microseconds since the epoch.
fn wall_us() -> i64 {
    i64::try_from(wall_ns() / 1000).unwrap_or(i64::MAX)
}

/// The run in progress.
struct Coordinator {
    args: Args,
    sql: LedgerSql,
    database: Database,
    launch: Launch,
    workers: Vec<WorkerProcess>,
    /// Workers gone (killed), whose reports still count.
    departed: Vec<Arc<std::sync::Mutex<WorkerState>>>,
    next_index: usize,
    /// The database's clock minus the local wall clock, in microseconds, so that fault
    /// times are on the ledger's clock even while the database is down.
    clock_offset_us: i64,
    faults: Vec<Fault>,
    problems: Vec<String>,
    restart_holds: (usize, usize),
    /// The lock table, read to aim faults at renewals and acquisitions.
    locks: LockAdmin,
    /// The run's lock names.
    names: Vec<String>,
    /// After this no fault may begin: a fault that waits for its target gives up then.
    inject_until: Instant,
    /// Short stops resumed before their holder's lease ended by the database's clock.
    short_stops_in_window: usize,
}

impl Coordinator {
    fn db_now_us(&self) -> i64 {
        wall_us() + self.clock_offset_us
    }

    async fn start_worker(&mut self) -> Result<(), String> {
        let worker = WorkerProcess::start(&self.launch, self.next_index).await?;
        self.next_index += 1;
        self.workers.push(worker);
        Ok(())
    }

    /// A worker in the middle of a section's work, and the lock it holds; waits up to
    /// `limit` for one.
    async fn working_worker(&self, limit: Duration) -> Option<(usize, Hold)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let start = fastrand::usize(..self.workers.len());
            for offset in 0..self.workers.len() {
                let position = (start + offset) % self.workers.len();
                let state = self.workers[position].state();
                if let (true, Some(hold)) = (state.working, &state.holding) {
                    return Some((position, hold.clone()));
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Every worker in the middle of a section's work, with the lock it holds.
    fn working_holds(&self) -> Vec<(usize, Hold)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(position, worker)| {
                let state = worker.state();
                state
                    .working
                    .then(|| state.holding.clone())
                    .flatten()
                    .map(|hold| (position, hold))
            })
            .collect()
    }

    fn record(&mut self, kind: FaultKind, at_us: i64, target: Option<Hold>) {
        let ended_us = self.db_now_us();
        self.faults.push(Fault {
            kind,
            at_us,
            ended_us,
            target,
        });
    }

    /// Injects one fault of `kind`; returns whether it was injected.
    async fn inject(&mut self, kind: FaultKind) -> Result<bool, String> {
        match kind {
            FaultKind::Kill => self.kill().await,
            FaultKind::Stop => self.stop().await,
            FaultKind::Terminate => self.terminate().await,
            FaultKind::Unreachable => self.unreachable().await,
            FaultKind::ShortStop => self.short_stop().await,
            FaultKind::DelayedAcquire => self.delayed_acquire().await,
            FaultKind::HungRenewal => self.hung_renewal().await,
            FaultKind::Restart => self.restart().await,
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

/// Runs the suite as `args` say.
pub(crate) async fn run(args: Args) -> Result<Report, RunError> {
    let run = format!("{}-{}", wall_us() / 1_000_000, std::process::id());
    let sql = LedgerSql::new(args.dialect);
    let database = prepare(&args, &run, sql).await?;
    let names: Vec<String> = (0..args.names())
        .map(|i| format!("torture/{run}/{i}"))
        .collect();
    let before = wall_us();
    let db_now = ledger::db_now_us(&database.admin, sql).await?;
    let clock_offset_us = db_now - (before + wall_us()) / 2;
    let launch = Launch {
        env: [
            (worker_main::ADAPTER, args.adapter().name().to_owned()),
            (worker_main::DIALECT, dialect_key(args.dialect).to_owned()),
            (worker_main::URL, database.worker_url.clone()),
            (worker_main::RUN, run.clone()),
            (worker_main::NAMES, names.join(",")),
            (worker_main::TTL_MS, args.ttl().as_millis().to_string()),
        ]
        .into_iter()
        .chain(args.verbose.then(|| (worker_main::VERBOSE, "1".to_owned())))
        .collect(),
    };
    let table = TableName::parse(ledger::LOCK_TABLE).map_err(|error| error.to_string())?;
    let locks = LockAdmin::with_table(Arc::clone(&database.admin), table);
    let mut coordinator = Coordinator {
        args: args.clone(),
        sql,
        database,
        launch,
        workers: Vec::new(),
        departed: Vec::new(),
        next_index: 0,
        clock_offset_us,
        faults: Vec::new(),
        problems: Vec::new(),
        restart_holds: (0, 0),
        locks,
        names: names.clone(),
        inject_until: Instant::now() + args.duration(),
        short_stops_in_window: 0,
    };
    let result = coordinator.drive(&names).await;
    let report = coordinator.conclude(result, &run).await;
    for statement in sql.forget_run(&run) {
        let _ = coordinator.database.admin.execute(&statement).await;
    }
    report
}

impl Coordinator {
    /// Starts the workers and injects faults until the run's time is up.
    async fn drive(&mut self, names: &[String]) -> Result<(), String> {
        let started = Instant::now();
        for _ in 0..self.args.workers() {
            self.start_worker().await?;
        }
        let ttl = self.args.ttl();
        // The last fault must have time to end and be recovered from before the workers
        // stop: the longest lasts 2.5 TTL, and recovery about one more.
        let quiet = ttl * 4 + Duration::from_secs(2);
        let deadline = started + self.args.duration();
        self.inject_until = deadline.checked_sub(quiet).unwrap_or(started);
        let kinds = self.args.faults();
        let mut next = 0;
        eprintln!(
            "dlock-torture: {} workers on {} names for {:?}, faults: {}",
            self.args.workers(),
            names.len(),
            self.args.duration(),
            kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        loop {
            tokio::time::sleep(self.args.fault_gap()).await;
            if Instant::now() + quiet > deadline {
                break;
            }
            let kind = kinds[next % kinds.len()];
            if self.inject(kind).await? {
                next += 1;
                eprintln!(
                    "dlock-torture: {:>4} s: {kind} (fault {})",
                    started.elapsed().as_secs(),
                    self.faults.len()
                );
            }
        }
        tokio::time::sleep_until(deadline).await;
        Ok(())
    }

    /// Stops the workers, reads and checks the ledger.
    async fn conclude(
        &mut self,
        driven: Result<(), String>,
        run: &str,
    ) -> Result<Report, RunError> {
        let mut states = std::mem::take(&mut self.departed);
        // A worker finishes its section first: a lock to wait for (up to 3 TTLs), two
        // writes and a release (up to a TTL each).
        let limit = self.args.ttl() * 6 + Duration::from_secs(5);
        let stopping: Vec<_> = self
            .workers
            .drain(..)
            .map(|worker| worker.stop(limit))
            .collect();
        for stopped in JoinSet::from_iter(stopping).join_all().await {
            match stopped {
                Ok(state) => states.push(state),
                Err(problem) => self.problems.push(problem),
            }
        }
        driven?;
        let (sections, losses) =
            patiently(|| ledger::read(&self.database.admin, self.sql, run)).await?;
        let verdict = check(&sections, &losses);
        let faults: Vec<_> = self
            .faults
            .iter()
            .map(|fault| (fault.clone(), fault.recovery_ms(&sections)))
            .collect();
        let ttl_ms = i64::try_from(self.args.ttl().as_millis()).unwrap_or(i64::MAX);
        for (fault, recovery) in &faults {
            match (fault.kind, recovery) {
                (_, None) => self.problems.push(format!(
                    "no recovery from the {} fault at {} us before the run ended",
                    fault.kind, fault.at_us
                )),
                // The name must be free within the lease; the waiters then need a poll.
                (FaultKind::Kill, Some(ms)) if *ms > ttl_ms + 1000 => self.problems.push(format!(
                    "the name of a killed holder ({:?}) was taken again only after {ms} ms (TTL {ttl_ms} ms)",
                    fault.target
                )),
                (FaultKind::DelayedAcquire, Some(ms)) if *ms > ttl_ms + 1000 => {
                    self.problems.push(format!(
                        "the name taken by an acquire whose reply was delayed ({:?}) was taken again only after {ms} ms (TTL {ttl_ms} ms)",
                        fault.target
                    ));
                }
                _ => {}
            }
        }
        let (mut refused, mut worker_errors) = (0, 0);
        for state in &states {
            let state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            refused += u64::try_from(state.refused.len()).unwrap_or(u64::MAX);
            self.problems.extend(
                state
                    .hangs
                    .iter()
                    .map(|hang| format!("a worker said {hang}")),
            );
            if let Some((count, last)) = &state.errors {
                worker_errors += count;
                if self.args.verbose && *count > 0 {
                    eprintln!("dlock-torture: a worker had {count} errors, the last: {last}");
                }
            }
        }
        Ok(Report {
            verdict,
            faults,
            refused,
            losses: losses.len(),
            worker_errors,
            restart_holds: self.restart_holds,
            short_stops_in_window: self.short_stops_in_window,
            problems: std::mem::take(&mut self.problems),
        })
    }
}

/// Tries `attempt` up to five times, half a second apart: the coordinator's connection
/// may have been closed by a restart of the server a moment before.
async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut last_error = String::new();
    for _ in 0..5 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => last_error = error,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_their_own_database_and_parameters() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "dlock_torture").unwrap(),
            "mysql://root@127.0.0.1:3306/dlock_torture"
        );
        assert_eq!(
            with_database("mysql://root@h:1?ssl-mode=disabled", "x").unwrap(),
            "mysql://root@h:1/x?ssl-mode=disabled"
        );
        assert_eq!(
            with_param("postgres://p@h:1/test", "application_name", "a").unwrap(),
            "postgres://p@h:1/test?application_name=a"
        );
        assert_eq!(
            with_param("x://h/d?a=1", "b", "2").unwrap(),
            "x://h/d?a=1&b=2"
        );
    }
}
