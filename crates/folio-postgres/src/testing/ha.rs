//! A throwaway cluster that survives a machine: `scripts/ha-cluster` (one
//! etcd, two PostgreSQL nodes under Patroni, strict synchronous
//! replication) in a temporary directory of its own, for failover tests.
//!
//! The script installs what is missing (etcd-server, Patroni in a virtual
//! environment) and prints the multi-host URL that reaches the leader
//! wherever it is (`target_session_attrs=read-write`). [`HaCluster::failover`]
//! loses the leader's machine (`kill -9` of its Patroni and postmaster),
//! waits for the other node to lead and brings the old one back as a
//! synchronous standby. Dropping the cluster stops every process and
//! removes the directory.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The script, in the repository this crate is built from.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ha-cluster");

/// A running cluster; see the module documentation.
#[derive(Debug)]
pub struct HaCluster {
    dir: PathBuf,
    url: String,
}

/// What a failover did ([`HaCluster::failover`]).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Failover {
    /// The node that led and was lost.
    pub old: String,
    /// The node that leads now.
    pub new: String,
    /// From the loss until the new leader was running, as Patroni reports.
    pub seconds: Option<f64>,
}

impl HaCluster {
    /// Starts a cluster in a new temporary directory (about 10 s, more the
    /// first time, while what is missing is installed).
    pub fn start() -> io::Result<HaCluster> {
        HaCluster::start_with(&[])
    }

    /// A control cluster: asynchronous replication, and any standby may
    /// lead however far behind, so a failover can lose acknowledged writes
    /// ([`HaCluster::failover_unreplicated`]). What the failover tests
    /// check for must fail on it.
    pub fn start_asynchronous() -> io::Result<HaCluster> {
        HaCluster::start_with(&["--asynchronous"])
    }

    fn start_with(arguments: &[&str]) -> io::Result<HaCluster> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "folio-ha-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cluster = HaCluster {
            url: String::new(),
            dir,
        };
        // Dropped on a failure, the cluster stops what did start.
        let printed = cluster.run_with("start", arguments)?;
        let url = printed.lines().last().unwrap_or_default().trim().to_owned();
        if !url.starts_with("postgres://") {
            return Err(io::Error::other(format!(
                "scripts/ha-cluster start printed no URL: {printed:?}"
            )));
        }
        cluster.url = url;
        Ok(cluster)
    }

    /// The URL that reaches the leader: every node, `read-write`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of one node by its place in [`HaCluster::url`] (0 or 1),
    /// whatever its role.
    pub fn node_url(&self, index: usize) -> Option<String> {
        let (head, rest) = self.url.split_once('@')?;
        let (hosts, path) = rest.split_once('/')?;
        let host = hosts.split(',').nth(index)?;
        let path = path.split('?').next().unwrap_or_default();
        Some(format!("{head}@{host}/{path}"))
    }

    /// Loses the leader's machine and waits for the other node to lead,
    /// then for the old one to follow in sync again.
    pub fn failover(&self) -> io::Result<Failover> {
        self.parse(&self.run("failover")?)
    }

    /// [`HaCluster::failover`], after stopping the leader's WAL sender for
    /// `seconds`: on an asynchronous cluster, what the leader acknowledged
    /// meanwhile is lost.
    pub fn failover_unreplicated(&self, seconds: u32) -> io::Result<Failover> {
        self.parse(&self.run_with("failover", &["--unreplicated", &seconds.to_string()])?)
    }

    /// A planned change of leader (`patronictl switchover`).
    pub fn switchover(&self) -> io::Result<Failover> {
        self.parse(&self.run("switchover")?)
    }

    /// etcd lost for `seconds` (`kill -9`, then started again on its data):
    /// the leader cannot renew its lease and demotes itself, then leads
    /// again.
    pub fn etcd_outage(&self, seconds: u32) -> io::Result<Failover> {
        let printed = self.run_with("etcd-outage", &["--seconds", &seconds.to_string()])?;
        self.parse(&printed)
    }

    /// The leader's Patroni stopped (`SIGSTOP`) for `seconds`, its
    /// PostgreSQL running on as a primary, unfenced: the other node takes
    /// the lease if it holds everything the leader last published, else
    /// waits; once resumed, the old leader follows, or leads again.
    pub fn freeze(&self, seconds: u32) -> io::Result<Failover> {
        let printed = self.run_with("freeze", &["--seconds", &seconds.to_string()])?;
        self.parse(&printed)
    }

    /// The members as Patroni lists them (JSON).
    pub fn status(&self) -> io::Result<String> {
        self.run("status")
    }

    fn parse(&self, printed: &str) -> io::Result<Failover> {
        let line = printed.lines().last().unwrap_or_default();
        serde_json::from_str(line).map_err(|error| io::Error::other(format!("{line:?}: {error}")))
    }

    /// Runs the script's `command` on this cluster: what it printed.
    fn run(&self, command: &str) -> io::Result<String> {
        self.run_with(command, &[])
    }

    fn run_with(&self, command: &str, arguments: &[&str]) -> io::Result<String> {
        let output = Command::new("python3")
            .arg(SCRIPT)
            .arg(command)
            .arg("--dir")
            .arg(&self.dir)
            .args(arguments)
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "scripts/ha-cluster {command} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}
