//! The databases beside a store's own: creating one and listing them, on
//! whatever holds the store's database (a data directory, a PostgreSQL
//! server, a Folio server).

use folio_core::{Error, Result, validate};

/// What a store's administration acts on: where its database is.
pub(crate) enum Databases {
    /// A store opened on an engine of the application's own.
    Unknown,
    /// The embedded engine in memory: the store's one database.
    Memory {
        /// Its name.
        database: String,
    },
    /// The embedded engine's data directory.
    #[cfg(feature = "sqlite")]
    Embedded {
        /// The directory.
        directory: folio_sqlite::DataDirectory,
        /// The options databases are created with.
        options: folio_sqlite::SqliteOptions,
    },
    /// A PostgreSQL server: a schema per database.
    #[cfg(feature = "postgres")]
    Postgres {
        /// `postgres://…`.
        url: String,
    },
    /// A Folio server, through the store's own client (its key).
    #[cfg(feature = "remote")]
    Remote(std::sync::Arc<folio_remote::RemoteEngine>),
}

/// The administration of the databases beside a store's own:
/// [`DocumentStore::admin`](crate::DocumentStore::admin).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> folio::Result<()> {
/// let data = tempfile::tempdir().unwrap();
/// let store = folio::DocumentStore::open(data.path()).await?;
/// assert!(store.admin().create_database("audit").await?);
/// assert_eq!(store.admin().list_databases().await?, ["audit", "default"]);
/// # Ok(())
/// # }
/// ```
pub struct Admin<'a> {
    databases: &'a Databases,
}

impl<'a> Admin<'a> {
    pub(crate) fn new(databases: &'a Databases) -> Self {
        Admin { databases }
    }

    /// Creates the database `name` where the store's database is (the same
    /// data directory, PostgreSQL server or Folio server; there, with an
    /// admin key) unless it exists; whether it was created. Open it with a
    /// store of its own (`builder().database(name)`, or its URL).
    ///
    /// [`Error::InvalidInput`] for an invalid name, or for a store that
    /// has nowhere to create one (in memory, or opened on an engine).
    pub async fn create_database(&self, name: &str) -> Result<bool> {
        validate::database(name)?;
        match self.databases {
            Databases::Unknown => Err(unknown()),
            Databases::Memory { .. } => Err(Error::InvalidInput(
                "an in-memory store holds its one database: open another store for another".into(),
            )),
            #[cfg(feature = "sqlite")]
            Databases::Embedded { directory, options } => directory.create(name, options.clone()),
            #[cfg(feature = "postgres")]
            Databases::Postgres { url } => folio_postgres::create_database(url, name).await,
            #[cfg(feature = "remote")]
            Databases::Remote(engine) => engine.create_database(name).await,
        }
    }

    /// The databases where the store's database is, sorted (on a Folio
    /// server with keys, those the store's key may read).
    pub async fn list_databases(&self) -> Result<Vec<String>> {
        match self.databases {
            Databases::Unknown => Err(unknown()),
            Databases::Memory { database } => Ok(vec![database.clone()]),
            #[cfg(feature = "sqlite")]
            Databases::Embedded { directory, .. } => directory.list(),
            #[cfg(feature = "postgres")]
            Databases::Postgres { url } => folio_postgres::list_databases(url).await,
            #[cfg(feature = "remote")]
            Databases::Remote(engine) => engine.list_databases().await,
        }
    }
}

fn unknown() -> Error {
    Error::InvalidInput(
        "this store was opened on an engine of the application's own (builder().engine), \
         so it does not know where its database is: administer that engine's databases \
         directly"
            .into(),
    )
}
