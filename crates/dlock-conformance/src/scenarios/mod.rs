//! The scenarios, one concern per module.

mod admin;
mod crash;
mod election;
mod errors;
mod exclusion;
mod failover;
mod fencing;
mod herd;
mod loss;
mod multi;
mod names;
mod refusals;
mod release;
mod rwlock;
mod semaphore;
mod session;
mod skip;
mod sql_mode;
mod waiting;

use std::pin::Pin;

use dlock_core::Dialect;
use dlock_testkit::Route;

pub(crate) use rwlock::child as rw_child;

use crate::support::{Env, Verdict};

/// A scenario: an async function of the environment.
pub(crate) type Scenario = fn(Env) -> Pin<Box<dyn Future<Output = Verdict> + Send>>;

macro_rules! scenarios {
    ($($module:ident::$name:ident),* $(,)?) => {
        /// Every scenario: its concern (module) and name.
        fn every() -> Vec<(&'static str, &'static str, Scenario)> {
            vec![$((stringify!($module), stringify!($name), |env| Box::pin($module::$name(env)))),*]
        }
    };
}

/// Whether `concern` names a module of scenarios.
pub(crate) fn is_concern(concern: &str) -> bool {
    every().iter().any(|(module, _, _)| *module == concern)
}

/// Scenarios that refuse connections at the network level (a proxy that cuts them, a
/// closed port), or need a server's users and grants. An embedded database (SQLite) has
/// neither, so they are not generated for it. Partitions (statements that hang) are
/// simulated for it instead, see [`dlock_testkit::Partition`].
const NETWORK_ONLY: &[&str] = &[
    "loss_fires_before_expiry_when_database_unreachable",
    "unreachable_database_is_an_error",
    "missing_privilege_names_the_table_and_what_to_grant",
    // Not network, but pointless on SQLite and harmful there: its fenced transaction
    // holds the file's one write lock for seconds, which every other scenario's renewals
    // then wait for; and one writer at a time holds writers back by itself.
    "rw_fenced_read_holds_writers_back_until_it_commits",
];

/// Scenarios about one database's behaviour, generated only for that dialect (by its
/// name).
const ONLY_ON: &[(&str, &str)] = &[
    ("acquire_is_independent_of_assignment_order", "mysql"),
    // PostgreSQL here trusts every local connection: no password can be wrong.
    ("wrong_password_is_permanent", "mysql"),
    // The failover rig is a PostgreSQL primary and standby.
    (
        "tokens_grow_and_lost_holders_end_first_across_a_failover",
        "postgres",
    ),
    (
        "a_holder_keeps_its_lock_across_a_synchronous_failover",
        "postgres",
    ),
    // Where one transaction can commit without waiting for the disk.
    (
        "a_release_does_not_wait_for_the_disk_nor_change_the_session",
        "postgres",
    ),
    // Where waiters are notified of releases and take turns.
    (
        "one_attempt_per_release_among_waiting_processes",
        "postgres",
    ),
    (
        "semaphore_one_attempt_per_release_among_waiting_processes",
        "postgres",
    ),
];

/// Scenarios that start the failover rig (`dlock_testkit::failover`), which needs
/// PostgreSQL's server binaries on this machine.
pub(crate) const NEEDS_FAILOVER_RIG: &[&str] = &[
    "tokens_grow_and_lost_holders_end_first_across_a_failover",
    "a_holder_keeps_its_lock_across_a_synchronous_failover",
];

/// Scenarios that start six or more processes, each opening up to five connections (a
/// pool of four and a listener). Four of them side by side, beside the same scenarios
/// through PgBouncer, went past PostgreSQL's default `max_connections` of 100 (seen in
/// CI: "sorry, too many clients already", and a pool that timed out waiting), so they
/// take as much room as a timed one (see `Room` in `lib.rs`).
pub(crate) const CROWDED: &[&str] = &[
    "mutual_exclusion",
    "one_leader_among_candidate_processes",
    "multi_lock_is_all_or_none_under_contention",
    "rw_writes_exclude_every_other_section_across_processes",
    "semaphore_bound_is_never_exceeded",
];

