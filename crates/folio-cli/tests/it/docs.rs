//! The README's and the user guide's shell blocks, run as a reader pastes
//! them: each page's ```sh (or bash, shell, console) blocks in order, in
//! one bash shell, in an empty directory, against a fresh `folio serve` of
//! its own, with `folio` on the `PATH`. Only the server's address differs
//! (`localhost:7070` is the test's port).
//!
//! * A block whose lines start with `$ ` is a transcript: the lines after a
//!   command are what it prints, and must appear in its output in that
//!   order (other lines may come between; `…` stands for any; a line that
//!   starts with a space continues the line before it; `# ` lines just
//!   before a command are comments). A change vector's id (`A:2-<id>`)
//!   differs per database: any id matches.
//! * In other blocks every line is a command (`#` starts a comment); a
//!   command is one line, or lines joined by a final `\`.
//! * A block opened with ```sh setup installs or starts Folio, or runs the
//!   tests: it is not run.
//! * Every command must succeed.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::process::{FolioServe, free_port};

/// One command and what it prints.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The fences of the shell blocks a page's reader runs.
const SHELLS: [&str; 4] = ["sh", "bash", "shell", "console"];

/// The steps of a page's shell blocks, in order.
fn steps(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(fence) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = fence.split_whitespace();
        let shell = words.next().is_some_and(|word| SHELLS.contains(&word));
        let setup = words.next() == Some("setup");
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|line| !line.trim_start().starts_with("```"))
            .collect();
        if !shell || setup {
            continue;
        }
        if block.iter().any(|line| line.starts_with("$ ")) {
            transcript(&block, &mut steps);
        } else {
            commands(&block, &mut steps);
        }
    }
    steps
}

/// A line and those it continues onto (`\`), joined.
fn joined<'a>(first: &str, rest: &mut impl Iterator<Item = &'a str>) -> String {
    let mut command = first.trim().to_owned();
    while let Some(continued) = command.strip_suffix('\\') {
        let next = rest.next().expect("the line a `\\` continues onto");
        command = format!("{} {}", continued.trim_end(), next.trim());
    }
    command
}

/// A block of plain commands, one a line (`#` starts a comment).
fn commands(block: &[&str], steps: &mut Vec<Step>) {
    let mut lines = block.iter().copied();
    while let Some(line) = lines.next() {
        let command = joined(line, &mut lines);
        if !command.is_empty() && !command.starts_with('#') {
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
        }
    }
}

/// A transcript: `$ ` commands, each followed by what it prints. A `# `
/// line just before a command (or at the end) is a comment; elsewhere it
/// is output (`/metrics` prints such lines).
fn transcript(block: &[&str], steps: &mut Vec<Step>) {
    let mut commanded = false;
    let mut at = 0;
    while at < block.len() {
        let line = block[at];
        at += 1;
        if let Some(command) = line.strip_prefix("$ ") {
            let mut rest = block[at..].iter().copied();
            let command = joined(command, &mut rest);
            at = block.len() - rest.count();
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
            commanded = true;
            continue;
        }
        let comment = line.starts_with("# ")
            && block[at..]
                .iter()
                .find(|next| !next.starts_with("# "))
                .is_none_or(|next| next.starts_with("$ "));
        if comment || line.trim().is_empty() {
            continue;
        }
        assert!(
            commanded,
            "output before any command in a transcript: {line:?}"
        );
        expect(steps.last_mut().expect("a command"), line);
    }
}

/// Adds a line of a transcript to what `step` prints.
fn expect(step: &mut Step, line: &str) {
    match (line.strip_prefix(' '), step.expected.last_mut()) {
        (Some(continued), Some(last)) if last != "…" => last.push_str(continued.trim_start()),
        _ => step.expected.push(line.trim().to_owned()),
    }
}

/// `line` with the database id of every change vector (`A:<n>-<id>`)
/// replaced by `ID`, every RFC 3339 time by `TIME`, and trimmed.
fn normalized(line: &str) -> String {
    without_times(&without_database_ids(line))
}

