//! Child processes: the suite re-runs its own test binary with `DLOCK_CONFORMANCE_CHILD`
//! set, and the child does one part of a scenario — contend, hold until killed, or take
//! one token — printing what it saw on stdout for the parent to check.

use std::process::ExitCode;
use std::time::Duration;

use dlock_core::{
    DistributedLock, Election, ElectionBuilder, MultiLock, MultiLockBuilder, Semaphore,
    SemaphoreBuilder,
};
use dlock_testkit::{Backend, ChildProcess, Route, wall_ns};

use crate::support::Env;

const MODE: &str = "DLOCK_CONFORMANCE_CHILD";
const DIALECT: &str = "DLOCK_CONFORMANCE_DIALECT";
const URL: &str = "DLOCK_CONFORMANCE_URL";
const ROUTE: &str = "DLOCK_CONFORMANCE_ROUTE";
const NAME: &str = "DLOCK_CONFORMANCE_NAME";
const SECTIONS: &str = "DLOCK_CONFORMANCE_SECTIONS";
const TTL_MS: &str = "DLOCK_CONFORMANCE_TTL_MS";
const PERMITS: &str = "DLOCK_CONFORMANCE_PERMITS";

/// What a child does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Runs `sections` critical sections under the lock, printing
    /// `SECTION <token> <entry ns> <exit ns>` for each (wall clock, shared by all
    /// processes on the machine).
    Contend { sections: usize },
    /// Acquires, prints `ACQUIRED <token>`, and waits to be killed.
    Hold,
    /// Acquires, prints `TOKEN <token>`, releases and exits.
    Once,
    /// Acquires, prints `TOKEN <token>`, and returns from `main` with the guard still in
    /// scope: the one-shot job that forgets to release.
    DropAtExit,
    /// Finds the lock held, prints `WAITING`, waits in `acquire` with the default poll
    /// interval, prints `ACQUIRED <wall-clock ns>`, releases and exits.
    Wait,
    /// Elections. Leads `sections` terms of the election, one after another, printing
    /// `TERM <term> <entry ns> <exit ns>` for each (as `Contend`), resigning after each.
    Candidate { sections: usize },
    /// Leads, prints `LEADING <term>`, then every 10 ms, while it leads, `ALIVE <ns>`: a
    /// wall-clock instant taken *before* it checked that it still leads. Prints `LOST`
    /// once the leadership is lost, and waits to be killed.
    Lead,
    /// Finds someone else leading, prints `CAMPAIGNING`, campaigns with the default poll
    /// interval, prints `LEADING <term> <wall-clock ns>`, resigns and exits.
    Campaign,
    /// Observes the election (poll interval 50 ms), printing `LEADER <term> <value>` or
    /// `NONE` for every change, until it sees the value `last`.
    Observe,
    /// Multi-locks, on the names given as the lock name, one per line. Runs `sections`
    /// critical sections holding all of them, printing
    /// `SECTION <name> <token> <entry ns> <exit ns>` for each name of each.
    MultiContend { sections: usize },
    /// Acquires all the names, prints `ACQUIRED`, and waits to be killed.
    MultiHold,
    /// As `Wait`, for all the names.
    MultiWait,
    /// Semaphores (see `semaphore_child`), on the semaphore of the name with `permits`.
    /// Runs `sections` sections each holding a permit for about a millisecond, printing
    /// `SECTION <permit> <token> <entry ns> <exit ns>` for each.
    SemContend { sections: usize, permits: u32 },
    /// Takes a permit, prints `ACQUIRED <permit> <token>`, and waits to be killed.
    SemHold { permits: u32 },
    /// As `Wait`, for a permit.
    SemWait { permits: u32 },
    /// Reader-writer locks (see `scenarios/rwlock.rs`): `sections` reads and writes,
    /// printing `READ|WRITE <token> <entry ns> <exit ns>` for each.
    RwContend { sections: usize },
    /// Reads (`write` false) or writes, prints `ACQUIRED <token>`, and waits to be killed.
    RwHold { write: bool },
}

