//! `paas up`: the whole platform on one machine for a newcomer: its own PostgreSQL when
//! no `DATABASE_URL` is given, demo data on first start, the console, and the local
//! runtime's fleet (node agents and the router) as supervised separate processes.
//!
//! Stopping `paas up` (SIGTERM, Ctrl-C) stops the control plane only: agents, the
//! router and every instance keep serving, and the next `paas up` adopts them.
//! `paas down` (or `--stop-all-on-exit`) stops everything.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use platform_core::Platform;
use platform_core::bootstrap::CreatedAccount;
use platform_core::names::Password;
use platform_core::platform::services::NewBroker;
use platform_core::sealing::SecretValue;
use runtime_local::LocalRuntime;

use crate::serve::{HttpArgs, local_runtime, open_database, run_http};
use local_host::fleet::{Fleet, Member};
use local_host::postgres::LocalPostgres;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Use this database instead of starting one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where the platform keeps its PostgreSQL cluster, agent state and logs.
    #[arg(long, env = "PAAS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How many local node agents to start; they share the machine's CPU and memory.
    #[arg(long, env = "PAAS_AGENTS", default_value_t = 1)]
    agents: u32,
    /// Zones to spread the agents over (`a,b,c` labels them zone=a, zone=b, zone=c).
    #[arg(long, env = "PAAS_ZONES", value_delimiter = ',')]
    zones: Vec<String>,
    /// Where the router listens.
    #[arg(long, env = "PAAS_ROUTER_LISTEN", default_value = "127.0.0.1:8000")]
    router_listen: SocketAddr,
    /// Where the router serves its traffic counters (for the autoscaler and
    /// Prometheus, with the token in `<data-dir>/router-metrics-token`); by default a
    /// free loopback port, kept in `<data-dir>/router-metrics-addr` across restarts.
    #[arg(long, env = "PAAS_ROUTER_METRICS_LISTEN")]
    router_metrics_listen: Option<SocketAddr>,
    /// Stop everything (instances, agents, router, PostgreSQL) when `paas up` stops,
    /// as `paas down` does.
    #[arg(long, env = "PAAS_STOP_ALL_ON_EXIT", default_value_t = false)]
    stop_all_on_exit: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// The data directory when none is given: `/var/lib/paas` for root, the user's data
/// directory otherwise.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/paas");
    }
    if let Ok(xdg) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("paas");
    }
    std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/paas"))
        .unwrap_or_else(|_| PathBuf::from(".paas-data"))
}

/// The data directory: the platform's user's, traversable (its PostgreSQL's user must
/// reach the cluster in it) but not listable by others.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    // An earlier release gave the whole directory to the postgres user.
    let me = nix::unistd::geteuid().as_raw();
    std::os::unix::fs::chown(&dir, Some(me), Some(nix::unistd::getegid().as_raw()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    Ok(dir)
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let lock_path = data_dir.join("control-plane.lock");
    let _lock = match local_node::lock::acquire(&lock_path)? {
        Ok(lock) => lock,
        Err(holder) => bail!(
            "a control plane already runs for {} (pid {}); stop it first, or use `paas down`",
            data_dir.display(),
            holder.map_or_else(|| "?".to_owned(), |p| p.to_string())
        ),
    };
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
        let master = args.http.master.load(Some(&data_dir.join("master.key")))?;
        let pool = open_database(&url, args.http.db_max_connections).await?;
        let platform = Platform::start(pool.clone(), args.http.tokens.config(), master).await?;
        let accounts = platform.bootstrap_demo().await?;
        let brokers = Brokers::prepare(&data_dir)?;
        platform
            .bootstrap_services(BROKER_ACCOUNT, &brokers.platform_password)
            .await?;
        let registrar = platform.clone();
        let token = agent_token(&data_dir)?;
        let metrics = router_metrics(&data_dir, args.router_metrics_listen)?;
        let mut http = args.http.clone();
        http.router_metrics = vec![format!("http://{}", metrics.0)];
        http.router_metrics_token = Some(metrics.1.clone());
        let runtime = local_runtime(
            &pool,
            &token,
            &http,
            &platform,
            &args.router_listen.ip().to_string(),
        );
        let mut fleet = None;
        let served = run_http(
            platform,
            &http,
            Some(format!("http://{}", args.router_listen)),
            pool,
            Some(runtime.clone()),
            |addr| {
                let mut members = members(
                    &data_dir,
                    &format!("http://{addr}"),
                    &token,
                    &metrics,
                    &args,
                );
                let nodes: Vec<String> = members.iter().filter_map(|m| m.node.clone()).collect();
                let started = brokers.members(&data_dir, &format!("http://{addr}"));
                let registrations: Vec<NewBroker> =
                    started.iter().map(|(_, r)| r.clone()).collect();
                members.extend(started.into_iter().map(|(m, _)| m));
                fleet = Some(Fleet::supervise(members, record_deaths(runtime.clone())));
                // The console is announced once its agents report and its brokers are
                // in the catalog, so that what a newcomer does first finds nodes to
                // place on and a populated marketplace.
                let (runtime, router, accounts) =
                    (runtime.clone(), args.router_listen, accounts.clone());
                tokio::spawn(async move {
                    agents_ready(&runtime, &nodes).await;
                    register_brokers(&registrar, registrations).await;
                    announce(addr, router, &accounts);
                });
            },
        )
        .await;
        if let Some(fleet) = fleet {
            fleet.detach().await;
        }
        served
    }
    .await;
    if args.stop_all_on_exit {
        local_host::stop::everything(&data_dir).await;
    } else {
        tracing::info!(data_dir = %data_dir.display(), "the control plane stopped; applications keep running (stop everything with `paas down`)");
        if let Some(pg) = local
            && let Err(e) = pg.stop().await
        {
            tracing::warn!(error = %e, "could not stop the platform's PostgreSQL");
        }
    }
    result
}

