//! Whether the database keeps what it acknowledges: the settings under which an
//! acquisition survives a crash or a failover of the database, read from the database and
//! judged. A lock whose acquisition is lost after it was acknowledged has two holders,
//! and its fencing token is issued twice.
//!
//! Read on demand ([`LockAdmin::durability`](crate::LockAdmin::durability), `dlock
//! doctor`) and once per process and database at the first acquisition, which logs one
//! `WARN` naming what to change when a setting breaks the guarantees.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Instrument;

use crate::adapter::{QueryInterface, Row, Value};
use crate::inner::LockInner;
use crate::{Dialect, telemetry};

/// What the database's settings do to dlock's guarantees when the database crashes or
/// fails over: [`LockAdmin::durability`](crate::LockAdmin::durability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// The database's dialect.
    pub dialect: Dialect,
    /// Each setting read, with what it does.
    pub settings: Vec<DurabilitySetting>,
}

/// One setting of the database and what it does to the guarantees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilitySetting {
    /// The setting's name, as the database spells it.
    pub name: String,
    /// Its value, as the database reports it.
    pub value: String,
    /// What it does.
    pub effect: SettingEffect,
}

/// What a setting does to dlock's guarantees across a crash or failover of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingEffect {
    /// Nothing acknowledged is lost.
    Keeps,
    /// The guarantees hold, under the condition or at the cost it states.
    Caveat(String),
    /// Acknowledged acquisitions can be lost: fencing tokens repeat and two holders can
    /// overlap. The text says when, and what to change.
    Breaks(String),
}

impl Durability {
    /// Whether no setting breaks the guarantees.
    pub fn keeps_guarantees(&self) -> bool {
        !self
            .settings
            .iter()
            .any(|setting| matches!(setting.effect, SettingEffect::Breaks(_)))
    }

    /// The settings that break the guarantees.
    pub fn problems(&self) -> impl Iterator<Item = &DurabilitySetting> {
        self.settings
            .iter()
            .filter(|setting| matches!(setting.effect, SettingEffect::Breaks(_)))
    }

    /// Judges the `(name, value)` rows of the dialect's `durability` statement.
    pub(crate) fn from_rows(dialect: Dialect, rows: Vec<Row>) -> Self {
        let values: Vec<(String, String)> = rows
            .into_iter()
            .filter_map(|row| match <[Value; 2]>::try_from(row).ok()? {
                [Value::Text(name), Value::Text(value)] => Some((name.to_lowercase(), value)),
                _ => None,
            })
            .collect();
        let all = Settings(&values);
        let settings = values
            .iter()
            .map(|(name, setting)| DurabilitySetting {
                effect: match dialect {
                    Dialect::Postgres => postgres(name, setting, &all),
                    Dialect::Mysql => mysql(name, setting, &all),
                    Dialect::Sqlite => sqlite(name, setting, &all),
                },
                name: name.clone(),
                value: setting.clone(),
            })
            .collect();
        Self { dialect, settings }
    }
}

/// Every setting read, for judging one by the others.
struct Settings<'a>(&'a [(String, String)]);

impl Settings<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(setting, _)| setting == name)
            .map(|(_, value)| value.as_str())
    }
}

const REPEAT: &str = "fencing tokens are issued again and a second holder can overlap the first";

fn postgres(name: &str, value: &str, other: &Settings<'_>) -> SettingEffect {
    let standbys = other
        .get("streaming standbys")
        .is_some_and(|count| count != "0");
    let synchronous = !other
        .get("synchronous_standby_names")
        .unwrap_or_default()
        .is_empty()
        && !matches!(other.get("synchronous_commit"), Some("local" | "off"));
    match (name, value) {
        ("fsync", "off") | ("full_page_writes", "off") => SettingEffect::Breaks(format!(
            "a crash of the server can lose or corrupt what it acknowledged: {REPEAT}; set {name} = on"
        )),
        ("synchronous_commit", "off") => SettingEffect::Breaks(format!(
            "a crash of the server loses the last commits it acknowledged, and it comes back \
             on the same timeline: {REPEAT}; set synchronous_commit = on for the role dlock \
             connects as (ALTER ROLE … SET synchronous_commit = on)"
        )),
        ("streaming standbys", _) if standbys && !synchronous => SettingEffect::Caveat(
            "asynchronous replication: a failover can lose acquisitions the old primary \
             acknowledged; dlock's tokens carry the timeline, so they still only grow, and \
             for one lease after a failover nobody acquires (lock-delay), which keeps holders \
             apart if every holder of a name uses the same TTL. Synchronous replication \
             (synchronous_standby_names, synchronous_commit = on or remote_apply) loses none"
                .into(),
        ),
        ("timeline", timeline) if timeline != "1" => SettingEffect::Caveat(format!(
            "the server has been promoted or recovered (timeline {timeline}): fencing tokens \
             are at least (timeline - 1) × 2^40"
        )),
        _ => SettingEffect::Keeps,
    }
}

