//! SQL dialects: every statement dlock runs, per database.
//!
//! Each dialect module renders the same set of statements ([`Sql`]) for a table name.
//! All times are the database's clock; durations travel as whole milliseconds.

mod mysql;
mod postgres;
mod rw;
mod semaphore;
mod sqlite;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::adapter::{ColumnType, QueryError, Statement, StatementKind, Value};
use crate::{FencingToken, TableName};
pub(crate) use rw::{GATE_SUFFIX, READER_INFIX};

pub(crate) use semaphore::SemaphoreSql;

/// The SQL dialect a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL (and servers speaking its dialect).
    Postgres,
    /// MySQL 8 and MariaDB 10.5 or later.
    Mysql,
    /// SQLite 3.35 or later (for `RETURNING`).
    Sqlite,
}

impl Dialect {
    /// The dialect's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL/MariaDB",
            Self::Sqlite => "SQLite",
        }
    }

    /// The longest lock name, in UTF-8 bytes, that the dialect's lock table can key on.
    ///
    /// PostgreSQL: a B-tree entry must fit in a third of a page (2,704 bytes); 2,000 leaves
    /// room for the tuple header whatever the name compresses to.
    ///
    /// MySQL/MariaDB: the table is keyed on the SHA-256 of the name (an InnoDB key holds
    /// at most 3,072 bytes), so the limit is that of the `TEXT` column holding the name
    /// itself, 65,535 bytes.
    ///
    /// SQLite: keys have no practical limit; 65,535 bytes keeps names portable to MySQL.
    pub fn max_name_bytes(self) -> usize {
        match self {
            Self::Postgres => 2000,
            Self::Mysql | Self::Sqlite => 65_535,
        }
    }

    /// Whether `error` says that the lock table (or its schema) does not exist.
    pub(crate) fn is_missing_table(self, error: &QueryError) -> bool {
        match self {
            Self::Postgres => postgres::is_missing_table(error),
            Self::Mysql => mysql::is_missing_table(error),
            Self::Sqlite => sqlite::is_missing_table(error),
        }
    }

    /// Whether `error` says that a column does not exist: a lock table created before
    /// elections, without the `value` columns.
    pub(crate) fn is_missing_column(self, error: &QueryError) -> bool {
        match self {
            Self::Postgres => error.code() == Some("42703"),
            Self::Mysql => matches!(error.code(), Some("1054" | "42S22")),
            Self::Sqlite => error.to_string().contains("no such column"),
        }
    }

    /// Whether `error` says that the server did not understand the statement: MySQL's
    /// 1064 (`ER_PARSE_ERROR`), which is how MySQL refuses MariaDB's `RETURNING`.
    pub(crate) fn is_syntax_error(self, error: &QueryError) -> bool {
        self == Self::Mysql && error.code() == Some("1064")
    }

    /// Whether `error` says that the statement lost a race with a concurrent one (a
    /// deadlock or serialization failure) and was rolled back, changing nothing.
    pub(crate) fn is_conflict(self, error: &QueryError) -> bool {
        match self {
            Self::Postgres => postgres::is_conflict(error),
            Self::Mysql => mysql::is_conflict(error),
            Self::Sqlite => false,
        }
    }

    /// Whether `error`, reported by the database, may pass if the statement is tried again
    /// later: a lock wait or serialization conflict, a connection or resource problem, a
    /// busy SQLite file. Not privileges, credentials, missing objects or bad SQL.
    ///
    /// Each dialect recognises only codes of its own shape (see [`Dialect::ALL`]), so that
    /// [`is_transient_in_any`] can classify an error whose dialect is not known.
    pub(crate) fn is_transient(self, error: &QueryError) -> bool {
        let Some(code) = error.code() else {
            return false;
        };
        match self {
            // Classes 08 (connection), 40 (rollback), 53 (resources), 57 (operator
            // intervention: shutdown, cancel), 55P03 (lock not available) and 25006
            // (read-only transaction: a standby, during a failover, until it is promoted
            // or the address leads to the new primary).
            Self::Postgres => {
                code.len() == 5
                    && (["08", "40", "53", "57"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "55P03"
                        || code == "25006")
            }
            // SQLSTATE as some drivers report it, or the error number (what the adapters
            // report): HY000 is the SQLSTATE of lock wait timeouts (1205), 40001 of
            // deadlocks (1213), 08S01 of lost connections; 1040 too many connections,
            // 2006/2013 server gone.
            Self::Mysql => [
                "HY000", "40001", "08S01", "08004", "1205", "1213", "1040", "2006", "2013",
            ]
            .contains(&code),
            // SQLITE_BUSY and SQLITE_LOCKED with their extended codes, listed rather than
            // masked (`code & 0xff`), which would also match MySQL numbers such as 1030.
            Self::Sqlite => ["5", "261", "517", "773", "6", "262", "518"].contains(&code),
        }
    }

    /// Every dialect. Their error codes do not overlap, so a code alone says what it
    /// means: PostgreSQL's are five-character SQLSTATEs, MySQL/MariaDB's four-digit
    /// numbers from 1000 (or SQLSTATEs that mean the same on PostgreSQL, and `HY000`,
    /// which PostgreSQL never reports), SQLite's result codes below 1000.
    const ALL: [Dialect; 3] = [Self::Postgres, Self::Mysql, Self::Sqlite];

    pub(crate) fn sql(self, table: &TableName) -> Sql {
        match self {
            Self::Postgres => postgres::sql(table),
            Self::Mysql => mysql::sql(table),
            Self::Sqlite => sqlite::sql(table),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Dialect {
    /// The `CREATE TABLE IF NOT EXISTS` statement of the lock table `table` in this
    /// dialect: exactly what [`LockAdmin::create_table`](crate::LockAdmin::create_table)
    /// runs and what a lock runs when it finds no table, for an administrator to run
    /// instead (`dlock init --print-sql` prints it). No other object is needed: no index,
    /// sequence or trigger.
    pub fn create_table_sql(self, table: &TableName) -> String {
        self.sql(table).create_table.sql.to_string()
    }

    /// The statements that add the columns elections need, `value` and `value_term`,
    /// to a lock table created before them (plain locks never read them), for an
    /// administrator to run: dlock never alters a table by itself (see
    /// [`Error::NoValueColumn`](crate::Error::NoValueColumn)). Nullable columns without a
    /// default, which PostgreSQL, MySQL 8, MariaDB and SQLite add without rewriting the
    /// table.
    pub fn add_value_columns_sql(self, table: &TableName) -> String {
        match self {
            Self::Postgres => postgres::add_value_columns(table),
            Self::Mysql => mysql::add_value_columns(table),
            Self::Sqlite => sqlite::add_value_columns(table),
        }
    }
}

/// [`Dialect::is_transient`] for an error whose dialect is not known (an [`Error`] does
/// not record it): the dialects' codes do not overlap (see [`Dialect::ALL`]), so this
/// agrees with the dialect that reported it.
///
/// [`Error`]: crate::Error
pub(crate) fn is_transient_in_any(error: &QueryError) -> bool {
    Dialect::ALL
        .into_iter()
        .any(|dialect| dialect.is_transient(error))
}

/// Why the database refused us, when retrying cannot help until someone changes its
/// users or grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The server rejected the credentials: wrong password, unknown user, no
    /// `pg_hba.conf` entry.
    Authentication,
    /// The user lacks a privilege on the lock table (or its schema or database).
    Privilege,
}

/// PostgreSQL `invalid_authorization_specification` (unknown role, no `pg_hba.conf`
/// entry; also MySQL's SQLSTATE for 1045) and `invalid_password`; MySQL/MariaDB 1045
/// `ER_ACCESS_DENIED_ERROR` and 1698 `ER_ACCESS_DENIED_NO_PASSWORD_ERROR`.
const AUTHENTICATION_CODES: [&str; 4] = ["28000", "28P01", "1045", "1698"];

/// PostgreSQL `insufficient_privilege`; MySQL/MariaDB 1044 (no access to the database),
/// 1142 (table), 1143 (column), 1227 (a global privilege). Not MySQL's SQLSTATE 42000,
/// which syntax errors share.
const PRIVILEGE_CODES: [&str; 5] = ["42501", "1044", "1142", "1143", "1227"];

/// Whether `error` is the database refusing our credentials or a privilege, in any
/// dialect (the codes do not overlap, see [`Dialect::ALL`]).
pub(crate) fn refusal(error: &QueryError) -> Option<Refusal> {
    let code = error.code()?;
    if AUTHENTICATION_CODES.contains(&code) {
        Some(Refusal::Authentication)
    } else if PRIVILEGE_CODES.contains(&code) {
        Some(Refusal::Privilege)
    } else {
        None
    }
}

/// The statements of one dialect for one table. Parameters, by statement:
///
/// | statement       | parameters                  | result                                  |
/// |-----------------|-----------------------------|-----------------------------------------|
/// | `create_table`  | —                           | —                                       |
/// | `acquire`       | name, owner, holder, ttl_ms | one row `(fencing)` iff acquired (\*)   |
/// | `acquire_in_turn` | as `acquire`              | as `acquire`, or a row `(NULL)` when another waiter had the turn |
/// | `read_token`    | name, owner                 | `(fencing)` iff `owner` holds it        |
/// | `probe`         | name, ttl_ms (\*\*\*)        | `(holder, remaining_ms, fencing)` iff held |
/// | `renew`         | name, owner, ttl_ms         | iff still ours: a row `(db_now_ms)` (\*\*) |
/// | `release`       | name, owner, channel        | iff still ours: 1 affected row, or a row `(watched)` (\*\*\*\*\*) |
/// | `notify`        | channel, name               | — (wakes listening waiters)             |
/// | `watch`         | name                        | `(1)` iff it now tells releasers of `name` that this process waits |
/// | `unwatch`       | name                        | `(1)` iff it withdrew one `watch`       |
/// | `fence`         | name, owner, fencing        | one row iff still ours, locked          |
/// | `list`          | —                           | one `INFO` row per lock, by name        |
/// | `inspect`       | name                        | the lock's `INFO` row, if it has one    |
/// | `revoke`        | name, fencing               | 1 affected row iff held with that token |
/// | `force_release` | name, fencing               | 1 affected row iff held or revoked, that token |
/// | `proclaim`      | name, owner, value          | 1 affected row iff still ours (\*\*\*\*)  |
/// | `leader`        | name                        | `LEADER` row iff held and proclaimed    |
///
/// Each [`Template`] lists the parameters in the order its placeholders take them, since
/// MySQL's `?` placeholders are positional and cannot be referred to twice.
///
/// (\*) Where the dialect has no `RETURNING` on an upsert (MySQL), `read_token` is set:
/// `acquire` is executed for its affected-row count and, unless that is 0, `read_token`
/// reads the token. Owner ids are unique per acquisition, so that read needs no
/// transaction or connection in common with the upsert.
///
/// (\*\*) Where `renew_returns_clock`; elsewhere (MySQL) 1 affected row.
///
/// (\*\*\*) The prober's TTL: on PostgreSQL, after a failover, every lock is held by the
/// lock-delay for one lease, and the probe says so (see `postgres.rs`). Other dialects
/// ignore it.
///
/// (\*\*\*\*) MySQL counts a row whose values did not change as unaffected unless the
/// driver asks for found rows, so 0 is confirmed with `leader`.
///
/// **Elections** publish a value with the lease: `proclaim` stores it in `value` and the
/// row's current fencing token in `value_term`, so a value is the current leader's
/// only while `value_term = fencing` — the acquisition (`acquire`, which never reads
/// or writes these columns, so plain locks work on tables without them) moves `fencing`
/// on and leaves the last leader's value behind, disowned.
///
/// A row is **free** when `expires_at` is NULL (released) or past, whatever `owner` says:
/// `revoke` clears `owner` but keeps the lease's end, so the revoked holder's renewal
/// (owner-checked) fails and tells it before anyone can acquire, while `release` and
/// `force_release` clear both and free the lock at once. `probe` reports a revoked lease
/// as held, by "revoked by an operator (was: …)", until it ends.
///
/// `notify` and `channel` are set where the dialect can wake waiters in other processes
/// (PostgreSQL's `LISTEN`/`NOTIFY`).
///
/// (\*\*\*\*\*) **Notices only when someone waits**: where the dialect notifies, a process
/// that waits for a lock runs `watch` on its listening connection before it looks at the
/// lock, and `unwatch` when it stops waiting; `release` then returns 1 in `watched` when
/// some process watches the name, and the notice is sent only then: by the release
/// itself, in its transaction, where `release_notifies`, else with `notify`. See
/// `postgres.rs` for why no release can slip between a waiter's `watch` and its look.
///
/// **One attempt per release notice**: where the dialect notifies, a notice wakes every
/// waiting process, and all but one of their attempts would fail. So a process woken by
/// one attempts with `acquire_in_turn`, which only one transaction at a time gets past
/// the lock's turn; the others return at once, having touched no row (see `turns_key` in
/// `postgres.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) create_table: Template,
    pub(crate) acquire: Template,
    pub(crate) read_token: Option<Template>,
    /// `acquire` returning `(owner, fencing)` of the row, whoever holds it, where the
    /// server may support it (MariaDB, not MySQL: tried first, see `inner.rs`), saving
    /// `read_token`'s round trip.
    pub(crate) acquire_returning: Option<Template>,
    pub(crate) probe: Template,
    pub(crate) renew: Template,
    /// Whether `renew` returns the database's clock (`RETURNING`): not on MySQL.
    pub(crate) renew_returns_clock: bool,
    pub(crate) release: Template,
    /// Whether `release` notifies the waiters it reports (`watched`) itself, in its own
    /// transaction (PostgreSQL), so that no `notify` follows it.
    pub(crate) release_notifies: bool,
    pub(crate) fence: Template,
    pub(crate) list: Template,
    pub(crate) inspect: Template,
    pub(crate) revoke: Template,
    pub(crate) force_release: Template,
    pub(crate) proclaim: Template,
    pub(crate) leader: Template,
    /// `list` and `inspect` for a table without the `value` columns: `INFO` with a NULL
    /// value.
    pub(crate) list_without_value: Template,
    pub(crate) inspect_without_value: Template,
    /// `(name, value)` rows of the settings that decide whether acknowledged acquisitions
    /// survive a crash or failover (see `durability.rs`).
    pub(crate) durability: Template,
    pub(crate) notify: Option<Template>,
    /// The channel waiters listen on and `notify` notifies.
    pub(crate) channel: Option<Arc<str>>,
    /// Set with `notify`: waiters announce themselves, and `release` reports them.
    pub(crate) watch: Option<Template>,
    pub(crate) unwatch: Option<Template>,
    /// Set with `watch`: `acquire` for a waiter woken by a release notice, which attempts
    /// only in its turn.
    pub(crate) acquire_in_turn: Option<Template>,
}

/// The statements of a multi-lock, per dialect. They bind the set of names as one
/// parameter (`Name`), a JSON array of distinct names in name order (see
/// `name_set::json_array`), so that their text is the same for any number of names:
///
/// | statement      | parameters                     | result                                     |
/// |----------------|--------------------------------|--------------------------------------------|
/// | `acquire`      | names, owner, holder, ttl_ms   | `(name, fencing)` per name iff it took all (\*) |
/// | `read_tokens`  | names, owner                   | `(name, fencing)` per name `owner` holds   |
/// | `create_rows`  | names                          | — (adds the missing rows, free)            |
/// | `probe`        | names, ttl_ms (as `probe`)     | `(holder, remaining_ms)` of the held name whose lease ends last |
/// | `renew`        | names, owner, ttl_ms           | as `renew`, per name renewed               |
/// | `release`      | names, owner                   | per name freed: 1 affected row, or (where `release` returns whether anyone watches) a row `(1)` |
/// | `fence`        | names, owner                   | one row per name still ours, locked        |
///
/// (\*) With `read_tokens` set (MySQL) it is executed: as many affected rows as names
/// when it took all, fewer when rows are missing (it took those it found: the caller
/// frees them), and an error that [`Dialect::is_not_all_free`] recognises when one was
/// not free (it took none). Elsewhere, where `create_rows` is set (PostgreSQL), a row
/// `(NULL, NULL)` says rows are missing and it took none.
///
/// Rows are created free by `create_rows` (PostgreSQL, MySQL) or by `acquire` itself
/// (SQLite), never held by an acquisition that then fails, so no partial acquisition is
/// ever visible. Each row is the single lock's row of that name: its token, its holder,
/// its expiry; a lock and a multi-lock over one name exclude each other.
#[derive(Debug, Clone)]
pub(crate) struct SetTemplates {
    acquire: Template,
    read_tokens: Option<Template>,
    create_rows: Option<Template>,
    probe: Template,
    renew: Template,
    release: Template,
    fence: Template,
}

/// A multi-lock's own statements: those that have no counterpart among a lock's (the
/// others are in its [`Sql`], see [`Dialect::set_sql`]).
#[derive(Debug, Clone)]
pub(crate) struct SetSql {
    acquire: Template,
    read_tokens: Option<Template>,
    create_rows: Option<Template>,
}

/// What a multi-lock's `acquire` and `read_tokens` return: name, fencing token.
const NAMED_FENCING: &[ColumnType] = &[ColumnType::Text, ColumnType::Int];

impl SetSql {
    /// With `read_tokens` set, `acquire` returns no rows: it is executed, not queried.
    pub(crate) fn acquire(
        &self,
        names: &str,
        owner: &str,
        holder: &str,
        ttl: Duration,
    ) -> Statement {
        let args = Args::acquisition(names, owner, holder, ttl);
        let columns = if self.read_tokens.is_some() {
            &[]
        } else {
            NAMED_FENCING
        };
        bind(StatementKind::Acquire, &self.acquire, &args, columns)
    }

    pub(crate) fn read_tokens(&self, names: &str, owner: &str) -> Option<Statement> {
        let args = Args {
            name: names,
            owner,
            ..Args::default()
        };
        let template = self.read_tokens.as_ref()?;
        Some(bind(
            StatementKind::ReadToken,
            template,
            &args,
            NAMED_FENCING,
        ))
    }

    pub(crate) fn create_rows(&self, names: &str) -> Option<Statement> {
        let args = Args {
            name: names,
            ..Args::default()
        };
        let template = self.create_rows.as_ref()?;
        Some(bind(StatementKind::CreateRows, template, &args, &[]))
    }
}

impl Dialect {
    /// The statements of a multi-lock on `table`: a lock's [`Sql`] whose probe, renewal,
    /// release and fence act on the set (bound as a lock's name is), and the set's own.
    pub(crate) fn set_sql(self, table: &TableName) -> (Sql, SetSql) {
        let set = match self {
            Self::Postgres => postgres::set_templates(table),
            Self::Mysql => mysql::set_templates(table),
            Self::Sqlite => sqlite::set_templates(table),
        };
        let sql = Sql {
            probe: set.probe,
            renew: set.renew,
            release: set.release,
            // A multi-lock's release notifies every name, with `notify` (see `NameSet`).
            release_notifies: false,
            fence: set.fence,
            ..self.sql(table)
        };
        let own = SetSql {
            acquire: set.acquire,
            read_tokens: set.read_tokens,
            create_rows: set.create_rows,
        };
        (sql, own)
    }

    /// Whether `error` is a multi-lock's acquire refusing because a name was not free
    /// (MySQL, which has no other way to take all rows or none in one statement).
    pub(crate) fn is_not_all_free(self, error: &QueryError) -> bool {
        self == Self::Mysql && mysql::is_not_all_free(error)
    }
}

/// A value bound to a statement of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    Name,
    Owner,
    Holder,
    TtlMs,
    Token,
    Channel,
    Value,
}

