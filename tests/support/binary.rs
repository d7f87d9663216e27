//! Running the real `paas` binary: a fresh database, `paas up` in its own data
//! directory with its own router port, and what it printed at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::must;

/// Creates a fresh database on the test cluster and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL must point at a PostgreSQL server"));
    let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = must(sqlx::PgConnection::connect(&admin_url).await);
    must(
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await,
    );
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub fn free_port() -> u16 {
    loop {
        let port = must(std::net::TcpListener::bind("127.0.0.1:0"))
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(9515);
        if claim(port) {
            return port;
        }
    }
}

/// A free port below the ephemeral range (32768 and up on Linux), for the ports a
/// platform keeps across restarts: while its control plane restarts, an outgoing
/// connection of another test (whose local port comes from the ephemeral range) could
/// otherwise take it. Below the router's TCP ports (30000 and up) too.
pub fn fixed_port() -> u16 {
    loop {
        let port = 20_000 + u16::try_from(uuid::Uuid::new_v4().as_u128() % 10_000).unwrap_or(0);
        // Free now, and never handed to another site of this test process (which may
        // not be listening on it yet, or may be restarting).
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && claim(port) {
            return port;
        }
    }
}

/// A block of 40 ports in the router's TCP range (30000-32767) no other site of this
/// test process has.
fn tcp_port_block() -> String {
    loop {
        let block = u16::try_from(uuid::Uuid::new_v4().as_u128() % 69).unwrap_or(0);
        let first = 30_000 + block * 40;
        if claim(first) {
            return format!("{first}-{}", first + 39);
        }
    }
}

/// Records a port as handed out; false when it was already.
fn claim(port: u16) -> bool {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    HANDED_OUT
        .lock()
        .map(|mut ports| ports.insert(port))
        .unwrap_or(true)
}

/// A platform's identity across restarts: its database, data directory and router port.
/// Dropping it stops whatever agents and router still run for it, so that a failed test
/// leaves no process behind.
#[derive(Debug)]
pub struct Site {
    /// Empty: the platform runs its own PostgreSQL in its data directory.
    pub database_url: String,
    pub data_dir: PathBuf,
    pub router_port: u16,
    /// The router's ports for TCP services (`first-last`): a block of this site's own,
    /// since every platform starts handing them out at the same port otherwise.
    pub router_tcp_ports: String,
    /// Fixed, so that agents and the router that outlive a control plane find the next one.
    pub console_port: u16,
    pub extra_args: Vec<String>,
    /// Where the platform's own log goes (every process of it), at debug level; `None`:
    /// warnings to the test's output.
    pub log: Option<PathBuf>,
    /// The `paas` executable to run, when not the one cargo built (an upgrade test runs
    /// two "releases").
    pub binary: Option<PathBuf>,
}

impl Drop for Site {
    fn drop(&mut self) {
        // Whatever the test left running of this platform stops with it, and its data
        // directory goes too unless the test failed (then it is kept for reading).
        self.down_blocking();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

impl Site {
    pub async fn new(extra_args: &[&str]) -> Self {
        let data_dir =
            std::env::temp_dir().join(format!("paas-e2e-{}", uuid::Uuid::new_v4().simple()));
        Self {
            database_url: fresh_database().await,
            data_dir,
            router_port: fixed_port(),
            router_tcp_ports: tcp_port_block(),
            console_port: fixed_port(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            log: None,
            binary: None,
        }
    }

    /// A platform that runs its own PostgreSQL (as `paas up` does without
    /// `DATABASE_URL`) and logs at debug level into a file of its data directory.
    pub fn self_contained(extra_args: &[&str]) -> Self {
        let data_dir =
            std::env::temp_dir().join(format!("paas-e2e-{}", uuid::Uuid::new_v4().simple()));
        Self {
            database_url: String::new(),
            log: Some(data_dir.join("paas.log")),
            data_dir,
            router_port: fixed_port(),
            router_tcp_ports: tcp_port_block(),
            console_port: fixed_port(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            binary: None,
        }
    }

    pub fn router(&self) -> String {
        format!("http://127.0.0.1:{}", self.router_port)
    }

    /// `paas down`: stops everything of this platform (control plane, agents,
    /// instances, router).
    pub async fn down(&self) {
        let status = Command::new(env!("CARGO_BIN_EXE_paas"))
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("PAAS_LOG", "warn")
            .status()
            .await;
        assert!(must(status).success(), "paas down failed");
    }

    fn down_blocking(&self) {
        if !self.data_dir.exists() {
            return;
        }
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
            .arg("down")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("PAAS_LOG", "warn")
            .status();
        // What else still names the data directory goes too: a browser whose profile
        // lives there outlives its killed chromedriver otherwise.
        let needle = self.data_dir.display().to_string();
        for p in super::procs::all() {
            if p.cmdline.contains(&needle) && p.pid != std::process::id().cast_signed() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A running `paas up`.
pub struct Paas {
    pub child: Child,
    pub url: String,
    pub passwords: HashMap<String, String>,
    pub printed: String,
}

pub async fn paas_up(site: &Site) -> Paas {
    let program = site
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_paas")));
    // `paas up` runs the brokers installed beside it; a test run that did not build
    // them would see an empty catalog and fail far from the cause. (A test that runs a
    // copy of `paas` elsewhere runs it without brokers on purpose.)
    let brokers: &[&str] = if site.binary.is_none() {
        &[
            "paas-cache-broker",
            "paas-database-broker",
            "paas-queue-broker",
        ]
    } else {
        &[]
    };
    for broker in brokers {
        assert!(
            program.with_file_name(broker).exists(),
            "{broker} is not built beside {}: run `cargo build --workspace --bins` first \
             (scripts/test.sh does)",
            program.display()
        );
    }
    let mut command = Command::new(program);
    command
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{}", site.console_port),
        ])
        .arg("--data-dir")
        .arg(&site.data_dir)
        .arg("--router-listen")
        .arg(format!("127.0.0.1:{}", site.router_port))
        .args(&site.extra_args)
        .env("PAAS_ROUTER_TCP_PORTS", &site.router_tcp_ports)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if site.database_url.is_empty() {
        command.env_remove("DATABASE_URL");
    } else {
        command.env("DATABASE_URL", &site.database_url);
    }
    match &site.log {
        Some(path) => {
            must(std::fs::create_dir_all(&site.data_dir));
            let file = must(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path),
            );
            command
                .env("PAAS_LOG", "debug,hyper=info,h2=info,rustls=info")
                .stderr(Stdio::from(file));
        }
        None => {
            command.env("PAAS_LOG", "warn").stderr(Stdio::inherit());
        }
    }
    let mut child = must(command.spawn());
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut url = String::new();
    let mut passwords = HashMap::new();
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = must(tokio::time::timeout(remaining, lines.next_line()).await);
        let Some(line) = must(line) else { break };
        printed.push_str(&line);
        printed.push('\n');
        if let Some(u) = line.strip_prefix("PaaS console: ") {
            url = u.trim().trim_end_matches('/').to_owned();
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 4 && ["admin", "dev", "ops", "tadmin"].contains(&cols[0]) {
            passwords.insert(cols[0].to_owned(), cols[3].to_owned());
        }
        if !url.is_empty() && (passwords.len() == 4 || line.contains("created on first start")) {
            break;
        }
    }
    assert!(!url.is_empty(), "paas up did not print its URL:\n{printed}");
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Paas {
        child,
        url,
        passwords,
        printed,
    }
}

impl Paas {
    /// Stops the control plane the way an operator would (SIGTERM); applications,
    /// agents and the router keep running.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}
