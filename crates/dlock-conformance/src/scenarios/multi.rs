//! Multi-locks: all names or none, under contention from overlapping sets in several
//! processes; exclusion with locks of the same names; loss of one name; a killed holder.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dlock_core::adapter::QueryInterface;
use dlock_core::{
    Attempt, DistributedLock, Error, ForceRelease, LockAdmin, LockState, LossReason, MultiLock,
};
use dlock_testkit::wall_ns;
use tokio::time::Instant;

use crate::child::{self, Mode};
use crate::scenarios::exclusion::{overlaps, parse_section};
use crate::scenarios::fencing::{create_ledger, ledger_write};
use crate::scenarios::waiting::WAKE_SLACK;
use crate::support::{Env, Verdict, eventually, is_free, quick, unique_name};

const NAMES: usize = 5;
const CONTENDERS: usize = 6;
const SECTIONS_EACH: usize = 40;
/// Each contender's set: all names but two, so that every two sets overlap.
const SET_SIZE: usize = NAMES - 2;

/// Contender `i`'s names: all but `i` and `i + 2` (mod [`NAMES`]), given in an order of
/// its own (reversed for odd `i`), which must not matter.
fn set_of(names: &[String], i: usize) -> Vec<String> {
    let mut set: Vec<String> = (0..NAMES)
        .filter(|&n| n != i % NAMES && n != (i + 2) % NAMES)
        .map(|n| names[n].clone())
        .collect();
    if i % 2 == 1 {
        set.reverse();
    }
    set
}

