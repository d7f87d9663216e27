//! The JSON API over real HTTP, against a fresh database per test.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use support::{must, service_spec, start};

#[sqlx::test(migrations = "../migrations")]
async fn a_developer_creates_changes_and_deletes_an_application(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let (status, body) = dev
        .post("/api/v1/tenants/acme/applications", json!({"environment": "dev", "name": "shop", "description": "The shop", "spec": service_spec()}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["current_revision"], 1);
    assert_eq!(body["spec"]["replicas"], 1);

    let mut spec = service_spec();
    spec["replicas"] = json!(3);
    let (status, body) = dev
        .put(
            "/api/v1/tenants/acme/environments/dev/applications/shop",
            json!({"spec": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["current_revision"], 2);

    let (_, revisions) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/shop/revisions")
        .await;
    let numbers: Vec<i64> = revisions["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["number"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(numbers, [2, 1]);

    let (status, list) = dev
        .get("/api/v1/tenants/acme/applications?environment=dev")
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["hello", "shop"]);

    let (status, _) = dev
        .delete("/api/v1/tenants/acme/environments/dev/applications/shop")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/shop")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // The name stays taken until the runtime has released the deleted application
    // (a new one must not be removed with it), then it is free again.
    let recreate = json!({"environment": "dev", "name": "shop", "spec": service_spec()});
    let (status, body) = dev
        .post("/api/v1/tenants/acme/applications", recreate.clone())
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"), Some("name")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("still being removed")),
        "{body}"
    );
    let master = must(platform_core::sealing::MasterKey::generate()).0;
    let local =
        runtime_local::LocalRuntime::new(server.pool.clone(), "token".into(), master.clone());
    let runtimes =
        platform_core::runtime::Runtimes::default().with("local", std::sync::Arc::new(local));
    must(
        platform_core::reconciler::Reconciler::new(server.pool.clone(), runtimes, master)
            .tick()
            .await,
    );
    let (status, body) = dev
        .post("/api/v1/tenants/acme/applications", recreate)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn each_role_sees_only_what_it_may(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let ops = server.api("ops").await;
    let tadmin = server.api("tadmin").await;
    let admin = server.api("admin").await;

    let prod_app = json!({"environment": "prod", "name": "api", "spec": service_spec()});
    assert_eq!(
        dev.post("/api/v1/tenants/acme/applications", prod_app.clone())
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ops.post("/api/v1/tenants/acme/applications", prod_app)
            .await
            .0,
        StatusCode::CREATED
    );

    assert_eq!(
        dev.get("/api/v1/tenants/acme/audit").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ops.get("/api/v1/tenants/acme/audit").await.0,
        StatusCode::OK
    );
    assert_eq!(
        ops.put("/api/v1/tenants/acme/members/dev", json!({"role": "ops"}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        tadmin
            .put("/api/v1/tenants/acme/members/dev", json!({"role": "ops"}))
            .await
            .0,
        StatusCode::OK
    );

    for api in [&dev, &ops, &tadmin] {
        let (status, body) = api.get("/api/v1/admin/users").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
    }
    assert_eq!(admin.get("/api/v1/admin/users").await.0, StatusCode::OK);
    // The platform admin is a member of no tenant, so tenant objects are not found.
    assert_eq!(
        admin.get("/api/v1/tenants/acme/applications").await.0,
        StatusCode::NOT_FOUND
    );

    let (_, me) = dev.get("/api/v1/me").await;
    let slugs: Vec<&str> = me["tenants"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["slug"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(slugs, ["acme", "globex"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_platform_admin_creates_a_tenant_and_its_admin_takes_over(pool: PgPool) {
    let server = start(pool).await;
    let admin = server.api("admin").await;
    let (status, _) = admin
        .post(
            "/api/v1/admin/users",
            json!({"username": "ivy", "display_name": "Ivy", "password": "ivy's long password"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = admin
        .post(
            "/api/v1/admin/tenants",
            json!({"slug": "initech", "display_name": "Initech", "admin": "ivy"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = admin
        .post(
            "/api/v1/admin/tenants",
            json!({"slug": "initech", "display_name": "Again"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str(), body["field"].as_str()),
        (StatusCode::CONFLICT, Some("already_exists"), Some("slug"))
    );

    let ivy = support::Api {
        token: None,
        ..server.anonymous()
    };
    let (_, token) = ivy
        .post(
            "/api/v1/auth/token",
            json!({"username": "ivy", "password": "ivy's long password"}),
        )
        .await;
    let ivy = support::Api {
        token: token["token"].as_str().map(str::to_owned),
        ..server.anonymous()
    };
    let (status, envs) = ivy.get("/api/v1/tenants/initech/environments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(envs["items"].as_array().map(Vec::len), Some(3));
    let (status, _) = ivy
        .post(
            "/api/v1/tenants/initech/environments",
            json!({"name": "staging", "protected": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_input_is_a_4xx_naming_the_field(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let path = "/api/v1/tenants/acme/applications";
    let cases = [
        (
            json!({"environment": "dev", "name": "Bad Name", "spec": service_spec()}),
            "name",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": {"command": ""}}),
            "spec.command",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": {"command": "x", "replicas": -1}}),
            "spec.replicas",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": {"command": "x", "replicas": 1000}}),
            "spec.replicas",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": {"command": "x", "env": {"A-B": "1"}}}),
            "spec.env.A-B",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": {"command": "x", "kind": "vm"}}),
            "spec.kind",
        ),
        (
            json!({"environment": "nowhere", "name": "ok", "spec": service_spec()}),
            "environment",
        ),
        (
            json!({"environment": "dev", "name": "ok", "spec": service_spec(), "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = dev.post(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {error}"
        );
        assert_eq!(error["error"], "invalid_field", "{body}");
        assert_eq!(error["field"], field, "{body} -> {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let raw = |body: &'static str, content_type: &'static str| {
        dev.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(must(raw("{not json", "application/json").await)),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(must(
            raw("name=x", "application/x-www-form-urlencoded").await
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let huge = format!(
        "{{\"environment\": \"dev\", \"name\": \"x\", \"description\": \"{}\"}}",
        "a".repeat(200_000)
    );
    let response = must(
        dev.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = must(response.json().await);
    assert_eq!(body["error"], "payload_too_large");
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_routes_and_methods_answer_with_the_error_shape(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let (status, body) = dev.get("/api/v1/nothing-here").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = dev.call(Method::PATCH, "/api/v1/tenants/acme", None).await;
    assert!(status.is_client_error(), "{status}");
    assert!(body["error"].is_string(), "{body}");
    let (status, body) = server.anonymous().get("/api/v1/tenants").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn health_readiness_metrics_and_the_openapi_document_are_served(pool: PgPool) {
    let server = start(pool).await;
    let http = reqwest::Client::new();
    assert_eq!(
        must(http.get(server.url("/healthz")).send().await).status(),
        StatusCode::OK
    );
    assert_eq!(
        must(http.get(server.url("/readyz")).send().await).status(),
        StatusCode::OK
    );
    let _ = must(http.get(server.url("/login")).send().await);
    let metrics = must(
        must(http.get(server.url("/metrics")).send().await)
            .text()
            .await,
    );
    assert!(metrics.contains("paas_http_requests_total"), "{metrics}");
    let (status, doc) = server.anonymous().get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert!(doc["paths"]["/api/v1/tenants/{tenant}/applications"]["post"].is_object());
}

#[sqlx::test(migrations = "../migrations")]
async fn readiness_fails_when_the_database_is_gone(pool: PgPool) {
    let server = start(pool.clone()).await;
    pool.close().await;
    let response = must(
        reqwest::Client::new()
            .get(server.url("/readyz"))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_log_records_who_did_what_and_filters(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let tadmin = server.api("tadmin").await;
    let (status, _) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "shop", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, entries) = tadmin
        .get("/api/v1/tenants/acme/audit?action=application.&actor=dev")
        .await;
    let items = entries["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{entries}");
    assert_eq!(items[0]["target"], "dev/shop");
    assert_eq!(items[0]["source_ip"], "127.0.0.1");
    // Another tenant's log does not contain it.
    let (_, globex) = tadmin
        .get("/api/v1/tenants/globex/audit?action=application.")
        .await;
    assert_eq!(globex["items"].as_array().map(Vec::len), Some(0));
}

#[sqlx::test(migrations = "../migrations")]
async fn quotas_refuse_changes_beyond_them_with_a_clear_message(pool: PgPool) {
    let server = start(pool).await;
    let admin = server.api("admin").await;
    let dev = server.api("dev").await;
    let (status, _) = admin
        .put(
            "/api/v1/admin/tenants/acme/quota",
            json!({"max_instances": 5, "max_cpu_millis": 2000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The sample application already asks for 2 instances.
    let mut spec = service_spec();
    spec["replicas"] = json!(2);
    let (status, body) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "api", "spec": spec}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = dev
        .put(
            "/api/v1/tenants/acme/environments/dev/applications/api/replicas",
            json!({"replicas": 4}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("quota_exceeded")),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "this change would bring the tenant to 6 of instances; its quota allows 5"
    );
    let (status, body) = dev.post("/api/v1/tenants/acme/applications", json!({"environment": "dev", "name": "big", "spec": {"command": "x", "resources": {"cpu_millis": 1900}}})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("quota_exceeded")),
        "{body}"
    );
    // Stopping an application frees its share.
    let (status, _) = dev
        .call(
            Method::POST,
            "/api/v1/tenants/acme/environments/dev/applications/hello/stop",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = dev
        .put(
            "/api/v1/tenants/acme/environments/dev/applications/api/replicas",
            json!({"replicas": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, quota) = dev.get("/api/v1/tenants/acme/quota").await;
    assert_eq!(quota["usage"]["instances"], 4);
    assert_eq!(quota["quota"]["max_instances"], 5);
    // Only platform administrators set quotas.
    let (status, _) = dev
        .put(
            "/api/v1/admin/tenants/acme/quota",
            json!({"max_instances": 500}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_manifest_applied_again_and_again_has_the_effect_of_once(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let manifest = "apiVersion: paas/v1\nkind: Application\nmetadata:\n  name: shop\n  environment: dev\n  description: The shop\nspec:\n  command: python3\n  args: [\"-m\", \"http.server\", \"$PORT\"]\n  replicas: 2\n  ports: [{name: http}]\n---\napiVersion: paas/v1\nkind: Application\nmetadata: {name: worker, environment: test}\nspec: {command: sh, args: [\"-c\", \"sleep 60\"]}\n";
    let apply = |text: String| {
        dev.request(Method::POST, "/api/v1/tenants/acme/manifests")
            .header("content-type", "application/yaml")
            .body(text)
            .send()
    };
    let outcomes = |body: serde_json::Value| -> Vec<(String, String, i64)> {
        body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["name"].as_str().unwrap_or("").to_owned(),
                    i["outcome"].as_str().unwrap_or("").to_owned(),
                    i["revision"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    let first: serde_json::Value = must(must(apply(manifest.to_owned()).await).json().await);
    assert_eq!(
        outcomes(first),
        [
            ("shop".into(), "created".into(), 1),
            ("worker".into(), "created".into(), 1)
        ]
    );
    let again: serde_json::Value = must(must(apply(manifest.to_owned()).await).json().await);
    assert_eq!(
        outcomes(again),
        [
            ("shop".into(), "unchanged".into(), 1),
            ("worker".into(), "unchanged".into(), 1)
        ]
    );
    let changed: serde_json::Value = must(
        must(apply(manifest.replace("replicas: 2", "replicas: 3")).await)
            .json()
            .await,
    );
    assert_eq!(
        outcomes(changed),
        [
            ("shop".into(), "updated".into(), 2),
            ("worker".into(), "unchanged".into(), 1)
        ]
    );

    let bad = must(apply(manifest.replace("replicas: 2", "replicas: lots")).await);
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = must(bad.json().await);
    assert!(
        body["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("documents[0].spec")),
        "{body}"
    );
    let garbage = must(apply("{{{ not yaml".to_owned()).await);
    assert_eq!(garbage.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_application_list_comes_in_pages_in_name_order_and_can_be_searched(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    for (env, name) in [
        ("dev", "web-b"),
        ("test", "web-a"),
        ("dev", "web-a"),
        ("dev", "api"),
    ] {
        let (status, body) = dev
            .post(
                "/api/v1/tenants/acme/applications",
                json!({"environment": env, "name": name, "spec": service_spec()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        format!(
                            "{}.{}",
                            x["name"].as_str().unwrap_or("?"),
                            x["environment"].as_str().unwrap_or("?")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Pages of two in name order, then environment, until `next` is absent.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = dev
            .get(&format!(
                "/api/v1/tenants/acme/applications?limit=2&after={after}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(names(&page));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "api.dev",
            "hello.dev",
            "web-a.dev",
            "web-a.test",
            "web-b.dev"
        ]
    );
    assert_eq!(pages, 3);
    // Search by part of the name, with an environment.
    let (_, found) = dev
        .get("/api/v1/tenants/acme/applications?search=web&environment=dev")
        .await;
    assert_eq!(names(&found), ["web-a.dev", "web-b.dev"]);
    assert!(found["next"].is_null());
    // Search ignores case, and `%` or `_` in it are plain characters.
    let (_, found) = dev
        .get("/api/v1/tenants/acme/applications?search=WEB-A")
        .await;
    assert_eq!(names(&found), ["web-a.dev", "web-a.test"]);
    let (_, found) = dev
        .get("/api/v1/tenants/acme/applications?search=web_a")
        .await;
    assert_eq!(names(&found), Vec::<String>::new());
    // A cursor that no page gave is a field error.
    let (status, body) = dev
        .get("/api/v1/tenants/acme/applications?after=nonsense")
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("after")),
        "{body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_application_reports_its_three_conditions_with_reasons(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let (status, body) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "shop", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = "/api/v1/tenants/acme/environments/dev/applications/shop/conditions";
    let conditions = |body: &serde_json::Value| -> Vec<(String, bool, String)> {
        body["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["type"].as_str().unwrap_or("?").to_owned(),
                            c["status"].as_bool().unwrap_or_default(),
                            c["reason"].as_str().unwrap_or("?").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Nothing runs the test server's applications: none of its instances is ready.
    let (status, body) = dev.get(path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = conditions(&body);
    assert_eq!(
        got,
        [
            (
                "Available".into(),
                false,
                "MinimumInstancesUnavailable".into()
            ),
            ("Progressing".into(), true, "ScalingInProgress".into()),
            ("Degraded".into(), false, "AsExpected".into()),
        ],
        "{body}"
    );
    let (status, body) = dev
        .post(
            "/api/v1/tenants/acme/environments/dev/applications/shop/stop",
            json!({}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, body) = dev.get(path).await;
    assert_eq!(
        conditions(&body)[0],
        ("Available".into(), false, "Stopped".into())
    );
    // Another tenant's application is not found: ops is a member of acme only.
    let (status, body) = dev
        .post(
            "/api/v1/tenants/globex/applications",
            json!({"environment": "dev", "name": "shop", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ops = server.api("ops").await;
    let (status, _) = ops
        .get("/api/v1/tenants/globex/environments/dev/applications/shop/conditions")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = ops.get(path).await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn htmx_filter_requests_get_the_table_not_an_empty_body(pool: PgPool) {
    let server = start(pool).await;
    // The tenant admin may read the audit log too.
    let browser = server.browser("tadmin").await;
    for (path, expected) in [
        ("/t/acme/apps?q=hel&environment=", "hello"),
        ("/t/acme/apps?q=&environment=dev", "hello"),
        (
            "/t/acme/apps?q=nothing-like-it&environment=",
            "No applications",
        ),
        (
            "/t/acme/audit?actor=&action=application",
            "application.create",
        ),
        ("/t/acme/audit?actor=nobody-at-all", "No matching entries"),
    ] {
        let response = must(
            browser
                .http
                .get(format!("{}{path}", browser.base))
                .header("HX-Request", "true")
                .send()
                .await,
        );
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = must(response.text().await);
        assert!(body.contains(expected), "{path}: {body:?}");
        // A fragment, not the page around it.
        assert!(!body.contains("<html"), "{path}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_database_that_cannot_be_reached_is_a_503_with_retry_after(pool: PgPool) {
    let server = start(pool.clone()).await;
    let dev = server.api("dev").await;
    let browser = server.browser("dev").await;
    // The control plane's connections are gone, as when PostgreSQL restarts.
    pool.close().await;
    let response = must(
        dev.request(reqwest::Method::GET, "/api/v1/tenants/acme/applications")
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let body: serde_json::Value = must(response.json().await);
    assert_eq!(body["error"], "database_unavailable", "{body}");
    // A console page says so too, with the same header.
    let page = must(
        browser
            .http
            .get(format!("{}/t/acme/apps", browser.base))
            .send()
            .await,
    );
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.headers().get("retry-after").is_some());
    assert!(must(page.text().await).contains("Temporarily unavailable"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_nul_character_in_a_json_body_is_refused_by_field(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let (status, body) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "nul", "description": "a\u{0}b", "spec": service_spec()}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("description")),
        "{body}"
    );
    let mut spec = service_spec();
    spec["env"] = json!({"GREETING": "a\u{0}b"});
    let (status, body) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "nul", "spec": spec}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
}

/// The ETag and body version of an application, read together.
async fn read_version(api: &support::Api, path: &str) -> (String, i64) {
    let response = must(api.request(Method::GET, path).send().await);
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = must(response.json().await);
    let version = body["version"].as_i64().unwrap_or(-1);
    assert_eq!(etag, format!("\"{version}\""), "ETag and body disagree");
    (etag, version)
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_updates_from_one_version_one_wins_and_the_rest_are_refused(pool: PgPool) {
    let server = start(pool.clone()).await;
    let dev = server.api("dev").await;
    let path = "/api/v1/tenants/acme/environments/dev/applications/hello";
    let (etag, version) = read_version(&dev, path).await;
    let (_, before) = dev.get(&format!("{path}/revisions")).await;
    let revisions_before = before["items"].as_array().map_or(0, Vec::len);

    let attempts = (0..50).map(|i| {
        let mut spec = service_spec();
        spec["env"] = json!({"ATTEMPT": i.to_string()});
        dev.request(Method::PUT, path)
            .header("if-match", &etag)
            .json(&json!({"spec": spec}))
            .send()
    });
    let mut won = Vec::new();
    let mut refused = 0;
    for (i, response) in futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .enumerate()
    {
        let response = must(response);
        let status = response.status();
        let body: serde_json::Value = must(response.json().await);
        match status {
            StatusCode::OK => won.push((i, body)),
            StatusCode::PRECONDITION_FAILED => {
                assert_eq!(body["error"], "version_mismatch", "{body}");
                let message = body["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(&format!("since version {version}"))
                        && message.contains("by dev"),
                    "{message}"
                );
                refused += 1;
            }
            other => panic!("attempt {i}: {other} {body}"),
        }
    }
    assert_eq!((won.len(), refused), (1, 49), "exactly one update wins");
    let (winner, body) = &won[0];
    assert_eq!(body["spec"]["env"]["ATTEMPT"], winner.to_string());
    // The winner's change is what is stored, as one new revision; nothing else landed.
    let (_, after) = dev.get(&format!("{path}/revisions")).await;
    assert_eq!(
        after["items"].as_array().map_or(0, Vec::len),
        revisions_before + 1
    );
    assert_eq!(
        after["items"][0]["spec"]["env"]["ATTEMPT"],
        winner.to_string()
    );
    let (new_etag, new_version) = read_version(&dev, path).await;
    assert!(new_version > version);
    assert_eq!(body["version"], new_version);

    // A stale version refuses scaling, stopping and deleting too, and changes nothing.
    let stale = dev
        .request(Method::PUT, &format!("{path}/replicas"))
        .json(&json!({"replicas": 3, "version": version}))
        .send();
    assert_eq!(must(stale.await).status(), StatusCode::PRECONDITION_FAILED);
    let stale = dev
        .request(Method::POST, &format!("{path}/stop"))
        .header("if-match", &etag)
        .send();
    assert_eq!(must(stale.await).status(), StatusCode::PRECONDITION_FAILED);
    let stale = dev
        .request(Method::DELETE, path)
        .header("if-match", &etag)
        .send();
    assert_eq!(must(stale.await).status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(read_version(&dev, path).await.1, new_version);
    let (_, app) = dev.get(path).await;
    assert_eq!(app["run_state"], "running");

    // What cannot be a version of ours is a malformed header, refused by name; a
    // header and a body that disagree are the client's contradiction.
    let junk = dev
        .request(Method::DELETE, path)
        .header("if-match", "\"abc\"")
        .send();
    let junk = must(junk.await);
    assert_eq!(junk.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = must(junk.json().await);
    assert_eq!(
        (body["error"].as_str(), body["field"].as_str()),
        (Some("invalid_header"), Some("If-Match"))
    );
    let non_ascii = must(reqwest::header::HeaderValue::from_bytes(b"\xc2\x84"));
    let junk = dev
        .request(Method::DELETE, path)
        .header("if-match", non_ascii)
        .send();
    assert_eq!(must(junk.await).status(), StatusCode::BAD_REQUEST);
    let (status, body) = {
        let response = must(
            dev.request(Method::PUT, &format!("{path}/replicas"))
                .header("if-match", &new_etag)
                .json(&json!({"replicas": 2, "version": version}))
                .send()
                .await,
        );
        (
            response.status(),
            must(response.json::<serde_json::Value>().await),
        )
    };
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("version"))
    );

    // With the current version, every change goes through; `*` matches any version.
    let scale = dev
        .request(Method::PUT, &format!("{path}/replicas"))
        .header("if-match", &new_etag)
        .json(&json!({"replicas": 2}))
        .send();
    assert_eq!(must(scale.await).status(), StatusCode::NO_CONTENT);
    let (etag, _) = read_version(&dev, path).await;
    assert_ne!(etag, new_etag, "scaling moves the version on");
    let delete = dev
        .request(Method::DELETE, path)
        .header("if-match", "*")
        .send();
    assert_eq!(must(delete.await).status(), StatusCode::NO_CONTENT);
}

async fn apply_manifest(api: &support::Api, text: String) -> (StatusCode, serde_json::Value) {
    let response = must(
        api.request(Method::POST, "/api/v1/tenants/acme/manifests")
            .header("content-type", "application/yaml")
            .body(text)
            .send()
            .await,
    );
    let status = response.status();
    (status, must(response.json::<serde_json::Value>().await))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_manifest_is_applied_whole_or_not_at_all(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let apply = |text: String| apply_manifest(&dev, text);
    let doc = |name: &str, env: &str| {
        format!(
            "apiVersion: paas/v1\nkind: Application\nmetadata: {{name: {name}, environment: {env}}}\nspec: {{command: sh, args: [\"-c\", \"sleep 60\"]}}\n"
        )
    };
    let exists = |name: &'static str| {
        let dev = &dev;
        async move {
            dev.get(&format!(
                "/api/v1/tenants/acme/environments/dev/applications/{name}"
            ))
            .await
            .0 == StatusCode::OK
        }
    };

    // The second document is in prod, which a developer may not change: nothing is
    // written, not even the first document's application.
    let (status, body) = apply(format!(
        "{}---\n{}",
        doc("first", "dev"),
        doc("second", "prod")
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!exists("first").await, "the first document was applied");

    // A change to an existing application is rolled back with the rest.
    let (status, _) = apply(doc("first", "dev")).await;
    assert_eq!(status, StatusCode::OK);
    let changed = doc("first", "dev").replace("sleep 60", "sleep 61");
    let (status, body) = apply(format!("{changed}---\n{}", doc("Bad", "dev"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "documents[1].metadata.name", "{body}");
    let (_, app) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/first")
        .await;
    assert_eq!(app["current_revision"], 1, "{app}");

    // Errors name the document and the field as the manifest spells them.
    let (status, body) = apply(format!("{}---\n{}", doc("a", "dev"), doc("b", "nowhere"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "documents[1].metadata.environment", "{body}");
    let (status, body) = apply(format!(
        "{}---\n{}",
        doc("twice", "dev"),
        doc("twice", "dev")
    ))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "documents[1].metadata.name", "{body}");
    let (status, body) =
        apply(doc("x", "dev").replace("environment: dev", "environment: dev, team: a")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "documents[0].metadata.team", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("team")),
        "{body}"
    );
    assert!(!exists("a").await && !exists("twice").await && !exists("x").await);

    // At most 100 documents.
    let many: Vec<String> = (0..101).map(|i| doc(&format!("app{i}"), "dev")).collect();
    let (status, body) = apply(many.join("---\n")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["field"], "documents", "{body}");
    assert!(!exists("app0").await);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_method_a_path_does_not_have_is_a_405_naming_those_it_has(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    for (method, path, allow) in [
        (
            Method::PATCH,
            "/api/v1/tenants/acme/environments/dev/applications/hello",
            "DELETE, GET, PUT",
        ),
        (
            Method::DELETE,
            "/api/v1/tenants/acme/applications",
            "GET, POST",
        ),
        (Method::GET, "/api/v1/tenants/acme/manifests", "POST"),
        (Method::POST, "/api/v1/me", "GET"),
    ] {
        let response = must(dev.request(method.clone(), path).send().await);
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let header = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(header, allow, "{method} {path}");
        let body: serde_json::Value = must(response.json().await);
        assert_eq!(body["error"], "method_not_allowed");
    }
    let (status, body) = dev.get("/api/v1/no/such/route").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// The value of the edit form's hidden `version`.
fn form_version(page: &str) -> String {
    let form = page
        .split("id=\"edit-app-form\"")
        .nth(1)
        .unwrap_or_default();
    let marker = "name=\"version\" value=\"";
    form.find(marker)
        .map(|i| &form[i + marker.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_console_form_saved_after_someone_else_changed_the_app_says_who_and_keeps_the_input(
    pool: PgPool,
) {
    let server = start(pool).await;
    let browser = server.browser("dev").await;
    let page_path = "/t/acme/environments/dev/apps/hello";
    let (_, page) = browser.get(page_path).await;
    let opened = form_version(&page);
    assert!(!opened.is_empty(), "the edit form carries the version");

    // Meanwhile the tenant admin changes the application through the API.
    let tadmin = server.api("tadmin").await;
    let (status, _) = tadmin
        .put(
            "/api/v1/tenants/acme/environments/dev/applications/hello",
            json!({"spec": service_spec(), "description": "changed by the admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let edit = |version: String| {
        let browser = &browser;
        async move {
            browser
                .post_form(
                    page_path,
                    &[
                        ("description", "my edit"),
                        ("kind", "service"),
                        ("command", "python3"),
                        ("args", "-m\nhttp.server"),
                        ("replicas", "2"),
                        ("cpu_millis", "100"),
                        ("memory_mib", "128"),
                        ("serves_http", "true"),
                        ("version", &version),
                    ],
                    true,
                )
                .await
        }
    };
    let (status, page) = edit(opened.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("class=\"alert error\"") && page.contains("by tadmin"),
        "the page says who changed the application: {page}"
    );
    assert!(
        page.contains("value=\"my edit\""),
        "the user's input is kept"
    );
    let now = form_version(&page);
    assert_ne!(now, opened, "the form now holds the current version");
    let (_, app) = tadmin
        .get("/api/v1/tenants/acme/environments/dev/applications/hello")
        .await;
    assert_eq!(
        app["description"], "changed by the admin",
        "nothing was overwritten"
    );

    // Saving again, knowingly, goes through.
    let (status, _) = edit(now).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, app) = tadmin
        .get("/api/v1/tenants/acme/environments/dev/applications/hello")
        .await;
    assert_eq!(app["description"], "my edit");

    // The buttons carry the version too: a stale stop is refused, not applied.
    let (status, page) = browser
        .post_form(
            &format!("{page_path}/action/stop"),
            &[("version", &opened)],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{page}");
    let (_, app) = tadmin
        .get("/api/v1/tenants/acme/environments/dev/applications/hello")
        .await;
    assert_eq!(app["run_state"], "running");
}

/// Sends a request with `If-Match`; returns the status, the ETag and the JSON body.
async fn with_if_match(
    api: &support::Api,
    method: Method,
    path: &str,
    if_match: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, String, serde_json::Value) {
    let mut request = api.request(method, path).header("if-match", if_match);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = must(request.send().await);
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = must(response.text().await);
    (
        status,
        etag,
        serde_json::from_str(&text).unwrap_or_default(),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn members_users_quotas_and_secrets_refuse_a_change_made_against_an_old_version(
    pool: PgPool,
) {
    let server = start(pool).await;
    let tadmin = server.api("tadmin").await;
    let admin = server.api("admin").await;

    // A membership: its version is in the list; a role change moves it on.
    let (_, members) = tadmin.get("/api/v1/tenants/acme/members").await;
    let version_of = |members: &serde_json::Value, who: &str| {
        members["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["username"] == who)
            .and_then(|m| m["version"].as_i64())
            .unwrap_or(-1)
    };
    let opened = format!("\"{}\"", version_of(&members, "dev"));
    let path = "/api/v1/tenants/acme/members/dev";
    let (status, etag, _) = with_if_match(
        &tadmin,
        Method::PUT,
        path,
        &opened,
        Some(json!({"role": "ops"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(etag, opened, "a role change moves the version on");
    let (status, _, body) = with_if_match(
        &tadmin,
        Method::PUT,
        path,
        &opened,
        Some(json!({"role": "developer"})),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("by tadmin")),
        "{body}"
    );
    let (status, _, _) = with_if_match(&tadmin, Method::DELETE, path, &opened, None).await;
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "a stale removal changes nothing"
    );
    let (_, members) = tadmin.get("/api/v1/tenants/acme/members").await;
    assert_eq!(format!("\"{}\"", version_of(&members, "dev")), etag);
    let (status, _, _) = with_if_match(
        &tadmin,
        Method::PUT,
        path,
        &etag,
        Some(json!({"role": "developer"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A user: disabling moves the version on; a stale enable is refused.
    let (_, users) = admin.get("/api/v1/admin/users").await;
    let ops_version = users["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["username"] == "ops")
        .and_then(|u| u["version"].as_i64())
        .unwrap_or(-1);
    let opened = format!("\"{ops_version}\"");
    let path = "/api/v1/admin/users/ops";
    let (status, _, _) = with_if_match(
        &admin,
        Method::PATCH,
        path,
        &opened,
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = with_if_match(
        &admin,
        Method::PATCH,
        path,
        &opened,
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");

    // A quota: the tenant's version, read with the quota.
    let response = must(
        tadmin
            .request(Method::GET, "/api/v1/tenants/acme/quota")
            .send()
            .await,
    );
    let opened = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = "/api/v1/admin/tenants/acme/quota";
    let (status, _, _) = with_if_match(
        &admin,
        Method::PUT,
        path,
        &opened,
        Some(json!({"max_instances": 50})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = with_if_match(
        &admin,
        Method::PUT,
        path,
        &opened,
        Some(json!({"max_instances": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (_, quota) = tadmin.get("/api/v1/tenants/acme/quota").await;
    assert_eq!(quota["quota"]["max_instances"], 50);

    // A secret: its own version.
    let dev = server.api("dev").await;
    let path = "/api/v1/tenants/acme/environments/dev/applications/hello/secrets/TOKEN";
    let (status, first, _) =
        with_if_match(&dev, Method::PUT, path, "*", Some(json!({"value": "one"}))).await;
    assert_eq!((status, first.as_str()), (StatusCode::OK, "\"1\""));
    let (status, _, _) = with_if_match(
        &dev,
        Method::PUT,
        path,
        &first,
        Some(json!({"value": "two"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = with_if_match(&dev, Method::DELETE, path, &first, None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_console_removes_a_secret_only_at_the_version_its_page_showed(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let browser = server.browser("dev").await;
    let api_path = "/api/v1/tenants/acme/environments/dev/applications/hello/secrets/TOKEN";
    for value in ["one", "two"] {
        let (status, _) = dev.put(api_path, json!({"value": value})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let remove = "/t/acme/environments/dev/apps/hello/secrets/TOKEN/delete";
    let (status, page) = browser.post_form(remove, &[("version", "1")], true).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("changed since version 1") && page.contains("by dev"),
        "{page}"
    );
    let (_, secrets) = dev
        .get("/api/v1/tenants/acme/environments/dev/applications/hello/secrets")
        .await;
    assert_eq!(secrets["items"][0]["version"], 2, "nothing was removed");
    let (status, _) = browser.post_form(remove, &[("version", "2")], true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_log_pages_backwards_and_filters_by_target_in_each_scope(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    for name in ["alpha", "beta", "gamma"] {
        let (status, _) = dev
            .post(
                "/api/v1/tenants/acme/applications",
                json!({"environment": "dev", "name": name, "spec": service_spec()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let ids = |body: &serde_json::Value| -> Vec<i64> {
        body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["id"].as_i64())
            .collect()
    };
    // Tenant admins read the tenant's log.
    let reader = server.api("tadmin").await;
    let (_, first) = reader
        .get("/api/v1/tenants/acme/audit?action=application.create&limit=2")
        .await;
    let page = ids(&first);
    assert_eq!(page.len(), 2);
    assert!(page[0] > page[1], "newest first");
    let (_, next) = reader
        .get(&format!(
            "/api/v1/tenants/acme/audit?action=application.create&limit=2&before={}",
            page[1]
        ))
        .await;
    assert!(ids(&next).iter().all(|id| *id < page[1]), "{next}");
    assert!(
        !ids(&next).is_empty(),
        "the sample application's creation is older"
    );
    let (_, beta) = reader.get("/api/v1/tenants/acme/audit?target=BET").await;
    let targets: Vec<&str> = beta["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert_eq!(targets, ["dev/beta"], "target matches ignoring case");
    // The platform log holds no tenant's entries, and a tenant's none of the platform's.
    let admin = server.api("admin").await;
    let (_, platform) = admin.get("/api/v1/admin/audit?limit=200").await;
    let actions: Vec<&str> = platform["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(!actions.is_empty());
    assert!(
        actions.iter().all(|a| !a.starts_with("application.")),
        "{actions:?}"
    );
    let (status, _) = reader.get("/api/v1/tenants/acme/audit?limit=201").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

const POLICY_PATH: &str = "/api/v1/tenants/acme/environments/dev/applications/hello/autoscaling";

fn weekday_policy() -> serde_json::Value {
    json!({
        "min": 1, "max": 6, "time_zone": "Europe/Berlin",
        "rules": [{"metric": {"type": "cpu"}, "target": 60}],
        "bands": [{"name": "office hours", "min": 2, "max": 6,
                   "when": {"type": "periodic", "days_of_week": ["Mon", "Tue", "Wed", "Thu", "Fri"],
                            "start_time": "08:00", "end_time": "18:00"}}]
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tenant_admin_sets_an_autoscaling_policy_others_read_it_and_stale_or_hostile_ones_are_refused(
    pool: PgPool,
) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let tadmin = server.api("tadmin").await;
    let (status, body) = dev.get(POLICY_PATH).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Developers read; only tenant admins write.
    let (status, body) = dev.put(POLICY_PATH, weekday_policy()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (status, body) = tadmin.put(POLICY_PATH, weekday_policy()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(
        body["policy"]["behavior"]["scale_down"]["stabilization_s"],
        300
    );
    let (status, body) = dev.get(POLICY_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["policy"]["bands"][0]["name"], "office hours");

    // A change against an old version is refused and names who changed it.
    let mut changed = weekday_policy();
    changed["max"] = json!(8);
    let response = must(
        tadmin
            .request(Method::PUT, POLICY_PATH)
            .header("If-Match", "\"1\"")
            .json(&changed)
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some("\"2\"")
    );
    let stale = must(
        tadmin
            .request(Method::PUT, POLICY_PATH)
            .header("If-Match", "\"1\"")
            .json(&weekday_policy())
            .send()
            .await,
    );
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let body: serde_json::Value = must(stale.json().await);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("last by tadmin"),
        "{body}"
    );

    // Hostile policies: each a 422 naming the field.
    let cases = [
        (
            json!({"min": 1, "max": 4, "time_zone": "Moon/Base"}),
            "time_zone",
        ),
        (json!({"min": 5, "max": 4}), "min"),
        (
            json!({"min": 1, "max": 4, "bands": [{"name": "x", "min": 1, "max": 2,
            "when": {"type": "cron", "expression": "0 0 31 2 *", "duration_minutes": 5}}]}),
            "bands[0].when.expression",
        ),
        (
            json!({"min": 1, "max": 4, "rules": [{"metric": {"type": "promql", "query": "sum(rate(x[1m]))"}, "target": 5}]}),
            "rules[0].metric.query",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [
            {"name": "a", "min": 1, "max": 2, "when": {"type": "periodic", "start_time": "08:00", "end_time": "10:00"}},
            {"name": "b", "min": 1, "max": 3, "when": {"type": "periodic", "start_time": "09:00", "end_time": "11:00"}}]}),
            "bands[1]",
        ),
        (json!({"min": 1, "max": 4, "surprise": true}), "surprise"),
    ];
    for (policy, field) in cases {
        let (status, body) = tadmin.put(POLICY_PATH, policy.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{policy}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(field),
            "{policy}: {body}"
        );
    }
    // A cron job cannot be autoscaled.
    let (status, body) = tadmin
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "nightly", "spec": {"kind": "cronjob", "command": "true", "schedule": "0 3 * * *"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = tadmin
        .put(
            "/api/v1/tenants/acme/environments/dev/applications/nightly/autoscaling",
            json!({"min": 1, "max": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"].as_str().unwrap_or("").contains("kind"),
        "{body}"
    );

    // A band beyond the tenant's quota.
    let admin = server.api("admin").await;
    let (status, body) = admin
        .put(
            "/api/v1/admin/tenants/acme/quota",
            json!({"max_instances": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = tadmin.put(POLICY_PATH, weekday_policy()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("quota"),
        "{body}"
    );
    let (status, _) = tadmin.delete(POLICY_PATH).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tadmin.delete(POLICY_PATH).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = tadmin.get("/api/v1/tenants/acme/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["action"].as_str()).collect())
        .unwrap_or_default();
    for action in [
        "autoscaling.create",
        "autoscaling.update",
        "autoscaling.delete",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_draft_is_previewed_for_a_dst_week_and_replayed_before_it_is_saved(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    // The week of 2027-03-28, when Berlin moves from +01:00 to +02:00.
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/preview"),
            json!({"policy": weekday_policy(), "from": "2027-03-25T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), 672);
    assert_eq!(body["dst_transitions"][0]["at"], "2027-03-28T01:00:00Z");
    assert_eq!(body["dst_transitions"][0]["to_offset"], "+02:00");
    // Friday 08:00 in Berlin (+01:00) is 07:00 UTC; Monday 08:00 (+02:00) is 06:00 UTC.
    let at = |t: &str| {
        points
            .iter()
            .find(|p| p["at"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            at("2027-03-26T06:45:00Z")["min"].as_i64(),
            at("2027-03-26T07:00:00Z")["min"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(at("2027-03-29T06:00:00Z")["band"], "office hours");
    assert_eq!(at("2027-03-29T05:45:00Z")["band"], serde_json::Value::Null);
    assert_eq!(
        at("2027-03-27T12:00:00Z")["band"],
        serde_json::Value::Null,
        "a Saturday"
    );

    // A draft with two overlapping bands: saving refuses it, the preview shows it.
    let mut overlapping = weekday_policy();
    if let Some(bands) = overlapping["bands"].as_array_mut() {
        bands.push(json!({"name": "lunch", "min": 3, "max": 6, "when": {"type": "periodic", "start_time": "12:00", "end_time": "13:00"}}));
    }
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/preview"),
            json!({"policy": overlapping, "from": "2027-03-25T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["conflicts"][0], json!(["lunch", "office hours"]));

    // No stored policy and no draft: nothing to preview.
    let (status, _) = dev.post(&format!("{POLICY_PATH}/preview"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What-if: 600 rps arriving on 1 instance of a 100 rps target.
    let policy = json!({"min": 1, "max": 10, "rules": [{"metric": {"type": "requests_per_second"}, "target": 100}]});
    let samples: Vec<serde_json::Value> = (0..30)
        .map(|i| json!({"at": format!("2026-11-27T10:{:02}:{:02}Z", i * 5 / 60, i * 5 % 60), "values": [if i >= 2 { 600.0 } else { 50.0 }]}))
        .collect();
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/what-if"),
            json!({"policy": policy, "start": 1, "samples": samples}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counts: Vec<i64> = body["points"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["count"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(&counts[..3], &[1, 1, 5]);
    assert_eq!(counts.last(), Some(&6));
    // The same series as CSV; a bad line is named.
    let csv: String = std::iter::once("at,rps".to_owned())
        .chain(
            samples
                .iter()
                .map(|s| format!("{},{}", s["at"].as_str().unwrap_or(""), s["values"][0])),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/what-if"),
            json!({"policy": policy, "start": 1, "csv": csv}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let from_csv: Vec<i64> = body["points"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["count"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(from_csv, counts);
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/what-if"),
            json!({"policy": policy, "start": 1, "csv": "2026-11-27T10:00:00Z,1\nnoon,2"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"].as_str().unwrap_or("").contains("line 2"),
        "{body}"
    );
    // Samples out of order, or the wrong number of values, are named.
    let (status, body) = dev
        .post(&format!("{POLICY_PATH}/what-if"), json!({"policy": policy, "start": 1, "samples": [
            {"at": "2026-11-27T10:00:05Z", "values": [1.0]}, {"at": "2026-11-27T10:00:00Z", "values": [1.0]}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("samples[1].at"),
        "{body}"
    );
    let (status, body) = dev
        .post(
            &format!("{POLICY_PATH}/what-if"),
            json!({"policy": policy, "start": 1, "samples": [
            {"at": "2026-11-27T10:00:05Z", "values": [1.0, 2.0]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("samples[0].values"),
        "{body}"
    );
    let (status, body) = dev.get(&format!("{POLICY_PATH}/decisions?limit=0")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = dev.get(&format!("{POLICY_PATH}/decisions")).await;
    assert_eq!(
        (status, body["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

const PROD_API: &str = "/api/v1/tenants/acme/environments/prod/applications/api";

/// A user of globex only, as ops: an approver of another tenant.
async fn foreign_ops(server: &support::Server) -> support::Api {
    let admin = server.api("admin").await;
    let password = "gail's long password";
    let (status, body) = admin
        .post(
            "/api/v1/admin/users",
            json!({"username": "gail", "display_name": "Gail", "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tadmin = server.api("tadmin").await;
    let (status, body) = tadmin
        .put(
            "/api/v1/tenants/globex/members/gail",
            json!({"role": "ops"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .anonymous()
        .post(
            "/api/v1/auth/token",
            json!({"username": "gail", "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    support::Api {
        token: body["token"].as_str().map(str::to_owned),
        ..server.anonymous()
    }
}

fn states(list: &serde_json::Value) -> Vec<(i64, String)> {
    list["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["id"].as_i64().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_change_in_prod_waits_for_an_ops_approval_the_requester_cannot_give(pool: PgPool) {
    let server = start(pool).await;
    let (dev, ops, tadmin) = (
        server.api("dev").await,
        server.api("ops").await,
        server.api("tadmin").await,
    );
    let gail = foreign_ops(&server).await;
    let (status, body) = ops
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "prod", "name": "api", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["released_revision"], 1);
    let mut spec = service_spec();
    spec["env"] = json!({"COLOUR": "blue"});
    let (status, body) = ops.put(PROD_API, json!({"spec": spec})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The new spec is the newest revision, but revision 1 still runs.
    assert_eq!(
        (
            body["current_revision"].as_i64(),
            body["released_revision"].as_i64()
        ),
        (Some(2), Some(1))
    );

    let (_, list) = ops.get(&format!("{PROD_API}/releases")).await;
    let [(id, state)] = &states(&list)[..] else {
        panic!("one release: {list}");
    };
    assert_eq!(state, "pending_approval");
    let release = format!("{PROD_API}/releases/{id}");
    let (_, detail) = ops.get(&release).await;
    assert_eq!(detail["reason"], "waits for 1 approval", "{detail}");
    assert_eq!(detail["requested_by"], "ops");
    assert_eq!(
        (
            detail["from_revision"].as_i64(),
            detail["to_revision"].as_i64()
        ),
        (Some(1), Some(2))
    );
    // The requester may not approve, so the actions offered to them leave it out.
    assert!(
        !detail["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("approve"))),
        "{detail}"
    );

    // The requester, a developer and another tenant's ops are all refused.
    let (status, body) = ops.post(&format!("{release}/approve"), json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("someone else"),
        "{body}"
    );
    let (status, _) = dev.post(&format!("{release}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let foreign =
        format!("/api/v1/tenants/acme/environments/prod/applications/api/releases/{id}/approve");
    assert_eq!(
        gail.post(&foreign, json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    // The ops queue: gail sees nothing of acme; ops see the pending release first.
    let (_, queue) = gail.get("/api/v1/releases?state=pending_approval").await;
    assert_eq!(states(&queue), []);
    let (_, queue) = ops.get("/api/v1/releases?state=pending_approval").await;
    assert_eq!(states(&queue), [(*id, "pending_approval".to_owned())]);
    let (status, body) = ops.get("/api/v1/releases?state=sideways").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("state"))
    );

    // A tenant admin approves: the release starts.
    let (status, body) = tadmin
        .post(
            &format!("{release}/approve"),
            json!({"reason": "reviewed the diff"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "progressing");
    assert_eq!(body["approvals"], json!(["tadmin"]));
    let kinds: Vec<&str> = body["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["requested", "waiting", "approved", "started"]);
    let (status, body) = tadmin.post(&format!("{release}/approve"), json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{body}"
    );

    // Ops pause, resume and abort it; a developer may do none of it.
    assert_eq!(
        dev.post(&format!("{release}/pause"), json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    for (action, expected) in [
        ("pause", "paused"),
        ("resume", "progressing"),
        ("abort", "aborted"),
    ] {
        let (status, body) = ops
            .call(Method::POST, &format!("{release}/{action}"), None)
            .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (StatusCode::OK, Some(expected)),
            "{action}: {body}"
        );
    }
    let (status, _) = ops.post(&format!("{release}/resume"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = ops.post(&format!("{release}/teleport"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = ops
        .post(&format!("{release}/pause"), json!({"reason": 5}))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
    );
    // Each action is in the audit log, with who.
    let (_, audit) = tadmin
        .get("/api/v1/tenants/acme/audit?action=release.")
        .await;
    let mut actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["action"].as_str().unwrap_or("").to_owned(),
                        e["actor"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    actions.sort();
    assert_eq!(
        actions,
        [
            ("release.abort".to_owned(), "ops".to_owned()),
            ("release.approve".to_owned(), "tadmin".to_owned()),
            ("release.pause".to_owned(), "ops".to_owned()),
            ("release.resume".to_owned(), "ops".to_owned()),
        ]
    );
    // A developer may request a spec change in prod (it waits for approval like any
    // other), but not change what is not released, such as the description.
    let mut requested = service_spec();
    requested["env"] = json!({"COLOUR": "green"});
    let (status, body) = dev.put(PROD_API, json!({"spec": requested})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = dev.get(&format!("{PROD_API}/releases")).await;
    assert_eq!(list["items"][0]["state"], "pending_approval");
    assert_eq!(list["items"][0]["requested_by"], "dev");
    let (status, _) = dev
        .put(
            PROD_API,
            json!({"spec": requested, "description": "mine now"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rollback_is_a_new_revision_of_the_earlier_spec_that_supersedes_the_open_release(
    pool: PgPool,
) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let path = "/api/v1/tenants/acme/environments/dev/applications/hello";
    let (_, before) = dev.get(path).await;
    let mut spec = before["spec"].clone();
    spec["env"] = json!({"COLOUR": "green"});
    let (status, body) = dev.put(path, json!({"spec": spec})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // No approval in dev: the release progresses at once.
    let (_, list) = dev.get(&format!("{path}/releases")).await;
    let [(first, state)] = &states(&list)[..] else {
        panic!("one release: {list}");
    };
    assert_eq!(state, "progressing");

    let (status, body) = dev
        .post(&format!("{path}/releases"), json!({"revision": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            body["cause"].as_str(),
            body["from_revision"].as_i64(),
            body["to_revision"].as_i64(),
            body["state"].as_str()
        ),
        (Some("rollback"), Some(1), Some(3), Some("progressing")),
        "{body}"
    );
    let (_, revisions) = dev.get(&format!("{path}/revisions")).await;
    assert_eq!(revisions["items"][0]["spec"], before["spec"]);
    let (_, old) = dev.get(&format!("{path}/releases/{first}")).await;
    assert_eq!(
        (old["state"].as_str(), old["reason"].as_str()),
        (Some("aborted"), Some("superseded by revision 3")),
        "{old}"
    );
    // Bad requests name the field.
    for (body, field) in [
        (json!({"revision": 99}), "revision"),
        (
            json!({"revision": 1, "strategy": {"type": "rolling", "max_surge": "300%"}}),
            "strategy.max_surge",
        ),
        (json!({"revision": "one"}), "revision"),
        (json!({"revision": 1, "extra": true}), "extra"),
    ] {
        let (status, got) = dev.post(&format!("{path}/releases"), body.clone()).await;
        assert_eq!(
            (status, got["field"].as_str().map(|f| f.contains(field))),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(true)),
            "{body}: {got}"
        );
    }
    // A release of another tenant's id is not found here.
    assert_eq!(
        dev.get(&format!("{path}/releases/9999")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        dev.get(&format!("{path}/releases/x")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_freeze_holds_an_approved_release_and_an_expired_request_cannot_be_approved(
    pool: PgPool,
) {
    let server = start(pool.clone()).await;
    let (dev, ops, tadmin) = (
        server.api("dev").await,
        server.api("ops").await,
        server.api("tadmin").await,
    );
    let policy_path = "/api/v1/tenants/acme/environments/prod/release-policy";
    let (status, current) = ops.get(policy_path).await;
    assert_eq!(
        (status, current["version"].as_i64()),
        (StatusCode::OK, Some(0))
    );
    assert_eq!(current["policy"]["approval"]["required"], true);
    let now = chrono::Utc::now();
    let window = json!({"name": "launch", "when": {"type": "scheduled",
        "start": (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string(),
        "end": (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string()}});
    let policy = json!({"approval": {"required": true, "valid_for_s": 600}, "freezes": [window]});
    // Only tenant admins set it; bad policies name the field; a stale version is refused.
    assert_eq!(
        ops.put(policy_path, policy.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = tadmin
        .put(
            policy_path,
            json!({"approval": {"required": true, "approvals": 3}}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("approval.approvals"))
    );
    let (status, body) = tadmin.put(policy_path, policy.clone()).await;
    assert_eq!(
        (status, body["version"].as_i64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    let stale = tadmin
        .request(Method::PUT, policy_path)
        .header("If-Match", "\"0\"")
        .json(&policy)
        .send()
        .await;
    assert_eq!(must(stale).status(), StatusCode::PRECONDITION_FAILED);
    let _ = dev;

    must_create_prod_app(&ops).await;
    let mut spec = service_spec();
    spec["env"] = json!({"COLOUR": "red"});
    assert_eq!(
        ops.put(PROD_API, json!({"spec": spec})).await.0,
        StatusCode::OK
    );
    let (_, list) = ops.get(&format!("{PROD_API}/releases")).await;
    let [(id, _)] = &states(&list)[..] else {
        panic!("one release: {list}");
    };
    let release = format!("{PROD_API}/releases/{id}");
    let (status, body) = tadmin.post(&format!("{release}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Approved, but the freeze holds it.
    assert_eq!(body["state"], "approved");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or("")
            .contains("freeze window 'launch'"),
        "{body}"
    );
    must(platform_core::platform::releases::supervise(&pool).await);
    assert_eq!(ops.get(&release).await.1["state"], "approved");
    // An emergency: only a platform administrator may start it through the freeze, and
    // only saying why. Here the administrator does not, and the freeze is lifted.
    let override_path = format!("/api/v1/admin/releases/{id}/override-freeze");
    let (status, _) = tadmin
        .post(
            &override_path,
            json!({"reason": "the shop is down for everyone"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = server.api("admin").await;
    let (status, body) = admin.post(&override_path, json!({"reason": "now"})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
    );
    // The freeze is lifted: the next look at waiting releases starts it.
    let (status, _) = tadmin
        .put(
            policy_path,
            json!({"approval": {"required": true, "valid_for_s": 600}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    must(platform_core::platform::releases::supervise(&pool).await);
    let (_, body) = ops.get(&release).await;
    assert_eq!(body["state"], "progressing", "{body}");
    assert_eq!(
        body["timeline"]
            .as_array()
            .and_then(|t| t.last())
            .map(|e| e["kind"].clone()),
        Some(json!("started"))
    );

    // A request older than the policy's validity cannot be approved and expires.
    spec["env"] = json!({"COLOUR": "violet"});
    assert_eq!(
        ops.put(PROD_API, json!({"spec": spec})).await.0,
        StatusCode::OK
    );
    let (_, list) = ops.get(&format!("{PROD_API}/releases")).await;
    let (newest, state) = states(&list)[0].clone();
    assert_eq!(state, "pending_approval");
    must(
        sqlx::query(
            "UPDATE releases SET requested_at = now() - interval '11 minutes' WHERE id = $1",
        )
        .bind(newest)
        .execute(&pool)
        .await,
    );
    let newest_path = format!("{PROD_API}/releases/{newest}");
    let (status, body) = tadmin
        .post(&format!("{newest_path}/approve"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap_or("").contains("expired"),
        "{body}"
    );
    must(platform_core::platform::releases::supervise(&pool).await);
    assert_eq!(ops.get(&newest_path).await.1["state"], "expired");
}

async fn must_create_prod_app(ops: &support::Api) {
    let (status, body) = ops
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "prod", "name": "api", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_promotion_from_test_to_prod_takes_the_running_spec_and_keeps_prods_overrides(
    pool: PgPool,
) {
    let server = start(pool).await;
    let (ops, tadmin) = (server.api("ops").await, server.api("tadmin").await);
    let mut test_spec = service_spec();
    test_spec["env"] = json!({"DB": "test-db"});
    test_spec["replicas"] = json!(1);
    let mut prod_spec = service_spec();
    prod_spec["env"] = json!({"DB": "prod-db"});
    prod_spec["replicas"] = json!(3);
    for (env, spec) in [("test", &test_spec), ("prod", &prod_spec)] {
        let (status, body) = ops
            .post(
                "/api/v1/tenants/acme/applications",
                json!({"environment": env, "name": "api", "spec": spec}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A new artifact is released in test (no approval there): it runs there once its
    // release succeeds; until then prod would get what test runs now, revision 1.
    let test_api = "/api/v1/tenants/acme/environments/test/applications/api";
    let mut newer = test_spec.clone();
    newer["args"] = json!(["-m", "http.server", "--protocol", "HTTP/1.1"]);
    assert_eq!(
        ops.put(test_api, json!({"spec": newer})).await.0,
        StatusCode::OK
    );
    let (status, body) = ops
        .post(&format!("{PROD_API}/promote"), json!({"from": "test"}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{body}"
    );
    must(
        sqlx::query("UPDATE applications a SET released_revision = 2 FROM environments e WHERE e.id = a.environment_id AND e.name = 'test' AND a.name = 'api'")
            .execute(&server.pool)
            .await,
    );
    let (status, body) = ops
        .post(&format!("{PROD_API}/promote"), json!({"from": "test"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            body["cause"].as_str(),
            body["state"].as_str(),
            body["to_revision"].as_i64()
        ),
        (Some("promotion"), Some("pending_approval"), Some(2)),
        "{body}"
    );
    let (_, prod) = ops.get(PROD_API).await;
    assert_eq!(
        prod["spec"]["args"], newer["args"],
        "the artifact and command come from test"
    );
    assert_eq!(
        prod["spec"]["env"],
        json!({"DB": "prod-db"}),
        "prod keeps its variables"
    );
    assert_eq!(prod["spec"]["replicas"], 3, "prod keeps its replica count");
    let kinds: Vec<&str> = body["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"promoted"), "{kinds:?}");
    // The same promotion again has nothing to do; a bad source is named.
    let (status, _) = tadmin
        .post(&format!("{PROD_API}/promote"), json!({"from": "test"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for (from, field) in [("nowhere", "from"), ("prod", "from")] {
        let (status, body) = ops
            .post(&format!("{PROD_API}/promote"), json!({"from": from}))
            .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{from}: {body}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_platform_administrator_overrides_a_freeze_with_a_reason_for_an_emergency(pool: PgPool) {
    let server = start(pool).await;
    let (ops, tadmin, admin) = (
        server.api("ops").await,
        server.api("tadmin").await,
        server.api("admin").await,
    );
    let now = chrono::Utc::now();
    let window = json!({"name": "peak", "when": {"type": "scheduled",
        "start": (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string(),
        "end": (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string()}});
    let (status, _) = tadmin
        .put(
            "/api/v1/tenants/acme/environments/prod/release-policy",
            json!({"approval": {"required": true}, "freezes": [window]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    must_create_prod_app(&ops).await;
    let mut spec = service_spec();
    spec["env"] = json!({"FIX": "1"});
    assert_eq!(
        ops.put(PROD_API, json!({"spec": spec})).await.0,
        StatusCode::OK
    );
    let (_, list) = ops.get(&format!("{PROD_API}/releases")).await;
    let id = states(&list)[0].0;
    let release = format!("{PROD_API}/releases/{id}");
    assert_eq!(
        tadmin
            .post(&format!("{release}/approve"), json!({}))
            .await
            .1["state"],
        "approved"
    );
    let override_path = format!("/api/v1/admin/releases/{id}/override-freeze");
    let (status, body) = admin
        .post(
            &override_path,
            json!({"reason": "payments fail for everyone; hotfix"}),
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("progressing")),
        "{body}"
    );
    assert_eq!(body["actions"], json!([]));
    let (_, detail) = ops.get(&release).await;
    let last = detail["timeline"]
        .as_array()
        .and_then(|t| t.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str()),
        (Some("override"), Some("admin")),
        "{detail}"
    );
    assert!(
        last["message"]
            .as_str()
            .unwrap_or("")
            .contains("payments fail"),
        "{last}"
    );
    let (_, audit) = tadmin
        .get("/api/v1/tenants/acme/audit?action=release.override")
        .await;
    assert_eq!(audit["items"][0]["actor"], "admin", "{audit}");
    // Only a held release: again, it is progressing already.
    let (status, body) = admin
        .post(
            &override_path,
            json!({"reason": "payments fail for everyone; hotfix"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );
    assert_eq!(
        admin
            .post(
                "/api/v1/admin/releases/424242/override-freeze",
                json!({"reason": "a long enough reason"})
            )
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
