//! The database refuses us (a missing privilege, a wrong password): the error says so,
//! names what to fix, and is permanent, so neither a retry loop on `is_transient()` nor a
//! waiting `acquire` goes on for ever.
//!
//! Each scenario makes a database user of its own, with a unique name, and drops it
//! afterwards; existing users are never changed. A wrong password cannot be produced on
//! the project's PostgreSQL (trust authentication lets any password in), so that
//! scenario runs on MySQL/MariaDB only; its PostgreSQL codes (28P01, 28000) are covered
//! by the core's unit tests.

use std::sync::Arc;
use std::time::Duration;

use dlock_core::adapter::{ColumnType, QueryInterface, Value};
use dlock_core::{Dialect, DistributedLock, Error};

use crate::support::{Env, Verdict, quick, sql, unique_identifier, unique_name};

/// How long a refused `acquire` may take to say so. Far below its acquire timeout: it
/// must end on the refusal, not wait it out.
const PROMPTLY: Duration = Duration::from_secs(8);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// `url` with its user (and password) replaced.
fn with_user(url: &str, user: &str, password: &str) -> Result<String, String> {
    let mut url = url::Url::parse(url).map_err(|error| format!("invalid URL {url:?}: {error}"))?;
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password).filter(|p| !p.is_empty())))
        .map_err(|()| format!("{url}: no user to replace"))?;
    Ok(url.into())
}

async fn run(admin: &Arc<dyn QueryInterface>, statement: &str) -> Verdict {
    admin
        .execute(&sql(admin.dialect(), statement, vec![]))
        .await
        .map(drop)
        .map_err(|error| format!("{statement}: {error}"))
}

/// Checks a refusal: permanent, and its message contains each of `expected`.
fn check_refusal(what: &str, error: &Error, expected: &[&str]) -> Verdict {
    if error.is_transient() {
        return Err(format!(
            "{what}: called transient, so retries never end: {error}"
        ));
    }
    let message = error.to_string();
    match expected.iter().find(|text| !message.contains(*text)) {
        Some(missing) => Err(format!(
            "{what}: the message does not say {missing:?}: {message}"
        )),
        None => Ok(()),
    }
}

/// After an administrator creates the lock table, a user who may read it but not write
/// it is told which table, that a privilege is missing, and what to grant; a waiting
/// `acquire` ends on it at once.
pub(crate) async fn missing_privilege_names_the_table_and_what_to_grant(env: Env) -> Verdict {
    let admin = env.connect().await?;
    let dialect = admin.dialect();
    let user = unique_identifier("dlock_reader");
    let table = unique_identifier("dlock_grants");
    quick(DistributedLock::builder(
        unique_name("grants"),
        Arc::clone(&admin),
    ))
    .table(&table)
    .build()
    .map_err(|e| e.to_string())?
    .create_table()
    .await
    .map_err(|e| format!("the administrator cannot create {table}: {e}"))?;
    let (create, grant, drop_user) = match dialect {
        // Trust authentication lets the new role in without a password.
        Dialect::Postgres => (
            format!("CREATE ROLE \"{user}\" LOGIN"),
            format!("GRANT SELECT ON \"{table}\" TO \"{user}\""),
            format!("DROP ROLE IF EXISTS \"{user}\""),
        ),
        Dialect::Mysql => (
            format!("CREATE USER '{user}'@'%' IDENTIFIED BY ''"),
            format!("GRANT SELECT ON `{table}` TO '{user}'@'%'"),
            format!("DROP USER IF EXISTS '{user}'@'%'"),
        ),
        other => return Err(format!("no users to refuse on {other}")),
    };
    let checked = async {
        run(&admin, &create).await?;
        run(&admin, &grant).await?;
        let reader = env.connect_to(&with_user(&env.url, &user, "")?).await?;
        let lock = quick(DistributedLock::builder(unique_name("grants"), reader))
            .table(&table)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let expected = [
            table.as_str(),
            "lacks a privilege",
            "GRANT SELECT, INSERT, UPDATE ON",
        ];
        let error = lock
            .try_acquire()
            .await
            .err()
            .ok_or("a user with SELECT alone acquired the lock")?;
        check_refusal("try_acquire", &error, &expected)?;
        let error = tokio::time::timeout(PROMPTLY, lock.acquire())
            .await
            .map_err(|_| format!("acquire waited past {PROMPTLY:?} on a missing privilege"))?
            .err()
            .ok_or("a user with SELECT alone acquired the lock")?;
        check_refusal("acquire", &error, &expected)
    }
    .await;
    // Dropping the table first takes its grants with it, which PostgreSQL requires
    // before the role can go.
    let dropped_table = run(&admin, &format!("DROP TABLE IF EXISTS {table}")).await;
    let dropped_user = run(&admin, &drop_user).await;
    checked.and(dropped_table).and(dropped_user)
}

