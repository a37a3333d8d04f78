//! The command line.

use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use dlock_core::Dialect;
use dlock_testkit::failover::Replication;
use dlock_testkit::{Backend, dialect_parser};

use crate::faults::FaultKind;

/// Workers (separate processes) contend for a few lock names while faults are injected on
/// a schedule; a checker then verifies the ledger and prints a summary line:
///   sections=N faults=N overlaps=N fencing_violations=N late_writes=N max_recovery_ms=N
///
/// Exit codes: 0 all held, 1 a violation or a broken promise (see the `problem:` and
/// `violation:` lines), 2 bad arguments, 3 the database could not be reached.
#[derive(Debug, Clone, Parser)]
#[command(name = "dlock-torture")]
pub(crate) struct Args {
    /// The adapter [default: tokio-postgres on PostgreSQL, else seaorm]
    #[arg(long, value_enum)]
    adapter: Option<Backend>,
    /// The database.
    #[arg(long, value_parser = dialect_parser(), default_value = "postgres")]
    pub(crate) dialect: Dialect,
    /// The database's URL [default: DLOCK_TEST_POSTGRES_URL, DLOCK_TEST_MYSQL_URL or
    /// DLOCK_TEST_SQLITE_URL, else what the tests use: PostgreSQL and MariaDB on
    /// 127.0.0.1, database test; SQLite, a new file in a temporary directory]
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// How long the workers run, in minutes [default: 25 s]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// How long the workers run, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 25)]
    seconds: u64,
    /// Worker processes; one alone cannot contend.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..), default_value_t = 4)]
    workers: u64,
    /// Lock names they contend for.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 2)]
    names: u64,
    /// The locks' TTL in ms; shorter leases than 500 ms expire under normal load.
    #[arg(long, value_parser = clap::value_parser!(u64).range(500..), default_value_t = 2000)]
    ttl_ms: u64,
    /// The pause between two faults, in ms.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), default_value_t = 1000)]
    fault_gap_ms: u64,
    /// The faults to inject, in turn [default: all the database allows]
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// A shell command that restarts the PostgreSQL server, e.g. 'pg_ctlcluster
    /// --skip-systemctl-redirect 15 torture restart'; adds the restart fault. Never point
    /// it at a server others use.
    #[arg(long)]
    pub(crate) restart_command: Option<String>,
    /// Run on a PostgreSQL primary and streaming standby of the suite's own (the failover
    /// rig, on ports of its own), replicating this way, instead of --url; adds the
    /// failover fault.
    #[arg(long, value_enum, conflicts_with_all = ["url", "restart_command"])]
    failover: Option<ReplicationArg>,
    /// Workers print every error they meet.
    #[arg(long)]
    pub(crate) verbose: bool,
    /// Leader elections instead of locks: each name is an election, each critical section
    /// a term (campaign, entry, work, exit, resign), and every worker also observes
    /// every election; the run fails if an observer sees a term go backwards.
    #[arg(long)]
    pub(crate) election: bool,
    /// Semaphores of N permits instead of locks: each name is a semaphore, each critical
    /// section holds one permit (its ledger name is the permit's row, `name#i`); the run
    /// fails if more than N sections of one semaphore overlap, or any two of one permit.
    #[arg(long, value_name = "N", conflicts_with = "election",
          value_parser = clap::value_parser!(u32).range(2..=i64::from(dlock_core::MAX_PERMITS)))]
    pub(crate) semaphore: Option<u32>,
    /// Reader-writer locks instead (`RwLock`): each name is one, each section a read or
    /// (one in four) a write; the run fails if a write overlaps any other section of its
    /// name, or if tokens do not order every section before and after each write.
    #[arg(long, conflicts_with_all = ["election", "semaphore"])]
    pub(crate) rw: bool,
}

