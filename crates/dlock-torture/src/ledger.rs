//! The ledger: one row per critical section, written by the section itself through the
//! adapter's fenced transaction, and one row per loss a worker noticed, written without
//! fencing. Every time in them is the database's clock, in microseconds since the Unix
//! epoch.

use std::sync::Arc;

use dlock_core::Dialect;
use dlock_core::adapter::{ColumnType, QueryInterface, Statement, Value};

/// The lock table of the suite's locks.
pub(crate) const LOCK_TABLE: &str = "dlock_torture_locks";

/// The statements of the ledger in one dialect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerSql {
    dialect: Dialect,
}

/// One critical section as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) token: i64,
    pub(crate) worker: i64,
    pub(crate) entry_us: i64,
    /// `None` when the section's exit write never committed (killed, frozen, refused).
    pub(crate) exit_us: Option<i64>,
    /// Whether it excludes every other section of its name: a lock's, an election's
    /// term, a write; not a read of a reader-writer lock (`--rw`), whose ledger owner is
    /// marked (`worker_main::READ_MARK`).
    pub(crate) write: bool,
}

/// A loss a worker's guard reported, and when (database clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loss {
    pub(crate) name: String,
    pub(crate) token: i64,
    /// The worker that noticed it: readers of a reader-writer lock share tokens.
    pub(crate) worker: i64,
    pub(crate) noticed_us: i64,
}

impl LedgerSql {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self { dialect }
    }

    /// The database's clock now, in microseconds since the epoch. PostgreSQL's
    /// `clock_timestamp()` moves within a transaction (`now()` would not); MySQL's and
    /// SQLite's clocks are fixed per statement, which is all a statement needs.
    fn now_us(self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
            Dialect::Mysql => "TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6))",
            _ => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        }
    }

    /// `sql` with its `?` placeholders numbered for PostgreSQL.
    fn statement(self, sql: &str, params: Vec<Value>, columns: &'static [ColumnType]) -> Statement {
        dlock_testkit::statement(self.dialect, sql, params, columns)
    }

    pub(crate) fn create_tables(self) -> [Statement; 2] {
        let text = "VARCHAR(200)";
        [
            format!(
                "CREATE TABLE IF NOT EXISTS dlock_torture_ledger (
                    run_id {text} NOT NULL, name {text} NOT NULL, token BIGINT NOT NULL,
                    owner {text} NOT NULL, worker BIGINT NOT NULL,
                    entry_us BIGINT NOT NULL, exit_us BIGINT)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS dlock_torture_losses (
                    run_id {text} NOT NULL, name {text} NOT NULL, token BIGINT NOT NULL,
                    worker BIGINT NOT NULL, noticed_us BIGINT NOT NULL)"
            ),
        ]
        .map(|sql| self.statement(&sql, Vec::new(), &[]))
    }

    /// The section's first write: its entry, at the database's clock.
    pub(crate) fn enter(
        self,
        run: &str,
        name: &str,
        token: i64,
        owner: &str,
        worker: i64,
    ) -> Statement {
        self.statement(
            &format!(
                "INSERT INTO dlock_torture_ledger (run_id, name, token, owner, worker, entry_us)
                 VALUES (?, ?, ?, ?, ?, {})",
                self.now_us()
            ),
            [
                acquisition(run, name, token, owner),
                vec![Value::Int(worker)],
            ]
            .concat(),
            &[],
        )
    }

    /// The section's last write: its exit, at the database's clock.
    pub(crate) fn exit(self, run: &str, name: &str, token: i64, owner: &str) -> Statement {
        self.statement(
            &format!(
                "UPDATE dlock_torture_ledger SET exit_us = {}
                 WHERE run_id = ? AND name = ? AND token = ? AND owner = ?",
                self.now_us()
            ),
            acquisition(run, name, token, owner),
            &[],
        )
    }

    /// A loss noticed `ago_us` before this statement runs (it may run late: the database
    /// may have been unreachable when the loss was noticed).
    pub(crate) fn record_loss(
        self,
        run: &str,
        name: &str,
        token: i64,
        worker: i64,
        ago_us: i64,
    ) -> Statement {
        self.statement(
            &format!(
                "INSERT INTO dlock_torture_losses (run_id, name, token, worker, noticed_us)
                 VALUES (?, ?, ?, ?, {} - ?)",
                self.now_us()
            ),
            vec![
                Value::Text(run.into()),
                Value::Text(name.into()),
                Value::Int(token),
                Value::Int(worker),
                Value::Int(ago_us),
            ],
            &[],
        )
    }

    pub(crate) fn now(self) -> Statement {
        self.statement(
            &format!("SELECT {}", self.now_us()),
            Vec::new(),
            &[ColumnType::Int],
        )
    }

    /// Terminates the connections of about half the workers (at least one), chosen at
    /// random, and returns how many it terminated. `session` is the PostgreSQL
    /// `application_name` of this run's workers; on MySQL/MariaDB they are the
    /// connections to the suite's own database. `None` for SQLite.
    pub(crate) fn terminate_some(self, session: &str) -> Option<Statement> {
        let (sql, params) = match self.dialect {
            Dialect::Postgres => (
                "SELECT CAST(count(*) AS BIGINT) FROM (
                     SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = ? ORDER BY random()
                     LIMIT GREATEST(1, (SELECT count(*) FROM pg_stat_activity
                                        WHERE application_name = ?) / 2)) AS terminated",
                vec![Value::Text(session.into()), Value::Text(session.into())],
            ),
            // KILL is a statement of its own, one per connection: this only picks them.
            Dialect::Mysql => (
                "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST
                 WHERE DB = ? AND ID <> CONNECTION_ID() ORDER BY RAND()",
                vec![Value::Text(session.into())],
            ),
            _ => return None,
        };
        Some(self.statement(sql, params, &[ColumnType::Int]))
    }

    pub(crate) fn sections(self, run: &str) -> Statement {
        self.statement(
            "SELECT name, token, worker, entry_us, exit_us, owner FROM dlock_torture_ledger
             WHERE run_id = ?",
            vec![Value::Text(run.into())],
            &[
                ColumnType::Text,
                ColumnType::Int,
                ColumnType::Int,
                ColumnType::Int,
                ColumnType::Int,
                ColumnType::Text,
            ],
        )
    }

    pub(crate) fn losses(self, run: &str) -> Statement {
        self.statement(
            "SELECT name, token, worker, noticed_us FROM dlock_torture_losses WHERE run_id = ?",
            vec![Value::Text(run.into())],
            &[
                ColumnType::Text,
                ColumnType::Int,
                ColumnType::Int,
                ColumnType::Int,
            ],
        )
    }

    pub(crate) fn forget_run(self, run: &str) -> [Statement; 2] {
        ["dlock_torture_ledger", "dlock_torture_losses"].map(|table| {
            self.statement(
                &format!("DELETE FROM {table} WHERE run_id = ?"),
                vec![Value::Text(run.into())],
                &[],
            )
        })
    }
}

