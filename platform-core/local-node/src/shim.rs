//! An instance's shim: the small process that owns one instance for its whole life, so
//! that the instance outlives its node agent (as a container outlives kubelet through
//! its containerd shim).
//!
//! The agent starts a shim per instance (`paas shim --dir <instance dir>`), hands it
//! the instance's [`ShimSpec`] as JSON on its standard input (never in a file: the
//! environment holds secrets), and talks to it over a Unix socket in the instance's
//! directory, one JSON document per line: the shim reports every status change; the
//! agent renews the lease and asks for the stop. A restarted agent finds the shims of
//! its node by their directories and reconnects ([`Shim::adopt`]).
//!
//! # Guarantees
//! - One shim per instance directory (it holds `shim.lock` while it lives).
//! - A fenced instance (a stateful ordinal) runs only while its lease holds: when the
//!   agent has not renewed it for its whole term, because the agent or the control
//!   plane is gone, the shim stops the process and waits; a renewal starts it again.
//!   A lease ends at a point on the boot clock ([`boot_ms`]), so a renewal that
//!   arrives after that point starts nothing.
//!   The control plane counts on this before it starts the ordinal anywhere else.
//! - The instance's processes die with the shim (bubblewrap's `--die-with-parent`, or
//!   the parent-death signal `setpriv` sets), so a killed shim leaves no orphan.
//! - On SIGTERM or a stop, the instance is stopped gracefully and the shim exits,
//!   removing its socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::logs::LogFile;
use crate::supervisor::{InstanceConfig, Status, Supervised, update};

const SOCKET: &str = "shim.sock";
const LOCK: &str = "shim.lock";
/// The instance's process group and the start time of its leader, for cleaning up
/// after a shim that was killed.
const GROUP: &str = "group";

/// What a shim runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub config: InstanceConfig,
    /// Whether the instance runs only while its lease holds.
    pub fenced: bool,
    /// What is left of the lease when the shim starts (fenced instances), as an agent
    /// before `lease_until_ms` said it.
    pub lease_ms: u64,
    /// When the lease ends, on the boot clock ([`boot_ms`]). Wins over `lease_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ms: Option<u64>,
    /// Restarts the instance already had under an earlier shim.
    #[serde(default)]
    pub restarts_before: u32,
}

/// What the agent tells a shim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Order {
    /// The lease holds until `until_ms` on the boot clock ([`boot_ms`]); `ttl_ms`,
    /// this much longer from now, is for a shim started before `until_ms` was.
    Lease {
        ttl_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
    },
    /// Stop the instance gracefully and exit.
    Stop,
}

/// Milliseconds on the machine's boot clock (`CLOCK_BOOTTIME`), which an agent and its
/// shims share and which also counts the time a machine is suspended.
///
/// A lease is a point on this clock, never a duration: a duration is counted from
/// when it is read, and an order that waited (an agent frozen between reading its
/// heartbeat's answer and writing the renewal, a shim slow to read) would otherwise
/// grant a whole term to a node the control plane has already given up on, and run a
/// moved ordinal twice. A point in the past grants nothing, however late it arrives.
pub fn boot_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let millis = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(millis)
}

/// When a lease ends, on the shim's timer: at `until_ms` on the boot clock, or, from
/// an agent that does not say it, `ttl_ms` from now.
fn lease_end(until_ms: Option<u64>, ttl_ms: u64) -> Instant {
    let left = until_ms.map_or(ttl_ms, |until| until.saturating_sub(boot_ms()));
    Instant::now() + Duration::from_millis(left)
}

/// Why a shim could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("another shim runs this instance (pid {0:?})")]
    Taken(Option<u32>),
    #[error("cannot read the instance spec: {0}")]
    Spec(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs a shim in `dir` until its instance is stopped. Reads the spec from stdin.
pub async fn serve(dir: &Path) -> Result<(), ShimError> {
    // Out of the agent's session and process group: a terminal's signals, or the
    // agent's own end, do not reach the instance.
    let _ = nix::unistd::setsid();
    let mut input = Vec::new();
    // Read once at start, before anything else runs: blocking is harmless here.
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
        .map_err(|e| ShimError::Spec(e.to_string()))?;
    let spec: ShimSpec =
        serde_json::from_slice(&input).map_err(|e| ShimError::Spec(e.to_string()))?;
    drop(input);
    let _lock = crate::lock::acquire(&dir.join(LOCK))?.map_err(ShimError::Taken)?;
    let socket = dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = {
        let (_dir, short) = socket_path(dir)?;
        UnixListener::bind(&short)?
    };
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let result = run(dir, spec, listener).await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.join(GROUP));
    result
}

