//! Command-line arguments, parsed by hand: there are four of them.

use crate::backend::{Adapter, Dialect};
use crate::scenarios::Scenario;

pub(crate) const USAGE: &str = "\
usage: dlock-bench [--adapter NAME] [--dialect NAME] [--scenario NAME,...] [--quick]

  --adapter NAME       the adapter to measure: tokio-postgres (default), seaorm
  --dialect NAME       the database: postgres, mysql (MySQL or MariaDB), sqlite
                       (default: the adapter's first, postgres; tokio-postgres
                       speaks only postgres)
  --scenario NAME,...  only these scenarios (default: all); may be repeated
  --quick              shorter runs: the whole default run takes under a minute
  --help               this text

Prints one JSON object per line on stdout, progress on stderr.
Database URLs: DLOCK_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
DLOCK_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306/test), DLOCK_BENCH_SQLITE_URL
(default: a new file in a temporary directory, removed at the end of the run).";

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) adapter: Adapter,
    pub(crate) dialect: Dialect,
    /// In the benchmark's fixed order, without duplicates.
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) quick: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Args),
    Help,
}

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let mut adapter = None;
    let mut dialect = None;
    let mut chosen: Vec<Scenario> = Vec::new();
    let mut quick = false;
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--adapter" => adapter = Some(Adapter::parse(&value()?)?),
            "--dialect" => dialect = Some(Dialect::parse(&value()?)?),
            "--scenario" | "--scenarios" => {
                for name in value()?.split(',').filter(|name| !name.is_empty()) {
                    chosen.push(Scenario::parse(name)?);
                }
            }
            "--quick" if inline_value.is_none() => quick = true,
            "--help" | "-h" => return Ok(Parsed::Help),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    let adapter = adapter.unwrap_or(Adapter::TokioPostgres);
    let dialect = match dialect {
        Some(dialect) if !adapter.dialects().contains(&dialect) => {
            return Err(adapter.unsupported(dialect));
        }
        Some(dialect) => dialect,
        None => adapter.dialects()[0],
    };
    let scenarios = Scenario::ALL
        .iter()
        .copied()
        .filter(|scenario| chosen.is_empty() || chosen.contains(scenario))
        .collect();
    Ok(Parsed::Run(Args {
        adapter,
        dialect,
        scenarios,
        quick,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Parsed, String> {
        parse(words.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn defaults_run_everything_on_tokio_postgres() {
        let Ok(Parsed::Run(args)) = parse_words("") else {
            panic!("no arguments must parse");
        };
        assert_eq!(args.adapter, Adapter::TokioPostgres);
        assert_eq!(args.dialect, Dialect::Postgres);
        assert_eq!(args.scenarios, Scenario::ALL);
        assert!(!args.quick);
    }

    #[test]
    fn scenarios_keep_the_fixed_order() {
        let Ok(Parsed::Run(args)) = parse_words("--scenario=skip,uncontended --quick") else {
            panic!("must parse");
        };
        assert_eq!(args.scenarios, [Scenario::Uncontended, Scenario::Skip]);
        assert!(args.quick);
    }

    #[test]
    fn seaorm_defaults_to_postgres_and_speaks_three_dialects() {
        let Ok(Parsed::Run(args)) = parse_words("--adapter seaorm") else {
            panic!("must parse");
        };
        assert_eq!(args.adapter, Adapter::SeaOrm);
        assert_eq!(args.dialect, Dialect::Postgres);
        for (words, dialect) in [
            ("--adapter seaorm --dialect mysql", Dialect::Mysql),
            ("--dialect=sqlite --adapter=seaorm", Dialect::Sqlite),
        ] {
            let Ok(Parsed::Run(args)) = parse_words(words) else {
                panic!("{words} must parse");
            };
            assert_eq!(args.dialect, dialect);
        }
    }

    #[test]
    fn unsupported_combinations_name_the_adapters_dialects() {
        let error = parse_words("--adapter tokio-postgres --dialect sqlite").unwrap_err();
        assert!(error.contains("does not support dialect sqlite"), "{error}");
        assert!(error.contains("supports: postgres"), "{error}");
    }

    #[test]
    fn unknown_values_list_the_known_ones() {
        let error = parse_words("--adapter hibernate").unwrap_err();
        assert!(error.contains("tokio-postgres, seaorm, diesel"), "{error}");
        let error = parse_words("--dialect oracle").unwrap_err();
        assert!(error.contains("sqlite"), "{error}");
        let error = parse_words("--scenario nope").unwrap_err();
        assert!(error.contains("idle_waiters"), "{error}");
        assert!(parse_words("--adapter").is_err());
        assert!(parse_words("--fast").is_err());
    }
}
