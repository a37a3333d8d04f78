//! The loss signal: it fires when the lock row is changed under the holder, and — when
//! renewals cannot get through — before the database could let anyone else in.

use std::time::Duration;

use dlock_core::adapter::Value;
use dlock_core::{DistributedLock, Error, LossReason};
use tokio::time::Instant;

use super::fencing::holder_through;
use crate::support::{Env, Verdict, quick, sql, unique_name};
use dlock_testkit::proxy::Proxy;

pub(crate) async fn loss_fires_when_row_is_tampered_with(env: Env) -> Verdict {
    let name = unique_name("tampered");
    let queries = env.connect().await?;
    let lock = DistributedLock::builder(&name, queries.clone())
        .ttl(Duration::from_secs(5))
        .renew_interval(Duration::from_millis(100))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = lock.acquire().await.map_err(|e| e.to_string())?;
    let tamper = sql(
        queries.dialect(),
        "UPDATE distributed_lock SET owner = 'an intruder' WHERE name = ?",
        vec![Value::Text(name.clone())],
    );
    let changed = queries.execute(&tamper).await.map_err(|e| e.to_string())?;
    if changed != 1 {
        return Err(format!("tampering changed {changed} rows"));
    }
    let tampered_at = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .map_err(|_| "the loss signal did not fire within 2 s of tampering")?;
    eprintln!(
        "tampered: loss signalled {:.0?} after the row changed",
        tampered_at.elapsed()
    );
    if reason != LossReason::TakenOver {
        return Err(format!("unexpected loss reason: {reason}"));
    }
    match guard.release().await {
        Err(Error::Lost { .. }) => Ok(()),
        other => Err(format!(
            "release after a loss gave {other:?}, not Error::Lost"
        )),
    }
}

/// A holder whose statements hang (a network partition) is told of its loss before a
/// contender takes the lock over.
pub(crate) async fn loss_fires_before_a_takeover(env: Env) -> Verdict {
    let name = unique_name("partitioned");
    let partition = env.partition().await?;
    let holder = holder_through(&env, &partition, &name).await?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let contender = quick(DistributedLock::builder(&name, env.connect().await?))
        .poll_interval(Duration::from_millis(10))
        .build()
        .map_err(|e| e.to_string())?;
    partition.freeze();
    let lease = guard.lease().clone();
    let watcher = tokio::spawn(async move {
        let reason = lease.lost().await;
        (Instant::now(), reason)
    });
    let taken = contender.acquire().await.map_err(|e| e.to_string())?;
    let taken_at = Instant::now();
    let (lost_at, reason) = tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .map_err(|_| "the holder was never told of its loss")?
        .map_err(|e| e.to_string())?;
    if lost_at >= taken_at {
        return Err(format!(
            "the loss was signalled {:?} after the takeover",
            lost_at - taken_at
        ));
    }
    eprintln!(
        "partitioned: loss signalled {:.0?} before the takeover ({reason})",
        taken_at - lost_at
    );
    if !matches!(reason, LossReason::RenewalFailed { .. }) {
        return Err(format!("unexpected loss reason: {reason}"));
    }
    taken.release().await.map_err(|e| e.to_string())?;
    drop(guard);
    Ok(())
}

/// A holder whose connections are refused is told of its loss before its lease expires
/// by the database's clock.
pub(crate) async fn loss_fires_before_expiry_when_database_unreachable(env: Env) -> Verdict {
    let name = unique_name("unreachable");
    let proxy = Proxy::start(&env.url).await?;
    let holder = DistributedLock::builder(&name, env.connect_to(proxy.url()).await?)
        // Long enough that a pool which reports a refused connection only when its
        // connect timeout runs out (bb8; 2 s in the tests) reports it before the loss.
        .ttl(Duration::from_secs(4))
        .renew_interval(Duration::from_millis(300))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let observer = quick(DistributedLock::builder(&name, env.connect().await?))
        .build()
        .map_err(|e| e.to_string())?;
    proxy.cut();
    // The database's expiry, on our clock: now plus what the database says is left.
    let probed_at = Instant::now();
    let expires_in = match observer.try_acquire().await.map_err(|e| e.to_string())? {
        dlock_core::Attempt::Held(holder) => holder.expires_in(),
        dlock_core::Attempt::Acquired(_) => return Err("the lease ended at once".into()),
    };
    let expires_at = probed_at + expires_in;
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .map_err(|_| "the loss signal did not fire while the database was unreachable")?;
    let lost_at = Instant::now();
    if lost_at >= expires_at {
        return Err(format!(
            "the loss was signalled {:?} after the lease expired",
            lost_at - expires_at
        ));
    }
    eprintln!(
        "unreachable: loss signalled {:.0?} before the lease expired (TTL 4 s; {reason})",
        expires_at - lost_at
    );
    match reason {
        LossReason::RenewalFailed {
            last_error: Some(_),
        } => Ok(()),
        other => Err(format!(
            "expected a renewal failure with its error, got: {other}"
        )),
    }
}
