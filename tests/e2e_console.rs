//! End to end: the real `paas` binary against a fresh database, driven through the
//! console by a real headless Chromium (Debian's `chromium` and `chromium-driver`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

mod support;

use support::binary::{Paas, Site, free_port, paas_up};
use support::must;

async fn platform() -> (Site, Paas) {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    (site, paas)
}

/// Starts chromedriver and a headless Chromium session whose profile lives in the site's
/// data directory (and so goes with it).
async fn browser(site: &Site) -> (Child, Client) {
    let driver =
        std::env::var("PAAS_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    let chromium =
        std::env::var("PAAS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let port = free_port();
    let child = must(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{driver}: {e} (install chromium-driver)")),
    );
    let profile = site.data_dir.join("chromium-profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-quic", "--no-first-run", "--window-size=1400,900",
                     format!("--user-data-dir={}", profile.display())]
        }),
    );
    let webdriver = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Several TLS crypto providers are linked in (kube picks ring): say which.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match ClientBuilder::rustls().map(|mut b| {
            b.capabilities(caps.clone());
            b
        }) {
            Ok(builder) => match builder.connect(&webdriver).await {
                Ok(client) => return (child, client),
                Err(e) if Instant::now() > deadline => {
                    panic!("could not start a Chromium session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            },
            Err(e) => panic!("webdriver client: {e}"),
        }
    }
}

async fn wait_for_path(client: &Client, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let current = must(client.current_url().await);
        if current.path() == path {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected to reach {path}, still at {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn heading(client: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(h1) = client.find(Locator::Css("main h1")).await
            && let Ok(text) = h1.text().await
        {
            return text;
        }
        assert!(Instant::now() < deadline, "no heading on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_heading(client: &Client, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = heading(client).await;
        if text == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected heading {expected:?}, got {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(client: &Client, base: &str, user: &str, password: &str) {
    must(client.goto(&format!("{base}/login")).await);
    must(
        must(client.find(Locator::Css("#username")).await)
            .send_keys(user)
            .await,
    );
    must(
        must(client.find(Locator::Css("#password")).await)
            .send_keys(password)
            .await,
    );
    must(
        must(client.find(Locator::Css("#sign-in")).await)
            .click()
            .await,
    );
}

async fn click(client: &Client, css: &str) {
    must(must(client.find(Locator::Css(css)).await).click().await);
}

async fn screenshot(client: &Client, name: &str) {
    if let Ok(dir) = std::env::var("PAAS_SCREENSHOT_DIR") {
        let png = must(client.screenshot().await);
        must(std::fs::write(std::path::Path::new(&dir).join(name), png));
    }
}

#[tokio::test]
async fn a_tenant_admin_logs_in_switches_tenant_opens_every_page_and_logs_out() {
    let (site, platform) = platform().await;
    assert_eq!(
        platform.passwords.len(),
        4,
        "demo accounts were not printed:\n{}",
        platform.printed
    );
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();

    // A wrong password gets an inline error and no session.
    log_in(&client, base, "tadmin", "not the password").await;
    let error = must(
        must(
            client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css("#login-error"))
                .await,
        )
        .text()
        .await,
    );
    assert_eq!(error, "Invalid username or password.");

    log_in(&client, base, "tadmin", &platform.passwords["tadmin"]).await;
    wait_for_path(&client, "/t/acme").await;
    wait_for_heading(&client, "Acme Corporation").await;
    screenshot(&client, "console-dashboard.png").await;

    // Switch tenant through the switcher in the top bar.
    click(&client, "#tenant-switcher summary").await;
    click(&client, "#tenant-switcher a[data-tenant=globex]").await;
    wait_for_path(&client, "/t/globex").await;
    wait_for_heading(&client, "Globex Industries").await;

    // Every tenant page opens from the navigation.
    for (link, heading_text) in [
        ("Applications", "Applications"),
        ("Environments", "Environments"),
        ("Members", "Members"),
        ("Audit log", "Audit log"),
        ("Dashboard", "Globex Industries"),
    ] {
        must(
            must(client.find(Locator::LinkText(link)).await)
                .click()
                .await,
        );
        wait_for_heading(&client, heading_text).await;
    }

    // Back in acme: the sample application's page, and an inline error for a bad name.
    must(client.goto(&format!("{base}/t/acme/apps")).await);
    wait_for_heading(&client, "Applications").await;
    screenshot(&client, "console-applications.png").await;
    click(&client, "a[href='/t/acme/environments/dev/apps/hello']").await;
    wait_for_heading(&client, "hello").await;
    must(client.goto(&format!("{base}/t/acme/apps/new")).await);
    must(
        must(client.find(Locator::Css("#name")).await)
            .send_keys("Not A Valid Name")
            .await,
    );
    must(
        must(client.find(Locator::Css("#command")).await)
            .send_keys("python3")
            .await,
    );
    click(&client, "#create-app").await;
    let inline = must(
        must(
            client
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css("#name-error"))
                .await,
        )
        .text()
        .await,
    );
    assert!(inline.contains("lowercase letters"), "{inline}");
    // A valid one lands on its page.
    let name = must(client.find(Locator::Css("#name")).await);
    must(name.clear().await);
    must(name.send_keys("shop").await);
    click(&client, "#create-app").await;
    wait_for_path(&client, "/t/acme/environments/dev/apps/shop").await;
    wait_for_heading(&client, "shop").await;

    click(&client, "#logout").await;
    wait_for_path(&client, "/login").await;
    // Logged out means logged out: a tenant page sends us back to the login form.
    must(client.goto(&format!("{base}/t/acme")).await);
    wait_for_path(&client, "/login").await;
    must(client.close().await);
}

#[tokio::test]
async fn each_demo_role_sees_only_what_its_role_allows() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();

    // A developer has no audit log and cannot change the protected prod environment.
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    let nav = must(
        must(client.find(Locator::Css("nav.sidebar")).await)
            .text()
            .await,
    );
    assert!(
        !nav.contains("Audit log") && !nav.contains("Users"),
        "{nav}"
    );
    must(client.goto(&format!("{base}/t/acme/audit")).await);
    wait_for_heading(&client, "Not allowed").await;
    click(&client, "#logout").await;
    wait_for_path(&client, "/login").await;

    // The platform admin has the platform pages and no tenant.
    log_in(&client, base, "admin", &platform.passwords["admin"]).await;
    wait_for_path(&client, "/admin/tenants").await;
    wait_for_heading(&client, "Tenants").await;
    let nav = must(
        must(client.find(Locator::Css("nav.sidebar")).await)
            .text()
            .await,
    );
    assert!(
        nav.contains("Users") && nav.contains("Platform audit"),
        "{nav}"
    );
    must(client.goto(&format!("{base}/t/acme")).await);
    wait_for_heading(&client, "Not found").await;
    click(&client, "#logout").await;
    wait_for_path(&client, "/login").await;

    // Ops reads the audit log.
    log_in(&client, base, "ops", &platform.passwords["ops"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(client.goto(&format!("{base}/t/acme/audit")).await);
    wait_for_heading(&client, "Audit log").await;
    must(client.close().await);
}

#[tokio::test]
async fn a_restarted_platform_keeps_its_data_and_prints_no_new_passwords() {
    let (site, first) = platform().await;
    let password = first.passwords["dev"].clone();
    first.stop().await;
    let second = paas_up(&site).await;
    assert!(second.passwords.is_empty(), "{}", second.printed);
    let response = must(
        reqwest::Client::new()
            .post(format!("{}/api/v1/auth/token", second.url))
            .json(&json!({"username": "dev", "password": password}))
            .send()
            .await,
    );
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = must(response.json().await);
    assert!(body["token"].is_string());
}

#[tokio::test]
async fn one_click_onboarding_lands_on_the_app_page_where_the_url_appears_and_answers() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(
        must(client.find(Locator::LinkText("Onboard application")).await)
            .click()
            .await,
    );
    wait_for_heading(&client, "Onboard an application").await;
    click(&client, "#deploy-hello-http").await;
    wait_for_path(&client, "/t/acme/environments/dev/apps/hello-web").await;
    wait_for_heading(&client, "hello-web").await;
    // Instances appear and turn ready live; the URL shows once one serves.
    let link = must(
        client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("#app-url"))
            .await,
    );
    let url = must(link.attr("href").await).unwrap_or_default();
    assert!(
        url.starts_with("http://hello-web.dev.acme.localhost:"),
        "{url}"
    );
    screenshot(&client, "console-app.png").await;
    // The host-form URL needs a resolver for *.localhost; ask the router directly with
    // the same Host header.
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let response = must(
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .header("host", format!("hello-web.dev.acme.localhost:{port}"))
            .send()
            .await,
    );
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = must(response.json().await);
    assert_eq!(body["message"], "Hello from the platform");
    let ready = must(
        must(client.find(Locator::Css("#instances")).await)
            .text()
            .await,
    );
    assert!(ready.contains("ready"), "{ready}");
    must(client.close().await);
}

/// Waits until the element's text contains `expected`, then returns it.
async fn wait_for_text(client: &Client, css: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {expected:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replaces what a text field holds, as a user typing would (an input event per key).
async fn type_into(client: &Client, css: &str, text: &str) {
    let field = must(client.find(Locator::Css(css)).await);
    must(field.clear().await);
    must(field.send_keys(text).await);
}

#[tokio::test]
async fn every_filter_of_the_applications_and_audit_pages_redraws_its_table_in_place() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "tadmin", &platform.passwords["tadmin"]).await;
    wait_for_path(&client, "/t/acme").await;

    // The applications page: the search box and the environment filter, each redrawing
    // the table through htmx (the page itself stays; its heading is never lost).
    must(client.goto(&format!("{base}/t/acme/apps")).await);
    wait_for_text(&client, "#apps-table", "hello").await;
    type_into(&client, "#q", "no-such-app").await;
    wait_for_text(&client, "#apps-table", "No applications").await;
    type_into(&client, "#q", "HEL").await;
    wait_for_text(&client, "#apps-table", "hello").await;
    let environment = must(client.find(Locator::Css("#environment")).await);
    must(environment.select_by_value("prod").await);
    wait_for_text(&client, "#apps-table", "No applications").await;
    let environment = must(client.find(Locator::Css("#environment")).await);
    must(environment.select_by_value("dev").await);
    wait_for_text(&client, "#apps-table", "hello").await;
    assert_eq!(heading(&client).await, "Applications");
    let url = must(client.current_url().await);
    assert!(url.as_str().contains("environment=dev"), "{url}");

    // The audit page: actor, action and target, each applied on change.
    must(client.goto(&format!("{base}/t/acme/audit")).await);
    wait_for_text(&client, "#audit-rows", "application.create").await;
    for (field, value, expected) in [
        ("#actor", "nobody-at-all", "No matching entries"),
        ("#actor", "", "application.create"),
        ("#action", "nothing.", "No matching entries"),
        ("#action", "application.", "application.create"),
        ("#target", "hello", "application.create"),
        ("#target", "no-such-target", "No matching entries"),
    ] {
        type_into(&client, field, value).await;
        // A change event fires when the field loses focus.
        click(&client, "h1").await;
        wait_for_text(&client, "#audit-rows", expected).await;
    }
    assert_eq!(heading(&client).await, "Audit log");
    must(client.close().await);
}

#[tokio::test]
async fn a_tenant_admin_previews_and_saves_a_policy_with_a_band_and_a_developer_may_only_read_it() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "tadmin", &platform.passwords["tadmin"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(
        client
            .goto(&format!("{base}/t/acme/environments/dev/apps/hello"))
            .await,
    );
    click(&client, "#autoscaling-link").await;
    wait_for_heading(&client, "Autoscaling").await;
    // A band that runs all day, every day: it lifts hello (2 instances) to 3 at once.
    let policy = r#"{"min": 1, "max": 3, "time_zone": "Europe/Berlin", "sample_interval_s": 1,
        "bands": [{"name": "all day", "min": 3, "max": 3,
                   "when": {"type": "periodic", "start_time": "00:00", "end_time": "00:00"}}]}"#;
    type_into(&client, "#policy-text", policy).await;
    click(&client, "#preview-policy").await;
    wait_for_text(&client, "#preview", "draft, not saved").await;
    wait_for_text(&client, "#preview", "Band all day runs in this week").await;
    assert!(
        client
            .find(Locator::Css("#preview-chart path"))
            .await
            .is_ok()
    );
    // What if: a CSV series replayed through a draft, drawn as a curve. 450 requests a
    // second on 1 instance against 100 each: 1 -> 5 (+4 per 15 s at most).
    type_into(
        &client,
        "#policy-text",
        r#"{"min": 1, "max": 6, "rules": [{"metric": {"type": "requests_per_second"}, "target": 100}]}"#,
    )
    .await;
    type_into(
        &client,
        "#what-if-csv",
        "at,rps\n2026-11-26T10:00:00Z,50\n2026-11-26T10:00:05Z,450\n2026-11-26T10:00:10Z,450\n",
    )
    .await;
    click(&client, "#replay-policy").await;
    let replay = wait_for_text(&client, "#replay", "at most 5 instances").await;
    assert!(replay.contains("1 changes"), "{replay}");
    assert!(
        client
            .find(Locator::Css("#replay-chart path"))
            .await
            .is_ok()
    );
    // A mistake is named beside the form, and what was typed stays.
    type_into(
        &client,
        "#policy-text",
        r#"{"min": 1, "max": 3, "time_zone": "Nowhere/Land"}"#,
    )
    .await;
    click(&client, "#save-policy").await;
    wait_for_text(&client, "#policy", "unknown time zone").await;
    let kept = must(
        must(client.find(Locator::Css("#policy-text")).await)
            .prop("value")
            .await,
    );
    assert!(kept.unwrap_or_default().contains("Nowhere/Land"));
    type_into(&client, "#policy-text", policy).await;
    click(&client, "#save-policy").await;
    wait_for_text(&client, "h1", "Autoscaling").await;
    // The evaluator lifts hello to 3; the ledger (refreshed in place) says why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = match client.find(Locator::Css("#ledger")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("2 → 3") && text.contains("periodic band 'all day' sets 3..3") {
            break;
        }
        assert!(Instant::now() < deadline, "no ledger row: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    screenshot(&client, "autoscaling.png").await;
    // The dashboard says which applications are scaling now, and why.
    must(client.goto(&format!("{base}/t/acme")).await);
    let now = wait_for_text(&client, "#scaling-now", "dev/hello").await;
    assert!(now.contains("2 → 3") && now.contains("all day"), "{now}");

    // A developer reads the same page, cannot save, and is refused when trying anyway.
    must(client.delete_all_cookies().await);
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(
        client
            .goto(&format!(
                "{base}/t/acme/environments/dev/apps/hello/autoscaling"
            ))
            .await,
    );
    wait_for_text(&client, "#policy", "all day").await;
    assert!(client.find(Locator::Css("#save-policy")).await.is_err());
    let readonly = must(
        must(client.find(Locator::Css("#policy-text")).await)
            .attr("readonly")
            .await,
    );
    assert!(readonly.is_some());
    must(
        client
            .execute(
                "const f = document.getElementById('policy-form'); const i = document.createElement('input'); \
                 i.type = 'hidden'; i.name = 'intent'; i.value = 'save'; f.appendChild(i); f.submit();",
                vec![],
            )
            .await,
    );
    wait_for_text(
        &client,
        "main",
        "does not allow you to set autoscaling policies",
    )
    .await;
    must(client.close().await);
}

#[tokio::test]
async fn a_tenant_admin_sets_a_canary_release_policy_for_prod_and_a_developer_may_only_read_it() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "tadmin", &platform.passwords["tadmin"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(client.goto(&format!("{base}/t/acme/environments")).await);
    click(&client, "#release-policy-prod").await;
    wait_for_heading(&client, "Release policy: prod").await;
    // Prod's default: one ops approval, rolling.
    let shown = wait_for_text(&client, "#policy", "rolling").await;
    assert!(shown.contains("max surge 25%"), "{shown}");
    // A mistake is named beside the form, and what was typed stays.
    let falling = r#"{"approval": {"required": true},
        "strategy": {"type": "canary", "steps": [{"weight": 50, "pause_s": 60}, {"weight": 10}]}}"#;
    type_into(&client, "#policy-text", falling).await;
    click(&client, "#save-policy").await;
    wait_for_text(&client, "#policy-error", "strategy.steps[1].weight").await;
    let kept = must(
        must(client.find(Locator::Css("#policy-text")).await)
            .prop("value")
            .await,
    );
    assert!(kept.unwrap_or_default().contains("\"weight\": 10"));
    let canary = r#"{"approval": {"required": true},
        "strategy": {"type": "canary", "steps": [{"weight": 10, "pause_s": 60}, {"weight": 50}],
                     "analysis": {"interval_s": 10}}}"#;
    type_into(&client, "#policy-text", canary).await;
    click(&client, "#save-policy").await;
    let summary = wait_for_text(&client, "#policy-summary", "canary 10% → 50%").await;
    assert!(summary.contains("checked every 10 s"), "{summary}");

    // A developer reads it and cannot save it.
    must(client.delete_all_cookies().await);
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(
        client
            .goto(&format!("{base}/t/acme/environments/prod/release-policy"))
            .await,
    );
    wait_for_text(&client, "#policy-summary", "canary 10% → 50%").await;
    assert!(client.find(Locator::Css("#save-policy")).await.is_err());
    must(
        client
            .execute("document.getElementById('policy-form').submit();", vec![])
            .await,
    );
    wait_for_text(
        &client,
        "main",
        "does not allow you to set release policies",
    )
    .await;
    must(client.close().await);
}

#[tokio::test]
async fn a_developers_change_in_prod_waits_until_ops_approve_it_in_the_release_queue_and_rolls_out()
{
    let (site, platform) = platform().await;
    let ops = support::client::Tenant::login(&platform, "ops").await;
    let spec = json!({"command": "sh", "args": ["-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"],
        "replicas": 2, "ports": [{"name": "http"}]});
    let (status, body) = ops
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "prod", "name": "shop", "spec": spec})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();

    // The developer may not change prod directly, only request a change.
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    must(
        client
            .goto(&format!("{base}/t/acme/environments/prod/apps/shop"))
            .await,
    );
    wait_for_heading(&client, "shop").await;
    wait_for_text(&client, "#change-is-a-request", "waits for an approval").await;
    type_into(&client, "#env", "COLOUR=blue").await;
    click(&client, "#save-app").await;
    wait_for_text(&client, "#releases", "pending_approval").await;
    wait_for_text(&client, "#running-revision", "Runs r1").await;
    click(&client, "#logout").await;
    wait_for_path(&client, "/login").await;

    // Ops find it first in the release queue and approve it.
    log_in(&client, base, "ops", &platform.passwords["ops"]).await;
    wait_for_path(&client, "/t/acme").await;
    click(&client, "#nav-releases").await;
    wait_for_heading(&client, "Releases").await;
    let first = must(client.find(Locator::Css("#releases-table tbody tr")).await);
    assert_eq!(
        must(first.attr("data-state").await).as_deref(),
        Some("pending_approval")
    );
    must(must(first.find(Locator::Css("a")).await).click().await);
    wait_for_text(&client, "#release-state", "pending_approval").await;
    type_into(&client, "input[name=reason]", "checked the colour").await;
    click(&client, "#release-approve").await;
    // The timeline follows the release, step by step, until it succeeds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The state is in the part of the page htmx redraws every second: an element
        // found just before a redraw is gone when read, and is read again.
        let state = match client.find(Locator::Css("#release-state")).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if state == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the release is still {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let timeline = wait_for_text(&client, "#release-timeline", "succeeded").await;
    for kind in ["requested", "waiting", "approved", "started", "step"] {
        assert!(timeline.contains(kind), "{kind}: {timeline}");
    }
    assert!(timeline.contains("checked the colour"), "{timeline}");
    screenshot(&client, "console-release.png").await;
    must(client.close().await);
}

