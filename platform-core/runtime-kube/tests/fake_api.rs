//! The driver against in-memory apiservers: `kube-fake-client` (a stateful fake with
//! server-side apply, label selectors and deletion) for apply and prune, and scripted
//! `tower-test` apiservers for what the fake cannot do: watches (410 Gone, duplicate
//! events), an apiserver that drops connections, and `pods/log`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use kube::client::Body;
use kube_fake_client::{ClientBuilder, interceptor};
use platform_core::runtime::{
    Phase, Placement, RevisionShape, Runtime, RuntimeError, Slots, Workload, WorkloadKey,
};
use platform_core::spec::{AppSpec, WorkloadKind};
use runtime_kube::KubeRuntime;
use serde_json::{Value, json};

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn key(app: &str) -> WorkloadKey {
    WorkloadKey {
        tenant: "acme".into(),
        environment: "dev".into(),
        app: app.into(),
    }
}

fn spec(image: &str) -> AppSpec {
    must(serde_json::from_value(json!({
        "image": image, "ports": [{"name": "http"}],
        "health": {"readiness": {"http_path": "/healthz"}}
    })))
}

fn service_workload(app: &str, revisions: &[(i32, &str, u32)]) -> Workload {
    Workload {
        key: key(app),
        kind: WorkloadKind::Service,
        revisions: revisions
            .iter()
            .map(|(revision, image, n)| RevisionShape {
                revision: *revision,
                spec: spec(image),
                slots: Slots::Count(*n),
                weight: None,
                in_place: false,
                secrets: Default::default(),
            })
            .collect(),
        placement: Placement::default(),
    }
}

async fn deployments(client: &kube::Client) -> Vec<(String, i32, String)> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "paas-acme-dev");
    let mut out: Vec<(String, i32, String)> = must(api.list(&ListParams::default()).await)
        .items
        .into_iter()
        .map(|d| {
            let spec = d.spec.unwrap_or_default();
            let image = spec
                .template
                .spec
                .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
                .unwrap_or_default();
            (
                d.metadata.name.unwrap_or_default(),
                spec.replicas.unwrap_or(-1),
                image,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_revisions_secrets_become_a_secret_its_pods_reference_and_go_with_the_revision() {
    use k8s_openapi::api::core::v1::Secret;
    let client = must(ClientBuilder::new().build().await);
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    let with_secret = |revision: i32, value: &str| {
        let mut w = service_workload("web", &[(revision, "shop/web:1.0", 2)]);
        w.revisions[0].secrets = [(
            "DB_PASSWORD".to_owned(),
            platform_core::sealing::SecretValue::new(value.to_owned()),
        )]
        .into();
        w
    };
    must(runtime.apply(&with_secret(1, "first")).await);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "paas-acme-dev");
    let secret = must(secrets.get("web-r1-secrets").await);
    assert_eq!(secret.immutable, Some(true));
    let data = secret.data.unwrap_or_default();
    assert_eq!(data["DB_PASSWORD"].0, b"first");
    // The pod template names the secret; the value is nowhere in it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "paas-acme-dev");
    let deployment = must(deployments.get("web-r1").await);
    let text = must(serde_json::to_string(&deployment));
    assert!(!text.contains("first"), "{text}");
    let env = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.env.clone()))
        .unwrap_or_default();
    let reference = env
        .iter()
        .find(|e| e.name == "DB_PASSWORD")
        .and_then(|e| e.value_from.clone())
        .and_then(|v| v.secret_key_ref)
        .map(|r| (r.name, r.key));
    assert_eq!(
        reference,
        Some(("web-r1-secrets".to_owned(), "DB_PASSWORD".to_owned()))
    );
    // A new revision with a new value: its own Secret; the old one is pruned with the
    // old revision.
    must(runtime.apply(&with_secret(2, "second")).await);
    assert!(must(secrets.get_opt("web-r1-secrets").await).is_none());
    assert_eq!(
        must(secrets.get("web-r2-secrets").await)
            .data
            .unwrap_or_default()["DB_PASSWORD"]
            .0,
        b"second"
    );
}

