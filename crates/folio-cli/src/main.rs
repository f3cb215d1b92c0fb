//! `folio`: run the server, or talk to one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use folio::Location;
use folio_cli::client::{Client, Failure};
use folio_cli::transfer::{self, Place, Source};
use folio_core::Identity;
use folio_server::auth::Keys;
use folio_server::{AppState, Backend, DatabaseLimits, Databases, Limits};

#[derive(Parser)]
#[command(
    name = "folio",
    version,
    about = "Folio: a document database for optimistic concurrency"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (embedded engine unless --postgres is given).
    Serve(ServeArgs),
    /// Create a database (with keys: an admin key's). Says whether it is
    /// new or existed already.
    Create {
        #[command(flatten)]
        target: Target,
        /// The database's name (absent: --db).
        name: Option<String>,
    },
    /// List the databases, one name per line (with keys: those the key has
    /// a role in).
    Databases {
        #[command(flatten)]
        target: Target,
    },
    /// List the database's collections that hold documents, one per line:
    /// the name, a tab, how many documents.
    Collections {
        #[command(flatten)]
        target: Target,
    },
    /// Print a document (exit code 3 when it does not exist).
    Get {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// Print the change vector and revision with the document.
        #[arg(long)]
        metadata: bool,
    },
    /// Write a document read from FILE (or standard input).
    Put {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// The JSON file ("-" or absent: standard input).
        file: Option<PathBuf>,
        /// Only if this is the current change vector (exit code 4 otherwise).
        #[arg(long)]
        if_match: Option<String>,
        /// `*`: only if the document does not exist yet.
        #[arg(long)]
        if_none_match: Option<String>,
        /// The write's idempotency key (default: a new one). Sent again
        /// with the key of a write that was applied, the write is answered
        /// as it was and not applied twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Delete a document.
    Delete {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// Only if this is the current change vector (exit code 4 otherwise).
        #[arg(long)]
        if_match: Option<String>,
        /// The write's idempotency key (default: a new one), as for `put`.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a collection's configuration, or replace it with CONFIG (with
    /// keys: an admin key's), e.g. '{"revisions":{"keep":100}}'.
    Config {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The new configuration (JSON, or @FILE).
        config: Option<String>,
    },
    /// List a document's kept versions, newest first (revision, change
    /// vector, time, "deleted" for a deletion); with CHANGE_VECTOR, print
    /// that version's document.
    Revisions {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// A kept version to print.
        change_vector: Option<String>,
    },
    /// Write a kept version of a document again as its new version, only
    /// over the version current now (exit code 4 when it changed).
    Revert {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
        /// The kept version to write again.
        change_vector: String,
        /// The write's idempotency key (default: a new one), as for `put`.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Run a query (docs/protocol.md query JSON, or @FILE).
    Query {
        #[command(flatten)]
        target: Target,
        /// The query JSON, or @FILE.
        query: String,
    },
    /// Import JSON Lines in batches: lines as written by export, or plain
    /// documents with --collection. A document named twice ends as its
    /// last line has it.
    Import {
        #[command(flatten)]
        target: Target,
        /// The JSON Lines file.
        file: PathBuf,
        /// Every line is a plain document of this collection, stored whole
        /// under its string "id" field (without: every line is
        /// {"collection","id","document"}, as export writes them).
        #[arg(long)]
        collection: Option<String>,
        /// Documents per batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Refuse to overwrite existing documents.
        #[arg(long)]
        only_new: bool,
    },
    /// Export the documents of a collection, or of every collection with
    /// --all, as JSON Lines: one snapshot, each line an entry with its
    /// collection and metadata (`folio import` reads it back).
    Export {
        #[command(flatten)]
        place: PlaceArgs,
        /// The collection (with --all, give only FILE).
        collection: Option<String>,
        /// The output file (absent: standard output).
        file: Option<PathBuf>,
        /// Every collection.
        #[arg(long)]
        all: bool,
    },
    /// Back a database up to FILE: one consistent snapshot, taken while
    /// writes go on, as an embedded Folio database file.
    Backup {
        #[command(flatten)]
        place: PlaceArgs,
        /// The backup file to write (it must not exist).
        file: PathBuf,
    },
    /// Restore a backup FILE as a new database (absent, or empty and
    /// unused), keeping documents, etags, revisions, times, the changes
    /// feed, indexes and the database id.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        place: PlaceArgs,
        /// Give the new database an id of its own: change vectors read from
        /// the source no longer match (conditional writes with them are
        /// refused). For a copy beside a source that lives on.
        #[arg(long)]
        new_id: bool,
    },
    /// Copy a whole database into a new one, e.g. from the embedded engine
    /// to PostgreSQL: one snapshot, everything kept (see restore).
    Copy {
        /// From: http://HOST:PORT[/db/NAME] (a server), embedded:DIR (a data
        /// directory no server holds), postgres://… , or a backup FILE.
        from: String,
        /// To: http://HOST:PORT[/db/NAME], embedded:DIR or postgres://… .
        to: String,
        /// The database (where FROM or TO does not name it).
        #[arg(long, default_value = "default", env = "FOLIO_DB")]
        db: String,
        /// The database's name at TO, when it differs.
        #[arg(long)]
        to_db: Option<String>,
        /// The API key, for servers that require one.
        #[arg(long, env = "FOLIO_API_KEY")]
        api_key: Option<String>,
        /// Give the new database an id of its own (see restore).
        #[arg(long)]
        new_id: bool,
    },
    /// Measure a workload against a database, as an application drives it
    /// (ops/s, conflicts, latency): a load generator like pgbench.
    Bench(folio_cli::tools::bench::BenchArgs),
    /// Torture a database: many clients mixing random reads and writes while
    /// invariants are checked (exit code 1 on any violation, 2 when it cannot run).
    Torture(folio_cli::tools::torture::Args),
}

/// Which server and database a client command talks to.
#[derive(clap::Args)]
struct Target {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:7070", env = "FOLIO_SERVER")]
    server: String,
    /// The database.
    #[arg(long, default_value = "default", env = "FOLIO_DB")]
    db: String,
    /// The API key, when the server requires one.
    #[arg(long, env = "FOLIO_API_KEY")]
    api_key: Option<String>,
}

impl Target {
    fn client(self) -> Result<Client, Failure> {
        Client::new(&self.server, &self.db, self.api_key)
    }
}

/// Where a whole-database command (backup, restore, export) finds the
/// database: through the server, or without one.
#[derive(clap::Args)]
struct PlaceArgs {
    #[command(flatten)]
    target: Target,
    /// Instead of the server: the embedded engine's data directory, which
    /// no server holds.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Instead of the server: the PostgreSQL server (postgres://…).
    #[arg(long, value_name = "URL", conflicts_with = "data", value_parser = postgres_url)]
    postgres: Option<String>,
}

impl PlaceArgs {
    fn place(self) -> Result<Place, Failure> {
        let Target {
            server,
            db,
            api_key,
        } = self.target;
        Ok(match (self.data, self.postgres) {
            (Some(directory), _) => Place::Embedded {
                directory,
                database: db,
            },
            (None, Some(url)) => Place::Postgres { url, database: db },
            (None, None) => Place::Server(Client::new(&server, &db, api_key)?.for_transfers()?),
        })
    }
}

/// A `folio copy` endpoint: a database URL ([`folio::Location`]:
/// `http://HOST:PORT[/db/NAME]`, `embedded:DIR`, `postgres://…`; `--db`
/// names the database where the URL does not), or (as the source) a
/// backup file.
fn copy_place(spec: &str, db: &str, api_key: Option<String>) -> Result<Source, Failure> {
    let location = match Location::parse(spec) {
        Ok(location) => location,
        Err(_) if std::path::Path::new(spec).is_file() => {
            return Ok(Source::File(PathBuf::from(spec)));
        }
        Err(error) => {
            return Err(Failure {
                message: format!("{error}; or give a backup file"),
                status: None,
                problem: None,
            });
        }
    };
    let database = location.server_database().unwrap_or(db).to_owned();
    Ok(Source::Place(match location {
        Location::Server(_) => {
            let server = location.server_base().unwrap_or_default();
            Place::Server(Client::new(server, &database, api_key)?.for_transfers()?)
        }
        Location::Embedded(directory) => Place::Embedded {
            directory,
            database,
        },
        Location::Postgres(url) => Place::Postgres { url, database },
        Location::Memory => {
            return Err(Failure {
                message: "memory: is a database of one process; copy from or to a server, \
                          a data directory or PostgreSQL"
                    .into(),
                status: None,
                problem: None,
            });
        }
    }))
}

/// A `--postgres` URL: a [`folio::Location`] of the PostgreSQL engine.
fn postgres_url(text: &str) -> Result<String, String> {
    match Location::parse(text) {
        Ok(Location::Postgres(url)) => Ok(url),
        Ok(_) => Err(format!("{text}: not a PostgreSQL URL (postgres://…)")),
        Err(error) => Err(error.to_string()),
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory of the embedded engine.
    #[arg(long, default_value = "./folio-data", env = "FOLIO_DATA")]
    data: PathBuf,
    /// Use the PostgreSQL engine on this server instead (postgres://…).
    #[arg(long, env = "FOLIO_POSTGRES", value_parser = postgres_url)]
    postgres: Option<String>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", env = "FOLIO_LISTEN")]
    listen: SocketAddr,
    /// A JSON file of API keys with a role per database.
    #[arg(long, env = "FOLIO_KEYS")]
    keys: Option<PathBuf>,
    /// Allow a non-loopback address without keys.
    #[arg(long)]
    insecure: bool,
    /// Require If-Match to update or delete in this collection (`collection`
    /// or `database/collection`); repeatable.
    #[arg(long = "require-precondition", value_name = "COLLECTION")]
    require_precondition: Vec<String>,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// The deepest JSON nesting accepted (1 to 128: no engine stores
    /// documents nested deeper).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=128))]
    max_nesting: u64,
    /// Seconds a client may take to send a request's headers (and an idle
    /// connection stays open); later, the connection is closed.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body, in all; later,
    /// 408 and the connection is closed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    body_timeout: u64,
    /// The most client connections served at once; one more is answered
    /// 503 (with Retry-After) and closed. Each connection holds a file
    /// descriptor and buffers, and the databases need descriptors too
    /// (about 10 each, more while busy), so the default is a quarter of the
    /// descriptor limit (which `folio serve` raises to the hard limit at
    /// start), at most 4,096.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// The most databases open at once; opening another first closes the
    /// least recently used idle one (it opens again on its next use). An
    /// open embedded database holds 4 threads, about 10 file descriptors
    /// (more while busy) and its cache; a PostgreSQL one, a pool of
    /// connections. Default: one per 64 descriptors of the descriptor
    /// limit, from 4 to 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_open_databases: Option<u64>,
    /// The most databases that may exist; creating one more is refused
    /// (403). Bounds what a client allowed to create databases (anyone,
    /// without --keys) can take of the disk.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_databases: u64,
    /// Bytes of recently read documents kept in memory, for all databases
    /// together (when full, the largest cache gives up its least recently
    /// used documents first).
    #[arg(long, default_value_t = 256 << 20)]
    cache_bytes: usize,
    /// Also serve requests for this host name (repeatable). Without --keys
    /// only localhost, names under .localhost and IP addresses are served,
    /// and any other Host is answered 421: otherwise a web page whose own
    /// name is re-pointed at this machine (DNS rebinding) could use every
    /// database from a visitor's browser. With --keys, every name is served.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
}

/// How many connections to serve at once by default, out of `descriptors`
/// file descriptors: a quarter, the rest being the databases' and the
/// logs', and at most 4,096 (each connection's buffers cost memory too).
fn default_max_connections(descriptors: u64) -> u64 {
    (descriptors / 4).clamp(16, 4096)
}

/// How many databases to keep open by default, out of `descriptors` file
/// descriptors: one per 64 (an embedded database holds about 10, more with
/// concurrent readers), from 4 to 64.
fn default_max_open_databases(descriptors: u64) -> u64 {
    (descriptors / 64).clamp(4, 64)
}

/// Raises the soft limit on open files to the hard limit, so that the
/// server is not held to the 1,024 most shells start it with; the limit in
/// force.
fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "the file descriptor limit could not be raised");
            rlimit::Resource::NOFILE
                .get()
                .map_or(1024, |(soft, _)| soft)
        }
    }
}

