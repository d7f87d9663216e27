//! From Kubernetes objects to the port's observations: pods to instances, nodes to
//! nodes. Pure.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Node as KubeNode, Pod};
use platform_core::runtime::{Instance, Node, Phase};
use platform_core::spec::Resources;

use crate::quantity;
use crate::render::LABEL_REVISION;

/// CPU (millicores) and memory (MiB) a pod uses, from `metrics.k8s.io`.
pub type Usage = (u32, u32);

pub fn instance(pod: &Pod, usage: Option<Usage>) -> Instance {
    let meta = &pod.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .cloned()
    };
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    let restarts = containers
        .iter()
        .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
        .sum();
    let waiting = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.clone())
        .next();
    let terminated = containers
        .iter()
        .filter_map(|c| {
            let state = c.state.as_ref()?;
            state
                .terminated
                .clone()
                .or_else(|| c.last_state.as_ref()?.terminated.clone())
        })
        .next();
    let unscheduled = condition("PodScheduled").filter(|c| c.status == "False");
    let waiting_reason = waiting.as_ref().and_then(|w| w.reason.clone());
    let backing_off = matches!(
        waiting_reason.as_deref(),
        Some(
            "CrashLoopBackOff"
                | "ImagePullBackOff"
                | "ErrImagePull"
                | "CreateContainerConfigError"
                | "CreateContainerError"
                | "InvalidImageName"
        )
    );
    let phase = if meta.deletion_timestamp.is_some() {
        Phase::Stopping
    } else {
        match status.phase.as_deref() {
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            // The kubelet of its node stopped reporting.
            Some("Unknown") => Phase::Unknown,
            _ if backing_off => Phase::BackOff,
            Some("Running") => Phase::Running,
            Some("Pending")
                if unscheduled.is_none()
                    && pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) =>
            {
                Phase::Starting
            }
            _ => Phase::Pending,
        }
    };
    let message = if let Some(w) = &waiting {
        Some(
            [w.reason.clone(), w.message.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        )
    } else if let Some(c) = &unscheduled {
        c.message.clone().or_else(|| c.reason.clone())
    } else if phase != Phase::Running {
        terminated.map(|t| {
            let mut m = format!("exited with code {}", t.exit_code);
            if let Some(reason) = t.reason {
                m.push_str(&format!(" ({reason})"));
            }
            m
        })
    } else {
        None
    }
    .filter(|m| !m.is_empty());
    let ordinal = labels
        .get("apps.kubernetes.io/pod-index")
        .and_then(|i| i.parse().ok())
        .or_else(|| {
            let owned_by_set = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "StatefulSet");
            owned_by_set
                .then(|| name.rsplit('-').next()?.parse().ok())
                .flatten()
        });
    let since = status
        .start_time
        .clone()
        .or_else(|| meta.creation_timestamp.clone())
        .and_then(|t| chrono_time(&t.0))
        .unwrap_or_else(Utc::now);
    Instance {
        revision: labels
            .get(LABEL_REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        ordinal,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        address: status.pod_ip.clone().and_then(|ip| {
            let port = pod
                .spec
                .as_ref()?
                .containers
                .first()?
                .ports
                .as_ref()?
                .first()?
                .container_port;
            Some(format!("{ip}:{port}"))
        }),
        phase,
        ready,
        restarts,
        cpu_millis: usage.map(|u| u.0),
        memory_mib: usage.map(|u| u.1),
        message,
        since,
        name,
    }
}

pub fn node(n: &KubeNode) -> Node {
    let status = n.status.clone().unwrap_or_default();
    let allocatable = status
        .allocatable
        .clone()
        .or(status.capacity.clone())
        .unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .cloned();
    let (cordoned, draining) = cordon_of(n);
    Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        capacity: Resources {
            cpu_millis: allocatable
                .get("cpu")
                .and_then(|q| quantity::cpu_millis(&q.0))
                .unwrap_or(0),
            memory_mib: allocatable
                .get("memory")
                .and_then(|q| quantity::memory_mib(&q.0))
                .unwrap_or(0),
        },
        allocated: None,
        healthy: ready.as_ref().is_some_and(|c| c.status == "True") && !cordoned,
        cordoned,
        draining,
        condition: match (&ready, cordoned) {
            (_, true) => "cordoned".to_owned(),
            (Some(c), false) if c.status == "True" => "ready".to_owned(),
            _ => "not_ready".to_owned(),
        },
        message: ready.as_ref().and_then(|c| c.message.clone()),
        last_seen: ready.and_then(|c| c.last_heartbeat_time.and_then(|t| chrono_time(&t.0))),
    }
}

fn chrono_time(t: &k8s_openapi::jiff::Timestamp) -> Option<chrono::DateTime<Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

/// The annotation a drain leaves on its node (when it started), beside the cordon.
pub const DRAINING: &str = "paas.dev/draining";

/// Whether a node is cordoned, and whether it is drained (cordoned and marked so).
pub fn cordon_of(n: &k8s_openapi::api::core::v1::Node) -> (bool, bool) {
    let cordoned = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let marked = n
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(DRAINING));
    (cordoned, cordoned && marked)
}
