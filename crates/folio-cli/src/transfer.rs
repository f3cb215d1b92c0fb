//! The commands that move whole databases: `folio backup`, `folio restore`,
//! `folio copy`, and `folio export` (one snapshot).
//!
//! A database is reached in one of three [`Place`]s: through a Folio server
//! (the only way to a live embedded database: its file is locked to the
//! server's process), as an embedded database file in a data directory no
//! server holds, or on a PostgreSQL server. Every backup is one file in
//! the embedded format (see `folio_sqlite::backup`), so the three commands
//! are one mechanism: a backup reads one snapshot of a place into a file,
//! a restore builds a new database in a place from a file, and a copy is a
//! backup into a temporary file restored at once.
//!
//! Everything is kept: documents, etags, revisions, last-modified times,
//! the changes feed, indexes, and (unless `--new-id`) the database id, so
//! that the change vectors clients hold stay valid in the new database
//! (see [`folio_core::Identity`] for when to keep it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use folio_core::{
    Engine, Identity, SnapshotContents, SnapshotCounts, SnapshotHeader, SnapshotReader,
    copy_snapshot,
};
use folio_sqlite::{BackupSummary, BackupWriter, SqliteEngine, SqliteOptions, SqliteSnapshot};
use reqwest::{Method, StatusCode, header};

use crate::client::{Client, Failure, read_failure, spinner, write_failure};
use folio_protocol::{ChangesPageBody, RestoreSummary, media};

/// Where a database is.
pub enum Place {
    /// A database on a Folio server.
    Server(Client),
    /// The embedded database `database` in the data directory `directory`,
    /// which no server holds.
    Embedded {
        /// The data directory (`NAME.sqlite` files).
        directory: PathBuf,
        /// The database.
        database: String,
    },
    /// The Folio database `database` on the PostgreSQL server `url`.
    Postgres {
        /// `postgres://…`.
        url: String,
        /// The database.
        database: String,
    },
}

impl Place {
    /// How the place is named in messages.
    fn describe(&self) -> String {
        match self {
            Place::Server(client) => format!("{} on the server", client.database()),
            Place::Embedded {
                directory,
                database,
            } => format!("{database} in {}", directory.display()),
            Place::Postgres { database, .. } => format!("{database} on PostgreSQL"),
        }
    }

    fn database_file(directory: &Path, database: &str) -> Result<PathBuf, Failure> {
        folio_core::validate::database(database).map_err(failure)?;
        Ok(folio_sqlite::DataDirectory::new(directory).database_file(database))
    }
}

fn failure(error: folio_core::Error) -> Failure {
    let message = match &error {
        folio_core::Error::Engine(engine) => {
            let mut message = engine.to_string();
            let mut source = std::error::Error::source(engine);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            message
        }
        folio_core::Error::InvalidInput(message) | folio_core::Error::NotFound(message) => {
            message.clone()
        }
        other => other.to_string(),
    };
    Failure::new(message)
}

/// `folio backup`: one consistent snapshot of `place` into the new file
/// `file` (written beside it first, checked, then moved into place).
pub async fn backup(place: &Place, file: &Path) -> Result<BackupSummary, Failure> {
    refuse_existing(file)?;
    let started = Instant::now();
    let partial = partial_name(file);
    let made = backup_into(place, &partial).await;
    let outcome = match made {
        Ok(()) => finish_file(&partial, file).await,
        Err(failure) => Err(failure),
    };
    if outcome.is_err() {
        remove_quietly(&partial);
    }
    let summary = outcome?;
    report(
        &format!("backed up {}", place.describe()),
        &summary.header,
        &summary.counts,
        summary.bytes,
        started,
    );
    Ok(summary)
}

