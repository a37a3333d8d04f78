//! Reader-writer locks: readers together, a write alone (across processes, checked on
//! every section reported), writers getting in under a continuous reader load, tokens
//! ordering reads and writes, crashed holders freeing within their lease, and the loss
//! signal before anyone else gets in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dlock_core::adapter::QueryInterface;
use dlock_core::{
    Attempt, Error, ForceRelease, LockAdmin, LockState, LossReason, RwHolder, RwLock,
    RwLockBuilder, Semaphore,
};
use dlock_testkit::wall_ns;
use tokio::time::Instant;

use crate::child::{self, Mode};
use crate::scenarios::fencing::{create_ledger, ledger_write};
use crate::support::{Env, Verdict, eventually, unique_name};

fn err(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// Short timings for tests, as `support::quick`.
fn quick(builder: RwLockBuilder) -> RwLockBuilder {
    builder
        .ttl(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(20))
}

/// Several readers at once (and a `try_write` refused meanwhile, naming a reader); a write
/// alone (a `try_read` refused, naming the writer); tokens: readers between two writes
/// share one, each write's exceeds every earlier read's, each read's every earlier
/// write's.
pub(crate) async fn rw_readers_share_and_tokens_order_reads_and_writes(env: Env) -> Verdict {
    const READERS: usize = 4;
    let name = unique_name("rw_share");
    let queries = env.connect().await?;
    let rw = quick(RwLock::builder(&name, Arc::clone(&queries)))
        .holder("rw-share")
        .build()
        .map_err(err)?;

    let mut reads = Vec::new();
    for _ in 0..READERS {
        match rw.try_read().await.map_err(err)? {
            Attempt::Acquired(read) => reads.push(read),
            Attempt::Held(holder) => return Err(format!("a reader was kept out by {holder}")),
        }
    }
    let first = reads[0].fencing_token();
    if reads.iter().any(|read| read.fencing_token() != first) {
        return Err(format!(
            "readers with no write between them differ: {reads:?}"
        ));
    }
    match rw.try_write().await.map_err(err)? {
        Attempt::Held(holder) if holder.as_str().contains("rw-share") => {}
        Attempt::Held(holder) => return Err(format!("the holder is not a reader: {holder}")),
        Attempt::Acquired(_) => return Err("a writer got in among readers".into()),
    }
    // The refused writer gave the gate back: readers still get in.
    let late = rw.try_read().await.map_err(err)?.acquired();
    let late = late.ok_or("a reader was kept out after a refused try_write")?;
    reads.push(late);
    for read in reads {
        read.release().await.map_err(err)?;
    }

    let write = rw.write().await.map_err(err)?;
    let written = write.fencing_token();
    if written <= first {
        return Err(format!(
            "the write's token {written} is not above the reads' {first}"
        ));
    }
    match rw.try_read().await.map_err(err)? {
        Attempt::Held(holder) if holder.as_str().contains("rw-share") => {}
        Attempt::Held(holder) => return Err(format!("the holder is not the writer: {holder}")),
        Attempt::Acquired(_) => return Err("a reader got in beside a writer".into()),
    }
    let other = quick(RwLock::builder(&name, Arc::clone(&queries)))
        .build()
        .map_err(err)?;
    if other.try_write().await.map_err(err)?.acquired().is_some() {
        return Err("two writers at once".into());
    }
    write.release().await.map_err(err)?;

    let after = rw.read().await.map_err(err)?;
    if after.fencing_token() <= written {
        return Err(format!(
            "a read after the write {written} got token {}",
            after.fencing_token()
        ));
    }
    after.release().await.map_err(err)?;
    let next = other.write().await.map_err(err)?;
    if next.fencing_token() <= written {
        return Err("a second write's token did not grow".into());
    }
    next.release().await.map_err(err)
}

/// Locks whose names extend another's are other locks, whatever the characters: the
/// writer of `n` neither deletes the rows of the reader-writer lock `n#r:x` (its gate,
/// released, keeps its token counter) nor the definition of the semaphore `n#r:y`, and
/// does not wait for their holders.
pub(crate) async fn rw_names_that_extend_another_are_other_locks(env: Env) -> Verdict {
    let name = unique_name("rw_names");
    let queries = env.connect().await?;
    let build = |name: String| {
        quick(RwLock::builder(name, Arc::clone(&queries)))
            .build()
            .map_err(err)
    };
    let (rw, other) = (build(name.clone())?, build(format!("{name}#r:x"))?);
    let semaphore = |permits| {
        Semaphore::builder(format!("{name}#r:y"), permits, Arc::clone(&queries))
            .ttl(Duration::from_secs(5))
            .build()
            .map_err(err)
    };
    let before = other.write().await.map_err(err)?;
    let before_token = before.fencing_token();
    before.release().await.map_err(err)?;
    let permit = semaphore(1)?.acquire().await.map_err(err)?;
    permit.release().await.map_err(err)?;

    rw.write()
        .await
        .map_err(err)?
        .release()
        .await
        .map_err(err)?;
    let after = other.write().await.map_err(err)?;
    if after.fencing_token() <= before_token {
        return Err(format!(
            "the tokens of {:?} started again ({before_token}, then {}) after a write of \
             {name:?}: its gate row was deleted",
            other.name(),
            after.fencing_token()
        ));
    }
    after.release().await.map_err(err)?;
    match semaphore(2)?.try_acquire().await {
        Err(Error::PermitsMismatch { .. }) => {}
        other => {
            return Err(format!(
                "the semaphore's definition did not survive a write of {name:?}: {other:?}"
            ));
        }
    }

    let (read, permit) = (
        other.read().await.map_err(err)?,
        semaphore(1)?.acquire().await.map_err(err)?,
    );
    match rw.try_write().await.map_err(err)? {
        Attempt::Acquired(write) => write.release().await.map_err(err)?,
        Attempt::Held(holder) => {
            return Err(format!(
                "the writer of {name:?} was kept out by {holder}, a holder of another lock"
            ));
        }
    }
    read.release().await.map_err(err)?;
    permit.release().await.map_err(err)
}

/// A writer that gives up waiting for a reader (its acquire timeout, or its future
/// dropped) names the reader and gives the gate back, so readers get in again; the jobs of
/// `read_lock` and `write_lock` run under their lease, and `skip_if_obtained` skips a
/// read while a writer holds the lock.
pub(crate) async fn rw_writer_that_gives_up_lets_readers_in_and_jobs_run(env: Env) -> Verdict {
    let name = unique_name("rw_give_up");
    let queries = env.connect().await?;
    let rw = quick(RwLock::builder(&name, Arc::clone(&queries)))
        .holder("rw-give-up")
        .build()
        .map_err(err)?;
    let read = rw.read().await.map_err(err)?;
    let impatient = quick(RwLock::builder(&name, Arc::clone(&queries)))
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .map_err(err)?;
    match impatient.write().await {
        Err(dlock_core::Error::Timeout {
            holder: Some(holder),
            ..
        }) if holder.as_str().starts_with("rw-give-up")
            && holder.as_str().ends_with(", reading") => {}
        other => {
            return Err(format!(
                "the writer did not time out naming the reader: {other:?}"
            ));
        }
    }
    // The same, its future dropped while it waits for the reader.
    let dropped = tokio::time::timeout(Duration::from_millis(300), rw.write()).await;
    if dropped.is_ok() {
        return Err("a writer got in beside a reader".into());
    }
    eventually(Duration::from_secs(3), "readers get in again", || async {
        Ok(rw.try_read().await.map_err(err)?.acquired().is_some())
    })
    .await?;
    read.release().await.map_err(err)?;

    let token = rw
        .write_lock(|lease| async move { Ok::<_, dlock_core::Error>(lease.fencing_token()) })
        .await
        .map_err(err)?
        .ran()
        .ok_or("the write job did not run")?;
    let skipping = quick(RwLock::builder(&name, Arc::clone(&queries)))
        .skip_if_obtained(true)
        .build()
        .map_err(err)?;
    let write = rw.write().await.map_err(err)?;
    let outcome = skipping
        .read_lock(|_lease| async { Ok::<_, dlock_core::Error>(()) })
        .await
        .map_err(err)?;
    if outcome.ran().is_some() {
        return Err("a read ran beside a write with skip_if_obtained".into());
    }
    write.release().await.map_err(err)?;
    let read_token = skipping
        .read_lock(|lease| async move { Ok::<_, dlock_core::Error>(lease.fencing_token()) })
        .await
        .map_err(err)?
        .ran()
        .ok_or("the read job was skipped with no writer")?;
    if read_token <= token {
        return Err(format!(
            "the read's token {read_token} is not above the write's {token}"
        ));
    }
    Ok(())
}

/// A transaction fenced with a read's lease, open past the end of that lease (its
/// renewals cut off by a partition): a writer gets in only after it commits.
pub(crate) async fn rw_fenced_read_holds_writers_back_until_it_commits(env: Env) -> Verdict {
    const HOLD: Duration = Duration::from_secs(4);
    let name = unique_name("rw_fenced_read");
    let queries = env.connect().await?;
    create_ledger(&queries).await?;
    let partition = env.partition().await?;
    let reader = RwLock::builder(&name, env.connect_through(&partition).await?)
        .ttl(Duration::from_secs(1))
        .renew_interval(Duration::from_millis(200))
        .build()
        .map_err(err)?;
    let read = reader.read().await.map_err(err)?;
    let lease = read.lease().clone();
    let write = ledger_write(&queries, &lease, "a read fenced past its lease");
    // The commit is sent no earlier than this (see `fence_keeps_the_lock_until_the_…`).
    let commit_sent_after = Instant::now() + HOLD;
    let fenced = {
        let (env, lease) = (env.clone(), lease.clone());
        tokio::spawn(async move {
            env.fenced_write(&lease, &write, HOLD)
                .await
                .map_err(|e| format!("the fenced write failed: {e}"))
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The reader stops renewing: its lease ends about 1 s later, well before the commit.
    partition.freeze();
    let writer = quick(RwLock::builder(&name, env.connect().await?))
        .poll_interval(Duration::from_millis(10))
        .build()
        .map_err(err)?;
    let writing = tokio::spawn(async move {
        let write = writer.write().await;
        (Instant::now(), write)
    });
    fenced.await.map_err(err)??;
    let (written_at, write) = writing.await.map_err(err)?;
    let write = write.map_err(err)?;
    if written_at < commit_sent_after {
        return Err(format!(
            "a writer got in {:?} before the read's fenced transaction could commit",
            commit_sent_after - written_at
        ));
    }
    write.release().await.map_err(err)?;
    drop(read);
    Ok(())
}

const CONTENDERS: usize = 6;
const SECTIONS_EACH: usize = 30;

/// One section as a child reports it.
#[derive(Debug, Clone, Copy)]
struct Section {
    write: bool,
    token: i64,
    entry: u64,
    exit: u64,
}

fn parse(line: &str) -> Result<Section, String> {
    let bad = || format!("unexpected child output {line:?}");
    let mut words = line.split_whitespace();
    let write = match words.next() {
        Some("READ") => false,
        Some("WRITE") => true,
        _ => return Err(bad()),
    };
    let mut number = || {
        words
            .next()
            .and_then(|w| w.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let token = number()?;
    let mut time = || u64::try_from(number()?).map_err(|_| bad());
    Ok(Section {
        write,
        token,
        entry: time()?,
        exit: time()?,
    })
}

/// What the sections show: writes overlapping another section (must be none), token
/// order broken (must be none), and how many reads overlapped another read.
fn check(sections: &mut [Section]) -> Result<usize, String> {
    sections.sort_by_key(|section| section.entry);
    let mut shared_reads = 0;
    for (i, a) in sections.iter().enumerate() {
        for b in &sections[i + 1..] {
            if b.entry >= a.exit {
                // Sorted by entry: every later one starts after `a` ended too.
                break;
            }
            if a.write || b.write {
                return Err(format!(
                    "a write overlapped another section: {a:?} and {b:?}"
                ));
            }
            shared_reads += 1;
        }
    }
    for write in sections.iter().filter(|section| section.write) {
        for other in sections.iter() {
            let before = other.exit <= write.entry;
            let after = other.entry >= write.exit;
            if before && other.token >= write.token {
                return Err(format!(
                    "{other:?} came before the write {write:?} with a token not below it"
                ));
            }
            if after && other.token <= write.token {
                return Err(format!(
                    "{other:?} came after the write {write:?} with a token not above it"
                ));
            }
        }
    }
    Ok(shared_reads)
}

/// Processes reading and writing one lock, each reporting every section: no write
/// overlaps any other section, reads do overlap each other, and tokens order every
/// section before or after a write.
pub(crate) async fn rw_writes_exclude_every_other_section_across_processes(env: Env) -> Verdict {
    let name = unique_name("rw_exclusion");
    let started = std::time::Instant::now();
    let children = (0..CONTENDERS)
        .map(|_| {
            let mode = Mode::RwContend {
                sections: SECTIONS_EACH,
            };
            child::spawn(&env, &name, mode, Duration::from_secs(5))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sections = Vec::new();
    let mut outcome = Ok(());
    for child in children {
        match child.finish(Duration::from_secs(180)).await {
            Ok(lines) => {
                for line in lines {
                    sections.push(parse(&line)?);
                }
            }
            Err(error) => outcome = Err(error),
        }
    }
    outcome?;
    if sections.len() != CONTENDERS * SECTIONS_EACH {
        return Err(format!(
            "expected {} sections, got {}",
            CONTENDERS * SECTIONS_EACH,
            sections.len()
        ));
    }
    let writes = sections.iter().filter(|section| section.write).count();
    let shared = check(&mut sections)?;
    eprintln!(
        "rw_exclusion: {} sections ({writes} writes) by {CONTENDERS} processes in {:.1?}; \
         no write overlapped anything, {shared} pairs of reads overlapped",
        sections.len(),
        started.elapsed()
    );
    if writes == 0 || shared == 0 {
        return Err(format!(
            "the run proves little: {writes} writes, {shared} overlapping reads"
        ));
    }
    Ok(())
}

/// Readers that overlap each other without a gap (each re-enters as soon as it leaves,
/// four of them staggered) and a writer: the writer still gets in, within about one
/// reader's hold once it has the gate, and no reader is in while it writes.
pub(crate) async fn rw_writer_gets_in_under_a_continuous_reader_load(env: Env) -> Verdict {
    const READERS: usize = 4;
    const HOLD: Duration = Duration::from_millis(100);
    /// A reader's hold, the writer's look for readers (its back-off or a wake-up), and a
    /// busy machine.
    const BOUND: Duration = Duration::from_millis(1500);
    let name = unique_name("rw_progress");
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let rw = RwLock::builder(&name, env.connect().await?)
            .ttl(Duration::from_secs(2))
            .poll_interval(Duration::from_millis(20))
            .build()
            .map_err(err)?;
        let stop = Arc::clone(&stop);
        readers.push(tokio::spawn(async move {
            tokio::time::sleep(HOLD / 4 * u32::try_from(i).unwrap_or(0)).await;
            let mut sections = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let read = rw.read().await.map_err(err)?;
                let entry = wall_ns();
                tokio::time::sleep(HOLD).await;
                let exit = wall_ns();
                if read.is_lost() {
                    return Err(format!("a reader lost its read: {read:?}"));
                }
                sections.push((entry, exit));
                read.release().await.map_err(err)?;
            }
            Ok::<_, String>(sections)
        }));
    }
    // The reader load runs for a while before the writer comes.
    tokio::time::sleep(HOLD * 3).await;
    let writer = RwLock::builder(&name, env.connect().await?)
        .ttl(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(20))
        .acquire_timeout(BOUND * 4)
        .build()
        .map_err(err)?;
    let asked = Instant::now();
    let write = writer.write().await;
    let waited = asked.elapsed();
    let write = write.map_err(|e| format!("the writer never got in: {e}"))?;
    let entry = wall_ns();
    tokio::time::sleep(HOLD).await;
    let exit = wall_ns();
    write.release().await.map_err(err)?;
    // The readers go on after the write.
    tokio::time::sleep(HOLD * 3).await;
    stop.store(true, Ordering::Relaxed);
    let mut after = 0;
    let mut reads = 0;
    for reader in readers {
        for (read_entry, read_exit) in reader.await.map_err(err)?? {
            reads += 1;
            if read_entry < exit && entry < read_exit {
                return Err("a reader was in while the writer wrote".into());
            }
            after += usize::from(read_entry >= exit);
        }
    }
    eprintln!(
        "rw_progress: the writer got in {} ms after asking, among {READERS} readers holding \
         {} ms each ({reads} reads, {after} after the write)",
        waited.as_millis(),
        HOLD.as_millis()
    );
    if waited > BOUND {
        return Err(format!("the writer waited {waited:?} (bound {BOUND:?})"));
    }
    if after == 0 {
        return Err("no reader got in after the write".into());
    }
    Ok(())
}

const CRASH_TTL: Duration = Duration::from_secs(1);

/// A reader killed with SIGKILL keeps a writer out until its lease ends, no longer; a
/// writer killed so keeps readers out until its lease ends, no longer.
pub(crate) async fn rw_killed_reader_and_writer_free_within_their_lease(env: Env) -> Verdict {
    /// A probe, an attempt, scheduling on a busy machine.
    const SLACK: Duration = Duration::from_secs(1);
    let name = unique_name("rw_crash");
    let queries = env.connect().await?;
    for write in [false, true] {
        let what = if write { "writer" } else { "reader" };
        let mut holder = child::spawn(&env, &name, Mode::RwHold { write }, CRASH_TTL)?;
        let token: i64 = holder
            .expect_parsed("ACQUIRED", Duration::from_secs(30))
            .await?;
        let killed_at = Instant::now();
        holder.kill().await?;
        let rw = RwLock::builder(&name, Arc::clone(&queries))
            .poll_interval(Duration::from_millis(20))
            .acquire_timeout(CRASH_TTL + SLACK)
            .build()
            .map_err(err)?;
        // The other kind: a writer after a reader, a reader after a writer.
        let token_after = if write {
            rw.read().await.map(|guard| guard.fencing_token())
        } else {
            rw.write().await.map(|guard| guard.fencing_token())
        }
        .map_err(|e| format!("the killed {what} was not out in time: {e}"))?;
        eprintln!(
            "rw_crash: a killed {what} was out {} ms after SIGKILL (TTL {} ms)",
            killed_at.elapsed().as_millis(),
            CRASH_TTL.as_millis()
        );
        if token_after.get() <= token {
            return Err(format!(
                "the token after the killed {what}'s {token} did not grow: {token_after}"
            ));
        }
    }
    // The writer that came after the killed reader deleted its row, which could never
    // be renewed again; the reader after the killed writer left nothing behind.
    let info = LockAdmin::new(queries)
        .inspect_rw(&name)
        .await
        .map_err(err)?;
    if !info.readers.is_empty() || info.has_writer() {
        return Err(format!("rows left behind: {info:?}"));
    }
    Ok(())
}

/// An operator sees a reader, then a writer, with `inspect_rw`, and revokes it: each
/// holder is told of its loss before the waiting other kind gets in.
pub(crate) async fn rw_reader_and_writer_learn_of_their_loss_first(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let name = unique_name("rw_loss");
    let queries: Arc<dyn QueryInterface> = env.connect().await?;
    let admin = LockAdmin::new(Arc::clone(&queries));
    let rw = RwLock::builder(&name, Arc::clone(&queries))
        .ttl(TTL)
        .build()
        .map_err(err)?;
    // The guards live to the end: their leases are what is watched.
    let mut kept: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    for write in [false, true] {
        let what = if write { "writer" } else { "reader" };
        let (lease, holder) = if write {
            let guard = rw.write().await.map_err(err)?;
            let lease = guard.lease().clone();
            kept.push(Box::new(guard));
            (lease, RwHolder::Writer)
        } else {
            let guard = rw.read().await.map_err(err)?;
            let lease = guard.lease().clone();
            kept.push(Box::new(guard));
            let owner = lease.owner_id().to_owned();
            (lease, RwHolder::Reader(owner))
        };
        let info = admin.inspect_rw(&name).await.map_err(err)?;
        let seen = if write {
            info.writer.as_ref().filter(|_| info.has_writer())
        } else {
            info.live_readers()
                .find(|reader| reader.owner_id.as_deref() == Some(lease.owner_id()))
        };
        let seen = seen.ok_or_else(|| format!("inspect_rw does not show the {what}: {info:?}"))?;
        if seen.state != LockState::Held || seen.fencing_token != lease.fencing_token() {
            return Err(format!("inspect_rw shows the {what} wrongly: {seen:?}"));
        }
        let revoking = admin
            .force_release_rw(&name, &holder, lease.fencing_token())
            .await
            .map_err(err)?;
        if !matches!(revoking, ForceRelease::Revoked(_)) {
            return Err(format!("the {what} was not revoked: {revoking:?}"));
        }
        let other = RwLock::builder(&name, env.connect().await?)
            .poll_interval(Duration::from_millis(10))
            .acquire_timeout(TTL * 3)
            .build()
            .map_err(err)?;
        let waiting = tokio::spawn(async move {
            let at = if write {
                let guard = other.read().await.map_err(err)?;
                let at = Instant::now();
                guard.release().await.map_err(err)?;
                at
            } else {
                let guard = other.write().await.map_err(err)?;
                let at = Instant::now();
                guard.release().await.map_err(err)?;
                at
            };
            Ok::<_, String>(at)
        });
        let reason = tokio::time::timeout(TTL * 2, lease.lost())
            .await
            .map_err(|_| format!("the revoked {what} was never told"))?;
        let lost_at = Instant::now();
        if reason != LossReason::TakenOver {
            return Err(format!("the {what} lost for another reason: {reason}"));
        }
        let taken_at = waiting.await.map_err(err)??;
        if taken_at <= lost_at {
            return Err(format!(
                "the other got in {:?} before the revoked {what} was told",
                lost_at - taken_at
            ));
        }
    }
    Ok(())
}

/// The reader-writer part of a child, for the `rw-` modes.
pub(crate) async fn child(
    queries: Arc<dyn QueryInterface>,
    name: &str,
    mode: &str,
    ttl: Duration,
    sections: usize,
) -> Result<(), String> {
    let rw = RwLock::builder(name, queries)
        .ttl(ttl)
        .poll_interval(Duration::from_millis(5))
        .holder(format!("conformance child {mode}"))
        .build()
        .map_err(err)?;
    match mode {
        "rw-contend" => {
            let mut report = String::new();
            // Mostly reads, some writes, in an order of each process's own.
            let offset = std::process::id() as usize;
            for i in 0..sections {
                let write = (i + offset).is_multiple_of(4);
                let (token, lost, entry, exit) = if write {
                    let guard = rw.write().await.map_err(err)?;
                    let entry = wall_ns();
                    tokio::task::yield_now().await;
                    let exit = wall_ns();
                    let seen = (guard.fencing_token(), guard.is_lost());
                    guard.release().await.map_err(err)?;
                    (seen.0, seen.1, entry, exit)
                } else {
                    let guard = rw.read().await.map_err(err)?;
                    let entry = wall_ns();
                    // Long enough for reads of other processes to overlap.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let exit = wall_ns();
                    let seen = (guard.fencing_token(), guard.is_lost());
                    guard.release().await.map_err(err)?;
                    (seen.0, seen.1, entry, exit)
                };
                if lost {
                    return Err(format!("lost in a section (write: {write})"));
                }
                let word = if write { "WRITE" } else { "READ" };
                report.push_str(&format!("{word} {token} {entry} {exit}\n"));
            }
            print!("{report}");
        }
        "rw-hold-read" => {
            let _guard = rw.read().await.map_err(err)?;
            println!("ACQUIRED {}", _guard.fencing_token());
            std::future::pending::<()>().await;
        }
        "rw-hold-write" => {
            let _guard = rw.write().await.map_err(err)?;
            println!("ACQUIRED {}", _guard.fencing_token());
            std::future::pending::<()>().await;
        }
        other => return Err(format!("unknown child mode {other:?}")),
    }
    Ok(())
}
