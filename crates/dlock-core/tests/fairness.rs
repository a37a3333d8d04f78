//! Fairness: a process whose acquisition had to wait lets the waiters its release woke
//! go first — and then takes a free lock without delay. (That the courtesy lets other
//! processes in is measured by the benchmark's `contended` scenario: it needs real
//! notification delays, which a fake cannot stand for.)

mod fake;

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::{
    Listen, QueryError, QueryInterface, ReleaseNotices, Row, Statement, async_trait,
};
use dlock_core::{Dialect, DistributedLock};
use fake::{FakeDb, NAME, ms};
use tokio::time::{Instant, sleep};

/// The fake, as seen through an adapter that listens for releases of other processes
/// (none ever come): waiters then rely on notices and probe only as a safety net.
#[derive(Debug)]
struct Listening(Arc<FakeDb>);

#[async_trait]
impl QueryInterface for Listening {
    fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.0.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.0.query(statement).await
    }

    fn listener(&self) -> Option<&dyn Listen> {
        Some(self)
    }
}

#[async_trait]
impl Listen for Listening {
    fn source(&self) -> String {
        format!("fake {}", self.0.table())
    }

    async fn listen(&self, _channel: &str, wake: ReleaseNotices) -> Result<(), QueryError> {
        wake.listening();
        wake.closed().await;
        Ok(())
    }
}

fn lock_on(queries: Arc<dyn QueryInterface>, table: &str) -> DistributedLock {
    DistributedLock::builder(NAME, queries)
        .table(table)
        .ttl(Duration::from_secs(30))
        .build()
        .expect("valid options")
}

/// `first` takes the lock only after waiting for `holder`: its acquisition is contended.
async fn contended_acquisition(
    holder: &DistributedLock,
    first: &DistributedLock,
) -> dlock_core::LockGuard {
    let held = holder.acquire().await.unwrap();
    let waiting = {
        let first = first.clone();
        tokio::spawn(async move { first.acquire().await.unwrap() })
    };
    sleep(ms(50)).await;
    held.release().await.unwrap();
    waiting.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn after_the_courtesy_a_free_lock_is_taken_at_once() {
    let fake = FakeDb::new();
    let queries: Arc<dyn QueryInterface> = Arc::new(Listening(fake.clone()));
    let (holder, releaser) = (
        lock_on(queries.clone(), fake.table()),
        lock_on(queries, fake.table()),
    );
    let guard = contended_acquisition(&holder, &releaser).await;
    guard.release().await.unwrap();
    // Nobody else waits: the courtesy costs a few milliseconds, not a safety-net poll.
    let started = Instant::now();
    let again = releaser.acquire().await.unwrap();
    assert!(
        started.elapsed() < ms(20),
        "re-acquiring a free lock took {:?}",
        started.elapsed()
    );
    again.release().await.unwrap();
}
