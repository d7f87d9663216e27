//! `paas`: the platform's one binary. `paas up` runs everything on one machine for a
//! newcomer; `paas serve` is the production mode; `paas migrate`, `paas rotate-keys`
//! and `paas openapi` are the operator's tools.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use console::local_postgres::LocalPostgres;
use console::{AppState, WebConfig};
use platform_core::Platform;
use platform_core::auth::TokenConfig;
use platform_core::bootstrap::CreatedAccount;
use platform_core::names::Password;
use platform_core::reconciler::Reconciler;
use platform_core::runtime::Runtimes;
use platform_core::runtime::local::LocalRuntime;
use platform_core::spec::Resources;
use platform_core::store;
use runtime_kube::{ClusterSource, KubeRuntime};
use runtime_local::agent::AgentConfig;
use runtime_local::router::RouterConfig;
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
    /// Run a node agent of the local runtime: it registers with the control plane and
    /// runs the instances placed on its node as supervised processes.
    Agent(AgentArgs),
    /// Run the router of the local runtime: a stable URL for every application.
    Router(RouterArgs),
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The node's name (unique on the platform).
    #[arg(long, env = "PAAS_NODE_NAME")]
    name: String,
    /// Node labels as `key=value,key=value`, e.g. `zone=a`.
    #[arg(long, env = "PAAS_NODE_LABELS", default_value = "")]
    labels: String,
    /// CPU the node offers, in millicores (default: 1000 per core).
    #[arg(long, env = "PAAS_NODE_CPU_MILLIS")]
    cpu_millis: Option<u32>,
    /// Memory the node offers, in MiB (default: the machine's).
    #[arg(long, env = "PAAS_NODE_MEMORY_MIB")]
    memory_mib: Option<u32>,
    #[arg(
        long,
        env = "PAAS_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    control_plane: String,
    /// The shared secret of agents and the control plane.
    #[arg(long, env = "PAAS_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Where the node keeps its instances' working directories and logs.
    #[arg(long, env = "PAAS_AGENT_STATE_DIR")]
    state_dir: PathBuf,
    /// The host the node's instances are reachable on.
    #[arg(long, env = "PAAS_NODE_ADDRESS", default_value = "127.0.0.1")]
    advertise: String,
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// How long an instance keeps serving after leaving the route table.
    #[arg(long, default_value_t = 2000)]
    drain_ms: u64,
    /// How long a stopping instance gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10000)]
    grace_ms: u64,
}

#[derive(Debug, Args)]
struct RouterArgs {
    #[arg(long, env = "PAAS_ROUTER_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "PAAS_CONTROL_PLANE",
        default_value = "http://127.0.0.1:8080"
    )]
    control_plane: String,
    #[arg(long, env = "PAAS_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    #[arg(long, default_value_t = 100)]
    refresh_ms: u64,
    /// A lock file that keeps a second router for the same platform from starting.
    #[arg(long)]
    lock_file: Option<PathBuf>,
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
    /// Where the router serves applications (shown as their URLs), e.g.
    /// `http://paas.example.com:8000`; `paas up` sets it to its router.
    #[arg(long, env = "PAAS_ROUTER_URL")]
    router_url: Option<String>,
    /// Kubernetes clusters to drive, as `name=in-cluster` or `name=/path/to/kubeconfig`
    /// (environments whose runtime is `name` run there).
    #[arg(
        long = "kube-cluster",
        env = "PAAS_KUBE_CLUSTERS",
        value_delimiter = ','
    )]
    kube_clusters: Vec<String>,
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
    /// Where the platform keeps its PostgreSQL cluster, agent state and logs.
    #[arg(long, env = "PAAS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How many local node agents to start.
    #[arg(long, env = "PAAS_AGENTS", default_value_t = 1)]
    agents: u32,
    /// Zones to spread the agents over (`a,b,c` labels them zone=a, zone=b, zone=c).
    #[arg(long, env = "PAAS_ZONES", value_delimiter = ',')]
    zones: Vec<String>,
    /// Where the router listens.
    #[arg(long, env = "PAAS_ROUTER_LISTEN", default_value = "127.0.0.1:8000")]
    router_listen: SocketAddr,
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
    /// Enables the local runtime: agents and the router authenticate with this secret.
    #[arg(long, env = "PAAS_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
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
    // TLS to Kubernetes apiservers uses ring; with more than one provider linked in,
    // rustls needs to be told.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        Command::Agent(args) => agent(args).await,
        Command::Router(args) => router(args).await,
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
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (url, local) = match args.database_url.clone() {
        Some(url) => (url, None),
        None => {
            let pg = LocalPostgres::start(&data_dir).await?;
            let url = pg.database_url("paas").await?;
            tracing::info!(data_dir = %data_dir.display(), "the platform's own PostgreSQL is running");
            (url, Some(pg))
        }
    };
    let result = async {
        let pool = open_database(&url, args.http.db_max_connections).await?;
        let platform = Platform::start(pool.clone(), args.http.tokens.config()).await?;
        let accounts = platform.bootstrap_demo().await?;
        let token = agent_token(&data_dir)?;
        let mut fleet = Fleet::default();
        let result = run_http(
            platform,
            &args.http,
            Some(format!("http://{}", args.router_listen)),
            pool,
            Some(token.clone()),
            |addr| {
                let control_plane = format!("http://{addr}");
                fleet.start(&data_dir, &control_plane, &token, &args);
                announce(addr, args.router_listen, &accounts);
            },
        )
        .await;
        fleet.stop(&data_dir).await;
        result
    }
    .await;
    if let Some(pg) = local
        && let Err(e) = pg.stop().await
    {
        tracing::warn!(error = %e, "could not stop the platform's PostgreSQL");
    }
    result
}

