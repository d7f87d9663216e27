//! The control-plane half of the local runtime: desired instances live in PostgreSQL,
//! placed on nodes by [`platform_core::placement`]; node agents pull their assignments and
//! report what they observe in one heartbeat call; the router pulls the route table.
//!
//! Nothing here touches a process: agents (in `runtime-local`) do. Because every
//! decision is a row, a control plane that dies and comes back adopts what runs as it
//! is: agents keep their processes and report them against the same rows.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

pub mod changes;
pub mod cron;
pub mod fencing;
pub mod store;
pub mod traffic;

pub use local_node::proto;

use cron::{CronRun, CronTable};
use fencing::{Condition, NodeView, Timing, Verdict};
use platform_core::placement::{NodeLoad, choose};
use platform_core::runtime::{
    Endpoint, Instance, Node, NodeEvent, NodeLoss, Phase, Runtime, RuntimeError, Slots, Workload,
    WorkloadKey,
};
use platform_core::sealing::MasterKey;
use platform_core::spec::{AppSpec, Resources, WorkloadKind};
use proto::{
    Assignment, Assignments, CanaryRoute, Desired, Heartbeat, InstanceReport, Purge, Registered,
    Registration, Route, RouteTable, TcpRoute,
};
use store::{InstanceRow, NewInstance, Observation, Wanted};

/// The longest a heartbeat or a route-table request is held waiting for a change.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The version of a node's assignments: which instances, and whether each should run.
/// What an assignment carries besides never changes for an instance.
/// The purges it carries count too.
fn assignments_version(instances: &[Assignment], purges: &[Purge]) -> String {
    let mut pairs: Vec<(Uuid, Desired)> = instances.iter().map(|a| (a.id, a.desired)).collect();
    pairs.sort_by_key(|(id, _)| *id);
    let mut purged: Vec<Uuid> = purges.iter().map(|p| p.app_id).collect();
    purged.sort();
    if purged.is_empty() {
        changes::version_of(&pairs)
    } else {
        changes::version_of(&(pairs, purged))
    }
}

/// How long a node may be silent before its stateless instances are replaced
/// elsewhere, unless configured otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15);

/// How long a fenced instance keeps running after its node's last heartbeat, unless
/// configured otherwise.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// The router ports stable TCP addresses are given from, unless configured otherwise.
pub const DEFAULT_ROUTER_PORTS: (u16, u16) = (30000, 32767);

