//! Runs the built `dlock` binary against PostgreSQL, MariaDB/MySQL and SQLite, with a
//! lock held by this test through the library, and checks each command's output (human
//! and JSON) and exit code, errors included.
//!
//! The databases are read from `DLOCK_TEST_POSTGRES_URL` and `DLOCK_TEST_MYSQL_URL`
//! (defaults as in CONTRIBUTING.md). A test whose server is unreachable is reported as
//! ignored, with the reason, unless `CI` is set: then it fails.

use std::process::{Command, Output};
use std::time::Duration;

use dlock_seaorm::sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use dlock_seaorm::{
    Dialect, DistributedLock, Election, Lease, LockGuard, LossReason, RwLock, SeaOrmQueries,
    Semaphore, TransactionPooler,
};
use dlock_testkit::{TestDatabase, unique_name as unique};
use serde_json::Value;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() -> std::process::ExitCode {
    let postgres_url = || server_url(Dialect::Postgres);
    let mysql_url = || server_url(Dialect::Mysql);
    let trials = vec![
        on_server("postgres", postgres_url(), postgres),
        on_server("mysql", mysql_url(), mysql),
        on_server(
            "through_pgbouncer",
            TestDatabase::pgbouncer().url().to_owned(),
            through_pgbouncer,
        ),
        Trial::test("sqlite", run(sqlite)),
        on_server(
            "printed_sql_works_with_only_the_printed_privileges_on_postgres",
            postgres_url(),
            printed_sql_works_with_only_the_printed_privileges_on_postgres,
        ),
        on_server(
            "printed_sql_works_with_only_the_printed_privileges_on_mysql",
            mysql_url(),
            printed_sql_works_with_only_the_printed_privileges_on_mysql,
        ),
        Trial::test(
            "printed_sql_works_on_sqlite",
            run(printed_sql_works_on_sqlite),
        ),
        Trial::test(
            "printing_the_sql_connects_to_nothing",
            run(printing_the_sql_connects_to_nothing),
        ),
        Trial::test(
            "the_readme_shows_the_sql_init_prints",
            run(the_readme_shows_the_sql_init_prints),
        ),
        Trial::test("bad_urls_are_usage_errors", run(bad_urls_are_usage_errors)),
        Trial::test(
            "unreachable_database_is_exit_code_3_without_the_password",
            run(unreachable_database_is_exit_code_3_without_the_password),
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// A test that fails by panicking, as a trial.
fn run(test: fn()) -> impl FnOnce() -> Result<(), Failed> + Send + 'static {
    move || {
        test();
        Ok(())
    }
}

/// A test that needs the server at `url`: ignored, with the reason, when the server
/// cannot be reached and `CI` is not set; failed when it is.
fn on_server(name: &str, url: String, test: fn()) -> Trial {
    Trial::ignorable_test(name, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
        if let Err(error) = runtime.block_on(reach(&url)) {
            return dlock_testkit::unreachable(&format!("{url} is unreachable: {error}"));
        }
        test();
        Ok(Completion::Completed)
    })
}

/// Whether the server at `url` answers.
async fn reach(url: &str) -> Result<(), String> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|error| error.to_string())?;
    let _ = db.close().await;
    Ok(())
}

const LABEL: &str = "cli-test";
const TTL: Duration = Duration::from_secs(5);

fn postgres() {
    session(&server_url(Dialect::Postgres));
}

fn mysql() {
    session(&server_url(Dialect::Mysql));
}

/// Every command through PgBouncer in transaction mode (1.18 in CI: no prepared
/// statements carried between server connections).
fn through_pgbouncer() {
    session(TestDatabase::pgbouncer().url());
}

/// What the test's own locks run on: `db`, set up for a pooler when `url` is PgBouncer's.
fn queries(url: &str, db: &DatabaseConnection) -> SeaOrmQueries {
    let queries = SeaOrmQueries::new(db.clone());
    if url == TestDatabase::pgbouncer().url() {
        return queries.through_pooler(TransactionPooler::LosesPreparedStatements);
    }
    queries
}

fn sqlite() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("dlock_cli")));
    let url = format!("sqlite:{}", path.display());
    session(&url);
    // DATABASE_URL stands in for --url.
    let with_env_url = |command: &str| {
        Command::new(env!("CARGO_BIN_EXE_dlock"))
            .env("DATABASE_URL", &url)
            .arg(command)
            .output()
            .expect("run dlock")
    };
    assert_eq!(code(&with_env_url("init")), 0);
    let listed = with_env_url("list");
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    assert_eq!(stdout(&listed), "no locks in table distributed_lock\n");
    let _ = std::fs::remove_file(path);
}

fn printed_sql_works_with_only_the_printed_privileges_on_postgres() {
    printed_sql(&server_url(Dialect::Postgres), "postgres");
}