/// SQL text and the parameters its placeholders take, in order.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    sql: Arc<str>,
    params: &'static [Param],
}

impl Template {
    fn new(sql: String, params: &'static [Param]) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// The values a statement may bind.
#[derive(Debug, Default)]
struct Args<'a> {
    name: &'a str,
    owner: &'a str,
    holder: &'a str,
    ttl: Duration,
    token: i64,
    channel: &'a str,
    value: &'a str,
}

impl<'a> Args<'a> {
    /// The values of an acquire: `owner` takes `name` for `ttl`, shown as `holder`.
    fn acquisition(name: &'a str, owner: &'a str, holder: &'a str, ttl: Duration) -> Self {
        Self {
            name,
            owner,
            holder,
            ttl,
            ..Self::default()
        }
    }
}

const FENCING: &[ColumnType] = &[ColumnType::Int];
const OWNER_AND_FENCING: &[ColumnType] = &[ColumnType::Text, ColumnType::Int];
/// `release` where waiters announce themselves: 1 if some process waits for the lock.
const WATCHED: &[ColumnType] = &[ColumnType::Int];
/// `watch` and `unwatch`: 1 if done.
const DONE: &[ColumnType] = &[ColumnType::Int];
const HOLDER: &[ColumnType] = &[ColumnType::Text, ColumnType::Int, ColumnType::Int];
const SETTING: &[ColumnType] = &[ColumnType::Text, ColumnType::Text];

/// What `list` and `inspect` return per lock: name, owner, fencing, holder, then
/// `acquired_at`, `expires_at` and the database's current time as Unix epoch
/// milliseconds, then 1 if the lease is live by the database's clock, else 0, then the
/// value its leader proclaimed for this acquisition (NULL if none). Times come as
/// integers because [`Value`] has no time type, and with the database's "now" so that
/// every relative time is measured on one clock.
pub(crate) const INFO: &[ColumnType] = &[
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Int,
    ColumnType::Text,
    ColumnType::Int,
    ColumnType::Int,
    ColumnType::Int,
    ColumnType::Int,
    ColumnType::Text,
];

/// What `leader` returns: the value, the holder, the fencing token (the term), when it
/// was acquired (Unix epoch milliseconds) and how many milliseconds its lease has left,
/// by the database's clock.
pub(crate) const LEADER: &[ColumnType] = &[
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Int,
    ColumnType::Int,
    ColumnType::Int,
];

/// The SQL of the value a leader proclaimed for the row's current acquisition, NULL if
/// it proclaimed none (or the value is a former leader's).
const CURRENT_VALUE: &str = "CASE WHEN value_term = fencing THEN value END";

/// What `list` and `inspect` select as the value: [`CURRENT_VALUE`], or NULL for a
/// table without the `value` columns.
fn value_column(with_value: bool) -> &'static str {
    if with_value { CURRENT_VALUE } else { "NULL" }
}

