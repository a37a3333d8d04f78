//! `skip_if_obtained`: of callers started together, exactly one runs the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dlock_core::{Attempt, DistributedLock, Outcome};
use tokio::sync::{Barrier, watch};

use crate::support::{Env, Verdict, quick, unique_name};

const CALLERS: usize = 8;
const TRIALS: usize = 5;

pub(crate) async fn skip_if_obtained_runs_exactly_one(env: Env) -> Verdict {
    for trial in 0..TRIALS {
        let name = unique_name("skip");
        let barrier = Arc::new(Barrier::new(CALLERS));
        let running = Arc::new(AtomicUsize::new(0));
        // The job lasts until every other caller has been skipped (at most 10 s), not a
        // fixed time: on a loaded machine a caller may be scheduled late, and one that
        // arrives after the job ended rightly runs it again.
        let (skipped_tx, skipped_rx) = watch::channel(0usize);
        let skipped_tx = Arc::new(skipped_tx);
        let mut callers = Vec::new();
        for caller in 0..CALLERS {
            let lock = quick(DistributedLock::builder(&name, env.connect().await?))
                .skip_if_obtained(true)
                .holder(format!("skip caller {caller}"))
                .build()
                .map_err(|e| e.to_string())?;
            let (barrier, running) = (Arc::clone(&barrier), Arc::clone(&running));
            let (skipped_tx, mut skipped_rx) = (Arc::clone(&skipped_tx), skipped_rx.clone());
            callers.push(tokio::spawn(async move {
                barrier.wait().await;
                let outcome = lock
                    .lock(|_lease| async move {
                        if running.fetch_add(1, Ordering::SeqCst) != 0 {
                            return Err(dlock_core::Error::InvalidOption(
                                "two jobs ran at once".into(),
                            ));
                        }
                        let others_skipped = skipped_rx.wait_for(|skipped| *skipped >= CALLERS - 1);
                        let _ = tokio::time::timeout(Duration::from_secs(10), others_skipped).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await;
                if matches!(outcome, Ok(Outcome::Skipped(_))) {
                    skipped_tx.send_modify(|skipped| *skipped += 1);
                }
                outcome
            }));
        }
        let (mut ran, mut skipped) = (0, 0);
        for caller in callers {
            match caller.await.map_err(|e| e.to_string())? {
                Ok(Outcome::Ran(())) => ran += 1,
                Ok(Outcome::Skipped(holder)) => {
                    if !holder.as_str().starts_with("skip caller ") {
                        return Err(format!("skipped without naming the holder: {holder}"));
                    }
                    skipped += 1;
                }
                Err(error) => return Err(format!("trial {trial}: {error}")),
            }
        }
        if (ran, skipped) != (1, CALLERS - 1) {
            return Err(format!(
                "trial {trial}: {ran} ran and {skipped} skipped; expected 1 ran"
            ));
        }
    }
    eprintln!("skip_if_obtained: exactly 1 of {CALLERS} ran in each of {TRIALS} trials");
    Ok(())
}

pub(crate) async fn try_acquire_names_the_holder(env: Env) -> Verdict {
    let name = unique_name("try_acquire");
    let holder = env
        .lock(&name)
        .await?
        .holder("the first holder")
        .build()
        .map_err(|e| e.to_string())?;
    let other = env.lock(&name).await?.build().map_err(|e| e.to_string())?;
    let guard = holder
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or("a free lock was not acquired")?;
    match other.try_acquire().await.map_err(|e| e.to_string())? {
        Attempt::Acquired(_) => return Err("a held lock was acquired twice".into()),
        Attempt::Held(seen) => {
            if !seen.as_str().starts_with("the first holder (") {
                return Err(format!("holder not named: {seen}"));
            }
            if seen.expires_in() > Duration::from_secs(5) || seen.expires_in().is_zero() {
                return Err(format!("implausible remaining lease: {seen}"));
            }
        }
    }
    guard.release().await.map_err(|e| e.to_string())?;
    match other.try_acquire().await.map_err(|e| e.to_string())? {
        Attempt::Acquired(guard) => guard.release().await.map_err(|e| e.to_string()),
        Attempt::Held(seen) => Err(format!("a released lock is still held by {seen}")),
    }
}