#[tokio::test]
async fn a_platform_admin_is_told_why_a_drain_cannot_finish_and_may_force_it_then_uncordon() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "admin", &platform.passwords["admin"]).await;
    // Signed in (the sign-in's own redirect would otherwise land after the next page).
    wait_for_path(&client, "/admin/tenants").await;
    must(client.goto(&format!("{base}/admin/runtimes")).await);
    wait_for_heading(&client, "Runtimes").await;
    // The demo's hello runs on the only node: draining it could not finish, and the
    // page says why in red, naming the application.
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .find(Locator::Css("#placement-map-local .map-cell"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "hello never showed on the placement map"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        must(client.refresh().await);
    }
    click(&client, "#drain-node-1").await;
    let why = wait_for_text(&client, "#node-error", "cannot finish").await;
    assert!(
        why.contains("acme/dev/hello") && why.contains("no node can take it"),
        "{why}"
    );
    assert!(client.find(Locator::Css("#draining-node-1")).await.is_err());
    // Forced: the node drains, and what cannot move stays and is named.
    click(&client, "#drain-force-node-1").await;
    click(&client, "#drain-node-1").await;
    let notice = wait_for_text(&client, "#notice", "node-1 is draining").await;
    assert!(
        notice.contains("Forced") && notice.contains("acme/dev/hello"),
        "{notice}"
    );
    // hello's two instances cannot move: the badge counts them as still on the node.
    wait_for_text(&client, "#draining-node-1", "draining: 2 instances on it").await;
    // Uncordoning ends the drain.
    click(&client, "#uncordon-node-1").await;
    wait_for_text(&client, "#notice", "uncordoned").await;
    assert!(client.find(Locator::Css("#draining-node-1")).await.is_err());
    must(client.close().await);
}