/// The values that identify an acquisition's ledger row, in the ledger's column order.
fn acquisition(run: &str, name: &str, token: i64, owner: &str) -> Vec<Value> {
    vec![
        Value::Text(run.into()),
        Value::Text(name.into()),
        Value::Int(token),
        Value::Text(owner.into()),
    ]
}

/// Reads the run's sections and losses.
pub(crate) async fn read(
    queries: &Arc<dyn QueryInterface>,
    sql: LedgerSql,
    run: &str,
) -> Result<(Vec<Section>, Vec<Loss>), String> {
    let rows = queries
        .query(&sql.sections(run))
        .await
        .map_err(|error| format!("cannot read the ledger: {error}"))?;
    let sections = rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [
                Value::Text(name),
                Value::Int(token),
                Value::Int(worker),
                Value::Int(entry_us),
                exit,
                owner,
            ] => Ok(Section {
                name: name.clone(),
                token: *token,
                worker: *worker,
                entry_us: *entry_us,
                exit_us: match exit {
                    Value::Int(exit) => Some(*exit),
                    _ => None,
                },
                write: !matches!(owner, Value::Text(owner)
                    if owner.starts_with(crate::worker_main::READ_MARK)),
            }),
            other => Err(format!("unexpected ledger row {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let rows = queries
        .query(&sql.losses(run))
        .await
        .map_err(|error| format!("cannot read the losses: {error}"))?;
    let losses = rows
        .into_iter()
        .map(|row| match row.as_slice() {
            [
                Value::Text(name),
                Value::Int(token),
                Value::Int(worker),
                Value::Int(noticed_us),
            ] => Ok(Loss {
                name: name.clone(),
                token: *token,
                worker: *worker,
                noticed_us: *noticed_us,
            }),
            other => Err(format!("unexpected loss row {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    Ok((sections, losses))
}

/// The database's clock now, in microseconds.
pub(crate) async fn db_now_us(
    queries: &Arc<dyn QueryInterface>,
    sql: LedgerSql,
) -> Result<i64, String> {
    match queries.query(&sql.now()).await.as_deref() {
        Ok([row]) => match row.as_slice() {
            [Value::Int(now)] => Ok(*now),
            other => Err(format!("unexpected clock row {other:?}")),
        },
        Ok(rows) => Err(format!("the clock query returned {} rows", rows.len())),
        Err(error) => Err(format!("cannot read the database's clock: {error}")),
    }
}