/// Writes the snapshot of `place` to `partial` (a new file).
async fn backup_into(place: &Place, partial: &Path) -> Result<(), Failure> {
    match place {
        Place::Server(client) => client.download_backup(partial).await,
        Place::Embedded {
            directory,
            database,
        } => {
            let engine = open_embedded(directory, database)?;
            engine.backup_to(partial).await.map_err(failure).map(drop)
        }
        Place::Postgres { url, database } => {
            let mut reader =
                folio_postgres::open_snapshot(url, database, SnapshotContents::Everything)
                    .await
                    .map_err(failure)?;
            let writer = BackupWriter::create(partial, reader.header())
                .await
                .map_err(failure)?;
            copy_snapshot(&mut reader, Box::new(writer))
                .await
                .map_err(failure)
                .map(drop)
        }
    }
}

/// The embedded database `database` of `directory`, which must exist and
/// be open nowhere else.
fn open_embedded(directory: &Path, database: &str) -> Result<SqliteEngine, Failure> {
    let path = Place::database_file(directory, database)?;
    if !path.exists() {
        return Err(Failure::new(format!(
            "no database {database:?} in {}",
            directory.display()
        )));
    }
    SqliteEngine::open(&path, SqliteOptions::default()).map_err(|error| match &error {
        folio_core::Error::Engine(engine) if engine.kind() == folio_core::EngineErrorKind::Busy => {
            Failure::new(format!(
                "{}: a server holds it; go through that server (--server URL)",
                engine.message()
            ))
        }
        _ => failure(error),
    })
}

/// Checks the finished backup at `partial` and moves it to `file`.
async fn finish_file(partial: &Path, file: &Path) -> Result<BackupSummary, Failure> {
    let (partial, file) = (partial.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || {
        // Read back whole, as a restore will: a backup that cannot be
        // restored is found now, not when it is needed.
        let summary = folio_sqlite::verify_backup(&partial).map_err(failure)?;
        std::fs::File::open(&partial)
            .and_then(|opened| opened.sync_all())
            .map_err(|error| Failure::new(format!("syncing {}: {error}", partial.display())))?;
        // A hard link never replaces a file that appeared meanwhile.
        std::fs::hard_link(&partial, &file)
            .map_err(|error| Failure::new(format!("creating {}: {error}", file.display())))?;
        remove_quietly(&partial);
        if let Some(directory) = file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            let _ = std::fs::File::open(directory).and_then(|opened| opened.sync_all());
        }
        Ok(summary)
    })
    .await
    .map_err(|error| Failure::new(format!("checking the backup failed: {error}")))?
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    /// The new database's identity.
    pub header: SnapshotHeader,
    /// What it holds.
    pub counts: SnapshotCounts,
}

/// `folio restore`: the backup `file` becomes the new database at `place`
/// (absent, or empty and unused).
pub async fn restore(file: &Path, place: &Place, identity: Identity) -> Result<Restored, Failure> {
    let started = Instant::now();
    let bytes = std::fs::metadata(file)
        .map_err(|error| Failure::new(format!("cannot read {}: {error}", file.display())))?
        .len();
    let restored = match place {
        Place::Server(client) => client.upload_backup(file, identity).await?,
        Place::Embedded {
            directory,
            database,
        } => {
            std::fs::create_dir_all(directory).map_err(|error| {
                Failure::new(format!("cannot create {}: {error}", directory.display()))
            })?;
            let target = Place::database_file(directory, database)?;
            let backup = file.to_owned();
            let summary = tokio::task::spawn_blocking(move || {
                folio_sqlite::restore_backup(&backup, &target, identity)
            })
            .await
            .map_err(|error| Failure::new(format!("the restore failed: {error}")))?
            .map_err(failure)?;
            Restored {
                header: summary.header,
                counts: summary.counts,
            }
        }
        Place::Postgres { url, database } => {
            restore_postgres(file, url, database, identity).await?
        }
    };
    report(
        &format!("restored {}", place.describe()),
        &restored.header,
        &restored.counts,
        bytes,
        started,
    );
    eprintln!("{}", identity_note(identity, &restored.header));
    Ok(restored)
}

