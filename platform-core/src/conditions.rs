//! An application's conditions, as Kubernetes reports a Deployment's: `Available` (as
//! many instances ready as it asks for), `Progressing` (a rollout or a scale is under
//! way) and `Degraded` (something keeps it from its desired state), each with a
//! stable reason and a message for people. Pure: computed from the desired count, the
//! observed instances and the latest events, the same way for every runtime.
//!
//! # Guarantees
//! - Every application gets the three conditions, in that order; batch kinds (jobs and
//!   cron jobs) are `Available` when nothing failed, since they are not meant to run
//!   all the time.
//! - A reason is a stable `PascalCase` word clients may branch on; the message may
//!   change.

use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{AppEvent, RunState};
use crate::runtime::{Instance, Phase};
use crate::spec::WorkloadKind;

/// One condition of an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Condition {
    /// `Available`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: bool,
    /// A stable word, e.g. `MinimumInstancesAvailable`, `RolloutInProgress`, `CrashLoop`.
    pub reason: &'static str,
    pub message: String,
}

/// What an application's conditions are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub kind: WorkloadKind,
    pub run_state: RunState,
    /// How many instances it asks for now (`model::desired_replicas`).
    pub desired: u32,
    pub current_revision: i32,
    pub instances: &'a [Instance],
    /// Its latest events, in any order.
    pub events: &'a [AppEvent],
}

/// Restarts after which an instance that is not ready counts as crash-looping.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// The three conditions of an application.
pub fn conditions(o: &Observed<'_>) -> Vec<Condition> {
    let current: Vec<&Instance> = o
        .instances
        .iter()
        .filter(|i| i.revision == o.current_revision)
        .collect();
    let older = o
        .instances
        .iter()
        .filter(|i| i.revision != o.current_revision && i.phase != Phase::Stopping)
        .count();
    let ready = o.instances.iter().filter(|i| i.ready).count() as u32;
    let current_ready = current.iter().filter(|i| i.ready).count() as u32;
    let batch = matches!(o.kind, WorkloadKind::Job | WorkloadKind::Cronjob);
    vec![
        available(o, batch, ready),
        progressing(o, batch, current.len() as u32, current_ready, older),
        degraded(o, batch),
    ]
}

fn available(o: &Observed<'_>, batch: bool, ready: u32) -> Condition {
    let (status, reason, message) = if o.run_state == RunState::Stopped {
        (false, "Stopped", "the application is stopped".to_owned())
    } else if batch {
        match o.instances.iter().find(|i| i.phase == Phase::Failed) {
            Some(i) => (false, "RunFailed", format!("{} failed", i.name)),
            None => (true, "NoFailedRun", "no run has failed".to_owned()),
        }
    } else if o.desired == 0 {
        (false, "ScaledToZero", "no instance is asked for".to_owned())
    } else if ready >= o.desired {
        (
            true,
            "MinimumInstancesAvailable",
            format!("{ready} of {} instances ready", o.desired),
        )
    } else {
        (
            false,
            "MinimumInstancesUnavailable",
            format!("{ready} of {} instances ready", o.desired),
        )
    };
    Condition {
        kind: "Available",
        status,
        reason,
        message,
    }
}

fn progressing(
    o: &Observed<'_>,
    batch: bool,
    current: u32,
    current_ready: u32,
    older: usize,
) -> Condition {
    let revision = o.current_revision;
    let (status, reason, message) = if batch || o.run_state == RunState::Stopped {
        (false, "Idle", "nothing is being rolled out".to_owned())
    } else if older > 0 {
        (
            true,
            "RolloutInProgress",
            format!(
                "{current_ready} of {} instances of revision {revision} ready; {older} of older revisions still running",
                o.desired
            ),
        )
    } else if current != o.desired || current_ready < o.desired {
        (
            true,
            "ScalingInProgress",
            format!(
                "{current_ready} of {} instances of revision {revision} ready",
                o.desired
            ),
        )
    } else {
        (
            false,
            "RolloutComplete",
            format!("revision {revision} runs on {current} instances"),
        )
    };
    Condition {
        kind: "Progressing",
        status,
        reason,
        message,
    }
}

