//! The layout of one Folio database in its PostgreSQL schema, and its
//! migrations.
//!
//! * `documents`: one row per live document, primary key `(collection, id)`;
//!   `data` is `jsonb`; `etag` comes from the sequence `etags`, so it is
//!   unique and increasing across every Folio process writing the database.
//! * `tombstones`: the etag of each document's delete.
//! * `changes`: the changes feed, one row per write that took an etag
//!   (`kind` 0 = put, 1 = delete). Every statement that takes an etag
//!   inserts its row in the same statement (a data-modifying CTE), so the
//!   statement holds `changes`' ROW EXCLUSIVE lock from before it takes the
//!   etag until its transaction ends: the feed's horizon barrier (the
//!   `feed` module) relies on it. Autovacuum is off for this append-only
//!   table, so a vacuum never holds up the barrier.
//! * `batches`: the ids of committed batches (`Batch::id`), each with a
//!   SHA-256 of its commands, its results (JSON) and when it committed
//!   (milliseconds since the epoch), inserted in the batch's transaction;
//!   the engine deletes those older than its retention.
//! * `collections`, `revisions`: collection configurations and the kept
//!   versions of documents; every write statement keeps its version in
//!   the same statement when its collection's `keep` is above 0.
//! * `meta`: key/value settings, among them the database id.
//! * `folio_migrations`: the layout versions applied, so a later release
//!   can change the layout step by step.
//!
//! A new layout step goes into [`try_migrate`] (existing databases) and
//! [`create_in_transaction`] (databases built from a snapshot) alike.
//!
//! Only plain SQL: no PL/pgSQL, no extensions (PostgreSQL-compatible
//! distributed databases accept it too). Every step is idempotent, so
//! several processes opening a new database at once do no harm.

use folio_core::{DatabaseId, Error, Result};
use tokio_postgres::Client;

use crate::error::storage;

/// The layout version this build writes.
pub(crate) const LAYOUT_VERSION: i32 = 4;

/// The schema name of Folio database `database` (validated by the caller to
/// `[a-z0-9][a-z0-9_-]*`), quoted.
pub(crate) fn schema_name(database: &str) -> String {
    format!("\"folio_{database}\"")
}

fn layout_v1(schema: &str) -> String {
    format!(
        "CREATE SEQUENCE IF NOT EXISTS {schema}.etags;
         CREATE TABLE IF NOT EXISTS {schema}.documents (
             collection    text COLLATE \"C\" NOT NULL,
             id            text COLLATE \"C\" NOT NULL,
             etag          bigint NOT NULL,
             revision      bigint NOT NULL,
             last_modified bigint NOT NULL,
             data          jsonb  NOT NULL,
             PRIMARY KEY (collection, id)
         );
         CREATE TABLE IF NOT EXISTS {schema}.tombstones (
             collection text COLLATE \"C\" NOT NULL,
             id         text COLLATE \"C\" NOT NULL,
             etag       bigint NOT NULL,
             PRIMARY KEY (collection, id)
         );
         CREATE TABLE IF NOT EXISTS {schema}.meta (
             key   text PRIMARY KEY,
             value text NOT NULL
         );"
    )
}

/// Version 2: the changes feed. A database of version 1 gets its current
/// state as history (a tombstone's revision is unknown there: 0).
fn layout_v2(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.changes (
             etag       bigint PRIMARY KEY,
             kind       smallint NOT NULL,
             collection text COLLATE \"C\" NOT NULL,
             id         text COLLATE \"C\" NOT NULL,
             revision   bigint NOT NULL
         ) WITH (autovacuum_enabled = false);
         INSERT INTO {schema}.changes (etag, kind, collection, id, revision)
             SELECT etag, 0, collection, id, revision FROM {schema}.documents
             UNION ALL SELECT etag, 1, collection, id, 0 FROM {schema}.tombstones
         ON CONFLICT DO NOTHING;"
    )
}

/// Version 3: the record of committed batches.
fn layout_v3(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.batches (
             id           text COLLATE \"C\" PRIMARY KEY,
             fingerprint  bytea  NOT NULL,
             results      text   NOT NULL,
             committed_at bigint NOT NULL
         );
         CREATE INDEX IF NOT EXISTS batches_by_time ON {schema}.batches (committed_at);"
    )
}

/// Version 4: collection configurations (`keep`: the versions each
/// document keeps, 0 for none; `config`: the whole `CollectionConfig`)
/// and the kept versions of documents (`data`: none for a deletion).
fn layout_v4(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.collections (
             collection text COLLATE \"C\" PRIMARY KEY,
             keep       integer NOT NULL,
             config     text    NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {schema}.revisions (
             collection    text COLLATE \"C\" NOT NULL,
             id            text COLLATE \"C\" NOT NULL,
             etag          bigint  NOT NULL,
             revision      bigint  NOT NULL,
             last_modified bigint  NOT NULL,
             deleted       boolean NOT NULL,
             data          jsonb,
             PRIMARY KEY (collection, id, etag)
         );"
    )
}

