//! `dlock`: see who holds the distributed locks of a dlock lock table, and free a stuck
//! one safely. The crate's README documents the commands, their output and the exit codes.

mod connect;
mod failure;
mod render;
mod rw_locks;
mod select;
mod semaphores;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use dlock_seaorm::{
    Dialect, Election, Error, FencingToken, ForceRelease, LockAdmin, LockState, RwHolder,
    SeaOrmQueries, SemaphoreRemoval, TableName, TransactionPooler,
};

use crate::failure::Failure;
use crate::select::{Glob, Selection};

/// The exit codes as `--help` prints them. The README's "Exit codes" table is where they
/// are documented; `exit_codes::help_and_readme_agree` holds this text to it.
const EXIT_CODES: &str = "\
Exit codes:
  0  done (also: `release` of a lock that is already free or revoked)
  1  refused or not found: the token changed, no such lock, no such table; `doctor` found a setting that can lose acquisitions
  2  usage: bad arguments, a bad or unsupported URL, an invalid table name or token
  3  the database could not be reached, or a statement failed";

#[cfg(test)]
mod exit_codes {
    /// `(code, meaning)` from the README's table rows: `| 0 | done … |`.
    fn readme_rows() -> Vec<(u8, String)> {
        include_str!("../README.md")
            .lines()
            .filter_map(|line| {
                let cells = line.strip_prefix("| ")?.strip_suffix(" |")?;
                let (code, meaning) = cells.split_once(" | ")?;
                Some((code.parse().ok()?, meaning.to_owned()))
            })
            .collect()
    }

    /// `(code, meaning)` from the help text's lines: `  0  done …`.
    fn help_rows() -> Vec<(u8, String)> {
        super::EXIT_CODES
            .lines()
            .skip(1)
            .map(|line| {
                let (code, meaning) = line.trim_start().split_once("  ").expect("`code  meaning`");
                (code.parse().expect("a numeric code"), meaning.to_owned())
            })
            .collect()
    }

    #[test]
    fn help_and_readme_agree() {
        let readme = readme_rows();
        assert_eq!(readme.len(), 4, "the README's exit code table: {readme:?}");
        assert_eq!(help_rows(), readme);
    }
}

/// See who holds the locks of a dlock lock table, and free a stuck one safely.
#[derive(Debug, Parser)]
#[command(name = "dlock", version, after_help = EXIT_CODES)]
struct Cli {
    /// The database: postgres://…, mysql://… (or mariadb://…), or sqlite:PATH.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    url: Option<String>,

    /// The lock table, `table` or `schema.table`.
    #[arg(long, default_value = TableName::DEFAULT, global = true)]
    table: String,

