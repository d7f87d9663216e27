//! Placement: which node a new instance goes to. Pure, so it is tested with tables.
//!
//! Filters first: health and the node selector, the spec's required node affinity,
//! required affinity and anti-affinity to applications over a topology, topology spread
//! that must not be skewed (`do_not_schedule`), and free capacity. Then scores: the
//! preferred node and application terms that hold (their weights), the skew a
//! `schedule_anyway` spread would reach, then with `spread_by` the label value (e.g.
//! zone) holding the fewest instances of the workload, the node with the fewest of
//! them, the least loaded node, and the name, so results are stable. When no node is
//! left, the error says how many nodes each rule ruled out, in words.

use std::collections::BTreeMap;

use platform_spec::placement::{AppTerm, PlacementSpec, WhenUnsatisfiable};

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
    /// Instances of the other applications of the workload's environment on this
    /// node, by application name (for affinity and anti-affinity to them).
    pub apps: BTreeMap<String, u32>,
    /// It takes no new instances (what runs there still counts).
    pub cordoned: bool,
}

impl NodeLoad {
    /// Counts an instance of the workload placed here.
    pub fn charge(&mut self, request: Resources) {
        self.requested.cpu_millis += request.cpu_millis;
        self.requested.memory_mib += request.memory_mib;
        self.workload_instances += 1;
    }

    /// Counts an instance of the workload gone from here (stopped to be moved).
    pub fn discharge(&mut self, request: Resources) {
        self.requested.cpu_millis = self.requested.cpu_millis.saturating_sub(request.cpu_millis);
        self.requested.memory_mib = self.requested.memory_mib.saturating_sub(request.memory_mib);
        self.workload_instances = self.workload_instances.saturating_sub(1);
    }

    /// This node's value of a topology (`node`: its name).
    fn domain(&self, topology: &str) -> Option<&str> {
        if topology == "node" {
            Some(&self.name)
        } else {
            self.labels.get(topology).map(String::as_str)
        }
    }

    /// Instances of the applications a term names on this node (`self`, or the
    /// workload's own name: the workload's).
    fn named(&self, term: &AppTerm, own: &str) -> u32 {
        term.apps
            .iter()
            .map(|a| {
                if a == "self" || a == own {
                    self.workload_instances
                } else {
                    self.apps.get(a).copied().unwrap_or(0)
                }
            })
            .sum()
    }
}

/// Why nothing fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unschedulable {
    #[error("no healthy node matches the node selector")]
    NoMatchingNode,
    #[error("every healthy node ({healthy}) is cordoned or drained: uncordon one, or add a node")]
    AllCordoned { healthy: usize },
    #[error("no matching node has {cpu_millis}m CPU and {memory_mib} MiB free")]
    NoCapacity { cpu_millis: u32, memory_mib: u32 },
    /// The placement rules left no node: how many each rule ruled out, and what
    /// would make room.
    #[error("{0}")]
    Rules(String),
}

/// Instances of the applications a term names per value of its topology, over `nodes`.
fn per_domain<'n>(nodes: &[&'n NodeLoad], term: &AppTerm, own: &str) -> BTreeMap<&'n str, u32> {
    let mut counts = BTreeMap::new();
    for n in nodes {
        if let Some(d) = n.domain(&term.topology) {
            *counts.entry(d).or_insert(0) += n.named(term, own);
        }
    }
    counts
}

