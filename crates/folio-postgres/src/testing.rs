//! A throwaway PostgreSQL cluster for tests.
//!
//! [`TestCluster::start`] runs `initdb` into a fresh temporary directory and
//! starts a server on a free loopback port with trust authentication (the
//! superuser is `folio`, no password), so tests need neither a running
//! server nor credentials. [`TestCluster::shared`] gives every test of a
//! process the same cluster, started on first use; when the environment
//! variable `FOLIO_TEST_POSTGRES` holds a URL, it uses that server instead.
//!
//! The server binaries (`initdb`, `pg_ctl`, `postgres`) are looked up on
//! `PATH`, else in the newest `/usr/lib/postgresql/*/bin` (where Debian's
//! `postgresql` package puts them). PostgreSQL refuses to run as root: under
//! root the cluster belongs to the user `postgres` and every server command
//! runs through `runuser -u postgres --`.
//!
//! A cluster is stopped and its directory removed when the `TestCluster` is
//! dropped. Statics are never dropped, so each cluster also has a watchdog:
//! a small shell process, started beside it in its own process group, that
//! waits for the test process to end and then stops the server (`pg_ctl -m
//! immediate`) and removes the directory. A test run therefore leaves no
//! server behind, even when it panics or is interrupted.
//!
//! ```no_run
//! # async fn example() -> Result<(), tokio_postgres::Error> {
//! use folio_postgres::testing::TestCluster;
//!
//! let url = TestCluster::shared().url();
//! let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let row = client.query_one("SELECT 1", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 1);
//! # Ok(())
//! # }
//! ```

mod ha;

pub use ha::{Failover, HaCluster};

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming an existing server for the tests
/// (`postgres://user@host:port/dbname`); when set, [`TestCluster::shared`]
/// starts nothing.
pub const URL_VARIABLE: &str = "FOLIO_TEST_POSTGRES";

/// The superuser `initdb` creates (trust authentication: no password).
pub const SUPERUSER: &str = "folio";

/// The user that owns the cluster when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// How often starting the server is tried, each time on a new free port
/// (another process may take the port between the probe and the start).
const START_ATTEMPTS: usize = 5;

/// A PostgreSQL server for tests: started by [`TestCluster::start`] and
/// stopped on drop, or an existing server named by `FOLIO_TEST_POSTGRES`.
pub struct TestCluster {
    url: String,
    /// `None` for a server this process did not start.
    server: Option<Server>,
}

