//! A full disk (the embedded engine, on a real, small `tmpfs`): a write
//! that does not fit is refused as full and leaves nothing behind; reads go
//! on; deletes are taken; freeing a little space brings writes back, also
//! after a restart while the disk is full; nothing acknowledged is lost.

use folio::{Batch, Command, Document, Engine, EngineErrorKind, Error, Expectation};
use folio_sqlite::testing::SmallDisk;

use crate::harness::{Note, note_ids, outside_connection};

/// What a put of note `id` came to.
enum Put {
    Stored,
    Full(String),
}

async fn put(engine: &dyn Engine, id: &str) -> Put {
    put_sized(engine, id, 3000).await
}

/// A put of note `id` with a text of about `bytes` bytes (at most 512 kB)
/// that does not compress.
async fn put_sized(engine: &dyn Engine, id: &str, bytes: usize) -> Put {
    static NOISE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let noise = NOISE.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..1 << 20)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                char::from(b'a' + (state >> 60) as u8)
            })
            .collect()
    });
    let start = id.bytes().fold(0_usize, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(usize::from(byte))
    }) % (noise.len() - bytes);
    let noise = &noise[start..start + bytes];
    let text = format!("{id} {noise}");
    match engine
        .commit(Batch::from(vec![Note::put(
            id,
            &text,
            Expectation::Missing,
        )]))
        .await
    {
        Ok(Ok(_)) => Put::Stored,
        Err(Error::Engine(error)) if error.kind() == EngineErrorKind::Full => {
            Put::Full(error.to_string())
        }
        other => panic!("a put on a full disk is stored or refused as full, got {other:?}"),
    }
}

/// Deletes note `id` (whatever its version); the batch must not conflict.
async fn delete(engine: &dyn Engine, id: &str) -> folio::Result<()> {
    engine
        .commit(Batch::from(vec![Command::delete(
            Note::COLLECTION,
            id,
            Expectation::Any,
        )]))
        .await
        .map(|verdict| {
            verdict.expect("a delete of any version does not conflict");
        })
}

/// Puts notes until the disk is full and stays full (ten refusals in a row:
/// the engine may take writes again after emptying its log, until the file
/// itself has the room); returns the message of the last refusal.
async fn fill(engine: &dyn Engine, prefix: &str, stored: &mut Vec<String>) -> String {
    fill_sized(engine, prefix, stored, 3000).await
}

/// [`fill`] with notes of about `bytes` bytes.
async fn fill_sized(
    engine: &dyn Engine,
    prefix: &str,
    stored: &mut Vec<String>,
    bytes: usize,
) -> String {
    let mut refusals = 0;
    for n in 0.. {
        let id = format!("{prefix}{n}");
        match put_sized(engine, &id, bytes).await {
            Put::Stored => {
                stored.push(id);
                refusals = 0;
            }
            Put::Full(message) => {
                refusals += 1;
                if refusals == 10 {
                    return message;
                }
            }
        }
        assert!(
            n < 20_000,
            "a 48 MiB disk holds fewer than 20,000 notes of 3 kB"
        );
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_costs_writes_only_and_a_little_room_brings_them_back() {
    let Some(disk) = SmallDisk::mount(48 << 20) else {
        return;
    };
    // Two files that someone else keeps on the disk, to be freed later.
    let first_filler = disk.fill("first-filler", 8 << 20);
    let second_filler = disk.fill("second-filler", 8 << 20);
    let file = disk.file("full.sqlite");
    let open = || folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
    let mut stored = Vec::new();

    let engine = open();
    let message = fill(&engine, "a", &mut stored).await;
    assert!(
        message.contains("disk is full") && message.contains("MiB"),
        "{message}"
    );
    assert!(stored.len() > 100, "{} notes fit", stored.len());
    assert!(
        matches!(engine.health(), Err(Error::Engine(e)) if e.kind() == EngineErrorKind::Full),
        "the engine says it is full"
    );
    // Reads go on, deletes are taken.
    let all = engine.get(Note::COLLECTION, &stored).await.unwrap();
    assert!(
        all.iter().all(Option::is_some),
        "every acknowledged note reads"
    );
    let deleted = stored.pop().unwrap();
    delete(&engine, &deleted)
        .await
        .expect("a delete on a full disk is taken");

    // Someone frees 8 MiB: writes resume.
    std::fs::remove_file(&first_filler).unwrap();
    assert!(matches!(put(&engine, "after-freeing").await, Put::Stored));
    stored.push("after-freeing".into());
    assert!(engine.health().is_ok());

    // Full again, then a restart: the database opens and reads everything,
    // fills the disk again (closing emptied its log), refuses puts, and
    // takes them once room is freed.
    fill(&engine, "b", &mut stored).await;
    drop(engine);
    let engine = open();
    assert_eq!(
        note_ids(&engine).await.len(),
        stored.len(),
        "everything acknowledged reads"
    );
    fill(&engine, "c", &mut stored).await;
    assert!(matches!(put(&engine, "while-full").await, Put::Full(_)));
    std::fs::remove_file(&second_filler).unwrap();
    assert!(matches!(put(&engine, "after-restart").await, Put::Stored));
    stored.push("after-restart".into());

    let mut ids = note_ids(&engine).await;
    ids.sort();
    stored.sort();
    assert_eq!(ids, stored, "exactly the acknowledged notes are stored");
    drop(engine);
    let integrity: String = outside_connection(&file)
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    assert!(
        !disk.file("full.sqlite-reserve").exists(),
        "the reserve leaves with the engine"
    );
}

/// A disk filled by large notes, fast, on a busy machine: the log keeps to
/// its bound, and deletes are still taken (what the log holds beyond the
/// database file fits in the reserve the engine gives back when full).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_large_documents_still_takes_deletes() {
    for round in 0..2 {
        let Some(disk) = SmallDisk::mount(64 << 20) else {
            return;
        };
        let file = disk.file("large.sqlite");
        let engine = folio::SqliteEngine::open(&file, folio::SqliteOptions::default()).unwrap();
        let mut stored = Vec::new();
        fill_sized(&engine, "large", &mut stored, 200_000).await;
        assert!(stored.len() > 50, "{} large notes fit", stored.len());
        // The log is bounded by a quarter of the free space (14 MiB here at
        // most), however often the writer's checkpoints meet the
        // checkpointer's.
        let log = std::fs::metadata(disk.file("large.sqlite-wal")).map_or(0, |m| m.len());
        assert!(
            log <= 17 << 20,
            "round {round}: the log grew to {log} bytes"
        );
        for deleted in stored.drain(..).rev().take(3) {
            delete(&engine, &deleted)
                .await
                .unwrap_or_else(|error| panic!("round {round}: a delete on a full disk: {error}"));
        }
    }
}
