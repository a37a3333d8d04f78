//! The quickstart: workers contend for one lock and take turns; then a
//! `skip_if_obtained` round runs a job once while the others skip it.
//!
//! ```sh
//! cargo run --example quickstart                       # an SQLite file, no setup
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example quickstart
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo run --example quickstart
//! RUST_LOG=dlock=debug cargo run --example quickstart   # every acquire, renewal and release
//! ```

use std::time::Duration;

use dlock::seaorm::sea_orm::{Database, DatabaseConnection};
use dlock::{DistributedLock, Error, Outcome};
use tracing_subscriber::EnvFilter;

const WORKERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // dlock's tracing events on stderr: at INFO, waiting acquires name the holder.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let file = std::env::temp_dir().join("dlock-quickstart.sqlite");
        format!("sqlite://{}?mode=rwc", file.display())
    });
    let db = connect(&url).await?;
    println!("dlock quickstart on {url}\n");

    println!("{WORKERS} workers take turns on lock \"quickstart/report\":");
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let db = db.clone();
            tokio::spawn(async move {
                let lock = DistributedLock::builder("quickstart/report", db)
                    .ttl(Duration::from_secs(10))
                    .poll_interval(Duration::from_millis(50))
                    .holder(format!("worker {worker}"))
                    .build()?;
                // Without skip_if_obtained, lock() waits its turn: the job always runs.
                let ran = lock.lock(|lease| async move {
                    let token = lease.fencing_token();
                    println!("  worker {worker} acquired it, fencing token {token}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    println!("  worker {worker} releases it");
                    Ok::<_, Error>(())
                });
                ran.await.map(|outcome| outcome.ran())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }

    println!("\n{WORKERS} workers start the same job at once, with skip_if_obtained:");
    let callers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let db = db.clone();
            tokio::spawn(async move {
                let lock = DistributedLock::builder("quickstart/nightly", db)
                    .skip_if_obtained(true)
                    .holder(format!("worker {worker}"))
                    .build()?;
                let outcome = lock
                    .lock(|_lease| async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, Error>(())
                    })
                    .await?;
                match outcome {
                    Outcome::Ran(()) => println!("  worker {worker} ran the job"),
                    Outcome::Skipped(holder) => {
                        println!("  worker {worker} skipped it: held by {}", holder.as_str());
                    }
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    Ok(())
}

/// SQLite files are shared by processes: `connect_options` puts them in WAL mode, with a
/// busy timeout for the writer.
async fn connect(url: &str) -> Result<DatabaseConnection, Box<dyn std::error::Error>> {
    let mut options = dlock::seaorm::connect_options(url);
    options.sqlx_logging(false);
    Ok(Database::connect(options).await?)
}
