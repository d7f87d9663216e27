//! Supervision of one instance as an OS process.
//!
//! # Guarantees
//! - The process runs in its own process group; stopping or restarting it signals the
//!   whole group, so nothing it started outlives it.
//! - A stop is graceful: SIGTERM to the group, up to the grace period for it to exit,
//!   then SIGKILL.
//! - A process that exits (or fails its liveness probe) is restarted according to the
//!   restart policy, after an exponential backoff that resets once it has run well for
//!   a while; while it waits, the status is `BackOff` with the exit reason and the last
//!   lines it wrote.
//! - Everything it writes to stdout and stderr lands in its size-bounded log.
//! - With a [`Sandbox`], the process runs as the sandbox's unprivileged identity in a
//!   working directory that identity owns and only it can read.
//!
//! # Assumptions
//! - The caller chose a free port; a port taken meanwhile shows up as a crash whose
//!   last log lines say so.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use platform_spec::workload::Phase;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::limits::{Ceilings, Cgroups, Confinement};
use crate::logs::LogFile;
use crate::package::{InstallError, PackageSource};
use crate::probe::{Probe, ProbeState};
use crate::sandbox::Sandbox;
use crate::usage::UsageSampler;

/// When a process that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Always (services): an exit of any kind is restarted.
    Always,
    /// Only after a failure, at most `max_retries` times (jobs).
    OnFailure { max_retries: u32 },
    /// Never (one-shot runs).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before restart number `failures` (1-based) in a row: the first restart
    /// is immediate (a one-off crash heals at once), then `initial`, doubling up to `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let factor = 2_u32.saturating_pow(failures.saturating_sub(2).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Everything needed to run one instance. It crosses from the agent to the instance's
/// shim as JSON on a pipe, never through a file: `env` holds the instance's secrets.
#[derive(Clone, Serialize, Deserialize)]
pub struct InstanceConfig {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Given to the process as `PORT` and used by the probes.
    pub port: Option<u16>,
    pub workdir: PathBuf,
    pub log: LogFile,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// How long a stopping process gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// A package archive unpacked into `workdir` before the first start.
    pub package: Option<PackageSource>,
    /// Hard ceilings, enforced through `cgroups` when the node has them.
    pub ceilings: Ceilings,
    pub cgroups: Option<Cgroups>,
    /// The identity and view of the process; `None` runs it as the supervisor's user.
    pub sandbox: Option<Sandbox>,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: only their names are ever printed.
        f.debug_struct("InstanceConfig")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("port", &self.port)
            .field("workdir", &self.workdir)
            .field("restart", &self.restart)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// What the supervisor observes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
    pub since: chrono::DateTime<Utc>,
}

impl Status {
    pub fn initial() -> Self {
        Self {
            phase: Phase::Pending,
            ready: false,
            restarts: 0,
            pid: None,
            exit_code: None,
            message: None,
            cpu_millis: None,
            memory_mib: None,
            since: Utc::now(),
        }
    }
}

/// A supervised instance. Dropping it does not stop the process; call [`Self::stop`].
#[derive(Debug)]
pub struct Supervised {
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    log: LogFile,
}