fn printed_sql_works_with_only_the_printed_privileges_on_mysql() {
    printed_sql(&server_url(Dialect::Mysql), "mysql");
}

fn printed_sql_works_on_sqlite() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("dlock_cli_sql")));
    printed_sql(&format!("sqlite:{}", path.display()), "sqlite");
    let _ = std::fs::remove_file(path);
}

fn printing_the_sql_connects_to_nothing() {
    // Port 1: nothing listens there; the URL only names the dialect.
    let from_url = dlock(
        Some("postgres://app:s3cret@127.0.0.1:1/test"),
        Some("ops.locks"),
        &["init", "--print-sql"],
    );
    assert_eq!(code(&from_url), 0, "{}", stderr(&from_url));
    let sql = stdout(&from_url);
    assert!(
        sql.contains("CREATE TABLE IF NOT EXISTS \"ops\".\"locks\" (")
            && sql.contains("TIMESTAMPTZ")
            && sql.contains("GRANT SELECT, INSERT, UPDATE ON \"ops\".\"locks\" TO app;"),
        "{sql}"
    );
    let companion = stdout(&dlock(
        Some("postgres://app:s3cret@127.0.0.1:1/test"),
        Some("ops.locks"),
        &["init", "--print-sql", "--companion"],
    ));
    assert!(
        companion.contains("CREATE TABLE IF NOT EXISTS \"ops\".\"locks_slots\" (")
            && companion.contains(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON \"ops\".\"locks_slots\" TO app;"
            ),
        "{companion}"
    );
    let mariadb = stdout(&dlock(
        None,
        None,
        &["init", "--print-sql", "--dialect", "mariadb"],
    ));
    assert!(
        mariadb.contains("CREATE TABLE IF NOT EXISTS `distributed_lock` ("),
        "{mariadb}"
    );
    let printed = json(&dlock(
        Some("sqlite:/nonexistent/dir/x.db"),
        None,
        &["init", "--print-sql", "--json"],
    ));
    assert_eq!(printed["dialect"], "sqlite");
    assert!(
        printed["sql"]
            .as_str()
            .is_some_and(|sql| sql.contains("INTEGER NOT NULL"))
    );

    let conflicting = dlock(
        Some("sqlite:/tmp/x.db"),
        None,
        &["init", "--print-sql", "--dialect", "postgres"],
    );
    assert_eq!(code(&conflicting), 2);
    assert!(stderr(&conflicting).contains("--dialect says PostgreSQL but the URL is a SQLite one"));
    let neither = dlock(None, None, &["init", "--print-sql"]);
    assert_eq!(code(&neither), 2);
    assert!(
        stderr(&neither).contains("pass --dialect"),
        "{}",
        stderr(&neither)
    );
}

fn the_readme_shows_the_sql_init_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("the crate's README");
    for dialect in ["postgres", "mysql", "sqlite"] {
        let printed = stdout(&dlock(
            None,
            None,
            &["init", "--print-sql", "--dialect", dialect],
        ));
        assert!(
            readme.contains(&format!("```sql\n{printed}```")),
            "the README's lock table section lacks, or has an old copy of:\n{printed}"
        );
    }
}

/// `dlock init --print-sql` as an administrator would use it: the printed SQL, run by
/// the test, creates a table that works; and on a server with privileges, a role
/// granted exactly what the printed GRANT says (no right to create tables) can lock,
/// list, revoke and free with it.
fn printed_sql(admin_url: &str, dialect: &'static str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let Some(admin_db) = connect(admin_url).await else {
            return;
        };
        let table = unique("dlock_sql");
        let role = unique("dlock_role");
        let outcome = tokio::spawn(printed_sql_works(
            admin_url.to_owned(),
            dialect,
            table.clone(),
            role.clone(),
            admin_db.clone(),
        ))
        .await;
        let _ = admin_db
            .execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
            .await;
        let drop_role = match dialect {
            "postgres" => format!("DROP ROLE IF EXISTS {role}"),
            "mysql" => format!("DROP USER IF EXISTS '{role}'@'%'"),
            _ => String::new(),
        };
        if !drop_role.is_empty() {
            let _ = admin_db.execute_unprepared(&drop_role).await;
        }
        if let Err(failed) = outcome {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
}