/// Starts the test binary as a child in `mode` on lock `name` with `ttl`, against `env`'s
/// database (its adapter is the test binary's own).
pub(crate) fn spawn(
    env: &Env,
    name: &str,
    mode: Mode,
    ttl: Duration,
) -> Result<ChildProcess, String> {
    let permits = match mode {
        Mode::SemContend { permits, .. }
        | Mode::SemHold { permits }
        | Mode::SemWait { permits } => permits,
        _ => 0,
    };
    let (mode_name, sections) = match mode {
        Mode::Contend { sections } => ("contend", sections),
        Mode::Hold => ("hold", 0),
        Mode::Once => ("once", 0),
        Mode::DropAtExit => ("drop-at-exit", 0),
        Mode::Wait => ("wait", 0),
        Mode::Candidate { sections } => ("candidate", sections),
        Mode::Lead => ("lead", 0),
        Mode::Campaign => ("campaign", 0),
        Mode::Observe => ("observe", 0),
        Mode::MultiContend { sections } => ("multi-contend", sections),
        Mode::MultiHold => ("multi-hold", 0),
        Mode::MultiWait => ("multi-wait", 0),
        Mode::SemContend { sections, .. } => ("sem-contend", sections),
        Mode::SemHold { .. } => ("sem-hold", 0),
        Mode::SemWait { .. } => ("sem-wait", 0),
        Mode::RwContend { sections } => ("rw-contend", sections),
        Mode::RwHold { write: false } => ("rw-hold-read", 0),
        Mode::RwHold { write: true } => ("rw-hold-write", 0),
    };
    ChildProcess::spawn(
        format!("the {mode_name} child"),
        [
            (MODE, mode_name.to_owned()),
            (DIALECT, dlock_testkit::dialect_key(env.dialect).to_owned()),
            (URL, env.url.clone()),
            (ROUTE, env.route.key().to_owned()),
            (NAME, name.to_owned()),
            (SECTIONS, sections.to_string()),
            (TTL_MS, ttl.as_millis().to_string()),
            (PERMITS, permits.to_string()),
        ],
    )
}

/// When this process is a child, does the child's part and returns its exit code.
pub(crate) fn run_if_child(backend: Backend) -> Option<ExitCode> {
    let mode = std::env::var(MODE).ok()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("child: cannot start a tokio runtime");
    Some(match runtime.block_on(child_main(backend, &mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("child ({mode}): {error}");
            ExitCode::FAILURE
        }
    })
}

