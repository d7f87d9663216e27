//! Every object the driver renders, for a property-generated corpus of application
//! specs of every kind, meets the "restricted" Pod Security Standard (checked here)
//! and, written out as YAML, validates against the Kubernetes schemas and passes
//! checkov's pod-security checks (`tests/k8s/validate.py`, run when the tools are
//! installed: `scripts/k8s-tools.sh`, which the test command runs first).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use platform_core::runtime::{Placement, RevisionShape, Slots, Workload, WorkloadKey};
use platform_core::sealing::SecretValue;
use platform_core::spec::{AppSpec, WorkloadKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use runtime_kube::render::{KeptNodes, Object, render, render_keeping};

fn kind() -> impl Strategy<Value = WorkloadKind> {
    prop::sample::select(WorkloadKind::ALL.to_vec())
}

prop_compose! {
    fn check()(path in prop::option::of("/[a-z]{1,8}"), period in 100u32..30_000,
               timeout in 10u32..5_000, failures in 1u32..10, successes in 1u32..3,
               delay in 0u32..60_000) -> serde_json::Value {
        serde_json::json!({"http_path": path, "period_ms": period, "timeout_ms": timeout,
            "failure_threshold": failures, "success_threshold": successes, "initial_delay_ms": delay})
    }
}

prop_compose! {
    fn spec()(kind in kind(), image in "[a-z]{1,10}(/[a-z0-9]{1,8})?:[0-9]\\.[0-9]{1,2}",
              command in prop::option::of("[a-z]{1,8}"),
              args in prop::collection::vec("[a-z$-]{0,6}(\\$PORT|\\$\\{PORT\\})?", 0..4),
              env in prop::collection::btree_map("[A-Z][A-Z_]{0,8}", "[ -~]{0,12}", 0..4),
              replicas in 0u32..5, cpu in 10u32..4000, memory in 16u32..4096,
              cpu_extra in prop::option::of(0u32..2000), memory_extra in prop::option::of(0u32..2048),
              ports in prop::collection::btree_set("[a-z]{1,6}", 0..3),
              readiness in prop::option::of(check()), liveness in prop::option::of(check()),
              minute in 0u32..60, storage in prop::option::of(64u32..8192),
              labels in prop::collection::btree_map("[a-z]{1,6}(\\.[a-z]{1,4}/[a-z]{1,6})?", "[a-z0-9]{0,8}", 0..3))
        -> AppSpec {
        let ports: Vec<_> = ports.into_iter().map(|p| serde_json::json!({"name": p})).collect();
        let mut health = serde_json::Map::new();
        if !ports.is_empty() {
            if let Some(r) = readiness { health.insert("readiness".into(), r); }
            if let Some(l) = liveness { health.insert("liveness".into(), l); }
        }
        let mut limits = serde_json::Map::new();
        if let Some(extra) = cpu_extra { limits.insert("cpu_millis".into(), (cpu + extra).into()); }
        if let Some(extra) = memory_extra { limits.insert("memory_mib".into(), (memory + extra).into()); }
        let json = serde_json::json!({
            "kind": kind, "image": image, "command": command.unwrap_or_default(), "args": args,
            "env": env, "replicas": if kind == WorkloadKind::Daemon { replicas.min(1) } else { replicas },
            "resources": {"cpu_millis": cpu, "memory_mib": memory}, "limits": limits,
            "ports": ports, "health": health, "labels": labels,
            "schedule": (kind == WorkloadKind::Cronjob).then(|| format!("{minute} */2 * * *")),
            "storage_mib": storage.filter(|_| kind == WorkloadKind::Stateful),
        });
        let spec: AppSpec = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        spec.validate().unwrap_or_else(|e| panic!("generated an invalid spec: {e:?}"));
        spec
    }
}

/// Placement rules of every kind, as a spec carries them.
fn rules() -> impl Strategy<Value = platform_core::placement_spec::PlacementSpec> {
    let op = prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]);
    let expr = (op, "[a-z]{1,6}(/[a-z]{1,6})?", "[a-z0-9]{1,6}").prop_map(|(op, key, value)| {
        let values = match op {
            "In" | "NotIn" => serde_json::json!([value]),
            "Gt" | "Lt" => serde_json::json!(["4"]),
            _ => serde_json::json!([]),
        };
        serde_json::json!({"key": key, "operator": op, "values": values})
    });
    let topology = prop::sample::select(vec!["node", "zone", "rack"]);
    let term = (prop::collection::vec("self|[a-z]{1,8}", 1..3), topology.clone(), any::<bool>(), 1u32..=100,
                prop::option::of(("[a-z]{1,8}", "[a-z0-9]{1,8}")))
        .prop_map(|(apps, topology, required, weight, selector)| match selector {
            Some((k, v)) => serde_json::json!({"selector": {k: v}, "topology": topology, "required": required, "weight": weight}),
            None => serde_json::json!({"apps": apps, "topology": topology, "required": required, "weight": weight}),
        });
    (
        prop::collection::vec(expr.clone(), 0..3),
        prop::collection::vec((1u32..=100, prop::collection::vec(expr, 1..3)), 0..2),
        prop::collection::vec(term.clone(), 0..2),
        prop::collection::vec(term, 0..2),
        prop::option::of((topology, 1u32..4, any::<bool>())),
        prop::option::of(0u32..5),
    )
        .prop_map(|(required, preferred, near, away, spread, budget)| {
            let preferred: Vec<_> = preferred
                .into_iter()
                .map(|(weight, exprs)| serde_json::json!({"weight": weight, "match": exprs}))
                .collect();
            let spread: Vec<_> = spread
                .into_iter()
                .map(|(t, skew, anyway)| serde_json::json!({"topology": t, "max_skew": skew,
                    "when_unsatisfiable": if anyway { "schedule_anyway" } else { "do_not_schedule" }}))
                .collect();
            let rules: platform_core::placement_spec::PlacementSpec = serde_json::from_value(serde_json::json!({
                "node_affinity": {"required": required, "preferred": preferred},
                "app_affinity": near, "app_anti_affinity": away, "spread": spread,
                "disruption_budget": budget.map(|b| serde_json::json!({"min_available": b})),
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            rules.check("placement").unwrap_or_else(|e| panic!("generated invalid rules: {e:?}"));
            rules
        })
}

prop_compose! {
    fn workload()(spec in spec(), rules in rules(), app in "[a-z][a-z0-9]{0,12}", revision in 1i32..50,
                   previous in prop::option::of(1u32..4), zone_spread in any::<bool>(),
                   selector in prop::option::of("[a-z]{1,5}"),
                   secrets in prop::collection::btree_map("S[A-Z_]{0,8}", "[ -~]{1,24}", 0..3)) -> Workload {
        // Secret names never repeat a plain variable's (the core refuses it).
        let secrets: BTreeMap<String, SecretValue> = secrets
            .into_iter()
            .filter(|(k, _)| !spec.env.contains_key(k))
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect();
        let current = revision + 1;
        let mut revisions = Vec::new();
        let slots = |n: u32, first: u32| match spec.kind {
            WorkloadKind::Stateful => Slots::Ordinals((first..first + n).collect()),
            WorkloadKind::Daemon if n > 0 => Slots::EveryNode,
            _ => Slots::Count(n),
        };
        // A rollout in progress: some instances still on the previous revision.
        if let Some(old) = previous.filter(|_| spec.kind != WorkloadKind::Daemon && spec.kind != WorkloadKind::Cronjob) {
            revisions.push(RevisionShape { revision, spec: spec.clone(), slots: slots(old, 0), weight: None, in_place: false, secrets: secrets.clone() });
            revisions.push(RevisionShape { revision: current, spec: spec.clone(), slots: slots(spec.replicas, old), weight: None, in_place: false, secrets });
        } else {
            revisions.push(RevisionShape { revision: current, spec: spec.clone(), slots: slots(spec.replicas, 0), weight: None, in_place: false, secrets });
        }
        Workload {
            key: WorkloadKey { tenant: "acme".into(), environment: "dev".into(), app },
            kind: spec.kind,
            revisions,
            placement: Placement {
                node_selector: selector.map(|s| BTreeMap::from([("zone".to_owned(), s)])).unwrap_or_default(),
                spread_by: zone_spread.then(|| "zone".to_owned()),
                rules,
                app_labels: BTreeMap::new(),
            },
        }
    }
}

fn templates(object: &Object) -> Vec<&PodTemplateSpec> {
    match object {
        Object::Deployment(d) => d.spec.iter().map(|s| &s.template).collect(),
        Object::StatefulSet(s) => s.spec.iter().map(|s| &s.template).collect(),
        Object::DaemonSet(d) => d.spec.iter().map(|s| &s.template).collect(),
        Object::Job(j) => j.spec.iter().map(|s| &s.template).collect(),
        Object::CronJob(c) => c
            .spec
            .iter()
            .filter_map(|s| s.job_template.spec.as_ref().map(|j| &j.template))
            .collect(),
        Object::Service(_) | Object::Secret(_) | Object::PodDisruptionBudget(_) => Vec::new(),
    }
}

/// The "restricted" Pod Security Standard (v1.32) and the platform's own rules, as
/// violations in words.
fn violations(template: &PodTemplateSpec) -> Vec<String> {
    let mut v = Vec::new();
    let Some(pod) = &template.spec else {
        return vec!["no pod spec".into()];
    };
    let psc = pod.security_context.clone().unwrap_or_default();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        v.push("host namespaces".into());
    }
    if pod.automount_service_account_token != Some(false) {
        v.push("service account token mounted".into());
    }
    for volume in pod.volumes.iter().flatten() {
        let allowed = volume.empty_dir.is_some()
            || volume.config_map.is_some()
            || volume.secret.is_some()
            || volume.persistent_volume_claim.is_some()
            || volume.projected.is_some()
            || volume.downward_api.is_some();
        if !allowed {
            v.push(format!("volume {} of a forbidden type", volume.name));
        }
    }
    for c in &pod.containers {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            v.push(format!("{}: privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!("{}: allowPrivilegeEscalation not false", c.name));
        }
        let non_root = sc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
        if !non_root {
            v.push(format!("{}: runAsNonRoot not true", c.name));
        }
        if sc.run_as_user.or(psc.run_as_user) == Some(0) {
            v.push(format!("{}: runs as UID 0", c.name));
        }
        let seccomp = sc
            .seccomp_profile
            .clone()
            .or(psc.seccomp_profile.clone())
            .map(|p| p.type_);
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            v.push(format!("{}: seccomp not RuntimeDefault", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            v.push(format!("{}: capabilities not dropped", c.name));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            v.push(format!("{}: capabilities added", c.name));
        }
        if c.ports.iter().flatten().any(|p| p.host_port.is_some()) {
            v.push(format!("{}: host port", c.name));
        }
        let resources = c.resources.clone().unwrap_or_default();
        for (what, map) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for r in ["cpu", "memory"] {
                if !map.as_ref().is_some_and(|m| m.contains_key(r)) {
                    v.push(format!("{}: no {r} {what}", c.name));
                }
            }
        }
    }
    v
}

/// How a StatefulSet's ordinals fail to keep their data: a claim of the newest
/// revision's size, mounted as the working directory, deleted with the application
/// and kept through a scale-in.
fn data_volume(set: &k8s_openapi::api::apps::v1::StatefulSet, w: &Workload) -> Vec<String> {
    let mut v = Vec::new();
    let Some(spec) = &set.spec else {
        return vec!["no spec".into()];
    };
    let newest = w.revisions.iter().max_by_key(|r| r.revision);
    let want = newest
        .and_then(|r| r.spec.storage())
        .map(|mib| format!("{mib}Mi"));
    let claims: Vec<_> = spec.volume_claim_templates.iter().flatten().collect();
    let size = claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("data"))
        .and_then(|c| {
            c.spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")
        })
        .map(|q| q.0.clone());
    if size != want {
        v.push(format!("data claim of {size:?}, not {want:?}"));
    }
    let policy = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();
    if (
        policy.when_deleted.as_deref(),
        policy.when_scaled.as_deref(),
    ) != (Some("Delete"), Some("Retain"))
    {
        v.push(format!("claims retained {policy:?}"));
    }
    for c in spec.template.spec.iter().flat_map(|p| &p.containers) {
        let mounted = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "data" && m.mount_path == "/data");
        if !mounted || c.working_dir.as_deref() != Some("/data") {
            v.push(format!("{}: does not work in its data volume", c.name));
        }
    }
    v
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("PAAS_K8S_CORPUS").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("k8s-corpus"),
        PathBuf::from,
    )
}

