//! The coordinator's side of the worker processes (`worker_main.rs` is theirs): starting
//! them, following what they say, signalling and stopping them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dlock_testkit::{ChildLines, ChildProcess};
use tokio::time::Instant;

use crate::worker_main;

/// A lock acquisition: the name and the fencing token.
pub(crate) type Hold = (String, i64);

/// What a worker last said it does, and what it reported.
#[derive(Debug, Default)]
pub(crate) struct WorkerState {
    /// The lock it holds, from `HOLD` to `FREE`.
    pub(crate) holding: Option<Hold>,
    /// The owner id of the acquisition it holds.
    pub(crate) owner: Option<String>,
    /// Every acquisition it was handed (`HOLD`), in order.
    pub(crate) held: Vec<Hold>,
    /// When the coordinator heard each `HOLD`, in the same order.
    pub(crate) held_at: Vec<Instant>,
    /// Every acquisition it released (`FREE`), and when the coordinator heard of it.
    pub(crate) freed: Vec<(Hold, Instant)>,
    /// When it was killed, if it was: from then on it holds nothing.
    pub(crate) killed_at: Option<Instant>,
    /// Whether its section's entry committed and it is working, outside any transaction,
    /// its exit not yet begun (`WORK` to `DONE`).
    pub(crate) working: bool,
    /// Whether that work is a long section the coordinator asked for (`WORK … long`).
    pub(crate) working_long: bool,
    /// Every loss it reported, and when the coordinator heard of it.
    pub(crate) lost: Vec<(Hold, Instant)>,
    /// Its fenced writes refused, by the acquisition they were made under.
    pub(crate) refused: Vec<Hold>,
    /// Library calls that took longer than they may (`HANG` lines).
    pub(crate) hangs: Vec<String>,
    /// Its final `ERRORS` line: how many operations failed, and the last failure.
    pub(crate) errors: Option<(u64, String)>,
    /// `--election`: the terms its observers saw, in order.
    pub(crate) saw: Vec<Hold>,
}

impl WorkerState {
    /// When it reported the loss of `hold`, if it did.
    pub(crate) fn lost_at(&self, hold: &Hold) -> Option<Instant> {
        self.lost
            .iter()
            .find(|(lost, _)| lost == hold)
            .map(|(_, at)| *at)
    }

    /// When it stopped believing it held `hold`: the loss or the release it reported
    /// first, or its death.
    pub(crate) fn ended_at(&self, hold: &Hold) -> Option<Instant> {
        let freed = self
            .freed
            .iter()
            .find(|(freed, _)| freed == hold)
            .map(|(_, at)| *at);
        [self.lost_at(hold), freed, self.killed_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// How to start a worker: the environment every worker of the run shares.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) env: Vec<(&'static str, String)>,
}

/// A running worker process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    pub(crate) index: usize,
    process: ChildProcess,
    pub(crate) state: Arc<Mutex<WorkerState>>,
    reader: tokio::task::JoinHandle<()>,
}

impl WorkerProcess {
    /// Starts worker `index` and waits until it is connected.
    pub(crate) async fn start(launch: &Launch, index: usize) -> Result<Self, String> {
        let env = launch
            .env
            .iter()
            .map(|(name, value)| (*name, value.clone()))
            .chain([(worker_main::INDEX, index.to_string())]);
        let mut process =
            ChildProcess::spawn_ready(format!("worker {index}"), env, Duration::from_secs(60))
                .await?;
        let lines = process
            .take_lines()
            .expect("BUG: a new child's output is not followed yet");
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let reader = tokio::spawn(follow(lines, Arc::clone(&state)));
        Ok(Self {
            index,
            process,
            state,
            reader,
        })
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, WorkerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks it for a section whose work lasts `work` (its next, once it holds a lock).
    pub(crate) async fn ask_for_long_section(&mut self, work: Duration) -> Result<(), String> {
        let request = format!("LONG {}", work.as_millis().max(1));
        self.process.send(&request).await
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the process.
    pub(crate) async fn signal(&self, signal: &str) -> Result<(), String> {
        self.process.signal(signal).await
    }

    /// Kills the process and waits for it to die.
    pub(crate) async fn kill(mut self) -> Result<(), String> {
        self.process.kill().await
    }

    /// Closes its input, which asks it to finish its section and exit, and waits up to
    /// `limit` for it to exit successfully (else: it hangs); then for its last words.
    pub(crate) async fn stop(mut self, limit: Duration) -> Result<Arc<Mutex<WorkerState>>, String> {
        self.process.finish(limit).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        Ok(self.state)
    }
}

/// Reads a worker's lines into its state until it exits.
async fn follow(mut lines: ChildLines, state: Arc<Mutex<WorkerState>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.splitn(4, ' ');
        let (event, first, second, third) =
            (words.next(), words.next(), words.next(), words.next());
        let hold = || -> Option<Hold> { Some((first?.to_owned(), second?.parse().ok()?)) };
        let mut state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            Some("HOLD") => {
                state.holding = hold();
                state.owner = third.map(str::to_owned);
                if let Some(hold) = hold() {
                    state.held.push(hold);
                    state.held_at.push(Instant::now());
                }
            }
            Some("WORK") => {
                state.working = true;
                state.working_long = third == Some("long");
            }
            Some("DONE") => {
                state.working = false;
                state.working_long = false;
            }
            Some("FREE") => {
                if let Some(hold) = state.holding.clone() {
                    state.freed.push((hold, Instant::now()));
                }
                state.holding = None;
                state.owner = None;
                state.working = false;
                state.working_long = false;
            }
            Some("REFUSED") => state.refused.extend(hold()),
            Some("SAW") => state.saw.extend(hold()),
            Some("HANG") => state.hangs.push(line.clone()),
            Some("LOST") => {
                if let Some(hold) = hold() {
                    state.lost.push((hold, Instant::now()));
                }
            }
            Some("ERRORS") => {
                let count = first.and_then(|count| count.parse().ok()).unwrap_or(0);
                let last = line.splitn(3, ' ').nth(2).unwrap_or_default();
                state.errors = Some((count, last.to_owned()));
            }
            _ => eprintln!("dlock-torture: a worker said something unexpected: {line:?}"),
        }
    }
}