async fn printed_sql_works(
    admin_url: String,
    dialect: &'static str,
    table: String,
    role: String,
    admin_db: DatabaseConnection,
) {
    let table = table.as_str();
    // By --dialect, with no URL: nothing to connect to.
    let printed = dlock(
        None,
        Some(table),
        &["init", "--print-sql", "--dialect", dialect],
    );
    assert_eq!(code(&printed), 0, "{}", stderr(&printed));
    let sql = stdout(&printed);
    // The administrator's part: the DDL as printed (comments included), then the
    // printed GRANT for the application's role.
    admin_db
        .execute_unprepared(&sql)
        .await
        .unwrap_or_else(|error| panic!("the printed SQL fails: {error}\n{sql}"));
    let user_url = match dialect {
        "postgres" => {
            admin_db
                .execute_unprepared(&format!("CREATE ROLE {role} LOGIN"))
                .await
                .expect("create a role");
            admin_url.replacen("postgres@", &format!("{role}@"), 1)
        }
        "mysql" => {
            admin_db
                .execute_unprepared(&format!("CREATE USER '{role}'@'%'"))
                .await
                .expect("create a user");
            admin_url.replacen("root@", &format!("{role}@"), 1)
        }
        _ => admin_url.clone(),
    };
    if let Some(grant) = sql
        .lines()
        .find_map(|line| line.strip_prefix("--   GRANT "))
    {
        let grant = format!("GRANT {grant}")
            .replace("TO app;", &format!("TO {role}"))
            .replace("TO 'app'@'%';", &format!("TO '{role}'@'%'"));
        admin_db
            .execute_unprepared(&grant)
            .await
            .unwrap_or_else(|error| panic!("the printed GRANT fails: {error}: {grant}"));
    } else {
        assert_eq!(dialect, "sqlite", "no GRANT printed:\n{sql}");
    }
    assert_eq!(admin_url == user_url, dialect == "sqlite", "{user_url}");

    // The application's part, as the restricted role. The table exists: `list` never
    // creates it, and `init` does not try to (creating needs a right the role lacks).
    let run = |args: &[&str]| dlock(Some(&user_url), Some(table), args);
    assert_eq!(
        stdout(&run(&["list"])),
        format!("no locks in table {table}\n")
    );
    let init = run(&["init"]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    let Some(db) = connect(&user_url).await else {
        panic!("{user_url} is unreachable although {admin_url} was reached");
    };
    let name = "printed-sql";
    let lock = DistributedLock::builder(name, &db)
        .table(table)
        .ttl(TTL)
        .renew_interval(Duration::from_millis(100))
        .holder(LABEL)
        .build()
        .expect("lock options");
    lock.acquire()
        .await
        .expect("acquire as the role")
        .release()
        .await
        .expect("release as the role");
    let guard = lock.acquire().await.expect("acquire again");
    let token = guard.fencing_token().get().to_string();
    let listed = stdout(&run(&["list", "--state", "held"]));
    assert!(
        listed.starts_with("NAME") && listed.contains("printed-sql  held"),
        "{listed}"
    );
    let revoked = run(&["release", name, "--token", &token]);
    assert_eq!(code(&revoked), 0, "{}", stderr(&revoked));
    check_lost(guard).await;
    let freed = json(&run(&[
        "release", name, "--token", &token, "--now", "--json",
    ]));
    assert_eq!(freed["result"], "released", "{freed}");
    let retaken = lock.try_acquire().await.expect("try_acquire as the role");
    assert!(
        matches!(retaken, dlock_seaorm::Attempt::Acquired(_)),
        "{retaken:?}"
    );
}

fn bad_urls_are_usage_errors() {
    let unsupported = dlock(Some("redis://127.0.0.1/0"), None, &["list"]);
    assert_eq!(code(&unsupported), 2);
    assert!(stderr(&unsupported).contains("unsupported database URL scheme \"redis\""));

    let not_a_url = dlock(Some("localhost"), None, &["list"]);
    assert_eq!(code(&not_a_url), 2);
    assert!(stderr(&not_a_url).contains("not a database URL"));

    let missing = dlock(None, None, &["list"]);
    assert_eq!(code(&missing), 2);
    assert!(stderr(&missing).contains("pass --url"));

    let bad_table = dlock(Some("sqlite::memory:"), Some("locks; DROP"), &["list"]);
    assert_eq!(code(&bad_table), 2);
    assert!(stderr(&bad_table).contains("invalid lock table name"));
}

fn unreachable_database_is_exit_code_3_without_the_password() {
    // Port 1: nothing listens there.
    let output = dlock(
        Some("postgres://app:s3cret@127.0.0.1:1/test"),
        None,
        &["list"],
    );
    assert_eq!(code(&output), 3);
    let message = stderr(&output);
    assert!(message.contains("cannot connect to postgres://app:***@127.0.0.1:1/test"));
    assert!(message.contains("check that the server is running"));
    assert!(!message.contains("s3cret"));
}

/// Every command against the database at `url`, in a table of its own.
fn session(url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let Some(db) = connect(url).await else {
            return;
        };
        let table = unique("dlock_cli");
        // In a task of its own, so that the table is dropped even if a check fails.
        let outcome = tokio::spawn(commands(url.to_owned(), table.clone(), db.clone())).await;
        for table in [table.clone(), format!("{table}_slots")] {
            let _ = db
                .execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await;
        }
        if let Err(failed) = outcome {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
}

/// Runs the commands. The binary runs synchronously, which blocks one worker thread:
/// the lock's renewals run on the other meanwhile.
async fn commands(url: String, table: String, db: DatabaseConnection) {
    let table = table.as_str();
    let run = |args: &[&str]| dlock(Some(&url), Some(table), args);

    let missing = run(&["list"]);
    assert_eq!(code(&missing), 1, "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains(&format!("the lock table {table} does not exist"))
            && stderr(&missing).contains("`dlock init`"),
        "{}",
        stderr(&missing)
    );
    let init = run(&["init"]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    assert_eq!(stdout(&init), format!("lock table {table} is ready\n"));
    let init_json = json(&run(&["init", "--json"]));
    assert_eq!(init_json["table"], table);
    assert_eq!(init_json["ready"], true);
    assert_eq!(
        stdout(&run(&["list"])),
        format!("no locks in table {table}\n")
    );
    assert_eq!(json(&run(&["list", "--json"])), serde_json::json!([]));

    // The database's durability: exit code 1 exactly when a setting can lose
    // acquisitions, and the text says so as the JSON does.
    let doctor = run(&["doctor", "--json"]);
    let report = json(&doctor);
    let keeps = report["keeps_guarantees"].as_bool().expect("a verdict");
    assert_eq!(code(&doctor), if keeps { 0 } else { 1 }, "{report}");
    let settings = report["settings"].as_array().expect("settings");
    assert!(
        settings.iter().any(|setting| setting["effect"] == "keeps"
            || setting["effect"] == "caveat"
            || setting["effect"] == "breaks"),
        "{report}"
    );
    let text = stdout(&run(&["doctor"]));
    assert_eq!(
        text.contains("keeps every acquisition it acknowledges"),
        keeps,
        "{text}"
    );

    let name = "nightly report";
    let lock = DistributedLock::builder(name, queries(&url, &db))
        .table(table)
        .ttl(TTL)
        // Frequent renewals: the holder learns of a force release within 100 ms.
        .renew_interval(Duration::from_millis(100))
        .holder(LABEL)
        .build()
        .expect("lock options");
    // An ended acquisition's token (1) is what a stale operator would pass.
    lock.acquire()
        .await
        .expect("first acquire")
        .release()
        .await
        .expect("release");
    let guard = lock.acquire().await.expect("second acquire");
    assert_eq!(guard.fencing_token().get(), 2);
    let owner = guard.lease().owner_id().to_owned();

    check_list(&run(&["list"]), name);
    let listed = json(&run(&["list", "--json"]));
    let [entry] = listed.as_array().expect("a JSON array").as_slice() else {
        panic!("expected one lock: {listed}");
    };
    check_held_json(entry, name, &owner);

    let inspected = run(&["inspect", name]);
    assert_eq!(code(&inspected), 0, "{}", stderr(&inspected));
    let text = stdout(&inspected);
    for line in [
        format!("name:          {name}"),
        "state:         held".into(),
        "fencing token: 2".into(),
        format!("owner id:      {owner}"),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("holder:        cli-test (")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("lease:         expires in ")),
        "{text}"
    );
    check_held_json(&json(&run(&["inspect", name, "--json"])), name, &owner);

    let no_such = run(&["inspect", "no such lock"]);
    assert_eq!(code(&no_such), 1);
    assert!(
        stderr(&no_such).contains("no lock named \"no such lock\"")
            && stderr(&no_such).contains("run `dlock list`"),
        "{}",
        stderr(&no_such)
    );

    let stale = run(&["release", name, "--token", "1"]);
    assert_eq!(code(&stale), 1, "{}", stdout(&stale));
    let refusal = stderr(&stale);
    assert!(
        refusal.contains("now has fencing token 2 (holder: cli-test (")
            && refusal.contains("not 1")
            && refusal.contains(&format!("`dlock release \"{name}\" --token 2`")),
        "{refusal}"
    );
    assert!(!guard.is_lost(), "a refused release freed the lock");

    // By default a release revokes: the holder hears of it at its next renewal, and the
    // lock stays taken until the revoked lease ends.
    let revoked = run(&["release", name, "--token", "2"]);
    assert_eq!(code(&revoked), 0, "{}", stderr(&revoked));
    assert!(
        stdout(&revoked).starts_with(&format!(
            "revoked lock \"{name}\" (fencing token 2, held by cli-test ("
        )) && stdout(&revoked).contains("the lock is free in "),
        "{}",
        stdout(&revoked)
    );
    check_lost(guard).await;

    let shown = json(&run(&["inspect", name, "--json"]));
    assert_eq!(shown["state"], "revoked", "{shown}");
    assert_eq!(shown["owner_id"], Value::Null, "{shown}");
    assert!(
        shown["remaining_lease_ms"]
            .as_u64()
            .is_some_and(|left| left > 0 && left <= 5_000),
        "{shown}"
    );
    let listed = stdout(&run(&["list"]));
    assert!(listed.contains("revoked, free in "), "{listed}");
    let inspected = stdout(&run(&["inspect", name]));
    assert!(
        inspected
            .lines()
            .any(|l| l.starts_with("lease:         revoked, free in ")),
        "{inspected}"
    );
    let taken = DistributedLock::builder(name, queries(&url, &db))
        .table(table)
        .build()
        .expect("lock options")
        .try_acquire()
        .await
        .expect("try_acquire");
    match taken {
        dlock_seaorm::Attempt::Held(holder) => assert!(
            holder
                .as_str()
                .starts_with("revoked by an operator (was: cli-test ("),
            "{holder:?}"
        ),
        other => panic!("a revoked lock was taken before its lease ended: {other:?}"),
    }
    let again = json(&run(&["release", name, "--token", "2", "--json"]));
    assert_eq!(again["result"], "already_revoked", "{again}");

    // --now frees it at once, revoked or held.
    let released = run(&["release", name, "--token", "2", "--now"]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert!(
        stdout(&released).starts_with(&format!(
            "released lock \"{name}\" (fencing token 2, revoked from cli-test ("
        )),
        "{}",
        stdout(&released)
    );
    let free = json(&run(&["inspect", name, "--json"]));
    assert_eq!(free["state"], "free");
    assert_eq!(free["owner_id"], Value::Null);
    assert_eq!(free["remaining_lease_ms"], Value::Null);
    assert!(stdout(&run(&["list"])).contains("free"));
    let again = json(&run(&["release", name, "--token", "2", "--now", "--json"]));
    assert_eq!(again["result"], "already_free");
    assert_eq!(again["lock"]["fencing_token"], 2);

    let not_a_token = run(&["release", name, "--token", "two"]);
    assert_eq!(code(&not_a_token), 2);
    assert!(stderr(&not_a_token).contains("\"two\" is not a fencing token"));

    hostile_names(&url, table, &db).await;
    elections(&url, table, &db).await;
    semaphores(&url, table, &db).await;
    rw_locks(&url, table, &db).await;
}

/// `list --semaphores`, `inspect --semaphore` and `release --semaphore` show the
/// semaphores beside the table, revoke or free one permit (one holder), and remove a
/// definition only when no permit is held.
async fn semaphores(url: &str, table: &str, db: &DatabaseConnection) {
    let run = |args: &[&str]| dlock(Some(url), Some(table), args);
    // No semaphore yet: no companion table either.
    let none = run(&["list", "--semaphores"]);
    assert_eq!(code(&none), 0, "{}", stderr(&none));
    assert!(
        stdout(&none).starts_with("no semaphores"),
        "{}",
        stdout(&none)
    );
    let missing = run(&["inspect", "--semaphore", "exports"]);
    assert_eq!(code(&missing), 1, "{}", stdout(&missing));
    assert!(
        stderr(&missing).contains("\"exports\""),
        "{}",
        stderr(&missing)
    );
    let semaphore = Semaphore::builder("exports", 2, queries(url, db))
        .table(table)
        .ttl(TTL)
        .holder(LABEL)
        .build()
        .expect("semaphore options");
    let held = semaphore.acquire().await.expect("a permit");
    let (permit, token) = (held.permit(), held.fencing_token());

    let listed = run(&["list", "--semaphores"]);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(
        text.contains("exports") && text.contains(&format!("#{permit} {LABEL}")),
        "{text}"
    );
    let listed = json(&run(&["list", "--semaphores", "--json"]));
    assert_eq!(listed[0]["name"], "exports");
    assert_eq!(listed[0]["permits"], 2);
    assert_eq!(listed[0]["held"], 1);
    let inspected = stdout(&run(&["inspect", "--semaphore", "exports"]));
    assert!(
        inspected.contains("permits:   2 (1 held)") && inspected.contains(LABEL),
        "{inspected}"
    );

    let in_use = run(&["release", "--semaphore", "exports", "--definition"]);
    assert_eq!(code(&in_use), 1, "{}", stdout(&in_use));
    assert!(
        stdout(&in_use).starts_with("refused:"),
        "{}",
        stdout(&in_use)
    );

    let (permit_arg, token_arg) = (permit.to_string(), token.to_string());
    let revoke = ["release", "--semaphore", "exports", "--permit", &permit_arg];
    let revoked = run(&[&revoke[..], &["--token", &token_arg]].concat());
    assert_eq!(code(&revoked), 0, "{}", stderr(&revoked));
    assert!(
        stdout(&revoked).starts_with("revoked lock"),
        "{}",
        stdout(&revoked)
    );
    let reason = tokio::time::timeout(TTL, held.lost())
        .await
        .expect("the permit's holder hears of the revocation");
    assert_eq!(reason, LossReason::TakenOver);
    drop(held);
    let freed = run(&[&revoke[..], &["--token", &token_arg, "--now"]].concat());
    assert_eq!(code(&freed), 0, "{}", stderr(&freed));

    let removed = run(&["release", "--semaphore", "exports", "--definition"]);
    assert_eq!(code(&removed), 0, "{}", stderr(&removed));
    assert!(
        stdout(&removed).starts_with("removed the definition"),
        "{}",
        stdout(&removed)
    );
    let redefined = Semaphore::builder("exports", 3, queries(url, db))
        .table(table)
        .build()
        .expect("semaphore options");
    let permit = redefined
        .try_acquire()
        .await
        .expect("the count can change once the definition is removed")
        .acquired()
        .expect("a free permit");
    permit.release().await.expect("release");
}

/// `list --rw`, `inspect --rw` and `release --rw`: a reader-writer lock's writer and
/// readers, a line each, and the release of the writer or of one reader by owner id.
async fn rw_locks(url: &str, table: &str, db: &DatabaseConnection) {
    let run = |args: &[&str]| dlock(Some(url), Some(table), args);
    let none = run(&["list", "--rw"]);
    assert_eq!(code(&none), 0, "{}", stderr(&none));
    assert!(
        stdout(&none).starts_with("no reader-writer locks"),
        "{}",
        stdout(&none)
    );
    let rw = RwLock::builder("catalog", queries(url, db))
        .table(table)
        .ttl(Duration::from_secs(1))
        .holder(LABEL)
        .build()
        .expect("rw lock options");

    let write = rw.write().await.expect("write");
    let token = write.fencing_token().to_string();
    let listed = stdout(&run(&["list", "--rw"]));
    assert!(
        listed.contains("catalog  writer  held") && listed.contains(LABEL),
        "{listed}"
    );
    assert!(
        listed.ends_with("1 reader-writer lock: 1 with a writer, 0 readers in\n"),
        "{listed}"
    );
    let released = run(&[
        "release", "--rw", "catalog", "--holder", "writer", "--token", &token,
    ]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    assert!(
        stdout(&released).starts_with("revoked"),
        "{}",
        stdout(&released)
    );
    check_lost_lease(write.lease()).await;
    drop(write);

    let (first, second) = (
        rw.read().await.expect("read"),
        rw.read().await.expect("read"),
    );
    let owner = first.lease().owner_id().to_owned();
    let listed = stdout(&run(&["list", "--rw", "--prefix", "cat"]));
    for read in [&first, &second] {
        let line = format!("reader {}  held", read.lease().owner_id());
        assert!(listed.contains(&line), "{line} in {listed}");
    }
    assert!(listed.contains("0 with a writer, 2 readers in"), "{listed}");
    let inspected = json(&run(&["inspect", "--rw", "catalog", "--json"]));
    let readers = inspected["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 2, "{inspected}");
    assert!(
        readers
            .iter()
            .any(|reader| reader["reader"] == owner.as_str())
    );
    assert_eq!(inspected["writer"]["state"], "free", "{inspected}");

    let token = first.fencing_token().to_string();
    let released = run(&[
        "release", "--rw", "catalog", "--holder", &owner, "--token", &token,
    ]);
    assert_eq!(code(&released), 0, "{}", stderr(&released));
    check_lost_lease(first.lease()).await;
    assert!(second.is_held());
    let bad = run(&[
        "release", "--rw", "catalog", "--holder", "someone", "--token", "1",
    ]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("owner id"), "{}", stderr(&bad));
    let missing = run(&["inspect", "--rw", "no such rw lock"]);
    assert_eq!(code(&missing), 1, "{}", stderr(&missing));
    second.release().await.expect("release");
    drop(first);
}

async fn check_lost_lease(lease: &Lease) {
    let reason = tokio::time::timeout(Duration::from_secs(2), lease.lost())
        .await
        .expect("the holder's loss signal fires within 2 s of the force release");
    assert_eq!(reason, LossReason::TakenOver);
}

/// `dlock leader` says who leads an election, or that nobody does; `list` and `inspect`
/// show the leader's value, in a column of their own that a table of plain locks lacks.
async fn elections(url: &str, table: &str, db: &DatabaseConnection) {
    let run = |args: &[&str]| dlock(Some(url), Some(table), args);
    let name = "scheduler";
    assert_eq!(stdout(&run(&["leader", name])), "nobody leads scheduler\n");
    let nobody = json(&run(&["leader", name, "--json"]));
    assert_eq!(nobody, serde_json::json!({ "name": name, "leader": null }));
    assert!(!stdout(&run(&["list"])).contains("VALUE"));

    let election = Election::builder(name, queries(url, db))
        .table(table)
        .ttl(TTL)
        .holder(LABEL)
        .value("10.0.0.7:8080")
        .build()
        .expect("election options");
    let leadership = election.campaign().await.expect("campaign");
    let term = leadership.term();
    let led = run(&["leader", name]);
    assert_eq!(code(&led), 0, "{}", stderr(&led));
    let text = stdout(&led);
    assert!(
        text.starts_with(&format!(
            "scheduler is led by 10.0.0.7:8080 (holder {LABEL} "
        )) && text.contains(&format!(", term {term}, since ")),
        "{text}"
    );
    let led = json(&run(&["leader", name, "--json"]));
    assert_eq!(led["leader"]["value"], "10.0.0.7:8080");
    assert_eq!(led["leader"]["term"], term.get());
    assert!(
        led["leader"]["lease_ends_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 5_000)
    );

    let listed = stdout(&run(&["list", "--match", name]));
    let header = listed.lines().next().expect("a header");
    assert!(
        header.contains("HOLDER") && header.contains("VALUE"),
        "{listed}"
    );
    assert!(listed.contains("10.0.0.7:8080"), "{listed}");
    let inspected = stdout(&run(&["inspect", name]));
    assert!(
        inspected.contains("value:         10.0.0.7:8080"),
        "{inspected}"
    );
    let listed = json(&run(&["list", "--json", "--match", name]));
    assert_eq!(listed[0]["value"], "10.0.0.7:8080");

    leadership.resign().await.expect("resign");
    assert_eq!(stdout(&run(&["leader", name])), "nobody leads scheduler\n");
}

/// What an application may name a lock: a name that would clear the operator's screen,
/// one 2,000 bytes long (PostgreSQL's limit). `list` escapes and cuts them in text, keeps
/// them exact in JSON, and filters by name and state. The table holds "nightly report"
/// (free, token 2) already.
async fn hostile_names(url: &str, table: &str, db: &DatabaseConnection) {
    let run = |args: &[&str]| dlock(Some(url), Some(table), args);
    let screen_clearer = "job\u{1b}[2J\u{1b}[H\u{9b}31m\u{202e}";
    let long = format!("long-{}", "x".repeat(1_995));
    assert_eq!(long.len(), 2_000);
    let lock = |name: &str| {
        DistributedLock::builder(name, queries(url, db))
            .table(table)
            .ttl(TTL)
            .holder("evil\u{1b}]0;pwned\u{7}")
            .build()
            .expect("lock options")
    };
    let held = lock(screen_clearer).acquire().await.expect("acquire");
    let long_lock = lock(&long);
    long_lock
        .acquire()
        .await
        .expect("acquire")
        .release()
        .await
        .expect("release");

    let listed = run(&["list"]);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(
        text.chars()
            .all(|c| c == '\n' || !(c.is_control() || c == '\u{202e}')),
        "raw control characters in:\n{text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let row = |start: &str| {
        *lines
            .iter()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no row starting {start:?} in:\n{text}"))
    };
    let escaped = row("$'job\\x1b[2J\\x1b[H\\u009b31m\\u202e'");
    assert!(escaped.contains(" held "), "{escaped}");
    assert!(escaped.contains("$'evil\\x1b]0;pwned\\x07"), "{escaped}");
    // Cut at 40 characters: the widest line stays far below the 2,000-byte name.
    let cut = row("long-xxxx");
    assert!(cut.contains("x… "), "{cut}");
    assert!(
        lines.iter().all(|line| line.chars().count() < 200),
        "a line is too wide:\n{text}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("3 locks: 1 held, 2 free; 1 name or holder cut short, --wide shows it whole"),
        "{text}"
    );
    let wide = stdout(&run(&["list", "--wide"]));
    assert!(wide.lines().any(|line| line.starts_with(&long)), "{wide}");
    assert!(
        wide.lines()
            .last()
            .is_some_and(|l| l == "3 locks: 1 held, 2 free")
    );

    // JSON is exact (and escapes what serde_json would let through raw).
    let all = json(&run(&["list", "--json"]));
    let names: Vec<&str> = all
        .as_array()
        .expect("an array")
        .iter()
        .map(|lock| lock["name"].as_str().expect("a name"))
        .collect();
    assert!(
        names.contains(&screen_clearer) && names.contains(&long.as_str()),
        "{names:?}"
    );
    let raw_json = stdout(&run(&["list", "--json"]));
    assert!(
        !raw_json.contains('\u{9b}') && !raw_json.contains('\u{202e}'),
        "{raw_json}"
    );

    // Filters: by state, by prefix, by glob; the count says how many of how many.
    let held_only = stdout(&run(&["list", "--state", "held"]));
    assert_eq!(held_only.lines().count(), 3, "{held_only}");
    assert_eq!(held_only.lines().last(), Some("1 of 3 locks shown: 1 held"));
    let by_prefix = json(&run(&["list", "--prefix", "long-", "--json"]));
    assert_eq!(by_prefix.as_array().map(Vec::len), Some(1), "{by_prefix}");
    assert_eq!(by_prefix[0]["name"], long.as_str());
    let by_glob = stdout(&run(&[
        "list",
        "--match",
        "*report",
        "--state",
        "free,expired",
    ]));
    assert!(
        by_glob
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("nightly report "))
    );
    assert_eq!(by_glob.lines().last(), Some("1 of 3 locks shown: 1 free"));
    let none = run(&["list", "--match", "nothing*", "--state", "revoked"]);
    assert_eq!(code(&none), 0);
    assert_eq!(
        stdout(&none),
        format!("no lock in table {table} is selected (3 locks in all)\n")
    );
    let bad_state = run(&["list", "--state", "stuck"]);
    assert_eq!(code(&bad_state), 2, "{}", stderr(&bad_state));

    // The quoted form pastes back into a shell: bash decodes it to the exact name.
    let shown = escaped.split("  ").next().expect("a name column");
    let decoded = Command::new("bash")
        .args(["-c", &format!("printf %s {shown}")])
        .output()
        .expect("run bash");
    assert_eq!(String::from_utf8_lossy(&decoded.stdout), screen_clearer);

    // A refusal names the holder escaped, on stderr too.
    let refused = run(&["release", screen_clearer, "--token", "9"]);
    assert_eq!(code(&refused), 1);
    assert!(
        !stderr(&refused).contains('\u{1b}'),
        "{:?}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("`dlock release $'job\\x1b[2J"),
        "{}",
        stderr(&refused)
    );
    held.release().await.expect("release");
}

/// The header and the row line up, and the row says who holds it for how long.
fn check_list(output: &Output, name: &str) {
    assert_eq!(code(output), 0, "{}", stderr(output));
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    let [header, row, count] = lines.as_slice() else {
        panic!("expected a header, one row and a count:\n{text}");
    };
    assert_eq!(*count, "1 lock: 1 held", "\n{text}");
    let column = |line: &str, at: &str| {
        line.find(at)
            .unwrap_or_else(|| panic!("{at:?} in {line:?}"))
    };
    assert!(header.starts_with("NAME"));
    assert!(row.starts_with(name));
    assert_eq!(column(header, "STATE"), column(row, "held"), "\n{text}");
    assert_eq!(column(header, "HOLDER"), column(row, LABEL), "\n{text}");
    assert_eq!(
        column(header, "LEASE"),
        column(row, "expires in "),
        "\n{text}"
    );
    assert_eq!(column(header, "TOKEN"), column(row, " 2 ") + 1, "\n{text}");
}

fn check_held_json(lock: &Value, name: &str, owner: &str) {
    assert_eq!(lock["name"], name, "{lock}");
    assert_eq!(lock["state"], "held", "{lock}");
    assert_eq!(lock["fencing_token"], 2, "{lock}");
    assert_eq!(lock["owner_id"], owner, "{lock}");
    assert!(
        lock["holder"]
            .as_str()
            .is_some_and(|h| h.starts_with(LABEL)),
        "{lock}"
    );
    let remaining = lock["remaining_lease_ms"]
        .as_u64()
        .expect("remaining lease");
    assert!(remaining > 0 && remaining <= 5_000, "{lock}");
    for time in ["acquired_at", "expires_at", "read_at"] {
        let text = lock[time].as_str().expect("a timestamp");
        assert!(humantime_like(text), "{time}: {text}");
    }
}

/// `2026-11-27T16:04:39.729Z`: RFC 3339, UTC, milliseconds.
fn humantime_like(text: &str) -> bool {
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

async fn check_lost(guard: LockGuard) {
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("the holder's loss signal fires within 2 s of the force release");
    assert_eq!(reason, LossReason::TakenOver);
}

fn dlock(url: Option<&str>, table: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlock"));
    command.env_remove("DATABASE_URL");
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    if let Some(table) = table {
        command.args(["--table", table]);
    }
    command.args(args).output().expect("run dlock")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    assert_eq!(code(output), 0, "{}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// The URL of `dialect`'s test server.
fn server_url(dialect: Dialect) -> String {
    let database = TestDatabase::new(dialect, "dlock-cli").expect("a server's URL");
    database.url().to_owned()
}

/// The database at `url`, or `None` (with a loud message) when it cannot be reached
/// and `CI` is not set.
async fn connect(url: &str) -> Option<DatabaseConnection> {
    // The test creates its SQLite file; `dlock` is then given an existing one.
    let create = if url.starts_with("sqlite:") {
        "?mode=rwc"
    } else {
        ""
    };
    let mut options = ConnectOptions::new(format!("{url}{create}"));
    options
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    match Database::connect(options).await {
        Ok(db) => Some(db),
        Err(error) => match dlock_testkit::unreachable(&format!("{url} is unreachable: {error}")) {
            Err(failed) => panic!("{failed:?}"),
            Ok(_skipped) => None,
        },
    }
}
