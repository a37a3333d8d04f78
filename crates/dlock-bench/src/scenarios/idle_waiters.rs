//! One holder keeps a lock for several seconds while K waiters wait for it in
//! `acquire()`; a tap under each waiter counts every statement it sends, read or write,
//! exactly what the lock sends, whatever else runs on the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dlock_core::DistributedLock;
use dlock_core::adapter::{QueryInterface, Statement};
use dlock_testkit::{Flow, Tap, error_chain, only_reads};

use super::floors::POOL_SIZE;
use super::{Context, Scenario, run_parallel};
use crate::report::ResultLine;

const WAITERS: usize = 4;

pub(super) async fn run(context: &Context) -> Result<Vec<ResultLine>, String> {
    let hold = context.duration(Duration::from_secs(10), Duration::from_secs(5));
    // The back-off starts at 10 ms and doubles up to the poll interval, reaching the
    // 1 s default cap after about 1.3 s; from here on the waiters are in steady state.
    let steady_from = context.duration(Duration::from_secs(3), Duration::from_millis(2500));
    eprintln!(
        "idle_waiters: {WAITERS} waiters in acquire() while a holder keeps the lock {hold:?}"
    );

    let name = context.lock_name("idle_waiters");
    let holder = DistributedLock::new(&name, context.pool(POOL_SIZE).await?)
        .map_err(|error| error_chain(&error))?;
    let guard = holder
        .acquire()
        .await
        .map_err(|error| error_chain(&error))?;

    // One counter per waiter over one shared pool, as waiters in one service would share it.
    let pool = context.pool(POOL_SIZE).await?;
    let counters: Vec<Arc<Counter>> = (0..WAITERS).map(|_| Arc::default()).collect();
    let taps: Vec<Arc<dyn QueryInterface>> = counters
        .iter()
        .map(|counter| {
            let counter = Arc::clone(counter);
            let tap = Tap::new(Arc::clone(&pool), move |statement| {
                counter.count(statement);
                Flow::Forward
            });
            Arc::new(tap) as Arc<dyn QueryInterface>
        })
        .collect();
    let started = Instant::now();
    let waiters = tokio::spawn({
        let name = name.clone();
        async move {
            run_parallel(WAITERS, |index| {
                let lock = DistributedLock::new(&name, Arc::clone(&taps[index]));
                async move {
                    let lock = lock.map_err(|error| error_chain(&error))?;
                    let guard = lock.acquire().await.map_err(|error| error_chain(&error))?;
                    let acquired = Instant::now();
                    guard.release().await.map_err(|error| error_chain(&error))?;
                    Ok(acquired)
                }
            })
            .await
        }
    });

    // A waiter's first statement is its one acquire attempt (today an insert-or-take-over
    // that finds the lock held); the waiting starts after it.
    let first_statements = first_statements(&counters).await?;
    tokio::time::sleep_until((started + steady_from).into()).await;
    let at_steady = (Instant::now(), total(&counters));
    tokio::time::sleep_until((started + hold).into()).await;
    let released_at = Instant::now();
    let at_release: Vec<Counts> = counters.iter().map(|counter| counter.counts()).collect();
    guard.release().await.map_err(|error| error_chain(&error))?;

    let acquired = tokio::time::timeout(Duration::from_secs(60), waiters)
        .await
        .map_err(|_| "the waiters did not all get the lock within 60 s of its release".to_owned())?
        .map_err(|error| format!("the waiters' task panicked: {error}"))??;
    let first_wake_ms = acquired
        .iter()
        .map(|at| at.saturating_duration_since(released_at).as_secs_f64() * 1e3)
        .fold(f64::INFINITY, f64::min);

    let per_waiter_rate = |counts: Counts, over: Duration| {
        counts.total() as f64 / over.as_secs_f64() / WAITERS as f64
    };
    let whole_wait = sum(&at_release);
    let steady = whole_wait.since(at_steady.1);
    let while_waiting = whole_wait.since(sum(&first_statements));
    Ok(vec![
        context
            .line(Scenario::IdleWaiters, WAITERS)
            .float(
                "statements_per_s",
                per_waiter_rate(whole_wait, released_at - started),
            )
            .float(
                "steady_statements_per_s",
                per_waiter_rate(steady, released_at - at_steady.0),
            )
            .int("reads", whole_wait.reads)
            .int("writes", while_waiting.writes)
            .int("first_statement_writes", sum(&first_statements).writes)
            // Kept for the results' shape: statements that neither read nor write, which
            // since every statement says its kind cannot occur.
            .int("other_statements", 0)
            .float("first_wake_ms", first_wake_ms)
            .float("hold_s", hold.as_secs_f64())
            .text("poll_interval", "default (1 s)"),
    ])
}

/// Each waiter's counts as soon as it has sent its first statement.
async fn first_statements(counters: &[Arc<Counter>]) -> Result<Vec<Counts>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut firsts: Vec<Option<Counts>> = vec![None; counters.len()];
    while firsts.iter().any(Option::is_none) {
        for (first, counter) in firsts.iter_mut().zip(counters) {
            let counts = counter.counts();
            if first.is_none() && counts.total() > 0 {
                *first = Some(counts);
            }
        }
        if Instant::now() > deadline {
            return Err("some waiters sent no statement within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(firsts.into_iter().flatten().collect())
}

fn total(counters: &[Arc<Counter>]) -> Counts {
    sum(&counters
        .iter()
        .map(|counter| counter.counts())
        .collect::<Vec<_>>())
}

fn sum(counts: &[Counts]) -> Counts {
    counts.iter().fold(Counts::default(), |sum, counts| Counts {
        reads: sum.reads + counts.reads,
        writes: sum.writes + counts.writes,
    })
}

/// Statement counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Statements that only read (see `only_reads`).
    reads: u64,
    /// Statements that write a row or the table (see `only_reads`).
    writes: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.reads + self.writes
    }

    /// What happened between `earlier` and `self`.
    fn since(self, earlier: Self) -> Self {
        Self {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
        }
    }
}

/// One waiter's statements, counted as they are sent, whether or not they succeed: a
/// failed statement still cost the database a round trip.
#[derive(Debug, Default)]
struct Counter {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Counter {
    fn count(&self, statement: &Statement) {
        let counter = if only_reads(statement.kind) {
            &self.reads
        } else {
            &self.writes
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn counts(&self) -> Counts {
        Counts {
            reads: self.reads.load(Ordering::SeqCst),
            writes: self.writes.load(Ordering::SeqCst),
        }
    }
}
