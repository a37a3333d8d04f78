//! A worker process (`worker_process.rs` is the coordinator's side of it): takes the
//! run's locks again and again, each time for one critical
//! section whose entry and exit it writes to the ledger in fenced transactions, until its
//! input closes. It tells the coordinator what it does, one line per event on stdout:
//!
//! | line                  | when                                                        |
//! |-----------------------|-------------------------------------------------------------|
//! | `READY`               | connected, tables in place                                  |
//! | `HOLD <name> <token> <owner>` | acquired, under this owner id                       |
//! | `WORK <name> <token> [long]` | the entry committed; now working, outside any transaction (`long`: as asked, see below) |
//! | `DONE <name> <token>` | the work is done; the exit is about to be written           |
//! | `REFUSED <name> <token>` | a fenced write of this section was refused              |
//! | `LOST <name> <token>` | the guard reported the loss (before the loss is recorded)   |
//! | `HANG <name> <token> <what>` | a library call took longer than it may              |
//! | `FREE <name> <token>` | released (or gave up releasing)                             |
//! | `ERRORS <n> <last>`   | at exit: how many operations failed, and the last failure   |
//! | `SAW <name> <term>`   | `--election`: its observer of `name` saw a leader in `term` |
//!
//! The coordinator speaks to it on stdin: `LONG <ms>` makes its next section's work last
//! that long (so that it spans renewals, or the whole lease), and the end of the input
//! stops it.
//!
//! With `--election` each name is an election: a section is a term, from `campaign` to
//! `resign`, and the worker also observes every election, from start to exit.
//!
//! Database errors never end a worker: faults cause them by design. It logs them (on
//! stderr with `--verbose`) and goes on.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dlock_core::adapter::{QueryInterface, Statement};
use dlock_core::{
    DistributedLock, Election, Error, Leadership, Lease, LockBuilder, LockGuard, RwLock,
    RwReadGuard, RwWriteGuard, Semaphore, SemaphorePermit,
};
use dlock_testkit::{Backend, Pool, PoolOptions, dialect_named, error_chain, run_child};
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ledger::{LOCK_TABLE, LedgerSql};

pub(crate) const INDEX: &str = "DLOCK_TORTURE_WORKER";
pub(crate) const ADAPTER: &str = "DLOCK_TORTURE_ADAPTER";
pub(crate) const DIALECT: &str = "DLOCK_TORTURE_DIALECT";
pub(crate) const URL: &str = "DLOCK_TORTURE_URL";
pub(crate) const RUN: &str = "DLOCK_TORTURE_RUN";
pub(crate) const NAMES: &str = "DLOCK_TORTURE_NAMES";
pub(crate) const TTL_MS: &str = "DLOCK_TORTURE_TTL_MS";
pub(crate) const VERBOSE: &str = "DLOCK_TORTURE_VERBOSE";
/// Set for `--election`.
pub(crate) const ELECTION: &str = "DLOCK_TORTURE_ELECTION";
/// `--semaphore`'s number of permits.
pub(crate) const SEMAPHORE: &str = "DLOCK_TORTURE_SEMAPHORE";
/// Set for `--rw`.
pub(crate) const RW: &str = "DLOCK_TORTURE_RW";
/// What the ledger's `owner` of a read starts with (see `ledger::Section::write`).
pub(crate) const READ_MARK: &str = "r ";

/// How long the work of a section lasts, at most (it is random from a fifth of this).
const WORK: Duration = Duration::from_millis(60);
/// How often waiters probe at most; short, so that hand-overs are frequent.
const POLL: Duration = Duration::from_millis(50);

/// The label of worker `index`'s locks, which their lock rows record as the holder; the
/// acquire statement is the only one that carries it.
pub(crate) fn holder_label(index: i64) -> String {
    format!("torture worker {index}")
}

/// The options of every worker's lock, semaphore or reader-writer lock: the run's table
/// and TTL, short polls, and an acquire that gives up after three leases.
fn worker_options<L>(builder: LockBuilder<L>, ttl: Duration, index: i64) -> LockBuilder<L> {
    builder
        .table(LOCK_TABLE)
        .ttl(ttl)
        .poll_interval(POLL)
        .acquire_timeout(ttl * 3)
        .holder(holder_label(index))
}

/// When this process is a worker, runs it and returns its exit code.
pub(crate) fn run_if_worker() -> Option<ExitCode> {
    let index = std::env::var(INDEX).ok()?;
    Some(run_child(&format!("torture worker {index}"), worker_main()))
}

