//! The statements a semaphore adds to a lock's, per dialect, on the companion table
//! (`TableName::companion`). Each permit is an ordinary lock row there, named
//! `{name}#{i}` for `i` in `1..=N`, taken, renewed, released and fenced by the lock's own
//! statements; the semaphore adds only these two:
//!
//! | statement    | parameters              | result                                        |
//! |--------------|-------------------------|-----------------------------------------------|
//! | `read_slots` | names, ttl_ms (\*)      | `(name, holder, remaining_ms, fencing)` per live lease among the names |
//! | `define`     | name, permits, holder   | — (adds the definition row if there is none)  |
//! | `undefine`   | name                    | 1 affected row iff it removed the definition row |
//!
//! `read_slots` binds the permits' names as one JSON array (as a multi-lock's statements
//! do), so its text is the same for any number of permits, and it never writes: waiters
//! run it. (\*) On PostgreSQL it also returns, named `''`, the lock-delay after a failover
//! (see `postgres.rs`), during which no permit can be taken; other dialects ignore the TTL.
//!
//! The **definition row** `{name}#0` records the number of permits in its `fencing`
//! column. It is never a lease: no owner, no `expires_at`, so no statement counts it as
//! held, and no permit is ever named `#0`, so no acquisition takes it.

use super::Param::{Holder, Name, Token, TtlMs};
use super::{Args, Template, bind, mysql, postgres, sqlite};
use crate::adapter::{ColumnType, Statement, StatementKind};
use crate::{Dialect, TableName};
use std::time::Duration;

/// What `read_slots` returns per live lease: the permit's row name, its holder (a revoked
/// lease says so), how many milliseconds the lease has left by the database's clock, and
/// its fencing token.
const SLOT: &[ColumnType] = &[
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Int,
    ColumnType::Int,
];

/// A semaphore's own statements on its companion table.
#[derive(Debug, Clone)]
pub(crate) struct SemaphoreSql {
    read_slots: Template,
    define: Template,
    undefine: Template,
}

impl SemaphoreSql {
    /// The live leases among `names` (a JSON array of the permits' row names); `ttl`, the
    /// reader's own, is the lock-delay after a failover (PostgreSQL).
    pub(crate) fn read_slots(&self, names: &str, ttl: Duration) -> Statement {
        let args = Args {
            name: names,
            ttl,
            ..Args::default()
        };
        bind(StatementKind::Probe, &self.read_slots, &args, SLOT)
    }

    /// Records that the semaphore `name` (its definition row's name, `{name}#0`) has
    /// `permits`, unless a definition is already there.
    pub(crate) fn define(&self, name: &str, permits: i64, holder: &str) -> Statement {
        let args = Args {
            name,
            token: permits,
            holder,
            ..Args::default()
        };
        bind(StatementKind::CreateRows, &self.define, &args, &[])
    }

    /// Removes the definition row `name` (`{name}#0`), for an operator changing the
    /// number of permits; only a definition row (no owner, no lease) is removed.
    pub(crate) fn undefine(&self, name: &str) -> Statement {
        let args = Args {
            name,
            ..Args::default()
        };
        bind(StatementKind::ForceRelease, &self.undefine, &args, &[])
    }
}

/// What a revoked lease's holder reads as, as in the lock's probe.
fn holder_of(prefix: &str, concat: fn(&[&str]) -> String) -> String {
    let owner = format!("{prefix}owner");
    let holder = format!("{prefix}holder");
    let revoked = concat(&[
        "'revoked by an operator (was: '",
        &format!("COALESCE({holder}, 'an unnamed holder')"),
        "')'",
    ]);
    format!("CASE WHEN {owner} IS NULL THEN {revoked} ELSE {holder} END")
}

fn pipes(parts: &[&str]) -> String {
    parts.join(" || ")
}

fn concat_fn(parts: &[&str]) -> String {
    format!("CONCAT({})", parts.join(", "))
}