async fn child_main(backend: Backend, mode: &str) -> Result<(), String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let dialect = dlock_testkit::dialect_named(&var(DIALECT)?)?;
    let ttl = Duration::from_millis(var(TTL_MS)?.parse().map_err(|e| format!("{e}"))?);
    let route = Route::named(&var(ROUTE)?)?;
    let queries = Env::new(backend, dialect, var(URL)?, route)
        .connect()
        .await?;
    if mode.starts_with("multi-") {
        let names = var(NAME)?;
        let builder = MultiLock::builder(names.lines(), queries)
            .ttl(ttl)
            .holder(format!("conformance child {mode}"));
        // As for a lock: only a wake-up on release makes a waiter with the default poll
        // interval fast.
        let builder = match mode {
            "multi-wait" => builder,
            _ => builder.poll_interval(Duration::from_millis(5)),
        };
        let sections = var(SECTIONS)?.parse().map_err(|e| format!("{e}"))?;
        return multi_child(builder, mode, sections).await;
    }
    if mode.starts_with("sem-") {
        let permits = var(PERMITS)?.parse().map_err(|e| format!("{e}"))?;
        let builder = Semaphore::builder(var(NAME)?, permits, queries)
            .ttl(ttl)
            .holder(format!("conformance child {mode}"));
        // As for a lock: only a wake-up on release makes a waiter with the default poll
        // interval fast.
        let builder = match mode {
            "sem-wait" => builder,
            _ => builder.poll_interval(Duration::from_millis(5)),
        };
        let sections = var(SECTIONS)?.parse().map_err(|e| format!("{e}"))?;
        return semaphore_child(builder, mode, sections).await;
    }
    if mode.starts_with("rw-") {
        let sections = var(SECTIONS)?.parse().map_err(|e| format!("{e}"))?;
        return crate::scenarios::rw_child(queries, &var(NAME)?, mode, ttl, sections).await;
    }
    if let Some(election) = election_mode(mode) {
        let builder = Election::builder(var(NAME)?, queries)
            .table(crate::support::ELECTION_TABLE)
            .ttl(ttl)
            .holder(format!("conformance child {mode}"))
            .value(format!("{mode} {}", std::process::id()));
        let sections = var(SECTIONS)?.parse().map_err(|e| format!("{e}"))?;
        return election_child(builder, election, sections).await;
    }
    let builder = DistributedLock::builder(var(NAME)?, queries)
        .ttl(ttl)
        .holder(format!("conformance child {mode}"));
    // Contenders poll fast to keep the suite quick; a waiter keeps the default, so that
    // only a wake-up on release makes it fast.
    let builder = match mode {
        "wait" => builder,
        _ => builder.poll_interval(Duration::from_millis(5)),
    };
    let lock = builder.build().map_err(|e| e.to_string())?;
    match mode {
        "contend" => {
            let sections: usize = var(SECTIONS)?.parse().map_err(|e| format!("{e}"))?;
            let mut report = String::new();
            for _ in 0..sections {
                let guard = lock.acquire().await.map_err(|e| e.to_string())?;
                let entry = wall_ns();
                tokio::task::yield_now().await;
                let exit = wall_ns();
                if guard.is_lost() {
                    return Err(format!("lost the lock in a section: {guard:?}"));
                }
                report.push_str(&format!(
                    "SECTION {} {entry} {exit}\n",
                    guard.fencing_token()
                ));
                guard.release().await.map_err(|e| e.to_string())?;
            }
            print!("{report}");
        }
        "hold" => {
            let guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED {}", guard.fencing_token());
            // Wait to be killed; the guard stays alive and keeps renewing.
            std::future::pending::<()>().await;
        }
        "once" => {
            let guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("TOKEN {}", guard.fencing_token());
            guard.release().await.map_err(|e| e.to_string())?;
        }
        "drop-at-exit" => {
            let _guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("TOKEN {}", _guard.fencing_token());
        }
        "wait" => {
            if lock
                .try_acquire()
                .await
                .map_err(|e| e.to_string())?
                .acquired()
                .is_some()
            {
                return Err("the lock was free; the parent should hold it".into());
            }
            println!("WAITING");
            let guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED {}", wall_ns());
            guard.release().await.map_err(|e| e.to_string())?;
        }
        other => return Err(format!("unknown child mode {other:?}")),
    }
    Ok(())
}

/// The election part of a child, for the election modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElectionMode {
    Candidate,
    Lead,
    Campaign,
    Observe,
}

fn election_mode(mode: &str) -> Option<ElectionMode> {
    Some(match mode {
        "candidate" => ElectionMode::Candidate,
        "lead" => ElectionMode::Lead,
        "campaign" => ElectionMode::Campaign,
        "observe" => ElectionMode::Observe,
        _ => return None,
    })
}

