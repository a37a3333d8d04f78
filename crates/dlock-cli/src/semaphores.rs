//! What the semaphore commands print (`list --semaphores`, `inspect --semaphore`,
//! `release --semaphore … --definition`), in the style of `render.rs`.

use std::fmt::Write as _;

use dlock_seaorm::{SemaphoreInfo, SemaphoreRemoval, TableName};
use serde_json::{Value, json};

use crate::render;
use crate::terminal;

/// `list --semaphores`: one line per semaphore, then one per held permit.
pub(crate) fn list(semaphores: &[SemaphoreInfo], table: &TableName, json: bool) -> String {
    if json {
        return render::json_text(&Value::Array(semaphores.iter().map(to_json).collect()));
    }
    if semaphores.is_empty() {
        return format!("no semaphores beside table {table}");
    }
    let header = ["SEMAPHORE", "PERMITS", "HELD", "HOLDERS"].map(String::from);
    let rows: Vec<[String; 4]> = semaphores
        .iter()
        .map(|semaphore| {
            let holders: Vec<String> = semaphore
                .holders()
                .map(|slot| {
                    format!(
                        "#{} {}",
                        slot.permit,
                        render::holder_or_dash(slot.lock.holder.as_deref())
                    )
                })
                .collect();
            [
                terminal::shown(&semaphore.name),
                semaphore.permits.to_string(),
                semaphore.holders().count().to_string(),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join("; ")
                },
            ]
        })
        .collect();
    let mut out = render::aligned(&header, &rows);
    let _ = write!(
        out,
        "\n{} semaphore{}",
        semaphores.len(),
        if semaphores.len() == 1 { "" } else { "s" }
    );
    out
}

/// `inspect --semaphore NAME`: the definition, then every permit's row as `list` shows
/// a lock.
pub(crate) fn inspect(semaphore: &SemaphoreInfo, json: bool) -> String {
    if json {
        return render::json_text(&to_json(semaphore));
    }
    let mut out = format!(
        "semaphore: {}\npermits:   {} ({} held)\n",
        terminal::shown(&semaphore.name),
        semaphore.permits,
        semaphore.holders().count()
    );
    let header = ["PERMIT", "STATE", "TOKEN", "HOLDER", "LEASE"].map(String::from);
    let rows: Vec<[String; 5]> = semaphore
        .slots
        .iter()
        .map(|slot| {
            [
                slot.permit.to_string(),
                slot.lock.state.to_string(),
                slot.lock.fencing_token.to_string(),
                render::holder_or_dash(slot.lock.holder.as_deref()),
                render::lease(&slot.lock),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no permit was ever taken");
    } else {
        out.push_str(&render::aligned(&header, &rows));
    }
    out.trim_end().to_owned()
}

/// `release --semaphore NAME --definition`.
pub(crate) fn removed(outcome: &SemaphoreRemoval, json: bool) -> String {
    let (result, semaphore, text) = match outcome {
        SemaphoreRemoval::Removed(was) => (
            "removed",
            was,
            format!(
                "removed the definition of semaphore {:?} ({} permits); the next process to \
                 use it defines its count anew",
                was.name, was.permits
            ),
        ),
        SemaphoreRemoval::InUse(now) => (
            "in_use",
            now,
            format!(
                "refused: semaphore {:?} has {} permits held; stop every process using it (or \
                 release their permits), then try again",
                now.name,
                now.holders().count()
            ),
        ),
    };
    if json {
        return render::json_text(&json!({ "result": result, "semaphore": to_json(semaphore) }));
    }
    text
}

fn to_json(semaphore: &SemaphoreInfo) -> Value {
    json!({
        "name": semaphore.name,
        "permits": semaphore.permits,
        "held": semaphore.holders().count(),
        "slots": semaphore.slots.iter().map(|slot| json!({
            "permit": slot.permit,
            "lock": render::lock_json(&slot.lock),
        })).collect::<Vec<_>>(),
    })
}
