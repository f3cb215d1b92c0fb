//! `folio serve` as a child process, for the tests that need the real
//! binary: crashes, signals, several servers on one database, the bench
//! over HTTP.

use std::ffi::OsStr;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

/// A bound on a start that a healthy run never reaches (not a timing
/// assertion).
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A loopback port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// `folio serve` listening on a loopback port, killed when dropped.
pub(crate) struct FolioServe {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl FolioServe {
    /// Runs `folio serve --listen 127.0.0.1:PORT ARGS…` and waits until it
    /// answers `/healthz`.
    pub(crate) async fn start(port: u16, args: &[&OsStr]) -> FolioServe {
        FolioServe::start_with(port, None, args).await
    }

    /// [`FolioServe::start`] with the file descriptor limit set to `soft`
    /// and `hard` (`ulimit -n`) for the server.
    pub(crate) async fn start_with_descriptors(
        port: u16,
        soft: u64,
        hard: u64,
        args: &[&OsStr],
    ) -> FolioServe {
        FolioServe::start_with(port, Some((soft, hard)), args).await
    }

    async fn start_with(port: u16, descriptors: Option<(u64, u64)>, args: &[&OsStr]) -> FolioServe {
        let server = FolioServe::spawn(port, descriptors, args);
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", server.base());
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(response) = client.get(&health).send().await
                && response.status() == StatusCode::OK
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "folio serve on port {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`FolioServe::start`] for a test without a runtime: waits until the
    /// port accepts connections.
    pub(crate) fn start_blocking(port: u16, args: &[&OsStr]) -> FolioServe {
        let server = FolioServe::spawn(port, None, args);
        let deadline = Instant::now() + START_PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "folio serve on port {port} did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn spawn(port: u16, descriptors: Option<(u64, u64)>, args: &[&OsStr]) -> FolioServe {
        let folio = env!("CARGO_BIN_EXE_folio");
        let mut command = match descriptors {
            // The shell sets the limits and becomes the server (same pid).
            Some((soft, hard)) => {
                let mut shell = Command::new("sh");
                shell.args([
                    "-c",
                    &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""),
                    folio,
                ]);
                shell
            }
            None => Command::new(folio),
        };
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("FOLIO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("folio serve starts");
        FolioServe { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's (soft, hard) limits on open files, from `/proc`.
    pub(crate) fn descriptor_limits(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("the server's limits");
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("a line of open files");
        let mut numbers = line
            .split_whitespace()
            .filter_map(|word| word.parse::<u64>().ok());
        let soft = numbers.next().expect("a soft limit");
        let hard = numbers.next().expect("a hard limit");
        (soft, hard)
    }

    /// How many file descriptors the server has open now.
    pub(crate) fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// SIGKILL, and reaps the process.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed server is reaped");
    }
}

impl Drop for FolioServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
