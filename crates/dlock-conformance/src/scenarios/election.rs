//! Leader election: one leader at a time among processes, hand-over on resignation, a
//! crashed or frozen leader replaced within its lease (and told first), observers that
//! see every term in order, and tables made before elections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_core::adapter::QueryInterface;
use dlock_core::{DistributedLock, Election, Error, FencingToken, LockAdmin, TableName};
use dlock_testkit::{ChildProcess, Flow, Tap, only_reads, wall_ns};
use tokio::time::Instant;

use crate::child::{self, Mode};
use crate::scenarios::exclusion::{overlaps, parse_section};
use crate::support::{
    ELECTION_TABLE, Env, Verdict, drop_table, eventually, sql, unique_identifier, unique_name,
};

/// How late a candidate woken by a resignation may be: scheduling on a busy 2-core
/// machine, not polling.
const WAKE_SLACK: Duration = Duration::from_millis(250);

/// Candidates in separate processes, each leading terms one after another: no two terms
/// overlap, and terms grow in the order they began.
pub(crate) async fn one_leader_among_candidate_processes(env: Env) -> Verdict {
    const CANDIDATES: usize = 4;
    const TERMS_EACH: usize = 25;
    let name = unique_name("one_leader");
    let children = (0..CANDIDATES)
        .map(|_| {
            let mode = Mode::Candidate {
                sections: TERMS_EACH,
            };
            child::spawn(&env, &name, mode, Duration::from_secs(5))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut terms = Vec::new();
    for child in children {
        for line in child.finish(Duration::from_secs(240)).await? {
            terms.push(parse_section("TERM", &line)?);
        }
    }
    if terms.len() != CANDIDATES * TERMS_EACH {
        return Err(format!(
            "expected {} terms, got {}",
            CANDIDATES * TERMS_EACH,
            terms.len()
        ));
    }
    let overlaps = overlaps(&mut terms, "term")?;
    eprintln!(
        "one_leader: {} terms led by {CANDIDATES} processes, {overlaps} overlaps",
        terms.len()
    );
    if overlaps > 0 {
        return Err(format!("{overlaps} terms overlapped another"));
    }
    Ok(())
}

/// A leader that resigns hands over at once to a candidate campaigning in another
/// process: woken by a notice where the adapter listens, within a poll interval elsewhere.
pub(crate) async fn resignation_hands_over_to_another_process(env: Env) -> Verdict {
    let name = unique_name("resign");
    let election = env.election(&name).await?;
    let queries_listen = env.connect().await?.listener().is_some();
    let election = election.build().map_err(|e| e.to_string())?;
    let leadership = election.campaign().await.map_err(|e| e.to_string())?;
    let mut candidate = child::spawn(&env, &name, Mode::Campaign, Duration::from_secs(5))?;
    candidate
        .expect("CAMPAIGNING", Duration::from_secs(30))
        .await?;
    // Long enough for the candidate's back-off to reach its cap (the default 1 s poll
    // interval), so only a wake-up can make it fast.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let term = leadership.term();
    leadership.resign().await.map_err(|e| e.to_string())?;
    let resigned_at = wall_ns();
    let line = candidate.expect("LEADING", Duration::from_secs(10)).await?;
    candidate.finish(Duration::from_secs(10)).await?;
    let (new_term, led_at) = two_numbers(&line)?;
    if i64::try_from(new_term).is_ok_and(|new_term| new_term <= term.get()) {
        return Err(format!("the new term {new_term} is not after {term}"));
    }
    let gap = Duration::from_nanos(led_at.saturating_sub(resigned_at));
    let limit = match queries_listen {
        true => WAKE_SLACK,
        false => Duration::from_secs(1) + WAKE_SLACK,
    };
    eprintln!(
        "resign: a candidate in another process led {} ms after the resignation ({})",
        gap.as_millis(),
        match queries_listen {
            true => "woken by a notification",
            false => "polling",
        }
    );
    if gap > limit {
        return Err(format!(
            "the candidate led {gap:?} after the resignation; the limit is {limit:?}"
        ));
    }
    Ok(())
}

/// A leader killed with SIGKILL is replaced within its lease (and a little more).
pub(crate) async fn killed_leader_is_replaced_within_a_lease(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let (mut leader, term, election) = leader_in_a_child(&env, "killed_leader", TTL).await?;
    let killed_at = Instant::now();
    leader.kill().await?;
    let leadership = tokio::time::timeout(TTL + Duration::from_secs(1), election.campaign())
        .await
        .map_err(|_| "the killed leader was not replaced within its lease and 1 s")?
        .map_err(|e| e.to_string())?;
    eprintln!(
        "killed_leader: replaced {} ms after SIGKILL (TTL {} ms)",
        killed_at.elapsed().as_millis(),
        TTL.as_millis()
    );
    later_term(leadership.term(), term)?;
    leadership.resign().await.map_err(|e| e.to_string())
}

/// A leader in a child process ([`Mode::Lead`]) on a new election with `ttl`, once it has
/// renewed its lease, with its term; and the election in this process, to replace it.
async fn leader_in_a_child(
    env: &Env,
    scenario: &str,
    ttl: Duration,
) -> Result<(ChildProcess, i64, Election), String> {
    let name = unique_name(scenario);
    let mut leader = child::spawn(env, &name, Mode::Lead, ttl)?;
    let term = leader
        .expect_parsed("LEADING", Duration::from_secs(30))
        .await?;
    let election = env
        .election(&name)
        .await?
        .ttl(ttl)
        .build()
        .map_err(|e| e.to_string())?;
    // Let it renew at least once, so the hand-over is measured from a renewed lease.
    tokio::time::sleep(ttl / 2).await;
    Ok((leader, term, election))
}

/// Whether `new` comes after the replaced leader's term `old`.
fn later_term(new: FencingToken, old: i64) -> Verdict {
    if new.get() <= old {
        return Err(format!(
            "the new term {new} is not after the old leader's {old}"
        ));
    }
    Ok(())
}

/// A leader frozen with SIGSTOP past its lease is replaced, and when it runs again it
/// finds its leadership lost before it acts once more as the leader: nothing it reports
/// as done while leading was done after it was frozen.
pub(crate) async fn stopped_leader_knows_it_lost_before_acting_again(env: Env) -> Verdict {
    const TTL: Duration = Duration::from_secs(2);
    let (mut leader, term, election) = leader_in_a_child(&env, "stopped_leader", TTL).await?;
    let mut lines = leader.take_lines().ok_or("the leader's output is taken")?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let lost = line == "LOST";
                seen.lock().map_err(|e| e.to_string())?.push(line);
                if lost {
                    return Ok(());
                }
            }
            Err::<(), String>("the leader's output ended without LOST".into())
        })
    };
    leader.signal("STOP").await?;
    let stopped_at = wall_ns();
    let campaigning = tokio::time::timeout(TTL * 3, election.campaign()).await;
    let resumed = leader.signal("CONT").await;
    let leadership = campaigning
        .map_err(|_| "the frozen leader was not replaced")?
        .map_err(|e| e.to_string())?;
    resumed?;
    tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .map_err(|_| "the resumed leader did not report its loss within 5 s")?
        .map_err(|e| e.to_string())??;
    leader.kill().await?;
    later_term(leadership.term(), term)?;
    let seen = seen.lock().map_err(|e| e.to_string())?.clone();
    let late: Vec<_> = seen
        .iter()
        .filter_map(|line| line.strip_prefix("ALIVE ")?.parse::<u64>().ok())
        .filter(|&at| at >= stopped_at)
        .collect();
    if !late.is_empty() {
        return Err(format!(
            "the frozen leader went on leading after it was resumed, in a new leader's term \
             ({} times)",
            late.len()
        ));
    }
    leadership.resign().await.map_err(|e| e.to_string())
}

