//! The reconciler's shapes fed into the Kubernetes renderer, against a real PostgreSQL
//! (`sqlx::test`): during a rollout every live revision renders with its own spec, so
//! the old revision's Deployment keeps the old pod template.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use platform_core::auth::TokenConfig;
use platform_core::names::{AppName, DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::platform::{NewApplication, NewTenant, NewUser};
use platform_core::reconciler::Reconciler;
use platform_core::runtime::{
    Instance, InstanceEvent, Node, Phase, Runtime, RuntimeError, Runtimes, Workload, WorkloadKey,
};
use platform_core::spec::AppSpec;
use platform_core::{FieldError, Platform};
use runtime_kube::render::{Object, render};
use serde_json::json;
use sqlx::PgPool;

const PASSWORD: &str = "a long enough password";

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn spec(image: &str, command_arg: &str) -> AppSpec {
    must(serde_json::from_value(json!({
        "image": image, "args": [command_arg], "replicas": 3,
        "ports": [{"name": "http"}], "env": {"GREETING": command_arg}
    })))
}

/// A cluster as the reconciler sees it: revision 1's three instances run ready, and
/// every applied shape is recorded.
#[derive(Debug, Default)]
struct Cluster {
    applied: Mutex<Vec<Workload>>,
    /// What runs, as (revision, count), all ready; none: revision 1's three.
    running: Mutex<Option<Vec<(i32, u32)>>>,
    /// Instance events, as a pod watch gives them.
    events: Mutex<Option<tokio::sync::broadcast::Sender<InstanceEvent>>>,
}

fn ready(revision: i32, n: u32) -> Instance {
    Instance {
        name: format!("web-r{revision}-{n}"),
        revision,
        ordinal: None,
        node: Some("n1".into()),
        address: None,
        phase: Phase::Running,
        ready: true,
        restarts: 0,
        cpu_millis: None,
        memory_mib: None,
        message: None,
        since: chrono::Utc::now() - chrono::Duration::minutes(1),
    }
}

#[async_trait]
impl Runtime for Cluster {
    fn check(&self, spec: &AppSpec) -> Result<(), FieldError> {
        runtime_kube::render::check(spec).map_err(|e| FieldError::new(e.field, e.message))
    }
    async fn apply(&self, workload: &Workload) -> Result<(), RuntimeError> {
        must(self.applied.lock()).push(workload.clone());
        Ok(())
    }
    async fn remove(&self, _: &WorkloadKey) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn instances(&self, _: &WorkloadKey) -> Result<Vec<Instance>, RuntimeError> {
        let running = must(self.running.lock())
            .clone()
            .unwrap_or_else(|| vec![(1, 3)]);
        Ok(running
            .into_iter()
            .flat_map(|(revision, count)| (0..count).map(move |n| ready(revision, n)))
            .collect())
    }
    fn instance_events(&self) -> Option<tokio::sync::broadcast::Receiver<InstanceEvent>> {
        must(self.events.lock())
            .as_ref()
            .map(tokio::sync::broadcast::Sender::subscribe)
    }
    async fn nodes(&self) -> Result<Vec<Node>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn logs(&self, _: &WorkloadKey, _: &str, _: usize) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }
}

