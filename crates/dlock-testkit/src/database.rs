//! The databases tests and tools run against, and what to do when one cannot be reached.

use std::path::PathBuf;

use dlock_core::Dialect;
use libtest_mimic::{Completion, Failed};

/// A database to run against: its URL, from `DLOCK_TEST_{POSTGRES,MYSQL,SQLITE}_URL` or
/// the default (the same as docker-compose.yml's); for SQLite without the variable, a new
/// file in a temporary directory, removed (with its WAL) when this is dropped. Child
/// processes receive the URL, so they share the file.
///
/// [`TestDatabase::pgbouncer`] is PostgreSQL through PgBouncer in transaction mode
/// (`DLOCK_TEST_PGBOUNCER_URL`), which `crates/dlock-testkit/rigs/pgbouncer up` starts.
#[derive(Debug)]
pub struct TestDatabase {
    dialect: Dialect,
    url: String,
    /// The variable that sets the URL.
    variable: &'static str,
    /// The name of the database's kind in messages.
    kind: &'static str,
    temporary_directory: Option<PathBuf>,
}

/// The variable that holds the URL of the PostgreSQL test database behind PgBouncer.
pub const PGBOUNCER_VARIABLE: &str = "DLOCK_TEST_PGBOUNCER_URL";
/// Where `rigs/pgbouncer up` listens.
pub const PGBOUNCER_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:6432/test";

impl TestDatabase {
    /// The environment variable that holds the URL of `dialect`'s test database.
    pub fn variable(dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Mysql => "DLOCK_TEST_MYSQL_URL",
            Dialect::Sqlite => "DLOCK_TEST_SQLITE_URL",
            _ => "DLOCK_TEST_POSTGRES_URL",
        }
    }

    /// The URL used without the variable; none for SQLite, which gets a file of its own.
    pub fn default_url(dialect: Dialect) -> Option<&'static str> {
        match dialect {
            Dialect::Mysql => Some("mysql://root@127.0.0.1:3306/test"),
            Dialect::Sqlite => None,
            _ => Some("postgres://postgres@127.0.0.1:5432/test"),
        }
    }

    /// `dialect`'s test database: the variable's URL, else the default one, else a new
    /// SQLite file in a directory named after `purpose`.
    pub fn new(dialect: Dialect, purpose: &str) -> Result<Self, String> {
        match std::env::var(Self::variable(dialect)).ok() {
            Some(url) => Ok(Self::at(dialect, url)),
            None => Self::default_or_new(dialect, purpose),
        }
    }

    /// The database at `url`, or `dialect`'s default (see [`TestDatabase::new`]) without
    /// one: for a tool whose command line names the URL.
    pub fn given(dialect: Dialect, url: Option<String>, purpose: &str) -> Result<Self, String> {
        match url {
            Some(url) => Ok(Self::at(dialect, url)),
            None => Self::new(dialect, purpose),
        }
    }

    fn at(dialect: Dialect, url: String) -> Self {
        Self {
            dialect,
            url,
            variable: Self::variable(dialect),
            kind: dialect.name(),
            temporary_directory: None,
        }
    }

    /// PostgreSQL through PgBouncer in transaction pooling mode: the URL in
    /// `DLOCK_TEST_PGBOUNCER_URL`, else the rig's (`postgres://postgres@127.0.0.1:6432/test`).
    /// Its [`dialect`](Self::dialect) is PostgreSQL; [`TestDatabase::new`] of PostgreSQL is
    /// the same database without the pooler.
    pub fn pgbouncer() -> Self {
        let url =
            std::env::var(PGBOUNCER_VARIABLE).unwrap_or_else(|_| PGBOUNCER_DEFAULT_URL.to_owned());
        let mut database = Self::at(Dialect::Postgres, url);
        database.variable = PGBOUNCER_VARIABLE;
        database.kind = "PostgreSQL through PgBouncer in transaction mode \
                         (crates/dlock-testkit/rigs/pgbouncer up)";
        database
    }

    /// The database's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn default_or_new(dialect: Dialect, purpose: &str) -> Result<Self, String> {
        if let Some(url) = Self::default_url(dialect) {
            return Ok(Self::at(dialect, url.to_owned()));
        }
        let directory = std::env::temp_dir().join(crate::unique_name(purpose));
        std::fs::create_dir_all(&directory)
            .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
        // `mode=rwc`: create the file on the first connection.
        let url = format!("sqlite://{}/locks.db?mode=rwc", directory.display());
        let mut database = Self::at(dialect, url);
        database.temporary_directory = Some(directory);
        Ok(database)
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// "postgres at postgres://… (set DLOCK_TEST_POSTGRES_URL to change it)", for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} at {} (set {} to change it)",
            self.kind, self.url, self.variable
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(directory) = &self.temporary_directory
            && let Err(error) = std::fs::remove_dir_all(directory)
        {
            eprintln!("cannot remove {}: {error}", directory.display());
        }
    }
}

/// What a test whose database cannot be reached comes to: a failure when `CI` is set (CI
/// must never pass by skipping), else ignored, with `message` printed loudly so that a
/// bare machine's `cargo test` passes without hiding what it did not run.
pub fn unreachable(message: &str) -> Result<Completion, Failed> {
    eprintln!("\n!!! {message}\n");
    if std::env::var_os("CI").is_some() {
        return Err(format!("{message}; CI is set, so this fails instead of skipping").into());
    }
    Ok(Completion::ignored_with(message))
}
