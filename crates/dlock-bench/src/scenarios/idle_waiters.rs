//! One holder keeps a lock for several seconds while K waiters wait for it in
//! `acquire()`; a counting query interface under the waiters sees every statement they
//! send, read or write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock_core::{DistributedLock, QueryInterface};

use super::floors::POOL_SIZE;
use super::{Context, Scenario, describe, run_parallel};
use crate::counting::{CountingQueries, Counts};
use crate::stats::JsonLine;

const WAITERS: usize = 4;

pub(super) async fn run(context: &Context) -> Result<Vec<JsonLine>, String> {
    let hold = context.duration(Duration::from_secs(10), Duration::from_secs(5));
    // The back-off starts at 10 ms and doubles up to the poll interval, reaching the
    // 1 s default cap after about 1.3 s; from here on the waiters are in steady state.
    let steady_from = context.duration(Duration::from_secs(3), Duration::from_millis(2500));
    eprintln!(
        "idle_waiters: {WAITERS} waiters in acquire() while a holder keeps the lock {hold:?}"
    );

    let name = context.lock_name("idle_waiters");
    let holder = DistributedLock::new(&name, context.pool(POOL_SIZE).await?)
        .map_err(|error| describe(&error))?;
    let guard = holder.acquire().await.map_err(|error| describe(&error))?;

    // One counter per waiter over one shared pool, as waiters in one service would share it.
    let pool = context.pool(POOL_SIZE).await?;
    let counters: Vec<Arc<CountingQueries>> = (0..WAITERS)
        .map(|_| Arc::new(CountingQueries::new(Arc::clone(&pool))))
        .collect();
    let started = Instant::now();
    let waiters = tokio::spawn({
        let counters = counters.clone();
        let name = name.clone();
        async move {
            run_parallel(WAITERS, |index| {
                let queries: Arc<dyn QueryInterface> = Arc::clone(&counters[index]) as _;
                let lock = DistributedLock::new(&name, queries);
                async move {
                    let lock = lock.map_err(|error| describe(&error))?;
                    let guard = lock.acquire().await.map_err(|error| describe(&error))?;
                    let acquired = Instant::now();
                    guard.release().await.map_err(|error| describe(&error))?;
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
    guard.release().await.map_err(|error| describe(&error))?;

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
            .int("other_statements", whole_wait.others)
            .float("first_wake_ms", first_wake_ms)
            .float("hold_s", hold.as_secs_f64())
            .text("poll_interval", "default (1 s)"),
    ])
}

/// Each waiter's counts as soon as it has sent its first statement.
async fn first_statements(counters: &[Arc<CountingQueries>]) -> Result<Vec<Counts>, String> {
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

fn total(counters: &[Arc<CountingQueries>]) -> Counts {
    sum(&counters
        .iter()
        .map(|counter| counter.counts())
        .collect::<Vec<_>>())
}

fn sum(counts: &[Counts]) -> Counts {
    counts.iter().fold(Counts::default(), |sum, counts| Counts {
        reads: sum.reads + counts.reads,
        writes: sum.writes + counts.writes,
        others: sum.others + counts.others,
    })
}
