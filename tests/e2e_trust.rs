//! What a tenant's own code can reach from inside an instance, and where a secret
//! goes: the real `paas up` with its own PostgreSQL, real processes probing their
//! surroundings, and a grep of everything the platform wrote.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::binary::{Site, paas_up};
use support::client::{Tenant, wait_for_200};
use support::must;

/// A job that tries to reach what it must not and says, per item, REACHED or BLOCKED.
fn probe_spec(data_dir: &Path) -> Value {
    let script = r#"
check() { if sh -c "$2" >/dev/null 2>&1; then echo "REACHED $1"; else echo "BLOCKED $1"; fi; }
check agent-token "cat $DATA/agent-token"
check master-key "cat $DATA/master.key"
check database-password "cat $DATA/postgres-app.password"
check node-credential "cat $DATA/agents/node-1/credential $DATA/agents/node-2/credential"
check agent-state "ls $DATA/agents/node-1/instances $DATA/agents/node-2/instances"
check other-tenant-files "ls $DATA/agents/node-1/work/globex $DATA/agents/node-2/work/globex"
check database-socket "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('$DATA/postgres/.s.PGSQL.5432')\""
check other-processes "cat /proc/[0-9]*/environ | grep -q GLOBEX_MARKER"
check root "test $(id -u) -eq 0"
check own-directory "touch ./mine && ls ./mine"
echo "PROCESSES $(ls -d /proc/[0-9]* | wc -l)"
echo "PROBE DONE"
"#;
    json!({
        "kind": "job", "command": "sh", "args": ["-c", script],
        "env": {"DATA": data_dir.display().to_string()}
    })
}