/// The agent token of a `paas up` platform, made once and kept in the data directory
/// so that agents which outlive a control-plane restart are still recognized.
fn agent_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("agent-token");
    if let Ok(token) = std::fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let token = platform_core::auth::tokens::random_token();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}

/// The agent and router processes `paas up` starts. They are separate processes so
/// that traffic and instances survive the control plane; a restarted `paas up` finds
/// them holding their locks and leaves them in charge.
#[derive(Debug, Default)]
struct Fleet {
    children: Vec<tokio::process::Child>,
}

impl Fleet {
    fn start(
        &mut self,
        data_dir: &std::path::Path,
        control_plane: &str,
        token: &str,
        args: &UpArgs,
    ) {
        let Ok(exe) = std::env::current_exe() else {
            tracing::error!("cannot find the paas executable to start agents");
            return;
        };
        for i in 0..args.agents.max(1) {
            let name = format!("node-{}", i + 1);
            let labels = if args.zones.is_empty() {
                String::new()
            } else {
                format!("zone={}", args.zones[i as usize % args.zones.len()])
            };
            let state_dir = data_dir.join("agents").join(&name);
            let mut command = tokio::process::Command::new(&exe);
            command
                .args([
                    "agent",
                    "--name",
                    &name,
                    "--labels",
                    &labels,
                    "--control-plane",
                    control_plane,
                ])
                .arg("--state-dir")
                .arg(&state_dir)
                .env("PAAS_AGENT_TOKEN", token);
            self.spawn(command, &name);
        }
        let mut command = tokio::process::Command::new(&exe);
        command
            .args([
                "router",
                "--listen",
                &args.router_listen.to_string(),
                "--control-plane",
                control_plane,
            ])
            .arg("--lock-file")
            .arg(data_dir.join("router.lock"))
            .env("PAAS_AGENT_TOKEN", token);
        self.spawn(command, "router");
    }

    fn spawn(&mut self, mut command: tokio::process::Command, what: &str) {
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false);
        match command.spawn() {
            Ok(child) => self.children.push(child),
            Err(e) => tracing::error!(what, error = %e, "could not start"),
        }
    }

    /// Stops the agents and the router gracefully: ours, and those a previous control
    /// plane started that we adopted (found through their lock files).
    async fn stop(mut self, data_dir: &std::path::Path) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let mut pids: Vec<u32> = self
            .children
            .iter()
            .filter_map(tokio::process::Child::id)
            .collect();
        let mut locks = vec![data_dir.join("router.lock")];
        if let Ok(entries) = std::fs::read_dir(data_dir.join("agents")) {
            locks.extend(entries.flatten().map(|e| e.path().join("agent.lock")));
        }
        pids.extend(locks.iter().filter_map(|l| runtime_local::lock::holder(l)));
        pids.sort_unstable();
        pids.dedup();
        for pid in &pids {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        // Wait for every one of them, adopted ones included (they are not our children,
        // so they are watched through /proc), so that no instance outlives `paas up`.
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while pids
            .iter()
            .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let pool = open_database(&args.database_url, args.http.db_max_connections).await?;
    let platform = Platform::start(pool.clone(), args.http.tokens.config()).await?;
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
        None,
        pool,
        args.agent_token.clone(),
        |addr| tracing::info!(%addr, "serving"),
    )
    .await
}

