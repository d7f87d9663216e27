//! Stopping everything a `paas up` runs from a data directory, in the order that loses
//! nothing: the control plane (so nothing is restarted), the agents, every instance
//! (gracefully, through its shim), the router, and the platform's PostgreSQL.
//!
//! # Guarantees
//! - Each group is asked to stop (SIGTERM) and waited for before the next is; one that
//!   has not stopped by its deadline is killed (SIGKILL).
//! - Only live holders of the platform's lock files are signalled: a stale lock's
//!   process id, possibly reused by another process, is never signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::postgres::LocalPostgres;

/// Stops every process of the platform in `data_dir` (waiting for each group).
pub async fn everything(data_dir: &Path) {
    stop_holders(
        &[data_dir.join("control-plane.lock")],
        Duration::from_secs(30),
    )
    .await;
    // The service brokers, before the instances that run their servers.
    let broker_locks: Vec<PathBuf> = subdirs(&data_dir.join("brokers"))
        .iter()
        .map(|b| b.join("broker.lock"))
        .collect();
    stop_holders(&broker_locks, Duration::from_secs(15)).await;
    let agents: Vec<PathBuf> = subdirs(&data_dir.join("agents"));
    let agent_locks: Vec<PathBuf> = agents.iter().map(|a| a.join("agent.lock")).collect();
    stop_holders(&agent_locks, Duration::from_secs(15)).await;
    // Shims stop their instances gracefully (the instance's grace period) and exit.
    let shim_locks: Vec<PathBuf> = agents
        .iter()
        .flat_map(|a| subdirs(&a.join("instances")))
        .map(|i| i.join("shim.lock"))
        .collect();
    let stopped = stop_holders(&shim_locks, Duration::from_secs(30)).await;
    stop_holders(&[data_dir.join("router.lock")], Duration::from_secs(15)).await;
    if let Some(pg) = LocalPostgres::existing(data_dir)
        && pg.running().await
        && let Err(e) = pg.stop().await
    {
        tracing::warn!(error = %e, "could not stop the platform's PostgreSQL");
    }
    tracing::info!(data_dir = %data_dir.display(), instances = stopped, "the platform is down");
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends SIGTERM to the live holder of each lock and waits until every lock is free;
/// after `timeout`, SIGKILL. Returns how many there were.
async fn stop_holders(locks: &[PathBuf], timeout: Duration) -> usize {
    let holders: Vec<(PathBuf, u32)> = locks
        .iter()
        .filter(|l| local_node::lock::holder_alive(l))
        .filter_map(|l| local_node::lock::holder(l).map(|pid| (l.clone(), pid)))
        .collect();
    let signal = |sig: Signal, which: &[(PathBuf, u32)]| {
        for (_, pid) in which {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    };
    signal(Signal::SIGTERM, &holders);
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<(PathBuf, u32)> = holders
            .iter()
            .filter(|(l, _)| local_node::lock::holder_alive(l))
            .cloned()
            .collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                count = alive.len(),
                "processes did not stop in time; killing them"
            );
            signal(Signal::SIGKILL, &alive);
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holders.len()
}
