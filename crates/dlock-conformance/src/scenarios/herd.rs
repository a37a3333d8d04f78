//! Waiting rides out transient errors: a herd of waiters woken by each release competes
//! for a small pool, and a checkout that times out on the way must not end an `acquire`
//! that was told to wait indefinitely.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::DistributedLock;
use tokio::time::Instant;

use crate::support::{Env, Verdict, unique_name};

pub(crate) async fn a_herd_of_waiters_on_a_small_pool_all_get_their_turn(env: Env) -> Verdict {
    const WAITERS: usize = 20;
    const JOB: Duration = Duration::from_millis(5);
    let name = unique_name("herd");
    // One pool for everyone: the adapter's small one (4 connections, checkouts that give
    // up after 500 ms), as one service's tasks would share it.
    let queries = env.connect().await?;
    let started = Instant::now();
    let mut waiters = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let lock = DistributedLock::builder(&name, Arc::clone(&queries))
            .build()
            .map_err(|e| e.to_string())?;
        waiters.spawn(async move {
            let guard = lock.acquire().await?;
            tokio::time::sleep(JOB).await;
            guard.release().await
        });
    }
    let mut errors = Vec::new();
    let limit = Duration::from_secs(120);
    let all = async {
        while let Some(finished) = waiters.join_next().await {
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(error)) => errors.push(error.to_string()),
                Err(panic) => errors.push(panic.to_string()),
            }
        }
    };
    tokio::time::timeout(limit, all)
        .await
        .map_err(|_| format!("{WAITERS} waiters did not all finish within {limit:?}"))?;
    eprintln!(
        "herd: {WAITERS} waiters on a pool of 4 took {} ms, {} errors",
        started.elapsed().as_millis(),
        errors.len()
    );
    if !errors.is_empty() {
        return Err(format!(
            "{} of {WAITERS} waiters failed: {errors:?}",
            errors.len()
        ));
    }
    Ok(())
}
