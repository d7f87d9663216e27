//! The local runtime's driver against a real PostgreSQL, with the core above it: one
//! fresh database per test (`sqlx::test` creates it from `DATABASE_URL` and applies
//! the migrations). Agents are played by the test, speaking the protocol.

use platform_core::auth::TokenConfig;
use platform_core::authz::Principal;
use platform_core::model::{AppEvent, Role};
use platform_core::names::{AppName, DisplayName, EnvName, Password, TenantSlug, Username};
use platform_core::platform::{NewApplication, NewTenant, NewUser, Session};
use platform_core::spec::AppSpec;
use platform_core::{CoreError, Platform};
use sqlx::PgPool;

const PASSWORD: &str = "a long enough password";

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn master() -> platform_core::sealing::MasterKey {
    must(platform_core::sealing::MasterKey::generate()).0
}

fn spec(command: &str) -> AppSpec {
    must(serde_json::from_value(
        serde_json::json!({"command": command}),
    ))
}

/// A platform with an admin, tenants `acme` and `globex`, and `alice` (developer in
/// acme), `olga` (ops in acme), `tom` (tenant admin in acme), `gary` (admin of globex).
struct World {
    platform: Platform,
    admin: Principal,
}

impl World {
    async fn new(pool: PgPool) -> Self {
        let platform = must(Platform::start(pool, TokenConfig::default(), master()).await);
        let password = must(Password::parse_new(PASSWORD));
        assert!(must(platform.bootstrap_admin("root", &password).await));
        let admin = must(platform.login("root", PASSWORD, Some("127.0.0.1")).await).principal;
        let world = Self { platform, admin };
        for user in ["alice", "olga", "tom", "gary"] {
            world.create_user(user).await;
        }
        world.create_tenant("acme", "tom").await;
        world.create_tenant("globex", "gary").await;
        let tom = world.login("tom").await;
        let acme = must(world.platform.tenant(&tom, "acme").await);
        must(
            world
                .platform
                .set_member_role(&acme, "alice", Role::Developer, None)
                .await,
        );
        must(
            world
                .platform
                .set_member_role(&acme, "olga", Role::Ops, None)
                .await,
        );
        world
    }

    async fn create_user(&self, name: &str) {
        let input = NewUser {
            username: must(Username::parse(name)),
            display_name: must(DisplayName::parse(name)),
            password: must(Password::parse_new(PASSWORD)),
            platform_admin: false,
        };
        must(self.platform.create_user(&self.admin, input).await);
    }

    async fn create_tenant(&self, slug: &str, admin: &str) {
        let input = NewTenant {
            slug: must(TenantSlug::parse(slug)),
            display_name: must(DisplayName::parse(slug)),
            admin: Some(must(Username::parse(admin))),
        };
        must(self.platform.create_tenant(&self.admin, input).await);
    }

    async fn session(&self, user: &str) -> Session {
        must(self.platform.login(user, PASSWORD, Some("10.1.2.3")).await)
    }

    async fn login(&self, user: &str) -> Principal {
        self.session(user).await.principal
    }

