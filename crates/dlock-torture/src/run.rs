//! The coordinator: prepares the database, starts the workers, injects the faults (one
//! function each, in `inject.rs`) on a schedule, stops the workers, checks the ledger and
//! reports.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlock_core::adapter::{QueryInterface, Statement};
use dlock_core::{Dialect, Election, Error, LockAdmin, TableName};
use dlock_testkit::failover::FailoverRig;
use dlock_testkit::proxy::Proxy;
use dlock_testkit::{PoolOptions, TestDatabase, dialect_key, statement, wall_ns};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::Args;
use crate::check::{Verdict, check};
use crate::faults::{Fault, FaultKind};
use crate::ledger::{self, LedgerSql};
use crate::worker_main;
use crate::worker_process::{Hold, Launch, WorkerProcess, WorkerState};

mod inject;

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
    /// `--election`: how many leaders the workers' observers saw.
    pub(crate) observed: Option<usize>,
    /// Broken promises other than the checker's: hangs, losses not reported, slow or no
    /// recovery, an observer that saw a term go backwards.
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
        if let Some(observed) = self.observed {
            println!("election: leaders_observed={observed}");
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
             restart, hung-renewal: from the end of the fault until the next section entered; \
             failover: from the promotion until the next section entered (database clock)"
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
    /// The primary and standby of `--failover`, behind the URL.
    rig: Option<FailoverRig>,
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
    let rig = match args.failover() {
        Some(replication) => Some(FailoverRig::up(replication).await?),
        None => None,
    };
    let url = rig
        .as_ref()
        .map(|rig| rig.url().to_owned())
        .or(args.url.clone());
    let database = TestDatabase::given(args.dialect, url, "dlock-torture")?;
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
        // Runs started side by side (the short test's) create the tables at once, and
        // PostgreSQL fails all but one concurrent `CREATE TABLE IF NOT EXISTS` of a new
        // table (23505 on its type's name); run again, the statement sees the table.
        if admin_execute(&admin, &statement).await.is_err() {
            admin_execute(&admin, &statement).await?;
        }
    }
    if args.election {
        add_value_columns(&admin).await?;
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
        rig,
        _database: database,
    })
}

/// Makes the lock table ready for elections: created, or given the `value` columns if a
/// run from before elections created it (the statements that the error names, run as
/// an administrator would).
async fn add_value_columns(admin: &Arc<dyn QueryInterface>) -> Result<(), RunError> {
    let table = TableName::parse(ledger::LOCK_TABLE).map_err(|error| error.to_string())?;
    LockAdmin::with_table(Arc::clone(admin), table)
        .create_table()
        .await
        .map_err(|error| error.to_string())?;
    let election = Election::builder("torture/schema", Arc::clone(admin))
        .table(ledger::LOCK_TABLE)
        .build()
        .map_err(|error| error.to_string())?;
    match election.leader().await {
        Err(Error::NoValueColumn { sql, .. }) => {
            for alter in sql.split(';').filter(|alter| !alter.trim().is_empty()) {
                admin_execute(admin, &statement(admin.dialect(), alter, Vec::new(), &[])).await?;
            }
            Ok(())
        }
        Err(error) => Err(error.to_string().into()),
        Ok(_) => Ok(()),
    }
}

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
    /// The rows the workers take: the run's lock names, or (`--semaphore`) its permits' rows.
    names: Vec<String>,
    /// After this no fault may begin: a fault that waits for its target gives up then.
    inject_until: Instant,
    /// Short stops resumed before their holder's lease ended by the database's clock.
    short_stops_in_window: usize,
    /// Each failover: when the primary was killed, and when the standby was promoted.
    failovers: Vec<(Instant, Instant)>,
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
        .chain(
            args.election
                .then(|| (worker_main::ELECTION, "1".to_owned())),
        )
        .chain(
            args.semaphore
                .map(|permits| (worker_main::SEMAPHORE, permits.to_string())),
        )
        .chain(args.rw.then(|| (worker_main::RW, "1".to_owned())))
        .collect(),
    };
    let mut table = TableName::parse(ledger::LOCK_TABLE).map_err(|error| error.to_string())?;
    if args.semaphore.is_some() {
        // The permits' rows, which the workers report holding, are in the companion table.
        table = table.companion().map_err(|error| error.to_string())?;
    }
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
        // The rows of what the workers hold: the locks', or each semaphore's permits'.
        names: match args.semaphore {
            None => names.clone(),
            Some(permits) => names
                .iter()
                .flat_map(|name| (1..=permits).map(move |permit| format!("{name}#{permit}")))
                .collect(),
        },
        inject_until: Instant::now() + args.duration(),
        short_stops_in_window: 0,
        failovers: Vec::new(),
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
        let mut verdict = check(&sections, &losses);
        if let Some(permits) = self.args.semaphore {
            let most = crate::check::check_permits(&sections, permits, &mut verdict);
            println!("semaphore: permits={permits} most_at_once={most}");
        }
        check_failovers(&self.failovers, &states, &mut verdict);
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
        let (mut refused, mut worker_errors, mut observed) = (0, 0, 0);
        for state in &states {
            let state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            observed += state.saw.len();
            self.problems.extend(terms_gone_back(&state.saw));
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
            observed: self.args.election.then_some(observed),
            problems: std::mem::take(&mut self.problems),
        })
    }
}