impl Supervised {
    /// Starts supervising; the process starts at once.
    pub fn start(config: InstanceConfig) -> Self {
        let (status_tx, status) = watch::channel(Status::initial());
        let (stop, stop_rx) = watch::channel(false);
        let log = config.log.clone();
        let task = tokio::spawn(supervise(config, status_tx, stop_rx));
        Self {
            status,
            stop,
            task,
            log,
        }
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

    pub fn logs(&self, lines: usize) -> Vec<String> {
        self.log.tail(lines)
    }

    /// Stops the instance gracefully and waits until it is gone.
    pub async fn stop(self) -> Status {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.status.borrow().clone()
    }
}

pub(crate) fn update(tx: &watch::Sender<Status>, change: impl FnOnce(&mut Status)) {
    tx.send_modify(|s| {
        let phase_before = s.phase;
        change(s);
        if s.phase != phase_before {
            s.since = Utc::now();
        }
    });
}

/// How one run of the process ended.
enum RunEnd {
    Exited(ExitStatus),
    LivenessFailed(String),
    Stopped,
}

async fn supervise(
    config: InstanceConfig,
    tx: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default();
    if let Some(source) = &config.package
        && !install(&config, source, &tx, &mut stop, &http).await
    {
        return;
    }
    // Once per supervisor: everything in the working directory (an unpacked package, or
    // data left by an earlier run) becomes the instance identity's.
    if let Some(sandbox) = &config.sandbox
        && let Err(e) = hand_over(&config.workdir, sandbox.uid, sandbox.gid)
    {
        config
            .log
            .note(&format!(
                "cannot give the working directory to the instance: {e}"
            ))
            .await;
    }
    let mut failures_in_row = 0_u32;
    let mut confinement: Option<Confinement> = None;
    if !config.ceilings.is_empty() && config.cgroups.is_none() {
        config
            .log
            .note("limits are not enforced on this node (no writable cgroups); usage is measured")
            .await;
    }
    loop {
        if *stop.borrow() {
            if let Some(c) = confinement.take() {
                c.release();
            }
            update(&tx, finish_stopped);
            return;
        }
        update(&tx, |s| {
            s.phase = Phase::Starting;
            s.ready = false;
            s.exit_code = None;
        });
        let started = Instant::now();
        let (success, reason) = match spawn(&config) {
            Err(reason) => {
                config.log.note(&reason).await;
                (false, reason)
            }
            Ok(mut child) => {
                let pid = child.id();
                // Each run's process joins the instance's group (made by the first run).
                if let (Some(cgroups), Some(pid)) = (&config.cgroups, pid)
                    && !config.ceilings.is_empty()
                {
                    match cgroups.confine(&config.name, pid, config.ceilings) {
                        Ok(c) => {
                            confinement.get_or_insert(c);
                        }
                        Err(e) => config.log.note(&format!("limits not enforced: {e}")).await,
                    }
                }
                update(&tx, |s| {
                    s.pid = pid;
                    s.message = None;
                    if config.readiness.is_none() {
                        s.phase = Phase::Running;
                        s.ready = true;
                    }
                });
                let end = watch_run(&config, &mut child, &tx, &mut stop, &http).await;
                let pgid = pid.and_then(|p| i32::try_from(p).ok());
                let leader = config.sandbox.as_ref().is_some_and(Sandbox::has_leader);
                match end {
                    RunEnd::Stopped => {
                        update(&tx, |s| {
                            s.phase = Phase::Stopping;
                            s.ready = false;
                        });
                        terminate(&mut child, pgid, config.grace, leader).await;
                        config.log.note("stopped").await;
                        if let Some(c) = confinement.take() {
                            c.release();
                        }
                        update(&tx, finish_stopped);
                        return;
                    }
                    RunEnd::LivenessFailed(why) => {
                        terminate(&mut child, pgid, config.grace, leader).await;
                        let reason = format!("liveness probe failed: {why}");
                        config.log.note(&reason).await;
                        (false, reason)
                    }
                    RunEnd::Exited(status) => {
                        // The leader is gone; take down anything it left in its group.
                        if let Some(pgid) = pgid {
                            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                        }
                        let mut reason = describe_exit(status, leader);
                        if let (Some(mib), Some(_), Some(9)) = (
                            config.ceilings.memory_mib,
                            &confinement,
                            killed_by(status, leader),
                        ) {
                            reason.push_str(&format!(
                                " (likely out of memory: its limit is {mib} MiB)"
                            ));
                        }
                        config.log.note(&reason).await;
                        update(&tx, |s| s.exit_code = status.code());
                        (status.success(), reason)
                    }
                }
            }
        };
        update(&tx, |s| {
            s.pid = None;
            s.ready = false;
            s.cpu_millis = None;
        });

        let restarts_so_far = tx.borrow().restarts;
        let give_up = match config.restart {
            RestartPolicy::Always => None,
            RestartPolicy::OnFailure { .. } if success => Some(Phase::Succeeded),
            RestartPolicy::OnFailure { max_retries } if restarts_so_far >= max_retries => {
                Some(Phase::Failed)
            }
            RestartPolicy::OnFailure { .. } => None,
            RestartPolicy::Never => Some(if success {
                Phase::Succeeded
            } else {
                Phase::Failed
            }),
        };
        if let Some(phase) = give_up {
            let message = (!success).then(|| with_last_lines(&reason, &config.log));
            update(&tx, |s| {
                s.phase = phase;
                s.message = message;
            });
            // Wait for a stop so the owner can still read the final status and logs.
            if let Some(c) = confinement.take() {
                c.release();
            }
            stopped(&mut stop).await;
            return;
        }

        if started.elapsed() >= config.backoff.reset_after {
            failures_in_row = 0;
        }
        failures_in_row += 1;
        let delay = config.backoff.delay(failures_in_row);
        let message = format!(
            "{}; restarting in {}s",
            with_last_lines(&reason, &config.log),
            delay.as_secs_f32()
        );
        tracing::info!(instance = %config.name, reason = %reason, delay_ms = delay.as_millis() as u64, "instance will restart");
        update(&tx, |s| {
            s.phase = Phase::BackOff;
            s.message = Some(message);
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => {}
        }
        if !*stop.borrow() {
            update(&tx, |s| s.restarts += 1);
        }
    }
}

/// Installs the package, retrying while the control plane is unreachable. False when
/// the instance must not start: stopped meanwhile, or an archive that can never work
/// (then the instance is `Failed` with the reason until it is stopped).
async fn install(
    config: &InstanceConfig,
    source: &PackageSource,
    tx: &watch::Sender<Status>,
    stop: &mut watch::Receiver<bool>,
    http: &reqwest::Client,
) -> bool {
    update(tx, |s| {
        s.phase = Phase::Starting;
        s.message = Some(format!("installing package {}", source.digest));
    });
    loop {
        let result = tokio::select! {
            r = source.install(http, &config.workdir) => r,
            () = stopped(stop) => {
                update(tx, finish_stopped);
                return false;
            }
        };
        match result {
            Ok(()) => return true,
            Err(InstallError::Invalid(why)) => {
                config.log.note(&why).await;
                update(tx, |s| {
                    s.phase = Phase::Failed;
                    s.message = Some(why);
                });
                stopped(stop).await;
                update(tx, finish_stopped);
                return false;
            }
            Err(InstallError::Unavailable(why)) => {
                update(tx, |s| {
                    s.phase = Phase::BackOff;
                    s.message = Some(format!("{why}; retrying in 2s"));
                });
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = stopped(stop) => {}
                }
            }
        }
    }
}

/// Resolves once a stop has been asked for (without holding the channel's lock).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn finish_stopped(s: &mut Status) {
    s.phase = Phase::Stopping;
    s.ready = false;
    s.pid = None;
    s.message = Some("stopped".to_owned());
}

