//! Semaphores: never more holders than permits, under contention from several processes;
//! every permit obtainable and no more; a killed holder's permit frees within its lease;
//! a waiter in another process wakes on a release; a revoked permit's holder hears of its
//! loss before anyone takes it; the count is part of the name's definition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::adapter::{QueryInterface, Statement, StatementKind};
use dlock_core::{
    Attempt, Error, ForceRelease, LockAdmin, LossReason, MAX_PERMITS, Outcome, Semaphore,
    SemaphoreBuilder,
};
use dlock_testkit::{Flow, Tap, only_reads, wall_ns};
use tokio::time::Instant;

use crate::child::{self, Mode};
use crate::scenarios::exclusion::{Section, overlaps, parse_section};
use crate::scenarios::waiting::WAKE_SLACK;
use crate::support::{Env, Verdict, after_first_attempt, unique_name};

const PERMITS: u32 = 3;
const CONTENDERS: usize = 6;
const SECTIONS_EACH: usize = 25;

/// A semaphore on a new pool with short timings for tests.
async fn semaphore(env: &Env, name: &str, permits: u32) -> Result<SemaphoreBuilder, String> {
    Ok(Semaphore::builder(name, permits, env.connect().await?)
        .ttl(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(20)))
}

/// Processes contending for the permits: each permit's sections never overlap and its
/// tokens grow (the ledger of sections, per permit), at no instant do more sections run
/// than there are permits, and more than one does at some instant (it is not a lock).
pub(crate) async fn semaphore_bound_is_never_exceeded(env: Env) -> Verdict {
    let name = unique_name("semaphore_bound");
    let started = std::time::Instant::now();
    let children = (0..CONTENDERS)
        .map(|_| {
            let mode = Mode::SemContend {
                sections: SECTIONS_EACH,
                permits: PERMITS,
            };
            child::spawn(&env, &name, mode, Duration::from_secs(5))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut by_permit: BTreeMap<u32, Vec<Section>> = BTreeMap::new();
    let mut outcome = Ok(());
    for child in children {
        match child.finish(Duration::from_secs(120)).await {
            Ok(lines) => {
                for line in lines {
                    let (permit, section) = parse_permit_section(&line)?;
                    by_permit.entry(permit).or_default().push(section);
                }
            }
            Err(error) => outcome = Err(error),
        }
    }
    outcome?;
    let total: usize = by_permit.values().map(Vec::len).sum();
    if total != CONTENDERS * SECTIONS_EACH {
        return Err(format!(
            "expected {} sections, got {total}",
            CONTENDERS * SECTIONS_EACH
        ));
    }
    if by_permit
        .keys()
        .any(|permit| !(1..=PERMITS).contains(permit))
    {
        return Err(format!(
            "permits outside 1..={PERMITS}: {:?}",
            by_permit.keys()
        ));
    }
    // Every instant at which a section starts or ends, in order; at one instant, ends
    // before starts (a section that ends as another starts does not overlap it).
    let mut events: Vec<(u64, i32)> = Vec::new();
    for (permit, sections) in &mut by_permit {
        let overlapping = overlaps(sections, &format!("permit {permit}'s fencing token"))?;
        if overlapping > 0 {
            return Err(format!(
                "{overlapping} overlapping sections on permit {permit}"
            ));
        }
        for section in sections.iter() {
            events.push((section.entry, 1));
            events.push((section.exit, -1));
        }
    }
    events.sort_unstable();
    let (mut running, mut most) = (0_i32, 0_i32);
    for (_, change) in events {
        running += change;
        most = most.max(running);
    }
    eprintln!(
        "semaphore_bound: {total} sections by {CONTENDERS} processes on {PERMITS} permits in \
         {:.1?}, at most {most} at once",
        started.elapsed()
    );
    if most > i32::try_from(PERMITS).unwrap_or(i32::MAX) {
        return Err(format!("{most} sections ran at once on {PERMITS} permits"));
    }
    if most < 2 {
        return Err("never two sections at once: the semaphore acted as a lock".into());
    }
    Ok(())
}

/// Parses `SECTION <permit> <token> <entry ns> <exit ns>`.
fn parse_permit_section(line: &str) -> Result<(u32, Section), String> {
    let mut words = line.splitn(3, ' ');
    let (Some("SECTION"), Some(permit), Some(rest)) = (words.next(), words.next(), words.next())
    else {
        return Err(format!("unexpected child output {line:?}"));
    };
    let permit = permit
        .parse()
        .map_err(|_| format!("unexpected child output {line:?}"))?;
    Ok((
        permit,
        parse_section("SECTION", &format!("SECTION {rest}"))?,
    ))
}

/// Every permit can be held at once, each a different one, and one more is refused,
/// naming a holder; a released permit is taken again with a larger token; `lock(f)` with
/// `skip_if_obtained` skips while all are held.
pub(crate) async fn semaphore_permits_all_obtainable_and_no_more(env: Env) -> Verdict {
    let name = unique_name("semaphore_all");
    let semaphore = semaphore(&env, &name, PERMITS)
        .await?
        .holder("all-permits")
        .build()
        .map_err(|e| e.to_string())?;
    let mut held = Vec::new();
    for _ in 0..PERMITS {
        match semaphore.try_acquire().await.map_err(|e| e.to_string())? {
            Attempt::Acquired(permit) => held.push(permit),
            Attempt::Held(holder) => {
                return Err(format!(
                    "refused with {} of {PERMITS} permits held: {holder}",
                    held.len()
                ));
            }
        }
    }
    let mut numbers: Vec<u32> = held.iter().map(|permit| permit.permit()).collect();
    numbers.sort_unstable();
    if numbers != (1..=PERMITS).collect::<Vec<_>>() {
        return Err(format!("not every permit once: {numbers:?}"));
    }
    // Another process's view: a semaphore value of its own.
    let other = semaphore_for(&env, &name).await?;
    match other.try_acquire().await.map_err(|e| e.to_string())? {
        Attempt::Held(holder) if holder.as_str().contains("all-permits") => {}
        Attempt::Held(holder) => return Err(format!("the holder is not named: {holder}")),
        Attempt::Acquired(permit) => {
            return Err(format!("a permit beyond the {PERMITS} held: {permit:?}"));
        }
    }
    let skipping = Semaphore::builder(&name, PERMITS, env.connect().await?)
        .skip_if_obtained(true)
        .build()
        .map_err(|e| e.to_string())?;
    drop(other);
    match skipping
        .lock(|_| async { Ok::<_, Error>(()) })
        .await
        .map_err(|e| e.to_string())?
    {
        Outcome::Skipped(_) => {}
        Outcome::Ran(()) => return Err("a job ran with every permit held".into()),
    }
    let freed = held.remove(1);
    let (number, token) = (freed.permit(), freed.fencing_token());
    freed.release().await.map_err(|e| e.to_string())?;
    let again = skipping
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or("the released permit was not free")?;
    if again.permit() != number || again.fencing_token() <= token {
        return Err(format!(
            "expected permit {number} with a token above {token}: {again:?}"
        ));
    }
    again.release().await.map_err(|e| e.to_string())?;
    for permit in held {
        permit.release().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn semaphore_for(env: &Env, name: &str) -> Result<Semaphore, String> {
    semaphore(env, name, PERMITS)
        .await?
        .build()
        .map_err(|e| e.to_string())
}

/// A holder killed with SIGKILL: its permit frees within the lease, for a waiter that
/// finds the others held; the permit's token grows.
pub(crate) async fn semaphore_killed_holder_frees_its_permit_within_ttl(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let name = unique_name("semaphore_crash");
    let semaphore = semaphore(&env, &name, 2)
        .await?
        .acquire_timeout(TTL + Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let mine = semaphore.acquire().await.map_err(|e| e.to_string())?;
    let mut holder = child::spawn(&env, &name, Mode::SemHold { permits: 2 }, TTL)?;
    let line = holder.expect("ACQUIRED", Duration::from_secs(30)).await?;
    let mut words = line.split_whitespace();
    let (Some(permit), Some(token)) = (
        words.next().and_then(|w| w.parse::<u32>().ok()),
        words.next().and_then(|w| w.parse::<i64>().ok()),
    ) else {
        return Err(format!("unexpected child output {line:?}"));
    };
    let killed_at = Instant::now();
    holder.kill().await?;
    let taken = semaphore
        .acquire()
        .await
        .map_err(|e| format!("the killed holder's permit was not freed in time: {e}"))?;
    eprintln!(
        "semaphore_killed_holder: permit taken over {} ms after SIGKILL (TTL {} ms)",
        killed_at.elapsed().as_millis(),
        TTL.as_millis()
    );
    if taken.permit() != permit || taken.fencing_token().get() <= token {
        return Err(format!(
            "expected the killed holder's permit {permit} with a token above {token}: {taken:?}"
        ));
    }
    taken.release().await.map_err(|e| e.to_string())?;
    mine.release().await.map_err(|e| e.to_string())
}

/// A semaphore waiting in another process (default poll interval) while every permit is
/// held wakes on the release of one: by a notice where its adapter listens, else within
/// its poll interval.
pub(crate) async fn semaphore_waiter_in_another_process_wakes_on_a_release(env: Env) -> Verdict {
    let name = unique_name("semaphore_wake");
    let queries = env.connect().await?;
    let listens = queries.listener().is_some();
    let semaphore = semaphore(&env, &name, 2)
        .await?
        .build()
        .map_err(|e| e.to_string())?;
    let first = semaphore.acquire().await.map_err(|e| e.to_string())?;
    let second = semaphore.acquire().await.map_err(|e| e.to_string())?;
    let mut waiter = child::spawn(
        &env,
        &name,
        Mode::SemWait { permits: 2 },
        Duration::from_secs(5),
    )?;
    waiter.expect("WAITING", Duration::from_secs(30)).await?;
    // Long enough for the waiter's back-off to reach its cap (the default 1 s poll
    // interval), so only a wake-up can make it fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.release().await.map_err(|e| e.to_string())?;
    let released_at = wall_ns();
    let acquired_at: u64 = waiter
        .expect_parsed("ACQUIRED", Duration::from_secs(10))
        .await?;
    waiter.finish(Duration::from_secs(10)).await?;
    first.release().await.map_err(|e| e.to_string())?;
    let gap = Duration::from_nanos(acquired_at.saturating_sub(released_at));
    let limit = if listens {
        WAKE_SLACK
    } else {
        Duration::from_secs(1) + WAKE_SLACK
    };
    eprintln!(
        "semaphore_wake: a semaphore waiting in another process acquired {} ms after the \
         release",
        gap.as_millis()
    );
    if gap > limit {
        return Err(format!(
            "the waiter took {gap:?} to acquire (limit {limit:?})"
        ));
    }
    Ok(())
}

/// An operator sees the semaphore (`LockAdmin`) and revokes one permit: its holder hears
/// of the loss before a waiter gets that permit; the other permit stays held.
pub(crate) async fn semaphore_permit_loss_fires_before_another_takes_it(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let name = unique_name("semaphore_loss");
    let holder = Semaphore::builder(&name, 2, env.connect().await?)
        .ttl(TTL)
        .build()
        .map_err(|e| e.to_string())?;
    let kept = holder.acquire().await.map_err(|e| e.to_string())?;
    let revoked = holder.acquire().await.map_err(|e| e.to_string())?;
    // The operator's view: the semaphore, its count, and who holds each permit.
    let admin = LockAdmin::new(env.connect().await?);
    let info = admin
        .inspect_semaphore(&name)
        .await
        .map_err(|e| e.to_string())?;
    let held: Vec<u32> = info.holders().map(|slot| slot.permit).collect();
    let listed = admin.semaphores().await.map_err(|e| e.to_string())?;
    if info.permits != 2
        || held.len() != 2
        || !listed.iter().any(|semaphore| {
            semaphore.name == name && semaphore.permits == 2 && semaphore.holders().count() == 2
        })
    {
        return Err(format!("the admin view is wrong: {info:?}"));
    }
    let slot = info
        .slots
        .iter()
        .find(|slot| slot.permit == revoked.permit())
        .ok_or("the revoked permit is not listed")?;
    if slot.lock.fencing_token != revoked.fencing_token() {
        return Err(format!("the permit's row is not its lease: {slot:?}"));
    }
    let revoking = admin
        .force_release_permit(&name, revoked.permit(), slot.lock.fencing_token)
        .await
        .map_err(|e| e.to_string())?;
    if !matches!(revoking, ForceRelease::Revoked(_)) {
        return Err(format!("not revoked: {revoking:?}"));
    }
    let waiter = semaphore(&env, &name, 2)
        .await?
        .acquire_timeout(TTL * 3)
        .build()
        .map_err(|e| e.to_string())?;
    // Whether the loss had fired when the waiter got in, asked at that moment: two
    // timestamps, each taken when its task next runs, could be ordered by the scheduler.
    let lease = revoked.lease().clone();
    let waiting = tokio::spawn(async move {
        let permit = waiter.acquire().await.map_err(|e| e.to_string())?;
        let lost_before = lease.is_lost();
        let number = permit.permit();
        permit.release().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((lost_before, number))
    });
    let reason = tokio::time::timeout(TTL * 2, revoked.lost())
        .await
        .map_err(|_| "the permit's loss was never signalled".to_owned())?;
    if reason != LossReason::TakenOver {
        return Err(format!("lost for another reason: {reason}"));
    }
    let (lost_before, number) = waiting.await.map_err(|e| e.to_string())??;
    if !lost_before {
        return Err("a waiter took the revoked permit before the loss was signalled".into());
    }
    if number != revoked.permit() || !kept.is_held() {
        return Err(format!(
            "the waiter took permit {number}, not the revoked one, or the other was lost: \
             {kept:?}"
        ));
    }
    match revoked.release().await {
        Err(Error::Lost { .. }) => {}
        other => return Err(format!("release after the loss gave {other:?}")),
    }
    kept.release().await.map_err(|e| e.to_string())
}

/// Zero permits, too many, and a count that disagrees with the name's definition are
/// errors that say what to do; the semaphore as defined keeps working.
pub(crate) async fn semaphore_permits_mismatch_and_zero_are_errors(env: Env) -> Verdict {
    let name = unique_name("semaphore_mismatch");
    for permits in [0, MAX_PERMITS + 1] {
        match Semaphore::new(&name, permits, env.connect().await?) {
            Err(Error::InvalidOption(message)) if message.contains(&MAX_PERMITS.to_string()) => {}
            other => return Err(format!("{permits} permits gave {other:?}")),
        }
    }
    let defined = semaphore_for(&env, &name).await?;
    let permit = defined.acquire().await.map_err(|e| e.to_string())?;
    let other = semaphore(&env, &name, PERMITS + 1)
        .await?
        .build()
        .map_err(|e| e.to_string())?;
    for result in [
        other.try_acquire().await.map(|_| ()),
        other.acquire().await.map(|_| ()),
    ] {
        match result {
            Err(
                ref error @ Error::PermitsMismatch {
                    requested, defined, ..
                },
            ) if requested == PERMITS + 1
                && defined == i64::from(PERMITS)
                && error.to_string().contains("same count") => {}
            other => return Err(format!("a mismatched count gave {other:?}")),
        }
    }
    permit.release().await.map_err(|e| e.to_string())?;
    let again = semaphore_for(&env, &name).await?;
    let permit = again
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or("the defined semaphore no longer works")?;
    permit.release().await.map_err(|e| e.to_string())
}

/// The statements a semaphore sends, counted by a tap: a free permit costs what a lock
/// costs (one statement to take it, one to release it, after the one read of the
/// definition), and a waiter, after its first attempt, only reads (one read of every
/// permit per look), backing off as a lock's waiter does.
pub(crate) async fn semaphore_waiting_only_reads(env: Env) -> Verdict {
    const WAIT: Duration = Duration::from_secs(3);
    let name = unique_name("semaphore_reads");
    let statements = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&statements);
    let tapped = Tap::new(env.connect().await?, move |statement| {
        if let Ok(mut recorded) = recorded.lock() {
            recorded.push(statement.clone());
        }
        Flow::Forward
    });
    let tapped = Semaphore::new(&name, 2, Arc::new(tapped) as Arc<dyn QueryInterface>)
        .map_err(|e| e.to_string())?;
    let holder = semaphore_for_permits(&env, &name, 2).await?;
    // The definition, read (and recorded) once per `Semaphore` value.
    tapped
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or("no permit free")?
        .release()
        .await
        .map_err(|e| e.to_string())?;
    statements.lock().map_err(|e| e.to_string())?.clear();
    let permit = tapped
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
        .ok_or("no permit free")?;
    permit.release().await.map_err(|e| e.to_string())?;
    let uncontended: Vec<StatementKind> = taken(&statements)?
        .iter()
        .map(|statement| statement.kind)
        .filter(|kind| *kind != StatementKind::Notify)
        .collect();
    if uncontended != [StatementKind::Acquire, StatementKind::Release] {
        return Err(format!(
            "a free permit took {uncontended:?}, not one acquire and one release"
        ));
    }

    let first = holder.acquire().await.map_err(|e| e.to_string())?;
    let second = holder.acquire().await.map_err(|e| e.to_string())?;
    if tokio::time::timeout(WAIT, tapped.acquire()).await.is_ok() {
        return Err("acquire returned while every permit was held".into());
    }
    first.release().await.map_err(|e| e.to_string())?;
    second.release().await.map_err(|e| e.to_string())?;
    let statements = taken(&statements)?;
    // The first attempt is on a permit picked at random.
    let waiting = after_first_attempt(&statements)?;
    let writes: Vec<&str> = waiting
        .iter()
        .filter(|statement| !only_reads(statement.kind))
        .map(|statement| &*statement.sql)
        .collect();
    eprintln!(
        "semaphore_reads: {} statements in {} s of waiting, {} writes",
        waiting.len(),
        WAIT.as_secs(),
        writes.len()
    );
    if !writes.is_empty() {
        return Err(format!("a waiter wrote: {writes:?}"));
    }
    // As for a lock's waiter (see `waiting_only_reads`): the back-off's looks in 3 s.
    if waiting.len() > 13 {
        return Err(format!(
            "{} statements in {WAIT:?} of waiting",
            waiting.len()
        ));
    }
    Ok(())
}

fn taken(statements: &Mutex<Vec<Statement>>) -> Result<Vec<Statement>, String> {
    Ok(std::mem::take(
        &mut *statements.lock().map_err(|e| e.to_string())?,
    ))
}

async fn semaphore_for_permits(env: &Env, name: &str, permits: u32) -> Result<Semaphore, String> {
    semaphore(env, name, permits)
        .await?
        .build()
        .map_err(|e| e.to_string())
}
