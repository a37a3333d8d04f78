//! SQL dialects: every statement dlock runs, per database.
//!
//! Each dialect module renders the same set of statements ([`Sql`]) for a table name.
//! All times are the database's clock; durations travel as whole milliseconds.

mod postgres;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::query::{ColumnType, QueryError, Statement, Value};
use crate::{FencingToken, TableName};

/// The SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL (and servers speaking its dialect).
    Postgres,
}

impl Dialect {
    /// The dialect's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
        }
    }

    /// The longest lock name, in UTF-8 bytes, that the dialect's lock table can key on.
    ///
    /// PostgreSQL: a B-tree entry must fit in a third of a page (2,704 bytes); 2,000 leaves
    /// room for the tuple header whatever the name compresses to.
    pub fn max_name_bytes(self) -> usize {
        match self {
            Self::Postgres => 2000,
        }
    }

    /// Whether `error` says that the lock table (or its schema) does not exist.
    pub(crate) fn is_missing_table(self, error: &QueryError) -> bool {
        match self {
            Self::Postgres => postgres::is_missing_table(error),
        }
    }

    pub(crate) fn sql(self, table: &TableName) -> Sql {
        match self {
            Self::Postgres => postgres::sql(table),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The statements of one dialect for one table. Parameters, by statement:
///
/// | statement      | parameters                       | result                            |
/// |----------------|----------------------------------|-----------------------------------|
/// | `create_table` | —                                | —                                 |
/// | `acquire`      | name, owner, holder, ttl_ms      | one row `(fencing)` iff acquired  |
/// | `probe`        | name                             | `(holder, remaining_ms)` iff held |
/// | `renew`        | name, owner, ttl_ms              | 1 affected row iff still ours     |
/// | `release`      | name, owner (, channel)          | 1 affected row (or row) iff ours  |
/// | `fence`        | name, owner, fencing             | one row iff still ours, locked    |
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) create_table: Arc<str>,
    pub(crate) acquire: Arc<str>,
    pub(crate) probe: Arc<str>,
    pub(crate) renew: Arc<str>,
    pub(crate) release: Arc<str>,
    pub(crate) fence: Arc<str>,
    /// The notification channel the release statement notifies, on dialects that can.
    pub(crate) channel: Option<Arc<str>>,
}

const FENCING: &[ColumnType] = &[ColumnType::Int];
const HOLDER: &[ColumnType] = &[ColumnType::Text, ColumnType::Int];
const NAME: &[ColumnType] = &[ColumnType::Text];

impl Sql {
    pub(crate) fn create_table(&self) -> Statement {
        statement(&self.create_table, vec![], &[])
    }

    pub(crate) fn acquire(
        &self,
        name: &str,
        owner: &str,
        holder: &str,
        ttl: Duration,
    ) -> Statement {
        let params = vec![text(name), text(owner), text(holder), millis(ttl)];
        statement(&self.acquire, params, FENCING)
    }

    pub(crate) fn probe(&self, name: &str) -> Statement {
        statement(&self.probe, vec![text(name)], HOLDER)
    }

    pub(crate) fn renew(&self, name: &str, owner: &str, ttl: Duration) -> Statement {
        statement(&self.renew, vec![text(name), text(owner), millis(ttl)], &[])
    }

    /// Counted by affected rows or, when it notifies (and so returns the released name),
    /// by rows.
    pub(crate) fn release(&self, name: &str, owner: &str) -> Statement {
        match &self.channel {
            Some(channel) => {
                let params = vec![text(name), text(owner), text(channel)];
                statement(&self.release, params, NAME)
            }
            None => statement(&self.release, vec![text(name), text(owner)], &[]),
        }
    }

    pub(crate) fn fence(&self, name: &str, owner: &str, token: FencingToken) -> Statement {
        let params = vec![text(name), text(owner), Value::Int(token.get())];
        statement(&self.fence, params, FENCING)
    }
}

fn statement(sql: &Arc<str>, params: Vec<Value>, columns: &'static [ColumnType]) -> Statement {
    Statement {
        sql: Arc::clone(sql),
        params,
        columns,
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// The notification channel of a lock table: `dlock:` and the table's name, or a hash of
/// it when that would exceed PostgreSQL's 63-byte identifiers. Stable across processes.
fn channel(table: &TableName) -> Arc<str> {
    let readable = format!("dlock:{table}");
    if readable.len() <= 63 {
        return readable.into();
    }
    // FNV-1a: a fixed hash, unlike the standard library's randomly seeded one.
    let hash = readable
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("dlock:{hash:016x}").into()
}

/// Options validation bounds every duration far below `i64::MAX` milliseconds.
fn millis(duration: Duration) -> Value {
    Value::Int(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}
