//! The runtime port: the one narrow interface between the core and whatever runs
//! instances (the local process runtime, a Kubernetes cluster). Nothing above it knows
//! which driver is in use.
//!
//! The core decides, the runtime converges: the core states a workload's desired shape
//! (its kind, the revisions that should run side by side and how many instances of each,
//! where they may be placed) and the driver makes it so, reporting what it observes.
//! Canaries, rolling upgrades and autoscaling are core logic expressed as successive
//! desired shapes; no driver implements them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::{AppSpec, Resources, WorkloadKind};
use platform_spec::placement::PlacementSpec;

pub use platform_spec::workload::{Phase, WorkloadKey};

/// How many instances of one revision should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Slots {
    /// Interchangeable instances (services, jobs). For a cron job, the instances each
    /// scheduled run starts; zero suspends the schedule.
    Count(u32),
    /// Stateful instances with stable identities: exactly these ordinals run this
    /// revision (an in-place upgrade moves ordinals from one revision to the next).
    Ordinals(Vec<u32>),
    /// One instance on every node that matches the placement (daemons).
    EveryNode,
}

/// One revision of a workload and its share of instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevisionShape {
    pub revision: i32,
    pub spec: AppSpec,
    pub slots: Slots,
    /// The percent of the workload's traffic this revision gets (a canary's step), the
    /// rest going to the other revisions; `None`: traffic follows the instance count. A
    /// runtime that cannot split traffic by weight (Kubernetes, without a mesh) leaves
    /// it to the instance counts the core asks for alongside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// New instances of this revision take the place of the instances of other
    /// revisions stopped in the same step: the same node (an in-place release).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
    /// The revision's secrets, opened, for runtimes that need them in the workload
    /// ([`Runtime::secrets_in_workload`]); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(ignore)]
    pub secrets: BTreeMap<String, crate::sealing::SecretValue>,
}

/// Where instances may and should run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    /// Only nodes carrying all these labels.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Spread instances across the values of this node label (anti-affinity), e.g. `zone`.
    #[serde(default)]
    pub spread_by: Option<String>,
    /// Node affinity, affinity and anti-affinity to applications, topology spread.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_empty")]
    pub rules: PlacementSpec,
    /// When a rule selects applications by label: every application of the
    /// environment (this one's included) with its labels, by name. The local placement
    /// resolves selectors with it; Kubernetes selects pods by their labels itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Placement {
    /// Where an application's instances go unless it says otherwise: any node, spread
    /// across zones.
    pub fn standard() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            spread_by: Some("zone".to_owned()),
            rules: PlacementSpec::default(),
            app_labels: BTreeMap::new(),
        }
    }
}

/// The desired shape of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    pub key: WorkloadKey,
    pub kind: WorkloadKind,
    /// Several revisions may run side by side (during a rollout); each has its slots.
    pub revisions: Vec<RevisionShape>,
    pub placement: Placement,
}

impl Workload {
    /// The total number of instances asked for, where it is a number.
    pub fn desired_count(&self) -> u32 {
        self.revisions
            .iter()
            .map(|r| match &r.slots {
                Slots::Count(n) => *n,
                Slots::Ordinals(o) => u32::try_from(o.len()).unwrap_or(u32::MAX),
                Slots::EveryNode => 0,
            })
            .sum()
    }
}

/// One instance as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Stable within the workload, e.g. `web-r3-7f2c` or `db-0`.
    pub name: String,
    pub revision: i32,
    pub ordinal: Option<u32>,
    pub node: Option<String>,
    /// Where the instance itself listens (`host:port` of its first port), when known:
    /// for peers and diagnosis; clients go through the application's stable address.
    #[serde(default)]
    pub address: Option<String>,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
    /// Why the instance is in its phase, for people (the last log lines of a crash).
    pub message: Option<String>,
    pub since: DateTime<Utc>,
}

/// A workload's traffic over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Over every instance.
    pub requests_per_second: f64,
    /// `None` when no request came.
    pub p95_ms: Option<f64>,
    /// How long the window really was.
    pub window: std::time::Duration,
}

/// A canary revision's traffic beside the stable revision's, over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryTraffic {
    pub canary: crate::releases::canary::Sample,
    pub stable: crate::releases::canary::Sample,
}