/// `name` as `--allow-host` takes it: a host name alone, without a port or
/// a scheme.
fn check_allowed_host(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--allow-host {name:?}: give a host name alone (letters, digits, '-', '.', '_'), \
             without a scheme or a port"
        ))
    }
}

/// The `folio` binary allocates with mimalloc. Under `folio serve` every
/// request allocates and frees buffers and the service stack's clones, and
/// glibc's allocator spent about a sixth of the server's time in
/// `malloc_consolidate` and friends: with mimalloc the server spends less
/// CPU per save and saves and imports more per second (BENCHMARKS.md). The
/// embedded engine is unchanged (SQLite allocates through libc either way).
/// The price is memory held for reuse, idle and at the peak of a load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before any thread opens a database (see `allocate_with_mimalloc`).
    folio_sqlite::allocate_with_mimalloc();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FOLIO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: not in a file, a
        // pipe or a journal, nor when NO_COLOR asks for none.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("folio: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Torture(args) => {
            return match runtime.block_on(folio_cli::tools::torture::command(args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(message) => {
                    eprintln!("folio torture: {message}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Serve(args) => runtime.block_on(serve(args)).map_err(|message| Failure {
            message,
            status: None,
            problem: None,
        }),
        Command::Bench(args) => runtime
            .block_on(folio_cli::tools::bench::run(args))
            .map_err(|message| Failure {
                message,
                status: None,
                problem: None,
            }),
        command => runtime.block_on(client_command(command)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("folio: {}", failure.message);
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn client_command(command: Command) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Serve(_) | Command::Bench(_) | Command::Torture(_) => {
            unreachable!("handled by main")
        }
        Command::Create { mut target, name } => {
            if let Some(name) = name {
                target.db = name;
            }
            target.client()?.create_database(&mut stdout).await
        }
        Command::Databases { target } => target.client()?.databases(&mut stdout).await,
        Command::Collections { target } => target.client()?.collections(&mut stdout).await,
        Command::Get {
            target,
            collection,
            id,
            metadata,
        } => {
            target
                .client()?
                .get(&collection, &id, metadata, &mut stdout)
                .await
        }
        Command::Put {
            target,
            collection,
            id,
            file,
            if_match,
            if_none_match,
            idempotency_key,
        } => {
            let document = read_input(file.as_deref())?;
            let key = write_key(idempotency_key)?;
            target
                .client()?
                .put(
                    &collection,
                    &id,
                    document,
                    if_match.as_deref(),
                    if_none_match.as_deref(),
                    &key,
                    &mut stdout,
                )
                .await
        }
        Command::Delete {
            target,
            collection,
            id,
            if_match,
            idempotency_key,
        } => {
            let key = write_key(idempotency_key)?;
            target
                .client()?
                .delete(&collection, &id, if_match.as_deref(), &key)
                .await
        }
        Command::Config {
            target,
            collection,
            config,
        } => {
            let config = match config {
                Some(config) => Some(match config.strip_prefix('@') {
                    Some(file) => read_input(Some(std::path::Path::new(file)))?,
                    None => config,
                }),
                None => None,
            };
            target
                .client()?
                .config(&collection, config, &mut stdout)
                .await
        }
        Command::Revisions {
            target,
            collection,
            id,
            change_vector,
        } => {
            let client = target.client()?;
            match change_vector {
                Some(version) => {
                    client
                        .show_revision(&collection, &id, &version, &mut stdout)
                        .await
                }
                None => client.revisions(&collection, &id, &mut stdout).await,
            }
        }
        Command::Revert {
            target,
            collection,
            id,
            change_vector,
            idempotency_key,
        } => {
            let key = write_key(idempotency_key)?;
            target
                .client()?
                .revert(&collection, &id, &change_vector, &key, &mut stdout)
                .await
        }
        Command::Query { target, query } => {
            let query = match query.strip_prefix('@') {
                Some(file) => read_input(Some(std::path::Path::new(file)))?,
                None => query,
            };
            target.client()?.query(query, &mut stdout).await
        }
        Command::Import {
            target,
            file,
            collection,
            batch_size,
            only_new,
        } => target
            .client()?
            .import(&file, collection.as_deref(), batch_size.max(1), only_new)
            .await
            .map(drop),
        Command::Export {
            place,
            collection,
            file,
            all,
        } => {
            let (collection, file) = match (all, collection, file) {
                (false, None, _) => {
                    return Err(Failure {
                        message: "give a COLLECTION, or --all for every collection".into(),
                        status: None,
                        problem: None,
                    });
                }
                (false, Some(collection), file) => (Some(collection), file),
                (true, _, Some(_)) => {
                    return Err(Failure {
                        message: "with --all, give only the output FILE".into(),
                        status: None,
                        problem: None,
                    });
                }
                (true, file, None) => (None, file.map(PathBuf::from)),
            };
            let place = place.place()?;
            let exported = match file {
                Some(path) => {
                    let file = std::fs::File::create(&path).map_err(|error| Failure {
                        message: format!("cannot create {}: {error}", path.display()),
                        status: None,
                        problem: None,
                    })?;
                    let mut writer = std::io::BufWriter::new(file);
                    let exported =
                        transfer::export(&place, collection.as_deref(), &mut writer).await?;
                    writer
                        .into_inner()
                        .map_err(|error| error.into_error())
                        .and_then(|file| file.sync_all())
                        .map_err(|error| Failure {
                            message: format!("writing {}: {error}", path.display()),
                            status: None,
                            problem: None,
                        })?;
                    exported
                }
                None => transfer::export(&place, collection.as_deref(), &mut stdout).await?,
            };
            eprintln!("exported {exported} documents");
            Ok(())
        }
        Command::Backup { place, file } => transfer::backup(&place.place()?, &file).await.map(drop),
        Command::Restore {
            file,
            place,
            new_id,
        } => transfer::restore(&file, &place.place()?, identity(new_id))
            .await
            .map(drop),
        Command::Copy {
            from,
            to,
            db,
            to_db,
            api_key,
            new_id,
        } => {
            let source = copy_place(&from, &db, api_key.clone())?;
            let Source::Place(target) = copy_place(&to, to_db.as_deref().unwrap_or(&db), api_key)?
            else {
                return Err(Failure {
                    message: format!(
                        "{to}: copy into http://HOST:PORT[/db/NAME], embedded:DIR or postgres://…"
                    ),
                    status: None,
                    problem: None,
                });
            };
            transfer::copy(source, &target, identity(new_id))
                .await
                .map(drop)
        }
    }
}

fn identity(new_id: bool) -> Identity {
    if new_id {
        Identity::New
    } else {
        Identity::Keep
    }
}

/// A write's idempotency key: `given`, checked, or a new one.
fn write_key(given: Option<String>) -> Result<String, Failure> {
    match given {
        Some(key) => folio_core::BatchId::parse(&key)
            .map(|key| key.to_string())
            .map_err(|error| Failure {
                message: error.to_string(),
                status: None,
                problem: None,
            }),
        None => Ok(folio_core::BatchId::new().to_string()),
    }
}

/// The contents of `file`, or of standard input for `None` or `-`.
fn read_input(file: Option<&std::path::Path>) -> Result<String, Failure> {
    let read = match file {
        Some(path) if path != std::path::Path::new("-") => std::fs::read_to_string(path),
        _ => std::io::read_to_string(std::io::stdin()),
    };
    read.map_err(|error| Failure {
        message: format!("reading the input failed: {error}"),
        status: None,
        problem: None,
    })
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let keys = args.keys.as_deref().map(Keys::load).transpose()?;
    let has_keys = keys.as_ref().is_some_and(|keys| !keys.is_empty());
    folio_server::check_exposure(&args.listen, has_keys, args.insecure)?;
    for name in &args.allow_host {
        check_allowed_host(name)?;
    }
    let descriptors = raise_descriptor_limit();
    let max_connections = args
        .max_connections
        .unwrap_or_else(|| default_max_connections(descriptors));
    let max_open_databases = args
        .max_open_databases
        .unwrap_or_else(|| default_max_open_databases(descriptors));
    tracing::info!(
        descriptors,
        max_connections,
        max_open_databases,
        max_databases = args.max_databases,
        "file descriptor limit (soft, raised to the hard limit) and what is kept within it"
    );
    if max_connections.saturating_add(max_open_databases.saturating_mul(16)) > descriptors {
        tracing::warn!(
            descriptors,
            "--max-connections and --max-open-databases may need more file descriptors than the \
             limit allows (each open database holds about 10, more while busy): raise the hard \
             limit (ulimit -Hn) or lower them"
        );
    }
    let to_usize = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    match &args.postgres {
        Some(_) => tracing::info!("the databases are on PostgreSQL (--postgres)"),
        None => {
            let data = std::path::absolute(&args.data).unwrap_or_else(|_| args.data.clone());
            tracing::info!(data = %data.display(), "the databases are files in the data directory");
        }
    }
    let backend = match args.postgres {
        Some(url) => Backend::Postgres {
            url,
            options: folio_postgres::PgOptions::default(),
        },
        None => Backend::Embedded {
            dir: args.data.clone(),
            options: folio_sqlite::SqliteOptions {
                // Any one database may use the whole budget.
                cache_bytes: args.cache_bytes,
                cache_budget: Some(folio_sqlite::CacheBudget::new(args.cache_bytes)),
                ..folio_sqlite::SqliteOptions::default()
            },
        },
    };
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_nesting: to_usize(args.max_nesting),
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
        max_connections: to_usize(max_connections),
    };
    let databases = Databases::with_limits(
        backend,
        DatabaseLimits {
            max_open: to_usize(max_open_databases),
            max_databases: to_usize(args.max_databases),
        },
    );
    let state = AppState::new(databases, keys, limits, args.require_precondition)
        .with_allowed_hosts(args.allow_host);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    tracing::info!(%address, "folio is listening");
    tracing::info!("Folio Studio, the browser UI: http://{address}/studio");
    folio_server::serve(listener, state)
        .await
        .map_err(|error| format!("the server failed: {error}"))
}