/// Picks a node for one instance of the application `own` with `request`; the caller
/// charges the chosen node ([`NodeLoad::charge`]) before placing the next one.
pub fn choose<'n>(
    nodes: &'n [NodeLoad],
    placement: &Placement,
    own: &str,
    request: Resources,
) -> Result<&'n NodeLoad, Unschedulable> {
    // Terms that select by label name the applications they select.
    let resolved;
    let rules = if placement.rules.selects_by_label() {
        resolved = placement.rules.resolved(&placement.app_labels);
        &resolved
    } else {
        &placement.rules
    };
    let healthy: Vec<&NodeLoad> = nodes.iter().filter(|n| n.healthy).collect();
    let open: Vec<&NodeLoad> = healthy.iter().copied().filter(|n| !n.cordoned).collect();
    let selected: Vec<&NodeLoad> = open
        .iter()
        .copied()
        .filter(|n| {
            placement
                .node_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
        })
        .collect();
    if selected.is_empty() && rules.is_empty() {
        if open.is_empty() && !healthy.is_empty() {
            return Err(Unschedulable::AllCordoned {
                healthy: healthy.len(),
            });
        }
        return Err(Unschedulable::NoMatchingNode);
    }
    let mut ruled_out: Vec<(String, usize)> = Vec::new();
    let mut note = |why: String, before: usize, after: usize| {
        if after < before {
            ruled_out.push((why, before - after));
        }
    };
    // Required node affinity: the nodes spread constraints count over.
    let mut left = selected.clone();
    for e in &rules.node_affinity.required {
        let before = left.len();
        left.retain(|n| e.holds(n.labels.get(&e.key).map(String::as_str)));
        note(format!("fail {}", e.text()), before, left.len());
    }
    let eligible = left.clone();
    // Required affinity and anti-affinity, counted over every healthy node.
    let owned = &healthy;
    for term in rules.app_affinity.iter().filter(|t| t.required) {
        let counts = per_domain(owned, term, own);
        // An application's first instance may go anywhere its own affinity allows.
        let first_of_self = term.names_self(own)
            && term.apps.len() == 1
            && owned.iter().all(|n| n.workload_instances == 0);
        if first_of_self {
            continue;
        }
        let before = left.len();
        left.retain(|n| {
            n.domain(&term.topology)
                .is_some_and(|d| counts.get(d).copied().unwrap_or(0) > 0)
        });
        note(
            format!(
                "have no instance of {} in their {}",
                term.describe(),
                term.topology
            ),
            before,
            left.len(),
        );
    }
    for term in rules.app_anti_affinity.iter().filter(|t| t.required) {
        let counts = per_domain(owned, term, own);
        let before = left.len();
        left.retain(|n| {
            n.domain(&term.topology)
                .is_none_or(|d| counts.get(d).copied().unwrap_or(0) == 0)
        });
        note(
            format!(
                "already have an instance of {} in their {} (anti-affinity)",
                term.describe(),
                term.topology
            ),
            before,
            left.len(),
        );
    }
    // Spreads that must not skew further, over the eligible nodes' domains.
    for s in &rules.spread {
        if s.when_unsatisfiable != WhenUnsatisfiable::DoNotSchedule {
            continue;
        }
        let counts = spread_counts(&eligible, &s.topology);
        let min = counts.values().copied().min().unwrap_or(0);
        let before = left.len();
        left.retain(|n| {
            n.domain(&s.topology)
                .is_some_and(|d| counts.get(d).copied().unwrap_or(0) + 1 - min <= s.max_skew)
        });
        note(
            format!("would skew the {} spread beyond {}", s.topology, s.max_skew),
            before,
            left.len(),
        );
    }
    let fits = |n: &&NodeLoad| {
        n.requested.cpu_millis + request.cpu_millis <= n.capacity.cpu_millis
            && n.requested.memory_mib + request.memory_mib <= n.capacity.memory_mib
    };
    let before = left.len();
    let candidates: Vec<&NodeLoad> = left.into_iter().filter(fits).collect();
    if candidates.is_empty() {
        if rules.is_empty() {
            return Err(Unschedulable::NoCapacity {
                cpu_millis: request.cpu_millis,
                memory_mib: request.memory_mib,
            });
        }
        note(
            format!(
                "lack {}m CPU and {} MiB free",
                request.cpu_millis, request.memory_mib
            ),
            before,
            0,
        );
        return Err(Unschedulable::Rules(explain(
            nodes.len(),
            healthy.len(),
            open.len(),
            selected.len(),
            &ruled_out,
            rules,
            &eligible,
            own,
        )));
    }
    // Each preferred application term's counts, once per choice (not per node).
    let preferred_terms: Vec<(&AppTerm, i64, BTreeMap<&str, u32>)> = rules
        .app_affinity
        .iter()
        .map(|t| (t, 1i64))
        .chain(rules.app_anti_affinity.iter().map(|t| (t, -1i64)))
        .filter(|(t, _)| !t.required)
        .map(|(t, sign)| (t, sign, per_domain(owned, t, own)))
        .collect();
    let preferred_score = |n: &NodeLoad| -> i64 {
        let mut score = 0i64;
        for t in &rules.node_affinity.preferred {
            if t.expressions
                .iter()
                .all(|e| e.holds(n.labels.get(&e.key).map(String::as_str)))
            {
                score += i64::from(t.weight);
            }
        }
        for (t, sign, counts) in &preferred_terms {
            let near = n
                .domain(&t.topology)
                .is_some_and(|d| counts.get(d).copied().unwrap_or(0) > 0);
            if near {
                score += sign * i64::from(t.weight);
            }
        }
        score
    };
    let anyway: Vec<(&str, BTreeMap<&str, u32>)> = rules
        .spread
        .iter()
        .filter(|s| s.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        .map(|s| (s.topology.as_str(), spread_counts(&eligible, &s.topology)))
        .collect();
    let per_spread_domain: BTreeMap<Option<&String>, u32> = match &placement.spread_by {
        Some(key) => candidates.iter().fold(BTreeMap::new(), |mut acc, n| {
            *acc.entry(n.labels.get(key)).or_insert(0) += n.workload_instances;
            acc
        }),
        None => BTreeMap::new(),
    };
    candidates
        .into_iter()
        .min_by_key(|n: &&'n NodeLoad| {
            let n: &'n NodeLoad = n;
            // The skew each schedule-anyway spread would reach: its domain's count.
            let skew: u32 = anyway
                .iter()
                .map(|(key, counts)| {
                    n.domain(key)
                        .map_or(u32::MAX / 4, |d| counts.get(d).copied().unwrap_or(0))
                })
                .sum();
            let domain = placement.spread_by.as_ref().map(|k| {
                per_spread_domain
                    .get(&n.labels.get(k))
                    .copied()
                    .unwrap_or(0)
            });
            let load =
                u64::from(n.requested.cpu_millis) * 1000 / u64::from(n.capacity.cpu_millis.max(1));
            (
                -preferred_score(n),
                skew,
                domain.unwrap_or(0),
                n.workload_instances,
                load,
                n.name.as_str(),
            )
        })
        .ok_or(Unschedulable::NoMatchingNode)
}

