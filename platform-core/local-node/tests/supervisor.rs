//! Supervision of real OS processes: start, readiness, crash and backoff, liveness,
//! jobs, graceful stop of the whole process group, and bounded logs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use local_node::logs::LogFile;
use local_node::probe::{Probe, ProbeTarget};
use local_node::supervisor::{Backoff, InstanceConfig, RestartPolicy, Status, Supervised};
use platform_spec::workload::Phase;

fn scratch(name: &str) -> PathBuf {
    // In /tmp, which a sandboxed instance's own uid can reach (a checkout may sit under
    // a private directory), at the same path every run (cleared here first), so runs
    // do not pile up directories.
    let dir = std::env::temp_dir().join(format!("paas-supervisor-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn config(name: &str, command: &str, args: &[&str]) -> InstanceConfig {
    let dir = scratch(name);
    InstanceConfig {
        name: name.to_owned(),
        command: command.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: BTreeMap::new(),
        port: None,
        workdir: dir.join("work"),
        log: LogFile::new(&dir.join("logs"), name, 64 * 1024),
        readiness: None,
        liveness: None,
        restart: RestartPolicy::Always,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(60),
        },
        grace: Duration::from_secs(2),
        package: None,
        ceilings: Default::default(),
        cgroups: None,
        sandbox: None,
    }
}

/// Waits until the status satisfies `check`, or fails with the last status seen.
async fn wait_until(instance: &Supervised, what: &str, check: impl Fn(&Status) -> bool) -> Status {
    let mut rx = instance.watch();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = rx.borrow_and_update().clone();
        if check(&status) {
            return status;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!(
                "timed out waiting for {what}; last status {status:?}; logs {:?}",
                instance.logs(20)
            );
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test]
async fn an_http_service_becomes_ready_when_it_serves_and_gets_its_port() {
    let port = free_port();
    let mut cfg = config(
        "http",
        "python3",
        &["-m", "http.server", "--bind", "127.0.0.1"],
    );
    cfg.args.push(port.to_string());
    cfg.port = Some(port);
    cfg.readiness = Some(Probe::new(ProbeTarget::Http {
        path: "/".to_owned(),
    }));
    let instance = Supervised::start(cfg);
    let status = wait_until(&instance, "ready", |s| s.ready).await;
    assert_eq!(status.phase, Phase::Running);
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(body.ok(), Some(200));
    let stopped = instance.stop().await;
    assert!(!stopped.ready);
}

#[tokio::test]
async fn the_environment_and_port_reach_the_process_and_output_is_captured() {
    let mut cfg = config(
        "env",
        "sh",
        &[
            "-c",
            "echo \"greeting=$GREETING port=$PORT\"; echo oops >&2; sleep 30",
        ],
    );
    cfg.env.insert("GREETING".to_owned(), "hello".to_owned());
    cfg.port = Some(4242);
    let instance = Supervised::start(cfg);
    wait_until(&instance, "running", |s| s.phase == Phase::Running).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while instance.logs(10).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = instance.logs(10);
    assert!(
        logs.contains(&"greeting=hello port=4242".to_owned()),
        "{logs:?}"
    );
    assert!(logs.contains(&"oops".to_owned()), "{logs:?}");
    instance.stop().await;
}

#[tokio::test]
async fn a_crashing_process_backs_off_shows_its_last_lines_and_is_restarted() {
    let instance = Supervised::start(config(
        "crash",
        "sh",
        &["-c", "echo 'cannot open config.yaml'; exit 3"],
    ));
    let backing_off = wait_until(&instance, "back-off", |s| s.phase == Phase::BackOff).await;
    let message = backing_off.message.unwrap_or_default();
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(message.contains("cannot open config.yaml"), "{message}");
    let restarted = wait_until(&instance, "two restarts", |s| s.restarts >= 2).await;
    assert!(restarted.restarts >= 2);
    instance.stop().await;
}

#[tokio::test]
async fn a_command_that_does_not_exist_says_so() {
    let instance = Supervised::start(config("missing", "/nonexistent/bin/app", &[]));
    let status = wait_until(&instance, "back-off", |s| s.phase == Phase::BackOff).await;
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("command '/nonexistent/bin/app' was not found"),
        "{message}"
    );
    instance.stop().await;
}

#[tokio::test]
async fn a_health_check_that_never_passes_keeps_the_instance_unready_with_the_reason() {
    let port = free_port();
    let mut cfg = config("never-ready", "sleep", &["30"]);
    cfg.port = Some(port);
    cfg.readiness = Some(Probe::new(ProbeTarget::Http {
        path: "/healthz".to_owned(),
    }));
    let instance = Supervised::start(cfg);
    let status = wait_until(&instance, "a readiness failure message", |s| {
        s.message.is_some()
    })
    .await;
    assert!(!status.ready);
    assert_eq!(status.phase, Phase::Starting);
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("nothing listens")
    );
    instance.stop().await;
}

