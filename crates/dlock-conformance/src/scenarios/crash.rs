//! A holder killed with SIGKILL stops renewing; its lock frees itself within the TTL.

use std::time::Duration;

use dlock_core::DistributedLock;
use tokio::time::Instant;

use crate::child::{ChildProcess, Mode};
use crate::support::{Outcome, unique_name};
use crate::{Adapter, Env};

const TTL: Duration = Duration::from_secs(2);

pub(crate) async fn killed_holder_is_taken_over_within_ttl<A: Adapter>(env: Env<A>) -> Outcome {
    let name = unique_name("crash");
    let mut holder = ChildProcess::spawn(&env.url, &name, Mode::Hold, TTL)?;
    let line = holder.next_line(Duration::from_secs(30)).await?;
    let token: i64 = line
        .strip_prefix("ACQUIRED ")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("unexpected child output {line:?}"))?;
    // Let it renew at least once, so the takeover is measured from a renewed lease.
    tokio::time::sleep(TTL / 2).await;
    holder
        .child
        .start_kill()
        .map_err(|e| format!("cannot kill the holder: {e}"))?;
    let killed_at = Instant::now();
    holder.child.wait().await.map_err(|e| e.to_string())?;

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
