//! SQLite 3.35+ (`RETURNING`), shared by processes through one database file.
//!
//! **Clock.** Times are stored as integer milliseconds since the Unix epoch, computed from
//! `julianday('now')` (which SQLite keeps in whole milliseconds): exact to compare, easy to
//! subtract, no text-format pitfalls, and available in every SQLite version (unlike
//! `unixepoch('subsec')`, 3.42+). `'now'` is fixed for the whole of one statement, so one
//! statement compares and stores one instant.
//!
//! **Acquire.** One `INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`, as on
//! PostgreSQL. SQLite has one writer at a time per database, so the statement is atomic;
//! concurrent writers wait for each other through the connection's busy timeout.
//!
//! **Fence.** SQLite has no row locks. The fence is a plain read inside the caller's
//! transaction; what protects the writes after it is SQLite's single writer:
//! - begun `IMMEDIATE` (what `dlock-seaorm`'s `begin_fenced` does), the transaction holds
//!   the database's write lock from its start, so no takeover can commit until it ends —
//!   the same guarantee as a row lock, at the price of blocking every other writer;
//! - begun `DEFERRED` in WAL mode, the fence's read opens a snapshot; if anyone commits a
//!   write after it (a takeover, but also any other write), the transaction's first write
//!   fails with `SQLITE_BUSY_SNAPSHOT`, and once that first write succeeds the transaction
//!   is the only writer until it ends. So a stale holder's writes never commit, but the
//!   transaction may fail spuriously and must then be retried.
//!
//! Either way the holder's renewal, a write, waits for the transaction too (as does every
//! other lock's on the file): the guard is lost unless the transaction ends within
//! 0.9·TTL − renew interval of the last renewal sent before it.

use super::Param::{Holder, Name, Owner, Token, TtlMs, Value};
use super::{SetTemplates, Sql, Template, value_column};
use crate::TableName;
use crate::adapter::QueryError;

/// SQLite reports a missing table only in its message (result code `SQLITE_ERROR`).
pub(super) fn is_missing_table(error: &QueryError) -> bool {
    error.to_string().contains("no such table")
}

pub(super) const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The `INFO` columns of every lock (see [`super::INFO`]). `'now'` is one instant per
/// row returned (per `sqlite3_step`), so each row's times and liveness agree.
/// The value only `with_value` (a table that has the column).
fn info(t: &str, with_value: bool) -> String {
    let value = value_column(with_value);
    format!(
        "SELECT name, owner, fencing, holder, acquired_at, expires_at, {NOW_MS},
                COALESCE(expires_at > {NOW_MS}, 0), {value}
         FROM {t}"
    )
}

/// Every lock but the reserved row named `''` (never a lock: the builder refuses empty
/// names), by name.
fn list(t: &str, with_value: bool) -> String {
    format!("{} WHERE name <> '' ORDER BY name", info(t, with_value))
}

/// Two statements: SQLite adds one column per `ALTER TABLE`.
pub(super) fn add_value_columns(table: &TableName) -> String {
    let t = table.quoted('"');
    format!("ALTER TABLE {t} ADD COLUMN value TEXT; ALTER TABLE {t} ADD COLUMN value_term INTEGER")
}

/// The lock's upsert, its token growing by `step`: 1, but 2 for a reader-writer lock's
/// writer (see `rw.rs`).
pub(super) fn acquire(t: &str, step: i64) -> String {
    format!(
        "INSERT INTO {t} AS l (name, owner, fencing, holder, acquired_at, expires_at)
                 VALUES (?1, ?2, {step}, ?3, {NOW_MS}, {NOW_MS} + ?4)
                 ON CONFLICT (name) DO UPDATE
                 SET owner = excluded.owner, fencing = l.fencing + {step}, holder = excluded.holder,
                     acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                 WHERE l.expires_at IS NULL OR l.expires_at <= {NOW_MS}
                 RETURNING fencing"
    )
}

