//! What an operator's log shows for a real acquire, skip, release and force release on
//! PostgreSQL:
//! `tracing`'s own fmt subscriber at DEBUG, its output read back.
//!
//! Reads `DLOCK_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! An unreachable server makes the test fail when `CI` is set, and be reported as
//! ignored otherwise.

use std::io;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_testkit::{Backend, PoolOptions, TestDatabase};
use dlock_tokio_postgres::adapter::QueryInterface;
use dlock_tokio_postgres::{
    Attempt, Dialect, DistributedLock, Error, ForceRelease, LockAdmin, TableName,
};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// A table of this test's own, so that its rows stay out of everyone else's.
const TABLE: &str = "dlock_telemetry_test";

fn main() -> ExitCode {
    let trial = Trial::ignorable_test(
        "postgres::acquire_skip_release_and_force_release_are_logged",
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(acquire_skip_release_and_force_release_are_logged())
        },
    );
    libtest_mimic::run(&Arguments::from_args(), vec![trial]).exit_code()
}

async fn acquire_skip_release_and_force_release_are_logged() -> Result<Completion, Failed> {
    let database = TestDatabase::new(Dialect::Postgres, "dlock-telemetry")?;
    let pool = match connect(database.url()).await {
        Ok(pool) => pool,
        Err(error) => {
            return dlock_testkit::unreachable(&format!(
                "{} is unreachable: {error}",
                database.describe()
            ));
        }
    };
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(log.clone())
        .finish();
    // Per thread: the runtime has one, so the keep-alive task logs here too.
    let _default = subscriber.set_default();

    // Unique per run: the row, and its fencing token, outlive the test.
    let name = dlock_testkit::unique_name("telemetry-test");
    let lock = |label: &str| {
        DistributedLock::builder(name.as_str(), pool.clone())
            .table(TABLE)
            .holder(label)
            .build()
    };
    let guard = lock("first")?.acquire().await?;
    let token = guard.fencing_token();
    let attempt = lock("second")?.try_acquire().await?;
    assert!(matches!(attempt, Attempt::Held(_)), "{attempt:?}");
    guard.release().await?;

    // An operator frees the next holder's lock: a WARN names whose it was, and the
    // holder's own release then finds the lock gone.
    let stuck = lock("third")?.acquire().await?;
    let stuck_token = stuck.fencing_token();
    let admin = LockAdmin::with_table(pool.clone(), TableName::parse(TABLE)?);
    let freed = admin.force_release(&name, stuck_token).await?;
    assert!(matches!(freed, ForceRelease::Revoked(_)), "{freed:?}");
    let after = stuck.release().await;
    assert!(matches!(after, Err(Error::Lost { .. })), "{after:?}");

    let lines = log.lines();
    let line = |message: &str, holder: &str| -> Result<String, Failed> {
        let holder = format!("holder={holder} (");
        let mut found = lines
            .iter()
            .filter(|line| line.contains(message) && line.contains(&holder));
        match (found.next(), found.next()) {
            (Some(line), None) => Ok(line.clone()),
            _ => Err(format!(
                "not one line with {message:?} and {holder:?} in:\n{}",
                lines.join("\n")
            )
            .into()),
        }
    };
    let acquired = line("acquired the lock", "first")?;
    let skipped = line("not waiting", "second")?;
    let released = line("released the lock", "first")?;
    let forced = line("force-released the lock", "third")?;
    let expectations = [
        (&acquired, "DEBUG dlock.acquire{"),
        (
            &acquired,
            &format!("lock={name} table={TABLE} holder=first ("),
        ),
        (&acquired, "wait=true}: dlock: acquired the lock"),
        (&acquired, &format!("fencing_token={token} wait_ms=")),
        (&skipped, "holder=second ("),
        (&skipped, "wait=false}: dlock: the lock is held"),
        (&skipped, "current_holder=first ("),
        (&skipped, "lease_ends_in_ms="),
        (&released, &format!("lock={name} holder=first (")),
        (&released, &format!("fencing_token={token} held_ms=")),
        (&forced, "WARN dlock: force-released the lock"),
        (&forced, &format!("table={TABLE} lock={name}")),
        (
            &forced,
            &format!("fencing_token={stuck_token} holder=third ("),
        ),
        (&forced, "mode=\"revoke\""),
    ];
    for (line, expected) in expectations {
        if !line.contains(expected) {
            return Err(format!("{expected:?} is not in {line:?}").into());
        }
    }
    Ok(Completion::Completed)
}

/// A pool of two, and proof that the server answers.
async fn connect(url: &str) -> Result<Arc<dyn QueryInterface>, String> {
    let (pool, queries) = Backend::TokioPostgres
        .pool(Dialect::Postgres, url, PoolOptions::new(2))
        .await?;
    let connection = tokio::time::timeout(Duration::from_secs(10), pool.check_out())
        .await
        .map_err(|_| "no connection within 10 s".to_owned())??;
    drop(connection);
    Ok(queries)
}

/// Where the fmt subscriber writes: a buffer the test reads back.
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
