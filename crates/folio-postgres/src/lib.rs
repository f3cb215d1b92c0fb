//! Folio's PostgreSQL engine (being written).

use folio_core::{DatabaseId, Result};

/// Tuning of a [`PgEngine`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The most connections the engine's pool opens.
    pub max_connections: usize,
    /// How often a batch is retried when PostgreSQL aborts it to keep
    /// serializability (SQLSTATE 40001 or 40P01).
    pub serialization_retries: u32,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            serialization_retries: 20,
        }
    }
}

/// The PostgreSQL engine: one Folio database is one PostgreSQL schema.
pub struct PgEngine {
    database_id: DatabaseId,
    schema: String,
}

impl PgEngine {
    /// Connects to the PostgreSQL server at `url` (`postgres://user@host:port/dbname`)
    /// and opens the Folio database `database` (the schema `folio_{database}`),
    /// creating it on first use.
    pub async fn connect(url: &str, database: &str, options: PgOptions) -> Result<Self> {
        let _ = (url, options);
        Err(folio_core::Error::InvalidInput(format!("{database}: the PostgreSQL engine is being written")))
    }

    /// The random id of this database, the tail of its change vectors.
    pub fn database_id(&self) -> &DatabaseId {
        &self.database_id
    }

    /// The PostgreSQL schema holding this database.
    pub fn schema(&self) -> &str {
        &self.schema
    }
}
