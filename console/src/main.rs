//! `paas`: the platform's one binary. `paas up` runs everything on one machine for a
//! newcomer; `paas serve` is the production mode; `paas migrate`, `paas rotate-keys`
//! and `paas openapi` are the operator's tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use console::local_postgres::LocalPostgres;
use console::{AppState, WebConfig};
use platform_core::Platform;
use platform_core::auth::TokenConfig;
use platform_core::bootstrap::CreatedAccount;
use platform_core::names::Password;
use platform_core::store;
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
    Up(UpArgs),
    /// Run the platform in production mode: DATABASE_URL required, no demo data.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(DbArgs),
    /// Make a new token-signing key current (tokens signed with the old one keep
    /// working for the configured overlap) and exit.
    RotateKeys(RotateArgs),
    /// Print the API's OpenAPI 3 document and exit.
    Openapi,
}

#[derive(Debug, Args)]
struct DbArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Debug, Args)]
struct RotateArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    tokens: TokenArgs,
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "PAAS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Mark session cookies Secure (set when the console is served over HTTPS).
    #[arg(long, env = "PAAS_SECURE_COOKIES", default_value_t = false)]
    secure_cookies: bool,
    /// Trust Forwarded / X-Forwarded-For for the client address (only behind a proxy).
    #[arg(long, env = "PAAS_TRUST_PROXY", default_value_t = false)]
    trust_proxy: bool,
    /// Login attempts allowed per username per minute.
    #[arg(long, env = "PAAS_LOGIN_RATE_PER_USER", default_value_t = 5)]
    login_rate_per_user: u32,
    /// Login attempts allowed per client address per minute.
    #[arg(long, env = "PAAS_LOGIN_RATE_PER_ADDRESS", default_value_t = 30)]
    login_rate_per_address: u32,
    /// Maximum database connections.
    #[arg(long, env = "PAAS_DB_MAX_CONNECTIONS", default_value_t = 16)]
    db_max_connections: u32,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "PAAS_WORKERS")]
    workers: Option<usize>,
    #[command(flatten)]
    tokens: TokenArgs,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The `iss` of issued tokens.
    #[arg(long, env = "PAAS_JWT_ISSUER", default_value = "paas")]
    jwt_issuer: String,
    /// The `aud` of issued tokens.
    #[arg(long, env = "PAAS_JWT_AUDIENCE", default_value = "paas-console")]
    jwt_audience: String,
    /// Token lifetime in seconds.
    #[arg(long, env = "PAAS_TOKEN_TTL", default_value_t = 8 * 3600)]
    token_ttl: u64,
    /// How long a retired signing key still verifies, in seconds (at least the lifetime).
    #[arg(long, env = "PAAS_KEY_OVERLAP", default_value_t = 8 * 3600)]
    key_overlap: u64,
}

impl TokenArgs {
    fn config(&self) -> TokenConfig {
        TokenConfig {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            ttl: Duration::from_secs(self.token_ttl.max(60)),
            leeway: Duration::from_secs(30),
            key_overlap: Duration::from_secs(self.key_overlap),
        }
    }
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Use this database instead of starting one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the platform keeps its own PostgreSQL cluster.
    #[arg(long, env = "PAAS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    http: HttpArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Username of the platform administrator created on first start.
    #[arg(long, env = "PAAS_BOOTSTRAP_ADMIN_USERNAME", default_value = "admin")]
    bootstrap_admin_username: String,
    /// Password of that administrator (read from the environment; created only when the
    /// platform has no enabled platform administrator).
    #[arg(long, env = "PAAS_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    bootstrap_admin_password: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
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

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let pool = open_database(&args.database_url, 2).await?;
            tracing::info!("migrations applied");
            pool.close().await;
            Ok(())
        }
        Command::RotateKeys(args) => {
            let pool = open_database(&args.db.database_url, 2).await?;
            let platform = Platform::start(pool, args.tokens.config()).await?;
            let kid = platform.rotate_signing_key_as_operator().await?;
            tracing::info!(kid, "signing key rotated");
            Ok(())
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            let doc = console::api::openapi::ApiDoc::openapi().to_pretty_json()?;
            write_stdout(&doc);
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)]
fn write_stdout(text: &str) {
    println!("{text}");
}

