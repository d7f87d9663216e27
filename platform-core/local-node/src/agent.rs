//! The node agent: registers its node, then heartbeats. Each heartbeat reports every
//! instance of the node and brings back the instances the control plane wants on it;
//! the agent starts what is missing and drains and stops what is no longer wanted.
//!
//! Every instance runs under its own shim ([`crate::shim`]), not under the agent, so
//! the agent can die, be restarted or be replaced by a new binary while its instances
//! keep serving: a starting agent adopts the shims it finds in its state directory,
//! and the control plane's next answer says which of them are still wanted (the others
//! are stopped, so no orphan outlives the restart).
//!
//! When the control plane cannot be reached, everything keeps running as it is, except
//! fenced instances (stateful ordinals), which stop once their lease lapses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{
    Assignment, Assignments, Desired, Heartbeat, InstanceReport, Purge, Registered, Registration,
};
use platform_spec::spec::{CheckSpec, Resources, WorkloadKind};
use platform_spec::workload::Phase;
use platform_spec::workload::WorkloadKey;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::agent_api::LogIndex;
use crate::logs::LogFile;
use crate::package::PackageSource;
use crate::probe::{Probe, ProbeTarget};
use crate::sandbox::Isolation;
use crate::shim::{Shim, ShimSpec};
use crate::supervisor::{Backoff, InstanceConfig, RestartPolicy};

/// How long a fenced instance's lease lasts when the control plane does not say.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

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
    /// The command that runs a shim (`paas shim`): program, then leading arguments.
    pub shim_program: PathBuf,
    pub shim_args: Vec<String>,
    /// Paths instances must not see (the platform's data directory).
    pub hide: Vec<PathBuf>,
}

/// What the agent keeps on disk of an instance, beside its shim, to adopt it after a
/// restart. Never a secret: those live only in the shim's memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct InstanceRecord {
    id: Uuid,
    name: String,
    key: WorkloadKey,
    port: Option<u16>,
    /// Every port by name.
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    /// The stateful ordinal it holds.
    #[serde(default)]
    ordinal: Option<u32>,
    /// Its application (absent in records of agents before the field).
    #[serde(default)]
    app_id: Option<Uuid>,
    /// Its working directory: removed once a stateless instance has stopped (a
    /// stateful ordinal's stays until its application is purged).
    #[serde(default)]
    workdir: Option<PathBuf>,
    fenced: bool,
    log: LogFile,
}

const RECORD: &str = "instance.json";
/// The node's own credential, issued at registration (readable by root only).
const CREDENTIAL: &str = "credential";

#[derive(Debug)]
struct Running {
    record: InstanceRecord,
    shim: Shim,
    /// The instance's directory: its shim's socket and lock, and its record.
    dir: PathBuf,
}

/// The agent's instances, in the states it tracks them in.
#[derive(Debug, Default)]
struct Instances {
    running: HashMap<Uuid, Running>,
    /// Shims being started (creating directories, unpacking, connecting), with what
    /// they were asked to run.
    starting: HashMap<Uuid, (JoinHandle<Result<Running, String>>, Assignment)>,
    /// Instances draining, then stopping.
    stopping: HashMap<Uuid, Stopping>,
    /// Stateful instances waiting for the previous holder of their ordinal on this
    /// node to be gone (an ordinal never runs twice, not even for a moment), with why
    /// and what to start then.
    waiting: HashMap<Uuid, (String, Assignment)>,
    /// Restarts of instances whose shim was lost, carried into the next shim.
    restarts: HashMap<Uuid, u32>,
    /// Instances whose shim could not be started: why, reported until it can be, and
    /// what to try again (with its secrets, which the control plane does not send
    /// twice).
    failed: HashMap<Uuid, Failed>,
    /// Deleted applications whose files are removed, acknowledged in every heartbeat
    /// until the control plane stops sending their purge.
    purged: HashSet<Uuid>,
}

/// A stateful ordinal of a workload.
type HeldOrdinal = (WorkloadKey, u32);

/// An instance draining, then stopping.
#[derive(Debug)]
struct Stopping {
    task: JoinHandle<()>,
    /// The stateful ordinal it still holds.
    holds: Option<HeldOrdinal>,
    /// Its application, whose files are not purged before it has stopped.
    app_id: Option<Uuid>,
}

