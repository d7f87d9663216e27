//! The local runtime end to end: the real `paas up` with its agents and router, real
//! application processes, real HTTP through the router.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::binary::{Site, paas_up};
use support::client::{Tenant, wait_for_200};
use support::must;

/// A static HTTP service that serves a page from a directory named after a unique
/// marker, so that the test can find and count its processes in `/proc`.
fn web_spec(marker: &str, replicas: u32) -> Value {
    let script = format!(
        "mkdir -p {marker} && printf 'hello from the platform\\n' > {marker}/index.html && exec python3 -m http.server $PORT --bind 127.0.0.1 --directory {marker}"
    );
    json!({"command": "sh", "args": ["-c", script], "replicas": replicas, "ports": [{"name": "http"}]})
}

fn marker() -> String {
    format!("site-{}", uuid::Uuid::new_v4().simple())
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> usize {
    support::procs::count(needle)
}

#[tokio::test]
async fn an_onboarded_service_serves_through_the_router_and_heals_after_kill_9() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let marker = marker();
    dev.onboard("web", web_spec(&marker, 1)).await;
    let url = format!("{}/apps/acme/dev/web/index.html", site.router());
    wait_for_200(&url).await;
    let body = must(must(reqwest::get(&url).await).text().await);
    assert_eq!(body, "hello from the platform\n");
    // The host form reaches the same application.
    let by_host = must(
        reqwest::Client::new()
            .get(format!("{}/index.html", site.router()))
            .header(
                "host",
                format!("web.dev.acme.localhost:{}", site.router_port),
            )
            .send()
            .await,
    );
    assert_eq!(by_host.status(), StatusCode::OK);

    dev.wait_instances("web", "one ready instance", |i| {
        i.len() == 1 && i[0]["ready"] == true
    })
    .await;
    support::procs::signal_the_one(&marker, nix::sys::signal::Signal::SIGKILL);

    dev.wait_instances("web", "a restart", |i| {
        i.len() == 1 && i[0]["restarts"].as_u64() >= Some(1)
    })
    .await;
    wait_for_200(&url).await;
    let (_, events) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/web/events",
            None,
        )
        .await;
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for expected in ["Scheduled", "Started", "Ready", "Crashed", "Restarted"] {
        assert!(
            reasons.contains(&expected),
            "no {expected} event in {reasons:?}"
        );
    }
    // Stopping the control plane leaves the application serving; `paas down` stops it.
    paas.stop().await;
    assert_eq!(processes_mentioning(&marker), 1);
    wait_for_200(&url).await;
    site.down().await;
    assert_eq!(
        processes_mentioning(&marker),
        0,
        "an instance outlived the platform"
    );
}

