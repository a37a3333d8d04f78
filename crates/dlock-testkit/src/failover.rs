//! A PostgreSQL primary and streaming standby that fail over on demand: the rig
//! `rigs/failover` (a script, so that a person can run it too), driven from Rust, behind a
//! [`Proxy`] that follows the primary, as a user's stable address (a virtual IP, a DNS
//! name, Patroni's HAProxy) would.
//!
//! Every rig gets a directory and two ports of its own, so rigs of concurrent test runs
//! never meet; none touches the cluster on 5432.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::process::Command;

use crate::proxy::Proxy;

/// The rig script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rigs/failover");

/// Whether this machine can run the rig: PostgreSQL's server binaries are installed.
pub fn available() -> Result<(), String> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|version| version.path().join("bin/pg_ctl").exists());
    if installed {
        Ok(())
    } else {
        Err(
            "the failover rig needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin; \
             Debian's postgresql package)"
                .into(),
        )
    }
}

/// How the standby replicates, as PostgreSQL's settings say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// The default almost everywhere: a commit is acknowledged once the primary has it.
    Asynchronous,
    /// `synchronous_standby_names = '*'`, `synchronous_commit = on`: acknowledged once
    /// the standby has written it too.
    Synchronous,
}

impl Replication {
    fn mode(self) -> &'static str {
        match self {
            Self::Asynchronous => "async",
            Self::Synchronous => "sync",
        }
    }
}

/// A running rig; dropping it stops both servers and deletes their files.
#[derive(Debug)]
pub struct FailoverRig {
    dir: PathBuf,
    ports: [u16; 2],
    proxy: Proxy,
}

impl FailoverRig {
    /// Starts a primary and a standby replicating in `replication`, and the proxy.
    pub async fn up(replication: Replication) -> Result<Self, String> {
        static RIGS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dlock-failover-{}-{}",
            std::process::id(),
            RIGS.fetch_add(1, Ordering::Relaxed)
        ));
        let ports = [free_port()?, free_port()?];
        let rig = Self {
            proxy: Proxy::start(&url(ports[0])).await?,
            dir,
            ports,
        };
        rig.run(&["up", replication.mode()]).await?;
        let primary = rig.primary_url().await?;
        rig.proxy.retarget(&primary)?;
        Ok(rig)
    }

    /// The primary's URL through the proxy, whichever server is the primary.
    pub fn url(&self) -> &str {
        self.proxy.url()
    }

    /// The current standby's own URL (for reading what it received).
    pub async fn standby_url(&self) -> Result<String, String> {
        Ok(url(self
            .run(&["standby-port"])
            .await?
            .trim()
            .parse()
            .map_err(|error| {
                format!("the rig printed no standby port: {error}")
            })?))
    }

    async fn primary_url(&self) -> Result<String, String> {
        Ok(url(self
            .run(&["primary-port"])
            .await?
            .trim()
            .parse()
            .map_err(|error| {
                format!("the rig printed no primary port: {error}")
            })?))
    }

    /// The standby stops receiving WAL: in asynchronous mode what the primary commits now
    /// is lost when it crashes.
    pub async fn hold_replication(&self) -> Result<(), String> {
        self.run(&["hold-replication"]).await.map(drop)
    }

    /// Kills the primary (`-m immediate`) and promotes the standby; the proxy then leads
    /// to the new primary.
    pub async fn crash(&self) -> Result<(), String> {
        self.run(&["crash"]).await?;
        self.proxy.retarget(&self.primary_url().await?)
    }

    /// A fresh standby of the new primary, so that it can fail over again.
    pub async fn rebuild(&self) -> Result<(), String> {
        self.run(&["rebuild"]).await.map(drop)
    }

    /// The rig script, set to this rig's directory and ports.
    fn script(&self) -> std::process::Command {
        let mut script = std::process::Command::new(SCRIPT);
        script
            .env("DLOCK_FAILOVER_DIR", &self.dir)
            .env("DLOCK_FAILOVER_PORT_A", self.ports[0].to_string())
            .env("DLOCK_FAILOVER_PORT_B", self.ports[1].to_string());
        script
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::from(self.script())
            .args(args)
            .output()
            .await
            .map_err(|error| format!("cannot run {SCRIPT}: {error}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "the failover rig's `{}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

impl Drop for FailoverRig {
    fn drop(&mut self) {
        let _ = self.script().arg("down").status();
    }
}

fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/test")
}

/// A port nothing listens on now (the kernel's pick), for one of the rig's servers.
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port for the failover rig: {error}"))
}
