//! A cron job that every process of a fleet schedules with `tokio-cron-scheduler`, every
//! two seconds: dlock makes each tick run on exactly one process, and the others skip it
//! and are told who ran it. This example starts the fleet itself — three copies of its own
//! binary — collects what each did at each tick, prints ticks × processes with the
//! fencing token of every run, and fails if a tick ran anywhere but exactly once.
//!
//! ```sh
//! cargo run --example background_job   # an SQLite file; or set DATABASE_URL
//! ```
//!
//! The settings a cron tick needs (README, "Background jobs"): `skip_if_obtained`, so the
//! processes that lose the race skip rather than queue up and run the tick late; and the
//! job holds the lock until shortly before the next tick, so that a process whose
//! scheduler fires a little late finds this tick taken instead of free again.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlock::seaorm::sea_orm::{Database, DatabaseConnection};
use dlock::{DistributedLock, Error, Outcome};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_cron_scheduler::{Job, JobScheduler};

const PROCESSES: usize = 3;
const TICKS: u64 = 4;
/// The cron schedule (with seconds): every two seconds.
const SCHEDULE: &str = "*/2 * * * * *";
const PERIOD: Duration = Duration::from_secs(2);
const WORKER: &str = "DLOCK_EXAMPLE_WORKER";
const FIRST_TICK: &str = "DLOCK_EXAMPLE_FIRST_TICK";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("dlock-background-job.sqlite");
        format!("sqlite://{}?mode=rwc", file.display())
    });
    match (std::env::var(WORKER), std::env::var(FIRST_TICK)) {
        (Ok(process), Ok(first_tick)) => worker(&process, &url, first_tick.parse()?).await,
        _ => fleet(&url).await,
    }
}

/// What one process did at one tick.
enum Did {
    Ran { token: u64 },
    Skipped,
}

/// Starts the processes, collects what they did, prints it, checks it.
async fn fleet(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Two ticks ahead, so that every process is up and scheduled before the first.
    let first_tick = tick_of(SystemTime::now()) + 2;
    println!("{PROCESSES} processes run the cron schedule {SCHEDULE:?} for {TICKS} ticks on {url}");
    let exe = std::env::current_exe()?;
    let mut processes = Vec::new();
    for process in 0..PROCESSES {
        processes.push(
            tokio::process::Command::new(&exe)
                .env(WORKER, process.to_string())
                .env(FIRST_TICK, first_tick.to_string())
                .env("DATABASE_URL", url)
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    // tick → process → what it did.
    let mut table: BTreeMap<u64, BTreeMap<usize, Did>> = BTreeMap::new();
    for (process, mut child) in processes.into_iter().enumerate() {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["RAN", tick, token] => {
                    let token = token.parse()?;
                    table
                        .entry(tick.parse()?)
                        .or_default()
                        .insert(process, Did::Ran { token });
                }
                ["SKIPPED", tick] => {
                    table
                        .entry(tick.parse()?)
                        .or_default()
                        .insert(process, Did::Skipped);
                }
                _ => println!("process {process}: {line}"),
            }
        }
        let status = child.wait().await?;
        if !status.success() {
            return Err(format!("process {process} failed: {status}").into());
        }
    }
    print_table(&table);
    for tick in first_tick..first_tick + TICKS {
        let runs = table.get(&tick).map_or(0, |row| {
            row.values()
                .filter(|did| matches!(did, Did::Ran { .. }))
                .count()
        });
        if runs != 1 {
            return Err(format!("tick {} ran {runs} times", tick - first_tick + 1).into());
        }
    }
    println!("every tick ran exactly once");
    Ok(())
}

fn print_table(table: &BTreeMap<u64, BTreeMap<usize, Did>>) {
    print!("\n{:>6}", "tick");
    for process in 0..PROCESSES {
        print!("  {:<16}", format!("process {process}"));
    }
    println!();
    for (number, (_, row)) in table.iter().enumerate() {
        print!("{:>6}", number + 1);
        for process in 0..PROCESSES {
            let cell = match row.get(&process) {
                Some(Did::Ran { token }) => format!("ran (token {token})"),
                Some(Did::Skipped) => "skipped".to_owned(),
                None => "-".to_owned(),
            };
            print!("  {cell:<16}");
        }
        println!();
    }
    println!();
}

/// One process of the fleet: the cron schedule, each tick wrapped in the lock.
async fn worker(
    process: &str,
    url: &str,
    first_tick: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let db = connect(url).await?;
    let lock = DistributedLock::builder("background/report", db)
        .skip_if_obtained(true)
        .holder(format!("process {process}"))
        .build()?;
    let scheduler = JobScheduler::new().await?;
    scheduler
        .add(Job::new_async(SCHEDULE, move |_, _| {
            let lock = lock.clone();
            Box::pin(async move {
                let tick = tick_of(SystemTime::now());
                if (first_tick..first_tick + TICKS).contains(&tick)
                    && let Err(error) = run_tick(&lock, tick).await
                {
                    eprintln!("tick {tick}: {error}");
                }
            })
        })?)
        .await?;
    scheduler.start().await?;
    // Until the last tick has ended.
    sleep_until(tick_start(first_tick + TICKS)).await;
    let mut scheduler = scheduler;
    scheduler.shutdown().await?;
    Ok(())
}

/// One tick: run the job under the lock, or skip it.
async fn run_tick(lock: &DistributedLock, tick: u64) -> Result<(), Error> {
    let outcome = lock
        .lock(|lease| async move {
            // The job. Its fencing token is the run's: record it with the run's writes
            // (`fence` in each adapter) so that a late writer is refused.
            println!("RAN {tick} {}", lease.fencing_token());
            // Hold the lock for the rest of the tick, so that a process whose scheduler
            // fires late still finds this tick taken.
            sleep_until(tick_start(tick + 1) - Duration::from_millis(200)).await;
            Ok::<_, Error>(())
        })
        .await?;
    if let Outcome::Skipped(_holder) = outcome {
        println!("SKIPPED {tick}");
    }
    Ok(())
}

/// The number of the tick `at` falls in: whole periods since the Unix epoch.
fn tick_of(at: SystemTime) -> u64 {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis() / PERIOD.as_millis()).unwrap_or(u64::MAX)
}

fn tick_start(tick: u64) -> SystemTime {
    let millis = u128::from(tick) * PERIOD.as_millis();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

async fn sleep_until(at: SystemTime) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// SQLite files are shared by processes: `connect_options` puts them in WAL mode, with a
/// busy timeout for the writer.
async fn connect(url: &str) -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let mut options = dlock::seaorm::connect_options(url);
    options.sqlx_logging(false);
    Ok(Database::connect(options).await?)
}
