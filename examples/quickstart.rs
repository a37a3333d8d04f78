//! Several workers contend for one lock; then a `skip_if_obtained` round runs a job once.
//!
//! ```sh
//! cargo run --example quickstart        # DATABASE_URL defaults to the local PostgreSQL
//! ```

use std::time::Duration;

use dlock_tokio_postgres::deadpool_postgres::{Config, Runtime};
use dlock_tokio_postgres::tokio_postgres::NoTls;
use dlock_tokio_postgres::{DistributedLock, Error, Outcome};

const WORKERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut config = Config::new();
    config.url = Some(url.clone());
    let pool = config.create_pool(Some(Runtime::Tokio1), NoTls)?;
    println!("dlock quickstart on {url}\n");

    println!("{WORKERS} workers take turns on lock \"quickstart/report\":");
    let workers = (0..WORKERS).map(|worker| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let lock = DistributedLock::builder("quickstart/report", pool)
                .ttl(Duration::from_secs(10))
                .poll_interval(Duration::from_millis(50))
                .holder_label(format!("worker {worker}"))
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
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await??;
    }

    println!("\n{WORKERS} workers start the same job at once, with skip_if_obtained:");
    let callers = (0..WORKERS).map(|worker| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let lock = DistributedLock::builder("quickstart/nightly", pool)
                .skip_if_obtained(true)
                .holder_label(format!("worker {worker}"))
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
                    println!(
                        "  worker {worker} skipped it: held by {}",
                        holder.description()
                    );
                }
            }
            Ok::<_, Error>(())
        })
    });
    for caller in callers.collect::<Vec<_>>() {
        caller.await??;
    }
    Ok(())
}
