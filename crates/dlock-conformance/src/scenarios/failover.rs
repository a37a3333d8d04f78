//! A PostgreSQL primary failing over to its standby (the rig in `dlock-testkit`): fencing
//! tokens issued after the promotion exceed every token acknowledged before the crash,
//! and a holder whose acquisition the standby never received hears of its loss before
//! anyone else acquires. PostgreSQL only: the rig is PostgreSQL's.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::{ColumnType, QueryInterface, Value};
use dlock_core::{DistributedLock, LockAdmin, LockGuard};
use dlock_testkit::Partition;
use dlock_testkit::failover::{FailoverRig, Replication};
use tokio::time::Instant;

use crate::support::{Env, Verdict, eventually, unique_name};

const TTL: Duration = Duration::from_secs(2);

fn lock(
    name: &str,
    queries: Arc<dyn QueryInterface>,
    holder: &str,
) -> Result<DistributedLock, String> {
    DistributedLock::builder(name, queries)
        .ttl(TTL)
        .renew_interval(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(20))
        .holder(holder)
        .build()
        .map_err(|e| e.to_string())
}

async fn acquire(lock: &DistributedLock) -> Result<LockGuard, String> {
    tokio::time::timeout(Duration::from_secs(20), lock.acquire())
        .await
        .map_err(|_| format!("{} was not acquired within 20 s", lock.name()))?
        .map_err(|e| e.to_string())
}

/// Asynchronous replication, acquisitions the standby never receives: a takeover of a
/// name it knows and the creation of a name it does not. Their holder is cut off from
/// the new primary (as a node on the far side of the failure would be), so nothing but
/// its own deadline tells it; a contender on the new primary must get a larger token,
/// and only after that deadline.
pub(crate) async fn tokens_grow_and_lost_holders_end_first_across_a_failover(env: Env) -> Verdict {
    let rig = FailoverRig::up(Replication::Asynchronous).await?;
    let (known, fresh) = (unique_name("failover-known"), unique_name("failover-fresh"));
    let queries = env.connect_to(rig.url()).await?;
    let mut warmed_up = 0;
    for _ in 0..3 {
        let guard = acquire(&lock(&known, Arc::clone(&queries), "warm-up")?).await?;
        warmed_up = guard.fencing_token().get();
        guard.release().await.map_err(|e| e.to_string())?;
    }
    // What the standby has of `known`, before it stops receiving.
    let standby = env.connect_to(&rig.standby_url().await?).await?;
    eventually(
        Duration::from_secs(10),
        "the standby replays the warm-up",
        || {
            let (standby, known) = (Arc::clone(&standby), known.clone());
            // Until the standby has the table, reading it fails.
            async move { Ok(token_on(&standby, &known).await.ok().flatten() == Some(warmed_up)) }
        },
    )
    .await?;
    drop(standby);
    rig.hold_replication().await?;

    let partition = Partition::start(env.dialect, rig.url()).await?;
    let cut_off = partition.wrap(env.connect_to(partition.url(rig.url())).await?);
    let lost = [
        acquire(&lock(&known, Arc::clone(&cut_off), "lost in the failover")?).await?,
        acquire(&lock(&fresh, Arc::clone(&cut_off), "lost in the failover")?).await?,
    ];
    let lost_tokens = lost.each_ref().map(LockGuard::fencing_token);
    let mut losses = lost.each_ref().map(|guard| {
        let lease = guard.lease().clone();
        tokio::spawn(async move {
            lease.lost().await;
            Instant::now()
        })
    });

    partition.freeze();
    rig.crash().await?;
    let promoted = Instant::now();
    let contenders = env.connect_to(rig.url()).await?;
    for (index, name) in [&known, &fresh].into_iter().enumerate() {
        let guard = acquire(&lock(name, Arc::clone(&contenders), "after the failover")?).await?;
        let acquired = Instant::now();
        let token = guard.fencing_token();
        eprintln!(
            "{name}: token {} before the crash (lost), {} after, acquired {:.0?} after the promotion",
            lost_tokens[index],
            token,
            acquired - promoted
        );
        if token <= lost_tokens[index] {
            return Err(format!(
                "{name}: token {token} after the failover does not exceed {} acknowledged before it",
                lost_tokens[index]
            ));
        }
        // The lost holder's loss, which must have come first.
        let told = &mut losses[index];
        if !told.is_finished() {
            return Err(format!(
                "{name} was acquired while its lost holder still believed it held it"
            ));
        }
        let told = told.await.map_err(|e| e.to_string())?;
        if told > acquired {
            return Err(format!(
                "{name}: the lost holder was told {:?} after the takeover",
                told - acquired
            ));
        }
        guard.release().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Synchronous replication loses nothing: a holder keeps its lock across the failover,
/// renewing on the new primary, and the next holder's token exceeds its. Its lease is
/// longer than the others': until the new primary has a standby again, it commits
/// nothing, renewals included.
pub(crate) async fn a_holder_keeps_its_lock_across_a_synchronous_failover(env: Env) -> Verdict {
    const LONGER: Duration = Duration::from_secs(6);
    let rig = FailoverRig::up(Replication::Synchronous).await?;
    let name = unique_name("failover-sync");
    let holder = DistributedLock::builder(&name, env.connect_to(rig.url()).await?)
        .ttl(LONGER)
        .renew_interval(Duration::from_millis(200))
        .holder("across the failover")
        .build()
        .map_err(|e| e.to_string())?;
    let guard = acquire(&holder).await?;
    rig.crash().await?;
    rig.rebuild().await?;
    let rebuilt = Instant::now();
    // A lease renewed on the new primary: more of it left than any renewal before the
    // crash (over a second ago: the rebuild alone takes that) can have left.
    let admin = LockAdmin::new(env.connect_to(rig.url()).await?);
    eventually(
        Duration::from_secs(5),
        "the holder renews on the new primary",
        || {
            let (admin, name) = (&admin, &name);
            async move {
                let left = admin.inspect(name).await.map_err(|e| e.to_string())?;
                Ok(left.remaining_lease() > Some(LONGER - Duration::from_millis(500)))
            }
        },
    )
    .await?;
    eprintln!(
        "renewed on the new primary {:.0?} after the rebuild",
        rebuilt.elapsed()
    );
    if guard.is_lost() {
        return Err(format!(
            "the holder lost its lock in the failover: {}",
            guard.lost().await
        ));
    }
    let contender = lock(
        &name,
        env.connect_to(rig.url()).await?,
        "after the failover",
    )?;
    if contender
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .is_some()
    {
        return Err("a contender acquired a lock its holder kept across the failover".into());
    }
    let held = guard.fencing_token();
    guard.release().await.map_err(|e| e.to_string())?;
    let next = acquire(&contender).await?.fencing_token();
    if next <= held {
        return Err(format!(
            "token {next} after the failover does not exceed {held} before it"
        ));
    }
    Ok(())
}

/// The token of `name` on `queries`' database, if it has a row.
async fn token_on(queries: &Arc<dyn QueryInterface>, name: &str) -> Result<Option<i64>, String> {
    let read = dlock_testkit::statement(
        queries.dialect(),
        "SELECT fencing FROM distributed_lock WHERE name = ?",
        vec![Value::Text(name.to_owned())],
        &[ColumnType::Int],
    );
    let rows = queries.query(&read).await.map_err(|e| e.to_string())?;
    Ok(match rows.first().map(Vec::as_slice) {
        Some([Value::Int(token)]) => Some(*token),
        _ => None,
    })
}
