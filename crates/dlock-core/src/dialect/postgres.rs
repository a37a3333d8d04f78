//! PostgreSQL. `clock_timestamp()`, not `now()`: `now()` is frozen at the start of the
//! transaction, which may be long before the statement runs.

use super::Param::{Channel, Holder, Name, Owner, Token, TtlMs};
use super::{Sql, Template};
use crate::TableName;
use crate::query::QueryError;

/// `undefined_table` and `invalid_schema_name`.
const MISSING_TABLE_CODES: [&str; 2] = ["42P01", "3F000"];

pub(super) fn is_missing_table(error: &QueryError) -> bool {
    error
        .code()
        .is_some_and(|code| MISSING_TABLE_CODES.contains(&code))
}

/// `serialization_failure` and `deadlock_detected`: possible for the upsert under
/// `SERIALIZABLE` or with concurrent inserts of one new name; the statement changed nothing.
const CONFLICT_CODES: [&str; 2] = ["40001", "40P01"];

pub(super) fn is_conflict(error: &QueryError) -> bool {
    error
        .code()
        .is_some_and(|code| CONFLICT_CODES.contains(&code))
}

pub(super) fn sql(table: &TableName) -> Sql {
    let t = table.quoted('"');
    Sql {
        create_table: Template::new(
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                name        TEXT PRIMARY KEY,
                owner       TEXT,
                fencing     BIGINT NOT NULL,
                holder      TEXT,
                acquired_at TIMESTAMPTZ,
                expires_at  TIMESTAMPTZ
            )"
            ),
            &[],
        ),
        // One statement: insert the row, or take it over when it is free or expired. The
        // fencing token grows on every takeover and is never reset. RETURNING yields a row
        // only when this statement inserted or updated, i.e. when it acquired.
        acquire: Template::new(
            format!(
                "INSERT INTO {t} AS l (name, owner, fencing, holder, acquired_at, expires_at)
             VALUES ($1, $2, 1, $3, clock_timestamp(),
                     clock_timestamp() + $4 * INTERVAL '1 millisecond')
             ON CONFLICT (name) DO UPDATE
             SET owner = EXCLUDED.owner, fencing = l.fencing + 1, holder = EXCLUDED.holder,
                 acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at
             WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp()
             RETURNING l.fencing"
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        acquired: None,
        // A plain read: waiters probe with it, because a failed ON CONFLICT DO UPDATE
        // still locks the row, which is a write.
        probe: Template::new(
            format!(
                "SELECT holder,
                    CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000 AS BIGINT)
             FROM {t}
             WHERE name = $1 AND owner IS NOT NULL AND expires_at > clock_timestamp()"
            ),
            &[Name],
        ),
        // Only a live lease is extended: an expired one may already be someone else's
        // to take, even if nobody has yet.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3 * INTERVAL '1 millisecond'
             WHERE name = $1 AND owner = $2 AND expires_at > clock_timestamp()"
            ),
            &[Name, Owner, TtlMs],
        ),
        // The notification rides on the release: waiters in other processes LISTEN on
        // the channel and attempt at once. pg_notify is delivered at commit, never early.
        release: Template::new(
            format!(
                "WITH released AS (
                     UPDATE {t} SET owner = NULL, expires_at = NULL
                     WHERE name = $1 AND owner = $2
                     RETURNING name
                 )
                 SELECT released.name FROM released, pg_notify($3, released.name)"
            ),
            &[Name, Owner, Channel],
        ),
        // FOR SHARE holds the row until the caller's transaction ends, so no takeover (an
        // UPDATE of the row) can commit before the fenced writes do.
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
             WHERE name = $1 AND owner = $2 AND fencing = $3 AND expires_at > clock_timestamp()
             FOR SHARE"
            ),
            &[Name, Owner, Token],
        ),
        channel: Some(super::channel(table)),
    }
}
