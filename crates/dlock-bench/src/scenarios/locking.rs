//! `lock(empty job)` back to back: on one name (uncontended), and on W names at once
//! (independent), the latter beside the floor pair run the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::adapter::{QueryInterface, Statement, StatementKind};
use dlock_core::{DistributedLock, Error};

use super::floors::{Commit2, POOL_SIZE};
use dlock_testkit::{Flow, Tap, error_chain};

use super::{Context, Scenario, WARM_UP_OPERATIONS, measure_for, run_parallel};
use crate::cpu::CpuTime;
use crate::report::{Latencies, ResultLine};

/// The independent scenario compares this many workers with one.
const INDEPENDENT_WORKERS: usize = 8;

/// A lock with the default options on a fresh pool.
async fn lock(context: &Context, name: &str) -> Result<DistributedLock, String> {
    DistributedLock::new(name, context.pool(POOL_SIZE).await?).map_err(|error| error_chain(&error))
}

/// One `lock(empty job)`: acquire, run nothing, release.
async fn lock_empty(lock: &DistributedLock) -> Result<(), String> {
    lock.lock(|_lease| async { Ok::<_, Error>(()) })
        .await
        .map(drop)
        .map_err(|error| error_chain(&error))
}

/// Slices of this length alternate between the lock and the floor pair, so that both
/// see the same background load on a shared machine and their ratio stays meaningful.
const SLICE: Duration = Duration::from_millis(250);

pub(super) async fn uncontended(context: &Context) -> Result<Vec<ResultLine>, String> {
    let name = context.lock_name("uncontended");
    let pool = context.pool(POOL_SIZE).await?;
    let statements = SqlOnly::capture(&name, pool.clone()).await?;
    let lock = DistributedLock::new(&name, pool).map_err(|error| error_chain(&error))?;
    let floor = Commit2::new(context, context.lock_name("uncontended-floor")).await?;
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    eprintln!(
        "uncontended: lock(empty job) on one name for {duration:?}, alternating every \
         {SLICE:?} with the floor pair and with the lock's own statements alone"
    );
    for _ in 0..WARM_UP_OPERATIONS {
        lock_empty(&lock).await?;
        floor.once().await?;
    }
    for _ in 0..WARM_UP_OPERATIONS {
        statements.once().await?;
    }
    let mut lock_latencies = Vec::new();
    let mut floor_latencies = Vec::new();
    let mut sql_latencies = Vec::new();
    let (mut lock_elapsed, mut floor_elapsed) = (Duration::ZERO, Duration::ZERO);
    while lock_elapsed < duration {
        lock_elapsed += measure_for(SLICE, &mut lock_latencies, || lock_empty(&lock)).await?;
        floor_elapsed += measure_for(SLICE, &mut floor_latencies, || floor.once()).await?;
        measure_for(SLICE, &mut sql_latencies, || statements.once()).await?;
    }
    let lock_latencies = Latencies::from_durations(lock_latencies);
    let floor_latencies = Latencies::from_durations(floor_latencies);
    let sql_latencies = Latencies::from_durations(sql_latencies);
    let (lock_p50, floor_p50) = (
        lock_latencies.percentile(50.0),
        floor_latencies.percentile(50.0),
    );
    let sql_p50 = sql_latencies.percentile(50.0);
    Ok(vec![
        context
            .line(Scenario::Uncontended, 1)
            .throughput(&lock_latencies, lock_elapsed)
            .float(
                "floor_commit2_ops_per_s",
                floor_latencies.len() as f64 / floor_elapsed.as_secs_f64(),
            )
            .float("floor_commit2_p50_ms", floor_p50)
            .float("floor_commit2_p99_ms", floor_latencies.percentile(99.0))
            .float("p50_vs_floor_commit2", lock_p50 / floor_p50)
            // The ratio split in two: what the lock's SQL costs the server beyond the
            // floor's, and what the client adds to its own SQL.
            .float("sql_only_p50_ms", sql_p50)
            .float("sql_only_vs_floor_commit2", sql_p50 / floor_p50)
            .float("p50_vs_sql_only", lock_p50 / sql_p50),
    ])
}

