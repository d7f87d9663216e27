//! Faults on the local runtime, with real redis-server and HTTP processes under load,
//! judged from `/proc` rather than from the platform's own view: agents, the router
//! and the control plane killed at seeded random moments; an agent that never comes
//! back (the split brain a platform must not have); restarts of `paas up`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::binary::{Site, paas_up};
use support::client::{Tenant, wait_for_200};
use support::load::Load;
use support::must;
use support::procs::Proc;

/// Every run injects the same faults at the same moments.
const SEED: u64 = 20_261_126;

/// Lease and grace short enough for a test: a stateful instance stops 4 s after its
/// node's last heartbeat; a silent node's stateless instances move after 3 s.
const FAST_FENCING: [&str; 4] = ["--lease-ttl-ms", "4000", "--node-grace-ms", "3000"];

fn redis_spec(replicas: u32) -> Value {
    json!({
        "kind": "stateful", "command": "redis-server",
        "args": ["--port", "$PORT", "--bind", "127.0.0.1", "--dir", ".", "--appendonly", "yes",
                 "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
        "replicas": replicas, "ports": [{"name": "redis", "protocol": "tcp"}]
    })
}

fn web_spec(replicas: u32) -> Value {
    json!({
        "command": "sh",
        "args": ["-c", "printf 'ok\\n' > index.html && exec python3 -m http.server $PORT --bind 127.0.0.1"],
        "replicas": replicas, "ports": [{"name": "http"}]
    })
}

/// An instance process of this platform, found by its working directory.
#[derive(Debug, Clone)]
struct Running {
    proc: Proc,
    node: String,
    app: String,
    /// The ordinal's directory name (`ordinal-0`) or the instance's.
    leaf: String,
}

/// What runs of this platform's instances, straight from `/proc`.
fn running(site: &Site) -> Vec<Running> {
    let agents = site.data_dir.join("agents");
    support::procs::all()
        .into_iter()
        .filter(|p| {
            !p.cmdline.starts_with("/usr/bin/bwrap") && !p.cmdline.starts_with("/usr/bin/setpriv")
        })
        .filter_map(|p| {
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", p.pid)).ok()?;
            let rest = cwd.strip_prefix(&agents).ok()?;
            // <node>/work/<tenant>/<env>/<app>/<app id>/<leaf>
            let parts: Vec<String> = rest
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match parts.as_slice() {
                [node, work, _, _, app, _, leaf] if work == "work" => Some(Running {
                    node: node.clone(),
                    app: app.clone(),
                    leaf: leaf.clone(),
                    proc: p,
                }),
                _ => None,
            }
        })
        .collect()
}

/// Waits until `count` instances run (every application placed, the sample one too),
/// so that a snapshot of them is complete.
async fn all_running(site: &Site, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(site).len() < count {
        assert!(Instant::now() < deadline, "{:#?}", running(site));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Processes per ordinal of a stateful app.
fn ordinals(site: &Site, app: &str) -> BTreeMap<String, Vec<Running>> {
    let mut by: BTreeMap<String, Vec<Running>> = BTreeMap::new();
    for r in running(site).into_iter().filter(|r| r.app == app) {
        by.entry(r.leaf.clone()).or_default().push(r);
    }
    by
}

/// The current address of each ordinal of `app`, from the API.
async fn addresses(dev: &Tenant, app: &str) -> BTreeMap<String, String> {
    dev.instances(app)
        .await
        .iter()
        .filter(|i| i["ready"] == true)
        .filter_map(|i| {
            Some((
                format!("ordinal-{}", i["ordinal"].as_u64()?),
                i["address"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Waits until `redis` has its two ordinals ready and `web` its two instances, as the
/// API says and as `/proc` shows: one process per ordinal, four instance processes.
async fn converged(site: &Site, dev: &Tenant, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let redis = dev.instances("redis").await;
        let web = dev.instances("web").await;
        let ready = |list: &[Value]| list.iter().filter(|i| i["ready"] == true).count();
        let procs: Vec<Running> = running(site)
            .into_iter()
            .filter(|r| r.app == "redis" || r.app == "web")
            .collect();
        let ord = ordinals(site, "redis");
        if ready(&redis) == 2
            && ready(&web) == 2
            && procs.len() == 4
            && ord.len() == 2
            && ord.values().all(|p| p.len() == 1)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not converged after {what}: redis {redis:#?} web {web:#?} processes {procs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts, from `/proc`, that no ordinal runs twice.
fn assert_at_most_one_per_ordinal(site: &Site, when: &str) {
    for (ordinal, procs) in ordinals(site, "redis") {
        assert!(
            procs.len() <= 1,
            "{when}: {ordinal} runs {} times: {procs:#?}",
            procs.len()
        );
    }
}

/// The pid in a lock file (read again while a successor rewrites it).
fn lock_holder(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Whose process is killed with SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Agent(u32),
    Router,
    ControlPlane,
}

#[tokio::test]
async fn agents_the_router_and_the_control_plane_killed_at_random_never_run_an_ordinal_twice_nor_lose_data()
 {
    let mut args = vec!["--agents", "3", "--zones", "a,b,c"];
    args.extend(FAST_FENCING);
    let site = Site::new(&args).await;
    let mut paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard("redis", redis_spec(2)).await;
    dev.onboard("web", web_spec(2)).await;
    converged(&site, &dev, "onboarding").await;
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    let load = Load::start(&url, 150);

    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    // Every kind of fault, in a seeded order, on seeded agents at seeded moments.
    let mut plan = [
        Fault::Agent(rng.gen_range(1..=3)),
        Fault::Agent(rng.gen_range(1..=3)),
        Fault::Agent(rng.gen_range(1..=3)),
        Fault::Router,
        Fault::Router,
        Fault::ControlPlane,
        Fault::ControlPlane,
    ];
    plan.shuffle(&mut rng);
    let mut written: Vec<(String, String)> = Vec::new();
    let mut report: Vec<String> = Vec::new();
    let mut failed_outside_router = 0;
    for (round, fault) in plan.into_iter().enumerate() {
        // Data written before the fault must be readable after it.
        for (ordinal, addr) in addresses(&dev, "redis").await {
            let key = format!("round-{round}-{ordinal}");
            assert!(
                support::redis::set(&addr, &key, &key).await,
                "SET on {ordinal} at {addr}"
            );
            written.push((ordinal, key));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        let before = load.tally();
        let pids_before: Vec<i32> = running(&site).iter().map(|r| r.proc.pid).collect();
        match fault {
            Fault::Agent(n) => {
                let lock = site.data_dir.join(format!("agents/node-{n}/agent.lock"));
                signal(lock_holder(&lock), Signal::SIGKILL);
            }
            Fault::Router => signal(
                lock_holder(&site.data_dir.join("router.lock")),
                Signal::SIGKILL,
            ),
            Fault::ControlPlane => {
                must(paas.child.kill().await);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1000))).await;
                assert_at_most_one_per_ordinal(&site, "with the control plane down");
                paas = paas_up(&site).await;
            }
        }
        // While the platform recovers, check from /proc again and again.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert_at_most_one_per_ordinal(&site, &format!("after {fault:?}"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        converged(&site, &dev, &format!("{fault:?}")).await;
        // Nothing was restarted: the processes that ran before the fault still run.
        let pids_after: Vec<i32> = running(&site).iter().map(|r| r.proc.pid).collect();
        assert_eq!(
            sorted(pids_before),
            sorted(pids_after),
            "{fault:?} restarted instances"
        );
        let addrs = addresses(&dev, "redis").await;
        for (ordinal, key) in &written {
            let addr = &addrs[ordinal];
            assert_eq!(
                support::redis::get(addr, key).await.as_deref(),
                Some(key.as_str()),
                "{key} lost on {ordinal} after {fault:?}"
            );
        }
        let after = load.tally();
        let failed = after.failed - before.failed;
        if fault != Fault::Router {
            failed_outside_router += failed;
        }
        report.push(format!(
            "{fault:?}: {failed} of {} requests failed",
            (after.ok + after.failed) - (before.ok + before.failed)
        ));
    }
    let tally = load.stop().await;
    eprintln!(
        "fault injection (seed {SEED}): {} of {} requests failed overall\n  {}",
        tally.failed,
        tally.ok + tally.failed,
        report.join("\n  ")
    );
    assert_eq!(
        failed_outside_router, 0,
        "requests failed while agents or the control plane were down: {report:#?}"
    );
    // No orphan once everything stops.
    paas.stop().await;
    site.down().await;
    assert!(running(&site).is_empty(), "{:#?}", running(&site));
}

fn sorted(mut v: Vec<i32>) -> Vec<i32> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn a_node_that_never_comes_back_fences_its_ordinal_which_moves_only_when_an_operator_says_so()
{
    let mut args = vec!["--agents", "2", "--zones", "a,b"];
    args.extend(FAST_FENCING);
    let site = Site::new(&args).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let admin = Tenant::login(&paas, "admin").await;
    dev.onboard("redis", redis_spec(1)).await;
    let ready = dev
        .wait_instances("redis", "redis-0 ready", |i| {
            i.len() == 1 && i[0]["ready"] == true
        })
        .await;
    let node = ready[0]["node"].as_str().unwrap_or_default().to_owned();
    let addr = ready[0]["address"].as_str().unwrap_or_default().to_owned();
    assert!(support::redis::set(&addr, "before", "the fault").await);
    // The node's agent freezes: it stops heartbeating and renewing leases, and the
    // supervisor cannot restart it (it still holds its lock), as if the machine hung.
    let agent = lock_holder(&site.data_dir.join(format!("agents/{node}/agent.lock")));
    signal(agent, Signal::SIGSTOP);
    let frozen = Instant::now();
    dev.wait_instances("redis", "redis-0 unknown", |i| {
        i.first()
            .is_some_and(|x| x["phase"] == "unknown" && x["ready"] == false)
    })
    .await;
    // The lease lapses: the shim stops redis-0 on the silent node, and nothing starts
    // it anywhere else, however long the silence lasts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ordinals(&site, "redis").is_empty() {
        assert_at_most_one_per_ordinal(&site, "while the node is silent");
        assert!(Instant::now() < deadline, "redis-0 never fenced itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fenced_after = frozen.elapsed();
    assert!(
        fenced_after >= Duration::from_secs(3),
        "fenced after {fenced_after:?}"
    );
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert!(
            ordinals(&site, "redis").is_empty(),
            "redis-0 started elsewhere unasked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, events) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/redis/events",
            None,
        )
        .await;
    let waiting = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["reason"] == "Waiting")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or("")
            .contains("its data lives there"),
        "{events:#}"
    );
    // The operator confirms the node lost: redis-0 starts on the other node, once, with
    // an empty data directory, and the event says where the data stayed.
    let response = must(
        admin
            .http
            .post(format!(
                "{}/api/v1/admin/runtimes/local/nodes/{node}/confirm-lost",
                admin.base
            ))
            .bearer_auth(&admin.token)
            .send()
            .await,
    );
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let loss: Value = must(response.json().await);
    assert_eq!(loss["stateful_moved"], json!(["acme/dev/redis-0"]));
    let moved = dev
        .wait_instances("redis", "redis-0 on the other node", |i| {
            i.iter()
                .any(|x| x["ready"] == true && x["node"] != node.as_str())
        })
        .await;
    let moved: Vec<Value> = moved.into_iter().filter(|i| i["ready"] == true).collect();
    assert_eq!(moved.len(), 1, "{moved:#?}");
    let ord = ordinals(&site, "redis");
    assert_eq!(ord["ordinal-0"].len(), 1, "{ord:#?}");
    assert_ne!(ord["ordinal-0"][0].node, node);
    let new_addr = moved[0]["address"].as_str().unwrap_or_default().to_owned();
    assert_eq!(support::redis::get(&new_addr, "before").await, None);
    // The frozen agent wakes: it stops what it no longer owns; still one redis-0.
    signal(agent, Signal::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_at_most_one_per_ordinal(&site, "after the node came back");
        let shims: Vec<PathBuf> =
            std::fs::read_dir(site.data_dir.join(format!("agents/{node}/instances")))
                .map(|e| e.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
        if shims.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the returning node kept {shims:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its data is still on the node it left, for an operator to recover.
    let (_, redis) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/redis",
            None,
        )
        .await;
    let left_behind = site.data_dir.join(format!(
        "agents/{node}/work/acme/dev/redis/{}/ordinal-0/appendonlydir",
        redis["id"].as_str().unwrap_or_default()
    ));
    assert!(left_behind.exists(), "{}", left_behind.display());
    paas.stop().await;
    site.down().await;
    assert!(running(&site).is_empty());
}

#[tokio::test]
async fn restarting_paas_up_under_200_requests_a_second_fails_none() {
    let site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    let mut paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard("web", web_spec(2)).await;
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    // web's two and the sample application's two.
    all_running(&site, 4).await;
    let pids: Vec<i32> = sorted(running(&site).iter().map(|r| r.proc.pid).collect());
    let load = Load::start(&url, 200);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        paas.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        paas = paas_up(&site).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!(
        "paas up restarted twice under load: {} of {} requests failed",
        tally.failed,
        tally.ok + tally.failed
    );
    assert!(tally.ok > 500, "{tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    // The same processes served throughout.
    let now = running(&site);
    assert_eq!(
        sorted(now.iter().map(|r| r.proc.pid).collect()),
        pids,
        "{:?}",
        now.iter()
            .map(|r| format!("{} {}/{}", r.proc.pid, r.app, r.leaf))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_router_replaced_by_a_new_one_under_load_refuses_no_connection() {
    let site = Site::new(&[]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard("web", web_spec(2)).await;
    dev.onboard("redis", redis_spec(1)).await;
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    dev.wait_instances("redis", "redis ready", |i| {
        i.first().is_some_and(|x| x["ready"] == true)
    })
    .await;
    let (_, endpoints) = dev
        .call(
            reqwest::Method::GET,
            "/environments/dev/applications/redis/endpoints",
            None,
        )
        .await;
    let stable = endpoints["items"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !support::redis::set(&stable, "k", "before").await {
        assert!(Instant::now() < deadline, "{stable} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lock = site.data_dir.join("router.lock");
    let old = lock_holder(&lock);
    let load = Load::start(&url, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What the supervisor does when it finds a router of an older binary.
    let token = must(std::fs::read_to_string(site.data_dir.join("agent-token")));
    let mut successor = must(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_paas"))
            .arg("router")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", site.router_port))
            .arg("--control-plane")
            .arg(&paas.url)
            .arg("--lock-file")
            .arg(&lock)
            .arg("--state-file")
            .arg(site.data_dir.join("router-routes.json"))
            .arg("--replace")
            .env("PAAS_AGENT_TOKEN", token.trim())
            .env("PAAS_LOG", "warn")
            .kill_on_drop(false)
            .spawn(),
    );
    // The old router finishes its connections and goes; the new one holds the lock.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{old}/status")).exists()
        && !must(std::fs::read_to_string(format!("/proc/{old}/status"))).contains("State:\tZ")
    {
        assert!(Instant::now() < deadline, "the old router never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!(
        "router replaced under load: {} of {} requests failed",
        tally.failed,
        tally.ok + tally.failed
    );
    assert!(tally.ok > 300, "{tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    let holder = lock_holder(&lock);
    assert_eq!(u32::try_from(holder).ok(), successor.id());
    assert!(runtime_local_lock_held(&lock));
    // The stable TCP address went over too.
    assert_eq!(
        support::redis::get(&stable, "k").await.as_deref(),
        Some("before")
    );
    paas.stop().await;
    site.down().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), successor.wait()).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{holder}/cmdline")).exists()
            || support::procs::all().iter().all(|p| p.pid != holder),
        "paas down left the new router running"
    );
}

/// Whether a lock file is held by some live process.
fn runtime_local_lock_held(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The executable a live process runs.
fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn upgrading_paas_up_to_a_new_binary_under_load_fails_no_request() {
    // Two "releases": the same build under two names, which is all the supervisor sees.
    let releases =
        std::env::temp_dir().join(format!("paas-releases-{}", uuid::Uuid::new_v4().simple()));
    must(std::fs::create_dir_all(&releases));
    let release = |name: &str| {
        let path = releases.join(name);
        if std::fs::hard_link(env!("CARGO_BIN_EXE_paas"), &path).is_err() {
            must(std::fs::copy(env!("CARGO_BIN_EXE_paas"), &path));
        }
        path
    };
    let (v1, v2) = (release("paas-v1"), release("paas-v2"));
    let mut site = Site::new(&["--agents", "2", "--zones", "a,b"]).await;
    site.binary = Some(v1.clone());
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    dev.onboard("web", web_spec(2)).await;
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    let fleet = |site: &Site| -> Vec<i32> {
        [
            "agents/node-1/agent.lock",
            "agents/node-2/agent.lock",
            "router.lock",
        ]
        .iter()
        .map(|l| lock_holder(&site.data_dir.join(l)))
        .collect()
    };
    assert!(
        fleet(&site)
            .iter()
            .all(|pid| exe_of(*pid) == v1.display().to_string())
    );
    all_running(&site, 4).await;
    let instances = sorted(running(&site).iter().map(|r| r.proc.pid).collect());
    let load = Load::start(&url, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    paas.stop().await;
    site.binary = Some(v2.clone());
    let paas = paas_up(&site).await;
    // The supervisor of the new release replaces the old release's agents and router.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let exes: Vec<String> = fleet(&site).into_iter().map(exe_of).collect();
        if exes.iter().all(|e| *e == v2.display().to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {exes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!(
        "paas up upgraded to a new binary under load: {} of {} requests failed",
        tally.failed,
        tally.ok + tally.failed
    );
    assert!(tally.ok > 300, "{tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    // The applications' processes were never restarted.
    assert_eq!(
        sorted(running(&site).iter().map(|r| r.proc.pid).collect()),
        instances
    );
    paas.stop().await;
    site.down().await;
    let _ = std::fs::remove_dir_all(&releases);
}

/// One API answer under the database outage: its status, and whether a 503 said when to
/// retry.
#[derive(Debug, Default)]
struct Answers {
    by_status: BTreeMap<u16, usize>,
    unavailable_without_retry_after: usize,
    /// Applications whose creation was acknowledged (201).
    created: Vec<String>,
}

#[tokio::test]
async fn the_platforms_postgresql_stopped_and_restarted_under_api_load_gives_503s_never_500s() {
    let site = Site::self_contained(&[]);
    let paas = paas_up(&site).await;
    let dev = std::sync::Arc::new(Tenant::login(&paas, "dev").await);
    dev.onboard("web", web_spec(1)).await;
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    let serving = Load::start(&url, 50);

    // Four clients read and write through the API the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (dev, stop) = (dev.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Answers::default();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let name = format!("c{client}-{n}");
                    let request = if n % 3 == 0 {
                        dev.http
                            .post(format!("{}/api/v1/tenants/acme/applications", dev.base))
                            .json(&json!({"environment": "dev", "name": name, "spec": {"command": "true", "replicas": 0}}))
                    } else {
                        dev.http.get(format!("{}/api/v1/tenants/acme/applications?limit=5", dev.base))
                    };
                    let Ok(response) = request
                        .bearer_auth(&dev.token)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                    else {
                        *answers.by_status.entry(0).or_default() += 1;
                        continue;
                    };
                    let status = response.status().as_u16();
                    *answers.by_status.entry(status).or_default() += 1;
                    if status == 503 && !response.headers().contains_key("retry-after") {
                        answers.unavailable_without_retry_after += 1;
                    }
                    if status == 201 {
                        answers.created.push(name);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answers
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let pg = local_host::postgres::LocalPostgres::existing(&site.data_dir)
        .unwrap_or_else(|| panic!("no PostgreSQL in {}", site.data_dir.display()));
    must(pg.stop().await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    must(local_host::postgres::LocalPostgres::start(&site.data_dir).await);
    // The API answers again within a few seconds of PostgreSQL's return.
    let back = Instant::now();
    loop {
        let (status, _) = dev
            .call(reqwest::Method::GET, "/applications?limit=1", None)
            .await;
        if status == reqwest::StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = Answers::default();
    for client in clients {
        let answers = must(client.await);
        for (status, count) in answers.by_status {
            *total.by_status.entry(status).or_default() += count;
        }
        total.unavailable_without_retry_after += answers.unavailable_without_retry_after;
        total.created.extend(answers.created);
    }
    let serving = serving.stop().await;
    eprintln!(
        "API answers by status while PostgreSQL was stopped for 5 s: {:?}; the application: {serving:?}",
        total.by_status
    );
    let statuses: Vec<u16> = total.by_status.keys().copied().collect();
    assert!(
        statuses.iter().all(|s| [200, 201, 503].contains(s)),
        "only successes and 503s: {:?}",
        total.by_status
    );
    assert!(
        total.by_status.get(&503).is_some_and(|n| *n > 0),
        "the outage was seen"
    );
    assert_eq!(total.unavailable_without_retry_after, 0);
    assert_eq!(serving.failed, 0, "the application kept serving");
    // Every acknowledged creation survived.
    for name in &total.created {
        let (status, _) = dev
            .call(
                reqwest::Method::GET,
                &format!("/environments/dev/applications/{name}"),
                None,
            )
            .await;
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "{name} was acknowledged, then lost"
        );
    }
    paas.stop().await;
    site.down().await;
}

/// Each instance's node by what `/proc` shows: (app, node) of every instance process,
/// sorted.
fn nodes_of(site: &Site, app: &str) -> Vec<String> {
    let mut nodes: Vec<String> = running(site)
        .into_iter()
        .filter(|r| r.app == app)
        .map(|r| r.node)
        .collect();
    nodes.sort();
    nodes
}

/// Waits for the newest release of `app` to end; the release.
async fn release_ends(dev: &Tenant, app: &str) -> Value {
    let path = format!("/environments/dev/applications/{app}/releases");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, list) = dev.call(reqwest::Method::GET, &path, None).await;
        let newest = list["items"][0].clone();
        if !matches!(
            newest["state"].as_str(),
            Some("progressing" | "approved" | "pending_approval" | "paused")
        ) {
            return newest;
        }
        assert!(Instant::now() < deadline, "release of {app}: {newest:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_in_place_release_keeps_every_instance_on_its_node_one_down_at_a_time_and_a_stateful_apps_data()
 {
    let site = Site::new(&["--agents", "3", "--zones", "a,b,c"]).await;
    let paas = paas_up(&site).await;
    let dev = Tenant::login(&paas, "dev").await;
    let tadmin = Tenant::login(&paas, "tadmin").await;
    let (status, body) = tadmin
        .call(
            reqwest::Method::PUT,
            "/environments/dev/release-policy",
            Some(json!({"approval": {"required": false}, "strategy": {"type": "in_place"}})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    dev.onboard("redis", redis_spec(2)).await;
    dev.onboard("web", web_spec(3)).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while nodes_of(&site, "web").len() != 3
        || addresses(&dev, "redis").await.len() != 2
        || dev
            .instances("web")
            .await
            .iter()
            .filter(|i| i["ready"] == true)
            .count()
            != 3
    {
        assert!(Instant::now() < deadline, "web and redis up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let redis_nodes: BTreeMap<u64, String> = dev
        .instances("redis")
        .await
        .iter()
        .filter_map(|i| Some((i["ordinal"].as_u64()?, i["node"].as_str()?.to_owned())))
        .collect();
    for (ordinal, addr) in addresses(&dev, "redis").await {
        assert!(
            support::redis::set(&addr, "kept", &ordinal).await,
            "SET on {ordinal}"
        );
    }
    let web_nodes = nodes_of(&site, "web");
    let url = format!("{}/apps/acme/dev/web/", site.router());
    wait_for_200(&url).await;
    let load = Load::start(&url, 100);

    // The service: one instance at a time gives its node to its successor, never a
    // fourth instance, never two down.
    let mut spec = web_spec(3);
    spec["env"] = json!({"VERSION": "2"});
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/web",
            Some(json!({"spec": spec})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let mut most = 0;
    let mut fewest_ready = usize::MAX;
    let ended = {
        let ends = release_ends(&dev, "web");
        let watch = async {
            loop {
                let live: Vec<Value> = dev
                    .instances("web")
                    .await
                    .into_iter()
                    .filter(|i| i["phase"] != "stopping")
                    .collect();
                if live.iter().all(|i| i["phase"] != "unknown") {
                    most = most.max(live.len());
                    fewest_ready =
                        fewest_ready.min(live.iter().filter(|i| i["ready"] == true).count());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            r = ends => r,
            () = watch => unreachable!(),
        }
    };
    assert_eq!(ended["state"], "succeeded", "{ended:#}");
    assert!(most <= 3, "never above the replica count: {most}");
    assert!(
        fewest_ready >= 2,
        "never more than one down: {fewest_ready}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes_of(&site, "web").len() != 3 {
        assert!(Instant::now() < deadline, "three web processes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nodes_of(&site, "web"),
        web_nodes,
        "every node kept its instance"
    );

    // The stateful application: each ordinal restarts on its node with its data.
    let mut spec = redis_spec(2);
    spec["env"] = json!({"VERSION": "2"});
    let (status, body) = dev
        .call(
            reqwest::Method::PUT,
            "/environments/dev/applications/redis",
            Some(json!({"spec": spec})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let ended = release_ends(&dev, "redis").await;
    assert_eq!(ended["state"], "succeeded", "{ended:#}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = dev.instances("redis").await;
        let settled =
            now.len() == 2 && now.iter().all(|i| i["revision"] == 2 && i["ready"] == true);
        if settled {
            let nodes: BTreeMap<u64, String> = now
                .iter()
                .filter_map(|i| Some((i["ordinal"].as_u64()?, i["node"].as_str()?.to_owned())))
                .collect();
            assert_eq!(nodes, redis_nodes, "each ordinal on its node");
            break;
        }
        assert!(Instant::now() < deadline, "redis on revision 2: {now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (ordinal, addr) in addresses(&dev, "redis").await {
        assert_eq!(
            support::redis::get(&addr, "kept").await.as_deref(),
            Some(ordinal.as_str()),
            "{ordinal}'s data survived its upgrade"
        );
    }
    let tally = load.stop().await;
    assert_eq!(tally.failed, 0, "{tally:?}");
}
