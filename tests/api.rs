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
    // The name is free again once the application is deleted.
    let (status, _) = dev
        .post(
            "/api/v1/tenants/acme/applications",
            json!({"environment": "dev", "name": "shop", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
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