/// The statements one uncontended `lock(empty job)` sent (its acquire and its release,
/// with their parameters), sent again back to back by the benchmark itself: what the
/// lock's SQL costs with none of the lock's client work around it.
struct SqlOnly {
    pool: Arc<dyn QueryInterface>,
    statements: Vec<Statement>,
}

impl SqlOnly {
    /// The statements of a `lock(empty job)` on `name` through `pool`, seen by a tap
    /// under a lock of its own (the measured lock sends straight to the pool): those of
    /// the last of a few, from its acquire on.
    async fn capture(name: &str, pool: Arc<dyn QueryInterface>) -> Result<Self, String> {
        let sent: Arc<Mutex<Vec<Statement>>> = Arc::default();
        let tap = Tap::new(Arc::clone(&pool), {
            let sent = Arc::clone(&sent);
            move |statement| {
                if let Ok(mut sent) = sent.lock() {
                    sent.push(statement.clone());
                }
                Flow::Forward
            }
        });
        let tap: Arc<dyn QueryInterface> = Arc::new(tap);
        let lock = DistributedLock::new(name, tap).map_err(|error| error_chain(&error))?;
        for _ in 0..3 {
            lock_empty(&lock).await?;
        }
        let sent = sent.lock().map_err(|_| "poisoned")?;
        let start = sent
            .iter()
            .rposition(|statement| statement.kind == StatementKind::Acquire)
            .ok_or("uncontended: the lock sent no acquire statement")?;
        // The listener's checks that it still hears go through the pool too: not the
        // lock's statements.
        let statements: Vec<Statement> = sent[start..]
            .iter()
            .filter(|statement| statement.kind != StatementKind::Notify)
            .cloned()
            .collect();
        if !statements.iter().any(|s| s.kind == StatementKind::Release) {
            return Err(format!(
                "uncontended: no release after the last acquire: {:?}",
                statements.iter().map(|s| s.kind).collect::<Vec<_>>()
            ));
        }
        Ok(Self { pool, statements })
    }

    /// Sends the statements once; the acquire must take the lock again (the release
    /// before freed it), so that what is timed is the path a `lock(f)` takes.
    async fn once(&self) -> Result<(), String> {
        for statement in &self.statements {
            let failed = |error| format!("{:?} sent again failed: {error}", statement.kind);
            let rows = if statement.columns.is_empty() {
                self.pool.execute(statement).await.map_err(failed)?
            } else {
                self.pool.query(statement).await.map_err(failed)?.len() as u64
            };
            if statement.kind == StatementKind::Acquire && rows == 0 {
                return Err("uncontended: the acquire sent again did not take the lock".into());
            }
        }
        Ok(())
    }
}

/// One worker of the independent scenario: a lock or a floor pair, on a name and a
/// pool of its own.
#[derive(Debug, Clone)]
enum Job {
    Lock(DistributedLock),
    Floor(Commit2),
}

impl Job {
    async fn once(&self) -> Result<(), String> {
        match self {
            Self::Lock(lock) => lock_empty(lock).await,
            Self::Floor(floor) => floor.once().await,
        }
    }
}

/// A set of workers measured together, and what they measured so far.
#[derive(Debug)]
struct Team {
    jobs: Vec<Job>,
    latencies: Vec<Duration>,
    /// The sum over slices of the longest worker's time in each.
    elapsed: Duration,
    /// The machine's core time over the slices (where the system tells it).
    cpu: Option<CpuTime>,
}

impl Team {
    fn new(jobs: Vec<Job>) -> Self {
        Self {
            jobs,
            latencies: Vec::new(),
            elapsed: Duration::ZERO,
            cpu: Some(CpuTime::default()),
        }
    }

