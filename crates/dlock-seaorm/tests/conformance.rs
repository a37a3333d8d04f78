//! The conformance suite through SeaORM on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! SeaORM's query interface runs every statement through dlock-sqlx's, on the sqlx pool
//! under the `DatabaseConnection`, and dlock-sqlx's suite runs every scenario on that
//! code. What this adapter adds is run here: finding the pool under each kind of
//! connection (every scenario builds its locks from a `DatabaseConnection`), fencing in
//! SeaORM's transactions, errors of connections that cannot be used, and listening
//! through it.

use dlock_conformance::Backend;
use dlock_seaorm::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run_concerns(
        Backend::SeaOrm,
        &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite],
        &["exclusion", "fencing", "errors", "waiting"],
    )
}
