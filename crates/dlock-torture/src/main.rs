//! The torture suite: worker processes contend for a few lock names while faults are
//! injected on a schedule; a checker then verifies the ledger their critical sections
//! wrote. See the crate's README.
//!
//! ```sh
//! cargo run --release -p dlock-torture -- --minutes 10 --dialect postgres
//! ```
//!
//! Exit codes: 0 all held, 1 a violation or a broken promise (see the `problem:` and
//! `violation:` lines), 2 bad arguments, 3 the database could not be reached.

mod args;
mod check;
mod faults;
mod fenced;
mod ledger;
mod run;
mod worker;
mod workers;

use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;

use crate::args::Parsed;
use crate::run::RunError;

/// The exit code for a database that could not be reached at the start.
const UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    if let Some(code) = worker::run_if_worker() {
        return code;
    }
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("dlock-torture: {error}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dlock-torture: cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let what = format!("{} on {}", args.adapter.name(), args.dialect.name());
    match runtime.block_on(run::run(args)) {
        Ok(report) => {
            report.print();
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                eprintln!("dlock-torture: FAILED ({what})");
                ExitCode::FAILURE
            }
        }
        Err(RunError::Unreachable(error)) => {
            eprintln!("dlock-torture: the database is unreachable ({what}): {error}");
            ExitCode::from(UNREACHABLE)
        }
        Err(RunError::Failed(error)) => {
            eprintln!("dlock-torture: the run failed ({what}): {error}");
            ExitCode::FAILURE
        }
    }
}

/// A random number below `bound` (which must not be 0), from the standard library's
/// randomly seeded hasher: good enough to pick a lock or a worker.
pub(crate) fn random_below(bound: usize) -> usize {
    let random = RandomState::new().hash_one(std::time::Instant::now());
    usize::try_from(random % u64::try_from(bound).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A random fraction in `[0, 1)`.
pub(crate) fn random_fraction() -> f64 {
    const SCALE: usize = 1 << 20;
    // Both are below 2^53, so the conversions are exact.
    f64::from(u32::try_from(random_below(SCALE)).unwrap_or(0)) / f64::from(1u32 << 20)
}
