//! MySQL 8 and MariaDB 10.5+.
//!
//! **Key.** InnoDB keys hold at most 3,072 bytes (768 `utf8mb4` characters), too few for
//! the names we promise, so the table is keyed on `name_hash`, the SHA-256 of the name
//! computed in SQL (`UNHEX(SHA2(…, 256))`, 32 bytes), and the name itself is kept in a
//! `TEXT` column for operators. The name is converted to `utf8mb4` before hashing, so a
//! client whose connection uses another character set still hashes the same bytes. (A
//! generated `name_hash` column would avoid binding the name twice, but MariaDB refuses
//! a primary key on a generated column, and some MySQL services require a primary key.)
//!
//! **Clock.** `UTC_TIMESTAMP(6)` into `DATETIME(6)` columns: microseconds (plain `NOW()`
//! has whole seconds) and UTC whatever the session's `time_zone`, so sessions in different
//! zones, and daylight-saving changes, cannot disagree about an expiry. Like `NOW()`, it is
//! evaluated once per statement, so one statement compares and stores one instant;
//! `SYSDATE()` would not be, and it is unsafe for statement-based replication.
//!
//! **Acquire.** `INSERT … ON DUPLICATE KEY UPDATE` has no `RETURNING`, so acquiring takes
//! the smallest correct sequence: the upsert, then — unless it affected no row — an
//! owner-checked read of the token. Owner ids are unique per acquisition, so that read
//! finds the row only if this upsert took it, on any connection, whether the driver
//! reports found rows (`CLIENT_FOUND_ROWS`, as sqlx does: 1 for an untouched row) or
//! changed rows (0).
//!
//! The upsert gives the same result whatever order the server evaluates its assignments
//! in. MySQL and MariaDB's default evaluates them left to right, each seeing the columns
//! already assigned; MariaDB's `SIMULTANEOUS_ASSIGNMENT` mode (part of `sql_mode=ORACLE`)
//! makes every assignment read the old row. So every assignment is conditioned on the
//! *old* row alone — free or expired, `expires_at IS NULL OR expires_at <= now` — and
//! `expires_at`, the only column that condition reads, is assigned last. Rejected
//! alternatives: pinning the mode with MariaDB's `SET STATEMENT sql_mode = … FOR` (MySQL
//! has no such statement, and a mode added to a future default would break it again); an
//! `UPDATE … WHERE free-or-expired` followed by `INSERT IGNORE` for a missing row (two
//! statements, so a second round trip on every uncontended acquire, and `INSERT IGNORE`
//! turns every other error into a warning).
//!
//! **Fence.** `LOCK IN SHARE MODE` (understood by MariaDB and MySQL alike; MySQL 8 also
//! says `FOR SHARE`) is a locking read of the latest committed row, whatever the
//! transaction's isolation level, and holds a shared lock until the transaction ends; the
//! takeover upsert needs an exclusive lock, so it waits for the commit. So does the
//! holder's renewal: while a fenced transaction is open, renewals wait, and the guard is
//! lost if it does not commit within 0.9·TTL − renew interval of the last renewal sent
//! before it (see the adapters' `fence` docs).

use super::Param::{Holder, Name, Owner, Token, TtlMs, Value};
use super::{SetTemplates, Sql, Template, value_column};
use crate::TableName;
use crate::adapter::QueryError;

/// `ER_NO_SUCH_TABLE` as SQLSTATE (what sqlx reports) and as MySQL's error number.
const MISSING_TABLE_CODES: [&str; 2] = ["42S02", "1146"];

/// `ER_LOCK_DEADLOCK`: concurrent first inserts of one name can deadlock on InnoDB's
/// duplicate-key locks; the victim's statement is rolled back and changed nothing.
const CONFLICT_CODES: [&str; 2] = ["40001", "1213"];

pub(super) fn is_missing_table(error: &QueryError) -> bool {
    error
        .code()
        .is_some_and(|code| MISSING_TABLE_CODES.contains(&code))
}

pub(super) fn is_conflict(error: &QueryError) -> bool {
    error
        .code()
        .is_some_and(|code| CONFLICT_CODES.contains(&code))
}

