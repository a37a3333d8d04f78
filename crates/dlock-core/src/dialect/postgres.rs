//! PostgreSQL. `clock_timestamp()`, not `now()`: `now()` is frozen at the start of the
//! transaction, which may be long before the statement runs.

use super::Param::{Channel, Holder, Name, Owner, Token, TtlMs, Value};
use super::{SetTemplates, Sql, Template, channel, fnv1a, value_column};
use crate::TableName;
use crate::adapter::QueryError;

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

fn epoch_ms(column: &str) -> String {
    format!("CAST(FLOOR(EXTRACT(EPOCH FROM {column}) * 1000) AS BIGINT)")
}

/// The `INFO` columns of every lock (see [`super::INFO`]), read at one instant of the
/// database's clock; the value only `with_value` (a table that has the column).
fn info(t: &str, with_value: bool) -> String {
    format!(
        "SELECT l.name, l.owner, l.fencing, l.holder, {}, {}, {},
                CAST(CASE WHEN l.expires_at > c.now THEN 1 ELSE 0 END AS BIGINT), {}
         FROM {t} AS l, (SELECT clock_timestamp() AS now) AS c",
        epoch_ms("l.acquired_at"),
        epoch_ms("l.expires_at"),
        epoch_ms("c.now"),
        value_column(with_value),
    )
}

/// Every lock but the reserved row named `''` (never a lock: the builder refuses empty
/// names), by name.
fn list(t: &str, with_value: bool) -> String {
    format!("{} WHERE l.name <> '' ORDER BY l.name", info(t, with_value))
}

pub(super) fn add_value_columns(table: &TableName) -> String {
    let t = table.quoted('"');
    format!(
        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS value TEXT, \
         ADD COLUMN IF NOT EXISTS value_term BIGINT"
    )
}

/// The epoch of the server: its timeline, which every promotion of a standby (and every
/// point-in-time recovery) moves past any timeline the cluster had, and which any role
/// can read, as the first 8 hex digits of the current WAL file's name.
const EPOCH: &str =
    "CAST(CAST('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS bit(32)) AS BIGINT)";

/// The least token of the statement's epoch: its number less one, above bit 40, so that
/// tokens on timeline 1 are 1, 2, 3 … as they were before epochs, and a token of epoch
/// `e` is below every token of a later one for the first 2^40 acquisitions of a name in
/// `e`. Needs `epoch` in the statement's `FROM`.
pub(super) const BASE: &str = "((epoch.now - 1) << 40)";

/// The least token a take by `step` (see [`take`]) may issue in the statement's epoch:
/// [`BASE`] for a lock, one more per extra step.
fn least_token(step: i64) -> String {
    match step {
        1 => BASE.to_owned(),
        _ => format!("({BASE} + {})", step - 1),
    }
}

/// `holder` of the table's epoch row (named `''`, which no lock can be: empty names are
/// refused), for an operator who reads the table.
const EPOCH_HOLDER: &str = "dlock: the newest epoch (timeline) seen, and since when";

/// What a waiter is told holds every lock during the lock-delay (Chubby's) after a
/// failover: a promoted standby may lack acquisitions the old primary acknowledged; their
/// holders' renewals now fail, and their leases end by their local deadline, less than a
/// lease after they were sent, before the promotion. So for one lease (the acquirer's TTL)
/// after the table first sees a new epoch, nobody acquires.
pub(super) const LOCK_DELAY_HOLDER: &str = "nobody yet: the database failed over, and holders the new \
     primary never heard of may still hold their leases (lock-delay)";

/// What taking a row over sets (`l`, the row; `$2`, `$3`, `$4`: owner, holder, TTL in
/// ms): the lock's and the multi-lock's acquire take rows alike. The token grows by
/// `step`: 1, but 2 for a reader-writer lock's writer, which leaves the token in between
/// to the readers that follow it (see `rw.rs`). Needs `epoch` in the statement's `FROM`,
/// as [`BASE`].
pub(super) fn take(step: i64) -> String {
    let floor = least_token(step);
    format!(
        "owner = $2, fencing = GREATEST(l.fencing + {step}, {floor}), holder = $3,
                         acquired_at = clock_timestamp(),
                         expires_at = clock_timestamp() + $4 * INTERVAL '1 millisecond'"
    )
}