#[tokio::test]
async fn a_developer_provisions_a_cache_from_the_marketplace_and_binds_it_to_an_application() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;

    // The marketplace shows the platform's cache with its broker's version.
    click(&client, "#nav-marketplace").await;
    wait_for_heading(&client, "Marketplace").await;
    let card = wait_for_text(&client, "#service-redis", "Redis cache").await;
    assert!(card.contains("cache") && card.contains("1.0.0"), "{card}");
    // The four middleware services, each with its broker's version.
    for (service, broker) in [
        ("postgresql", "database"),
        ("nats", "queue"),
        ("api-gateway", "gateway"),
    ] {
        let card = wait_for_text(&client, &format!("#service-{service}"), "1.0.0").await;
        assert!(card.contains(broker), "{card}");
    }

    // A bad name is refused in red beside its field, and nothing is made.
    click(&client, "#service-redis details:first-of-type summary").await;
    let form = "#provision-redis-small";
    type_into(&client, &format!("{form} input[name=name]"), "Not A Name").await;
    click(&client, &format!("{form} button[type=submit]")).await;
    let error = wait_for_text(&client, &format!("{form} .field-error"), "lowercase").await;
    assert!(error.contains("letters"), "{error}");

    // The form generated from the plan's schema: an eviction policy to choose.
    type_into(&client, &format!("{form} input[name=name]"), "cache").await;
    let policy = must(
        client
            .find(Locator::Css(&format!(
                "{form} select[name='param.maxmemory_policy']"
            )))
            .await,
    );
    must(policy.select_by_value("allkeys-lru").await);
    click(&client, &format!("{form} button[type=submit]")).await;
    wait_for_path(&client, "/t/acme/services").await;
    // The page follows the broker until the instance is ready.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = match client.find(Locator::Css("#state-cache")).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if state == "ready" {
            break;
        }
        assert_ne!(state, "failed");
        if Instant::now() >= deadline {
            let last = match client.find(Locator::Css("#last-operation-cache")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("the cache never showed ready ({state}): {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    screenshot(&client, "services-ready.png").await;

    // Bound to the sample application: its variables are listed, never their values.
    let application = must(
        client
            .find(Locator::Css("#bind-cache select[name=application]"))
            .await,
    );
    must(application.select_by_value("hello").await);
    click(&client, "#bind-cache button[type=submit]").await;
    let row = wait_for_text(&client, "#instance-cache tr.binding", "hello").await;
    assert!(
        row.contains("CACHE_URL") && row.contains("CACHE_PASSWORD") && row.contains("bound"),
        "{row}"
    );
    let page = must(client.source().await);
    assert!(
        !page.contains("redis://binding-"),
        "a credential is on the page"
    );
    screenshot(&client, "services-bound.png").await;

    // Deprovisioning is refused while bound, in red on the instance.
    click(&client, "#deprovision-cache").await;
    wait_for_text(&client, "#instance-cache .alert.error", "unbind them first").await;
    click(&client, "#unbind-cache-hello").await;
    wait_for_path(&client, "/t/acme/services").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .find(Locator::Css("#instance-cache tr.binding"))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the binding never went");
        tokio::time::sleep(Duration::from_millis(300)).await;
        must(client.refresh().await);
    }
    click(&client, "#deprovision-cache").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.find(Locator::Css("#instance-cache")).await.is_ok() {
        assert!(Instant::now() < deadline, "the cache never went");
        tokio::time::sleep(Duration::from_millis(300)).await;
        must(client.refresh().await);
    }
}

#[tokio::test]
async fn a_platform_admin_sees_the_brokers_and_a_broker_that_cannot_be_reached_is_refused_in_red() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "admin", &platform.passwords["admin"]).await;
    // Signed in (the sign-in's own redirect would otherwise land after the next page).
    wait_for_path(&client, "/admin/tenants").await;
    must(client.goto(&format!("{base}/admin/brokers")).await);
    wait_for_heading(&client, "Brokers").await;
    let cache = wait_for_text(&client, "#broker-cache", "redis").await;
    assert!(
        cache.contains("1.0.0") && cache.contains("small") && cache.contains("all"),
        "{cache}"
    );
    let database = wait_for_text(&client, "#broker-database", "postgresql").await;
    assert!(
        database.contains("shared") && database.contains("dedicated"),
        "{database}"
    );

    // A broker nobody answers for is refused with the reason, nothing is stored, and
    // the password typed is not sent back.
    let port = free_port();
    type_into(&client, "#broker-name", "partner").await;
    type_into(&client, "#broker-url", &format!("http://127.0.0.1:{port}")).await;
    type_into(&client, "#broker-username", "platform").await;
    type_into(&client, "#broker-password", "typed-secret").await;
    click(&client, "#new-broker-form button[type=submit]").await;
    let error = wait_for_text(
        &client,
        "#new-broker-form .alert.error",
        "could not be read",
    )
    .await;
    assert!(error.contains(&port.to_string()), "{error}");
    let page = must(client.source().await);
    assert!(!page.contains("typed-secret"));
    assert!(client.find(Locator::Css("#broker-partner")).await.is_err());
}