/// What became of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// The fence passed and the transaction committed.
    Committed,
    /// The fence refused: the lease is no longer this acquisition's.
    Refused,
}

/// What a worker works with.
struct Worker {
    index: i64,
    run: String,
    sql: LedgerSql,
    pool: Pool,
    queries: Arc<dyn QueryInterface>,
    ttl: Duration,
    verbose: bool,
    errors: std::cell::Cell<u64>,
    last_error: std::cell::RefCell<String>,
}

impl Worker {
    fn error(&self, what: &str, error: &str) {
        self.errors.set(self.errors.get() + 1);
        let message = format!("{what}: {error}");
        if self.verbose {
            eprintln!("torture worker {}: {message}", self.index);
        }
        *self.last_error.borrow_mut() = message;
    }

    /// One fenced write, bounded: a statement on a frozen connection must not stop the
    /// worker for good.
    async fn fenced(&self, lease: &Lease, statement: &Statement) -> Option<Written> {
        let write = self.pool.fenced_write(lease, statement, Duration::ZERO);
        match tokio::time::timeout(self.ttl, write).await {
            Ok(Ok(())) => Some(Written::Committed),
            Ok(Err(error)) => match error.downcast_ref::<Error>() {
                Some(Error::Fenced { .. }) => Some(Written::Refused),
                _ => {
                    self.error("fenced write", &error_chain(&*error));
                    None
                }
            },
            Err(_) => {
                self.error("fenced write", &format!("no answer within {:?}", self.ttl));
                None
            }
        }
    }
}

async fn worker_main() -> Result<(), String> {
    let variable = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let adapter = <Backend as clap::ValueEnum>::from_str(&variable(ADAPTER)?, false)?;
    let dialect = dialect_named(&variable(DIALECT)?)?;
    let ttl = Duration::from_millis(
        variable(TTL_MS)?
            .parse()
            .map_err(|_| format!("{TTL_MS} is not a number"))?,
    );
    let index: i64 = variable(INDEX)?
        .parse()
        .map_err(|_| format!("{INDEX} is not a number"))?;
    let (pool, queries) = adapter
        .pool(dialect, &variable(URL)?, PoolOptions::new(3))
        .await?;
    let election = std::env::var_os(ELECTION).is_some();
    let permits: Option<u32> = match std::env::var(SEMAPHORE) {
        Ok(permits) => Some(
            permits
                .parse()
                .map_err(|_| format!("{SEMAPHORE} is not a number"))?,
        ),
        Err(_) => None,
    };
    let rw = std::env::var_os(RW).is_some();
    let locks = variable(NAMES)?
        .split(',')
        .map(|name| {
            if let Some(permits) = permits {
                let semaphore = Semaphore::builder(name, permits, Arc::clone(&queries));
                let semaphore = worker_options(semaphore, ttl, index)
                    .build()
                    .map_err(|error| error.to_string())?;
                return Ok(Contested::Semaphore(semaphore));
            }
            if rw {
                let rw = worker_options(RwLock::builder(name, Arc::clone(&queries)), ttl, index)
                    .build()
                    .map_err(|error| error.to_string())?;
                return Ok(Contested::Rw(rw));
            }
            let lock = DistributedLock::builder(name, Arc::clone(&queries));
            let lock = worker_options(lock, ttl, index)
                .build()
                .map_err(|error| error.to_string())?;
            if !election {
                return Ok(Contested::Lock(lock));
            }
            let election = Election::builder(name, Arc::clone(&queries))
                .table(LOCK_TABLE)
                .ttl(ttl)
                .poll_interval(POLL)
                .holder(holder_label(index))
                .value(format!("worker {index}"))
                .build()
                .map_err(|error| error.to_string())?;
            Ok(Contested::Election(election))
        })
        .collect::<Result<Vec<_>, String>>()?;
    for lock in &locks {
        if let Contested::Election(election) = lock {
            tokio::spawn(observe(election.clone()));
        }
    }
    let worker = Worker {
        index,
        run: variable(RUN)?,
        sql: LedgerSql::new(dialect),
        pool,
        queries,
        ttl,
        verbose: std::env::var_os(VERBOSE).is_some(),
        errors: std::cell::Cell::new(0),
        last_error: std::cell::RefCell::new(String::new()),
    };
    println!("READY");

    let stopping = Arc::new(AtomicBool::new(false));
    let long_work_ms = Arc::new(AtomicU64::new(0));
    tokio::spawn(follow_input(
        Arc::clone(&stopping),
        Arc::clone(&long_work_ms),
    ));
    while !stopping.load(Ordering::Relaxed) {
        let lock = &locks[fastrand::usize(..locks.len())];
        section(&worker, lock, &long_work_ms).await;
    }
    println!(
        "ERRORS {} {}",
        worker.errors.get(),
        worker.last_error.borrow()
    );
    Ok(())
}