/// Scenarios that assert how soon something happens — a wake-up, a takeover, a loss
/// signal before a deadline — with a slack sized for a machine doing little else. The
/// suite runs scenarios several at once, but no more beside these than their slack was
/// sized for (see `Room` in `lib.rs`).
pub(crate) const TIMED: &[&str] = &[
    "waiter_in_another_process_wakes_on_release",
    "waiter_in_another_process_wakes_on_force_release",
    "waiter_wakes_within_a_poll_after_its_listener_dies",
    "killed_holder_is_taken_over_within_ttl",
    "warm_waiters_take_over_a_killed_holder_within_its_lease",
    "a_warm_waiter_alone_takes_over_a_killed_holder_within_its_lease",
    "loss_fires_when_row_is_tampered_with",
    "loss_fires_before_a_takeover",
    "loss_fires_before_expiry_when_database_unreachable",
    "tokens_grow_and_lost_holders_end_first_across_a_failover",
    "a_holder_keeps_its_lock_across_a_synchronous_failover",
    "resignation_hands_over_to_another_process",
    "killed_leader_is_replaced_within_a_lease",
    "stopped_leader_knows_it_lost_before_acting_again",
    "multi_lock_killed_holder_frees_every_name_within_ttl",
    "multi_lock_waiter_in_another_process_wakes_on_a_release",
    "force_release_never_lets_anyone_in_first",
    "observers_in_another_process_see_every_term_in_order",
    "a_herd_of_waiters_on_a_small_pool_all_get_their_turn",
    "try_acquire_names_the_holder",
    "semaphore_killed_holder_frees_its_permit_within_ttl",
    "semaphore_waiter_in_another_process_wakes_on_a_release",
    "semaphore_permit_loss_fires_before_another_takes_it",
    "multi_lock_loss_of_one_name_is_the_loss_of_all",
    "rw_writer_gets_in_under_a_continuous_reader_load",
    "rw_killed_reader_and_writer_free_within_their_lease",
    "rw_reader_and_writer_learn_of_their_loss_first",
];

/// The scenarios that apply to `dialect` reached by `route`, by name, of the `concerns`
/// given (all if `None`). Through a pooler, every scenario but those of the failover rig,
/// which go to the rig's own servers, not to the database at the route's end: they would
/// only run again, and contend for the one rig.
pub(crate) fn all(
    dialect: Dialect,
    route: Route,
    concerns: Option<&[&str]>,
) -> Vec<(&'static str, Scenario)> {
    let network = dialect != Dialect::Sqlite;
    every()
        .into_iter()
        .filter(|(concern, _, _)| concerns.is_none_or(|concerns| concerns.contains(concern)))
        .map(|(_, name, scenario)| (name, scenario))
        .filter(|(name, _)| network || !NETWORK_ONLY.contains(name))
        .filter(|(name, _)| route == Route::Direct || !NEEDS_FAILOVER_RIG.contains(name))
        .filter(|(name, _)| {
            ONLY_ON.iter().all(|(scenario, only)| {
                scenario != name || *only == dlock_testkit::dialect_key(dialect)
            })
        })
        .collect()
}