    /// Print JSON instead of a table (errors still go to stderr as text).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The locks in the table: state, fencing token, holder, lease; then a count.
    ///
    /// Names and holders are shown as they are unless they hold a control character or
    /// another character that does not print: then as bash's $'…' quoting, with those
    /// characters escaped, ready to paste into `dlock inspect`. --json prints them
    /// exactly.
    List {
        /// Only the locks whose name starts with PREFIX (taken literally).
        #[arg(long)]
        prefix: Option<String>,
        /// Only the locks whose whole name matches GLOB: `*` any run of characters, `?`
        /// one character, `\` takes the next one literally.
        #[arg(long = "match", value_name = "GLOB")]
        pattern: Option<String>,
        /// Only the locks in these states (repeat it, or separate them with commas).
        #[arg(long, value_enum, value_delimiter = ',')]
        state: Vec<StateArg>,
        /// Show names and holders whole: by default they are cut at 40 characters.
        #[arg(long)]
        wide: bool,
        /// List the semaphores instead (kept in the companion table, TABLE_slots): each
        /// with its permits and who holds each permit.
        #[arg(long, conflicts_with_all = ["prefix", "pattern", "state", "rw"])]
        semaphores: bool,
        /// The reader-writer locks instead (their rows are in the table's companion,
        /// TABLE_slots): a line per writer and per reader, with the reader's owner id.
        #[arg(long, conflicts_with_all = ["pattern", "state", "wide"])]
        rw: bool,
    },
    /// One lock in detail, with its owner id and absolute times.
    Inspect {
        /// The lock's name, as `list` shows it.
        #[arg(required_unless_present = "semaphore")]
        name: Option<String>,
        /// Inspect the semaphore NAME instead: its permits, and every permit's holder,
        /// token and lease.
        #[arg(long, value_name = "NAME", conflicts_with = "name")]
        semaphore: Option<String>,
        /// NAME is a reader-writer lock: show its writer and each reader.
        #[arg(long, requires = "name")]
        rw: bool,
    },
    /// Take a lock from whoever holds it, only if its fencing token is still TOKEN.
    ///
    /// The token is the one `list` or `inspect` showed: if the lock changed hands since,
    /// nothing is changed and the current token and holder are shown. The lock is
    /// revoked: its holder learns of the loss at its next renewal, and the lock frees
    /// when the revoked lease ends, so that nobody gets in before the holder knows. With
    /// --now it frees at once.
    ///
    /// With --semaphore NAME --permit I, the same for one permit of a semaphore (one
    /// holder), with the token `inspect --semaphore` showed. With --semaphore NAME
    /// --definition, removes the semaphore's recorded number of permits, so that it can
    /// be used with another count (refused while any permit is held; stop every process
    /// using the old count first). With NAME --rw --holder writer|OWNER_ID, the same for
    /// one holder of a reader-writer lock, with the token `inspect --rw` showed.
    Release {
        /// The lock's name, as `list` shows it.
        #[arg(required_unless_present = "semaphore", conflicts_with = "semaphore")]
        name: Option<String>,
        /// The fencing token the lock (or permit) must still have.
        #[arg(long, required_unless_present = "definition")]
        token: Option<FencingToken>,
        /// The semaphore whose permit (--permit) or definition (--definition) to release.
        #[arg(long, value_name = "NAME")]
        semaphore: Option<String>,
        /// Which permit of the semaphore, as `inspect --semaphore` shows it.
        #[arg(long, requires = "semaphore", required_unless_present_any = ["name", "definition"])]
        permit: Option<u32>,
        /// Remove the semaphore's definition (its number of permits) instead.
        #[arg(long, requires = "semaphore", conflicts_with_all = ["permit", "token", "now"])]
        definition: bool,
        /// Free the lock at once instead of when its lease ends. Only for a holder known
        /// to be dead: a live one goes on running until its next renewal, alongside
        /// whoever acquires the lock meanwhile.
        #[arg(long)]
        now: bool,
        /// NAME is a reader-writer lock: release one of its holders (--holder).
        #[arg(long, requires = "holder")]
        rw: bool,
        /// With --rw: `writer`, or a reader's owner id as `list --rw` shows it.
        #[arg(long, requires = "rw")]
        holder: Option<RwHolder>,
    },
    /// Who leads the election NAME (a dlock `Election`): its value, holder, term and
    /// lease, or that nobody leads.
    Leader {
        /// The election's name.
        name: String,
        /// Keep watching: print a line at every change (a new term, a new value, nobody
        /// leading) until interrupted. Reads only; woken by notices on PostgreSQL.
        #[arg(long)]
        watch: bool,
    },
    /// Create the lock table if it does not exist (for SQLite, the file too).
    Init {
        /// Print the SQL instead, with the privileges dlock needs, for an administrator
        /// to run: nothing is connected to. The dialect is the URL's (from its scheme
        /// alone) or --dialect's.
        #[arg(long)]
        print_sql: bool,
        /// The database whose SQL --print-sql prints, when no URL is given.
        #[arg(long, value_enum, requires = "print_sql")]
        dialect: Option<DialectArg>,
        /// The companion table (TABLE_slots) instead, where semaphores and reader-writer
        /// locks keep their rows: the same columns; their releases also delete rows.
        #[arg(long)]
        companion: bool,
    },
    /// Whether the database keeps the acquisitions it acknowledges across a crash or a
    /// failover: the settings that decide it (PostgreSQL fsync, synchronous_commit,
    /// standbys; MySQL/MariaDB innodb_flush_log_at_trx_commit, sync_binlog, Galera;
    /// SQLite synchronous), each with what it does. Exit code 1 when one of them can
    /// lose acquisitions: tokens issued twice, two holders.
    Doctor,
}

/// A lock's state, as `list --state` takes it.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Held,
    Free,
    Expired,
    Revoked,
}

impl From<StateArg> for LockState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Held => Self::Held,
            StateArg::Free => Self::Free,
            StateArg::Expired => Self::Expired,
            StateArg::Revoked => Self::Revoked,
        }
    }
}