/// Serves the console and API, and reconciles the environments of every runtime this
/// control plane drives: the local runtime (with its internal API) when there is an
/// agent token, and each configured Kubernetes cluster.
async fn run_http(
    platform: Platform,
    http: &HttpArgs,
    router_url: Option<String>,
    pool: store::PgPool,
    agent_token: Option<String>,
    on_listen: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let config = WebConfig {
        secure_cookies: http.secure_cookies,
        trust_proxy: http.trust_proxy,
        login_per_user_per_minute: http.login_rate_per_user,
        login_per_address_per_minute: http.login_rate_per_address,
        router_url: router_url.or_else(|| http.router_url.clone()),
    };
    let (stop_reconciler, stopped) = tokio::sync::watch::channel(false);
    let mut platform = platform;
    let mut internal = None;
    let mut runtimes = Runtimes::default();
    if let Some(token) = agent_token {
        let runtime = Arc::new(LocalRuntime::new(pool.clone(), token.clone()));
        runtimes = runtimes.with("local", runtime.clone());
        internal = Some((runtime, token));
    }
    for cluster in &http.kube_clusters {
        let (name, source) = cluster.split_once('=').with_context(|| {
            format!("--kube-cluster '{cluster}' is not name=in-cluster or name=/path/to/kubeconfig")
        })?;
        let runtime = KubeRuntime::connect(&ClusterSource::parse(source))
            .await
            .with_context(|| format!("cluster '{name}'"))?;
        tracing::info!(cluster = name, "driving a Kubernetes cluster");
        runtimes = runtimes.with(name, Arc::new(runtime));
    }
    if !runtimes.is_empty() {
        let reconciler = Reconciler::new(pool, runtimes.clone());
        tokio::spawn(reconciler.run(Duration::from_secs(1), platform.changes(), stopped));
        platform = platform.with_runtimes(runtimes);
    }
    let mut state = AppState::new(platform, config);
    if let Some((runtime, token)) = internal {
        state = state.with_local_runtime(runtime, token);
    }
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
    let result = running.await;
    let _ = stop_reconciler.send(true);
    result?;
    Ok(())
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

fn parse_labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| anyhow::anyhow!("label '{pair}' is not key=value"))
        })
        .collect()
}

fn machine_memory_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| u32::try_from(kib / 1024).unwrap_or(u32::MAX))
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let lock_path = args.state_dir.join("agent.lock");
    let _lock = match runtime_local::lock::acquire(&lock_path)? {
        Ok(lock) => lock,
        Err(holder) => {
            tracing::info!(node = %args.name, holder = ?holder, "this node's agent already runs; leaving it in charge");
            return Ok(());
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let config = AgentConfig {
        name: args.name,
        labels: parse_labels(&args.labels)?,
        capacity: Resources {
            cpu_millis: args
                .cpu_millis
                .unwrap_or(u32::try_from(cores * 1000).unwrap_or(1000)),
            memory_mib: args.memory_mib.unwrap_or_else(machine_memory_mib),
        },
        address: args.advertise,
        control_plane: args.control_plane.trim_end_matches('/').to_owned(),
        token: args.token,
        state_dir: args.state_dir,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(100)),
        drain: Duration::from_millis(args.drain_ms),
        grace: Duration::from_millis(args.grace_ms),
        log_limit_bytes: 1024 * 1024,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = stop.send(true);
    });
    runtime_local::agent::run(config, stopped).await;
    Ok(())
}

async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let _lock = match &args.lock_file {
        Some(path) => match runtime_local::lock::acquire(path)? {
            Ok(lock) => Some(lock),
            Err(holder) => {
                tracing::info!(holder = ?holder, "the router already runs; leaving it in charge");
                return Ok(());
            }
        },
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("the router could not listen on {}", args.listen))?;
    tracing::info!(addr = %args.listen, "router listening");
    let config = RouterConfig {
        control_plane: args.control_plane.trim_end_matches('/').to_owned(),
        token: args.token,
        refresh: Duration::from_millis(args.refresh_ms.max(50)),
        domain: "localhost".to_owned(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = stop.send(true);
    });
    runtime_local::router::run(listener, config, stopped).await;
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

fn announce(addr: SocketAddr, router: SocketAddr, accounts: &[CreatedAccount]) {
    let mut text = format!("\nPaaS console: http://{addr}/\n");
    text.push_str(&format!(
        "Applications: http://<app>.<env>.<tenant>.localhost:{}/ (or http://{router}/apps/<tenant>/<env>/<app>/)\n",
        router.port()
    ));
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
