//! `paas serve`, the production mode, and what it shares with `paas up`: the console
//! and API, and the reconciler of every runtime this control plane drives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use console::{AppState, WebConfig};
use platform_core::Platform;
use platform_core::auth::TokenConfig;
use platform_core::names::Password;
use platform_core::reconciler::Reconciler;
use platform_core::runtime::Runtimes;
use platform_core::sealing::MasterKey;
use platform_core::store;
use runtime_kube::{ClusterSource, KubeRuntime};
use runtime_local::LocalRuntime;

#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address to listen on.
    #[arg(long, env = "PAAS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
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
    /// Serve `/metrics` on this address only (e.g. a private interface for the
    /// Prometheus that scrapes it) instead of on the main listener.
    #[arg(long, env = "PAAS_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` to read `/metrics`.
    #[arg(long, env = "PAAS_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Maximum database connections.
    #[arg(long, env = "PAAS_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
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
    /// How long a stateful instance keeps running after its node's last heartbeat,
    /// in milliseconds (its lease); it is never started elsewhere before that.
    #[arg(long, env = "PAAS_LEASE_TTL_MS", default_value_t = 30_000)]
    lease_ttl_ms: u64,
    /// How long a node may be silent before its stateless instances are replaced on
    /// other nodes, in milliseconds.
    #[arg(long, env = "PAAS_NODE_GRACE_MS", default_value_t = 15_000)]
    node_grace_ms: u64,
    /// How often every workload is reconciled in full, in milliseconds. A change to
    /// one application, an instance's readiness and a node's condition are acted on at
    /// once whatever this is; the full pass catches what no notification says (a lease
    /// running out, a lost notification).
    #[arg(long, env = "PAAS_RECONCILE_PERIOD_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    reconcile_period_ms: u64,
    /// A Prometheus server (base URL) that autoscaling rules of type `promql` and
    /// canary analyses with `promql` queries read.
    #[arg(long, env = "PAAS_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// The routers' traffic counters (`http://host:port` of each router's
    /// `--metrics-listen`), where autoscaling reads requests per second and latency.
    #[arg(
        long = "router-metrics-url",
        env = "PAAS_ROUTER_METRICS_URLS",
        value_delimiter = ','
    )]
    pub router_metrics: Vec<String>,
    /// The token the routers' counters require.
    #[arg(long, env = "PAAS_ROUTER_METRICS_TOKEN", hide_env_values = true)]
    pub router_metrics_token: Option<String>,
    /// The router ports given to applications as stable TCP addresses, `first-last`.
    #[arg(long, env = "PAAS_ROUTER_TCP_PORTS", default_value = "30000-32767", value_parser = parse_port_range)]
    router_tcp_ports: (u16, u16),
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub master: MasterKeyArgs,
}

/// Where the master key comes from: it seals application secrets and token-signing
/// keys at rest, and the database never holds it.
#[derive(Debug, Clone, Args)]
pub struct MasterKeyArgs {
    /// The master key: 32 random bytes, base64 (`openssl rand -base64 32`).
    #[arg(long, env = "PAAS_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// A file holding the master key (readable by the platform's user only).
    #[arg(long, env = "PAAS_MASTER_KEY_FILE")]
    master_key_file: Option<std::path::PathBuf>,
}