/// The account the brokers sign in to the platform with (a tenant admin of the
/// service tenant only).
const BROKER_ACCOUNT: &str = "service-broker";

/// The middleware brokers `paas up` runs: (name in the catalog, program found beside
/// the `paas` executable).
const BROKERS: [(&str, &str); 4] = [
    ("cache", "paas-cache-broker"),
    ("database", "paas-database-broker"),
    ("queue", "paas-queue-broker"),
    ("gateway", "paas-gateway-broker"),
];

/// The brokers' credentials, generated once into the data directory (mode 0600).
struct Brokers {
    /// What the platform signs in to its brokers with (basic authentication).
    osb_password: String,
    /// What the brokers sign in to the platform with.
    platform_password: Password,
}

impl Brokers {
    fn prepare(data_dir: &Path) -> anyhow::Result<Self> {
        let osb_password = secret_file(&data_dir.join("broker-password"))?;
        let platform_text = match std::fs::read_to_string(data_dir.join("broker-platform-password"))
        {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let p = Password::generate();
                crate::serve::write_private(
                    &data_dir.join("broker-platform-password"),
                    p.expose(),
                )?;
                p.expose().to_owned()
            }
        };
        let platform_password = Password::from_login(&platform_text)
            .context("the broker account's password file holds no usable password")?;
        Ok(Self {
            osb_password,
            platform_password,
        })
    }

    /// A supervised member per broker whose program is installed beside `paas`, and
    /// what registering it takes.
    fn members(&self, data_dir: &Path, control_plane: &str) -> Vec<(Member, NewBroker)> {
        let Ok(exe) = local_node::host::own_executable() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, program) in BROKERS {
            let program = exe.with_file_name(program);
            if !program.exists() {
                tracing::warn!(broker = name, program = %program.display(), "the broker is not installed; its service is missing from the catalog");
                continue;
            }
            let dir = data_dir.join("brokers").join(name);
            let listen = match persisted_port(&dir.join("listen")) {
                Ok(addr) => addr,
                Err(e) => {
                    tracing::warn!(broker = name, error = %e, "no port for the broker");
                    continue;
                }
            };
            let args: Vec<OsString> = vec![
                "--listen".into(),
                listen.to_string().into(),
                "--state-dir".into(),
                dir.join("state").into(),
                "--lock-file".into(),
                dir.join("broker.lock").into(),
                "--platform-url".into(),
                control_plane.into(),
            ];
            // Secrets in the environment, not the arguments, which every process can read.
            let env = vec![
                ("PAAS_BROKER_USERNAME".to_owned(), "platform".to_owned()),
                ("PAAS_BROKER_PASSWORD".to_owned(), self.osb_password.clone()),
                (
                    "PAAS_PLATFORM_USERNAME".to_owned(),
                    BROKER_ACCOUNT.to_owned(),
                ),
                (
                    "PAAS_PLATFORM_PASSWORD".to_owned(),
                    self.platform_password.expose().to_owned(),
                ),
                (
                    "PAAS_PLATFORM_TENANT".to_owned(),
                    platform_core::bootstrap::SERVICE_TENANT.to_owned(),
                ),
                (
                    "PAAS_PLATFORM_ENVIRONMENT".to_owned(),
                    platform_core::bootstrap::SERVICE_ENVIRONMENT.to_owned(),
                ),
            ];
            out.push((
                Member {
                    name: format!("{name}-broker"),
                    node: None,
                    lock: dir.join("broker.lock"),
                    program,
                    args,
                    env,
                    replace_arg: None,
                },
                NewBroker {
                    name: name.to_owned(),
                    url: format!("http://{listen}"),
                    username: "platform".to_owned(),
                    password: SecretValue::new(self.osb_password.clone()),
                },
            ));
        }
        out
    }
}

