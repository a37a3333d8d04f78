//! Counts, exactly, what one uncontended `lock(empty fn)` sends: a tap under the lock
//! counts every statement by kind over many locks, after a warm-up (which creates the
//! table and runs the once-per-lock durability check). Not a timing: the figure is the
//! same on a loaded machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dlock_core::DistributedLock;
use dlock_core::adapter::{QueryInterface, StatementKind};
use dlock_testkit::{Flow, Tap, error_chain, only_reads};

use super::floors::POOL_SIZE;
use super::{Context, Scenario, WARM_UP_OPERATIONS};
use crate::report::ResultLine;

/// Locks counted.
const LOCKS: u64 = 200;

pub(super) async fn run(context: &Context) -> Result<Vec<ResultLine>, String> {
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let tap = Tap::new(context.pool(POOL_SIZE).await?, {
        let counts = Arc::clone(&counts);
        move |statement| {
            let mut counts = counts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *counts.entry(format!("{:?}", statement.kind)).or_default() += 1;
            if !only_reads(statement.kind) {
                *counts.entry(WRITES.to_owned()).or_default() += 1;
            }
            Flow::Forward
        }
    });
    let queries: Arc<dyn QueryInterface> = Arc::new(tap);
    let lock = DistributedLock::new(context.lock_name("statements"), queries)
        .map_err(|error| error_chain(&error))?;
    let lock_once = async || {
        lock.lock(|_lease| async { Ok::<_, dlock_core::Error>(()) })
            .await
            .map_err(|error| error_chain(&error))
            .map(drop)
    };
    for _ in 0..WARM_UP_OPERATIONS {
        lock_once().await?;
    }
    // The release notice, when one is sent, goes in the background: let it land.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = counts.lock().map_err(|_| "poisoned")?.clone();
    for _ in 0..LOCKS {
        lock_once().await?;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after = counts.lock().map_err(|_| "poisoned")?.clone();
    let per_lock = |key: &str| {
        let counted = after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0);
        counted as f64 / LOCKS as f64
    };
    let statements: f64 = after
        .keys()
        .filter(|key| *key != WRITES)
        .map(|key| per_lock(key))
        .sum();
    let kinds = after
        .keys()
        .filter(|key| *key != WRITES && per_lock(key) > 0.0)
        .map(|key| format!("{key} {:.2}", per_lock(key)))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("statements: per uncontended lock(empty fn): {kinds}");
    Ok(vec![
        context
            .line(Scenario::Statements, 1)
            .float("statements_per_lock", statements)
            .float("writes_per_lock", per_lock(WRITES))
            .float(
                "notices_per_lock",
                per_lock(&format!("{:?}", StatementKind::Notify)),
            )
            .int("locks", LOCKS)
            .text("by_kind", kinds),
    ])
}

/// The key under which statements that write (commit to disk) are also counted.
const WRITES: &str = "writes";