/// What happened to change vectors, in words.
fn identity_note(identity: Identity, header: &SnapshotHeader) -> String {
    match identity {
        Identity::Keep => format!(
            "change vectors kept (database id {}): versions clients read before the backup stay \
             valid; new writes take etags after {}",
            header.database_id, header.last_etag
        ),
        Identity::New => format!(
            "new database id {}: etags and revisions kept, change vectors new; a write \
             conditional on a version read from the source is refused",
            header.database_id
        ),
    }
}

/// Loads `file` into the new database `database` on PostgreSQL: a copy of
/// the file is brought to this build's layout and checked, then read in
/// parts into one transaction.
async fn restore_postgres(
    file: &Path,
    url: &str,
    database: &str,
    identity: Identity,
) -> Result<Restored, Failure> {
    let scratch = tempfile::Builder::new()
        .prefix(".folio-restore-")
        .suffix(".sqlite")
        .tempfile()
        .map_err(|error| Failure::new(format!("cannot make a temporary file: {error}")))?
        .into_temp_path();
    let (source, copy) = (file.to_owned(), scratch.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::fs::copy(&source, &copy)
            .map_err(|error| Failure::new(format!("copying {}: {error}", source.display())))?;
        folio_sqlite::prepare_backup(&copy, Identity::Keep).map_err(failure)
    })
    .await
    .map_err(|error| Failure::new(format!("checking the backup failed: {error}")))??;
    let mut reader = SqliteSnapshot::open_file(&scratch, SnapshotContents::Everything)
        .await
        .map_err(failure)?;
    let mut header = reader.header().clone();
    header.database_id = identity.database_id(&header.database_id);
    let loader = folio_postgres::PgLoader::create(url, database, &header)
        .await
        .map_err(failure)?;
    let counts = copy_snapshot(&mut reader, Box::new(loader))
        .await
        .map_err(failure)?;
    drop(reader);
    Ok(Restored { header, counts })
}

/// `folio copy`: `from` (a place, or a backup file) into the new database
/// at `to`, through a backup file of one snapshot (in the temporary
/// directory, `TMPDIR`).
pub async fn copy(from: Source, to: &Place, identity: Identity) -> Result<Restored, Failure> {
    match from {
        Source::File(file) => restore(&file, to, identity).await,
        Source::Place(place) => {
            let scratch = tempfile::Builder::new()
                .prefix(".folio-copy-")
                .tempdir()
                .map_err(|error| {
                    Failure::new(format!("cannot make a temporary directory: {error}"))
                })?;
            let file = scratch.path().join("snapshot.sqlite");
            let summary = backup(&place, &file).await?;
            let restored = restore(&file, to, identity).await?;
            warn_if_moved(&place, summary.header.feed_position).await;
            Ok(restored)
        }
    }
}

/// What `folio copy` reads.
pub enum Source {
    /// A live database.
    Place(Place),
    /// A backup file.
    File(PathBuf),
}

/// Says so when the source took writes after its snapshot: they are not
/// in the copy, and with the source's database id kept, the copy may issue
/// those etags again for other versions.
async fn warn_if_moved(place: &Place, position: u64) {
    let moved = match place {
        Place::Server(client) => client.changed_since(position).await.ok(),
        Place::Postgres { url, database } => {
            match folio_postgres::PgEngine::connect(
                url,
                database,
                folio_postgres::PgOptions::default(),
            )
            .await
            {
                Ok(engine) => engine
                    .changes_wait(position, None, 1, std::time::Duration::from_secs(1))
                    .await
                    .ok()
                    .map(|page| !page.changes.is_empty()),
                Err(_) => None,
            }
        }
        // Locked to this process while it was copied: nobody wrote.
        Place::Embedded { .. } => Some(false),
    };
    if moved == Some(true) {
        eprintln!(
            "warning: the source took writes after the snapshot (after etag {position}); they are \
             not in the copy. To migrate, stop writes to the source, then copy again."
        );
    }
}

