//! The README's curl walkthrough, run as a reader pastes it: every command
//! as written (only the server's address differs), in one shell, against a
//! real `folio serve`, twice on the same data.

use std::ffi::OsStr;
use std::process::Command;

use crate::process::{FolioServe, free_port};

/// The commands of the first ```sh block after `heading` in the README:
/// its `$ ` lines, each joined with the lines it continues onto (`\`).
fn commands_after(heading: &str) -> Vec<String> {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find(heading).expect("the README's section")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("the block's end")];
    let mut commands = Vec::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("$ ") else {
            continue;
        };
        let mut command = command.to_owned();
        while let Some(continued) = command.strip_suffix('\\') {
            command = format!(
                "{continued} {}",
                lines.next().expect("the line a `\\` continues onto").trim()
            );
        }
        commands.push(command);
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_curl_walkthrough_works_as_written_and_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _server = FolioServe::start(port, &[OsStr::new("--data"), data.path().as_os_str()]).await;
    let commands = commands_after("## Optimistic concurrency with curl");
    assert!(
        commands.len() >= 4,
        "the walkthrough's commands: {commands:?}"
    );
    let script = commands
        .iter()
        .map(|command| command.replace("localhost:7070", &format!("127.0.0.1:{port}")))
        .collect::<Vec<_>>()
        .join("\n");
    for run in 1..=2 {
        let script = format!("set -euo pipefail\n{script}");
        let output = tokio::task::spawn_blocking(move || {
            Command::new("bash").arg("-c").arg(script).output()
        })
        .await
        .expect("the shell's task")
        .expect("bash runs (the walkthrough needs bash, curl and sed)");
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "run {run}: {output:?}\n{out}");
        // Alice's save is taken, then Bob's, on the version both read, is
        // refused, naming the version Alice's save made.
        let alice = out
            .find("HTTP/1.1 200 OK")
            .unwrap_or_else(|| panic!("run {run}: {out}"));
        let bob = out
            .find("HTTP/1.1 412 Precondition Failed")
            .unwrap_or_else(|| panic!("run {run}: {out}"));
        assert!(alice < bob, "run {run}: {out}");
        assert!(out[bob..].contains(r#""actual":"A:"#), "run {run}: {out}");
    }
}
