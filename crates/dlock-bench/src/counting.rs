//! A query interface that counts the statements passing through it, by kind, so the
//! benchmark sees exactly what a lock sends to the database — independent of whatever
//! else runs on the server, and without `pg_stat_statements`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dlock_core::{QueryError, QueryInterface, Row, Statement, async_trait};

/// Wraps another query interface and counts its statements.
///
/// Every method of [`QueryInterface`] must be forwarded here: one left to a default
/// would silently change what the lock does under measurement.
pub(crate) struct CountingQueries {
    inner: Arc<dyn QueryInterface>,
    reads: AtomicU64,
    writes: AtomicU64,
    others: AtomicU64,
}

/// Statement counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// `SELECT`, `SHOW`, and `WITH … SELECT` without a data-modifying part.
    pub(crate) reads: u64,
    /// Anything that modifies data or schema, or locks a row for update: `INSERT`,
    /// `UPDATE`, `DELETE`, `CREATE`, …
    pub(crate) writes: u64,
    /// Neither, e.g. `LISTEN`.
    pub(crate) others: u64,
}

impl Counts {
    pub(crate) fn total(self) -> u64 {
        self.reads + self.writes + self.others
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
            others: self.others.saturating_sub(earlier.others),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Other,
}

impl CountingQueries {
    pub(crate) fn new(inner: Arc<dyn QueryInterface>) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            others: AtomicU64::new(0),
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            reads: self.reads.load(Ordering::SeqCst),
            writes: self.writes.load(Ordering::SeqCst),
            others: self.others.load(Ordering::SeqCst),
        }
    }

    /// Counted when the statement is sent, whether or not it succeeds: a failed
    /// statement still cost the database a round trip.
    fn count(&self, statement: &Statement) {
        let counter = match classify(&statement.sql) {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
            Kind::Other => &self.others,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn classify(sql: &str) -> Kind {
    let upper = sql.trim_start().to_ascii_uppercase();
    let first_word = upper
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    let modifies = || {
        upper
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|word| matches!(word, "INSERT" | "UPDATE" | "DELETE" | "MERGE"))
    };
    match first_word {
        // `SELECT … FOR UPDATE` locks rows for writing: it counts as a write.
        "SELECT" | "WITH" | "SHOW" | "VALUES" if !modifies() => Kind::Read,
        "SELECT" | "WITH" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "CREATE" | "ALTER"
        | "DROP" | "REPLACE" | "UPSERT" | "TRUNCATE" => Kind::Write,
        _ => Kind::Other,
    }
}

#[async_trait]
impl QueryInterface for CountingQueries {
    fn dialect(&self) -> dlock_core::Dialect {
        self.inner.dialect()
    }

    async fn execute(&self, statement: &Statement) -> Result<u64, QueryError> {
        self.count(statement);
        self.inner.execute(statement).await
    }

    async fn query(&self, statement: &Statement) -> Result<Vec<Row>, QueryError> {
        self.count(statement);
        self.inner.query(statement).await
    }

    fn notification_source(&self) -> Option<String> {
        self.inner.notification_source()
    }

    /// Listening runs on a connection of its own, outside the pool: not a statement of
    /// the waiter, so not counted.
    async fn listen(&self, channel: &str, wake: dlock_core::Wake) -> Result<(), QueryError> {
        self.inner.listen(channel, wake).await
    }
}

impl fmt::Debug for CountingQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingQueries")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified() {
        assert_eq!(
            classify("  SELECT holder FROM t WHERE name = $1"),
            Kind::Read
        );
        assert_eq!(classify("select 1"), Kind::Read);
        assert_eq!(classify("WITH x AS (SELECT 1) SELECT * FROM x"), Kind::Read);
        assert_eq!(
            classify("WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT * FROM x"),
            Kind::Write
        );
        assert_eq!(
            classify("INSERT INTO t AS l VALUES ($1) ON CONFLICT DO NOTHING"),
            Kind::Write
        );
        assert_eq!(classify("UPDATE t SET owner = NULL"), Kind::Write);
        assert_eq!(
            classify("CREATE TABLE IF NOT EXISTS t (a INT)"),
            Kind::Write
        );
        assert_eq!(classify("LISTEN dlock"), Kind::Other);
        // Column names that merely contain a keyword do not count.
        assert_eq!(classify("SELECT updated_at FROM t"), Kind::Read);
    }
}
