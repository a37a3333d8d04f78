//! The dlock benchmark: runs the scenarios against one adapter and dialect and, in the
//! same run, the database's own floors, printing one JSON object per result line on
//! stdout. See BENCHMARKS.md, and `--help`.

mod args;
mod child;
mod cpu;
mod report;
mod scenarios;
mod targets;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dlock_core::adapter::ColumnType;
use dlock_testkit::{Route, TestDatabase};

use crate::args::Args;
use crate::scenarios::Context;

fn main() -> ExitCode {
    if let Some(code) = child::run_if_child() {
        return code;
    }
    let args = Args::parse_or_exit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dlock-bench: cannot start a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker thread, as a service's code would be: tasks the lock spawns then start
    // on the same thread instead of waking another one.
    runtime.block_on(async {
        tokio::spawn(run(args)).await.unwrap_or_else(|error| {
            eprintln!("dlock-bench: the benchmark panicked: {error}");
            ExitCode::FAILURE
        })
    })
}

async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let run_id = dlock_testkit::unique_name("run");
    // Kept until the end of the run: dropping it removes a SQLite file made for the run.
    let database = match args.route() {
        Route::TransactionPooler => Ok(TestDatabase::pgbouncer()),
        Route::Direct | Route::DirectUnnamed => TestDatabase::new(args.dialect(), "dlock-bench"),
    };
    let database = match database {
        Ok(database) => database,
        Err(error) => {
            eprintln!("dlock-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let context = Context {
        adapter: args.adapter,
        dialect: args.dialect(),
        url: database.url().to_owned(),
        route: args.route(),
        quick: args.quick,
        run_id,
    };
    eprintln!(
        "dlock-bench: adapter {}, dialect {}, {}{}; {}",
        context.adapter.name(),
        context.dialect.name(),
        context.url,
        if context.quick { ", quick" } else { "" },
        machine_load()
    );
    if let Err(error) = check_connection(&context).await {
        eprintln!("dlock-bench: {}: {error}", database.describe());
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    let mut results = Vec::new();
    for scenario in args.scenarios() {
        match scenario.run(&context).await {
            Ok(lines) => {
                for line in lines {
                    println!("{}", line.render());
                    results.push(line);
                }
            }
            Err(error) => {
                // Keep going: the other scenarios' figures are still worth having.
                eprintln!("dlock-bench: scenario {} failed: {error}", scenario.name());
                failed = true;
            }
        }
    }
    eprintln!(
        "dlock-bench: finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eprintln!("dlock-bench: {}", machine_load());
    eprintln!(
        "dlock-bench: the targets for {} (BENCHMARKS.md), in this run:",
        context.dialect.name()
    );
    for verdict in targets::judge(&results, context.dialect) {
        let mark = match verdict.met {
            Some(true) => "met    ",
            Some(false) => "NOT met",
            None => "-      ",
        };
        eprintln!("  {mark} {}: {}", verdict.target, verdict.detail);
    }
    drop(database);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The load average and core count, where the system tells them: on a shared machine
/// they say how far to trust absolute figures.
fn machine_load() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(load) => {
            let averages: Vec<&str> = load.split_whitespace().take(3).collect();
            format!("{cores} cores, load average {}", averages.join(" "))
        }
        Err(_) => format!("{cores} cores"),
    }
}

/// Fails early, with the URL and its variable in the message, when the server is not there.
async fn check_connection(context: &Context) -> Result<(), String> {
    let select1 = dlock_testkit::statement(
        context.dialect,
        scenarios::floor_sql(context.dialect).select1,
        Vec::new(),
        &[ColumnType::Int],
    );
    // Connecting is inside the time limit: some adapters connect at once, others lazily
    // on the first statement.
    let connect_and_select = async {
        let queries = context.pool(1).await?;
        queries
            .query(&select1)
            .await
            .map_err(|error| error.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(15), connect_and_select).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("cannot reach it: {error}")),
        Err(_) => Err("it did not answer within 15 s".to_owned()),
    }
}