/// An observer in another process sees every term, in order, with its value (a value
/// proclaimed within a term too), and every resignation.
pub(crate) async fn observers_in_another_process_see_every_term_in_order(env: Env) -> Verdict {
    // Several of the observer's 50 ms poll intervals, for machines under load.
    const SPACING: Duration = Duration::from_millis(500);
    let name = unique_name("observed");
    let mut observer = child::spawn(&env, &name, Mode::Observe, Duration::from_secs(5))?;
    let first = observer.next_line(Duration::from_secs(30)).await?;
    if first != "NONE" {
        return Err(format!(
            "a new election should have no leader; saw {first:?}"
        ));
    }
    let mut expected = Vec::new();
    let mut last = None;
    let values = ["term 0", "term 1", "term 2", "term 3", "last"];
    for (i, value) in values.into_iter().enumerate() {
        let election = env
            .election(&name)
            .await?
            .value(value)
            .build()
            .map_err(|e| e.to_string())?;
        let leadership = election.campaign().await.map_err(|e| e.to_string())?;
        expected.push(format!("LEADER {} {value}", leadership.term()));
        tokio::time::sleep(SPACING).await;
        if i == 2 {
            leadership
                .proclaim("term 2, proclaimed again")
                .await
                .map_err(|e| e.to_string())?;
            expected.push(format!(
                "LEADER {} term 2, proclaimed again",
                leadership.term()
            ));
            tokio::time::sleep(SPACING).await;
        }
        if value == "last" {
            // The observer stops at this value.
            last = Some(leadership);
            break;
        }
        leadership.resign().await.map_err(|e| e.to_string())?;
        expected.push("NONE".to_owned());
        tokio::time::sleep(SPACING).await;
    }
    let seen = observer.finish(Duration::from_secs(10)).await?;
    if let Some(leadership) = last {
        leadership.resign().await.map_err(|e| e.to_string())?;
    }
    if seen != expected {
        return Err(format!(
            "the observer saw\n  {seen:?}\nwhere the elections were\n  {expected:?}"
        ));
    }
    Ok(())
}

