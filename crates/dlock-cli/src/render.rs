//! What the commands print: aligned text for people, JSON for scripts. Relative times
//! are measured from the database's clock (`LockInfo::read_at`), never this machine's.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use dlock_seaorm::{
    Dialect, Durability, ForceRelease, Leader, LockInfo, LockState, SettingEffect, TableName,
};
use serde_json::{Value, json};

use crate::select::Selection;
use crate::terminal;

/// How `list` prints.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub(crate) json: bool,
    /// Names and holders whole rather than cut at [`NARROW`] characters.
    pub(crate) wide: bool,
}

/// The widest name or holder `list` shows without --wide: a 2,000-byte name would
/// otherwise push every other column off the screen.
const NARROW: usize = 40;

pub(crate) fn list(
    locks: &[LockInfo],
    selection: &Selection,
    table: &TableName,
    style: Style,
) -> String {
    let selected: Vec<&LockInfo> = locks.iter().filter(|lock| selection.admits(lock)).collect();
    if style.json {
        return json_text(&Value::Array(selected.into_iter().map(lock_json).collect()));
    }
    if locks.is_empty() {
        return format!("no locks in table {table}");
    }
    if selected.is_empty() {
        return format!(
            "no lock in table {table} is selected ({} in all)",
            count(locks.len())
        );
    }
    let mut cut_short = 0;
    let mut column = |text: String| {
        if style.wide {
            return text;
        }
        let (text, was_cut) = terminal::cut(text, NARROW);
        cut_short += usize::from(was_cut);
        text
    };
    let header = ["NAME", "STATE", "TOKEN", "HOLDER", "ACQUIRED", "LEASE"].map(String::from);
    let rows: Vec<[String; 6]> = selected
        .iter()
        .map(|lock| {
            [
                column(terminal::shown(&lock.name)),
                lock.state.to_string(),
                lock.fencing_token.to_string(),
                column(holder_or_dash(lock.holder.as_deref())),
                lock.acquired_at
                    .map_or_else(|| "-".into(), |at| format!("{} ago", span(lock.age_of(at)))),
                lease(lock),
            ]
        })
        .collect();
    // Elections' values, in a column of their own only where there are any: a table of
    // plain locks lists as it always did.
    let values: Option<Vec<String>> = selected.iter().any(|lock| lock.value.is_some()).then(|| {
        selected
            .iter()
            .map(|lock| column(holder_or_dash(lock.value.as_deref())))
            .collect()
    });
    let has_values = values.is_some();
    let mut out = match values {
        None => aligned(&header, &rows),
        Some(values) => {
            let header = with_value(header, "VALUE".into());
            let rows: Vec<[String; 7]> = rows
                .into_iter()
                .zip(values)
                .map(|(row, value)| with_value(row, value))
                .collect();
            aligned(&header, &rows)
        }
    };
    out.push('\n');
    out.push_str(&summary(locks, &selected, selection));
    if cut_short > 0 {
        let (what, them) = match (cut_short == 1, has_values) {
            (true, false) => ("name or holder", "it"),
            (false, false) => ("names or holders", "them"),
            (true, true) => ("name, holder or value", "it"),
            (false, true) => ("names, holders or values", "them"),
        };
        let _ = write!(
            out,
            "; {cut_short} {what} cut short, --wide shows {them} whole"
        );
    }
    out
}

/// A `list` row (or its header) with the value after the holder.
fn with_value(row: [String; 6], value: String) -> [String; 7] {
    let [name, state, token, holder, acquired, lease] = row;
    [name, state, token, holder, value, acquired, lease]
}

/// "851 locks: 1 held, 2 expired, 848 free", or "3 of 851 locks shown: 3 held".
fn summary(locks: &[LockInfo], selected: &[&LockInfo], selection: &Selection) -> String {
    let states = [
        LockState::Held,
        LockState::Expired,
        LockState::Revoked,
        LockState::Free,
    ];
    let by_state: Vec<String> = states
        .iter()
        .filter_map(|state| {
            let n = selected.iter().filter(|lock| lock.state == *state).count();
            (n > 0).then(|| format!("{n} {state}"))
        })
        .collect();
    let by_state = by_state.join(", ");
    if selection.is_everything() {
        format!("{}: {by_state}", count(locks.len()))
    } else {
        format!(
            "{} of {} shown: {by_state}",
            selected.len(),
            count(locks.len())
        )
    }
}