    /// All workers at once, back to back, for `slice` (or `warm_up` operations each).
    async fn run(&mut self, slice: Duration, warm_up: bool) -> Result<(), String> {
        let jobs = self.jobs.clone();
        let cpu_before = CpuTime::now();
        let results = run_parallel(jobs.len(), |index| {
            let job = jobs[index].clone();
            async move {
                let mut latencies = Vec::new();
                if warm_up {
                    for _ in 0..WARM_UP_OPERATIONS {
                        job.once().await?;
                    }
                    return Ok((latencies, Duration::ZERO));
                }
                let elapsed = measure_for(slice, &mut latencies, || job.once()).await?;
                Ok((latencies, elapsed))
            }
        })
        .await?;
        let mut longest = Duration::ZERO;
        for (latencies, elapsed) in results {
            self.latencies.extend(latencies);
            longest = longest.max(elapsed);
        }
        self.elapsed += longest;
        if !warm_up {
            let spent = CpuTime::now()
                .zip(cpu_before)
                .map(|(now, then)| now.since(then));
            self.cpu = self.cpu.zip(spent).map(|(sum, spent)| sum.add(spent));
        }
        Ok(())
    }

    fn ops_per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The busy share of the machine's cores while the team ran (the database server's
    /// work included: it runs on this machine).
    fn cpu_busy(&self) -> Option<f64> {
        self.cpu.and_then(CpuTime::busy_share)
    }
}

/// W workers on W names against one worker, for locks and for the floor pair. The four
/// configurations take turns in short slices, so that all four see the same background
/// load and the speedups compare like with like.
pub(super) async fn independent(context: &Context) -> Result<Vec<ResultLine>, String> {
    let duration = context.duration(Duration::from_secs(5), Duration::from_millis(1500));
    let slice = Duration::from_millis(500);
    eprintln!(
        "independent: {INDEPENDENT_WORKERS} workers on as many names vs 1, lock(empty job) \
         and the floor pair, {duration:?} each in {slice:?} turns"
    );
    let mut locks = Vec::with_capacity(INDEPENDENT_WORKERS);
    let mut floors = Vec::with_capacity(INDEPENDENT_WORKERS);
    for index in 0..INDEPENDENT_WORKERS {
        let name = context.lock_name(&format!("independent/{index}"));
        locks.push(Job::Lock(lock(context, &name).await?));
        floors.push(Job::Floor(Commit2::new(context, name).await?));
    }
    // The lone worker is the first of the eight: the same pool, the same name.
    let mut teams = [
        Team::new(locks[..1].to_vec()),
        Team::new(locks),
        Team::new(floors[..1].to_vec()),
        Team::new(floors),
    ];
    for team in &mut teams {
        team.run(slice, true).await?;
    }
    while teams[0].elapsed < duration {
        for team in &mut teams {
            team.run(slice, false).await?;
        }
    }
    let [lock_alone, lock_team, floor_alone, floor_team] = &teams;
    let mut lines = Vec::new();
    for (workers, locks, floors) in [
        (1, lock_alone, floor_alone),
        (INDEPENDENT_WORKERS, lock_team, floor_team),
    ] {
        let latencies = Latencies::from_durations(locks.latencies.iter().copied());
        let mut line = context
            .line(Scenario::Independent, workers)
            .float("ops_per_s", locks.ops_per_s())
            .float("p50_ms", latencies.percentile(50.0))
            .float("p99_ms", latencies.percentile(99.0))
            .float("speedup", locks.ops_per_s() / lock_alone.ops_per_s())
            .float("floor_commit2_ops_per_s", floors.ops_per_s())
            .float(
                "floor_commit2_speedup",
                floors.ops_per_s() / floor_alone.ops_per_s(),
            );
        if let (Some(busy), Some(floor_busy)) = (locks.cpu_busy(), floors.cpu_busy()) {
            line = line
                .float("cpu_busy", busy)
                .float("floor_commit2_cpu_busy", floor_busy);
        }
        lines.push(line);
    }
    Ok(lines)
}