#[tokio::test]
async fn a_starting_instance_is_probed_often_until_ready_then_at_its_period() {
    // The test holds the port and counts the probe's connections.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let connects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connects.clone();
    let acceptor = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut cfg = config("until-ready", "sleep", &["30"]);
    cfg.port = Some(port);
    cfg.readiness = Some(Probe {
        period: Duration::from_secs(5),
        until_ready: Some(Duration::from_millis(10)),
        ..Probe::new(ProbeTarget::Tcp)
    });
    let instance = Supervised::start(cfg);
    wait_until(&instance, "ready", |s| s.ready).await;
    let at_ready = connects.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = connects.load(std::sync::atomic::Ordering::SeqCst);
    // At the starting cadence, 600 ms would have brought about 60 more.
    assert!(
        after - at_ready <= 1,
        "{at_ready} connects at ready, {after} after"
    );
    instance.stop().await;
    acceptor.abort();
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_process() {
    let port = free_port();
    let mut cfg = config("liveness", "sleep", &["30"]);
    cfg.port = Some(port);
    cfg.liveness = Some(Probe {
        period: Duration::from_millis(100),
        ..Probe::new(ProbeTarget::Tcp)
    });
    let instance = Supervised::start(cfg);
    let status = wait_until(&instance, "a liveness restart", |s| {
        s.phase == Phase::BackOff
    })
    .await;
    assert!(
        status
            .message
            .unwrap_or_default()
            .contains("liveness probe failed")
    );
    instance.stop().await;
}

#[tokio::test]
async fn a_job_runs_to_completion_and_a_failing_job_gives_up_after_its_retries() {
    let mut ok = config("job-ok", "sh", &["-c", "echo done"]);
    ok.restart = RestartPolicy::OnFailure { max_retries: 2 };
    let instance = Supervised::start(ok);
    let status = wait_until(&instance, "success", |s| s.phase == Phase::Succeeded).await;
    assert_eq!((status.restarts, status.exit_code), (0, Some(0)));
    instance.stop().await;

    let mut failing = config("job-fail", "sh", &["-c", "echo broken; exit 1"]);
    failing.restart = RestartPolicy::OnFailure { max_retries: 2 };
    let instance = Supervised::start(failing);
    let status = wait_until(&instance, "failure", |s| s.phase == Phase::Failed).await;
    assert_eq!(status.restarts, 2);
    assert!(status.message.unwrap_or_default().contains("broken"));
    instance.stop().await;
}

#[tokio::test]
async fn stop_is_graceful_then_forceful_and_leaves_no_process_of_the_group() {
    // The leader traps SIGTERM and exits cleanly; its child ignores SIGTERM entirely.
    let script = "trap 'echo bye; exit 0' TERM; sh -c 'trap \"\" TERM; sleep 60' & echo $! > child.pid; while true; do sleep 0.1; done";
    let mut cfg = config("graceful", "sh", &["-c", script]);
    cfg.grace = Duration::from_millis(500);
    let workdir = cfg.workdir.clone();
    let instance = Supervised::start(cfg);
    let status = wait_until(&instance, "running", |s| s.phase == Phase::Running).await;
    let leader = status.pid.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let child = loop {
        if let Some(pid) = std::fs::read_to_string(workdir.join("child.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the child never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(pid_alive(leader) && pid_alive(child));
    let started = Instant::now();
    let final_status = instance.stop().await;
    let took = started.elapsed();
    assert_eq!(final_status.phase, Phase::Stopping);
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pid_alive(leader), "the leader survived");
    assert!(!pid_alive(child), "a child of the group survived");
}

#[tokio::test]
async fn logs_stay_within_their_bound() {
    let mut cfg = config(
        "chatty",
        "sh",
        &[
            "-c",
            "i=0; while [ $i -lt 5000 ]; do echo line $i of a rather chatty process; i=$((i+1)); done; sleep 30",
        ],
    );
    let log = LogFile::new(&scratch("chatty-logs"), "chatty", 16 * 1024);
    cfg.log = log.clone();
    let instance = Supervised::start(cfg);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !instance
        .logs(1)
        .first()
        .is_some_and(|l| l.contains("line 4999"))
    {
        assert!(
            Instant::now() < deadline,
            "output never finished: {:?}",
            instance.logs(2)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log.size_on_disk() <= 2 * 16 * 1024,
        "{} bytes kept",
        log.size_on_disk()
    );
    assert_eq!(instance.logs(3).len(), 3);
    instance.stop().await;
}

#[tokio::test]
async fn a_memory_ceiling_is_enforced_where_the_node_has_cgroups() {
    let Some(cgroups) = local_node::limits::Cgroups::detect("paas-supervisor-test") else {
        eprintln!("SKIPPED: this machine offers no writable cgroups; limits are only measured");
        return;
    };
    let mut c = config(
        "hog",
        "python3",
        &[
            "-c",
            "import time\nb = b'x' * (256 << 20)\nprint('allocated', flush=True)\ntime.sleep(30)",
        ],
    );
    c.restart = RestartPolicy::Never;
    c.ceilings = local_node::limits::Ceilings {
        cpu_millis: Some(200),
        memory_mib: Some(64),
    };
    c.cgroups = Some(cgroups);
    let instance = Supervised::start(c);
    let status = wait_until(&instance, "the out-of-memory kill", |s| {
        s.phase == Phase::Failed
    })
    .await;
    let message = status.message.unwrap_or_default();
    assert!(message.contains("out of memory"), "{message}");
    assert!(!instance.logs(20).iter().any(|l| l.contains("allocated")));
    instance.stop().await;

    // Without a ceiling the same program allocates and runs.
    let free = Supervised::start(config(
        "no-hog",
        "python3",
        &[
            "-c",
            "b = b'x' * (256 << 20)\nprint('allocated', flush=True)",
        ],
    ));
    wait_until(&free, "the allocation", |s| {
        s.phase == Phase::Running || s.restarts > 0
    })
    .await;
    free.stop().await;
}

/// The node's sandbox for a made-up tenant identity, or `None` (with the reason
/// printed) where the node cannot isolate instances.
fn sandbox_for(uid: u32, hide: &std::path::Path) -> Option<local_node::sandbox::Sandbox> {
    let isolation = local_node::sandbox::Isolation::detect();
    match &isolation {
        local_node::sandbox::Isolation::Identities { bwrap: Some(_), .. } => {
            isolation.sandbox(uid, &[hide.to_path_buf()], "sandboxed")
        }
        other => {
            eprintln!("SKIPPED: {}", other.describe());
            None
        }
    }
}

#[tokio::test]
async fn a_sandboxed_instance_runs_as_its_identity_sees_only_itself_and_still_stops_gracefully() {
    let uid = 1_900_000_123;
    let mut cfg = config(
        "sandboxed",
        "sh",
        &[
            "-c",
            "id -u > whoami; ls /proc | grep -c '^[0-9]' > procs; cat \"$SECRET\" > leaked 2>&1; \
             trap 'echo graceful > stopped; exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    let hidden = cfg
        .workdir
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("secret");
    must_write(&hidden.join("file"), "platform secret");
    cfg.env
        .insert("SECRET".into(), hidden.join("file").display().to_string());
    let Some(sandbox) = sandbox_for(uid, &hidden) else {
        return;
    };
    cfg.sandbox = Some(sandbox);
    cfg.grace = Duration::from_secs(5);
    let workdir = cfg.workdir.clone();
    let instance = Supervised::start(cfg);
    wait_until(&instance, "running", |s| s.phase == Phase::Running).await;
    let read = |name: &str| std::fs::read_to_string(workdir.join(name)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while read("procs").is_empty() || read("leaked").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the instance never wrote its findings"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read("whoami").trim(), uid.to_string());
    // Its shell, the loop's sleep, and the sandbox's own init: nothing of the node.
    let visible: u32 = read("procs").trim().parse().unwrap_or(u32::MAX);
    assert!(visible <= 5, "the instance saw {visible} processes");
    assert!(
        read("leaked").contains("No such file"),
        "{}",
        read("leaked")
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&workdir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700));
    // SIGTERM reaches the instance, not the sandbox first: it gets its grace period.
    let started = Instant::now();
    instance.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stop waited for the grace period"
    );
    assert_eq!(read("stopped").trim(), "graceful");
}

fn must_write(path: &std::path::Path, text: &str) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}