impl Sql {
    pub(crate) fn create_table(&self) -> Statement {
        bind(
            StatementKind::CreateTable,
            &self.create_table,
            &Args::default(),
            &[],
        )
    }

    /// With `read_token` set, `acquire` returns no rows: it is executed, not queried.
    pub(crate) fn acquire(
        &self,
        name: &str,
        owner: &str,
        holder: &str,
        ttl: Duration,
    ) -> Statement {
        let args = Args::acquisition(name, owner, holder, ttl);
        let columns = if self.read_token.is_some() {
            &[]
        } else {
            FENCING
        };
        bind(StatementKind::Acquire, &self.acquire, &args, columns)
    }

    /// `acquire` for a waiter woken by a release notice: it attempts only if it gets the
    /// lock's turn, and answers a row `(NULL)` if another waiter has it; where the dialect
    /// has turns.
    pub(crate) fn acquire_in_turn(
        &self,
        name: &str,
        owner: &str,
        holder: &str,
        ttl: Duration,
    ) -> Option<Statement> {
        let args = Args::acquisition(name, owner, holder, ttl);
        Some(bind(
            StatementKind::Acquire,
            self.acquire_in_turn.as_ref()?,
            &args,
            FENCING,
        ))
    }

    /// `acquire` with `RETURNING owner, fencing`, where the dialect's server may take it.
    pub(crate) fn acquire_returning(
        &self,
        name: &str,
        owner: &str,
        holder: &str,
        ttl: Duration,
    ) -> Option<Statement> {
        let args = Args::acquisition(name, owner, holder, ttl);
        Some(bind(
            StatementKind::Acquire,
            self.acquire_returning.as_ref()?,
            &args,
            OWNER_AND_FENCING,
        ))
    }

