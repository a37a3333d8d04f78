//! What the commands print: aligned text for people, JSON for scripts. Relative times
//! are measured from the database's clock (`LockInfo::read_at`), never this machine's.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use dlock_seaorm::{ForceRelease, LockInfo, LockState, TableName};
use serde_json::{Value, json};

pub(crate) fn list(locks: &[LockInfo], table: &TableName, json: bool) -> String {
    if json {
        return Value::Array(locks.iter().map(lock_json).collect()).to_string();
    }
    if locks.is_empty() {
        return format!("no locks in table {table}");
    }
    let header = ["NAME", "STATE", "TOKEN", "HOLDER", "ACQUIRED", "LEASE"].map(String::from);
    let rows: Vec<[String; 6]> = locks
        .iter()
        .map(|lock| {
            [
                lock.name.clone(),
                lock.state.to_string(),
                lock.fencing_token.to_string(),
                lock.holder.clone().unwrap_or_else(|| "-".into()),
                lock.acquired_at
                    .map_or_else(|| "-".into(), |at| format!("{} ago", span(lock.age_of(at)))),
                lease(lock),
            ]
        })
        .collect();
    aligned(&header, &rows)
}

pub(crate) fn inspect(lock: &LockInfo, json: bool) -> String {
    if json {
        return lock_json(lock).to_string();
    }
    let when = |at: Option<SystemTime>| {
        at.map_or_else(
            || "-".into(),
            |at| format!("{} ({})", timestamp(at), relative(lock.read_at, at)),
        )
    };
    let fields = [
        ("name", lock.name.clone()),
        ("state", lock.state.to_string()),
        ("fencing token", lock.fencing_token.to_string()),
        ("holder", lock.holder.clone().unwrap_or_else(|| "-".into())),
        (
            "owner id",
            lock.owner_id.clone().unwrap_or_else(|| "-".into()),
        ),
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
        return json!({ "result": result, "lock": lock_json(lock) }).to_string();
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
            .clone()
            .unwrap_or_else(|| "an unnamed holder".into())
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

pub(crate) fn initialised(table: &TableName, json: bool) -> String {
    if json {
        json!({ "table": table.to_string(), "ready": true }).to_string()
    } else {
        format!("lock table {table} is ready")
    }
}

fn lock_json(lock: &LockInfo) -> Value {
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
    })
}

/// "expires in 12 s", "expired 3 min ago", "revoked, free in 12 s" or "free".
fn lease(lock: &LockInfo) -> String {
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
fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
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
