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
        let server = FolioServe::spawn(port, args);
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
        let server = FolioServe::spawn(port, args);
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

    fn spawn(port: u16, args: &[&OsStr]) -> FolioServe {
        let child = Command::new(env!("CARGO_BIN_EXE_folio"))
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
