//! The driver against a real cluster, when `PAAS_TEST_KUBECONFIG` names a kubeconfig
//! (kind or k3d will do; see the README). Skipped, and says so, otherwise.
//!
//! Onboards a service, scales it, runs two revisions side by side, and deletes it, in
//! a namespace of its own (`paas-kt<random>-dev`) that it removes at the end; runs a
//! stateful ordinal whose data outlives its pod and goes with the application (the
//! cluster needs a default StorageClass, as kind's and k3d's have).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use platform_core::runtime::{
    Instance, Placement, RevisionShape, Runtime, Slots, Workload, WorkloadKey,
};
use platform_core::spec::{AppSpec, WorkloadKind};
use runtime_kube::{ClusterSource, KubeRuntime};

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn spec(message: &str) -> AppSpec {
    // agnhost runs as any user with a read-only root filesystem.
    must(serde_json::from_value(serde_json::json!({
        "image": "registry.k8s.io/e2e-test-images/agnhost:2.52",
        "args": ["netexec", "--http-port=$PORT"],
        "env": {"MESSAGE": message},
        "ports": [{"name": "http"}],
        "health": {"readiness": {"http_path": "/", "period_ms": 1000}},
        "resources": {"cpu_millis": 50, "memory_mib": 64}
    })))
}

fn workload(key: &WorkloadKey, revisions: &[(i32, u32)]) -> Workload {
    Workload {
        key: key.clone(),
        kind: WorkloadKind::Service,
        revisions: revisions
            .iter()
            .map(|(r, n)| RevisionShape {
                revision: *r,
                spec: spec(&format!("revision {r}")),
                slots: Slots::Count(*n),
                weight: None,
                in_place: false,
                secrets: Default::default(),
            })
            .collect(),
        placement: Placement::default(),
    }
}

