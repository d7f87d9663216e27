//! The node agent: registers its node, then heartbeats. Each heartbeat reports every
//! instance it supervises and brings back the instances the control plane wants on
//! this node; the agent starts what is missing and drains and stops what is no longer
//! wanted. When the control plane cannot be reached, everything keeps running as it is.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use platform_core::runtime::Phase;
use platform_core::runtime::local::{
    Assignment, Assignments, Desired, Heartbeat, InstanceReport, Registration,
};
use platform_core::spec::{CheckSpec, Resources, WorkloadKind};
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::agent_api::LogIndex;
use crate::logs::LogFile;
use crate::package::PackageSource;
use crate::probe::{Probe, ProbeTarget};
use crate::supervisor::{Backoff, InstanceConfig, RestartPolicy, Supervised};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// The host the instances' ports are reachable on.
    pub address: String,
    /// Base URL of the control plane, e.g. `http://127.0.0.1:8080`.
    pub control_plane: String,
    /// The shared secret agents present to the control plane.
    pub token: String,
    /// Working directories and logs of the instances.
    pub state_dir: PathBuf,
    pub heartbeat: Duration,
    /// How long an instance keeps serving after it leaves the route table, so that the
    /// router stops sending it requests before it is terminated.
    pub drain: Duration,
    pub grace: Duration,
    pub log_limit_bytes: u64,
}

#[derive(Debug)]
struct Running {
    assignment: Assignment,
    supervised: Supervised,
    port: Option<u16>,
}

/// Runs the agent until `shutdown` turns true; then stops every instance gracefully.
pub async fn run(config: AgentConfig, mut shutdown: watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let log_index = LogIndex::default();
    let cgroups = crate::limits::Cgroups::detect(&config.name).map(Arc::new);
    match &cgroups {
        Some(c) => {
            tracing::info!(node = %config.name, cgroups = ?c, "instance limits are enforced")
        }
        None => {
            tracing::info!(node = %config.name, "no writable cgroups: instance limits are measured, not enforced")
        }
    }
    let api_port = match tokio::net::TcpListener::bind((config.address.as_str(), 0)).await {
        Ok(listener) => {
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            tokio::spawn(crate::agent_api::serve(
                listener,
                config.token.clone(),
                log_index.clone(),
                shutdown.clone(),
            ));
            port
        }
        Err(e) => {
            tracing::warn!(error = %e, "the agent API could not listen; logs will not be served");
            0
        }
    };
    let mut running: HashMap<Uuid, Running> = HashMap::new();
    let mut stopping: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
    let mut registered = false;
    let mut unreachable_since: Option<std::time::Instant> = None;
    let mut interval = tokio::time::interval(config.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A status change of any instance (ready, crashed, ...) is reported at once
    // rather than at the next period.
    let changed = Arc::new(Notify::new());
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = changed.notified() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if !registered {
            registered = register(&http, &config, api_port).await;
            if !registered {
                continue;
            }
        }
        stopping.retain(|_, handle| !handle.is_finished());
        let beat = Heartbeat {
            instances: reports(&running, &stopping),
        };
        match send_heartbeat(&http, &config, &beat).await {
            Ok(assignments) => {
                if unreachable_since.take().is_some() {
                    tracing::info!(node = %config.name, "control plane reachable again");
                }
                reconcile(
                    &config,
                    cgroups.as_ref(),
                    assignments,
                    &mut running,
                    &mut stopping,
                    &changed,
                );
                if let Ok(mut index) = log_index.lock() {
                    index.retain(|id, _| running.contains_key(id) || stopping.contains_key(id));
                    for (id, r) in &running {
                        index
                            .entry(*id)
                            .or_insert_with(|| r.supervised.log().clone());
                    }
                }
            }
            Err(HeartbeatError::UnknownNode) => registered = false,
            Err(HeartbeatError::Unreachable(e)) => {
                // Said once per outage, not once per heartbeat.
                if unreachable_since.is_none() {
                    tracing::warn!(node = %config.name, error = %e, "control plane unreachable; instances keep running");
                    unreachable_since = Some(std::time::Instant::now());
                }
            }
        }
    }
    tracing::info!(node = %config.name, instances = running.len(), "agent stopping its instances");
    let stops: Vec<_> = running
        .into_values()
        .map(|r| tokio::spawn(r.supervised.stop()))
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
    for (_, handle) in stopping {
        let _ = handle.await;
    }
}

