//! `folio`: run the server, or talk to one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use folio_server::auth::Keys;
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
}

fn main() -> ExitCode {
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
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("folio: {message}");
            ExitCode::FAILURE
        }
    }
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
    folio_server::serve(listener, state)
        .await
        .map_err(|error| format!("the server failed: {error}"))
}
