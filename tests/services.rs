//! The service catalog's platform side over real HTTP: a platform administrator
//! registers a broker, members provision, update and deprovision instances through it,
//! and a scripted broker's faults (errors, timeouts, closed connections, failed
//! asynchronous operations, being down) leave the platform's state right and nothing
//! behind at the broker (orphan mitigation observed as the broker's own requests).

mod support;

use std::time::{Duration, Instant};

use platform_core::services::WorkerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::broker::{Answer, FakeBroker, ok};
use support::{Api, Server, must, start};

const INSTANCES: &str = "/api/v1/tenants/acme/environments/dev/service-instances";

/// The worker, paced for tests: calls give up after 1 s, polls every 100 ms.
fn worker(server: &Server) {
    let platform = server.platform.clone().with_service_config(WorkerConfig {
        call_timeout: Duration::from_secs(1),
        max_operation: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        concurrency: 4,
    });
    let (_keep, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = _keep;
        platform.operations_worker().run(stop).await;
    });
}

async fn register(admin: &Api, broker: &FakeBroker) -> Value {
    let (status, body) = admin
        .post(
            "/api/v1/admin/brokers",
            json!({"name": "kv", "url": broker.url, "username": "platform", "password": "s3cret-broker-pass"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Polls the instance until `done` holds of it (or it is gone: `Value::Null`).
async fn wait_for(api: &Api, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api.get(&format!("{INSTANCES}/{name}")).await;
        let current = if status == StatusCode::NOT_FOUND {
            Value::Null
        } else {
            body
        };
        if done(&current) {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "instance {name} never got there: {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn settled(v: &Value) -> bool {
    v.is_null() || v["operation"].is_null()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_instance_is_provisioned_updated_and_deprovisioned_through_a_registered_broker(
    pool: PgPool,
) {
    let server = start(pool).await;
    worker(&server);
    let broker = FakeBroker::start().await;
    let admin = server.api("admin").await;
    let dev = server.api("dev").await;

    // Only platform administrators register brokers; a wrong password is the broker's
    // 401, reported as such and nothing is stored.
    let (status, _) = dev
        .post(
            "/api/v1/admin/brokers",
            json!({"name": "kv", "url": broker.url, "username": "platform", "password": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = admin
        .post(
            "/api/v1/admin/brokers",
            json!({"name": "kv", "url": broker.url, "username": "platform", "password": "wrong"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("broker_unavailable")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or_default().contains("401"),
        "{body}"
    );
    let (status, body) = admin
        .post(
            "/api/v1/admin/brokers",
            json!({"name": "kv", "url": "ftp://x", "username": "platform", "password": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("url")),
        "{body}"
    );

    let registered = register(&admin, &broker).await;
    assert_eq!(registered["services"][0]["version"], "1.4.2");
    assert!(!registered.to_string().contains("s3cret"), "{registered}");
    let catalog_call = broker
        .seen()
        .into_iter()
        .find(|s| s.target == "/v2/catalog");
    assert_eq!(
        catalog_call
            .as_ref()
            .and_then(|s| s.header("x-broker-api-version")),
        Some("2.17")
    );

    // The marketplace, as a developer sees it.
    let (status, market) = dev.get("/api/v1/catalog/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(market["items"][0]["name"], "kv");
    assert_eq!(market["items"][0]["broker_version"], "1.4.2");
    assert_eq!(
        market["items"][0]["plans"].as_array().map(Vec::len),
        Some(2)
    );

    // Parameters are checked against the plan's schema before any broker sees them.
    let (status, body) = dev
        .post(INSTANCES, json!({"name": "sessions", "service": "kv", "plan": "small", "parameters": {"maxmemory_mb": 4096}}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("parameters.maxmemory_mb")
        ),
        "{body}"
    );
    let (status, body) = dev
        .post(
            INSTANCES,
            json!({"name": "sessions", "service": "kv", "plan": "tiny"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
        "{body}"
    );
    assert!(broker.calls("PUT").is_empty());

    // Asynchronous provisioning: 202, two polls in progress (one with Retry-After),
    // then succeeded.
    broker.script(
        "PUT",
        vec![ok(
            202,
            json!({"operation": "op-1", "dashboard_url": "http://dash/1"}),
        )],
    );
    broker.script(
        "POLL",
        vec![
            Answer::Json(
                200,
                json!({"state": "in progress", "description": "10% done"}),
                Some(1),
            ),
            ok(
                200,
                json!({"state": "in progress", "description": "50% done"}),
            ),
            ok(200, json!({"state": "succeeded"})),
        ],
    );
    let (status, body) = dev
        .post(INSTANCES, json!({"name": "sessions", "service": "kv", "plan": "small", "parameters": {"maxmemory_mb": 32}}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "provisioning");
    let (status, _) = dev
        .post(
            INSTANCES,
            json!({"name": "sessions", "service": "kv", "plan": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let ready = wait_for(&dev, "sessions", |v| v["state"] == "ready").await;
    assert_eq!(ready["dashboard_url"], "http://dash/1");
    assert_eq!(ready["last_operation"]["state"], "succeeded");
    let put = broker.calls("PUT");
    assert_eq!(put.len(), 1);
    assert!(
        put[0].target.ends_with("?accepts_incomplete=true"),
        "{}",
        put[0].target
    );
    assert_eq!(put[0].body["plan_id"], "kv-small");
    assert_eq!(put[0].body["parameters"]["maxmemory_mb"], 32);
    assert_eq!(put[0].body["context"]["platform"], "paas");
    let polls: Vec<String> = broker
        .seen()
        .into_iter()
        .filter(|s| s.target.contains("last_operation"))
        .map(|s| s.target)
        .collect();
    assert_eq!(polls.len(), 3, "{polls:?}");
    assert!(polls[0].contains("operation=op-1"), "{polls:?}");

    // An update to the other plan, synchronous.
    let (status, body) = dev
        .call(
            reqwest::Method::PATCH,
            &format!("{INSTANCES}/sessions"),
            Some(json!({"plan": "large"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let updated = wait_for(&dev, "sessions", |v| v["plan"] == "large" && settled(v)).await;
    assert_eq!(updated["state"], "ready");
    assert_eq!(broker.calls("PATCH")[0].body["plan_id"], "kv-large");

    // A failed update leaves the instance as it was, with the broker's reason.
    broker.script(
        "PATCH",
        vec![ok(422, json!({"description": "cannot shrink"}))],
    );
    dev.call(
        reqwest::Method::PATCH,
        &format!("{INSTANCES}/sessions"),
        Some(json!({"plan": "small"})),
    )
    .await;
    let kept = wait_for(&dev, "sessions", settled).await;
    assert_eq!(
        (kept["plan"].as_str(), kept["state"].as_str()),
        (Some("large"), Some("ready")),
        "{kept}"
    );
    assert!(
        kept["last_operation"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot shrink"),
        "{kept}"
    );

    // Binding: the broker's credentials become secrets of a new revision of the
    // application, never shown; the instance cannot go while bound.
    let (_, before) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/hello")
        .await;
    let (status, binding) = dev
        .post(
            &format!("{INSTANCES}/sessions/bindings"),
            json!({"application": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{binding}");
    assert_eq!(binding["state"], "bound");
    let variables: Vec<&str> = binding["variables"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        variables,
        [
            "SESSIONS_HOST",
            "SESSIONS_PASSWORD",
            "SESSIONS_PORT",
            "SESSIONS_URI",
            "SESSIONS_URL",
            "SESSIONS_USERNAME"
        ]
    );
    assert!(!binding.to_string().contains("p1"), "{binding}");
    let bind = broker.binding_calls("PUT");
    assert_eq!(bind.len(), 1);
    assert!(
        bind[0].body["bind_resource"]["app_guid"].is_string(),
        "{:?}",
        bind[0].body
    );
    let (_, after) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/hello")
        .await;
    assert_eq!(
        after["current_revision"].as_i64(),
        before["current_revision"].as_i64().map(|r| r + 1)
    );
    let (_, secrets) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/hello/secrets")
        .await;
    let names: Vec<&str> = secrets["items"]
        .as_array()
        .map(|v| v.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"SESSIONS_URL") && names.contains(&"PAAS_SERVICES"),
        "{names:?}"
    );
    let values = revision_secrets(&server, "hello").await;
    assert_eq!(
        values.get("SESSIONS_URL").map(String::as_str),
        Some("kv://u1:p1@kv.example:7000")
    );
    assert_eq!(
        values.get("SESSIONS_PORT").map(String::as_str),
        Some("7000")
    );
    let services: Value =
        serde_json::from_str(values.get("PAAS_SERVICES").map_or("null", String::as_str))
            .unwrap_or(Value::Null);
    assert_eq!(services["sessions"]["service"], "kv");
    assert_eq!(services["sessions"]["credentials"]["password"], "p1");
    let (_, releases) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/hello/releases")
        .await;
    assert_eq!(releases["items"][0]["cause"], "binding", "{releases}");
    let (status, _) = dev
        .post(
            &format!("{INSTANCES}/sessions/bindings"),
            json!({"application": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = dev.delete(&format!("{INSTANCES}/sessions")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Unbinding: the variables leave in a new revision, the broker revokes after.
    let (status, _) = dev
        .delete(&format!("{INSTANCES}/sessions/bindings/hello"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let values = revision_secrets(&server, "hello").await;
    assert!(values.is_empty(), "{:?}", values.keys().collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dev.get(&format!("{INSTANCES}/sessions/bindings")).await.1["items"]
        .as_array()
        .is_some_and(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "the binding never went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unbind = broker.binding_calls("DELETE");
    assert_eq!(unbind.len(), 1);
    assert!(
        unbind[0].target.contains("service_id=svc-kv"),
        "{}",
        unbind[0].target
    );

    // A bind the broker fails with 500 is refused, and what it may have made is
    // unbound again (orphan mitigation for bindings).
    broker.script(
        "BIND",
        vec![ok(500, json!({"description": "out of users"}))],
    );
    let (status, body) = dev
        .post(
            &format!("{INSTANCES}/sessions/bindings"),
            json!({"application": "hello", "prefix": "KV"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("broker_unavailable")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("out of users"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.binding_calls("DELETE").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no orphan mitigation of the failed bind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revision_secrets(&server, "hello").await.is_empty());
    // A refused bind (400) leaves nothing to clean up.
    broker.script("BIND", vec![ok(400, json!({"description": "no"}))]);
    let (status, _) = dev
        .post(
            &format!("{INSTANCES}/sessions/bindings"),
            json!({"application": "hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.binding_calls("DELETE").len(), 2);

    // A broker with instances cannot be removed.
    let (status, _) = admin.delete("/api/v1/admin/brokers/kv").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Deprovisioning, asynchronous: gone once the broker says 410 to the poll.
    broker.script("DELETE", vec![ok(202, json!({"operation": "del-1"}))]);
    broker.script(
        "POLL",
        vec![ok(200, json!({"state": "in progress"})), ok(410, json!({}))],
    );
    let (status, body) = dev.delete(&format!("{INSTANCES}/sessions")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_for(&dev, "sessions", Value::is_null).await;
    let delete = broker.calls("DELETE");
    assert!(
        delete[0].target.contains("service_id=svc-kv")
            && delete[0].target.contains("plan_id=kv-large"),
        "{}",
        delete[0].target
    );
    let (status, _) = admin.delete("/api/v1/admin/brokers/kv").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The audit log tells the story and never the broker's password.
    let rows: Vec<(String, String)> = must(
        sqlx::query_as("SELECT action, details::text FROM audit_log ORDER BY id")
            .fetch_all(&server.pool)
            .await,
    );
    let actions: Vec<&str> = rows
        .iter()
        .map(|(a, _)| a.as_str())
        .filter(|a| a.starts_with("broker.") || a.starts_with("service_instance."))
        .collect();
    assert_eq!(
        actions,
        [
            "broker.register",
            "service_instance.provision",
            "service_instance.update",
            "service_instance.update",
            "service_instance.bind",
            "service_instance.unbind",
            "service_instance.bind",
            "service_instance.bind",
            "service_instance.deprovision",
            "broker.delete"
        ]
    );
    assert!(
        rows.iter()
            .all(|(_, d)| !d.contains("s3cret") && !d.contains("p1@"))
    );
}

/// The secrets the application's newest revision runs with, opened.
async fn revision_secrets(
    server: &Server,
    app: &str,
) -> std::collections::BTreeMap<String, String> {
    let (id, secrets): (uuid::Uuid, Value) = must(
        sqlx::query_as(
            "SELECT a.id, r.secrets FROM applications a JOIN revisions r ON r.application_id = a.id AND r.number = a.current_revision
             WHERE a.name = $1 AND a.deleted_at IS NULL",
        )
        .bind(app)
        .fetch_one(&server.pool)
        .await,
    );
    must(
        platform_core::platform::secrets::of_revision(
            &server.pool,
            server.platform.master_key(),
            id,
            &secrets,
        )
        .await,
    )
    .into_iter()
    .map(|(k, v)| (k, v.expose().to_owned()))
    .collect()
}

/// Provisions `name` with the broker's PUT answered by `answers`; the settled instance.
async fn provision_against(
    dev: &Api,
    broker: &FakeBroker,
    name: &str,
    answers: Vec<Answer>,
) -> Value {
    broker.script("PUT", answers);
    let (status, body) = dev
        .post(
            INSTANCES,
            json!({"name": name, "service": "kv", "plan": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    wait_for(dev, name, settled).await
}

fn deletes_of(broker: &FakeBroker, instance: &Value, server_ids: &[(String, String)]) -> usize {
    let name = instance["name"].as_str().unwrap_or_default();
    let id = server_ids
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| id.clone())
        .unwrap_or_default();
    broker
        .calls("DELETE")
        .iter()
        .filter(|s| s.target.contains(&id))
        .count()
}

#[sqlx::test(migrations = "../migrations")]
async fn broker_faults_leave_the_platform_right_and_nothing_behind(pool: PgPool) {
    let server = start(pool).await;
    worker(&server);
    let broker = FakeBroker::start().await;
    let admin = server.api("admin").await;
    let dev = server.api("dev").await;
    register(&admin, &broker).await;

    // Each fault of the provisioning call, and whether the specification asks for
    // orphan mitigation (a DELETE of what the broker may have made).
    let cases: Vec<(&str, Vec<Answer>, bool, &str)> = vec![
        (
            "err500",
            vec![ok(500, json!({"description": "disk full"}))],
            true,
            "disk full",
        ),
        (
            "hang",
            vec![Answer::Hang],
            true,
            "no answer from the broker",
        ),
        (
            "closed",
            vec![Answer::Close],
            true,
            "no answer from the broker",
        ),
        (
            "garbled",
            vec![ok(201, json!(["not", "an", "object"]))],
            true,
            "body the specification does not allow",
        ),
        (
            "refused",
            vec![ok(400, json!({"description": "bad request"}))],
            false,
            "bad request",
        ),
    ];
    for (name, answers, mitigate, reason) in &cases {
        broker.script("DELETE", vec![ok(200, json!({}))]);
        let settled = provision_against(&dev, &broker, name, answers.clone()).await;
        assert_eq!(settled["state"], "failed", "{name}: {settled}");
        let description = settled["last_operation"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(description.contains(reason), "{name}: {description}");
        let ids: Vec<(String, String)> = must(
            sqlx::query_as("SELECT name, id::text FROM service_instances")
                .fetch_all(&server.pool)
                .await,
        );
        let deletes = deletes_of(&broker, &settled, &ids);
        assert_eq!(
            deletes > 0,
            *mitigate,
            "{name}: orphan mitigation {deletes} DELETE(s); {settled}"
        );
        if *mitigate {
            assert!(description.contains("was removed"), "{name}: {description}");
        }
    }

    // Asynchronous provisioning that fails: mitigated too.
    broker.script(
        "POLL",
        vec![ok(
            200,
            json!({"state": "failed", "description": "no capacity"}),
        )],
    );
    let settled = provision_against(
        &dev,
        &broker,
        "async-failed",
        vec![ok(202, json!({"operation": "x"}))],
    )
    .await;
    assert_eq!(settled["state"], "failed");
    assert!(
        settled["last_operation"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("no capacity"),
        "{settled}"
    );
    let ids: Vec<(String, String)> = must(
        sqlx::query_as("SELECT name, id::text FROM service_instances")
            .fetch_all(&server.pool)
            .await,
    );
    assert_eq!(deletes_of(&broker, &settled, &ids), 1);

    // An operation that never ends is failed after the plan's maximum polling
    // duration (3 s) and mitigated.
    broker.script("POLL", vec![ok(200, json!({"state": "in progress"}))]);
    let settled = provision_against(&dev, &broker, "forever", vec![ok(202, json!({}))]).await;
    assert_eq!(settled["state"], "failed");
    assert!(
        settled["last_operation"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("maximum polling duration"),
        "{settled}"
    );

    // Mitigation is retried until the broker confirms: two 500s, then 410.
    broker.script(
        "DELETE",
        vec![ok(500, json!({})), ok(503, json!({})), ok(410, json!({}))],
    );
    let settled = provision_against(&dev, &broker, "stubborn", vec![ok(502, json!({}))]).await;
    let ids: Vec<(String, String)> = must(
        sqlx::query_as("SELECT name, id::text FROM service_instances")
            .fetch_all(&server.pool)
            .await,
    );
    assert_eq!(deletes_of(&broker, &settled, &ids), 3, "{settled}");
    assert!(
        settled["last_operation"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("was removed"),
        "{settled}"
    );

    // A failed instance is deleted like any other: the broker says 410, it is gone.
    broker.script("DELETE", vec![ok(410, json!({}))]);
    let (status, _) = dev.delete(&format!("{INSTANCES}/err500")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for(&dev, "err500", Value::is_null).await;

    // A broker that is down makes the instance wait, not the platform: the request is
    // answered at once, and the instance is made once the broker is back.
    let down = support::binary::free_port();
    must(
        sqlx::query("UPDATE service_brokers SET url = $1")
            .bind(format!("http://127.0.0.1:{down}"))
            .execute(&server.pool)
            .await,
    );
    broker.script("PUT", vec![ok(201, json!({}))]);
    let asked = Instant::now();
    let (status, _) = dev
        .post(
            INSTANCES,
            json!({"name": "patient", "service": "kv", "plan": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(asked.elapsed() < Duration::from_secs(5));
    let waiting = wait_for(&dev, "patient", |v| {
        v["last_operation"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("could not be reached"))
    })
    .await;
    assert_eq!(waiting["state"], "provisioning", "{waiting}");
    must(
        sqlx::query("UPDATE service_brokers SET url = $1")
            .bind(&broker.url)
            .execute(&server.pool)
            .await,
    );
    let ready = wait_for(&dev, "patient", |v| v["state"] == "ready").await;
    assert_eq!(ready["last_operation"]["state"], "succeeded");
}

#[sqlx::test(migrations = "../migrations")]
async fn plans_are_visible_to_the_tenants_they_are_meant_for(pool: PgPool) {
    let server = start(pool).await;
    let broker = FakeBroker::start().await;
    let admin = server.api("admin").await;
    let dev = server.api("dev").await;
    register(&admin, &broker).await;
    let (status, body) = admin
        .put(
            "/api/v1/admin/brokers/kv/plans/kv-large/access",
            json!({"tenants": ["globex"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = admin
        .put(
            "/api/v1/admin/brokers/kv/plans/kv-large/access",
            json!({"tenants": ["nobody"]}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tenants[0]")),
        "{body}"
    );

    let (_, market) = dev.get("/api/v1/catalog/services?tenant=acme").await;
    let plans: Vec<&str> = market["items"][0]["plans"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(plans, ["small"]);
    let (status, body) = dev
        .post(
            INSTANCES,
            json!({"name": "big", "service": "kv", "plan": "large"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")),
        "{body}"
    );

    // In globex, the same developer may use both plans.
    let (_, market) = dev.get("/api/v1/catalog/services?tenant=globex").await;
    assert_eq!(
        market["items"][0]["plans"].as_array().map(Vec::len),
        Some(2)
    );
    // A tenant the caller is not in is not found, as everywhere.
    let ops = server.api("ops").await;
    let (status, _) = ops.get("/api/v1/catalog/services?tenant=globex").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Quotas count service instances.
    let (status, body) = admin
        .put(
            "/api/v1/admin/tenants/acme/quota",
            json!({"max_service_instances": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["max_service_instances"], 1);
    let (status, _) = dev
        .post(
            INSTANCES,
            json!({"name": "one", "service": "kv", "plan": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = dev
        .post(
            INSTANCES,
            json!({"name": "two", "service": "kv", "plan": "small"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("quota_exceeded")),
        "{body}"
    );
}
