//! From a workload's desired shape to Kubernetes objects. Pure: no I/O, so every
//! object the driver could send is testable (schema validation, Pod Security checks).
//!
//! # The mapping
//! - One namespace per tenant environment, `paas-<tenant>-<env>`, enforcing the
//!   "restricted" Pod Security Standard.
//! - `service`: one Deployment per live revision (`<app>-r<revision>`) with the replica
//!   count the core chose, so two revisions run side by side during a rollout; one
//!   Service (`<app>`) selects the app across revisions. A revision an in-place
//!   release made prefers the nodes the app ran on ([`KeptNodes`]).
//! - `stateful`: one StatefulSet (`<app>`) whose template is the newest revision; the
//!   ordinals the core moved to it are those at or above the rolling-update partition,
//!   which is how ordinals move one at a time, highest first. Each ordinal claims a
//!   `data` volume of the spec's `storage_mib`, mounted at `/data` as its working
//!   directory; the claims outlive pods, revisions and scale-ins and are deleted with
//!   the StatefulSet (the application).
//! - `job`: one Job per revision; `cronjob`: one CronJob (suspended at zero);
//!   `daemon`: one DaemonSet (absent at zero).
//! - A revision's secrets: one immutable `Secret` (`<app>-r<revision>-secrets`),
//!   referenced by `secretKeyRef` from the pods of that revision.
//!
//! # Guarantees
//! - Every pod is "restricted": non-root (UID 10001 unless the image's own user is
//!   non-root), no privilege escalation, all capabilities dropped, RuntimeDefault
//!   seccomp, read-only root filesystem with a writable `/tmp`, no service account
//!   token, requests and limits set.
//! - Every object carries the labels that find it again for pruning.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, DeploymentStrategy,
    RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodAffinity,
    PodAffinityTerm, PodAntiAffinity, PreferredSchedulingTerm, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use platform_core::placement_spec::{AppTerm, LabelExpr, PlacementSpec, WhenUnsatisfiable};
use platform_core::runtime::{Endpoint, Placement, RevisionShape, Slots, Workload, WorkloadKey};
use platform_core::spec::{AppSpec, CheckSpec, WorkloadKind};
use serde::Serialize;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "paas";
pub const LABEL_TENANT: &str = "paas.dev/tenant";
pub const LABEL_ENVIRONMENT: &str = "paas.dev/environment";
pub const LABEL_APP: &str = "paas.dev/app";
pub const LABEL_REVISION: &str = "paas.dev/revision";
/// The UID pods run as when the image does not say.
pub const DEFAULT_UID: i64 = 10001;
/// The first container port; the others follow.
pub const FIRST_PORT: i32 = 8080;

/// Why a workload cannot be expressed on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> RenderError {
    RenderError {
        field,
        message: message.into(),
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
    Service(Box<Service>),
    Secret(Box<Secret>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deployment(_) => "Deployment",
            Self::StatefulSet(_) => "StatefulSet",
            Self::DaemonSet(_) => "DaemonSet",
            Self::Job(_) => "Job",
            Self::CronJob(_) => "CronJob",
            Self::Service(_) => "Service",
            Self::Secret(_) => "Secret",
            Self::PodDisruptionBudget(_) => "PodDisruptionBudget",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Self::Deployment(o) => &o.metadata,
            Self::StatefulSet(o) => &o.metadata,
            Self::DaemonSet(o) => &o.metadata,
            Self::Job(o) => &o.metadata,
            Self::CronJob(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }
}

/// Everything one workload needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub namespace: Namespace,
    pub objects: Vec<Object>,
}

/// Checks that a spec can run on Kubernetes at all.
pub fn check(spec: &AppSpec) -> Result<(), RenderError> {
    if spec.image.is_none() {
        return Err(refuse(
            "spec.image",
            "is required: this environment runs on Kubernetes, which runs container images",
        ));
    }
    if spec.package.is_some() {
        return Err(refuse(
            "spec.package",
            "package archives run on the local runtime only; build them into the image",
        ));
    }
    if let Some(schedule) = &spec.schedule {
        cron_for_kubernetes(schedule)?;
    }
    Ok(())
}

/// The namespace of a tenant environment.
pub fn namespace_name(key: &WorkloadKey) -> String {
    format!("paas-{}-{}", key.tenant, key.environment)
}