/// The reason with the last lines the process wrote, which usually say why.
fn with_last_lines(reason: &str, log: &LogFile) -> String {
    let lines: Vec<String> = log
        .tail(6)
        .into_iter()
        .filter(|l| !l.starts_with("[paas]"))
        .collect();
    if lines.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}; last output:\n{}", lines.join("\n"))
    }
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The program a command names: a relative path is a file of the instance's own
/// directory (its package), a bare name is looked up on `PATH`. Resolved here, so that
/// a missing program is said the same way in a sandbox and out of one.
fn resolve_program(command: &str, workdir: &Path, path: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if command.starts_with('/') {
        vec![PathBuf::from(command)]
    } else if command.contains('/') {
        vec![workdir.join(command)]
    } else {
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(command))
            .collect()
    };
    let found = candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| format!("command '{command}' was not found"))?;
    let executable = std::fs::metadata(&found)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if executable {
        Ok(found)
    } else {
        Err(format!("command '{command}' is not executable"))
    }
}

/// Makes `dir` and everything in it belong to `uid`/`gid`, readable by nobody else.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        // Links are changed themselves, never followed.
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

fn spawn(config: &InstanceConfig) -> Result<Child, String> {
    std::fs::create_dir_all(&config.workdir).map_err(|e| {
        format!(
            "cannot create working directory {}: {e}",
            config.workdir.display()
        )
    })?;
    // A sandboxed instance gets the system's PATH: the agent's may name directories of
    // its own user that the instance's identity cannot enter.
    let path = match &config.sandbox {
        Some(_) => SYSTEM_PATH.to_owned(),
        None => std::env::var("PATH").unwrap_or_else(|_| SYSTEM_PATH.to_owned()),
    };
    let program = resolve_program(&config.command, &config.workdir, &path)?;
    let (exe, args): (PathBuf, Vec<OsString>) = match &config.sandbox {
        Some(sandbox) => sandbox.wrap(&program, &config.args, &config.workdir),
        None => (program, config.args.iter().map(OsString::from).collect()),
    };
    let mut command = Command::new(&exe);
    command
        .args(&args)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &config.workdir)
        .env("PAAS_INSTANCE", &config.name)
        .envs(&config.env)
        .current_dir(&config.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(port) = config.port {
        command.env("PORT", port.to_string());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("command '{}' could not start: {e}", config.command))?;
    if let Some(out) = child.stdout.take() {
        let log = config.log.clone();
        tokio::spawn(async move { log.capture(out).await });
    }
    if let Some(err) = child.stderr.take() {
        let log = config.log.clone();
        tokio::spawn(async move { log.capture(err).await });
    }
    Ok(child)
}

