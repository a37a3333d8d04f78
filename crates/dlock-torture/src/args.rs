//! The command line.

use std::time::Duration;

use dlock_bench::backend::{Adapter, Dialect};

use crate::faults::FaultKind;

pub(crate) const USAGE: &str = "\
usage: dlock-torture [--adapter tokio-postgres|seaorm|diesel] [--dialect postgres|mysql|sqlite]
                     [--url URL] [--minutes N | --seconds N] [--workers N] [--names N]
                     [--ttl-ms N] [--fault-gap-ms N] [--faults LIST] [--restart-command CMD]
                     [--verbose]

Workers (separate processes) contend for a few lock names while faults are injected on a
schedule; a checker then verifies the ledger and prints a summary line:
  sections=N faults=N overlaps=N fencing_violations=N late_writes=N max_recovery_ms=N

  --adapter          the adapter (default: tokio-postgres on PostgreSQL, else seaorm)
  --dialect          the database (default: postgres)
  --url              the database (default: as the tests, postgres://postgres@127.0.0.1:5432/test,
                     mysql://root@127.0.0.1:3306/test; SQLite: a new file in a temporary directory)
  --minutes/--seconds  how long the workers run (default 25 s)
  --workers          worker processes (default 4)
  --names            lock names they contend for (default 2)
  --ttl-ms           the locks' TTL (default 2000)
  --fault-gap-ms     the pause between two faults (default 1000)
  --faults           the faults to inject, in turn, comma-separated (default: all the database
                     allows): kill, stop, terminate, unreachable, short-stop, delayed-acquire,
                     hung-renewal, restart
  --restart-command  a shell command that restarts the PostgreSQL server, e.g.
                     'pg_ctlcluster --skip-systemctl-redirect 15 torture restart';
                     adds the restart fault. Never point it at a server others use.
  --verbose          workers print every error they meet";

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) adapter: Adapter,
    pub(crate) dialect: Dialect,
    pub(crate) url: Option<String>,
    pub(crate) duration: Duration,
    pub(crate) workers: usize,
    pub(crate) names: usize,
    pub(crate) ttl: Duration,
    pub(crate) fault_gap: Duration,
    /// The faults of the rotation, in order.
    pub(crate) faults: Vec<FaultKind>,
    pub(crate) restart_command: Option<String>,
    pub(crate) verbose: bool,
}

/// The parsed command line: a run, or a request for help.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Args),
    Help,
}

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut adapter = None;
    let mut dialect = Dialect::Postgres;
    let mut url = None;
    let mut duration = Duration::from_secs(25);
    let mut workers = 4;
    let mut names = 2;
    let mut ttl = Duration::from_secs(2);
    let mut fault_gap = Duration::from_secs(1);
    let mut restart_command = None;
    let mut faults = None;
    let mut verbose = false;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} takes a positive whole number, not {text:?}"))
        };
        match flag.as_str() {
            "--adapter" => adapter = Some(Adapter::parse(&value()?)?),
            "--dialect" => dialect = Dialect::parse(&value()?)?,
            "--url" => url = Some(value()?),
            "--minutes" => duration = Duration::from_secs(60 * number(value()?)?),
            "--seconds" => duration = Duration::from_secs(number(value()?)?),
            "--workers" => workers = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--names" => names = usize::try_from(number(value()?)?).unwrap_or(usize::MAX),
            "--ttl-ms" => ttl = Duration::from_millis(number(value()?)?),
            "--fault-gap-ms" => fault_gap = Duration::from_millis(number(value()?)?),
            "--restart-command" => restart_command = Some(value()?),
            "--faults" => {
                faults = Some(
                    value()?
                        .split(',')
                        .map(|name| FaultKind::parse(name.trim()))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            "--verbose" => verbose = true,
            "--help" | "-h" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let adapter = adapter.unwrap_or(match dialect {
        Dialect::Postgres => Adapter::TokioPostgres,
        _ => Adapter::SeaOrm,
    });
    if !adapter.dialects().contains(&dialect) {
        return Err(adapter.unsupported(dialect));
    }
    if workers < 2 {
        return Err("--workers must be at least 2: one worker cannot contend".into());
    }
    if ttl < Duration::from_millis(500) {
        return Err(
            "--ttl-ms must be at least 500: shorter leases expire under normal load".into(),
        );
    }
    if restart_command.is_some() && dialect != Dialect::Postgres {
        return Err("--restart-command restarts PostgreSQL; use it with --dialect postgres".into());
    }
    let available = |kind: FaultKind| -> Result<(), String> {
        if kind.needs_network() && dialect == Dialect::Sqlite {
            return Err(format!(
                "the {kind} fault needs a database server the workers reach over the \
                 network, which SQLite does not have"
            ));
        }
        if kind == FaultKind::Restart && restart_command.is_none() {
            return Err("the restart fault needs --restart-command".into());
        }
        Ok(())
    };
    let faults = match faults {
        Some(faults) => {
            for kind in &faults {
                available(*kind)?;
            }
            faults
        }
        None => FaultKind::ALL
            .into_iter()
            .filter(|kind| available(*kind).is_ok())
            .collect(),
    };
    if faults.is_empty() {
        return Err("--faults needs at least one fault".into());
    }
    Ok(Parsed::Run(Args {
        adapter,
        dialect,
        url,
        duration,
        workers,
        names,
        ttl,
        fault_gap,
        faults,
        restart_command,
        verbose,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn defaults_pick_the_adapter_of_the_dialect() {
        let Ok(Parsed::Run(args)) = parse_all(&["--dialect", "mysql", "--minutes", "3"]) else {
            panic!("expected a run");
        };
        assert_eq!(args.adapter, Adapter::SeaOrm);
        assert_eq!(args.duration, Duration::from_secs(180));
        assert_eq!(args.ttl, Duration::from_secs(2));
    }

    #[test]
    fn bad_combinations_say_what_to_do() {
        let error = parse_all(&["--adapter", "tokio-postgres", "--dialect", "sqlite"]).unwrap_err();
        assert!(error.contains("does not support"), "{error}");
        let error = parse_all(&["--dialect", "sqlite", "--restart-command", "true"]).unwrap_err();
        assert!(error.contains("--dialect postgres"), "{error}");
        let error = parse_all(&["--workers", "0"]).unwrap_err();
        assert!(error.contains("positive whole number"), "{error}");
        let error =
            parse_all(&["--dialect", "sqlite", "--faults", "kill,hung-renewal"]).unwrap_err();
        assert!(error.contains("SQLite"), "{error}");
        let error = parse_all(&["--faults", "stop,pause"]).unwrap_err();
        assert!(error.contains("short-stop"), "{error}");
    }

    #[test]
    fn the_rotation_is_what_the_database_allows_or_what_was_asked() {
        let rotation = |args: &[&str]| match parse_all(args) {
            Ok(Parsed::Run(args)) => args
                .faults
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>(),
            other => panic!("expected a run, got {other:?}"),
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
        assert_eq!(
            rotation(&["--faults", "hung-renewal,short-stop"]),
            ["hung-renewal", "short-stop"]
        );
    }
}
