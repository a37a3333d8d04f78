//! Listening for releases (PostgreSQL's `LISTEN`) on a connection of its own.

use std::fmt;
#[cfg(feature = "postgres")]
use std::sync::Arc;

use dlock_core::adapter::{Listen, QueryError, QueryErrorKind, ReleaseNotices, async_trait};

use crate::AnyPool;

/// How waiters hear releases by other processes.
#[derive(Clone)]
pub(crate) enum Listening {
    /// They poll: not PostgreSQL, or listening was turned off.
    Off,
    /// The pool goes through a pooler in transaction mode and no direct connection was
    /// given: the listener refuses at once, saying so, and waiters poll.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    NoDirectConnection {
        /// The pool's notification source.
        source: String,
    },
    /// On a connection of its own.
    #[cfg(feature = "postgres")]
    On(Arc<Connection>),
}

/// Where the listening connection goes.
#[cfg(feature = "postgres")]
pub(crate) struct Connection {
    options: sqlx::postgres::PgConnectOptions,
    /// Given by the user (`listen_at`), not taken from the pool.
    direct: bool,
    source: String,
}

#[cfg(feature = "postgres")]
fn source_of(options: &sqlx::postgres::PgConnectOptions) -> String {
    format!(
        "postgres {} {} {:?} {}",
        options.get_host(),
        options.get_port(),
        options.get_database(),
        options.get_username()
    )
}

impl Listening {
    /// Listening with the pool's connect options, where the pool's database can notify.
    pub(crate) fn new(pool: &AnyPool) -> Self {
        match pool {
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(pool) => {
                let options = (*pool.connect_options()).clone();
                Self::On(Arc::new(Connection {
                    source: source_of(&options),
                    options,
                    direct: false,
                }))
            }
            #[allow(unreachable_patterns)]
            _ => Self::Off,
        }
    }

    /// Not through the pooler: on a direct connection if one was given.
    pub(crate) fn through_pooler(self) -> Self {
        match self {
            #[cfg(feature = "postgres")]
            Self::On(connection) if !connection.direct => Self::NoDirectConnection {
                source: connection.source.clone(),
            },
            other => other,
        }
    }

    /// On a connection opened with `options`, where the pool's database can notify.
    #[cfg(feature = "postgres")]
    pub(crate) fn at(self, options: sqlx::postgres::PgConnectOptions) -> Self {
        let source = match self {
            Self::Off => return Self::Off,
            Self::NoDirectConnection { source } => source,
            Self::On(connection) => connection.source.clone(),
        };
        Self::On(Arc::new(Connection {
            options,
            direct: true,
            source,
        }))
    }

    pub(crate) fn listener(&self) -> Option<&dyn Listen> {
        match self {
            Self::Off => None,
            _ => Some(self),
        }
    }
}

impl fmt::Debug for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::NoDirectConnection { .. } => "no direct connection behind the pooler",
            #[cfg(feature = "postgres")]
            Self::On(connection) if connection.direct => "on the direct connection given",
            #[cfg(feature = "postgres")]
            Self::On(_) => "on the pool's connect options",
        })
    }
}

#[async_trait]
impl Listen for Listening {
    /// The pool's host, port, database and user: the same for a direct connection to the
    /// database behind the pooler, whose releases are the same.
    fn source(&self) -> String {
        match self {
            Self::Off => String::new(),
            Self::NoDirectConnection { source } => source.clone(),
            #[cfg(feature = "postgres")]
            Self::On(connection) => connection.source.clone(),
        }
    }

    async fn listen(&self, channel: &str, notices: ReleaseNotices) -> Result<(), QueryError> {
        let _ = (&channel, &notices); // Unused without PostgreSQL.
        match self {
            Self::Off => Ok(()),
            Self::NoDirectConnection { .. } => Err(QueryError::new(
                QueryErrorKind::Unreachable,
                None,
                "the pool goes through a pooler in transaction mode, which cannot carry \
                 LISTEN, and no direct connection was given to listen on: give the adapter \
                 a URL that reaches PostgreSQL directly (`listen_at`)",
            )),
            #[cfg(feature = "postgres")]
            Self::On(connection) => listen(&connection.options, channel, notices).await,
        }
    }
}

/// `LISTEN` on a connection of its own, opened with `options` outside the user's pool, so
/// that it never takes one of the job's connections.
#[cfg(feature = "postgres")]
pub(crate) async fn listen(
    options: &sqlx::postgres::PgConnectOptions,
    channel: &str,
    notices: ReleaseNotices,
) -> Result<(), QueryError> {
    use sqlx::postgres::{PgListener, PgPoolOptions};

    let unreachable = |error: sqlx::Error| {
        let code = crate::error::database_code(dlock_core::Dialect::Postgres, &error);
        QueryError::new(QueryErrorKind::Unreachable, code, error)
    };
    let own_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&own_pool)
        .await
        .map_err(unreachable)?;
    listener.listen(channel).await.map_err(unreachable)?;
    notices.listening();
    loop {
        // `try_recv` is dropped when another branch wins: a notification it was reading
        // stays in the connection's buffer, and one that arrives while a request runs
        // is kept for the next `try_recv`.
        tokio::select! {
            notice = listener.try_recv() => match notice {
                Ok(Some(notice)) => notices.notify(notice.payload()),
                // The connection was lost: notices may have been missed. End, so that the
                // next waiter listens anew (and probes meanwhile).
                Ok(None) | Err(_) => return Ok(()),
            },
            request = notices.request() => {
                let rows = fetch(&mut listener, request.statement()).await;
                request.reply(rows);
            }
            () = notices.closed() => return Ok(()),
        }
    }
}

/// Runs `statement` on the listening connection: always unnamed, since a `PgListener`
/// reconnects on its own and would lose prepared statements with the connection.
#[cfg(feature = "postgres")]
async fn fetch(
    listener: &mut sqlx::postgres::PgListener,
    statement: &dlock_core::adapter::Statement,
) -> Result<Vec<dlock_core::adapter::Row>, QueryError> {
    use dlock_core::adapter::Value;
    use sqlx::AssertSqlSafe;

    use crate::backend::{bound, decoded};

    let rows = bound!(sqlx::Postgres, statement)
        .persistent(false)
        .fetch_all(&mut *listener)
        .await
        .map_err(|error| crate::error::statement_error(dlock_core::Dialect::Postgres, error))?;
    decoded!(rows, statement)
        .map_err(|error| crate::error::statement_error(dlock_core::Dialect::Postgres, error))
}