/// Puts the platform's brokers in the catalog, each as soon as it answers (at most a
/// minute each).
async fn register_brokers(platform: &Platform, brokers: Vec<NewBroker>) {
    for broker in brokers {
        let name = broker.name.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match platform.ensure_broker(broker.clone()).await {
                Ok(()) => {
                    tracing::info!(broker = name, "the broker is in the service catalog");
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(broker = name, error = %e, "the broker is not ready yet");
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                Err(e) => {
                    tracing::warn!(broker = name, error = %e, "the broker could not be registered");
                    break;
                }
            }
        }
    }
}

/// A secret generated once into `path` (mode 0600) and read from there afterwards.
fn secret_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_owned());
    }
    let secret = platform_core::auth::tokens::random_token();
    crate::serve::write_private(path, &secret)?;
    Ok(secret)
}

/// A loopback port chosen once and kept in `path`, so that a listener keeps its
/// address across restarts (a broker's is the catalog's URL).
fn persisted_port(path: &Path) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = std::fs::read_to_string(path)
        .ok()
        .and_then(|a| a.trim().parse().ok())
    {
        return Ok(addr);
    }
    let addr =
        steady_port().with_context(|| format!("finding a free port for {}", path.display()))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, addr.to_string())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(addr)
}

/// A free loopback port below the kernel's range of ephemeral ports and the router's
/// stable ports, for a listener whose address is kept (a broker's, the router's
/// metrics). A port from the ephemeral range (what binding port 0 gives) may, by
/// the time the broker binds it, be the local end of any outgoing connection, and then
/// stays taken for as long as that lasts; below both, only another listener can take it.
fn steady_port() -> std::io::Result<SocketAddr> {
    use rand::Rng as _;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let below = ephemeral.min(runtime_local::DEFAULT_ROUTER_PORTS.0);
    let (from, to) = (10_000u16, below.max(10_100));
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let port = rng.gen_range(from..to);
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr();
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
}

