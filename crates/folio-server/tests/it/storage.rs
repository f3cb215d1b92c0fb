//! Storage that cannot serve, over HTTP: a damaged database answers a
//! problem of its own type and takes no writes, a database of a newer
//! layout says so, and `/healthz` reports a database or a data directory
//! that cannot serve instead of answering "ok" while every request fails.

use std::os::unix::fs::PermissionsExt;

use axum::http::StatusCode;

use crate::common::{Config, Server};

/// Flips one bit in every place `file` holds `needle`; how many it found.
fn damage(file: &std::path::Path, needle: &str) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let places: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle.as_bytes())
        .map(|(at, _)| at)
        .collect();
    for at in &places {
        bytes[at + 2] ^= 0x04;
    }
    std::fs::write(file, bytes).unwrap();
    places.len()
}

/// Makes `dir` read-only until the guard is dropped: by its mode bits, or,
/// for root (whom mode bits do not stop), by a read-only bind mount.
struct ReadOnly {
    dir: std::path::PathBuf,
    mounted: bool,
}

impl ReadOnly {
    fn make(dir: &std::path::Path) -> Self {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut guard = ReadOnly {
            dir: dir.to_owned(),
            mounted: false,
        };
        if std::fs::write(dir.join("probe"), b"").is_ok() {
            std::fs::remove_file(dir.join("probe")).unwrap();
            let run = |args: &[&str]| {
                let status = std::process::Command::new("mount").args(args).status();
                assert!(
                    status.is_ok_and(|status| status.success()),
                    "mount {args:?} failed: as root, this test needs to bind-mount a directory \
                     read-only (mode bits do not stop root)"
                );
            };
            let path = dir.to_str().unwrap();
            run(&["--bind", path, path]);
            guard.mounted = true;
            run(&["-o", "remount,ro,bind", path]);
        }
        assert!(
            std::fs::write(dir.join("probe"), b"").is_err(),
            "the directory is read-only"
        );
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test]
async fn a_damaged_database_answers_its_own_problem_and_healthz_reports_it() {
    let needle = "needle-0b5e2d-stored-once";
    let server = Server::new();
    server.create_db("shop").await;
    server
        .put_doc(
            "shop",
            "notes",
            "target",
            &format!(r#"{{"text":"{needle}"}}"#),
        )
        .await;
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    let data = server.data.clone();
    let server = server.restarted(Config::default());
    assert_eq!(damage(&data.join("shop.sqlite"), needle), 1);

    let resp = server.get("/db/shop/docs/notes/target").await;
    resp.problem(StatusCode::INTERNAL_SERVER_ERROR, "damaged-database");
    let detail = resp.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("backup"), "{detail}");
    // The damage is known now: writes are refused with the same problem.
    let resp = server
        .put_json("/db/shop/docs/notes/new", &[], r#"{"text":"refused"}"#)
        .await;
    resp.problem(StatusCode::INTERNAL_SERVER_ERROR, "damaged-database");

    let resp = server.get("/healthz").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{resp:?}");
    let body = resp.json();
    assert_eq!(body["status"], "failing");
    assert_eq!(body["problems"][0]["database"], "shop");
    assert!(
        body["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("damaged"),
        "{body}"
    );
}

#[tokio::test]
async fn an_empty_or_newer_database_file_answers_what_it_is() {
    let server = Server::new();
    server.create_db("newer").await;
    server.put_doc("newer", "notes", "n", r#"{"a":1}"#).await;
    let data = server.data.clone();
    let server = server.restarted(Config::default());
    let outside = rusqlite::Connection::open(data.join("newer.sqlite")).unwrap();
    outside
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .unwrap();
    outside.pragma_update(None, "user_version", 99).unwrap();
    drop(outside);
    std::fs::write(data.join("empty.sqlite"), b"").unwrap();

    let resp = server.get("/db/newer/docs/notes/n").await;
    resp.problem(StatusCode::INTERNAL_SERVER_ERROR, "unsupported-layout");
    let resp = server.get("/db/empty/docs/notes/n").await;
    resp.problem(StatusCode::INTERNAL_SERVER_ERROR, "damaged-database");
    // Health says which databases cannot be opened, and why.
    let health = server.get("/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{health:?}");
    let problems = health.json()["problems"].to_string();
    assert!(
        problems.contains(r#""database":"empty""#) && problems.contains("damaged"),
        "{problems}"
    );
    assert!(
        problems.contains(r#""database":"newer""#) && problems.contains("newer Folio"),
        "{problems}"
    );
    assert_eq!(
        std::fs::metadata(data.join("empty.sqlite")).unwrap().len(),
        0,
        "an empty file does not become a new database"
    );
}

#[tokio::test]
async fn healthz_reports_a_data_directory_that_cannot_be_written() {
    let server = Server::new();
    server.create_db("shop").await;
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    let resp = {
        let _read_only = ReadOnly::make(&server.data);
        server.get("/healthz").await
    };
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{resp:?}");
    let body = resp.json();
    assert!(body["problems"][0].get("database").is_none(), "{body}");
    assert!(
        body["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("data directory"),
        "{body}"
    );
    assert!(
        !body.to_string().contains(server.data.to_str().unwrap()),
        "no path leaks: {body}"
    );
    assert_eq!(
        server.get("/healthz").await.status,
        StatusCode::OK,
        "writable again"
    );
}

#[tokio::test]
async fn a_full_disk_answers_507_reads_go_on_and_freeing_room_brings_writes_back() {
    let Some(disk) = folio_sqlite::testing::SmallDisk::mount(40 << 20) else {
        return;
    };
    let filler = disk.fill("filler", 8 << 20);
    let data = disk.file("data");
    let server = Server::over(&data, Config::default());
    server.create_db("shop").await;
    let note = format!(r#"{{"text":"{}"}}"#, "x".repeat(3000));
    let mut stored = 0;
    let mut refused = 0;
    let problem = loop {
        let resp = server
            .put_json(
                &format!("/db/shop/docs/notes/n{stored}-{refused}"),
                &[],
                &note,
            )
            .await;
        match resp.status {
            StatusCode::CREATED => {
                stored += 1;
                refused = 0;
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                refused += 1;
                if refused == 10 {
                    break resp;
                }
            }
            other => panic!("a write to a full disk answered {other}: {resp:?}"),
        }
        assert!(stored < 20_000, "the disk holds fewer notes");
    };
    problem.problem(StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage");
    let detail = problem.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("disk is full"), "{detail}");
    assert!(stored > 100, "{stored} notes fit");
    // Reads go on; health says why writes are refused.
    assert_eq!(
        server.get("/db/shop/docs/notes/n0-0").await.status,
        StatusCode::OK
    );
    let health = server.get("/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        health.json()["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("disk is full")
    );
    // The server's own files on that disk: a restore's upload that does
    // not fit is a 507 too, and leaves nothing behind.
    let upload = server
        .send(
            axum::http::Method::POST,
            "/db/restored/restore",
            &[("content-type", "application/vnd.sqlite3")],
            vec![0u8; 16 << 20],
        )
        .await;
    upload.problem(StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage");
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "the upload left {left:?}");

    std::fs::remove_file(filler).unwrap();
    let resp = server
        .put_json("/db/shop/docs/notes/after", &[], r#"{"text":"room again"}"#)
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{resp:?}");
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
}