fn mysql(name: &str, value: &str, other: &Settings<'_>) -> SettingEffect {
    let on = |value: &str| value.eq_ignore_ascii_case("on") || value == "1";
    let binlog = other.get("log_bin").is_some_and(on);
    let semi_sync = [
        "rpl_semi_sync_master_enabled",
        "rpl_semi_sync_source_enabled",
    ]
    .into_iter()
    .any(|name| other.get(name).is_some_and(on));
    match name {
        "innodb_flush_log_at_trx_commit" if value != "1" => SettingEffect::Breaks(format!(
            "a crash of the server (or of its machine) loses the last commits it acknowledged: \
             {REPEAT}; set innodb_flush_log_at_trx_commit = 1"
        )),
        "sync_binlog" if binlog && value != "1" => SettingEffect::Breaks(format!(
            "a crash of the source can lose from its binary log commits it acknowledged, which \
             replicas then never receive: after a failover {REPEAT}; set sync_binlog = 1"
        )),
        "log_bin" if on(value) && !semi_sync => SettingEffect::Caveat(format!(
            "if replicas of this server can be promoted: MySQL and MariaDB have no epoch dlock \
             can read, so a failover to a replica that lacks acquisitions the source \
             acknowledged (asynchronous replication) means {REPEAT}. Use semi-synchronous \
             replication with rpl_semi_sync_master_wait_point = AFTER_SYNC, or wait one lease \
             after a failover before taking locks"
        )),
        "wsrep_on" if on(value) => SettingEffect::Breaks(
            "Galera (multi-primary): a fenced transaction's row lock holds only on its own \
             node, so a takeover through another node does not wait for it; send every \
             statement on the lock table to one node"
                .into(),
        ),
        "group_replication_single_primary_mode" if !on(value) => SettingEffect::Breaks(
            "Group Replication in multi-primary mode: a fenced transaction's row lock holds \
             only on its own member; use single-primary mode"
                .into(),
        ),
        _ => SettingEffect::Keeps,
    }
}

fn sqlite(name: &str, value: &str, other: &Settings<'_>) -> SettingEffect {
    let wal = other
        .get("journal_mode")
        .is_some_and(|mode| mode.eq_ignore_ascii_case("wal"));
    match (name, value) {
        ("synchronous", "0") => SettingEffect::Breaks(format!(
            "a crash of the machine or a power loss can lose acquisitions or corrupt the file: \
             {REPEAT}; set PRAGMA synchronous = FULL (or NORMAL in WAL mode)"
        )),
        ("synchronous", "1") if wal => SettingEffect::Caveat(
            "synchronous = NORMAL in WAL mode: a power loss can roll back the last \
             acquisitions; their holders, on the same machine, stop with it, but tokens \
             recorded elsewhere can be issued again"
                .into(),
        ),
        ("synchronous", "1") => SettingEffect::Breaks(format!(
            "synchronous = NORMAL without WAL: a power loss can corrupt the file: {REPEAT}; \
             set PRAGMA synchronous = FULL, or use WAL mode"
        )),
        _ => SettingEffect::Keeps,
    }
}

impl fmt::Display for Durability {
    /// One line per setting: name, value and what it does; then a verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for setting in &self.settings {
            let (mark, text) = match &setting.effect {
                SettingEffect::Keeps => ("ok", None),
                SettingEffect::Caveat(text) => ("note", Some(text)),
                SettingEffect::Breaks(text) => ("PROBLEM", Some(text)),
            };
            write!(f, "{mark:>7}  {} = {}", setting.name, setting.value)?;
            match text {
                Some(text) => writeln!(f, ": {text}")?,
                None => writeln!(f)?,
            }
        }
        if self.keeps_guarantees() {
            write!(
                f,
                "{} keeps every acquisition it acknowledges, by these settings",
                self.dialect
            )
        } else {
            write!(
                f,
                "{} can lose acquisitions it acknowledged: change the settings marked PROBLEM",
                self.dialect
            )
        }
    }
}