async fn wait_for(
    runtime: &KubeRuntime,
    key: &WorkloadKey,
    what: &str,
    check: impl Fn(&[Instance]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let instances = runtime.instances(key).await.unwrap_or_default();
        if check(&instances) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {instances:#?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn ready_of(instances: &[Instance], revision: i32) -> usize {
    instances
        .iter()
        .filter(|i| i.revision == revision && i.ready)
        .count()
}

#[tokio::test]
async fn onboard_scale_two_revisions_and_delete_on_a_real_cluster() {
    let Some(path) = std::env::var_os("PAAS_TEST_KUBECONFIG") else {
        eprintln!(
            "SKIPPED: the real-cluster suite needs PAAS_TEST_KUBECONFIG (see README: kind or k3d)"
        );
        return;
    };
    let source = ClusterSource::Kubeconfig(path.into());
    let runtime = must(KubeRuntime::connect(&source).await);
    let nodes = must(runtime.nodes().await);
    assert!(nodes.iter().any(|n| n.healthy), "no ready node: {nodes:#?}");
    let key = WorkloadKey {
        tenant: format!("kt{}", std::process::id()),
        environment: "dev".into(),
        app: "echo".into(),
    };
    // Onboard with two instances.
    must(runtime.apply(&workload(&key, &[(1, 2)])).await);
    wait_for(&runtime, &key, "2 ready", |i| ready_of(i, 1) == 2).await;
    // Scale to three.
    must(runtime.apply(&workload(&key, &[(1, 3)])).await);
    wait_for(&runtime, &key, "3 ready", |i| ready_of(i, 1) == 3).await;
    // A canary: revision 2 with one instance beside revision 1's three.
    must(runtime.apply(&workload(&key, &[(1, 3), (2, 1)])).await);
    wait_for(&runtime, &key, "both revisions", |i| {
        ready_of(i, 1) == 3 && ready_of(i, 2) == 1
    })
    .await;
    let logs = must(
        runtime
            .logs(
                &key,
                &must(runtime.instances(&key).await)[0].name.clone(),
                20,
            )
            .await,
    );
    eprintln!("a pod's last log lines: {logs:?}");
    // Delete: nothing of it is left.
    must(runtime.remove(&key).await);
    wait_for(&runtime, &key, "no pods", <[Instance]>::is_empty).await;
    let client = must(kube::Client::try_from(must(
        kube::Config::from_custom_kubeconfig(
            must(kube::config::Kubeconfig::read_from(
                std::env::var_os("PAAS_TEST_KUBECONFIG").unwrap_or_default(),
            )),
            &Default::default(),
        )
        .await,
    )));
    let namespaces: Api<Namespace> = Api::all(client);
    let _ = namespaces
        .delete(
            &format!("paas-{}-dev", key.tenant),
            &DeleteParams::default(),
        )
        .await;
}

/// The kubeconfig's client, for what the driver does not show (claims, pod deletion).
async fn client() -> kube::Client {
    must(kube::Client::try_from(must(
        kube::Config::from_custom_kubeconfig(
            must(kube::config::Kubeconfig::read_from(
                std::env::var_os("PAAS_TEST_KUBECONFIG").unwrap_or_default(),
            )),
            &Default::default(),
        )
        .await,
    )))
}

/// Waits until the ordinal's log says it has started `n` times in its data directory.
async fn started_times(runtime: &KubeRuntime, key: &WorkloadKey, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let want = format!("starts={n}");
    loop {
        let logs = runtime.logs(key, "store-0", 20).await.unwrap_or_default();
        if logs.iter().any(|l| l.trim() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "store-0 never said {want}: {logs:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn a_stateful_ordinal_keeps_its_data_volume_across_pods_and_it_goes_with_the_application() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    if std::env::var_os("PAAS_TEST_KUBECONFIG").is_none() {
        eprintln!(
            "SKIPPED: the real-cluster suite needs PAAS_TEST_KUBECONFIG (see README: kind or k3d)"
        );
        return;
    }
    let source = ClusterSource::Kubeconfig(
        std::env::var_os("PAAS_TEST_KUBECONFIG")
            .unwrap_or_default()
            .into(),
    );
    let runtime = must(KubeRuntime::connect(&source).await);
    let key = WorkloadKey {
        tenant: format!("ks{}", std::process::id()),
        environment: "dev".into(),
        app: "store".into(),
    };
    // Counts its starts in a file of its working directory, its data volume.
    let spec: AppSpec = must(serde_json::from_value(serde_json::json!({
        "kind": "stateful",
        "image": "busybox:1.36",
        "command": "sh",
        "args": ["-c", "echo start >> starts.log; echo starts=$(wc -l < starts.log); exec sleep 3600"],
        "storage_mib": 64,
        "resources": {"cpu_millis": 20, "memory_mib": 32}
    })));
    let workload = Workload {
        key: key.clone(),
        kind: WorkloadKind::Stateful,
        revisions: vec![RevisionShape {
            revision: 1,
            spec,
            slots: Slots::Ordinals(vec![0]),
            weight: None,
            in_place: false,
            secrets: Default::default(),
        }],
        placement: Placement::default(),
    };
    must(runtime.apply(&workload).await);
    started_times(&runtime, &key, 1).await;

    // The pod goes; its successor finds the file it wrote.
    let ns = format!("paas-{}-dev", key.tenant);
    let client = client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    must(pods.delete("store-0", &DeleteParams::default()).await);
    started_times(&runtime, &key, 2).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim = must(claims.get("data-store-0").await);
    let size = claim
        .spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    assert_eq!(size.map(|q| q.0), Some("64Mi".to_owned()));

    // Removed, the application takes its data with it.
    must(runtime.remove(&key).await);
    let deadline = Instant::now() + Duration::from_secs(240);
    while must(claims.list(&Default::default()).await)
        .items
        .iter()
        .any(|c| {
            c.metadata.name.as_deref() == Some("data-store-0")
                && c.metadata.deletion_timestamp.is_none()
        })
    {
        assert!(
            Instant::now() < deadline,
            "data-store-0 outlived its application"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let namespaces: Api<Namespace> = Api::all(client);
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
