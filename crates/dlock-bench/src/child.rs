//! Worker processes. Contended and skip workers must be separate processes — as the
//! nodes of a real fleet are — so the benchmark re-runs its own binary with
//! `DLOCK_BENCH_CHILD` set. Parent and child talk in lines: the child prints `READY` once
//! connected, the parent sends commands on stdin, the child answers on stdout. Times
//! are wall-clock nanoseconds (`SystemTime`), which all processes on the machine share.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock_core::adapter::QueryInterface;
use dlock_core::{Dialect, DistributedLock, Election, Error, Outcome, Semaphore};
use dlock_testkit::{
    Backend, ChildProcess, PoolOptions, Route, dialect_key, dialect_named, error_chain, run_child,
    wall_ns,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::scenarios::{Context, SessionLock};

const ROLE: &str = "DLOCK_BENCH_CHILD";
const ADAPTER: &str = "DLOCK_BENCH_CHILD_ADAPTER";
const DIALECT: &str = "DLOCK_BENCH_CHILD_DIALECT";
const URL: &str = "DLOCK_BENCH_CHILD_URL";
const ROUTE: &str = "DLOCK_BENCH_CHILD_ROUTE";
const LOCK_NAME: &str = "DLOCK_BENCH_CHILD_LOCK";
const WORKER: &str = "DLOCK_BENCH_CHILD_WORKER";
const TTL_MS: &str = "DLOCK_BENCH_CHILD_TTL_MS";

/// The lock table of the election scenario.
const ELECTION_TABLE: &str = "dlock_bench_elections";

/// How long a critical section of a contended worker lasts.
pub(crate) const SECTION: Duration = Duration::from_millis(1);
/// The permits of the semaphore that [`Role::PermitContend`] workers share.
pub(crate) const HANDOVER_PERMITS: u32 = 2;
/// How long the job of a skip worker lasts.
pub(crate) const SKIP_JOB: Duration = Duration::from_millis(200);

/// What a worker process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// On each `RUN <stop ns>`: runs `lock(section)` in a loop until the stop time, then
    /// prints `SECTION <token> <entry ns> <exit ns>` per section and `DONE`. Exits at the
    /// end of its input.
    Contend,
    /// On each `GO`: runs `lock(200 ms job)` once with `skip_if_obtained`, printing
    /// `RAN <start ns>` or `SKIPPED <start ns>`. Exits at the end of its input.
    Skip,
    /// A candidate of an election (the lock name): campaigns, prints `LEADING <term> <ns>`
    /// when it leads; on `RESIGN`, prints `RESIGNING <ns>` and resigns, then stands aside
    /// until `CAMPAIGN` (else, polling where no notice wakes the others, it would often
    /// win again itself). Exits at the end of its input.
    Candidate,
    /// Observes the election, printing `SAW <term> <ns>` for every new leader. Exits at
    /// the end of its input.
    Observer,
    /// As `Contend`, holding a permit of the semaphore (the lock name) of
    /// [`HANDOVER_PERMITS`] permits, printing `SECTION <permit> <token> <entry ns> <exit
    /// ns>`.
    PermitContend,
    /// As `Contend`, holding the database's own session lock (`pg_advisory_lock`,
    /// `GET_LOCK`) keyed by the lock name, on a connection of its own, instead of the
    /// lock: the floor of a hand-over between processes. Prints `SECTION 0 <entry ns>
    /// <exit ns>` (it has no tokens).
    FloorContend,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Contend => "contend",
            Self::Skip => "skip",
            Self::Candidate => "candidate",
            Self::Observer => "observer",
            Self::PermitContend => "permit-contend",
            Self::FloorContend => "floor-contend",
        }
    }
}

/// Starts `count` workers in `role` on lock `lock_name` at once, and waits until all are
/// connected.
pub(crate) async fn start_workers(
    context: &Context,
    role: Role,
    lock_name: &str,
    count: usize,
) -> Result<Vec<ChildProcess>, String> {
    start_workers_with_ttl(context, role, lock_name, count, None).await
}

/// [`start_workers`], their locks with `ttl` instead of the default.
pub(crate) async fn start_workers_with_ttl(
    context: &Context,
    role: Role,
    lock_name: &str,
    count: usize,
    ttl: Option<Duration>,
) -> Result<Vec<ChildProcess>, String> {
    let starting: Vec<_> = (0..count)
        .map(|index| {
            let env = [
                (ROLE, role.name().to_owned()),
                (ADAPTER, context.adapter.name().to_owned()),
                (DIALECT, dialect_key(context.dialect).to_owned()),
                (URL, context.url.clone()),
                (ROUTE, context.route.key().to_owned()),
                (LOCK_NAME, lock_name.to_owned()),
                (WORKER, index.to_string()),
                (TTL_MS, ttl.map_or(0, |ttl| ttl.as_millis()).to_string()),
            ];
            let name = format!("worker {index}");
            tokio::spawn(ChildProcess::spawn_ready(
                name,
                env,
                Duration::from_secs(30),
            ))
        })
        .collect();
    let mut workers = Vec::with_capacity(count);
    for start in starting {
        workers.push(
            start
                .await
                .map_err(|error| format!("starting a worker panicked: {error}"))??,
        );
    }
    Ok(workers)
}

