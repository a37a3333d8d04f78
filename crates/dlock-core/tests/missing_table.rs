//! The lock table is created lazily: a statement that finds it missing creates it and
//! runs again; a table that cannot be created is reported as such.

mod fake;

use dlock_core::adapter::QueryErrorKind;
use dlock_core::{Error, LossReason};
use fake::{FakeDb, Gate, Kind, lock, settle};

fn kinds(fake: &FakeDb) -> Vec<Kind> {
    fake.log().iter().map(|entry| entry.kind).collect()
}

#[tokio::test(start_paused = true)]
async fn the_first_statement_creates_the_missing_table_and_runs_again() {
    let fake = FakeDb::without_table();

    let guard = lock(&fake).acquire().await.expect("acquired");

    assert_eq!(
        kinds(&fake),
        [Kind::Acquire, Kind::CreateTable, Kind::Acquire]
    );
    assert_eq!(guard.fencing_token().get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_creator_that_lost_the_race_still_succeeds() {
    let fake = FakeDb::without_table();
    // Another process created the table first: ours fails (as a duplicate would), but
    // the table is there for the retry.
    fake.script(
        Kind::CreateTable,
        [Gate::AnswerLost(QueryErrorKind::Statement)],
    );

    let guard = lock(&fake).acquire().await.expect("acquired");

    assert_eq!(guard.fencing_token().get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_table_that_cannot_be_created_is_reported() {
    let fake = FakeDb::without_table();
    fake.set_default(Kind::CreateTable, Gate::Err(QueryErrorKind::Statement));

    let error = lock(&fake).acquire().await.expect_err("no table");

    match &error {
        Error::CreateTable { table, .. } => assert_eq!(table, fake.table()),
        other => panic!("expected Error::CreateTable, got {other:?}"),
    }
    assert_eq!(
        kinds(&fake),
        [Kind::Acquire, Kind::CreateTable, Kind::Acquire]
    );
}

#[tokio::test(start_paused = true)]
async fn create_table_creates_it_up_front() {
    let fake = FakeDb::without_table();
    let lock = lock(&fake);

    lock.create_table().await.expect("created");
    let guard = lock.acquire().await.expect("acquired");

    assert_eq!(kinds(&fake), [Kind::CreateTable, Kind::Acquire]);
    guard.release().await.expect("released");
}

/// Review finding S7 (its last part): renewals and releases re-created a dropped table,
/// starting fencing tokens again from 1 under a live holder. Only acquiring creates it;
/// the holder finds its row gone and loses the lock.
#[tokio::test(start_paused = true)]
async fn a_table_dropped_under_a_holder_is_not_re_created_by_its_renewals() {
    let fake = FakeDb::new();
    let guard = lock(&fake).acquire().await.unwrap();
    fake.drop_table();

    let reason = guard.lost().await;
    drop(guard);
    settle().await;

    assert!(
        matches!(reason, LossReason::RenewalFailed { .. }),
        "{reason:?}"
    );
    assert!(
        !kinds(&fake).contains(&Kind::CreateTable),
        "{:?}",
        kinds(&fake)
    );
    assert!(fake.count(Kind::Renew) >= 2);
}

/// A role with only the privileges dlock needs may not run `CREATE TABLE IF NOT EXISTS`
/// (PostgreSQL and MariaDB check the right even when the table exists): `create_table`
/// succeeds when the table is there, and still fails when it is not.
#[tokio::test(start_paused = true)]
async fn create_table_without_the_right_to_create_is_fine_when_the_table_exists() {
    let fake = FakeDb::new();
    fake.script(Kind::CreateTable, [Gate::Denied]);
    lock(&fake)
        .create_table()
        .await
        .expect("the table is there");

    let missing = FakeDb::without_table();
    missing.script(Kind::CreateTable, [Gate::Denied]);
    let error = lock(&missing).create_table().await.unwrap_err();
    assert!(matches!(error, Error::CreateTable { .. }), "{error:?}");
}