/// Kubernetes CronJobs have minute resolution: a six-field expression must fire at
/// second 0.
pub fn cron_for_kubernetes(schedule: &str) -> Result<String, RenderError> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    match fields.as_slice() {
        [_, _, _, _, _] => Ok(fields.join(" ")),
        ["0", rest @ ..] if rest.len() == 5 => Ok(rest.join(" ")),
        _ => Err(refuse(
            "spec.schedule",
            "Kubernetes runs cron jobs at minute resolution: use 5 fields, or 6 with seconds '0'",
        )),
    }
}

fn base_labels(key: &WorkloadKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        ("app.kubernetes.io/name".to_owned(), key.app.clone()),
        (LABEL_TENANT.to_owned(), key.tenant.clone()),
        (LABEL_ENVIRONMENT.to_owned(), key.environment.clone()),
        (LABEL_APP.to_owned(), key.app.clone()),
    ])
}

fn revision_labels(key: &WorkloadKey, revision: i32) -> BTreeMap<String, String> {
    let mut labels = base_labels(key);
    labels.insert(LABEL_REVISION.to_owned(), revision.to_string());
    labels
}

/// The selector of every pod of the app (all revisions).
pub fn app_selector(key: &WorkloadKey) -> String {
    format!("{MANAGED_BY}={MANAGER},{LABEL_APP}={}", key.app)
}

