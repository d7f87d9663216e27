//! A spec's placement rules as the pod template's `affinity` and
//! `topologySpreadConstraints`: the same semantics the local runtime places by.

use platform_core::placement_spec::PlacementSpec;
use platform_core::runtime::{Placement, RevisionShape, Slots, Workload, WorkloadKey};
use platform_core::spec::{AppSpec, WorkloadKind};
use runtime_kube::render::{Object, render};
use serde_json::{Value, json};

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e:?}"))
}

/// `acme/dev/web` of `kind` at revision 1, placed by its spec's rules.
fn web(kind: WorkloadKind, spec: AppSpec, slots: Slots) -> Workload {
    Workload {
        key: WorkloadKey {
            tenant: "acme".into(),
            environment: "dev".into(),
            app: "web".into(),
        },
        kind,
        revisions: vec![RevisionShape {
            revision: 1,
            spec: spec.clone(),
            slots,
            weight: None,
            in_place: false,
            secrets: Default::default(),
        }],
        placement: Placement {
            rules: spec.placement,
            ..Placement::standard()
        },
    }
}

#[test]
fn rules_become_node_affinity_pod_affinity_anti_affinity_and_spread() {
    let rules: PlacementSpec = must(serde_json::from_value(json!({
        "node_affinity": {
            "required": [{"key": "disk", "operator": "In", "values": ["ssd"]}],
            "preferred": [{"weight": 30, "match": [{"key": "zone", "operator": "NotIn", "values": ["c"]}]}]},
        "app_affinity": [{"apps": ["cache"], "topology": "zone", "weight": 40}],
        "app_anti_affinity": [{"apps": ["self", "batch"], "required": true}],
        "spread": [{"topology": "zone", "max_skew": 2, "when_unsatisfiable": "do_not_schedule"}]
    })));
    let mut spec: AppSpec = must(serde_json::from_value(
        json!({"image": "shop/web:1", "replicas": 3}),
    ));
    spec.placement = rules;
    let workload = web(WorkloadKind::Service, spec, Slots::Count(3));
    let rendered = must(render(&workload));
    let pod: Value = rendered
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(must(serde_json::to_value(d))),
            _ => None,
        })
        .map(|d| d["spec"]["template"]["spec"].clone())
        .unwrap_or_default();
    let affinity = &pod["affinity"];
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"],
        json!([{"key": "disk", "operator": "In", "values": ["ssd"]}])
    );
    let preferred = &affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(preferred["weight"], 30);
    assert_eq!(
        preferred["preference"]["matchExpressions"][0]["key"],
        "topology.kubernetes.io/zone"
    );
    let near = &affinity["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(near["weight"], 40);
    assert_eq!(
        near["podAffinityTerm"]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(
        near["podAffinityTerm"]["labelSelector"]["matchExpressions"][0]["values"],
        json!(["cache"])
    );
    let away = &affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(away["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        away["labelSelector"]["matchExpressions"][0]["values"],
        json!(["batch", "web"])
    );
    // The spec's zone spread replaces the standard one (a topology key appears once
    // per rule).
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(spread.len(), 1, "{spread:#?}");
    assert_eq!(spread[0]["maxSkew"], 2);
    assert_eq!(spread[0]["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(spread[0]["topologyKey"], "topology.kubernetes.io/zone");
}

#[test]
fn a_disruption_budget_becomes_a_pod_disruption_budget_over_every_revision_of_the_app() {
    let workload = |budget: Option<u32>, kind: WorkloadKind| {
        let mut spec: AppSpec = must(serde_json::from_value(
            json!({"image": "shop/web:1", "replicas": 3}),
        ));
        spec.kind = kind;
        spec.placement.disruption_budget = budget
            .map(|min_available| platform_core::placement_spec::DisruptionBudget { min_available });
        let slots = if kind == WorkloadKind::Stateful {
            Slots::Ordinals(vec![0, 1, 2])
        } else {
            Slots::Count(3)
        };
        web(kind, spec, slots)
    };
    let budgets = |w: Workload| -> Vec<Value> {
        must(render(&w))
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::PodDisruptionBudget(p) => Some(must(serde_json::to_value(p))),
                _ => None,
            })
            .collect()
    };
    for kind in [WorkloadKind::Service, WorkloadKind::Stateful] {
        let pdb = budgets(workload(Some(2), kind));
        assert_eq!(pdb.len(), 1, "{kind:?}");
        assert_eq!(pdb[0]["apiVersion"], "policy/v1");
        assert_eq!(pdb[0]["metadata"]["name"], "web");
        assert_eq!(pdb[0]["spec"]["minAvailable"], 2);
        // Every revision's pods: the app's label, not a revision's.
        assert_eq!(
            pdb[0]["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/managed-by": "paas", "paas.dev/app": "web"})
        );
    }
    assert!(budgets(workload(None, WorkloadKind::Service)).is_empty());
    // A daemon's pods are not evicted by a drain; a job's run to completion.
    assert!(budgets(workload(Some(1), WorkloadKind::Job)).is_empty());
}

#[test]
fn a_selector_term_selects_pods_by_the_labels_their_spec_gives_them() {
    let spec: AppSpec = must(serde_json::from_value(json!({
        "image": "shop/web:1", "replicas": 2, "labels": {"tier": "front"},
        "placement": {"app_affinity": [{"selector": {"tier": "cache"}, "required": true, "topology": "zone"}]}
    })));
    let workload = web(WorkloadKind::Service, spec, Slots::Count(2));
    let template: Value = must(render(&workload))
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(must(serde_json::to_value(d))),
            _ => None,
        })
        .map(|d| d["spec"]["template"].clone())
        .unwrap_or_default();
    assert_eq!(template["metadata"]["labels"]["tier"], "front");
    assert_eq!(template["metadata"]["labels"]["paas.dev/app"], "web");
    let term = &template["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        [0];
    assert_eq!(
        term["labelSelector"],
        json!({"matchLabels": {"app.kubernetes.io/managed-by": "paas", "tier": "cache"}})
    );
    assert_eq!(term["topologyKey"], "topology.kubernetes.io/zone");
}