    /// The token read that follows an executed `acquire`, for dialects that need one.
    pub(crate) fn read_token(&self, name: &str, owner: &str) -> Option<Statement> {
        let args = Args {
            name,
            owner,
            ..Args::default()
        };
        Some(bind(
            StatementKind::ReadToken,
            self.read_token.as_ref()?,
            &args,
            FENCING,
        ))
    }

    /// `ttl` is the prober's own TTL: after a failover, its lock-delay (PostgreSQL).
    pub(crate) fn probe(&self, name: &str, ttl: Duration) -> Statement {
        let args = Args {
            name,
            ttl,
            ..Args::default()
        };
        bind(StatementKind::Probe, &self.probe, &args, HOLDER)
    }

    /// Where the dialect can (`renew_returns_clock`), the renewal returns one row with the
    /// database's clock in epoch milliseconds iff it renewed; elsewhere it is executed for
    /// its affected-row count.
    pub(crate) fn renew(&self, name: &str, owner: &str, ttl: Duration) -> Statement {
        let args = Args {
            name,
            owner,
            ttl,
            ..Args::default()
        };
        let columns = if self.renew_returns_clock {
            FENCING
        } else {
            &[]
        };
        bind(StatementKind::Renew, &self.renew, &args, columns)
    }

    /// Where waiters announce themselves (`watch` is set), the release returns one row
    /// `(watched)` iff it released; elsewhere it is executed for its affected-row count.
    pub(crate) fn release(&self, name: &str, owner: &str) -> Statement {
        let args = Args {
            name,
            owner,
            channel: self.channel.as_deref().unwrap_or_default(),
            ..Args::default()
        };
        let columns = if self.watch.is_some() { WATCHED } else { &[] };
        bind(StatementKind::Release, &self.release, &args, columns)
    }

