//! The data directory of the embedded engine: one file per database,
//! `NAME.sqlite`, named by a valid database name (`validate::database`).
//! Other files (a server's scratch files, which start with a dot, the
//! files SQLite keeps beside a database) are not databases.

use std::path::{Path, PathBuf};

use folio_core::{EngineError, EngineErrorKind, Error, Result, validate};

use crate::{SqliteEngine, SqliteOptions};

/// The suffix of a database's file.
const SUFFIX: &str = ".sqlite";

/// A data directory: where the embedded engine keeps its databases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDirectory {
    path: PathBuf,
}

impl DataDirectory {
    /// The data directory at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataDirectory { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of database `name` (whether it exists or not).
    pub fn database_file(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}{SUFFIX}"))
    }

    /// Whether database `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.database_file(name).exists()
    }

    /// The names of its databases, sorted (none when the directory does not
    /// exist yet; an entry that cannot be read is no database).
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(self.io("listing", error)),
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|name| name.strip_suffix(SUFFIX))
            else {
                continue;
            };
            if validate::database(name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Opens database `name`, creating the directory and the database when
    /// absent (an engine already open on it in this process is shared).
    pub fn open(&self, name: &str, options: SqliteOptions) -> Result<SqliteEngine> {
        validate::database(name)?;
        std::fs::create_dir_all(&self.path).map_err(|error| self.io("creating", error))?;
        SqliteEngine::open(self.database_file(name), options)
    }

    /// Creates database `name` if it is absent; whether it was created. A
    /// database that exists is left as it is (it may be open elsewhere: a
    /// server holds its files locked).
    pub fn create(&self, name: &str, options: SqliteOptions) -> Result<bool> {
        validate::database(name)?;
        let file = self.database_file(name);
        if file
            .try_exists()
            .map_err(|error| self.io("reading", error))?
        {
            return Ok(false);
        }
        drop(self.open(name, options)?);
        Ok(true)
    }

    /// An I/O failure `doing` something to the directory, naming it.
    fn io(&self, doing: &str, error: std::io::Error) -> Error {
        let kind = if error.kind() == std::io::ErrorKind::StorageFull {
            EngineErrorKind::Full
        } else {
            EngineErrorKind::Io
        };
        let message = format!("{doing} the data directory {} failed", self.path.display());
        Error::Engine(EngineError::new(kind, message).with_source(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_the_files_with_valid_names() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDirectory::new(dir.path().join("data"));
        assert_eq!(data.list().unwrap(), Vec::<String>::new());
        assert!(data.create("shop", SqliteOptions::default()).unwrap());
        assert!(!data.create("shop", SqliteOptions::default()).unwrap());
        assert!(data.create("audit", SqliteOptions::default()).unwrap());
        std::fs::write(data.path().join(".shop.backup-1.sqlite"), b"").unwrap();
        std::fs::write(data.path().join("Not A Name.sqlite"), b"").unwrap();
        std::fs::write(data.path().join("notes.txt"), b"").unwrap();
        assert_eq!(data.list().unwrap(), ["audit", "shop"]);
        assert!(data.exists("shop") && !data.exists("other"));
        assert!(matches!(
            data.create("../escape", SqliteOptions::default()),
            Err(Error::InvalidInput(_))
        ));
    }
}