#[tokio::test]
async fn two_revisions_run_side_by_side_then_the_old_one_is_pruned() {
    let client = must(ClientBuilder::new().build().await);
    // The fake cannot address a Namespace by name; namespaces are rendered (and
    // checked) in the render tests, and exist beforehand here.
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    // A canary: revision 2 with one instance next to three of revision 1.
    must(
        runtime
            .apply(&service_workload(
                "web",
                &[(1, "shop/web:1.0", 3), (2, "shop/web:1.1", 1)],
            ))
            .await,
    );
    assert_eq!(
        deployments(&client).await,
        [
            ("web-r1".to_owned(), 3, "shop/web:1.0".to_owned()),
            ("web-r2".to_owned(), 1, "shop/web:1.1".to_owned())
        ]
    );
    let services: Api<Service> = Api::namespaced(client.clone(), "paas-acme-dev");
    let selector = must(services.get("web").await)
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert!(!selector.contains_key("paas.dev/revision"), "{selector:?}");

    // Another app in the same namespace is never touched by this one's pruning.
    must(
        runtime
            .apply(&service_workload("api", &[(4, "shop/api:2.0", 2)]))
            .await,
    );
    // The rollout completes: revision 1 goes.
    must(
        runtime
            .apply(&service_workload("web", &[(2, "shop/web:1.1", 3)]))
            .await,
    );
    assert_eq!(
        deployments(&client).await,
        [
            ("api-r4".to_owned(), 2, "shop/api:2.0".to_owned()),
            ("web-r2".to_owned(), 3, "shop/web:1.1".to_owned())
        ]
    );
    // Applying the same shape again changes nothing.
    must(
        runtime
            .apply(&service_workload("web", &[(2, "shop/web:1.1", 3)]))
            .await,
    );
    assert_eq!(deployments(&client).await.len(), 2);
    // Removal takes the app's objects and only those.
    must(runtime.remove(&key("web")).await);
    assert_eq!(
        deployments(&client).await,
        [("api-r4".to_owned(), 2, "shop/api:2.0".to_owned())]
    );
    assert!(must(services.get_opt("web").await).is_none());
    assert!(must(services.get_opt("api").await).is_some());
}

#[tokio::test]
async fn a_conflict_is_retried_and_a_lasting_one_is_reported_not_fatal() {
    // The first two applies of a Deployment meet a 409; the third goes through.
    let conflicts = Arc::new(AtomicU32::new(0));
    let seen = conflicts.clone();
    let client = must(
        ClientBuilder::new()
            .with_interceptor_funcs(interceptor::Funcs::new().patch(move |ctx| {
                if ctx.name.starts_with("web-") && seen.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(kube_fake_client::Error::Conflict(
                        "the object has been modified".into(),
                    ));
                }
                Ok(None)
            }))
            .build()
            .await,
    );
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    must(
        runtime
            .apply(&service_workload("web", &[(1, "shop/web:1.0", 2)]))
            .await,
    );
    assert_eq!(conflicts.load(Ordering::SeqCst), 3);
    assert_eq!(deployments(&client).await.len(), 1);

    // A conflict that never clears is an error the reconciler retries later.
    let client = must(
        ClientBuilder::new()
            .with_interceptor_funcs(interceptor::Funcs::new().patch(|ctx| {
                if ctx.name.starts_with("web-") {
                    return Err(kube_fake_client::Error::Conflict("always".into()));
                }
                Ok(None)
            }))
            .build()
            .await,
    );
    let runtime = KubeRuntime::new(client).with_existing_namespaces();
    let err = runtime
        .apply(&service_workload("web", &[(1, "shop/web:1.0", 2)]))
        .await;
    assert!(
        matches!(&err, Err(RuntimeError::Unavailable(m)) if m.contains("409")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_spec_kubernetes_cannot_run_is_refused_before_any_call() {
    let client = must(ClientBuilder::new().build().await);
    let runtime = KubeRuntime::new(client.clone());
    let mut no_image = spec("x:1");
    no_image.image = None;
    no_image.command = "python3".into();
    let refused = runtime.check(&no_image);
    assert!(refused.is_err_and(|e| e.field == "spec.image"));
    let mut workload = service_workload("web", &[(1, "x:1", 1)]);
    workload.revisions[0].spec = no_image;
    assert!(matches!(
        runtime.apply(&workload).await,
        Err(RuntimeError::Other(_))
    ));
    assert!(deployments(&client).await.is_empty());
}

// ----- Scripted apiservers (tower-test) -----

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn scripted() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(must(serde_json::to_vec(&body))))
            .unwrap_or_else(|e| panic!("{e}")),
    );
}

