//! The Kubernetes runtime driver: the runtime port on a cluster.
//!
//! `apply` renders the workload ([`render`]), server-side applies the namespace and
//! every object with the field manager `paas`, then prunes the app's labelled objects
//! it did not render. `instances` reads pods from a watch-fed cache (kube-runtime's
//! reflector) when one runs, otherwise lists them; CPU and memory come from
//! `metrics.k8s.io` when the cluster serves it. `logs` reads `pods/log`.
//!
//! # Failure handling
//! - Conflicts (409), throttling (429) and server errors (5xx) are retried a few
//!   times with backoff inside one call; a lost apiserver connection is reported as
//!   `Unavailable`, which the reconciler retries at its next tick. Nothing is fatal.
//! - The pod watch re-lists on `410 Gone` and backs off on errors (kube-runtime's
//!   watcher); duplicate events are idempotent updates of the cache.

pub mod events;
pub mod observe;
pub mod quantity;
pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use platform_core::FieldError;
use platform_core::runtime::{
    Instance, InstanceEvent, Node, Runtime, RuntimeError, Slots, Workload, WorkloadKey,
};
use platform_core::spec::{AppSpec, WorkloadKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use render::{MANAGED_BY, MANAGER, Object, app_selector, namespace_name};

/// Where a cluster's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSource {
    /// The service account of the pod the control plane runs in.
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

impl ClusterSource {
    /// `in-cluster` or a kubeconfig path.
    pub fn parse(value: &str) -> Self {
        if value == "in-cluster" {
            Self::InCluster
        } else {
            Self::Kubeconfig(PathBuf::from(value))
        }
    }
}

/// How long a call waits for the apiserver before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per call for conflicts, throttling and server errors.
const ATTEMPTS: u32 = 4;

type Usage = HashMap<(String, String), observe::Usage>;

/// The driver. Cheap to clone.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    /// Whether the driver creates the tenant environments' namespaces (it needs the
    /// cluster-wide right to), or finds them made beforehand (e.g. by the chart).
    manage_namespaces: bool,
    /// How long a drain waits before asking again for refused evictions.
    drain_retry: Duration,
    pods: Option<Store<Pod>>,
    usage: Arc<RwLock<Usage>>,
    /// Pod changes as instance events, for the core to record (with the pod watch).
    events: Option<tokio::sync::broadcast::Sender<InstanceEvent>>,
}

impl std::fmt::Debug for KubeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRuntime")
            .field("watching", &self.pods.is_some())
            .finish_non_exhaustive()
    }
}

impl KubeRuntime {
    /// Connects to a cluster and starts watching its pods and polling its metrics.
    pub async fn connect(source: &ClusterSource) -> Result<Self, RuntimeError> {
        let config = match source {
            ClusterSource::InCluster => {
                kube::Config::incluster().map_err(|e| unavailable(format!("in-cluster: {e}")))?
            }
            ClusterSource::Kubeconfig(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?
            }
        };
        let client = Client::try_from(config).map_err(|e| unavailable(e.to_string()))?;
        Ok(Self::watching(client))
    }

