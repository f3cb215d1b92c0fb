//! Collection configurations and document histories (`collections`,
//! `revisions`; the `schema` module). The versions themselves are kept by
//! the write statements (`Statements::new`), in the statement that writes.

use folio_core::{
    ChangeVector, CollectionConfig, Entry, Metadata, Result, Revision, RevisionsPage,
    time_from_millis, validate,
};

use crate::PgEngine;
use crate::error::{pool as pool_error, storage};
use crate::query::{Param, Sql};

impl PgEngine {
    /// Replaces `collection`'s configuration (one statement: the writes
    /// after it follow it).
    pub(crate) async fn write_configuration(
        &self,
        collection: &str,
        config: &CollectionConfig,
    ) -> Result<()> {
        validate::collection(collection)?;
        config.validate()?;
        let json = serde_json::to_string(config).expect("a configuration serializes");
        let keep = i32::try_from(config.revisions.keep).unwrap_or(i32::MAX);
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                &format!(
                    "INSERT INTO {}.collections (collection, keep, config) VALUES ($1, $2, $3) \
                     ON CONFLICT (collection) DO UPDATE SET keep = excluded.keep, config = excluded.config",
                    self.inner.schema
                ),
                &[&collection, &keep, &json],
            )
            .await
            .map(drop)
            .map_err(|e| storage("writing a collection's configuration", e))
    }

    /// `collection`'s configuration (the default when never set).
    pub(crate) async fn read_configuration(&self, collection: &str) -> Result<CollectionConfig> {
        validate::collection(collection)?;
        let sql = Sql {
            text: format!(
                "SELECT config FROM {}.collections WHERE collection = $1",
                self.inner.schema
            ),
            params: vec![Param::Text(collection.to_owned())],
        };
        let rows = self.inner.rows(self.route, &sql).await?;
        match rows.first() {
            None => Ok(CollectionConfig::default()),
            Some(row) => CollectionConfig::from_stored(collection, row.get(0)),
        }
    }

    /// A page of the kept versions of `collection/id`, newest first, and
    /// how many are kept (one statement: one snapshot).
    pub(crate) async fn read_revisions(
        &self,
        collection: &str,
        id: &str,
        start: u64,
        take: u32,
    ) -> Result<RevisionsPage> {
        validate::collection(collection)?;
        validate::id(id)?;
        folio_core::validate_page(take)?;
        let sql = Sql {
            // The count's row stands even when the page is empty.
            text: format!(
                "SELECT c.total, r.etag, r.revision, r.last_modified, r.deleted \
                 FROM (SELECT count(*) AS total FROM {s}.revisions WHERE collection = $1 AND id = $2) c \
                 LEFT JOIN LATERAL (SELECT etag, revision, last_modified, deleted FROM {s}.revisions \
                 WHERE collection = $1 AND id = $2 ORDER BY etag DESC LIMIT $3 OFFSET $4) r ON true \
                 ORDER BY r.etag DESC",
                s = self.inner.schema
            ),
            params: vec![
                Param::Text(collection.to_owned()),
                Param::Text(id.to_owned()),
                Param::Integer(i64::from(take)),
                Param::Integer(i64::try_from(start).unwrap_or(i64::MAX)),
            ],
        };
        let rows = self.inner.rows(self.route, &sql).await?;
        let total = rows.first().map_or(0, |row| row.get::<_, i64>(0));
        let items = rows
            .iter()
            .filter_map(|row| {
                let etag: i64 = row.get::<_, Option<i64>>(1)?;
                Some(Revision {
                    change_vector: self.inner.change_vector(etag),
                    revision: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                    etag: u64::try_from(etag).unwrap_or(0),
                    last_modified: time_from_millis(row.get(3)),
                    deleted: row.get(4),
                })
            })
            .collect();
        Ok(RevisionsPage {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// The kept version `change_vector` of `collection/id` with its document.
    pub(crate) async fn read_revision(
        &self,
        collection: &str,
        id: &str,
        change_vector: &ChangeVector,
    ) -> Result<Option<Entry>> {
        validate::collection(collection)?;
        validate::id(id)?;
        let Some(etag) = self.inner.etag_of(change_vector) else {
            return Ok(None);
        };
        let sql = Sql {
            text: format!(
                "SELECT etag, revision, last_modified, data::text FROM {}.revisions \
                 WHERE collection = $1 AND id = $2 AND etag = $3 AND NOT deleted",
                self.inner.schema
            ),
            params: vec![
                Param::Text(collection.to_owned()),
                Param::Text(id.to_owned()),
                Param::Integer(etag),
            ],
        };
        let rows = self.inner.rows(self.route, &sql).await?;
        Ok(rows.first().map(|row| {
            let etag: i64 = row.get(0);
            Entry {
                metadata: Metadata {
                    id: id.to_owned(),
                    collection: collection.to_owned(),
                    change_vector: self.inner.change_vector(etag),
                    revision: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                    etag: u64::try_from(etag).unwrap_or(0),
                    last_modified: time_from_millis(row.get(2)),
                },
                document: row.get(3),
            }
        }))
    }
}