/// The workload's instances per value of `topology`, over `nodes` (every value the
/// nodes have, with 0 where none runs).
fn spread_counts<'n>(nodes: &[&'n NodeLoad], topology: &str) -> BTreeMap<&'n str, u32> {
    let mut counts = BTreeMap::new();
    for n in nodes {
        if let Some(d) = n.domain(topology) {
            *counts.entry(d).or_insert(0) += n.workload_instances;
        }
    }
    counts
}

/// Why no node was left, and what would make room.
#[allow(clippy::too_many_arguments)]
fn explain(
    total: usize,
    healthy: usize,
    open: usize,
    selected: usize,
    ruled_out: &[(String, usize)],
    rules: &PlacementSpec,
    eligible: &[&NodeLoad],
    own: &str,
) -> String {
    let mut parts = Vec::new();
    if healthy < total {
        parts.push(format!("{} not ready", total - healthy));
    }
    if open < healthy {
        parts.push(format!("{} cordoned", healthy - open));
    }
    if selected < open {
        parts.push(format!("{} outside the node selector", open - selected));
    }
    for (why, n) in ruled_out {
        parts.push(format!("{n} {why}"));
    }
    let mut text = format!(
        "no node can take it: of {total} node{}, {}",
        if total == 1 { "" } else { "s" },
        parts.join("; ")
    );
    // What would fix it, for the rules people most often outgrow.
    let mut fixes = Vec::new();
    for t in rules
        .app_anti_affinity
        .iter()
        .filter(|t| t.required && t.names_self(own))
    {
        let mut values: Vec<&str> = eligible
            .iter()
            .filter_map(|n| n.domain(&t.topology))
            .collect();
        values.sort_unstable();
        values.dedup();
        fixes.push(format!(
            "one instance per {} needs a {} for each instance and {} exist{}: fewer replicas (at most {}), more {}s, or a preferred rule instead of a required one",
            t.topology,
            t.topology,
            values.len(),
            if values.len() == 1 { "s" } else { "" },
            values.len(),
            t.topology
        ));
    }
    if rules
        .spread
        .iter()
        .any(|s| s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
        && ruled_out.iter().any(|(why, _)| why.contains("spread"))
    {
        fixes.push("a spread with when_unsatisfiable: schedule_anyway".to_owned());
    }
    for e in &rules.node_affinity.required {
        if ruled_out
            .iter()
            .any(|(why, _)| why == &format!("fail {}", e.text()))
        {
            fixes.push(format!("a node with {}", e.text()));
        }
    }
    if !fixes.is_empty() {
        text.push_str(". It would fit with ");
        text.push_str(&fixes.join("; or "));
    }
    text
}

/// Where `count` new instances of `own` would go, charging each as it is placed: the
/// nodes chosen, and why the first that cannot be placed cannot (the pre-flight of a
/// change; the runtime places the same way).
pub fn place_many(
    nodes: &mut [NodeLoad],
    placement: &Placement,
    own: &str,
    request: Resources,
    count: u32,
) -> (Vec<String>, Option<Unschedulable>) {
    let mut placed = Vec::new();
    for _ in 0..count {
        let name = match choose(nodes, placement, own, request) {
            Ok(n) => n.name.clone(),
            Err(e) => return (placed, Some(e)),
        };
        if let Some(n) = nodes.iter_mut().find(|n| n.name == name) {
            n.charge(request);
        }
        placed.push(name);
    }
    (placed, None)
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
            apps: BTreeMap::new(),
            cordoned: false,
        }
    }

    fn check(nodes: &[NodeLoad], placement: Placement, expected: Result<&str, Unschedulable>) {
        let request = Resources {
            cpu_millis: 100,
            memory_mib: 128,
        };
        let got = choose(nodes, &placement, "web", request).map(|n| n.name.as_str());
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

    fn zoned(
        name: &str,
        zone: &str,
        labels: &[(&str, &str)],
        own: u32,
        apps: &[(&str, u32)],
    ) -> NodeLoad {
        let mut n = node(name, zone, 0, own);
        n.labels.extend(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        n.apps = apps.iter().map(|(a, c)| ((*a).to_owned(), *c)).collect();
        n
    }

    fn rules(value: serde_json::Value) -> Placement {
        let rules: PlacementSpec = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.check("placement"), Ok(()));
        Placement {
            rules,
            ..Placement::default()
        }
    }

    fn pick(nodes: &[NodeLoad], placement: &Placement) -> Result<String, String> {
        let request = Resources {
            cpu_millis: 100,
            memory_mib: 128,
        };
        choose(nodes, placement, "web", request)
            .map(|n| n.name.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_of_rule_filters_or_scores_as_kubernetes_does() {
        use serde_json::json;
        let three = [
            zoned(
                "n1",
                "a",
                &[("disk", "hdd"), ("cpus", "4")],
                0,
                &[("cache", 1)],
            ),
            zoned(
                "n2",
                "b",
                &[("disk", "ssd"), ("cpus", "16")],
                0,
                &[("batch", 1)],
            ),
            zoned("n3", "c", &[("cpus", "8")], 0, &[]),
        ];
        // (rules, expected node or a part of the reason)
        let cases: Vec<(serde_json::Value, Result<&str, &str>)> = vec![
            (
                json!({"node_affinity": {"required": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}),
                Ok("n2"),
            ),
            (
                json!({"node_affinity": {"required": [{"key": "disk", "operator": "NotIn", "values": ["ssd", "hdd"]}]}}),
                Ok("n3"),
            ),
            (
                json!({"node_affinity": {"required": [{"key": "disk", "operator": "DoesNotExist"}]}}),
                Ok("n3"),
            ),
            (
                json!({"node_affinity": {"required": [{"key": "cpus", "operator": "Gt", "values": ["8"]}]}}),
                Ok("n2"),
            ),
            (
                json!({"node_affinity": {"required": [{"key": "cpus", "operator": "Lt", "values": ["8"]}]}}),
                Ok("n1"),
            ),
            (
                json!({"node_affinity": {"required": [{"key": "gpu", "operator": "Exists"}]}}),
                Err("3 fail gpu Exists"),
            ),
            (
                json!({"node_affinity": {"preferred": [{"weight": 10, "match": [{"key": "cpus", "operator": "Gt", "values": ["6"]}]},
                                                     {"weight": 50, "match": [{"key": "disk", "operator": "Exists"}]}]}}),
                Ok("n2"),
            ),
            (
                json!({"app_affinity": [{"apps": ["cache"], "required": true}]}),
                Ok("n1"),
            ),
            (
                json!({"app_affinity": [{"apps": ["queue"], "required": true, "topology": "zone"}]}),
                Err("3 have no instance of queue in their zone"),
            ),
            (
                json!({"app_affinity": [{"apps": ["batch"], "weight": 30}]}),
                Ok("n2"),
            ),
            (
                json!({"app_anti_affinity": [{"apps": ["cache", "batch"], "required": true}]}),
                Ok("n3"),
            ),
            (
                json!({"app_anti_affinity": [{"apps": ["cache"], "weight": 80}]}),
                Ok("n2"),
            ),
        ];
        for (value, expected) in cases {
            let got = pick(&three, &rules(value.clone()));
            match expected {
                Ok(name) => assert_eq!(got.as_deref(), Ok(name), "{value}"),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|why| why.contains(part)),
                    "{value}: {got:?}"
                ),
            }
        }
        // By label: the applications labelled tier=cache are cache (on n1); nothing is
        // labelled tier=queue, and the reason names the selector.
        let labelled = |value: serde_json::Value| {
            let mut p = rules(value);
            p.app_labels = [
                ("cache", &[("tier", "cache")][..]),
                ("batch", &[("tier", "batch")][..]),
                ("web", &[][..]),
            ]
            .into_iter()
            .map(|(a, l)| {
                (
                    a.to_owned(),
                    l.iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                )
            })
            .collect();
            p
        };
        assert_eq!(
            pick(
                &three,
                &labelled(
                    json!({"app_affinity": [{"selector": {"tier": "cache"}, "required": true}]})
                )
            )
            .as_deref(),
            Ok("n1")
        );
        assert_eq!(
            pick(&three, &labelled(json!({"app_anti_affinity": [{"selector": {"tier": "cache"}, "required": true}, {"selector": {"tier": "batch"}, "required": true}]}))).as_deref(),
            Ok("n3")
        );
        let none = pick(
            &three,
            &labelled(json!({"app_affinity": [{"selector": {"tier": "queue"}, "required": true}]})),
        );
        assert!(
            none.as_ref()
                .is_err_and(|w| w.contains("have no instance of applications labelled tier=queue")),
            "{none:?}"
        );
        // One per zone: the fourth instance has nowhere to go, and the reason says why
        // and what would fix it.
        let one_per_zone = rules(
            json!({"app_anti_affinity": [{"apps": ["self"], "required": true, "topology": "zone"}]}),
        );
        let mut nodes = vec![
            zoned("n1", "a", &[], 0, &[]),
            zoned("n2", "b", &[], 0, &[]),
            zoned("n3", "c", &[], 0, &[]),
            zoned("n4", "c", &[], 0, &[]),
        ];
        let request = Resources {
            cpu_millis: 100,
            memory_mib: 128,
        };
        let (placed, failed) = place_many(&mut nodes, &one_per_zone, "web", request, 4);
        assert_eq!(placed.len(), 3);
        let why = failed.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            why.contains("4 already have an instance of self in their zone"),
            "{why}"
        );
        assert!(why.contains("at most 3"), "{why}");
        // A spread that must not skew: a third instance may not go to zone a twice.
        let spread = rules(json!({"spread": [{"topology": "zone", "max_skew": 1}]}));
        let skewed = [zoned("n1", "a", &[], 1, &[]), zoned("n2", "b", &[], 0, &[])];
        assert_eq!(pick(&skewed, &spread).as_deref(), Ok("n2"));
        let full_b = {
            let mut b = zoned("n2", "b", &[], 0, &[]);
            b.requested.cpu_millis = 1000;
            [zoned("n1", "a", &[], 1, &[]), b]
        };
        let refused = pick(&full_b, &spread);
        assert!(
            refused
                .as_ref()
                .is_err_and(|w| w.contains("skew the zone spread beyond 1")
                    && w.contains("schedule_anyway")),
            "{refused:?}"
        );
        let anyway = rules(
            json!({"spread": [{"topology": "zone", "when_unsatisfiable": "schedule_anyway"}]}),
        );
        assert_eq!(pick(&full_b, &anyway).as_deref(), Ok("n1"));
        // A cordoned node takes nothing new, and the reason says so.
        let mut cordoned = three.clone();
        cordoned[1].cordoned = true;
        let ssd = rules(
            json!({"node_affinity": {"required": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}),
        );
        let refused = pick(&cordoned, &ssd);
        assert!(
            refused
                .as_ref()
                .is_err_and(|w| w.contains("1 cordoned") && w.contains("2 fail disk In (ssd)")),
            "{refused:?}"
        );
        // n1 wins by name unless it is cordoned.
        assert_eq!(pick(&three, &Placement::default()).as_deref(), Ok("n1"));
        let mut first_cordoned = three.clone();
        first_cordoned[0].cordoned = true;
        assert_eq!(
            pick(&first_cordoned, &Placement::default()).as_deref(),
            Ok("n2")
        );
        // Every node cordoned (the only one drained, say): the reason says so.
        let mut all_cordoned = three.clone();
        for n in &mut all_cordoned {
            n.cordoned = true;
        }
        assert_eq!(
            pick(&all_cordoned, &Placement::default()),
            Err(
                "every healthy node (3) is cordoned or drained: uncordon one, or add a node"
                    .to_owned()
            )
        );
        // The first instance of an application with affinity to itself goes anywhere.
        let together = rules(json!({"app_affinity": [{"apps": ["self"], "required": true}]}));
        assert!(pick(&three, &together).is_ok());
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::json;

        use super::*;

        fn arb_nodes() -> impl Strategy<Value = Vec<NodeLoad>> {
            prop::collection::vec(
                (
                    0..3usize,
                    0..3u32,
                    0..2u32,
                    0..2u32,
                    0..1000u32,
                    any::<bool>(),
                ),
                1..8,
            )
            .prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (zone, own, cache, batch, cpu, ssd))| {
                        let mut n = node(&format!("n{i}"), ["a", "b", "c"][zone], cpu, own);
                        if ssd {
                            n.labels.insert("disk".into(), "ssd".into());
                        }
                        n.apps = [("cache".to_owned(), cache), ("batch".to_owned(), batch)]
                            .into_iter()
                            .collect();
                        n
                    })
                    .collect()
            })
        }

        fn arb_rules() -> impl Strategy<Value = PlacementSpec> {
            (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), 1..3u32).prop_map(
                |(ssd, near_cache, self_per_node, spread, skew)| {
                    let mut v = json!({});
                    if ssd {
                        v["node_affinity"] = json!({"required": [{"key": "disk", "operator": "In", "values": ["ssd"]}]});
                    }
                    if near_cache {
                        v["app_affinity"] = json!([{"apps": ["cache"], "required": true, "topology": "zone"}]);
                    }
                    let mut anti = vec![json!({"apps": ["batch"], "required": true})];
                    if self_per_node {
                        anti.push(json!({"apps": ["self"], "required": true}));
                    }
                    v["app_anti_affinity"] = json!(anti);
                    if spread {
                        v["spread"] = json!([{"topology": "zone", "max_skew": skew}]);
                    }
                    serde_json::from_value(v).unwrap_or_default()
                },
            )
        }

        proptest! {
            /// Whatever node is chosen satisfies every required rule and has room; and
            /// placing many stops exactly when no node satisfies them.
            #[test]
            fn a_chosen_node_satisfies_every_required_rule(nodes in arb_nodes(), spec in arb_rules(), count in 1..6u32) {
                let placement = Placement { rules: spec.clone(), ..Placement::default() };
                let request = Resources { cpu_millis: 100, memory_mib: 128 };
                let mut nodes = nodes;
                let (placed, failed) = place_many(&mut nodes, &placement, "web", request, count);
                prop_assert_eq!(placed.len() as u32 == count, failed.is_none());
                for name in &placed {
                    let n = nodes.iter().find(|n| &n.name == name).cloned();
                    prop_assert!(n.is_some());
                    let n = n.unwrap_or_else(|| node("x", "a", 0, 0));
                    prop_assert!(n.healthy);
                    prop_assert!(n.requested.cpu_millis <= n.capacity.cpu_millis);
                    for e in &spec.node_affinity.required {
                        prop_assert!(e.holds(n.labels.get(&e.key).map(String::as_str)));
                    }
                    // Never beside batch on a node.
                    prop_assert_eq!(n.apps.get("batch").copied().unwrap_or(0), 0);
                }
                // One per node: no node took two of the new instances beyond what it had.
                if spec.app_anti_affinity.iter().any(|t| t.names_self("web")) {
                    let mut seen = std::collections::BTreeSet::new();
                    for name in &placed {
                        prop_assert!(seen.insert(name.clone()), "{} twice", name);
                    }
                }
                // Near cache: every chosen node's zone has a cache instance.
                if !spec.app_affinity.is_empty() {
                    for name in &placed {
                        let zone = nodes.iter().find(|n| &n.name == name).and_then(|n| n.labels.get("zone").cloned());
                        let near = nodes.iter().any(|n| n.labels.get("zone") == zone.as_ref() && n.apps.get("cache").copied().unwrap_or(0) > 0);
                        prop_assert!(near);
                    }
                }
            }
        }
    }
}