/// Waits (at most 30 s) until every node named has registered and reports ready.
async fn agents_ready(runtime: &LocalRuntime, nodes: &[String]) {
    use platform_core::runtime::Runtime as _;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = runtime.nodes().await.is_ok_and(|all| {
            nodes
                .iter()
                .all(|n| all.iter().any(|x| &x.name == n && x.healthy))
        });
        if ready {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                ?nodes,
                "not every node agent reported within 30 s; announcing the console anyway"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Records each agent death as an event of its node.
fn record_deaths(runtime: Arc<LocalRuntime>) -> local_host::fleet::OnDeath {
    Arc::new(move |member: &Member, how: &str| {
        let Some(node) = member.node.clone() else {
            return;
        };
        let (runtime, how) = (runtime.clone(), how.to_owned());
        tokio::spawn(async move {
            let message = format!("the node's agent died ({how}); restarting it");
            if let Err(e) = runtime
                .record_node_event(&node, "AgentDied", &message)
                .await
            {
                tracing::warn!(node, error = %e, "could not record the agent's death");
            }
        });
    })
}

/// The agents and the router of this platform. Agents on one machine share its
/// capacity, each offering its share.
fn members(
    data_dir: &Path,
    control_plane: &str,
    token: &str,
    metrics: &(SocketAddr, String),
    args: &UpArgs,
) -> Vec<Member> {
    let Ok(exe) = local_node::host::own_executable() else {
        tracing::error!("cannot find the paas executable to start agents");
        return Vec::new();
    };
    let agents = args.agents.max(1);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let cpu_share = u32::try_from(cores * 1000).unwrap_or(1000) / agents;
    let memory_share = local_node::host::machine_memory_mib() / agents;
    let env = vec![("PAAS_AGENT_TOKEN".to_owned(), token.to_owned())];
    let mut members: Vec<Member> = (0..agents)
        .map(|i| {
            let name = format!("node-{}", i + 1);
            let labels = if args.zones.is_empty() {
                String::new()
            } else {
                format!("zone={}", args.zones[i as usize % args.zones.len()])
            };
            let state_dir = data_dir.join("agents").join(&name);
            let mut argv: Vec<OsString> = [
                "agent",
                "--name",
                &name,
                "--labels",
                &labels,
                "--control-plane",
                control_plane,
                "--cpu-millis",
                &cpu_share.to_string(),
                "--memory-mib",
                &memory_share.to_string(),
            ]
            .iter()
            .map(OsString::from)
            .collect();
            argv.extend(["--state-dir".into(), state_dir.clone().into()]);
            argv.extend(["--hide".into(), data_dir.into()]);
            Member {
                name: name.clone(),
                node: Some(name),
                lock: state_dir.join("agent.lock"),
                program: exe.clone(),
                args: argv,
                env: env.clone(),
                replace_arg: None,
            }
        })
        .collect();
    let mut argv: Vec<OsString> = [
        "router",
        "--listen",
        &args.router_listen.to_string(),
        "--control-plane",
        control_plane,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    argv.extend(["--lock-file".into(), data_dir.join("router.lock").into()]);
    argv.extend(["--metrics-listen".into(), metrics.0.to_string().into()]);
    // The token in the environment, not the arguments, which every process can read.
    let mut router_env = env.clone();
    router_env.push(("PAAS_ROUTER_METRICS_TOKEN".to_owned(), metrics.1.clone()));
    argv.extend([
        "--state-file".into(),
        data_dir.join("router-routes.json").into(),
    ]);
    members.push(Member {
        name: "router".to_owned(),
        node: None,
        lock: data_dir.join("router.lock"),
        program: exe,
        args: argv,
        env: router_env,
        replace_arg: Some("--replace".into()),
    });
    members
}

/// The agent token of a `paas up` platform, made once and kept in the data directory
/// so that agents which outlive a control-plane restart are still recognized.
fn agent_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("agent-token");
    if let Ok(token) = std::fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let token = platform_core::auth::tokens::random_token();
    crate::serve::write_private(&path, &token)?;
    Ok(token)
}

/// Where the router serves its traffic counters and the token to read them: kept in
/// the data directory, so that a later `paas up` reads the router it left running.
fn router_metrics(
    data_dir: &Path,
    listen: Option<SocketAddr>,
) -> anyhow::Result<(SocketAddr, String)> {
    let token_path = data_dir.join("router-metrics-token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let t = platform_core::auth::tokens::random_token();
            crate::serve::write_private(&token_path, &t)?;
            t
        }
    };
    let addr_path = data_dir.join("router-metrics-addr");
    let addr = match listen {
        Some(a) => {
            std::fs::write(&addr_path, a.to_string())
                .with_context(|| format!("writing {}", addr_path.display()))?;
            a
        }
        None => persisted_port(&addr_path)?,
    };
    Ok((addr, token))
}

fn announce(addr: SocketAddr, router: SocketAddr, accounts: &[CreatedAccount]) {
    let mut text = format!("\nPaaS console: http://{addr}/\n");
    text.push_str(&format!(
        "Applications: http://<app>.<env>.<tenant>.localhost:{}/ (or http://{router}/apps/<tenant>/<env>/<app>/)\n",
        router.port()
    ));
    text.push_str(
        "Stopping this process stops the control plane only; `paas down` stops everything.\n",
    );
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
    crate::write_stdout(&text);
}