/// Whether the row is free to take: released (no lease) or its lease has ended. Not
/// `owner IS NULL`: a revoked row has no owner but keeps its lease's end.
pub(super) const FREE: &str = "(expires_at IS NULL OR expires_at <= clock_timestamp())";

/// The common table expressions that make every acquisition, of one name or of several,
/// respect failovers: `epoch` (the server's), `seen` (the newest the table recorded),
/// `sighting` (records a new one) and `gate` (`open` unless in the lock-delay). The TTL
/// is `$4`. See `acquire` in [`sql`].
pub(super) fn epoch_gate(t: &str) -> String {
    format!(
        "epoch AS (
                     SELECT {EPOCH} AS now
                 ), seen AS (
                     SELECT fencing AS epoch, acquired_at AS since FROM {t} WHERE name = ''
                 ), sighting AS (
                     INSERT INTO {t} AS l (name, owner, fencing, holder, acquired_at)
                     SELECT '', NULL, epoch.now, '{EPOCH_HOLDER}',
                            CASE WHEN EXISTS (SELECT FROM seen) THEN clock_timestamp() END
                     FROM epoch
                     WHERE NOT EXISTS (SELECT FROM seen WHERE seen.epoch >= epoch.now)
                     ON CONFLICT (name) DO UPDATE
                     SET fencing = excluded.fencing, acquired_at = excluded.acquired_at
                     WHERE l.fencing < excluded.fencing
                 ), gate AS (
                     SELECT NOT EXISTS (
                         SELECT FROM seen, epoch
                         WHERE seen.epoch < epoch.now
                            OR seen.since + $4 * INTERVAL '1 millisecond' > clock_timestamp()
                     ) AS open
                 )"
    )
}

/// The probe of the rows `which` selects (`name = $1`), with the prober's TTL as `$2`:
/// the holder (`holder_suffix` appended to it) whose lease ends last, or the lock-delay
/// after a failover. See `probe` in [`sql`].
pub(super) fn probe(t: &str, which: &str, holder_suffix: &str) -> String {
    format!(
        "SELECT holder, remaining_ms, fencing FROM (
                     SELECT CASE WHEN owner IS NULL
                                 THEN 'revoked by an operator (was: '
                                      || COALESCE(holder, 'an unnamed holder') || ')'
                                 ELSE holder END{holder_suffix} AS holder,
                            CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000
                                 AS BIGINT) AS remaining_ms,
                            fencing
                     FROM {t}
                     WHERE {which} AND expires_at > clock_timestamp()
                     UNION ALL
                     SELECT '{LOCK_DELAY_HOLDER}',
                            CAST(EXTRACT(EPOCH FROM acquired_at + $2 * INTERVAL '1 millisecond'
                                                    - clock_timestamp()) * 1000 AS BIGINT),
                            fencing
                     FROM {t}
                     WHERE name = '' AND acquired_at + $2 * INTERVAL '1 millisecond'
                                         > clock_timestamp()
                 ) AS holders
                 ORDER BY remaining_ms DESC LIMIT 1"
    )
}

/// A condition, always true, that makes the statement's transaction commit without
/// waiting for the disk (`synchronous_commit = off`, for this transaction alone; any role
/// may set it): for releases, which need not be durable. A release lost in a crash of the
/// server (or a failover) only keeps the lock held until its lease ends, as if its holder
/// had crashed; no one else can take it meanwhile, and no token changes. Any later durable
/// commit, such as the next holder's acquire, makes it durable first, since the log is
/// written in order. What it saves is the wait for the disk on every release, about as
/// long as the rest of the release.
pub(super) const NOT_DURABLE: &str =
    "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL";

/// The advisory lock through which waiters tell releasers that they wait, for the lock
/// named by `$1`: the two-key form, the first key the table's (from its channel), the
/// second the name's, by `hashtext`, the server's own hash of text, on which all of its
/// sessions agree. A waiting process holds it shared on its listening connection; a
/// release tries to take it exclusively for its transaction, which fails exactly while
/// someone holds it shared — so the release learns in its own round trip, without
/// writing, whether to send a notice.
///
/// Why no release slips between a waiter's `watch` and its look at the lock: a release
/// whose try came first holds the lock exclusively until its transaction has committed
/// and become visible, and the waiter's `watch` (a try too) fails meanwhile — the waiter
/// then naps briefly and tries again, as one that hears nothing — so the look after a
/// successful `watch` sees that release; a release whose try came after the `watch` fails
/// to take it and notifies. Keys that collide (two names of one hash, or an application's
/// own two-key advisory lock) cost a needless notice, or make waiters poll as they would
/// without listening; never a missed one.
pub(super) fn waiters_key(table: &TableName) -> String {
    let [a, b, c, d, ..] = fnv1a(&channel(table)).to_be_bytes();
    let table_key = i32::from_be_bytes([a, b, c, d]);
    format!("{table_key}, hashtext($1)")
}

