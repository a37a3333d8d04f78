//! The short torture run, part of `cargo test --workspace`: each adapter and each dialect
//! once, 25 s each, the four runs side by side. No server is restarted (other tests
//! use the same servers); that fault belongs to the long run.
//!
//! The faults that aim at the windows between a holder's local deadline and its lease's
//! end (short-stop, delayed-acquire, hung-renewal) do not fit in 25 s after the four
//! others, so a run of their own (SeaORM on PostgreSQL) takes the network ones, and the
//! SQLite run the short stop.
//!
//! A database that cannot be reached skips its run with a loud message, unless `CI` is
//! set: then it fails.

use std::process::Command;

/// Runs the suite with `args` and `faults` and checks its report: it passed, every fault
/// was injected, and the summary line shows no violation.
fn torture(args: &[&str], url_var: &str, faults: &[&str]) {
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
    let output = command.output().expect("the torture binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        let message = format!("the database is unreachable (set {url_var} to its URL): {stderr}");
        assert!(
            std::env::var_os("CI").is_none(),
            "{message}; CI is set, so this fails instead of skipping"
        );
        eprintln!("\n!!! skipped: {message}\n");
        return;
    }
    assert!(
        output.status.success(),
        "the torture run failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("sections="))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    for clean in ["overlaps=0 ", "fencing_violations=0 ", "late_writes=0 "] {
        assert!(summary.contains(clean), "{summary}");
    }
    for fault in faults {
        let injected = stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("fault {fault}: injected=")))
            .and_then(|rest| rest.split(' ').next()?.parse::<u32>().ok());
        assert!(
            injected.is_some_and(|count| count > 0),
            "no {fault} fault was injected:\n{stdout}"
        );
    }
    eprintln!("{} {summary}", args.join(" "));
}

/// One test, the runs side by side: libtest runs only as many tests at once as there are
/// cores, which on two cores would run them one after another.
#[test]
fn every_adapter_and_every_dialect_survive_the_faults() {
    std::thread::scope(|scope| {
        let runs = [
            scope.spawn(|| {
                torture(
                    &["--adapter", "tokio-postgres", "--dialect", "postgres"],
                    "DLOCK_TEST_POSTGRES_URL",
                    &["kill", "stop", "terminate", "unreachable"],
                );
            }),
            scope.spawn(|| {
                torture(
                    &["--adapter", "seaorm", "--dialect", "mysql"],
                    "DLOCK_TEST_MYSQL_URL",
                    &["kill", "stop", "terminate", "unreachable"],
                );
            }),
            // SQLite has no server and no network: a holder killed, a holder frozen (past
            // its lease, and past its deadline only).
            scope.spawn(|| {
                torture(
                    &["--adapter", "diesel", "--dialect", "sqlite"],
                    "DLOCK_TEST_SQLITE_URL",
                    &["kill", "stop", "short-stop"],
                );
            }),
            scope.spawn(|| {
                torture(
                    &["--adapter", "seaorm", "--dialect", "postgres"],
                    "DLOCK_TEST_POSTGRES_URL",
                    &["short-stop", "delayed-acquire", "hung-renewal"],
                );
            }),
        ];
        let failed = runs
            .into_iter()
            .map(|run| run.join())
            .filter(Result::is_err)
            .count();
        assert_eq!(failed, 0, "{failed} of the runs failed (see above)");
    });
}