fn degraded(o: &Observed<'_>, batch: bool) -> Condition {
    let crashing = o.instances.iter().find(|i| {
        !i.ready
            && (i.phase == Phase::BackOff
                || (i.phase == Phase::Failed && !batch)
                || i.restarts >= CRASH_LOOP_RESTARTS)
            && i.phase != Phase::Succeeded
    });
    let unknown = o.instances.iter().find(|i| i.phase == Phase::Unknown);
    let latest = |reason: &str| {
        o.events
            .iter()
            .filter(|e| e.reason == reason)
            .max_by_key(|e| (e.at, e.id))
    };
    // Unschedulable until something was placed after it was said.
    let unschedulable = latest("Unschedulable").filter(|u| {
        latest("Scheduled").is_none_or(|s| (s.at, s.id) < (u.at, u.id))
            && o.instances.len() < o.desired as usize
    });
    let (status, reason, message) = if let Some(i) = crashing {
        let why = i
            .message
            .as_deref()
            .and_then(|m| m.lines().last())
            .unwrap_or("it keeps exiting");
        (
            true,
            "CrashLoop",
            format!("{} restarted {} times: {why}", i.name, i.restarts),
        )
    } else if let Some(u) = unschedulable {
        (true, "Unschedulable", u.message.clone())
    } else if let Some(i) = unknown {
        let node = i.node.as_deref().unwrap_or("its node");
        (
            true,
            "NodeUnreachable",
            format!("{} is on {node}, which does not report", i.name),
        )
    } else {
        (
            false,
            "AsExpected",
            "nothing keeps it from its desired state".to_owned(),
        )
    };
    Condition {
        kind: "Degraded",
        status,
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn inst(name: &str, revision: i32, phase: Phase, ready: bool, restarts: u32) -> Instance {
        Instance {
            name: name.into(),
            revision,
            ordinal: None,
            node: Some("n1".into()),
            address: None,
            phase,
            ready,
            restarts,
            cpu_millis: None,
            memory_mib: None,
            message: Some("boom\nport in use".into()),
            since: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
        }
    }

    fn event(id: i64, reason: &str) -> AppEvent {
        AppEvent {
            id,
            at: Utc.timestamp_opt(id, 0).single().unwrap_or_default(),
            instance: None,
            reason: reason.into(),
            message: format!("{reason} {id}"),
        }
    }

    /// (Available, Progressing, Degraded) as (status, reason).
    fn check(
        kind: WorkloadKind,
        run_state: RunState,
        desired: u32,
        instances: &[Instance],
        events: &[AppEvent],
        expected: [(bool, &str); 3],
    ) {
        let got = conditions(&Observed {
            kind,
            run_state,
            desired,
            current_revision: 2,
            instances,
            events,
        });
        let got: Vec<(bool, &str)> = got.iter().map(|c| (c.status, c.reason)).collect();
        assert_eq!(got, expected, "{instances:?}");
    }

    #[test]
    fn conditions_follow_the_instances_and_events() {
        use Phase::*;
        use RunState::{Running as On, Stopped as Off};
        use WorkloadKind::{Cronjob, Service};
        let ok = (false, "AsExpected");
        let two_ready = [
            inst("a", 2, Running, true, 0),
            inst("b", 2, Running, true, 0),
        ];
        // Settled.
        check(
            Service,
            On,
            2,
            &two_ready,
            &[],
            [
                (true, "MinimumInstancesAvailable"),
                (false, "RolloutComplete"),
                ok,
            ],
        );
        // Mid-rollout: an old instance still serves, the new one is not ready yet.
        check(
            Service,
            On,
            2,
            &[
                inst("a", 2, Running, true, 0),
                inst("old", 1, Running, true, 0),
                inst("b", 2, Starting, false, 0),
            ],
            &[],
            [
                (true, "MinimumInstancesAvailable"),
                (true, "RolloutInProgress"),
                ok,
            ],
        );
        // Scaled up, one on its way.
        check(
            Service,
            On,
            3,
            &two_ready,
            &[],
            [
                (false, "MinimumInstancesUnavailable"),
                (true, "ScalingInProgress"),
                ok,
            ],
        );
        // A crash loop is degraded, and says the last line of output.
        let crashing = [
            inst("a", 2, Running, true, 0),
            inst("b", 2, BackOff, false, 4),
        ];
        check(
            Service,
            On,
            2,
            &crashing,
            &[],
            [
                (false, "MinimumInstancesUnavailable"),
                (true, "ScalingInProgress"),
                (true, "CrashLoop"),
            ],
        );
        let c = conditions(&Observed {
            kind: Service,
            run_state: On,
            desired: 2,
            current_revision: 2,
            instances: &crashing,
            events: &[],
        });
        assert_eq!(c[2].message, "b restarted 4 times: port in use");
        // Unschedulable until something is placed after it was said.
        let one = [inst("a", 2, Running, true, 0)];
        check(
            Service,
            On,
            2,
            &one,
            &[event(1, "Scheduled"), event(2, "Unschedulable")],
            [
                (false, "MinimumInstancesUnavailable"),
                (true, "ScalingInProgress"),
                (true, "Unschedulable"),
            ],
        );
        check(
            Service,
            On,
            1,
            &one,
            &[event(2, "Unschedulable"), event(3, "Scheduled")],
            [
                (true, "MinimumInstancesAvailable"),
                (false, "RolloutComplete"),
                ok,
            ],
        );
        // A silent node.
        check(
            Service,
            On,
            1,
            &[inst("a", 2, Unknown, false, 0)],
            &[],
            [
                (false, "MinimumInstancesUnavailable"),
                (true, "ScalingInProgress"),
                (true, "NodeUnreachable"),
            ],
        );
        // Stopped, and scaled to zero.
        check(
            Service,
            Off,
            0,
            &[],
            &[],
            [(false, "Stopped"), (false, "Idle"), ok],
        );
        check(
            Service,
            On,
            0,
            &[],
            &[],
            [(false, "ScaledToZero"), (false, "RolloutComplete"), ok],
        );
        // A cron job between runs is available; a failed run is not, and is not a
        // crash loop.
        check(
            Cronjob,
            On,
            1,
            &[inst("r", 2, Succeeded, false, 0)],
            &[],
            [(true, "NoFailedRun"), (false, "Idle"), ok],
        );
        check(
            Cronjob,
            On,
            1,
            &[inst("r", 2, Failed, false, 0)],
            &[],
            [(false, "RunFailed"), (false, "Idle"), ok],
        );
    }
}