/// The key of the name bound at the placeholder.
pub(super) const KEY: &str = "UNHEX(SHA2(CONVERT(? USING utf8mb4), 256))";
pub(super) const NOW: &str = "UTC_TIMESTAMP(6)";
/// Whether the row is free to take: released (no lease) or its lease has ended. Not
/// `owner IS NULL`: a revoked row has no owner but keeps its lease's end.
const FREE: &str = "(expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(6))";

/// The `INFO` columns of every lock (see [`super::INFO`]). `UTC_TIMESTAMP(6)` is one
/// instant for the whole statement, and the `DATETIME(6)` columns hold UTC, so the epoch
/// is `1970-01-01 00:00:00` with no zone conversion.
/// The value only `with_value` (a table that has the column).
fn info(t: &str, with_value: bool) -> String {
    format!(
        "SELECT name, owner, fencing, holder, {}, {}, {},
                CAST(COALESCE(expires_at > {NOW}, 0) AS SIGNED), {}
         FROM {t}",
        epoch_ms("acquired_at"),
        epoch_ms("expires_at"),
        epoch_ms(NOW),
        value_column(with_value),
    )
}

fn epoch_ms(column: &str) -> String {
    format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) DIV 1000 AS SIGNED)")
}

/// Every lock but the reserved row named `''` (never a lock: the builder refuses empty
/// names), by name.
fn list(t: &str, with_value: bool) -> String {
    format!("{} WHERE name <> '' ORDER BY name", info(t, with_value))
}

pub(super) fn add_value_columns(table: &TableName) -> String {
    let t = table.quoted('`');
    format!("ALTER TABLE {t} ADD COLUMN value TEXT, ADD COLUMN value_term BIGINT")
}

/// The upsert that takes the lock if it is free (see `sql`), followed by `returning`;
/// the token grows by `step`: 1, but 2 for a reader-writer lock's writer (see `rw.rs`).
pub(super) fn acquire(t: &str, step: i64, returning: &str) -> String {
    format!(
        "INSERT INTO {t} (name_hash, name, owner, fencing, holder, acquired_at, expires_at)
                 VALUES ({KEY}, CONVERT(? USING utf8mb4), ?, {step}, ?, {NOW},
                         {NOW} + INTERVAL (? * 1000) MICROSECOND)
                 ON DUPLICATE KEY UPDATE
                     owner = IF({FREE}, VALUES(owner), owner),
                     fencing = IF({FREE}, fencing + {step}, fencing),
                     holder = IF({FREE}, VALUES(holder), holder),
                     acquired_at = IF({FREE}, VALUES(acquired_at), acquired_at),
                     expires_at = IF({FREE}, VALUES(expires_at), expires_at){returning}"
    )
}

pub(super) const ACQUIRE_PARAMS: &[super::Param] = &[Name, Name, Owner, Holder, TtlMs];

