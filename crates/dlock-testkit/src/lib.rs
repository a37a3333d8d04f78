//! What dlock's test suites and tools share, written once: the conformance suite, the
//! benchmark, the torture suite, the CLI's and the adapters' own tests.
//!
//! - [`Backend`] × [`Dialect`]: a pool of each adapter on each
//!   database, as the adapter's query interface and as the pool itself ([`Pool`]), and a
//!   fenced write through the adapter's own `fence` helper ([`Pool::fenced_write`]);
//! - [`TestDatabase`]: the databases the tests run against (`DLOCK_TEST_*_URL`), and the
//!   rule for one that cannot be reached ([`unreachable()`]: fail under `CI`, else skip
//!   loudly);
//! - [`ChildProcess`]: our own binary, started again as a child that speaks in lines;
//! - [`proxy::Proxy`] and [`Partition`]: cutting a holder off from its database;
//! - [`failover::FailoverRig`]: a PostgreSQL primary and standby that fail over;
//! - [`Tap`]: a query interface that forwards everything and sees every statement.
//!
//! Each suite keeps what is its own: its scenarios, the protocol its children speak, and
//! (the benchmark) the SQL of its floors.

mod backend;
mod database;
pub mod failover;
mod fenced;
mod partition;
mod process;
pub mod proxy;
mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dlock_core::Dialect;
use dlock_core::adapter::{ColumnType, Statement, StatementKind, Value};

pub use backend::{Backend, Pool, PoolOptions, dialect_key, dialect_named, dialect_parser};
pub use database::{TestDatabase, unreachable};
pub use partition::Partition;
pub use process::{ChildLines, ChildProcess, run_child};
pub use tap::{Flow, Tap, only_reads};

/// An error and its sources, on one line: dlock's messages say what to do, the driver's
/// source says what happened.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Wall-clock nanoseconds since the Unix epoch: every process on the machine shares this
/// clock, so children report their times in it.
pub fn wall_ns() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}

/// A name no other test, process or run uses, made of `prefix`, the process id, the time
/// and a counter; valid as a table name when `prefix` is.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        wall_ns(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A statement of a test's or a tool's own (a floor, a ledger write, administration SQL),
/// for an adapter to run: `sql` with `?` placeholders, numbered (`$1`, `$2`, …) for
/// PostgreSQL; `params` to bind; the types of the `columns` it returns.
///
/// Marked [`StatementKind::Other`]: not one of the core's statements.
pub fn statement(
    dialect: Dialect,
    sql: &str,
    params: Vec<Value>,
    columns: &'static [ColumnType],
) -> Statement {
    let sql = match dialect {
        Dialect::Postgres => {
            let mut numbered = String::with_capacity(sql.len() + 8);
            for (index, part) in sql.split('?').enumerate() {
                if index > 0 {
                    numbered.push_str(&format!("${index}"));
                }
                numbered.push_str(part);
            }
            numbered
        }
        _ => sql.to_owned(),
    };
    Statement {
        kind: StatementKind::Other,
        sql: sql.into(),
        params,
        columns,
    }
}
