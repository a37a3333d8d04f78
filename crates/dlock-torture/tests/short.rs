//! The short torture run, part of `cargo test --workspace`: each adapter and each dialect
//! once, 25 s each, the runs side by side. No server is restarted (other tests
//! use the same servers); that fault belongs to the long run.
//!
//! A fifth run holds elections instead of locks (tokio-postgres on PostgreSQL, a leader
//! killed or frozen): terms must not overlap, and observers must never see one go back.
//! A sixth holds semaphore permits (SeaORM on MariaDB, 2 permits, holders killed or
//! frozen): never more sections at once than permits, never two on one permit.
//! A seventh takes reader-writer locks (tokio-postgres on PostgreSQL, a holder killed,
//! frozen, or its connection terminated): no write may overlap any other section.
//!
//! The faults that aim at the windows between a holder's local deadline and its lease's
//! end (short-stop, delayed-acquire, hung-renewal) do not fit in 25 s after the four
//! others, so a run of their own (SeaORM on PostgreSQL) takes the network ones, and the
//! SQLite run the short stop.
//!
//! A database that cannot be reached makes its run *ignored*, with a loud message, unless
//! `CI` is set: then it fails. (libtest-mimic, since libtest's own harness has no way to
//! ignore a test once it has started.)

use std::process::{Command, ExitCode};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// The runs; each is a test of its own, so a skipped one shows as ignored by name.
static RUNS: [Run; 7] = [
    Run {
        args: &["--adapter", "tokio-postgres", "--dialect", "postgres"],
        url_var: "DLOCK_TEST_POSTGRES_URL",
        faults: &["kill", "stop", "terminate", "unreachable"],
    },
    Run {
        args: &["--adapter", "seaorm", "--dialect", "mysql"],
        url_var: "DLOCK_TEST_MYSQL_URL",
        faults: &["kill", "stop", "terminate", "unreachable"],
    },
    // SQLite has no server and no network: a holder killed, a holder frozen (past its
    // lease, and past its deadline only).
    Run {
        args: &["--adapter", "diesel", "--dialect", "sqlite"],
        url_var: "DLOCK_TEST_SQLITE_URL",
        faults: &["kill", "stop", "short-stop"],
    },
    Run {
        args: &["--adapter", "seaorm", "--dialect", "postgres"],
        url_var: "DLOCK_TEST_POSTGRES_URL",
        faults: &["short-stop", "delayed-acquire", "hung-renewal"],
    },
    Run {
        args: &[
            "--adapter",
            "tokio-postgres",
            "--dialect",
            "postgres",
            "--election",
        ],
        url_var: "DLOCK_TEST_POSTGRES_URL",
        faults: &["kill", "stop"],
    },
    // Semaphores of 2 permits on one name, 4 workers: never more than 2 sections at
    // once, never 2 on one permit, with holders killed or frozen.
    Run {
        args: &[
            "--adapter",
            "seaorm",
            "--dialect",
            "mysql",
            "--semaphore",
            "2",
            "--names",
            "1",
        ],
        url_var: "DLOCK_TEST_MYSQL_URL",
        faults: &["kill", "stop"],
    },
    // Reader-writer locks: no write overlaps any section, tokens order reads and writes.
    Run {
        args: &[
            "--adapter",
            "tokio-postgres",
            "--dialect",
            "postgres",
            "--rw",
        ],
        url_var: "DLOCK_TEST_POSTGRES_URL",
        faults: &["kill", "stop", "terminate"],
    },
];

struct Run {
    args: &'static [&'static str],
    url_var: &'static str,
    faults: &'static [&'static str],
}

fn main() -> ExitCode {
    let mut arguments = Arguments::from_args();
    // Side by side unless told otherwise: libtest-mimic runs as many tests at once as there
    // are cores, which on two cores would run the 25 s runs one pair after another.
    arguments.test_threads.get_or_insert(RUNS.len());
    let trials = RUNS
        .iter()
        .map(|run| {
            let mode = match (
                run.args.contains(&"--election"),
                run.args.contains(&"--semaphore"),
                run.args.contains(&"--rw"),
            ) {
                (true, _, _) => "_elections",
                (_, true, _) => "_semaphores",
                (_, _, true) => "_rwlocks",
                _ => "",
            };
            let name = format!(
                "{}_on_{}{mode}_survives_the_faults",
                run.args[1].replace('-', "_"),
                run.args[3]
            );
            Trial::ignorable_test(name, move || torture(run))
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}

/// Runs the suite with `args` and `faults` and checks its report: it passed, every fault
/// was injected, and the summary line shows no violation.
fn torture(run: &Run) -> Result<Completion, Failed> {
    let Run {
        args,
        url_var,
        faults,
    } = *run;
    let mut command = Command::new(env!("CARGO_BIN_EXE_dlock-torture"));
    command.args(args).args([
        "--seconds",
        "25",
        "--ttl-ms",
        "1500",
        "--faults",
        &faults.join(","),
    ]);
    if let Ok(url) = std::env::var(url_var) {
        command.args(["--url", &url]);
    }
    let output = command
        .output()
        .map_err(|error| format!("the torture binary does not run: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        // On one line: the ignored reason is printed beside the test's name.
        let reason = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        return dlock_testkit::unreachable(&format!(
            "the database is unreachable (set {url_var} to its URL): {reason}"
        ));
    }
    if !output.status.success() {
        return Err(format!(
            "the torture run failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        )
        .into());
    }
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("sections="))
        .ok_or_else(|| format!("no summary line in:\n{stdout}"))?;
    for clean in ["overlaps=0 ", "fencing_violations=0 ", "late_writes=0 "] {
        if !summary.contains(clean) {
            return Err(format!("{summary}\nstdout:\n{stdout}").into());
        }
    }
    for fault in faults {
        let injected = stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("fault {fault}: injected=")))
            .and_then(|rest| rest.split(' ').next()?.parse::<u32>().ok());
        if injected.is_none_or(|count| count == 0) {
            return Err(format!("no {fault} fault was injected:\n{stdout}").into());
        }
    }
    eprintln!("{} {summary}", args.join(" "));
    Ok(Completion::Completed)
}