/// A server this process started.
struct Server {
    /// The temporary directory: the data directory, the log, the socket.
    dir: PathBuf,
    data: PathBuf,
    binaries: Binaries,
    /// Run server commands as `postgres` (the tests run as root).
    as_system_user: bool,
    /// The watchdog (`sh`, or `runuser` running it).
    watchdog: Child,
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
#[derive(Clone, Debug)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl TestCluster {
    /// Starts a new cluster: `initdb` into a fresh temporary directory, then
    /// a server on a free port of 127.0.0.1, waiting until it accepts
    /// connections. Blocks for a few seconds.
    ///
    /// Fails with [`io::ErrorKind::NotFound`] when no server binaries are
    /// installed, and with the server's own messages when it does not start.
    pub fn start() -> io::Result<TestCluster> {
        let binaries = Binaries::find()?;
        let as_system_user = running_as_root();
        let dir = fresh_directory(as_system_user)?;
        let data = dir.join("data");
        if as_system_user {
            let status = Command::new("chown")
                .args(["-R", SYSTEM_USER])
                .arg(&dir)
                .status()?;
            if !status.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(io::Error::other(format!(
                    "chown -R {SYSTEM_USER} {} failed ({status}): PostgreSQL refuses to run \
                     as root and needs the user `{SYSTEM_USER}` (apt-get install postgresql \
                     creates it)",
                    dir.display()
                )));
            }
        }
        // The watchdog comes first, so that a failure anywhere below (or a
        // test process killed meanwhile) leaves nothing behind either.
        let watchdog = match spawn_watchdog(&binaries, &dir, &data, as_system_user) {
            Ok(watchdog) => watchdog,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };
        let server = Server {
            dir,
            data,
            binaries,
            as_system_user,
            watchdog,
        };
        // From here on, dropping `server` cleans up.
        server.init()?;
        let port = server.start_on_free_port()?;
        Ok(TestCluster {
            url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres"),
            server: Some(server),
        })
    }

    /// The cluster every test of this process shares: the server named by
    /// `FOLIO_TEST_POSTGRES` when that variable is set, else one started
    /// with [`TestCluster::start`] on first use (and stopped by its watchdog
    /// when the process ends).
    ///
    /// # Panics
    ///
    /// When the server cannot be started, in particular when PostgreSQL's
    /// server binaries are not installed.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Some(url) = std::env::var_os(URL_VARIABLE).filter(|url| !url.is_empty()) {
                return TestCluster {
                    url: url.to_string_lossy().into_owned(),
                    server: None,
                };
            }
            match TestCluster::start() {
                Ok(cluster) => cluster,
                Err(error) if error.kind() == io::ErrorKind::NotFound => panic!(
                    "the PostgreSQL tests need PostgreSQL 15 server binaries (initdb, pg_ctl, \
                     postgres), on PATH or in /usr/lib/postgresql/*/bin: install them with \
                     `apt-get install postgresql` (`bash scripts/test` does), or set \
                     {URL_VARIABLE} to the URL of a running server ({error})"
                ),
                Err(error) => panic!("the throwaway PostgreSQL cluster did not start: {error}"),
            }
        })
    }

    /// The URL of the server, `postgres://folio@127.0.0.1:PORT/postgres` for
    /// a cluster started here: usable by tokio-postgres as it is.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("url", &self.url)
            .field("dir", &self.server.as_ref().map(|server| &server.dir))
            .finish()
    }
}

impl Server {
    /// A command running `program` as the cluster's owner, in its directory
    /// (the current one may be unreadable by `postgres`).
    fn command(&self, program: &Path) -> Command {
        as_owner(program, self.as_system_user, &self.dir)
    }

    fn init(&self) -> io::Result<()> {
        let output = self
            .command(&self.binaries.initdb)
            .arg("-D")
            .arg(&self.data)
            .args(["-A", "trust", "-U", SUPERUSER, "--encoding", "UTF8"])
            .args(["--locale", "C", "--no-sync"])
            .output()?;
        check("initdb", &output, None)
    }

