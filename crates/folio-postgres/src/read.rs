//! The read side: loads, queries, scans, collections and the changes
//! feed, a query's page and total from one snapshot. Each read goes where
//! its handle's route says (the primary, or any node: the `nodes`
//! module); the feed always reads the primary.

use folio_core::{
    Change, ChangeKind, ChangesPage, CollectionCount, Entry, Metadata, Query, QueryResult, Result,
    time_from_millis, validate,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::commit::ConnectionGuard;
use crate::error::{pool as pool_error, storage};
use crate::nodes::Run;
use crate::query::{self, Param, Sql};
use crate::{Inner, PgEngine, Route};

impl Inner {
    fn entry(&self, row: &Row, collection: &str) -> Entry {
        let etag: i64 = row.get(1);
        let revision: i64 = row.get(2);
        Entry {
            metadata: Metadata {
                id: row.get(0),
                collection: collection.to_owned(),
                change_vector: self.change_vector(etag),
                revision: u64::try_from(revision).unwrap_or(0),
                etag: u64::try_from(etag).unwrap_or(0),
                last_modified: time_from_millis(row.get(3)),
            },
            document: row.get(4),
        }
    }

    /// Runs a read on a connection `route` chooses: the engine's pool
    /// (the primary), or a node's (another one when it fails).
    async fn read<T>(&self, route: Route, run: Run<'_, T>) -> Result<T> {
        match (route, &self.nodes) {
            (Route::Nodes(None), Some(nodes)) => nodes.read_any(run).await,
            (Route::Nodes(Some(after)), Some(nodes)) => {
                nodes.read_after(after, &self.pool, run).await
            }
            _ => run(self.pool.get().await.map_err(pool_error)?).await,
        }
    }

    pub(crate) async fn rows(&self, route: Route, sql: &Sql) -> Result<Vec<Row>> {
        self.read(
            route,
            Box::new(|client| {
                Box::pin(async move {
                    let statement = client
                        .prepare_cached(&sql.text)
                        .await
                        .map_err(|e| storage("preparing a query", e))?;
                    client
                        .query(&statement, &params(sql))
                        .await
                        .map_err(|e| storage("running a query", e))
                })
            }),
        )
        .await
    }

    /// Runs the test's hook before a count (feature `fault-injection`).
    fn before_count(&self) {
        #[cfg(feature = "fault-injection")]
        if let Some(crate::BeforeCount(hook)) = &self.options.before_count {
            tokio::task::block_in_place(|| hook());
        }
    }

    /// The rows of `select` and the count of `count`, read in one
    /// READ ONLY, REPEATABLE READ transaction: one snapshot. `BEGIN`, both
    /// statements and `COMMIT` go out in one flight (a failed statement
    /// aborts the transaction, and `COMMIT` then rolls it back).
    async fn page(&self, route: Route, select: &Sql, count: &Sql) -> Result<(Vec<Row>, i64)> {
        self.read(
            route,
            Box::new(|client| Box::pin(self.page_on(client, select, count))),
        )
        .await
    }

    async fn page_on(
        &self,
        client: deadpool_postgres::Object,
        select: &Sql,
        count: &Sql,
    ) -> Result<(Vec<Row>, i64)> {
        let select_statement = client
            .prepare_cached(&select.text)
            .await
            .map_err(|e| storage("preparing a query", e))?;
        let count_statement = client
            .prepare_cached(&count.text)
            .await
            .map_err(|e| storage("preparing a query", e))?;
        // If this future is dropped inside the transaction, or it does not
        // end, the connection must not go back to the pool.
        let mut guard = ConnectionGuard(Some(client));
        let client = guard.0.as_ref().expect("held until the end");
        let (select_params, count_params) = (params(select), params(count));
        let begin = client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        let rows = client.query(&select_statement, &select_params);
        let counted = async {
            client
                .query_one(&count_statement, &count_params)
                .await
                .map(|row| row.get::<_, i64>(0))
        };
        let end = client.batch_execute("COMMIT");
        #[cfg(feature = "fault-injection")]
        let (began, rows, total, ended) = if self.options.before_count.is_some() {
            // The hook runs between the two statements, so they go out in
            // two flights.
            let (began, rows) = futures_util::future::join(begin, rows).await;
            self.before_count();
            let (total, ended) = futures_util::future::join(counted, end).await;
            (began, rows, total, ended)
        } else {
            futures_util::future::join4(begin, rows, counted, end).await
        };
        #[cfg(not(feature = "fault-injection"))]
        let (began, rows, total, ended) =
            futures_util::future::join4(begin, rows, counted, end).await;
        if ended.is_ok() {
            guard.release();
        }
        began.map_err(|e| storage("beginning a read", e))?;
        let rows = rows.map_err(|e| storage("running a query", e))?;
        let total = total.map_err(|e| storage("counting query results", e))?;
        ended.map_err(|e| storage("ending a read", e))?;
        Ok((rows, total))
    }
}

/// The parameters of `sql` as tokio-postgres takes them.
fn params(sql: &Sql) -> Vec<&(dyn ToSql + Sync)> {
    sql.params
        .iter()
        .map(|param| match param {
            Param::Text(text) => text as &(dyn ToSql + Sync),
            Param::Integer(integer) => integer as &(dyn ToSql + Sync),
        })
        .collect()
}

impl PgEngine {
    pub(crate) async fn load(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Entry>>> {
        validate::keys(collection, ids)?;
        self.inner
            .read(
                self.route,
                Box::new(|client| Box::pin(self.load_on(client, collection, ids))),
            )
            .await
    }

    async fn load_on(
        &self,
        client: deadpool_postgres::Object,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Entry>>> {
        if let [id] = ids {
            let statement = client
                .prepare_cached(&self.inner.statements.get_one)
                .await
                .map_err(|e| storage("preparing a read", e))?;
            let row = client
                .query_opt(&statement, &[&collection, id])
                .await
                .map_err(|e| storage("reading a document", e))?;
            return Ok(vec![row.map(|row| self.inner.entry(&row, collection))]);
        }
        let statement = client
            .prepare_cached(&self.inner.statements.get)
            .await
            .map_err(|e| storage("preparing a read", e))?;
        // One statement: the documents come from one snapshot.
        let rows = client
            .query(&statement, &[&collection, &ids])
            .await
            .map_err(|e| storage("reading documents", e))?;
        let mut found: Vec<Option<Entry>> = vec![None; ids.len()];
        for row in rows {
            let entry = self.inner.entry(&row, collection);
            for (slot, id) in found.iter_mut().zip(ids) {
                if *id == entry.metadata.id {
                    *slot = Some(entry.clone());
                }
            }
        }
        Ok(found)
    }

    pub(crate) async fn load_metadata(
        &self,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Metadata>>> {
        validate::keys(collection, ids)?;
        self.inner
            .read(
                self.route,
                Box::new(|client| Box::pin(self.load_metadata_on(client, collection, ids))),
            )
            .await
    }

    async fn load_metadata_on(
        &self,
        client: deadpool_postgres::Object,
        collection: &str,
        ids: &[String],
    ) -> Result<Vec<Option<Metadata>>> {
        let statement = client
            .prepare_cached(&self.inner.statements.metadata)
            .await
            .map_err(|e| storage("preparing a read", e))?;
        let rows = client
            .query(&statement, &[&collection, &ids])
            .await
            .map_err(|e| storage("reading metadata", e))?;
        let mut found: Vec<Option<Metadata>> = vec![None; ids.len()];
        for row in rows {
            let id: String = row.get(0);
            let etag: i64 = row.get(1);
            let revision: i64 = row.get(2);
            let metadata = Metadata {
                collection: collection.to_owned(),
                change_vector: self.inner.change_vector(etag),
                revision: u64::try_from(revision).unwrap_or(0),
                etag: u64::try_from(etag).unwrap_or(0),
                last_modified: time_from_millis(row.get(3)),
                id,
            };
            for (slot, id) in found.iter_mut().zip(ids) {
                if *id == metadata.id {
                    *slot = Some(metadata.clone());
                }
            }
        }
        Ok(found)
    }

    pub(crate) async fn run_query(&self, query: &Query) -> Result<Vec<Entry>> {
        let sql = query::select(&self.inner.schema, query)?;
        let rows = self.inner.rows(self.route, &sql).await?;
        Ok(rows
            .iter()
            .map(|row| self.inner.entry(row, &query.collection))
            .collect())
    }

    pub(crate) async fn run_count(&self, query: &Query) -> Result<u64> {
        let sql = query::count(&self.inner.schema, query)?;
        self.inner.before_count();
        let rows = self.inner.rows(self.route, &sql).await?;
        let count: i64 = rows.first().map_or(0, |row| row.get(0));
        Ok(u64::try_from(count).unwrap_or(0))
    }

    pub(crate) async fn count_collections(&self) -> Result<Vec<CollectionCount>> {
        let sql = query::collections(&self.inner.schema);
        let rows = self.inner.rows(self.route, &sql).await?;
        let mut collections: Vec<CollectionCount> = rows
            .iter()
            .map(|row| CollectionCount {
                name: row.get(0),
                documents: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            })
            .collect();
        // By code point, as every engine orders them (the column's
        // collation is "C", which does; sorting here keeps it so whatever
        // the plan).
        collections.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(collections)
    }

    /// The page and the total in one transaction: one snapshot.
    pub(crate) async fn run_query_page(&self, query: &Query) -> Result<QueryResult> {
        let select = query::select(&self.inner.schema, query)?;
        let count = query::count(&self.inner.schema, query)?;
        let (rows, total) = self.inner.page(self.route, &select, &count).await?;
        Ok(QueryResult {
            entries: rows
                .iter()
                .map(|row| self.inner.entry(row, &query.collection))
                .collect(),
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    pub(crate) async fn scan_collection(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        validate::collection(collection)?;
        if let Some(after) = after {
            validate::id(after)?;
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .inner
            .read(
                self.route,
                Box::new(|client| {
                    Box::pin(async move {
                        let statement = client
                            .prepare_cached(&self.inner.statements.scan)
                            .await
                            .map_err(|e| storage("preparing a scan", e))?;
                        client
                            .query(&statement, &[&collection, &after.unwrap_or(""), &limit])
                            .await
                            .map_err(|e| storage("scanning a collection", e))
                    })
                }),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| self.inner.entry(row, collection))
            .collect())
    }

    pub(crate) async fn changes_page(
        &self,
        since: u64,
        collection: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage> {
        if let Some(page) = ChangesPage::check_request(since, collection, limit)? {
            return Ok(page);
        }
        self.inner.feed.ensure_kept().await?;
        let horizon = self.inner.feed.horizon.current();
        if since >= horizon {
            return Ok(ChangesPage::new(Vec::new(), since, horizon, limit));
        }
        let client = self.inner.pool.get().await.map_err(pool_error)?;
        let statement = client
            .prepare_cached(&self.inner.statements.changes)
            .await
            .map_err(|e| storage("preparing the changes feed", e))?;
        let bound = |etag: u64| i64::try_from(etag).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[
                    &bound(since),
                    &bound(horizon),
                    &collection,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| storage("reading the changes feed", e))?;
        let changes = rows
            .iter()
            .map(|row| {
                let etag: i64 = row.get(0);
                let kind: i16 = row.get(1);
                let revision: i64 = row.get(4);
                Change {
                    etag: u64::try_from(etag).unwrap_or(0),
                    kind: if kind == 1 {
                        ChangeKind::Delete
                    } else {
                        ChangeKind::Put
                    },
                    collection: row.get(2),
                    id: row.get(3),
                    change_vector: self.inner.change_vector(etag),
                    revision: u64::try_from(revision).unwrap_or(0),
                }
            })
            .collect();
        Ok(ChangesPage::new(changes, since, horizon, limit))
    }
}