fn pod(name: &str, app: &str, revision: i32, ready: bool, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "paas-acme-dev", "resourceVersion": resource_version,
            "labels": {"app.kubernetes.io/managed-by": "paas", "paas.dev/app": app, "paas.dev/revision": revision.to_string()}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "x:1"}]},
        "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "app", "ready": ready, "restartCount": 2, "image": "x:1", "imageID": "",
                "state": {"running": {}}}]}
    })
}

fn pod_list(items: Vec<Value>, resource_version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": resource_version}, "items": items})
}

fn watch_lines(events: &[Value]) -> Body {
    let mut text = String::new();
    for e in events {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    Body::from(text.into_bytes())
}

/// Answers the watcher's next request, checking that it is a list or a watch.
async fn next(
    handle: &mut Handle,
) -> (
    Request<Body>,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    must(
        tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request())
            .await
            .map_err(|_| "no request came")
            .and_then(|r| r.ok_or("the client went away")),
    )
}

#[tokio::test]
async fn the_pod_cache_relists_after_410_gone_and_ignores_duplicate_events() {
    let (client, mut handle) = scripted();
    let (store, task) = runtime_kube::pod_cache(client, None);
    let feeding = tokio::spawn(task);
    // Initial list: one pod.
    let (req, send) = next(&mut handle).await;
    assert!(req.uri().path().ends_with("/api/v1/pods"), "{}", req.uri());
    assert!(
        req.uri()
            .query()
            .unwrap_or("")
            .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpaas"),
        "{}",
        req.uri()
    );
    respond(
        send,
        StatusCode::OK,
        pod_list(vec![pod("web-a", "web", 1, true, "10")], "10"),
    );
    // The watch: the same pod again (a duplicate), then a new one, then 410 Gone.
    let (req, send) = next(&mut handle).await;
    assert!(
        req.uri().query().unwrap_or("").contains("watch=true"),
        "{}",
        req.uri()
    );
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(watch_lines(&[
                json!({"type": "MODIFIED", "object": pod("web-a", "web", 1, true, "10")}),
                json!({"type": "ADDED", "object": pod("web-b", "web", 2, false, "11")}),
                json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version"}}),
            ]))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    // After 410 the watcher lists again: the world has changed meanwhile.
    let (req, send) = next(&mut handle).await;
    assert!(
        !req.uri().query().unwrap_or("").contains("watch=true"),
        "{}",
        req.uri()
    );
    respond(
        send,
        StatusCode::OK,
        pod_list(
            vec![
                pod("web-b", "web", 2, true, "20"),
                pod("web-c", "web", 2, true, "21"),
            ],
            "21",
        ),
    );
    // The cache converges on the relisted state: no web-a, no duplicate.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .filter_map(|p: &Arc<Pod>| p.metadata.name.clone())
            .collect();
        names.sort();
        if names == ["web-b", "web-c"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "cache is {names:?}");
        // Keep the next watch open without events.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    feeding.abort();
}