fn meta(name: String, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// The annotation on a service revision's Deployment that names the nodes its pods
/// keep to (an in-place release; see [`KeptNodes`]).
pub const KEPT_NODES: &str = "paas.dev/in-place-nodes";

/// Per revision of a service, the nodes its pods keep to: those the application's
/// other revisions ran on when an in-place release made the revision's Deployment. Each
/// new pod then takes the room an old one frees on its node, as an in-place release
/// does on the local runtime. Fixed for the Deployment's life (read back from
/// [`KEPT_NODES`]), so that its pod template, and its pods, do not change when the
/// release ends.
pub type KeptNodes = BTreeMap<i32, Vec<String>>;

/// Renders the namespace and every object of the workload.
pub fn render(workload: &Workload) -> Result<Rendered, RenderError> {
    render_keeping(workload, &KeptNodes::new())
}

/// Renders the workload, each service revision named in `kept` keeping to its nodes.
pub fn render_keeping(workload: &Workload, kept: &KeptNodes) -> Result<Rendered, RenderError> {
    let key = &workload.key;
    let placement = &workload.placement;
    let ns = namespace_name(key);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_owned(), MANAGER.to_owned()),
                (LABEL_TENANT.to_owned(), key.tenant.clone()),
                (LABEL_ENVIRONMENT.to_owned(), key.environment.clone()),
                (
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "restricted".to_owned(),
                ),
                (
                    "pod-security.kubernetes.io/enforce-version".to_owned(),
                    "latest".to_owned(),
                ),
                (
                    "pod-security.kubernetes.io/warn".to_owned(),
                    "restricted".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let newest = workload.revisions.iter().max_by_key(|r| r.revision);
    for shape in &workload.revisions {
        check(&shape.spec).map_err(|mut e| {
            e.message = format!("revision {}: {}", shape.revision, e.message);
            e
        })?;
    }
    let mut objects = Vec::new();
    match workload.kind {
        WorkloadKind::Service => {
            for shape in &workload.revisions {
                let replicas = match shape.slots {
                    Slots::Count(n) => n,
                    _ => 0,
                };
                let mut deployment = deployment(key, &ns, shape, replicas, placement);
                if let Some(nodes) = kept.get(&shape.revision).filter(|n| !n.is_empty()) {
                    keep_to(&mut deployment, nodes);
                }
                objects.push(Object::Deployment(Box::new(deployment)));
            }
        }
        WorkloadKind::Stateful => {
            if let Some(newest) = newest {
                objects.push(Object::StatefulSet(Box::new(stateful_set(
                    key,
                    &ns,
                    newest,
                    &workload.revisions,
                    placement,
                ))));
            }
        }
        WorkloadKind::Job => {
            for shape in &workload.revisions {
                if let Slots::Count(n) = shape.slots
                    && n > 0
                {
                    objects.push(Object::Job(Box::new(job(key, &ns, shape, n, placement))));
                }
            }
        }
        WorkloadKind::Cronjob => {
            if let Some(newest) = newest {
                objects.push(Object::CronJob(Box::new(cron_job(
                    key, &ns, newest, placement,
                )?)));
            }
        }
        WorkloadKind::Daemon => {
            if let Some(newest) = newest.filter(|s| s.slots == Slots::EveryNode) {
                objects.push(Object::DaemonSet(Box::new(daemon_set(
                    key, &ns, newest, placement,
                ))));
            }
        }
    }
    // Every live revision's secrets, applied before the pods that refer to them: pods
    // of an older revision (a StatefulSet's below its partition, say) still need theirs.
    let secrets: Vec<Object> = workload
        .revisions
        .iter()
        .filter_map(|shape| secret(key, &ns, shape))
        .map(|s| Object::Secret(Box::new(s)))
        .collect();
    objects.splice(0..0, secrets);
    let ports = newest.map(|n| n.spec.ports.len()).unwrap_or(0);
    if ports > 0
        && matches!(
            workload.kind,
            WorkloadKind::Service | WorkloadKind::Stateful | WorkloadKind::Daemon
        )
        && let Some(newest) = newest
    {
        objects.push(Object::Service(Box::new(service(
            key,
            &ns,
            &newest.spec,
            workload.kind == WorkloadKind::Stateful,
        ))));
    }
    // The disruption budget: a drain's evictions keep `min_available` of the app's
    // pods (every revision's) ready.
    if let Some(budget) = placement.rules.disruption_budget
        && matches!(
            workload.kind,
            WorkloadKind::Service | WorkloadKind::Stateful
        )
    {
        objects.push(Object::PodDisruptionBudget(Box::new(disruption_budget(
            key,
            &ns,
            budget.min_available,
        ))));
    }
    Ok(Rendered { namespace, objects })
}

fn disruption_budget(key: &WorkloadKey, ns: &str, min_available: u32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(key.app.clone(), ns, base_labels(key)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(
                i32::try_from(min_available).unwrap_or(i32::MAX),
            )),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (MANAGED_BY.to_owned(), MANAGER.to_owned()),
                    (LABEL_APP.to_owned(), key.app.clone()),
                ])),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn deployment(
    key: &WorkloadKey,
    ns: &str,
    shape: &RevisionShape,
    replicas: u32,
    placement: &Placement,
) -> Deployment {
    let labels = revision_labels(key, shape.revision);
    Deployment {
        metadata: meta(
            format!("{}-r{}", key.app, shape.revision),
            ns,
            labels.clone(),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            // A revision's own pods never change spec; a restart replaces them one at
            // a time without losing capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(2),
            template: pod_template(
                labels,
                &shape.spec,
                secret_env(key, shape),
                PodRestart::Always,
                placement,
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Pods of `deployment` prefer `nodes` above anything else the scheduler weighs, and
/// the Deployment records them.
fn keep_to(deployment: &mut Deployment, nodes: &[String]) {
    deployment
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(KEPT_NODES.to_owned(), nodes.join(","));
    let Some(pod) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    else {
        return;
    };
    pod.affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(PreferredSchedulingTerm {
            weight: 100,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".to_owned(),
                    operator: "In".to_owned(),
                    values: Some(nodes.to_vec()),
                }]),
                ..NodeSelectorTerm::default()
            },
        });
}

fn stateful_set(
    key: &WorkloadKey,
    ns: &str,
    newest: &RevisionShape,
    all: &[RevisionShape],
    placement: &Placement,
) -> StatefulSet {
    let ordinals: Vec<u32> = all
        .iter()
        .flat_map(|r| match &r.slots {
            Slots::Ordinals(o) => o.clone(),
            _ => Vec::new(),
        })
        .collect();
    let replicas = ordinals.iter().max().map_or(0, |m| m + 1);
    // Ordinals at or above the partition run the template (the newest revision).
    let partition = match &newest.slots {
        Slots::Ordinals(o) => o.iter().min().copied().unwrap_or(replicas),
        _ => replicas,
    };
    let selector = base_labels(key);
    let pod_labels = revision_labels(key, newest.revision);
    StatefulSet {
        metadata: meta(key.app.clone(), ns, base_labels(key)),
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(format!("{}-headless", key.app)),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("OrderedReady".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(i32::try_from(partition).unwrap_or(0)),
                    max_unavailable: None,
                }),
            }),
            template: with_data_directory(pod_template(
                pod_labels,
                &newest.spec,
                secret_env(key, newest),
                PodRestart::Always,
                placement,
            )),
            volume_claim_templates: Some(vec![data_claim(&newest.spec)]),
            // An ordinal's data outlives its pods and revisions, and a scale-in (it
            // may come back); it goes with the application.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Where a stateful ordinal's data volume is mounted: its working directory, as on
