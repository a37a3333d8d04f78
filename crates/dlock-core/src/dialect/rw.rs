//! The statements of a reader-writer lock (see `rwlock.rs`), for each dialect.
//!
//! In a file of their own rather than in each dialect's: they are few, they reuse each
//! dialect's pieces (its clock, its probe, its epoch gate), and side by side the three
//! versions of each statement are easier to check against each other.
//!
//! Rows, in the companion table (`TableName::companion`), for a lock named `N`:
//!
//! - the **gate** `N#w`: an ordinary lock row, taken by a writer with the lock's own
//!   statements, except that its token grows by 2 (`acquire` with step 2);
//! - one row per **reader**, `N#r:{owner}`, with the reader's own owner id, lease and
//!   token, renewed like a lock's and deleted on release.
//!
//! The reader's statements bind `N` as the name and compute both row names in SQL, so a
//! reader is a lock (a `LockInner`) whose statements act on rows named after it.
//!
//! | statement     | parameters                  | result                                        |
//! |---------------|-----------------------------|-----------------------------------------------|
//! | `acquire`     | name, owner, holder, ttl_ms | `(fencing)` iff it inserted the reader's row: only while the gate is free, under a shared lock on the gate row |
//! | `probe`       | name, ttl_ms                | the writer holding the gate, as the lock's `probe` |
//! | `renew`       | name, owner, ttl_ms         | as the lock's, on the reader's row, only while it is live |
//! | `release`     | name, owner                 | as the lock's; it deletes the reader's row     |
//! | `fence`       | name, owner, fencing        | the reader's row iff still its own and live, locked |
//! | `create_gate` | name                        | — (adds the gate row, free, if it is missing) |
//! | `readers`     | name                        | `(holder, remaining_ms, live, rows)`: the reader row whose lease ends last, how many are live, how many there are; none without reader rows |
//! | `purge`       | name                        | — (deletes the reader rows whose lease has ended) |
//!
//! **Tokens.** Every acquisition reads the gate's counter: a writer adds 2 and takes the
//! result, a reader takes the counter plus 1 without writing it. So readers between two
//! writers share one token, `W + 1` after the write `W`, and the next write gets at least
//! `W + 2`: a write's token exceeds every earlier read's, and a read's exceeds every
//! earlier write's. (On PostgreSQL, after a failover, each is at least the new epoch's
//! least token, the writer's one more: the order holds across it.)

use super::Param::{Channel, Holder, Name, Owner, Token, TtlMs};
use super::{ColumnType, Sql, Template, bind};
use crate::adapter::{Statement, StatementKind};
use crate::random::OWNER_ID_LEN;
use crate::{Dialect, TableName};

/// The suffix of the gate row's name.
pub(crate) const GATE_SUFFIX: &str = "#w";
/// What follows the lock's name in a reader row's name, before the reader's owner id.
pub(crate) const READER_INFIX: &str = "#r:";
/// How long a reader row's name is beyond the lock's name: the infix and an owner id.
const READER_EXTRA: usize = READER_INFIX.len() + OWNER_ID_LEN;

// The statements find a lock's reader rows by name: `{name}#r:` and an owner id's
// length of characters with no `#`. Each row of the companion table ends in a suffix
// after its last `#` (a permit's number, `w`, `r:` and an owner id), so a row whose last
// `#` is the one after `{name}` belongs to the lock `{name}` — and no other lock's,
// whatever the names: the rows of `a#r:x` (`a#r:x#w`, `a#r:x#r:…`) are not readers of
// `a`. A prefix alone would take them for readers of `a`, wait for them, and delete the
// ended ones (the gate's counter with them, so `a#r:x`'s tokens would start again).

/// A reader-writer lock's statements: the writer's and the reader's [`Sql`], and their
/// own two.
#[derive(Debug, Clone)]
pub(crate) struct RwSql {
    /// The lock's statements for the gate row, its token growing by 2.
    pub(crate) writer: Sql,
    /// A reader's: on its own row, and the gate's probe (see the module's table).
    pub(crate) reader: Sql,
    create_gate: Template,
    readers: Template,
    purge: Template,
}

/// `(holder, remaining_ms, live rows, rows)`.
const READERS: &[ColumnType] = &[
    ColumnType::Text,
    ColumnType::Int,
    ColumnType::Int,
    ColumnType::Int,
];

impl RwSql {
    /// Adds the gate row of the lock `name`, free, unless it exists.
    pub(crate) fn create_gate(&self, name: &str) -> Statement {
        let args = super::Args {
            name,
            ..super::Args::default()
        };
        bind(StatementKind::CreateRows, &self.create_gate, &args, &[])
    }

