//! The reconciler's shapes fed into the Kubernetes renderer, against a real PostgreSQL
//! (`sqlx::test`): during a rollout every live revision renders with its own spec, so
//! the old revision's Deployment keeps the old pod template.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use platform_core::auth::TokenConfig;
use platform_core::names::{AppName, DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::platform::{NewApplication, NewTenant, NewUser};
use platform_core::reconciler::Reconciler;
use platform_core::runtime::{
    Instance, Node, Phase, Runtime, RuntimeError, Runtimes, Workload, WorkloadKey,
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
        Ok((0..3)
            .map(|n| Instance {
                name: format!("web-r1-{n}"),
                revision: 1,
                ordinal: None,
                node: Some("n1".into()),
                address: None,
                phase: Phase::Running,
                ready: true,
                restarts: 0,
                cpu_millis: None,
                memory_mib: None,
                message: None,
                since: chrono::Utc::now(),
            })
            .collect())
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

#[sqlx::test(migrations = "../../migrations")]
async fn two_live_revisions_render_two_pod_templates_each_its_own(pool: PgPool) {
    let master = must(platform_core::sealing::MasterKey::generate()).0;
    let cluster = Arc::new(Cluster::default());
    let runtimes = Runtimes::default().with("local", cluster.clone());
    let platform =
        must(Platform::start(pool.clone(), TokenConfig::default(), master.clone()).await)
            .with_runtimes(runtimes.clone());
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