/// `line` with every RFC 3339 time in UTC (`2026-12-07T10:00:00.000Z`)
/// replaced by `TIME`.
fn without_times(line: &str) -> String {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    let mut copied = 0;
    while at + SHAPE.len() <= bytes.len() {
        let fits = SHAPE
            .iter()
            .zip(&bytes[at..])
            .all(|(shape, byte)| match shape {
                b'd' => byte.is_ascii_digit(),
                other => other == byte,
            });
        if !fits {
            at += 1;
            continue;
        }
        let mut end = at + SHAPE.len();
        if bytes.get(end) == Some(&b'.') {
            end += 1;
            while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
        }
        if bytes.get(end) != Some(&b'Z') {
            at += 1;
            continue;
        }
        out.push_str(&line[copied..at]);
        out.push_str("TIME");
        at = end + 1;
        copied = at;
    }
    out.push_str(&line[copied..]);
    out
}

/// `line` with the database id of every change vector (`A:<n>-<id>`)
/// replaced by `ID`, and trimmed.
fn without_database_ids(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line.trim();
    while let Some(start) = rest.find("A:") {
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        // A database id: base64url.
        let id = rest[digits..].strip_prefix('-').map_or(0, |id| {
            id.bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                .count()
        });
        if digits > 0 && id > 0 {
            out.push_str(&rest[..digits]);
            out.push_str("-ID");
            rest = &rest[digits + 1 + id..];
        }
    }
    out.push_str(rest);
    out
}

/// Checks that `expected` appears in `output` in order; the first line
/// that does not, with what came instead.
fn missing(expected: &[String], output: &str) -> Option<String> {
    let actual: Vec<String> = output.lines().map(normalized).collect();
    let mut at = 0;
    for line in expected.iter().filter(|line| line.as_str() != "…") {
        let wanted = normalized(line);
        match actual[at..].iter().position(|actual| *actual == wanted) {
            Some(found) => at += found + 1,
            None => return Some(line.clone()),
        }
    }
    None
}