    /// The live readers of the lock `name`: the one whose lease ends last, and how many.
    pub(crate) fn readers(&self, name: &str) -> Statement {
        let args = super::Args {
            name,
            ..super::Args::default()
        };
        bind(StatementKind::Probe, &self.readers, &args, READERS)
    }

    /// Deletes the reader rows of the lock `name` whose lease has ended: rows of crashed
    /// or revoked readers, which can never be renewed again.
    pub(crate) fn purge(&self, name: &str) -> Statement {
        let args = super::Args {
            name,
            ..super::Args::default()
        };
        bind(StatementKind::Release, &self.purge, &args, &[])
    }
}

impl Dialect {
    /// The statements of a reader-writer lock whose rows are in `table` (the companion
    /// table).
    pub(crate) fn rw_sql(self, table: &TableName) -> RwSql {
        let base = self.sql(table);
        let own = match self {
            Self::Postgres => postgres(table),
            Self::Mysql => mysql(table),
            Self::Sqlite => sqlite(table),
        };
        RwSql {
            writer: Sql {
                acquire: own.writer_acquire,
                acquire_in_turn: own.writer_acquire_in_turn,
                acquire_returning: own.writer_acquire_returning,
                ..base.clone()
            },
            // Readers do not take turns: all of them get in together.
            reader: Sql {
                acquire: own.acquire,
                acquire_in_turn: None,
                acquire_returning: own.acquire_returning,
                read_token: own.read_token,
                probe: own.probe,
                renew: own.renew,
                release: own.release,
                fence: own.fence,
                ..base
            },
            create_gate: own.create_gate,
            readers: own.readers,
            purge: own.purge,
        }
    }
}

/// One dialect's templates.
struct Templates {
    writer_acquire: Template,
    writer_acquire_in_turn: Option<Template>,
    writer_acquire_returning: Option<Template>,
    acquire: Template,
    acquire_returning: Option<Template>,
    read_token: Option<Template>,
    probe: Template,
    renew: Template,
    release: Template,
    fence: Template,
    create_gate: Template,
    readers: Template,
    purge: Template,
}

/// What a reader row's holder reads as, revoked or not (`owner`, `holder`: its columns).
fn shown_holder(concat: impl Fn(&[&str]) -> String) -> String {
    format!(
        "CASE WHEN owner IS NULL THEN {} ELSE holder END",
        concat(&[
            "'revoked by an operator (was: '",
            "COALESCE(holder, 'an unnamed holder')",
            "')'"
        ])
    )
}

fn pipes(parts: &[&str]) -> String {
    parts.join(" || ")
}