#[tokio::test]
async fn an_apiserver_outage_is_unavailable_then_the_driver_recovers() {
    let (client, mut handle) = scripted();
    let runtime = KubeRuntime::new(client);
    let server = tokio::spawn(async move {
        // Every attempt of the first call meets a dropped connection.
        for _ in 0..4 {
            let (_, send) = next(&mut handle).await;
            send.send_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ));
        }
        // The apiserver is back.
        let (req, send) = next(&mut handle).await;
        assert!(
            req.uri().path().ends_with("/namespaces/paas-acme-dev/pods"),
            "{}",
            req.uri()
        );
        respond(
            send,
            StatusCode::OK,
            pod_list(vec![pod("web-r1-x", "web", 1, true, "5")], "5"),
        );
        // Logs of that pod: the driver first checks that it belongs to the app.
        let (req, send) = next(&mut handle).await;
        assert!(
            req.uri().path().ends_with("/pods/web-r1-x"),
            "{}",
            req.uri()
        );
        respond(send, StatusCode::OK, pod("web-r1-x", "web", 1, true, "5"));
        let (req, send) = next(&mut handle).await;
        assert!(
            req.uri().path().ends_with("/pods/web-r1-x/log"),
            "{}",
            req.uri()
        );
        assert!(
            req.uri().query().unwrap_or("").contains("tailLines=2"),
            "{}",
            req.uri()
        );
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(b"line one\nline two\n".to_vec()))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        // A pod of another app is not this app's instance.
        let (_, send) = next(&mut handle).await;
        respond(send, StatusCode::OK, pod("api-r1-y", "api", 1, true, "6"));
    });
    let down = runtime.instances(&key("web")).await;
    assert!(
        matches!(down, Err(RuntimeError::Unavailable(_))),
        "{down:?}"
    );
    let up = must(runtime.instances(&key("web")).await);
    assert_eq!(up.len(), 1);
    assert_eq!(
        (
            up[0].revision,
            up[0].ready,
            up[0].restarts,
            up[0].phase,
            up[0].node.as_deref()
        ),
        (1, true, 2, Phase::Running, Some("node-a"))
    );
    assert_eq!(
        must(runtime.logs(&key("web"), "web-r1-x", 2).await),
        ["line one", "line two"]
    );
    let foreign = runtime.logs(&key("web"), "api-r1-y", 2).await;
    assert!(
        matches!(foreign, Err(RuntimeError::NotFound { .. })),
        "{foreign:?}"
    );
    must(server.await);
}

#[tokio::test]
async fn the_same_spec_passes_both_drivers_preflight() {
    // A spec with a command for the local runtime and an image for Kubernetes.
    let both: AppSpec = must(serde_json::from_value(json!({
        "command": "python3", "args": ["-m", "http.server", "$PORT"],
        "image": "python:3.12-slim", "ports": [{"name": "http"}], "replicas": 2
    })));
    let kube = KubeRuntime::new(must(ClientBuilder::new().build().await));
    let pool = must(sqlx::PgPool::connect_lazy(
        "postgres://nobody@127.0.0.1:1/none",
    ));
    let master = platform_core::sealing::MasterKey::generate()
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
    let local = runtime_local::LocalRuntime::new(pool, "token".into(), master);
    let drivers: [&dyn Runtime; 2] = [&kube, &local];
    for driver in drivers {
        assert_eq!(driver.check(&both), Ok(()), "{driver:?}");
    }
    // And each refuses what only the other can run, naming the field.
    let mut image_only = both.clone();
    image_only.command = String::new();
    assert!(
        local
            .check(&image_only)
            .is_err_and(|e| e.field == "spec.command")
    );
    assert_eq!(kube.check(&image_only), Ok(()));
    let mut packaged = both.clone();
    packaged.package = Some(format!("sha256:{}", "a".repeat(64)));
    assert!(
        kube.check(&packaged)
            .is_err_and(|e| e.field == "spec.package")
    );
    assert_eq!(local.check(&packaged), Ok(()));
}

#[test]
fn pod_metrics_sum_their_containers() {
    let item: kube::api::DynamicObject = must(serde_json::from_value(json!({
        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
        "metadata": {"name": "web-r1-a", "namespace": "paas-acme-dev"},
        "timestamp": "2026-11-26T00:00:00Z", "window": "15s",
        "containers": [
            {"name": "app", "usage": {"cpu": "250000000n", "memory": "64Mi"}},
            {"name": "side", "usage": {"cpu": "5m", "memory": "16384Ki"}}
        ]
    })));
    let usage = runtime_kube::pod_usage(&[item]);
    assert_eq!(
        usage.get(&("paas-acme-dev".to_owned(), "web-r1-a".to_owned())),
        Some(&(255, 80))
    );
}

