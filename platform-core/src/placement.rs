//! Placement: which node a new instance goes to. Pure, so it is tested with tables.
//!
//! Filters first (node selector, health, free capacity), then scores: with `spread_by`
//! the instance goes to the label value (e.g. zone) holding the fewest instances of the
//! workload (anti-affinity), then to the node with the fewest instances of the
//! workload, then to the least loaded node, then by name so results are stable.

use std::collections::BTreeMap;

use crate::runtime::Placement;
use crate::spec::Resources;

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    /// Sum of the requests of the instances already placed there.
    pub requested: Resources,
    pub healthy: bool,
    /// Instances of the workload being placed already on this node.
    pub workload_instances: u32,
}

/// Why nothing fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unschedulable {
    #[error("no healthy node matches the node selector")]
    NoMatchingNode,
    #[error("no matching node has {cpu_millis}m CPU and {memory_mib} MiB free")]
    NoCapacity { cpu_millis: u32, memory_mib: u32 },
}

/// Picks a node for one instance with `request`; the caller adds the instance to the
/// chosen node's load before placing the next one.
pub fn choose<'n>(
    nodes: &'n [NodeLoad],
    placement: &Placement,
    request: Resources,
) -> Result<&'n NodeLoad, Unschedulable> {
    let matching: Vec<&NodeLoad> = nodes
        .iter()
        .filter(|n| {
            n.healthy
                && placement
                    .node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    if matching.is_empty() {
        return Err(Unschedulable::NoMatchingNode);
    }
    let fits = |n: &&NodeLoad| {
        n.requested.cpu_millis + request.cpu_millis <= n.capacity.cpu_millis
            && n.requested.memory_mib + request.memory_mib <= n.capacity.memory_mib
    };
    let candidates: Vec<&NodeLoad> = matching.into_iter().filter(fits).collect();
    if candidates.is_empty() {
        return Err(Unschedulable::NoCapacity {
            cpu_millis: request.cpu_millis,
            memory_mib: request.memory_mib,
        });
    }
    let per_domain: BTreeMap<Option<&String>, u32> = match &placement.spread_by {
        Some(key) => candidates.iter().fold(BTreeMap::new(), |mut acc, n| {
            *acc.entry(n.labels.get(key)).or_insert(0) += n.workload_instances;
            acc
        }),
        None => BTreeMap::new(),
    };
    candidates
        .into_iter()
        .min_by_key(|n| {
            let domain = placement
                .spread_by
                .as_ref()
                .map(|k| per_domain.get(&n.labels.get(k)).copied().unwrap_or(0));
            let load =
                u64::from(n.requested.cpu_millis) * 1000 / u64::from(n.capacity.cpu_millis.max(1));
            (
                domain.unwrap_or(0),
                n.workload_instances,
                load,
                n.name.clone(),
            )
        })
        .ok_or(Unschedulable::NoMatchingNode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, used_cpu: u32, instances: u32) -> NodeLoad {
        NodeLoad {
            name: name.to_owned(),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            capacity: Resources {
                cpu_millis: 1000,
                memory_mib: 1024,
            },
            requested: Resources {
                cpu_millis: used_cpu,
                memory_mib: 0,
            },
            healthy: true,
            workload_instances: instances,
        }
    }

    fn check(nodes: &[NodeLoad], placement: Placement, expected: Result<&str, Unschedulable>) {
        let request = Resources {
            cpu_millis: 100,
            memory_mib: 128,
        };
        let got = choose(nodes, &placement, request).map(|n| n.name.as_str());
        assert_eq!(got, expected);
    }

    #[test]
    fn placement_table() {
        let spread = Placement {
            spread_by: Some("zone".to_owned()),
            ..Placement::default()
        };
        let only_b = Placement {
            node_selector: [("zone".to_owned(), "b".to_owned())].into(),
            ..Placement::default()
        };
        // The least loaded node wins, ties broken by name.
        check(
            &[node("n1", "a", 500, 0), node("n2", "b", 100, 0)],
            Placement::default(),
            Ok("n2"),
        );
        check(
            &[node("n1", "a", 0, 0), node("n2", "b", 0, 0)],
            Placement::default(),
            Ok("n1"),
        );
        // Fewer instances of the workload beats lower load.
        check(
            &[node("n1", "a", 0, 2), node("n2", "b", 600, 0)],
            Placement::default(),
            Ok("n2"),
        );
        // Spreading counts per zone, not per node.
        check(
            &[
                node("n1", "a", 0, 0),
                node("n2", "a", 0, 1),
                node("n3", "b", 500, 1),
            ],
            spread.clone(),
            Ok("n1"),
        );
        check(
            &[node("n1", "a", 0, 1), node("n2", "b", 900, 0)],
            spread,
            Ok("n2"),
        );
        // Selectors and capacity filter.
        check(
            &[node("n1", "a", 0, 0), node("n2", "b", 0, 0)],
            only_b.clone(),
            Ok("n2"),
        );
        check(
            &[node("n1", "a", 0, 0)],
            only_b,
            Err(Unschedulable::NoMatchingNode),
        );
        check(
            &[node("n1", "a", 950, 0)],
            Placement::default(),
            Err(Unschedulable::NoCapacity {
                cpu_millis: 100,
                memory_mib: 128,
            }),
        );
        let mut sick = node("n1", "a", 0, 0);
        sick.healthy = false;
        check(
            &[sick, node("n2", "a", 900, 0)],
            Placement::default(),
            Ok("n2"),
        );
    }
}
