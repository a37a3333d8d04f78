//! Connect options with the settings dlock's locks need from each database.

use sea_orm::ConnectOptions;

/// How long a SQLite connection waits for another connection's write lock before it fails
/// with "database is locked": longer than a fenced transaction holds that lock.
#[cfg(feature = "sqlite")]
const SQLITE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// SeaORM connect options for `url`, with what dlock needs from the database.
///
/// For SQLite, which several processes share through one file:
/// - **WAL journal mode**, so that waiters' reads never block the writer and the writer
///   never blocks them;
/// - **a busy timeout of 10 s**, so that a statement waits for another connection's
///   write lock (held by a fenced transaction, say) instead of failing at once.
///
/// For PostgreSQL and MySQL/MariaDB these are SeaORM's defaults: nothing needs changing.
/// Set the rest (pool size, timeouts) on the returned options as usual. A later
/// `map_sqlx_sqlite_opts` call replaces the SQLite settings above, so repeat them there
/// if you need one.
///
/// # Examples
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use dlock_seaorm::sea_orm::Database;
/// use dlock_seaorm::DistributedLock;
///
/// let mut options = dlock_seaorm::connect_options("sqlite://app.db?mode=rwc");
/// options.max_connections(8);
/// let db = Database::connect(options).await?;
/// let lock = DistributedLock::new("nightly-report", &db)?;
/// # Ok(())
/// # }
/// ```
pub fn connect_options(url: impl Into<String>) -> ConnectOptions {
    #[allow(unused_mut)] // Only SQLite changes anything.
    let mut options = ConnectOptions::new(url);
    #[cfg(feature = "sqlite")]
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
    });
    options
}