fn pod_templates(workload: &Workload) -> Vec<(i32, PodTemplateSpec)> {
    let rendered = must(render(workload));
    let mut out: Vec<(i32, PodTemplateSpec)> = rendered
        .objects
        .into_iter()
        .filter_map(|o| match o {
            Object::Deployment(d) => {
                let revision = d
                    .metadata
                    .labels
                    .as_ref()?
                    .get(runtime_kube::render::LABEL_REVISION)?
                    .parse()
                    .ok()?;
                Some((revision, d.spec?.template))
            }
            _ => None,
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    out
}

/// A platform with tenant `acme`, application `web` at revision 1 (3 replicas) and a
/// spec change to revision 2; the cluster, its runtimes and the master key.
async fn changed_app(
    pool: &PgPool,
) -> (
    Platform,
    Arc<Cluster>,
    Runtimes,
    platform_core::sealing::MasterKey,
) {
    changed_app_with(pool, None, None).await
}

/// The same, with a Prometheus for the platform and a release strategy for `dev` set
/// before the change.
async fn changed_app_with(
    pool: &PgPool,
    prometheus: Option<String>,
    strategy: Option<serde_json::Value>,
) -> (
    Platform,
    Arc<Cluster>,
    Runtimes,
    platform_core::sealing::MasterKey,
) {
    let master = must(platform_core::sealing::MasterKey::generate()).0;
    let cluster = Arc::new(Cluster::default());
    let runtimes = Runtimes::default().with("local", cluster.clone());
    let platform =
        must(Platform::start(pool.clone(), TokenConfig::default(), master.clone()).await)
            .with_runtimes(runtimes.clone())
            .with_metric_sources(platform_core::autoscaler::MetricSources {
                prometheus: prometheus.map(platform_core::autoscaler::Prometheus::new),
            });
    assert!(must(
        platform
            .bootstrap_admin("root", &must(Password::parse_new(PASSWORD)))
            .await
    ));
    let admin = must(platform.login("root", PASSWORD, None).await).principal;
    must(
        platform
            .create_user(
                &admin,
                NewUser {
                    username: must(Username::parse("tom")),
                    display_name: must(DisplayName::parse("Tom")),
                    password: must(Password::parse_new(PASSWORD)),
                    platform_admin: false,
                },
            )
            .await,
    );
    must(
        platform
            .create_tenant(
                &admin,
                NewTenant {
                    slug: must(TenantSlug::parse("acme")),
                    display_name: must(DisplayName::parse("Acme")),
                    admin: Some(must(Username::parse("tom"))),
                },
            )
            .await,
    );
    let tom = must(platform.login("tom", PASSWORD, None).await).principal;
    let acme = must(platform.tenant(&tom, "acme").await);
    must(
        platform
            .create_application(
                &acme,
                NewApplication {
                    environment: must(EnvName::parse("dev")),
                    name: must(AppName::parse("web")),
                    description: String::new(),
                    spec: spec("registry.example/web:1", "one"),
                },
            )
            .await,
    );
    if let Some(strategy) = strategy {
        let mut policy = must(platform.release_policy(&acme, "dev").await).policy;
        policy.strategy = must(serde_json::from_value(strategy));
        must(
            platform
                .set_release_policy(&acme, "dev", policy, None)
                .await,
        );
    }
    must(
        platform
            .update_application(
                &acme,
                "dev",
                "web",
                spec("registry.example/web:2", "two"),
                None,
                None,
            )
            .await,
    );

    (platform, cluster, runtimes, master)
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_live_revisions_render_two_pod_templates_each_its_own(pool: PgPool) {
    let (_platform, cluster, runtimes, master) = changed_app(&pool).await;
    let report = must(Reconciler::new(pool, runtimes, master).tick().await);
    assert_eq!(report.failed, 0, "{report:?}");
    let applied = must(cluster.applied.lock()).clone();
    let workload = applied
        .last()
        .unwrap_or_else(|| panic!("nothing was applied"));
    let revisions: Vec<i32> = workload.revisions.iter().map(|r| r.revision).collect();
    assert_eq!(
        revisions,
        [2, 1],
        "a rollout keeps the old revision beside the new"
    );

    let templates = pod_templates(workload);
    assert_eq!(templates.len(), 2, "one Deployment per revision");
    let (old, new) = (&templates[0].1, &templates[1].1);
    assert_ne!(old, new, "each revision renders its own pod template");
    let container = |t: &PodTemplateSpec| {
        let c = &must(t.spec.as_ref().ok_or("no pod spec")).containers[0];
        (c.image.clone(), c.args.clone())
    };
    assert_eq!(
        container(old),
        (
            Some("registry.example/web:1".into()),
            Some(vec!["one".into()])
        )
    );
    assert_eq!(
        container(new),
        (
            Some("registry.example/web:2".into()),
            Some(vec!["two".into()])
        )
    );
}

/// Each Deployment's replica count, by revision (newest first).
fn replicas(workload: &Workload) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = must(render(workload))
        .objects
        .into_iter()
        .filter_map(|o| match o {
            Object::Deployment(d) => Some((
                d.metadata
                    .labels
                    .as_ref()?
                    .get(runtime_kube::render::LABEL_REVISION)?
                    .parse()
                    .ok()?,
                d.spec?.replicas?,
            )),
            _ => None,
        })
        .collect();
    out.sort_by_key(|(r, _)| -r);
    out
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_rolling_release_renders_two_deployments_stepping_within_surge_until_it_succeeds(
    pool: PgPool,
) {
    let (platform, cluster, runtimes, master) = changed_app(&pool).await;
    let reconciler = Reconciler::new(pool.clone(), runtimes, master);
    let mut steps = Vec::new();
    for _ in 0..12 {
        let report = must(reconciler.tick().await);
        assert_eq!(report.failed, 0, "{report:?}");
        let applied = must(cluster.applied.lock())
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("nothing was applied"));
        let step = replicas(&applied);
        if steps.last() != Some(&step) {
            steps.push(step.clone());
        }
        // Every new instance becomes ready before the next pass; each revision keeps
        // its own template throughout.
        let templates = pod_templates(&applied);
        if templates.len() == 2 {
            assert_ne!(templates[0].1, templates[1].1);
        }
        *must(cluster.running.lock()) = Some(
            step.iter()
                .map(|(r, n)| (*r, u32::try_from(*n).unwrap_or_default()))
                .collect(),
        );
    }
    // Three replicas, the default 25% surge (1) and 25% unavailable (0): never more
    // than 4 instances, never fewer than 3 of them ready.
    assert_eq!(
        steps,
        [
            vec![(2, 1), (1, 3)],
            vec![(2, 1), (1, 2)],
            vec![(2, 2), (1, 2)],
            vec![(2, 2), (1, 1)],
            vec![(2, 3), (1, 1)],
            vec![(2, 3), (1, 0)],
            // Succeeded: the old revision's Deployment is no longer rendered.
            vec![(2, 3)],
        ]
    );
    let tom = must(platform.login("tom", PASSWORD, None).await).principal;
    let acme = must(platform.tenant(&tom, "acme").await);
    let releases = must(platform.releases(&acme, "dev", "web").await);
    assert_eq!(
        releases[0].state,
        platform_core::releases::gate::State::Succeeded
    );
    let app = must(platform.application(&acme, "dev", "web").await);
    assert_eq!(app.application.released_revision, 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_clusters_pod_events_become_the_applications_events(pool: PgPool) {
    let (platform, cluster, runtimes, master) = changed_app(&pool).await;
    let (tx, _) = tokio::sync::broadcast::channel(16);
    *must(cluster.events.lock()) = Some(tx.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(Reconciler::new(pool.clone(), runtimes, master).run(
        std::time::Duration::from_secs(3600),
        Arc::new(tokio::sync::Notify::new()),
        stopped,
    ));
    let key = WorkloadKey {
        tenant: "acme".into(),
        environment: "dev".into(),
        app: "web".into(),
    };
    let tom = must(platform.login("tom", PASSWORD, None).await).principal;
    let acme = must(platform.tenant(&tom, "acme").await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // Sent until the loop listens (a send before it subscribed reaches no one).
        let _ = tx.send(InstanceEvent {
            key: key.clone(),
            instance: "web-r2-x".into(),
            reason: "OOMKilled".into(),
            message: "killed for going over its memory limit; restarted".into(),
        });
        let events = must(platform.events(&acme, "dev", "web", 50).await);
        if let Some(e) = events.iter().find(|e| e.reason == "OOMKilled") {
            assert_eq!(e.instance.as_deref(), Some("web-r2-x"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    must(stop.send(true));
    must(loops.await);
}

/// A Prometheus that answers instant queries as a service mesh's metrics would for a
/// canary (revision 2) failing one request in five: 100 requests and 20 errors in the
/// interval against the stable revision's 300 and none. It records every query.
async fn fake_prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = seen.clone();
    let server = must(
        HttpServer::new(move || {
            let recorded = recorded.clone();
            App::new().route(
                "/api/v1/query",
                web::get().to(
                    move |q: web::Query<std::collections::HashMap<String, String>>| {
                        let recorded = recorded.clone();
                        async move {
                            let query = q.get("query").cloned().unwrap_or_default();
                            must(recorded.lock()).push(query.clone());
                            if query.contains("syntax error") {
                                return HttpResponse::BadRequest().json(json!({
                                    "status": "error", "errorType": "bad_data",
                                    "error": "1:1: parse error: unexpected identifier"
                                }));
                            }
                            let canary = query.contains("paas_dev_revision=\"2\"");
                            let value = match (
                                query.starts_with("errors"),
                                query.starts_with("p99"),
                                canary,
                            ) {
                                (true, _, true) => Some(20.0),
                                (true, _, false) => None,
                                (_, true, true) => Some(40.0),
                                (_, true, false) => Some(35.0),
                                (_, _, true) => Some(100.0),
                                (_, _, false) => Some(300.0),
                            };
                            let result: Vec<serde_json::Value> = value
                                .map(|v| json!({"metric": {}, "value": [0, format!("{v}")]}))
                                .into_iter()
                                .collect();
                            HttpResponse::Ok().json(json!({
                                "status": "success",
                                "data": {"resultType": "vector", "result": result}
                            }))
                        }
                    },
                ),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0)),
    );
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), seen)
}

fn promql_canary() -> serde_json::Value {
    json!({
        "type": "canary",
        "steps": [{"weight": 33, "pause_s": 600}, {"weight": 100}],
        "analysis": {
            "interval_s": 1,
            "promql": {
                "requests": "requests{paas_dev_app=\"{{app}}\",paas_dev_revision=\"{{revision}}\"}[{{interval}}]",
                "errors": "errors{paas_dev_app=\"{{app}}\",paas_dev_revision=\"{{revision}}\"}[{{interval}}]",
                "p99_ms": "p99{paas_dev_revision=\"{{revision}}\"}"
            }
        }
    })
}

/// On Kubernetes the platform does not see the traffic: a canary's analysis reads it
/// from Prometheus, one query per figure and side. A canary failing one request in five
/// is rolled back at its first check, and the stable revision's Deployment keeps its
/// three replicas throughout.
#[sqlx::test(migrations = "../../migrations")]
async fn a_canarys_promql_analysis_rolls_a_failing_canary_back_on_kubernetes(pool: PgPool) {
    let (url, seen) = fake_prometheus().await;
    let (platform, cluster, runtimes, master) =
        changed_app_with(&pool, Some(url.clone()), Some(promql_canary())).await;
    let reconciler = Reconciler::new(pool.clone(), runtimes, master)
        .with_prometheus(Some(platform_core::autoscaler::Prometheus::new(url)));
    let tom = must(platform.login("tom", PASSWORD, None).await).principal;
    let acme = must(platform.tenant(&tom, "acme").await);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let release = loop {
        let report = must(reconciler.tick().await);
        assert_eq!(report.failed, 0, "{report:?}");
        if let Some(applied) = must(cluster.applied.lock()).last() {
            let step = replicas(applied);
            assert!(
                step.contains(&(1, 3)),
                "the stable revision was touched: {step:?}"
            );
            *must(cluster.running.lock()) = Some(
                step.iter()
                    .map(|(r, n)| (*r, u32::try_from(*n).unwrap_or_default()))
                    .collect(),
            );
        }
        must(reconciler.canary_tick().await);
        let release = must(platform.releases(&acme, "dev", "web").await).remove(0);
        if release.state != platform_core::releases::gate::State::Progressing {
            break release;
        }
        assert!(std::time::Instant::now() < deadline, "{release:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        release.state,
        platform_core::releases::gate::State::RolledBack,
        "{release:?}"
    );
    assert!(release.reason.contains("20.00%"), "{}", release.reason);
    // The canary ran: one instance (33% of 3) beside the stable three.
    assert!(
        must(cluster.applied.lock())
            .iter()
            .any(|w| replicas(w) == [(2, 1), (1, 3)])
    );
    let queries = must(seen.lock()).clone();
    for expected in [
        "requests{paas_dev_app=\"web\",paas_dev_revision=\"2\"}[1s]",
        "errors{paas_dev_app=\"web\",paas_dev_revision=\"1\"}[1s]",
        "p99{paas_dev_revision=\"2\"}",
    ] {
        assert!(
            queries.iter().any(|q| q == expected),
            "{expected} not in {queries:?}"
        );
    }
    let detail = must(platform.release(&acme, "dev", "web", release.id).await);
    assert!(
        detail
            .timeline
            .iter()
            .any(|e| e.kind == "analysis" && e.message.contains("20.00%")),
        "{:?}",
        detail.timeline
    );
}

/// A policy whose analysis reads Prometheus needs one configured, and a query it can
/// run: each refusal names the field.
#[sqlx::test(migrations = "../../migrations")]
async fn a_promql_analysis_needs_a_prometheus_that_takes_its_queries(pool: PgPool) {
    let (url, _) = fake_prometheus().await;
    let (without, _, _, master) = changed_app_with(&pool, None, None).await;
    let with = must(Platform::start(pool.clone(), TokenConfig::default(), master).await)
        .with_metric_sources(platform_core::autoscaler::MetricSources {
            prometheus: Some(platform_core::autoscaler::Prometheus::new(url)),
        });
    for (platform, errors_query, field, message) in [
        (
            &without,
            "errors{r=\"{{revision}}\"}",
            "strategy.analysis.promql",
            "no Prometheus is configured",
        ),
        (
            &with,
            "syntax error {{revision}}",
            "strategy.analysis.promql.errors",
            "parse error",
        ),
        (
            &with,
            "errors{r=\"{{release}}\"}",
            "strategy.analysis.promql.errors",
            "{{release}} is not a placeholder",
        ),
    ] {
        let tom = must(platform.login("tom", PASSWORD, None).await).principal;
        let acme = must(platform.tenant(&tom, "acme").await);
        let mut strategy = promql_canary();
        strategy["analysis"]["promql"]["errors"] = json!(errors_query);
        let mut policy = must(platform.release_policy(&acme, "dev").await).policy;
        policy.strategy = must(serde_json::from_value(strategy));
        match platform
            .set_release_policy(&acme, "dev", policy, None)
            .await
        {
            Err(platform_core::CoreError::Invalid(e)) => {
                assert_eq!(e.field, field);
                assert!(e.message.contains(message), "{}", e.message);
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }
}