pub(super) fn sql(table: &TableName) -> Sql {
    let t = table.quoted('`');
    Sql {
        create_table: Template::new(
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    name_hash   BINARY(32) NOT NULL PRIMARY KEY,
                    name        TEXT NOT NULL,
                    owner       VARCHAR(64),
                    fencing     BIGINT NOT NULL,
                    holder      TEXT,
                    acquired_at DATETIME(6),
                    expires_at  DATETIME(6),
                    value       TEXT,
                    value_term  BIGINT
                ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
            ),
            &[],
        ),
        acquire: Template::new(acquire(&t, 1, ""), ACQUIRE_PARAMS),
        // MariaDB 10.5+ returns the row from the upsert: taken or not, it names its owner.
        acquire_returning: Some(Template::new(
            acquire(&t, 1, " RETURNING owner, fencing"),
            ACQUIRE_PARAMS,
        )),
        read_token: Some(Template::new(
            format!("SELECT fencing FROM {t} WHERE name_hash = {KEY} AND owner = ?"),
            &[Name, Owner],
        )),
        // A plain (non-locking) read, so waiters never write or lock. A revoked lease
        // is held until it ends, by the operator.
        probe: Template::new(
            format!(
                "SELECT IF(owner IS NULL,
                           CONCAT('revoked by an operator (was: ',
                                  COALESCE(holder, 'an unnamed holder'), ')'),
                           holder),
                        CAST(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) DIV 1000 AS SIGNED),
                        fencing
                 FROM {t}
                 WHERE name_hash = {KEY} AND expires_at > {NOW}"
            ),
            &[Name],
        ),
        // Only a live lease is extended: an expired one may already be someone else's.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND
                 WHERE name_hash = {KEY} AND owner = ? AND expires_at > {NOW}"
            ),
            &[TtlMs, Name, Owner],
        ),
        renew_returns_clock: false,
        release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name_hash = {KEY} AND owner = ?"
            ),
            &[Name, Owner],
        ),
        release_notifies: false,
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name_hash = {KEY} AND owner = ? AND fencing = ? AND expires_at > {NOW}
                 LOCK IN SHARE MODE"
            ),
            &[Name, Owner, Token],
        ),
        list: Template::new(list(&t, true), &[]),
        inspect: Template::new(
            format!("{} WHERE name_hash = {KEY}", info(&t, true)),
            &[Name],
        ),
        list_without_value: Template::new(list(&t, false), &[]),
        inspect_without_value: Template::new(
            format!("{} WHERE name_hash = {KEY}", info(&t, false)),
            &[Name],
        ),
        // Owner-checked like a renewal, and only while the lease is live. An unchanged
        // value is 0 affected rows to a driver that counts changed rows; `leader` then
        // tells.
        proclaim: Template::new(
            format!(
                "UPDATE {t} SET value = ?, value_term = fencing
                 WHERE name_hash = {KEY} AND owner = ? AND expires_at > {NOW}"
            ),
            &[Value, Name, Owner],
        ),
        // A plain read, as `probe`. Not a revoked lease (no owner).
        leader: Template::new(
            format!(
                "SELECT value, holder, fencing, {},
                        CAST(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) DIV 1000 AS SIGNED)
                 FROM {t}
                 WHERE name_hash = {KEY} AND owner IS NOT NULL AND expires_at > {NOW}
                   AND value_term = fencing",
                epoch_ms("acquired_at")
            ),
            &[Name],
        ),
        // Whoever holds it, but only the acquisition the operator saw: the token changes
        // at every acquisition, so a lock that changed hands since is left alone. The
        // lease's end stays, so nobody acquires before it (see `FREE`).
        revoke: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL
                 WHERE name_hash = {KEY} AND fencing = ? AND owner IS NOT NULL"
            ),
            &[Name, Token],
        ),
        // The same, freeing at once, and a revoked lease too.
        force_release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name_hash = {KEY} AND fencing = ?
                   AND (owner IS NOT NULL OR expires_at IS NOT NULL)"
            ),
            &[Name, Token],
        ),
        // Only the variables this server has: MySQL has no `wsrep_on`, MariaDB no
        // Group Replication.
        durability: Template::new(
            "SHOW VARIABLES WHERE Variable_name IN ('innodb_flush_log_at_trx_commit',
                 'sync_binlog', 'log_bin', 'wsrep_on', 'group_replication_single_primary_mode',
                 'rpl_semi_sync_master_enabled', 'rpl_semi_sync_source_enabled')"
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

/// The names of a multi-lock, bound as one JSON array of distinct names in name order,
/// joined to their rows by key: `JSON_TABLE` first (`STRAIGHT_JOIN`), so that each row
/// is found by its primary key and locked in name order, never by a scan of the table
/// (an UPDATE locks every row it scans).
pub(super) fn wanted(t: &str) -> String {
    format!(
        "JSON_TABLE(?, '$[*]' COLUMNS (n TEXT PATH '$')) AS w
         STRAIGHT_JOIN {t} AS l ON l.name_hash = UNHEX(SHA2(CONVERT(w.n USING utf8mb4), 256))"
    )
}

/// Fails the whole statement (`ER_SUBQUERY_NO_1_ROW`, 1242, whatever the `sql_mode`):
/// correlated with the row, so that it is evaluated only for a row that is not free.
const NOT_ALL_FREE: &str = "(SELECT l.fencing UNION ALL SELECT l.fencing)";