#[tokio::test]
async fn a_developer_previews_installs_upgrades_and_uninstalls_a_bundle_from_the_console() {
    let (site, platform) = platform().await;
    let (_driver, client) = browser(&site).await;
    let base = platform.url.as_str();
    log_in(&client, base, "dev", &platform.passwords["dev"]).await;
    wait_for_path(&client, "/t/acme").await;
    click(&client, "#nav-bundles").await;
    wait_for_heading(&client, "Bundles").await;
    let card = wait_for_text(&client, "#bundle-retail", "storefront").await;
    assert!(card.contains("1.1.0"), "{card}");

    // A preview of 1.0.0 in dev lists what it adds; nothing is installed yet.
    let version = must(
        client
            .find(Locator::Css("#install-retail select[name=version]"))
            .await,
    );
    must(version.select_by_value("1.0.0").await);
    click(&client, "#install-retail button[value=preview]").await;
    let diff = wait_for_text(&client, "#bundle-diff", "storefront").await;
    assert!(
        diff.contains("added") && diff.contains("order-worker") && diff.contains("edge"),
        "{diff}"
    );
    assert!(client.find(Locator::Css("#no-bundles")).await.is_ok());
    screenshot(&client, "bundle-preview.png").await;

    // Installed from the preview: the installation shows its components.
    click(&client, "#apply-preview button[type=submit]").await;
    wait_for_path(&client, "/t/acme/bundles").await;
    let installed = wait_for_text(&client, "#installed-dev-retail", "retail 1.0.0").await;
    assert!(installed.contains("storefront → db"), "{installed}");

    // The upgrade's preview names the fields that change.
    click(&client, "#upgrade-dev-retail button[type=submit]").await;
    let diff = wait_for_text(&client, "#bundle-preview", "1.0.0 → 1.1.0").await;
    assert!(
        diff.contains("changed") && diff.contains("replicas") && diff.contains("schedule"),
        "{diff}"
    );
    screenshot(&client, "bundle-upgrade-preview.png").await;

    // Uninstalling removes the installation once everything it made is gone.
    click(&client, "#uninstall-dev-retail button[type=submit]").await;
    wait_for_path(&client, "/t/acme/bundles").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    while client
        .find(Locator::Css("#installed-dev-retail"))
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "the bundle was never uninstalled"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        must(client.refresh().await);
    }
    must(client.close().await);
}
