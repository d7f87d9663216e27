//! P5: placement at scale through the local driver's own `apply` (the code path the
//! reconciler takes, store included, eight workloads at a time as the reconciler
//! applies them): 1,000 applications of 10 instances each onto 500
//! simulated nodes in 3 zones, once without placement rules and once with required
//! one-per-node anti-affinity and a zone spread that must hold. Needs `DATABASE_URL`
//! naming an empty database (`scripts/bench-placement.sh` makes one). Prints one line
//! per run, then one JSON object.

#![allow(clippy::print_stdout)] // Its figures go to stdout, for the script that runs it.

use std::collections::BTreeMap;
use std::time::Instant;

use platform_core::Platform;
use platform_core::auth::TokenConfig;
use platform_core::names::{AppName, DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::placement_spec::PlacementSpec;
use platform_core::platform::{NewApplication, NewTenant, NewUser};
use platform_core::runtime::{Placement, RevisionShape, Runtime, Slots, Workload, WorkloadKey};
use platform_core::spec::{AppSpec, Resources, WorkloadKind};
use runtime_local::LocalRuntime;
use runtime_local::proto::Registration;

const NODES: usize = 500;
const APPS: usize = 1_000;
const REPLICAS: u32 = 10;
const PASSWORD: &str = "a long enough password";
/// How many workloads are applied at a time (the reconciler's own number).
const PARALLEL: usize = 8;

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e:?}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| panic!("DATABASE_URL"));
    let pool = must(platform_core::store::open(&url, 16).await);
    let master = must(platform_core::sealing::MasterKey::generate()).0;
    let platform =
        must(Platform::start(pool.clone(), TokenConfig::default(), master.clone()).await);
    let password = must(Password::parse_new(PASSWORD));
    must(platform.bootstrap_admin("root", &password).await);
    let admin = must(platform.login("root", PASSWORD, None).await).principal;
    must(
        platform
            .create_user(
                &admin,
                NewUser {
                    username: must(Username::parse("owner")),
                    display_name: must(DisplayName::parse("owner")),
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
                    slug: must(TenantSlug::parse("bench")),
                    display_name: must(DisplayName::parse("bench")),
                    admin: Some(must(Username::parse("owner"))),
                },
            )
            .await,
    );
    let owner = must(platform.login("owner", PASSWORD, None).await).principal;
    let access = must(platform.tenant(&owner, "bench").await);
    let spec: AppSpec = must(serde_json::from_value(serde_json::json!({
        "command": "true", "replicas": REPLICAS, "resources": {"cpu_millis": 10, "memory_mib": 16}
    })));
    for env in ["dev", "test"] {
        for i in 0..APPS {
            must(
                platform
                    .create_application(
                        &access,
                        NewApplication {
                            environment: must(EnvName::parse(env)),
                            name: must(AppName::parse(&format!("app-{i}"))),
                            description: String::new(),
                            spec: spec.clone(),
                        },
                    )
                    .await,
            );
        }
    }
    // Simulated nodes beat once a minute and are never judged lost while the runs last.
    let runtime = LocalRuntime::new(pool.clone(), "token".into(), master)
        .with_grace(std::time::Duration::from_secs(3600));
    for n in 0..NODES {
        must(
            runtime
                .register(&Registration {
                    name: format!("node-{n}"),
                    labels: BTreeMap::from([(
                        "zone".to_owned(),
                        ["a", "b", "c"][n % 3].to_owned(),
                    )]),
                    capacity: Resources {
                        cpu_millis: 64_000,
                        memory_mib: 262_144,
                    },
                    address: "127.0.0.1".into(),
                    api_port: 1,
                    heartbeat_ms: Some(60_000),
                })
                .await,
        );
    }
    let constrained: PlacementSpec = must(serde_json::from_value(serde_json::json!({
        "app_anti_affinity": [{"apps": ["self"], "required": true, "topology": "node"}],
        "spread": [{"topology": "zone", "max_skew": 1, "when_unsatisfiable": "do_not_schedule"}]
    })));
    let mut rates = Vec::new();
    for (env, rules) in [("dev", PlacementSpec::default()), ("test", constrained)] {
        let workloads: Vec<Workload> = (0..APPS)
            .map(|i| Workload {
                key: WorkloadKey {
                    tenant: "bench".into(),
                    environment: env.into(),
                    app: format!("app-{i}"),
                },
                kind: WorkloadKind::Service,
                revisions: vec![RevisionShape {
                    revision: 1,
                    spec: spec.clone(),
                    slots: Slots::Count(REPLICAS),
                    weight: None,
                    in_place: false,
                    secrets: BTreeMap::new(),
                }],
                placement: Placement {
                    rules: rules.clone(),
                    ..Placement::standard()
                },
            })
            .collect();
        // Every node has just been heard from.
        must(
            sqlx::query("UPDATE nodes SET last_heartbeat = now()")
                .execute(&pool)
                .await,
        );
        // As the reconciler applies them: a few workloads at a time.
        let workloads = std::sync::Arc::new(workloads);
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut appliers = tokio::task::JoinSet::new();
        for _ in 0..PARALLEL {
            let (runtime, workloads, next) = (runtime.clone(), workloads.clone(), next.clone());
            appliers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(w) = workloads.get(i) else { break };
                    must(runtime.apply(w).await);
                }
            });
        }
        while let Some(done) = appliers.join_next().await {
            must(done);
        }
        let took = started.elapsed().as_secs_f64();
        let placed: i64 = must(
            sqlx::query_scalar(
                "SELECT count(*) FROM instances i JOIN applications a ON a.id = i.application_id
                 JOIN environments e ON e.id = a.environment_id WHERE e.name = $1",
            )
            .bind(env)
            .fetch_one(&pool)
            .await,
        );
        let rate = placed as f64 / took;
        println!(
            "{}: {placed} instances of {APPS} applications on {NODES} nodes in {took:.2} s: {rate:.0} placements/s",
            if env == "dev" {
                "unconstrained"
            } else {
                "one per node, zone spread"
            }
        );
        assert_eq!(
            placed,
            (APPS as i64) * i64::from(REPLICAS),
            "every instance placed"
        );
        // However fast, the load is spread: no node holds more than twice its share.
        let busiest: i64 = must(
            sqlx::query_scalar(
                "SELECT max(c) FROM (SELECT i.node, count(*) AS c FROM instances i
                 JOIN applications a ON a.id = i.application_id
                 JOIN environments e ON e.id = a.environment_id WHERE e.name = $1
                 GROUP BY 1) n",
            )
            .bind(env)
            .fetch_one(&pool)
            .await,
        );
        let share = placed / NODES as i64;
        println!("  the busiest node holds {busiest} of them (an even share: {share})");
        assert!(
            busiest <= 2 * share,
            "placements piled up: {busiest} on one node"
        );
        if env == "test" {
            // Placed together, and still one per node and spread evenly over the zones.
            let doubled: i64 = must(
                sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT i.application_id, i.node FROM instances i
                     JOIN applications a ON a.id = i.application_id
                     JOIN environments e ON e.id = a.environment_id WHERE e.name = 'test'
                     GROUP BY 1, 2 HAVING count(*) > 1) d",
                )
                .fetch_one(&pool)
                .await,
            );
            let skewed: i64 = must(
                sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT application_id FROM (
                        SELECT i.application_id, n.labels->>'zone' AS zone, count(*) AS c
                        FROM instances i JOIN nodes n ON n.name = i.node
                        JOIN applications a ON a.id = i.application_id
                        JOIN environments e ON e.id = a.environment_id WHERE e.name = 'test'
                        GROUP BY 1, 2) z GROUP BY 1 HAVING max(c) - min(c) > 1 OR count(*) < 3) s",
                )
                .fetch_one(&pool)
                .await,
            );
            assert_eq!((doubled, skewed), (0, 0), "the rules held");
        }
        rates.push(rate);
    }
    println!(
        "{}",
        serde_json::json!({
            "p5_placements_per_s_unconstrained": rates[0].round(),
            "p5_placements_per_s_constrained": rates[1].round(),
            "p5_constrained_ratio": ((rates[1] / rates[0]) * 100.0).round() / 100.0,
        })
    );
}