/// When this process is a worker, does the worker's part and returns its exit code.
pub(crate) fn run_if_child() -> Option<ExitCode> {
    let role = std::env::var(ROLE).ok()?;
    let who = format!("dlock-bench worker ({role})");
    Some(run_child(&who, worker_main(&role)))
}

async fn worker_main(role: &str) -> Result<(), String> {
    let variable = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let adapter = variable(ADAPTER)?;
    let adapter = <Backend as clap::ValueEnum>::from_str(&adapter, false)?;
    let dialect = dialect_named(&variable(DIALECT)?)?;
    // The floor's lock and unlock must reach the same session: a pool of one.
    let size = if role == "floor-contend" { 1 } else { 2 };
    let queries = adapter
        .connect(
            dialect,
            &variable(URL)?,
            PoolOptions::new(size).with_route(Route::named(&variable(ROUTE)?)?),
        )
        .await?;
    if role == "floor-contend" {
        return floor_contend(dialect, queries, &variable(LOCK_NAME)?).await;
    }
    let holder = format!("dlock-bench worker {}", variable(WORKER)?);
    if matches!(role, "candidate" | "observer") {
        // A table of its own: one created with the `value` columns, whatever older table
        // the database keeps under the default name.
        let mut builder = Election::builder(variable(LOCK_NAME)?, queries)
            .table(ELECTION_TABLE)
            .holder(holder);
        if let Ok(ttl_ms) = variable(TTL_MS)?.parse::<u64>()
            && ttl_ms > 0
        {
            builder = builder.ttl(Duration::from_millis(ttl_ms));
        }
        let election = builder.build().map_err(|error| error_chain(&error))?;
        // Opens the pool's connection (and the table) before the clock starts.
        election
            .leader()
            .await
            .map_err(|error| error_chain(&error))?;
        println!("READY");
        return match role {
            "candidate" => candidate(&election).await,
            _ => observer(&election).await,
        };
    }
    if role == "permit-contend" {
        let semaphore = Semaphore::builder(variable(LOCK_NAME)?, HANDOVER_PERMITS, queries)
            .holder(holder)
            .build()
            .map_err(|error| error_chain(&error))?;
        semaphore
            .create_table()
            .await
            .map_err(|error| error_chain(&error))?;
        println!("READY");
        return on_each_run(async |stop_ns| contend_for_permits(&semaphore, stop_ns).await).await;
    }
    let builder = DistributedLock::builder(variable(LOCK_NAME)?, queries).holder(holder);
    let lock = match role {
        "contend" => builder.build(),
        "skip" => builder.skip_if_obtained(true).build(),
        other => return Err(format!("unknown worker role {other:?}")),
    }
    .map_err(|error| error_chain(&error))?;
    // Opens the pool's connection (and the table, if missing) before the clock starts.
    lock.create_table()
        .await
        .map_err(|error| error_chain(&error))?;
    println!("READY");
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands
        .next_line()
        .await
        .map_err(|error| format!("cannot read commands: {error}"))?
    {
        match (
            role,
            command.split_whitespace().collect::<Vec<_>>().as_slice(),
        ) {
            ("contend", ["RUN", stop_ns]) => {
                let stop_ns = stop_ns
                    .parse()
                    .map_err(|_| format!("bad stop time {stop_ns:?}"))?;
                contend(&lock, stop_ns).await?;
            }
            ("skip", ["GO"]) => skip_once(&lock).await?,
            _ => return Err(format!("unexpected command {command:?}")),
        }
    }
    Ok(())
}

/// Takes the lock again and again until `stop_ns`, each time for one busy-waited
/// section; prints the sections at the end so printing does not slow the loop.
async fn contend(lock: &DistributedLock, stop_ns: u64) -> Result<(), String> {
    let mut report = String::new();
    while wall_ns() < stop_ns {
        let outcome = lock
            .lock(|lease| async move {
                let (entry, exit) = busy_section();
                Ok::<_, Error>((lease.fencing_token().get(), entry, exit))
            })
            .await
            .map_err(|error| error_chain(&error))?;
        if let Outcome::Ran((token, entry, exit)) = outcome {
            report.push_str(&format!("SECTION {token} {entry} {exit}\n"));
        }
    }
    println!("{report}DONE");
    Ok(())
}

