//! Node loss on the local runtime, decided from heartbeats alone: when a node is not
//! ready, when it is lost, and what becomes of its instances. Pure, table-tested.
//!
//! # Guarantees
//! - A stateful ordinal never runs twice: it is started elsewhere only once a platform
//!   administrator has confirmed its node lost *and* the node's lease has run out (plus
//!   a margin), by which time the node's shim has stopped it (it fences itself when its
//!   lease is not renewed).
//! - A stateful ordinal's data lives on its node, so moving it is always an operator's
//!   act; until then it waits, and says why.
//! - A stateless instance is replaced only after the node has been silent for the
//!   grace period (or at once once confirmed lost); if its node comes back, the agent
//!   stops the stale copy.

use std::time::Duration;

/// How a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// It heartbeats: new instances go there, its instances are observed.
    Ready,
    /// Silent for a few heartbeats: nothing new goes there, its instances are unknown
    /// (and still receive traffic when nothing better exists).
    NotReady,
    /// Silent for the grace period, or confirmed lost: its stateless instances are
    /// replaced elsewhere.
    Lost,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::NotReady => "not_ready",
            Self::Lost => "lost",
        }
    }
}

/// The clocks of node loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silence after which a node is lost and its stateless instances are replaced.
    pub grace: Duration,
    /// How long a fenced instance runs on without its lease being renewed.
    pub lease_ttl: Duration,
    /// Added to the lease before an ordinal may start elsewhere (clock rates, delays).
    pub margin: Duration,
}

impl Timing {
    /// A node that heartbeats every `heartbeat` is not ready after missing a few.
    pub fn not_ready_after(heartbeat: Duration) -> Duration {
        (heartbeat * 5).max(Duration::from_secs(1))
    }
}

/// What the control plane knows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Time since its last heartbeat.
    pub silent: Duration,
    pub heartbeat: Duration,
    /// A platform administrator said it is gone.
    pub confirmed_lost: bool,
}

pub fn condition(node: NodeView, timing: Timing) -> Condition {
    if node.confirmed_lost || node.silent >= timing.grace {
        Condition::Lost
    } else if node.silent >= Timing::not_ready_after(node.heartbeat) {
        Condition::NotReady
    } else {
        Condition::Ready
    }
}

/// What becomes of one instance on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It stays where it is.
    Keep,
    /// It is stopped there and placed again elsewhere.
    Replace,
    /// A stateful ordinal that stays put for now; why, for people.
    Wait(String),
}

/// The verdict for an instance on `node` (named `node_name`). `judged` is false while
/// the control plane has been up for less than the grace period (nodes have not had the
/// time to report to it).
pub fn verdict(
    stateful: bool,
    node_name: &str,
    node: NodeView,
    timing: Timing,
    judged: bool,
) -> Verdict {
    let lost = condition(node, timing) == Condition::Lost && (judged || node.confirmed_lost);
    if !lost {
        return Verdict::Keep;
    }
    if !stateful {
        return Verdict::Replace;
    }
    // The texts do not change while the wait lasts: they are said once.
    if !node.confirmed_lost {
        return Verdict::Wait(format!(
            "waits for {node_name}: its data lives there. It starts again when the node returns, \
             or elsewhere, without that data, once a platform administrator confirms the node lost"
        ));
    }
    if node.silent >= timing.lease_ttl + timing.margin {
        Verdict::Replace
    } else {
        Verdict::Wait(format!(
            "{node_name} was confirmed lost: the ordinal starts elsewhere, without the data left on that node, \
             once the node's lease has surely run out"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        grace: Duration::from_secs(15),
        lease_ttl: Duration::from_secs(30),
        margin: Duration::from_secs(5),
    };

    fn node(silent_ms: u64, confirmed_lost: bool) -> NodeView {
        NodeView {
            silent: Duration::from_millis(silent_ms),
            heartbeat: Duration::from_millis(200),
            confirmed_lost,
        }
    }

    #[test]
    fn a_node_is_not_ready_after_a_few_missed_heartbeats_and_lost_after_the_grace() {
        let check = |silent_ms, confirmed, expected| {
            assert_eq!(
                condition(node(silent_ms, confirmed), TIMING),
                expected,
                "silent {silent_ms} ms, confirmed {confirmed}"
            );
        };
        check(100, false, Condition::Ready);
        check(999, false, Condition::Ready);
        check(1000, false, Condition::NotReady);
        check(14_999, false, Condition::NotReady);
        check(15_000, false, Condition::Lost);
        check(100, true, Condition::Lost);
    }

    #[test]
    fn stateless_instances_move_after_the_grace_and_ordinals_only_after_confirmation_and_lease() {
        let check = |stateful, silent_ms, confirmed, judged, expected: &str| {
            let got = match verdict(
                stateful,
                "node-2",
                node(silent_ms, confirmed),
                TIMING,
                judged,
            ) {
                Verdict::Keep => "keep".to_owned(),
                Verdict::Replace => "replace".to_owned(),
                Verdict::Wait(why) => format!("wait: {why}"),
            };
            assert!(
                got.starts_with(expected),
                "stateful {stateful}, silent {silent_ms} ms, confirmed {confirmed}, judged {judged}: {got}"
            );
        };
        // Stateless.
        check(false, 500, false, true, "keep");
        check(false, 5_000, false, true, "keep");
        check(false, 15_000, false, true, "replace");
        check(false, 15_000, false, false, "keep");
        check(false, 2_000, true, false, "replace");
        // Stateful: never on silence alone, however long.
        check(true, 5_000, false, true, "keep");
        check(
            true,
            15_000,
            false,
            true,
            "wait: waits for node-2: its data lives there",
        );
        check(true, 3_600_000, false, true, "wait: waits for node-2");
        // Confirmed lost: only once the lease and the margin have run out.
        check(true, 20_000, true, true, "wait: node-2 was confirmed lost");
        check(true, 34_999, true, true, "wait: node-2 was confirmed lost");
        check(true, 35_000, true, true, "replace");
        check(true, 35_000, true, false, "replace");
    }
}
