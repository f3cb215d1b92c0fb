//! `folio`: run the server, or talk to one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use folio_server::auth::Keys;
use folio_server::client::{Client, Failure};
use folio_server::{AppState, Backend, Databases, Limits};

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
    },
    /// Run a query (PROTOCOL.md query JSON, or @FILE).
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
    /// Export a collection as JSON Lines.
    Export {
        #[command(flatten)]
        target: Target,
        /// The collection.
        collection: String,
        /// The output file (absent: standard output).
        file: Option<PathBuf>,
    },
    /// Measure a workload against a database, as an application drives it
    /// (ops/s, conflicts, latency): a load generator like pgbench.
    Bench(folio_server::tools::bench::BenchArgs),
    /// Torture a database: many clients mixing random reads and writes while
    /// invariants are checked (exit code 1 on any violation, 2 when it cannot run).
    Torture(folio_server::tools::torture::Args),
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

#[derive(clap::Args)]
struct ServeArgs {
    /// The data directory of the embedded engine.
    #[arg(long, default_value = "./folio-data", env = "FOLIO_DATA")]
    data: PathBuf,
    /// Use the PostgreSQL engine on this server instead (postgres://…).
    #[arg(long, env = "FOLIO_POSTGRES")]
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
    /// The deepest JSON nesting accepted.
    #[arg(long, default_value_t = 128)]
    max_nesting: usize,
    /// Seconds a client may take to send a request's headers (and an idle
    /// connection stays open); later, the connection is closed.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body, in all; later,
    /// 408 and the connection is closed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    body_timeout: u64,
}

/// The `folio` binary allocates with mimalloc. Under `folio serve` every
/// request allocates and frees buffers and the service stack's clones, and
/// glibc's allocator spent about a sixth of the server's time in
/// `malloc_consolidate` and friends. Measured (`folio bench update` through
/// `folio serve`, 32 clients, alternating runs): server CPU per save
/// 104–112 us against 120–145, 8,800–9,500 saves/s against 7,300–8,600;
/// `folio import`: 119,000–131,000 documents/s against 110,000–112,000. The
/// embedded engine is unchanged (SQLite allocates through libc either way).
/// The price is memory held for reuse: idle RSS 13 MiB against 7, and about
/// 40 MiB more at the peak of a 32-client load.
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
            return match runtime.block_on(folio_server::tools::torture::command(args)) {
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
        }),
        Command::Bench(args) => runtime
            .block_on(folio_server::tools::bench::run(args))
            .map_err(|message| Failure {
                message,
                status: None,
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
        } => {
            let document = read_input(file.as_deref())?;
            target
                .client()?
                .put(
                    &collection,
                    &id,
                    document,
                    if_match.as_deref(),
                    if_none_match.as_deref(),
                    &mut stdout,
                )
                .await
        }
        Command::Delete {
            target,
            collection,
            id,
            if_match,
        } => {
            target
                .client()?
                .delete(&collection, &id, if_match.as_deref())
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
            target,
            collection,
            file,
        } => {
            let client = target.client()?;
            let exported = match file {
                Some(path) => {
                    let file = std::fs::File::create(&path).map_err(|error| Failure {
                        message: format!("cannot create {}: {error}", path.display()),
                        status: None,
                    })?;
                    let mut writer = std::io::BufWriter::new(file);
                    let exported = client.export(&collection, &mut writer).await?;
                    std::io::Write::flush(&mut writer).map_err(|error| Failure {
                        message: format!("writing {}: {error}", path.display()),
                        status: None,
                    })?;
                    exported
                }
                None => client.export(&collection, &mut stdout).await?,
            };
            eprintln!("exported {exported} documents");
            Ok(())
        }
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
    })
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let keys = args.keys.as_deref().map(Keys::load).transpose()?;
    let has_keys = keys.as_ref().is_some_and(|keys| !keys.is_empty());
    folio_server::check_exposure(&args.listen, has_keys, args.insecure)?;
    let backend = match args.postgres {
        Some(url) => Backend::Postgres {
            url,
            options: folio_postgres::PgOptions::default(),
        },
        None => Backend::Embedded {
            dir: args.data.clone(),
            options: folio_sqlite::SqliteOptions::default(),
        },
    };
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_nesting: args.max_nesting,
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        body_timeout: std::time::Duration::from_secs(args.body_timeout.max(1)),
    };
    let state = AppState::new(
        Databases::new(backend),
        keys,
        limits,
        args.require_precondition,
    );
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