    /// Announces, for the session that runs it (the listening connection), that this
    /// process waits for `name`; where the dialect notifies.
    pub(crate) fn watch(&self, name: &str) -> Option<Statement> {
        let args = Args {
            name,
            ..Args::default()
        };
        Some(bind(
            StatementKind::Watch,
            self.watch.as_ref()?,
            &args,
            DONE,
        ))
    }

    /// Withdraws one [`watch`](Self::watch) of `name`, on the session that ran it.
    pub(crate) fn unwatch(&self, name: &str) -> Option<Statement> {
        let args = Args {
            name,
            ..Args::default()
        };
        Some(bind(
            StatementKind::Watch,
            self.unwatch.as_ref()?,
            &args,
            DONE,
        ))
    }

    /// The notice that `name` was released, for dialects that can send one.
    pub(crate) fn notify(&self, name: &str) -> Option<Statement> {
        let args = Args {
            name,
            channel: self.channel.as_deref()?,
            ..Args::default()
        };
        Some(bind(
            StatementKind::Notify,
            self.notify.as_ref()?,
            &args,
            &[],
        ))
    }

    pub(crate) fn fence(&self, name: &str, owner: &str, token: FencingToken) -> Statement {
        let args = Args {
            name,
            owner,
            token: token.get(),
            ..Args::default()
        };
        bind(StatementKind::Fence, &self.fence, &args, FENCING)
    }