    /// A driver that lists on every observation (no background tasks).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            manage_namespaces: true,
            drain_retry: Duration::from_secs(5),
            pods: None,
            usage: Arc::default(),
            events: None,
        }
    }

    /// How long a drain waits before asking again for evictions a disruption budget
    /// refused.
    #[must_use]
    pub fn with_drain_retry(mut self, every: Duration) -> Self {
        self.drain_retry = every;
        self
    }

    /// Uses namespaces made beforehand instead of creating them.
    #[must_use]
    pub fn with_existing_namespaces(mut self) -> Self {
        self.manage_namespaces = false;
        self
    }

    /// A driver with a pod cache fed by a watch and a metrics poller, both running
    /// until the process ends.
    pub fn watching(client: Client) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BACKLOG);
        let (store, task) = pod_cache(client.clone(), Some(events.clone()));
        tokio::spawn(task);
        let usage: Arc<RwLock<Usage>> = Arc::default();
        tokio::spawn(poll_metrics(client.clone(), usage.clone()));
        let runtime = Self {
            client,
            manage_namespaces: true,
            drain_retry: Duration::from_secs(5),
            pods: Some(store),
            usage,
            events: Some(events),
        };
        tokio::spawn(keep_draining(runtime.clone(), runtime.drain_retry));
        runtime
    }

    async fn apply_namespace(&self, ns: &Namespace) -> Result<(), RuntimeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = ns.metadata.name.clone().unwrap_or_default();
        retried(|| ssa(&api, &name, ns)).await
    }

    async fn apply_object(&self, ns: &str, object: &Object) -> Result<(), RuntimeError> {
        let name = object.name().to_owned();
        let client = self.client.clone();
        match object {
            Object::Deployment(o) => {
                let api: Api<Deployment> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::StatefulSet(o) => {
                let api: Api<StatefulSet> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::DaemonSet(o) => {
                let api: Api<DaemonSet> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::Job(o) => {
                let api: Api<Job> = Api::namespaced(client, ns);
                // A Job's template is immutable; its name carries the revision, so
                // an existing one is the same and is left alone.
                match retried(|| get_opt(&api, &name)).await? {
                    Some(_) => Ok(()),
                    None => retried(|| ssa(&api, &name, o.as_ref())).await,
                }
            }
            Object::CronJob(o) => {
                let api: Api<CronJob> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::Service(o) => {
                let api: Api<Service> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::PodDisruptionBudget(o) => {
                let api: Api<PodDisruptionBudget> = Api::namespaced(client, ns);
                retried(|| ssa(&api, &name, o.as_ref())).await
            }
            Object::Secret(o) => {
                let api: Api<Secret> = Api::namespaced(client, ns);
                // Immutable, and named after its revision: one that exists is the same.
                match retried(|| get_opt(&api, &name)).await? {
                    Some(_) => Ok(()),
                    None => retried(|| ssa(&api, &name, o.as_ref())).await,
                }
            }
        }
    }

    /// Deletes the app's labelled objects of every kind whose names are not in `keep`.
    async fn prune(
        &self,
        key: &WorkloadKey,
        keep: &BTreeSet<(&'static str, String)>,
    ) -> Result<(), RuntimeError> {
        let ns = namespace_name(key);
        let selector = app_selector(key);
        let c = &self.client;
        prune_kind::<Deployment>(c, &ns, &selector, "Deployment", keep).await?;
        prune_kind::<StatefulSet>(c, &ns, &selector, "StatefulSet", keep).await?;
        prune_kind::<DaemonSet>(c, &ns, &selector, "DaemonSet", keep).await?;
        prune_kind::<Job>(c, &ns, &selector, "Job", keep).await?;
        prune_kind::<CronJob>(c, &ns, &selector, "CronJob", keep).await?;
        prune_kind::<Service>(c, &ns, &selector, "Service", keep).await?;
        prune_kind::<Secret>(c, &ns, &selector, "Secret", keep).await?;
        prune_kind::<PodDisruptionBudget>(c, &ns, &selector, "PodDisruptionBudget", keep).await?;
        Ok(())
    }

    /// An in-place release of a service, as Kubernetes can run one: the new revision's
    /// pods keep to the nodes the old revisions' pods ran on when the release made its
    /// Deployment (read back from that Deployment afterwards), and a new pod is asked
    /// for only once an old one has gone, so that it takes the room the old one freed
    /// there. Returns the kept nodes of every service revision that has them, and the
    /// workload with the new revision's replicas held back while old pods remain
    /// (`None`: as asked).
    async fn in_place(
        &self,
        workload: &Workload,
    ) -> Result<(render::KeptNodes, Option<Workload>), RuntimeError> {
        let ns = namespace_name(&workload.key);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let lp = ListParams::default().labels(&app_selector(&workload.key));
        let existing = match retried(|| async { with_timeout(api.list(&lp)).await }).await {
            Ok(list) => list.items,
            Err(RuntimeError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let revision_of = |labels: Option<&BTreeMap<String, String>>| {
            labels
                .and_then(|l| l.get(render::LABEL_REVISION))
                .and_then(|r| r.parse::<i32>().ok())
        };
        let mut kept = render::KeptNodes::new();
        let mut made = BTreeSet::new();
        for d in &existing {
            let Some(revision) = revision_of(d.metadata.labels.as_ref()) else {
                continue;
            };
            made.insert(revision);
            if let Some(nodes) = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(render::KEPT_NODES))
            {
                kept.insert(
                    revision,
                    nodes
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
        }
        let Some(target) = workload.revisions.iter().find(|r| r.in_place) else {
            return Ok((kept, None));
        };
        let pods = self.pods_of(&workload.key).await?;
        let others: Vec<&Pod> = pods
            .iter()
            .filter(|p| revision_of(p.metadata.labels.as_ref()) != Some(target.revision))
            .collect();
        if !made.contains(&target.revision) {
            let nodes: BTreeSet<String> = others
                .iter()
                .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                .collect();
            kept.insert(target.revision, nodes.into_iter().collect());
        }
        let Slots::Count(asked) = target.slots else {
            return Ok((kept, None));
        };
        let total: u32 = workload
            .revisions
            .iter()
            .map(|r| match r.slots {
                Slots::Count(n) => n,
                _ => 0,
            })
            .sum();
        let own = pods.len() - others.len();
        let room = total.saturating_sub(u32::try_from(others.len()).unwrap_or(u32::MAX));
        let allowed = asked.min(room.max(u32::try_from(own).unwrap_or(u32::MAX)));
        if allowed == asked {
            return Ok((kept, None));
        }
        let mut held = workload.clone();
        for shape in &mut held.revisions {
            if shape.revision == target.revision {
                shape.slots = Slots::Count(allowed);
            }
        }
        Ok((kept, Some(held)))
    }

    async fn pods_of(&self, key: &WorkloadKey) -> Result<Vec<Pod>, RuntimeError> {
        let ns = namespace_name(key);
        if let Some(store) = &self.pods
            && tokio::time::timeout(Duration::from_secs(2), store.wait_until_ready())
                .await
                .is_ok_and(|r| r.is_ok())
        {
            return Ok(store
                .state()
                .into_iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == Some(ns.as_str())
                        && p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(render::LABEL_APP))
                            == Some(&key.app)
                })
                .map(|p| (*p).clone())
                .collect());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let lp = ListParams::default().labels(&app_selector(key));
        match retried(|| async { with_timeout(api.list(&lp)).await }).await {
            Ok(list) => Ok(list.items),
            // No namespace yet: nothing runs.
            Err(RuntimeError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// Pod changes not yet taken by the core beyond this are dropped (and logged there).
const EVENT_BACKLOG: usize = 1024;

/// A reflector over every pod the platform manages, and the task that feeds it; with
/// `events`, each pod change also becomes instance events (`events::transitions`).
/// The first listing only says what runs (no events); a listing after the watch was
/// interrupted gives the changes made meanwhile, and `Stopped` for pods gone.
pub fn pod_cache(
    client: Client,
    events: Option<tokio::sync::broadcast::Sender<InstanceEvent>>,
) -> (Store<Pod>, impl std::future::Future<Output = ()> + Send) {
    let (reader, writer) = reflector::store();
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let task = async move {
        let mut stream = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .boxed();
        let mut seen: HashMap<String, events::Seen> = HashMap::new();
        let mut listed: std::collections::HashSet<String> = std::collections::HashSet::new();
        let emit = |pod: &Pod, changes: Vec<(&'static str, String)>| {
            let (Some(tx), Some(key), Some(name)) = (&events, pod_key(pod), &pod.metadata.name)
            else {
                return;
            };
            for (reason, message) in changes {
                // No receiver (no control plane loop yet) is not an error.
                let _ = tx.send(InstanceEvent {
                    key: key.clone(),
                    instance: name.clone(),
                    reason: reason.to_owned(),
                    message,
                });
            }
        };
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitApply(pod)) => {
                    let id = pod_id(&pod);
                    let now = events::seen(&pod);
                    if let Some(before) = seen.insert(id.clone(), now.clone()) {
                        emit(&pod, events::transitions(Some(&before), &now, &pod));
                    }
                    listed.insert(id);
                }
                Ok(watcher::Event::InitDone) => seen.retain(|id, _| listed.contains(id)),
                Ok(watcher::Event::Apply(pod)) => {
                    let now = events::seen(&pod);
                    let before = seen.insert(pod_id(&pod), now.clone());
                    emit(&pod, events::transitions(before.as_ref(), &now, &pod));
                }
                Ok(watcher::Event::Delete(pod)) => {
                    seen.remove(&pod_id(&pod));
                    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                    emit(
                        &pod,
                        vec![(
                            "Stopped",
                            format!("stopped on {}", node.as_deref().unwrap_or("its node")),
                        )],
                    );
                }
                Err(e) => tracing::warn!(error = %e, "pod watch interrupted; resuming"),
            }
        }
    };
    (reader, task)
}

fn pod_id(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The workload a pod belongs to, from the labels the renderer gives it.
fn pod_key(pod: &Pod) -> Option<WorkloadKey> {
    let labels = pod.metadata.labels.as_ref()?;
    Some(WorkloadKey {
        tenant: labels.get(render::LABEL_TENANT)?.clone(),
        environment: labels.get(render::LABEL_ENVIRONMENT)?.clone(),
        app: labels.get(render::LABEL_APP)?.clone(),
    })
}

async fn poll_metrics(client: Client, usage: Arc<RwLock<Usage>>) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "metrics.k8s.io",
        "v1beta1",
        "PodMetrics",
    ));
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let lp = ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    loop {
        let wait = match with_timeout(api.list(&lp)).await {
            Ok(list) => {
                let fresh = pod_usage(&list.items);
                if let Ok(mut u) = usage.write() {
                    *u = fresh;
                }
                Duration::from_secs(15)
            }
            Err(e) => {
                tracing::debug!(error = %e, "pod metrics unavailable");
                Duration::from_secs(60)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Sums each pod's containers from `PodMetrics` objects.
pub fn pod_usage(items: &[DynamicObject]) -> Usage {
    let mut out = Usage::new();
    for item in items {
        let (Some(ns), Some(name)) = (&item.metadata.namespace, &item.metadata.name) else {
            continue;
        };
        let mut cpu = 0_u32;
        let mut mem = 0_u32;
        for c in item.data["containers"].as_array().into_iter().flatten() {
            cpu = cpu.saturating_add(
                c["usage"]["cpu"]
                    .as_str()
                    .and_then(quantity::cpu_millis)
                    .unwrap_or(0),
            );
            mem = mem.saturating_add(
                c["usage"]["memory"]
                    .as_str()
                    .and_then(quantity::memory_mib)
                    .unwrap_or(0),
            );
        }
        out.insert((ns.clone(), name.clone()), (cpu, mem));
    }
    out
}

async fn with_timeout<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(unavailable("the apiserver did not answer in time".into())),
    }
}

async fn ssa<K>(api: &Api<K>, name: &str, object: &K) -> Result<(), RuntimeError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let params = PatchParams::apply(MANAGER).force();
    with_timeout(api.patch(name, &params, &Patch::Apply(object)))
        .await
        .map(|_| ())
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, RuntimeError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    with_timeout(api.get_opt(name)).await
}

/// The app's objects of one kind in its namespace (none when the kind or the namespace
/// is not there), with the API to change them.
async fn app_objects<K>(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Result<(Api<K>, Vec<K>), RuntimeError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    match retried(|| async { with_timeout(api.list(&lp)).await }).await {
        Ok(list) => Ok((api, list.items)),
        Err(RuntimeError::NotFound { .. }) => Ok((api, Vec::new())),
        Err(e) => Err(e),
    }
}

/// The pod-template annotation a restart sets (the one `kubectl rollout restart` uses).
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The field manager of restarts, apart from the manager of applies.
pub const RESTART_MANAGER: &str = "paas-restart";

async fn restart_kind<K>(
    client: &Client,
    ns: &str,
    selector: &str,
    at: &str,
) -> Result<(), RuntimeError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let (api, listed) = app_objects::<K>(client, ns, selector).await?;
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}
    });
    let params = PatchParams {
        field_manager: Some(RESTART_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    for object in listed {
        let name = object.meta().name.clone().unwrap_or_default();
        tracing::info!(namespace = ns, name, "rolling restart");
        retried(|| async { with_timeout(api.patch(&name, &params, &Patch::Merge(&patch))).await })
            .await?;
    }
    Ok(())
}

async fn prune_kind<K>(
    client: &Client,
    ns: &str,
    selector: &str,
    kind: &'static str,
    keep: &BTreeSet<(&'static str, String)>,
) -> Result<(), RuntimeError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let (api, listed) = app_objects::<K>(client, ns, selector).await?;
    for object in listed {
        let name = object.meta().name.clone().unwrap_or_default();
        if keep.contains(&(kind, name.clone())) {
            continue;
        }
        tracing::info!(namespace = ns, kind, name, "pruning");
        // Background propagation takes a Job's or ReplicaSet's pods with it.
        match retried(|| async {
            with_timeout(api.delete(&name, &DeleteParams::background())).await
        })
        .await
        {
            Ok(_) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs `call` up to [`ATTEMPTS`] times while it fails with a retryable error.
async fn retried<T, F, Fut>(mut call: F) -> Result<T, RuntimeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RuntimeError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tracing::debug!(error = %e, attempt, "retrying apiserver call");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn retryable(e: &RuntimeError) -> bool {
    matches!(e, RuntimeError::Unavailable(_))
}

fn unavailable(message: String) -> RuntimeError {
    RuntimeError::Unavailable(message)
}

/// Maps a kube error to the port's: 404 is `NotFound`; 409, 429, 5xx and transport
/// failures are `Unavailable` (retryable); the rest are `Other`.
fn classify(e: kube::Error) -> RuntimeError {
    match e {
        kube::Error::Api(status) => match status.code {
            404 => RuntimeError::NotFound {
                kind: "object",
                name: status.message.clone(),
            },
            409 | 429 | 500..=599 => RuntimeError::Unavailable(format!(
                "apiserver answered {}: {}",
                status.code, status.message
            )),
            code => RuntimeError::Other(format!("apiserver refused ({code}): {}", status.message)),
        },
        other => RuntimeError::Unavailable(format!("apiserver unreachable: {other}")),
    }
}

impl KubeRuntime {
    /// A node as the cluster has it, or `NotFound`.
    async fn node(&self, name: &str) -> Result<KubeNode, RuntimeError> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        retried(|| get_opt(&api, name))
            .await?
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "node",
                name: name.to_owned(),
            })
    }

    /// A merge patch of a node (as `kubectl cordon` makes).
    async fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<(), RuntimeError> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        retried(|| async {
            with_timeout(api.patch(name, &PatchParams::default(), &Patch::Merge(patch))).await
        })
        .await
        .map(|_| ())
    }

    /// One round of every drain in progress: the evictions of each node marked
    /// drained (and still cordoned) are asked for again; how many pods a disruption
    /// budget still holds. `watching` runs it every `drain_retry`, so a drain goes on
    /// whichever control plane runs, after any of them restarts.
    pub async fn resume_drains(&self) -> Result<usize, RuntimeError> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        let list =
            retried(|| async { with_timeout(api.list(&ListParams::default())).await }).await?;
        let mut held = 0;
        for n in &list.items {
            if observe::cordon_of(n) == (true, true)
                && let Some(name) = n.metadata.name.as_deref()
            {
                held += evict_round(&self.client, name).await?;
            }
        }
        Ok(held)
    }
}

/// Runs `resume_drains` every `every` until the process ends.
async fn keep_draining(runtime: KubeRuntime, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match runtime.resume_drains().await {
            Ok(0) => {}
            Ok(held) => tracing::info!(held, "drain: evictions wait for disruption budgets"),
            Err(e) => {
                tracing::warn!(error = %e, "drain: evictions could not be asked for; trying again")
            }
        }
    }
}

/// Asks for the eviction of every pod the platform runs on `node` (a DaemonSet's
/// stay, as `kubectl drain --ignore-daemonsets` leaves them); how many the cluster
/// refused for now because a PodDisruptionBudget would be broken (429).
async fn evict_round(client: &Client, node: &str) -> Result<usize, RuntimeError> {
    let all: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default()
        .labels(&format!("{MANAGED_BY}={MANAGER}"))
        .fields(&format!("spec.nodeName={node}"));
    let pods = retried(|| async { with_timeout(all.list(&lp)).await }).await?;
    let mut held = 0;
    for pod in pods.items {
        let daemon = pod
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let (Some(name), Some(ns)) = (
            pod.metadata.name.as_deref(),
            pod.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        if daemon || finished || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        match tokio::time::timeout(
            CALL_TIMEOUT,
            api.evict(name, &kube::api::EvictParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 429 => held += 1,
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(e)) => return Err(classify(e)),
            Err(_) => return Err(unavailable("the apiserver did not answer in time".into())),
        }
    }
    Ok(held)
}

#[async_trait::async_trait]
impl Runtime for KubeRuntime {
    fn check(&self, spec: &AppSpec) -> Result<(), FieldError> {
        render::check(spec).map_err(|e| FieldError::new(e.field, e.message))
    }

    async fn endpoints(
        &self,
        key: &WorkloadKey,
        spec: &platform_core::spec::AppSpec,
        replicas: u32,
    ) -> Result<Vec<platform_core::runtime::Endpoint>, RuntimeError> {
        Ok(render::endpoints(key, spec, replicas))
    }

    async fn apply(&self, workload: &Workload) -> Result<(), RuntimeError> {
        let (kept, held) = if workload.kind == WorkloadKind::Service {
            self.in_place(workload).await?
        } else {
            Default::default()
        };
        let workload = &held.unwrap_or_else(|| workload.clone());
        let rendered = render::render_keeping(workload, &kept)
            .map_err(|e| RuntimeError::Other(format!("cannot run on Kubernetes: {e}")))?;
        let ns = namespace_name(&workload.key);
        if self.manage_namespaces {
            self.apply_namespace(&rendered.namespace).await?;
        }
        let mut keep = BTreeSet::new();
        for object in &rendered.objects {
            self.apply_object(&ns, object).await?;
            keep.insert((object.kind(), object.name().to_owned()));
        }
        self.prune(&workload.key, &keep).await
    }

    async fn remove(&self, key: &WorkloadKey) -> Result<(), RuntimeError> {
        self.prune(key, &BTreeSet::new()).await
    }

    /// A rolling restart, as `kubectl rollout restart` does: a new annotation on the pod
    /// template of each Deployment, StatefulSet and DaemonSet of the app, under a field
    /// manager of its own (so the next apply, which does not name it, keeps it), and
    /// Kubernetes replaces the pods within each object's update strategy. Nothing is
    /// deleted, so the app keeps serving.
    async fn restart(&self, key: &WorkloadKey) -> Result<bool, RuntimeError> {
        let ns = namespace_name(key);
        let selector = app_selector(key);
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let c = &self.client;
        restart_kind::<Deployment>(c, &ns, &selector, &at).await?;
        restart_kind::<StatefulSet>(c, &ns, &selector, &at).await?;
        restart_kind::<DaemonSet>(c, &ns, &selector, &at).await?;
        Ok(true)
    }

    fn instance_events(&self) -> Option<tokio::sync::broadcast::Receiver<InstanceEvent>> {
        self.events
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }

    async fn instances(&self, key: &WorkloadKey) -> Result<Vec<Instance>, RuntimeError> {
        let pods = self.pods_of(key).await?;
        let usage = self.usage.read().map(|u| u.clone()).unwrap_or_default();
        let mut instances: Vec<Instance> = pods
            .iter()
            .map(|p| {
                let id = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                observe::instance(p, usage.get(&id).copied())
            })
            .collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(instances)
    }

    async fn set_cordoned(&self, node: &str, cordoned: bool) -> Result<bool, RuntimeError> {
        let current = self.node(node).await?;
        let (was_cordoned, was_draining) = observe::cordon_of(&current);
        // Merge patches of the fields, as `kubectl cordon` does; uncordoning ends a drain.
        let patch = if cordoned {
            if was_cordoned {
                return Ok(false);
            }
            serde_json::json!({"spec": {"unschedulable": true}})
        } else {
            if !was_cordoned && !was_draining {
                return Ok(false);
            }
            serde_json::json!({"metadata": {"annotations": {observe::DRAINING: null}},
                               "spec": {"unschedulable": false}})
        };
        self.patch_node(node, &patch).await?;
        Ok(true)
    }

    async fn drain(&self, node: &str) -> Result<bool, RuntimeError> {
        let current = self.node(node).await?;
        let changed = observe::cordon_of(&current) != (true, true);
        if changed {
            // The drain is the node's own state (an annotation beside the cordon), so
            // that whichever control plane runs carries it on (`resume_drains`).
            let patch = serde_json::json!({
                "metadata": {"annotations": {observe::DRAINING: chrono::Utc::now().to_rfc3339()}},
                "spec": {"unschedulable": true}
            });
            self.patch_node(node, &patch).await?;
        }
        // The first round at once; evictions a budget holds (429) are asked again.
        evict_round(&self.client, node).await?;
        Ok(changed)
    }

    async fn nodes(&self) -> Result<Vec<Node>, RuntimeError> {
        let api: Api<KubeNode> = Api::all(self.client.clone());
        let list =
            retried(|| async { with_timeout(api.list(&ListParams::default())).await }).await?;
        Ok(list.items.iter().map(observe::node).collect())
    }

    async fn logs(
        &self,
        key: &WorkloadKey,
        instance: &str,
        tail: usize,
    ) -> Result<Vec<String>, RuntimeError> {
        let not_found = || RuntimeError::NotFound {
            kind: "instance",
            name: instance.to_owned(),
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace_name(key));
        // Only a pod of this app: a name alone must not reach another app's logs.
        let pod = retried(|| get_opt(&api, instance))
            .await?
            .ok_or_else(not_found)?;
        let labels = pod.metadata.labels.unwrap_or_default();
        if labels.get(render::LABEL_APP) != Some(&key.app)
            || labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGER)
        {
            return Err(not_found());
        }
        let params = LogParams {
            tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let text = with_timeout(api.logs(instance, &params)).await?;
        Ok(text.lines().map(str::to_owned).collect())
    }
}