async fn run(dir: &Path, spec: ShimSpec, listener: UnixListener) -> Result<(), ShimError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (status_tx, status_rx) = watch::channel(Status::initial());
    let (orders_tx, mut orders) = mpsc::channel::<Order>(16);
    let mut clients = tokio::task::JoinSet::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let fenced_message = "fenced: its lease lapsed (the node lost its agent or the control plane), so it waits for a renewal rather than risk running twice";
    let mut lease_until = spec
        .fenced
        .then(|| lease_end(spec.lease_until_ms, spec.lease_ms));
    let lease_holds = |until: Option<Instant>| until.is_none_or(|u| u > Instant::now());
    let mut running: Option<(Supervised, JoinHandle<()>)> = None;
    let mut restarts_before = spec.restarts_before;
    loop {
        if running.is_none() && lease_holds(lease_until) {
            let supervised = Supervised::start(spec.config.clone());
            let forward = tokio::spawn(forward(
                supervised.watch(),
                status_tx.clone(),
                restarts_before,
                dir.join(GROUP),
            ));
            running = Some((supervised, forward));
        } else if running.is_none() {
            update(&status_tx, |s| {
                s.phase = platform_spec::workload::Phase::Pending;
                s.ready = false;
                s.pid = None;
                s.message = Some(fenced_message.to_owned());
            });
        }
        let lapse_at = lease_until.filter(|_| running.is_some());
        let lapse = async move {
            match lapse_at {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    clients.spawn(client(stream, status_rx.clone(), orders_tx.clone()));
                }
            }
            order = orders.recv() => match order {
                Some(Order::Lease { ttl_ms, until_ms }) => {
                    if spec.fenced {
                        lease_until = Some(lease_end(until_ms, ttl_ms));
                    }
                }
                Some(Order::Stop) | None => break,
            },
            () = lapse => {
                if let Some((supervised, forward)) = running.take() {
                    tracing::warn!(instance = %spec.config.name, "lease lapsed: stopping the instance");
                    forward.abort();
                    let last = supervised.stop().await;
                    restarts_before = last.restarts;
                }
            }
            _ = terminate.recv() => break,
        }
    }
    if let Some((supervised, forward)) = running.take() {
        forward.abort();
        let last = supervised.stop().await;
        status_tx.send_replace(last);
    } else {
        update(&status_tx, |s| {
            s.phase = platform_spec::workload::Phase::Stopping;
            s.message = Some("stopped".to_owned());
        });
    }
    // Clients write the final status and see the end.
    drop(status_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Copies the supervisor's status out, counting restarts across fencing, and records
/// the instance's process group for the agent.
async fn forward(
    mut from: watch::Receiver<Status>,
    to: watch::Sender<Status>,
    restarts_before: u32,
    group_file: PathBuf,
) {
    let mut recorded = None;
    loop {
        let mut status = from.borrow_and_update().clone();
        status.restarts += restarts_before;
        if status.pid != recorded {
            recorded = status.pid;
            match status.pid.and_then(|pid| start_time(pid).map(|t| (pid, t))) {
                Some((pid, started)) => {
                    let _ = std::fs::write(&group_file, format!("{pid} {started}"));
                }
                None => {
                    let _ = std::fs::remove_file(&group_file);
                }
            }
        }
        to.send_replace(status);
        if from.changed().await.is_err() {
            return;
        }
    }
}

/// When a process started (clock ticks since boot), which tells it apart from a later
/// process that reuses its pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One agent connection: every status change out, orders in.
async fn client(
    stream: UnixStream,
    mut status: watch::Receiver<Status>,
    orders: mpsc::Sender<Order>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reading = true;
    loop {
        let line = {
            let current = status.borrow_and_update();
            serde_json::to_string(&*current).unwrap_or_default()
        };
        if write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        // The shim is ending: the last status was written above or is
                        // written now.
                        let last = serde_json::to_string(&*status.borrow()).unwrap_or_default();
                        let _ = write.write_all(format!("{last}\n").as_bytes()).await;
                        return;
                    }
                    break;
                }
                line = lines.next_line(), if reading => match line {
                    Ok(Some(text)) => {
                        if let Ok(order) = serde_json::from_str::<Order>(&text) {
                            let _ = orders.send(order).await;
                        }
                    }
                    // The agent went away; the instance carries on.
                    _ => reading = false,
                },
            }
        }
    }
}