/// "1 lock", "851 locks".
fn count(n: usize) -> String {
    if n == 1 {
        "1 lock".into()
    } else {
        format!("{n} locks")
    }
}

pub(crate) fn holder_or_dash(holder: Option<&str>) -> String {
    holder.map_or_else(|| "-".into(), terminal::shown)
}

/// The SQL that creates the lock table (or its `companion`), as `init --print-sql`
/// prints it: ready to run, preceded by the privileges dlock needs as SQL comments.
pub(crate) fn create_table_sql(
    dialect: Dialect,
    table: &TableName,
    companion: bool,
    json: bool,
) -> String {
    let statement = dialect.create_table_sql(table);
    let privileges = privileges(dialect, companion);
    if json {
        return json_text(&json!({
            "dialect": dialect_id(dialect),
            "table": table.to_string(),
            "sql": statement,
            "privileges": privileges,
        }));
    }
    // The statement as the core's source indents it, re-indented for a reader.
    let mut lines = statement.lines().map(str::trim);
    let mut sql = lines.next().unwrap_or_default().to_owned();
    for line in lines {
        let indent = if line.starts_with(')') { "" } else { "    " };
        let _ = write!(sql, "\n{indent}{line}");
    }
    let grants = match dialect {
        Dialect::Sqlite => {
            "-- SQLite has no privileges: the process needs to read and write the database\n\
             -- file and to create files in its directory (for the journal)."
                .to_owned()
        }
        _ => {
            let (quote, role) = if dialect == Dialect::Mysql {
                ('`', "'app'@'%'")
            } else {
                ('"', "app")
            };
            let quoted = match table.schema() {
                Some(schema) => format!("{quote}{schema}{quote}.{quote}{}{quote}", table.table()),
                None => format!("{quote}{}{quote}", table.table()),
            };
            let listen = if dialect == Dialect::Postgres {
                "-- LISTEN and NOTIFY, which wake waiters, need no privilege.\n"
            } else {
                ""
            };
            let (who, needed) = if companion {
                (
                    "Semaphores and reader-writer locks",
                    "SELECT, INSERT, UPDATE and DELETE",
                )
            } else {
                (
                    "dlock's locks and the dlock command",
                    "SELECT, INSERT and UPDATE",
                )
            };
            format!(
                "-- {who} need {needed} on the\n\
                 -- table, nothing else: with the table created here, no right to create tables.\n\
                 {listen}\
                 -- For an application's role, here {role}:\n\
                 --   GRANT {} ON {quoted} TO {role};",
                privileges.join(", ")
            )
        }
    };
    let (what, init) = if companion {
        ("companion table", "dlock init --companion")
    } else {
        ("lock table", "dlock init")
    };
    format!("-- The dlock {what} {table} for {dialect}: what `{init}` runs.\n{grants}\n{sql};")
}

fn dialect_id(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => "postgres",
        Dialect::Mysql => "mysql",
        _ => "sqlite",
    }
}

/// The privileges dlock needs on the lock table; on the companion table also DELETE,
/// since a reader of a reader-writer lock deletes its row when it leaves.
fn privileges(dialect: Dialect, companion: bool) -> Vec<&'static str> {
    match dialect {
        Dialect::Postgres | Dialect::Mysql if companion => {
            vec!["SELECT", "INSERT", "UPDATE", "DELETE"]
        }
        Dialect::Postgres | Dialect::Mysql => vec!["SELECT", "INSERT", "UPDATE"],
        _ => Vec::new(),
    }
}

