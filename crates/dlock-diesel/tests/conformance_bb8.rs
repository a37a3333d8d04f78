//! The conformance suite through diesel-async's bb8 pools, on PostgreSQL, MySQL/MariaDB
//! and SQLite.
//!
//! The adapter's code is the same for both pools but for checking connections out,
//! opening the listening connection and reading the pool's errors (`pool.rs`); the
//! deadpool suite runs every scenario, this one the concerns those paths touch.

use dlock_conformance::Backend;
use dlock_diesel::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run_concerns(
        Backend::DieselBb8,
        &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
        &[
            "exclusion",
            "errors",
            "refusals",
            "waiting",
            "release",
            "herd",
            "loss",
            "session",
        ],
    )
}
