//! Bad input and bad conditions are error values that say what to do.

use std::time::Duration;

use dlock_core::{DistributedLock, Error};

use crate::support::{Env, Verdict, drop_table, quick, unique_identifier, unique_name};

pub(crate) async fn bad_inputs_are_errors(env: Env) -> Verdict {
    let queries = env.connect().await?;
    let builder = || {
        quick(DistributedLock::builder(
            unique_name("bad"),
            queries.clone(),
        ))
    };
    let mut checks: Vec<(&str, Result<DistributedLock, Error>, &str)> = vec![
        (
            "empty name",
            DistributedLock::new("", queries.clone()),
            "lock name is empty",
        ),
        (
            "zero TTL",
            builder().ttl(Duration::ZERO).build(),
            "at least 100ms",
        ),
        (
            "TTL too short for the safety margin",
            builder().ttl(Duration::from_micros(1900)).build(),
            "at least 100ms",
        ),
        (
            "NUL in the name",
            DistributedLock::new("a\0b", queries.clone()),
            "NUL character",
        ),
        (
            "NUL in the holder label",
            builder().holder("worker\0").build(),
            "NUL character",
        ),
        (
            "renew interval equal to the TTL",
            builder()
                .ttl(Duration::from_secs(2))
                .renew_interval(Duration::from_secs(2))
                .build(),
            "renew interval",
        ),
        (
            "zero renew interval",
            builder().renew_interval(Duration::ZERO).build(),
            "renew interval",
        ),
        (
            "zero poll interval",
            builder().poll_interval(Duration::ZERO).build(),
            "poll interval",
        ),
    ];
    for table in [
        "",
        "locks; DROP TABLE users",
        "a.b.c",
        "locks\"--",
        "1locks",
        "lo cks",
    ] {
        checks.push((
            "bad table name",
            builder().table(table).build(),
            "invalid lock table name",
        ));
    }
    for (what, result, expected) in checks {
        match result {
            Ok(_) => return Err(format!("{what} was accepted")),
            Err(error) if error.to_string().contains(expected) => {}
            Err(error) => return Err(format!("{what}: unhelpful error {error:?}")),
        }
    }
    Ok(())
}

pub(crate) async fn unreachable_database_is_an_error(env: Env) -> Verdict {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let closed = listener.local_addr().map_err(|e| e.to_string())?;
    drop(listener);
    let url = dlock_testkit::proxy::with_address(&env.url, closed)?;
    let queries = match env.connect_to(&url).await {
        Ok(queries) => queries,
        // Adapters that connect eagerly fail here, with their driver's error.
        Err(error) => {
            return if error.to_string().is_empty() {
                Err("connecting to a closed port failed without a message".into())
            } else {
                Ok(())
            };
        }
    };
    let lock = quick(DistributedLock::builder(
        unique_name("unreachable_db"),
        queries,
    ))
    .build()
    .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(20), lock.try_acquire()).await {
        Err(_) => Err("try_acquire on a closed port hung".into()),
        Ok(Err(error @ Error::Unreachable { .. })) => {
            if error.to_string().contains("cannot reach the database") {
                Ok(())
            } else {
                Err(format!("unhelpful message: {error}"))
            }
        }
        Ok(other) => Err(format!(
            "a closed port gave {other:?}, not Error::Unreachable"
        )),
    }
}

pub(crate) async fn pool_exhaustion_is_an_error(env: Env) -> Verdict {
    let (queries, _held) = env.connect_exhausted().await?;
    let lock = quick(DistributedLock::builder(unique_name("exhausted"), queries))
        .build()
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(20), lock.try_acquire()).await {
        Err(_) => Err("try_acquire on an exhausted pool hung".into()),
        Ok(Err(error @ Error::PoolExhausted { .. })) => {
            if error.to_string().contains("raise the pool's size") {
                Ok(())
            } else {
                Err(format!("unhelpful message: {error}"))
            }
        }
        Ok(other) => Err(format!(
            "an exhausted pool gave {other:?}, not Error::PoolExhausted"
        )),
    }
}

pub(crate) async fn acquire_timeout_names_the_holder(env: Env) -> Verdict {
    let name = unique_name("timeout");
    let holder = env
        .lock(&name)
        .await?
        .holder("the slow job")
        .build()
        .map_err(|e| e.to_string())?;
    let waiter = env
        .lock(&name)
        .await?
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = holder.acquire().await.map_err(|e| e.to_string())?;
    let result = waiter.acquire().await;
    guard.release().await.map_err(|e| e.to_string())?;
    match result {
        Err(Error::Timeout {
            holder: Some(holder),
            waited,
            ..
        }) if holder.as_str().starts_with("the slow job")
            && waited >= Duration::from_millis(300) =>
        {
            Ok(())
        }
        other => Err(format!(
            "expected a timeout naming the holder, got {other:?}"
        )),
    }
}

/// A missing table is created on first use, also when many connections find it missing
/// at the same moment.
pub(crate) async fn custom_table_is_created_on_first_use(env: Env) -> Verdict {
    const USERS: usize = 8;
    let queries = env.connect().await?;
    // Of this trial alone: the same scenario through PgBouncer reaches the same database.
    let table = unique_identifier("dlock_first_use");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(USERS));
    let mut users = Vec::new();
    for _ in 0..USERS {
        let lock = quick(DistributedLock::builder(
            unique_name("custom_table"),
            env.connect().await?,
        ))
        .table(&table)
        .build()
        .map_err(|e| e.to_string())?;
        let barrier = std::sync::Arc::clone(&barrier);
        users.push(tokio::spawn(async move {
            barrier.wait().await;
            let guard = lock
                .try_acquire()
                .await
                .map_err(|e| format!("first use of a missing table: {e}"))?
                .acquired()
                .ok_or("a lock in a new table was not acquired")?;
            guard.release().await.map_err(|e| e.to_string())
        }));
    }
    for user in users {
        user.await.map_err(|e| e.to_string())??;
    }
    drop_table(&queries, &table).await
}