fn postgres(table: &TableName) -> Templates {
    use super::postgres::{
        BASE, FREE, NOT_DURABLE, acquire, epoch_gate, notify_if_watched, probe, turns_key,
        waiters_key,
    };
    let t = table.quoted('"');
    let gate = format!("$1 || '{GATE_SUFFIX}'");
    let row = format!("$1 || '{READER_INFIX}' || $2");
    let waiters = waiters_key(table);
    let holder = shown_holder(pipes);
    let prefix = format!(
        "char_length(name) = char_length($1) + {READER_EXTRA} \
         AND left(name, -{OWNER_ID_LEN}) = $1 || '{READER_INFIX}' \
         AND strpos(right(name, {OWNER_ID_LEN}), '#') = 0"
    );
    Templates {
        writer_acquire: Template::new(acquire(&t, 2, None), &[Name, Owner, Holder, TtlMs]),
        writer_acquire_in_turn: Some(Template::new(
            acquire(&t, 2, Some(&turns_key(table))),
            &[Name, Owner, Holder, TtlMs],
        )),
        writer_acquire_returning: None,
        // The reader's row, only if the gate is free (no live writer), decided on the
        // gate row locked `FOR SHARE`: under READ COMMITTED the lock is taken on the
        // newest version, and the condition re-checked there after any writer's take
        // that was in progress commits. A writer's take locks the gate `FOR UPDATE`,
        // which waits for every reader statement holding it shared, and the other way
        // round: a reader either committed its row before the writer took the gate (and
        // the writer's look for readers, a later statement, sees it) or saw the gate
        // taken and inserted nothing. Readers' shared locks do not block each other. The
        // epoch gate and least token are the lock's (a failover's lock-delay holds
        // readers back too).
        acquire: Template::new(
            format!(
                "WITH {epoch}, writer AS (
                     SELECT fencing FROM {t}
                     WHERE name = {gate} AND {FREE} AND (SELECT open FROM gate)
                     FOR SHARE
                 )
                 INSERT INTO {t} (name, owner, fencing, holder, acquired_at, expires_at)
                 SELECT {row}, $2, GREATEST(w.fencing + 1, {BASE}), $3, clock_timestamp(),
                        clock_timestamp() + $4 * INTERVAL '1 millisecond'
                 FROM writer AS w, epoch
                 RETURNING fencing",
                epoch = epoch_gate(&t),
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        acquire_returning: None,
        read_token: None,
        probe: Template::new(probe(&t, &format!("name = {gate}"), ""), &[Name, TtlMs]),
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3 * INTERVAL '1 millisecond'
                 WHERE name = {row} AND owner = $2 AND expires_at > clock_timestamp()
                 RETURNING CAST(FLOOR(EXTRACT(EPOCH FROM expires_at) * 1000) AS BIGINT) - $3"
            ),
            &[Name, Owner, TtlMs],
        ),
        // Deleted, not freed: reader rows are one per acquisition. Whether a writer waits
        // for the readers to leave is asked, and the writer notified, as by a lock's
        // release (its key is the lock's name, `$1`, in which a draining writer announces
        // its interest). Not durable, as a lock's release.
        release: Template::new(
            format!(
                "DELETE FROM {t} WHERE name = {row} AND owner = $2 AND {NOT_DURABLE}
                 RETURNING {}",
                notify_if_watched(&waiters)
            ),
            &[Name, Owner, Channel],
        ),
        // Key share, as the lock's: an operator's force release (a DELETE or an owner
        // change) waits for the fenced transaction; the renewal does not.
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name = {row} AND owner = $2 AND fencing = $3
                   AND expires_at > clock_timestamp()
                 FOR KEY SHARE"
            ),
            &[Name, Owner, Token],
        ),
        create_gate: Template::new(
            format!(
                "INSERT INTO {t} (name, owner, fencing) VALUES ({gate}, NULL, 0)
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[Name],
        ),
        // A plain read. By prefix, compared exactly (not `LIKE`, whose `%` and `_` a
        // name may contain): it scans the companion table, which holds only the rows of
        // semaphores and reader-writer locks. One clock reading for every row.
        readers: Template::new(
            format!(
                "SELECT holder, remaining_ms, live, total FROM (
                     SELECT {holder} AS holder,
                            CAST(EXTRACT(EPOCH FROM expires_at - c.now) * 1000 AS BIGINT)
                                AS remaining_ms,
                            CAST(count(*) FILTER (WHERE expires_at > c.now) OVER () AS BIGINT)
                                AS live,
                            CAST(count(*) OVER () AS BIGINT) AS total
                     FROM {t}, (SELECT clock_timestamp() AS now) AS c
                     WHERE {prefix}
                 ) AS readers
                 ORDER BY remaining_ms DESC NULLS LAST LIMIT 1"
            ),
            &[Name],
        ),
        purge: Template::new(
            format!(
                "DELETE FROM {t}
                 WHERE {prefix} AND (expires_at IS NULL OR expires_at <= clock_timestamp())"
            ),
            &[Name],
        ),
    }
}

