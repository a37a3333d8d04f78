//! sqlx's errors in the core's terms.

use dlock_core::Dialect;
use dlock_core::adapter::{QueryError, QueryErrorKind};

/// A statement that reached the server, or whose connection broke while it ran.
pub(crate) fn statement_error(dialect: Dialect, error: sqlx::Error) -> QueryError {
    let code = database_code(dialect, &error);
    QueryError::new(QueryErrorKind::Statement, code, error)
}

/// A checkout that failed. sqlx reports a full pool and a server that refuses
/// connections alike, as a timeout of the checkout: only a pool with all its connections
/// open was full. A connection the server refused keeps its code (a wrong password),
/// which the core reports as permanent.
pub(crate) fn checkout_error<DB: crate::SqlxDatabase>(
    pool: &sqlx::Pool<DB>,
    error: sqlx::Error,
) -> QueryError {
    let kind = match &error {
        sqlx::Error::PoolTimedOut if pool.size() >= pool.options().get_max_connections() => {
            QueryErrorKind::PoolExhausted
        }
        _ => QueryErrorKind::Unreachable,
    };
    let code = database_code(DB::DIALECT, &error);
    QueryError::new(kind, code, error)
}

/// The database's error code: SQLSTATE on PostgreSQL, the error number on MySQL/MariaDB
/// (its SQLSTATE is too coarse: 42000 is a missing privilege and a syntax error alike),
/// the extended result code on SQLite.
pub(crate) fn database_code(dialect: Dialect, error: &sqlx::Error) -> Option<String> {
    let error = error.as_database_error()?;
    #[cfg(feature = "mysql")]
    if dialect == Dialect::Mysql
        && let Some(error) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
    {
        return Some(error.number().to_string());
    }
    let _ = dialect;
    error.code().map(|code| code.into_owned())
}