/// A database, as `init --dialect` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    Postgres,
    /// MySQL and MariaDB (one dialect).
    #[value(alias = "mariadb")]
    Mysql,
    Sqlite,
}

impl From<DialectArg> for Dialect {
    fn from(dialect: DialectArg) -> Self {
        match dialect {
            DialectArg::Postgres => Self::Postgres,
            DialectArg::Mysql => Self::Mysql,
            DialectArg::Sqlite => Self::Sqlite,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Failure::Internal(format!("cannot start: {error}")).report(),
    };
    match runtime.block_on(run(cli)) {
        Ok(printed) => {
            println!("{}", printed.text);
            if printed.problem {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(failure) => failure.report(),
    }
}

/// What a command prints, and whether what it found is a problem (exit code 1, see
/// `EXIT_CODES`): only `doctor`'s can be.
struct Printed {
    text: String,
    problem: bool,
}

impl From<String> for Printed {
    fn from(text: String) -> Self {
        Self {
            text,
            problem: false,
        }
    }
}

/// The dialect whose SQL `init --print-sql` prints: --dialect's, or the URL's from its
/// scheme; both must agree when both are given.
fn sql_dialect(url: Option<&str>, flag: Option<DialectArg>) -> Result<Dialect, Failure> {
    let from_url = url.map(connect::dialect_of).transpose()?;
    match (from_url, flag.map(Dialect::from)) {
        (Some(from_url), Some(flag)) if from_url != flag => Err(Failure::Usage(format!(
            "--dialect says {flag} but the URL is a {from_url} one; give one of them"
        ))),
        (Some(dialect), _) | (None, Some(dialect)) => Ok(dialect),
        (None, None) => Err(Failure::Usage(
            "which database's SQL? pass --dialect postgres, mysql (MariaDB too) or sqlite, \
             or --url (it is not connected to)"
                .into(),
        )),
    }
}

/// Creates the lock table unless it exists. `CREATE TABLE IF NOT EXISTS` needs the right
/// to create tables even when the table exists (PostgreSQL, MySQL/MariaDB), which a role
/// that only uses the table lacks: look for the table first. Any name will do.
async fn init(admin: &LockAdmin) -> Result<(), Failure> {
    match admin.inspect("").await {
        Ok(_) | Err(Error::NoSuchLock { .. }) => Ok(()),
        Err(Error::NoSuchTable { .. }) => admin.create_table().await.map_err(Failure::from_dlock),
        Err(other) => Err(Failure::from_dlock(other)),
    }
}

/// The locks `list` shows.
fn selection(
    prefix: Option<String>,
    pattern: Option<&str>,
    states: Vec<StateArg>,
) -> Result<Selection, Failure> {
    Ok(Selection {
        prefix,
        pattern: pattern
            .map(Glob::parse)
            .transpose()
            .map_err(|reason| Failure::Usage(format!("--match: {reason}")))?,
        states: states.into_iter().map(LockState::from).collect(),
    })
}

/// Runs the command and returns what to print.
async fn run(cli: Cli) -> Result<Printed, Failure> {
    let mut table = TableName::parse(&cli.table).map_err(Failure::from_dlock)?;
    if let Command::Init {
        companion: true, ..
    } = cli.command
    {
        table = table.companion().map_err(Failure::from_dlock)?;
    }
    if let Command::Init {
        print_sql: true,
        dialect,
        companion,
    } = cli.command
    {
        let dialect = sql_dialect(cli.url.as_deref(), dialect)?;
        return Ok(render::create_table_sql(dialect, &table, companion, cli.json).into());
    }
    let url = cli.url.ok_or_else(|| {
        Failure::Usage(
            "no database URL: pass --url (postgres://…, mysql://… or sqlite:PATH) or set \
             DATABASE_URL"
                .into(),
        )
    })?;
    let creates = matches!(cli.command, Command::Init { .. });
    let db = connect::connect(&url, creates).await?;
    // A handful of statements, where a statement's cost does not matter: run as behind a
    // pooler that loses prepared statements, so that the tool works through PgBouncer in
    // transaction mode whatever its version, and never listens.
    let queries = SeaOrmQueries::new(db)
        .through_pooler(TransactionPooler::LosesPreparedStatements)
        .without_listening();
    if let Command::Leader { name, watch } = cli.command {
        let election = Election::builder(name, queries)
            .table(table.to_string())
            .build()
            .map_err(Failure::from_dlock)?;
        return leader(&election, watch, cli.json).await.map(Into::into);
    }
    let admin = LockAdmin::with_table(queries, table);
    let fail = Failure::from_dlock;
    let json = cli.json;
    let text = match cli.command {
        Command::List {
            prefix, rw: true, ..
        } => {
            let locks = match admin.list_rw().await {
                // No companion table: no reader-writer lock was ever used.
                Err(Error::NoSuchTable { .. }) => Vec::new(),
                other => other.map_err(fail)?,
            };
            let selected: Vec<_> = locks
                .into_iter()
                .filter(|lock| prefix.as_ref().is_none_or(|p| lock.name.starts_with(p)))
                .collect();
            rw_locks::list(&selected, admin.table(), json)
        }
        Command::List {
            prefix,
            pattern,
            state,
            wide,
            semaphores: true,
            ..
        } => {
            let _ = (prefix, pattern, state, wide);
            let semaphores = admin.semaphores().await.map_err(fail)?;
            semaphores::list(&semaphores, admin.table(), json)
        }
        Command::List {
            prefix,
            pattern,
            state,
            wide,
            semaphores: false,
            rw: false,
        } => {
            let selection = selection(prefix, pattern.as_deref(), state)?;
            let locks = admin.list().await.map_err(fail)?;
            render::list(
                &locks,
                &selection,
                admin.table(),
                render::Style { json, wide },
            )
        }
        Command::Inspect {
            semaphore: Some(name),
            ..
        } => semaphores::inspect(&admin.inspect_semaphore(&name).await.map_err(fail)?, json),
        Command::Inspect { name, rw, .. } => {
            let name = name.expect("clap requires a name without --semaphore");
            if rw {
                rw_locks::inspect(&admin.inspect_rw(&name).await.map_err(fail)?, json)
            } else {
                render::inspect(&admin.inspect(&name).await.map_err(fail)?, json)
            }
        }
        Command::Release {
            semaphore: Some(name),
            definition: true,
            ..
        } => {
            let removal = admin.remove_semaphore(&name).await.map_err(fail)?;
            return Ok(Printed {
                text: semaphores::removed(&removal, json),
                problem: matches!(removal, SemaphoreRemoval::InUse(_)),
            });
        }
        Command::Release {
            name,
            token,
            now,
            semaphore,
            permit,
            holder,
            ..
        } => {
            let token = token.expect("clap requires a token without --definition");
            let outcome: ForceRelease = match (semaphore, permit, name, holder) {
                (Some(semaphore), Some(permit), _, _) if now => {
                    admin
                        .force_release_permit_now(&semaphore, permit, token)
                        .await
                }
                (Some(semaphore), Some(permit), _, _) => {
                    admin.force_release_permit(&semaphore, permit, token).await
                }
                (_, _, Some(name), Some(holder)) if now => {
                    admin.force_release_rw_now(&name, &holder, token).await
                }
                (_, _, Some(name), Some(holder)) => {
                    admin.force_release_rw(&name, &holder, token).await
                }
                (_, _, Some(name), None) if now => admin.force_release_now(&name, token).await,
                (_, _, Some(name), None) => admin.force_release(&name, token).await,
                _ => unreachable!("clap requires a name, or --semaphore with --permit"),
            }
            .map_err(fail)?;
            render::released(&outcome, json)
        }
        Command::Init { .. } => {
            init(&admin).await?;
            render::initialised(admin.table(), json)
        }
        Command::Leader { .. } => unreachable!("handled above"),
        Command::Doctor => {
            let durability = admin.durability().await.map_err(fail)?;
            return Ok(Printed {
                text: render::durability(&durability, json),
                problem: !durability.keeps_guarantees(),
            });
        }
    };
    Ok(text.into())
}

/// `dlock leader`: the leader now, or, watching, a line per change (never returns but
/// on an error).
async fn leader(election: &Election, watch: bool, json: bool) -> Result<String, Failure> {
    let name = election.name();
    if !watch {
        let leader = election.leader().await.map_err(Failure::from_dlock)?;
        return Ok(render::leader(name, leader.as_ref(), json));
    }
    let mut observer = election.observe();
    loop {
        let leader = observer.changed().await.map_err(Failure::from_dlock)?;
        println!("{}", render::leader(name, leader.as_ref(), json));
    }
}
