//! Security properties, each asserted over real HTTP: pinned token validation, CSRF on
//! every cookie-authenticated state change, escaping, tenant isolation on every route,
//! login rate limiting, and no 5xx for hostile input.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Api, Server, must, service_spec, start, start_with};

/// The current signing key, as an attacker with the database *and* the master key
/// would have it (the database alone holds only its sealed form).
async fn signing_key(server: &Server) -> (String, Vec<u8>) {
    let (kid, secret, sealed): (String, Option<Vec<u8>>, Vec<u8>) = must(
        sqlx::query_as("SELECT kid, secret, sealed FROM signing_keys WHERE retired_at IS NULL")
            .fetch_one(&server.pool)
            .await,
    );
    assert_eq!(secret, None, "a signing key is stored in clear");
    let opened = must(
        server
            .platform
            .master_key()
            .open(&sealed, &platform_core::auth::tokens::key_context(&kid)),
    );
    (kid, opened)
}

async fn valid_claims(server: &Server) -> Value {
    let token = server.token("dev").await;
    let payload = token.split('.').nth(1).unwrap_or_default();
    must(serde_json::from_slice(&must(
        URL_SAFE_NO_PAD.decode(payload),
    )))
}

fn sign(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    must(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret),
    ))
}

async fn status_with_token(server: &Server, token: &str) -> (StatusCode, Value) {
    let api = Api {
        token: Some(token.to_owned()),
        ..server.anonymous()
    };
    api.get("/api/v1/tenants/acme/applications").await
}