/// the local runtime (an ordinal works in its data directory there too).
pub const DATA_DIR: &str = "/data";

/// The claim each ordinal of a stateful application makes for its data.
fn data_claim(spec: &AppSpec) -> PersistentVolumeClaim {
    let mib = spec.storage().unwrap_or(AppSpec::DEFAULT_STORAGE_MIB);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    quantity_memory(mib),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Mounts the ordinal's data volume as the container's working directory and home.
fn with_data_directory(mut template: PodTemplateSpec) -> PodTemplateSpec {
    if let Some(container) = template
        .spec
        .as_mut()
        .and_then(|pod| pod.containers.first_mut())
    {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "data".to_owned(),
                mount_path: DATA_DIR.to_owned(),
                ..VolumeMount::default()
            });
        container.working_dir = Some(DATA_DIR.to_owned());
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == "HOME") {
            env.push(EnvVar {
                name: "HOME".to_owned(),
                value: Some(DATA_DIR.to_owned()),
                value_from: None,
            });
        }
    }
    template
}

fn job(key: &WorkloadKey, ns: &str, shape: &RevisionShape, n: u32, placement: &Placement) -> Job {
    let labels = revision_labels(key, shape.revision);
    Job {
        metadata: meta(
            format!("{}-r{}", key.app, shape.revision),
            ns,
            labels.clone(),
        ),
        spec: Some(job_spec(key, labels, shape, n, placement)),
        ..Job::default()
    }
}

fn job_spec(
    key: &WorkloadKey,
    labels: BTreeMap<String, String>,
    shape: &RevisionShape,
    n: u32,
    placement: &Placement,
) -> JobSpec {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    JobSpec {
        completions: Some(n),
        parallelism: Some(n),
        backoff_limit: Some(3),
        // Finished jobs are kept an hour for their status and logs.
        ttl_seconds_after_finished: Some(3600),
        template: pod_template(
            labels,
            &shape.spec,
            secret_env(key, shape),
            PodRestart::OnFailure,
            placement,
        ),
        ..JobSpec::default()
    }
}

fn cron_job(
    key: &WorkloadKey,
    ns: &str,
    shape: &RevisionShape,
    placement: &Placement,
) -> Result<CronJob, RenderError> {
    let schedule = cron_for_kubernetes(shape.spec.schedule.as_deref().unwrap_or(""))?;
    let n = match shape.slots {
        Slots::Count(n) => n,
        _ => 0,
    };
    let labels = revision_labels(key, shape.revision);
    Ok(CronJob {
        metadata: meta(key.app.clone(), ns, base_labels(key)),
        spec: Some(CronJobSpec {
            schedule,
            time_zone: Some("Etc/UTC".to_owned()),
            suspend: Some(n == 0),
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            starting_deadline_seconds: Some(60),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(job_spec(key, labels, shape, n.max(1), placement)),
            },
        }),
        ..CronJob::default()
    })
}