#[test]
fn the_rendered_corpus_is_restricted_and_schema_valid() {
    let dir = corpus_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut runner = TestRunner::new(Config {
        cases: 120,
        ..Config::default()
    });
    let counter = std::cell::Cell::new(0_usize);
    let kinds = std::cell::RefCell::new(BTreeMap::<&'static str, usize>::new());
    runner
        .run(&workload(), |w| {
            // Every other case as an in-place release renders it: the service's
            // revisions keep to the nodes it ran on.
            let kept: KeptNodes = if counter.get() % 2 == 1 {
                w.revisions
                    .iter()
                    .map(|r| (r.revision, vec!["node-a".to_owned(), "node-b".to_owned()]))
                    .collect()
            } else {
                KeptNodes::new()
            };
            let rendered =
                render_keeping(&w, &kept).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            for object in &rendered.objects {
                *kinds.borrow_mut().entry(object.kind()).or_default() += 1;
                if let Object::StatefulSet(set) = object {
                    let found = data_volume(set, &w);
                    prop_assert!(found.is_empty(), "StatefulSet {}: {found:?}", object.name());
                }
                for t in templates(object) {
                    let found = violations(t);
                    prop_assert!(
                        found.is_empty(),
                        "{} {}: {found:?}",
                        object.kind(),
                        object.name()
                    );
                }
            }
            // Written as JSON documents (valid YAML): what the driver sends is JSON, and a
            // YAML 1.1 reader would take some plain scalars (`<<`, `=`) for tags.
            let mut yaml = serde_json::to_string_pretty(&rendered.namespace)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for object in &rendered.objects {
                yaml.push_str("\n---\n");
                yaml.push_str(
                    &serde_json::to_string_pretty(object)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                );
            }
            yaml.push('\n');
            let n = counter.get();
            counter.set(n + 1);
            std::fs::write(dir.join(format!("case-{n:04}.yaml")), yaml)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds = kinds.into_inner();
    for kind in [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "Service",
    ] {
        assert!(
            kinds.get(kind).is_some_and(|n| *n > 0),
            "no {kind} in the corpus: {kinds:?}"
        );
    }

    // The same objects through the Kubernetes schemas and checkov.
    let Some(python) = std::env::var_os("PAAS_K8S_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must validate the corpus: run scripts/k8s-tools.sh and set PAAS_K8S_PYTHON"
        );
        eprintln!(
            "SKIPPED schema and checkov validation of {} cases in {}: set PAAS_K8S_PYTHON (scripts/k8s-tools.sh)",
            counter.get(),
            dir.display()
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/k8s/validate.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("validate.py did not run: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("0 schema violations, 0 pod-security violations"),
        "{report}"
    );
    eprintln!("{}", report.lines().last().unwrap_or(""));
}

#[test]
fn the_namespace_enforces_restricted_and_names_fit() {
    let w = Workload {
        key: WorkloadKey {
            tenant: "a".repeat(30),
            environment: "e".repeat(20),
            app: "x".repeat(40),
        },
        kind: WorkloadKind::Service,
        revisions: Vec::new(),
        placement: Placement::default(),
    };
    let rendered = render(&w).unwrap_or_else(|e| panic!("{e}"));
    let ns = rendered.namespace.metadata.name.unwrap_or_default();
    assert!(ns.len() <= 63, "{ns}");
    let labels = rendered.namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
}
