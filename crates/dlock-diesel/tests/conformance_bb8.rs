//! The conformance suite through diesel-async's bb8 pools, on PostgreSQL, MySQL/MariaDB
//! and SQLite.

use dlock_conformance::Backend;
use dlock_diesel::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run(
        Backend::DieselBb8,
        &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
    )
}