/// Follows the coordinator's requests: `LONG <ms>` asks for a long next section; the end
/// of the input stops the worker.
async fn follow_input(stopping: Arc<AtomicBool>, long_work_ms: Arc<AtomicU64>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(ms) = line.strip_prefix("LONG ").and_then(|ms| ms.parse().ok()) {
            long_work_ms.store(ms, Ordering::Relaxed);
        } else {
            eprintln!("torture worker: unexpected request {line:?}");
        }
    }
    stopping.store(true, Ordering::Relaxed);
}

/// What the workers contend for: a lock, or, with `--election`, the leadership of an
/// election of the same name (the same lock, campaigned for).
enum Contested {
    Lock(DistributedLock),
    Election(Election),
    /// With `--semaphore`: one of its permits.
    Semaphore(Semaphore),
    /// With `--rw`: a reader-writer lock, read three times in four, else written.
    Rw(RwLock),
}

/// A held lock, a leadership, a permit, or a read or write.
enum Held {
    Guard(LockGuard),
    Leadership(Leadership),
    Permit(SemaphorePermit),
    Read(RwReadGuard),
    Write(RwWriteGuard),
}

impl Contested {
    /// The name a section held under `lease` is recorded with in the ledger, which the
    /// checker treats as one lock's: the lock's, the election's, a semaphore's permit row
    /// (`name#i`: its lease's name), or the reader-writer lock's (whose reads and writes
    /// the checker orders together).
    fn ledger_name<'a>(&'a self, lease: &'a Lease) -> &'a str {
        match self {
            Self::Lock(lock) => lock.name(),
            Self::Election(election) => election.name(),
            Self::Semaphore(_) => lease.name(),
            Self::Rw(rw) => rw.name(),
        }
    }

    /// Acquires the lock, or campaigns until leading; [`Error::Timeout`] after the lock's
    /// acquire timeout, which a campaign, waiting for as long as it takes, is given here.
    async fn take(&self, ttl: Duration) -> Result<Held, Error> {
        match self {
            Self::Lock(lock) => lock.acquire().await.map(Held::Guard),
            Self::Semaphore(semaphore) => semaphore.acquire().await.map(Held::Permit),
            Self::Rw(rw) if fastrand::u8(..4) == 0 => rw.write().await.map(Held::Write),
            Self::Rw(rw) => rw.read().await.map(Held::Read),
            Self::Election(election) => {
                match tokio::time::timeout(ttl * 3, election.campaign()).await {
                    Ok(leadership) => leadership.map(Held::Leadership),
                    Err(_) => Err(Error::Timeout {
                        name: election.name().to_owned(),
                        waited: ttl * 3,
                        holder: None,
                    }),
                }
            }
        }
    }
}

impl Held {
    fn lease(&self) -> &Lease {
        match self {
            Self::Guard(guard) => guard.lease(),
            Self::Leadership(leadership) => leadership.lease(),
            Self::Permit(permit) => permit.lease(),
            Self::Read(read) => read.lease(),
            Self::Write(write) => write.lease(),
        }
    }

    /// The section's owner in the ledger: the acquisition's owner id, marked for a read
    /// (whose sections may overlap each other).
    fn ledger_owner(&self) -> String {
        let owner = self.lease().owner_id();
        match self {
            Self::Read(_) => format!("{READ_MARK}{owner}"),
            _ => owner.to_owned(),
        }
    }

    /// Releases the lock, or resigns.
    async fn release(self) -> Result<(), Error> {
        match self {
            Self::Guard(guard) => guard.release().await,
            Self::Leadership(leadership) => leadership.resign().await,
            Self::Permit(permit) => permit.release().await,
            Self::Read(read) => read.release().await,
            Self::Write(write) => write.release().await,
        }
    }
}

/// Observes `election` until the worker exits, printing each term it sees.
async fn observe(election: Election) {
    let mut observer = election.observe();
    loop {
        // Nobody leads, or the database is away for a while (a fault): look again.
        if let Ok(Some(leader)) = observer.changed().await {
            println!("SAW {} {}", election.name(), leader.term);
        }
    }
}

