//! Migrations under a lock, with Diesel: several processes start at once and each runs
//! `diesel_migrations`' pending migrations under one lock. `diesel_migrations` has no lock
//! of its own, so without one they would all try to apply the same migrations. Exactly
//! one applies them; the others wait for the lock, then find nothing pending.
//!
//! ```sh
//! cargo run --example diesel_migrations   # a new SQLite file; or set DATABASE_URL
//! ```
//!
//! `DATABASE_URL` may be a PostgreSQL or MySQL/MariaDB URL: the migration harness, which
//! is synchronous, then runs on diesel-async's `AsyncConnectionWrapper` (no libpq or
//! libmysqlclient needed). **Point it at a scratch database**, not your application's:
//! Diesel records applied migrations in `__diesel_schema_migrations`, a name it does not
//! let us change, so this example's migrations would be recorded beside yours.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use dlock_diesel::DistributedLock;
use dlock_diesel::adapter::{IntoQueryInterface, QueryInterface};
use dlock_diesel::diesel::{Connection, RunQueryDsl, SqliteConnection};
use dlock_diesel::diesel_async::pooled_connection::deadpool::Pool;
use dlock_diesel::diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use dlock_diesel::diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use dlock_diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};

/// The migrations, compiled into the binary.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("diesel-migrations");
const PROCESSES: usize = 4;
/// Set in the processes the example starts: their number.
const PROCESS: &str = "DLOCK_EXAMPLE_PROCESS";

/// The job's error type: it absorbs the harness's errors and dlock's.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match std::env::var(PROCESS) {
        Ok(process) => migrate(&process).await,
        Err(_) => start_processes(),
    }
}

/// Starts the processes at once, each with the same database URL, and checks the result.
fn start_processes() -> Result<(), BoxError> {
    let (url, temporary_dir) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let dir = std::env::temp_dir()
                .join(format!("dlock-diesel-migrations-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (format!("{}/app.db", dir.display()), Some(dir))
        }
    };
    println!("{PROCESSES} processes migrate {url} at once, under lock \"diesel-migrations\":");
    let exe = std::env::current_exe()?;
    let children = (0..PROCESSES)
        .map(|process| {
            Command::new(&exe)
                .env(PROCESS, process.to_string())
                .env("DATABASE_URL", &url)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut applied_by = 0;
    let mut failed = None;
    for child in children {
        let output = child.wait_with_output()?;
        let report = String::from_utf8_lossy(&output.stdout);
        print!("{report}");
        if !output.status.success() {
            failed = Some(output.status);
        } else if report.contains("applied 2") {
            applied_by += 1;
        }
    }
    if let Some(dir) = temporary_dir {
        std::fs::remove_dir_all(dir)?;
    }
    if let Some(status) = failed {
        return Err(format!("a migrating process failed ({status})").into());
    }
    match applied_by {
        1 => println!("exactly one process applied the migrations"),
        0 => println!("nothing was pending: the database was already migrated"),
        n => return Err(format!("{n} processes applied the migrations").into()),
    }
    Ok(())
}

/// One process: take the lock, apply what is pending.
async fn migrate(process: &str) -> Result<(), BoxError> {
    let url = std::env::var("DATABASE_URL")?;
    let lock = DistributedLock::builder("diesel-migrations", lock_pool(&url)?)
        .ttl(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(100))
        .holder(format!("migrating process {process}"))
        .build()?;
    let applied = lock
        .lock(|lease| async move {
            // The harness blocks: off the async threads. The lease is renewed meanwhile.
            let applied =
                tokio::task::spawn_blocking(move || run_pending_migrations(&url)).await??;
            Ok::<_, BoxError>((applied, lease.fencing_token()))
        })
        .await?
        .ran();
    match applied {
        Some((count, token)) => {
            println!(
                "  process {process}: held the lock (token {token}), applied {count} migrations"
            );
        }
        None => println!("  process {process}: skipped"),
    }
    Ok(())
}

/// The pool the lock's statements run on, of the connection type the URL needs.
fn lock_pool(url: &str) -> Result<Arc<dyn QueryInterface>, BoxError> {
    Ok(if url.starts_with("postgres") {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        Pool::builder(manager)
            .max_size(2)
            .build()?
            .into_query_interface()
    } else if url.starts_with("mysql") {
        let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(url);
        Pool::builder(manager)
            .max_size(2)
            .build()?
            .into_query_interface()
    } else {
        let mut config = ManagerConfig::default();
        config.custom_setup = Box::new(|url| Box::pin(dlock_diesel::establish_sqlite(url)));
        let manager = AsyncDieselConnectionManager::<
            SyncConnectionWrapper<SqliteConnection>,
        >::new_with_config(url, config);
        Pool::builder(manager)
            .max_size(2)
            .build()?
            .into_query_interface()
    })
}

/// Runs the pending migrations on a connection of its own and says how many it applied.
fn run_pending_migrations(url: &str) -> Result<usize, BoxError> {
    fn run<C: MigrationHarness<C::Backend> + Connection>(mut conn: C) -> Result<usize, BoxError> {
        // Slow on purpose, so that the other processes are seen waiting for the lock.
        std::thread::sleep(Duration::from_millis(500));
        Ok(conn.run_pending_migrations(MIGRATIONS)?.len())
    }
    if url.starts_with("postgres") {
        run(AsyncConnectionWrapper::<AsyncPgConnection>::establish(url)?)
    } else if url.starts_with("mysql") {
        run(AsyncConnectionWrapper::<AsyncMysqlConnection>::establish(
            url,
        )?)
    } else {
        let mut conn = SqliteConnection::establish(url)?;
        // The lock's pool writes to the same file: wait for its writes, do not fail.
        dlock_diesel::diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut conn)?;
        run(conn)
    }
}