#[sqlx::test(migrations = "../migrations")]
async fn forged_and_invalid_tokens_are_refused_with_401(pool: PgPool) {
    let server = start(pool.clone()).await;
    let (kid, secret) = signing_key(&server).await;
    let claims = valid_claims(&server).await;
    let now = Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = claims.clone();
        if let (Some(c), Some(p)) = (c.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                c.insert(k.clone(), v.clone());
            }
        }
        c
    };

    // The genuine article works, so the refusals below are about what was changed.
    let genuine = sign(Algorithm::HS256, Some(&kid), &secret, &claims);
    assert_eq!(status_with_token(&server, &genuine).await.0, StatusCode::OK);

    let header_none =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut bad_signature = genuine.clone();
    bad_signature.pop();
    bad_signature.push(if genuine.ends_with('A') { 'B' } else { 'A' });
    let forged = [
        ("alg none", format!("{header_none}.{body}.")),
        (
            "another algorithm (HS512, same secret)",
            sign(Algorithm::HS512, Some(&kid), &secret, &claims),
        ),
        (
            "another algorithm (HS384, same secret)",
            sign(Algorithm::HS384, Some(&kid), &secret, &claims),
        ),
        ("bad signature", bad_signature),
        (
            "wrong secret",
            sign(
                Algorithm::HS256,
                Some(&kid),
                b"not the platform's secret at all",
                &claims,
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})),
            ),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(json!({"nbf": now + 3600})),
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(json!({"iss": "someone-else"})),
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(json!({"aud": "another-service"})),
            ),
        ),
        (
            "unknown kid",
            sign(Algorithm::HS256, Some("k-unknown"), &secret, &claims),
        ),
        ("no kid", sign(Algorithm::HS256, None, &secret, &claims)),
        (
            "no exp",
            sign(Algorithm::HS256, Some(&kid), &secret, &{
                let mut c = claims.clone();
                c.as_object_mut().map(|o| o.remove("exp"));
                c
            }),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in forged {
        let (status, body) = status_with_token(&server, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "invalid_token", "{what}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn state_changes_with_a_cookie_need_the_csrf_token(pool: PgPool) {
    let server = start(pool).await;
    let browser = server.browser("tadmin").await;
    assert!(!browser.csrf.is_empty());
    let form = [
        ("name", "staging"),
        ("description", "x"),
        ("protected", "false"),
    ];

    let (status, body) = browser
        .post_form("/t/acme/environments", &form, false)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("csrf_failed"));
    let mut wrong = form.to_vec();
    wrong.push(("_csrf", "forged"));
    assert_eq!(
        browser
            .post_form("/t/acme/environments", &wrong, false)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Cookie-authenticated JSON calls are held to the same rule.
    let response = must(
        browser
            .http
            .post(format!("{}/api/v1/tenants/acme/environments", server.base))
            .json(&json!({"name": "qa"}))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Logout is a state change too.
    assert_eq!(
        browser.post_form("/logout", &[], false).await.0,
        StatusCode::FORBIDDEN
    );

    // With the token, as a field or as htmx's header, the changes go through.
    assert_eq!(
        browser
            .post_form("/t/acme/environments", &form, true)
            .await
            .0,
        StatusCode::SEE_OTHER
    );
    let response = must(
        browser
            .http
            .post(format!("{}/api/v1/tenants/acme/environments", server.base))
            .header("X-CSRF-Token", &browser.csrf)
            .json(&json!({"name": "qa"}))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::CREATED);
    // The login form has its own CSRF check.
    let anonymous = must(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build(),
    );
    let response = must(
        anonymous
            .post(server.url("/login"))
            .form(&[("username", "dev"), ("password", server.password("dev"))])
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = "../migrations")]
async fn names_with_markup_render_escaped(pool: PgPool) {
    let server = start(pool).await;
    let admin = server.api("admin").await;
    let evil = "<script>alert('x')</script>";
    let (status, _) = admin
        .post(
            "/api/v1/admin/tenants",
            json!({"slug": "evil", "display_name": evil, "admin": "tadmin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let dev = server.api("dev").await;
    let (status, _) = dev
        .post("/api/v1/tenants/acme/applications", json!({"environment": "dev", "name": "xss", "description": evil, "spec": {"command": evil, "env": {"X": evil}}}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let browser = server.browser("tadmin").await;
    for page in [
        "/t/evil",
        "/t/acme/apps",
        "/t/acme/environments/dev/apps/xss",
        "/t/acme/audit",
    ] {
        let (status, html) = browser.get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            !html.contains("<script>alert"),
            "{page} contains raw markup"
        );
    }
    let (_, html) = browser.get("/t/acme/environments/dev/apps/xss").await;
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
            || html.contains("&#60;script&#62;"),
        "escaped form missing"
    );
}

/// Every tenant-scoped route, with `{t}` for the tenant.
fn tenant_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    let app = Some(json!({"environment": "dev", "name": "probe", "spec": service_spec()}));
    vec![
        (Method::GET, "/api/v1/tenants/{t}", None),
        (Method::GET, "/api/v1/tenants/{t}/environments", None),
        (
            Method::POST,
            "/api/v1/tenants/{t}/environments",
            Some(json!({"name": "probe"})),
        ),
        (Method::GET, "/api/v1/tenants/{t}/members", None),
        (
            Method::PUT,
            "/api/v1/tenants/{t}/members/ops",
            Some(json!({"role": "tenant_admin"})),
        ),
        (Method::DELETE, "/api/v1/tenants/{t}/members/tadmin", None),
        (Method::GET, "/api/v1/tenants/{t}/audit", None),
        (Method::GET, "/api/v1/tenants/{t}/applications", None),
        (Method::POST, "/api/v1/tenants/{t}/applications", app),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/{t}/environments/dev/applications/secret",
            Some(json!({"spec": service_spec()})),
        ),
        (
            Method::DELETE,
            "/api/v1/tenants/{t}/environments/dev/applications/secret",
            None,
        ),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/revisions",
            None,
        ),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/instances",
            None,
        ),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/events",
            None,
        ),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/instances/secret-0/logs",
            None,
        ),
        (
            Method::POST,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/stop",
            None,
        ),
        (
            Method::POST,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/restart",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/replicas",
            Some(json!({"replicas": 0})),
        ),
        (
            Method::GET,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/secrets",
            None,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/secrets/TOKEN",
            Some(json!({"value": "stolen"})),
        ),
        (
            Method::DELETE,
            "/api/v1/tenants/{t}/environments/dev/applications/secret/secrets/TOKEN",
            None,
        ),
        (Method::GET, "/api/v1/tenants/{t}/quota", None),
    ]
}

const TENANT_PAGES: [&str; 10] = [
    "/t/{t}",
    "/t/{t}/apps",
    "/t/{t}/apps/new",
    "/t/{t}/environments",
    "/t/{t}/members",
    "/t/{t}/audit",
    "/t/{t}/environments/dev/apps/secret",
    "/t/{t}/onboard",
    "/t/{t}/environments/dev/apps/secret/live",
    "/t/{t}/environments/dev/apps/secret/instances/secret-0/logs",
];

