//! Every adapter accepts its pool by value and by reference (and tokio-postgres its client
//! by value, in an `Arc`, and by reference to that `Arc`), so that code moving from one
//! adapter to another keeps `DistributedLock::new(name, &pool)`. This file compiling is
//! most of the test: a form an adapter refuses fails the build.

use std::sync::Arc;

use dlock::DistributedLock;
use dlock::adapter::IntoQueryInterface;
use dlock::diesel::diesel::SqliteConnection;
use dlock::diesel::diesel_async::pooled_connection::{bb8, deadpool};
use dlock::diesel::diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use dlock::diesel::diesel_async::{AsyncMysqlConnection, AsyncPgConnection};
use dlock::seaorm::sea_orm::DatabaseConnection;
use dlock::sqlx::sqlx::{MySqlPool, PgPool, SqlitePool};
use dlock::tokio_postgres::deadpool_postgres::{Manager, Pool};
use dlock::tokio_postgres::tokio_postgres::{Client, Config, NoTls};

fn accepts<M>(pool: impl IntoQueryInterface<M>) -> DistributedLock {
    DistributedLock::new("accepted-forms", pool).expect("a valid name builds")
}

/// Never called: these need a live connection to construct, and only their types matter.
#[allow(dead_code)]
fn every_form_compiles(
    client: Client,
    shared_client: Arc<Client>,
    seaorm: DatabaseConnection,
    diesel_pg: deadpool::Pool<AsyncPgConnection>,
    diesel_mysql: bb8::Pool<AsyncMysqlConnection>,
    diesel_sqlite: deadpool::Pool<SyncConnectionWrapper<SqliteConnection>>,
    (sqlx_pg, sqlx_mysql, sqlx_sqlite): (PgPool, MySqlPool, SqlitePool),
) {
    accepts(&shared_client);
    accepts(shared_client);
    accepts(client);
    accepts(&seaorm);
    accepts(seaorm);
    accepts(&diesel_pg);
    accepts(diesel_pg);
    accepts(&diesel_mysql);
    accepts(diesel_mysql);
    accepts(&diesel_sqlite);
    accepts(diesel_sqlite);
    accepts(&sqlx_pg);
    accepts(sqlx_pg);
    accepts(&sqlx_mysql);
    accepts(sqlx_mysql);
    accepts(&sqlx_sqlite);
    accepts(sqlx_sqlite);
}

/// A deadpool-postgres pool connects lazily, so this one runs without a server: `&pool`
/// builds a lock and leaves the caller its pool.
#[test]
fn tokio_postgres_takes_a_pool_by_reference() {
    let pool = Pool::builder(Manager::new(Config::new(), NoTls))
        .max_size(2)
        .build()
        .expect("the pool builds");
    let lock = accepts(&pool);
    assert_eq!(lock.name(), "accepted-forms");
    assert_eq!(pool.status().max_size, 2, "the caller keeps its pool");
    let _by_value = accepts(pool);
}