scenarios![
    exclusion::mutual_exclusion,
    exclusion::independent_names,
    skip::skip_if_obtained_runs_exactly_one,
    skip::try_acquire_names_the_holder,
    fencing::tokens_increase_across_releases_expiries_and_processes,
    fencing::fenced_write_after_takeover_is_rejected,
    fencing::fence_keeps_the_lock_until_the_transaction_ends,
    fencing::fenced_transaction_keeps_the_lease,
    crash::killed_holder_is_taken_over_within_ttl,
    crash::warm_waiters_take_over_a_killed_holder_within_its_lease,
    crash::a_warm_waiter_alone_takes_over_a_killed_holder_within_its_lease,
    failover::tokens_grow_and_lost_holders_end_first_across_a_failover,
    failover::a_holder_keeps_its_lock_across_a_synchronous_failover,
    loss::loss_fires_when_row_is_tampered_with,
    loss::loss_fires_before_a_takeover,
    loss::loss_fires_before_expiry_when_database_unreachable,
    release::release_when_job_fails,
    release::release_when_job_panics,
    release::release_when_lock_future_dropped,
    release::dropped_acquire_leaves_nothing_held,
    release::guard_drop_releases,
    release::guard_dropped_at_the_end_of_main_is_released,
    names::long_and_non_ascii_names,
    session::a_held_lock_keeps_no_session_state,
    session::a_release_does_not_wait_for_the_disk_nor_change_the_session,
    waiting::waiter_in_another_process_wakes_on_release,
    waiting::waiter_in_another_process_wakes_on_force_release,
    waiting::waiting_only_reads,
    waiting::waiter_wakes_within_a_poll_after_its_listener_dies,
    waiting::one_attempt_per_release_among_waiting_processes,
    waiting::semaphore_one_attempt_per_release_among_waiting_processes,
    herd::a_herd_of_waiters_on_a_small_pool_all_get_their_turn,
    errors::bad_inputs_are_errors,
    errors::unreachable_database_is_an_error,
    errors::pool_exhaustion_is_an_error,
    errors::acquire_timeout_names_the_holder,
    errors::custom_table_is_created_on_first_use,
    refusals::missing_privilege_names_the_table_and_what_to_grant,
    refusals::wrong_password_is_permanent,
    admin::admin_lists_inspects_and_force_releases,
    admin::admin_reports_missing_locks_and_tables,
    admin::force_release_never_lets_anyone_in_first,
    admin::durability_reports_the_database_settings,
    sql_mode::acquire_is_independent_of_assignment_order,
    election::one_leader_among_candidate_processes,
    election::resignation_hands_over_to_another_process,
    election::killed_leader_is_replaced_within_a_lease,
    election::stopped_leader_knows_it_lost_before_acting_again,
    election::observers_in_another_process_see_every_term_in_order,
    election::observing_only_reads,
    election::leader_proclaim_and_run_while_leader,
    election::tables_from_before_elections,
    multi::multi_lock_is_all_or_none_under_contention,
    multi::multi_lock_and_lock_exclude_each_other,
    multi::multi_lock_loss_of_one_name_is_the_loss_of_all,
    multi::multi_lock_killed_holder_frees_every_name_within_ttl,
    multi::multi_lock_waiter_in_another_process_wakes_on_a_release,
    semaphore::semaphore_bound_is_never_exceeded,
    semaphore::semaphore_permits_all_obtainable_and_no_more,
    semaphore::semaphore_killed_holder_frees_its_permit_within_ttl,
    semaphore::semaphore_waiter_in_another_process_wakes_on_a_release,
    semaphore::semaphore_permit_loss_fires_before_another_takes_it,
    semaphore::semaphore_permits_mismatch_and_zero_are_errors,
    semaphore::semaphore_waiting_only_reads,
    rwlock::rw_readers_share_and_tokens_order_reads_and_writes,
    rwlock::rw_names_that_extend_another_are_other_locks,
    rwlock::rw_writes_exclude_every_other_section_across_processes,
    rwlock::rw_writer_gets_in_under_a_continuous_reader_load,
    rwlock::rw_killed_reader_and_writer_free_within_their_lease,
    rwlock::rw_reader_and_writer_learn_of_their_loss_first,
    rwlock::rw_writer_that_gives_up_lets_readers_in_and_jobs_run,
    rwlock::rw_fenced_read_holds_writers_back_until_it_commits,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A misspelt name in a list would silently leave its scenario out of it.
    #[test]
    fn every_listed_name_is_a_scenario() {
        let names: Vec<&str> = every().into_iter().map(|(_, name, _)| name).collect();
        let listed = TIMED
            .iter()
            .chain(CROWDED)
            .chain(NETWORK_ONLY)
            .chain(NEEDS_FAILOVER_RIG)
            .chain(ONLY_ON.iter().map(|(name, _)| name));
        for name in listed {
            assert!(names.contains(name), "{name} is not a scenario");
        }
    }
}