/// As [`contend`], for a permit of `semaphore`.
async fn contend_for_permits(semaphore: &Semaphore, stop_ns: u64) -> Result<(), String> {
    let mut report = String::new();
    while wall_ns() < stop_ns {
        let permit = semaphore
            .acquire()
            .await
            .map_err(|error| error_chain(&error))?;
        let (entry, exit) = busy_section();
        report.push_str(&format!(
            "SECTION {} {} {entry} {exit}\n",
            permit.permit(),
            permit.fencing_token()
        ));
        permit
            .release()
            .await
            .map_err(|error| error_chain(&error))?;
    }
    println!("{report}DONE");
    Ok(())
}

/// Runs [`Role::FloorContend`]: a loop of session lock, busy-waited section, unlock
/// on every `RUN <stop ns>`, as [`contend`] does with the lock.
async fn floor_contend(
    dialect: Dialect,
    queries: Arc<dyn QueryInterface>,
    name: &str,
) -> Result<(), String> {
    // Any key the workers agree on: the lock name's hash, as this run's name is unique.
    let key = name.bytes().fold(0_i64, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(i64::from(byte))
    });
    let session_lock = SessionLock::new(dialect, queries, key)
        .ok_or_else(|| format!("{} has no session locks", dialect.name()))?;
    println!("READY");
    on_each_run(async |stop_ns| {
        let mut report = String::new();
        while wall_ns() < stop_ns {
            session_lock.lock().await?;
            let (entry, exit) = busy_section();
            session_lock.unlock().await?;
            report.push_str(&format!("SECTION 0 {entry} {exit}\n"));
        }
        println!("{report}DONE");
        Ok(())
    })
    .await
}

/// Runs `run` with the stop time of each `RUN <stop ns>` command on stdin, until the
/// input ends.
async fn on_each_run(mut run: impl AsyncFnMut(u64) -> Result<(), String>) -> Result<(), String> {
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands
        .next_line()
        .await
        .map_err(|error| format!("cannot read commands: {error}"))?
    {
        let stop_ns = command
            .strip_prefix("RUN ")
            .and_then(|stop_ns| stop_ns.parse().ok())
            .ok_or_else(|| format!("unexpected command {command:?}"))?;
        run(stop_ns).await?;
    }
    Ok(())
}

/// One critical section: a busy-wait of [`SECTION`] rather than a sleep (a timer sleep
/// of 1 ms lasts 1–2 ms). Returns its entry and exit, wall clock.
fn busy_section() -> (u64, u64) {
    let entry = wall_ns();
    let started = Instant::now();
    while started.elapsed() < SECTION {
        std::hint::spin_loop();
    }
    (entry, wall_ns())
}

async fn skip_once(lock: &DistributedLock) -> Result<(), String> {
    let started = wall_ns();
    let outcome = lock
        .lock(|_lease| async move {
            tokio::time::sleep(SKIP_JOB).await;
            Ok::<_, Error>(())
        })
        .await
        .map_err(|error| error_chain(&error))?;
    match outcome {
        Outcome::Ran(()) => println!("RAN {started}"),
        Outcome::Skipped(_) => println!("SKIPPED {started}"),
    }
    Ok(())
}

/// A candidate: leads whenever it can, resigning on `RESIGN`, until its input ends.
async fn candidate(election: &Election) -> Result<(), String> {
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let leadership = tokio::select! {
            leadership = election.campaign() => leadership.map_err(|error| error_chain(&error))?,
            command = commands.next_line() => match command {
                Ok(None) => return Ok(()),
                other => return Err(format!("unexpected input while campaigning: {other:?}")),
            },
        };
        println!("LEADING {} {}", leadership.term(), wall_ns());
        match commands.next_line().await {
            Ok(Some(command)) if command == "RESIGN" => {
                println!("RESIGNING {}", wall_ns());
                leadership
                    .resign()
                    .await
                    .map_err(|error| error_chain(&error))?;
            }
            Ok(None) => return Ok(()),
            other => return Err(format!("unexpected input while leading: {other:?}")),
        }
        match commands.next_line().await {
            Ok(Some(command)) if command == "CAMPAIGN" => {}
            Ok(None) => return Ok(()),
            other => return Err(format!("unexpected input while aside: {other:?}")),
        }
    }
}

/// An observer: prints every new leader, until its input ends.
async fn observer(election: &Election) -> Result<(), String> {
    let mut observer = election.observe();
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            changed = observer.changed() => {
                if let Some(leader) = changed.map_err(|error| error_chain(&error))? {
                    println!("SAW {} {}", leader.term, wall_ns());
                }
            }
            _ = commands.next_line() => return Ok(()),
        }
    }
}
