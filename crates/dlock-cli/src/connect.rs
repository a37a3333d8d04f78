//! From a URL to a connection: the scheme picks the database.

use std::time::Duration;

use dlock_seaorm::Dialect;
use dlock_seaorm::sea_orm::{Database, DatabaseConnection};
use url::Url;

use crate::failure::{Failure, with_causes};

/// How long to keep trying to reach the server before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the database at `url`. With `create`, a SQLite file that does not exist
/// is created (for `init`); otherwise a missing file is an error, since it usually means
/// a mistyped path.
pub(crate) async fn connect(url: &str, create: bool) -> Result<DatabaseConnection, Failure> {
    let url = normalise(url, create)?;
    // SQLite as the applications' own connections are: WAL and a busy timeout.
    let mut options = dlock_seaorm::connect_options(url.clone());
    options
        .max_connections(2)
        .min_connections(0)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlx_logging(false);
    Database::connect(options).await.map_err(|error| {
        let check = if url.starts_with("sqlite:") {
            "check the file's path; `dlock init` creates the file"
        } else {
            "check that the server is running and that the URL's host, port, database \
             name, user and password are right"
        };
        Failure::Database(format!(
            "cannot connect to {}: {}; {check}",
            redacted(&url),
            with_causes(&error)
        ))
    })
}

/// The dialect of the database at `url`, from its scheme alone: nothing is connected to.
pub(crate) fn dialect_of(url: &str) -> Result<Dialect, Failure> {
    let (scheme, _) = scheme(url)?;
    Ok(match scheme.as_str() {
        "postgres" | "postgresql" => Dialect::Postgres,
        "mysql" | "mariadb" => Dialect::Mysql,
        _ => Dialect::Sqlite,
    })
}

/// The URL as the driver takes it, or a usage error for one it cannot take.
fn normalise(url: &str, create: bool) -> Result<String, Failure> {
    let (scheme, rest) = scheme(url)?;
    Ok(match scheme.as_str() {
        // The MySQL driver speaks to MariaDB; it only knows the `mysql` scheme.
        "mariadb" => format!("mysql:{rest}"),
        "sqlite" if create && !rest.contains("mode=") => match Url::parse(url) {
            Ok(mut parsed) => {
                parsed.query_pairs_mut().append_pair("mode", "rwc");
                parsed.into()
            }
            Err(_) => url.to_owned(),
        },
        _ => url.to_owned(),
    })
}

/// The URL's scheme, in lower case, and the rest after its colon; a usage error unless
/// it is one of a database this tool speaks to.
fn scheme(url: &str) -> Result<(String, &str), Failure> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(Failure::Usage(format!(
            "{:?} is not a database URL; use postgres://USER@HOST:PORT/DATABASE, \
             mysql://USER@HOST:PORT/DATABASE or sqlite:PATH",
            redacted(url)
        )));
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite" => Ok((scheme, rest)),
        other => Err(Failure::Usage(format!(
            "unsupported database URL scheme {other:?}; use postgres://…, mysql://… \
             (MariaDB too) or sqlite:PATH"
        ))),
    }
}

/// `url` with its password, if any, replaced by `***`: it ends up in messages.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/prod"),
            "postgres://app:***@db:5432/prod"
        );
        assert_eq!(
            redacted("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(redacted("sqlite:/tmp/a.db"), "sqlite:/tmp/a.db");
        // An escaped `@` or `/` in the password is part of it, not the host.
        assert_eq!(
            redacted("mysql://app:p%40s%2Fs@db/prod"),
            "mysql://app:***@db/prod"
        );
    }

    #[test]
    fn schemes_pick_the_database() {
        let url = |url, create| normalise(url, create).map_err(|failure| format!("{failure:?}"));
        assert_eq!(
            url("mariadb://root@h/test", false).unwrap(),
            "mysql://root@h/test"
        );
        assert_eq!(
            url("sqlite:/tmp/x.db", true).unwrap(),
            "sqlite:/tmp/x.db?mode=rwc"
        );
        assert_eq!(url("sqlite:/tmp/x.db", false).unwrap(), "sqlite:/tmp/x.db");
        assert_eq!(url("MariaDB://h/t", false).unwrap(), "mysql://h/t");
        assert_eq!(dialect_of("postgresql://h/t").unwrap(), Dialect::Postgres);
        assert_eq!(dialect_of("mariadb://h/t").unwrap(), Dialect::Mysql);
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert!(url("redis://h", false).unwrap_err().contains("unsupported"));
        assert!(
            url("localhost", false)
                .unwrap_err()
                .contains("not a database URL")
        );
    }
}
