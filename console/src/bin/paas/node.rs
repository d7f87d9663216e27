//! The local runtime's node-side commands: `paas agent`, `paas router` and `paas shim`.
//! They run on nodes and need no database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use local_node::agent::AgentConfig;
use local_node::router::RouterConfig;
use platform_core::spec::Resources;

#[derive(Debug, Args)]
pub struct AgentArgs {
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
    /// Paths instances must not see, e.g. the platform's data directory (repeatable).
    #[arg(long = "hide", env = "PAAS_AGENT_HIDE", value_delimiter = ',')]
    hide: Vec<PathBuf>,
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
pub struct RouterArgs {
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
    /// The most requests in flight to one instance that closes every connection (16
    /// times as many to one that keeps them open); more wait in the router.
    #[arg(long, env = "PAAS_ROUTER_MAX_PER_BACKEND", default_value_t = 4)]
    max_per_backend: usize,
    /// A lock file that keeps a second router for the same platform from starting.
    #[arg(long)]
    lock_file: Option<PathBuf>,
    /// Where the last route table is kept across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Take over from the router already running for this lock file: receive its
    /// listening sockets, then let it finish its connections and exit (a restart or an
    /// upgrade without refusing a connection).
    #[arg(long)]
    replace: bool,
    /// Where the per-application traffic counters are served (`/metrics` for
    /// Prometheus, `/traffic` for the autoscaler); none: not served.
    #[arg(long, env = "PAAS_ROUTER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The bearer token reading them requires (required with `--metrics-listen`).
    #[arg(long, env = "PAAS_ROUTER_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShimArgs {
    /// The instance's directory on the node (its socket, lock and record).
    #[arg(long)]
    dir: PathBuf,
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn termination() {
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

pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let lock_path = args.state_dir.join("agent.lock");
    let _lock = match local_node::lock::acquire(&lock_path)? {
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
            memory_mib: args
                .memory_mib
                .unwrap_or_else(local_node::host::machine_memory_mib),
        },
        address: args.advertise,
        control_plane: args.control_plane.trim_end_matches('/').to_owned(),
        token: args.token,
        state_dir: args.state_dir,
        heartbeat: Duration::from_millis(args.heartbeat_ms.max(100)),
        drain: Duration::from_millis(args.drain_ms),
        grace: Duration::from_millis(args.grace_ms),
        log_limit_bytes: 1024 * 1024,
        shim_program: local_node::host::own_executable()
            .context("cannot find the paas executable")?,
        shim_args: vec!["shim".to_owned()],
        hide: args.hide,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = stop.send(true);
    });
    local_node::agent::run(config, stopped).await;
    Ok(())
}

pub async fn router(args: RouterArgs) -> anyhow::Result<()> {
    // The control socket a successor asks for this router's sockets on.
    let control = args.lock_file.as_ref().map(|l| l.with_extension("sock"));
    let mut adopted = Vec::new();
    let mut lock = None;
    let listener = match (&args.lock_file, &control) {
        (Some(path), Some(control)) => match local_node::lock::acquire(path)? {
            Ok(held) => {
                lock = Some(held);
                bind(args.listen).await?
            }
            Err(holder) if args.replace => {
                let control = control.clone();
                let (sockets, confirm) =
                    tokio::task::spawn_blocking(move || local_node::handover::take(&control))
                        .await?
                        .context("taking over the running router's sockets")?;
                let mut http = None;
                for (role, fd) in sockets {
                    let listener = || -> std::io::Result<std::net::TcpListener> {
                        let l = std::net::TcpListener::from(fd.try_clone()?);
                        l.set_nonblocking(true)?;
                        Ok(l)
                    };
                    match role {
                        local_node::handover::Role::Http => http = Some(listener()?),
                        local_node::handover::Role::Tcp { port } => {
                            adopted.push((port, listener()?));
                        }
                        // Held from now on by both, then by this router alone.
                        local_node::handover::Role::Lock => {
                            lock = Some(local_node::lock::LockGuard::take_over(fd)?);
                        }
                    }
                }
                let http = http.context("the running router handed over no HTTP listener")?;
                let listener = tokio::net::TcpListener::from_std(http)?;
                confirm.confirm()?;
                tracing::info!(previous = ?holder, "took over the running router's sockets; it finishes its connections and exits");
                listener
            }
            Err(holder) => {
                tracing::info!(holder = ?holder, "the router already runs; leaving it in charge");
                return Ok(());
            }
        },
        _ => bind(args.listen).await?,
    };
    tracing::info!(addr = %args.listen, "router listening");
    let config = RouterConfig {
        control_plane: args.control_plane.trim_end_matches('/').to_owned(),
        token: args.token,
        refresh: Duration::from_millis(args.refresh_ms.max(50)),
        max_per_backend: args.max_per_backend,
        domain: "localhost".to_owned(),
        state_file: args.state_file,
        control_socket: control,
        lock: lock.map(std::sync::Arc::new),
        metrics_listen: args.metrics_listen,
        metrics_token: args.metrics_token.filter(|t| !t.is_empty()),
    };
    if config.metrics_listen.is_some() && config.metrics_token.is_none() {
        anyhow::bail!(
            "--metrics-listen needs --metrics-token (PAAS_ROUTER_METRICS_TOKEN): tenants' instances share the node's loopback"
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        let _ = stop.send(true);
    });
    local_node::router::run(listener, adopted, config, stopped).await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("the router could not listen on {addr}"))
}

pub async fn shim(args: ShimArgs) -> anyhow::Result<()> {
    local_node::shim::serve(&args.dir)
        .await
        .with_context(|| format!("shim in {}", args.dir.display()))
}
