//! A fleet of three processes elects one scheduler. This example starts the fleet itself
//! (copies of its own binary) and watches the election from the outside, printing who
//! leads; then it kills the leader (SIGKILL), which the others replace within its lease,
//! and shuts the next leader down gracefully, which resigns and hands over at once.
//!
//! ```sh
//! cargo run --example leader   # an SQLite file; or set DATABASE_URL
//! ```

use std::process::Stdio;
use std::time::Duration;

use dlock::seaorm::sea_orm::{Database, DatabaseConnection};
use dlock::{Election, Error, Leader};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const PROCESSES: usize = 3;
/// How long a crashed leader's lease lasts: how long the fleet takes to replace it.
const TTL: Duration = Duration::from_secs(3);
const ELECTION: &str = "scheduler";
const WORKER: &str = "DLOCK_EXAMPLE_WORKER";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("dlock-leader.sqlite");
        format!("sqlite://{}?mode=rwc", file.display())
    });
    match std::env::var(WORKER) {
        Ok(process) => candidate(&process, &url).await,
        Err(_) => fleet(&url).await,
    }
}

/// The election with this example's options: a short lease, so that a crash is
/// noticed within seconds, and a short poll interval where nothing notifies.
async fn election(url: &str, value: String) -> Result<Election, Box<dyn std::error::Error>> {
    Ok(Election::builder(ELECTION, connect(url).await?)
        .value(value)
        .ttl(TTL)
        .poll_interval(Duration::from_millis(200))
        .build()?)
}

/// One process of the fleet: campaigns, leads until it loses the leadership (then
/// campaigns again) or until its input closes (the example's way to ask it to shut
/// down), and then resigns, so that another process leads at once.
async fn candidate(process: &str, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let election = election(url, format!("process {process}")).await?;
    let (mut stdin, mut input) = (tokio::io::stdin(), Vec::new());
    let mut shutdown = std::pin::pin!(stdin.read_to_end(&mut input));
    loop {
        let leadership = tokio::select! {
            leadership = election.campaign() => leadership?,
            _ = &mut shutdown => return Ok(()),
        };
        println!("  process {process}: I lead, in term {}", leadership.term());
        // The scheduler's work would run here, fencing its writes with the term, and
        // stop at once on a loss.
        tokio::select! {
            reason = leadership.lost() => println!("  process {process}: lost it: {reason}"),
            _ = &mut shutdown => {
                println!("  process {process}: shutting down, resigning");
                leadership.resign().await?;
                return Ok(());
            }
        }
    }
}

/// Starts the fleet, watches the election, kills a leader, shuts the next one down.
async fn fleet(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("{PROCESSES} processes elect a {ELECTION:?} on {url} (lease {TTL:?}):");
    // Connected first: an SQLite file is set up (WAL mode) by its first connection,
    // which processes starting together would race for.
    let watching = election(url, "observer".into()).await?;
    let exe = std::env::current_exe()?;
    let mut processes = Vec::new();
    for process in 0..PROCESSES {
        processes.push(Some(
            Command::new(&exe)
                .env(WORKER, process.to_string())
                .env("DATABASE_URL", url)
                .stdin(Stdio::piped())
                .stdout(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?,
        ));
    }
    let mut leaders = watching.observe();
    let first = next_leader(&mut leaders).await?;
    println!("observer: {first} leads");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    let mut killed = take(&mut processes, &first)?;
    killed.kill().await?;
    println!("observer: killed the leader, {}, with SIGKILL", first.value);
    let second = next_leader(&mut leaders).await?;
    println!(
        "observer: {second} leads, {} ms after the kill (within about a lease: nobody can \
         tell a dead leader from a slow one sooner)",
        killed_at.elapsed().as_millis()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let resigned_at = Instant::now();
    let mut shut_down = take(&mut processes, &second)?;
    drop(shut_down.stdin.take());
    let third = next_leader(&mut leaders).await?;
    println!(
        "observer: {third} leads, {} ms after {} was asked to shut down (it resigned)",
        resigned_at.elapsed().as_millis(),
        second.value
    );
    shut_down.wait().await?;

    for mut process in processes.into_iter().flatten() {
        drop(process.stdin.take());
        process.wait().await?;
    }
    Ok(())
}

/// The next leader the observer sees (skipping the moments when nobody leads).
async fn next_leader(leaders: &mut dlock::Observer) -> Result<Leader, Error> {
    loop {
        if let Some(leader) = leaders.changed().await? {
            return Ok(leader);
        }
    }
}

/// The process that `leader` names ("process N").
fn take(processes: &mut [Option<Child>], leader: &Leader) -> Result<Child, String> {
    leader
        .value
        .strip_prefix("process ")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| processes.get_mut(n)?.take())
        .ok_or_else(|| format!("no running process is {}", leader.value))
}

/// SQLite files are shared by processes: `connect_options` puts them in WAL mode, with a
/// busy timeout for the writer.
async fn connect(url: &str) -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let mut options = dlock::seaorm::connect_options(url);
    options.sqlx_logging(false);
    Ok(Database::connect(options).await?)
}