async fn register(http: &reqwest::Client, config: &AgentConfig, api_port: u16) -> bool {
    let registration = Registration {
        api_port,
        name: config.name.clone(),
        labels: config.labels.clone(),
        capacity: config.capacity,
        address: config.address.clone(),
    };
    let result = http
        .post(format!("{}/internal/v1/nodes", config.control_plane))
        .bearer_auth(&config.token)
        .json(&registration)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() => {
            tracing::info!(node = %config.name, "registered with the control plane");
            true
        }
        Ok(r) => {
            tracing::warn!(node = %config.name, status = %r.status(), "registration refused");
            false
        }
        Err(e) => {
            tracing::debug!(node = %config.name, error = %e, "control plane unreachable; will retry");
            false
        }
    }
}

enum HeartbeatError {
    UnknownNode,
    Unreachable(String),
}

async fn send_heartbeat(
    http: &reqwest::Client,
    config: &AgentConfig,
    beat: &Heartbeat,
) -> Result<Assignments, HeartbeatError> {
    let response = http
        .post(format!(
            "{}/internal/v1/nodes/{}/heartbeat",
            config.control_plane, config.name
        ))
        .bearer_auth(&config.token)
        .json(beat)
        .send()
        .await
        .map_err(|e| HeartbeatError::Unreachable(e.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(HeartbeatError::UnknownNode);
    }
    if !response.status().is_success() {
        return Err(HeartbeatError::Unreachable(format!(
            "heartbeat answered {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|e| HeartbeatError::Unreachable(e.to_string()))
}

fn reports(
    running: &HashMap<Uuid, Running>,
    stopping: &HashMap<Uuid, JoinHandle<()>>,
) -> Vec<InstanceReport> {
    let mut reports: Vec<InstanceReport> = running
        .iter()
        .map(|(id, r)| {
            let s = r.supervised.status();
            InstanceReport {
                id: *id,
                phase: s.phase,
                ready: s.ready,
                restarts: s.restarts,
                port: r.port,
                message: s.message,
                cpu_millis: s.cpu_millis,
                memory_mib: s.memory_mib,
            }
        })
        .collect();
    reports.extend(stopping.keys().map(|id| InstanceReport {
        id: *id,
        phase: Phase::Stopping,
        ready: false,
        restarts: 0,
        port: None,
        message: Some("draining".to_owned()),
        cpu_millis: None,
        memory_mib: None,
    }));
    reports
}

fn reconcile(
    config: &AgentConfig,
    cgroups: Option<&Arc<crate::limits::Cgroups>>,
    assignments: Assignments,
    running: &mut HashMap<Uuid, Running>,
    stopping: &mut HashMap<Uuid, JoinHandle<()>>,
    changed: &Arc<Notify>,
) {
    let wanted: HashMap<Uuid, Assignment> = assignments
        .instances
        .into_iter()
        .filter(|a| a.desired == Desired::Run)
        .map(|a| (a.id, a))
        .collect();
    let unwanted: Vec<Uuid> = running
        .keys()
        .filter(|id| !wanted.contains_key(id))
        .copied()
        .collect();
    for id in unwanted {
        if let Some(r) = running.remove(&id) {
            tracing::info!(instance = %r.assignment.name, "draining, then stopping");
            let drain = config.drain;
            stopping.insert(
                id,
                tokio::spawn(async move {
                    tokio::time::sleep(drain).await;
                    r.supervised.stop().await;
                }),
            );
        }
    }
    for (id, assignment) in wanted {
        if running.contains_key(&id) || stopping.contains_key(&id) {
            continue;
        }
        let (instance, port) = start(config, cgroups, &assignment);
        tracing::info!(instance = %assignment.name, port, "starting instance");
        let mut status = instance.watch();
        let changed = changed.clone();
        tokio::spawn(async move {
            // Ends when the supervisor ends.
            while status.changed().await.is_ok() {
                changed.notify_one();
            }
        });
        running.insert(
            id,
            Running {
                assignment,
                supervised: instance,
                port,
            },
        );
    }
}

fn start(
    config: &AgentConfig,
    cgroups: Option<&Arc<crate::limits::Cgroups>>,
    a: &Assignment,
) -> (Supervised, Option<u16>) {
    let spec = &a.spec;
    let mut env = spec.env.clone();
    let mut port = None;
    for p in &spec.ports {
        let number = free_port();
        env.insert(
            format!("PORT_{}", p.name.to_uppercase().replace('-', "_")),
            number.to_string(),
        );
        if port.is_none() {
            port = Some(number);
            env.insert("PORT".to_owned(), number.to_string());
        }
    }
    let args = spec.args.iter().map(|arg| expand(arg, &env)).collect();
    let app_dir = PathBuf::from(&a.key.tenant)
        .join(&a.key.environment)
        .join(&a.key.app);
    // A stateful instance keeps its directory per ordinal across restarts and revisions.
    let workdir_leaf = a
        .ordinal
        .map_or_else(|| a.name.clone(), |o| format!("ordinal-{o}"));
    let workdir = config
        .state_dir
        .join("work")
        .join(&app_dir)
        .join(workdir_leaf);
    let log = LogFile::new(
        &config.state_dir.join("logs").join(&app_dir),
        &a.name,
        config.log_limit_bytes,
    );
    let probe = |check: &CheckSpec| Probe {
        target: match &check.http_path {
            Some(path) => ProbeTarget::Http { path: path.clone() },
            None => ProbeTarget::Tcp,
        },
        initial_delay: Duration::from_millis(u64::from(check.initial_delay_ms)),
        period: Duration::from_millis(u64::from(check.period_ms)),
        timeout: Duration::from_millis(u64::from(check.timeout_ms)),
        failure_threshold: check.failure_threshold,
        success_threshold: check.success_threshold,
    };
    // An instance with a port and no readiness check is ready once the port accepts.
    let readiness = match (&spec.health.readiness, port) {
        (Some(check), _) => Some(probe(check)),
        (None, Some(_)) => Some(Probe {
            // A local connect is cheap: check often so the instance is ready the moment
            // it listens.
            period: Duration::from_millis(50),
            ..Probe::new(ProbeTarget::Tcp)
        }),
        (None, None) => None,
    };
    let restart = match spec.kind {
        WorkloadKind::Job | WorkloadKind::Cronjob => RestartPolicy::OnFailure { max_retries: 3 },
        _ => RestartPolicy::Always,
    };
    let instance = Supervised::start(InstanceConfig {
        name: a.name.clone(),
        command: spec.command.clone(),
        args,
        env,
        port,
        workdir,
        log,
        readiness,
        liveness: spec.health.liveness.as_ref().map(probe),
        restart,
        backoff: Backoff::default(),
        grace: config.grace,
        package: spec.package.as_ref().map(|digest| PackageSource {
            digest: digest.clone(),
            control_plane: config.control_plane.clone(),
            token: config.token.clone(),
            cache_dir: config.state_dir.join("packages"),
        }),
        ceilings: crate::limits::Ceilings {
            cpu_millis: spec.limits.cpu_millis,
            memory_mib: spec.limits.memory_mib,
        },
        cgroups: cgroups.cloned(),
    });
    (instance, port)
}

/// Expands `$NAME` and `${NAME}` in an argument from the instance's environment, so
/// that `--port $PORT` works without a shell. Unknown names are left as written.
pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match env.get(name).filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_expand_the_instances_variables() {
        let env: BTreeMap<String, String> = [
            ("PORT".to_owned(), "8001".to_owned()),
            ("NAME".to_owned(), "web".to_owned()),
        ]
        .into();
        let check = |arg: &str, expected: &str| assert_eq!(expand(arg, &env), expected, "{arg}");
        check("$PORT", "8001");
        check("--listen=127.0.0.1:${PORT}", "--listen=127.0.0.1:8001");
        check("$NAME-$PORT.log", "web-8001.log");
        check("$UNKNOWN and $", "$UNKNOWN and $");
        check("${PORT", "${PORT");
        check("cost: 5$", "cost: 5$");
    }
}