fn mysql(table: &TableName) -> Templates {
    use super::mysql::{ACQUIRE_PARAMS, NOW, acquire};
    let t = table.quoted('`');
    let key_of = |expr: &str| format!("UNHEX(SHA2(CONVERT({expr} USING utf8mb4), 256))");
    let gate_name = format!("CONCAT(?, '{GATE_SUFFIX}')");
    let row_name = format!("CONCAT(?, '{READER_INFIX}', ?)");
    let (gate, row) = (key_of(&gate_name), key_of(&row_name));
    let holder = shown_holder(|parts| format!("CONCAT({})", parts.join(", ")));
    let prefix = format!(
        "CHAR_LENGTH(name) = CHAR_LENGTH(?) + {READER_EXTRA} \
         AND LEFT(name, CHAR_LENGTH(name) - {OWNER_ID_LEN}) = CONVERT(CONCAT(?, '{READER_INFIX}') USING utf8mb4) \
         AND LOCATE('#', RIGHT(name, {OWNER_ID_LEN})) = 0"
    );
    // The reader's row, only if the gate is free, read with a shared lock: a locking
    // read of the newest committed version whatever the isolation level (under the
    // default REPEATABLE READ, and under READ COMMITTED, where `INSERT … SELECT` would
    // otherwise read a snapshot), which a writer's take (an exclusive lock on the gate
    // row) waits for, and which waits for it. Owner ids are unique, so the insert never
    // meets a duplicate.
    let reader_acquire = |returning: &str| {
        format!(
            "INSERT INTO {t} (name_hash, name, owner, fencing, holder, acquired_at, expires_at)
             SELECT {row}, CONVERT({row_name} USING utf8mb4), ?, g.fencing + 1, ?, {NOW},
                    {NOW} + INTERVAL (? * 1000) MICROSECOND
             FROM {t} AS g
             WHERE g.name_hash = {gate}
               AND (g.expires_at IS NULL OR g.expires_at <= {NOW})
             LOCK IN SHARE MODE{returning}"
        )
    };
    const ACQUIRE: &[super::Param] = &[Name, Owner, Name, Owner, Owner, Holder, TtlMs, Name];
    Templates {
        writer_acquire: Template::new(acquire(&t, 2, ""), ACQUIRE_PARAMS),
        writer_acquire_in_turn: None,
        writer_acquire_returning: Some(Template::new(
            acquire(&t, 2, " RETURNING owner, fencing"),
            ACQUIRE_PARAMS,
        )),
        acquire: Template::new(reader_acquire(""), ACQUIRE),
        acquire_returning: Some(Template::new(
            reader_acquire(" RETURNING owner, fencing"),
            ACQUIRE,
        )),
        read_token: Some(Template::new(
            format!("SELECT fencing FROM {t} WHERE name_hash = {row} AND owner = ?"),
            &[Name, Owner, Owner],
        )),
        probe: Template::new(
            format!(
                "SELECT {holder},
                        CAST(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) DIV 1000 AS SIGNED),
                        fencing
                 FROM {t}
                 WHERE name_hash = {gate} AND expires_at > {NOW}"
            ),
            &[Name],
        ),
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND
                 WHERE name_hash = {row} AND owner = ? AND expires_at > {NOW}"
            ),
            &[TtlMs, Name, Owner, Owner],
        ),
        release: Template::new(
            format!("DELETE FROM {t} WHERE name_hash = {row} AND owner = ?"),
            &[Name, Owner, Owner],
        ),
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name_hash = {row} AND owner = ? AND fencing = ? AND expires_at > {NOW}
                 LOCK IN SHARE MODE"
            ),
            &[Name, Owner, Owner, Token],
        ),
        // A no-op update on a duplicate rather than `INSERT IGNORE`, as `create_rows`.
        create_gate: Template::new(
            format!(
                "INSERT INTO {t} (name_hash, name, owner, fencing)
                 VALUES ({gate}, CONVERT({gate_name} USING utf8mb4), NULL, 0)
                 ON DUPLICATE KEY UPDATE fencing = fencing"
            ),
            &[Name, Name],
        ),
        // A plain (consistent, non-locking) read, in a statement of its own: a snapshot
        // taken after the writer's take committed. The `name` column compares bytes
        // (`utf8mb4_bin`). `UTC_TIMESTAMP(6)` is one instant for the statement.
        readers: Template::new(
            format!(
                "SELECT {holder},
                        CAST(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) DIV 1000 AS SIGNED),
                        CAST(SUM(CASE WHEN expires_at > {NOW} THEN 1 ELSE 0 END) OVER ()
                             AS SIGNED),
                        CAST(COUNT(*) OVER () AS SIGNED)
                 FROM {t}
                 WHERE {prefix}
                 ORDER BY 2 DESC LIMIT 1"
            ),
            &[Name, Name],
        ),
        // It scans, and under REPEATABLE READ locks what it scans for its own short
        // transaction; it runs only when the writer saw rows to purge.
        purge: Template::new(
            format!(
                "DELETE FROM {t}
                 WHERE {prefix} AND (expires_at IS NULL OR expires_at <= {NOW})"
            ),
            &[Name, Name],
        ),
    }
}

