//! The lock is released on every path out of a job, and a dropped `acquire` leaves
//! nothing held. Each check waits far less than the TTL, so a release — not an expiry —
//! is what frees the lock.

use std::time::Duration;

use dlock_core::{Attempt, DistributedLock, Error};
use tokio::sync::oneshot;

use crate::child::{self, Mode};
use crate::support::{Env, Verdict, eventually, is_free, quick, unique_name};

const TTL: Duration = Duration::from_secs(30);
const FREED_WITHIN: Duration = Duration::from_secs(3);

async fn lock_with_long_ttl(env: &Env, name: &str) -> Result<DistributedLock, String> {
    env.lock(name)
        .await?
        .ttl(TTL)
        .build()
        .map_err(|e| e.to_string())
}

async fn expect_freed(env: &Env, name: &str, path: &str) -> Verdict {
    let queries = env.connect().await?;
    eventually(
        FREED_WITHIN,
        &format!("the lock is free after {path}"),
        || is_free(&queries, name),
    )
    .await
}

pub(crate) async fn release_when_job_fails(env: Env) -> Verdict {
    let name = unique_name("job_fails");
    let lock = lock_with_long_ttl(&env, &name).await?;
    let result = lock
        .lock(|_lease| async { Err::<(), _>(Error::InvalidOption("the job failed".into())) })
        .await;
    match result {
        Err(Error::InvalidOption(message)) if message == "the job failed" => {}
        other => return Err(format!("the job's error was not returned: {other:?}")),
    }
    // lock() awaits its release, so the lock is free at once.
    if !is_free(&env.connect().await?, &name).await? {
        return Err("the lock is still held after the job failed".into());
    }
    Ok(())
}

pub(crate) async fn release_when_job_panics(env: Env) -> Verdict {
    let name = unique_name("job_panics");
    let lock = lock_with_long_ttl(&env, &name).await?;
    let joined = tokio::spawn(async move {
        lock.lock(|_lease| async {
            if true {
                panic!("the job panicked (expected by this test)");
            }
            Ok::<(), Error>(())
        })
        .await
    })
    .await;
    if !joined.is_err_and(|error| error.is_panic()) {
        return Err("the job's panic did not propagate".into());
    }
    expect_freed(&env, &name, "a panic").await
}

pub(crate) async fn release_when_lock_future_dropped(env: Env) -> Verdict {
    let name = unique_name("future_dropped");
    let lock = lock_with_long_ttl(&env, &name).await?;
    let (started_tx, started_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        lock.lock(|_lease| async move {
            let _ = started_tx.send(());
            std::future::pending::<Result<(), Error>>().await
        })
        .await
    });
    started_rx.await.map_err(|_| "the job never started")?;
    task.abort();
    let _ = task.await;
    expect_freed(&env, &name, "the lock future was dropped").await
}

pub(crate) async fn guard_drop_releases(env: Env) -> Verdict {
    let name = unique_name("guard_drop");
    let lock = lock_with_long_ttl(&env, &name).await?;
    let guard = lock.acquire().await.map_err(|e| e.to_string())?;
    drop(guard);
    expect_freed(&env, &name, "the guard was dropped").await
}

/// Drops `acquire` futures while they wait and while their statements are in flight.
pub(crate) async fn dropped_acquire_leaves_nothing_held(env: Env) -> Verdict {
    let name = unique_name("acquire_dropped");
    let holder = lock_with_long_ttl(&env, &name).await?;
    let waiter = quick(DistributedLock::builder(&name, env.connect().await?))
        .ttl(TTL)
        .poll_interval(Duration::from_millis(5))
        .build()
        .map_err(|e| e.to_string())?;

    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    if tokio::time::timeout(Duration::from_millis(200), waiter.acquire())
        .await
        .is_ok()
    {
        return Err("acquire returned while the lock was held".into());
    }
    guard.release().await.map_err(|e| e.to_string())?;
    expect_freed(&env, &name, "a waiting acquire was dropped").await?;

    // Drop acquires of a free lock at varied moments, many while their statement runs.
    for step in 0..20u64 {
        let _ = tokio::time::timeout(Duration::from_micros(step * 150), waiter.acquire()).await;
        expect_freed(
            &env,
            &name,
            &format!("an acquire dropped after {} µs", step * 150),
        )
        .await?;
    }
    Ok(())
}

/// Issue 19, item 1: a one-shot job (a migration, a cron run) whose guard is still in
/// scope when `main` returns. The lock must be free as soon as the process has exited,
/// not a TTL later.
pub(crate) async fn guard_dropped_at_the_end_of_main_is_released(env: Env) -> Verdict {
    let name = unique_name("drop-at-exit");
    let ttl = Duration::from_secs(30);
    let mut child = child::spawn(&env, &name, Mode::DropAtExit, ttl)?;
    let token: i64 = child
        .expect_parsed("TOKEN", Duration::from_secs(30))
        .await?;
    child.finish(Duration::from_secs(30)).await?;

    let lock = quick(DistributedLock::builder(&name, env.connect().await?))
        .build()
        .map_err(|e| e.to_string())?;
    match lock.try_acquire().await.map_err(|e| e.to_string())? {
        Attempt::Acquired(guard) if guard.fencing_token().get() > token => {
            guard.release().await.map_err(|e| e.to_string())
        }
        Attempt::Acquired(guard) => Err(format!(
            "acquired with token {} after the child's {token}",
            guard.fencing_token()
        )),
        Attempt::Held(holder) => Err(format!(
            "the exited child still holds the lock: {holder}; its dropped guard was never released"
        )),
    }
}