    /// Starts the server, on a new free port at each attempt; returns the port.
    fn start_on_free_port(&self) -> io::Result<u16> {
        let log = self.dir.join("server.log");
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 \
                 -c fsync=on -c shared_buffers=128MB",
                shell_quote(&self.dir)
            );
            let output = self
                .command(&self.binaries.pg_ctl)
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "-o", &options, "start"])
                .stdin(Stdio::null())
                .output()?;
            match check("pg_ctl start", &output, Some(&log)) {
                Ok(()) => return Ok(port),
                Err(error) => {
                    // A server that came up late must not hold the data
                    // directory for the next attempt.
                    let _ = self.stop();
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn stop(&self) -> io::Result<Output> {
        self.command(&self.binaries.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Nothing to stop when the server never started: pg_ctl says so.
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The watchdog ends within a second once the directory is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.watchdog.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                _ => return,
            }
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Binaries {
    /// `initdb`, `pg_ctl` and `postgres` from one directory of `PATH`, else
    /// from the newest `/usr/lib/postgresql/VERSION/bin`.
    fn find() -> io::Result<Binaries> {
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        if let Some(dir) = on_path.into_iter().find(|dir| has_server_binaries(dir)) {
            return Ok(Binaries::in_dir(&dir));
        }
        let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry
                    .file_name()
                    .to_str()?
                    .split('.')
                    .map(|part| part.parse::<u32>().ok())
                    .collect::<Option<Vec<u32>>>()?;
                let bin = entry.path().join("bin");
                has_server_binaries(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        match versions.pop() {
            Some((_, bin)) => Ok(Binaries::in_dir(&bin)),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH \
                 or in /usr/lib/postgresql/*/bin",
            )),
        }
    }

    fn in_dir(dir: &Path) -> Binaries {
        Binaries {
            initdb: dir.join("initdb"),
            pg_ctl: dir.join("pg_ctl"),
        }
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"].iter().all(|name| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// Whether this process runs as root (its effective uid owns `/proc/self`;
/// without `/proc`, `id -u` says).
fn running_as_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0"),
    }
}

/// A new, empty directory under the system's temporary directory (under
/// `/tmp` when the user `postgres` could not reach the former).
fn fresh_directory(as_system_user: bool) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut base = std::env::temp_dir();
    if as_system_user && !world_traversable(&base) {
        base = PathBuf::from("/tmp");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    loop {
        let dir = base.join(format!(
            "folio-pg-{}-{nanos:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Whether every ancestor of `dir` lets other users through.
fn world_traversable(dir: &Path) -> bool {
    dir.ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0))
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `program` as a command run by the cluster's owner, in `dir`.
fn as_owner(program: &Path, as_system_user: bool, dir: &Path) -> Command {
    let mut command = if as_system_user {
        let mut command = Command::new("runuser");
        command.args(["-u", SYSTEM_USER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir(dir);
    command
}

/// Starts the process that stops the server and removes `dir` once this
/// process has ended. It also ends, doing nothing, when `dir` disappears
/// (the cluster was dropped). Its own process group keeps it alive through
/// a Ctrl-C meant for the tests.
fn spawn_watchdog(
    binaries: &Binaries,
    dir: &Path,
    data: &Path,
    as_system_user: bool,
) -> io::Result<Child> {
    let pid = std::process::id();
    let dir = shell_quote(dir);
    let script = format!(
        "while {{ kill -0 {pid} 2>/dev/null || [ -d /proc/{pid} ]; }} && [ -d {dir} ]; do \
             sleep 1; \
         done; \
         if [ -d {dir} ]; then \
             {pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1; \
             rm -rf {dir}; \
         fi",
        pg_ctl = shell_quote(&binaries.pg_ctl),
        data = shell_quote(data),
    );
    as_owner(Path::new("sh"), as_system_user, Path::new("/"))
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// `path` as one word of a POSIX shell command.
fn shell_quote(path: impl AsRef<OsStr>) -> String {
    let text = path.as_ref().to_string_lossy();
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `Ok` when `output` is a success, else an error with what the command
/// printed (and the end of the server's log, if any).
fn check(what: &str, output: &Output, log: Option<&Path>) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let mut message = format!("{what} failed ({})", output.status);
    for printed in [&output.stdout, &output.stderr] {
        let printed = String::from_utf8_lossy(printed);
        if !printed.trim().is_empty() {
            message.push('\n');
            message.push_str(printed.trim());
        }
    }
    if let Some(text) = log.and_then(|log| std::fs::read_to_string(log).ok()) {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        message.push_str("\nserver log:\n");
        for line in tail.into_iter().rev() {
            message.push_str(line);
            message.push('\n');
        }
    }
    Err(io::Error::other(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        let row = client.query_one("SELECT 1", &[]).await?;
        drop(client);
        let _ = connection.await;
        Ok(row.get(0))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shared_cluster_accepts_connections() {
        let cluster = TestCluster::shared();
        assert_eq!(select_one(cluster.url()).await.unwrap(), 1);
        assert!(
            std::ptr::eq(cluster, TestCluster::shared()),
            "one per process"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_started_cluster_is_gone_once_dropped() {
        let cluster = TestCluster::start().expect("the cluster starts");
        let url = cluster.url().to_owned();
        assert!(url.starts_with("postgres://folio@127.0.0.1:"), "{url}");
        assert_eq!(select_one(&url).await.unwrap(), 1);
        let dir = cluster.server.as_ref().unwrap().dir.clone();
        assert!(dir.join("data").join("PG_VERSION").exists());

        drop(cluster);
        assert!(!dir.exists(), "the directory is removed");
        assert!(select_one(&url).await.is_err(), "the server is stopped");
    }
}