/// An observer only reads (and sends notices, which write no row), while it sees a term
/// begin, change its value and end.
pub(crate) async fn observing_only_reads(env: Env) -> Verdict {
    let name = unique_name("observing_reads");
    let statements = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&statements);
    let tapped = Tap::new(env.connect().await?, move |statement| {
        if let Ok(mut recorded) = recorded.lock() {
            recorded.push(statement.clone());
        }
        Flow::Forward
    });
    let watching = Election::builder(&name, Arc::new(tapped) as Arc<dyn QueryInterface>)
        .table(ELECTION_TABLE)
        .poll_interval(Duration::from_millis(20))
        .build()
        .map_err(|e| e.to_string())?;
    let mut observer = watching.observe();
    let limit = Duration::from_secs(10);
    let mut next = async || {
        tokio::time::timeout(limit, observer.changed())
            .await
            .map_err(|_| format!("the observer saw no change within {limit:?}"))?
            .map_err(|e| e.to_string())
    };
    if let Some(leader) = next().await? {
        return Err(format!("a new election has a leader: {leader}"));
    }
    let election = env
        .election(&name)
        .await?
        .value("a")
        .build()
        .map_err(|e| e.to_string())?;
    let leadership = election.campaign().await.map_err(|e| e.to_string())?;
    let seen = next().await?.map(|leader| leader.value);
    leadership.proclaim("b").await.map_err(|e| e.to_string())?;
    let seen_again = next().await?.map(|leader| leader.value);
    leadership.resign().await.map_err(|e| e.to_string())?;
    let gone = next().await?;
    if (seen.as_deref(), seen_again.as_deref(), &gone) != (Some("a"), Some("b"), &None) {
        return Err(format!(
            "the observer saw {seen:?}, {seen_again:?}, {gone:?}; the election was a, b, none"
        ));
    }
    let statements = statements.lock().map_err(|e| e.to_string())?.clone();
    let writes: Vec<&str> = statements
        .iter()
        .filter(|statement| !only_reads(statement.kind))
        .map(|statement| &*statement.sql)
        .collect();
    if !writes.is_empty() {
        return Err(format!("an observer wrote: {writes:?}"));
    }
    Ok(())
}