/// A node as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// What the node offers instances (its allocatable resources).
    pub capacity: Resources,
    /// The requests of the instances placed on it, where the runtime knows them.
    pub allocated: Option<Resources>,
    /// Ready: new instances may go there.
    pub healthy: bool,
    /// An administrator said it takes no new instances (what runs there stays).
    #[serde(default)]
    pub cordoned: bool,
    /// An administrator drains it: its instances move elsewhere, one at a time per
    /// application, within each application's disruption budget (it is cordoned too).
    #[serde(default)]
    pub draining: bool,
    /// `ready`, `not_ready` or `lost` (the local runtime), or the runtime's own words.
    pub condition: String,
    /// Why it is in its condition, for people.
    pub message: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// A stable address of an application: where clients and peers reach it whatever its
/// instances do (restarts, moves, scaling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    /// The port's name in the spec.
    pub port: String,
    /// For a stateful application's per-ordinal address, the ordinal; `None` for the
    /// application as a whole (any ready instance).
    pub ordinal: Option<u32>,
    /// `host:port`.
    pub address: String,
}

/// Something that happened to a node (its agent died, it went silent, it was
/// confirmed lost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeEvent {
    pub id: i64,
    pub node: String,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub message: String,
}

/// What confirming a node lost sets in motion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeLoss {
    pub node: String,
    /// Stateful instances that will start elsewhere without the data they left on the
    /// node (`tenant/env/app-ordinal`).
    pub stateful_moved: Vec<String>,
    /// When they may start elsewhere: once the node's lease has surely run out.
    pub moves_after: DateTime<Utc>,
}

/// Why a driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The driver cannot reach what runs the instances (an apiserver, the agents).
    #[error("the runtime is unavailable: {0}")]
    Unavailable(String),
    /// The desired shape cannot be met (no node matches, capacity exhausted).
    #[error("the workload cannot be placed: {0}")]
    Unschedulable(String),
    #[error("{kind} '{name}' was not found")]
    NotFound { kind: &'static str, name: String },
    /// The request contradicts what the runtime observes (a node that still reports
    /// cannot be confirmed lost).
    #[error("{0}")]
    Conflict(String),
    /// This runtime does not offer the operation.
    #[error("this runtime does not support {0}")]
    Unsupported(&'static str),
    #[error("runtime failure: {0}")]
    Other(String),
}

/// The runtimes one control plane drives, by the name environments refer to them by
/// (`local`, or a configured cluster's name). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Runtimes {
    by_name: BTreeMap<String, std::sync::Arc<dyn Runtime>>,
}

impl Runtimes {
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, runtime: std::sync::Arc<dyn Runtime>) -> Self {
        self.by_name.insert(name.into(), runtime);
        self
    }

    pub fn get(&self, name: &str) -> Option<&std::sync::Arc<dyn Runtime>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &std::sync::Arc<dyn Runtime>)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Something that happened to an instance, as observed by a runtime that does not
/// record instance events itself (a cluster's pod changes); the core records it as an
/// application event, with the same reasons the local runtime uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceEvent {
    pub key: WorkloadKey,
    pub instance: String,
    /// `Scheduled`, `Started`, `Ready`, `NotReady`, `Crashed`, `Restarted`, `OOMKilled`,
    /// `Evicted`, `Failed`, `Completed`, `Stopping`, `Stopped`.
    pub reason: String,
    pub message: String,
}