/// Acquires, writes the entry, works (for `long_work_ms` if the coordinator asked for a
/// long section), writes the exit, releases.
async fn section(worker: &Worker, lock: &Contested, long_work_ms: &AtomicU64) {
    let guard = match lock.take(worker.ttl).await {
        Ok(guard) => guard,
        Err(Error::Timeout { .. }) => return,
        Err(error) => {
            worker.error("acquire", &error_chain(&error));
            tokio::time::sleep(POLL).await;
            return;
        }
    };
    let lease = guard.lease().clone();
    let (name, token) = (lock.ledger_name(&lease), lease.fencing_token().get());
    let owner = lease.owner_id().to_owned();
    println!("HOLD {name} {token} {owner}");
    let owner = guard.ledger_owner();
    let (done, done_rx) = oneshot::channel();
    let released_while_held = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(record_loss(
        Arc::clone(&worker.queries),
        LossRecord {
            sql: worker.sql,
            run: worker.run.clone(),
            name: name.to_owned(),
            token,
            worker: worker.index,
        },
        lease.clone(),
        Arc::clone(&released_while_held),
        done_rx,
    ));

    let entry = worker
        .sql
        .enter(&worker.run, name, token, &owner, worker.index);
    let entered = worker.fenced(&lease, &entry).await;
    if entered == Some(Written::Refused) {
        println!("REFUSED {name} {token}");
    }
    if entered == Some(Written::Committed) {
        let work = match long_work_ms.swap(0, Ordering::Relaxed) {
            0 => {
                println!("WORK {name} {token}");
                WORK.mul_f64(0.2 + 0.8 * fastrand::f64())
            }
            ms => {
                println!("WORK {name} {token} long");
                Duration::from_millis(ms)
            }
        };
        tokio::time::sleep(work).await;
        println!("DONE {name} {token}");
        // Attempted even when the loss is already known: a holder resumed after a pause
        // goes on with its job, and it is fencing that must refuse its writes.
        let exit = worker.sql.exit(&worker.run, name, token, &owner);
        for attempt in 0..3 {
            match worker.fenced(&lease, &exit).await {
                Some(Written::Refused) => {
                    println!("REFUSED {name} {token}");
                    if attempt < 2 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Some(Written::Committed) | None => break,
            }
        }
    }
    // A release must not wait past the lease's end, whatever the database does: after
    // that the row frees itself, and waiting longer only hangs the caller.
    released_while_held.store(lease.loss_reason().is_none(), Ordering::Relaxed);
    let releasing = Instant::now();
    let promise = worker.ttl + Duration::from_millis(500);
    let released = tokio::time::timeout(worker.ttl * 10, guard.release()).await;
    if releasing.elapsed() > promise {
        println!("HANG {name} {token} release took {:?}", releasing.elapsed());
    }
    match released {
        // A release after a loss reports the loss; that is expected under faults.
        Ok(Ok(()) | Err(Error::Lost { .. })) => {}
        Ok(Err(error)) => worker.error("release", &error_chain(&error)),
        Err(_) => worker.error(
            "release",
            &format!("no answer within {:?}", worker.ttl * 10),
        ),
    }
    println!("FREE {name} {token}");
    let _ = done.send(());
    // Waits for a loss being recorded, so that the checker sees it.
    let _ = watcher.await;
}

/// Where a loss is recorded: the run, the lock and the worker.
#[derive(Debug)]
struct LossRecord {
    sql: LedgerSql,
    run: String,
    name: String,
    token: i64,
    worker: i64,
}

/// When the lease reports its loss before the section is done: says so at once, then
/// records it, unfenced, at the database's clock less the time it took to get there (the
/// database may be unreachable for a while).
///
/// A lease that ends by its own release is no loss, though a core that ends every lease
/// through `lost()` (with a "released" reason) reports it there too: the section says,
/// before it releases, whether the lease was still held, and then the watcher stands
/// down. A loss that comes during the release is not recorded either; no write of the
/// section can follow it.
async fn record_loss(
    queries: Arc<dyn QueryInterface>,
    record: LossRecord,
    lease: Lease,
    released_while_held: Arc<AtomicBool>,
    done: oneshot::Receiver<()>,
) {
    tokio::select! {
        _ = lease.lost() => {}
        _ = done => return,
    }
    if released_while_held.load(Ordering::Relaxed) {
        return;
    }
    let noticed = Instant::now();
    println!("LOST {} {}", record.name, record.token);
    while noticed.elapsed() < Duration::from_secs(60) {
        let ago_us = i64::try_from(noticed.elapsed().as_micros()).unwrap_or(i64::MAX);
        let statement = record.sql.record_loss(
            &record.run,
            &record.name,
            record.token,
            record.worker,
            ago_us,
        );
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(5), queries.execute(&statement)).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