/// What a release returns: whether any process waits for the lock named by `$1` (see
/// [`waiters_key`]), having sent those processes its notice on channel `$3` if so, in its
/// own transaction: no statement follows the release. A notifying transaction holds a
/// database-wide lock from before its commit until the commit is done, so every release
/// that notifies waits its turn for it; that is brief only because a release does not
/// wait for the disk to commit ([`NOT_DURABLE`]): with the wait, the releases of every
/// name in the database would queue behind each other's disk writes.
pub(super) fn notify_if_watched(waiters: &str) -> String {
    format!(
        "CAST(CASE WHEN pg_try_advisory_xact_lock({waiters}) THEN 0
                   ELSE (SELECT 1 FROM pg_notify($3, $1)) END AS BIGINT)"
    )
}

/// The advisory lock that gives one waiting process at a time the turn to attempt the
/// lock named by `$1` after a release notice: the two-key form, as [`waiters_key`], the
/// first key the other half of the table's hash. A woken waiter's acquire
/// ([`acquire`] with turns) tries to take it for its own transaction, and attempts only if
/// it did: the winner holds it until its attempt has committed, and the others' tries,
/// meanwhile, fail at once, touch no row and wait for nothing. It is gone with the
/// transaction, so no process can keep it: not one that dies, nor one that hangs.
///
/// Turns only spare the database attempts that would fail (all but one per release):
/// exclusion is the acquire's alone. A waiter that lost a turn looks at the lock by
/// itself within a poll interval unless a notice wakes it first, so a turn that goes
/// wrong (its winner's attempt fails, keys that collide) delays a waiter, never admits a
/// second holder.
pub(super) fn turns_key(table: &TableName) -> String {
    let [.., e, f, g, h] = fnv1a(&channel(table)).to_be_bytes();
    let table_key = i32::from_be_bytes([e, f, g, h]);
    format!("{table_key}, hashtext($1)")
}

/// The lock's acquire (see `acquire` in [`sql`]), its token growing by `step` (see
/// [`take`]). With `turns` (a [`turns_key`]), a woken waiter's: it attempts only if it
/// takes the lock's turn, and otherwise returns one row `(NULL)`.
pub(super) fn acquire(t: &str, step: i64, turns: Option<&str>) -> String {
    let take = take(step);
    let first = match step {
        1 => format!("GREATEST(1, {BASE})"),
        _ => format!("GREATEST({step}, {})", least_token(step)),
    };
    // The turn is decided before the row is looked at (a one-time filter, evaluated
    // before the scan under it), so a statement without it locks nothing.
    let (turn, in_turn, not_ours) = match turns {
        Some(key) => (
            format!(", turn AS (SELECT pg_try_advisory_xact_lock({key}) AS ours)"),
            " AND (SELECT ours FROM turn)",
            " UNION ALL SELECT CAST(NULL AS BIGINT) FROM turn WHERE NOT ours",
        ),
        None => (String::new(), "", ""),
    };
    format!(
        "WITH {gate}{turn}, candidate AS (
                     SELECT name FROM {t}
                     WHERE name = $1 AND {FREE} AND (SELECT open FROM gate){in_turn}
                     FOR UPDATE
                 ), taken AS (
                     UPDATE {t} AS l
                     SET {take}
                     FROM candidate AS c, epoch
                     WHERE l.name = c.name
                     RETURNING l.fencing
                 ), created AS (
                     INSERT INTO {t} (name, owner, fencing, holder, acquired_at, expires_at)
                     SELECT $1, $2, {first}, $3, clock_timestamp(),
                            clock_timestamp() + $4 * INTERVAL '1 millisecond'
                     FROM epoch
                     WHERE NOT EXISTS (SELECT FROM {t} WHERE name = $1)
                       AND (SELECT open FROM gate){in_turn}
                     ON CONFLICT (name) DO NOTHING
                     RETURNING fencing
                 )
                 SELECT fencing FROM taken UNION ALL SELECT fencing FROM created{not_ours}",
        gate = epoch_gate(t),
    )
}