/// Why an agent's call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node '{0}' is not registered")]
    UnknownNode(String),
    #[error("invalid registration: {0}")]
    Invalid(String),
    #[error("the instance's secrets cannot be opened: {0}")]
    Secrets(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// The local runtime driver.
#[derive(Debug, Clone)]
pub struct LocalRuntime {
    pool: PgPool,
    /// Presented to agents when the control plane reads from them (logs).
    agent_token: String,
    http: reqwest::Client,
    /// When this control plane started: nodes are not judged lost until it has been up
    /// long enough to have heard from them.
    started: std::time::Instant,
    /// The schedules of cron workloads.
    cron: std::sync::Arc<CronTable>,
    /// When nodes are lost, and how long fenced instances run on.
    timing: Timing,
    /// Opens the secrets handed to instances.
    master: MasterKey,
    /// The host the router's stable addresses are on, and the ports it gives out.
    router_host: String,
    router_ports: (u16, u16),
    /// The routers' traffic counters.
    traffic: std::sync::Arc<traffic::RouterTraffic>,
    /// Wakes agents and routers waiting for their share to change.
    changes: changes::Changes,
    /// What `instances` just read of a workload, for the `apply` that follows it in a
    /// reconcile to decide on without reading it again (see [`Seen`]).
    seen: std::sync::Arc<std::sync::Mutex<HashMap<WorkloadKey, Seen>>>,
    /// The stored traffic splits, as this control plane last read or wrote them.
    splits: std::sync::Arc<std::sync::Mutex<Splits>>,
    /// Every node with its requests, as read a moment ago, for plans that are checked
    /// again under the placement lock (see [`LocalRuntime::early_loads`]).
    early_nodes: std::sync::Arc<std::sync::Mutex<Option<EarlyNodes>>>,
}

/// Nodes read whole for early plans, and when.
type EarlyNodes = (std::time::Instant, Vec<NodeLoad>);

/// How long nodes read whole serve plans that are checked again under the lock.
const EARLY_NODES_FOR: Duration = Duration::from_millis(500);

/// A traffic split: the canary revision and its percent of the requests.
type Split = (i32, i32);

/// The stored traffic splits by workload, and when they were last read whole.
#[derive(Debug, Default)]
struct Splits {
    read_at: Option<std::time::Instant>,
    rows: HashMap<WorkloadKey, Split>,
}

/// How long the splits read whole stand in for the table.
const SPLITS_FOR: Duration = Duration::from_secs(60);

/// A workload's instances and their nodes as read a moment ago. Good only for deciding
/// that nothing is to change: any change is decided again on a locked read.
#[derive(Debug)]
struct Seen {
    at: std::time::Instant,
    instances: Vec<InstanceRow>,
    nodes: NodesSeen,
}

/// A node some instances are on: as the fencing rules see it, its address, and whether
/// it is drained.
#[derive(Debug, Clone)]
struct SeenNode {
    view: NodeView,
    address: String,
    draining: bool,
}

impl SeenNode {
    fn of(n: &store::NodeRow) -> Self {
        Self {
            view: node_view(n),
            address: n.address.clone(),
            draining: n.draining_since.is_some(),
        }
    }
}

/// The nodes some instances are on, by name.
type NodesSeen = HashMap<String, SeenNode>;

/// The nodes `instances` are on, each named once.
fn node_names<'a>(instances: impl Iterator<Item = &'a InstanceRow>) -> Vec<String> {
    let mut names: Vec<String> = instances.map(|i| i.node.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// How long a [`Seen`] may stand in for a fresh read.
const SEEN_FOR: Duration = Duration::from_secs(2);

impl LocalRuntime {
    pub fn new(pool: PgPool, agent_token: String, master: MasterKey) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            pool,
            agent_token,
            http,
            started: std::time::Instant::now(),
            cron: std::sync::Arc::default(),
            timing: Timing {
                grace: DEFAULT_GRACE,
                lease_ttl: DEFAULT_LEASE_TTL,
                margin: margin_for(DEFAULT_LEASE_TTL),
            },
            master,
            router_host: "127.0.0.1".to_owned(),
            router_ports: DEFAULT_ROUTER_PORTS,
            traffic: std::sync::Arc::default(),
            changes: changes::Changes::default(),
            seen: std::sync::Arc::default(),
            splits: std::sync::Arc::default(),
            early_nodes: std::sync::Arc::default(),
        }
    }

    /// Counts placed instances in the nodes held for early plans.
    fn charge_early(&self, placed: &[(i32, Option<u32>, String, Resources)]) {
        let Ok(mut early) = self.early_nodes.lock() else {
            return;
        };
        let Some((_, nodes)) = early.as_mut() else {
            return;
        };
        for (_, _, node, request) in placed {
            if let Some(n) = nodes.iter_mut().find(|n| n.name == *node) {
                n.requested.cpu_millis += request.cpu_millis;
                n.requested.memory_mib += request.memory_mib;
            }
        }
    }

    /// Every node with what was placed on it a moment ago (read at most every
    /// [`EARLY_NODES_FOR`] by this control plane, however many workloads are placed),
    /// counting `instances` (the workload's, read under its lock). Good only for plans
    /// whose chosen nodes' room is checked again under the placement lock.
    async fn early_loads(
        &self,
        instances: &[InstanceRow],
        conn: &mut sqlx::PgConnection,
    ) -> Result<Vec<NodeLoad>, sqlx::Error> {
        let held = self.early_nodes.lock().ok().and_then(|e| {
            e.as_ref()
                .filter(|(at, _)| at.elapsed() < EARLY_NODES_FOR)
                .map(|(_, nodes)| nodes.clone())
        });
        let mut nodes = match held {
            Some(nodes) => nodes,
            None => {
                let nodes = node_loads(&[], conn, self.timing).await?;
                if let Ok(mut e) = self.early_nodes.lock() {
                    *e = Some((std::time::Instant::now(), nodes.clone()));
                }
                nodes
            }
        };
        for n in &mut nodes {
            n.workload_instances = workload_instances(instances, &n.name);
        }
        Ok(nodes)
    }

    /// Writes the workload's traffic split (a canary step's weight) when it differs
    /// from the stored one, as this control plane last read or wrote them (all of them
    /// read again every minute: another control plane may have written some).
    async fn apply_split(&self, workload: &Workload) -> Result<(), RuntimeError> {
        let wanted = workload.revisions.iter().find_map(|r| {
            r.weight
                .map(|w| (r.revision, i32::try_from(w.min(100)).unwrap_or(100)))
        });
        let fresh = self
            .splits
            .lock()
            .ok()
            .and_then(|c| c.read_at)
            .is_some_and(|at| at.elapsed() < SPLITS_FOR);
        if !fresh {
            let rows = store::splits(&self.pool).await.map_err(unavailable)?;
            if let Ok(mut c) = self.splits.lock() {
                c.read_at = Some(std::time::Instant::now());
                c.rows = rows
                    .into_iter()
                    .map(|(tenant, environment, app, revision, weight)| {
                        (
                            WorkloadKey {
                                tenant,
                                environment,
                                app,
                            },
                            (revision, weight),
                        )
                    })
                    .collect();
            }
        }
        let known = self
            .splits
            .lock()
            .ok()
            .and_then(|c| c.rows.get(&workload.key).copied());
        if known == wanted {
            return Ok(());
        }
        let Some(app_id) = platform_core::store::runtime::application_id(
            &self.pool,
            &workload.key.tenant,
            &workload.key.environment,
            &workload.key.app,
        )
        .await
        .map_err(unavailable)?
        else {
            return Ok(());
        };
        store::set_split(&self.pool, app_id, wanted)
            .await
            .map_err(unavailable)?;
        if let Ok(mut c) = self.splits.lock() {
            match wanted {
                Some(split) => c.rows.insert(workload.key.clone(), split),
                None => c.rows.remove(&workload.key),
            };
        }
        Ok(())
    }

    /// Reads a workload's instances and their nodes, without a lock; `None` when the
    /// application does not exist. (Two indexed lookups: a third of the time the
    /// batch query by key takes for one workload.)
    async fn read_seen(&self, key: &WorkloadKey) -> Result<Option<Seen>, RuntimeError> {
        let Some(app_id) = platform_core::store::runtime::application_id(
            &self.pool,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let instances = store::instances_of(&self.pool, app_id)
            .await
            .map_err(unavailable)?;
        let nodes = self.nodes_of(&self.pool, &instances).await?;
        Ok(Some(Seen {
            at: std::time::Instant::now(),
            instances,
            nodes,
        }))
    }

    fn remember(&self, key: &WorkloadKey, seen: Seen) {
        let Ok(mut all) = self.seen.lock() else {
            return;
        };
        // Workloads observed but never applied (a page showing instances) leave entries;
        // they are dropped once the map grows.
        if all.len() >= 4096 {
            all.retain(|_, s| s.at.elapsed() < SEEN_FOR);
        }
        all.insert(key.clone(), seen);
    }

    fn recall(&self, key: &WorkloadKey) -> Option<Seen> {
        let seen = self.seen.lock().ok()?.remove(key)?;
        (seen.at.elapsed() < SEEN_FOR).then_some(seen)
    }

    /// The port's view of instances as read: an instance whose node stopped reporting is
    /// `unknown`, with what was last known.
    fn as_instances(&self, seen: &Seen) -> Vec<Instance> {
        let nodes = &seen.nodes;
        seen.instances
            .iter()
            .cloned()
            .map(|r| {
                let reported = r.phase;
                // An instance whose node stopped reporting is unknown, not ready: what is
                // shown is what was last known.
                let silent = nodes
                    .get(&r.node)
                    .map(|n| &n.view)
                    .filter(|v| fencing::condition(**v, self.timing) != Condition::Ready);
                let address = r
                    .port
                    .zip(nodes.get(&r.node))
                    .map(|(port, n)| format!("{}:{port}", n.address));
                let (phase, ready, message) = match (r.desired, silent) {
                    (Wanted::Stop, Some(_)) => (
                        Phase::Unknown,
                        false,
                        Some(format!("to be stopped when {} reports again", r.node)),
                    ),
                    (Wanted::Stop, None) => (Phase::Stopping, false, r.message),
                    (_, Some(view)) => (
                        Phase::Unknown,
                        false,
                        Some(format!(
                            "{} has not reported for {:.0} s; last known: {}{}",
                            r.node,
                            view.silent.as_secs_f32(),
                            reported.as_str().replace('_', " "),
                            if r.ready { ", ready" } else { "" },
                        )),
                    ),
                    _ => (reported, r.ready, r.message),
                };
                Instance {
                    name: r.name,
                    revision: r.revision,
                    ordinal: r.ordinal.and_then(|o| u32::try_from(o).ok()),
                    node: Some(r.node),
                    address,
                    phase,
                    ready,
                    restarts: u32::try_from(r.restarts).unwrap_or(0),
                    cpu_millis: r.cpu_millis.and_then(|v| u32::try_from(v).ok()),
                    memory_mib: r.memory_mib.and_then(|v| u32::try_from(v).ok()),
                    message,
                    since: r.observed_at.unwrap_or(r.created_at),
                }
            })
            .collect()
    }

    /// What wakes waiting agents and routers; [`Self::listen`] feeds it.
    pub fn changes(&self) -> changes::Changes {
        self.changes.clone()
    }

    /// Hears the database's change notifications until `shutdown` turns true, and
    /// wakes the agents and routers waiting on what changed.
    pub async fn listen(self: std::sync::Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.changes
            .clone()
            .listen(self.pool.clone(), shutdown)
            .await;
    }

    /// Where the routers serve their traffic counters, and the token they require:
    /// the autoscaler's requests-per-second and latency rules read them.
    #[must_use]
    pub fn with_router_metrics(mut self, urls: Vec<String>, token: Option<String>) -> Self {
        self.traffic = std::sync::Arc::new(traffic::RouterTraffic::new(urls, token));
        self
    }

    /// Where the router's stable TCP addresses are: its host and the ports it may give
    /// applications.
    #[must_use]
    pub fn with_router(mut self, host: &str, ports: (u16, u16)) -> Self {
        self.router_host = host.to_owned();
        self.router_ports = ports;
        self
    }

    /// Sets how long fenced instances (stateful ordinals) keep running after their
    /// node's last heartbeat.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.timing.lease_ttl = ttl;
        self.timing.margin = margin_for(ttl);
        self
    }

    /// Sets how long a node may be silent before its stateless instances are replaced.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.timing.grace = grace;
        self
    }

    /// Whether the control plane has been up long enough to judge nodes lost.
    fn judged(&self) -> bool {
        self.started.elapsed() >= self.timing.grace
    }

    /// The nodes the workload's instances are on, as the fencing rules see them.
    async fn nodes_of<'e>(
        &self,
        ex: impl sqlx::PgExecutor<'e>,
        instances: &[InstanceRow],
    ) -> Result<NodesSeen, RuntimeError> {
        let names = node_names(instances.iter());
        if names.is_empty() {
            // A workload with no instance yet (a new one): no node to read.
            return Ok(NodesSeen::new());
        }
        Ok(store::node_views(ex, Some(&names))
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|n| (n.name.clone(), SeenNode::of(&n)))
            .collect())
    }

    /// What becomes of instances on nodes that stopped reporting: stateless ones are
    /// replaced after the grace period (`lost`), stateful ordinals wait for their node or
    /// for an operator (`waiting`, with why; see `fencing`).
    fn verdicts(
        &self,
        workload: &Workload,
        existing: &[InstanceRow],
        nodes: &NodesSeen,
    ) -> (Vec<Uuid>, Vec<(String, String)>) {
        let stateful = workload.kind == WorkloadKind::Stateful;
        let judged = self.judged();
        let mut lost: Vec<Uuid> = Vec::new();
        let mut waiting: Vec<(String, String)> = Vec::new();
        for i in existing.iter().filter(|i| i.desired == Wanted::Run) {
            let Some(node) = nodes.get(&i.node) else {
                continue;
            };
            match fencing::verdict(stateful, &i.node, node.view, self.timing, judged) {
                Verdict::Keep => {}
                Verdict::Replace => lost.push(i.id),
                Verdict::Wait(why) => waiting.push((i.name.clone(), why)),
            }
        }
        (lost, waiting)
    }

    /// Judges every node's condition from its heartbeats and records each change as a
    /// node event. The heartbeat itself records a return to ready at once.
    pub async fn judge_nodes(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        for n in store::node_views(&mut *conn, None).await? {
            let view = node_view(&n);
            let condition = fencing::condition(view, self.timing);
            if condition.as_str() == n.condition {
                continue;
            }
            let silent = view.silent.as_secs_f32();
            let (reason, message) = match condition {
                Condition::Ready => continue,
                Condition::NotReady => (
                    "NotReady",
                    format!(
                        "no heartbeat for {silent:.1} s: its instances are unknown and nothing new is placed there"
                    ),
                ),
                Condition::Lost => (
                    "Lost",
                    format!(
                        "no heartbeat for {silent:.0} s: its stateless instances are replaced elsewhere; stateful ones wait for it"
                    ),
                ),
            };
            if store::set_node_condition(&mut conn, &n.name, condition.as_str(), n.last_heartbeat)
                .await?
            {
                tracing::warn!(node = %n.name, condition = condition.as_str(), silent_s = silent, "node condition changed");
                store::append_node_event(&mut conn, &n.name, reason, &message).await?;
            }
        }
        Ok(())
    }

    /// Judges nodes every half second until `shutdown` turns true.
    pub async fn watch_nodes(
        self: std::sync::Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.judge_nodes().await {
                tracing::debug!(error = %e, "nodes not judged this time");
            }
        }
    }

    /// The secret agents and the router present (the control plane presents it to
    /// agents in turn).
    pub fn agent_token(&self) -> &str {
        &self.agent_token
    }

    /// Records an event of a node (its agent died, ...).
    pub async fn record_node_event(
        &self,
        node: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        store::append_node_event(&mut conn, node, reason, message).await?;
        Ok(())
    }

    /// Registers (or re-registers) a node and issues its agent a new credential (the
    /// one it had stops working).
    pub async fn register(&self, r: &Registration) -> Result<Registered, AgentError> {
        let valid_name = (1..=63).contains(&r.name.len())
            && r.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(AgentError::Invalid(
                "node names are 1 to 63 lowercase letters, digits or '-'".into(),
            ));
        }
        if r.capacity.cpu_millis == 0 || r.capacity.memory_mib == 0 || r.address.is_empty() {
            return Err(AgentError::Invalid(
                "capacity and address are required".into(),
            ));
        }
        let labels =
            serde_json::to_value(&r.labels).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let secret = platform_core::auth::tokens::random_token();
        let credential = format!("{}:{secret}", r.name);
        let credential_hash = sha256_hex(&credential);
        let mut tx = self.pool.begin().await?;
        let before = store::upsert_node(
            &mut tx,
            &store::NodeRegistration {
                name: &r.name,
                labels: &labels,
                cpu_millis: i32::try_from(r.capacity.cpu_millis).unwrap_or(i32::MAX),
                memory_mib: i32::try_from(r.capacity.memory_mib).unwrap_or(i32::MAX),
                address: &r.address,
                api_port: i32::from(r.api_port),
                heartbeat_ms: i32::try_from(r.heartbeat_ms.unwrap_or(200).clamp(50, 60_000))
                    .unwrap_or(200),
                credential_hash: &credential_hash,
            },
        )
        .await?;
        let message = match before.as_deref() {
            None => "registered".to_owned(),
            Some("ready") => "its agent registered again".to_owned(),
            Some(was) => format!(
                "its agent registered again (it was {})",
                was.replace('_', " ")
            ),
        };
        store::append_node_event(&mut tx, &r.name, "Registered", &message).await?;
        tx.commit().await?;
        tracing::info!(node = %r.name, labels = ?r.labels, "node registered");
        Ok(Registered { credential })
    }

    /// The node a credential speaks for, if it is one the control plane issued (the
    /// credential names its node; its hash is compared in constant time).
    pub async fn authenticate_node(&self, credential: &str) -> Result<Option<String>, sqlx::Error> {
        let Some((node, _)) = credential.split_once(':') else {
            return Ok(None);
        };
        let Some(expected) = store::node_credential_hash(&self.pool, node).await? else {
            return Ok(None);
        };
        let presented = sha256_hex(credential);
        let same = presented.len() == expected.len()
            && presented
                .bytes()
                .zip(expected.bytes())
                .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        Ok(same.then(|| node.to_owned()))
    }

    /// Takes a node's report and answers with its assignments. Every change it observes
    /// becomes an event on the application.
    /// Takes an agent's heartbeat: records what it reports, then answers with what
    /// its node should run. When the agent already holds the current assignments
    /// (`beat.version`), the answer waits up to `beat.wait_ms` for them to change
    /// (a long poll) and says `unchanged` if they did not.
    pub async fn heartbeat(&self, node: &str, beat: &Heartbeat) -> Result<Assignments, AgentError> {
        // Subscribed before anything is read, so a change from now on wakes the wait.
        let mut wake = self.changes.node(node);
        self.record(node, beat).await?;
        let reported: Vec<Uuid> = beat.instances.iter().map(|r| r.id).collect();
        let lease_ttl_ms =
            Some(u64::try_from(self.timing.lease_ttl.as_millis()).unwrap_or(u64::MAX));
        let wait = Duration::from_millis(beat.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let instances = self.assignments(node, &reported).await?;
            let purges: Vec<Purge> = store::purges(&self.pool, node)
                .await?
                .into_iter()
                .map(|p| Purge {
                    app_id: p.application_id,
                    key: WorkloadKey {
                        tenant: p.tenant,
                        environment: p.environment,
                        app: p.app,
                    },
                })
                .collect();
            let version = assignments_version(&instances, &purges);
            if beat.version.as_deref() != Some(version.as_str()) {
                return Ok(Assignments {
                    instances,
                    version: Some(version),
                    unchanged: false,
                    lease_ttl_ms,
                    purges,
                });
            }
            match tokio::time::timeout_at(deadline, wake.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time (or the control plane is stopping): nothing changed.
                Ok(Err(_)) | Err(_) => {
                    return Ok(Assignments {
                        instances: Vec::new(),
                        version: Some(version),
                        unchanged: true,
                        lease_ttl_ms,
                        purges: Vec::new(),
                    });
                }
            }
        }
    }

    /// Stores a heartbeat's observations. A heartbeat and an apply lock some of the
    /// same instance rows; when PostgreSQL breaks a deadlock between them by failing
    /// one, the heartbeat's transaction is simply run again (the apply is retried by
    /// the next reconcile), so the node never looks silent for it.
    async fn record(&self, node: &str, beat: &Heartbeat) -> Result<(), AgentError> {
        let mut attempts = 0;
        loop {
            match self.record_once(node, beat).await {
                Err(AgentError::Store(sqlx::Error::Database(e)))
                    if attempts < 3 && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    attempts += 1;
                    tracing::debug!(node, attempts, "heartbeat deadlocked; storing it again");
                }
                other => return other,
            }
        }
    }

    async fn record_once(&self, node: &str, beat: &Heartbeat) -> Result<(), AgentError> {
        let mut tx = self.pool.begin().await?;
        let Some(before) = store::touch_node(&mut tx, node).await? else {
            return Err(AgentError::UnknownNode(node.to_owned()));
        };
        if before != "ready" {
            let message = format!("heartbeats again (it was {})", before.replace('_', " "));
            store::append_node_event(&mut tx, node, "Ready", &message).await?;
            tracing::info!(node, "node ready again");
        }
        let observations: Vec<Observation> = beat
            .instances
            .iter()
            .map(|report| Observation {
                id: report.id,
                phase: report.phase,
                ready: report.ready,
                restarts: i32::try_from(report.restarts).unwrap_or(i32::MAX),
                port: report.port.map(i32::from),
                ports: serde_json::to_value(&report.ports).unwrap_or_default(),
                message: report.message.clone(),
                cpu_millis: report.cpu_millis.and_then(|v| i32::try_from(v).ok()),
                memory_mib: report.memory_mib.and_then(|v| i32::try_from(v).ok()),
            })
            .collect();
        for before in store::observe_all(&mut tx, node, &observations).await? {
            let Some(report) = beat.instances.iter().find(|r| r.id == before.id) else {
                continue;
            };
            for (reason, message) in transitions(&before, report) {
                platform_core::store::runtime::append_event(
                    &mut tx,
                    before.application_id,
                    Some(&before.name),
                    reason,
                    &message,
                )
                .await?;
            }
        }
        store::acknowledge_purges(&mut tx, node, &beat.purged).await?;
        let reported: Vec<Uuid> = beat.instances.iter().map(|r| r.id).collect();
        for gone in store::forget_stopped(&mut tx, node, &reported).await? {
            let message = format!("stopped on {node}");
            platform_core::store::runtime::append_event(
                &mut tx,
                gone.application_id,
                Some(&gone.name),
                "Stopped",
                &message,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What a node should run. Secrets and addresses go only with an instance the
    /// agent does not report yet (one it is about to start).
    async fn assignments(
        &self,
        node: &str,
        reported: &[Uuid],
    ) -> Result<Vec<Assignment>, AgentError> {
        let rows = store::assignments(&self.pool, node).await?;
        let mut instances = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(spec) = serde_json::from_value(row.spec) else {
                continue;
            };
            let desired = Desired::from(row.desired);
            // Secrets and addresses go only to an agent about to start the instance.
            let starting = desired == Desired::Run && !reported.contains(&row.id);
            let secrets = if starting {
                platform_core::platform::secrets::of_revision(
                    &self.pool,
                    &self.master,
                    row.application_id,
                    &row.secrets,
                )
                .await
                .map_err(|e| AgentError::Secrets(e.to_string()))?
            } else {
                BTreeMap::new()
            };
            let mut spec: AppSpec = spec;
            if starting {
                let ports = store::router_ports(&self.pool, row.application_id).await?;
                let ordinal = row.ordinal.and_then(|o| u32::try_from(o).ok());
                for (name, value) in self.address_env(&spec, ordinal, &ports) {
                    // What the application's own spec says wins.
                    spec.env.entry(name).or_insert(value);
                }
            }
            instances.push(Assignment {
                id: row.id,
                name: row.name,
                key: WorkloadKey {
                    tenant: row.tenant,
                    environment: row.environment,
                    app: row.app,
                },
                app_id: Some(row.application_id),
                revision: row.revision,
                ordinal: row.ordinal.and_then(|o| u32::try_from(o).ok()),
                desired,
                spec,
                uid: u32::try_from(row.uid).ok(),
                secrets,
            });
        }
        Ok(instances)
    }

    /// A package archive's bytes, for the agent of `node` to unpack: only a package an
    /// instance placed on that node runs.
    pub async fn package(&self, node: &str, digest: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        if !store::package_assigned(&self.pool, node, digest).await? {
            return Ok(None);
        }
        platform_core::store::packages::content(&self.pool, digest).await
    }

    /// The route table: every application with at least one ready instance. Instances
    /// on nodes that went silent are kept as fallbacks.
    /// The route table and its version, once it differs from the version the router
    /// holds (`since`): at once when it already does, else when it changes within
    /// `wait`; `None` when it did not.
    pub async fn routes_since(
        &self,
        since: Option<&str>,
        wait: Duration,
    ) -> Result<Option<(RouteTable, String)>, sqlx::Error> {
        let mut wake = self.changes.routes();
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_millis(MAX_WAIT_MS));
        loop {
            let table = self.routes().await?;
            let version = changes::version_of(&table);
            if since != Some(version.as_str()) {
                return Ok(Some((table, version)));
            }
            match tokio::time::timeout_at(deadline, wake.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(None),
            }
        }
    }

    pub async fn routes(&self) -> Result<RouteTable, sqlx::Error> {
        let mut routes: Vec<Route> = Vec::new();
        for row in store::routes(&self.pool).await? {
            let key = WorkloadKey {
                tenant: row.tenant,
                environment: row.environment,
                app: row.app,
            };
            let backend = format!("{}:{}", row.address, row.port);
            let heartbeat = Duration::from_millis(u64::try_from(row.heartbeat_ms).unwrap_or(200));
            let silent = Duration::from_millis(u64::try_from(row.silent_ms).unwrap_or(0));
            let preferred = silent < Timing::not_ready_after(heartbeat);
            if routes.last().is_none_or(|last| last.key != key) {
                routes.push(Route {
                    key,
                    backends: Vec::new(),
                    fallback: Vec::new(),
                    canary: row.split_revision.map(|revision| CanaryRoute {
                        revision,
                        weight: row.split_weight.and_then(|w| u32::try_from(w).ok()),
                        backends: Vec::new(),
                    }),
                });
            }
            if let Some(last) = routes.last_mut() {
                match &mut last.canary {
                    // The canary's instances on ready nodes are its own backends (on a
                    // silent node, a last resort like any other).
                    Some(c) if c.revision == row.revision && preferred => c.backends.push(backend),
                    _ if preferred => last.backends.push(backend),
                    _ => last.fallback.push(backend),
                }
            }
        }
        let mut tcp: Vec<TcpRoute> = Vec::new();
        for row in store::tcp_routes(&self.pool).await? {
            let Ok(port) = u16::try_from(row.listen) else {
                continue;
            };
            if tcp.last().is_none_or(|last| last.port != port) {
                tcp.push(TcpRoute {
                    port,
                    key: WorkloadKey {
                        tenant: row.tenant,
                        environment: row.environment,
                        app: row.app,
                    },
                    port_name: row.port_name,
                    ordinal: u32::try_from(row.ordinal).ok(),
                    backends: Vec::new(),
                    fallback: Vec::new(),
                });
            }
            if let (Some(last), Some(host), Some(target)) = (tcp.last_mut(), row.address, row.port)
            {
                let heartbeat = Duration::from_millis(
                    row.heartbeat_ms
                        .and_then(|h| u64::try_from(h).ok())
                        .unwrap_or(200),
                );
                let silent = Duration::from_millis(
                    row.silent_ms
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                );
                let backend = format!("{host}:{target}");
                if silent < Timing::not_ready_after(heartbeat) {
                    last.backends.push(backend);
                } else {
                    last.fallback.push(backend);
                }
            }
        }
        Ok(RouteTable { routes, tcp })
    }

    /// The stable router ports an application's shape needs: per TCP port, and per
    /// ordinal and port of a stateful application.
    fn wanted_router_ports(workload: &Workload) -> Vec<(String, i32)> {
        let Some(newest) = workload.revisions.iter().max_by_key(|r| r.revision) else {
            return Vec::new();
        };
        let mut wanted: Vec<(String, i32)> = newest
            .spec
            .ports
            .iter()
            .filter(|p| p.protocol == platform_core::spec::PortProtocol::Tcp)
            .map(|p| (p.name.clone(), -1))
            .collect();
        if workload.kind == WorkloadKind::Stateful {
            let ordinals: std::collections::BTreeSet<u32> = workload
                .revisions
                .iter()
                .flat_map(|r| match &r.slots {
                    Slots::Ordinals(o) => o.clone(),
                    _ => Vec::new(),
                })
                .collect();
            for port in &newest.spec.ports {
                for o in &ordinals {
                    wanted.push((port.name.clone(), i32::try_from(*o).unwrap_or(i32::MAX)));
                }
            }
        }
        wanted
    }

    /// The environment a new instance gets to find its application's stable addresses
    /// and its peers: `PAAS_ENDPOINT_<PORT>` per TCP port, and for a stateful one
    /// `PAAS_ORDINAL`, `PAAS_PEER_<N>` (each ordinal's address on its first port) and
    /// `PAAS_PEERS` (all of them, by ordinal).
    fn address_env(
        &self,
        spec: &AppSpec,
        ordinal: Option<u32>,
        ports: &[store::RouterPortRow],
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let var = |name: &str| name.to_uppercase().replace('-', "_");
        for p in ports.iter().filter(|p| p.ordinal < 0) {
            env.insert(
                format!("PAAS_ENDPOINT_{}", var(&p.port_name)),
                format!("{}:{}", self.router_host, p.port),
            );
        }
        if let Some(o) = ordinal {
            env.insert("PAAS_ORDINAL".to_owned(), o.to_string());
            if let Some(first) = spec.ports.first() {
                let peers: Vec<(i32, String)> = ports
                    .iter()
                    .filter(|p| p.ordinal >= 0 && p.port_name == first.name)
                    .map(|p| (p.ordinal, format!("{}:{}", self.router_host, p.port)))
                    .collect();
                for (n, address) in &peers {
                    env.insert(format!("PAAS_PEER_{n}"), address.clone());
                }
                env.insert(
                    "PAAS_PEERS".to_owned(),
                    peers
                        .iter()
                        .map(|(_, a)| a.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
        env
    }

    /// A cron workload: its schedule, its finished runs' history, and on suspension
    /// its active run.
    async fn apply_cron(&self, workload: &Workload) -> Result<(), RuntimeError> {
        let key = &workload.key;
        let current = workload.revisions.iter().max_by_key(|r| r.revision);
        let parallelism = match current.map(|r| &r.slots) {
            Some(Slots::Count(n)) => *n,
            _ => 0,
        };
        let run = current.filter(|_| parallelism > 0).map(|shape| CronRun {
            key: key.clone(),
            shape: shape.clone(),
            parallelism,
            placement: workload.placement.clone(),
            timing: self.timing,
        });
        self.cron.sync(key, run, &self.pool).await?;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some((app_id, _)) = platform_core::store::runtime::lock_application(
            &mut tx,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        else {
            return Err(RuntimeError::NotFound {
                kind: "application",
                name: key.to_string(),
            });
        };
        let existing: Vec<InstanceRow> = store::instances_of(&mut *tx, app_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|i| i.desired == Wanted::Run)
            .collect();
        let mut to_stop = beyond_history(&existing, CRON_HISTORY * parallelism.max(1) as usize);
        if parallelism == 0 {
            to_stop.extend(existing.iter().filter(|i| !is_finished(i)).map(|i| i.id));
        }
        store::mark_stop(&mut tx, &to_stop)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

/// What applying a workload comes to, given its instances and their nodes' verdicts.
#[derive(Debug, Default)]
struct Plan {
    /// Instances on lost nodes, replaced elsewhere.
    lost: Vec<Uuid>,
    /// Instances waiting for their node or an operator, and why.
    waiting: Vec<(String, String)>,
    to_stop: Vec<Uuid>,
    /// Revision, ordinal, node and request of each instance to start.
    to_create: Vec<(i32, Option<u32>, String, Resources)>,
    unschedulable: Option<String>,
}

impl Plan {
    /// Nothing to do and nothing to say.
    fn is_empty(&self) -> bool {
        self.lost.is_empty()
            && self.waiting.is_empty()
            && self.to_stop.is_empty()
            && self.to_create.is_empty()
            && self.unschedulable.is_none()
    }
}

/// The workload's instances on drained nodes, to be moved (a daemon's stay, as a
/// DaemonSet's do; a cron run finishes where it is).
fn drained(
    workload: &Workload,
    existing: &[InstanceRow],
    nodes: &NodesSeen,
    lost: &[Uuid],
) -> Vec<Uuid> {
    if matches!(workload.kind, WorkloadKind::Daemon | WorkloadKind::Cronjob) {
        return Vec::new();
    }
    existing
        .iter()
        .filter(|i| i.desired == Wanted::Run && !lost.contains(&i.id))
        .filter(|i| nodes.get(&i.node).is_some_and(|n| n.draining))
        .map(|i| i.id)
        .collect()
}

/// Whether some revision has fewer instances (or ordinals) than its shape asks for,
/// so that nodes' loads are needed.
fn placing(workload: &Workload, existing: &[InstanceRow], lost: &[Uuid], drained: &[Uuid]) -> bool {
    if !drained.is_empty() {
        return true;
    }
    let live: Vec<&InstanceRow> = existing
        .iter()
        .filter(|i| i.desired == Wanted::Run && !lost.contains(&i.id))
        .collect();
    workload.revisions.iter().any(|shape| {
        let mine = live.iter().filter(|i| i.revision == shape.revision).count();
        match &shape.slots {
            Slots::Count(n) => mine < *n as usize,
            Slots::Ordinals(ordinals) => ordinals
                .iter()
                .any(|o| !live.iter().any(|i| i.ordinal == Some(*o as i32))),
            Slots::EveryNode => true,
        }
    })
}

/// The instances to stop and to start so that `existing` takes the workload's shapes,
/// placing new ones on `nodes` (charged as they are chosen). Pure.
fn plan(
    workload: &Workload,
    existing: &[InstanceRow],
    lost: Vec<Uuid>,
    mut waiting: Vec<(String, String)>,
    drained: &[Uuid],
    nodes: &mut [NodeLoad],
) -> Plan {
    let budget = workload.placement.rules.disruption_budget;
    let mut moved_ordinal = false;
    let live: Vec<&InstanceRow> = existing
        .iter()
        .filter(|i| i.desired == Wanted::Run && !lost.contains(&i.id))
        .collect();
    let mut to_stop: Vec<Uuid> = lost.clone();
    let mut to_create: Vec<(i32, Option<u32>, String, Resources)> = Vec::new();
    let mut unschedulable: Option<String> = None;

    let shaped: Vec<i32> = workload.revisions.iter().map(|r| r.revision).collect();
    to_stop.extend(
        live.iter()
            .filter(|i| !shaped.contains(&i.revision))
            .map(|i| i.id),
    );

    // The nodes of the instances this step stops, which an in-place revision's new
    // instances take.
    let mut freed: Vec<String> = Vec::new();
    if workload.revisions.iter().any(|r| r.in_place) {
        freed.extend(
            live.iter()
                .filter(|i| !shaped.contains(&i.revision))
                .map(|i| i.node.clone()),
        );
        for shape in workload.revisions.iter().filter(|r| !r.in_place) {
            if let Slots::Count(n) = &shape.slots {
                let mine: Vec<&InstanceRow> = live
                    .iter()
                    .copied()
                    .filter(|i| i.revision == shape.revision)
                    .collect();
                freed.extend(surplus(&mine, *n as usize).iter().map(|i| i.node.clone()));
            }
        }
    }

    for shape in &workload.revisions {
        let mine: Vec<&InstanceRow> = live
            .iter()
            .copied()
            .filter(|i| i.revision == shape.revision)
            .collect();
        let request = shape.spec.resources;
        match &shape.slots {
            Slots::Count(n) => {
                let n = *n as usize;
                let (leaving, staying): (Vec<&InstanceRow>, Vec<&InstanceRow>) =
                    mine.iter().partition(|i| drained.contains(&i.id));
                let mut start = n.saturating_sub(mine.len());
                let mut fallback = None;
                if leaving.is_empty() {
                    to_stop.extend(surplus(&mine, n).iter().map(|i| i.id));
                } else {
                    let step = drain_step(&staying, &leaving, n, budget);
                    for i in &step.stop {
                        to_stop.push(i.id);
                        discharge(nodes, &i.node, request);
                    }
                    start = step.start;
                    fallback = step.fallback.map(|i| (i, step.blocked));
                }
                for _ in 0..start {
                    if shape.in_place
                        && let Some(node) = freed.pop()
                    {
                        to_create.push((shape.revision, None, node.clone(), request));
                        charge(nodes, &node, request);
                        continue;
                    }
                    let chosen = match choose(
                        nodes,
                        &workload.placement,
                        &workload.key.app,
                        request,
                    ) {
                        Err(no_room) if fallback.is_some() => {
                            // The replacement has no room beside the instance it
                            // replaces: the instance stops first, if its budget allows.
                            match fallback.take() {
                                Some((leaver, None)) => {
                                    to_stop.push(leaver.id);
                                    discharge(nodes, &leaver.node, request);
                                    choose(nodes, &workload.placement, &workload.key.app, request)
                                }
                                Some((leaver, Some(budget_says))) => {
                                    waiting.push((
                                        leaver.name.clone(),
                                        format!(
                                            "the drain of {} waits: its replacement has no room ({no_room}) and {budget_says}",
                                            leaver.node
                                        ),
                                    ));
                                    break;
                                }
                                None => Err(no_room),
                            }
                        }
                        other => other,
                    };
                    match chosen {
                        Ok(node) => {
                            let name = node.name.clone();
                            to_create.push((shape.revision, None, name.clone(), request));
                            charge(nodes, &name, request);
                        }
                        Err(e) => {
                            unschedulable = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            Slots::Ordinals(ordinals) => {
                for ordinal in ordinals {
                    let holder = live.iter().find(|i| i.ordinal == Some(*ordinal as i32));
                    match holder {
                        Some(i) if i.revision == shape.revision && drained.contains(&i.id) => {
                            // Its data directory stays on the drained node: the ordinal
                            // moves (stopping first) only when its budget allows one down
                            // and no other ordinal is on its way.
                            let others_ready =
                                mine.iter().filter(|o| o.id != i.id && o.ready).count();
                            let settled = mine.iter().all(|o| o.ready) && !moved_ordinal;
                            let allowed = budget.map_or(0, |b| b.min_available as usize);
                            let within = budget.is_some() && others_ready >= allowed;
                            if !(settled && within) {
                                waiting.push((
                                    i.name.clone(),
                                    format!(
                                        "the drain of {} waits: ordinal {ordinal} stops before it moves (its data directory stays on {}), which {}",
                                        i.node,
                                        i.node,
                                        if budget.is_none() {
                                            "needs a disruption budget (placement.disruption_budget.min_available)".to_owned()
                                        } else if !within {
                                            format!("its budget allows only with {allowed} others ready ({others_ready} are)")
                                        } else {
                                            "waits for the other ordinals to be ready".to_owned()
                                        }
                                    ),
                                ));
                                continue;
                            }
                            discharge(nodes, &i.node, request);
                            match choose(nodes, &workload.placement, &workload.key.app, request) {
                                Ok(_) => {
                                    // It stops now; its successor starts elsewhere once
                                    // this process is gone (never two of one ordinal).
                                    to_stop.push(i.id);
                                    moved_ordinal = true;
                                }
                                Err(e) => {
                                    charge(nodes, &i.node, request);
                                    waiting.push((
                                        i.name.clone(),
                                        format!("the drain of {} waits: ordinal {ordinal} has nowhere to go ({e})", i.node),
                                    ));
                                }
                            }
                        }
                        Some(i) if i.revision == shape.revision => {}
                        Some(i) => {
                            // In place: the new revision takes the ordinal on the same
                            // node (its data directory lives there).
                            to_stop.push(i.id);
                            to_create.push((
                                shape.revision,
                                Some(*ordinal),
                                i.node.clone(),
                                request,
                            ));
                        }
                        None => {
                            // A stopped instance of the ordinal whose node still reports
                            // may still run: its successor waits until it is gone.
                            if let Some(old) = existing.iter().find(|x| {
                                x.ordinal == Some(*ordinal as i32)
                                    && x.desired == Wanted::Stop
                                    && nodes.iter().any(|n| n.name == x.node && n.healthy)
                            }) {
                                waiting.push((
                                    old.name.clone(),
                                    format!(
                                        "ordinal {ordinal} starts again once its previous instance has stopped on {}",
                                        old.node
                                    ),
                                ));
                                continue;
                            }
                            match choose(nodes, &workload.placement, &workload.key.app, request) {
                                Ok(node) => {
                                    let name = node.name.clone();
                                    to_create.push((
                                        shape.revision,
                                        Some(*ordinal),
                                        name.clone(),
                                        request,
                                    ));
                                    charge(nodes, &name, request);
                                }
                                Err(e) => unschedulable = Some(e.to_string()),
                            }
                        }
                    }
                }
                let wanted: Vec<i32> = workload
                    .revisions
                    .iter()
                    .flat_map(|r| match &r.slots {
                        Slots::Ordinals(o) => o.iter().map(|x| *x as i32).collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                to_stop.extend(
                    mine.iter()
                        .filter(|i| i.ordinal.is_none_or(|o| !wanted.contains(&o)))
                        .map(|i| i.id),
                );
            }
            Slots::EveryNode => {
                for node in nodes.iter() {
                    let matches = node.healthy
                        && workload
                            .placement
                            .node_selector
                            .iter()
                            .all(|(k, v)| node.labels.get(k) == Some(v));
                    let present = mine.iter().any(|i| i.node == node.name);
                    if matches && !present {
                        to_create.push((shape.revision, None, node.name.clone(), request));
                    }
                }
            }
        }
    }
    Plan {
        lost,
        waiting,
        to_stop,
        to_create,
        unschedulable,
    }
}

/// One pass of moving an application's instances off drained nodes.
#[derive(Debug)]
struct DrainStep<'a> {
    /// Drained instances that may stop now, and staying ones beyond the count.
    stop: Vec<&'a InstanceRow>,
    /// Instances to start: replacements of those stopped, or one ahead of a move.
    start: usize,
    /// When the one started ahead finds no room: the instance that stops first instead,
    /// with why it may not (its budget) or `None` when it may.
    fallback: Option<&'a InstanceRow>,
    blocked: Option<String>,
}

/// How `n` instances move off drained nodes (`leaving`), one at a time: a replacement
/// starts beside the others, and an instance leaves once the others keep `n` ready.
/// When a replacement has no room beside the instance it replaces (one per zone, say),
/// that instance stops first, if `budget` keeps enough others ready. Pure.
fn drain_step<'a>(
    staying: &[&'a InstanceRow],
    leaving: &[&'a InstanceRow],
    n: usize,
    budget: Option<platform_core::placement_spec::DisruptionBudget>,
) -> DrainStep<'a> {
    let mut stop: Vec<&InstanceRow> = surplus(staying, n);
    let kept = staying.len().min(n);
    let ready_staying = staying.iter().filter(|i| i.ready).count().min(n);
    // Unready drained instances serve nothing: they go at once.
    let (ready_leaving, unready_leaving): (Vec<&InstanceRow>, Vec<&InstanceRow>) =
        leaving.iter().partition(|i| i.ready);
    stop.extend(&unready_leaving);
    // Ready ones go while the others keep `n` ready.
    let spare = (ready_staying + ready_leaving.len()).saturating_sub(n);
    let going = spare.min(ready_leaving.len());
    stop.extend(&ready_leaving[..going]);
    let remaining = &ready_leaving[going..];
    let mut start = n.saturating_sub(kept + remaining.len());
    let settled = staying.iter().all(|i| i.ready);
    let mut fallback = None;
    let mut blocked = None;
    if start == 0 && !remaining.is_empty() && settled && kept < n {
        start = 1;
        fallback = remaining.first().copied();
        let available = ready_staying + remaining.len();
        let min = budget.map_or(n, |b| b.min_available as usize);
        if available.saturating_sub(1) < min {
            blocked = Some(match budget {
                None => "the application has no disruption budget, so none of its instances may be down (placement.disruption_budget.min_available)".to_owned(),
                Some(b) => format!(
                    "its disruption budget keeps {} ready and {available} are",
                    b.min_available
                ),
            });
        }
    }
    DrainStep {
        stop,
        start,
        fallback,
        blocked,
    }
}

/// The instances beyond `n` to stop, the least useful first: not ready, then newest.
fn surplus<'a>(mine: &[&'a InstanceRow], n: usize) -> Vec<&'a InstanceRow> {
    if mine.len() <= n {
        return Vec::new();
    }
    let mut ranked = mine.to_vec();
    ranked.sort_by_key(|i| (i.ready, std::cmp::Reverse(i.created_at)));
    ranked.truncate(mine.len() - n);
    ranked
}

/// How many finished runs of a cron job are kept (with their logs).
pub const CRON_HISTORY: usize = 3;

fn is_finished(i: &InstanceRow) -> bool {
    matches!(i.phase, Phase::Succeeded | Phase::Failed)
}

/// The finished instances of a cron workload beyond the newest `keep`.
fn beyond_history(instances: &[InstanceRow], keep: usize) -> Vec<Uuid> {
    let mut finished: Vec<&InstanceRow> = instances
        .iter()
        .filter(|i| i.desired == Wanted::Run && is_finished(i))
        .collect();
    finished.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    finished.iter().skip(keep).map(|i| i.id).collect()
}

/// Locks the workload's application for the rest of the transaction and reads its
/// instances: (application id, tenant id, instances).
async fn lock_workload(
    conn: &mut sqlx::PgConnection,
    key: &WorkloadKey,
) -> Result<(Uuid, Uuid, Vec<InstanceRow>), RuntimeError> {
    let (app_id, tenant_id) = platform_core::store::runtime::lock_application(
        &mut *conn,
        &key.tenant,
        &key.environment,
        &key.app,
    )
    .await
    .map_err(unavailable)?
    .ok_or_else(|| RuntimeError::NotFound {
        kind: "application",
        name: key.to_string(),
    })?;
    let existing = store::instances_of(&mut *conn, app_id)
        .await
        .map_err(unavailable)?;
    Ok((app_id, tenant_id, existing))
}

/// Places one run of a cron workload, unless the previous one is still active.
pub(crate) async fn start_cron_run(pool: &PgPool, run: &CronRun) -> Result<(), RuntimeError> {
    let timing = run.timing;
    let key = &run.key;
    let mut tx = pool.begin().await.map_err(unavailable)?;
    let (app_id, tenant_id, existing) = lock_workload(&mut tx, key).await?;
    let active = existing
        .iter()
        .find(|i| i.desired == Wanted::Run && !is_finished(i));
    if let Some(active) = active {
        platform_core::store::runtime::append_event(
            &mut tx,
            app_id,
            Some(&active.name),
            "Skipped",
            "scheduled run skipped: the previous run is still active",
        )
        .await
        .map_err(unavailable)?;
        return tx.commit().await.map_err(unavailable);
    }
    // This run will push one more into the history: keep room for it.
    let parallelism = run.parallelism.max(1) as usize;
    // Nothing is active here, so every kept instance is a finished run.
    let forget = beyond_history(&existing, (CRON_HISTORY - 1) * parallelism);
    store::mark_stop(&mut tx, &forget)
        .await
        .map_err(unavailable)?;
    store::lock_placement(&mut tx).await.map_err(unavailable)?;
    let mut nodes = node_loads(&existing, &mut tx, timing)
        .await
        .map_err(unavailable)?;
    if run.placement.rules.names_others(&key.app) {
        count_neighbours(&mut nodes, &mut tx, app_id)
            .await
            .map_err(unavailable)?;
    }
    let request = run.shape.spec.resources;
    for _ in 0..run.parallelism {
        let node = match choose(&nodes, &run.placement, &key.app, request) {
            Ok(node) => node.name.clone(),
            Err(e) => {
                platform_core::store::runtime::append_event(
                    &mut tx,
                    app_id,
                    None,
                    "Unschedulable",
                    &format!("scheduled run not placed: {e}"),
                )
                .await
                .map_err(unavailable)?;
                break;
            }
        };
        charge(&mut nodes, &node, request);
        let name = instance_name(
            &key.app,
            run.shape.revision,
            None,
            WorkloadKind::Cronjob,
            &node,
        );
        let message = format!(
            "scheduled run of revision {} placed on {node}",
            run.shape.revision
        );
        let new = NewInstance::of(
            app_id,
            tenant_id,
            run.shape.revision,
            None,
            &name,
            &node,
            request,
        );
        place(&mut tx, new, &message).await?;
    }
    tx.commit().await.map_err(unavailable)
}

/// Every node and what is placed on it, counting `instances` (the workload's, already
/// read).
async fn node_loads(
    instances: &[InstanceRow],
    conn: &mut sqlx::PgConnection,
    timing: Timing,
) -> Result<Vec<NodeLoad>, sqlx::Error> {
    let rows = store::nodes(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|n| NodeLoad {
            healthy: fencing::condition(node_view(&n), timing) == Condition::Ready,
            workload_instances: workload_instances(instances, &n.name),
            apps: BTreeMap::new(),
            cordoned: n.cordoned,
            labels: serde_json::from_value(n.labels).unwrap_or_default(),
            capacity: Resources {
                cpu_millis: u32::try_from(n.cpu_millis).unwrap_or(0),
                memory_mib: u32::try_from(n.memory_mib).unwrap_or(0),
            },
            requested: Resources {
                cpu_millis: u32::try_from(n.cpu_requested).unwrap_or(u32::MAX),
                memory_mib: u32::try_from(n.memory_requested).unwrap_or(u32::MAX),
            },
            name: n.name,
        })
        .collect())
}

/// How many of the workload's `instances` should run on `node`.
fn workload_instances(instances: &[InstanceRow], node: &str) -> u32 {
    instances
        .iter()
        .filter(|i| i.node == node && i.desired == Wanted::Run)
        .count() as u32
}

/// What a plan's new instances ask of each node: (node, CPU millis, memory MiB).
fn room_wanted(to_create: &[(i32, Option<u32>, String, Resources)]) -> Vec<(String, i64, i64)> {
    let mut wanted: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (_, _, node, request) in to_create {
        let w = wanted.entry(node.as_str()).or_default();
        w.0 += i64::from(request.cpu_millis);
        w.1 += i64::from(request.memory_mib);
    }
    wanted
        .into_iter()
        .map(|(node, (cpu, memory))| (node.to_owned(), cpu, memory))
        .collect()
}

/// Adds the instances of the environment's other applications to the nodes' loads.
async fn count_neighbours(
    nodes: &mut [NodeLoad],
    conn: &mut sqlx::PgConnection,
    app_id: Uuid,
) -> Result<(), sqlx::Error> {
    for (node, app, count) in store::neighbours(conn, app_id).await? {
        if let Some(n) = nodes.iter_mut().find(|n| n.name == node) {
            n.apps.insert(app, u32::try_from(count).unwrap_or(u32::MAX));
        }
    }
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What fencing needs to know of a node row.
fn node_view(n: &store::NodeRow) -> NodeView {
    NodeView {
        silent: (n.now - n.last_heartbeat).to_std().unwrap_or_default(),
        heartbeat: Duration::from_millis(u64::try_from(n.heartbeat_ms).unwrap_or(200)),
        confirmed_lost: n.confirmed_lost_at.is_some(),
    }
}

/// The margin added to a lease before an ordinal may start elsewhere: a quarter of
/// the lease, at least two seconds.
fn margin_for(lease_ttl: Duration) -> Duration {
    (lease_ttl / 4).max(Duration::from_secs(2))
}

/// The events between what was known of an instance and what its agent now reports.
fn transitions(before: &InstanceRow, now: &InstanceReport) -> Vec<(&'static str, String)> {
    let mut events = Vec::new();
    let was = before.phase;
    if was == Phase::Pending && now.phase != Phase::Pending {
        events.push(("Started", format!("process started on {}", before.node)));
    }
    let restarted = now.restarts > u32::try_from(before.restarts).unwrap_or(0);
    // A first crash is restarted at once, so a report may never show the back-off
    // phase; the restart count still proves the crash, which must not go unrecorded.
    if restarted && was != Phase::BackOff && now.phase != Phase::BackOff {
        events.push((
            "Crashed",
            "the process exited and was restarted at once".to_owned(),
        ));
    }
    if restarted {
        events.push((
            "Restarted",
            format!("restarted (restart #{})", now.restarts),
        ));
    }
    if now.phase != was {
        match now.phase {
            Phase::BackOff => events.push((
                "Crashed",
                now.message.clone().unwrap_or_else(|| "exited".to_owned()),
            )),
            Phase::Failed => events.push((
                "Failed",
                now.message.clone().unwrap_or_else(|| "failed".to_owned()),
            )),
            Phase::Succeeded => events.push(("Completed", "ran to completion".to_owned())),
            _ => {}
        }
    }
    if now.ready && !before.ready {
        events.push((
            "Ready",
            "passes its readiness check; receives traffic".to_owned(),
        ));
    }
    if !now.ready && before.ready && now.phase == Phase::Running {
        events.push((
            "NotReady",
            now.message
                .clone()
                .unwrap_or_else(|| "failed its readiness check".to_owned()),
        ));
    }
    events
}

fn instance_name(
    app: &str,
    revision: i32,
    ordinal: Option<u32>,
    kind: WorkloadKind,
    node: &str,
) -> String {
    match (ordinal, kind) {
        (Some(o), _) => format!("{app}-{o}"),
        (None, WorkloadKind::Daemon) => format!("{app}-{node}"),
        (None, _) => {
            let suffix = Uuid::new_v4().simple().to_string();
            format!("{app}-r{revision}-{}", &suffix[..6])
        }
    }
}

#[async_trait::async_trait]
impl Runtime for LocalRuntime {
    fn check(&self, spec: &AppSpec) -> Result<(), platform_core::FieldError> {
        if spec.command.trim().is_empty() {
            return Err(platform_core::FieldError::new(
                "spec.command",
                "is required: this environment runs on the local runtime, which runs processes (an image alone cannot run here)",
            ));
        }
        Ok(())
    }

    fn secrets_in_workload(&self) -> bool {
        // Agents get them with an instance's assignment, only when they start it.
        false
    }

    async fn apply(&self, workload: &Workload) -> Result<(), RuntimeError> {
        if workload.kind == WorkloadKind::Cronjob {
            return self.apply_cron(workload).await;
        }
        self.apply_split(workload).await?;
        let key = &workload.key;
        // Most passes find a workload as it should be: read without a lock, and only
        // when something is to change, again under the application's lock.
        let wants_ports = !Self::wanted_router_ports(workload).is_empty();
        let seen = match self.recall(key) {
            Some(seen) => Some(seen),
            None if !wants_ports => self.read_seen(key).await?,
            None => None,
        };
        if !wants_ports
            && let Some(Seen {
                instances: existing,
                nodes,
                ..
            }) = seen
        {
            let (lost, waiting) = self.verdicts(workload, &existing, &nodes);
            let drained = drained(workload, &existing, &nodes, &lost);
            if !placing(workload, &existing, &lost, &drained)
                && plan(
                    workload,
                    &existing,
                    lost,
                    waiting,
                    &drained,
                    &mut Vec::new(),
                )
                .is_empty()
            {
                return Ok(());
            }
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let (app_id, tenant_id, existing) = lock_workload(&mut tx, key).await?;
        let nodes_seen = self.nodes_of(&mut *tx, &existing).await?;
        let stateful = workload.kind == WorkloadKind::Stateful;
        let (lost, waiting) = self.verdicts(workload, &existing, &nodes_seen);
        let drained = drained(workload, &existing, &nodes_seen, &lost);
        // Every node and its load is read only when something is to be placed: a
        // workload that already has its instances costs a pass two small queries.
        // Placements are serialized by the placement lock, held until commit. To hold
        // it briefly, a workload whose rules name only itself is planned on the nodes as
        // read a moment before the lock (`early_loads`), and under the lock only the
        // chosen nodes' condition and room are checked again; when another placement took it meanwhile, the workload is
        // planned again under the lock. Rules that name other applications count their
        // instances, which only the lock holds still: those are read under it.
        let placing = placing(workload, &existing, &lost, &drained);
        let others = workload.placement.rules.names_others(&key.app);
        let mut planned = None;
        if placing && !others {
            let mut nodes = self
                .early_loads(&existing, &mut tx)
                .await
                .map_err(unavailable)?;
            let early = plan(
                workload,
                &existing,
                lost.clone(),
                waiting.clone(),
                &drained,
                &mut nodes,
            );
            // The next early plans of this control plane, concurrent ones included,
            // count these placements at once, so that a burst spreads instead of
            // choosing the nodes that were least loaded a moment ago. Should the check
            // below fail, the nodes are charged for a while for nothing, which only
            // moves preferences.
            self.charge_early(&early.to_create);
            store::lock_placement(&mut tx).await.map_err(unavailable)?;
            // A plan that could not place everything is made again on what the lock
            // holds still: room may have been freed meanwhile.
            let wanted = room_wanted(&early.to_create);
            if early.unschedulable.is_none()
                && store::room_holds(&mut *tx, &wanted)
                    .await
                    .map_err(unavailable)?
            {
                planned = Some(early);
            }
        } else if placing {
            store::lock_placement(&mut tx).await.map_err(unavailable)?;
        }
        let planned_early = planned.is_some();
        let planned = match planned {
            Some(planned) => planned,
            None => {
                let mut nodes = if placing {
                    let mut nodes = node_loads(&existing, &mut tx, self.timing)
                        .await
                        .map_err(unavailable)?;
                    if others {
                        count_neighbours(&mut nodes, &mut tx, app_id)
                            .await
                            .map_err(unavailable)?;
                    }
                    nodes
                } else {
                    Vec::new()
                };
                plan(workload, &existing, lost, waiting, &drained, &mut nodes)
            }
        };
        let Plan {
            lost,
            waiting,
            mut to_stop,
            to_create,
            unschedulable,
        } = planned;
        to_stop.sort();
        to_stop.dedup();
        if !to_stop.is_empty() {
            store::mark_stop(&mut tx, &to_stop)
                .await
                .map_err(unavailable)?;
            for id in &to_stop {
                if let Some(i) = existing.iter().find(|i| i.id == *id) {
                    platform_core::store::runtime::append_event(
                        &mut tx,
                        app_id,
                        Some(&i.name),
                        "Stopping",
                        &format!("stopping on {}", i.node),
                    )
                    .await
                    .map_err(unavailable)?;
                }
            }
        }
        // Every new instance and its `Scheduled` event in two statements, whatever
        // their number.
        let names: Vec<String> = to_create
            .iter()
            .map(|(revision, ordinal, node, _)| {
                instance_name(&key.app, *revision, *ordinal, workload.kind, node)
            })
            .collect();
        let new: Vec<NewInstance<'_>> = to_create
            .iter()
            .zip(&names)
            .map(|((revision, ordinal, node, request), name)| {
                NewInstance::of(app_id, tenant_id, *revision, *ordinal, name, node, *request)
            })
            .collect();
        if !new.is_empty() {
            store::insert_instances(&mut tx, &new)
                .await
                .map_err(unavailable)?;
            let messages: Vec<String> = to_create
                .iter()
                .map(|(revision, _, node, _)| format!("revision {revision} placed on {node}"))
                .collect();
            platform_core::store::runtime::append_events(
                &mut tx,
                app_id,
                &names,
                "Scheduled",
                &messages,
            )
            .await
            .map_err(unavailable)?;
        }
        if let Some(why) = &unschedulable {
            let message = format!("not every instance can be placed: {why}");
            say_once(&mut tx, app_id, None, "Unschedulable", &message).await?;
        }
        for (name, why) in &waiting {
            say_once(&mut tx, app_id, Some(name), "Waiting", why).await?;
        }
        let wanted = Self::wanted_router_ports(workload);
        if !wanted.is_empty() {
            let have: Vec<(String, i32)> = store::router_ports(&mut *tx, app_id)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|p| (p.port_name, p.ordinal))
                .collect();
            let missing: Vec<(String, i32)> =
                wanted.into_iter().filter(|w| !have.contains(w)).collect();
            let range = (
                i32::from(self.router_ports.0),
                i32::from(self.router_ports.1),
            );
            if !missing.is_empty()
                && !store::allocate_router_ports(&mut tx, app_id, &missing, range)
                    .await
                    .map_err(unavailable)?
            {
                let message = format!(
                    "no free router port in {}-{}: some TCP ports have no stable address",
                    range.0, range.1
                );
                say_once(&mut tx, app_id, None, "Unroutable", &message).await?;
            }
        }
        for id in &lost {
            if let Some(i) = existing.iter().find(|i| i.id == *id) {
                let message = if stateful {
                    format!(
                        "{} was confirmed lost: the ordinal starts on another node with an empty data directory (its data stays on {})",
                        i.node, i.node
                    )
                } else {
                    format!(
                        "{} stopped reporting: the instance is replaced on another node",
                        i.node
                    )
                };
                platform_core::store::runtime::append_event(
                    &mut tx,
                    app_id,
                    Some(&i.name),
                    "Moved",
                    &message,
                )
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        // A plan made under the lock is counted once placed (an early one already is).
        if !planned_early {
            self.charge_early(&to_create);
        }
        match unschedulable {
            Some(why) => Err(RuntimeError::Unschedulable(why)),
            None => Ok(()),
        }
    }

    async fn remove(&self, key: &WorkloadKey) -> Result<(), RuntimeError> {
        self.cron.sync(key, None, &self.pool).await?;
        let Some(app_id) = platform_core::store::runtime::application_id(
            &self.pool,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let live: Vec<Uuid> = store::instances_of(&mut *tx, app_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|i| i.desired == Wanted::Run)
            .map(|i| i.id)
            .collect();
        store::mark_stop(&mut tx, &live)
            .await
            .map_err(unavailable)?;
        // A deleted application's stable addresses are freed; one that is only
        // restarted keeps them.
        if platform_core::store::runtime::lock_application(
            &mut tx,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        .is_none()
        {
            store::release_router_ports(&mut tx, app_id)
                .await
                .map_err(unavailable)?;
            // Its files go from every node once its instances there have stopped.
            store::add_purges(&mut tx, app_id)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn traffic(
        &self,
        key: &WorkloadKey,
        window: Duration,
    ) -> Option<platform_core::runtime::Traffic> {
        self.traffic.of(key, window).await
    }

    async fn canary_traffic(
        &self,
        key: &WorkloadKey,
        window: Duration,
    ) -> Option<platform_core::runtime::CanaryTraffic> {
        self.traffic.canary_of(key, window).await
    }

    async fn instances(&self, key: &WorkloadKey) -> Result<Vec<Instance>, RuntimeError> {
        let Some(seen) = self.read_seen(key).await? else {
            return Ok(Vec::new());
        };
        let instances = self.as_instances(&seen);
        self.remember(key, seen);
        Ok(instances)
    }

    async fn instances_of_many(
        &self,
        keys: &[WorkloadKey],
    ) -> Result<Vec<Vec<Instance>>, RuntimeError> {
        let named: Vec<(String, String, String)> = keys
            .iter()
            .map(|k| (k.tenant.clone(), k.environment.clone(), k.app.clone()))
            .collect();
        let rows = store::instances_of_keys(&self.pool, &named)
            .await
            .map_err(unavailable)?;
        let names = node_names(rows.iter().map(|(_, r)| r));
        let all_nodes: NodesSeen = store::node_views(&self.pool, Some(&names))
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|n| (n.name.clone(), SeenNode::of(&n)))
            .collect();
        let at = std::time::Instant::now();
        let mut by_key: Vec<Vec<InstanceRow>> = vec![Vec::new(); keys.len()];
        for (index, row) in rows {
            if let Some(list) = usize::try_from(index).ok().and_then(|i| by_key.get_mut(i)) {
                list.push(row);
            }
        }
        let mut all = Vec::with_capacity(keys.len());
        for (key, instances) in keys.iter().zip(by_key) {
            let nodes = instances
                .iter()
                .filter_map(|i| all_nodes.get_key_value(&i.node))
                .map(|(name, node)| (name.clone(), node.clone()))
                .collect();
            let seen = Seen {
                at,
                instances,
                nodes,
            };
            all.push(self.as_instances(&seen));
            self.remember(key, seen);
        }
        Ok(all)
    }

    async fn nodes(&self) -> Result<Vec<Node>, RuntimeError> {
        let rows = store::nodes(&self.pool)
            .await
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|n| {
                let view = node_view(&n);
                let condition = fencing::condition(view, self.timing);
                let message = match (condition, n.confirmed_lost_at) {
                    (Condition::Ready, _) => None,
                    (_, Some(at)) => Some(format!(
                        "confirmed lost at {}",
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    )),
                    (_, None) => Some(format!(
                        "no heartbeat for {:.0} s",
                        view.silent.as_secs_f32()
                    )),
                };
                Node {
                    labels: serde_json::from_value(n.labels).unwrap_or_default(),
                    capacity: Resources {
                        cpu_millis: u32::try_from(n.cpu_millis).unwrap_or(0),
                        memory_mib: u32::try_from(n.memory_mib).unwrap_or(0),
                    },
                    allocated: Some(Resources {
                        cpu_millis: u32::try_from(n.cpu_requested).unwrap_or(u32::MAX),
                        memory_mib: u32::try_from(n.memory_requested).unwrap_or(u32::MAX),
                    }),
                    healthy: condition == Condition::Ready,
                    cordoned: n.cordoned,
                    draining: n.draining_since.is_some(),
                    condition: condition.as_str().to_owned(),
                    message,
                    last_seen: Some(n.last_heartbeat),
                    name: n.name,
                }
            })
            .collect())
    }

    async fn endpoints(
        &self,
        key: &WorkloadKey,
        _spec: &AppSpec,
        _replicas: u32,
    ) -> Result<Vec<Endpoint>, RuntimeError> {
        let Some(app_id) = platform_core::store::runtime::application_id(
            &self.pool,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        else {
            return Ok(Vec::new());
        };
        Ok(store::router_ports(&self.pool, app_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|p| Endpoint {
                port: p.port_name,
                ordinal: u32::try_from(p.ordinal).ok(),
                address: format!("{}:{}", self.router_host, p.port),
            })
            .collect())
    }

    async fn node_events(&self, limit: usize) -> Result<Vec<NodeEvent>, RuntimeError> {
        let rows = store::node_events(&self.pool, i64::try_from(limit).unwrap_or(100))
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| NodeEvent {
                id: r.id,
                node: r.node,
                at: r.at,
                reason: r.reason,
                message: r.message,
            })
            .collect())
    }

    async fn set_cordoned(&self, node: &str, cordoned: bool) -> Result<bool, RuntimeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let changed = store::set_cordoned(&mut tx, node, cordoned)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "node",
                name: node.to_owned(),
            })?;
        if changed {
            let (reason, message) = if cordoned {
                (
                    "Cordoned",
                    "cordoned by a platform administrator: it takes no new instances",
                )
            } else {
                ("Uncordoned", "uncordoned: it takes new instances again")
            };
            store::append_node_event(&mut tx, node, reason, message)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }

    async fn drain(&self, node: &str) -> Result<bool, RuntimeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let changed = store::set_draining(&mut tx, node)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "node",
                name: node.to_owned(),
            })?;
        if changed {
            store::append_node_event(
                &mut tx,
                node,
                "Draining",
                "drained by a platform administrator: its instances move elsewhere, one at a time per application, within each application's disruption budget",
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(changed)
    }

    async fn confirm_node_lost(&self, node: &str) -> Result<NodeLoss, RuntimeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(row) = store::nodes(&mut *tx)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|n| n.name == node)
        else {
            return Err(RuntimeError::NotFound {
                kind: "node",
                name: node.to_owned(),
            });
        };
        let view = node_view(&row);
        if fencing::condition(view, self.timing) == Condition::Ready {
            return Err(RuntimeError::Conflict(format!(
                "{node} reported {:.1} s ago: it is not lost",
                view.silent.as_secs_f32()
            )));
        }
        store::confirm_node_lost(&mut tx, node)
            .await
            .map_err(unavailable)?;
        let stateful_moved: Vec<String> = store::stateful_on(&mut *tx, node)
            .await
            .map_err(unavailable)?;
        let wait = (self.timing.lease_ttl + self.timing.margin).saturating_sub(view.silent);
        let moves_after =
            row.now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::zero());
        let message = if stateful_moved.is_empty() {
            "confirmed lost by a platform administrator: its instances start elsewhere".to_owned()
        } else {
            format!(
                "confirmed lost by a platform administrator: its instances start elsewhere; stateful ones ({}) without the data they left there, from {}",
                stateful_moved.join(", "),
                moves_after.format("%H:%M:%S UTC")
            )
        };
        store::append_node_event(&mut tx, node, "ConfirmedLost", &message)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        tracing::warn!(node, stateful = stateful_moved.len(), "node confirmed lost");
        Ok(NodeLoss {
            node: node.to_owned(),
            stateful_moved,
            moves_after,
        })
    }

    async fn logs(
        &self,
        key: &WorkloadKey,
        instance: &str,
        tail: usize,
    ) -> Result<Vec<String>, RuntimeError> {
        // Logs stay on the node that wrote them; they are read from its agent.
        let not_found = || RuntimeError::NotFound {
            kind: "instance",
            name: instance.to_owned(),
        };
        let app_id = platform_core::store::runtime::application_id(
            &self.pool,
            &key.tenant,
            &key.environment,
            &key.app,
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
        let rows = store::instances_of(&self.pool, app_id)
            .await
            .map_err(unavailable)?;
        let row = rows
            .into_iter()
            .find(|r| r.name == instance)
            .ok_or_else(not_found)?;
        let nodes = store::node_views(&self.pool, Some(std::slice::from_ref(&row.node)))
            .await
            .map_err(unavailable)?;
        let node = nodes
            .into_iter()
            .find(|n| n.name == row.node)
            .ok_or_else(not_found)?;
        if node.api_port == 0 {
            return Err(RuntimeError::Unavailable(format!(
                "node {} does not serve logs",
                node.name
            )));
        }
        let url = format!(
            "http://{}:{}/v1/instances/{}/logs?tail={tail}",
            node.address, node.api_port, row.id
        );
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.agent_token)
            .send()
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!("node {} did not answer: {e}", node.name))
            })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(not_found());
        }
        let response = response
            .error_for_status()
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))?;
        response
            .json::<Vec<String>>()
            .await
            .map_err(|e| RuntimeError::Other(e.to_string()))
    }
}