/// Reads the settings of the database behind `queries`.
pub(crate) async fn read(
    queries: &dyn QueryInterface,
    sql: &crate::dialect::Sql,
) -> Result<Durability, crate::adapter::QueryError> {
    let rows = queries.query(&sql.durability()).await?;
    Ok(Durability::from_rows(queries.dialect(), rows))
}

/// Once per process and database (the adapter's notification source, or the dialect and
/// table where it has none), in the background: reads the settings and logs a `WARN` for
/// each that breaks the guarantees. Failing to read them is only logged at `DEBUG`: the
/// lock works without.
pub(crate) fn check_once(lock: &Arc<LockInner>) {
    static CHECKED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    // Each lock looks the database up once: the lookup allocates, and acquisitions are
    // the hot path.
    if lock.durability_checked.swap(true, Ordering::Relaxed) {
        return;
    }
    let source = lock
        .queries
        .listener()
        .map(|listener| listener.source())
        .unwrap_or_else(|| format!("{}:{}", lock.dialect, lock.options.table));
    let first = CHECKED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(source);
    if !first {
        return;
    }
    let lock = Arc::clone(lock);
    let check = async move {
        match read(&*lock.queries, &lock.sql).await {
            Ok(durability) => telemetry::durability(&lock, &durability),
            Err(error) => telemetry::durability_unknown(&lock, &error),
        }
    };
    tokio::spawn(check.in_current_span());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> Vec<Row> {
        pairs
            .iter()
            .map(|(name, value)| vec![Value::Text((*name).into()), Value::Text((*value).into())])
            .collect()
    }

    #[test]
    fn postgres_without_fsync_or_synchronous_commit_breaks_the_guarantees() {
        let durability = Durability::from_rows(
            Dialect::Postgres,
            rows(&[
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "on"),
                ("synchronous_standby_names", ""),
                ("streaming standbys", "0"),
                ("timeline", "1"),
            ]),
        );
        let problems: Vec<&str> = durability.problems().map(|s| s.name.as_str()).collect();
        assert_eq!(problems, ["fsync", "synchronous_commit"]);
        assert!(!durability.keeps_guarantees());
        assert!(durability.to_string().contains("PROBLEM  fsync = off"));
    }

    #[test]
    fn postgres_with_asynchronous_standbys_keeps_them_with_a_caveat() {
        let durability = Durability::from_rows(
            Dialect::Postgres,
            rows(&[
                ("fsync", "on"),
                ("synchronous_commit", "on"),
                ("synchronous_standby_names", ""),
                ("streaming standbys", "1"),
                ("timeline", "3"),
            ]),
        );
        assert!(durability.keeps_guarantees());
        let caveats: Vec<&str> = durability
            .settings
            .iter()
            .filter(|s| matches!(s.effect, SettingEffect::Caveat(_)))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(caveats, ["streaming standbys", "timeline"]);
    }

    #[test]
    fn postgres_with_a_synchronous_standby_has_no_caveat() {
        let durability = Durability::from_rows(
            Dialect::Postgres,
            rows(&[
                ("synchronous_commit", "remote_apply"),
                ("synchronous_standby_names", "*"),
                ("streaming standbys", "1"),
            ]),
        );
        assert!(
            durability
                .settings
                .iter()
                .all(|s| s.effect == SettingEffect::Keeps)
        );
    }

    #[test]
    fn mysql_flushing_less_than_every_commit_or_galera_breaks_them() {
        let durability = Durability::from_rows(
            Dialect::Mysql,
            rows(&[
                ("innodb_flush_log_at_trx_commit", "2"),
                ("log_bin", "ON"),
                ("sync_binlog", "0"),
                ("wsrep_on", "ON"),
            ]),
        );
        let problems: Vec<&str> = durability.problems().map(|s| s.name.as_str()).collect();
        assert_eq!(
            problems,
            ["innodb_flush_log_at_trx_commit", "sync_binlog", "wsrep_on"]
        );
    }

    #[test]
    fn sqlite_depends_on_synchronous_and_the_journal() {
        let judge = |synchronous: &str, journal: &str| {
            Durability::from_rows(
                Dialect::Sqlite,
                rows(&[("synchronous", synchronous), ("journal_mode", journal)]),
            )
            .settings[0]
                .effect
                .clone()
        };
        assert!(matches!(judge("0", "wal"), SettingEffect::Breaks(_)));
        assert!(matches!(judge("1", "delete"), SettingEffect::Breaks(_)));
        assert!(matches!(judge("1", "wal"), SettingEffect::Caveat(_)));
        assert_eq!(judge("2", "delete"), SettingEffect::Keeps);
    }
}
