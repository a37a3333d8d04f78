//! The conformance suite: every scenario written once, run by every adapter against real
//! databases.
//!
//! An adapter's `tests/conformance.rs` (with `harness = false`) is one call:
//!
//! ```text
//! fn main() -> std::process::ExitCode {
//!     dlock_conformance::run(Backend::SeaOrm, &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite])
//! }
//! ```
//!
//! Each scenario becomes one test named `dialect::scenario`. Scenarios that need separate
//! processes re-run the test binary itself in a child mode (see `child.rs`).
//!
//! A database that cannot be reached fails every test when `CI` is set; elsewhere its
//! tests are reported as ignored, with a loud message, so `cargo test` passes on a machine
//! with no servers.

mod child;
mod scenarios;
mod support;

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use dlock_core::Dialect;
pub use dlock_testkit::Backend;
use dlock_testkit::TestDatabase;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use support::Env;

/// Runs the suite for `backend` on each of `dialects` (or, when started as a child by
/// the suite, the child's part).
pub fn run(backend: Backend, dialects: &[Dialect]) -> ExitCode {
    if let Some(code) = child::run_if_child(backend) {
        return code;
    }
    let args = Arguments::from_args();
    let mut databases = Vec::new();
    let mut trials = Vec::new();
    for &dialect in dialects {
        let database = match TestDatabase::new(dialect, "dlock-conformance") {
            Ok(database) => database,
            Err(error) => {
                eprintln!("dlock-conformance: {error}");
                return ExitCode::FAILURE;
            }
        };
        let env = Env::new(backend, dialect, database.url().to_owned());
        let about = Arc::new(database.describe());
        databases.push(database);
        let reachable = Arc::new(OnceLock::new());
        for (name, scenario) in scenarios::all(dialect) {
            let (env, about, reachable) = (env.clone(), Arc::clone(&about), Arc::clone(&reachable));
            let needs_rig = scenarios::NEEDS_FAILOVER_RIG.contains(&name);
            trials.push(Trial::ignorable_test(
                format!("{}::{name}", dlock_testkit::dialect_key(dialect)),
                move || {
                    if needs_rig && let Err(error) = dlock_testkit::failover::available() {
                        return dlock_testkit::unreachable(&error);
                    }
                    run_trial(env, &about, &reachable, scenario)
                },
            ));
        }
    }
    // The databases (a SQLite file made for this run) live until every trial has run.
    let conclusion = libtest_mimic::run(&args, trials);
    drop(databases);
    conclusion.exit_code()
}

fn run_trial(
    env: Env,
    about: &str,
    reachable: &OnceLock<Result<(), String>>,
    scenario: scenarios::Scenario,
) -> Result<Completion, Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    let reached = reachable.get_or_init(|| runtime.block_on(support::check_reachable(&env)));
    if let Err(error) = reached {
        return dlock_testkit::unreachable(&format!("{about} is unreachable: {error}"));
    }
    runtime.block_on(scenario(env))?;
    Ok(Completion::Completed)
}
