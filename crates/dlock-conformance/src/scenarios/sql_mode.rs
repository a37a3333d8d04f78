//! MariaDB's `SIMULTANEOUS_ASSIGNMENT` (part of `sql_mode=ORACLE`): the assignments of an
//! `ON DUPLICATE KEY UPDATE` all read the old row instead of the columns assigned before
//! them. The acquire statement must give the same result in either order.

use std::sync::Arc;

use dlock_core::adapter::{ColumnType, QueryInterface, Value};
use dlock_core::{DistributedLock, FencingToken, LockAdmin, LockState};

use crate::scenarios::fencing::holder_through;
use crate::support::{Env, Verdict, quick, sql, unique_name};

/// A pool whose one connection runs with `SIMULTANEOUS_ASSIGNMENT` added to its session's
/// `sql_mode` (never the server's global mode: other tests run beside this one), or
/// `None` on a server that has no such mode (MySQL).
async fn simultaneous_pool(env: &Env) -> Result<Option<Arc<dyn QueryInterface>>, String> {
    let queries = env
        .connect_single()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut version = sql(queries.dialect(), "SELECT VERSION()", vec![]);
    version.columns = &[ColumnType::Text];
    let rows = queries.query(&version).await.map_err(|e| e.to_string())?;
    let mariadb = matches!(
        rows.first().map(Vec::as_slice),
        Some([Value::Text(version)]) if version.contains("MariaDB")
    );
    if !mariadb {
        return Ok(None);
    }
    let set = sql(
        queries.dialect(),
        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',SIMULTANEOUS_ASSIGNMENT')",
        vec![],
    );
    queries
        .execute(&set)
        .await
        .map_err(|e| format!("cannot set the session's sql_mode: {e}"))?;
    // Proves that the statements the lock sends next run on the connection just set.
    let mut mode = sql(
        queries.dialect(),
        "SELECT CAST(@@SESSION.sql_mode LIKE '%SIMULTANEOUS_ASSIGNMENT%' AS SIGNED)",
        vec![],
    );
    mode.columns = &[ColumnType::Int];
    match queries
        .query(&mode)
        .await
        .map_err(|e| e.to_string())?
        .first()
        .map(Vec::as_slice)
    {
        Some([Value::Int(1)]) => Ok(Some(queries)),
        other => Err(format!("the session's sql_mode did not stick: {other:?}")),
    }
}

/// With `SIMULTANEOUS_ASSIGNMENT` on the pool's connection: a re-acquisition gets the next
/// token and a live lease, and a takeover of an expired lease gets a larger token and a
/// live lease, so that a third contender is refused.
pub(crate) async fn acquire_is_independent_of_assignment_order(env: Env) -> Verdict {
    let Some(queries) = simultaneous_pool(&env).await? else {
        eprintln!("sql_mode: not MariaDB, so there is no SIMULTANEOUS_ASSIGNMENT to test");
        return Ok(());
    };
    let name = unique_name("simultaneous_assignment");
    let admin = LockAdmin::new(env.connect().await?);
    let lock = quick(DistributedLock::builder(&name, Arc::clone(&queries)))
        .build()
        .map_err(|e| e.to_string())?;

    let first = lock.acquire().await.map_err(|e| e.to_string())?;
    let first_token = first.fencing_token();
    first.release().await.map_err(|e| e.to_string())?;
    let second = lock.acquire().await.map_err(|e| e.to_string())?;
    if second.fencing_token() <= first_token {
        return Err(format!(
            "re-acquired after a release with token {}, not above {first_token}",
            second.fencing_token()
        ));
    }
    let seen = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    if seen.state != LockState::Held
        || seen.fencing_token != second.fencing_token()
        || seen.remaining_lease().is_none_or(|left| left.is_zero())
    {
        return Err(format!(
            "after re-acquiring, the table shows {seen:?}, not a live lease with token {}",
            second.fencing_token()
        ));
    }
    second.release().await.map_err(|e| e.to_string())?;

    // A holder that stops renewing: cut off from the database, its lease runs out.
    let partition = env.partition().await?;
    let stranded = holder_through(&env, &partition, &name).await?;
    let stranded_guard = stranded.acquire().await.map_err(|e| e.to_string())?;
    let stranded_token = stranded_guard.fencing_token();
    partition.freeze();
    let taker = lock.acquire().await.map_err(|e| e.to_string())?;
    expect_above(taker.fencing_token(), stranded_token, "the takeover")?;
    let third = quick(DistributedLock::builder(&name, Arc::clone(&queries)))
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(also) = third
        .try_acquire()
        .await
        .map_err(|e| e.to_string())?
        .acquired()
    {
        let token = also.fencing_token();
        drop(also);
        return Err(format!(
            "two holders at once: the taker with token {} and a third with token {token}",
            taker.fencing_token()
        ));
    }
    let seen = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    if seen.state != LockState::Held || seen.fencing_token != taker.fencing_token() {
        return Err(format!("after the takeover, the table shows {seen:?}"));
    }
    taker.release().await.map_err(|e| e.to_string())?;
    drop(stranded_guard);
    Ok(())
}

fn expect_above(token: FencingToken, previous: FencingToken, what: &str) -> Verdict {
    if token > previous {
        Ok(())
    } else {
        Err(format!(
            "{what} got token {token}, not above the previous {previous}"
        ))
    }
}
