//! For operators: the reader-writer locks of a lock table's companion table, their writer
//! and readers, and a force release of one of them.
//!
//! Each holder is an ordinary row of the companion table (see `dialect/rw.rs`), so
//! looking and force releasing are [`LockAdmin`]'s own, on that table; this file tells
//! the rows of reader-writer locks apart from the others there (semaphores' rows end in
//! `#` and a number), and groups them by lock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::dialect::{GATE_SUFFIX, READER_INFIX};
use crate::random::OWNER_ID_LEN;
use crate::{Error, FencingToken, ForceRelease, LockAdmin, LockInfo, LockState, Result};

/// A reader-writer lock as recorded in the companion table, read by
/// [`LockAdmin::list_rw`] or [`LockAdmin::inspect_rw`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RwLockInfo {
    /// The lock's name.
    pub name: String,
    /// The gate row (`{name}#w`): held while a writer writes or waits for readers to
    /// leave; its token is the last write's. `None` if no reader or writer ever came.
    pub writer: Option<LockInfo>,
    /// A row per reader (`{name}#r:{owner id}`), by name: readers in, and the rows of
    /// readers that crashed or were revoked (expired), which the next writer deletes.
    pub readers: Vec<LockInfo>,
}

impl RwLockInfo {
    /// Whether a writer holds the gate (writing, or waiting for the readers to leave).
    pub fn has_writer(&self) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|gate| matches!(gate.state, LockState::Held | LockState::Revoked))
    }

    /// The readers whose lease is live (revoked ones included: they keep writers out
    /// until their lease ends).
    pub fn live_readers(&self) -> impl Iterator<Item = &LockInfo> {
        self.readers
            .iter()
            .filter(|reader| matches!(reader.state, LockState::Held | LockState::Revoked))
    }
}

/// One holder of a reader-writer lock, to force release: its writer, or one reader.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RwHolder {
    /// Whoever holds the gate.
    Writer,
    /// The reader of this owner id ([`LockInfo::owner_id`] of its row, or the part of
    /// its row's name after `#r:`).
    Reader(String),
}

impl FromStr for RwHolder {
    type Err = Error;

    /// `writer`, or a reader's owner id (32 hex digits).
    fn from_str(input: &str) -> Result<Self> {
        let input = input.trim();
        if input == "writer" {
            return Ok(Self::Writer);
        }
        if is_owner_id(input) {
            return Ok(Self::Reader(input.to_owned()));
        }
        Err(Error::InvalidOption(format!(
            "{input:?} names no holder of a reader-writer lock: give `writer`, or a reader's \
             owner id (32 hex digits, as `dlock inspect --rw` shows)"
        )))
    }
}

impl fmt::Display for RwHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Writer => f.write_str("writer"),
            Self::Reader(owner) => write!(f, "reader {owner}"),
        }
    }
}

