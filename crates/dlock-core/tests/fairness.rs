//! Fairness: a process whose acquisition had to wait lets the waiters its release woke
//! go first — and then takes a free lock without delay; a semaphore's releaser leaves
//! them only the permit it released, and takes another free one at once. (That the courtesy lets other
//! processes in is measured by the benchmark's `contended` scenario: it needs real
//! notification delays, which a fake cannot stand for.)

mod fake;

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::{
    Listen, QueryError, QueryInterface, ReleaseNotices, Row, Statement, async_trait,
};
use dlock_core::{Dialect, DistributedLock, Semaphore, SemaphorePermit};
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

    /// Listens, is heard (a heartbeat), and announces waiters' interest (the fake counts
    /// who watches a name).
    async fn listen(&self, _channel: &str, wake: ReleaseNotices) -> Result<(), QueryError> {
        wake.listening();
        wake.notify("");
        loop {
            tokio::select! {
                () = wake.closed() => return Ok(()),
                request = wake.request() => {
                    let rows = self.0.query(request.statement()).await;
                    request.reply(rows);
                }
            }
        }
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

fn semaphore_on(queries: Arc<dyn QueryInterface>, table: &str) -> Semaphore {
    Semaphore::builder(NAME, 2, queries)
        .table(table)
        .ttl(Duration::from_secs(30))
        .build()
        .expect("valid options")
}

/// Two semaphores of 2 permits on one fake, in a process that listens: the releaser takes
/// a permit only after waiting for one of the holder's two, so its acquisition is
/// contended. Returns the releaser, its permit, and the permit the holder still holds.
async fn contended_permit() -> (Semaphore, SemaphorePermit, SemaphorePermit) {
    let fake = FakeDb::new();
    let queries: Arc<dyn QueryInterface> = Arc::new(Listening(fake.clone()));
    let holder = semaphore_on(queries.clone(), fake.table());
    let releaser = semaphore_on(queries, fake.table());
    let first = holder.acquire().await.unwrap();
    let second = holder.acquire().await.unwrap();
    let waiting = {
        let releaser = releaser.clone();
        tokio::spawn(async move { releaser.acquire().await.unwrap() })
    };
    sleep(ms(50)).await;
    first.release().await.unwrap();
    (releaser, waiting.await.unwrap(), second)
}

#[tokio::test(start_paused = true)]
async fn a_semaphores_releaser_takes_another_free_permit_at_once() {
    let (releaser, permit, other) = contended_permit().await;
    other.release().await.unwrap();
    let released = permit.permit();
    permit.release().await.unwrap();
    // Its released permit is left to the waiters the release woke; the other is free
    // and nobody was woken for it.
    let started = Instant::now();
    let again = releaser.acquire().await.unwrap();
    assert_eq!(
        (started.elapsed(), again.permit() == released),
        (Duration::ZERO, false),
        "took permit {} (released {released}) after {:?}",
        again.permit(),
        started.elapsed()
    );
    again.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_semaphores_releaser_takes_its_permit_back_when_the_courtesy_ends() {
    let (releaser, permit, other) = contended_permit().await;
    let released = permit.permit();
    permit.release().await.unwrap();
    // Only the permit it released is free: it waits out the courtesy (3 ms), then takes
    // it without waiting for a safety-net poll.
    let started = Instant::now();
    let again = releaser.acquire().await.unwrap();
    let waited = started.elapsed();
    assert!(
        again.permit() == released && (ms(3)..ms(20)).contains(&waited),
        "took permit {} (released {released}) after {waited:?}",
        again.permit()
    );
    again.release().await.unwrap();
    other.release().await.unwrap();
}
