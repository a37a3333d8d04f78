//! The admin API: list and inspect show who holds a lock; a force release with a stale
//! token is refused; with the current one it revokes the lock, the holder learns, and
//! nobody gets in before the revoked lease ends — unless it frees the lock at once
//! (`force_release_now`).

use std::time::Duration;

use dlock_core::adapter::{ColumnType, Value};
use dlock_core::{
    Dialect, DistributedLock, Error, FencingToken, ForceRelease, LockAdmin, LockInfo, LockState,
    LossReason, TableName,
};

use tokio::time::Instant;

use crate::support::{Env, Verdict, is_free_in, unique_name};

/// A table of its own, so that listing reads a few rows, not every test's.
const TABLE: &str = "dlock_admin_conformance";
const LABEL: &str = "conformance-admin";
const TTL: Duration = Duration::from_secs(5);

pub(crate) async fn admin_lists_inspects_and_force_releases(env: Env) -> Verdict {
    let name = unique_name("admin");
    let lock = DistributedLock::builder(&name, env.connect().await?)
        .table(TABLE)
        .ttl(TTL)
        // Frequent renewals, so the holder learns of the force release quickly.
        .renew_interval(Duration::from_millis(100))
        .holder(LABEL)
        .build()
        .map_err(|e| e.to_string())?;
    let table = TableName::parse(TABLE).map_err(|e| e.to_string())?;
    let admin = LockAdmin::with_table(env.connect().await?, table);

    // A token from an acquisition that has ended: what an operator saw a while ago.
    let first = lock.acquire().await.map_err(|e| e.to_string())?;
    let stale = first.fencing_token();
    first.release().await.map_err(|e| e.to_string())?;
    let guard = lock.acquire().await.map_err(|e| e.to_string())?;
    let token = guard.fencing_token();

    let listed = admin.list().await.map_err(|e| e.to_string())?;
    let Some(entry) = listed.iter().find(|info| info.name == name) else {
        return Err(format!("list does not show {name:?}: {listed:?}"));
    };
    expect_held(entry, token, guard.lease().owner_id())?;
    let inspected = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    expect_held(&inspected, token, guard.lease().owner_id())?;

    match admin.force_release(&name, stale).await {
        Err(Error::TokenChanged {
            expected,
            current,
            holder,
            ..
        }) if expected == stale && current == token => {
            if !holder.as_deref().is_some_and(|h| h.contains(LABEL)) {
                return Err(format!("the refusal names holder {holder:?}"));
            }
        }
        other => return Err(format!("a stale token was not refused: {other:?}")),
    }
    if guard.is_lost()
        || admin.inspect(&name).await.map_err(|e| e.to_string())?.state != LockState::Held
    {
        return Err("a refused force release changed the lock".into());
    }

    match admin.force_release(&name, token).await {
        Ok(ForceRelease::Revoked(was)) if was.fencing_token == token => {
            if !was.holder.as_deref().is_some_and(|h| h.contains(LABEL)) {
                return Err(format!("the revocation names holder {:?}", was.holder));
            }
        }
        other => {
            return Err(format!(
                "the current token did not revoke the lock: {other:?}"
            ));
        }
    }
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .map_err(|_| "the holder's loss signal did not fire within 2 s of the force release")?;
    if reason != LossReason::TakenOver {
        return Err(format!("unexpected loss reason: {reason}"));
    }
    let revoked = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    let frees_in = revoked.remaining_lease().unwrap_or_default();
    if revoked.state != LockState::Revoked
        || revoked.owner_id.is_some()
        || revoked.fencing_token != token
        || frees_in.is_zero()
        || frees_in > TTL
    {
        return Err(format!("after the force release: {revoked:?}"));
    }
    match admin.force_release(&name, token).await {
        Ok(ForceRelease::AlreadyRevoked(_)) => {}
        other => return Err(format!("revoking a revoked lock gave {other:?}")),
    }
    if is_free_in(&env.connect().await?, TABLE, &name).await? {
        return Err("another process took the revoked lock before its lease ended".into());
    }

    // Now, as for a holder known to be dead: free at once.
    match admin.force_release_now(&name, token).await {
        Ok(ForceRelease::Freed(was)) if was.state == LockState::Revoked => {}
        other => return Err(format!("freeing the revoked lock now gave {other:?}")),
    }
    let after = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    if after.state != LockState::Free || after.owner_id.is_some() || after.fencing_token != token {
        return Err(format!("after the release now: {after:?}"));
    }
    match admin.force_release_now(&name, token).await {
        Ok(ForceRelease::AlreadyFree(_)) => {}
        other => return Err(format!("releasing a free lock gave {other:?}")),
    }
    match admin.force_release(&name, token).await {
        Ok(ForceRelease::AlreadyFree(_)) => {}
        other => return Err(format!("revoking a free lock gave {other:?}")),
    }
    if !is_free_in(&env.connect().await?, TABLE, &name).await? {
        return Err("another process cannot take the force-released lock".into());
    }
    drop(guard);
    Ok(())
}

