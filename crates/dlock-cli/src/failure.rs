//! What went wrong, as a message that says what to do and an exit code.

use std::error::Error as StdError;
use std::process::ExitCode;

use dlock_seaorm::Error;

use crate::terminal;

/// A failed command. The variant decides the exit code (see `EXIT_CODES` in `main.rs`).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The lock, its table or its token is not what was asked for: exit code 1.
    Refused(String),
    /// Bad arguments: exit code 2.
    Usage(String),
    /// The database could not be reached or failed: exit code 3.
    Database(String),
    /// This tool could not run at all: exit code 3.
    Internal(String),
}

impl Failure {
    /// Prints the message to stderr and returns the exit code.
    pub(crate) fn report(self) -> ExitCode {
        let (message, code) = match self {
            Self::Refused(message) => (message, 1),
            Self::Usage(message) => (message, 2),
            Self::Database(message) | Self::Internal(message) => (message, 3),
        };
        // Names, holders and the database's messages can hold escape sequences.
        eprintln!("error: {}", terminal::defanged(&message));
        ExitCode::from(code)
    }

    /// The failure of a dlock operation, with the next step spelled out for this tool.
    pub(crate) fn from_dlock(error: Error) -> Self {
        match error {
            Error::NoSuchTable { table } => Self::Refused(format!(
                "the lock table {table} does not exist in this database; create it with \
                 `dlock init`, or pass --table if the locks are in another table"
            )),
            Error::NoSuchLock { name, table } => Self::Refused(format!(
                "there is no lock named {name:?} in table {table}; run `dlock list` to see \
                 the names"
            )),
            Error::TokenChanged {
                name,
                expected,
                current,
                holder,
            } => {
                let argument = terminal::argument(&name);
                Self::Refused(format!(
                    "refused: lock {argument} now has fencing token {current} (holder: {}), not \
                     {expected}; it changed hands since you looked. Run `dlock inspect \
                     {argument}` and, if it still needs freeing, `dlock release {argument} \
                     --token {current}`",
                    holder
                        .as_deref()
                        .map_or_else(|| "unknown".into(), terminal::shown)
                ))
            }
            Error::CreateTable { ref table, .. } => Self::Database(format!(
                "{error}; to create it with another role, print its SQL with `dlock init \
                 --print-sql --table {table}` (it also lists the privileges dlock needs)"
            )),
            Error::InvalidTableName { .. } | Error::InvalidToken { .. } | Error::EmptyName => {
                Self::Usage(error.to_string())
            }
            Error::NoValueColumn { .. } => Self::Refused(error.to_string()),
            // dlock's messages carry their cause already (`source()` is `None`).
            other => Self::Database(other.to_string()),
        }
    }
}

/// A driver's error (SeaORM's, when connecting) followed by its causes, so its reason is
/// not lost; causes whose text a message already includes are not repeated.
pub(crate) fn with_causes(error: &dyn StdError) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = error.source();
    }
    message
}