/// An owner id: 32 lower-case hex digits (`random::owner_id`).
fn is_owner_id(text: &str) -> bool {
    text.len() == OWNER_ID_LEN
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// A row of a reader-writer lock: the lock's name, and whether it is the gate.
fn rw_row(row: &str) -> Option<(&str, bool)> {
    if let Some(name) = row.strip_suffix(GATE_SUFFIX) {
        return (!name.is_empty()).then_some((name, true));
    }
    let split = row.len().checked_sub(READER_INFIX.len() + OWNER_ID_LEN)?;
    let (name, rest) = (row.get(..split)?, row.get(split..)?);
    let owner = rest.strip_prefix(READER_INFIX)?;
    (!name.is_empty() && is_owner_id(owner)).then_some((name, false))
}

impl LockAdmin {
    /// Every reader-writer lock of this lock table (their rows are in its companion,
    /// `{table}_slots`), by name, with its writer and readers.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchTable`] if the companion table does not exist (no reader-writer
    /// lock was ever used); the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list_rw(&self) -> Result<Vec<RwLockInfo>> {
        let mut locks: BTreeMap<String, RwLockInfo> = BTreeMap::new();
        for row in self.companion()?.list().await? {
            let Some((name, is_gate)) = rw_row(&row.name) else {
                continue;
            };
            let lock = locks.entry(name.to_owned()).or_insert_with(|| RwLockInfo {
                name: name.to_owned(),
                writer: None,
                readers: Vec::new(),
            });
            if is_gate {
                lock.writer = Some(row);
            } else {
                lock.readers.push(row);
            }
        }
        Ok(locks.into_values().collect())
    }

    /// The reader-writer lock `name`, with its writer and readers.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchLock`] if it has no row; [`Error::NoSuchTable`] if the companion
    /// table does not exist; the database's error otherwise.
    ///
    /// # Cancel Safety
    ///
    /// Cancel safe: it only reads.
    pub async fn inspect_rw(&self, name: &str) -> Result<RwLockInfo> {
        // One read of the table, so the writer and readers shown are of one instant.
        let found = self
            .list_rw()
            .await?
            .into_iter()
            .find(|lock| lock.name == name);
        found.ok_or_else(|| Error::NoSuchLock {
            name: name.to_owned(),
            table: self
                .table()
                .companion()
                .map_or_else(|_| self.table().to_string(), |table| table.to_string()),
        })
    }

    /// Revokes one holder of the reader-writer lock `name` — its writer, or one reader —
    /// only while that holder's row has the fencing token `token`, as
    /// [`force_release`](Self::force_release) does for a lock: the holder hears of its loss
    /// at its next renewal, and the row keeps others out until its lease ends (a revoked
    /// writer keeps readers out; a revoked reader keeps writers out).
    ///
    /// # Errors
    ///
    /// As [`force_release`](Self::force_release), in the companion table.
    ///
    /// # Cancel Safety
    ///
    /// As [`force_release`](Self::force_release).
    pub async fn force_release_rw(
        &self,
        name: &str,
        holder: &RwHolder,
        token: FencingToken,
    ) -> Result<ForceRelease> {
        self.companion()?
            .force_release(&row_name(name, holder), token)
            .await
    }

    /// Frees one holder of the reader-writer lock `name` at once, only while its row has
    /// the fencing token `token`, as [`force_release_now`](Self::force_release_now):
    /// **only for a holder known to be dead**. Wakes those waiting for it.
    ///
    /// # Errors
    ///
    /// As [`force_release_now`](Self::force_release_now), in the companion table.
    ///
    /// # Cancel Safety
    ///
    /// As [`force_release_now`](Self::force_release_now).
    pub async fn force_release_rw_now(
        &self,
        name: &str,
        holder: &RwHolder,
        token: FencingToken,
    ) -> Result<ForceRelease> {
        let companion = self.companion()?;
        let freed = companion
            .force_release_now(&row_name(name, holder), token)
            .await?;
        if matches!(freed, ForceRelease::Freed(_)) && matches!(holder, RwHolder::Reader(_)) {
            // A writer draining readers waits for notices of the lock's own name.
            let notice = companion.sql.notify(name);
            let sending = companion
                .releases
                .announce(name, &companion.queries, notice);
            if let Some(sending) = sending {
                let _ = sending.await;
            }
        }
        Ok(freed)
    }
}

/// The row of `holder` of the lock `name`.
fn row_name(name: &str, holder: &RwHolder) -> String {
    match holder {
        RwHolder::Writer => format!("{name}{GATE_SUFFIX}"),
        RwHolder::Reader(owner) => format!("{name}{READER_INFIX}{owner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn rows_of_rw_locks_are_told_from_others() {
        assert_eq!(rw_row("catalog#w"), Some(("catalog", true)));
        let reader = format!("catalog#r:{OWNER}");
        assert_eq!(rw_row(&reader), Some(("catalog", false)));
        // A name that itself holds the markers.
        let odd = format!("a#r:b#w#r:{OWNER}");
        assert_eq!(rw_row(&odd), Some(("a#r:b#w", false)));
        // Semaphores' rows, and what no reader row looks like.
        for other in ["catalog#0", "catalog#12", "catalog", "#r:x", "é#r:short"] {
            assert_eq!(rw_row(other), None, "{other}");
        }
        let upper = format!("catalog#r:{}", OWNER.to_uppercase());
        assert_eq!(rw_row(&upper), None);
        // Multi-byte characters just before the owner id do not panic.
        let multibyte = format!("ééééééééééééééééééééé{OWNER}");
        assert_eq!(rw_row(&multibyte), None);
    }

    #[test]
    fn holders_parse_and_name_their_rows() {
        assert_eq!("writer".parse::<RwHolder>().unwrap(), RwHolder::Writer);
        let reader: RwHolder = OWNER.parse().unwrap();
        assert_eq!(row_name("c", &reader), format!("c#r:{OWNER}"));
        assert_eq!(row_name("c", &RwHolder::Writer), "c#w");
        let error = "someone".parse::<RwHolder>().unwrap_err();
        assert!(error.to_string().contains("owner id"), "{error}");
    }
}
