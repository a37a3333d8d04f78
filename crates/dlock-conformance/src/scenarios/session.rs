//! A held lock keeps no session state: nothing of it lives on the connection that took
//! it (no advisory lock, no prepared statement it relies on, no open transaction), so
//! renewing and releasing it on other connections works. This is what lets it run
//! through a pooler in transaction mode, where each statement may get another server
//! connection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dlock_core::DistributedLock;
use dlock_core::adapter::{
    ColumnType, Listen, QueryError, QueryInterface, Row, Statement, StatementKind, Value,
    async_trait,
};
use dlock_testkit::{Flow, Tap};

use crate::support::{Env, Verdict, is_free, unique_name};

/// Statements on pools of one connection each: acquiring on the first, renewing and
/// releasing on the others in turn; remembers which pool ran each statement.
struct Rotating {
    pools: Vec<Arc<dyn QueryInterface>>,
    next: AtomicUsize,
    ran: std::sync::Mutex<Vec<(StatementKind, usize)>>,
}

impl Rotating {
    fn pool(&self, kind: StatementKind) -> &Arc<dyn QueryInterface> {
        let index = match kind {
            StatementKind::Renew | StatementKind::Release | StatementKind::Notify => {
                1 + self.next.fetch_add(1, Ordering::Relaxed) % (self.pools.len() - 1)
            }
            _ => 0,
        };
        self.ran
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((kind, index));
        &self.pools[index]
    }

    /// The pools that ran statements of `kind`.
    fn pools_of(&self, kind: StatementKind) -> Vec<usize> {
        let ran = self
            .ran
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ran.iter()
            .filter(|(ran, _)| *ran == kind)
            .map(|(_, index)| *index)
            .collect()
    }
}

impl fmt::Debug for Rotating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotating")
            .field("pools", &self.pools.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl QueryInterface for Rotating {
    fn dialect(&self) -> dlock_core::Dialect {
        self.pools[0].dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.pool(statement.kind).execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.pool(statement.kind).query(statement).await
    }

    /// No listening: this scenario is about the statements.
    fn listener(&self) -> Option<&dyn Listen> {
        None
    }
}

/// Acquired on one connection, renewed and released on others, the lock is held
/// throughout (never lost) and free afterwards.
pub(crate) async fn a_held_lock_keeps_no_session_state(env: Env) -> Verdict {
    const POOLS: usize = 3;
    let name = unique_name("session_state");
    let mut pools = Vec::new();
    for _ in 0..POOLS {
        pools.push(env.connect_single().await?);
    }
    let rotating = Arc::new(Rotating {
        pools,
        next: AtomicUsize::new(0),
        ran: std::sync::Mutex::default(),
    });
    let lock = DistributedLock::builder(&name, Arc::clone(&rotating) as Arc<dyn QueryInterface>)
        .ttl(Duration::from_secs(3))
        .renew_interval(Duration::from_millis(300))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = lock.try_acquire().await.map_err(|e| e.to_string())?;
    let guard = guard
        .acquired()
        .ok_or_else(|| "a fresh name was not acquired".to_owned())?;
    let observer = env.connect().await?;
    if is_free(&observer, &name).await? {
        return Err("another pool took the lock while it was held".into());
    }
    // Several renewals, each on the pool after the previous statement's.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    if guard.is_lost() {
        return Err(format!(
            "the lock was lost while renewed on other connections: {guard:?}"
        ));
    }
    guard.release().await.map_err(|e| e.to_string())?;
    if !is_free(&observer, &name).await? {
        return Err("the lock was not free after its release on another connection".into());
    }
    let acquired_on = rotating.pools_of(StatementKind::Acquire);
    let renewed_on = rotating.pools_of(StatementKind::Renew);
    let released_on = rotating.pools_of(StatementKind::Release);
    let [acquired_on] = acquired_on[..] else {
        return Err(format!(
            "acquired in {} statements, expected 1",
            acquired_on.len()
        ));
    };
    let mut renewed_on_distinct = renewed_on.clone();
    renewed_on_distinct.sort_unstable();
    renewed_on_distinct.dedup();
    if renewed_on_distinct.len() < 2 || renewed_on.contains(&acquired_on) {
        return Err(format!(
            "renewals ran on {renewed_on:?}; on at least 2 connections other than the \
             acquire's ({acquired_on}) expected"
        ));
    }
    if released_on.is_empty() || released_on.contains(&acquired_on) {
        return Err(format!(
            "released on the acquire's connection: {released_on:?}"
        ));
    }
    Ok(())
}

/// A release commits without waiting for the disk (`synchronous_commit` off for its own
/// transaction: a lost release only keeps the lock held until its lease ends), and sets
/// nothing beyond that transaction: the connection it ran on, back in the user's pool,
/// still commits durably.
pub(crate) async fn a_release_does_not_wait_for_the_disk_nor_change_the_session(
    env: Env,
) -> Verdict {
    let name = unique_name("release_not_durable");
    let single = env.connect_single().await?;
    let released = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&released);
    let tap = Tap::new(Arc::clone(&single), move |statement: &Statement| {
        if let (StatementKind::Release, Ok(mut seen)) = (statement.kind, seen.lock()) {
            *seen = Some(statement.clone());
        }
        Flow::Forward
    });
    let lock = DistributedLock::new(&name, Arc::new(tap) as Arc<dyn QueryInterface>)
        .map_err(|e| e.to_string())?;
    let _ran = lock
        .lock(|_lease| async { Ok::<_, dlock_core::Error>(()) })
        .await
        .map_err(|e| e.to_string())?;
    let release = released
        .lock()
        .map_err(|e| e.to_string())?
        .take()
        .ok_or("no release statement was sent")?;
    let setting = "current_setting('synchronous_commit')";
    // The release again (it frees nothing now: the condition that sets the commit's
    // durability is evaluated once, before the row is looked for), and the setting its
    // transaction had.
    let within = Statement {
        sql: format!(
            "WITH released AS ({}) SELECT {setting} FROM (SELECT count(*) FROM released) AS r",
            release.sql
        )
        .into(),
        columns: &[ColumnType::Text],
        ..release
    };
    let afterwards = dlock_testkit::statement(
        env.dialect,
        &format!("SELECT {setting}"),
        vec![],
        &[ColumnType::Text],
    );
    let mut settings = Vec::new();
    for statement in [&within, &afterwards] {
        let rows = single.query(statement).await.map_err(|e| e.to_string())?;
        settings.push(match rows.first().map(Vec::as_slice) {
            Some([Value::Text(setting)]) => setting.clone(),
            other => return Err(format!("read {other:?} for the setting")),
        });
    }
    match settings.as_slice() {
        [release, after] if release == "off" && after == "on" => Ok(()),
        [release, after] => Err(format!(
            "synchronous_commit was {release:?} in the release's transaction (\"off\" \
             expected) and {after:?} on its connection afterwards (\"on\" expected)"
        )),
        _ => Err(format!("read {settings:?}")),
    }
}