/// `value` as JSON text, exact but with every non-printing character written as a
/// `\uXXXX` escape, so that JSON on a terminal is as safe as text. (serde_json escapes
/// the C0 controls only; DEL, C1 controls, bidirectional overrides would go out raw.)
/// Outside strings JSON is printable ASCII, so this changes strings only.
pub(crate) fn json_text(value: &Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len());
    let mut units = [0_u16; 2];
    for (index, c) in raw.chars().enumerate() {
        if terminal::prints(c, index == 0) {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

pub(crate) fn inspect(lock: &LockInfo, json: bool) -> String {
    if json {
        return json_text(&lock_json(lock));
    }
    let when = |at: Option<SystemTime>| {
        at.map_or_else(
            || "-".into(),
            |at| format!("{} ({})", timestamp(at), relative(lock.read_at, at)),
        )
    };
    let fields = [
        ("name", terminal::shown(&lock.name)),
        ("state", lock.state.to_string()),
        ("fencing token", lock.fencing_token.to_string()),
        ("holder", holder_or_dash(lock.holder.as_deref())),
        ("value", holder_or_dash(lock.value.as_deref())),
        ("owner id", holder_or_dash(lock.owner_id.as_deref())),
        ("acquired at", when(lock.acquired_at)),
        ("expires at", when(lock.expires_at)),
        ("lease", lease(lock)),
    ];
    let width = fields.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in fields {
        let _ = writeln!(out, "{:<width$} {value}", format!("{key}:"));
    }
    out.trim_end().to_owned()
}

pub(crate) fn released(outcome: &ForceRelease, json: bool) -> String {
    let (result, lock) = match outcome {
        ForceRelease::Revoked(was) => ("revoked", was),
        ForceRelease::AlreadyRevoked(now) => ("already_revoked", now),
        ForceRelease::Freed(was) => ("released", was),
        ForceRelease::AlreadyFree(now) => ("already_free", now),
    };
    if json {
        return json_text(&json!({ "result": result, "lock": lock_json(lock) }));
    }
    let was_held = |was: &LockInfo| {
        if was.state == LockState::Expired {
            "expired, last held"
        } else {
            "held"
        }
    };
    let holder = |lock: &LockInfo| {
        lock.holder
            .as_deref()
            .map_or_else(|| "an unnamed holder".into(), terminal::shown)
    };
    match outcome {
        ForceRelease::Revoked(was) => format!(
            "revoked lock {:?} (fencing token {}, {} by {}); the holder finds out at its \
             next renewal, and the lock is free {}",
            was.name,
            was.fencing_token,
            was_held(was),
            holder(was),
            frees(was),
        ),
        ForceRelease::AlreadyRevoked(now) => format!(
            "lock {:?} is already revoked (fencing token {}, was held by {}); it is free {}",
            now.name,
            now.fencing_token,
            holder(now),
            frees(now),
        ),
        ForceRelease::Freed(was) if was.state == LockState::Revoked => format!(
            "released lock {:?} (fencing token {}, revoked from {}) at once",
            was.name,
            was.fencing_token,
            holder(was),
        ),
        ForceRelease::Freed(was) => format!(
            "released lock {:?} (fencing token {}, {} by {}); the holder finds out at its \
             next renewal",
            was.name,
            was.fencing_token,
            was_held(was),
            holder(was),
        ),
        ForceRelease::AlreadyFree(now) => format!(
            "lock {:?} is already free (fencing token {}); nothing to do",
            now.name, now.fencing_token
        ),
    }
}

/// When a revoked lock frees: "in 12 s", or "now" if its lease has ended already.
fn frees(lock: &LockInfo) -> String {
    match lock.remaining_lease() {
        Some(left) if !left.is_zero() => format!("in {}", span(left)),
        _ => "now".into(),
    }
}

pub(crate) fn durability(durability: &Durability, json: bool) -> String {
    if !json {
        return durability.to_string();
    }
    let settings: Vec<Value> = durability
        .settings
        .iter()
        .map(|setting| {
            let (effect, detail) = match &setting.effect {
                SettingEffect::Caveat(text) => ("caveat", Some(text)),
                SettingEffect::Breaks(text) => ("breaks", Some(text)),
                _ => ("keeps", None),
            };
            json!({
                "name": setting.name,
                "value": setting.value,
                "effect": effect,
                "detail": detail,
            })
        })
        .collect();
    json_text(&json!({
        "dialect": durability.dialect.name(),
        "keeps_guarantees": durability.keeps_guarantees(),
        "settings": settings,
    }))
}

pub(crate) fn initialised(table: &TableName, json: bool) -> String {
    if json {
        json_text(&json!({ "table": table.to_string(), "ready": true }))
    } else {
        format!("lock table {table} is ready")
    }
}

pub(crate) fn lock_json(lock: &LockInfo) -> Value {
    let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    json!({
        "name": lock.name,
        "state": lock.state.as_str(),
        "fencing_token": lock.fencing_token.get(),
        "holder": lock.holder,
        "owner_id": lock.owner_id,
        "acquired_at": lock.acquired_at.map(timestamp),
        "expires_at": lock.expires_at.map(timestamp),
        "remaining_lease_ms": lock.remaining_lease().map(millis),
        "read_at": timestamp(lock.read_at),
        "value": lock.value,
    })
}

/// `dlock leader`: "NAME is led by VALUE (holder …, term N, since …, lease ends in …)",
/// or "nobody leads NAME".
pub(crate) fn leader(name: &str, leader: Option<&Leader>, json: bool) -> String {
    if json {
        let leader = leader.map(|leader| {
            json!({
                "value": leader.value,
                "holder": leader.holder,
                "term": leader.term.get(),
                "since": timestamp(leader.since),
                "lease_ends_in_ms": u64::try_from(leader.lease_ends_in.as_millis()).unwrap_or(u64::MAX),
            })
        });
        return json_text(&json!({ "name": name, "leader": leader }));
    }
    let name = terminal::shown(name);
    match leader {
        None => format!("nobody leads {name}"),
        Some(leader) => format!(
            "{name} is led by {} (holder {}, term {}, since {}, lease ends in {})",
            terminal::shown(&leader.value),
            terminal::shown(&leader.holder),
            leader.term,
            timestamp(leader.since),
            span(leader.lease_ends_in),
        ),
    }
}

/// "expires in 12 s", "expired 3 min ago", "revoked, free in 12 s" or "free".
pub(crate) fn lease(lock: &LockInfo) -> String {
    match (lock.state, lock.expires_at) {
        (LockState::Free, _) | (_, None) => "free".into(),
        (LockState::Revoked, Some(_)) => format!("revoked, free {}", frees(lock)),
        (_, Some(at)) => match at.duration_since(lock.read_at) {
            Ok(ahead) => format!("expires in {}", span(ahead)),
            Err(_) => format!("expired {} ago", span(lock.age_of(at))),
        },
    }
}

/// `at` relative to `now`: "in 12 s" or "3 min ago".
fn relative(now: SystemTime, at: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(ahead) if !ahead.is_zero() => format!("in {}", span(ahead)),
        _ => format!("{} ago", span(now.duration_since(at).unwrap_or_default())),
    }
}

/// A duration at the precision a person needs: "850 ms", "12 s", "3 min", "2 h", "4 d".
fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0 => format!("{} ms", duration.as_millis()),
        1..60 => format!("{secs} s"),
        60..3_600 => format!("{} min", secs / 60),
        3_600..86_400 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Columns padded to their widest cell, two spaces apart.
pub(crate) fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in std::iter::once(header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(Duration::from_millis(850)), "850 ms");
        assert_eq!(span(Duration::from_millis(12_400)), "12 s");
        assert_eq!(span(Duration::from_secs(200)), "3 min");
        assert_eq!(span(Duration::from_secs(7_300)), "2 h");
        assert_eq!(span(Duration::from_secs(4 * 86_400 + 5)), "4 d");
    }

    #[test]
    fn relative_times_point_both_ways() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(relative(now, now + Duration::from_secs(12)), "in 12 s");
        assert_eq!(relative(now, now - Duration::from_secs(180)), "3 min ago");
    }

    #[test]
    fn columns_line_up_whatever_the_characters() {
        let header = ["A".to_owned(), "B".to_owned()];
        let rows = [
            ["verrou-é".to_owned(), "1".to_owned()],
            ["x".to_owned(), "22".to_owned()],
        ];
        assert_eq!(
            aligned(&header, &rows),
            "A         B\nverrou-é  1\nx         22"
        );
    }
}
