//! The drain pre-flight: whether every instance on a node can move elsewhere the way
//! a drain moves it (one at a time per application; a replacement starts beside the
//! instance it replaces, or, when there is no room for it and the application's
//! disruption budget allows one down, after the instance stops), and what would fix
//! it when not. Pure: the same placement the runtime makes, simulated move by move
//! over the nodes and every application's instances as they are. Tested with tables.

use std::collections::BTreeMap;

use platform_spec::placement::DisruptionBudget;
use serde::Serialize;
use utoipa::ToSchema;

use crate::placement::{NodeLoad, choose};
use crate::runtime::{Node, Placement};
use crate::spec::{AppSpec, Resources, WorkloadKind};

/// An application with instances on the node drained.
#[derive(Debug, Clone)]
pub struct DrainApp {
    pub tenant: String,
    pub environment: String,
    pub app: String,
    pub spec: AppSpec,
    /// Its replica count now.
    pub replicas: u32,
    /// When its rules select by label: the environment's applications' labels.
    pub app_labels: crate::store::runtime::AppLabels,
}

/// How a drain moves one application's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// Each replacement starts elsewhere before its instance stops: none is down.
    ReplacementFirst,
    /// A replacement has no room beside its instance: the instance stops first, as
    /// the disruption budget allows.
    StopsFirst,
    /// A daemon's instance stays (it runs on every node).
    Stays,
    /// A cron job's run finishes where it is; the next runs go elsewhere.
    FinishesThere,
    /// The drain cannot move it: see `reason`.
    Blocked,
}

/// What a drain does with one application's instances on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DrainMove {
    pub tenant: String,
    pub environment: String,
    pub application: String,
    /// Its instances on the node.
    pub instances: u32,
    pub how: How,
    /// Where they would go, in order.
    pub to: Vec<String>,
    /// Why it cannot move, and what would fix it; or what the move costs.
    pub reason: Option<String>,
}

/// Whether a node's drain can finish, application by application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DrainPlan {
    pub runtime: String,
    pub node: String,
    /// Every application's instances can move (daemons stay, cron runs finish).
    pub feasible: bool,
    pub moves: Vec<DrainMove>,
}