    pub(crate) fn durability(&self) -> Statement {
        bind(
            StatementKind::Durability,
            &self.durability,
            &Args::default(),
            SETTING,
        )
    }

    /// `list`, or, `with_value` false, the one for a table without the `value` columns.
    pub(crate) fn list(&self, with_value: bool) -> Statement {
        let template = match with_value {
            true => &self.list,
            false => &self.list_without_value,
        };
        bind(StatementKind::List, template, &Args::default(), INFO)
    }

    /// `inspect`, or, `with_value` false, the one for a table without the `value` columns.
    pub(crate) fn inspect(&self, name: &str, with_value: bool) -> Statement {
        let args = Args {
            name,
            ..Args::default()
        };
        let template = match with_value {
            true => &self.inspect,
            false => &self.inspect_without_value,
        };
        bind(StatementKind::Inspect, template, &args, INFO)
    }

    /// Publishes `value` as the leader's, if `owner` still holds a live lease.
    pub(crate) fn proclaim(&self, name: &str, owner: &str, value: &str) -> Statement {
        let args = Args {
            name,
            owner,
            value,
            ..Args::default()
        };
        bind(StatementKind::Proclaim, &self.proclaim, &args, &[])
    }

    /// The current leader of the election `name`: a live lease whose holder proclaimed.
    pub(crate) fn leader(&self, name: &str) -> Statement {
        let args = Args {
            name,
            ..Args::default()
        };
        bind(StatementKind::Leader, &self.leader, &args, LEADER)
    }