pub(super) fn sql(table: &TableName) -> Sql {
    let t = table.quoted('"');
    Sql {
        create_table: Template::new(
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    name        TEXT PRIMARY KEY NOT NULL,
                    owner       TEXT,
                    fencing     INTEGER NOT NULL,
                    holder      TEXT,
                    acquired_at INTEGER,
                    expires_at  INTEGER,
                    value       TEXT,
                    value_term  INTEGER
                )"
            ),
            &[],
        ),
        acquire: Template::new(acquire(&t, 1), &[Name, Owner, Holder, TtlMs]),
        read_token: None,
        acquire_returning: None,
        // A plain read: waiters never take the write lock. A revoked lease is held
        // until it ends, by the operator.
        probe: Template::new(
            format!(
                "SELECT CASE WHEN owner IS NULL
                             THEN 'revoked by an operator (was: '
                                  || COALESCE(holder, 'an unnamed holder') || ')'
                             ELSE holder END,
                        expires_at - {NOW_MS}, fencing
                 FROM {t}
                 WHERE name = ?1 AND expires_at > {NOW_MS}"
            ),
            &[Name],
        ),
        // Returns the database's clock when it renewed, as on PostgreSQL.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = {NOW_MS} + ?3
                 WHERE name = ?1 AND owner = ?2 AND expires_at > {NOW_MS}
                 RETURNING expires_at - ?3"
            ),
            &[Name, Owner, TtlMs],
        ),
        renew_returns_clock: true,
        release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL WHERE name = ?1 AND owner = ?2"
            ),
            &[Name, Owner],
        ),
        release_notifies: false,
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name = ?1 AND owner = ?2 AND fencing = ?3 AND expires_at > {NOW_MS}"
            ),
            &[Name, Owner, Token],
        ),
        // Times are stored as epoch milliseconds already.
        list: Template::new(list(&t, true), &[]),
        inspect: Template::new(format!("{} WHERE name = ?1", info(&t, true)), &[Name]),
        list_without_value: Template::new(list(&t, false), &[]),
        inspect_without_value: Template::new(
            format!("{} WHERE name = ?1", info(&t, false)),
            &[Name],
        ),
        // Owner-checked like a renewal, and only while the lease is live.
        proclaim: Template::new(
            format!(
                "UPDATE {t} SET value = ?3, value_term = fencing
                 WHERE name = ?1 AND owner = ?2 AND expires_at > {NOW_MS}"
            ),
            &[Name, Owner, Value],
        ),
        // A plain read, as `probe`. Not a revoked lease (no owner).
        leader: Template::new(
            format!(
                "SELECT value, holder, fencing, acquired_at, expires_at - {NOW_MS}
                 FROM {t}
                 WHERE name = ?1 AND owner IS NOT NULL AND expires_at > {NOW_MS}
                   AND value_term = fencing"
            ),
            &[Name],
        ),
        // Whoever holds it, but only the acquisition the operator saw: the token changes
        // at every acquisition, so a lock that changed hands since is left alone. The
        // lease's end stays, so nobody acquires before it (`acquire` takes a row whose
        // `expires_at` is NULL or past, whatever its owner).
        revoke: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL
                 WHERE name = ?1 AND fencing = ?2 AND owner IS NOT NULL"
            ),
            &[Name, Token],
        ),
        // The same, freeing at once, and a revoked lease too.
        force_release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name = ?1 AND fencing = ?2
                   AND (owner IS NOT NULL OR expires_at IS NOT NULL)"
            ),
            &[Name, Token],
        ),
        // The connection's settings: each of the adapter's connections has the same.
        durability: Template::new(
            "SELECT 'synchronous', CAST(synchronous AS TEXT) FROM pragma_synchronous()
             UNION ALL
             SELECT 'journal_mode', journal_mode FROM pragma_journal_mode()"
                .into(),
            &[],
        ),
        notify: None,
        channel: None,
        watch: None,
        unwatch: None,
        acquire_in_turn: None,
    }
}

/// The names of a multi-lock, bound as one JSON array of distinct names (`?1`).
pub(super) const WANTED: &str = "SELECT value FROM json_each(?1)";

/// The statements of a multi-lock (see [`super::SetTemplates`]).
pub(super) fn set_templates(table: &TableName) -> SetTemplates {
    let t = table.quoted('"');
    SetTemplates {
        // The single lock's upsert for every name, only if none of them is held. SQLite
        // runs one writer at a time and the statement is atomic, so the check and the
        // upsert see one state; the check is not correlated, so it is evaluated once,
        // before the first row is written (not again after this statement took some).
        // Missing rows are created with the others.
        acquire: Template::new(
            format!(
                "INSERT INTO {t} AS l (name, owner, fencing, holder, acquired_at, expires_at)
                 SELECT value, ?2, 1, ?3, {NOW_MS}, {NOW_MS} + ?4 FROM json_each(?1)
                 WHERE NOT EXISTS (
                     SELECT 1 FROM {t} WHERE name IN ({WANTED}) AND expires_at > {NOW_MS}
                 )
                 ON CONFLICT (name) DO UPDATE
                 SET owner = excluded.owner, fencing = l.fencing + 1, holder = excluded.holder,
                     acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
                 RETURNING name, fencing"
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        read_tokens: None,
        create_rows: None,
        // A plain read: the held name whose lease ends last (all must be free).
        probe: Template::new(
            format!(
                "SELECT CASE WHEN owner IS NULL
                             THEN 'revoked by an operator (was: '
                                  || COALESCE(holder, 'an unnamed holder') || ')'
                             ELSE holder END || ', holding ' || name,
                        expires_at - {NOW_MS}, fencing
                 FROM {t}
                 WHERE name IN ({WANTED}) AND expires_at > {NOW_MS}
                 ORDER BY 2 DESC LIMIT 1"
            ),
            &[Name],
        ),
        // One row per name renewed; the holder counts them.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = {NOW_MS} + ?3
                 WHERE name IN ({WANTED}) AND owner = ?2 AND expires_at > {NOW_MS}
                 RETURNING expires_at - ?3"
            ),
            &[Name, Owner, TtlMs],
        ),
        release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name IN ({WANTED}) AND owner = ?2"
            ),
            &[Name, Owner],
        ),
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name IN ({WANTED}) AND owner = ?2 AND expires_at > {NOW_MS}"
            ),
            &[Name, Owner],
        ),
    }
}
