//! The conformance suite through sqlx's pools on PostgreSQL (directly and through
//! PgBouncer), MySQL/MariaDB and SQLite.

use dlock_conformance::Backend;
use dlock_sqlx::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run(
        Backend::Sqlx,
        &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
    )
}