/// The port. Implementations are idempotent: applying the same shape twice is the same
/// as applying it once, and every call may be retried.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// Whether this driver can run a spec at all (a pre-flight at create and update):
    /// the field at fault and why, e.g. an image on a runtime that runs processes.
    fn check(&self, spec: &AppSpec) -> Result<(), crate::FieldError>;
    /// Whether `apply` needs each revision's secrets in the workload. A driver that
    /// hands secrets to instances itself, at start, says no (they are then not opened
    /// at every reconcile).
    fn secrets_in_workload(&self) -> bool {
        true
    }
    /// Makes the workload converge on this shape (creating it when absent).
    async fn apply(&self, workload: &Workload) -> Result<(), RuntimeError>;
    /// Stops and forgets every instance of the workload.
    async fn remove(&self, key: &WorkloadKey) -> Result<(), RuntimeError>;
    /// Restarts every instance of the workload a few at a time, keeping it serving,
    /// where the driver can (`Ok(true)`). `Ok(false)`: it cannot, and the core rolls the
    /// instances over through a new revision of the same spec instead.
    async fn restart(&self, key: &WorkloadKey) -> Result<bool, RuntimeError> {
        let _ = key;
        Ok(false)
    }
    /// The workload's instances as they are now.
    async fn instances(&self, key: &WorkloadKey) -> Result<Vec<Instance>, RuntimeError>;
    /// Instance events for the core to record, from a driver that observes them but
    /// does not record them itself (Kubernetes' pod watch); `None` for a driver that
    /// records its own (the local runtime).
    fn instance_events(&self) -> Option<tokio::sync::broadcast::Receiver<InstanceEvent>> {
        None
    }
    /// The workload's request rate and latency over about `window`, where the runtime
    /// itself sees its traffic (the local runtime's router); `None` where it does not
    /// (a PromQL rule reads it from Prometheus instead).
    async fn traffic(&self, key: &WorkloadKey, window: std::time::Duration) -> Option<Traffic> {
        let _ = (key, window);
        None
    }
    /// A canary revision's traffic and the other revisions' over about `window`, for a
    /// canary release's analysis, where the runtime splits and counts it itself (the
    /// local router); `None` where it does not.
    async fn canary_traffic(
        &self,
        key: &WorkloadKey,
        window: std::time::Duration,
    ) -> Option<CanaryTraffic> {
        let _ = (key, window);
        None
    }
    /// The instances of many workloads at once, for a full reconcile pass: a driver
    /// that can read them in a few requests says so here; by default, one `instances`
    /// call per workload.
    async fn instances_of_many(
        &self,
        keys: &[WorkloadKey],
    ) -> Result<Vec<Vec<Instance>>, RuntimeError> {
        let mut all = Vec::with_capacity(keys.len());
        for key in keys {
            all.push(self.instances(key).await?);
        }
        Ok(all)
    }
    /// The nodes instances can run on.
    async fn nodes(&self) -> Result<Vec<Node>, RuntimeError>;
    /// The last `tail` lines an instance wrote (stdout and stderr interleaved).
    async fn logs(
        &self,
        key: &WorkloadKey,
        instance: &str,
        tail: usize,
    ) -> Result<Vec<String>, RuntimeError>;
    /// The application's stable addresses (TCP ports, and per ordinal for a stateful
    /// one), given its spec and replica count.
    async fn endpoints(
        &self,
        key: &WorkloadKey,
        spec: &AppSpec,
        replicas: u32,
    ) -> Result<Vec<Endpoint>, RuntimeError> {
        let _ = (key, spec, replicas);
        Ok(Vec::new())
    }
    /// The most recent events of the runtime's nodes, newest first.
    async fn node_events(&self, limit: usize) -> Result<Vec<NodeEvent>, RuntimeError> {
        let _ = limit;
        Ok(Vec::new())
    }
    /// Cordons a node (no new instances go there) or uncordons it; whether that
    /// changed anything.
    async fn set_cordoned(&self, node: &str, cordoned: bool) -> Result<bool, RuntimeError> {
        let _ = (node, cordoned);
        Err(RuntimeError::Unsupported("cordoning nodes"))
    }
    /// Drains a node: cordons it and moves its instances elsewhere, one at a time per
    /// application, each replacement started before its instance stops unless the
    /// application's disruption budget allows one down (uncordoning ends a drain);
    /// whether that changed anything. The caller checks first that it can finish.
    async fn drain(&self, node: &str) -> Result<bool, RuntimeError> {
        let _ = node;
        Err(RuntimeError::Unsupported("draining nodes"))
    }
    /// An operator's word that a silent node is gone for good: what ran there may run
    /// elsewhere (stateful instances without their node-local data).
    async fn confirm_node_lost(&self, node: &str) -> Result<NodeLoss, RuntimeError> {
        let _ = node;
        Err(RuntimeError::Unsupported("confirming a node lost"))
    }
}