fn sqlite(table: &TableName) -> Templates {
    use super::sqlite::{NOW_MS, acquire};
    let t = table.quoted('"');
    let gate = format!("?1 || '{GATE_SUFFIX}'");
    let row = format!("?1 || '{READER_INFIX}' || ?2");
    let holder = shown_holder(pipes);
    let prefix = format!(
        "length(name) = length(?1) + {READER_EXTRA} \
         AND substr(name, 1, length(name) - {OWNER_ID_LEN}) = ?1 || '{READER_INFIX}' \
         AND instr(substr(name, -{OWNER_ID_LEN}), '#') = 0"
    );
    Templates {
        writer_acquire: Template::new(acquire(&t, 2), &[Name, Owner, Holder, TtlMs]),
        writer_acquire_in_turn: None,
        writer_acquire_returning: None,
        // One statement under SQLite's single writer: the gate's state it reads is the
        // state when it writes.
        acquire: Template::new(
            format!(
                "INSERT INTO {t} (name, owner, fencing, holder, acquired_at, expires_at)
                 SELECT {row}, ?2, g.fencing + 1, ?3, {NOW_MS}, {NOW_MS} + ?4
                 FROM {t} AS g
                 WHERE g.name = {gate} AND (g.expires_at IS NULL OR g.expires_at <= {NOW_MS})
                 RETURNING fencing"
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        acquire_returning: None,
        read_token: None,
        probe: Template::new(
            format!(
                "SELECT {holder}, expires_at - {NOW_MS}, fencing
                 FROM {t}
                 WHERE name = {gate} AND expires_at > {NOW_MS}"
            ),
            &[Name],
        ),
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = {NOW_MS} + ?3
                 WHERE name = {row} AND owner = ?2 AND expires_at > {NOW_MS}
                 RETURNING expires_at - ?3"
            ),
            &[Name, Owner, TtlMs],
        ),
        release: Template::new(
            format!("DELETE FROM {t} WHERE name = {row} AND owner = ?2"),
            &[Name, Owner],
        ),
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name = {row} AND owner = ?2 AND fencing = ?3 AND expires_at > {NOW_MS}"
            ),
            &[Name, Owner, Token],
        ),
        create_gate: Template::new(
            format!(
                "INSERT INTO {t} (name, owner, fencing) VALUES ({gate}, NULL, 0)
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[Name],
        ),
        // One clock reading: the rows are all read and sorted before the first is
        // returned.
        readers: Template::new(
            format!(
                "SELECT {holder}, expires_at - {NOW_MS},
                        SUM(CASE WHEN expires_at > {NOW_MS} THEN 1 ELSE 0 END) OVER (),
                        COUNT(*) OVER ()
                 FROM {t}
                 WHERE {prefix}
                 ORDER BY 2 DESC LIMIT 1"
            ),
            &[Name],
        ),
        purge: Template::new(
            format!(
                "DELETE FROM {t}
                 WHERE {prefix} AND (expires_at IS NULL OR expires_at <= {NOW_MS})"
            ),
            &[Name],
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::FencingToken;
    use crate::dialect::tests::placeholders;

    #[test]
    fn every_statement_binds_one_value_per_placeholder() {
        let table = TableName::default().companion().expect("a short name");
        for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let rw = dialect.rw_sql(&table);
            let ttl = Duration::from_secs(1);
            let (reader, writer) = (&rw.reader, &rw.writer);
            let mut statements = vec![
                ("writer acquire", writer.acquire("n#w", "o", "h", ttl)),
                ("reader acquire", reader.acquire("n", "o", "h", ttl)),
                ("reader probe", reader.probe("n", ttl)),
                ("reader renew", reader.renew("n", "o", ttl)),
                ("reader release", reader.release("n", "o")),
                ("reader fence", reader.fence("n", "o", FencingToken(1))),
                ("create_gate", rw.create_gate("n")),
                ("readers", rw.readers("n")),
                ("purge", rw.purge("n")),
            ];
            statements.extend(
                reader
                    .read_token("n", "o")
                    .map(|s| ("reader read_token", s)),
            );
            statements.extend(
                reader
                    .acquire_returning("n", "o", "h", ttl)
                    .map(|s| ("reader acquire_returning", s)),
            );
            statements.extend(
                writer
                    .acquire_returning("n#w", "o", "h", ttl)
                    .map(|s| ("writer acquire_returning", s)),
            );
            for (what, statement) in statements {
                assert_eq!(
                    placeholders(dialect, &statement.sql),
                    statement.params.len(),
                    "{dialect} {what}: {}",
                    statement.sql
                );
            }
        }
    }

    #[test]
    fn a_writer_steps_its_token_by_two_and_a_lock_by_one() {
        let table = TableName::default().companion().expect("a short name");
        for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let writer = dialect.rw_sql(&table).writer.acquire.sql;
            let lock = dialect.sql(&table).acquire.sql;
            assert!(writer.contains("fencing + 2"), "{dialect}: {writer}");
            assert!(lock.contains("fencing + 1") && !lock.contains("fencing + 2"));
        }
    }
}
