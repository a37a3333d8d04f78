#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use dlock_core::*;

/// The tokio-postgres / deadpool-postgres adapter: [`fence`](tokio_postgres::fence),
/// [`PostgresQueries::listen_with`](tokio_postgres::PostgresQueries::listen_with), and
/// the drivers it re-exports.
#[cfg(feature = "tokio-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
pub use dlock_tokio_postgres as tokio_postgres;

/// The SeaORM adapter: [`fence`](seaorm::fence), [`begin_fenced`](seaorm::begin_fenced),
/// and `sea_orm` itself.
#[cfg(feature = "seaorm")]
#[cfg_attr(docsrs, doc(cfg(feature = "seaorm")))]
pub use dlock_seaorm as seaorm;

/// The sqlx adapter: [`fence`](sqlx::fence),
/// [`SqlxQueries::through_pooler`](sqlx::SqlxQueries::through_pooler), and `sqlx` itself.
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub use dlock_sqlx as sqlx;

/// The Diesel (diesel-async) adapter: [`fence`](diesel::fence), and `diesel` and
/// `diesel_async` themselves.
#[cfg(feature = "diesel")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel")))]
pub use dlock_diesel as diesel;

/// The repository's README, compiled only by `cargo test --doc`, so that its snippets are
/// checked as printed: they are doc-tested here, with every adapter turned on (the crate's
/// dev-dependency on itself).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct RepositoryReadme;

/// `docs/migrations.md`, doc-tested like the README.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/migrations.md")]
pub struct MigrationsGuide;

/// `docs/elections.md`, doc-tested like the README.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/elections.md")]
pub struct ElectionsGuide;
