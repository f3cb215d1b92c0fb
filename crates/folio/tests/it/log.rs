//! The embedded engine's write-ahead log, written one commit per system call
//! (`folio-sqlite/src/vfs.rs`): every acknowledged commit is in the log
//! when its caller hears of it, readable by a connection that knows nothing
//! of Folio, and recovered from a copy of the files taken at that moment, as
//! after a `kill -9` (SQLite's recovery checks every frame's checksum and
//! stops at the first bad one, so a frame written late or torn loses data).

use std::path::Path;

use folio::{Batch, Engine, Expectation};

use crate::harness::{Note, embedded_engine, outside_connection};

/// The text of note `id` as SQLite itself reads it from `file`.
fn text_in(file: &Path, id: &str) -> Option<String> {
    let connection = outside_connection(file);
    connection
        .query_row(
            "SELECT data ->> '$.text' FROM documents WHERE collection = 'notes' AND id = ?1",
            [id],
            |row| row.get(0),
        )
        .ok()
}

/// Copies the database and its log, as a crash would leave them.
pub(crate) fn crash_copy(file: &Path, into: &Path) -> std::path::PathBuf {
    let copy = into.join("copy.sqlite");
    std::fs::copy(file, &copy).unwrap();
    let wal = file.with_extension("sqlite-wal");
    std::fs::copy(&wal, into.join("copy.sqlite-wal")).unwrap();
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_is_in_the_log_and_survives_a_crash() {
    let (_dir, file, engine) = embedded_engine("log.sqlite");

    // Groups of small commits (many frames per write), then commits larger
    // than one write can carry (SQLite's unix layer writes at most 128 KiB
    // per call), then small ones again, each checked from outside.
    let sizes = [10, 100, 3_000, 200_000, 1_500_000, 50, 700_000, 20];
    let mut versions = std::collections::HashMap::new();
    for (round, size) in sizes.into_iter().enumerate() {
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let engine = engine.clone();
                let id = format!("n{n}");
                let expect = versions
                    .get(&id)
                    .cloned()
                    .map_or(Expectation::Missing, Expectation::version);
                let text = format!("{round}:{}", "x".repeat(if n == 0 { size } else { 10 }));
                tokio::spawn(async move {
                    let result = engine
                        .commit(Batch::from(vec![Note::put(&id, &text, expect)]))
                        .await
                        .unwrap()
                        .unwrap();
                    (id, text, result)
                })
            })
            .collect();
        for task in tasks {
            let (id, text, result) = task.await.unwrap();
            let folio::CommandResult::Put(metadata) = &result[0] else {
                panic!("a put answers with its metadata: {result:?}");
            };
            versions.insert(id.clone(), metadata.change_vector.clone());
            assert_eq!(
                text_in(&file, &id).as_deref(),
                Some(text.as_str()),
                "round {round}: an acknowledged write is readable by another connection"
            );
        }

        let copy_dir = tempfile::tempdir().unwrap();
        let copy = crash_copy(&file, copy_dir.path());
        let integrity: String = outside_connection(&copy)
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round}");
        for n in 0..16 {
            let text = text_in(&copy, &format!("n{n}")).unwrap_or_default();
            assert!(
                text.starts_with(&format!("{round}:")),
                "round {round}: note n{n} recovered from the crash copy holds {:.20}",
                text
            );
        }
    }
}
