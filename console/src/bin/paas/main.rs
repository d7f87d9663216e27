//! `paas`: the platform's one binary, a composition root with one module per command.
//! `paas up` runs everything on one machine for a newcomer (`paas down` stops it);
//! `paas serve` is the production mode; `paas agent`, `paas router` and `paas shim` are
//! the local runtime's node-side processes; `paas migrate`, `paas rotate-keys` and
//! `paas openapi` are the operator's tools; `paas login`, `paas releases`, `paas
//! release` and `paas promote` are a client of the API for ops in terminals.

mod client;
mod down;
mod node;
mod serve;
mod up;

use clap::{Parser, Subcommand};
use platform_core::Platform;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "paas",
    version,
    about = "A layered enterprise PaaS: console, API and control plane in one binary."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, global = true, env = "PAAS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform on this machine, with its own PostgreSQL when no
    /// DATABASE_URL is given, and demo data on first start.
    Up(up::UpArgs),
    /// Stop everything `paas up` runs: control plane, agents, instances, router and
    /// the platform's PostgreSQL.
    Down(down::DownArgs),
    /// Run the platform in production mode: DATABASE_URL required, no demo data.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(serve::DbArgs),
    /// Make a new token-signing key current (tokens signed with the old one keep
    /// working for the configured overlap) and exit.
    RotateKeys(RotateArgs),
    /// Print the API's OpenAPI 3 document and exit.
    Openapi,
    /// Run a node agent of the local runtime: it registers with the control plane and
    /// runs the instances placed on its node, each under its own shim.
    Agent(node::AgentArgs),
    /// Run the router of the local runtime: a stable URL for every application.
    Router(node::RouterArgs),
    /// Run one instance for an agent (started by agents, not by hand).
    #[command(hide = true)]
    Shim(node::ShimArgs),
    /// Sign in to a platform; the token is kept in your config directory (mode 0600).
    Login(client::LoginArgs),
    /// List releases across your tenants, pending approvals first.
    Releases(client::ReleasesArgs),
    /// Show a release or act on it: approve, reject, pause, resume, continue, abort,
    /// rollback.
    Release(client::ReleaseArgs),
    /// Promote the revision an application runs in one environment into another.
    Promote(client::PromoteArgs),
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    #[command(flatten)]
    db: serve::DbArgs,
    #[command(flatten)]
    tokens: serve::TokenArgs,
    #[command(flatten)]
    master: serve::MasterKeyArgs,
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_env("PAAS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// mimalloc rather than glibc's malloc: with one arena per thread that ever allocated
/// (up to eight per core), glibc kept a control plane serving 500 nodes at about
/// 125 MiB where mimalloc keeps it lower (P8 in the README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    // TLS to Kubernetes apiservers uses ring; with more than one provider linked in,
    // rustls needs to be told.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Up(args) => up::up(args).await,
        Command::Down(args) => down::down(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Migrate(args) => {
            let pool = serve::open_database(&args.database_url, 2).await?;
            tracing::info!("migrations applied");
            pool.close().await;
            Ok(())
        }
        Command::RotateKeys(args) => {
            let master = args.master.load(None)?;
            let pool = serve::open_database(&args.db.database_url, 2).await?;
            let platform = Platform::start(pool, args.tokens.config(), master).await?;
            let kid = platform.rotate_signing_key_as_operator().await?;
            tracing::info!(kid, "signing key rotated");
            Ok(())
        }
        Command::Agent(args) => node::agent(args).await,
        Command::Router(args) => node::router(args).await,
        Command::Shim(args) => node::shim(args).await,
        Command::Login(args) => client_exit(client::login(args).await),
        Command::Releases(args) => client_exit(client::releases(args).await),
        Command::Release(args) => client_exit(client::release(args).await),
        Command::Promote(args) => client_exit(client::promote(args).await),
        Command::Openapi => {
            let doc = serde_json::to_string_pretty(&console::api::openapi::document_json())?;
            write_stdout(&doc);
            Ok(())
        }
    }
}

/// Ends a client command with its exit code (see `client`), saying why on stderr.
fn client_exit(result: Result<(), client::Failure>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(failure) => {
            write_stderr(&format!("paas: {}", failure.message()));
            std::process::exit(failure.code());
        }
    }
}

#[allow(clippy::print_stderr)]
fn write_stderr(text: &str) {
    eprintln!("{text}");
}

#[allow(clippy::print_stdout)]
fn write_stdout(text: &str) {
    println!("{text}");
}