#[tokio::test]
async fn scaling_changes_the_number_of_instances_and_stop_start_follow() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let marker = marker();
    dev.onboard("web", web_spec(&marker, 1)).await;
    dev.wait_instances("web", "one ready", |i| {
        i.iter().filter(|x| x["ready"] == true).count() == 1
    })
    .await;
    let (status, _) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/web/replicas",
            Some(json!({"replicas": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let three = dev
        .wait_instances("web", "three ready", |i| {
            i.iter().filter(|x| x["ready"] == true).count() == 3
        })
        .await;
    let nodes: std::collections::BTreeSet<&str> =
        three.iter().filter_map(|i| i["node"].as_str()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "instances spread over both zones: {three:#?}"
    );
    let (status, _) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/web/replicas",
            Some(json!({"replicas": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    dev.wait_instances("web", "one left", |i| i.len() == 1)
        .await;
    let (status, _) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/web/stop",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    dev.wait_instances("web", "none left", <[Value]>::is_empty)
        .await;
    let (status, _) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/web/start",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    dev.wait_instances("web", "back to one", |i| {
        i.len() == 1 && i[0]["ready"] == true
    })
    .await;
    paas.stop().await;
}

#[tokio::test]
async fn bad_artifacts_show_a_clear_state_and_disturb_nothing_else() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard("missing", json!({"command": "/no/such/program"}))
        .await;
    dev.onboard("crasher", json!({"command": "sh", "args": ["-c", "echo 'fatal: DATABASE_URL is not set' >&2; exit 2"]})).await;
    dev.onboard(
        "never-ready",
        json!({"command": "sleep", "args": ["300"], "ports": [{"name": "http"}], "health": {"readiness": {"http_path": "/healthz", "period_ms": 100}}}),
    )
    .await;
    let message = |i: &[Value]| {
        i.first()
            .and_then(|x| x["message"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let missing = dev
        .wait_instances("missing", "back-off", |i| {
            i.first().is_some_and(|x| x["phase"] == "back_off")
        })
        .await;
    assert!(
        message(&missing).contains("command '/no/such/program' was not found"),
        "{missing:#?}"
    );
    let crasher = dev
        .wait_instances("crasher", "back-off", |i| {
            i.first().is_some_and(|x| x["phase"] == "back_off")
        })
        .await;
    assert!(
        message(&crasher).contains("exited with code 2"),
        "{crasher:#?}"
    );
    assert!(
        message(&crasher).contains("DATABASE_URL is not set"),
        "{crasher:#?}"
    );
    let never = dev
        .wait_instances("never-ready", "a readiness failure naming its check", |i| {
            message(i).contains("/healthz")
        })
        .await;
    assert_eq!(never[0]["ready"], false);
    // The router answers 503 for it, and the sample application is unaffected.
    let response =
        must(reqwest::get(format!("{}/apps/acme/dev/never-ready/", site.router())).await);
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    wait_for_200(&format!("{}/apps/acme/dev/hello/", site.router())).await;
    paas.stop().await;
}

#[tokio::test]
async fn killing_the_control_plane_drops_no_request_and_its_successor_adopts_everything() {
    let site = Site::new(&[]).await;
    let mut paas = paas_up(&site).await;
    let password = paas.passwords["dev"].clone();
    let dev = Tenant::login(&paas, "dev").await;
    let marker = marker();
    dev.onboard("web", web_spec(&marker, 2)).await;
    dev.wait_instances("web", "two ready", |i| {
        i.iter().filter(|x| x["ready"] == true).count() == 2
    })
    .await;
    let url = format!("{}/apps/acme/dev/web/index.html", site.router());
    wait_for_200(&url).await;

    // Steady traffic, about 100 requests a second, for the whole episode.
    let load = support::load::Load::start(&url, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    must(paas.child.kill().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let successor = paas_up(&site).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    let (ok, failed) = (tally.ok, tally.failed);
    assert!(ok > 200, "only {ok} requests went through");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed while the control plane was down",
        ok + failed
    );

    // No duplicate and no orphan: still exactly two instances and one agent.
    let dev = Tenant::login_as(&successor.url, "dev", &password).await;
    let instances = dev
        .wait_instances("web", "two ready", |i| {
            i.iter().filter(|x| x["ready"] == true).count() == 2
        })
        .await;
    assert_eq!(instances.len(), 2);
    assert_eq!(processes_mentioning(&marker), 2);
    let agents = processes_mentioning(&format!(
        "--state-dir {} ",
        site.data_dir.join("agents").join("node-1").display()
    ));
    assert_eq!(agents, 1, "one agent for node-1");
    successor.stop().await;
    site.down().await;
    assert_eq!(processes_mentioning(&marker), 0);
}

#[tokio::test]
async fn stateful_daemon_and_job_kinds_run_as_their_kind_says() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // Stateful: ordinal names, and a data directory per ordinal that survives a restart.
    dev.onboard(
        "db",
        json!({"kind": "stateful", "command": "sh", "args": ["-c", "echo start >> data.log; sleep 300"], "replicas": 2}),
    )
    .await;
    let db = dev
        .wait_instances("db", "two ordinals running", |i| {
            i.len() == 2 && i.iter().all(|x| x["phase"] == "running")
        })
        .await;
    let mut names: Vec<&str> = db.iter().filter_map(|i| i["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["db-0", "db-1"]);
    let (status, _) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/db/restart",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let node_of_0 = |instances: &[Value]| {
        instances
            .iter()
            .find(|i| i["name"] == "db-0")
            .and_then(|i| i["node"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    // An ordinal's data directory is kept under its application's id.
    let (_, app) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/db",
            None,
        )
        .await;
    let app_id = app["id"].as_str().unwrap_or_default().to_owned();
    assert!(!app_id.is_empty(), "{app}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let node = node_of_0(&dev.instances("db").await);
        let log = site
            .data_dir
            .join("agents")
            .join(&node)
            .join(format!("work/acme/dev/db/{app_id}/ordinal-0/data.log"));
        if std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ordinal 0 did not restart in its own data directory"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Daemon: one instance on every node.
    dev.onboard(
        "agent-sidecar",
        json!({"kind": "daemon", "command": "sleep", "args": ["300"]}),
    )
    .await;
    let daemons = dev
        .wait_instances("agent-sidecar", "one per node", |i| {
            i.len() == 2 && i.iter().all(|x| x["phase"] == "running")
        })
        .await;
    let nodes: std::collections::BTreeSet<&str> =
        daemons.iter().filter_map(|i| i["node"].as_str()).collect();
    assert_eq!(nodes.len(), 2);

    // Job: runs to completion and stays completed.
    dev.onboard(
        "migrate",
        json!({"kind": "job", "command": "sh", "args": ["-c", "echo migrated"]}),
    )
    .await;
    dev.wait_instances("migrate", "completion", |i| {
        i.len() == 1 && i[0]["phase"] == "succeeded"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = dev.instances("migrate").await;
    assert_eq!(
        (after.len(), after[0]["restarts"].as_u64()),
        (1, Some(0)),
        "{after:#?}"
    );
    paas.stop().await;
}

#[tokio::test]
async fn a_cron_job_runs_on_its_schedule_keeps_a_bounded_history_and_never_overlaps() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // Every two seconds, a run that finishes at once.
    dev.onboard(
        "tick",
        json!({"kind": "cronjob", "schedule": "*/2 * * * * *", "command": "sh", "args": ["-c", "echo tick"]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, events) = dev
            .call(
                reqwest::Method::GET,
                "/environments/dev/applications/tick/events",
                None,
            )
            .await;
        let completed = events["items"].as_array().map_or(0, |e| {
            e.iter().filter(|x| x["reason"] == "Completed").count()
        });
        if completed >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "fewer than 5 runs: {events:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Old runs are forgotten: at most the history and the run in progress remain.
    let instances: Vec<Value> = dev
        .instances("tick")
        .await
        .into_iter()
        .filter(|i| i["phase"] != "stopping")
        .collect();
    assert!(instances.len() <= 3, "history not bounded: {instances:#?}");
    assert!(
        instances
            .iter()
            .filter(|i| i["phase"] == "succeeded")
            .count()
            >= 2
    );

    // A run longer than the period is not started twice: the next tick is skipped.
    dev.onboard(
        "slow",
        json!({"kind": "cronjob", "schedule": "* * * * * *", "command": "sleep", "args": ["30"]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, events) = dev
            .call(
                reqwest::Method::GET,
                "/environments/dev/applications/slow/events",
                None,
            )
            .await;
        if events["items"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x["reason"] == "Skipped"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no skipped tick: {events:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let running = dev.instances("slow").await;
    assert_eq!(running.len(), 1, "{running:#?}");

    // Stopping the application suspends the schedule and stops the run.
    let (status, _) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/slow/stop",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    dev.wait_instances("slow", "the run stopped", <[Value]>::is_empty)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(dev.instances("slow").await.is_empty());
    paas.stop().await;
}

#[tokio::test]
async fn an_uploaded_package_is_unpacked_and_run_and_a_non_archive_is_refused() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // A package: a start script and the page it serves, made with the system's tar.
    // Inside the site's data directory, so it goes with the site.
    let src = site.data_dir.join("test-package");
    must(std::fs::create_dir_all(src.join("site")));
    must(std::fs::write(
        src.join("site/index.html"),
        "served from an uploaded package\n",
    ));
    must(std::fs::write(
        src.join("run.sh"),
        "#!/bin/sh\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1 --directory site\n",
    ));
    let archive = src.with_extension("tar.gz");
    // tar keeps the mode: the script is executable once unpacked.
    must(std::fs::set_permissions(
        src.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    ));
    let made = must(
        std::process::Command::new("tar")
            .arg("czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .args(["run.sh", "site"])
            .status(),
    );
    assert!(made.success());
    let upload = |body: Vec<u8>| {
        dev.http
            .post(format!(
                "{}/api/v1/tenants/acme/packages?filename=site.tar.gz",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .header("content-type", "application/gzip")
            .body(body)
            .send()
    };
    let response = must(upload(must(std::fs::read(&archive))).await);
    assert_eq!(response.status(), StatusCode::CREATED);
    let package: Value = must(response.json().await);
    let digest = package["digest"].as_str().unwrap_or_default().to_owned();
    assert!(digest.starts_with("sha256:"), "{package}");
    assert_eq!(package["files"], 2);

    dev.onboard(
        "packaged",
        json!({"command": "./run.sh", "package": digest, "ports": [{"name": "http"}]}),
    )
    .await;
    wait_for_200(&format!("{}/apps/acme/dev/packaged/", site.router())).await;
    let page = must(
        must(reqwest::get(format!("{}/apps/acme/dev/packaged/", site.router())).await)
            .text()
            .await,
    );
    assert_eq!(page, "served from an uploaded package\n");

    // What is not an archive is refused at the door, naming the field.
    let response = must(upload(b"just some text, certainly not a tarball".to_vec()).await);
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = must(response.json().await);
    assert_eq!(error["field"], "package", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a tar"),
        "{error}"
    );
    // A spec naming a package nobody uploaded is refused too.
    let (status, error) = dev
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "dev", "name": "ghost", "spec": {"command": "./run.sh", "package": format!("sha256:{}", "0".repeat(64))}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "spec.package", "{error}");
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_file(&archive);
    paas.stop().await;
}

#[tokio::test]
async fn runtimes_list_their_nodes_and_environments_choose_a_runtime_that_exists() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let paas = paas_up(&site).await;
    let admin = Tenant::login(&paas, "admin").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let local = loop {
        let body: Value = must(
            must(
                admin
                    .http
                    .get(format!("{}/api/v1/admin/runtimes", admin.base))
                    .bearer_auth(&admin.token)
                    .send()
                    .await,
            )
            .json()
            .await,
        );
        let local = body["items"][0].clone();
        if local["nodes"].as_array().is_some_and(|n| n.len() == 2) {
            break local;
        }
        assert!(Instant::now() < deadline, "{body:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(local["name"], "local");
    let mut zones: Vec<&str> = local["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["labels"]["zone"].as_str())
        .collect();
    zones.sort_unstable();
    assert_eq!(zones, ["a", "b"]);
    // A developer may not see the platform's nodes.
    let dev = Tenant::login(&paas, "dev").await;
    let status = must(
        dev.http
            .get(format!("{}/api/v1/admin/runtimes", dev.base))
            .bearer_auth(&dev.token)
            .send()
            .await,
    )
    .status();
    assert_eq!(status, StatusCode::FORBIDDEN);

    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (status, body) = tadmin
        .call(
            reqwest::Method::POST,
            "/environments",
            Some(json!({"name": "edge", "runtime": "nowhere"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "runtime");
    let (status, body) = tadmin
        .call(
            reqwest::Method::POST,
            "/environments",
            Some(json!({"name": "edge", "runtime": "local"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["runtime"], "local");
    // The local runtime runs processes: an image alone is refused before anything runs.
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(
                json!({"environment": "dev", "name": "imageonly", "spec": {"image": "nginx:1.27"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "spec.command");
    paas.stop().await;
}

#[tokio::test]
async fn a_followed_log_streams_new_lines_as_they_are_written() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard(
        "ticker",
        json!({"command": "sh", "args": ["-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]}),
    )
    .await;
    let running = dev
        .wait_instances("ticker", "running", |i| {
            i.first().is_some_and(|x| x["phase"] == "running")
        })
        .await;
    let name = running[0]["name"].as_str().unwrap_or_default().to_owned();
    let mut response = must(
        dev.http
            .get(format!(
                "{}/api/v1/tenants/acme/environments/dev/applications/ticker/instances/{name}/logs?follow=true&tail=1",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    // Lines arrive while the process writes them, each once and in order.
    let mut ticks: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ticks.len() < 8 {
        assert!(Instant::now() < deadline, "only {ticks:?}");
        let chunk = must(
            tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .map_err(|_| "no chunk"),
        );
        let Some(chunk) = must(chunk) else {
            panic!("the stream ended after {ticks:?}")
        };
        for line in String::from_utf8_lossy(&chunk).lines() {
            if let Some(n) = line
                .strip_prefix("data: tick ")
                .and_then(|n| n.trim().parse().ok())
            {
                ticks.push(n);
            }
        }
    }
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or repeated: {ticks:?}"
    );
    drop(response);
    // The console's logs page refreshes its lines through htmx: the fragment holds them.
    let fragment = must(
        dev.http
            .get(format!(
                "{}/t/acme/environments/dev/apps/ticker/instances/{name}/logs?fragment=1",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .header("HX-Request", "true")
            .send()
            .await,
    );
    assert_eq!(fragment.status(), StatusCode::OK);
    let body = must(fragment.text().await);
    assert!(
        body.contains("tick ") && !body.contains("<html"),
        "{body:?}"
    );
    paas.stop().await;
}

#[tokio::test]
async fn a_stateful_application_keeps_stable_per_ordinal_addresses_and_knows_its_peers() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard(
        "kv",
        json!({
            "kind": "stateful", "command": "redis-server", "replicas": 2,
            "args": ["--port", "$PORT", "--bind", "127.0.0.1", "--dir", ".", "--appendonly", "yes",
                     "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            "ports": [{"name": "redis", "protocol": "tcp"}]
        }),
    )
    .await;
    let ready = |i: &[Value]| i.iter().filter(|x| x["ready"] == true).count() == 2;
    let before = dev.wait_instances("kv", "two ordinals ready", ready).await;
    let (status, endpoints) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/kv/endpoints",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let address = |ordinal: Option<u64>| {
        endpoints["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["ordinal"].as_u64() == ordinal)
            .and_then(|e| e["address"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (zero, one, any) = (address(Some(0)), address(Some(1)), address(None));
    assert!(
        !zero.is_empty() && !one.is_empty() && !any.is_empty(),
        "{endpoints:#}"
    );
    // Each ordinal's stable address reaches that ordinal (the router listens already).
    for (address, value) in [(&zero, "zero"), (&one, "one")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !support::redis::set(address, "who", value).await {
            assert!(Instant::now() < deadline, "{address} never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A restart replaces both ordinals: same data, same stable addresses, and the
    // ordinals keep their own ports where they can.
    let (status, _) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/kv/restart",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = dev
        .wait_instances("kv", "two ordinals ready again", ready)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = (
            support::redis::get(&zero, "who").await,
            support::redis::get(&one, "who").await,
        );
        if got == (Some("zero".into()), Some("one".into())) {
            break;
        }
        assert!(Instant::now() < deadline, "after the restart: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ports = |list: &[Value]| {
        let mut p: Vec<(u64, String)> = list
            .iter()
            .filter(|i| i["ready"] == true)
            .filter_map(|i| Some((i["ordinal"].as_u64()?, i["address"].as_str()?.to_owned())))
            .collect();
        p.sort();
        p
    };
    assert_eq!(ports(&before), ports(&after), "an ordinal's own port moved");
    // The whole application's address reaches one of them.
    assert!(support::redis::get(&any, "who").await.is_some());

    // A stateful application's instances are told their ordinal and their peers.
    dev.onboard(
        "peers",
        json!({
            "kind": "stateful", "command": "sh", "replicas": 2,
            "args": ["-c", "echo \"ordinal=$PAAS_ORDINAL peers=$PAAS_PEERS\"; exec sleep 300"],
            "ports": [{"name": "gossip", "protocol": "tcp"}]
        }),
    )
    .await;
    // It never listens, so it never turns ready; it starts all the same.
    let peers = dev
        .wait_instances("peers", "two started", |i| {
            i.len() == 2 && i.iter().all(|x| x["phase"] == "starting")
        })
        .await;
    let (_, endpoints) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/peers/endpoints",
            None,
        )
        .await;
    let of = |o: u64| {
        endpoints["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["ordinal"].as_u64() == Some(o))
            .and_then(|e| e["address"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let expected = format!("peers={},{}", of(0), of(1));
    for instance in &peers {
        let name = instance["name"].as_str().unwrap_or_default();
        let ordinal = instance["ordinal"].as_u64().unwrap_or(99);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, logs) = dev
                .call(
                    reqwest::Method::GET,
                    &format!("/environments/dev/applications/peers/instances/{name}/logs"),
                    None,
                )
                .await;
            let text = logs.to_string();
            if text.contains(&format!("ordinal={ordinal} {expected}")) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    paas.stop().await;
}

#[tokio::test]
async fn a_periodic_band_raises_the_floor_at_its_start_and_the_idle_count_falls_back_at_its_end() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let marker = format!("band-{}", uuid::Uuid::new_v4().simple());
    dev.onboard("elastic", web_spec(&marker, 1)).await;
    let ready = |n: usize| {
        move |i: &[Value]| i.iter().filter(|x| x["ready"] == true).count() == n && i.len() == n
    };
    dev.wait_instances("elastic", "one ready instance", ready(1))
        .await;
    // A daily window a few seconds ahead, in UTC wall-clock time (not across midnight,
    // where it would end the next day).
    let seconds_of_day = chrono::Timelike::num_seconds_from_midnight(&chrono::Utc::now());
    if seconds_of_day > 86_400 - 60 {
        tokio::time::sleep(Duration::from_secs(u64::from(86_400 - seconds_of_day) + 2)).await;
    }
    let start = chrono::DurationRound::duration_trunc(
        chrono::Utc::now() + chrono::Duration::seconds(5),
        chrono::Duration::seconds(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let end = start + chrono::Duration::seconds(10);
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M:%S").to_string();
    let policy = json!({
        "min": 1, "max": 4, "sample_interval_s": 1,
        // Idle instances use next to no CPU: outside the band the rule asks for 1. (A
        // high target: a starting Python may well use its whole request for a moment.)
        "rules": [{"metric": {"type": "cpu"}, "target": 1000}],
        "behavior": {"scale_down": {"stabilization_s": 0, "limits": [{"kind": "instances", "value": 10, "period_s": 1}]}},
        "bands": [{"name": "launch", "min": 3, "max": 4,
                   "when": {"type": "periodic", "start_time": time(start), "end_time": time(end)}}]
    });
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/elastic/autoscaling",
            Some(policy),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Before the band: still one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dev.instances("elastic").await.len(), 1);
    dev.wait_instances("elastic", "three ready instances in the band", ready(3))
        .await;
    let ledger = || async {
        dev.call(
            reqwest::Method::GET,
            "/environments/dev/applications/elastic/autoscaling/decisions?applied=true",
            None,
        )
        .await
        .1
    };
    assert!(
        chrono::Utc::now() >= start,
        "scaled out before the band started: {:#}",
        ledger().await
    );
    dev.wait_instances("elastic", "one instance after the band", ready(1))
        .await;
    assert!(chrono::Utc::now() >= end, "scaled in before the band ended");
    // The ledger says why, both ways.
    let (status, body) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/elastic/autoscaling/decisions?applied=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["items"].as_array().cloned().unwrap_or_default();
    let moves: Vec<(i64, i64)> = rows
        .iter()
        .rev()
        .filter_map(|r| Some((r["previous"].as_i64()?, r["desired"].as_i64()?)))
        .collect();
    assert_eq!(moves, [(1, 3), (3, 1)], "{body:#}");
    let up = &rows[rows.len() - 1];
    assert!(
        up["reason"]
            .as_str()
            .unwrap_or("")
            .contains("periodic band 'launch' sets 3..4"),
        "{up:#}"
    );
    assert_eq!(
        up["decision"]["clamps"]
            .as_array()
            .and_then(|c| c.last())
            .map(|c| c["step"].clone()),
        Some(json!("band"))
    );
}

#[tokio::test]
async fn a_load_step_through_the_router_scales_a_service_out_and_back_in_after_the_window() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let marker = format!("load-{}", uuid::Uuid::new_v4().simple());
    dev.onboard("busy", web_spec(&marker, 1)).await;
    let url = format!("{}/apps/acme/dev/busy/", site.router());
    wait_for_200(&url).await;
    // The router's counters are the platform's: no token, no reading.
    let metrics = must(std::fs::read_to_string(
        site.data_dir.join("router-metrics-addr"),
    ));
    let token = must(std::fs::read_to_string(
        site.data_dir.join("router-metrics-token"),
    ));
    let http = reqwest::Client::new();
    let refused = must(
        http.get(format!("http://{}/metrics", metrics.trim()))
            .send()
            .await,
    );
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let policy = json!({
        "min": 1, "max": 4, "sample_interval_s": 1,
        "rules": [{"metric": {"type": "requests_per_second"}, "target": 20}],
        "behavior": {"scale_down": {"stabilization_s": 5, "limits": [{"kind": "instances", "value": 4, "period_s": 1}]}}
    });
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/busy/autoscaling",
            Some(policy),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready = |n: usize| {
        move |i: &[Value]| i.iter().filter(|x| x["ready"] == true).count() == n && i.len() == n
    };
    // About 60 requests a second against a target of 20 per instance: 3 instances, or
    // 4 (the policy's max) when a reading comes out a little high: ceil(3.3) = 4.
    let load = support::load::Load::start(&url, 60);
    let at_least =
        |n: usize| move |i: &[Value]| i.iter().filter(|x| x["ready"] == true).count() >= n;
    dev.wait_instances(
        "busy",
        "at least three ready instances under load",
        at_least(3),
    )
    .await;
    let text = must(
        must(
            http.get(format!("http://{}/metrics", metrics.trim()))
                .bearer_auth(token.trim())
                .send()
                .await,
        )
        .text()
        .await,
    );
    assert!(
        text.contains(
            "paas_router_requests_total{tenant=\"acme\",environment=\"dev\",application=\"busy\"}"
        ),
        "{text}"
    );
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    dev.wait_instances("busy", "one instance once the load is gone", ready(1))
        .await;
    let (_, body) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/busy/autoscaling/decisions?applied=true",
            None,
        )
        .await;
    let rows = body["items"].as_array().cloned().unwrap_or_default();
    let first = rows.last().cloned().unwrap_or_default();
    assert_eq!(first["previous"], 1, "{body:#}");
    assert_eq!(
        first["decision"]["rules"][0]["metric"],
        "requests_per_second"
    );
    assert!(
        first["decision"]["rules"][0]["reading"]["value"]
            .as_f64()
            .unwrap_or(0.0)
            > 20.0,
        "{first:#}"
    );
    let last = rows.first().cloned().unwrap_or_default();
    assert_eq!(last["desired"], 1, "{body:#}");
}

/// A real Prometheus (Debian's `prometheus`) scraping the router's counters every
/// second with the router's token; killed with the test.
fn prometheus(site: &Site, port: u16, router_metrics: &str) -> tokio::process::Child {
    let dir = site.data_dir.join("prometheus");
    must(std::fs::create_dir_all(&dir));
    let config = dir.join("prometheus.yml");
    must(std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: paas-router\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{router_metrics}']\n",
            site.data_dir.join("router-metrics-token").display()
        ),
    ));
    let binary =
        std::env::var("PAAS_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".to_owned());
    must(
        tokio::process::Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{binary}: {e} (apt-get install prometheus)")),
    )
}

#[tokio::test]
async fn a_promql_rule_against_a_real_prometheus_scraping_the_router_scales_a_service() {
    let prometheus_port = support::binary::free_port();
    let router_metrics = format!("127.0.0.1:{}", support::binary::free_port());
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    let site = Site::new(&[
        "--prometheus-url",
        &prometheus_url,
        "--router-metrics-listen",
        &router_metrics,
    ])
    .await;
    let paas = paas_up(&site).await;
    let _prometheus = prometheus(&site, prometheus_port, &router_metrics);
    let dev = Tenant::login(&paas, "dev").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let marker = format!("promql-{}", uuid::Uuid::new_v4().simple());
    dev.onboard("orders", web_spec(&marker, 1)).await;
    let url = format!("{}/apps/acme/dev/orders/", site.router());
    wait_for_200(&url).await;
    // Until Prometheus answers, a PromQL rule is refused by name.
    let query = "sum(rate(paas_router_requests_total{application=\"orders\"}[5s])) or vector(0)";
    let policy = json!({
        "min": 1, "max": 4, "sample_interval_s": 1,
        "rules": [{"metric": {"type": "promql", "query": query}, "target": 20}],
        "behavior": {"scale_down": {"stabilization_s": 600}}
    });
    let path = "/environments/dev/applications/orders/autoscaling";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = tadmin
            .call(reqwest::Method::PUT, path, Some(policy.clone()))
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("rules[0].metric.query"),
            "{body}"
        );
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A query Prometheus refuses is a field error too.
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            path,
            Some(json!({"min": 1, "max": 4, "rules": [{"metric": {"type": "promql", "query": "sum(rate("}, "target": 1}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("Prometheus refused"),
        "{body}"
    );
    // About 60 requests a second, as Prometheus reads them from the router: 3
    // instances, or 4 (the max) when its rate() extrapolates a little high.
    let ready = |n: usize| move |i: &[Value]| i.iter().filter(|x| x["ready"] == true).count() >= n;
    let load = support::load::Load::start(&url, 60);
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let instances = dev.instances("orders").await;
        if ready(3)(&instances) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never scaled to 3 or more: {instances:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    let (_, body) = dev
        .call(
            reqwest::Method::GET,
            &format!("{path}/decisions?applied=true"),
            None,
        )
        .await;
    let first = body["items"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        first["decision"]["rules"][0]["metric"], "promql",
        "{body:#}"
    );
}

#[tokio::test]
async fn a_restart_replaces_every_instance_one_at_a_time_and_drops_no_request() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let marker = format!("restart-{}", uuid::Uuid::new_v4().simple());
    dev.onboard("steady", web_spec(&marker, 2)).await;
    let url = format!("{}/apps/acme/dev/steady/", site.router());
    wait_for_200(&url).await;
    let before: Vec<String> = dev
        .wait_instances("steady", "two ready instances", |i| {
            i.len() == 2 && i.iter().all(|x| x["ready"] == true)
        })
        .await
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect();
    let load = support::load::Load::start(&url, 50);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/steady/restart",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    dev.wait_instances("steady", "two new ready instances", |i| {
        i.len() == 2
            && i.iter().all(|x| {
                x["ready"] == true
                    && !before
                        .iter()
                        .any(|b| Some(b.as_str()) == x["name"].as_str())
            })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 50, "{tally:?}");
    // The restart is a revision of the same spec, in the history and the audit log.
    let (_, app) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/steady",
            None,
        )
        .await;
    assert_eq!(app["current_revision"], 2, "{app}");
}

/// The release's state, polled until `done` says so (60 s at most); the release.
async fn wait_release(
    who: &Tenant,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
    mut each: impl FnMut(&Value),
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, release) = who.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{release}");
        each(&release);
        if done(&release) {
            return release;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {release:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn live_instances(who: &Tenant, env: &str, app: &str) -> Vec<Value> {
    let (_, body) = who
        .call(
            reqwest::Method::GET,
            &format!("/environments/{env}/applications/{app}/instances"),
            None,
        )
        .await;
    body["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["phase"] != "stopping")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_release_in_prod_waits_for_an_ops_approval_then_rolls_within_its_surge_dropping_no_request()
 {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let ops = Tenant::login(&paas, "ops").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (v1, v2) = (marker(), marker());
    let (status, body) = ops
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "prod", "name": "shop", "spec": web_spec(&v1, 4)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!("{}/apps/acme/prod/shop/", site.router());
    wait_for_200(&url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_instances(&ops, "prod", "shop")
        .await
        .iter()
        .filter(|i| i["ready"] == true)
        .count()
        < 4
    {
        assert!(Instant::now() < deadline, "four ready instances");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = support::load::Load::start(&url, 50);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let app = "/environments/prod/applications/shop";
    let (status, body) = ops
        .call(
            reqwest::Method::PUT,
            app,
            Some(json!({"spec": web_spec(&v2, 4)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = ops
        .call(reqwest::Method::GET, &format!("{app}/releases"), None)
        .await;
    let id = list["items"][0]["id"].as_i64().unwrap_or_default();
    let release = format!("{app}/releases/{id}");
    // Waiting for approval, nothing of the new revision runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(processes_mentioning(&v2), 0);
    let (_, waiting) = ops.call(reqwest::Method::GET, &release, None).await;
    assert_eq!(waiting["state"], "pending_approval", "{waiting}");
    // The requester cannot approve; a tenant admin does.
    let (status, _) = ops
        .call(reqwest::Method::POST, &format!("{release}/approve"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = tadmin
        .call(reqwest::Method::POST, &format!("{release}/approve"), None)
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("progressing")),
        "{body}"
    );

    // The default strategy: 25% surge and 25% unavailable of 4, so never more than 5
    // instances, and never fewer than 3 ready.
    let mut most = 0;
    let mut fewest_ready = usize::MAX;
    let done = wait_release(
        &ops,
        &release,
        "the release to succeed",
        |r| r["state"] == "succeeded",
        |_| {},
    );
    let watch = async {
        loop {
            let live = live_instances(&ops, "prod", "shop").await;
            // While the node is silent (a loaded machine delays its heartbeat) what
            // runs is not known; the release holds then, and so does this count.
            if live.iter().all(|i| i["phase"] != "unknown") {
                most = most.max(live.len());
                fewest_ready = fewest_ready.min(live.iter().filter(|i| i["ready"] == true).count());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let finished = tokio::select! {
        r = done => r,
        () = watch => unreachable!(),
    };
    assert!(most <= 5, "at most replicas + surge: {most}");
    assert!(
        fewest_ready >= 3,
        "at least replicas - unavailable ready: {fewest_ready}"
    );
    let kinds: Vec<&str> = finished["timeline"]
        .as_array()
        .map(|t| t.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds[..4],
        ["requested", "waiting", "approved", "started"],
        "{finished:#}"
    );
    assert!(
        kinds.iter().filter(|k| **k == "step").count() >= 2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"succeeded"));
    let (_, detail) = ops.call(reqwest::Method::GET, app, None).await;
    assert_eq!(detail["released_revision"], 2, "{detail}");
    let live = live_instances(&ops, "prod", "shop").await;
    assert!(live.iter().all(|i| i["revision"] == 2), "{live:#?}");
    // Exactly four processes run it once what stops has stopped (on a loaded machine a
    // node that was slow to report may have had an instance replaced meanwhile).
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_mentioning(&v2) != 4 {
        assert!(
            Instant::now() < deadline,
            "{} processes of revision 2",
            processes_mentioning(&v2)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 100, "{tally:?}");
}

#[tokio::test]
async fn a_crash_looping_revision_is_rolled_back_automatically_and_the_stable_instances_are_untouched()
 {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let marker = marker();
    dev.onboard("fragile", web_spec(&marker, 2)).await;
    let url = format!("{}/apps/acme/dev/fragile/", site.router());
    wait_for_200(&url).await;
    let stable: Vec<Value> = dev
        .wait_instances("fragile", "two ready instances", |i| {
            i.len() == 2 && i.iter().all(|x| x["ready"] == true)
        })
        .await;
    let load = support::load::Load::start(&url, 50);
    let app = "/environments/dev/applications/fragile";
    let broken = json!({"command": "sh", "args": ["-c", "echo no database configured >&2; exit 3"],
        "replicas": 2, "ports": [{"name": "http"}]});
    let (status, body) = dev
        .call(reqwest::Method::PUT, app, Some(json!({"spec": broken})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = dev
        .call(reqwest::Method::GET, &format!("{app}/releases"), None)
        .await;
    let id = list["items"][0]["id"].as_i64().unwrap_or_default();
    let release = format!("{app}/releases/{id}");
    let ended = wait_release(
        &dev,
        &release,
        "the automatic rollback",
        |r| r["state"] != "progressing",
        |_| {},
    )
    .await;
    assert_eq!(ended["state"], "rolled_back", "{ended:#}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap_or("")
            .contains("crash-looping"),
        "{ended:#}"
    );
    // The new revision's instance goes; the stable ones were never restarted.
    let now = dev
        .wait_instances("fragile", "only the stable instances", |i| {
            i.len() == 2 && i.iter().all(|x| x["revision"] == 1)
        })
        .await;
    let names = |v: &[Value]| -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&now), names(&stable));
    assert!(now.iter().all(|i| i["restarts"] == 0), "{now:#?}");
    let (_, detail) = dev.call(reqwest::Method::GET, app, None).await;
    assert_eq!(
        (
            detail["current_revision"].as_i64(),
            detail["released_revision"].as_i64()
        ),
        (Some(2), Some(1))
    );
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
}

/// A service that answers its marker, and 500 to every `every`-th request that came
/// through the router (0: never); probes (which come straight) always pass.
fn marked_spec(marker: &str, every: u32, replicas: u32) -> Value {
    let script = r#"
import http.server, itertools, os, sys
marker, every = sys.argv[1], int(sys.argv[2])
count = itertools.count(1)
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        routed = "X-Forwarded-For" in self.headers
        fail = routed and every > 0 and next(count) % every == 0
        body = (marker + "\n").encode()
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;
    json!({"command": "python3", "args": ["-c", script, marker, every.to_string()],
        "replicas": replicas, "ports": [{"name": "http"}]})
}

/// The bodies of `n` requests to `url` with `X-Canary: canary` (none: no header).
async fn bodies(url: &str, n: usize, canary: Option<&str>) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = http.get(url);
        if let Some(v) = canary {
            req = req.header("X-Canary", v);
        }
        let r = must(req.send().await);
        out.push(must(r.text().await).trim().to_owned());
    }
    out
}

#[tokio::test]
async fn a_canary_gets_its_share_and_is_promoted_and_a_failing_one_is_rolled_back_within_four_checks()
 {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (v1, v2, v3) = (marker(), marker(), marker());
    dev.onboard("shop", marked_spec(&v1, 0, 2)).await;
    let url = format!("{}/apps/acme/dev/shop/", site.router());
    wait_for_200(&url).await;
    dev.wait_instances("shop", "two ready instances", |i| {
        i.len() == 2 && i.iter().all(|x| x["ready"] == true)
    })
    .await;
    let policy = json!({"approval": {"required": false}, "strategy": {"type": "canary",
        "steps": [{"weight": 25, "pause_s": 8}, {"weight": 100}],
        "analysis": {"interval_s": 2, "min_requests": 10}}});
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/release-policy",
            Some(policy),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let load = support::load::Load::start(&url, 60);
    let app = "/environments/dev/applications/shop";

    // A good canary: a quarter of the requests, the header picks a side, the checks
    // pass, and it is promoted.
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            app,
            Some(json!({"spec": marked_spec(&v2, 0, 2)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = dev
        .call(reqwest::Method::GET, &format!("{app}/releases"), None)
        .await;
    let id = list["items"][0]["id"].as_i64().unwrap_or_default();
    let release = format!("{app}/releases/{id}");
    wait_release(
        &dev,
        &release,
        "the first step's canary to be ready",
        |r| r["canary"]["ready_since"].is_string() && r["canary"]["step"] == 0,
        |_| {},
    )
    .await;
    // Give the router the new table (it follows within a moment).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let always = bodies(&url, 20, Some("always")).await;
    assert!(always.iter().all(|b| *b == v2), "{always:?}");
    let never = bodies(&url, 20, Some("never")).await;
    assert!(never.iter().all(|b| *b == v1), "{never:?}");
    let mixed = bodies(&url, 200, None).await;
    let to_canary = mixed.iter().filter(|b| **b == v2).count();
    // Exactly 25 of every 100 the router splits; the load's requests interleave.
    assert!((30..=70).contains(&to_canary), "{to_canary} of 200");
    // The last step has no pause: it waits for someone to continue, which a
    // developer may not do.
    wait_release(
        &dev,
        &release,
        "the last step to wait",
        |r| r["canary"]["step"] == 1 && r["canary"]["ready_since"].is_string(),
        |_| {},
    )
    .await;
    let (status, _) = dev
        .call(reqwest::Method::POST, &format!("{release}/continue"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = tadmin
        .call(
            reqwest::Method::POST,
            &format!("{release}/continue"),
            Some(json!({"reason": "the canary looks good"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done = wait_release(
        &dev,
        &release,
        "the canary's promotion",
        |r| !matches!(r["state"].as_str(), Some("progressing")),
        |_| {},
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let timeline = done["timeline"].as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| {
        timeline
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(of_kind("canary_step").len() >= 3, "{done:#}");
    assert!(
        of_kind("analysis").iter().any(|m| m.contains("passed")),
        "{done:#}"
    );
    let stable: Vec<Value> = dev
        .wait_instances("shop", "two instances of revision 2", |i| {
            i.len() == 2 && i.iter().all(|x| x["revision"] == 2 && x["ready"] == true)
        })
        .await;
    let good = load.tally();
    assert_eq!(good.failed, 0, "{good:?}");

    // A canary that fails one request in five is rolled back by its analysis, and the
    // stable instances are never restarted.
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            app,
            Some(json!({"spec": marked_spec(&v3, 5, 2)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = dev
        .call(reqwest::Method::GET, &format!("{app}/releases"), None)
        .await;
    let id = list["items"][0]["id"].as_i64().unwrap_or_default();
    let release = format!("{app}/releases/{id}");
    let ended = wait_release(
        &dev,
        &release,
        "the failing canary's rollback",
        |r| !matches!(r["state"].as_str(), Some("progressing")),
        |_| {},
    )
    .await;
    assert_eq!(ended["state"], "rolled_back", "{ended:#}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("failed its analysis"),
        "{ended:#}"
    );
    let checks = ended["canary"]["checks"].as_u64().unwrap_or(u64::MAX);
    assert!(
        (1..=4).contains(&checks),
        "aborted within 4 checks: {ended:#}"
    );
    let now = dev
        .wait_instances("shop", "only the stable instances", |i| {
            i.len() == 2 && i.iter().all(|x| x["revision"] == 2)
        })
        .await;
    let names = |v: &[Value]| -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&now), names(&stable));
    assert!(now.iter().all(|i| i["restarts"] == 0), "{now:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = load.stop().await;
    // Every failed request was one of the canary's own 500s: none was dropped.
    assert_eq!(tally.failed, tally.internal_errors, "{tally:?}");
    assert!(tally.internal_errors > 0, "{tally:?}");
}

/// Runs the `paas` client with its config directory in `config`; (exit code, stdout,
/// stderr).
fn paas_cli(config: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = must(
        std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
            .args(args)
            .env("XDG_CONFIG_HOME", config)
            .env_remove("PAAS_PASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn(),
    );
    if let Some(mut input) = child.stdin.take() {
        must(input.write_all(stdin.as_bytes()));
    }
    let out = must(child.wait_with_output());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ops_approve_a_developers_prod_release_from_the_terminal_with_exit_codes_a_script_can_use()
{
    use std::os::unix::fs::PermissionsExt as _;
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let ops = Tenant::login(&paas, "ops").await;
    let dev = Tenant::login(&paas, "dev").await;
    let first = marker();
    let (status, body) = ops
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "prod", "name": "cart", "spec": web_spec(&first, 1)})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A developer requests a change in prod: it waits for an approval.
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/prod/applications/cart",
            Some(json!({"spec": web_spec(&marker(), 1)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let config = site.data_dir.join("cli-config");
    let url = paas.url.as_str();
    let password = format!("{}\n", paas.passwords["ops"]);
    // Not signed in yet: 3.
    let (code, _, err) = paas_cli(&config, &["releases"], "");
    assert_eq!(code, 3, "{err}");
    // A wrong password is refused: 1; the platform not there: 4.
    let (code, _, _) = paas_cli(
        &config,
        &[
            "login",
            "--url",
            url,
            "--username",
            "ops",
            "--password-stdin",
        ],
        "wrong\n",
    );
    assert_eq!(code, 1);
    let (code, _, _) = paas_cli(
        &config,
        &[
            "login",
            "--url",
            "http://127.0.0.1:9",
            "--username",
            "ops",
            "--password-stdin",
        ],
        &password,
    );
    assert_eq!(code, 4);
    let (code, out, err) = paas_cli(
        &config,
        &[
            "login",
            "--url",
            url,
            "--username",
            "ops",
            "--password-stdin",
        ],
        &password,
    );
    assert_eq!(code, 0, "{out}{err}");
    let kept = config.join("paas").join("credentials.json");
    let mode = must(std::fs::metadata(&kept)).permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (code, out, err) = paas_cli(&config, &["releases", "--pending", "--output", "json"], "");
    assert_eq!(code, 0, "{err}");
    let list: Value = must(serde_json::from_str(&out));
    let pending = &list["items"][0];
    assert_eq!(pending["state"], "pending_approval", "{list:#}");
    assert_eq!(pending["requested_by"], "dev");
    let id = pending["id"].as_i64().unwrap_or_default().to_string();
    let (code, out, err) = paas_cli(
        &config,
        &["release", "approve", &id, "--reason", "looks right"],
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("progressing") || out.contains("succeeded"),
        "{out}"
    );
    assert!(out.contains("ops: approve: looks right"), "{out}");
    // Approving again is refused by the platform: 1, with its reason on stderr.
    let (code, _, err) = paas_cli(&config, &["release", "approve", &id], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409"), "{err}");
    let (code, _, _) = paas_cli(&config, &["release", "show", "999999"], "");
    assert_eq!(code, 1);
    // The release finishes; `show` says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, _) = paas_cli(&config, &["release", "show", &id, "--output", "json"], "");
        assert_eq!(code, 0);
        let detail: Value = must(serde_json::from_str(&out));
        if detail["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{detail:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Promotion: test has no cart, which the platform names.
    let (code, _, err) = paas_cli(
        &config,
        &["promote", "cart", "--from", "test", "--to", "prod"],
        "",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("from"), "{err}");
    // Help on every command.
    for command in ["login", "releases", "release", "promote"] {
        let (code, out, _) = paas_cli(&config, &[command, "--help"], "");
        assert_eq!((code, out.contains("Usage")), (0, true), "{command}");
    }
}

#[tokio::test]
async fn a_release_that_needs_room_the_node_lacks_says_why_and_can_be_aborted() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let admin = Tenant::login(&paas, "admin").await;
    // What the node has left, so that four instances fit and a fifth (the surge) does not.
    let free = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = must(
                admin
                    .http
                    .get(format!("{}/api/v1/admin/runtimes", admin.base))
                    .bearer_auth(&admin.token)
                    .send()
                    .await,
            );
            let body: Value = must(response.json().await);
            let node = &body["items"][0]["nodes"][0];
            if let (Some(cap), Some(used)) = (
                node["capacity"]["cpu_millis"].as_u64(),
                node["allocated"]["cpu_millis"].as_u64(),
            ) && node["healthy"] == true
            {
                break cap - used;
            }
            assert!(Instant::now() < deadline, "no node: {body:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let each = free / 4;
    assert!(each * 5 > free && each >= 10, "free {free}");
    // The demo quota is not what this is about.
    let response = must(
        admin
            .http
            .put(format!("{}/api/v1/admin/tenants/acme/quota", admin.base))
            .bearer_auth(&admin.token)
            .json(&json!({"max_instances": null, "max_cpu_millis": null, "max_memory_mib": null}))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::OK);
    let marker = marker();
    let mut spec = web_spec(&marker, 4);
    spec["resources"] = json!({"cpu_millis": each, "memory_mib": 32});
    dev.onboard("roomy", spec.clone()).await;
    dev.wait_instances("roomy", "four ready instances", |i| {
        i.len() == 4 && i.iter().all(|x| x["ready"] == true)
    })
    .await;
    // Never below the four ready: the new instance needs room of its own.
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/release-policy",
            Some(json!({"approval": {"required": false},
                "strategy": {"type": "rolling", "max_surge": 1, "max_unavailable": 0}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    spec["env"] = json!({"BUILD": "2"});
    let app = "/environments/dev/applications/roomy";
    // The pre-flight sees that the surge has no room and that nothing lets an old
    // instance stop first: refused, with the fix.
    let (status, body) = dev
        .call(reqwest::Method::PUT, app, Some(json!({"spec": spec})))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("runs 5 instances at its peak")
                && m.contains("4 can be placed")
                && m.contains("max_unavailable")),
        "{body}"
    );
    // Forced, the release starts and says why it cannot go on.
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            app,
            Some(json!({"spec": spec, "force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = dev
        .call(reqwest::Method::GET, &format!("{app}/releases"), None)
        .await;
    let id = list["items"][0]["id"].as_i64().unwrap_or_default();
    let release = format!("{app}/releases/{id}");
    let blocked = wait_release(
        &dev,
        &release,
        "the release to say it is blocked",
        |r| r["reason"].as_str().unwrap_or("").contains("cannot place"),
        |_| {},
    )
    .await;
    assert_eq!(blocked["state"], "progressing", "{blocked:#}");
    assert!(
        blocked["timeline"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e["kind"] == "blocked")),
        "{blocked:#}"
    );
    // Nothing of the running revision was taken down for it.
    let running = dev.instances("roomy").await;
    assert_eq!(
        running
            .iter()
            .filter(|i| i["revision"] == 1 && i["ready"] == true)
            .count(),
        4
    );
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            &format!("{release}/abort"),
            Some(json!({"reason": "no room"})),
        )
        .await;
    // A developer may not abort (ops and tenant admins may).
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let ops = Tenant::login(&paas, "ops").await;
    let (status, body) = ops
        .call(reqwest::Method::POST, &format!("{release}/abort"), None)
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("aborted")),
        "{body}"
    );
}

/// The events of an application, newest first: (reason, message).
async fn events_of(who: &Tenant, app: &str) -> Vec<(String, String)> {
    let (_, events) = who
        .call(
            reqwest::Method::GET,
            &format!("/environments/dev/applications/{app}/events"),
            None,
        )
        .await;
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn placement_rules_put_one_instance_per_zone_say_why_a_fourth_cannot_go_and_co_locate_with_another_app()
 {
    let site = Site::new(&["--agents", "3", "--zones", "a,b,c"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // One per zone, four asked for: three run, each in its own zone, and the fourth is
    // reported with the reason and the fix.
    let mut spread = web_spec(&marker(), 4);
    spread["placement"] =
        json!({"app_anti_affinity": [{"apps": ["self"], "required": true, "topology": "zone"}]});
    // The pre-flight refuses it with the reason, unless forced.
    let create = |force: bool| json!({"environment": "dev", "name": "zonal", "spec": spread.clone(), "force": force});
    let (status, body) = dev
        .call(reqwest::Method::POST, "/applications", Some(create(false)))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    let why = body["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("3 of 4 instances can be placed") && why.contains("at most 3"),
        "{why}"
    );
    let (status, body) = dev
        .call(reqwest::Method::POST, "/applications", Some(create(true)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let placed = dev
        .wait_instances("zonal", "three ready instances", |i| {
            i.iter().filter(|x| x["ready"] == true).count() == 3
        })
        .await;
    let mut nodes: Vec<&str> = placed.iter().filter_map(|i| i["node"].as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        3,
        "one per zone (one node per zone): {placed:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = events_of(&dev, "zonal").await;
        if let Some((_, why)) = events.iter().find(|(r, _)| r == "Unschedulable") {
            assert!(
                why.contains("already have an instance of self in their zone")
                    && why.contains("at most 3"),
                "{why}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Unschedulable event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(live_instances(&dev, "dev", "zonal").await.len(), 3);
    // The dry run says where three would go, and scaling to three passes the
    // pre-flight; five does not.
    let (status, check) = dev
        .call(
            reqwest::Method::POST,
            "/environments/dev/applications/zonal/placement/check",
            Some(json!({"replicas": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{check}");
    assert_eq!(check["feasible"], true, "{check}");
    assert_eq!(check["nodes"].as_array().map(Vec::len), Some(3), "{check}");
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/zonal/replicas",
            Some(json!({"replicas": 5})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/zonal/replicas",
            Some(json!({"replicas": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // Affinity: every instance of web goes to the node cache runs on.
    let mut cache = web_spec(&marker(), 1);
    cache["labels"] = json!({"tier": "cache"});
    dev.onboard("cache", cache).await;
    let cache = dev
        .wait_instances("cache", "cache ready", |i| {
            i.len() == 1 && i[0]["ready"] == true
        })
        .await;
    let cache_node = cache[0]["node"].as_str().unwrap_or_default().to_owned();
    let mut near = web_spec(&marker(), 3);
    near["placement"] = json!({"app_affinity": [{"apps": ["cache"], "required": true}]});
    dev.onboard("near", near).await;
    let web = dev
        .wait_instances("near", "three ready instances", |i| {
            i.len() == 3 && i.iter().all(|x| x["ready"] == true)
        })
        .await;
    assert!(
        web.iter().all(|i| i["node"] == cache_node.as_str()),
        "all on {cache_node}: {web:#?}"
    );
    // The same by label: the applications labelled tier=cache.
    let mut by_label = web_spec(&marker(), 1);
    by_label["placement"] =
        json!({"app_affinity": [{"selector": {"tier": "cache"}, "required": true}]});
    dev.onboard("bylabel", by_label).await;
    let placed = dev
        .wait_instances("bylabel", "one ready instance", |i| {
            i.len() == 1 && i.iter().all(|x| x["ready"] == true)
        })
        .await;
    assert!(
        placed.iter().all(|i| i["node"] == cache_node.as_str()),
        "all on {cache_node}: {placed:#?}"
    );
    // Nothing is labelled tier=queue: refused, naming the selector.
    let mut nowhere = web_spec(&marker(), 1);
    nowhere["placement"] =
        json!({"app_affinity": [{"selector": {"tier": "queue"}, "required": true}]});
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "dev", "name": "nowhere", "spec": nowhere})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("applications labelled tier=queue")),
        "{body}"
    );
    // The placement map's data: every instance with its node.
    let admin = Tenant::login(&paas, "admin").await;
    let overview: Value = must(
        must(
            admin
                .http
                .get(format!("{}/api/v1/admin/runtimes", admin.base))
                .bearer_auth(&admin.token)
                .send()
                .await,
        )
        .json()
        .await,
    );
    let mut zonal_nodes: Vec<String> = overview["items"][0]["placed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["application"] == "zonal")
        .filter_map(|p| p["node"].as_str().map(str::to_owned))
        .collect();
    zonal_nodes.sort();
    zonal_nodes.dedup();
    assert_eq!(zonal_nodes.len(), 3, "{overview:#}");
    // A cordoned node takes no new instance; uncordoned, it does again.
    let cordon = |action: &'static str| {
        let admin = &admin;
        async move {
            must(
                admin
                    .http
                    .post(format!(
                        "{}/api/v1/admin/runtimes/local/nodes/node-1/{action}",
                        admin.base
                    ))
                    .bearer_auth(&admin.token)
                    .send()
                    .await,
            )
            .status()
        }
    };
    assert_eq!(cordon("cordon").await, StatusCode::NO_CONTENT);
    dev.onboard("fresh", web_spec(&marker(), 4)).await;
    let fresh = dev
        .wait_instances("fresh", "four ready instances", |i| {
            i.len() == 4 && i.iter().all(|x| x["ready"] == true)
        })
        .await;
    assert!(
        fresh.iter().all(|i| i["node"] != "node-1"),
        "none on the cordoned node: {fresh:#?}"
    );
    assert_eq!(cordon("uncordon").await, StatusCode::NO_CONTENT);
    let developer = must(
        dev.http
            .post(format!(
                "{}/api/v1/admin/runtimes/local/nodes/node-1/cordon",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .send()
            .await,
    );
    assert_eq!(developer.status(), StatusCode::FORBIDDEN);
    // A placement rule that is wrong is refused with the field named.
    let mut wrong = web_spec(&marker(), 1);
    wrong["placement"] = json!({"spread": [{"topology": "zone", "max_skew": 0}]});
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            "/applications",
            Some(json!({"environment": "dev", "name": "wrong", "spec": wrong})),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("spec.placement.spread[0].max_skew")
        ),
        "{body}"
    );
}

/// The nodes an application's live instances are on, and how many are ready.
async fn nodes_of(who: &Tenant, app: &str) -> (Vec<String>, usize) {
    let live = live_instances(who, "dev", app).await;
    let ready = live.iter().filter(|i| i["ready"] == true).count();
    let mut nodes: Vec<String> = live
        .iter()
        .filter_map(|i| i["node"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    (nodes, ready)
}

#[tokio::test]
async fn draining_a_node_is_refused_with_the_reason_when_it_cannot_finish_and_otherwise_keeps_apps_serving()
 {
    // Zone a has two nodes (node-1, node-4), zones b and c one each.
    let site = Site::new(&["--agents", "4", "--zones", "a,b,c"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let admin = Tenant::login(&paas, "admin").await;
    let per_zone = json!([{"apps": ["self"], "required": true, "topology": "zone"}]);
    // `zonal`: one per zone, and a budget that lets one of three be down.
    let mut zonal = web_spec(&marker(), 3);
    zonal["placement"] =
        json!({"app_anti_affinity": per_zone, "disruption_budget": {"min_available": 2}});
    dev.onboard("zonal", zonal).await;
    // `plain`: two anywhere, no budget: its instances move replacement first.
    dev.onboard("plain", web_spec(&marker(), 2)).await;
    for app in ["zonal", "plain"] {
        dev.wait_instances(app, "all ready", |i| {
            !i.is_empty() && i.iter().all(|x| x["ready"] == true)
        })
        .await;
    }
    let zone_a = |nodes: &[String]| {
        nodes
            .iter()
            .find(|n| *n == "node-1" || *n == "node-4")
            .cloned()
            .unwrap_or_default()
    };
    let drained = zone_a(&nodes_of(&dev, "zonal").await.0);
    let node_action = |node: String, action: &'static str| {
        let admin = &admin;
        async move {
            must(
                admin
                    .http
                    .post(format!(
                        "{}/api/v1/admin/runtimes/local/nodes/{node}/{action}",
                        admin.base
                    ))
                    .bearer_auth(&admin.token)
                    .send()
                    .await,
            )
            .status()
        }
    };
    // `strict`: one per zone without a budget, its zone-a instance on zone a's other
    // node (zonal's is cordoned meanwhile).
    assert_eq!(
        node_action(drained.clone(), "cordon").await,
        StatusCode::NO_CONTENT
    );
    let mut strict = web_spec(&marker(), 3);
    strict["placement"] = json!({"app_anti_affinity": per_zone});
    dev.onboard("strict", strict).await;
    dev.wait_instances("strict", "three ready", |i| {
        i.len() == 3 && i.iter().all(|x| x["ready"] == true)
    })
    .await;
    assert_eq!(
        node_action(drained.clone(), "uncordon").await,
        StatusCode::NO_CONTENT
    );
    let blocked = zone_a(&nodes_of(&dev, "strict").await.0);
    assert!(
        !drained.is_empty() && !blocked.is_empty() && drained != blocked,
        "zonal and strict each have their zone-a instance on its own node: {drained} {blocked}"
    );
    let drain = |node: String, body: Value| {
        let admin = &admin;
        async move {
            let r = must(
                admin
                    .http
                    .post(format!(
                        "{}/api/v1/admin/runtimes/local/nodes/{node}/drain",
                        admin.base
                    ))
                    .bearer_auth(&admin.token)
                    .json(&body)
                    .send()
                    .await,
            );
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // strict's zone-a node cannot be drained: its replacement has no room beside it
    // and nothing lets it stop first. The dry run says so too, and a developer may
    // not drain.
    let (status, body) = drain(blocked.clone(), json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    let why = body["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("acme/dev/strict") && why.contains("min_available at most 2"),
        "{why}"
    );
    let (status, plan) = drain(blocked.clone(), json!({"dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["feasible"], false, "{plan}");
    // The same by the node's name alone (the runtime that reports it is found).
    let by_name: Value = must(
        must(
            admin
                .http
                .post(format!("{}/api/v1/admin/nodes/{blocked}/drain", admin.base))
                .bearer_auth(&admin.token)
                .json(&json!({"dry_run": true}))
                .send()
                .await,
        )
        .json()
        .await,
    );
    assert_eq!(by_name, plan);
    let unknown = must(
        admin
            .http
            .post(format!("{}/api/v1/admin/nodes/node-9/cordon", admin.base))
            .bearer_auth(&admin.token)
            .send()
            .await,
    );
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let refused = must(
        dev.http
            .post(format!(
                "{}/api/v1/admin/runtimes/local/nodes/{drained}/drain",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .json(&json!({}))
            .send()
            .await,
    );
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // The autoscaling maximum gets the same pre-flight: five cannot be one per zone.
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/strict/autoscaling",
            Some(json!({"min": 3, "max": 5})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum of 5")),
        "{body}"
    );
    // And a change whose rolling surge could never be placed is refused before it
    // starts a release that would wait out its deadline.
    let mut changed = web_spec(&marker(), 3);
    changed["placement"] = json!({"app_anti_affinity": per_zone});
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/strict",
            Some(json!({"spec": changed})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("infeasible")),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(
            |m| m.contains("release would not finish") && m.contains("max_unavailable")
        ),
        "{body}"
    );

    // zonal's zone-a node drains under load on zonal and plain: zonal's instance stops
    // first (one down, as its budget allows) and starts on zone a's other node;
    // plain's start elsewhere before they stop. No request fails.
    let loads = [
        support::load::Load::start(&format!("{}/apps/acme/dev/zonal/", site.router()), 40),
        support::load::Load::start(&format!("{}/apps/acme/dev/plain/", site.router()), 40),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, plan) = drain(drained.clone(), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["feasible"], true, "{plan}");
    let how = |app: &str| {
        plan["moves"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["application"] == app)
            .map(|m| m["how"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(how("zonal").as_deref(), Some("stops_first"), "{plan}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (zonal_nodes, zonal_ready) = nodes_of(&dev, "zonal").await;
        let (plain_nodes, plain_ready) = nodes_of(&dev, "plain").await;
        let off = !zonal_nodes.contains(&drained) && !plain_nodes.contains(&drained);
        if off
            && zonal_ready == 3
            && zonal_nodes.len() == 3
            && plain_ready == 2
            && plain_nodes.len() == 2
        {
            // One per zone still: zone a's other node took zonal's instance.
            let other = if drained == "node-1" {
                "node-4"
            } else {
                "node-1"
            };
            assert!(zonal_nodes.iter().any(|n| n == other), "{zonal_nodes:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not finish: zonal {zonal_nodes:?} ({zonal_ready} ready), plain {plain_nodes:?} ({plain_ready} ready)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for load in loads {
        let tally = load.stop().await;
        assert_eq!(tally.failed, 0, "{tally:?}");
        assert!(tally.ok > 40, "{tally:?}");
    }
    // The node shows as draining, with its event; uncordoning ends the drain.
    let overview: Value = must(
        must(
            admin
                .http
                .get(format!("{}/api/v1/admin/runtimes", admin.base))
                .bearer_auth(&admin.token)
                .send()
                .await,
        )
        .json()
        .await,
    );
    let node = overview["items"][0]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == drained.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (node["draining"].clone(), node["cordoned"].clone()),
        (json!(true), json!(true)),
        "{node}"
    );
    assert!(
        overview["items"][0]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Draining" && e["node"] == drained.as_str()),
        "{overview:#}"
    );
    assert_eq!(
        node_action(drained.clone(), "uncordon").await,
        StatusCode::NO_CONTENT
    );
    // The audit log has the drain.
    let audit: Value = must(
        must(
            admin
                .http
                .get(format!(
                    "{}/api/v1/admin/audit?action=node.drain",
                    admin.base
                ))
                .bearer_auth(&admin.token)
                .send()
                .await,
        )
        .json()
        .await,
    );
    assert_eq!(
        audit["items"].as_array().map(Vec::len),
        Some(1),
        "{audit:#}"
    );
}

/// The marketplace's entry for `service`.
async fn marketplace_entry(dev: &Tenant, service: &str) -> Value {
    let (status, market) = dev.get_api("/api/v1/catalog/services").await;
    assert_eq!(status, StatusCode::OK);
    market["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == service).cloned())
        .unwrap_or_else(|| panic!("no {service} in the marketplace: {market}"))
}

/// What a broker of the site recorded about its (first) instance.
fn broker_facts(site: &Site, broker: &str) -> Value {
    let registry: Value = serde_json::from_slice(&must(std::fs::read(
        site.data_dir
            .join(format!("brokers/{broker}/state/registry.json")),
    )))
    .unwrap_or(Value::Null);
    registry["instances"]
        .as_object()
        .and_then(|i| i.values().next())
        .map(|i| i["facts"].clone())
        .unwrap_or(Value::Null)
}

/// Binds the service instance at `instance` (`body`: the application, the prefix).
async fn bind(dev: &Tenant, instance: &str, body: Value) {
    let (status, binding) = dev
        .call(
            reqwest::Method::POST,
            &format!("{instance}/bindings"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{binding}");
}

/// Unbinds `application` from the service instance at `instance` and waits until its
/// binding is gone.
async fn unbind_until_gone(dev: &Tenant, instance: &str, application: &str) {
    let (status, _) = dev
        .call(
            reqwest::Method::DELETE,
            &format!("{instance}/bindings/{application}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, bindings) = dev
            .call(reqwest::Method::GET, &format!("{instance}/bindings"), None)
            .await;
        if bindings["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|b| b["application"] != application))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the binding never went: {bindings}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (up to `seconds`) until the service instance at `path` is ready; fails at
/// once if it failed.
async fn until_ready(dev: &Tenant, path: &str, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (_, instance) = dev.call(reqwest::Method::GET, path, None).await;
        if instance["state"] == "ready" {
            return;
        }
        assert_ne!(instance["state"], "failed", "{instance}");
        assert!(
            Instant::now() < deadline,
            "{path} was never ready: {instance}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deprovisions the service instance at `path` and waits until it is gone, no
/// process of the site mentions `server` any more, and the directory the server
/// worked in (its data) is gone from its node.
async fn deprovision_until_gone(dev: &Tenant, site: &Site, path: &str, server: &str) {
    let worked_in = support::procs::cwds_in(server, &site.data_dir);
    assert!(
        !worked_in.is_empty(),
        "no {server} works in {}",
        site.data_dir.display()
    );
    let (status, _) = dev.call(reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = dev.call(reqwest::Method::GET, path, None).await;
        if status == StatusCode::NOT_FOUND
            && support::procs::count_in(server, &site.data_dir) == 0
            && worked_in.iter().all(|dir| !dir.exists())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}'s server ({server}) or its files in {worked_in:?} outlived its deprovisioning"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An application that uses the Redis binding it is given: `?set=k&value=v` and
/// `?get=k` speak the Redis protocol with the binding's own user; `/` says whether it
/// is bound.
fn redis_client_spec() -> Value {
    let script = r#"
import os, socket, http.server, urllib.parse
def redis(*parts):
    s = socket.create_connection((os.environ["CACHE_HOST"], int(os.environ["CACHE_PORT"])), timeout=3)
    def send(*p):
        s.sendall(b"*%d\r\n" % len(p) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in (q.encode() for q in p)))
        return s.recv(65536).decode().strip()
    auth = send("AUTH", os.environ["CACHE_USERNAME"], os.environ["CACHE_PASSWORD"])
    out = send(*parts)
    s.close()
    return auth + " " + out
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if "set" in q:
            body = redis("SET", q["set"][0], q["value"][0])
        elif "get" in q:
            body = redis("GET", q["get"][0])
        else:
            body = "bound" if "CACHE_HOST" in os.environ else "unbound"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    json!({"command": "python3", "args": ["-c", script], "replicas": 1, "ports": [{"name": "http"}]})
}

/// GETs `url` until its body satisfies `check` (or 60 s pass); the body.
async fn body_until(url: &str, check: impl Fn(&str) -> bool) -> String {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = match http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered as expected; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_cache_from_the_marketplace_runs_as_a_platform_workload_and_serves_a_bound_application() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;

    // `paas up` put its cache broker in the catalog before announcing the console.
    let (status, market) = dev.get_api("/api/v1/catalog/services").await;
    assert_eq!(status, StatusCode::OK);
    let redis = market["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == "redis").cloned())
        .unwrap_or_else(|| panic!("no redis in the marketplace: {market}"));
    assert_eq!(redis["broker"], "cache");
    assert_eq!(redis["broker_version"], "1.0.0");

    let instances = "/environments/dev/service-instances";
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            instances,
            Some(json!({"name": "cache", "service": "redis", "plan": "small"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    until_ready(&dev, &format!("{instances}/cache"), 90).await;
    // Its server is a real redis-server, run by the platform in the service tenant,
    // and its administrator password is on no command line of the machine.
    assert_eq!(support::procs::count_in("redis-server", &site.data_dir), 1);
    let registry: Value = serde_json::from_slice(&must(std::fs::read(
        site.data_dir.join("brokers/cache/state/registry.json"),
    )))
    .unwrap_or(Value::Null);
    let admin_password = registry["instances"]
        .as_object()
        .and_then(|i| i.values().next())
        .and_then(|i| i["facts"]["admin_password"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(admin_password.len() >= 32, "{registry}");
    assert!(
        support::procs::all()
            .iter()
            .all(|p| !p.cmdline.contains(&admin_password)),
        "the Redis administrator's password is on a command line"
    );

    // An application bound to it writes and reads through the real protocol as the
    // binding's own user.
    dev.onboard("shop", redis_client_spec()).await;
    let app = format!("{}/apps/acme/dev/shop/", site.router());
    body_until(&app, |b| b == "unbound").await;
    bind(
        &dev,
        &format!("{instances}/cache"),
        json!({"application": "shop"}),
    )
    .await;
    body_until(&app, |b| b == "bound").await;
    let set = body_until(&format!("{app}?set=greeting&value=hello-cache"), |b| {
        b.starts_with("+OK")
    })
    .await;
    assert_eq!(set, "+OK +OK");
    let got = body_until(&format!("{app}?get=greeting"), |b| {
        b.contains("hello-cache")
    })
    .await;
    assert!(got.starts_with("+OK $11"), "{got}");

    // Unbinding: the application loses the variables and the user is gone from Redis.
    unbind_until_gone(&dev, &format!("{instances}/cache"), "shop").await;
    body_until(&app, |b| b == "unbound").await;

    // Deprovisioning removes the server.
    deprovision_until_gone(&dev, &site, &format!("{instances}/cache"), "redis-server").await;
    paas.stop().await;
}

/// An application that uses the PostgreSQL binding it is given, through `psql` and the
/// binding's URL: `?put=v` inserts, `?get` reads every value back.
fn postgres_client_spec() -> Value {
    let script = r#"
import os, subprocess, http.server, urllib.parse
def sql(q):
    r = subprocess.run(["psql", os.environ["DB_URL"], "-tAc", q], capture_output=True, text=True, timeout=10)
    return (r.stdout + r.stderr).strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query, keep_blank_values=True)
        if "DB_URL" not in os.environ:
            body = "unbound"
        elif "put" in q:
            body = sql("CREATE TABLE IF NOT EXISTS notes (v text); INSERT INTO notes VALUES ('%s')" % q["put"][0].replace("'", ""))
        elif "get" in q:
            body = sql("SELECT string_agg(v, ',' ORDER BY v) FROM notes")
        else:
            body = "bound"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    json!({"command": "python3", "args": ["-c", script], "replicas": 1, "ports": [{"name": "http"}]})
}

#[tokio::test]
async fn a_database_from_the_marketplace_is_a_database_of_its_own_with_a_role_per_binding() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let (_, market) = dev.get_api("/api/v1/catalog/services").await;
    assert!(
        market["items"].as_array().is_some_and(|i| i
            .iter()
            .any(|s| s["name"] == "postgresql" && s["broker_version"] == "1.0.0")),
        "{market}"
    );
    let instances = "/environments/dev/service-instances";
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            instances,
            Some(json!({"name": "orders", "service": "postgresql", "plan": "shared"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    until_ready(&dev, &format!("{instances}/orders"), 120).await;
    dev.onboard("ledger", postgres_client_spec()).await;
    let app = format!("{}/apps/acme/dev/ledger/", site.router());
    body_until(&app, |b| b == "unbound").await;
    bind(
        &dev,
        &format!("{instances}/orders"),
        json!({"application": "ledger", "prefix": "DB"}),
    )
    .await;
    body_until(&app, |b| b == "bound").await;
    body_until(&format!("{app}?put=first"), |b| b.contains("INSERT 0 1")).await;
    body_until(&format!("{app}?put=second"), |b| b.contains("INSERT 0 1")).await;
    assert_eq!(
        body_until(&format!("{app}?get"), |b| b.contains("first")).await,
        "first,second"
    );

    // What the database holds is its own: the shared cluster's administrator sees a
    // database and a login role for this instance and binding, and after unbinding and
    // deprovisioning neither is left.
    let admin_password = must(std::fs::read_to_string(
        site.data_dir
            .join("brokers/database/state/backend/shared-admin-password"),
    ));
    let registry: Value = serde_json::from_slice(&must(std::fs::read(
        site.data_dir.join("brokers/database/state/registry.json"),
    )))
    .unwrap_or(Value::Null);
    let shared = registry["instances"]
        .as_object()
        .and_then(|i| i.values().next())
        .and_then(|i| i["facts"]["address"].as_str())
        .unwrap_or_default()
        .to_owned();
    let admin_sql = |sql: &str| {
        let out = must(
            std::process::Command::new("psql")
                .arg(format!(
                    "postgresql://admin:{}@{shared}/postgres",
                    admin_password.trim()
                ))
                .args(["-tAc", sql])
                .output(),
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    let census = "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'db_%') || '/' || (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'b_%' OR rolname LIKE 'owner_%')";
    assert_eq!(admin_sql(census), "1/2");
    unbind_until_gone(&dev, &format!("{instances}/orders"), "ledger").await;
    body_until(&app, |b| b == "unbound").await;
    assert_eq!(admin_sql(census), "1/1");
    let (status, _) = dev
        .call(
            reqwest::Method::DELETE,
            &format!("{instances}/orders"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = dev
            .call(reqwest::Method::GET, &format!("{instances}/orders"), None)
            .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database was never deprovisioned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let registry: Value = serde_json::from_slice(&must(std::fs::read(
        site.data_dir.join("brokers/database/state/registry.json"),
    )))
    .unwrap_or(Value::Null);
    let phase = registry["instances"]
        .as_object()
        .and_then(|i| i.values().next())
        .map(|i| i["phase"].clone());
    assert_eq!(phase, Some(json!("gone")), "{registry}");
    assert_eq!(admin_sql(census), "0/0");
    paas.stop().await;
}

#[tokio::test]
async fn a_broker_killed_mid_provision_leaves_nothing_behind() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let instances = "/environments/dev/service-instances";
    let registry_path = site.data_dir.join("brokers/cache/state/registry.json");
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            instances,
            Some(json!({"name": "cache", "service": "redis", "plan": "small"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The broker took the request (its registry says it is making the instance): it
    // dies now, in the middle of making the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&registry_path).is_ok_and(|r| r.contains("\"creating\"")) {
        assert!(
            Instant::now() < deadline,
            "the broker never started making the instance"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let needle = format!("{}/brokers/cache/state", site.data_dir.display());
    let killed = support::procs::signal_the_one(&needle, nix::sys::signal::Signal::SIGKILL);

    // `paas up` starts the broker again; it reports the cut operation failed, and the
    // platform removes whatever the broker had made (orphan mitigation).
    let deadline = Instant::now() + Duration::from_secs(90);
    let settled = loop {
        let (_, instance) = dev
            .call(reqwest::Method::GET, &format!("{instances}/cache"), None)
            .await;
        if instance["state"] == "failed" && instance["operation"].is_null() {
            break instance;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never settled: {instance}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let description = settled["last_operation"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("restarted during the operation")
            && description.contains("was removed"),
        "{settled}"
    );
    let restarted = support::procs::mentioning(&needle);
    assert!(
        restarted.len() == 1 && restarted[0].pid != killed.pid,
        "{restarted:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = must(sqlx::PgPool::connect(&site.database_url).await);
        let (apps,): (i64,) = must(
            sqlx::query_as(
                "SELECT count(*) FROM applications a JOIN tenants t ON t.id = a.tenant_id
                 WHERE t.slug = 'system' AND a.deleted_at IS NULL",
            )
            .fetch_one(&pool)
            .await,
        );
        pool.close().await;
        let servers = site_processes(&site, "redis-server");
        if apps == 0 && servers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {apps} application(s), {servers} server(s)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The failed instance is deleted like any other.
    let (status, _) = dev
        .call(reqwest::Method::DELETE, &format!("{instances}/cache"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev
        .call(reqwest::Method::GET, &format!("{instances}/cache"), None)
        .await
        .0
        != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < deadline, "the failed instance never went");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    paas.stop().await;
}

/// Live processes of this site's instances whose command line mentions `needle` (an
/// instance runs in a working directory under the site's data directory).
fn site_processes(site: &Site, needle: &str) -> usize {
    let data = site.data_dir.display().to_string();
    support::procs::all()
        .iter()
        .filter(|p| p.cmdline.contains(needle))
        .filter(|p| {
            std::fs::read_link(format!("/proc/{}/cwd", p.pid))
                .is_ok_and(|cwd| cwd.to_string_lossy().starts_with(&data))
        })
        .count()
}

/// An application that uses the NATS binding it is given, speaking the NATS protocol
/// with the binding's bearer JWT: `?publish=v` stores `v` in a JetStream stream,
/// `?last` reads the last message back, `?jwt` tells the test its credential (to try
/// it once unbound); `/` says whether it is bound.
fn nats_client_spec() -> Value {
    let script = r#"
import os, socket, json, base64, http.server, urllib.parse
def nats(requests):
    s = socket.create_connection((os.environ["QUEUE_HOST"], int(os.environ["QUEUE_PORT"])), timeout=5)
    f = s.makefile("rb")
    f.readline()
    hello = {"jwt": os.environ["QUEUE_JWT"], "verbose": False, "pedantic": False, "headers": False, "protocol": 1}
    s.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\nSUB _INBOX.app.* 1\r\n")
    line = f.readline().strip()
    if line != b"PONG":
        return [{"error": line.decode()}]
    out = []
    for i, (subject, payload) in enumerate(requests):
        s.sendall(b"PUB %s _INBOX.app.%d %d\r\n%s\r\n" % (subject.encode(), i, len(payload), payload))
        while True:
            line = f.readline().strip()
            if line == b"PING":
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                n = int(line.split()[-1])
                out.append(json.loads(f.read(n + 2)[:n]))
                break
            elif line.startswith(b"-ERR") or not line:
                out.append({"error": line.decode()})
                break
    s.close()
    return out
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query, keep_blank_values=True)
        if "QUEUE_JWT" not in os.environ:
            body = "unbound"
        elif "publish" in q:
            stream = json.dumps({"name": "orders", "subjects": ["orders.>"], "storage": "file"}).encode()
            created, ack = nats([("$JS.API.STREAM.CREATE.orders", stream), ("orders.new", q["publish"][0].encode())])
            body = "stored %s" % ack.get("seq") if "seq" in ack else json.dumps([created, ack])
        elif "last" in q:
            got = nats([("$JS.API.STREAM.MSG.GET.orders", b'{"last_by_subj":"orders.new"}')])[0]
            body = base64.b64decode(got["message"]["data"]).decode() if "message" in got else json.dumps(got)
        elif "jwt" in q:
            body = os.environ["QUEUE_JWT"]
        else:
            body = "bound"
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    json!({"command": "python3", "args": ["-c", script], "replicas": 1, "ports": [{"name": "http"}]})
}

/// What a NATS server at `address` answers a client signing in with `jwt`: `PONG` or
/// its error.
async fn nats_sign_in(address: &str, jwt: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return "unreachable".into();
    };
    let mut stream = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    let _ = stream.read_line(&mut line).await;
    let hello = json!({"jwt": jwt, "verbose": false, "pedantic": false, "protocol": 1});
    let _ = stream
        .get_mut()
        .write_all(format!("CONNECT {hello}\r\nPING\r\n").as_bytes())
        .await;
    line.clear();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line)).await;
    line.trim().to_owned()
}

#[tokio::test]
async fn a_queue_from_the_marketplace_keeps_a_bound_applications_messages_and_refuses_it_once_unbound()
 {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;

    let nats = marketplace_entry(&dev, "nats").await;
    assert_eq!(nats["broker"], "queue");
    assert_eq!(nats["broker_version"], "1.0.0");

    let instances = "/environments/dev/service-instances";
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            instances,
            Some(json!({"name": "queue", "service": "nats", "plan": "small", "parameters": {"max_payload_kib": 64}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    until_ready(&dev, &format!("{instances}/queue"), 90).await;
    // A real nats-server, run by the platform; the instance's keys are on no command
    // line (only its public JWTs are in the server's environment).
    assert_eq!(
        support::procs::count_in("nats-server -c", &site.data_dir),
        1
    );
    let facts = broker_facts(&site, "queue");
    let seed = facts["seeds"]["account"].as_str().unwrap_or_default();
    assert!(seed.starts_with("SA"), "{facts}");
    assert!(
        support::procs::all()
            .iter()
            .all(|p| !p.cmdline.contains(seed)),
        "the account's key is on a command line"
    );
    let address = facts["address"].as_str().unwrap_or_default().to_owned();

    // A bound application stores a message in a stream and reads it back.
    dev.onboard("shop", nats_client_spec()).await;
    let app = format!("{}/apps/acme/dev/shop/", site.router());
    body_until(&app, |b| b == "unbound").await;
    bind(
        &dev,
        &format!("{instances}/queue"),
        json!({"application": "shop"}),
    )
    .await;
    body_until(&app, |b| b == "bound").await;
    body_until(&format!("{app}?publish=order-1"), |b| b == "stored 1").await;
    body_until(&format!("{app}?last"), |b| b == "order-1").await;
    let jwt = body_until(&format!("{app}?jwt"), |b| b.starts_with("eyJ")).await;
    assert_eq!(nats_sign_in(&address, &jwt).await, "PONG");

    // Unbinding: the variables go, and the server refuses the binding's user.
    unbind_until_gone(&dev, &format!("{instances}/queue"), "shop").await;
    body_until(&app, |b| b == "unbound").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = nats_sign_in(&address, &jwt).await;
        if answer.contains("Authorization Violation") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unbound user still signs in: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Deprovisioning removes the server.
    deprovision_until_gone(&dev, &site, &format!("{instances}/queue"), "nats-server -c").await;
    paas.stop().await;
}

/// An application that answers every request with its name and the path it saw.
fn named_spec(name: &str) -> Value {
    let script = format!(
        r#"
import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("{name} " + self.path).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#
    );
    json!({"command": "python3", "args": ["-c", script], "replicas": 1, "ports": [{"name": "http"}]})
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn an_api_gateway_routes_to_bound_applications_by_key_and_rate_and_a_route_change_loses_no_request()
 {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;

    let gateway = marketplace_entry(&dev, "api-gateway").await;
    assert_eq!(gateway["broker"], "gateway");
    assert_eq!(gateway["broker_version"], "1.0.0");

    // Two consumers, known to the platform by their keys' digests only.
    let (mobile, partner) = ("mobile-key-5f0c2a9e41d7", "partner-key-93b1e6c07a54");
    let instances = "/environments/dev/service-instances";
    let (status, body) = dev
        .call(
            reqwest::Method::POST,
            instances,
            Some(json!({"name": "edge", "service": "api-gateway", "plan": "standard", "parameters": {"consumers": [
                {"name": "mobile", "key_sha256": sha256_hex(mobile), "requests_per_minute": 1_000_000},
                {"name": "partner", "key_sha256": sha256_hex(partner), "requests_per_minute": 3}
            ]}})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    until_ready(&dev, &format!("{instances}/edge"), 90).await;
    let facts = broker_facts(&site, "gateway");
    let gateway_url = format!(
        "{}/apps/system/services/{}",
        site.router(),
        facts["app"].as_str().unwrap_or_default()
    );
    let token = facts["metrics_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Binding exposes the application under its name.
    dev.onboard("shop", named_spec("shop")).await;
    dev.onboard("orders", named_spec("orders")).await;
    wait_for_200(&format!("{}/apps/acme/dev/shop/", site.router())).await;
    wait_for_200(&format!("{}/apps/acme/dev/orders/", site.router())).await;
    bind(
        &dev,
        &format!("{instances}/edge"),
        json!({"application": "shop"}),
    )
    .await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let shop = format!("{gateway_url}/shop/items?id=7");
    let call = |url: String, key: Option<&'static str>| {
        let mut request = http.get(url);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move {
            match request.send().await {
                Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(shop.clone(), Some(mobile)).await;
        if status == StatusCode::OK {
            assert_eq!(body, "shop /items?id=7");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shop's route never answered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // No key, a wrong key: 401. A consumer over its rate: 429, the other unaffected.
    assert_eq!(call(shop.clone(), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(shop.clone(), Some("guess")).await.0,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..3 {
        assert_eq!(call(shop.clone(), Some(partner)).await.0, StatusCode::OK);
    }
    assert_eq!(
        call(shop.clone(), Some(partner)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(shop.clone(), Some(mobile)).await.0, StatusCode::OK);

    // A route change under load: four clients call the shop's route while the orders
    // application is bound (a new revision of the gateway rolls out); none fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let http = http.clone();
        let url = shop.clone();
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(&url).header("x-api-key", mobile).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    bind(
        &dev,
        &format!("{instances}/edge"),
        json!({"application": "orders"}),
    )
    .await;
    let orders = format!("{gateway_url}/orders/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(orders.clone(), Some(mobile)).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the orders route never answered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = must(task.await);
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests went through during the change");

    // Request metrics per route, for the holder of the instance's token.
    let (status, _) = call(format!("{gateway_url}/_gateway/metrics"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metrics = must(
        must(
            http.get(format!("{gateway_url}/_gateway/metrics"))
                .bearer_auth(&token)
                .send()
                .await,
        )
        .text()
        .await,
    );
    assert!(
        metrics.contains("haproxy_backend_http_responses_total{proxy=\"route_shop\",code=\"2xx\"}"),
        "{metrics}"
    );

    // Unbinding takes the route away; deprovisioning the gateway.
    unbind_until_gone(&dev, &format!("{instances}/edge"), "shop").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while call(shop.clone(), Some(mobile)).await.0 != StatusCode::NOT_FOUND {
        assert!(
            Instant::now() < deadline,
            "the shop's route outlived its binding"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    unbind_until_gone(&dev, &format!("{instances}/edge"), "orders").await;
    deprovision_until_gone(&dev, &site, &format!("{instances}/edge"), "haproxy -db").await;
    paas.stop().await;
}

/// The installation of `bundle` in dev once `check` holds for it (or panics after 240 s).
async fn bundle_until(dev: &Tenant, bundle: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (status, installation) = dev
            .call(
                reqwest::Method::GET,
                &format!("/environments/dev/bundles/{bundle}"),
                None,
            )
            .await;
        if status == StatusCode::OK && check(&installation) {
            return installation;
        }
        assert_ne!(installation["state"], "failed", "{installation:#}");
        assert!(
            Instant::now() < deadline,
            "the bundle never got there: {status} {installation:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_retail_bundle_installs_in_one_request_upgrades_with_a_diff_and_uninstalls() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let (status, offered) = dev.get_api("/api/v1/bundles").await;
    assert_eq!(status, StatusCode::OK);
    let retail = offered["items"]
        .as_array()
        .and_then(|i| i.iter().find(|b| b["name"] == "retail").cloned())
        .unwrap_or_else(|| panic!("no retail bundle: {offered}"));
    assert_eq!(retail["versions"], json!(["1.0.0", "1.1.0"]));

    // One request: four services, three applications, six bindings.
    let install = || async {
        let (status, change) = dev
            .call(
                reqwest::Method::POST,
                "/bundles",
                Some(json!({"bundle": "retail", "version": "1.0.0", "environment": "dev"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{change}");
        change
    };
    let change = install().await;
    let added = change["diff"]
        .as_array()
        .map(|d| d.iter().filter(|c| c["change"] == "added").count());
    assert_eq!(added, Some(13), "{change:#}");
    let installed = bundle_until(&dev, "retail", |i| i["state"] == "ready").await;
    assert!(
        installed["components"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| ["ready", "onboarded", "bound"]
                .contains(&c["state"].as_str().unwrap_or_default()))),
        "{installed:#}"
    );
    let storefront = format!("{}/apps/acme/dev/storefront/", site.router());
    body_until(&storefront, |b| {
        b.contains(r#""version": "1.0.0""#) && b.contains(r#""bound": ["CACHE", "DB", "EDGE"]"#)
    })
    .await;
    // The bundle's default autoscaling policy, set by a developer's install.
    let autoscaling = "/environments/dev/applications/storefront/autoscaling";
    let (status, policy) = dev.call(reqwest::Method::GET, autoscaling, None).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(
        (&policy["policy"]["min"], &policy["policy"]["max"]),
        (&json!(2), &json!(4)),
        "{policy}"
    );

    // 1.1 over 1.0: a dry run says what changes and changes nothing.
    let upgrade = json!({"bundle": "retail", "version": "1.1.0", "environment": "dev"});
    let mut dry = upgrade.clone();
    dry["dry_run"] = json!(true);
    let (status, diff) = dev.call(reqwest::Method::POST, "/bundles", Some(dry)).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    let changed: Vec<(String, Value)> = diff["diff"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["change"] != "unchanged")
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["fields"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("cache".to_owned(), json!(["parameters.maxmemory_policy"])),
            ("daily-report".to_owned(), json!(["schedule"])),
            (
                "storefront".to_owned(),
                json!([
                    "autoscaling.max",
                    "env.FEATURE_RECOMMENDATIONS",
                    "env.RETAIL_VERSION",
                    "replicas"
                ])
            ),
            ("storefront → queue".to_owned(), Value::Null),
        ],
        "{diff:#}"
    );
    let (_, still) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/bundles/retail",
            None,
        )
        .await;
    assert_eq!(still["version"], "1.0.0");

    // The upgrade goes through the release path: a new revision of the storefront.
    let (status, change) = dev
        .call(reqwest::Method::POST, "/bundles", Some(upgrade))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{change}");
    assert_eq!(change["from_version"], "1.0.0");
    bundle_until(&dev, "retail", |i| {
        i["state"] == "ready" && i["version"] == "1.1.0"
    })
    .await;
    body_until(&storefront, |b| {
        b.contains(r#""version": "1.1.0""#)
            && b.contains(r#""recommendations": "on""#)
            && b.contains(r#""bound": ["CACHE", "DB", "EDGE", "QUEUE"]"#)
    })
    .await;
    let (_, app) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/storefront",
            None,
        )
        .await;
    assert!(app["current_revision"].as_i64().unwrap_or(0) > 1, "{app}");
    // Released with the bundle's strategy for it, not the environment's default (the
    // release of the new spec; the queue's binding makes one of its own).
    let (_, releases) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/storefront/releases",
            None,
        )
        .await;
    let newest = releases["items"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .filter(|r| r["cause"] == "change")
                .max_by_key(|r| r["to_revision"].as_i64())
        })
        .cloned()
        .unwrap_or_default();
    let strategy = &newest["strategy"];
    assert_eq!(
        (
            &strategy["type"],
            &strategy["max_surge"],
            &strategy["max_unavailable"]
        ),
        (&json!("rolling"), &json!(1), &json!(0)),
        "{releases:#}"
    );
    // The untouched default follows the new version; the service's parameters too.
    let (_, policy) = dev.call(reqwest::Method::GET, autoscaling, None).await;
    assert_eq!(policy["policy"]["max"], json!(6), "{policy}");
    let (_, cache) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/service-instances/cache",
            None,
        )
        .await;
    assert_eq!(
        cache["parameters"]["maxmemory_policy"], "allkeys-lfu",
        "{cache}"
    );

    // Uninstalling removes what it installed.
    let (status, _) = dev
        .call(
            reqwest::Method::DELETE,
            "/environments/dev/bundles/retail",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (status, installation) = dev
            .call(
                reqwest::Method::GET,
                "/environments/dev/bundles/retail",
                None,
            )
            .await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bundle was never uninstalled: {installation:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, instances) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/service-instances",
            None,
        )
        .await;
    assert_eq!(instances["items"], json!([]), "{instances}");
    for app in ["storefront", "order-worker", "daily-report"] {
        let (status, _) = dev
            .call(
                reqwest::Method::GET,
                &format!("/environments/dev/applications/{app}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{app}");
    }

    // Installed again at once, it comes back whole: an application whose deleted
    // namesake is still being released waits for it rather than failing.
    install().await;
    bundle_until(&dev, "retail", |i| i["state"] == "ready").await;
    body_until(&storefront, |b| {
        b.contains(r#""version": "1.0.0""#) && b.contains(r#""bound": ["CACHE", "DB", "EDGE"]"#)
    })
    .await;
    paas.stop().await;
}