async fn watch_run(
    config: &InstanceConfig,
    child: &mut Child,
    tx: &watch::Sender<Status>,
    stop: &mut watch::Receiver<bool>,
    http: &reqwest::Client,
) -> RunEnd {
    let started = tokio::time::Instant::now();
    let port = config.port.unwrap_or(0);
    let mut readiness = ProbeState::default();
    let mut liveness = ProbeState::default();
    let tick = |probe: &Option<Probe>| {
        probe.as_ref().map_or_else(
            || {
                probe_interval(
                    started + Duration::from_secs(3600),
                    Duration::from_secs(3600),
                )
            },
            |p| {
                // Until the instance is first ready, its readiness probe may run more often.
                let period = p.until_ready.map_or(p.period.max(PERIOD_FLOOR), |fast| {
                    fast.max(STARTING_PERIOD_FLOOR)
                });
                probe_interval(started + p.initial_delay, period)
            },
        )
    };
    let mut starting = config.readiness.as_ref().and_then(|p| p.until_ready);
    let mut readiness_tick = tick(&config.readiness);
    let mut liveness_tick = tick(&config.liveness);
    let mut usage_tick = tokio::time::interval(Duration::from_secs(5));
    let mut sampler = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(UsageSampler::new);
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => RunEnd::Exited(status),
                    Err(e) => RunEnd::LivenessFailed(format!("lost the process: {e}")),
                };
            }
            () = stopped(stop) => return RunEnd::Stopped,
            _ = readiness_tick.tick(), if config.readiness.is_some() => {
                if let Some(probe) = &config.readiness {
                    let result = probe.check(http, port).await;
                    readiness.record(probe, result);
                    let ready = readiness.passing();
                    if ready && starting.take().is_some() {
                        let period = probe.period.max(PERIOD_FLOOR);
                        readiness_tick = probe_interval(tokio::time::Instant::now() + period, period);
                    }
                    let waiting = readiness.last_error.clone().map(|e| format!("not ready: {e}"));
                    update(tx, |s| {
                        s.ready = ready;
                        // Once it has been ready, a failing readiness probe only takes it out of
                        // rotation; it stays Running.
                        if ready || s.phase == Phase::Running {
                            s.phase = Phase::Running;
                        } else {
                            s.phase = Phase::Starting;
                        }
                        s.message = if ready { None } else { waiting };
                    });
                }
            }
            _ = liveness_tick.tick(), if config.liveness.is_some() => {
                if let Some(probe) = &config.liveness {
                    let result = probe.check(http, port).await;
                    liveness.record(probe, result);
                    if liveness.failed(probe) {
                        return RunEnd::LivenessFailed(liveness.last_error.clone().unwrap_or_default());
                    }
                }
            }
            _ = usage_tick.tick() => {
                if let Some(sampler) = sampler.as_mut() {
                    let usage = sampler.sample();
                    update(tx, |s| {
                        s.cpu_millis = usage.cpu_millis.or(s.cpu_millis);
                        s.memory_mib = Some(usage.memory_mib);
                    });
                }
            }
        }
    }
}

