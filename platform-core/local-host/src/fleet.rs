//! The fleet of `paas up`: the node agents and the router, run as separate processes
//! and supervised, so that the data path never depends on the control plane.
//!
//! # Guarantees
//! - A member that dies is started again, at once the first time and then with a
//!   backoff that doubles up to 30 s (reset after ten seconds of good health); each death
//!   is logged and handed to `on_death` (which records a node event).
//! - A member already running when supervision starts (left by an earlier `paas up`)
//!   is adopted, not duplicated: members hold a lock file while they live, and the
//!   fleet watches the lock.
//! - Ending supervision ([`Fleet::detach`]) leaves every member running.
//! - A member found running an older binary (the `paas` executable was replaced: an
//!   upgrade) is replaced by one running this binary: the router by a successor that
//!   takes over its listening sockets before it stops ([`Member::replace_arg`]), an
//!   agent by a restart (its instances run under their shims and do not notice).
//!
//! # Assumptions
//! - A member that finds its lock taken exits at once and successfully.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One process of the fleet.
#[derive(Debug, Clone)]
pub struct Member {
    /// `node-1`, `router`: for logs and events.
    pub name: String,
    /// The node an agent serves (its deaths are node events).
    pub node: Option<String>,
    /// The lock the member holds while it lives.
    pub lock: PathBuf,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// The argument that makes a new process take over from a running one without a
    /// gap (`--replace` for the router); `None`: an outdated one is stopped first.
    pub replace_arg: Option<OsString>,
}

/// Called with the member and how it died.
pub type OnDeath = Arc<dyn Fn(&Member, &str) + Send + Sync>;

#[derive(Debug)]
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts (or adopts) and supervises every member.
    pub fn supervise(members: Vec<Member>, on_death: OnDeath) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = members
            .into_iter()
            .map(|m| tokio::spawn(supervise(m, stopped.clone(), on_death.clone())))
            .collect();
        Self { stop, tasks }
    }

    /// Stops supervising; the members keep running.
    pub async fn detach(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The wait before restart number `deaths` (1-based) in a row.
fn backoff(deaths: u32) -> Duration {
    if deaths <= 1 {
        return Duration::ZERO;
    }
    let factor = 2_u32.saturating_pow(deaths.saturating_sub(2).min(10));
    Duration::from_millis(250)
        .saturating_mul(factor)
        .min(Duration::from_secs(30))
}

async fn supervise(member: Member, mut stop: watch::Receiver<bool>, on_death: OnDeath) {
    let mut deaths = 0_u32;
    loop {
        let started = Instant::now();
        let holder = local_node::lock::holder_alive(&member.lock)
            .then(|| local_node::lock::holder(&member.lock))
            .flatten();
        let outdated = holder.filter(|pid| runs_an_older_binary(*pid, &member.program));
        // Only a member that offers a handover (an older router may not) is replaced
        // that way; any other is restarted.
        let replace_arg = member
            .replace_arg
            .as_ref()
            .filter(|_| member.lock.with_extension("sock").exists());
        let ended = match (holder, outdated, replace_arg) {
            (Some(pid), Some(_), Some(arg)) => {
                tracing::info!(member = %member.name, pid, "runs an older binary: a new one takes over");
                let mut successor = member.clone();
                successor.args.push(arg.clone());
                run_child(&successor, &mut stop).await
            }
            (Some(pid), Some(_), None) => {
                tracing::info!(member = %member.name, pid, "runs an older binary: restarting it");
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                // An upgrade is not a death: wait for it to go, then start it anew.
                if watch_lock(&member, &mut stop).await.is_none() {
                    return;
                }
                continue;
            }
            (Some(_), None, _) => {
                tracing::info!(member = %member.name, "adopted: already running");
                watch_lock(&member, &mut stop).await
            }
            (None, _, _) => run_child(&member, &mut stop).await,
        };
        let Some(how) = ended else {
            return;
        };
        // A child that found the lock taken by a twin ends at once; the twin is
        // watched from the next turn on, and nothing died.
        if local_node::lock::holder_alive(&member.lock) {
            continue;
        }
        if started.elapsed() > Duration::from_secs(10) {
            deaths = 0;
        }
        deaths += 1;
        let delay = backoff(deaths);
        tracing::warn!(member = %member.name, how, restart_in_ms = delay.as_millis() as u64, "fleet member died; restarting it");
        on_death(&member, &how);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Whether process `pid` runs another binary than `program` (or one since replaced on
/// disk, which the kernel names `... (deleted)`).
fn runs_an_older_binary(pid: u32, program: &std::path::Path) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let text = exe.to_string_lossy();
    text.ends_with(" (deleted)") || exe != program
}

/// Waits for an adopted member to release its lock (it died); `None` when supervision
/// ends first.
async fn watch_lock(member: &Member, stop: &mut watch::Receiver<bool>) -> Option<String> {
    let pid = local_node::lock::holder(&member.lock);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return None,
        }
        if !local_node::lock::holder_alive(&member.lock) {
            return Some(format!(
                "process {} is gone",
                pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
            ));
        }
    }
}

/// Starts the member and waits for it to end; `None` when supervision ends first (the
/// member keeps running).
async fn run_child(member: &Member, stop: &mut watch::Receiver<bool>) -> Option<String> {
    let mut command = tokio::process::Command::new(&member.program);
    command
        .args(&member.args)
        .envs(member.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        // Its own process group: a terminal's Ctrl-C for `paas up` is not for it.
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Some(format!("could not start: {e}")),
    };
    tokio::select! {
        status = child.wait() => Some(match status {
            Ok(s) => describe(s),
            Err(e) => e.to_string(),
        }),
        _ = stop.changed() => None,
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => nix::sys::signal::Signal::try_from(signal).map_or_else(
            |_| format!("killed by signal {signal}"),
            |s| format!("killed by {s}"),
        ),
        (None, None) => "ended".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_restarted_at_once_then_ever_more_slowly() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [0, 250, 500, 1000, 2000, 4000, 8000, 16000, 30000]);
        assert_eq!(backoff(100), Duration::from_secs(30));
    }
}
