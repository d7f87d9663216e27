//! The gateway's configuration against a real HAProxy (Debian's), started by the
//! script the platform runs it with, in front of a real upstream (Python's file
//! server): keys, rate limits, routes and metrics.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gateway_broker::config::{Consumer, Route};
use reqwest::StatusCode;
use sha2::Digest as _;
use tokio::process::{Child, Command};

fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

fn free_port() -> u16 {
    must(std::net::TcpListener::bind("127.0.0.1:0"))
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(18080)
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async fn until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(url).await.is_err() {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upstream serving `dir`, with `apps/acme/dev/shop/hello.txt` in it.
async fn upstream(dir: &Path) -> (Child, u16) {
    let shop = dir.join("apps/acme/dev/shop");
    must(std::fs::create_dir_all(&shop));
    must(std::fs::write(shop.join("hello.txt"), "hello from shop"));
    let port = free_port();
    let child = must(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn(),
    );
    until_up(&format!("http://127.0.0.1:{port}/")).await;
    (child, port)
}

async fn gateway(
    dir: &Path,
    consumers: &[Consumer],
    routes: &[Route],
    token: &str,
) -> (Child, u16) {
    let env = must(gateway_broker::server_env(consumers, routes, "127.0.0.1"));
    let port = free_port();
    let child = must(
        Command::new("sh")
            .arg("-c")
            .arg(gateway_broker::start_script())
            .current_dir(dir)
            .envs(env)
            .env("PORT", port.to_string())
            .env("GW_METRICS_TOKEN", token)
            .env("PATH", PATH)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn(),
    );
    until_up(&format!("http://127.0.0.1:{port}/_gateway/health")).await;
    (child, port)
}

fn digest(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

#[tokio::test]
async fn keys_limits_routes_and_metrics_hold_on_a_real_haproxy() {
    let files = must(tempfile::tempdir());
    let (_upstream, upstream_port) = upstream(files.path()).await;
    let consumers = [
        Consumer {
            name: "mobile".into(),
            key_sha256: digest("mobile-key-0123456789"),
            requests_per_minute: 1000,
        },
        Consumer {
            name: "partner".into(),
            key_sha256: digest("partner-key-0123456789"),
            requests_per_minute: 3,
        },
    ];
    let routes = [must(Route::from_url(
        "shop",
        &format!("http://127.0.0.1:{upstream_port}/apps/acme/dev/shop/"),
    ))];
    let run = must(tempfile::tempdir());
    let (_gateway, port) = gateway(run.path(), &consumers, &routes, "metrics-token-0123").await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };

    // No key, or a key no consumer has: 401.
    let r = must(get("/shop/hello.txt", None).await);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = must(get("/shop/hello.txt", Some("guessed")).await);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(must(r.text().await).contains("X-API-Key"));

    // A consumer's key reaches the application, under its own path.
    let r = must(get("/shop/hello.txt", Some("mobile-key-0123456789")).await);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(must(r.text().await), "hello from shop");
    let r = must(get("/nowhere/x", Some("mobile-key-0123456789")).await);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A consumer over its rate gets 429 with Retry-After; the other is not affected.
    for _ in 0..3 {
        let r = must(get("/shop/hello.txt", Some("partner-key-0123456789")).await);
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = must(get("/shop/hello.txt", Some("partner-key-0123456789")).await);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"60"[..])
    );
    let r = must(get("/shop/hello.txt", Some("mobile-key-0123456789")).await);
    assert_eq!(r.status(), StatusCode::OK);

    // Metrics: the token's holder only; per route and status class.
    let r = must(get("/_gateway/metrics", None).await);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = must(
        http.get(format!("{base}/_gateway/metrics"))
            .bearer_auth("metrics-token-0123")
            .send()
            .await,
    );
    assert_eq!(r.status(), StatusCode::OK);
    let text = must(r.text().await);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("haproxy_backend_http_responses_total{proxy=\"route_shop\",code=\"2xx\"}")
        })
        .unwrap_or_else(|| panic!("no 2xx count of route_shop:\n{text}"));
    assert!(line.ends_with(" 5"), "{line}");
}