#[tokio::test]
async fn an_autoscaling_decision_reaches_kubernetes_as_a_deployments_replicas_and_nothing_else() {
    use platform_core::autoscaling::{Inputs, Policy, Reading, decide};
    // Every object the driver writes, by kind, with the replicas it asks for.
    // (kind, name, spec.replicas) of each write.
    type Writes = Vec<(String, String, Option<i64>)>;
    let written: Arc<std::sync::Mutex<Writes>> = Arc::default();
    let seen = written.clone();
    let client = must(
        ClientBuilder::new()
            .with_interceptor_funcs(interceptor::Funcs::new().patch(move |ctx| {
                if let Ok(mut w) = seen.lock() {
                    w.push((
                        ctx.patch["kind"].as_str().unwrap_or_default().to_owned(),
                        ctx.name.to_owned(),
                        ctx.patch["spec"]["replicas"].as_i64(),
                    ));
                }
                Ok(None)
            }))
            .build()
            .await,
    );
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    must(
        runtime
            .apply(&service_workload("web", &[(1, "shop/web:1.0", 2)]))
            .await,
    );
    // 300 requests a second per instance against a target of 100: the core decides 6.
    let policy: Policy = must(serde_json::from_value(json!({
        "min": 1, "max": 10,
        "rules": [{"metric": {"type": "requests_per_second"}, "target": 100}]
    })));
    let now = chrono::Utc::now();
    let compiled = must(policy.compile(WorkloadKind::Service, None, now));
    let readings = [Some(Reading {
        value: 300.0,
        window_s: 5,
    })];
    let decision = decide(
        &compiled,
        &Inputs {
            now,
            current: 2,
            ready: 2,
            readings: &readings,
            history: &[],
            history_since: now - chrono::Duration::hours(1),
            changes: &[],
            scaled_by_hand_at: None,
            quota_room: None,
            one_at_a_time_down: false,
            capacity: None,
        },
    );
    assert_eq!(decision.desired, 6);
    // The runtime is handed the count, as for any scale.
    must(
        runtime
            .apply(&service_workload(
                "web",
                &[(1, "shop/web:1.0", decision.desired)],
            ))
            .await,
    );
    assert_eq!(
        deployments(&client).await,
        [("web-r1".to_owned(), 6, "shop/web:1.0".to_owned())]
    );
    let written = written.lock().map(|w| w.clone()).unwrap_or_default();
    let deployment_replicas: Vec<Option<i64>> = written
        .iter()
        .filter(|(kind, _, _)| kind == "Deployment")
        .map(|(_, _, r)| *r)
        .collect();
    assert_eq!(deployment_replicas.last(), Some(&Some(6)), "{written:?}");
    // No autoscaler of Kubernetes' own is ever made: the two would fight.
    assert!(
        written
            .iter()
            .all(|(kind, _, _)| kind != "HorizontalPodAutoscaler"),
        "{written:?}"
    );
}

#[tokio::test]
async fn a_restart_is_a_rolling_restart_of_the_pod_template_and_deletes_nothing() {
    let deletes = Arc::new(AtomicU32::new(0));
    let counted = deletes.clone();
    let client = must(
        ClientBuilder::new()
            .with_interceptor_funcs(interceptor::Funcs::new().delete(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }))
            .build()
            .await,
    );
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    let web = service_workload("web", &[(1, "shop/web:1.0", 3)]);
    must(runtime.apply(&web).await);
    assert!(
        must(runtime.restart(&key("web")).await),
        "Kubernetes rolls restarts itself"
    );
    let api: Api<Deployment> = Api::namespaced(client.clone(), "paas-acme-dev");
    let annotation = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(runtime_kube::RESTARTED_AT).cloned())
    };
    let restarted = must(api.get("web-r1").await);
    let stamp = annotation(&restarted);
    assert!(stamp.is_some(), "{restarted:?}");
    assert_eq!(restarted.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(
        deletes.load(Ordering::SeqCst),
        0,
        "a restart deleted something"
    );
    // The next apply (the reconciler's, which knows nothing of restarts) keeps it, so
    // the pods are not rolled a second time.
    must(runtime.apply(&web).await);
    assert_eq!(annotation(&must(api.get("web-r1").await)), stamp);
}