    /// Takes the lock from whoever holds it, but only while its fencing token is
    /// `token`; it frees when the revoked lease ends.
    pub(crate) fn revoke(&self, name: &str, token: FencingToken) -> Statement {
        let args = Args {
            name,
            token: token.get(),
            ..Args::default()
        };
        bind(StatementKind::Revoke, &self.revoke, &args, &[])
    }

    /// Frees the lock at once, held or revoked, but only while its fencing token is
    /// `token`.
    pub(crate) fn force_release(&self, name: &str, token: FencingToken) -> Statement {
        let args = Args {
            name,
            token: token.get(),
            ..Args::default()
        };
        bind(StatementKind::ForceRelease, &self.force_release, &args, &[])
    }
}

fn bind(
    kind: StatementKind,
    template: &Template,
    args: &Args<'_>,
    columns: &'static [ColumnType],
) -> Statement {
    let params = template
        .params
        .iter()
        .map(|param| match param {
            Param::Name => Value::Text(args.name.to_owned()),
            Param::Owner => Value::Text(args.owner.to_owned()),
            Param::Holder => Value::Text(args.holder.to_owned()),
            Param::TtlMs => millis(args.ttl),
            Param::Token => Value::Int(args.token),
            Param::Channel => Value::Text(args.channel.to_owned()),
            Param::Value => Value::Text(args.value.to_owned()),
        })
        .collect();
    Statement {
        kind,
        sql: Arc::clone(&template.sql),
        params,
        columns,
    }
}