pub(super) fn sql(table: &TableName) -> Sql {
    let t = table.quoted('"');
    let waiters = waiters_key(table);
    let turns = turns_key(table);
    Sql {
        create_table: Template::new(
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                name        TEXT PRIMARY KEY,
                owner       TEXT,
                fencing     BIGINT NOT NULL,
                holder      TEXT,
                acquired_at TIMESTAMPTZ,
                expires_at  TIMESTAMPTZ,
                value       TEXT,
                value_term  BIGINT
            )"
            ),
            &[],
        ),
        // One statement: take the row over when it is free or expired, or create it when
        // there is none. The fencing token grows on every takeover and is never reset; a
        // row comes back only when this statement acquired.
        //
        // Not `INSERT … ON CONFLICT DO UPDATE … WHERE`: when its WHERE fails, that still
        // locks the row, a write whose commit waits for the disk, and the waiters woken
        // by a release queue on that lock one after another. `candidate` locks the row
        // only if it is free (re-checked on the newest row version, after any concurrent
        // taker commits), so a lost race writes and locks nothing. It locks it `FOR
        // UPDATE`, which the UPDATE alone would not (it changes no key column, so it
        // takes `FOR NO KEY UPDATE`): that is what makes a takeover wait for a fenced
        // transaction's `FOR KEY SHARE`, see `fence`. The INSERT runs only if the row was
        // absent from the statement's snapshot, and a concurrent creator wins it.
        //
        // Failover: a token is at least its epoch's `BASE`, so tokens issued after a
        // promotion exceed every token issued before it, even those the promoted standby
        // never received. The row named '' records the newest epoch the table has seen
        // (`sighting` writes it only when the epoch is new, or when there is none: a
        // table that recorded none has seen no failover, and waits for none) and since
        // when. `gate` is shut when the epoch changed under this statement (whoever
        // records it, this statement or a concurrent one) or less than a lease ago: the
        // lock-delay, see `LOCK_DELAY_HOLDER`.
        acquire: Template::new(acquire(&t, 1, None), &[Name, Owner, Holder, TtlMs]),
        // After a release notice, one waiting process attempts: see `turns_key`.
        acquire_in_turn: Some(Template::new(
            acquire(&t, 1, Some(&turns)),
            &[Name, Owner, Holder, TtlMs],
        )),
        read_token: None,
        acquire_returning: None,
        // A plain read: waiters probe with it and never write while they wait. A revoked
        // lease is held until it ends, by the operator; after a failover, every lock is
        // held by the lock-delay until it ends (see `acquire`).
        probe: Template::new(probe(&t, "name = $1", ""), &[Name, TtlMs]),
        // Only a live lease is extended: an expired one may already be someone else's
        // to take, even if nobody has yet. Returns the database's clock when it renewed
        // (the new expiry less the TTL), so the holder can tell if that clock jumped.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3 * INTERVAL '1 millisecond'
             WHERE name = $1 AND owner = $2 AND expires_at > clock_timestamp()
             RETURNING CAST(FLOOR(EXTRACT(EPOCH FROM expires_at) * 1000) AS BIGINT) - $3"
            ),
            &[Name, Owner, TtlMs],
        ),
        renew_returns_clock: true,
        // Returns whether any process waits for the lock, and notifies them (see
        // `notify_if_watched`); the transaction-scoped advisory lock it takes when nobody
        // waits is gone at commit. Not durable: see `NOT_DURABLE`.
        release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name = $1 AND owner = $2 AND {NOT_DURABLE}
                 RETURNING {}",
                notify_if_watched(&waiters)
            ),
            &[Name, Owner, Channel],
        ),
        release_notifies: true,
        // FOR KEY SHARE holds the row until the caller's transaction ends, so no change
        // of ownership (a takeover or a force release, which lock the row `FOR UPDATE`)
        // can commit before the fenced writes do. It does not conflict with the renewal,
        // an UPDATE of `expires_at` alone (`FOR NO KEY UPDATE`), so a fenced transaction
        // never holds up the lease it relies on; and PostgreSQL carries key-share locks
        // over to the row version such an UPDATE writes, so they still hold a takeover
        // back after any number of renewals.
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
             WHERE name = $1 AND owner = $2 AND fencing = $3 AND expires_at > clock_timestamp()
             FOR KEY SHARE"
            ),
            &[Name, Owner, Token],
        ),
        list: Template::new(list(&t, true), &[]),
        inspect: Template::new(format!("{} WHERE l.name = $1", info(&t, true)), &[Name]),
        list_without_value: Template::new(list(&t, false), &[]),
        inspect_without_value: Template::new(
            format!("{} WHERE l.name = $1", info(&t, false)),
            &[Name],
        ),
        // Owner-checked like a renewal, and only while the lease is live: a value
        // proclaimed for a lease that ended would be read as the next term's. Changes no
        // key column, so it takes `FOR NO KEY UPDATE` and, like a renewal, does not wait
        // for fenced transactions.
        proclaim: Template::new(
            format!(
                "UPDATE {t} SET value = $3, value_term = fencing
                 WHERE name = $1 AND owner = $2 AND expires_at > clock_timestamp()"
            ),
            &[Name, Owner, Value],
        ),
        // A plain read, as `probe`. Not a revoked lease (no owner): its holder is about to
        // hear of the loss.
        leader: Template::new(
            format!(
                "SELECT value, holder, fencing, {},
                        CAST(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000 AS BIGINT)
                 FROM {t}
                 WHERE name = $1 AND owner IS NOT NULL AND expires_at > clock_timestamp()
                   AND value_term = fencing",
                epoch_ms("acquired_at")
            ),
            &[Name],
        ),
        // Whoever holds it, but only the acquisition the operator saw: the token changes
        // at every acquisition, so a lock that changed hands since is left alone. The
        // lease's end stays, so nobody acquires before it (see `FREE`). `FOR UPDATE`, as
        // in `acquire`: the change of ownership waits for fenced transactions to end.
        revoke: Template::new(
            format!(
                "WITH target AS (
                     SELECT name FROM {t}
                     WHERE name = $1 AND fencing = $2 AND owner IS NOT NULL
                     FOR UPDATE
                 )
                 UPDATE {t} AS l SET owner = NULL FROM target WHERE l.name = target.name"
            ),
            &[Name, Token],
        ),
        // The same, freeing at once, and a revoked lease too.
        force_release: Template::new(
            format!(
                "WITH target AS (
                     SELECT name FROM {t}
                     WHERE name = $1 AND fencing = $2
                       AND (owner IS NOT NULL OR expires_at IS NOT NULL)
                     FOR UPDATE
                 )
                 UPDATE {t} AS l SET owner = NULL, expires_at = NULL
                 FROM target WHERE l.name = target.name"
            ),
            &[Name, Token],
        ),
        // What the role's sessions use (`pg_settings` shows the session's values, set per
        // role or database included); standbys as any role may count them.
        durability: Template::new(
            format!(
                "SELECT name, setting FROM pg_settings
                 WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit',
                                'synchronous_standby_names')
                 UNION ALL
                 SELECT 'streaming standbys', CAST(count(*) AS TEXT) FROM pg_stat_replication
                 UNION ALL
                 SELECT 'timeline', CAST({EPOCH} AS TEXT)"
            ),
            &[],
        ),
        // A notice alone, for what notifies outside a lock's release (which notifies in
        // its own transaction, see `notify_if_watched`): a multi-lock's release (every
        // name), an operator's force release, a proclamation, the listener's heartbeat. It writes no WAL before its commit, so that commit does
        // not wait for the disk, and holds the database-wide notify lock only briefly.
        notify: Some(Template::new(
            "SELECT pg_notify($1, $2)".into(),
            &[Channel, Name],
        )),
        channel: Some(channel(table)),
        watch: Some(Template::new(
            format!(
                "SELECT CAST(CASE WHEN pg_try_advisory_lock_shared({waiters}) THEN 1 ELSE 0 END
                             AS BIGINT)"
            ),
            &[Name],
        )),
        unwatch: Some(Template::new(
            format!(
                "SELECT CAST(CASE WHEN pg_advisory_unlock_shared({waiters}) THEN 1 ELSE 0 END
                             AS BIGINT)"
            ),
            &[Name],
        )),
    }
}