/// A pod of acme/dev/web as the watch shows it: unscheduled, running (ready or not,
/// with a restart count and the last termination's reason).
fn pod_at(
    name: &str,
    node: Option<&str>,
    ready: bool,
    restarts: i32,
    last: Option<&str>,
    rv: &str,
) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "x:1"}]});
    let mut status = json!({"phase": "Pending"});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
        status = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": "app", "ready": ready, "restartCount": restarts, "image": "x:1", "imageID": "",
                "state": {"running": {}},
                "lastState": last.map_or(json!({}), |r| json!({"terminated": {"exitCode": 137, "reason": r}}))}]});
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "paas-acme-dev", "resourceVersion": rv,
            "labels": {"app.kubernetes.io/managed-by": "paas", "paas.dev/tenant": "acme",
                "paas.dev/environment": "dev", "paas.dev/app": "web", "paas.dev/revision": "2"}},
        "spec": spec,
        "status": status,
    })
}

#[tokio::test]
async fn pod_changes_become_the_same_instance_events_the_local_runtime_records() {
    let (client, mut handle) = scripted();
    let (tx, mut rx) = tokio::sync::broadcast::channel(64);
    let (_store, task) = runtime_kube::pod_cache(client, Some(tx));
    let feeding = tokio::spawn(task);
    // What already runs when the watch starts is no news.
    let (_, send) = next(&mut handle).await;
    respond(
        send,
        StatusCode::OK,
        pod_list(
            vec![pod_at("web-a", Some("node-a"), true, 0, None, "10")],
            "10",
        ),
    );
    let (_, send) = next(&mut handle).await;
    send.send_response(
        Response::builder()
            .status(StatusCode::OK)
            .body(watch_lines(&[
                json!({"type": "ADDED", "object": pod_at("web-b", None, false, 0, None, "11")}),
                json!({"type": "MODIFIED", "object": pod_at("web-b", Some("node-a"), false, 0, None, "12")}),
                json!({"type": "MODIFIED", "object": pod_at("web-b", Some("node-a"), true, 0, None, "13")}),
                json!({"type": "MODIFIED", "object": pod_at("web-b", Some("node-a"), false, 1, Some("OOMKilled"), "14")}),
                json!({"type": "DELETED", "object": pod_at("web-b", Some("node-a"), false, 1, Some("OOMKilled"), "15")}),
            ]))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut got = Vec::new();
    while got.len() < 7 {
        let event = must(
            tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .map_err(|_| format!("only {got:?}")),
        );
        let event = must(event);
        assert_eq!(
            (
                event.key.tenant.as_str(),
                event.key.environment.as_str(),
                event.key.app.as_str()
            ),
            ("acme", "dev", "web")
        );
        got.push((event.instance, event.reason));
    }
    let reasons: Vec<&str> = got.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Scheduled",
            "Started",
            "Ready",
            "OOMKilled",
            "Restarted",
            "NotReady",
            "Stopped"
        ]
    );
    assert!(got.iter().all(|(i, _)| i == "web-b"), "{got:?}");
    feeding.abort();
}

fn node_object(unschedulable: bool, draining: bool) -> Value {
    let mut node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "spec": {"unschedulable": unschedulable}});
    if draining {
        node["metadata"]["annotations"] = json!({"paas.dev/draining": "2026-11-27T12:00:00Z"});
    }
    node
}

async fn body_of(req: Request<Body>) -> Value {
    let body = must(http_body_util::BodyExt::collect(req.into_body()).await).to_bytes();
    must(serde_json::from_slice::<Value>(&body))
}