fn daemon_set(
    key: &WorkloadKey,
    ns: &str,
    shape: &RevisionShape,
    placement: &Placement,
) -> DaemonSet {
    let selector = base_labels(key);
    let pod_labels = revision_labels(key, shape.revision);
    DaemonSet {
        metadata: meta(key.app.clone(), ns, base_labels(key)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: pod_template(
                pod_labels,
                &shape.spec,
                secret_env(key, shape),
                PodRestart::Always,
                placement,
            ),
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}

fn service(key: &WorkloadKey, ns: &str, spec: &AppSpec, headless: bool) -> Service {
    let ports = spec
        .ports
        .iter()
        .zip(FIRST_PORT..)
        .map(|(p, number)| ServicePort {
            name: Some(p.name.clone()),
            port: if headless {
                number
            } else {
                80 + number - FIRST_PORT
            },
            target_port: Some(IntOrString::String(p.name.clone())),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        })
        .collect();
    let selector: BTreeMap<String, String> = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_APP.to_owned(), key.app.clone()),
    ]);
    Service {
        metadata: meta(
            if headless {
                format!("{}-headless", key.app)
            } else {
                key.app.clone()
            },
            ns,
            base_labels(key),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(selector),
            ports: Some(ports),
            publish_not_ready_addresses: headless.then_some(true),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[derive(Clone, Copy)]
enum PodRestart {
    Always,
    OnFailure,
}

fn quantity_cpu(millis: u32) -> Quantity {
    Quantity(format!("{millis}m"))
}

fn quantity_memory(mib: u32) -> Quantity {
    Quantity(format!("{mib}Mi"))
}

/// `$NAME` and `${NAME}` in arguments become Kubernetes' `$(NAME)`, so the same
/// arguments mean the same thing on both runtimes.
pub fn kube_arg(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{')
            && let Some(end) = inner.find('}')
            && is_var(&inner[..end])
        {
            out.push_str(&format!("$({})", &inner[..end]));
            rest = &inner[end + 1..];
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if is_var(&after[..end]) {
            out.push_str(&format!("$({})", &after[..end]));
            rest = &after[end..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_var(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn probe(check: &CheckSpec, port: &str, liveness: bool) -> Probe {
    let seconds = |ms: u32| i32::try_from(ms.div_ceil(1000).max(1)).unwrap_or(i32::MAX);
    let (http_get, tcp_socket) = match &check.http_path {
        Some(path) => (
            Some(HTTPGetAction {
                path: Some(path.clone()),
                port: IntOrString::String(port.to_owned()),
                scheme: Some("HTTP".to_owned()),
                ..HTTPGetAction::default()
            }),
            None,
        ),
        None => (
            None,
            Some(TCPSocketAction {
                port: IntOrString::String(port.to_owned()),
                host: None,
            }),
        ),
    };
    Probe {
        http_get,
        tcp_socket,
        initial_delay_seconds: Some(
            i32::try_from(check.initial_delay_ms / 1000).unwrap_or(i32::MAX),
        ),
        period_seconds: Some(seconds(check.period_ms)),
        timeout_seconds: Some(seconds(check.timeout_ms)),
        failure_threshold: Some(i32::try_from(check.failure_threshold).unwrap_or(3)),
        // Kubernetes requires 1 for liveness.
        success_threshold: Some(if liveness {
            1
        } else {
            i32::try_from(check.success_threshold).unwrap_or(1)
        }),
        ..Probe::default()
    }
}

/// The node label Kubernetes uses for what the platform calls `zone`.
/// A spec's node affinity and affinity to applications as the pod's `affinity`: an
/// application's pods are those labelled with its name (`self`: this one's), in the
/// same namespace (the same environment).
fn affinity(rules: &PlacementSpec, own: &str) -> Option<Affinity> {
    let requirement = |e: &LabelExpr| NodeSelectorRequirement {
        key: topology_key(&e.key),
        operator: e.operator.as_str().to_owned(),
        values: (!e.values.is_empty()).then(|| e.values.clone()),
    };
    let na = &rules.node_affinity;
    let node_affinity = (!na.is_empty()).then(|| NodeAffinity {
        required_during_scheduling_ignored_during_execution: (!na.required.is_empty()).then(|| {
            NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(na.required.iter().map(requirement).collect()),
                    ..NodeSelectorTerm::default()
                }],
            }
        }),
        preferred_during_scheduling_ignored_during_execution: (!na.preferred.is_empty()).then(
            || {
                na.preferred
                    .iter()
                    .map(|t| PreferredSchedulingTerm {
                        weight: i32::try_from(t.weight).unwrap_or(100),
                        preference: NodeSelectorTerm {
                            match_expressions: Some(
                                t.expressions.iter().map(requirement).collect(),
                            ),
                            ..NodeSelectorTerm::default()
                        },
                    })
                    .collect()
            },
        ),
    });
    let term = |t: &AppTerm| {
        if !t.selector.is_empty() {
            // The pods of the applications labelled so (they carry their spec's labels).
            let mut labels = t.selector.clone();
            labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
            return PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                }),
                topology_key: topology_key(&t.topology),
                ..PodAffinityTerm::default()
            };
        }
        let mut apps: Vec<String> = t
            .apps
            .iter()
            .map(|a| {
                if a == "self" {
                    own.to_owned()
                } else {
                    a.clone()
                }
            })
            .collect();
        apps.sort();
        apps.dedup();
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    MANAGED_BY.to_owned(),
                    MANAGER.to_owned(),
                )])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: LABEL_APP.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(apps),
                }]),
            }),
            topology_key: topology_key(&t.topology),
            ..PodAffinityTerm::default()
        }
    };
    let split = |terms: &[AppTerm]| {
        let required: Vec<PodAffinityTerm> =
            terms.iter().filter(|t| t.required).map(term).collect();
        let preferred: Vec<WeightedPodAffinityTerm> = terms
            .iter()
            .filter(|t| !t.required)
            .map(|t| WeightedPodAffinityTerm {
                weight: i32::try_from(t.weight).unwrap_or(100),
                pod_affinity_term: term(t),
            })
            .collect();
        (
            (!required.is_empty()).then_some(required),
            (!preferred.is_empty()).then_some(preferred),
        )
    };
    let pod_affinity = (!rules.app_affinity.is_empty()).then(|| {
        let (required, preferred) = split(&rules.app_affinity);
        PodAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: preferred,
        }
    });
    let pod_anti_affinity = (!rules.app_anti_affinity.is_empty()).then(|| {
        let (required, preferred) = split(&rules.app_anti_affinity);
        PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: preferred,
        }
    });
    (node_affinity.is_some() || pod_affinity.is_some() || pod_anti_affinity.is_some()).then_some(
        Affinity {
            node_affinity,
            pod_affinity,
            pod_anti_affinity,
        },
    )
}