/// Connects and migrates.
async fn open_database(url: &str, max_connections: u32) -> anyhow::Result<store::PgPool> {
    Ok(store::open(url, max_connections).await?)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let (url, local) = match args.database_url {
        Some(url) => (url, None),
        None => {
            let dir = args.data_dir.unwrap_or_else(default_data_dir);
            let pg = LocalPostgres::start(&dir).await?;
            let url = pg.database_url("paas").await?;
            tracing::info!(data_dir = %dir.display(), "the platform's own PostgreSQL is running");
            (url, Some(pg))
        }
    };
    let result = async {
        let pool = open_database(&url, args.http.db_max_connections).await?;
        let platform = Platform::start(pool, args.http.tokens.config()).await?;
        let accounts = platform.bootstrap_demo().await?;
        run_http(platform, &args.http, |addr| announce(addr, &accounts)).await
    }
    .await;
    if let Some(pg) = local
        && let Err(e) = pg.stop().await
    {
        tracing::warn!(error = %e, "could not stop the platform's PostgreSQL");
    }
    result
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let pool = open_database(&args.database_url, args.http.db_max_connections).await?;
    let platform = Platform::start(pool, args.http.tokens.config()).await?;
    if let Some(password) = args.bootstrap_admin_password.as_deref() {
        let password = Password::parse_new(password)
            .map_err(|e| anyhow::anyhow!("PAAS_BOOTSTRAP_ADMIN_PASSWORD: {}", e.message))?;
        if platform
            .bootstrap_admin(&args.bootstrap_admin_username, &password)
            .await?
        {
            tracing::info!(username = %args.bootstrap_admin_username, "created the first platform administrator");
        }
    }
    run_http(
        platform,
        &args.http,
        |addr| tracing::info!(%addr, "serving"),
    )
    .await
}

async fn run_http(
    platform: Platform,
    http: &HttpArgs,
    on_listen: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let config = WebConfig {
        secure_cookies: http.secure_cookies,
        trust_proxy: http.trust_proxy,
        login_per_user_per_minute: http.login_rate_per_user,
        login_per_address_per_minute: http.login_rate_per_address,
    };
    let state = AppState::new(platform, config);
    let mut server = actix_web::HttpServer::new(move || console::app(state.clone()))
        .shutdown_timeout(10)
        .bind(http.listen)
        .with_context(|| format!("could not listen on {} (is the port taken?)", http.listen))?;
    if let Some(workers) = http.workers {
        server = server.workers(workers.max(1));
    }
    let addr = server.addrs().first().copied().unwrap_or(http.listen);
    let running = server.run();
    on_listen(addr);
    running.await?;
    Ok(())
}

fn default_data_dir() -> PathBuf {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/paas");
    }
    if let Ok(xdg) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("paas");
    }
    std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/paas"))
        .unwrap_or_else(|_| PathBuf::from(".paas-data"))
}

fn announce(addr: SocketAddr, accounts: &[CreatedAccount]) {
    let mut text = format!("\nPaaS console: http://{addr}/\n");
    if accounts.is_empty() {
        text.push_str(
            "(demo accounts were created on first start; their passwords were printed then)\n",
        );
    } else {
        text.push_str("\nDemo accounts (shown once; store them now):\n");
        text.push_str(&format!(
            "  {:<8} {:<16} {:<14} {}\n",
            "USER", "ROLE", "TENANTS", "PASSWORD"
        ));
        for a in accounts {
            let tenants = if a.tenants.is_empty() {
                "-".to_owned()
            } else {
                a.tenants.join(",")
            };
            text.push_str(&format!(
                "  {:<8} {:<16} {:<14} {}\n",
                a.username,
                a.role,
                tenants,
                a.password.expose()
            ));
        }
    }
    write_stdout(&text);
}
