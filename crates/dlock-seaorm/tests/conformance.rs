//! The conformance suite through SeaORM on PostgreSQL, MySQL/MariaDB and SQLite.

use dlock_conformance::Backend;
use dlock_seaorm::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run(
        Backend::SeaOrm,
        &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
    )
}