impl MasterKeyArgs {
    /// The configured key; with none configured, the one kept in `fallback_file`
    /// (made there on first use) when given, else an error that says what to set.
    pub fn load(&self, fallback_file: Option<&std::path::Path>) -> anyhow::Result<MasterKey> {
        if let Some(text) = &self.master_key {
            return MasterKey::from_base64(text).context("PAAS_MASTER_KEY");
        }
        let file = match (&self.master_key_file, fallback_file) {
            (Some(file), _) => file.clone(),
            (None, Some(fallback)) => {
                if !fallback.exists() {
                    let (_, text) = MasterKey::generate()?;
                    write_private(fallback, &text)?;
                    tracing::info!(file = %fallback.display(), "made the platform's master key");
                }
                fallback.to_path_buf()
            }
            (None, None) => anyhow::bail!(
                "a master key is required: set PAAS_MASTER_KEY (32 random bytes in base64, e.g. `openssl rand -base64 32`) or PAAS_MASTER_KEY_FILE"
            ),
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the master key from {}", file.display()))?;
        MasterKey::from_base64(&text)
            .with_context(|| format!("the master key in {}", file.display()))
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
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
    pub fn config(&self) -> TokenConfig {
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
pub struct ServeArgs {
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

/// Connects and migrates.
pub async fn open_database(url: &str, max_connections: u32) -> anyhow::Result<store::PgPool> {
    Ok(store::open(url, max_connections).await?)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let master = args.http.master.load(None)?;
    let pool = open_database(&args.database_url, args.http.db_max_connections).await?;
    let platform = Platform::start(pool.clone(), args.http.tokens.config(), master).await?;
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
    // The router's host, from its public URL.
    let router_host = args
        .http
        .router_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let local = args
        .agent_token
        .as_ref()
        .map(|token| local_runtime(&pool, token, &args.http, &platform, &router_host));
    run_http(
        platform,
        &args.http,
        None,
        pool,
        local,
        |addr| tracing::info!(%addr, "serving"),
    )
    .await
}

/// A port range `first-last`.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("'{text}' is not first-last, e.g. 30000-32767"))?;
    let first: u16 = first
        .trim()
        .parse()
        .map_err(|_| format!("'{first}' is not a port"))?;
    let last: u16 = last
        .trim()
        .parse()
        .map_err(|_| format!("'{last}' is not a port"))?;
    if first == 0 || first > last {
        return Err(format!("'{text}' is not a range of ports"));
    }
    Ok((first, last))
}

/// The local runtime driver of this control plane. `router_host` is where its router
/// serves (its stable TCP addresses are on that host).
pub fn local_runtime(
    pool: &store::PgPool,
    token: &str,
    http: &HttpArgs,
    platform: &Platform,
    router_host: &str,
) -> Arc<LocalRuntime> {
    Arc::new(
        LocalRuntime::new(
            pool.clone(),
            token.to_owned(),
            platform.master_key().clone(),
        )
        .with_lease_ttl(Duration::from_millis(http.lease_ttl_ms.max(1000)))
        .with_grace(Duration::from_millis(http.node_grace_ms.max(1000)))
        .with_router(router_host, http.router_tcp_ports)
        .with_router_metrics(
            http.router_metrics.clone(),
            http.router_metrics_token.clone().filter(|t| !t.is_empty()),
        ),
    )
}

/// Serves the console and API, and reconciles the environments of every runtime this
/// control plane drives: the local runtime (with its internal API) when there is one,
/// and each configured Kubernetes cluster. Returns when the server is asked to stop.
pub async fn run_http(
    platform: Platform,
    http: &HttpArgs,
    router_url: Option<String>,
    pool: store::PgPool,
    local: Option<Arc<LocalRuntime>>,
    on_listen: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let router_url = router_url.or_else(|| http.router_url.clone());
    let platform = platform.with_router_url(router_url.clone());
    let config = WebConfig {
        secure_cookies: http.secure_cookies,
        trust_proxy: http.trust_proxy,
        login_per_user_per_minute: http.login_rate_per_user,
        login_per_address_per_minute: http.login_rate_per_address,
        router_url,
        metrics: console::MetricsExposure {
            on_main_listener: http.metrics_listen.is_none(),
            token: http.metrics_token.clone().filter(|t| !t.is_empty()),
        },
    };
    let platform = platform.with_metric_sources(platform_core::autoscaler::MetricSources {
        prometheus: http
            .prometheus_url
            .clone()
            .filter(|u| !u.is_empty())
            .map(platform_core::autoscaler::Prometheus::new),
    });
    let (stop_reconciler, stopped) = tokio::sync::watch::channel(false);
    let stopped_nodes = stopped.clone();
    // Service instances' operations go to their brokers whatever runtimes there are.
    tokio::spawn(platform.operations_worker().run(stopped.clone()));
    // Bundles converge their environments through the same calls.
    {
        let platform = platform.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { platform.run_bundles_worker(stopped).await });
    }
    // Sessions and environments are served from memory while every change to them is
    // heard.
    {
        let platform = platform.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { platform.follow_access_changes(stopped).await });
    }
    let mut platform = platform;
    let mut runtimes = Runtimes::default();
    if let Some(runtime) = &local {
        runtimes = runtimes.with("local", runtime.clone());
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
        let autoscaler = platform_core::autoscaler::Autoscaler::new(
            pool.clone(),
            runtimes.clone(),
            platform.metric_sources().clone(),
        );
        tokio::spawn(autoscaler.run(stopped.clone()));
        let reconciler = Reconciler::new(pool, runtimes.clone(), platform.master_key().clone())
            .with_prometheus(platform.metric_sources().prometheus.clone());
        let period = Duration::from_millis(http.reconcile_period_ms);
        tokio::spawn(reconciler.run(period, platform.changes(), stopped));
        platform = platform.with_runtimes(runtimes);
    }
    let mut state = AppState::new(platform, config);
    if let Some(runtime) = local {
        tokio::spawn(runtime.clone().listen(stopped_nodes.clone()));
        tokio::spawn(runtime.clone().watch_nodes(stopped_nodes));
        let token = runtime.agent_token().to_owned();
        state = state.with_local_runtime(runtime, token);
    }
    let metrics_state = state.clone();
    let mut server = actix_web::HttpServer::new(move || console::app(state.clone()))
        .shutdown_timeout(10)
        .bind(http.listen)
        .with_context(|| format!("could not listen on {} (is the port taken?)", http.listen))?;
    if let Some(workers) = http.workers {
        server = server.workers(workers.max(1));
    }
    let addr = server.addrs().first().copied().unwrap_or(http.listen);
    let metrics_server = match http.metrics_listen {
        Some(listen) => {
            let state = metrics_state;
            let server = actix_web::HttpServer::new(move || console::metrics_app(state.clone()))
                .workers(1)
                .shutdown_timeout(1)
                .bind(listen)
                .with_context(|| format!("could not listen on {listen} for /metrics"))?
                .run();
            let handle = server.handle();
            tokio::spawn(server);
            Some(handle)
        }
        None => None,
    };
    let running = server.run();
    on_listen(addr);
    let result = running.await;
    if let Some(handle) = metrics_server {
        handle.stop(true).await;
    }
    let _ = stop_reconciler.send(true);
    result?;
    Ok(())
}
