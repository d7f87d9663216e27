//! The protocol between the control plane and a node: what an agent registers and
//! reports, the instances it is assigned, and the route table the router serves.
//! The control plane's driver (`runtime-local`) and the node's agent and router both
//! use these types, so the two sides cannot drift apart.

use std::collections::BTreeMap;

use platform_spec::secret::SecretValue;
use platform_spec::spec::{AppSpec, Resources};
use platform_spec::workload::{Phase, WorkloadKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an agent says when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// The host its instances' ports are reachable on.
    pub address: String,
    /// The port of the agent's own API (instance logs) on that host.
    #[serde(default)]
    pub api_port: u16,
    /// How often the agent heartbeats: a node that misses a few is not ready.
    #[serde(default)]
    pub heartbeat_ms: Option<u32>,
}

/// The control plane's answer to a registration: the credential the agent presents
/// from then on (`<node>:<secret>`), which speaks for its node only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Registered {
    pub credential: String,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").finish_non_exhaustive()
    }
}

/// An agent's periodic report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub instances: Vec<InstanceReport>,
    /// The version of the assignments the agent holds: when they are still current,
    /// the control plane holds the answer until they change or `wait_ms` passes.
    #[serde(default)]
    pub version: Option<String>,
    /// How long the control plane may hold the answer (a long poll); at most the
    /// agent's heartbeat period, so the node keeps counting as alive.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// The deleted applications whose files this node has removed (acknowledging the
    /// [`Purge`]s it was sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purged: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    pub id: Uuid,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
    /// The first port (what the router sends HTTP to).
    pub port: Option<u16>,
    /// Every port by name (TCP routes, peers).
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    pub message: Option<String>,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
}

/// Whether an assigned instance should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Run,
    Stop,
}

/// One instance a node is responsible for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub id: Uuid,
    pub name: String,
    pub key: WorkloadKey,
    /// The application the instance belongs to: its files on the node are kept under
    /// it, so that an application created again under a deleted one's name never
    /// finds the deleted one's data.
    #[serde(default)]
    pub app_id: Option<Uuid>,
    pub revision: i32,
    pub ordinal: Option<u32>,
    pub desired: Desired,
    pub spec: AppSpec,
    /// The unprivileged identity (uid and gid) the instance runs as: its tenant's on
    /// this platform.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The secrets the instance gets as environment variables. Sent only for an
    /// instance the agent does not have yet (it keeps them in memory, never on disk).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretValue>,
}

/// The agent's instructions, in answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignments {
    /// Every instance the node is responsible for; empty when `unchanged`.
    pub instances: Vec<Assignment>,
    /// The version of these assignments, to send back with the next heartbeat.
    #[serde(default)]
    pub version: Option<String>,
    /// The assignments the agent holds (its `version`) are still current.
    #[serde(default)]
    pub unchanged: bool,
    /// How long a fenced instance's lease lasts from the heartbeat that renewed it.
    #[serde(default)]
    pub lease_ttl_ms: Option<u64>,
    /// Deleted applications whose files (stateful data, logs, kept ports) the node
    /// removes once none of their instances runs there, then acknowledges in its
    /// heartbeats (`purged`) until the control plane stops sending them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purges: Vec<Purge>,
}

/// A deleted application whose files a node removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Purge {
    pub app_id: Uuid,
    pub key: WorkloadKey,
}

/// Where an application's traffic may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub key: WorkloadKey,
    /// `host:port` of each ready instance on a ready node.
    pub backends: Vec<String>,
    /// Instances that were ready when their node last reported, on nodes that have
    /// gone silent: used only when no backend answers (an agent that restarts leaves
    /// its instances serving).
    #[serde(default)]
    pub fallback: Vec<String>,
    /// During a canary release: the canary revision's ready instances (not in
    /// `backends`) and its share of the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRoute>,
}

/// A canary revision's place in its application's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRoute {
    pub revision: i32,
    /// Percent of the requests the canary gets, exactly (the router counts them);
    /// `None`: as many as its share of all the backends.
    pub weight: Option<u32>,
    /// `host:port` of each ready canary instance on a ready node.
    pub backends: Vec<String>,
}

/// A stable TCP address on the router: its port forwards connections to the
/// application's instances listening on `port_name` (only ordinal `ordinal`'s, for a
/// stateful one's per-ordinal address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRoute {
    pub port: u16,
    pub key: WorkloadKey,
    pub port_name: String,
    pub ordinal: Option<u32>,
    /// `host:port` of each ready instance on a ready node.
    pub backends: Vec<String>,
    /// Instances on silent nodes, tried last.
    #[serde(default)]
    pub fallback: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    /// Router ports, each listened on even when no instance is ready (so the address
    /// never moves).
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
}