async fn logs(dev: &Tenant, app: &str, instance: &str) -> Vec<String> {
    let (status, body) = dev
        .call(
            reqwest::Method::GET,
            &format!("/environments/dev/applications/{app}/instances/{instance}/logs?tail=100"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["lines"]
        .as_array()
        .or_else(|| body["items"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_instance_reaches_nothing_of_other_tenants_nor_of_the_platform() {
    let site = Site::self_contained(&["--agents", "2", "--zones", "a,b"]);
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // globex runs something with a marker in its environment, on every node.
    let globex =
        Tenant::login_as_in(&paas.url, "tadmin", &paas.passwords["tadmin"], "globex").await;
    globex
        .onboard(
            "neighbour",
            json!({"kind": "daemon", "command": "sleep", "args": ["600"], "env": {"GLOBEX_MARKER": "visible"}}),
        )
        .await;
    globex
        .wait_instances("neighbour", "one per node", |i| {
            i.len() == 2 && i.iter().all(|x| x["phase"] == "running")
        })
        .await;
    dev.onboard("probe", probe_spec(&site.data_dir)).await;
    let done = dev
        .wait_instances("probe", "the probe to finish", |i| {
            i.first().is_some_and(|x| x["phase"] == "succeeded")
        })
        .await;
    let name = done[0]["name"].as_str().unwrap_or_default().to_owned();
    let lines = logs(&dev, "probe", &name).await;
    assert!(lines.iter().any(|l| l == "PROBE DONE"), "{lines:#?}");
    // What it probed exists (the probe looked in the right places) ...
    for path in [
        "agent-token",
        "master.key",
        "postgres-app.password",
        "agents/node-1/credential",
        "agents/node-2/instances",
        "postgres/.s.PGSQL.5432",
    ] {
        assert!(site.data_dir.join(path).exists(), "{path} does not exist");
    }
    // ... and it reached its own directory, and nothing else.
    let reached: Vec<&String> = lines.iter().filter(|l| l.starts_with("REACHED")).collect();
    assert_eq!(reached, ["REACHED own-directory"], "{lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("BLOCKED")).count(),
        9,
        "{lines:#?}"
    );
    // It sees its own processes only (its shell, the probe's commands, the sandbox's init).
    let processes: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("PROCESSES "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u32::MAX);
    assert!(processes < 10, "the instance saw {processes} processes");
    paas.stop().await;
}

#[tokio::test]
async fn an_agent_credential_speaks_for_its_own_node_only() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    // A package that runs on exactly one node.
    // Inside the site's data directory, so it goes with the site.
    let src = site.data_dir.join("test-package");
    must(std::fs::create_dir_all(&src));
    must(std::fs::write(
        src.join("run.sh"),
        "#!/bin/sh\nexec sleep 600\n",
    ));
    must(std::fs::set_permissions(
        src.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    ));
    let archive = src.with_extension("tar");
    assert!(
        must(
            std::process::Command::new("tar")
                .arg("cf")
                .arg(&archive)
                .arg("-C")
                .arg(&src)
                .arg("run.sh")
                .status()
        )
        .success()
    );
    let response = must(
        dev.http
            .post(format!(
                "{}/api/v1/tenants/acme/packages?filename=p.tar",
                dev.base
            ))
            .bearer_auth(&dev.token)
            .header("content-type", "application/x-tar")
            .body(must(std::fs::read(&archive)))
            .send()
            .await,
    );
    assert_eq!(response.status(), StatusCode::CREATED);
    let digest = must(response.json::<Value>().await)["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    dev.onboard(
        "packaged",
        json!({"command": "./run.sh", "package": digest}),
    )
    .await;
    let running = dev
        .wait_instances("packaged", "running", |i| {
            i.first().is_some_and(|x| x["phase"] == "running")
        })
        .await;
    let node = running[0]["node"].as_str().unwrap_or_default().to_owned();
    let other = if node == "node-1" { "node-2" } else { "node-1" };
    let credential = |n: &str| {
        must(std::fs::read_to_string(
            site.data_dir.join(format!("agents/{n}/credential")),
        ))
    };
    let http = reqwest::Client::new();
    let fetch = |who: String| {
        let (http, url) = (
            http.clone(),
            format!("{}/internal/v1/packages/{digest}", paas.url),
        );
        async move { must(http.get(url).bearer_auth(who).send().await).status() }
    };
    assert_eq!(fetch(credential(&node)).await, StatusCode::OK);
    assert_eq!(fetch(credential(other)).await, StatusCode::NOT_FOUND);
    let token = must(std::fs::read_to_string(site.data_dir.join("agent-token")));
    assert_eq!(fetch(token.clone()).await, StatusCode::UNAUTHORIZED);
    // Heartbeats: only a node's own credential, not another's, not the join token.
    let beat = |who: String, as_node: &str| {
        let (http, url) = (
            http.clone(),
            format!("{}/internal/v1/nodes/{as_node}/heartbeat", paas.url),
        );
        async move {
            must(
                http.post(url)
                    .bearer_auth(who)
                    .json(&json!({"instances": []}))
                    .send()
                    .await,
            )
            .status()
        }
    };
    assert_eq!(
        beat(credential(other), &node).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(beat(token, &node).await, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(&src);
    let _ = std::fs::remove_file(&archive);
    paas.stop().await;
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file()
            && std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_secret_reaches_its_instance_and_nothing_else_the_platform_writes_or_says() {
    let site = Site::self_contained(&[]);
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let value = format!("s3cret-{}", uuid::Uuid::new_v4().simple());
    // The application proves it got the secret by serving its SHA-256, never the value.
    dev.onboard(
        "vault",
        json!({
            "command": "sh",
            "args": ["-c", "printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1 > index.html && exec python3 -m http.server $PORT --bind 127.0.0.1"],
            "ports": [{"name": "http"}]
        }),
    )
    .await;
    let (status, set) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/vault/secrets/API_TOKEN",
            Some(json!({"value": value})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let url = format!("{}/apps/acme/dev/vault/index.html", site.router());
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(value.as_bytes()))
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        wait_for_200(&url).await;
        let body = must(must(reqwest::get(&url).await).text().await);
        if body.trim() == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never got the secret: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not in any answer of the API.
    let ops = Tenant::login(&paas, "ops").await;
    let mut said = String::new();
    for path in [
        "/environments/dev/applications/vault",
        "/environments/dev/applications/vault/secrets",
        "/environments/dev/applications/vault/revisions",
        "/environments/dev/applications/vault/instances",
        "/environments/dev/applications/vault/events",
        "/audit",
    ] {
        // The audit log is for ops.
        let who = if path == "/audit" { &ops } else { &dev };
        let (status, body) = who.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        said.push_str(&body.to_string());
    }
    said.push_str(&set.to_string());
    assert!(said.contains("API_TOKEN"), "the secret's name is shown");
    assert!(!said.contains(&value), "the API said the secret's value");
    // Nothing the platform wrote holds it: its database, logs, agents' state, shims'
    // logs, the instances' logs (after a clean stop, so everything is flushed).
    paas.stop().await;
    site.down().await;
    let leaks = files_containing(&site.data_dir, value.as_bytes());
    assert!(leaks.is_empty(), "the secret is in {leaks:#?}");
    // The log really was written (the check above looked at something).
    let log = must(std::fs::metadata(site.data_dir.join("paas.log")));
    assert!(
        log.len() > 1000,
        "the platform's log is {} bytes",
        log.len()
    );
}
