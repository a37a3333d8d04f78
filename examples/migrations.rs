//! Migrations under a lock: several processes start at once and each runs SeaORM's
//! migrator under one lock. Exactly one applies the migrations; the others wait for the
//! lock, then find nothing to do.
//!
//! On a database of yours it keeps to names of its own: the tables `dlock_example_post`
//! and `dlock_example_seaql_migrations` (not SeaORM's `seaql_migrations`, which your own
//! migrations use), and the lock `dlock-example/migrations`.
//!
//! ```sh
//! cargo run --example migrations    # a new SQLite file; or set DATABASE_URL (PostgreSQL, MySQL)
//! ```

use std::process::{Command, Stdio};
use std::time::Duration;

use dlock_seaorm::DistributedLock;
use dlock_seaorm::sea_orm::{Database, DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

const PROCESSES: usize = 4;
/// Set in the processes the example starts: their number.
const PROCESS: &str = "DLOCK_EXAMPLE_PROCESS";
/// Not `migrations`, which an application of yours may use for its own migrator.
const LOCK_NAME: &str = "dlock-example/migrations";

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
            let dir = std::env::temp_dir().join(format!("dlock-migrations-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            (
                format!("sqlite://{}/app.db?mode=rwc", dir.display()),
                Some(dir),
            )
        }
    };
    println!("{PROCESSES} processes migrate {url} at once, under lock {LOCK_NAME:?}:");
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
    let mut applied_by = Vec::new();
    for child in children {
        let output = child.wait_with_output()?;
        let report = String::from_utf8_lossy(&output.stdout);
        print!("{report}");
        if !output.status.success() {
            return Err(format!("a migrating process failed ({})", output.status).into());
        }
        if report.contains("applied 2") {
            applied_by.push(report.into_owned());
        }
    }
    if let Some(dir) = temporary_dir {
        std::fs::remove_dir_all(dir)?;
    }
    match applied_by.len() {
        1 => println!("exactly one process applied the migrations"),
        0 => println!("nothing was pending: the database was already migrated"),
        n => return Err(format!("{n} processes applied the migrations").into()),
    }
    Ok(())
}

/// One process: connect, take the lock, apply what is pending.
async fn migrate(process: &str) -> Result<(), BoxError> {
    let db = connect(&std::env::var("DATABASE_URL")?).await?;
    let lock = DistributedLock::builder(LOCK_NAME, &db)
        .ttl(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(100))
        .holder(format!("migrating process {process}"))
        .build()?;
    let applied = lock
        .lock(|lease| {
            let db = db.clone();
            async move {
                let pending = Migrator::get_pending_migrations(&db).await?;
                Migrator::up(&db, None).await?;
                Ok::<_, BoxError>((pending.len(), lease.fencing_token()))
            }
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

/// SQLite files are shared by processes: `connect_options` puts them in WAL mode, with a
/// busy timeout for the writer.
async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = dlock_seaorm::connect_options(url);
    options.sqlx_logging(false);
    Database::connect(options).await
}

/// The job's error type: it absorbs both the migrator's errors and dlock's.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreatePost), Box::new(AddPublishedAt)]
    }

    /// A table of its own: SeaORM's default, `seaql_migrations`, is your application's
    /// record of its migrations, which this example must not write to.
    fn migration_table_name() -> DynIden {
        Alias::new("dlock_example_seaql_migrations").into_iden()
    }
}

struct CreatePost;

impl MigrationName for CreatePost {
    fn name(&self) -> &str {
        "m20260101_000001_create_post"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreatePost {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Slow on purpose, so that the other processes are seen waiting for the lock.
        tokio::time::sleep(Duration::from_millis(500)).await;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE dlock_example_post (id BIGINT PRIMARY KEY, title TEXT NOT NULL)",
            )
            .await
            .map(drop)
    }
}

struct AddPublishedAt;

impl MigrationName for AddPublishedAt {
    fn name(&self) -> &str {
        "m20260101_000002_add_published_at"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddPublishedAt {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE dlock_example_post ADD COLUMN published_at TEXT")
            .await
            .map(drop)
    }
}