impl Dialect {
    /// The statements of a semaphore whose rows live in `companion`.
    pub(crate) fn semaphore_sql(self, companion: &TableName) -> SemaphoreSql {
        match self {
            Self::Postgres => {
                let t = companion.quoted('"');
                let holder = holder_of("", pipes);
                let wanted = postgres::WANTED;
                let delay = postgres::LOCK_DELAY_HOLDER;
                SemaphoreSql {
                    read_slots: Template::new(
                        format!(
                            "SELECT name, {holder},
                                    CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000
                                         AS BIGINT),
                                    fencing
                             FROM {t}
                             WHERE name IN ({wanted}) AND expires_at > clock_timestamp()
                             UNION ALL
                             SELECT '', '{delay}',
                                    CAST(EXTRACT(EPOCH FROM acquired_at
                                                 + $2 * INTERVAL '1 millisecond'
                                                 - clock_timestamp()) * 1000 AS BIGINT),
                                    fencing
                             FROM {t}
                             WHERE name = '' AND acquired_at + $2 * INTERVAL '1 millisecond'
                                                 > clock_timestamp()"
                        ),
                        &[Name, TtlMs],
                    ),
                    define: Template::new(
                        format!(
                            "INSERT INTO {t} (name, owner, fencing, holder)
                             VALUES ($1, NULL, $2, $3)
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        &[Name, Token, Holder],
                    ),
                    undefine: Template::new(
                        format!(
                            "DELETE FROM {t}
                             WHERE name = $1 AND owner IS NULL AND expires_at IS NULL"
                        ),
                        &[Name],
                    ),
                }
            }
            Self::Mysql => {
                let t = companion.quoted('`');
                let holder = holder_of("l.", concat_fn);
                let (wanted, now, key) = (mysql::wanted(&t), mysql::NOW, mysql::KEY);
                SemaphoreSql {
                    read_slots: Template::new(
                        format!(
                            "SELECT l.name, {holder},
                                    CAST(TIMESTAMPDIFF(MICROSECOND, {now}, l.expires_at) DIV 1000
                                         AS SIGNED),
                                    l.fencing
                             FROM {wanted}
                             WHERE l.expires_at > {now}"
                        ),
                        &[Name],
                    ),
                    // The no-op update on a duplicate rather than `INSERT IGNORE`, which
                    // would turn every other error into a warning.
                    define: Template::new(
                        format!(
                            "INSERT INTO {t} (name_hash, name, owner, fencing, holder)
                             VALUES ({key}, CONVERT(? USING utf8mb4), NULL, ?, ?)
                             ON DUPLICATE KEY UPDATE fencing = fencing"
                        ),
                        &[Name, Name, Token, Holder],
                    ),
                    undefine: Template::new(
                        format!(
                            "DELETE FROM {t}
                             WHERE name_hash = {key} AND owner IS NULL AND expires_at IS NULL"
                        ),
                        &[Name],
                    ),
                }
            }
            Self::Sqlite => {
                let t = companion.quoted('"');
                let holder = holder_of("", pipes);
                let (wanted, now) = (sqlite::WANTED, sqlite::NOW_MS);
                SemaphoreSql {
                    read_slots: Template::new(
                        format!(
                            "SELECT name, {holder}, expires_at - {now}, fencing
                             FROM {t}
                             WHERE name IN ({wanted}) AND expires_at > {now}"
                        ),
                        &[Name],
                    ),
                    define: Template::new(
                        format!(
                            "INSERT INTO {t} (name, owner, fencing, holder)
                             VALUES (?1, NULL, ?2, ?3)
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        &[Name, Token, Holder],
                    ),
                    undefine: Template::new(
                        format!(
                            "DELETE FROM {t}
                             WHERE name = ?1 AND owner IS NULL AND expires_at IS NULL"
                        ),
                        &[Name],
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_semaphore_statement_binds_one_value_per_placeholder() {
        let companion = TableName::default().companion().expect("a short name");
        for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let sql = dialect.semaphore_sql(&companion);
            for statement in [
                sql.read_slots(r#"["s#1","s#2"]"#, Duration::from_secs(1)),
                sql.define("s#0", 3, "h"),
                sql.undefine("s#0"),
            ] {
                let placeholders = match dialect {
                    Dialect::Mysql => statement.sql.matches('?').count(),
                    Dialect::Postgres => (1..=9)
                        .filter(|i| statement.sql.contains(&format!("${i}")))
                        .count(),
                    Dialect::Sqlite => (1..=9)
                        .filter(|i| statement.sql.contains(&format!("?{i}")))
                        .count(),
                };
                assert_eq!(
                    placeholders,
                    statement.params.len(),
                    "{dialect}: {}",
                    statement.sql
                );
            }
        }
    }
}