/// Creates the schema and its whole layout for a database built from a
/// snapshot, with `database_id`, inside the caller's transaction on
/// `client` (so that nobody sees the database before it is complete).
/// Refuses a schema that exists: a database built from a snapshot is new.
pub(crate) async fn create_in_transaction(
    client: &Client,
    schema: &str,
    database_id: &DatabaseId,
) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.folio_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             {}
             {}
             {}
             {}",
            layout_v1(schema),
            layout_v2(schema),
            layout_v3(schema),
            layout_v4(schema)
        ))
        .await
        .map_err(|e| storage("creating the database layout", e))?;
    for version in 1..=LAYOUT_VERSION {
        record(client, schema, version).await?;
    }
    client
        .execute(
            &format!("INSERT INTO {schema}.meta (key, value) VALUES ('database_id', $1)"),
            &[&database_id.as_str()],
        )
        .await
        .map_err(|e| storage("recording the database id", e))
        .map(drop)
}

/// Creates or upgrades the layout and returns the database id.
pub(crate) async fn migrate(client: &Client, schema: &str) -> Result<DatabaseId> {
    // Two processes creating the same schema at once can collide in
    // PostgreSQL's catalogs; the steps are idempotent, so try again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match try_migrate(client, schema).await {
            Err(error) if attempts < 5 => {
                let _ = error;
                tokio::task::yield_now().await;
            }
            outcome => return outcome,
        }
    }
}

async fn try_migrate(client: &Client, schema: &str) -> Result<DatabaseId> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.folio_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(|e| storage("creating the database schema", e))?;
    let applied: Option<i32> = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.folio_migrations"),
            &[],
        )
        .await
        .map_err(|e| storage("reading the layout version", e))?
        .get(0);
    let applied = applied.unwrap_or(0);
    if applied > LAYOUT_VERSION {
        return Err(Error::Engine(folio_core::EngineError::new(
            folio_core::EngineErrorKind::Unsupported,
            format!(
                "the database has layout {applied}, written by a newer Folio than this one \
                 (which reads layouts up to {LAYOUT_VERSION}): open it with that Folio or a \
                 newer one"
            ),
        )));
    }
    if applied < 1 {
        client
            .batch_execute(&layout_v1(schema))
            .await
            .map_err(|e| storage("creating the database layout", e))?;
        client
            .execute(
                &format!("INSERT INTO {schema}.meta (key, value) VALUES ('database_id', $1) ON CONFLICT DO NOTHING"),
                &[&DatabaseId::generate().as_str()],
            )
            .await
            .map_err(|e| storage("recording the database id", e))?;
        record(client, schema, 1).await?;
    }
    if applied < 2 {
        // One transaction: the history is copied from a consistent state.
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", layout_v2(schema)))
            .await
            .map_err(|e| storage("adding the changes feed to the layout", e))?;
        record(client, schema, 2).await?;
    }
    if applied < 3 {
        client
            .batch_execute(&layout_v3(schema))
            .await
            .map_err(|e| storage("adding the record of committed batches", e))?;
        record(client, schema, 3).await?;
    }
    if applied < 4 {
        client
            .batch_execute(&layout_v4(schema))
            .await
            .map_err(|e| storage("adding collection configurations and revisions", e))?;
        record(client, schema, 4).await?;
    }
    let id: String = client
        .query_one(
            &format!("SELECT value FROM {schema}.meta WHERE key = 'database_id'"),
            &[],
        )
        .await
        .map_err(|e| storage("reading the database id", e))?
        .get(0);
    DatabaseId::parse(&id)
}

/// Checks, in the caller's transaction, that the database in `schema`
/// exists and has this build's layout: what reading a snapshot of it needs.
pub(crate) async fn check_current(client: &Client, schema: &str, database: &str) -> Result<()> {
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'folio_migrations')",
            &[&unquoted(schema)],
        )
        .await
        .map_err(|e| storage("looking for the database", e))?
        .get(0);
    if !exists {
        return Err(Error::NotFound(format!(
            "no database {database:?} on this PostgreSQL server"
        )));
    }
    let applied: Option<i32> = client
        .query_one(
            &format!("SELECT max(version) FROM {schema}.folio_migrations"),
            &[],
        )
        .await
        .map_err(|e| storage("reading the layout version", e))?
        .get(0);
    match applied.unwrap_or(0) {
        LAYOUT_VERSION => Ok(()),
        newer if newer > LAYOUT_VERSION => Err(Error::InvalidInput(format!(
            "the database has layout version {newer}, newer than this Folio understands \
             ({LAYOUT_VERSION}); upgrade Folio to read it"
        ))),
        older => Err(Error::InvalidInput(format!(
            "the database has layout version {older}, older than this Folio's ({LAYOUT_VERSION}): \
             open it once with this Folio (folio serve --postgres …) to upgrade it"
        ))),
    }
}

/// Whether the schema of `database` exists at all (with a layout or not).
pub(crate) async fn schema_exists(client: &Client, schema: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&unquoted(schema)],
        )
        .await
        .map_err(|e| storage("looking for the database", e))?
        .get(0))
}

/// `schema` without its quotes (database names hold no quote).
fn unquoted(schema: &str) -> &str {
    schema.trim_matches('"')
}

/// Records that layout `version` is applied.
async fn record(client: &Client, schema: &str, version: i32) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.folio_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING"
            ),
            &[&version],
        )
        .await
        .map_err(|e| storage("recording the layout version", e))
        .map(drop)
}