#[tokio::test]
async fn a_drain_marks_and_cordons_the_node_evicts_its_pods_and_any_control_plane_asks_again_for_those_a_budget_holds()
 {
    let (client, mut handle) = scripted();
    let runtime = KubeRuntime::new(client);
    let server = tokio::spawn(async move {
        // The drain: read the node, then one merge patch that cordons it and marks it
        // drained (an annotation, so the drain outlives the control plane).
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            ("GET", "/api/v1/nodes/node-a")
        );
        respond(send, StatusCode::OK, node_object(false, false));
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            ("PATCH", "/api/v1/nodes/node-a")
        );
        let patch = body_of(req).await;
        assert_eq!(patch["spec"], json!({"unschedulable": true}));
        assert!(
            patch["metadata"]["annotations"]["paas.dev/draining"].is_string(),
            "{patch}"
        );
        respond(send, StatusCode::OK, node_object(true, true));
        // The platform's pods on the node: a daemon's stays, the others are evicted.
        let (req, send) = next(&mut handle).await;
        let query = req.uri().query().unwrap_or("").to_owned();
        assert_eq!(req.uri().path(), "/api/v1/pods");
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dnode-a")
                && query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpaas"),
            "{query}"
        );
        let mut agent = pod("agent-x", "agent", 1, true, "7");
        agent["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u1"}]);
        respond(
            send,
            StatusCode::OK,
            pod_list(
                vec![
                    pod("web-1", "web", 1, true, "7"),
                    agent,
                    pod("web-2", "web", 1, true, "7"),
                ],
                "7",
            ),
        );
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            (
                "POST",
                "/api/v1/namespaces/paas-acme-dev/pods/web-1/eviction"
            )
        );
        respond(
            send,
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        );
        // The budget holds web-2 for now.
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/paas-acme-dev/pods/web-2/eviction"
        );
        respond(
            send,
            StatusCode::TOO_MANY_REQUESTS,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
                "reason": "TooManyRequests", "message": "Cannot evict pod as it would violate the pod's disruption budget."}),
        );
        // A later round (any control plane's): the marked node's evictions again; an
        // unmarked cordoned node is left alone.
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            ("GET", "/api/v1/nodes")
        );
        let mut other = node_object(true, false);
        other["metadata"]["name"] = json!("node-b");
        respond(
            send,
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [node_object(true, true), other]}),
        );
        let (_, send) = next(&mut handle).await;
        respond(
            send,
            StatusCode::OK,
            pod_list(vec![pod("web-2", "web", 1, true, "8")], "8"),
        );
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/paas-acme-dev/pods/web-2/eviction"
        );
        respond(
            send,
            StatusCode::CREATED,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        );
        // Uncordoning ends the drain: the mark goes with the cordon.
        let (_, send) = next(&mut handle).await;
        respond(send, StatusCode::OK, node_object(true, true));
        let (req, send) = next(&mut handle).await;
        assert_eq!(
            body_of(req).await,
            json!({"metadata": {"annotations": {"paas.dev/draining": null}}, "spec": {"unschedulable": false}})
        );
        respond(send, StatusCode::OK, node_object(false, false));
    });
    assert!(must(runtime.drain("node-a").await));
    assert_eq!(must(runtime.resume_drains().await), 0);
    assert!(must(runtime.set_cordoned("node-a", false).await));
    must(server.await);
}

/// The in-place shape of a service at one step: `old` instances of revision 1 beside
/// `new` of revision 2, which takes their place.
fn in_place_step(old: u32, new: u32) -> Workload {
    let mut w = service_workload("web", &[(1, "shop/web:1.0", old), (2, "shop/web:1.1", new)]);
    w.revisions
        .retain(|r| r.slots != Slots::Count(0) || r.revision == 2);
    if let Some(new) = w.revisions.last_mut() {
        new.in_place = true;
    }
    w
}

async fn put_pod(pods: &Api<Pod>, name: &str, revision: i32, node: &str) {
    let pod: Pod = must(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "paas-acme-dev",
            "labels": {"app.kubernetes.io/managed-by": "paas", "paas.dev/tenant": "acme",
                "paas.dev/environment": "dev", "paas.dev/app": "web", "paas.dev/revision": revision.to_string()}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "x:1"}]},
    })));
    must(pods.create(&kube::api::PostParams::default(), &pod).await);
}

/// The new revision's Deployment: its replicas, the nodes it records, and the nodes its
/// pod template prefers.
async fn kept(client: &kube::Client) -> (i32, Option<String>, Vec<String>) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "paas-acme-dev");
    let d = must(api.get("web-r2").await);
    let recorded = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(runtime_kube::render::KEPT_NODES).cloned());
    let spec = d.spec.unwrap_or_default();
    let preferred = spec
        .template
        .spec
        .and_then(|p| p.affinity)
        .and_then(|a| a.node_affinity)
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution)
        .unwrap_or_default();
    let nodes = preferred
        .iter()
        .filter(|t| t.weight == 100)
        .flat_map(|t| t.preference.match_expressions.clone().unwrap_or_default())
        .filter(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .flat_map(|e| e.values.unwrap_or_default())
        .collect();
    (spec.replicas.unwrap_or(-1), recorded, nodes)
}