pub fn topology_key(label: &str) -> String {
    match label {
        "zone" => "topology.kubernetes.io/zone".to_owned(),
        "region" => "topology.kubernetes.io/region".to_owned(),
        "node" | "host" => "kubernetes.io/hostname".to_owned(),
        other => other.to_owned(),
    }
}

/// An application's stable addresses inside the cluster: its Service's DNS name per
/// port, and for a stateful one each ordinal's name under its headless Service.
pub fn endpoints(key: &WorkloadKey, spec: &AppSpec, replicas: u32) -> Vec<Endpoint> {
    let ns = namespace_name(key);
    let mut out = Vec::new();
    for (p, number) in spec.ports.iter().zip(FIRST_PORT..) {
        if spec.kind == WorkloadKind::Stateful {
            for o in 0..replicas {
                out.push(Endpoint {
                    port: p.name.clone(),
                    ordinal: Some(o),
                    address: format!(
                        "{app}-{o}.{app}-headless.{ns}.svc.cluster.local:{number}",
                        app = key.app
                    ),
                });
            }
        } else if matches!(spec.kind, WorkloadKind::Service | WorkloadKind::Daemon) {
            out.push(Endpoint {
                port: p.name.clone(),
                ordinal: None,
                address: format!(
                    "{}.{ns}.svc.cluster.local:{}",
                    key.app,
                    80 + number - FIRST_PORT
                ),
            });
        }
    }
    out
}

/// The name of a revision's `Secret`.
pub fn secret_name(key: &WorkloadKey, revision: i32) -> String {
    format!("{}-r{revision}-secrets", key.app)
}

