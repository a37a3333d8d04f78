//! A background job that every process of a fleet schedules every two seconds:
//! `skip_if_obtained` makes each tick run once across the fleet, and the others are told
//! who ran it. This example starts the fleet itself: three copies of its own binary.
//!
//! ```sh
//! cargo run --example background_job   # an SQLite file; or set DATABASE_URL
//! ```

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlock::seaorm::sea_orm::{Database, DatabaseConnection};
use dlock::{DistributedLock, Error, Outcome};

const PROCESSES: usize = 3;
const TICKS: u64 = 3;
const PERIOD: Duration = Duration::from_secs(2);
const WORKER: &str = "DLOCK_EXAMPLE_WORKER";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("dlock-background-job.sqlite");
        format!("sqlite://{}?mode=rwc", file.display())
    });
    match std::env::var(WORKER) {
        Ok(process) => worker(&process, &url).await,
        Err(_) => fleet(&url).await,
    }
}

/// Starts the processes and waits for them.
async fn fleet(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    println!("{PROCESSES} processes run a job every {PERIOD:?} on {url}:");
    let exe = std::env::current_exe()?;
    let mut processes = Vec::new();
    for process in 0..PROCESSES {
        processes.push(
            tokio::process::Command::new(&exe)
                .env(WORKER, process.to_string())
                .env("DATABASE_URL", url)
                .stdout(Stdio::inherit())
                .spawn()?,
        );
    }
    for mut process in processes {
        let status = process.wait().await?;
        if !status.success() {
            return Err(format!("a process failed: {status}").into());
        }
    }
    Ok(())
}

/// One process of the fleet: at every tick, try the job; skip it if another has it.
async fn worker(process: &str, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let db = connect(url).await?;
    let lock = DistributedLock::builder("background/report", db)
        .skip_if_obtained(true)
        .holder(format!("process {process}"))
        .build()?;
    let first_tick = tick_number(SystemTime::now()) + 1;
    for tick in first_tick..first_tick + TICKS {
        sleep_until_tick(tick).await;
        let outcome = lock
            .lock(|lease| async move {
                println!(
                    "  tick {}: process {process} runs the job (fencing token {})",
                    tick - first_tick + 1,
                    lease.fencing_token()
                );
                // Hold the lock for the rest of the tick, so that a process that comes
                // late to this tick finds it taken and skips.
                sleep_until_tick_ends(tick).await;
                Ok::<_, Error>(())
            })
            .await?;
        if let Outcome::Skipped(holder) = outcome {
            println!(
                "  tick {}: process {process} skips it: {} has it",
                tick - first_tick + 1,
                holder.as_str()
            );
        }
    }
    Ok(())
}

fn tick_number(at: SystemTime) -> u64 {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis() / PERIOD.as_millis()).unwrap_or(u64::MAX)
}

fn tick_start(tick: u64) -> SystemTime {
    let millis = u128::from(tick) * PERIOD.as_millis();
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

async fn sleep_until_tick(tick: u64) {
    let wait = tick_start(tick)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// Until shortly before the next tick, so the lock is free again when it starts.
async fn sleep_until_tick_ends(tick: u64) {
    let end = tick_start(tick + 1) - Duration::from_millis(200);
    let wait = end.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// SQLite files are shared by processes: `connect_options` puts them in WAL mode, with a
/// busy timeout for the writer.
async fn connect(url: &str) -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let mut options = dlock::seaorm::connect_options(url);
    options.sqlx_logging(false);
    Ok(Database::connect(options).await?)
}