/// A start that failed, to be tried again after a pause.
#[derive(Debug)]
struct Failed {
    why: String,
    at: Instant,
    assignment: Assignment,
}

/// How long a failed start waits before it is tried again.
const RETRY_START: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` turns true. The instances keep running after it.
pub async fn run(config: AgentConfig, mut shutdown: watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let log_index = LogIndex::default();
    let cgroups = crate::limits::Cgroups::detect(&cgroup_name(&config.state_dir, &config.name));
    match &cgroups {
        Some(c) => {
            tracing::info!(node = %config.name, cgroups = ?c, "instance limits are enforced")
        }
        None => {
            tracing::info!(node = %config.name, "no writable cgroups: instance limits are measured, not enforced")
        }
    }
    let isolation = Arc::new(Isolation::detect());
    match &*isolation {
        Isolation::Identities { bwrap: Some(_), .. } => {
            tracing::info!(node = %config.name, isolation = %isolation.describe(), "instances are isolated")
        }
        _ => {
            tracing::warn!(node = %config.name, isolation = %isolation.describe(), "instances are weakly isolated")
        }
    }
    prepare_state_dir(&config.state_dir);
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
    // A status change of any instance (ready, crashed, ...) is reported at once
    // rather than at the next period.
    let changed = Arc::new(Notify::new());
    let mut instances = Instances {
        running: adopt(&config, &changed).await,
        ..Instances::default()
    };
    let mut credential: Option<String> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut lease_ttl = DEFAULT_LEASE;
    // When the last heartbeat that the control plane answered was sent: the lease runs
    // from there, never from the answer, so that it never outlasts what the control
    // plane assumes.
    let mut lease_from: Option<Instant> = None;
    // The assignments last received in full, and their version: the control plane
    // holds each heartbeat until they change or one period passes (a long poll), so a
    // change arrives at once and an idle node still beats once a period.
    let mut held: Option<Assignments> = None;
    // Paces heartbeats when the control plane does not hold them (it is unreachable,
    // or of a release that answers at once).
    let mut floor = tokio::time::interval(config.heartbeat);
    floor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = true;
    let mut hold = true;
    let wait_ms = u64::try_from(config.heartbeat.as_millis()).unwrap_or(1000);
    loop {
        if pace {
            tokio::select! {
                _ = floor.tick() => {}
                () = changed.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() {
            break;
        }
        pace = true;
        instances.settle(&changed).await;
        // Before the report goes out: whoever reads it may ask for the logs at once.
        index_logs(&log_index, &instances);
        if credential.is_none() {
            credential = register(&http, &config, api_port).await;
        }
        let Some(own) = credential.as_deref() else {
            continue;
        };
        let sent = Instant::now();
        let sent_boot = crate::shim::boot_ms();
        let beat = Heartbeat {
            instances: instances.reports(),
            version: held.as_ref().and_then(|a| a.version.clone()),
            wait_ms: Some(if hold { wait_ms } else { 0 }),
            purged: instances.purged.iter().copied().collect(),
        };
        let answer = if hold {
            tokio::select! {
                r = send_heartbeat(&http, &config, own, &beat) => r,
                // A status change is reported at once: the held heartbeat is abandoned
                // and the next one is answered without waiting, so that however often
                // instances change, every other heartbeat's answer is acted on.
                () = changed.notified() => {
                    pace = false;
                    hold = false;
                    continue;
                }
                _ = shutdown.changed() => continue,
            }
        } else {
            hold = true;
            send_heartbeat(&http, &config, own, &beat).await
        };
        match answer {
            Ok(answer) => {
                pace = answer.version.is_none();
                let assignments = if answer.unchanged {
                    match &held {
                        Some(h) => Assignments {
                            lease_ttl_ms: answer.lease_ttl_ms,
                            ..h.clone()
                        },
                        None => {
                            pace = true;
                            continue;
                        }
                    }
                } else {
                    held = Some(answer.clone());
                    answer
                };
                if unreachable_since.take().is_some() {
                    tracing::info!(node = %config.name, "control plane reachable again");
                }
                if let Some(ms) = assignments.lease_ttl_ms {
                    lease_ttl = Duration::from_millis(ms);
                }
                lease_from = Some(sent);
                // The lease ends a term after the heartbeat was sent, as a point on
                // the boot clock: an answer read late, or a renewal that reaches its
                // shim late, grants no more than that.
                let lease_until = sent_boot
                    .saturating_add(u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX));
                // Only what the control plane still wants here keeps its lease: an
                // ordinal it moved away while this node was silent must not start again.
                for (id, r) in instances.running.iter().filter(|(_, r)| r.record.fenced) {
                    let wanted = assignments
                        .instances
                        .iter()
                        .any(|a| a.id == *id && a.desired == Desired::Run);
                    if wanted {
                        r.shim.renew(lease_until);
                    }
                }
                instances.reconcile(
                    &config,
                    cgroups.as_ref(),
                    &isolation,
                    assignments,
                    lease_until,
                    &changed,
                );
                index_logs(&log_index, &instances);
            }
            Err(HeartbeatError::UnknownNode) => credential = None,
            Err(HeartbeatError::Unreachable(e)) => {
                // Said once per outage, not once per heartbeat.
                if unreachable_since.is_none() {
                    let fenced = instances
                        .running
                        .values()
                        .filter(|r| r.record.fenced)
                        .count();
                    let left = lease_from
                        .map_or(Duration::ZERO, |f| lease_ttl.saturating_sub(f.elapsed()));
                    tracing::warn!(node = %config.name, error = %e, fenced, lease_left_ms = left.as_millis() as u64,
                        "control plane unreachable; instances keep running, fenced ones until their lease lapses");
                    unreachable_since = Some(Instant::now());
                }
            }
        }
    }
    tracing::info!(node = %config.name, instances = instances.running.len(), "agent exiting; its instances keep running under their shims");
}

/// Serves the logs of every instance the agent holds, and of no other.
fn index_logs(log_index: &LogIndex, instances: &Instances) {
    if let Ok(mut index) = log_index.lock() {
        index.retain(|id, _| {
            instances.running.contains_key(id) || instances.stopping.contains_key(id)
        });
        for (id, r) in &instances.running {
            index.entry(*id).or_insert_with(|| r.shim.log().clone());
        }
    }
}

/// The agent's control group: named after its node and its state directory, so that
/// two platforms on one host (each with its own `node-1`) never share one.
fn cgroup_name(state_dir: &Path, node: &str) -> String {
    use sha2::Digest;
    let place = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = sha2::Sha256::digest(place.as_os_str().as_encoded_bytes());
    format!("paas-{}-{node}", hex::encode(&digest[..4]))
}

/// The state directory and the parents of instance working directories: traversable
/// by instance identities (to reach their own directory when there is no sandbox),
/// listable by nobody else.
fn prepare_state_dir(state_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in [
        (state_dir.to_path_buf(), 0o711),
        (state_dir.join("work"), 0o711),
        (state_dir.join("instances"), 0o700),
        (state_dir.join("logs"), 0o700),
        (state_dir.join("packages"), 0o700),
        (state_dir.join("ports"), 0o700),
    ] {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
    }
}

/// Reconnects to the shims a previous agent of this node left running; removes the
/// directories of those that are gone.
async fn adopt(config: &AgentConfig, changed: &Arc<Notify>) -> HashMap<Uuid, Running> {
    let mut adopted = HashMap::new();
    let Ok(entries) = std::fs::read_dir(config.state_dir.join("instances")) else {
        return adopted;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let record: Option<InstanceRecord> = std::fs::read(dir.join(RECORD))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let shim = match &record {
            Some(r) => Shim::adopt(&dir, r.log.clone()).await,
            None => None,
        };
        match (record, shim) {
            (Some(record), Some(shim)) => {
                tracing::info!(instance = %record.name, "adopted a running instance");
                notify_changes(&shim, changed);
                adopted.insert(record.id, Running { record, shim, dir });
            }
            _ => {
                tracing::info!(dir = %dir.display(), "removing an instance whose shim is gone");
                crate::shim::clean_up(&dir);
            }
        }
    }
    adopted
}

/// Wakes the heartbeat loop at each status change of the shim's instance.
fn notify_changes(shim: &Shim, changed: &Arc<Notify>) {
    let mut status = shim.watch();
    let changed = changed.clone();
    tokio::spawn(async move {
        // Ends when the shim's connection ends.
        while status.changed().await.is_ok() {
            changed.notify_one();
        }
        changed.notify_one();
    });
}

/// Registers the node; returns the credential the control plane issued, also kept in
/// the state directory for the shims (which fetch packages with it).
async fn register(http: &reqwest::Client, config: &AgentConfig, api_port: u16) -> Option<String> {
    let registration = Registration {
        api_port,
        heartbeat_ms: u32::try_from(config.heartbeat.as_millis()).ok(),
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
    let registered = match result {
        Ok(r) if r.status().is_success() => r.json::<Registered>().await.ok()?,
        Ok(r) => {
            tracing::warn!(node = %config.name, status = %r.status(), "registration refused");
            return None;
        }
        Err(e) => {
            tracing::debug!(node = %config.name, error = %e, "control plane unreachable; will retry");
            return None;
        }
    };
    if let Err(e) = store_credential(&config.state_dir, &registered.credential) {
        tracing::warn!(node = %config.name, error = %e, "the node's credential could not be stored; packages cannot be fetched");
    }
    tracing::info!(node = %config.name, "registered with the control plane");
    Some(registered.credential)
}

fn store_credential(state_dir: &Path, credential: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let staged = state_dir.join(format!("{CREDENTIAL}.new"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)?;
    file.write_all(credential.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staged, state_dir.join(CREDENTIAL))
}

enum HeartbeatError {
    UnknownNode,
    Unreachable(String),
}

async fn send_heartbeat(
    http: &reqwest::Client,
    config: &AgentConfig,
    credential: &str,
    beat: &Heartbeat,
) -> Result<Assignments, HeartbeatError> {
    let response = http
        .post(format!(
            "{}/internal/v1/nodes/{}/heartbeat",
            config.control_plane, config.name
        ))
        .bearer_auth(credential)
        .json(beat)
        .send()
        .await
        .map_err(|e| HeartbeatError::Unreachable(e.to_string()))?;
    // Unknown node, or a credential that is no longer valid: register again.
    if matches!(
        response.status(),
        reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::UNAUTHORIZED
    ) {
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

impl Instances {
    /// Takes in the shims that finished starting, and lets go of those that were lost
    /// (killed): their instance is started again by the next reconcile, counted as a
    /// restart.
    async fn settle(&mut self, changed: &Arc<Notify>) {
        let done: Vec<Uuid> = self
            .starting
            .iter()
            .filter(|(_, (task, _))| task.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some((task, assignment)) = self.starting.remove(&id) else {
                continue;
            };
            let why = match task.await {
                Ok(Ok(running)) => {
                    self.failed.remove(&id);
                    notify_changes(&running.shim, changed);
                    self.running.insert(id, running);
                    continue;
                }
                Ok(Err(why)) => why,
                Err(e) => e.to_string(),
            };
            tracing::warn!(instance = %assignment.name, error = %why, "instance could not be started");
            self.failed.insert(
                id,
                Failed {
                    why,
                    at: Instant::now(),
                    assignment,
                },
            );
        }
        let lost: Vec<Uuid> = self
            .running
            .iter()
            .filter(|(_, r)| r.shim.lost())
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(r) = self.running.remove(&id) {
                tracing::warn!(instance = %r.record.name, "the instance's shim died; starting it again");
                let restarts = r.shim.status().restarts + 1;
                self.restarts.insert(id, restarts);
                crate::shim::clean_up(&r.dir);
            }
        }
        self.stopping.retain(|_, s| !s.task.is_finished());
    }

    /// Whether an instance other than `except` holds (or is about to hold) `ordinal`
    /// of the workload on this node.
    fn holds(&self, key: &WorkloadKey, ordinal: u32, except: Uuid) -> bool {
        let same = |k: &WorkloadKey, o: Option<u32>| k == key && o == Some(ordinal);
        self.running
            .iter()
            .any(|(id, r)| *id != except && same(&r.record.key, r.record.ordinal))
            || self.stopping.iter().any(|(id, s)| {
                *id != except && s.holds.as_ref().is_some_and(|(k, o)| same(k, Some(*o)))
            })
            || self
                .starting
                .iter()
                .any(|(id, (_, a))| *id != except && same(&a.key, a.ordinal))
    }

    fn reports(&self) -> Vec<InstanceReport> {
        let mut reports: Vec<InstanceReport> = self
            .running
            .iter()
            .map(|(id, r)| {
                let s = r.shim.status();
                InstanceReport {
                    id: *id,
                    phase: s.phase,
                    ready: s.ready,
                    restarts: s.restarts,
                    port: r.record.port,
                    ports: r.record.ports.clone(),
                    message: s.message,
                    cpu_millis: s.cpu_millis,
                    memory_mib: s.memory_mib,
                }
            })
            .collect();
        reports.extend(self.starting.keys().map(|id| InstanceReport {
            id: *id,
            phase: Phase::Pending,
            ready: false,
            restarts: self.restarts.get(id).copied().unwrap_or(0),
            port: None,
            ports: BTreeMap::new(),
            message: Some("starting its shim".to_owned()),
            cpu_millis: None,
            memory_mib: None,
        }));
        reports.extend(
            self.failed
                .iter()
                .filter(|(id, _)| !self.starting.contains_key(id))
                .map(|(id, failed)| InstanceReport {
                    id: *id,
                    phase: Phase::BackOff,
                    ready: false,
                    restarts: self.restarts.get(id).copied().unwrap_or(0),
                    port: None,
                    ports: BTreeMap::new(),
                    message: Some(format!("{}; trying again", failed.why)),
                    cpu_millis: None,
                    memory_mib: None,
                }),
        );
        reports.extend(self.waiting.iter().map(|(id, (why, _))| InstanceReport {
            id: *id,
            phase: Phase::Pending,
            ready: false,
            restarts: 0,
            port: None,
            ports: BTreeMap::new(),
            message: Some(why.clone()),
            cpu_millis: None,
            memory_mib: None,
        }));
        reports.extend(self.stopping.keys().map(|id| InstanceReport {
            id: *id,
            phase: Phase::Stopping,
            ready: false,
            restarts: 0,
            port: None,
            ports: BTreeMap::new(),
            message: Some("draining".to_owned()),
            cpu_millis: None,
            memory_mib: None,
        }));
        reports
    }

    fn reconcile(
        &mut self,
        config: &AgentConfig,
        cgroups: Option<&crate::limits::Cgroups>,
        isolation: &Arc<Isolation>,
        assignments: Assignments,
        lease_until: u64,
        changed: &Arc<Notify>,
    ) {
        let wanted: HashMap<Uuid, Assignment> = assignments
            .instances
            .into_iter()
            .filter(|a| a.desired == Desired::Run)
            .map(|a| (a.id, a))
            .collect();
        self.failed.retain(|id, _| wanted.contains_key(id));
        self.restarts.retain(|id, _| wanted.contains_key(id));
        self.waiting.retain(|id, _| wanted.contains_key(id));
        let unwanted: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in unwanted {
            if let Some(r) = self.running.remove(&id) {
                tracing::info!(instance = %r.record.name, "draining, then stopping");
                let drain = config.drain;
                let holds = r.record.ordinal.map(|o| (r.record.key.clone(), o));
                // A stateless instance's files go with it; a stateful ordinal's stay
                // for its next instance, until its application is purged.
                let scratch = r.record.workdir.clone().filter(|_| holds.is_none());
                let app_id = r.record.app_id;
                let task = tokio::spawn(async move {
                    tokio::time::sleep(drain).await;
                    r.shim.stop().await;
                    if let Some(dir) = scratch {
                        remove_tree(&dir);
                    }
                });
                self.stopping.insert(
                    id,
                    Stopping {
                        task,
                        holds,
                        app_id,
                    },
                );
            }
        }
        for (id, fresh) in wanted {
            if self.running.contains_key(&id)
                || self.stopping.contains_key(&id)
                || self.starting.contains_key(&id)
            {
                continue;
            }
            if self
                .failed
                .get(&id)
                .is_some_and(|f| f.at.elapsed() < RETRY_START)
            {
                continue;
            }
            // An instance's first assignment is its whole one (the control plane sends
            // secrets and addresses only while the agent does not report it): a start
            // that waited or failed uses the one it kept.
            let assignment = self
                .waiting
                .remove(&id)
                .map(|(_, a)| a)
                .or_else(|| self.failed.get(&id).map(|f| f.assignment.clone()))
                .unwrap_or(fresh);
            if let Some(ordinal) = assignment.ordinal
                && self.holds(&assignment.key, ordinal, id)
            {
                let why = format!("waits for the previous instance of ordinal {ordinal} to stop");
                self.waiting.insert(id, (why, assignment));
                continue;
            }
            let (instance, ports) = instance_config(config, cgroups, isolation, &assignment);
            let port = instance.port;
            let fenced = assignment.spec.kind == WorkloadKind::Stateful;
            let record = InstanceRecord {
                id,
                name: assignment.name.clone(),
                key: assignment.key.clone(),
                port,
                ports,
                ordinal: assignment.ordinal,
                app_id: assignment.app_id,
                workdir: Some(instance.workdir.clone()),
                fenced,
                log: instance.log.clone(),
            };
            let spec = ShimSpec {
                config: instance,
                fenced,
                lease_ms: lease_until.saturating_sub(crate::shim::boot_ms()),
                lease_until_ms: Some(lease_until),
                restarts_before: self.restarts.get(&id).copied().unwrap_or(0),
            };
            tracing::info!(instance = %assignment.name, port, "starting instance");
            let dir = config.state_dir.join("instances").join(id.to_string());
            let (program, args) = (config.shim_program.clone(), config.shim_args.clone());
            let identity = spec.config.sandbox.as_ref().map(|s| (s.uid, s.gid));
            let tenant_dir = config.state_dir.join("work").join(&assignment.key.tenant);
            let changed = changed.clone();
            let task = tokio::spawn(async move {
                let started =
                    start(&program, &args, &dir, &tenant_dir, identity, record, spec).await;
                changed.notify_one();
                started
            });
            self.starting.insert(id, (task, assignment));
        }
        self.purge(&config.state_dir, &assignments.purges, changed);
    }

    /// Removes the files of deleted applications none of whose instances is still
    /// here (an instance that is stopping finishes first), and forgets the purges
    /// the control plane no longer sends (it has taken the acknowledgement).
    fn purge(&mut self, state_dir: &Path, purges: &[Purge], changed: &Arc<Notify>) {
        self.purged
            .retain(|id| purges.iter().any(|p| p.app_id == *id));
        for p in purges {
            if self.purged.contains(&p.app_id) || self.holds_app(p.app_id) {
                continue;
            }
            for tree in ["work", "logs", "ports"] {
                let dir = app_dir(&state_dir.join(tree), &p.key, Some(p.app_id));
                remove_tree(&dir);
                // The name's own directory goes too once nothing else is in it.
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
            tracing::info!(app = %p.key, app_id = %p.app_id, "removed a deleted application's files");
            self.purged.insert(p.app_id);
            // Acknowledged at once rather than at the next period.
            changed.notify_one();
        }
    }

    /// Whether an instance of the application is on this node in any state.
    fn holds_app(&self, app_id: Uuid) -> bool {
        let of = |a: &Assignment| a.app_id == Some(app_id);
        self.running
            .values()
            .any(|r| r.record.app_id == Some(app_id))
            || self.starting.values().any(|(_, a)| of(a))
            || self.waiting.values().any(|(_, a)| of(a))
            || self.failed.values().any(|f| of(&f.assignment))
            || self.stopping.values().any(|s| s.app_id == Some(app_id))
    }
}

/// Moves an ordinal's data directory from where agents kept it before files were
/// kept per application id (`work/<tenant>/<env>/<app>/ordinal-N`) to its place now,
/// so that an upgraded node keeps its stateful data.
fn adopt_unkeyed_data(state_dir: &Path, a: &Assignment, leaf: &str, workdir: &Path) {
    let legacy = app_dir(&state_dir.join("work"), &a.key, None).join(leaf);
    if workdir.exists() || !legacy.is_dir() {
        return;
    }
    let moved = workdir
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::rename(&legacy, workdir));
    match moved {
        Ok(()) => {
            tracing::info!(instance = %a.name, from = %legacy.display(), "kept the ordinal's data from before per-application directories")
        }
        Err(e) => {
            tracing::warn!(instance = %a.name, error = %e, "the ordinal's earlier data directory could not be moved")
        }
    }
}

/// Where an application's files live in one of the state directory's trees (`work`,
/// `logs`, `ports`): under the application's id, so that one created again under a
/// deleted one's name starts empty.
fn app_dir(tree: &Path, key: &WorkloadKey, app_id: Option<Uuid>) -> PathBuf {
    let dir = tree.join(&key.tenant).join(&key.environment).join(&key.app);
    match app_id {
        Some(id) => dir.join(id.to_string()),
        None => dir,
    }
}

/// Removes a directory tree, saying why when it cannot (a file left is data kept).
fn remove_tree(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove"),
    }
}

/// Prepares an instance's directories and starts its shim.
async fn start(
    program: &Path,
    args: &[String],
    dir: &Path,
    tenant_dir: &Path,
    identity: Option<(u32, u32)>,
    record: InstanceRecord,
    spec: ShimSpec,
) -> Result<Running, String> {
    use std::os::unix::fs::PermissionsExt;
    // The tenant's directory is its identity's alone: without a sandbox, this is what
    // keeps tenants out of each other's working directories.
    std::fs::create_dir_all(tenant_dir).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = identity {
        std::os::unix::fs::chown(tenant_dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(tenant_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(RECORD), bytes).map_err(|e| e.to_string())?;
    let shim = Shim::spawn(program, args, dir, &spec).await?;
    Ok(Running {
        record,
        shim,
        dir: dir.to_path_buf(),
    })
}

/// How an assignment runs on this node, and the ports it was given (by name).
fn instance_config(
    config: &AgentConfig,
    cgroups: Option<&crate::limits::Cgroups>,
    isolation: &Isolation,
    a: &Assignment,
) -> (InstanceConfig, BTreeMap<String, u16>) {
    let spec = &a.spec;
    let mut env = spec.env.clone();
    let mut port = None;
    // A stateful ordinal gets the ports it had before whenever they are free, so that
    // its peers and clients find it where it was.
    let kept_at = a.ordinal.map(|o| {
        app_dir(&config.state_dir.join("ports"), &a.key, a.app_id).join(format!("ordinal-{o}.json"))
    });
    let kept: BTreeMap<String, u16> = kept_at
        .as_ref()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut chosen: BTreeMap<String, u16> = BTreeMap::new();
    for p in &spec.ports {
        let number = kept
            .get(&p.name)
            .copied()
            .filter(|n| port_is_free(*n))
            .unwrap_or_else(free_port);
        chosen.insert(p.name.clone(), number);
        env.insert(
            format!("PORT_{}", p.name.to_uppercase().replace('-', "_")),
            number.to_string(),
        );
        if port.is_none() {
            port = Some(number);
            env.insert("PORT".to_owned(), number.to_string());
        }
    }
    if let Some(path) = &kept_at
        && chosen != kept
    {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, serde_json::to_vec(&chosen).unwrap_or_default()));
        if let Err(e) = written {
            tracing::warn!(instance = %a.name, error = %e, "the ordinal's ports could not be kept");
        }
    }
    // Arguments are expanded before the secrets join the environment: a process's
    // arguments are readable by every user of the node (`/proc/<pid>/cmdline`), its
    // environment only by its own. A `$SECRET` in an argument reaches the program as
    // written, for a shell to expand from the environment.
    let args = spec.args.iter().map(|arg| expand(arg, &env)).collect();
    // Secrets cannot share a name with a plain variable (the control plane refuses it).
    env.extend(
        a.secrets
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_owned())),
    );
    // A stateful instance keeps its directory per ordinal across restarts and revisions.
    let workdir_leaf = a
        .ordinal
        .map_or_else(|| a.name.clone(), |o| format!("ordinal-{o}"));
    let workdir = app_dir(&config.state_dir.join("work"), &a.key, a.app_id).join(&workdir_leaf);
    if a.ordinal.is_some() && a.app_id.is_some() {
        adopt_unkeyed_data(&config.state_dir, a, &workdir_leaf, &workdir);
    }
    let log = LogFile::new(
        &app_dir(&config.state_dir.join("logs"), &a.key, a.app_id),
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
        until_ready: None,
    };
    // An instance with a port and no readiness check is ready once the port accepts.
    let readiness = match (&spec.health.readiness, port) {
        (Some(check), _) => Some(probe(check)),
        (None, Some(_)) => Some(Probe {
            // A local connect is cheap: check often so the instance is ready the moment
            // it listens, and more often still while it starts.
            period: Duration::from_millis(50),
            until_ready: Some(Duration::from_millis(10)),
            ..Probe::new(ProbeTarget::Tcp)
        }),
        (None, None) => None,
    };
    let restart = match spec.kind {
        WorkloadKind::Job | WorkloadKind::Cronjob => RestartPolicy::OnFailure { max_retries: 3 },
        _ => RestartPolicy::Always,
    };
    let sandbox = a
        .uid
        .and_then(|uid| isolation.sandbox(uid, &config.hide, &a.name))
        .map(|mut sandbox| {
            if sandbox.bwrap.is_some() {
                let dir = config.state_dir.join("identities").join(sandbox.uid.to_string());
                match crate::sandbox::write_identity_files(&dir, sandbox.uid, sandbox.gid) {
                    Ok(()) => sandbox.etc = Some(dir),
                    Err(e) => tracing::warn!(instance = %a.name, error = %e, "no passwd entry for the instance's identity"),
                }
            }
            sandbox
        });
    let instance = InstanceConfig {
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
            credential_file: config.state_dir.join(CREDENTIAL),
            cache_dir: config.state_dir.join("packages"),
        }),
        ceilings: crate::limits::Ceilings {
            cpu_millis: spec.limits.cpu_millis,
            memory_mib: spec.limits.memory_mib,
        },
        cgroups: cgroups.cloned(),
        sandbox,
    };
    (instance, chosen)
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

fn port_is_free(port: u16) -> bool {
    port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
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

    fn assignment(key: &WorkloadKey, app_id: Uuid, ordinal: u32) -> Assignment {
        Assignment {
            id: Uuid::new_v4(),
            name: format!("{}-{ordinal}", key.app),
            key: key.clone(),
            app_id: Some(app_id),
            revision: 1,
            ordinal: Some(ordinal),
            desired: Desired::Run,
            spec: serde_json::from_value(serde_json::json!({"kind": "stateful", "command": "db"}))
                .unwrap_or_else(|e| panic!("{e}")),
            uid: None,
            secrets: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_purge_waits_for_the_applications_instances_and_spares_a_new_one_of_the_same_name() {
        let state = std::env::temp_dir().join(format!("paas-purge-{}", Uuid::new_v4()));
        let key = WorkloadKey {
            tenant: "acme".into(),
            environment: "dev".into(),
            app: "db".into(),
        };
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        let data = |id: Uuid, tree: &str| app_dir(&state.join(tree), &key, Some(id));
        for id in [old, new] {
            for tree in ["work", "logs", "ports"] {
                std::fs::create_dir_all(data(id, tree).join("ordinal-0"))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let changed = Arc::new(Notify::new());
        let purge = vec![Purge {
            app_id: old,
            key: key.clone(),
        }];
        let mut instances = Instances::default();
        // An instance of the deleted application still waits to start here: its files
        // stay.
        let waiting = assignment(&key, old, 0);
        instances
            .waiting
            .insert(waiting.id, ("waits".into(), waiting.clone()));
        instances.purge(&state, &purge, &changed);
        assert!(data(old, "work").exists() && instances.purged.is_empty());

        instances.waiting.clear();
        instances.purge(&state, &purge, &changed);
        for tree in ["work", "logs", "ports"] {
            assert!(!data(old, tree).exists(), "{tree}");
            assert!(data(new, tree).join("ordinal-0").exists(), "{tree}");
        }
        assert_eq!(instances.purged, HashSet::from([old]));
        // Acknowledged until the control plane stops sending it.
        instances.purge(&state, &purge, &changed);
        assert_eq!(instances.purged, HashSet::from([old]));
        instances.purge(&state, &[], &changed);
        assert!(instances.purged.is_empty());
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn an_ordinal_keeps_the_data_it_had_before_files_were_kept_per_application() {
        let state = std::env::temp_dir().join(format!("paas-legacy-{}", Uuid::new_v4()));
        let key = WorkloadKey {
            tenant: "acme".into(),
            environment: "dev".into(),
            app: "db".into(),
        };
        let a = assignment(&key, Uuid::new_v4(), 1);
        let legacy = app_dir(&state.join("work"), &key, None).join("ordinal-1");
        std::fs::create_dir_all(&legacy).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(legacy.join("PG_VERSION"), "16").unwrap_or_else(|e| panic!("{e}"));
        let workdir = app_dir(&state.join("work"), &key, a.app_id).join("ordinal-1");
        adopt_unkeyed_data(&state, &a, "ordinal-1", &workdir);
        assert_eq!(
            std::fs::read_to_string(workdir.join("PG_VERSION"))
                .ok()
                .as_deref(),
            Some("16")
        );
        assert!(!legacy.exists());
        let _ = std::fs::remove_dir_all(&state);
    }
}
