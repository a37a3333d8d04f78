//! `dlock`: see who holds the distributed locks of a dlock lock table, and free a stuck
//! one safely. See the README for the commands, their output and the exit codes.

mod connect;
mod failure;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dlock_seaorm::{FencingToken, ForceRelease, LockAdmin, TableName};

use crate::failure::Failure;

const EXIT_CODES: &str = "\
Exit codes:
  0  done (also: `release` of a lock that is already free or revoked)
  1  refused or not found: the token changed, no such lock, no such table
  2  usage: bad arguments, a bad or unsupported URL, an invalid table name or token
  3  the database could not be reached, or a statement failed";

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
    /// Every lock in the table: state, fencing token, holder, lease.
    List,
    /// One lock in detail, with its owner id and absolute times.
    Inspect {
        /// The lock's name, as `list` shows it.
        name: String,
    },
    /// Take a lock from whoever holds it, only if its fencing token is still TOKEN.
    ///
    /// The token is the one `list` or `inspect` showed: if the lock changed hands since,
    /// nothing is changed and the current token and holder are shown. The lock is
    /// revoked: its holder learns of the loss at its next renewal, and the lock frees
    /// when the revoked lease ends, so that nobody gets in before the holder knows. With
    /// --now it frees at once.
    Release {
        /// The lock's name, as `list` shows it.
        name: String,
        /// The fencing token the lock must still have.
        #[arg(long)]
        token: FencingToken,
        /// Free the lock at once instead of when its lease ends. Only for a holder known
        /// to be dead: a live one goes on running until its next renewal, alongside
        /// whoever acquires the lock meanwhile.
        #[arg(long)]
        now: bool,
    },
    /// Create the lock table if it does not exist (for SQLite, the file too).
    Init,
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
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report(),
    }
}

/// Runs the command and returns what to print.
async fn run(cli: Cli) -> Result<String, Failure> {
    let url = cli.url.ok_or_else(|| {
        Failure::Usage(
            "no database URL: pass --url (postgres://…, mysql://… or sqlite:PATH) or set \
             DATABASE_URL"
                .into(),
        )
    })?;
    let table = TableName::parse(&cli.table).map_err(Failure::from_dlock)?;
    let creates = matches!(cli.command, Command::Init);
    let db = connect::connect(&url, creates).await?;
    let admin = LockAdmin::with_table(db, table);
    let fail = Failure::from_dlock;
    let json = cli.json;
    Ok(match cli.command {
        Command::List => {
            let locks = admin.list().await.map_err(fail)?;
            render::list(&locks, admin.table(), json)
        }
        Command::Inspect { name } => {
            render::inspect(&admin.inspect(&name).await.map_err(fail)?, json)
        }
        Command::Release { name, token, now } => {
            let outcome: ForceRelease = if now {
                admin.force_release_now(&name, token).await
            } else {
                admin.force_release(&name, token).await
            }
            .map_err(fail)?;
            render::released(&outcome, json)
        }
        Command::Init => {
            admin.create_table().await.map_err(fail)?;
            render::initialised(admin.table(), json)
        }
    })
}