/// `leader` reads what a campaign and `proclaim` published; `LockAdmin` lists the value;
/// a resignation leaves no leader; the next term is larger; and `run_while_leader`
/// campaigns again when its leadership is lost, then resigns when its job returns.
pub(crate) async fn leader_proclaim_and_run_while_leader(env: Env) -> Verdict {
    let name = unique_name("leader_read");
    let election = env
        .election(&name)
        .await?
        .value("10.0.0.7:8080")
        .holder("scheduler")
        .ttl(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let admin = LockAdmin::with_table(env.connect().await?, table()?);
    let none = election.leader().await.map_err(|e| e.to_string())?;
    if none.is_some() {
        return Err(format!("a new election has a leader: {none:?}"));
    }
    let leadership = election.campaign().await.map_err(|e| e.to_string())?;
    let leader = election
        .leader()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("nobody leads after a campaign")?;
    if leader.term != leadership.term()
        || leader.value != "10.0.0.7:8080"
        || !leader.holder.contains("scheduler")
        || leader.lease_ends_in > Duration::from_secs(1)
    {
        return Err(format!("the leader read is not the campaign's: {leader:?}"));
    }
    leadership
        .proclaim("10.0.0.8:8080")
        .await
        .map_err(|e| e.to_string())?;
    // Proclaiming the same value again is no loss (MySQL reports no changed row).
    leadership
        .proclaim("10.0.0.8:8080")
        .await
        .map_err(|e| e.to_string())?;
    let info = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    if info.value.as_deref() != Some("10.0.0.8:8080") || info.fencing_token != leadership.term() {
        return Err(format!(
            "inspect does not show the proclaimed value: {info:?}"
        ));
    }
    let listed = admin.list().await.map_err(|e| e.to_string())?;
    if !listed
        .iter()
        .any(|lock| lock.name == name && lock.value.as_deref() == Some("10.0.0.8:8080"))
    {
        return Err("list does not show the proclaimed value".into());
    }
    let first_term = leadership.term();
    leadership.resign().await.map_err(|e| e.to_string())?;
    if let Some(leader) = election.leader().await.map_err(|e| e.to_string())? {
        return Err(format!("a leader after the resignation: {leader:?}"));
    }

    // run_while_leader: the first term is taken from it (force release), the job is
    // dropped, it campaigns again, and the job's second run returns.
    let runs = Arc::new(Mutex::new(Vec::new()));
    let running = {
        let (election, runs) = (election.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            election
                .run_while_leader(|leadership| {
                    let runs = Arc::clone(&runs);
                    async move {
                        let run = {
                            let mut runs = runs
                                .lock()
                                .map_err(|e| Error::InvalidOption(e.to_string()))?;
                            runs.push(leadership.term());
                            runs.len()
                        };
                        if run == 1 {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Error>(leadership.term())
                    }
                })
                .await
        })
    };
    let taken_term = Arc::new(Mutex::new(None));
    eventually(Duration::from_secs(10), "run_while_leader leads", || {
        let (election, taken_term) = (election.clone(), Arc::clone(&taken_term));
        async move {
            let leader = election.leader().await.map_err(|e| e.to_string())?;
            let term = leader.map(|leader| leader.term);
            *taken_term.lock().map_err(|e| e.to_string())? = term;
            Ok(term.is_some())
        }
    })
    .await?;
    let taken = taken_term
        .lock()
        .map_err(|e| e.to_string())?
        .ok_or("no term to take")?;
    let _freed = admin
        .force_release_now(&name, taken)
        .await
        .map_err(|e| e.to_string())?;
    let second = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .map_err(|_| "run_while_leader did not lead again after losing its term")?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let runs = runs.lock().map_err(|e| e.to_string())?.clone();
    if runs.len() != 2 || runs[0] != taken || second != runs[1] || second <= taken {
        return Err(format!(
            "run_while_leader ran in terms {runs:?}, returned {second}; the first was taken \
             ({taken})"
        ));
    }
    if second <= first_term {
        return Err("terms did not grow across a resignation".into());
    }
    if let Some(leader) = election.leader().await.map_err(|e| e.to_string())? {
        return Err(format!("run_while_leader did not resign: {leader:?}"));
    }
    Ok(())
}

/// A table made before elections (no `value` columns) keeps working for locks and for
/// `LockAdmin`; an election there fails with an error naming the `ALTER TABLE` to run,
/// and works once it has run.
pub(crate) async fn tables_from_before_elections(env: Env) -> Verdict {
    let queries = env.connect().await?;
    // Of this trial alone: the same scenario through PgBouncer reaches the same database.
    let table = unique_identifier("dlock_before_elections");
    let table_name = TableName::parse(&table).map_err(|e| e.to_string())?;
    let admin = LockAdmin::with_table(queries.clone(), table_name.clone());
    admin.create_table().await.map_err(|e| e.to_string())?;
    for column in ["value", "value_term"] {
        let drop = sql(
            env.dialect,
            &format!("ALTER TABLE {table} DROP COLUMN {column}"),
            vec![],
        );
        queries
            .execute(&drop)
            .await
            .map_err(|e| format!("cannot make an old table: {e}"))?;
    }

    let name = unique_name("before_elections");
    let lock = DistributedLock::builder(&name, queries.clone())
        .table(&table)
        .build()
        .map_err(|e| e.to_string())?;
    let guard = lock
        .acquire()
        .await
        .map_err(|e| format!("a plain lock on an old table: {e}"))?;
    let info = admin.inspect(&name).await.map_err(|e| e.to_string())?;
    if info.value.is_some() || info.fencing_token != guard.fencing_token() {
        return Err(format!("inspect on an old table: {info:?}"));
    }
    admin
        .list()
        .await
        .map_err(|e| format!("list on an old table: {e}"))?;
    guard.release().await.map_err(|e| e.to_string())?;

    let election = Election::builder(&name, queries.clone())
        .table(&table)
        .build()
        .map_err(|e| e.to_string())?;
    let upgrade = env.dialect.add_value_columns_sql(&table_name);
    match election.campaign().await {
        Err(error @ Error::NoValueColumn { .. }) if error.to_string().contains(&upgrade) => {}
        other => {
            return Err(format!(
                "an election on an old table should name the ALTER TABLE; it gave {other:?}"
            ));
        }
    }
    if !crate::support::is_free_in(&queries, &table, &name).await? {
        return Err("a failed campaign left the lock held".into());
    }
    for statement in upgrade.split(';').filter(|s| !s.trim().is_empty()) {
        queries
            .execute(&sql(env.dialect, statement, vec![]))
            .await
            .map_err(|e| format!("the printed upgrade failed: {e}"))?;
    }
    let leadership = election
        .campaign()
        .await
        .map_err(|e| format!("an election after the upgrade: {e}"))?;
    let leader = election.leader().await.map_err(|e| e.to_string())?;
    if leader.map(|leader| leader.term) != Some(leadership.term()) {
        return Err("the leader after the upgrade is not the campaign's".into());
    }
    leadership.resign().await.map_err(|e| e.to_string())?;
    drop_table(&queries, &table).await
}

fn table() -> Result<TableName, String> {
    TableName::parse(ELECTION_TABLE).map_err(|e| e.to_string())
}

/// Parses `<a> <b>`.
fn two_numbers(text: &str) -> Result<(u64, u64), String> {
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(format!("unexpected child output {text:?}")),
    }
}
