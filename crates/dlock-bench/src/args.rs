//! The command line.

use clap::{CommandFactory, Parser, ValueEnum};
use dlock_core::Dialect;
use dlock_testkit::{Backend, Route, dialect_parser};

use crate::scenarios::Scenario;

/// Runs the benchmark's scenarios against one adapter and dialect beside the database's
/// own floors, printing one JSON object per result on stdout and progress on stderr.
///
/// Database URLs: DLOCK_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
/// DLOCK_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306/test), DLOCK_TEST_SQLITE_URL
/// (default: a new file in a temporary directory, removed at the end of the run).
#[derive(Debug, Parser)]
#[command(name = "dlock-bench")]
pub(crate) struct Args {
    /// The adapter to measure.
    #[arg(long, value_enum, default_value_t = Backend::TokioPostgres)]
    pub(crate) adapter: Backend,
    /// The database [default: the adapter's first, postgres]
    #[arg(long, value_parser = dialect_parser())]
    dialect: Option<Dialect>,
    /// Only these scenarios, always run in the benchmark's order [default: all]
    #[arg(long, alias = "scenarios", value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Shorter runs: the whole default run takes under a minute.
    #[arg(long)]
    pub(crate) quick: bool,
    /// `pgbouncer`: PostgreSQL through PgBouncer in transaction mode
    /// (DLOCK_TEST_PGBOUNCER_URL, default postgres://postgres@127.0.0.1:6432/test; start it
    /// with crates/dlock-testkit/rigs/pgbouncer up), the adapter set up for a pooler that
    /// loses prepared statements; `direct-unnamed`: that adapter setting without the
    /// pooler. The floors go through the same pool.
    #[arg(long, default_value = "direct", value_parser = ["direct", "pgbouncer", "direct-unnamed"])]
    route: String,
}

impl Args {
    /// The command line, or the process exits with clap's message (status 2).
    pub(crate) fn parse_or_exit() -> Self {
        let args = Self::parse();
        let route_check = match args.route() {
            Route::TransactionPooler | Route::DirectUnnamed
                if args.dialect() != Dialect::Postgres =>
            {
                Err(format!("--route {} goes to PostgreSQL only", args.route))
            }
            _ => Ok(()),
        };
        if let Err(message) = args.adapter.check(args.dialect()).and(route_check) {
            Self::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
        args
    }

    /// How the pools reach the database.
    pub(crate) fn route(&self) -> Route {
        Route::named(&self.route).expect("BUG: clap accepts only route names")
    }

    /// The dialect asked for, else the adapter's first.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect.unwrap_or(self.adapter.dialects()[0])
    }

    /// The scenarios to run, in the benchmark's fixed order, without duplicates.
    pub(crate) fn scenarios(&self) -> Vec<Scenario> {
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|scenario| self.scenario.is_empty() || self.scenario.contains(scenario))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("dlock-bench").chain(words.split_whitespace()))
    }

    #[test]
    fn defaults_run_everything_on_tokio_postgres() {
        let args = parse("").expect("no arguments must parse");
        assert_eq!(args.adapter, Backend::TokioPostgres);
        assert_eq!(args.dialect(), Dialect::Postgres);
        assert_eq!(args.scenarios(), Scenario::value_variants());
        assert!(!args.quick);
    }

    #[test]
    fn scenarios_keep_the_fixed_order() {
        let args = parse("--scenario=skip,uncontended --quick").expect("must parse");
        assert_eq!(args.scenarios(), [Scenario::Uncontended, Scenario::Skip]);
        assert!(args.quick);
    }

    #[test]
    fn diesel_is_its_deadpool_pool_and_speaks_three_dialects() {
        let args = parse("--adapter diesel --dialect=sqlite").expect("must parse");
        assert_eq!(args.adapter, Backend::DieselDeadpool);
        assert_eq!(args.dialect(), Dialect::Sqlite);
        assert!(args.adapter.check(Dialect::Mysql).is_ok());
    }

    #[test]
    fn unsupported_combinations_and_unknown_values_are_refused() {
        let error = Backend::TokioPostgres.check(Dialect::Sqlite).unwrap_err();
        assert!(error.contains("supports: postgres"), "{error}");
        for words in [
            "--adapter hibernate",
            "--dialect oracle",
            "--scenario nope",
            "--fast",
        ] {
            assert!(parse(words).is_err(), "{words}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