/// Processes contending with overlapping sets: every section of every name is exclusive
/// and its tokens grow (the ledger), every process finishes (no deadlock), and a reader
/// of the table never sees an acquisition holding only some of its names.
pub(crate) async fn multi_lock_is_all_or_none_under_contention(env: Env) -> Verdict {
    let base = unique_name("multi_contention");
    let names: Vec<String> = (0..NAMES).map(|n| format!("{base}/{n}")).collect();
    let started = std::time::Instant::now();
    let children = (0..CONTENDERS)
        .map(|i| {
            let mode = Mode::MultiContend {
                sections: SECTIONS_EACH,
            };
            let set = set_of(&names, i).join("\n");
            child::spawn(&env, &set, mode, Duration::from_secs(5))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // The reader: each `list` is one statement, one consistent view of the table.
    let admin = LockAdmin::new(env.connect().await?);
    let done = Arc::new(AtomicBool::new(false));
    let reading = {
        let (done, names) = (Arc::clone(&done), names.clone());
        tokio::spawn(async move {
            let mut views = 0_usize;
            while !done.load(Ordering::Relaxed) {
                let locks = match admin.list().await {
                    Ok(locks) => locks,
                    // A view missed (a busy pooler), not a partial one.
                    Err(error) if error.is_transient() => continue,
                    Err(error) => return Err(error.to_string()),
                };
                let mut held_by: HashMap<String, Vec<String>> = HashMap::new();
                for lock in locks.into_iter().filter(|lock| names.contains(&lock.name)) {
                    if let (LockState::Held, Some(owner)) = (lock.state, lock.owner_id) {
                        held_by.entry(owner).or_default().push(lock.name);
                    }
                }
                if let Some(partial) = held_by.values().find(|held| held.len() != SET_SIZE) {
                    return Err(format!(
                        "an acquisition held {} of its {SET_SIZE} names: {partial:?}",
                        partial.len()
                    ));
                }
                views += 1;
            }
            Ok::<_, String>(views)
        })
    };

    let mut sections: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut outcome = Ok(());
    for child in children {
        match child.finish(Duration::from_secs(120)).await {
            Ok(lines) => {
                for line in lines {
                    let mut words = line.splitn(3, ' ');
                    let (word, name, rest) = (words.next(), words.next(), words.next());
                    let (Some("SECTION"), Some(name), Some(rest)) = (word, name, rest) else {
                        return Err(format!("unexpected child output {line:?}"));
                    };
                    let section = parse_section("SECTION", &format!("SECTION {rest}"))?;
                    sections.entry(name.to_owned()).or_default().push(section);
                }
            }
            Err(error) => outcome = Err(error),
        }
    }
    done.store(true, Ordering::Relaxed);
    let views = reading.await.map_err(|e| e.to_string())??;
    outcome?;

    let total: usize = sections.values().map(Vec::len).sum();
    if total != CONTENDERS * SECTIONS_EACH * SET_SIZE {
        return Err(format!(
            "expected {} name-sections, got {total}",
            CONTENDERS * SECTIONS_EACH * SET_SIZE
        ));
    }
    for (name, sections) in &mut sections {
        let overlapping = overlaps(sections, &format!("{name}'s fencing token"))?;
        if overlapping > 0 {
            return Err(format!("{overlapping} overlapping sections on {name}"));
        }
    }
    eprintln!(
        "multi_lock_is_all_or_none_under_contention: {} sections of {SET_SIZE} of {NAMES} \
         names by {CONTENDERS} processes in {:.1?}, no overlaps; {views} views of the table, \
         none partial",
        CONTENDERS * SECTIONS_EACH,
        started.elapsed()
    );
    Ok(())
}

/// A lock and a multi-lock over a common name exclude each other and share its tokens;
/// names outside the set stay free; duplicates are merged and order does not matter.
pub(crate) async fn multi_lock_and_lock_exclude_each_other(env: Env) -> Verdict {
    let base = unique_name("multi_exclusion");
    let [a, b, c] = ["a", "b", "c"].map(|n| format!("{base}/{n}"));
    let queries = env.connect().await?;
    let multi = MultiLock::builder([&b, &a, &b], Arc::clone(&queries))
        .ttl(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    if multi.names() != [a.clone(), b.clone()] {
        return Err(format!("names not merged and sorted: {:?}", multi.names()));
    }
    let lock_a = quick(DistributedLock::builder(&a, Arc::clone(&queries)))
        .build()
        .map_err(|e| e.to_string())?;
    let lock_b = quick(DistributedLock::builder(&b, Arc::clone(&queries)))
        .build()
        .map_err(|e| e.to_string())?;

    // A token of `a` from a plain lock first: the multi-lock's must be larger.
    let first_a = lock_a.acquire().await.map_err(|e| e.to_string())?;
    let token_a = first_a.fencing_token();
    first_a.release().await.map_err(|e| e.to_string())?;

    let guard = take(&multi).await?;
    let multi_a = guard.fencing_token(&a).ok_or("no token for a")?;
    if multi_a <= token_a || guard.fencing_token(&b).is_none() || guard.fencing_token(&c).is_some()
    {
        return Err(format!("tokens wrong: {guard:?} after a's {token_a}"));
    }
    if lock_a
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .is_some()
    {
        return Err("a lock took a name the multi-lock holds".into());
    }
    if !is_free(&queries, &c).await? {
        return Err("a name outside the set was held".into());
    }
    guard.release().await.map_err(|e| e.to_string())?;

    // The other way round: a lock on `b` keeps the multi-lock out, wholly.
    let held_b = lock_b.acquire().await.map_err(|e| e.to_string())?;
    match multi.try_acquire().await.map_err(|e| e.to_string())? {
        Attempt::Held(holder) if holder.as_str().contains(b.as_str()) => {}
        Attempt::Held(holder) => return Err(format!("the holder does not name b: {holder}")),
        Attempt::Acquired(_) => return Err("the multi-lock took a name a lock holds".into()),
    }
    if !is_free(&queries, &a).await? {
        return Err("a failed multi-lock attempt left a name held".into());
    }
    let token_b = held_b.fencing_token();
    held_b.release().await.map_err(|e| e.to_string())?;
    let guard = take(&multi).await?;
    if guard.fencing_token(&b).is_none_or(|token| token <= token_b) {
        return Err(format!(
            "b's token did not grow past the lock's {token_b}: {guard:?}"
        ));
    }
    guard.release().await.map_err(|e| e.to_string())?;
    for name in [&a, &b] {
        if !is_free(&queries, name).await? {
            return Err(format!("{name} not freed by the multi-lock's release"));
        }
    }
    Ok(())
}

async fn take(multi: &MultiLock) -> Result<dlock_core::MultiLockGuard, String> {
    multi
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or_else(|| format!("{} not free", multi.name()))
}

/// An operator revokes one name of a held multi-lock: the whole guard reports the loss,
/// before a waiter on that name gets it; the other names are freed when the guard goes;
/// `list` shows each name held as part of a multi-lock. A fence with the lease passes
/// before, and is refused after.
pub(crate) async fn multi_lock_loss_of_one_name_is_the_loss_of_all(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let base = unique_name("multi_loss");
    let names: Vec<String> = (0..3).map(|n| format!("{base}/{n}")).collect();
    let queries = env.connect().await?;
    let multi = MultiLock::builder(&names, Arc::clone(&queries))
        .ttl(TTL)
        .holder("multi-loss")
        .build()
        .map_err(|e| e.to_string())?;
    let guard = take(&multi).await?;
    create_ledger(&queries).await?;
    let write = ledger_write(&queries, guard.lease(), "multi-lock");
    env.fenced_write(guard.lease(), &write, Duration::ZERO)
        .await
        .map_err(|e| format!("a fenced write by the live multi-lock failed: {e}"))?;

    let admin = LockAdmin::new(Arc::clone(&queries));
    let revoked = &names[1];
    let info = admin.inspect(revoked).await.map_err(|e| e.to_string())?;
    let holder = info.holder.clone().unwrap_or_default();
    if !holder.contains("multi-loss") || !holder.contains("multi-lock of 3 names") {
        return Err(format!(
            "the holder does not say it is a multi-lock's: {holder:?}"
        ));
    }
    let revoking = admin
        .force_release(revoked, info.fencing_token)
        .await
        .map_err(|e| e.to_string())?;
    if !matches!(revoking, ForceRelease::Revoked(_)) {
        return Err(format!("not revoked: {revoking:?}"));
    }
    let waiter = quick(DistributedLock::builder(revoked, Arc::clone(&queries)))
        .acquire_timeout(TTL * 3)
        .build()
        .map_err(|e| e.to_string())?;
    // Whether the loss had fired when the waiter got in, asked at that moment: two
    // timestamps, each taken when its task next runs, could be ordered by the scheduler.
    let lease = guard.lease().clone();
    let waiting = tokio::spawn(async move {
        let taken = waiter.acquire().await.map_err(|e| e.to_string())?;
        let lost_before = lease.is_lost();
        taken.release().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(lost_before)
    });
    let reason = tokio::time::timeout(TTL * 2, guard.lost())
        .await
        .map_err(|_| "the loss of a name was never signalled".to_owned())?;
    if reason != LossReason::TakenOver {
        return Err(format!("lost for another reason: {reason}"));
    }
    match env
        .fenced_write(guard.lease(), &write, Duration::ZERO)
        .await
    {
        Err(error) if matches!(error.downcast_ref::<Error>(), Some(Error::Fenced { .. })) => {}
        Err(error) => return Err(format!("the late fenced write failed oddly: {error}")),
        Ok(()) => return Err("a fenced write after the loss of a name was accepted".into()),
    }
    if !waiting.await.map_err(|e| e.to_string())?? {
        return Err("a waiter took the revoked name before the loss was signalled".into());
    }
    drop(guard);
    for name in [&names[0], &names[2]] {
        eventually(TTL, "the other names freed", || is_free(&queries, name)).await?;
    }
    Ok(())
}

/// A holder killed with SIGKILL: every name frees within the lease, for a multi-lock
/// waiting on an overlapping set.
pub(crate) async fn multi_lock_killed_holder_frees_every_name_within_ttl(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let base = unique_name("multi_crash");
    let names: Vec<String> = (0..3).map(|n| format!("{base}/{n}")).collect();
    let mut holder = child::spawn(&env, &names.join("\n"), Mode::MultiHold, TTL)?;
    holder.expect("ACQUIRED", Duration::from_secs(30)).await?;
    let queries: Arc<dyn QueryInterface> = env.connect().await?;
    let before = LockAdmin::new(Arc::clone(&queries))
        .inspect(&names[2])
        .await
        .map_err(|e| e.to_string())?
        .fencing_token;
    let killed_at = Instant::now();
    holder.kill().await?;
    let overlapping = MultiLock::builder([&names[2], &format!("{base}/other")], queries)
        .poll_interval(Duration::from_millis(20))
        .acquire_timeout(TTL + Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = overlapping
        .acquire()
        .await
        .map_err(|e| format!("the killed holder's names were not freed in time: {e}"))?;
    eprintln!(
        "multi_lock_killed_holder: taken over {} ms after SIGKILL (TTL {} ms)",
        killed_at.elapsed().as_millis(),
        TTL.as_millis()
    );
    if guard
        .fencing_token(&names[2])
        .is_none_or(|token| token <= before)
    {
        return Err(format!(
            "the takeover's token did not grow past {before}: {guard:?}"
        ));
    }
    guard.release().await.map_err(|e| e.to_string())
}

/// A multi-lock waiting in another process (default poll interval) for a name a lock
/// holds wakes on that lock's release: by a notice where its adapter listens, else
/// within its poll interval.
pub(crate) async fn multi_lock_waiter_in_another_process_wakes_on_a_release(env: Env) -> Verdict {
    let base = unique_name("multi_wake");
    let names: Vec<String> = (0..3).map(|n| format!("{base}/{n}")).collect();
    let queries = env.connect().await?;
    let listens = queries.listener().is_some();
    let holder = quick(DistributedLock::builder(&names[1], queries))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let mut waiter = child::spawn(
        &env,
        &names.join("\n"),
        Mode::MultiWait,
        Duration::from_secs(5),
    )?;
    waiter.expect("WAITING", Duration::from_secs(30)).await?;
    // Long enough for the waiter's back-off to reach its cap (the default 1 s poll
    // interval), so only a wake-up can make it fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    guard.release().await.map_err(|e| e.to_string())?;
    let released_at = wall_ns();
    let acquired_at: u64 = waiter
        .expect_parsed("ACQUIRED", Duration::from_secs(10))
        .await?;
    waiter.finish(Duration::from_secs(10)).await?;
    let gap = Duration::from_nanos(acquired_at.saturating_sub(released_at));
    let limit = if listens {
        WAKE_SLACK
    } else {
        Duration::from_secs(1) + WAKE_SLACK
    };
    eprintln!(
        "multi_wake: a multi-lock waiting in another process acquired {} ms after the release",
        gap.as_millis()
    );
    if gap > limit {
        return Err(format!(
            "the waiter took {gap:?} to acquire (limit {limit:?})"
        ));
    }
    Ok(())
}