/// Appends an event unless it is among the application's latest already: a condition
/// that lasts is said once, not at every tick.
async fn say_once(
    tx: &mut sqlx::PgConnection,
    app_id: Uuid,
    instance: Option<&str>,
    reason: &str,
    message: &str,
) -> Result<(), RuntimeError> {
    let said =
        platform_core::store::runtime::said_recently(&mut *tx, app_id, instance, reason, message)
            .await
            .map_err(unavailable)?;
    if !said {
        platform_core::store::runtime::append_event(tx, app_id, instance, reason, message)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Records a new instance and its `Scheduled` event.
async fn place(
    tx: &mut sqlx::PgConnection,
    new: NewInstance<'_>,
    message: &str,
) -> Result<(), RuntimeError> {
    let (app_id, name) = (new.application_id, new.name);
    store::insert_instance(&mut *tx, new)
        .await
        .map_err(unavailable)?;
    platform_core::store::runtime::append_event(tx, app_id, Some(name), "Scheduled", message)
        .await
        .map_err(unavailable)
}

fn unavailable(e: sqlx::Error) -> RuntimeError {
    RuntimeError::Unavailable(e.to_string())
}

fn discharge(nodes: &mut [NodeLoad], name: &str, request: Resources) {
    if let Some(n) = nodes.iter_mut().find(|n| n.name == name) {
        n.discharge(request);
    }
}

fn charge(nodes: &mut [NodeLoad], name: &str, request: Resources) {
    if let Some(n) = nodes.iter_mut().find(|n| n.name == name) {
        n.charge(request);
    }
}

/// Nodes by name, for callers that need an agent's address.
pub async fn node_addresses(pool: &PgPool) -> Result<HashMap<String, String>, sqlx::Error> {
    Ok(store::node_views(pool, None)
        .await?
        .into_iter()
        .map(|n| (n.name, n.address))
        .collect())
}

#[cfg(test)]
mod tests {
    use platform_core::runtime::{Placement, RevisionShape};

    use super::*;

    fn row(revision: i32, node: &str, ready: bool, age_s: i64) -> InstanceRow {
        InstanceRow {
            id: Uuid::new_v4(),
            application_id: Uuid::nil(),
            revision,
            ordinal: None,
            name: format!("web-r{revision}-{node}"),
            node: node.to_owned(),
            desired: Wanted::Run,
            cpu_request: 100,
            memory_request: 128,
            created_at: chrono::Utc::now() - chrono::Duration::seconds(age_s),
            phase: Phase::Running,
            ready,
            restarts: 0,
            port: Some(8000),
            message: None,
            cpu_millis: None,
            memory_mib: None,
            observed_at: None,
        }
    }

    fn node(name: &str, placed: u32) -> NodeLoad {
        NodeLoad {
            name: name.to_owned(),
            labels: BTreeMap::from([("zone".to_owned(), name.to_owned())]),
            capacity: Resources {
                cpu_millis: 4000,
                memory_mib: 8192,
            },
            requested: Resources {
                cpu_millis: 100 * placed,
                memory_mib: 128 * placed,
            },
            healthy: true,
            workload_instances: placed,
            apps: BTreeMap::new(),
            cordoned: false,
        }
    }

    fn workload(target: u32, stable: u32, in_place: bool) -> Workload {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({"command": "true"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let shape = |revision, n, in_place| RevisionShape {
            revision,
            spec: spec.clone(),
            slots: Slots::Count(n),
            weight: None,
            in_place,
            secrets: BTreeMap::new(),
        };
        Workload {
            key: WorkloadKey {
                tenant: "acme".into(),
                environment: "dev".into(),
                app: "web".into(),
            },
            kind: WorkloadKind::Service,
            revisions: vec![shape(2, target, in_place), shape(1, stable, false)],
            placement: Placement::standard(),
        }
    }

    #[test]
    fn an_in_place_instance_takes_the_node_its_predecessor_leaves_however_busy() {
        // Node a is the busiest; its instance is the one that goes (the newest), so its
        // successor starts there, not on the idle node c.
        let existing = [row(1, "a", true, 10), row(1, "b", true, 60)];
        let mut nodes = [node("a", 3), node("b", 1), node("c", 0)];
        let p = plan(
            &workload(1, 1, true),
            &existing,
            Vec::new(),
            Vec::new(),
            &[],
            &mut nodes,
        );
        assert_eq!(p.to_stop, vec![existing[0].id]);
        let placed: Vec<&str> = p.to_create.iter().map(|(_, _, n, _)| n.as_str()).collect();
        assert_eq!(placed, ["a"]);
        // A rolling step places by load: the idle node.
        let mut nodes = [node("a", 3), node("b", 1), node("c", 0)];
        let p = plan(
            &workload(1, 1, false),
            &existing,
            Vec::new(),
            Vec::new(),
            &[],
            &mut nodes,
        );
        let placed: Vec<&str> = p.to_create.iter().map(|(_, _, n, _)| n.as_str()).collect();
        assert_eq!(placed, ["c"]);
    }

    /// Runs passes of `plan` over a workload of `n` instances of revision 1 while node
    /// `d` is drained; a started instance is ready by the next pass. Returns the fewest
    /// ready instances seen between passes, the passes taken, and what waited.
    fn drain_passes(
        n: u32,
        mut existing: Vec<InstanceRow>,
        mut nodes: Vec<NodeLoad>,
        rules: serde_json::Value,
    ) -> (usize, usize, Vec<String>) {
        let mut w = workload(n, 0, false);
        w.revisions.truncate(1);
        w.revisions[0].revision = 1;
        w.placement.rules = serde_json::from_value(rules).unwrap_or_else(|e| panic!("{e}"));
        let mut fewest = usize::MAX;
        let mut waited = Vec::new();
        for pass in 1..=20 {
            for load in &mut nodes {
                load.workload_instances =
                    existing.iter().filter(|i| i.node == load.name).count() as u32;
                load.cordoned = load.name == "d";
            }
            let drained: Vec<Uuid> = existing
                .iter()
                .filter(|i| i.node == "d")
                .map(|i| i.id)
                .collect();
            if drained.is_empty() {
                return (fewest, pass - 1, waited);
            }
            let p = plan(&w, &existing, Vec::new(), Vec::new(), &drained, &mut nodes);
            waited.extend(p.waiting.iter().map(|(_, why)| why.clone()));
            existing.retain(|i| !p.to_stop.contains(&i.id));
            // What serves while the new ones start.
            fewest = fewest.min(existing.iter().filter(|i| i.ready).count());
            for i in &mut existing {
                i.ready = true;
            }
            for (revision, _, node, _) in &p.to_create {
                existing.push(row(*revision, node, false, 0));
            }
            if p.to_stop.is_empty() && p.to_create.is_empty() {
                return (fewest, pass, waited);
            }
        }
        (fewest, 20, waited)
    }

    fn zoned(name: &str, zone: &str) -> NodeLoad {
        let mut n = node(name, 0);
        n.labels = BTreeMap::from([("zone".to_owned(), zone.to_owned())]);
        n
    }

    #[test]
    fn a_drain_moves_one_instance_at_a_time_and_stops_first_only_within_the_budget() {
        use serde_json::json;
        // Room elsewhere: each replacement starts before its instance stops, so three
        // stay ready throughout, and both of d's instances leave.
        let existing = vec![
            row(1, "d", true, 60),
            row(1, "d", true, 50),
            row(1, "b", true, 40),
        ];
        let nodes = vec![node("b", 0), node("c", 0), node("d", 0)];
        let (fewest, passes, waited) = drain_passes(3, existing.clone(), nodes.clone(), json!({}));
        assert_eq!(fewest, 3, "never below the replica count");
        assert!(passes <= 5, "{passes} passes");
        assert!(waited.is_empty(), "{waited:?}");

        // One per zone over three zones, zone a's other node free: a replacement has no
        // room while the instance it replaces is in zone a. Without a budget the drain
        // waits and says why; with min_available 2 the instance stops first.
        let one_per_zone = json!({"app_anti_affinity": [{"apps": ["self"], "topology": "zone", "required": true}]});
        let existing = vec![
            row(1, "d", true, 60),
            row(1, "b", true, 50),
            row(1, "c", true, 40),
        ];
        let nodes = vec![
            zoned("b", "b"),
            zoned("c", "c"),
            zoned("d", "a"),
            zoned("e", "a"),
        ];
        let (_, passes, waited) =
            drain_passes(3, existing.clone(), nodes.clone(), one_per_zone.clone());
        assert_eq!(passes, 1, "nothing moves");
        assert!(
            waited
                .iter()
                .any(|w| w.contains("no disruption budget") && w.contains("one instance per zone")),
            "{waited:?}"
        );
        let mut budgeted = one_per_zone.clone();
        budgeted["disruption_budget"] = json!({"min_available": 2});
        let (fewest, passes, waited) = drain_passes(3, existing.clone(), nodes.clone(), budgeted);
        assert_eq!(fewest, 2, "one down, as the budget allows");
        assert!(passes <= 3, "{passes} passes");
        assert!(waited.is_empty(), "{waited:?}");
        // A budget of 3 allows none down: it waits, and says so.
        let mut strict = one_per_zone;
        strict["disruption_budget"] = json!({"min_available": 3});
        let (_, _, waited) = drain_passes(3, existing, nodes, strict);
        assert!(
            waited.iter().any(|w| w.contains("keeps 3 ready and 3 are")),
            "{waited:?}"
        );
    }

    #[test]
    fn a_drained_ordinal_stops_first_and_starts_elsewhere_only_once_it_is_gone() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "command": "true", "kind": "stateful",
            "placement": {"disruption_budget": {"min_available": 0}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let w = Workload {
            key: WorkloadKey {
                tenant: "acme".into(),
                environment: "dev".into(),
                app: "db".into(),
            },
            kind: WorkloadKind::Stateful,
            revisions: vec![RevisionShape {
                revision: 1,
                spec: spec.clone(),
                slots: Slots::Ordinals(vec![0]),
                weight: None,
                in_place: false,
                secrets: BTreeMap::new(),
            }],
            placement: Placement {
                rules: spec.placement.clone(),
                ..Placement::standard()
            },
        };
        let mut db0 = row(1, "d", true, 60);
        db0.ordinal = Some(0);
        let mut nodes = [node("d", 1), node("e", 0)];
        nodes[0].cordoned = true;
        // Pass 1: it stops, nothing starts yet.
        let p = plan(
            &w,
            std::slice::from_ref(&db0),
            Vec::new(),
            Vec::new(),
            &[db0.id],
            &mut nodes,
        );
        assert_eq!(p.to_stop, vec![db0.id]);
        assert!(p.to_create.is_empty(), "{:?}", p.to_create);
        // While its process still runs on d, the successor waits, and says why.
        db0.desired = Wanted::Stop;
        let p = plan(
            &w,
            std::slice::from_ref(&db0),
            Vec::new(),
            Vec::new(),
            &[],
            &mut nodes,
        );
        assert!(p.to_create.is_empty());
        assert!(
            p.waiting
                .iter()
                .any(|(_, why)| why.contains("once its previous instance has stopped on d"))
        );
        // Gone: ordinal 0 starts on e.
        let p = plan(&w, &[], Vec::new(), Vec::new(), &[], &mut nodes);
        let placed: Vec<(Option<u32>, &str)> = p
            .to_create
            .iter()
            .map(|(_, o, n, _)| (*o, n.as_str()))
            .collect();
        assert_eq!(placed, [(Some(0), "e")]);
    }
}
