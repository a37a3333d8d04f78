//! A holder killed with SIGKILL stops renewing; its lock frees itself within the TTL, for
//! a waiter that comes afterwards and for waiters that were already waiting.

use std::time::Duration;

use dlock_core::{DistributedLock, Error};
use tokio::time::Instant;

use dlock_testkit::wall_ns;

use crate::child::{self, Mode};
use crate::support::{Env, Verdict, unique_name};

const TTL: Duration = Duration::from_secs(2);

pub(crate) async fn killed_holder_is_taken_over_within_ttl(env: Env) -> Verdict {
    let name = unique_name("crash");
    let mut holder = child::spawn(&env, &name, Mode::Hold, TTL)?;
    let token: i64 = holder
        .expect_parsed("ACQUIRED", Duration::from_secs(30))
        .await?;
    // Let it renew at least once, so the takeover is measured from a renewed lease.
    tokio::time::sleep(TTL / 2).await;
    let killed_at = Instant::now();
    holder.kill().await?;

    let lock = DistributedLock::builder(&name, env.connect().await?)
        .poll_interval(Duration::from_millis(20))
        .acquire_timeout(TTL + Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = lock
        .acquire()
        .await
        .map_err(|e| format!("the killed holder's lock was not freed in time: {e}"))?;
    let takeover = killed_at.elapsed();
    eprintln!(
        "killed_holder: taken over {} ms after SIGKILL (TTL {} ms)",
        takeover.as_millis(),
        TTL.as_millis()
    );
    if guard.fencing_token().get() <= token {
        return Err("the takeover's fencing token is not larger".into());
    }
    guard.release().await.map_err(|e| e.to_string())
}

/// Waiters that are already waiting when the holder is killed — one in this process, one
/// in another — take the lock over within the holder's lease and a little more, whatever
/// woke or did not wake them; and a waiter that gives up first names the holder it saw.
pub(crate) async fn warm_waiters_take_over_a_killed_holder_within_its_lease(env: Env) -> Verdict {
    warm_takeover(env, true).await
}

/// [`warm_waiters_take_over_a_killed_holder_within_its_lease`] with the waiter in this
/// process alone, so that no other process's takeover and release can wake it.
pub(crate) async fn a_warm_waiter_alone_takes_over_a_killed_holder_within_its_lease(
    env: Env,
) -> Verdict {
    warm_takeover(env, false).await
}

async fn warm_takeover(env: Env, other_process: bool) -> Verdict {
    /// The lease ends at most a TTL after the kill; this covers a probe, an attempt and
    /// scheduling on a busy machine, not a nap.
    const TAKEOVER_SLACK: Duration = Duration::from_secs(1);
    const GIVE_UP_AFTER: Duration = Duration::from_millis(700);
    let name = unique_name("warm_crash");

    // A process that has been waiting for locks on this table for a while: where the
    // adapter listens, its listener is up and trusted before our waiters start.
    let busy = unique_name("warm_crash_busy");
    let busy_holder =
        DistributedLock::new(&busy, env.connect().await?).map_err(|e| e.to_string())?;
    let busy_guard = busy_holder.acquire().await.map_err(|e| e.to_string())?;
    let busy_waiter =
        DistributedLock::new(&busy, env.connect().await?).map_err(|e| e.to_string())?;
    let busy_waiting = tokio::spawn(async move { busy_waiter.acquire().await.map(drop) });

    let mut holder = child::spawn(&env, &name, Mode::Hold, TTL)?;
    let token: i64 = holder
        .expect_parsed("ACQUIRED", Duration::from_secs(30))
        .await?;

    // Waiters with the default poll interval, as a user would have them.
    let mut there = match other_process {
        true => Some(child::spawn(&env, &name, Mode::Wait, TTL)?),
        false => None,
    };
    let here = DistributedLock::builder(&name, env.connect().await?)
        .ttl(TTL)
        .build()
        .map_err(|e| e.to_string())?;
    let waiting_here = tokio::spawn(async move {
        let guard = here.acquire().await.map_err(|e| e.to_string())?;
        let acquired_at = wall_ns();
        let token = guard.fencing_token().get();
        guard.release().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((acquired_at, token))
    });
    let impatient = DistributedLock::builder(&name, env.connect().await?)
        .acquire_timeout(GIVE_UP_AFTER)
        .build()
        .map_err(|e| e.to_string())?;
    let giving_up = tokio::spawn(async move { impatient.acquire().await.map(drop) });
    if let Some(there) = &mut there {
        let line = there.next_line(Duration::from_secs(30)).await?;
        if line != "WAITING" {
            return Err(format!("unexpected child output {line:?}"));
        }
    }
    // Warm: every waiter has made its first attempt and is waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = wall_ns();
    holder.kill().await?;

    let limit = Duration::from_secs(30);
    let (here_at, here_token) = tokio::time::timeout(limit, waiting_here)
        .await
        .map_err(|_| format!("the waiter in this process did not acquire within {limit:?}"))?
        .map_err(|e| e.to_string())??;
    let there_at = match there {
        Some(mut there) => {
            let acquired_at = there.expect_parsed("ACQUIRED", limit).await?;
            there.finish(Duration::from_secs(10)).await?;
            acquired_at
        }
        None => u64::MAX,
    };
    busy_waiting.abort();
    busy_guard.release().await.map_err(|e| e.to_string())?;
    let since_kill = |at: u64| Duration::from_nanos(at.saturating_sub(killed_at));
    let takeover = since_kill(here_at.min(there_at));
    eprintln!(
        "warm_crash: taken over {} ms after SIGKILL (TTL {} ms; this process's waiter at {} \
         ms{})",
        takeover.as_millis(),
        TTL.as_millis(),
        since_kill(here_at).as_millis(),
        match other_process {
            true => format!(
                ", the other process's at {} ms",
                since_kill(there_at).as_millis()
            ),
            false => String::new(),
        }
    );
    let gave_up = giving_up.await.map_err(|e| e.to_string())?;
    match gave_up {
        Err(Error::Timeout {
            holder: Some(seen), ..
        }) if seen.as_str().contains("conformance child hold") => {}
        other => {
            return Err(format!(
                "a waiter that gave up should name the holder it saw; it returned {other:?}"
            ));
        }
    }
    if here_token <= token {
        return Err(format!(
            "the takeover's fencing token {here_token} is not larger than the killed \
             holder's {token}"
        ));
    }
    if takeover > TTL + TAKEOVER_SLACK {
        return Err(format!(
            "the first takeover came {takeover:?} after the kill; the limit is the TTL \
             ({TTL:?}) and {TAKEOVER_SLACK:?}"
        ));
    }
    Ok(())
}