/// The notification channel of a lock table: `dlock:` and the table's name, or a hash of
/// it when that would exceed PostgreSQL's 63-byte identifiers. Stable across processes.
fn channel(table: &TableName) -> Arc<str> {
    let readable = format!("dlock:{table}");
    if readable.len() <= 63 {
        return readable.into();
    }
    format!("dlock:{:016x}", fnv1a(&readable)).into()
}

/// FNV-1a: a fixed hash, unlike the standard library's randomly seeded one, so every
/// process computes the same.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Options validation bounds every duration far below `i64::MAX` milliseconds.
fn millis(duration: Duration) -> Value {
    Value::Int(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest placeholder a statement refers to, in its dialect's syntax: MySQL's
    /// `?` are counted, PostgreSQL's `$N` and SQLite's `?N` are numbered.
    pub(super) fn placeholders(dialect: Dialect, sql: &str) -> usize {
        let sigil = match dialect {
            Dialect::Postgres => '$',
            _ => '?',
        };
        if dialect == Dialect::Mysql {
            return sql.matches('?').count();
        }
        sql.split(sigil)
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn every_statement_binds_one_value_per_placeholder() {
        let table = TableName::default();
        for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let sql = dialect.sql(&table);
            let ttl = Duration::from_secs(1);
            let mut statements = vec![
                ("create_table", sql.create_table()),
                ("acquire", sql.acquire("n", "o", "h", ttl)),
                ("probe", sql.probe("n", Duration::from_secs(1))),
                ("renew", sql.renew("n", "o", ttl)),
                ("release", sql.release("n", "o")),
                ("fence", sql.fence("n", "o", FencingToken(1))),
                ("list", sql.list(true)),
                ("list_without_value", sql.list(false)),
                ("inspect", sql.inspect("n", true)),
                ("inspect_without_value", sql.inspect("n", false)),
                ("proclaim", sql.proclaim("n", "o", "v")),
                ("leader", sql.leader("n")),
                ("revoke", sql.revoke("n", FencingToken(1))),
                ("force_release", sql.force_release("n", FencingToken(1))),
            ];
            statements.extend(sql.read_token("n", "o").map(|s| ("read_token", s)));
            statements.extend(
                sql.acquire_returning("n", "o", "h", ttl)
                    .map(|s| ("acquire_returning", s)),
            );
            let (set, own) = dialect.set_sql(&table);
            let names = r#"["a","b"]"#;
            statements.extend([
                ("set acquire", own.acquire(names, "o", "h", ttl)),
                ("set probe", set.probe(names, ttl)),
                ("set renew", set.renew(names, "o", ttl)),
                ("set release", set.release(names, "o")),
                ("set fence", set.fence(names, "o", FencingToken(1))),
            ]);
            statements.extend(own.read_tokens(names, "o").map(|s| ("set read_tokens", s)));
            statements.extend(own.create_rows(names).map(|s| ("set create_rows", s)));
            statements.extend(sql.notify("n").map(|s| ("notify", s)));
            statements.extend(sql.watch("n").map(|s| ("watch", s)));
            statements.extend(sql.unwatch("n").map(|s| ("unwatch", s)));
            statements.extend(
                sql.acquire_in_turn("n", "o", "h", ttl)
                    .map(|s| ("acquire_in_turn", s)),
            );
            for (what, statement) in statements {
                assert_eq!(
                    placeholders(dialect, &statement.sql),
                    statement.params.len(),
                    "{dialect} {what}: {}",
                    statement.sql
                );
            }
        }
    }

    #[test]
    fn the_printed_ddl_is_the_one_run() {
        let table = TableName::parse("ops.locks").expect("a valid name");
        for dialect in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            let printed = dialect.create_table_sql(&table);
            assert_eq!(*dialect.sql(&table).create_table().sql, *printed);
            assert!(
                printed.starts_with("CREATE TABLE IF NOT EXISTS "),
                "{printed}"
            );
        }
    }

    #[test]
    fn only_mysql_reads_the_token_after_the_upsert() {
        let table = TableName::default();
        assert!(Dialect::Mysql.sql(&table).read_token.is_some());
        assert!(Dialect::Postgres.sql(&table).read_token.is_none());
        assert!(Dialect::Sqlite.sql(&table).read_token.is_none());
    }
}
