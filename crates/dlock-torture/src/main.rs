//! The torture suite: worker processes contend for a few lock names while faults are
//! injected on a schedule; a checker then verifies the ledger their critical sections
//! wrote. See the crate's README.
//!
//! ```sh
//! cargo run --release -p dlock-torture -- --minutes 10 --dialect postgres
//! cargo run --release -p dlock-torture -- --help
//! ```
//!
//! Exit codes: 0 all held, 1 a violation or a broken promise (see the `problem:` and
//! `violation:` lines), 2 bad arguments, 3 the database could not be reached.

mod args;
mod check;
mod faults;
mod ledger;
mod run;
mod worker_main;
mod worker_process;

use std::process::ExitCode;

use crate::args::Args;
use crate::run::RunError;

/// The exit code for a database that could not be reached at the start.
const UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    if let Some(code) = worker_main::run_if_worker() {
        return code;
    }
    let args = Args::parse_or_exit();
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
    let what = format!("{} on {}", args.adapter().name(), args.dialect.name());
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