#[sqlx::test(migrations = "../migrations")]
async fn every_route_refuses_a_user_of_another_tenant(pool: PgPool) {
    let server = start(pool).await;
    // tadmin administers globex and owns an application there; ops belongs to acme only.
    let owner = server.api("tadmin").await;
    let (status, _) = owner
        .post(
            "/api/v1/tenants/globex/applications",
            json!({"environment": "dev", "name": "secret", "spec": service_spec()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let outsider = server.api("ops").await;
    for (method, path, body) in tenant_routes() {
        let path = path.replace("{t}", "globex");
        let (status, response) = outsider.call(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {response}");
        assert_eq!(response["error"], "not_found");
    }
    let browser = server.browser("ops").await;
    for page in TENANT_PAGES {
        let page = page.replace("{t}", "globex");
        assert_eq!(browser.get(&page).await.0, StatusCode::NOT_FOUND, "{page}");
    }
    for (action, fields) in [
        (
            "/t/globex/apps/new",
            vec![
                ("name", "x"),
                ("environment", "dev"),
                ("command", "x"),
                ("kind", "service"),
                ("replicas", "1"),
            ],
        ),
        ("/t/globex/environments", vec![("name", "x")]),
        (
            "/t/globex/members",
            vec![("username", "ops"), ("role", "tenant_admin")],
        ),
        ("/t/globex/members/tadmin/remove", vec![]),
        (
            "/t/globex/environments/dev/apps/secret",
            vec![("command", "x")],
        ),
        ("/t/globex/environments/dev/apps/secret/delete", vec![]),
        ("/t/globex/environments/dev/apps/secret/action/stop", vec![]),
        (
            "/t/globex/environments/dev/apps/secret/scale",
            vec![("replicas", "0")],
        ),
        (
            "/t/globex/environments/dev/apps/secret/secrets",
            vec![("name", "TOKEN"), ("value", "stolen")],
        ),
        (
            "/t/globex/environments/dev/apps/secret/secrets/TOKEN/delete",
            vec![],
        ),
        (
            "/t/globex/onboard",
            vec![
                ("template", "worker"),
                ("name", "x"),
                ("environment", "dev"),
            ],
        ),
    ] {
        assert_eq!(
            browser.post_form(action, &fields, true).await.0,
            StatusCode::NOT_FOUND,
            "POST {action}"
        );
    }
    // Nothing changed in globex.
    let (_, app) = owner
        .get("/api/v1/tenants/globex/environments/dev/applications/secret")
        .await;
    assert_eq!(app["current_revision"], 1);
    let (_, members) = owner.get("/api/v1/tenants/globex/members").await;
    assert_eq!(members["items"].as_array().map(Vec::len), Some(2));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_flood_gets_429_with_retry_after(pool: PgPool) {
    let config = console::WebConfig {
        login_per_user_per_minute: 5,
        login_per_address_per_minute: 30,
        ..console::WebConfig::default()
    };
    let server = start_with(pool, config).await;
    let api = server.anonymous();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = must(
            api.request(Method::POST, "/api/v1/auth/token")
                .json(&json!({"username": "dev", "password": "guess"}))
                .send()
                .await,
        );
        statuses.push((
            response.status(),
            response.headers().get("retry-after").is_some(),
        ));
    }
    assert_eq!(&statuses[..5], &[(StatusCode::UNAUTHORIZED, false); 5]);
    assert_eq!(statuses[5], (StatusCode::TOO_MANY_REQUESTS, true));
    // Even the right password is refused while the user is limited.
    let response = must(
        api.request(Method::POST, "/api/v1/auth/token")
            .json(&json!({"username": "dev", "password": server.password("dev")}))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other users are limited per address only, which still has budget.
    let response = must(
        api.request(Method::POST, "/api/v1/auth/token")
            .json(&json!({"username": "ops", "password": server.password("ops")}))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn hostile_bodies_never_produce_a_5xx(pool: PgPool) {
    let server = start(pool).await;
    let admin = server.api("admin").await;
    let tadmin = server.api("tadmin").await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"{\"name\": 12}".to_vec(),
        b"{\"name\": \"\\u0000\"}".to_vec(),
        b"{\"environment\": \"dev\", \"name\": \"a\", \"spec\": {\"command\": \"x\", \"replicas\": 1e99}}".to_vec(),
        b"{\"username\": \"x\", \"display_name\": \"\\ud800\", \"password\": \"aaaaaaaaaaaa\"}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        "{".repeat(10_000).into_bytes(),
        format!("{{\"slug\": \"{}\", \"display_name\": \"x\"}}", "a".repeat(60_000)).into_bytes(),
    ];
    let routes = [
        (&admin, "/api/v1/admin/tenants"),
        (&admin, "/api/v1/admin/users"),
        (&tadmin, "/api/v1/tenants/acme/applications"),
        (&tadmin, "/api/v1/tenants/acme/environments"),
        (&tadmin, "/api/v1/auth/token"),
    ];
    for (api, path) in routes {
        for body in &bodies {
            for content_type in ["application/json", "text/plain"] {
                let response = must(
                    api.request(Method::POST, path)
                        .header("content-type", content_type)
                        .body(body.clone())
                        .send()
                        .await,
                );
                let status = response.status();
                assert!(
                    status.is_client_error(),
                    "{path} {content_type} {:?} -> {status}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                );
            }
        }
    }
    // Odd paths and ids.
    for path in [
        "/api/v1/tenants/%00",
        "/api/v1/tenants/acme/environments/..%2F..%2Fetc/applications/x",
        "/api/v1/tenants/a'--/audit?limit=-5&before=abc",
    ] {
        let (status, _) = tadmin.get(path).await;
        assert!(status.is_client_error(), "{path} -> {status}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_login_follows_only_a_same_origin_next_and_never_answers_500(pool: PgPool) {
    let server = start(pool).await;
    // Values a browser would resolve to another host, or a header cannot carry.
    for (next, expected) in [
        ("/\t/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/t/acme\r\nSet-Cookie: stolen=1", "/"),
        ("/t/acme/apps", "/t/acme/apps"),
    ] {
        // A visitor without a session each time.
        let http = must(
            reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build(),
        );
        let page = must(
            must(http.get(server.url("/login")).send().await)
                .text()
                .await,
        );
        let csrf = support::hidden_csrf(&page);
        let response = must(
            http.post(server.url("/login"))
                .form(&[
                    ("username", "dev"),
                    ("password", server.password("dev")),
                    ("_csrf", csrf.as_str()),
                    ("next", next),
                ])
                .send()
                .await,
        );
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next:?}");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(location, expected, "{next:?}");
        assert!(
            response
                .headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| { !c.to_str().unwrap_or_default().contains("stolen") })
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_nul_character_in_a_query_parameter_is_refused_by_name(pool: PgPool) {
    let server = start(pool).await;
    let dev = server.api("dev").await;
    let (status, body) = dev
        .get("/api/v1/tenants/acme/applications?environment=dev%00x")
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("environment")),
        "{body}"
    );
    let browser = server.browser("dev").await;
    for path in [
        "/t/acme/apps?environment=%00",
        "/t/acme/apps?q=a%00b",
        "/t/acme/audit?actor=%00",
    ] {
        let (status, page) = browser.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.contains("NUL"), "{path}: {page}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_can_require_a_token_and_move_to_a_listener_of_their_own(pool: PgPool) {
    // One platform, served three ways: with a metrics token, with metrics elsewhere, and
    // the metrics listener itself.
    let config = console::WebConfig {
        metrics: console::MetricsExposure {
            on_main_listener: true,
            token: Some("scrape-secret".into()),
        },
        ..console::WebConfig::default()
    };
    let server = support::start_with(pool, config).await;
    let http = reqwest::Client::new();
    let scrape = |token: Option<&'static str>| {
        let request = http.get(server.url("/metrics"));
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        request.send()
    };
    for token in [None, Some("wrong"), Some("scrape-secre")] {
        let response = must(scrape(token).await);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    let response = must(scrape(Some("scrape-secret")).await);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(must(response.text().await).contains("paas_http_requests_total"));

    // With a listener of its own, the main listener has no /metrics at all.
    let elsewhere = console::WebConfig {
        metrics: console::MetricsExposure {
            on_main_listener: false,
            token: None,
        },
        ..console::WebConfig::default()
    };
    let main_state = console::AppState::new(server.platform.clone(), elsewhere);
    let main = must(
        actix_web::HttpServer::new(move || console::app(main_state.clone()))
            .workers(1)
            .bind("127.0.0.1:0"),
    );
    let main_addr = main.addrs()[0];
    tokio::spawn(main.disable_signals().run());
    let response = must(http.get(format!("http://{main_addr}/metrics")).send().await);
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let state = console::AppState::new(server.platform.clone(), console::WebConfig::default());
    let metrics = must(
        actix_web::HttpServer::new(move || console::metrics_app(state.clone()))
            .workers(1)
            .bind("127.0.0.1:0"),
    );
    let addr = metrics.addrs()[0];
    let running = metrics.disable_signals().run();
    tokio::spawn(running);
    let response = must(http.get(format!("http://{addr}/metrics")).send().await);
    assert_eq!(response.status(), StatusCode::OK);
    let response = must(http.get(format!("http://{addr}/api/v1/me")).send().await);
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "only /metrics there"
    );
}