/// `folio export`: the live documents of `place` (of `collection`, or
/// all) from one snapshot, as JSON Lines; returns how many.
pub async fn export(
    place: &Place,
    collection: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, Failure> {
    let contents = SnapshotContents::Documents {
        collection: collection.map(str::to_owned),
    };
    let mut reader: Box<dyn SnapshotReader> = match place {
        Place::Server(client) => return client.export(collection, out).await,
        Place::Embedded {
            directory,
            database,
        } => {
            let engine = open_embedded(directory, database)?;
            Box::new(engine.snapshot(contents).await.map_err(failure)?)
        }
        Place::Postgres { url, database } => Box::new(
            folio_postgres::open_snapshot(url, database, contents)
                .await
                .map_err(failure)?,
        ),
    };
    let progress = spinner("exporting");
    let mut exported = 0u64;
    while let Some(part) = reader.next_part().await.map_err(failure)? {
        let folio_core::SnapshotPart::Documents(entries) = part else {
            break;
        };
        exported += entries.len() as u64;
        for entry in entries {
            let line = folio_protocol::EntryBody::new(entry)
                .map_err(|_| Failure::new("a stored document is not valid JSON"))?;
            serde_json::to_writer(&mut *out, &line)
                .map_err(|error| Failure::new(format!("writing the output failed: {error}")))?;
            out.write_all(b"\n").map_err(write_failure)?;
        }
        progress.set_position(exported);
    }
    progress.finish_and_clear();
    Ok(exported)
}

impl Client {
    /// Downloads a backup of the database to the new file `file`.
    async fn download_backup(&self, file: &Path) -> Result<(), Failure> {
        let progress = spinner("backing up");
        progress.set_message("taking the snapshot");
        let mut response = self
            .send(self.request(Method::GET, self.url("/backup")))
            .await?;
        let expected = response.content_length();
        let mut output = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .await
            .map_err(|error| Failure::new(format!("cannot create {}: {error}", file.display())))?;
        progress.set_message("downloading");
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(read_failure)? {
            tokio::io::AsyncWriteExt::write_all(&mut output, &chunk)
                .await
                .map_err(write_failure)?;
            received += chunk.len() as u64;
            progress.set_position(received >> 20);
        }
        tokio::io::AsyncWriteExt::flush(&mut output)
            .await
            .map_err(write_failure)?;
        progress.finish_and_clear();
        if expected.is_some_and(|expected| expected != received) {
            return Err(Failure::new(format!(
                "the backup arrived incomplete ({received} of {} bytes)",
                expected.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Sends the backup `file` to become the database.
    async fn upload_backup(&self, file: &Path, identity: Identity) -> Result<Restored, Failure> {
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|error| Failure::new(format!("cannot open {}: {error}", file.display())))?;
        let length = opened
            .metadata()
            .await
            .map_err(|error| Failure::new(format!("cannot read {}: {error}", file.display())))?
            .len();
        let mut url = self.url("/restore");
        if identity == Identity::New {
            url.push_str("?new_id=true");
        }
        let sent = self
            .send(
                self.request(Method::POST, url.clone())
                    .header(header::CONTENT_TYPE, media::BACKUP)
                    .header(header::CONTENT_LENGTH, length)
                    .body(reqwest::Body::from(opened)),
            )
            .await;
        let response = match sent {
            Ok(response) => response,
            // The server refuses a restore it cannot take (the database
            // holds data, the key may not, no room) before it reads the
            // upload, and closes the connection: the answer can be lost to
            // the upload still being sent. Asked again without a body, it
            // gives its reason; a request it would take is refused for the
            // empty body, and the upload's own failure stands.
            Err(failure) if failure.status.is_none() => {
                let asked = self
                    .send(
                        self.request(Method::POST, url)
                            .header(header::CONTENT_TYPE, media::BACKUP)
                            .header(header::CONTENT_LENGTH, 0),
                    )
                    .await;
                return Err(match asked {
                    Err(refusal)
                        if refusal.status.is_some_and(|s| s != StatusCode::BAD_REQUEST) =>
                    {
                        refusal
                    }
                    _ => failure,
                });
            }
            Err(failure) => return Err(failure),
        };
        let answer: RestoreSummary = response.json().await.map_err(read_failure)?;
        Ok(Restored {
            header: SnapshotHeader {
                database_id: folio_core::DatabaseId::parse(&answer.database_id).map_err(failure)?,
                last_etag: answer.last_etag,
                feed_position: answer.last_etag,
            },
            counts: SnapshotCounts {
                documents: answer.documents,
                collections: answer.collections,
                tombstones: answer.tombstones,
                changes: answer.changes,
                indexes: answer.indexes,
                ..SnapshotCounts::default()
            },
        })
    }

    /// `folio export` through the server: one snapshot, as JSON Lines.
    pub async fn export(
        &self,
        collection: Option<&str>,
        out: &mut impl Write,
    ) -> Result<u64, Failure> {
        let mut url = self.url("/export");
        if let Some(collection) = collection {
            url.push_str("?collection=");
            url.extend(percent_encoding::utf8_percent_encode(
                collection,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        let mut response = self
            .send(
                self.request(Method::GET, url)
                    .header(header::ACCEPT, media::EXPORT),
            )
            .await?;
        let progress = spinner("exporting");
        let mut exported = 0u64;
        let mut ended_line = true;
        // A transfer cut short fails here (the chunked body never ends).
        while let Some(chunk) = response.chunk().await.map_err(read_failure)? {
            out.write_all(&chunk).map_err(write_failure)?;
            exported += chunk.iter().filter(|&&byte| byte == b'\n').count() as u64;
            ended_line = chunk.last() == Some(&b'\n');
            progress.set_position(exported);
        }
        progress.finish_and_clear();
        if !ended_line {
            return Err(Failure::new("the export arrived incomplete"));
        }
        Ok(exported)
    }

    /// Whether the database took a write after etag `position`.
    async fn changed_since(&self, position: u64) -> Result<bool, Failure> {
        let response = self
            .send(
                self.request(
                    Method::GET,
                    self.url(&format!("/changes?since={position}&timeout=0&limit=1")),
                )
                .header(header::ACCEPT, "application/json"),
            )
            .await?;
        if response.status() != StatusCode::OK {
            return Ok(false);
        }
        let page: ChangesPageBody<'_> = response.json().await.map_err(read_failure)?;
        Ok(!page.changes.is_empty())
    }
}

/// One line on standard error: what was moved, how fast.
fn report(
    what: &str,
    header: &SnapshotHeader,
    counts: &SnapshotCounts,
    bytes: u64,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let mebibytes = bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "{what}: {} documents in {} collections, {} tombstones, {} changes, {} indexes; last etag \
         {}, database id {}; {mebibytes:.1} MiB in {seconds:.1} s ({:.0} documents/s, {:.1} MiB/s)",
        counts.documents,
        counts.collections,
        counts.tombstones,
        counts.changes,
        counts.indexes,
        header.last_etag,
        header.database_id,
        counts.documents as f64 / seconds,
        mebibytes / seconds,
    );
}

fn refuse_existing(file: &Path) -> Result<(), Failure> {
    if std::fs::symlink_metadata(file).is_ok() {
        return Err(Failure::new(format!(
            "{} exists already: give a new file",
            file.display()
        )));
    }
    Ok(())
}

fn partial_name(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".partial-{}", folio_core::generate_id()));
    PathBuf::from(name)
}

fn remove_quietly(file: &Path) {
    let _ = std::fs::remove_file(file);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}