/// How a force release frees a lock in [`force_release_never_lets_anyone_in_first`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freeing {
    /// `force_release`: revoke, free when the lease ends.
    Revoke,
    /// `force_release_now`: free at once.
    Now,
}

/// A live holder (TTL 3 s, renewing every 1 s) is force-released just after a renewal,
/// while a competitor tries to acquire every 10 ms. By default the competitor gets in
/// only after the holder's loss fired and after the revoked lease ended; with
/// `force_release_now`, at once.
pub(crate) async fn force_release_never_lets_anyone_in_first(env: Env) -> Verdict {
    for freeing in [Freeing::Revoke, Freeing::Now] {
        force_release_against_a_competitor(&env, freeing).await?;
    }
    Ok(())
}

async fn force_release_against_a_competitor(env: &Env, freeing: Freeing) -> Verdict {
    let name = unique_name(&format!("force_release_{freeing:?}"));
    let holder = DistributedLock::builder(&name, env.connect().await?)
        .table(TABLE)
        .ttl(Duration::from_secs(3))
        .renew_interval(Duration::from_secs(1))
        .holder(LABEL)
        .build()
        .map_err(|e| e.to_string())?;
    let table = TableName::parse(TABLE).map_err(|e| e.to_string())?;
    let admin = LockAdmin::with_table(env.connect().await?, table);
    let competitor = DistributedLock::builder(&name, env.connect().await?)
        .table(TABLE)
        .build()
        .map_err(|e| e.to_string())?;

    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let lease = guard.lease().clone();
    let lost_at = tokio::spawn(async move {
        let reason = lease.lost().await;
        (Instant::now(), reason)
    });
    // Just after the first renewal: the holder's next one is a renew interval away.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = Instant::now();
    let outcome = match freeing {
        Freeing::Revoke => admin.force_release(&name, guard.fencing_token()).await,
        Freeing::Now => admin.force_release_now(&name, guard.fencing_token()).await,
    };
    let was = match outcome {
        Ok(ForceRelease::Revoked(was)) if freeing == Freeing::Revoke => was,
        Ok(ForceRelease::Freed(was)) if freeing == Freeing::Now => was,
        other => return Err(format!("the {freeing:?} force release gave {other:?}")),
    };
    // The revoked lease ends no earlier than this, by the local clock (the database read
    // `was` after `before`).
    let lease_end = before + was.remaining_lease().unwrap_or_default();
    let (acquired_at, taken) = loop {
        if let Some(taken) = competitor
            .try_acquire()
            .await
            .map_err(|e| e.to_string())?
            .acquired()
        {
            break (Instant::now(), taken);
        }
        if before.elapsed() > Duration::from_secs(10) {
            return Err(format!("the {freeing:?} force-released lock never freed"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (lost_at, reason) = tokio::time::timeout(Duration::from_secs(5), lost_at)
        .await
        .map_err(|_| "the holder's loss never fired")?
        .map_err(|e| e.to_string())?;
    if reason != LossReason::TakenOver {
        return Err(format!("unexpected loss reason: {reason}"));
    }
    let after_release = acquired_at - before;
    eprintln!(
        "force release ({freeing:?}): the competitor acquired {} ms after it, the holder's \
         loss fired {} ms after it",
        after_release.as_millis(),
        lost_at.saturating_duration_since(before).as_millis(),
    );
    match freeing {
        Freeing::Revoke => {
            if acquired_at < lost_at {
                return Err(format!(
                    "the competitor acquired {:?} before the holder's loss fired",
                    lost_at - acquired_at
                ));
            }
            if acquired_at < lease_end {
                return Err(format!(
                    "the competitor acquired {:?} before the revoked lease ended",
                    lease_end - acquired_at
                ));
            }
        }
        Freeing::Now => {
            if after_release > Duration::from_millis(500) {
                return Err(format!(
                    "the competitor took {after_release:?} to acquire a lock freed at once"
                ));
            }
        }
    }
    taken.release().await.map_err(|e| e.to_string())?;
    drop(guard);
    Ok(())
}

/// A name never acquired, and a table that does not exist, are errors that say so.
pub(crate) async fn admin_reports_missing_locks_and_tables(env: Env) -> Verdict {
    let queries = env.connect().await?;
    let table = TableName::parse(TABLE).map_err(|e| e.to_string())?;
    let admin = LockAdmin::with_table(queries.clone(), table);
    admin.create_table().await.map_err(|e| e.to_string())?;
    let name = unique_name("admin_missing");
    match admin.inspect(&name).await {
        Err(Error::NoSuchLock { name: missing, .. }) if missing == name => {}
        other => return Err(format!("inspecting a missing lock gave {other:?}")),
    }
    match admin
        .force_release(&name, "1".parse().map_err(|e: Error| e.to_string())?)
        .await
    {
        Err(Error::NoSuchLock { .. }) => {}
        other => return Err(format!("releasing a missing lock gave {other:?}")),
    }
    let missing_table = TableName::parse("dlock_admin_no_such_table").map_err(|e| e.to_string())?;
    match LockAdmin::with_table(queries, missing_table).list().await {
        Err(Error::NoSuchTable { table }) if table == "dlock_admin_no_such_table" => Ok(()),
        other => Err(format!("listing a missing table gave {other:?}")),
    }
}

fn expect_held(info: &LockInfo, token: FencingToken, owner: &str) -> Verdict {
    let remaining = info.remaining_lease().unwrap_or_default();
    let acquired_before_read = info.acquired_at.is_some_and(|at| at <= info.read_at);
    let shown = info.state == LockState::Held
        && info.fencing_token == token
        && info.owner_id.as_deref() == Some(owner)
        && info.holder.as_deref().is_some_and(|h| h.contains(LABEL))
        && remaining > Duration::ZERO
        && remaining <= TTL
        && acquired_before_read;
    if shown {
        Ok(())
    } else {
        Err(format!(
            "expected held with token {token} by {LABEL}, owner {owner}, lease within \
             {TTL:?}: {info:?}"
        ))
    }
}

/// `LockAdmin::durability` reads the database's own settings: the one each dialect
/// depends on most, as the database reports it when asked directly.
pub(crate) async fn durability_reports_the_database_settings(env: Env) -> Verdict {
    let queries = env.connect().await?;
    let (setting, direct) = match env.dialect {
        Dialect::Postgres => ("fsync", "SELECT current_setting('fsync')"),
        Dialect::Mysql => (
            "innodb_flush_log_at_trx_commit",
            "SELECT CAST(@@innodb_flush_log_at_trx_commit AS CHAR)",
        ),
        _ => (
            "synchronous",
            "SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous()",
        ),
    };
    let read = dlock_testkit::statement(env.dialect, direct, vec![], &[ColumnType::Text]);
    let expected = match queries
        .query(&read)
        .await
        .map_err(|e| e.to_string())?
        .as_slice()
    {
        [row] => match row.as_slice() {
            [Value::Text(value)] => value.clone(),
            other => return Err(format!("{direct} gave {other:?}")),
        },
        other => return Err(format!("{direct} gave {other:?}")),
    };
    let durability = LockAdmin::new(queries)
        .durability()
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("{durability}");
    match durability.settings.iter().find(|s| s.name == setting) {
        Some(found) if found.value == expected => Ok(()),
        Some(found) => Err(format!(
            "durability says {setting} = {}, the database says {expected}",
            found.value
        )),
        None => Err(format!(
            "durability does not report {setting}: {durability:?}"
        )),
    }
}
