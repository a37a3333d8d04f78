//! The conformance suite on PostgreSQL through deadpool-postgres.

use dlock_conformance::Backend;
use dlock_tokio_postgres::Dialect;

fn main() -> std::process::ExitCode {
    dlock_conformance::run(Backend::TokioPostgres, &[Dialect::Postgres])
}