/// Where an observer, seeing `saw` in order, saw a term smaller than one it had seen
/// before on the same election.
fn terms_gone_back(saw: &[Hold]) -> Vec<String> {
    let mut highest: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for (name, term) in saw {
        let seen = highest.entry(name).or_insert(*term);
        if *term < *seen {
            problems.push(format!(
                "an observer of {name} saw term {term} after term {seen}"
            ));
        }
        *seen = (*seen).max(*term);
    }
    problems
}

/// What the workers themselves saw across each failover, which the ledger cannot show: it
/// lives on the database that failed over, and loses what the standby never received.
/// Per name: every token handed out after the promotion exceeds every token handed out
/// before the crash, and every acquisition held at the crash was given up (lost or
/// released, or its worker killed) before anyone acquired after it. Times are when the
/// coordinator heard the workers' lines.
fn check_failovers(
    failovers: &[(Instant, Instant)],
    states: &[Arc<std::sync::Mutex<WorkerState>>],
    verdict: &mut Verdict,
) {
    struct Held {
        hold: Hold,
        at: Instant,
        ended: Option<Instant>,
    }
    let held: Vec<Held> = states
        .iter()
        .flat_map(|state| {
            let state = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state
                .held
                .iter()
                .zip(&state.held_at)
                .map(|(hold, at)| Held {
                    hold: hold.clone(),
                    at: *at,
                    ended: state.ended_at(hold),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for &(crashed, promoted) in failovers {
        for after in held.iter().filter(|h| h.at > promoted) {
            let (name, token) = &after.hold;
            let before: Vec<&Held> = held
                .iter()
                .filter(|h| &h.hold.0 == name && h.at < crashed)
                .collect();
            if let Some(highest) = before.iter().map(|h| h.hold.1).max()
                && highest >= *token
            {
                verdict.fencing_violations += 1;
                verdict.details.push(format!(
                    "{name}: token {token} handed out after a failover, not above token {highest} handed out before it"
                ));
            }
            let still_held = before.iter().filter(|h| {
                h.ended
                    .is_none_or(|ended| ended > crashed && ended > after.at)
            });
            for before in still_held {
                verdict.overlaps += 1;
                verdict.details.push(format!(
                    "{name}: token {token} handed out after a failover while token {} (held at the crash) was still held",
                    before.hold.1
                ));
            }
        }
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
    fn an_observer_going_back_a_term_is_a_problem() {
        let saw = |terms: &[(&str, i64)]| -> Vec<Hold> {
            terms
                .iter()
                .map(|(name, term)| ((*name).to_owned(), *term))
                .collect()
        };
        let in_order = saw(&[("a", 1), ("b", 7), ("a", 2), ("a", 2), ("b", 9)]);
        assert!(terms_gone_back(&in_order).is_empty());
        let problems = terms_gone_back(&saw(&[("a", 3), ("b", 1), ("a", 5), ("a", 4)]));
        assert_eq!(problems, ["an observer of a saw term 4 after term 5"]);
    }

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
