//! Our own binary, started again as a child: the processes of a fleet, as separate as
//! real nodes are. Parent and child talk in lines: the parent's environment tells the
//! child its part, the child answers on stdout, the parent may send lines on stdin, and
//! closing stdin asks the child to finish. What the lines say is each suite's own.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The lines a child prints.
pub type ChildLines = Lines<BufReader<ChildStdout>>;

/// A running child process, seen from the parent. Dropping it kills the child.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Option<ChildLines>,
}

impl ChildProcess {
    /// Starts this process's own binary again with `env` added to its environment;
    /// `name` ("worker 3") names it in messages. Its stderr is ours.
    pub fn spawn<'a>(
        name: impl Into<String>,
        env: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Self, String> {
        let name = name.into();
        let exe = std::env::current_exe()
            .map_err(|error| format!("cannot find this program's own binary: {error}"))?;
        let mut child = Command::new(exe)
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {name}: {error}"))?;
        let (Some(stdin), Some(stdout), Some(pid)) =
            (child.stdin.take(), child.stdout.take(), child.id())
        else {
            return Err(format!("{name} has no pipes or no pid"));
        };
        Ok(Self {
            name,
            child,
            pid,
            stdin: Some(stdin),
            lines: Some(BufReader::new(stdout).lines()),
        })
    }

    /// Like [`ChildProcess::spawn`], then waits up to `limit` for the child to print
    /// `READY` (connected, its tables in place).
    pub async fn spawn_ready<'a>(
        name: impl Into<String>,
        env: impl IntoIterator<Item = (&'a str, String)>,
        limit: Duration,
    ) -> Result<Self, String> {
        let mut child = Self::spawn(name, env)?;
        child.expect("READY", limit).await?;
        Ok(child)
    }

    /// The name it has in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, for signals.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `line` to its stdin.
    pub async fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: its input is already closed", self.name))?;
        let line = format!("{line}\n");
        stdin
            .write_all(line.as_bytes())
            .await
            .and(stdin.flush().await)
            .map_err(|error| format!("cannot write to {}: {error}", self.name))
    }

    /// The next line it prints, failing if it exits first or prints nothing for `limit`.
    pub async fn next_line(&mut self, limit: Duration) -> Result<String, String> {
        let name = &self.name;
        let lines = self
            .lines
            .as_mut()
            .ok_or_else(|| format!("{name}: its output is read elsewhere"))?;
        match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(format!("{name} exited early (see its error above)")),
            Ok(Err(error)) => Err(format!("cannot read {name}'s output: {error}")),
            Err(_) => Err(format!("{name} printed nothing for {limit:?}")),
        }
    }

    /// Reads a line that must start with `word`, and returns the rest of it.
    pub async fn expect(&mut self, word: &str, limit: Duration) -> Result<String, String> {
        let line = self.next_line(limit).await?;
        match line.strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(format!("{}: expected {word}, got {line:?}", self.name)),
        }
    }

    /// Reads a line `word <value>` and returns the value, parsed.
    pub async fn expect_parsed<T: std::str::FromStr>(
        &mut self,
        word: &str,
        limit: Duration,
    ) -> Result<T, String> {
        let rest = self.expect(word, limit).await?;
        rest.parse()
            .map_err(|_| format!("{}: {word} {rest:?} does not parse", self.name))
    }

    /// Its output, to follow from a task of the caller's own; [`ChildProcess::next_line`]
    /// fails from then on.
    pub fn take_lines(&mut self) -> Option<ChildLines> {
        self.lines.take()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to it, with `kill`.
    pub async fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.pid;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .map_err(|error| format!("cannot run kill: {error}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {pid} failed: {status}"))
        }
    }

    /// Kills it at once and waits for it to die.
    pub async fn kill(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .await
            .map_err(|error| format!("cannot kill {}: {error}", self.name))
    }

    /// Closes its input, which asks it to finish, and waits up to `limit` for it to exit
    /// successfully; returns the lines it printed meanwhile (none if they are followed
    /// elsewhere). Killed if it is still running at `limit`.
    pub async fn finish(mut self, limit: Duration) -> Result<Vec<String>, String> {
        drop(self.stdin.take());
        let name = self.name.clone();
        let mut lines = self.lines.take();
        let child = &mut self.child;
        let rest = async {
            let mut printed = Vec::new();
            if let Some(lines) = &mut lines {
                while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                    printed.push(line);
                }
            }
            let status = child.wait().await.map_err(|error| error.to_string())?;
            if status.success() {
                Ok(printed)
            } else {
                Err(format!("{name} failed ({status}); it printed: {printed:?}"))
            }
        };
        match tokio::time::timeout(limit, rest).await {
            Ok(finished) => finished,
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "{name} still ran {limit:?} after it was asked to finish"
                ))
            }
        }
    }
}

/// Runs a child's part, `main`, on a runtime of one thread (a child stands for one node of
/// a fleet, and the machine has few cores to share among all of them and the database),
/// and returns its exit code; an error is printed as `who: error`.
pub fn run_child(who: &str, main: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(main),
        Err(error) => Err(format!("cannot start a tokio runtime: {error}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{who}: {error}");
            ExitCode::FAILURE
        }
    }
}
