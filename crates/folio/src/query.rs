use std::marker::PhantomData;

use folio_core::{Error, Op, Query, Result};
use serde_json::Value;

use crate::{Document, Session};

/// A typed query over one collection; see [`Session::query`].
///
/// Paths are dotted JSON paths (`address.city`). Results are tracked by the
/// session like loads, so saving a queried document checks its version.
///
/// ```
/// # use folio::{Document, DocumentStore, Op};
/// # use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize, Document)]
/// struct Person { id: String, name: String, age: u32 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let store = DocumentStore::in_memory().await?;
/// let mut session = store.open_session();
/// session.store(Person { id: "p1".into(), name: "Ada".into(), age: 36 })?;
/// session.store(Person { id: "p2".into(), name: "Alan".into(), age: 41 })?;
/// session.save_changes().await?;
///
/// let over_40: Vec<Person> = session
///     .query::<Person>()
///     .where_op("age", Op::Gt, 40)
///     .order_by("name")
///     .to_list()
///     .await?;
/// assert_eq!(over_40.len(), 1);
/// assert_eq!(over_40[0].name, "Alan");
/// # Ok(())
/// # }
/// ```
pub struct DocumentQuery<'s, T> {
    session: &'s mut Session,
    query: Query,
    /// The first malformed path, reported when the query runs.
    error: Option<Error>,
    document: PhantomData<fn() -> T>,
}

impl<'s, T: Document> DocumentQuery<'s, T> {
    pub(crate) fn new(session: &'s mut Session) -> Self {
        DocumentQuery {
            session,
            query: Query::new(T::COLLECTION),
            error: None,
            document: PhantomData,
        }
    }

    fn record(mut self, step: impl FnOnce(Query) -> Result<Query>) -> Self {
        if self.error.is_none() {
            let query = std::mem::replace(&mut self.query, Query::new(T::COLLECTION));
            match step(query.clone()) {
                Ok(next) => self.query = next,
                Err(error) => {
                    self.query = query;
                    self.error = Some(error);
                }
            }
        }
        self
    }

    /// Only documents whose field at `path` equals `value`.
    pub fn where_eq(self, path: &str, value: impl Into<Value>) -> Self {
        self.where_op(path, Op::Eq, value)
    }

    /// Only documents whose field at `path` satisfies `op` with `value`.
    pub fn where_op(self, path: &str, op: Op, value: impl Into<Value>) -> Self {
        let value = value.into();
        self.record(|query| query.filter(path, op, value))
    }

    /// Orders by the field at `path`, ascending (documents without it last).
    pub fn order_by(self, path: &str) -> Self {
        self.record(|query| query.order_by(path, false))
    }

    /// Orders by the field at `path`, descending (documents without it last).
    pub fn order_by_desc(self, path: &str) -> Self {
        self.record(|query| query.order_by(path, true))
    }

    /// Skips the first `n` results.
    pub fn skip(mut self, n: u64) -> Self {
        self.query.skip = n;
        self
    }

    /// Returns at most `n` results.
    pub fn take(mut self, n: u64) -> Self {
        self.query.take = Some(n);
        self
    }

    /// The query as sent to the engine.
    pub fn as_query(&self) -> &Query {
        &self.query
    }

    /// Runs the query.
    pub async fn to_list(self) -> Result<Vec<T>> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let entries = self.session.reader()?.query(&self.query).await?;
        let mut documents = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(document) = self.session.query_result::<T>(entry)? {
                documents.push(document);
            }
        }
        Ok(documents)
    }

    /// The first result, if any.
    pub async fn first(self) -> Result<Option<T>> {
        Ok(self.take(1).to_list().await?.into_iter().next())
    }

    /// The only result: [`Error::NotFound`] when there is none,
    /// [`Error::InvalidInput`] when there are several.
    pub async fn single(self) -> Result<T> {
        let description = format!("{:?}", self.query.filters);
        let mut results = self.take(2).to_list().await?;
        match results.len() {
            1 => Ok(results.remove(0)),
            0 => Err(Error::NotFound(format!(
                "no {} matches {description}",
                T::TYPE_NAME
            ))),
            _ => Err(Error::InvalidInput(format!(
                "more than one {} matches {description}, expected exactly one",
                T::TYPE_NAME
            ))),
        }
    }

    /// How many documents match (ignoring skip and take).
    pub async fn count(self) -> Result<u64> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.session.reader()?.count(&self.query).await
    }
}