/// The shortest probe period, and the shortest while an instance starts.
const PERIOD_FLOOR: Duration = Duration::from_millis(50);
const STARTING_PERIOD_FLOOR: Duration = Duration::from_millis(5);

/// A probe's ticks from `start`, every `period`, delayed rather than bunched when a
/// probe overruns.
fn probe_interval(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// SIGTERM to the group, the grace period, then SIGKILL; waits for the leader.
///
/// When the leader is a sandbox (`sandboxed_leader`), SIGTERM goes to every member but
/// it: the sandbox ends by itself once the instance has, and killing it first would
/// kill the instance without its grace period.
async fn terminate(child: &mut Child, pgid: Option<i32>, grace: Duration, sandboxed_leader: bool) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    let group = Pid::from_raw(pgid);
    if sandboxed_leader {
        for pid in crate::usage::group_members(pgid) {
            if pid != pgid {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
    } else {
        let _ = killpg(group, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that ignored SIGTERM but outlived the leader.
    let _ = killpg(group, Signal::SIGKILL);
}

/// The signal that ended the instance: its own, or, behind a sandbox leader (which
/// exits with 128 + the signal of its child), the one its exit code stands for.
fn killed_by(status: ExitStatus, sandboxed_leader: bool) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal().or_else(|| {
        status
            .code()
            .filter(|c| sandboxed_leader && (129..=192).contains(c))
            .map(|c| c - 128)
    })
}

fn describe_exit(status: ExitStatus, sandboxed_leader: bool) -> String {
    match (status.code(), killed_by(status, sandboxed_leader)) {
        (_, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map(|s| s.as_str())
                .unwrap_or("unknown signal");
            format!("killed by {name}")
        }
        (Some(0), _) => "exited with code 0".to_owned(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, None) => "exited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(1000), Duration::from_secs(10));
    }

    #[test]
    fn programs_are_found_where_the_command_says() {
        let dir = std::env::temp_dir().join(format!("paas-resolve-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let script = dir.join("run.sh");
        let _ = std::fs::write(&script, "#!/bin/sh\n");
        let check = |command: &str, expected: Result<PathBuf, String>| {
            assert_eq!(
                resolve_program(command, &dir, "/nowhere:/bin"),
                expected,
                "{command}"
            );
        };
        check("sh", Ok(PathBuf::from("/bin/sh")));
        check("/bin/sh", Ok(PathBuf::from("/bin/sh")));
        check(
            "nosuchprogram",
            Err("command 'nosuchprogram' was not found".into()),
        );
        check(
            "./run.sh",
            Err("command './run.sh' is not executable".into()),
        );
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
        check("./run.sh", Ok(dir.join("./run.sh")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sandbox_leader_reports_its_childs_signal_as_an_exit_code() {
        use std::os::unix::process::ExitStatusExt;
        let by_code = ExitStatus::from_raw(137 << 8);
        assert_eq!(describe_exit(by_code, true), "killed by SIGKILL");
        assert_eq!(describe_exit(by_code, false), "exited with code 137");
        let by_signal = ExitStatus::from_raw(9);
        assert_eq!(describe_exit(by_signal, false), "killed by SIGKILL");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(2 << 8), true),
            "exited with code 2"
        );
    }
}