/// `ER_SUBQUERY_NO_1_ROW` as error number and as SQLSTATE: raised by [`NOT_ALL_FREE`].
const NOT_ALL_FREE_CODES: [&str; 2] = ["1242", "21000"];

pub(super) fn is_not_all_free(error: &QueryError) -> bool {
    error
        .code()
        .is_some_and(|code| NOT_ALL_FREE_CODES.contains(&code))
}

/// The statements of a multi-lock (see [`super::SetTemplates`]).
pub(super) fn set_templates(table: &TableName) -> SetTemplates {
    let t = table.quoted('`');
    let wanted = wanted(&t);
    // The lock's `FREE`, on the joined row.
    let free = "(l.expires_at IS NULL OR l.expires_at <= UTC_TIMESTAMP(6))";
    SetTemplates {
        // All or none in one statement, without `RETURNING`: the UPDATE locks each row
        // (newest version) in name order and checks it there; a row that is not free
        // makes the statement fail ([`NOT_ALL_FREE`]), and InnoDB rolls a failed
        // statement back whole, rows already changed included. So it either takes every
        // row it found or changes none, and the check reads only the old row, in the
        // join condition, so the order of the assignments (unspecified for a multi-table
        // UPDATE) does not matter. Rows locked in one order: two multi-locks over
        // overlapping names wait for each other at most, never in a cycle (and a deadlock
        // reported anyway is retried as a conflict). It cannot create missing rows:
        // `create_rows` does first, and fewer affected rows than names say some are
        // missing.
        acquire: Template::new(
            format!(
                "UPDATE {wanted} AND IF({free}, TRUE, {NOT_ALL_FREE})
                 SET l.owner = ?, l.fencing = l.fencing + 1, l.holder = ?,
                     l.acquired_at = {NOW}, l.expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND"
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        read_tokens: Some(Template::new(
            format!("SELECT l.name, l.fencing FROM {wanted} WHERE l.owner = ?"),
            &[Name, Owner],
        )),
        // Free rows (no owner, no lease, token 0: the first acquisition makes it 1), in
        // name order. The no-op update on a duplicate rather than `INSERT IGNORE`, which
        // would turn every other error into a warning.
        create_rows: Some(Template::new(
            format!(
                "INSERT INTO {t} (name_hash, name, owner, fencing)
                 SELECT UNHEX(SHA2(CONVERT(w.n USING utf8mb4), 256)), CONVERT(w.n USING utf8mb4),
                        NULL, 0
                 FROM JSON_TABLE(?, '$[*]' COLUMNS (n TEXT PATH '$')) AS w ORDER BY w.n
                 ON DUPLICATE KEY UPDATE fencing = fencing"
            ),
            &[Name],
        )),
        // A plain read: the held name whose lease ends last (all must be free).
        probe: Template::new(
            format!(
                "SELECT CONCAT(IF(l.owner IS NULL,
                                  CONCAT('revoked by an operator (was: ',
                                         COALESCE(l.holder, 'an unnamed holder'), ')'),
                                  l.holder), ', holding ', l.name),
                        CAST(TIMESTAMPDIFF(MICROSECOND, {NOW}, l.expires_at) DIV 1000 AS SIGNED),
                        l.fencing
                 FROM {wanted}
                 WHERE l.expires_at > {NOW}
                 ORDER BY 2 DESC LIMIT 1"
            ),
            &[Name],
        ),
        // Affects one row per name renewed; the holder counts them.
        renew: Template::new(
            format!(
                "UPDATE {wanted} SET l.expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND
                 WHERE l.owner = ? AND l.expires_at > {NOW}"
            ),
            &[Name, TtlMs, Owner],
        ),
        release: Template::new(
            format!("UPDATE {wanted} SET l.owner = NULL, l.expires_at = NULL WHERE l.owner = ?"),
            &[Name, Owner],
        ),
        fence: Template::new(
            format!(
                "SELECT l.fencing FROM {wanted}
                 WHERE l.owner = ? AND l.expires_at > {NOW}
                 LOCK IN SHARE MODE"
            ),
            &[Name, Owner],
        ),
    }
}