impl DrainPlan {
    /// The blocked moves in one sentence each, for an error message.
    pub fn blocked(&self) -> String {
        self.moves
            .iter()
            .filter(|m| m.how == How::Blocked)
            .map(|m| {
                format!(
                    "{}/{}/{}: {}",
                    m.tenant,
                    m.environment,
                    m.application,
                    m.reason.as_deref().unwrap_or("cannot move")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Who an instance belongs to: tenant, environment, application.
type Owner = (String, String, String);

/// The nodes' loads and every application's instance count per node, as moves change
/// them.
struct World {
    nodes: Vec<Node>,
    /// Requests placed per node.
    requested: BTreeMap<String, Resources>,
    counts: BTreeMap<(String, Owner), u32>,
}

impl World {
    fn loads_for(&self, owner: &Owner, drained: &str) -> Vec<NodeLoad> {
        self.nodes
            .iter()
            .map(|n| {
                let mut apps = BTreeMap::new();
                let mut own = 0;
                for ((node, (t, e, a)), count) in &self.counts {
                    if node != &n.name || t != &owner.0 || e != &owner.1 {
                        continue;
                    }
                    if a == &owner.2 {
                        own = *count;
                    } else {
                        apps.insert(a.clone(), *count);
                    }
                }
                NodeLoad {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    capacity: n.capacity,
                    requested: self.requested.get(&n.name).copied().unwrap_or(Resources {
                        cpu_millis: 0,
                        memory_mib: 0,
                    }),
                    healthy: n.healthy || (n.cordoned && n.condition == "cordoned"),
                    workload_instances: own,
                    apps,
                    cordoned: n.cordoned || n.name == drained,
                }
            })
            .collect()
    }

    fn add(&mut self, node: &str, owner: &Owner, request: Resources, up: bool) {
        let count = self
            .counts
            .entry((node.to_owned(), owner.clone()))
            .or_insert(0);
        let used = self.requested.entry(node.to_owned()).or_insert(Resources {
            cpu_millis: 0,
            memory_mib: 0,
        });
        if up {
            *count += 1;
            used.cpu_millis += request.cpu_millis;
            used.memory_mib += request.memory_mib;
        } else {
            *count = count.saturating_sub(1);
            used.cpu_millis = used.cpu_millis.saturating_sub(request.cpu_millis);
            used.memory_mib = used.memory_mib.saturating_sub(request.memory_mib);
        }
    }
}

/// Whether `budget` lets one of `replicas` ready instances be down.
fn allows_one_down(budget: Option<DisruptionBudget>, replicas: u32) -> bool {
    budget.is_some_and(|b| replicas.saturating_sub(1) >= b.min_available)
}

/// Simulates draining `drained`: `placed` lists every instance by node and owner (the
/// drained node's included), `apps` the applications with instances there. Moves run
/// application by application, instance by instance, each charging the nodes as the
/// runtime would.
pub fn plan(
    runtime: &str,
    drained: &str,
    nodes: Vec<Node>,
    placed: &[(String, Owner, Resources)],
    apps: &[DrainApp],
) -> DrainPlan {
    let mut world = World {
        requested: nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    n.allocated.unwrap_or(Resources {
                        cpu_millis: 0,
                        memory_mib: 0,
                    }),
                )
            })
            .collect(),
        nodes,
        counts: BTreeMap::new(),
    };
    for (node, owner, _) in placed {
        *world
            .counts
            .entry((node.clone(), owner.clone()))
            .or_insert(0) += 1;
    }
    let mut moves = Vec::new();
    for app in apps {
        let owner: Owner = (app.tenant.clone(), app.environment.clone(), app.app.clone());
        let here = world
            .counts
            .get(&(drained.to_owned(), owner.clone()))
            .copied()
            .unwrap_or(0);
        if here == 0 {
            continue;
        }
        let mut m = DrainMove {
            tenant: app.tenant.clone(),
            environment: app.environment.clone(),
            application: app.app.clone(),
            instances: here,
            how: How::ReplacementFirst,
            to: Vec::new(),
            reason: None,
        };
        match app.spec.kind {
            WorkloadKind::Daemon => m.how = How::Stays,
            WorkloadKind::Cronjob => m.how = How::FinishesThere,
            kind => move_all(&mut world, drained, app, &owner, kind, here, &mut m),
        }
        moves.push(m);
    }
    DrainPlan {
        runtime: runtime.to_owned(),
        node: drained.to_owned(),
        feasible: moves.iter().all(|m| m.how != How::Blocked),
        moves,
    }
}

fn move_all(
    world: &mut World,
    drained: &str,
    app: &DrainApp,
    owner: &Owner,
    kind: WorkloadKind,
    here: u32,
    m: &mut DrainMove,
) {
    let placement = Placement {
        rules: app.spec.placement.clone(),
        app_labels: app.app_labels.clone(),
        ..Placement::standard()
    };
    let request = app.spec.resources;
    let budget = app.spec.placement.disruption_budget;
    let may_stop = allows_one_down(budget, app.replicas);
    let budget_fix = format!(
        "a disruption budget that lets one instance be down (placement.disruption_budget.min_available at most {}) would let it stop first",
        app.replicas.saturating_sub(1)
    );
    for _ in 0..here {
        // An ordinal is unique: it always stops before it starts elsewhere.
        if kind != WorkloadKind::Stateful {
            let loads = world.loads_for(owner, drained);
            match choose(&loads, &placement, &app.app, request) {
                Ok(node) => {
                    let to = node.name.clone();
                    world.add(&to, owner, request, true);
                    world.add(drained, owner, request, false);
                    m.to.push(to);
                    continue;
                }
                Err(no_room) if !may_stop => {
                    // Would stopping first help? Say so only if it would.
                    world.add(drained, owner, request, false);
                    let helps = choose(
                        &world.loads_for(owner, drained),
                        &placement,
                        &app.app,
                        request,
                    )
                    .is_ok();
                    world.add(drained, owner, request, true);
                    m.how = How::Blocked;
                    m.reason = Some(if helps {
                        format!("no room for a replacement beside it ({no_room}); {budget_fix}")
                    } else {
                        format!("no node can take it ({no_room})")
                    });
                    return;
                }
                Err(_) => {}
            }
        } else if !may_stop {
            m.how = How::Blocked;
            m.reason = Some(format!(
                "a stateful ordinal stops before it starts elsewhere, with an empty data directory (its data stays on {drained}): {budget_fix}"
            ));
            return;
        }
        world.add(drained, owner, request, false);
        match choose(
            &world.loads_for(owner, drained),
            &placement,
            &app.app,
            request,
        ) {
            Ok(node) => {
                let to = node.name.clone();
                world.add(&to, owner, request, true);
                m.to.push(to);
                m.how = How::StopsFirst;
                m.reason = Some(format!(
                    "one instance at a time is down while it moves, as its disruption budget allows (min_available {})",
                    budget.map_or(0, |b| b.min_available)
                ));
                if kind == WorkloadKind::Stateful {
                    m.reason = Some(format!(
                        "each ordinal stops, then starts elsewhere with an empty data directory (its data stays on {drained}), one at a time as its disruption budget allows"
                    ));
                }
            }
            Err(e) => {
                world.add(drained, owner, request, true);
                m.how = How::Blocked;
                m.reason = Some(format!("no node can take it ({e})"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, zone: &str, cpu: u32) -> Node {
        Node {
            name: name.into(),
            labels: [("zone".to_owned(), zone.to_owned())].into(),
            capacity: Resources {
                cpu_millis: cpu,
                memory_mib: 4096,
            },
            allocated: Some(Resources {
                cpu_millis: 0,
                memory_mib: 0,
            }),
            healthy: true,
            cordoned: false,
            draining: false,
            condition: "ready".into(),
            message: None,
            last_seen: None,
        }
    }

    fn app(name: &str, spec: serde_json::Value, replicas: u32) -> DrainApp {
        let mut spec = spec;
        spec["command"] = json!("run");
        DrainApp {
            tenant: "acme".into(),
            environment: "prod".into(),
            app: name.into(),
            spec: serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}")),
            replicas,
            app_labels: Default::default(),
        }
    }

    fn owner(a: &str) -> Owner {
        ("acme".into(), "prod".into(), a.into())
    }

    /// Instances of `app` on nodes, each requesting 250m, with the nodes' allocation
    /// charged.
    fn placed(nodes: &mut [Node], list: &[(&str, &str)]) -> Vec<(String, Owner, Resources)> {
        let r = Resources {
            cpu_millis: 250,
            memory_mib: 128,
        };
        for (n, _) in list {
            if let Some(node) = nodes.iter_mut().find(|x| x.name == *n)
                && let Some(a) = &mut node.allocated
            {
                a.cpu_millis += r.cpu_millis;
                a.memory_mib += r.memory_mib;
            }
        }
        list.iter()
            .map(|(n, a)| ((*n).to_owned(), owner(a), r))
            .collect()
    }

    const ONE_PER_ZONE: &str = "one instance per zone";

    #[test]
    fn a_drain_plan_says_how_each_application_moves_and_why_one_cannot() {
        let resources = json!({"cpu_millis": 250, "memory_mib": 128});
        let per_zone = json!({"app_anti_affinity": [{"apps": ["self"], "topology": "zone", "required": true}]});
        // Zones a (n1, n4), b (n2), c (n3); n1 is drained.
        let mut nodes = vec![
            node("n1", "a", 4000),
            node("n2", "b", 4000),
            node("n3", "c", 4000),
            node("n4", "a", 4000),
        ];
        let on = placed(
            &mut nodes,
            &[
                ("n1", "web"),
                ("n2", "web"),
                ("n1", "zoned"),
                ("n2", "zoned"),
                ("n3", "zoned"),
                ("n1", "db"),
                ("n1", "agent"),
                ("n2", "agent"),
            ],
        );
        let cases: Vec<(DrainApp, How, Option<&str>)> = vec![
            // Room elsewhere: replacement first.
            (
                app("web", json!({"resources": resources}), 2),
                How::ReplacementFirst,
                None,
            ),
            // One per zone: its replacement has no room beside it in zone a; without a
            // budget, blocked with the fix named; with one, it stops first.
            (
                app(
                    "zoned",
                    json!({"resources": resources, "placement": per_zone}),
                    3,
                ),
                How::Blocked,
                Some("min_available at most 2"),
            ),
            (
                app(
                    "zoned",
                    json!({"resources": resources, "placement": {"app_anti_affinity": per_zone["app_anti_affinity"], "disruption_budget": {"min_available": 2}}}),
                    3,
                ),
                How::StopsFirst,
                Some("min_available 2"),
            ),
            // A budget of 3 of 3 allows none down.
            (
                app(
                    "zoned",
                    json!({"resources": resources, "placement": {"app_anti_affinity": per_zone["app_anti_affinity"], "disruption_budget": {"min_available": 3}}}),
                    3,
                ),
                How::Blocked,
                Some(ONE_PER_ZONE),
            ),
            // A stateful ordinal moves only within a budget, and loses its data dir.
            (
                app("db", json!({"kind": "stateful", "resources": resources}), 1),
                How::Blocked,
                Some("data stays on n1"),
            ),
            (
                app(
                    "db",
                    json!({"kind": "stateful", "resources": resources, "placement": {"disruption_budget": {"min_available": 0}}}),
                    1,
                ),
                How::StopsFirst,
                Some("empty data directory"),
            ),
            (app("agent", json!({"kind": "daemon"}), 1), How::Stays, None),
        ];
        for (a, how, says) in cases {
            let p = plan("local", "n1", nodes.clone(), &on, std::slice::from_ref(&a));
            let m = &p.moves[0];
            assert_eq!(m.how, how, "{}: {m:?}", a.app);
            assert_eq!(p.feasible, how != How::Blocked);
            if let Some(says) = says {
                assert!(
                    m.reason.as_deref().is_some_and(|r| r.contains(says)),
                    "{}: {m:?}",
                    a.app
                );
            }
            if matches!(how, How::ReplacementFirst | How::StopsFirst) {
                assert!(!m.to.is_empty() && m.to.iter().all(|n| n != "n1"), "{m:?}");
            }
            if a.app == "zoned" && how == How::StopsFirst {
                assert_eq!(m.to, ["n4"], "zone a's other node");
            }
        }
    }

    #[test]
    fn moves_charge_the_nodes_so_later_applications_see_the_room_taken() {
        // n2 has room for exactly one 1000m instance: the first application's
        // replacement takes it, and the second has nowhere to go.
        let mut nodes = vec![node("n1", "a", 4000), node("n2", "a", 1000)];
        let big = json!({"resources": {"cpu_millis": 1000, "memory_mib": 128}});
        let on = vec![
            (
                "n1".to_owned(),
                owner("first"),
                Resources {
                    cpu_millis: 1000,
                    memory_mib: 128,
                },
            ),
            (
                "n1".to_owned(),
                owner("second"),
                Resources {
                    cpu_millis: 1000,
                    memory_mib: 128,
                },
            ),
        ];
        nodes[0].allocated = Some(Resources {
            cpu_millis: 2000,
            memory_mib: 256,
        });
        let apps = [app("first", big.clone(), 1), app("second", big, 1)];
        let p = plan("local", "n1", nodes, &on, &apps);
        assert_eq!(p.moves[0].how, How::ReplacementFirst);
        assert_eq!(p.moves[1].how, How::Blocked);
        assert!(!p.feasible);
        assert!(
            p.blocked()
                .starts_with("acme/prod/second: no node can take it"),
            "{}",
            p.blocked()
        );
    }
}
