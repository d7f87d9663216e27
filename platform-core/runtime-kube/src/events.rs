//! Pod changes as application events, with the reasons the local runtime records
//! (`Scheduled`, `Started`, `Ready`, `NotReady`, `Crashed`, `Restarted`, `Failed`,
//! `Completed`, `Stopping`), plus what only a cluster does to a pod (`OOMKilled`,
//! `Evicted`), so that an application's events and a release's timeline read the same
//! on both runtimes. Pure: the pod watch keeps what it last saw of each pod and asks
//! what changed.

use k8s_openapi::api::core::v1::Pod;

/// What the events are derived from, per pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub node: Option<String>,
    pub started: bool,
    pub ready: bool,
    pub restarts: u32,
    /// The last termination's reason (`OOMKilled`, `Error`, ...).
    pub last_termination: Option<String>,
    pub phase: String,
    pub evicted: bool,
    pub stopping: bool,
}

/// What a pod shows now.
pub fn seen(pod: &Pod) -> Seen {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    Seen {
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        started: containers.iter().any(|c| {
            c.state.as_ref().is_some_and(|s| s.running.is_some())
                || c.last_state
                    .as_ref()
                    .is_some_and(|s| s.terminated.is_some())
        }),
        ready: status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        restarts: containers
            .iter()
            .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
            .sum(),
        last_termination: containers
            .iter()
            .find_map(|c| c.last_state.as_ref()?.terminated.as_ref()?.reason.clone()),
        phase: status.phase.clone().unwrap_or_default(),
        evicted: status.reason.as_deref() == Some("Evicted"),
        stopping: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// The events between what was seen of a pod (`None`: nothing yet) and what it shows
/// now, in the order they happened.
pub fn transitions(before: Option<&Seen>, now: &Seen, pod: &Pod) -> Vec<(&'static str, String)> {
    let was = before.cloned().unwrap_or_default();
    let mut events = Vec::new();
    if let (None, Some(node)) = (&was.node, &now.node) {
        events.push(("Scheduled", format!("placed on {node}")));
    }
    if now.started && !was.started {
        events.push((
            "Started",
            format!(
                "container started on {}",
                now.node.as_deref().unwrap_or("its node")
            ),
        ));
    }
    if now.restarts > was.restarts {
        let why = now.last_termination.as_deref().unwrap_or("exited");
        if why == "OOMKilled" {
            events.push((
                "OOMKilled",
                "killed for going over its memory limit; restarted".to_owned(),
            ));
        } else {
            events.push(("Crashed", format!("the container exited ({why})")));
        }
        events.push((
            "Restarted",
            format!("restarted (restart #{})", now.restarts),
        ));
    }
    if now.phase != was.phase {
        match now.phase.as_str() {
            "Succeeded" => events.push(("Completed", "ran to completion".to_owned())),
            "Failed" if now.evicted => events.push((
                "Evicted",
                pod.status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "evicted by its node".to_owned()),
            )),
            "Failed" => events.push((
                "Failed",
                pod.status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "failed".to_owned()),
            )),
            _ => {}
        }
    }
    if now.ready && !was.ready {
        events.push((
            "Ready",
            "passes its readiness check; receives traffic".to_owned(),
        ));
    }
    if !now.ready && was.ready && !now.stopping {
        events.push(("NotReady", "failed its readiness check".to_owned()));
    }
    if now.stopping && !was.stopping {
        events.push(("Stopping", "being stopped (draining)".to_owned()));
    }
    events
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reasons(before: Option<&Pod>, now: &Pod) -> Vec<&'static str> {
        let was = before.map(seen);
        transitions(was.as_ref(), &seen(now), now)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    fn running(restarts: i32, ready: bool, last: Option<&str>) -> Pod {
        pod(json!({
            "metadata": {"name": "web-r2-abc"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{
                    "name": "app", "image": "x", "imageID": "", "ready": ready,
                    "restartCount": restarts,
                    "state": {"running": {}},
                    "lastState": last.map_or(json!({}), |r| json!({"terminated": {"exitCode": 137, "reason": r}}))
                }]
            }
        }))
    }

    #[test]
    fn a_pods_life_reads_as_the_local_runtimes_events() {
        let pending = pod(
            json!({"metadata": {"name": "web-r2-abc"}, "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Pending"}}),
        );
        let scheduled = pod(json!({"metadata": {"name": "web-r2-abc"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]}, "status": {"phase": "Pending"}}));
        let started = running(0, false, None);
        let ready = running(0, true, None);
        let crashed = running(1, false, Some("Error"));
        let oom = running(2, false, Some("OOMKilled"));
        let evicted = pod(json!({"metadata": {"name": "web-r2-abc"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
            "status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}}));
        let mut stopping = ready.clone();
        stopping.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let cases: &[(Option<&Pod>, &Pod, &[&str])] = &[
            (None, &pending, &[]),
            (Some(&pending), &scheduled, &["Scheduled"]),
            (Some(&scheduled), &started, &["Started"]),
            (Some(&started), &ready, &["Ready"]),
            (Some(&ready), &ready, &[]),
            (
                Some(&ready),
                &crashed,
                &["Crashed", "Restarted", "NotReady"],
            ),
            (Some(&crashed), &oom, &["OOMKilled", "Restarted"]),
            (Some(&ready), &evicted, &["Evicted", "NotReady"]),
            (Some(&ready), &stopping, &["Stopping"]),
            // A pod first seen already running and ready (a watch that restarted).
            (None, &ready, &["Scheduled", "Started", "Ready"]),
        ];
        for (before, now, expected) in cases {
            assert_eq!(
                reasons(*before, now),
                *expected,
                "{:?} -> {:?}",
                before.map(seen),
                seen(now)
            );
        }
    }
}