/// The agent's handle on a shim.
#[derive(Debug)]
pub struct Shim {
    dir: PathBuf,
    status: watch::Receiver<Status>,
    orders: mpsc::UnboundedSender<Order>,
    /// True once the connection ended without a stop having been asked for.
    lost: watch::Receiver<bool>,
    log: LogFile,
}

impl Shim {
    /// Starts a shim for `spec` in `dir` with `program args` (the `paas shim` command)
    /// and connects to it.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        dir: &Path,
        spec: &ShimSpec,
    ) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("shim.log"))
            .map_err(|e| format!("cannot open the shim's log: {e}"))?;
        // The shim gets nothing of the agent's environment (its token included) but
        // what it needs to run and log.
        let inherited = ["PATH", "PAAS_LOG", "PAAS_LOG_FORMAT"]
            .into_iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (name, value)));
        let mut child = tokio::process::Command::new(program)
            .env_clear()
            .envs(inherited)
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(errors)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("cannot start the instance's shim: {e}"))?;
        let input = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|e| format!("cannot hand the spec to the shim: {e}"))?;
        }
        // The child is reaped by tokio once it exits; the shim outlives this handle.
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(shim) = Self::adopt(dir, spec.config.log.clone()).await {
                return Ok(shim);
            }
            if Instant::now() > deadline {
                return Err("the instance's shim did not start".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connects to the shim already running in `dir`; `None` when there is none.
    pub async fn adopt(dir: &Path, log: LogFile) -> Option<Self> {
        let stream = {
            let (_dir, short) = socket_path(dir).ok()?;
            UnixStream::connect(&short).await.ok()?
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // The shim speaks first: its current status.
        let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .ok()?
            .ok()??;
        let first: Status = serde_json::from_str(&first).ok()?;
        let (status_tx, status) = watch::channel(first);
        let (orders, mut pending) = mpsc::unbounded_channel::<Order>();
        let (lost_tx, lost) = watch::channel(false);
        tokio::spawn(async move {
            let mut stopping = false;
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(text)) => {
                            if let Ok(s) = serde_json::from_str::<Status>(&text) {
                                status_tx.send_replace(s);
                            }
                        }
                        _ => break,
                    },
                    order = pending.recv() => match order {
                        Some(order) => {
                            stopping |= order == Order::Stop;
                            let mut line = serde_json::to_string(&order).unwrap_or_default();
                            line.push('\n');
                            if write.write_all(line.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            if !stopping {
                lost_tx.send_replace(true);
            }
            // Dropping the sender ends `stop`'s wait.
            drop(status_tx);
        });
        Some(Self {
            dir: dir.to_path_buf(),
            status,
            orders,
            lost,
            log,
        })
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    pub fn log(&self) -> &LogFile {
        &self.log
    }

    /// Whether the shim went away without being asked to (it was killed).
    pub fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Extends the lease of a fenced instance until `until_ms` on the boot clock.
    pub fn renew(&self, until_ms: u64) {
        let _ = self.orders.send(Order::Lease {
            ttl_ms: until_ms.saturating_sub(boot_ms()),
            until_ms: Some(until_ms),
        });
    }

    /// Stops the instance gracefully, waits for the shim to end, and removes the
    /// instance's directory.
    pub async fn stop(mut self) -> Status {
        let _ = self.orders.send(Order::Stop);
        while self.status.changed().await.is_ok() {}
        let last = self.status.borrow().clone();
        clean_up(&self.dir);
        last
    }
}

/// The socket's path through an open handle on `dir` (`/proc/self/fd/N/shim.sock`):
/// a socket's path must fit in 108 bytes, and a data directory may be deep. The path is
/// valid while the returned handle is open.
fn socket_path(dir: &Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", handle.as_raw_fd()));
    Ok((handle, path))
}

/// Removes an instance directory whose shim is gone, first killing what may remain of
/// its process group (only if its leader is still the process the shim started).
pub fn clean_up(dir: &Path) {
    if let Ok(text) = std::fs::read_to_string(dir.join(GROUP)) {
        let mut parts = text.split_whitespace();
        let pid: Option<u32> = parts.next().and_then(|p| p.parse().ok());
        let started: Option<u64> = parts.next().and_then(|p| p.parse().ok());
        if let (Some(pid), Some(started)) = (pid, started)
            && start_time(pid) == Some(started)
            && let Ok(pgid) = i32::try_from(pid)
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether a shim holds `dir` (its lock is taken).
pub fn is_alive(dir: &Path) -> bool {
    crate::lock::holder_alive(&dir.join(LOCK))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::supervisor::{Backoff, RestartPolicy};

    /// A fenced `sleep` in a shim run in this process, whose lease ends at `until_ms`;
    /// the agent's handle on it, and its directory.
    async fn fenced_shim(
        name: &str,
        until_ms: u64,
    ) -> (Shim, tokio::task::JoinHandle<()>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("paas-shim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let log = LogFile::new(&dir.join("logs"), name, 64 * 1024);
        let spec = ShimSpec {
            config: InstanceConfig {
                name: name.to_owned(),
                command: "sleep".to_owned(),
                args: vec!["1000".to_owned()],
                env: BTreeMap::new(),
                port: None,
                workdir: dir.join("work"),
                log: log.clone(),
                readiness: None,
                liveness: None,
                restart: RestartPolicy::Always,
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_millis(400),
                    reset_after: Duration::from_secs(60),
                },
                grace: Duration::from_secs(1),
                package: None,
                ceilings: Default::default(),
                cgroups: None,
                sandbox: None,
            },
            fenced: true,
            lease_ms: until_ms.saturating_sub(boot_ms()),
            lease_until_ms: Some(until_ms),
            restarts_before: 0,
        };
        let listener = {
            let (_handle, short) = socket_path(&dir).unwrap_or_else(|e| panic!("{e}"));
            UnixListener::bind(&short).unwrap_or_else(|e| panic!("{e}"))
        };
        let served = dir.clone();
        let task = tokio::spawn(async move {
            let _ = run(&served, spec, listener).await;
        });
        let shim = Shim::adopt(&dir, log)
            .await
            .unwrap_or_else(|| panic!("the shim does not answer"));
        (shim, task, dir)
    }

    /// Whether the instance's process runs at some moment within `within`.
    async fn starts_within(shim: &Shim, within: Duration) -> bool {
        let mut status = shim.watch();
        let end = Instant::now() + within;
        loop {
            if status.borrow_and_update().pid.is_some() {
                return true;
            }
            if tokio::time::timeout_at(end, status.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    #[tokio::test]
    async fn a_renewal_that_arrives_after_its_lease_ended_starts_nothing() {
        // The agent read its heartbeat's answer with 100 ms of the term left, then was
        // frozen before the renewal reached the shim: by the time it does, the lease
        // the control plane granted has ended, and the ordinal may run elsewhere.
        let (shim, task, dir) = fenced_shim("late", 0).await;
        assert!(!starts_within(&shim, Duration::from_millis(200)).await);
        let until = boot_ms() + 100;
        let renewal = Order::Lease {
            ttl_ms: until.saturating_sub(boot_ms()),
            until_ms: Some(until),
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = shim.orders.send(renewal);
        assert!(
            !starts_within(&shim, Duration::from_millis(400)).await,
            "a lease that had ended started the instance"
        );
        // A renewal in its term starts it again, and its end stops it.
        shim.renew(boot_ms() + 600);
        assert!(starts_within(&shim, Duration::from_secs(2)).await);
        let mut status = shim.watch();
        let stopped = tokio::time::timeout(Duration::from_secs(5), async {
            while status.borrow_and_update().pid.is_some() {
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(stopped.is_ok(), "the lease ended and the instance ran on");
        let _ = shim.stop().await;
        let _ = task.await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_lease_order_still_reads_as_its_older_form() {
        // A shim started by an older agent reads `ttl_ms` and ignores `until_ms`; a
        // newer shim given only `ttl_ms` counts it from now.
        let order = Order::Lease {
            ttl_ms: 4000,
            until_ms: Some(123),
        };
        let text = serde_json::to_string(&order).unwrap_or_default();
        assert_eq!(text, r#"{"op":"lease","ttl_ms":4000,"until_ms":123}"#);
        let old: Order = serde_json::from_str(r#"{"op":"lease","ttl_ms":4000}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            old,
            Order::Lease {
                ttl_ms: 4000,
                until_ms: None
            }
        );
    }
}