async fn election_child(
    builder: ElectionBuilder,
    mode: ElectionMode,
    sections: usize,
) -> Result<(), String> {
    // Candidates poll fast to keep the suite quick; a campaigner keeps the default, so
    // that only a wake-up on resignation makes it fast.
    let builder = match mode {
        ElectionMode::Candidate | ElectionMode::Lead => {
            builder.poll_interval(Duration::from_millis(5))
        }
        ElectionMode::Observe => builder.poll_interval(Duration::from_millis(50)),
        ElectionMode::Campaign => builder,
    };
    let election = builder.build().map_err(|e| e.to_string())?;
    match mode {
        ElectionMode::Candidate => {
            let mut report = String::new();
            for _ in 0..sections {
                let leadership = election.campaign().await.map_err(|e| e.to_string())?;
                let entry = wall_ns();
                tokio::task::yield_now().await;
                let exit = wall_ns();
                if leadership.is_lost() {
                    return Err(format!("lost the leadership in a term: {leadership:?}"));
                }
                report.push_str(&format!("TERM {} {entry} {exit}\n", leadership.term()));
                leadership.resign().await.map_err(|e| e.to_string())?;
            }
            print!("{report}");
        }
        ElectionMode::Lead => {
            let leadership = election.campaign().await.map_err(|e| e.to_string())?;
            println!("LEADING {}", leadership.term());
            loop {
                let at = wall_ns();
                if leadership.is_lost() {
                    println!("LOST");
                    break;
                }
                println!("ALIVE {at}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::future::pending::<()>().await;
        }
        ElectionMode::Campaign => {
            if election
                .leader()
                .await
                .map_err(|e| e.to_string())?
                .is_none()
            {
                return Err("nobody leads; the parent should".into());
            }
            println!("CAMPAIGNING");
            let leadership = election.campaign().await.map_err(|e| e.to_string())?;
            println!("LEADING {} {}", leadership.term(), wall_ns());
            leadership.resign().await.map_err(|e| e.to_string())?;
        }
        ElectionMode::Observe => {
            let mut observer = election.observe();
            loop {
                match observer.changed().await.map_err(|e| e.to_string())? {
                    Some(leader) => {
                        println!("LEADER {} {}", leader.term, leader.value);
                        if leader.value == "last" {
                            break;
                        }
                    }
                    None => println!("NONE"),
                }
            }
        }
    }
    Ok(())
}

/// The multi-lock part of a child, for the `multi-` modes.
async fn multi_child(builder: MultiLockBuilder, mode: &str, sections: usize) -> Result<(), String> {
    let lock = builder.build().map_err(|e| e.to_string())?;
    match mode {
        "multi-contend" => {
            let mut report = String::new();
            for _ in 0..sections {
                let guard = lock.acquire().await.map_err(|e| e.to_string())?;
                let entry = wall_ns();
                tokio::task::yield_now().await;
                let exit = wall_ns();
                if guard.is_lost() {
                    return Err(format!("lost the multi-lock in a section: {guard:?}"));
                }
                for (name, token) in guard.fencing_tokens() {
                    report.push_str(&format!("SECTION {name} {token} {entry} {exit}\n"));
                }
                guard.release().await.map_err(|e| e.to_string())?;
            }
            print!("{report}");
        }
        "multi-wait" => {
            if lock
                .try_acquire()
                .await
                .map_err(|e| e.to_string())?
                .acquired()
                .is_some()
            {
                return Err("the names were free; the parent should hold one".into());
            }
            println!("WAITING");
            let guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED {}", wall_ns());
            guard.release().await.map_err(|e| e.to_string())?;
        }
        "multi-hold" => {
            let _guard = lock.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED");
            std::future::pending::<()>().await;
        }
        other => return Err(format!("unknown child mode {other:?}")),
    }
    Ok(())
}

/// The semaphore part of a child, for the `sem-` modes.
async fn semaphore_child(
    builder: SemaphoreBuilder,
    mode: &str,
    sections: usize,
) -> Result<(), String> {
    let semaphore = builder.build().map_err(|e| e.to_string())?;
    match mode {
        "sem-contend" => {
            let mut report = String::new();
            for _ in 0..sections {
                let permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
                let entry = wall_ns();
                // Long enough for sections of other processes to run alongside.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let exit = wall_ns();
                if permit.is_lost() {
                    return Err(format!("lost the permit in a section: {permit:?}"));
                }
                report.push_str(&format!(
                    "SECTION {} {} {entry} {exit}\n",
                    permit.permit(),
                    permit.fencing_token()
                ));
                permit.release().await.map_err(|e| e.to_string())?;
            }
            print!("{report}");
        }
        "sem-hold" => {
            let permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED {} {}", permit.permit(), permit.fencing_token());
            std::future::pending::<()>().await;
        }
        "sem-wait" => {
            if semaphore
                .try_acquire()
                .await
                .map_err(|e| e.to_string())?
                .acquired()
                .is_some()
            {
                return Err("a permit was free; the parent should hold them all".into());
            }
            println!("WAITING");
            let permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
            println!("ACQUIRED {}", wall_ns());
            permit.release().await.map_err(|e| e.to_string())?;
        }
        other => return Err(format!("unknown child mode {other:?}")),
    }
    Ok(())
}
