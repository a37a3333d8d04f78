//! The conformance suite: every scenario written once, run by every adapter against real
//! databases.
//!
//! An adapter's `tests/conformance.rs` (with `harness = false`) is one line:
//!
//! ```text
//! fn main() -> std::process::ExitCode {
//!     dlock_conformance::run(MyAdapter, &[dlock_conformance::POSTGRES])
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
mod partition;
pub mod proxy;
mod scenarios;
mod support;

use std::any::Any;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dlock_core::{BoxError, Lease, QueryInterface, Statement, async_trait};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use support::Env;

/// What an adapter gives the suite.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's name, for messages.
    fn name(&self) -> &'static str;

    /// A new, small pool (or connection) to the database at `url`. Every call must give
    /// connections of its own: contenders use one each.
    async fn connect(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError>;

    /// A new pool (or connection) to `url` that sends every statement over one
    /// connection, kept for the pool's life: a session setting made through it (`SET
    /// SESSION sql_mode = …`) applies to every statement that follows, as with a pool
    /// whose connections run it after connecting.
    async fn connect_single(&self, url: &str) -> Result<Arc<dyn QueryInterface>, BoxError>;

    /// A query interface whose pool has no free connection and a short wait timeout, and
    /// the value that holds that connection. `None` if the adapter has no pool.
    async fn connect_exhausted(
        &self,
        url: &str,
    ) -> Result<Option<(Arc<dyn QueryInterface>, Box<dyn Any + Send>)>, BoxError>;

    /// In one transaction on a connection to `url`: fence with `lease`, run `write`, wait
    /// `hold`, commit. Errors from the fence come back unchanged (`Error::Fenced`).
    async fn fenced_write(
        &self,
        url: &str,
        lease: &Lease,
        write: &Statement,
        hold: Duration,
    ) -> Result<(), BoxError>;
}

/// A database to run the suite against.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Short name, the first part of each test's name.
    pub name: &'static str,
    /// The environment variable holding its URL.
    pub url_var: &'static str,
    /// The URL when the variable is not set; empty for a SQLite file in a temporary
    /// directory made for this run (and shared with the child processes).
    pub default_url: &'static str,
    /// Whether the database is reached over TCP. Scenarios that cut or refuse the
    /// connection (a proxy, a closed port) are generated only for such targets.
    pub network: bool,
}

/// PostgreSQL, at `DLOCK_TEST_POSTGRES_URL`.
pub const POSTGRES: Target = Target {
    name: "postgres",
    url_var: "DLOCK_TEST_POSTGRES_URL",
    default_url: "postgres://postgres@127.0.0.1:5432/test",
    network: true,
};

/// MySQL or MariaDB, at `DLOCK_TEST_MYSQL_URL`.
pub const MYSQL: Target = Target {
    name: "mysql",
    url_var: "DLOCK_TEST_MYSQL_URL",
    default_url: "mysql://root@127.0.0.1:3306/test",
    network: true,
};

/// SQLite, in a file in a temporary directory made for the run, or at
/// `DLOCK_TEST_SQLITE_URL`. Child processes share the file.
pub const SQLITE: Target = Target {
    name: "sqlite",
    url_var: "DLOCK_TEST_SQLITE_URL",
    default_url: "",
    network: false,
};

impl Target {
    /// The URL to test against.
    pub fn url(&self) -> String {
        match std::env::var(self.url_var) {
            Ok(url) => url,
            Err(_) if self.default_url.is_empty() => support::sqlite_url(),
            Err(_) => self.default_url.to_owned(),
        }
    }
}

/// Runs the suite (or, when started as a child by the suite, the child's part).
pub fn run<A: Adapter>(adapter: A, targets: &[Target]) -> ExitCode {
    let adapter = Arc::new(adapter);
    if let Some(code) = child::run_if_child(&adapter) {
        return code;
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for target in targets {
        let reachable = Arc::new(std::sync::OnceLock::new());
        for (name, scenario) in scenarios::all::<A>(target) {
            let adapter = Arc::clone(&adapter);
            let reachable = Arc::clone(&reachable);
            let target = *target;
            trials.push(Trial::ignorable_test(
                format!("{}::{name}", target.name),
                move || run_trial(adapter, target, &reachable, scenario),
            ));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    support::remove_sqlite_dir();
    conclusion.exit_code()
}

fn run_trial<A: Adapter>(
    adapter: Arc<A>,
    target: Target,
    reachable: &std::sync::OnceLock<Result<(), String>>,
    scenario: scenarios::Scenario<A>,
) -> Result<Completion, Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
    let url = target.url();
    let reached = reachable.get_or_init(|| {
        let reached = runtime.block_on(support::check_reachable(&*adapter, &url));
        if let Err(error) = &reached {
            eprintln!(
                "\n!!! {} is unreachable at {url} (set {} to its URL): {error}\n",
                target.name, target.url_var
            );
        }
        reached
    });
    if let Err(error) = reached {
        let message = format!("{} is unreachable at {url}: {error}", target.name);
        if std::env::var_os("CI").is_some() {
            return Err(format!("{message}; CI is set, so this fails instead of skipping").into());
        }
        return Ok(Completion::ignored_with(message));
    }
    let env = Env::new(adapter, url, target);
    runtime.block_on(scenario(env))?;
    Ok(Completion::Completed)
}