/// The names of a multi-lock, bound as one JSON array of distinct names (`$1`), so that
/// the statements are the same text for any number of names.
pub(super) const WANTED: &str = "SELECT value AS name FROM json_array_elements_text($1::json)";

/// The statements of a multi-lock (see [`super::SetTemplates`]).
pub(super) fn set_templates(table: &TableName) -> SetTemplates {
    let t = table.quoted('"');
    let take = take(1);
    SetTemplates {
        // All or none, decided on the rows this statement locks itself: under READ
        // COMMITTED a subquery sees the statement's snapshot, but a row locked `FOR UPDATE`
        // is re-checked on its newest version, so counting the free rows it locked is the
        // only sound "all are free". `SKIP LOCKED`: a row another statement is changing
        // (taking, renewing, releasing, fencing it) is not waited for but left out, and
        // the count falls short, so the attempt takes nothing and waits for nobody: no
        // multi-lock can deadlock with another over overlapping names. Unless every name
        // was locked free, `taken` updates nothing. Missing rows are not created here
        // (an INSERT in the same statement could lose a race after the UPDATE took the
        // others): a `(NULL, NULL)` row says some are missing, and `create_rows` adds them
        // free before the next attempt. The epoch gate is the single lock's.
        acquire: Template::new(
            format!(
                "WITH {gate}, wanted AS (
                     {WANTED}
                 ), present AS (
                     SELECT count(*) AS n FROM {t} WHERE name IN (SELECT name FROM wanted)
                 ), candidate AS (
                     SELECT name FROM {t}
                     WHERE name IN (SELECT name FROM wanted) AND {FREE}
                       AND (SELECT open FROM gate)
                     FOR UPDATE SKIP LOCKED
                 ), taken AS (
                     UPDATE {t} AS l
                     SET {take}
                     FROM candidate AS c, epoch
                     WHERE l.name = c.name
                       AND (SELECT count(*) FROM candidate) = (SELECT count(*) FROM wanted)
                     RETURNING l.name, l.fencing
                 )
                 SELECT name, fencing FROM taken
                 UNION ALL
                 SELECT NULL, NULL FROM present WHERE n < (SELECT count(*) FROM wanted)",
                gate = epoch_gate(&t),
            ),
            &[Name, Owner, Holder, TtlMs],
        ),
        read_tokens: None,
        // Free rows (no owner, no lease, token 0: the first acquisition makes it 1), in
        // name order, so that concurrent creators of overlapping sets wait for each other
        // in one order. Nothing here is held, so nobody can see a partial acquisition.
        create_rows: Some(Template::new(
            format!(
                "INSERT INTO {t} (name, owner, fencing)
                 SELECT name, NULL, 0 FROM ({WANTED}) AS wanted ORDER BY name
                 ON CONFLICT (name) DO NOTHING"
            ),
            &[Name],
        )),
        // The single lock's probe over the set: the held name whose lease ends last
        // (all must be free), or the lock-delay.
        probe: Template::new(
            probe(
                &t,
                &format!("name IN ({WANTED})"),
                " || ', holding ' || name",
            ),
            &[Name, TtlMs],
        ),
        // One row per name renewed; the holder counts them.
        renew: Template::new(
            format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3 * INTERVAL '1 millisecond'
                 WHERE name IN ({WANTED}) AND owner = $2 AND expires_at > clock_timestamp()
                 RETURNING CAST(FLOOR(EXTRACT(EPOCH FROM expires_at) * 1000) AS BIGINT) - $3"
            ),
            &[Name, Owner, TtlMs],
        ),
        // One row per name freed, each saying "watched" (1): a multi-lock's release
        // notifies every name, without asking whether anyone waits (see `waiters_key`).
        // Not durable, as a lock's.
        release: Template::new(
            format!(
                "UPDATE {t} SET owner = NULL, expires_at = NULL
                 WHERE name IN ({WANTED}) AND owner = $2 AND {NOT_DURABLE}
                 RETURNING CAST(1 AS BIGINT)"
            ),
            &[Name, Owner],
        ),
        // The owner id is the acquisition's, on every row of the set; the rows' tokens
        // are its own.
        fence: Template::new(
            format!(
                "SELECT fencing FROM {t}
                 WHERE name IN ({WANTED}) AND owner = $2 AND expires_at > clock_timestamp()
                 ORDER BY name
                 FOR KEY SHARE"
            ),
            &[Name, Owner],
        ),
    }
}