    /// Creates `name` in the dev environment of the tenant `access` opens.
    async fn create_dev_app(
        &self,
        access: &platform_core::authz::TenantAccess,
        name: &str,
        spec: AppSpec,
    ) {
        must(
            self.platform
                .create_application(
                    access,
                    NewApplication {
                        environment: must(EnvName::parse("dev")),
                        name: must(AppName::parse(name)),
                        description: String::new(),
                        spec,
                    },
                )
                .await,
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_workload_no_node_can_hold_says_so_once_as_an_event(pool: PgPool) {
    use platform_core::reconciler::Reconciler;
    use runtime_local::{LocalRuntime, proto::Registration};
    let world = World::new(pool.clone()).await;
    let runtime = LocalRuntime::new(pool.clone(), "token".into(), master());
    must(
        runtime
            .register(&Registration {
                name: "small".into(),
                labels: Default::default(),
                capacity: platform_core::spec::Resources {
                    cpu_millis: 1000,
                    memory_mib: 256,
                },
                address: "127.0.0.1".into(),
                api_port: 0,
                heartbeat_ms: None,
            })
            .await,
    );
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    let mut big = spec("web");
    big.resources.memory_mib = 4096;
    world.create_dev_app(&access, "big", big).await;
    let runtimes =
        platform_core::runtime::Runtimes::default().with("local", std::sync::Arc::new(runtime));
    let reconciler = Reconciler::new(pool, runtimes, master());
    for _ in 0..3 {
        let report = must(reconciler.tick().await);
        assert_eq!(report.failed, 1, "{report:?}");
    }
    let events = must(world.platform.events(&access, "dev", "big", 50).await);
    let unschedulable: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "Unschedulable")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(unschedulable.len(), 1, "{events:?}");
    assert!(unschedulable[0].contains("4096 MiB"), "{unschedulable:?}");
}

/// Registers a node of the local runtime that offers plenty.
async fn node(runtime: &runtime_local::LocalRuntime, name: &str) {
    use runtime_local::proto::Registration;
    must(
        runtime
            .register(&Registration {
                name: name.into(),
                labels: Default::default(),
                capacity: platform_core::spec::Resources {
                    cpu_millis: 4000,
                    memory_mib: 4096,
                },
                address: "127.0.0.1".into(),
                api_port: 0,
                heartbeat_ms: Some(200),
            })
            .await,
    );
}

/// Makes a node look silent for `seconds` (its last heartbeat that long ago).
async fn silence(pool: &PgPool, node: &str, seconds: i32) {
    must(
        sqlx::query(
            "UPDATE nodes SET last_heartbeat = now() - make_interval(secs => $2) WHERE name = $1",
        )
        .bind(node)
        .bind(f64::from(seconds))
        .execute(pool)
        .await,
    );
}

/// Where each live instance of an application is placed: (name, node), sorted.
async fn placed(pool: &PgPool, app: &str) -> Vec<(String, String)> {
    must(
        sqlx::query_as(
            "SELECT i.name, i.node FROM instances i JOIN applications a ON a.id = i.application_id
             WHERE a.name = $1 AND i.desired = 'run' ORDER BY i.name",
        )
        .bind(app)
        .fetch_all(pool)
        .await,
    )
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_silent_node_loses_its_stateless_instances_but_an_ordinal_waits_for_an_operator_and_its_lease(
    pool: PgPool,
) {
    use platform_core::reconciler::Reconciler;
    use platform_core::runtime::Runtime;
    use runtime_local::LocalRuntime;
    let world = World::new(pool.clone()).await;
    let runtime = std::sync::Arc::new(
        LocalRuntime::new(pool.clone(), "token".into(), master())
            .with_grace(std::time::Duration::from_secs(5))
            .with_lease_ttl(std::time::Duration::from_secs(20)),
    );
    node(&runtime, "node-1").await;
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    for (name, kind) in [("web", "service"), ("db", "stateful")] {
        let mut s = spec(name);
        s.kind = must(platform_core::spec::WorkloadKind::parse(kind));
        world.create_dev_app(&access, name, s).await;
    }
    let runtimes = platform_core::runtime::Runtimes::default().with("local", runtime.clone());
    let platform = world.platform.clone().with_runtimes(runtimes.clone());
    let reconciler = Reconciler::new(pool.clone(), runtimes, master());
    must(reconciler.tick().await);
    assert_eq!(
        placed(&pool, "db").await,
        [("db-0".to_owned(), "node-1".to_owned())]
    );
    node(&runtime, "node-2").await;

    // A few missed heartbeats: the node is not ready, its instances unknown, nothing moves.
    silence(&pool, "node-1", 2).await;
    must(runtime.judge_nodes().await);
    must(reconciler.tick().await);
    let key = |app: &str| platform_core::runtime::WorkloadKey {
        tenant: "acme".into(),
        environment: "dev".into(),
        app: app.into(),
    };
    let db = must(runtime.instances(&key("db")).await);
    assert_eq!(
        db[0].phase,
        platform_core::runtime::Phase::Unknown,
        "{db:?}"
    );
    assert!(!db[0].ready);
    assert_eq!(placed(&pool, "web").await[0].1, "node-1");

    // Past the grace period (the control plane has been up that long too): the
    // stateless instance moves; the ordinal waits, whatever the silence, and says why.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    silence(&pool, "node-1", 3600).await;
    silence(&pool, "node-2", 0).await;
    must(runtime.judge_nodes().await);
    for _ in 0..3 {
        must(reconciler.tick().await);
    }
    assert_eq!(placed(&pool, "web").await[0].1, "node-2");
    assert_eq!(
        placed(&pool, "db").await,
        [("db-0".to_owned(), "node-1".to_owned())]
    );
    let events = must(world.platform.events(&access, "dev", "db", 50).await);
    let waiting: Vec<&AppEvent> = events.iter().filter(|e| e.reason == "Waiting").collect();
    assert_eq!(waiting.len(), 1, "said once: {events:?}");
    assert!(
        waiting[0].message.contains("its data lives there"),
        "{waiting:?}"
    );
    let nodes = must(runtime.nodes().await);
    assert_eq!(nodes[0].condition, "lost", "{nodes:?}");
    let node_events = must(runtime.node_events(10).await);
    assert!(
        node_events
            .iter()
            .any(|e| e.node == "node-1" && e.reason == "Lost"),
        "{node_events:?}"
    );

    // A node that reports cannot be confirmed lost.
    let admin = world.login("root").await;
    let refused = platform.confirm_node_lost(&admin, "local", "node-2").await;
    assert!(
        matches!(refused, Err(CoreError::Conflict { .. })),
        "{refused:?}"
    );
    // Confirmed lost while its lease may still hold: the ordinal still waits.
    silence(&pool, "node-1", 10).await;
    silence(&pool, "node-2", 0).await;
    let loss = must(platform.confirm_node_lost(&admin, "local", "node-1").await);
    assert_eq!(loss.stateful_moved, ["acme/dev/db-0"]);
    must(reconciler.tick().await);
    assert_eq!(placed(&pool, "db").await[0].1, "node-1");
    // Once the lease (20 s) and the margin (5 s) are surely over, it starts on node-2.
    silence(&pool, "node-1", 26).await;
    silence(&pool, "node-2", 0).await;
    must(reconciler.tick().await);
    assert_eq!(
        placed(&pool, "db").await,
        [("db-0".to_owned(), "node-2".to_owned())]
    );
    let events = must(world.platform.events(&access, "dev", "db", 50).await);
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Moved" && e.message.contains("empty data directory")),
        "{events:?}"
    );
    let audit: Vec<String> = must(
        sqlx::query_as::<_, (String,)>(
            "SELECT action FROM audit_log WHERE action = 'node.confirm_lost'",
        )
        .fetch_all(&pool)
        .await,
    )
    .into_iter()
    .map(|(a,)| a)
    .collect();
    assert_eq!(audit.len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_held_heartbeat_is_answered_the_moment_its_node_is_given_an_instance_and_only_then(
    pool: PgPool,
) {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use platform_core::reconciler::Reconciler;
    use runtime_local::LocalRuntime;
    use runtime_local::proto::Heartbeat;
    let world = World::new(pool.clone()).await;
    let runtime = Arc::new(LocalRuntime::new(pool.clone(), "token".into(), master()));
    node(&runtime, "n1").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(runtime.clone().listen(stopped));
    let beat = |version: Option<String>, wait_ms: u64| Heartbeat {
        instances: Vec::new(),
        version,
        wait_ms: Some(wait_ms),
        purged: Vec::new(),
    };
    let first = must(runtime.heartbeat("n1", &beat(None, 0)).await);
    assert!(first.instances.is_empty() && !first.unchanged);
    let version = first.version.clone();
    assert!(version.is_some());

    // Nothing changes: held for the whole wait, then `unchanged`, with nothing resent.
    let started = Instant::now();
    let idle = must(runtime.heartbeat("n1", &beat(version.clone(), 600)).await);
    assert!(idle.unchanged && idle.instances.is_empty(), "{idle:?}");
    assert!(started.elapsed() >= Duration::from_millis(550));

    // An application is placed on the node while a heartbeat is held: it is answered
    // with the new assignment long before its wait runs out.
    let held = tokio::spawn({
        let runtime = runtime.clone();
        let version = version.clone();
        async move {
            let asked = Instant::now();
            let answer = runtime.heartbeat("n1", &beat(version, 20_000)).await;
            (answer, asked.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    world.create_dev_app(&access, "web", spec("web")).await;
    let runtimes = platform_core::runtime::Runtimes::default().with("local", runtime.clone());
    let placed_at = Instant::now();
    must(
        Reconciler::new(pool.clone(), runtimes, master())
            .tick()
            .await,
    );
    let (answer, waited) = must(held.await);
    let answer = must(answer);
    assert!(!answer.unchanged, "{answer:?}");
    assert_eq!(answer.instances.len(), 1, "{answer:?}");
    assert_ne!(answer.version, version);
    assert!(
        waited < Duration::from_secs(10) && placed_at.elapsed() < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    let _ = stop.send(true);
}

/// Waits up to `within` for an application to have `count` live instances; how long
/// it took, or `None`.
async fn placed_within(
    pool: &PgPool,
    app: &str,
    count: usize,
    within: std::time::Duration,
) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if placed(pool, app).await.len() == count {
            return Some(started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_change_to_one_application_is_reconciled_at_once_without_a_full_pass(pool: PgPool) {
    use platform_core::reconciler::Reconciler;
    use std::time::Duration;
    let world = World::new(pool.clone()).await;
    let runtime = runtime_local::LocalRuntime::new(pool.clone(), "token".into(), master());
    node(&runtime, "n1").await;
    let runtimes =
        platform_core::runtime::Runtimes::default().with("local", std::sync::Arc::new(runtime));
    // Full passes an hour apart: the first, at start, finds nothing; anything done
    // later within the test's time was done by a targeted reconcile.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(Reconciler::new(pool.clone(), runtimes, master()).run(
        Duration::from_secs(3600),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        stopped,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    world.create_dev_app(&access, "web", spec("web")).await;
    let created = placed_within(&pool, "web", 1, Duration::from_secs(10)).await;
    assert!(created.is_some(), "a new application was not placed");
    must(world.platform.scale(&access, "dev", "web", 3, None).await);
    let scaled = placed_within(&pool, "web", 3, Duration::from_secs(10)).await;
    assert!(scaled.is_some(), "scaling was not applied");
    must(
        world
            .platform
            .set_running(&access, "dev", "web", false, None)
            .await,
    );
    let stopped_all = placed_within(&pool, "web", 0, Duration::from_secs(10)).await;
    assert!(stopped_all.is_some(), "stopping was not applied");
    let _ = stop.send(true);
    must(loops.await);
}

/// Each node's requests as kept (`node_requests`) and as summed from the instances
/// that should run there, both without the nodes that have none.
async fn requests(pool: &PgPool) -> (Vec<(String, i64, i64)>, Vec<(String, i64, i64)>) {
    let kept = must(
        sqlx::query_as(
            "SELECT node, cpu_millis, memory_mib FROM node_requests
             WHERE cpu_millis <> 0 OR memory_mib <> 0 ORDER BY node",
        )
        .fetch_all(pool)
        .await,
    );
    let summed = must(
        sqlx::query_as(
            "SELECT node, sum(cpu_request)::bigint, sum(memory_request)::bigint FROM instances
             WHERE desired = 'run' GROUP BY node ORDER BY node",
        )
        .fetch_all(pool)
        .await,
    );
    (kept, summed)
}

#[sqlx::test(migrations = "../../migrations")]
async fn each_nodes_requests_follow_every_placement_stop_and_removal(pool: PgPool) {
    use platform_core::reconciler::Reconciler;
    use platform_core::runtime::Runtime as _;
    let world = World::new(pool.clone()).await;
    let runtime = std::sync::Arc::new(runtime_local::LocalRuntime::new(
        pool.clone(),
        "token".into(),
        master(),
    ));
    for name in ["n1", "n2", "n3"] {
        node(&runtime, name).await;
    }
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    for (app, replicas, cpu, memory) in [("small", 5, 100, 64), ("large", 2, 300, 512)] {
        let mut s = spec("web");
        s.replicas = replicas;
        s.resources = platform_core::spec::Resources {
            cpu_millis: cpu,
            memory_mib: memory,
        };
        world.create_dev_app(&access, app, s).await;
    }
    let runtimes = platform_core::runtime::Runtimes::default().with("local", runtime.clone());
    let reconciler = Reconciler::new(pool.clone(), runtimes, master());
    let check = |step: &'static str| {
        let (pool, runtime) = (pool.clone(), runtime.clone());
        async move {
            let (kept, summed) = requests(&pool).await;
            assert_eq!(kept, summed, "after {step}");
            assert!(
                !summed.is_empty() || step == "deleting both",
                "after {step}"
            );
            // What the runtime reports of its nodes is the same.
            for n in must(runtime.nodes().await) {
                let want = summed
                    .iter()
                    .find(|(name, _, _)| *name == n.name)
                    .map_or((0, 0), |(_, c, m)| (*c, *m));
                let got = n
                    .allocated
                    .map(|a| (i64::from(a.cpu_millis), i64::from(a.memory_mib)));
                assert_eq!(got, Some(want), "{} after {step}", n.name);
            }
        }
    };
    must(reconciler.tick().await);
    check("placing").await;
    assert_eq!(
        requests(&pool).await.1.iter().map(|r| r.1).sum::<i64>(),
        5 * 100 + 2 * 300
    );
    must(world.platform.scale(&access, "dev", "small", 2, None).await);
    must(reconciler.tick().await);
    check("scaling in").await;
    must(world.platform.scale(&access, "dev", "large", 4, None).await);
    must(reconciler.tick().await);
    check("scaling out").await;
    must(
        world
            .platform
            .delete_application(&access, "dev", "small", None)
            .await,
    );
    must(
        world
            .platform
            .delete_application(&access, "dev", "large", None)
            .await,
    );
    must(reconciler.tick().await);
    check("deleting both").await;
    assert!(requests(&pool).await.0.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_deleted_application_keeps_its_name_until_released_then_every_node_purges_its_files(
    pool: PgPool,
) {
    use platform_core::reconciler::Reconciler;
    use runtime_local::proto::Heartbeat;
    let world = World::new(pool.clone()).await;
    let runtime = std::sync::Arc::new(runtime_local::LocalRuntime::new(
        pool.clone(),
        "token".into(),
        master(),
    ));
    for name in ["n1", "n2"] {
        node(&runtime, name).await;
    }
    let alice = world.login("alice").await;
    let access = must(world.platform.tenant(&alice, "acme").await);
    let new_db = || NewApplication {
        environment: must(EnvName::parse("dev")),
        name: must(AppName::parse("db")),
        description: String::new(),
        spec: must(serde_json::from_value(
            serde_json::json!({"kind": "stateful", "command": "db", "replicas": 1}),
        )),
    };
    let first = must(world.platform.create_application(&access, new_db()).await).application;
    let runtimes = platform_core::runtime::Runtimes::default().with("local", runtime.clone());
    let reconciler = Reconciler::new(pool.clone(), runtimes, master());
    must(reconciler.tick().await);
    let beat = |purged: Vec<uuid::Uuid>| Heartbeat {
        instances: Vec::new(),
        version: None,
        wait_ms: None,
        purged,
    };
    let holder = placed(&pool, "db").await[0].1.clone();
    let assigned = must(runtime.heartbeat(&holder, &beat(Vec::new())).await);
    assert_eq!(assigned.instances[0].app_id, Some(first.id));
    assert!(assigned.purges.is_empty());

    must(
        world
            .platform
            .delete_application(&access, "dev", "db", None)
            .await,
    );
    // Until its runtime has released it, the name is not free: a new `db` would be
    // removed with the old one.
    match world.platform.create_application(&access, new_db()).await {
        Err(CoreError::Conflict {
            field: "name",
            message,
        }) => {
            assert!(message.contains("still being removed"), "{message}");
        }
        other => panic!("a held name was taken: {other:?}"),
    }
    must(reconciler.tick().await);

    // Every node is asked to remove the deleted application's files, the node that
    // ran it with the stop of its instance.
    let mut versions = Vec::new();
    for name in ["n1", "n2"] {
        let answer = must(runtime.heartbeat(name, &beat(Vec::new())).await);
        let purge = answer.purges.iter().map(|p| (p.app_id, p.key.to_string()));
        assert_eq!(
            purge.collect::<Vec<_>>(),
            vec![(first.id, "acme/dev/db".to_owned())],
            "{name}"
        );
        versions.push(answer.version);
    }
    // The name is free again; the new application's instances carry their own id.
    let second = must(world.platform.create_application(&access, new_db()).await).application;
    assert_ne!(second.id, first.id);
    must(reconciler.tick().await);

    // An acknowledgement ends the purge for that node only, and changes its version.
    let acked = must(runtime.heartbeat("n1", &beat(vec![first.id])).await);
    assert!(acked.purges.is_empty(), "{acked:?}");
    assert_ne!(acked.version, versions[0]);
    let other = must(runtime.heartbeat("n2", &beat(Vec::new())).await);
    assert_eq!(other.purges.len(), 1);
    let ids: Vec<Option<uuid::Uuid>> = [acked, other]
        .iter()
        .flat_map(|a| a.instances.iter().filter(|i| i.key.app == "db"))
        .filter(|i| i.desired == runtime_local::proto::Desired::Run)
        .map(|i| i.app_id)
        .collect();
    assert_eq!(ids, vec![Some(second.id)]);
}

/// The workload of one revision of `app` in acme's dev environment, `replicas` of
/// `spec`, with the standard placement.
fn workload(app: &str, spec: &AppSpec, replicas: u32) -> platform_core::runtime::Workload {
    use platform_core::runtime::{Placement, RevisionShape, Slots, Workload, WorkloadKey};
    Workload {
        key: WorkloadKey {
            tenant: "acme".into(),
            environment: "dev".into(),
            app: app.into(),
        },
        kind: platform_core::spec::WorkloadKind::Service,
        revisions: vec![RevisionShape {
            revision: 1,
            spec: spec.clone(),
            slots: Slots::Count(replicas),
            weight: None,
            in_place: false,
            secrets: Default::default(),
        }],
        placement: Placement::standard(),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_control_planes_planning_on_what_they_read_a_moment_ago_never_overcommit_a_node(
    pool: PgPool,
) {
    use platform_core::runtime::{Runtime, RuntimeError};
    use runtime_local::{LocalRuntime, proto::Registration};
    let world = World::new(pool.clone()).await;
    let a = LocalRuntime::new(pool.clone(), "token".into(), master());
    let b = LocalRuntime::new(pool.clone(), "token".into(), master());
    for name in ["one", "two"] {
        must(
            a.register(&Registration {
                name: name.into(),
                labels: Default::default(),
                capacity: platform_core::spec::Resources {
                    cpu_millis: 1000,
                    memory_mib: 1024,
                },
                address: "127.0.0.1".into(),
                api_port: 0,
                heartbeat_ms: Some(60_000),
            })
            .await,
        );
    }
    let tom = world.login("tom").await;
    let access = must(world.platform.tenant(&tom, "acme").await);
    // Each instance takes a whole node's memory.
    let mut whole = spec("web");
    whole.resources.memory_mib = 1024;
    let mut huge = spec("web");
    huge.resources.memory_mib = 4096;
    for (name, s) in [
        ("huge", &huge),
        ("first", &whole),
        ("second", &whole),
        ("third", &whole),
    ] {
        world.create_dev_app(&access, name, s.clone()).await;
    }
    // Both control planes read the nodes (empty) while trying what fits nowhere.
    for runtime in [&a, &b] {
        assert!(matches!(
            runtime.apply(&workload("huge", &huge, 1)).await,
            Err(RuntimeError::Unschedulable(_))
        ));
    }
    // One places on a node; the other, planning on the nodes as it read them (both
    // empty), finds the room taken when it checks under the lock, and plans again.
    must(a.apply(&workload("first", &whole, 1)).await);
    must(b.apply(&workload("second", &whole, 1)).await);
    let first = placed(&pool, "first").await;
    let second = placed(&pool, "second").await;
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(
        first[0].1, second[0].1,
        "both on one node: {first:?} {second:?}"
    );
    // No room is left anywhere, whichever control plane asks.
    assert!(matches!(
        b.apply(&workload("third", &whole, 1)).await,
        Err(RuntimeError::Unschedulable(_))
    ));
    let (requests, _) = requests(&pool).await;
    assert!(
        requests.iter().all(|(_, _, memory)| *memory <= 1024),
        "{requests:?}"
    );
    assert!(placed(&pool, "third").await.is_empty());
}