/// A revision's secrets as an immutable `Secret`; none when it has none.
fn secret(key: &WorkloadKey, ns: &str, shape: &RevisionShape) -> Option<Secret> {
    (!shape.secrets.is_empty()).then(|| Secret {
        metadata: meta(
            secret_name(key, shape.revision),
            ns,
            revision_labels(key, shape.revision),
        ),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(
            shape
                .secrets
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        k8s_openapi::ByteString(value.expose().as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Secret::default()
    })
}

/// The environment variables a revision's pods take from its `Secret`.
fn secret_env(key: &WorkloadKey, shape: &RevisionShape) -> Vec<EnvVar> {
    shape
        .secrets
        .keys()
        .map(|name| EnvVar {
            name: name.clone(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(key, shape.revision),
                    key: name.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect()
}

fn pod_template(
    labels: BTreeMap<String, String>,
    spec: &AppSpec,
    secrets: Vec<EnvVar>,
    restart: PodRestart,
    placement: &Placement,
) -> PodTemplateSpec {
    let own_pods = LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .filter(|(k, _)| *k == MANAGED_BY || *k == LABEL_APP)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        ..LabelSelector::default()
    };
    let own_app = labels.get(LABEL_APP).cloned().unwrap_or_default();
    let rules = &placement.rules;
    let mut spread: Vec<TopologySpreadConstraint> = rules
        .spread
        .iter()
        .map(|s| TopologySpreadConstraint {
            max_skew: i32::try_from(s.max_skew).unwrap_or(i32::MAX),
            topology_key: topology_key(&s.topology),
            when_unsatisfiable: match s.when_unsatisfiable {
                WhenUnsatisfiable::DoNotSchedule => "DoNotSchedule",
                WhenUnsatisfiable::ScheduleAnyway => "ScheduleAnyway",
            }
            .to_owned(),
            label_selector: Some(own_pods.clone()),
            ..TopologySpreadConstraint::default()
        })
        .collect();
    // The standard spread, unless the spec spreads over the same topology itself.
    if let Some(by) = &placement.spread_by
        && !rules
            .spread
            .iter()
            .any(|s| topology_key(&s.topology) == topology_key(by))
    {
        spread.push(TopologySpreadConstraint {
            max_skew: 1,
            topology_key: topology_key(by),
            // Preferred, not required: a cluster without zones still schedules.
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(own_pods.clone()),
            ..TopologySpreadConstraint::default()
        });
    }
    let spread = (!spread.is_empty()).then_some(spread);
    let affinity = affinity(rules, &own_app);
    let node_selector = (!placement.node_selector.is_empty()).then(|| {
        placement
            .node_selector
            .iter()
            .map(|(k, v)| (topology_key(k), v.clone()))
            .collect()
    });
    let port_names: Vec<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            value_from: None,
        })
        .collect();
    env.extend(secrets);
    for (name, number) in port_names.iter().zip(FIRST_PORT..) {
        if number == FIRST_PORT {
            env.push(EnvVar {
                name: "PORT".to_owned(),
                value: Some(number.to_string()),
                value_from: None,
            });
        }
        env.push(EnvVar {
            name: format!("PORT_{}", name.to_uppercase().replace('-', "_")),
            value: Some(number.to_string()),
            value_from: None,
        });
    }
    let first_port = port_names.first().copied().unwrap_or("http");
    let command = spec.command.trim();
    let limits = BTreeMap::from([
        (
            "cpu".to_owned(),
            quantity_cpu(spec.limits.cpu_millis.unwrap_or(spec.resources.cpu_millis)),
        ),
        (
            "memory".to_owned(),
            quantity_memory(spec.limits.memory_mib.unwrap_or(spec.resources.memory_mib)),
        ),
    ]);
    let container = Container {
        name: "app".to_owned(),
        image: spec.image.clone(),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: (!command.is_empty()).then(|| vec![command.to_owned()]),
        args: (!spec.args.is_empty()).then(|| spec.args.iter().map(|a| kube_arg(a)).collect()),
        env: (!env.is_empty()).then_some(env),
        ports: (!port_names.is_empty()).then(|| {
            port_names
                .iter()
                .zip(FIRST_PORT..)
                .map(|(name, number)| ContainerPort {
                    name: Some((*name).to_owned()),
                    container_port: number,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity_cpu(spec.resources.cpu_millis)),
                (
                    "memory".to_owned(),
                    quantity_memory(spec.resources.memory_mib),
                ),
            ])),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        readiness_probe: spec
            .health
            .readiness
            .as_ref()
            .map(|c| probe(c, first_port, false)),
        liveness_probe: spec
            .health
            .liveness
            .as_ref()
            .map(|c| probe(c, first_port, true)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(DEFAULT_UID),
            run_as_group: Some(DEFAULT_UID),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    // The spec's own labels, which other applications' rules select by (never over
    // the platform's: those keys are refused in the spec).
    let mut labels = labels;
    for (k, v) in &spec.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            node_selector,
            affinity,
            topology_spread_constraints: spread,
            restart_policy: Some(
                match restart {
                    PodRestart::Always => "Always",
                    PodRestart::OnFailure => "OnFailure",
                }
                .to_owned(),
            ),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(DEFAULT_UID),
                run_as_group: Some(DEFAULT_UID),
                fs_group: Some(DEFAULT_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            termination_grace_period_seconds: Some(30),
            volumes: Some(vec![Volume {
                name: "tmp".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("64Mi".to_owned())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
    }
}
