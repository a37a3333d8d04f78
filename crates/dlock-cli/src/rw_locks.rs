//! What `list --rw` and `inspect --rw` print: each reader-writer lock with its writer and
//! readers, one line per holder row, so that a reader's owner id is there to pass to
//! `release --rw --holder`.

use std::fmt::Write as _;

use dlock_seaorm::{LockInfo, RwLockInfo, TableName};
use serde_json::{Value, json};

use crate::render::{aligned, holder_or_dash, json_text, lease, lock_json};
use crate::terminal;

pub(crate) fn list(locks: &[RwLockInfo], table: &TableName, json: bool) -> String {
    if json {
        return json_text(&Value::Array(locks.iter().map(lock_json_rw).collect()));
    }
    if locks.is_empty() {
        return format!("no reader-writer locks beside table {table}");
    }
    let mut out = rows(locks);
    let writers = locks.iter().filter(|lock| lock.has_writer()).count();
    let readers: usize = locks.iter().map(|lock| lock.live_readers().count()).sum();
    let _ = write!(
        out,
        "\n{} reader-writer lock{}: {writers} with a writer, {readers} reader{} in",
        locks.len(),
        if locks.len() == 1 { "" } else { "s" },
        if readers == 1 { "" } else { "s" },
    );
    out
}

pub(crate) fn inspect(lock: &RwLockInfo, json: bool) -> String {
    if json {
        return json_text(&lock_json_rw(lock));
    }
    rows(std::slice::from_ref(lock))
}

/// `NAME ROLE STATE TOKEN HOLDER LEASE`, a line per holder row: the writer's (the gate)
/// first, then the readers'.
fn rows(locks: &[RwLockInfo]) -> String {
    let header = ["NAME", "ROLE", "STATE", "TOKEN", "HOLDER", "LEASE"].map(String::from);
    let row = |name: &str, role: String, row: &LockInfo| {
        [
            terminal::shown(name),
            role,
            row.state.to_string(),
            row.fencing_token.to_string(),
            holder_or_dash(row.holder.as_deref()),
            lease(row),
        ]
    };
    let mut rows = Vec::new();
    for lock in locks {
        if let Some(gate) = &lock.writer {
            rows.push(row(&lock.name, "writer".into(), gate));
        }
        for reader in &lock.readers {
            let owner = reader_owner(&lock.name, reader);
            rows.push(row(&lock.name, format!("reader {owner}"), reader));
        }
    }
    aligned(&header, &rows)
}

/// A reader's owner id, from its row's name (its owner column is empty once revoked).
fn reader_owner<'a>(name: &str, reader: &'a LockInfo) -> &'a str {
    reader
        .name
        .get(name.len()..)
        .and_then(|rest| rest.strip_prefix("#r:"))
        .unwrap_or(&reader.name)
}

fn lock_json_rw(lock: &RwLockInfo) -> Value {
    json!({
        "name": lock.name,
        "writer": lock.writer.as_ref().map(lock_json),
        "readers": lock.readers.iter().map(|reader| {
            let mut row = lock_json(reader);
            row["reader"] = json!(reader_owner(&lock.name, reader));
            row
        }).collect::<Vec<_>>(),
    })
}