impl Args {
    /// The command line, or the process exits with clap's message (status 2).
    pub(crate) fn parse_or_exit() -> Self {
        let args = Self::parse();
        if let Err(message) = args.check() {
            Self::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
        args
    }

    /// What clap cannot check alone: the adapter, the dialect and the faults together.
    fn check(&self) -> Result<(), String> {
        self.adapter().check(self.dialect)?;
        if self.failover.is_some() && self.dialect != Dialect::Postgres {
            return Err("--failover runs PostgreSQL; use it with --dialect postgres".into());
        }
        if self.restart_command.is_some() && self.dialect != Dialect::Postgres {
            return Err(
                "--restart-command restarts PostgreSQL; use it with --dialect postgres".into(),
            );
        }
        self.faults
            .iter()
            .try_for_each(|kind| self.available(*kind))
    }

    /// The adapter asked for, else the dialect's.
    pub(crate) fn adapter(&self) -> Backend {
        self.adapter.unwrap_or(match self.dialect {
            Dialect::Postgres => Backend::TokioPostgres,
            _ => Backend::SeaOrm,
        })
    }

    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.minutes.map_or(self.seconds, |minutes| minutes * 60))
    }

    pub(crate) fn workers(&self) -> usize {
        usize::try_from(self.workers).unwrap_or(usize::MAX)
    }

    pub(crate) fn names(&self) -> usize {
        usize::try_from(self.names).unwrap_or(usize::MAX)
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// How the failover rig replicates, if the run is on it.
    pub(crate) fn failover(&self) -> Option<Replication> {
        self.failover.map(|replication| match replication {
            ReplicationArg::Async => Replication::Asynchronous,
            ReplicationArg::Sync => Replication::Synchronous,
        })
    }

    pub(crate) fn fault_gap(&self) -> Duration {
        Duration::from_millis(self.fault_gap_ms)
    }

    /// The faults of the rotation, in order: those asked for, else all the database allows.
    pub(crate) fn faults(&self) -> Vec<FaultKind> {
        if !self.faults.is_empty() {
            return self.faults.clone();
        }
        FaultKind::value_variants()
            .iter()
            .copied()
            .filter(|kind| self.available(*kind).is_ok())
            .collect()
    }

    fn available(&self, kind: FaultKind) -> Result<(), String> {
        if kind.needs_network() && self.dialect == Dialect::Sqlite {
            return Err(format!(
                "the {kind} fault needs a database server the workers reach over the \
                 network, which SQLite does not have"
            ));
        }
        let aimed_at_lock_rows = matches!(
            kind,
            FaultKind::ShortStop | FaultKind::DelayedAcquire | FaultKind::HungRenewal
        );
        if self.rw && aimed_at_lock_rows {
            return Err(format!(
                "the {kind} fault is aimed by reading the holder's row in the lock table, \
                 and --rw keeps its rows in the companion table; leave it out with --rw"
            ));
        }
        if kind == FaultKind::Restart && self.restart_command.is_none() {
            return Err("the restart fault needs --restart-command".into());
        }
        if kind == FaultKind::Failover && self.failover.is_none() {
            return Err("the failover fault needs --failover async or --failover sync".into());
        }
        Ok(())
    }
}

/// `--failover`'s values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReplicationArg {
    /// Asynchronous: commits are acknowledged before the standby has them.
    Async,
    /// Synchronous (`synchronous_standby_names`): after.
    Sync,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        let args =
            Args::try_parse_from(std::iter::once("dlock-torture").chain(args.iter().copied()))
                .map_err(|error| error.to_string())?;
        args.check().map(|()| args)
    }

    #[test]
    fn defaults_pick_the_adapter_of_the_dialect() {
        let args = parse(&["--dialect", "mysql", "--minutes", "3"]).expect("a run");
        assert_eq!(args.adapter(), Backend::SeaOrm);
        assert_eq!(args.duration(), Duration::from_secs(180));
        assert_eq!(args.ttl(), Duration::from_secs(2));
    }

    #[test]
    fn bad_combinations_say_what_to_do() {
        let error = parse(&["--adapter", "tokio-postgres", "--dialect", "sqlite"]).unwrap_err();
        assert!(error.contains("does not support"), "{error}");
        let error = parse(&["--dialect", "sqlite", "--restart-command", "true"]).unwrap_err();
        assert!(error.contains("--dialect postgres"), "{error}");
        assert!(parse(&["--workers", "1"]).is_err());
        let error = parse(&["--dialect", "sqlite", "--faults", "kill,hung-renewal"]).unwrap_err();
        assert!(error.contains("SQLite"), "{error}");
        let error = parse(&["--dialect", "sqlite", "--failover", "async"]).unwrap_err();
        assert!(error.contains("--dialect postgres"), "{error}");
        let error = parse(&["--faults", "failover"]).unwrap_err();
        assert!(error.contains("--failover async"), "{error}");
        assert!(parse(&["--failover", "sync", "--url", "postgres://h:1/d"]).is_err());
        let error = parse(&["--rw", "--faults", "kill,short-stop"]).unwrap_err();
        assert!(error.contains("--rw"), "{error}");
        let error = parse(&["--faults", "stop,pause"]).unwrap_err();
        assert!(error.contains("short-stop"), "{error}");
    }

    #[test]
    fn the_rotation_is_what_the_database_allows_or_what_was_asked() {
        let rotation = |args: &[&str]| {
            let args = parse(args).expect("a run");
            args.faults()
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rotation(&["--dialect", "sqlite"]),
            ["kill", "stop", "short-stop"]
        );
        assert_eq!(
            rotation(&[]),
            [
                "kill",
                "stop",
                "terminate",
                "unreachable",
                "short-stop",
                "delayed-acquire",
                "hung-renewal"
            ]
        );
        assert!(rotation(&["--failover", "async"]).contains(&"failover"));
        assert_eq!(
            rotation(&["--rw"]),
            ["kill", "stop", "terminate", "unreachable"]
        );
        assert_eq!(
            rotation(&["--faults", "hung-renewal,short-stop"]),
            ["hung-renewal", "short-stop"]
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
