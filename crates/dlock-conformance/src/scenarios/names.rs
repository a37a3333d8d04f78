//! Lock names are bound parameters: long ones and non-ASCII ones work; one longer than
//! the dialect's key limit is a clear error.

use dlock_core::{DistributedLock, Error};

use crate::support::{Env, Verdict, quick, unique_name};

pub(crate) async fn long_and_non_ascii_names(env: Env) -> Verdict {
    let queries = env.connect().await?;
    let base = unique_name("names");
    let long = format!("{base}/{}", "long-name.".repeat(120));
    let non_ascii = format!(
        "{base}/verrou-ロック-замок-🔒-'\"; DROP TABLE x; --{}",
        "ü".repeat(300)
    );
    let near_twin = format!("{long}!");
    for name in [&long, &non_ascii, &near_twin] {
        let lock = quick(DistributedLock::builder(name.as_str(), queries.clone()))
            .build()
            .map_err(|e| e.to_string())?;
        let guard = lock
            .try_acquire()
            .await
            .map_err(|e| format!("{} chars: {e}", name.chars().count()))?
            .acquired()
            .ok_or_else(|| {
                format!(
                    "a free lock of {} chars was not acquired",
                    name.chars().count()
                )
            })?;
        // Held, it is not acquired again, and only its own name is blocked.
        let again = quick(DistributedLock::builder(name.as_str(), queries.clone()))
            .build()
            .map_err(|e| e.to_string())?;
        if again
            .try_acquire()
            .await
            .map_err(|e| e.to_string())?
            .acquired()
            .is_some()
        {
            return Err("a held long name was acquired twice".into());
        }
        guard.release().await.map_err(|e| e.to_string())?;
    }
    if long.chars().count() < 1000 {
        return Err("the long name is not long enough to prove anything".into());
    }

    let max = queries.dialect().max_name_bytes();
    match DistributedLock::new("x".repeat(max + 1), queries.clone()) {
        Err(Error::NameTooLong { len, .. }) if len == max + 1 => {}
        other => return Err(format!("a name over the limit gave {other:?}")),
    }
    let at_limit = format!("{base}{}", "x".repeat(max - base.len()));
    let lock = quick(DistributedLock::builder(at_limit, queries))
        .build()
        .map_err(|e| e.to_string())?;
    let guard = lock
        .try_acquire()
        .await
        .map_err(|e| format!("a name at the limit of {max} bytes failed: {e}"))?
        .acquired()
        .ok_or("a free name at the limit was not acquired")?;
    guard.release().await.map_err(|e| e.to_string())
}