#[tokio::test]
async fn an_in_place_release_of_a_service_keeps_its_pods_on_their_nodes_and_starts_each_once_an_old_one_is_gone()
 {
    let client = must(ClientBuilder::new().build().await);
    let runtime = KubeRuntime::new(client.clone()).with_existing_namespaces();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "paas-acme-dev");
    must(
        runtime
            .apply(&service_workload("web", &[(1, "shop/web:1.0", 3)]))
            .await,
    );
    // What the ReplicaSet made of revision 1, and another app's pod elsewhere.
    for (name, node) in [("web-r1-a", "n1"), ("web-r1-b", "n2"), ("web-r1-c", "n3")] {
        put_pod(&pods, name, 1, node).await;
    }
    let mut other = service_workload("api", &[(4, "shop/api:2.0", 1)]);
    other.key = key("api");
    must(runtime.apply(&other).await);
    // The first step: one old instance goes, and its replacement waits for it to be
    // gone; the new revision's pods keep to revision 1's nodes.
    must(runtime.apply(&in_place_step(2, 1)).await);
    let all = vec!["n1".to_owned(), "n2".to_owned(), "n3".to_owned()];
    assert_eq!(
        kept(&client).await,
        (0, Some("n1,n2,n3".to_owned()), all.clone())
    );
    assert_eq!(
        deployments(&client).await[1..],
        [
            ("web-r1".to_owned(), 2, "shop/web:1.0".to_owned()),
            ("web-r2".to_owned(), 0, "shop/web:1.1".to_owned())
        ]
    );
    // The old pod is gone: the new one is asked for, to take its room.
    must(pods.delete("web-r1-c", &DeleteParams::default()).await);
    must(runtime.apply(&in_place_step(2, 1)).await);
    assert_eq!(
        kept(&client).await,
        (1, Some("n1,n2,n3".to_owned()), all.clone())
    );
    put_pod(&pods, "web-r2-x", 2, "n3").await;
    // The next step: the nodes stay those of the release's start (the template does
    // not change, so the new revision's running pods are not replaced).
    must(runtime.apply(&in_place_step(1, 2)).await);
    assert_eq!(kept(&client).await.0, 1);
    must(pods.delete("web-r1-b", &DeleteParams::default()).await);
    must(runtime.apply(&in_place_step(1, 2)).await);
    assert_eq!(
        kept(&client).await,
        (2, Some("n1,n2,n3".to_owned()), all.clone())
    );
    put_pod(&pods, "web-r2-y", 2, "n2").await;
    must(pods.delete("web-r1-a", &DeleteParams::default()).await);
    must(runtime.apply(&in_place_step(0, 3)).await);
    assert_eq!(kept(&client).await.0, 3);
    // Done: the final shape is no longer in place, and the Deployment keeps its
    // template as it was; revision 1 is pruned.
    let api: Api<Deployment> = Api::namespaced(client.clone(), "paas-acme-dev");
    let before = must(api.get("web-r2").await).spec.map(|s| s.template);
    must(
        runtime
            .apply(&service_workload("web", &[(2, "shop/web:1.1", 3)]))
            .await,
    );
    assert_eq!(
        must(api.get("web-r2").await).spec.map(|s| s.template),
        before
    );
    assert_eq!(kept(&client).await, (3, Some("n1,n2,n3".to_owned()), all));
    assert_eq!(
        deployments(&client).await,
        [
            ("api-r4".to_owned(), 1, "shop/api:2.0".to_owned()),
            ("web-r2".to_owned(), 3, "shop/web:1.1".to_owned())
        ]
    );
    // A rolling release (not in place) keeps to no node.
    must(
        runtime
            .apply(&service_workload(
                "web",
                &[(2, "shop/web:1.1", 3), (3, "shop/web:1.2", 1)],
            ))
            .await,
    );
    let r3 = must(api.get("web-r3").await);
    assert!(r3.metadata.annotations.unwrap_or_default().is_empty());
}
