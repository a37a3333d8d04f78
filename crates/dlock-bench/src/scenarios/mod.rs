//! The scenarios (see BENCHMARKS.md), and what they share.

mod contended;
mod election;
mod floors;
mod idle_waiters;
mod locking;
mod multi;
mod rwlock;
mod semaphore;
mod skip;
mod statements;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock_core::Dialect;
use dlock_core::adapter::QueryInterface;
use dlock_testkit::{Backend, PoolOptions, Route};

pub(crate) use floors::{SessionLock, floor_sql};

use crate::report::ResultLine;

/// One measurement; the order of the variants is the order they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum Scenario {
    FloorSelect1,
    FloorCommit2,
    FloorAdvisory,
    Statements,
    Uncontended,
    Contended,
    Independent,
    Skip,
    IdleWaiters,
    Election,
    MultiUncontended,
    SemaphoreUncontended,
    SemaphoreHandover,
    RwReadUncontended,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FloorSelect1 => "floor_select1",
            Self::FloorCommit2 => "floor_commit2",
            Self::FloorAdvisory => "floor_advisory",
            Self::Statements => "statements",
            Self::Uncontended => "uncontended",
            Self::Contended => "contended",
            Self::Independent => "independent",
            Self::Skip => "skip",
            Self::IdleWaiters => "idle_waiters",
            Self::Election => "election",
            Self::MultiUncontended => "multi_uncontended",
            Self::SemaphoreUncontended => "semaphore_uncontended",
            Self::SemaphoreHandover => "semaphore_handover",
            Self::RwReadUncontended => "rw_read_uncontended",
        }
    }

    /// Runs the scenario and returns its result lines.
    pub(crate) async fn run(self, context: &Context) -> Result<Vec<ResultLine>, String> {
        match self {
            Self::FloorSelect1 => floors::select1(context).await,
            Self::FloorCommit2 => floors::commit2(context).await,
            Self::FloorAdvisory => floors::advisory(context).await,
            Self::Statements => statements::run(context).await,
            Self::Uncontended => locking::uncontended(context).await,
            Self::Contended => contended::run(context).await,
            Self::Independent => locking::independent(context).await,
            Self::Skip => skip::run(context).await,
            Self::IdleWaiters => idle_waiters::run(context).await,
            Self::Election => election::run(context).await,
            Self::MultiUncontended => multi::uncontended(context).await,
            Self::SemaphoreUncontended => semaphore::uncontended(context).await,
            Self::SemaphoreHandover => semaphore::handover(context).await,
            Self::RwReadUncontended => rwlock::read_uncontended(context).await,
        }
    }
}

/// What every scenario needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) adapter: Backend,
    pub(crate) dialect: Dialect,
    pub(crate) url: String,
    /// How the pools reach the database.
    pub(crate) route: Route,
    pub(crate) quick: bool,
    /// Part of every lock name, so that runs never meet each other's rows (or a holder
    /// left behind by a crashed run).
    pub(crate) run_id: String,
}

impl Context {
    /// A fresh pool of at most `size` connections, as the adapter's query interface.
    pub(crate) async fn pool(&self, size: usize) -> Result<Arc<dyn QueryInterface>, String> {
        self.adapter
            .connect(
                self.dialect,
                &self.url,
                PoolOptions::new(size).with_route(self.route),
            )
            .await
    }

    /// A lock name unique to this run.
    pub(crate) fn lock_name(&self, part: &str) -> String {
        format!("dlock-bench/{}/{part}", self.run_id)
    }

    /// A result line with the common fields filled in.
    pub(crate) fn line(&self, scenario: Scenario, workers: usize) -> ResultLine {
        ResultLine::new(scenario.name(), self.adapter, self.dialect, workers).through(self.route)
    }

    /// How long a measurement runs: `full`, or `quick` with `--quick`.
    pub(crate) fn duration(&self, full: Duration, quick: Duration) -> Duration {
        if self.quick { quick } else { full }
    }
}

/// Operations run before the clock starts: they open the pool's connections and create
/// tables, which a steady-state figure must not include.
pub(crate) const WARM_UP_OPERATIONS: usize = 20;

/// Runs `operation` back to back for `duration` after a warm-up. Returns each
/// operation's latency and the time the measured loop took.
pub(crate) async fn timed_loop<F, Fut>(
    duration: Duration,
    mut operation: F,
) -> Result<(Vec<Duration>, Duration), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for _ in 0..WARM_UP_OPERATIONS {
        operation().await?;
    }
    let mut latencies = Vec::new();
    let elapsed = measure_for(duration, &mut latencies, operation).await?;
    Ok((latencies, elapsed))
}

/// Runs `operation` back to back for `duration`, adding each latency to `latencies`;
/// returns the time it took.
pub(crate) async fn measure_for<F, Fut>(
    duration: Duration,
    latencies: &mut Vec<Duration>,
    mut operation: F,
) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    while started.elapsed() < duration {
        let sent = Instant::now();
        operation().await?;
        latencies.push(sent.elapsed());
    }
    Ok(started.elapsed())
}

/// Runs `count` copies of `worker` at once, each given its index, and collects their
/// results in order.
pub(crate) async fn run_parallel<F, Fut, T>(count: usize, worker: F) -> Result<Vec<T>, String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..count)
        .map(|index| tokio::spawn(worker(index)))
        .collect();
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(
            task.await
                .map_err(|error| format!("a worker task panicked: {error}"))??,
        );
    }
    Ok(results)
}