/// Runs the steps of `page` against a fresh `folio serve`; each step's
/// output.
async fn run(page: &str, steps: &[Step]) -> Vec<String> {
    let data = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = FolioServe::start(port, &[OsStr::new("--data"), data.path().as_os_str()]).await;
    let address = format!("127.0.0.1:{port}");
    let mut script = String::from("set -euo pipefail\nexec 2>&1\n");
    for (number, step) in steps.iter().enumerate() {
        let command = step
            .command
            .replace("localhost:7070", &address)
            .replace("127.0.0.1:7070", &address);
        script.push_str(&format!("printf '\\n@@step {number}\\n'\n{command}\n"));
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_folio"));
    let path = format!(
        "{}:{}",
        binary.parent().expect("the binary's directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let directory = work.path().to_owned();
    std::fs::write(directory.join(".curlrc"), "--silent\n--show-error\n").expect("a .curlrc");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(&directory)
            // curl's progress meter, which it shows when its output is not
            // a terminal, is off (as when a reader runs the page).
            .env("CURL_HOME", &directory)
            .env("PATH", path)
            .env("FOLIO_SERVER", format!("http://{address}"))
            .env_remove("FOLIO_DB")
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .expect("the shell's task")
    .expect("bash runs (the pages need bash, curl, sed and grep)");
    drop(server);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut outputs: Vec<String> = out
        .split("\n@@step ")
        .skip(1)
        .map(|part| {
            part.split_once('\n')
                .map_or("", |(_, rest)| rest)
                .to_owned()
        })
        .collect();
    assert!(
        output.status.success(),
        "{page}: step {} failed: `{}`\n{}",
        outputs.len().saturating_sub(1),
        steps
            .get(outputs.len().saturating_sub(1))
            .map_or("", |step| step.command.as_str()),
        outputs.last().map_or(out.as_str(), String::as_str)
    );
    assert_eq!(outputs.len(), steps.len(), "{page}: {out}");
    outputs.truncate(steps.len());
    outputs
}

/// Runs every shell block of `page` (relative to the repository) and
/// checks what each command prints.
async fn check_page(page: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let markdown = std::fs::read_to_string(root.join(page)).expect("the page");
    let steps = steps(&markdown);
    assert!(!steps.is_empty(), "{page} has shell blocks");
    let outputs = run(page, &steps).await;
    for (step, output) in steps.iter().zip(&outputs) {
        if let Some(line) = missing(&step.expected, output) {
            panic!(
                "{page}: `{}` printed no line {line:?} where the page shows it; it printed:\n{output}",
                step.command
            );
        }
    }
}

#[test]
fn transcripts_are_read_as_commands_and_outputs() {
    let page = "Intro\n\n```sh setup\ncargo install folio\n```\n\n```sh\n$ curl -X PUT \\\n     x/db/shop\n{\"a\":1,\n \"b\":2}\n…\n# a comment\n$ echo A:12-Zz9\nA:12-BDHEQ9\n```\n\n```sh\nfolio backup b --db shop   # one file\n\n# nothing\n```\n";
    let steps = steps(page);
    let commands: Vec<&str> = steps.iter().map(|step| step.command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "curl -X PUT x/db/shop",
            "echo A:12-Zz9",
            "folio backup b --db shop   # one file"
        ]
    );
    assert_eq!(steps[0].expected, ["{\"a\":1,\"b\":2}", "…"]);
    // A `# ` line among the output is output; before a command, a comment.
    let metrics = "```console\n# before\n$ curl /metrics\n# HELP x y\nx 1\n# after\n$ true\n```\n";
    let steps_of_metrics = self::steps(metrics);
    assert_eq!(steps_of_metrics[0].expected, ["# HELP x y", "x 1"]);
    assert!(steps_of_metrics[1].expected.is_empty());
    assert_eq!(missing(&steps[1].expected, "x\nA:12-Zz9\n"), None);
    assert_eq!(
        missing(&steps[1].expected, "A:13-Zz9\n"),
        Some("A:12-BDHEQ9".to_owned())
    );
    assert_eq!(
        normalized(" etag: \"A:3-x1_-Z\", A:B "),
        "etag: \"A:3-ID\", A:B"
    );
}

#[test]
fn times_and_database_ids_match_any() {
    assert_eq!(
        normalized(r#" {"cv":"A:12-Zz9_x","at":"2026-12-07T10:00:00.000Z","d":"2026-12-07"} "#),
        r#"{"cv":"A:12-ID","at":"TIME","d":"2026-12-07"}"#
    );
    assert_eq!(normalized("1999-01-01T00:00:00Z."), "TIME.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_runs_as_written() {
    check_page("README.md").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide");
    let mut pages: Vec<String> = std::fs::read_dir(&root)
        .expect("docs/guide")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    let mut ran = 0;
    for page in pages {
        let path = format!("docs/guide/{page}");
        let markdown = std::fs::read_to_string(root.join(&page)).expect("the page");
        if steps(&markdown).is_empty() {
            continue;
        }
        check_page(&path).await;
        ran += 1;
    }
    assert!(ran >= 3, "the guide's pages with shell blocks: {ran}");
}

/// The first example of the README is the one `cargo run -p folio
/// --example first` runs (which `cargo test` builds), but for the file's
/// own docs and formatting.
#[test]
fn the_readmes_first_example_is_the_example_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the README");
    let example =
        std::fs::read_to_string(root.join("crates/folio/examples/first.rs")).expect("the example");
    let section = &readme[readme.find("## A first example").expect("the section")..];
    let start = section.find("```rust\n").expect("its block") + "```rust\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("the block's end")];
    let code = |text: &str| -> String {
        text.lines()
            .map(str::trim)
            .filter(|line| {
                !["//!", "///", "#!["]
                    .iter()
                    .any(|doc| line.starts_with(doc))
            })
            .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
            .collect::<String>()
            .replace(",}", "}")
    };
    assert_eq!(code(block), code(&example));
}