/// A wrong password is permanent and says so, unlike a closed port (see
/// `unreachable_database_is_an_error`), through every pool: the pool connects with the
/// right password (SeaORM connects eagerly), the password is then changed and the pool's
/// connections killed, so its next checkout opens a connection with the old one.
pub(crate) async fn wrong_password_is_permanent(env: Env) -> Verdict {
    let admin = env.connect().await?;
    let user = unique_identifier("dlock_login");
    let drop_user = format!("DROP USER IF EXISTS '{user}'@'%'");
    let checked = async {
        run(
            &admin,
            &format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'first1'"),
        )
        .await?;
        // Any privilege in the database lets the user connect to it (the default lock
        // table exists: the suite's reachability check made it).
        run(
            &admin,
            &format!("GRANT SELECT ON distributed_lock TO '{user}'@'%'"),
        )
        .await?;
        let queries = env
            .connect_to(&with_user(&env.url, &user, "first1")?)
            .await?;
        run(
            &admin,
            &format!("ALTER USER '{user}'@'%' IDENTIFIED BY 'second2'"),
        )
        .await?;
        let connections = admin
            .query(&dlock_testkit::statement(
                Dialect::Mysql,
                "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE user = ?",
                vec![Value::Text(user.clone())],
                &[ColumnType::Int],
            ))
            .await
            .map_err(|e| format!("cannot list {user}'s connections: {e}"))?;
        for connection in connections {
            if let Some(Value::Int(id)) = connection.first() {
                run(&admin, &format!("KILL CONNECTION {id}")).await?;
            }
        }
        let lock = quick(DistributedLock::builder(
            unique_name("wrong_password"),
            queries,
        ))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
        let expected = ["Access denied for user", "password"];
        let error = lock
            .try_acquire()
            .await
            .err()
            .ok_or("acquired with a wrong password")?;
        check_refusal("try_acquire", &error, &expected)?;
        if let Some(closed_port) = closed_port_error(&env).await?
            && (error.to_string().contains("cannot reach the database")
                || !closed_port.is_transient())
        {
            return Err(format!(
                "a wrong password and a closed port read alike: {error} / {closed_port}"
            ));
        }
        let error = tokio::time::timeout(PROMPTLY, lock.acquire())
            .await
            .map_err(|_| format!("acquire waited past {PROMPTLY:?} on a wrong password"))?
            .err()
            .ok_or("acquired with a wrong password")?;
        check_refusal("acquire", &error, &expected)
    }
    .await;
    checked.and(run(&admin, &drop_user).await)
}

/// The error of a `try_acquire` through a pool to a closed port, if the adapter connects
/// lazily (an eager one fails at connect, with its driver's error).
async fn closed_port_error(env: &Env) -> Result<Option<Error>, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let closed = listener.local_addr().map_err(|e| e.to_string())?;
    drop(listener);
    let url = dlock_testkit::proxy::with_address(&env.url, closed)?;
    let Ok(queries) = env.connect_to(&url).await else {
        return Ok(None);
    };
    let lock = quick(DistributedLock::builder(
        unique_name("closed_port"),
        queries,
    ))
    .build()
    .map_err(|e| e.to_string())?;
    Ok(lock.try_acquire().await.err())
}
