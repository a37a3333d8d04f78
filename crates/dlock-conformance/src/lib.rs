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
//! An adapter that only wraps another's query interface (SeaORM's runs its statements
//! through dlock-sqlx's) runs the concerns its own code touches, with [`run_concerns`]:
//! the other adapter's suite runs every scenario on the same code.
//!
//! Each scenario becomes one test named `dialect::scenario`. Scenarios that need separate
//! processes re-run the test binary itself in a child mode (see `child.rs`).
//!
//! An adapter that runs on PostgreSQL also runs every PostgreSQL scenario through
//! PgBouncer in transaction mode, as `pgbouncer::scenario`: the adapter set up as its
//! documentation says for a pooler, against
//! [`TestDatabase::pgbouncer`](dlock_testkit::TestDatabase::pgbouncer).
//!
//! A database that cannot be reached fails every test when `CI` is set; elsewhere its
//! tests are reported as ignored, with a loud message, so `cargo test` passes on a machine
//! with no servers.

mod child;
mod scenarios;
mod support;

use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use dlock_core::Dialect;
pub use dlock_testkit::Backend;
use dlock_testkit::{Route, TestDatabase, dialect_key};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use support::Env;

/// Runs the suite for `backend` on each of `dialects` (or, when started as a child by
/// the suite, the child's part).
pub fn run(backend: Backend, dialects: &[Dialect]) -> ExitCode {
    run_suite(backend, dialects, None)
}

/// Runs the scenarios of `concerns` only — modules of `scenarios/`, such as `"exclusion"`,
/// `"fencing"` or `"errors"` — for `backend` on each of `dialects`: for an adapter whose
/// other code paths are another adapter's, whose suite runs them all.
pub fn run_concerns(backend: Backend, dialects: &[Dialect], concerns: &[&str]) -> ExitCode {
    if let Some(unknown) = concerns.iter().find(|c| !scenarios::is_concern(c)) {
        eprintln!("dlock-conformance: no scenarios are about {unknown:?}");
        return ExitCode::FAILURE;
    }
    run_suite(backend, dialects, Some(concerns))
}

fn run_suite(backend: Backend, dialects: &[Dialect], concerns: Option<&[&str]>) -> ExitCode {
    if let Some(code) = child::run_if_child(backend) {
        return code;
    }
    let mut args = Arguments::from_args();
    // Most scenarios spend their time waiting for leases to end and processes to answer,
    // not computing: several at once finish the suite sooner on two cores. Those that
    // measure how soon something happens take more room (see `Room`).
    args.test_threads.get_or_insert(ROOM);
    let mut targets = Vec::new();
    for &dialect in dialects {
        match TestDatabase::new(dialect, "dlock-conformance") {
            Ok(database) => targets.push((dialect_key(dialect), database, Route::Direct)),
            Err(error) => {
                eprintln!("dlock-conformance: {error}");
                return ExitCode::FAILURE;
            }
        }
        if dialect == Dialect::Postgres {
            let route = Route::TransactionPooler;
            targets.push((route.key(), TestDatabase::pgbouncer(), route));
        }
    }
    // Timed and crowded scenarios first: two at a time among themselves, rather than
    // each waiting for room among the others.
    let (mut wide_trials, mut trials) = (Vec::new(), Vec::new());
    for (prefix, database, route) in &targets {
        let dialect = database.dialect();
        let env = Env::new(backend, dialect, database.url().to_owned(), *route);
        let about = Arc::new(database.describe());
        let reachable = Arc::new(OnceLock::new());
        for (name, scenario) in scenarios::all(dialect, *route, concerns) {
            let (env, about, reachable) = (env.clone(), Arc::clone(&about), Arc::clone(&reachable));
            let route = *route;
            let needs_rig = scenarios::NEEDS_FAILOVER_RIG.contains(&name);
            let wide = scenarios::TIMED.contains(&name) || scenarios::CROWDED.contains(&name);
            let queue = if wide { &mut wide_trials } else { &mut trials };
            queue.push(Trial::ignorable_test(
                format!("{prefix}::{name}"),
                move || {
                    if needs_rig && let Err(error) = dlock_testkit::failover::available() {
                        return dlock_testkit::unreachable(&error);
                    }
                    let _room = Room::take(if wide { HALF_ROOM } else { 1 });
                    // A file of its own is checked (and given its lock table) on its own,
                    // as the shared one is by the first scenario on it.
                    let own = own_file(dialect)?;
                    let checked = OnceLock::new();
                    let (env, reachable) = match &own {
                        Some(file) => {
                            let env = Env::new(backend, dialect, file.url().to_owned(), route);
                            (env, &checked)
                        }
                        None => (env, &*reachable),
                    };
                    run_trial(env, &about, reachable, scenario)
                },
            ));
        }
    }
    // The databases (a SQLite file made for this run) live until every trial has run.
    wide_trials.append(&mut trials);
    let conclusion = libtest_mimic::run(&args, wide_trials);
    drop(targets);
    conclusion.exit_code()
}

/// The room the scenarios running at once share, an ordinary one taking one unit: four
/// at once (`--test-threads` can lower it, not raise it).
const ROOM: usize = 4;
/// The room a timed or crowded scenario takes: at most two at once, or one beside two
/// others — as loaded as the suite used to run timed ones, two scenarios at a time, with
/// their slack, and within PostgreSQL's default connection limit.
const HALF_ROOM: usize = ROOM / 2;

/// The room the running scenarios take, out of [`ROOM`].
static TAKEN: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Room taken by a running scenario, given back on drop.
struct Room(usize);

impl Room {
    fn take(units: usize) -> Self {
        let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken + units > ROOM {
            taken = FREED.wait(taken).unwrap_or_else(PoisonError::into_inner);
        }
        *taken += units;
        Self(units)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        *TAKEN.lock().unwrap_or_else(PoisonError::into_inner) -= self.0;
        FREED.notify_all();
    }
}

/// A SQLite file of its own for one scenario, where the run makes its SQLite database
/// itself. SQLite lets one writer at a time into a file, and some scenarios hold a fenced
/// transaction open for seconds, by design: beside them on one file, the renewals of the
/// other scenarios' leases waited until their leases ran out (the SeaORM suite's SQLite
/// scenarios, run alone: 4 failures in 7 runs, 3 of them a fenced write refused for a lease
/// lost that way). `None`: the scenario shares its target's database (other
/// dialects; a SQLite file given with `DLOCK_TEST_SQLITE_URL`).
fn own_file(dialect: Dialect) -> Result<Option<TestDatabase>, String> {
    let given = std::env::var_os(TestDatabase::variable(dialect)).is_some();
    if dialect != Dialect::Sqlite || given {
        return Ok(None);
    }
    TestDatabase::new(dialect, "dlock-conformance").map(Some)
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
