#![allow(clippy::print_stdout)] // What it observed goes to stdout, for the benchmark that runs it.

//! Simulated nodes for benchmarks: registers many nodes with a control plane and
//! speaks the agent protocol for each of them from one process (long-poll heartbeats,
//! every assigned instance reported running and ready at once), so that the control
//! plane can be measured at a scale one machine cannot run for real.
//!
//! Prints `assigned <tenant>/<env>/<app> <instance> <unix ms>` on stdout the moment a
//! node first receives an instance to run, and `held <n>` on stderr every five seconds.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use local_node::proto::{
    Assignments, Desired, Heartbeat, InstanceReport, Registered, Registration,
};
use platform_spec::spec::Resources;
use platform_spec::workload::Phase;

#[derive(Debug)]
struct Args {
    control_plane: String,
    token: String,
    nodes: usize,
    heartbeat_ms: u64,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        control_plane: "http://127.0.0.1:8080".into(),
        token: std::env::var("PAAS_AGENT_TOKEN").unwrap_or_default(),
        nodes: 500,
        heartbeat_ms: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--control-plane" => args.control_plane = value,
            "--nodes" => args.nodes = value.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--heartbeat-ms" => {
                args.heartbeat_ms = value.parse().map_err(|e| format!("--heartbeat-ms: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.token.is_empty() {
        return Err("PAAS_AGENT_TOKEN must be set".into());
    }
    Ok(args)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn node(args: Arc<Args>, http: reqwest::Client, index: usize, held_total: Arc<AtomicUsize>) {
    let name = format!("sim-{index}");
    let registration = Registration {
        name: name.clone(),
        labels: BTreeMap::new(),
        capacity: Resources {
            cpu_millis: 1_000_000,
            memory_mib: 4_000_000,
        },
        address: "127.0.0.1".into(),
        api_port: 0,
        heartbeat_ms: u32::try_from(args.heartbeat_ms).ok(),
    };
    let credential = loop {
        let answer = http
            .post(format!("{}/internal/v1/nodes", args.control_plane))
            .bearer_auth(&args.token)
            .json(&registration)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => match r.json::<Registered>().await {
                Ok(r) => break r.credential,
                Err(e) => eprintln!("{name}: {e}"),
            },
            Ok(r) => eprintln!("{name}: registration answered {}", r.status()),
            Err(e) => eprintln!("{name}: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut held: Option<Assignments> = None;
    let mut running: HashSet<uuid::Uuid> = HashSet::new();
    loop {
        let reports: Vec<InstanceReport> = held
            .iter()
            .flat_map(|a| &a.instances)
            .filter(|a| a.desired == Desired::Run)
            .map(|a| InstanceReport {
                id: a.id,
                phase: Phase::Running,
                ready: true,
                restarts: 0,
                port: Some(40000),
                ports: BTreeMap::new(),
                message: None,
                cpu_millis: None,
                memory_mib: None,
            })
            .collect();
        let beat = Heartbeat {
            instances: reports,
            version: held.as_ref().and_then(|a| a.version.clone()),
            wait_ms: Some(args.heartbeat_ms),
            // A simulated node holds no files: every purge is done at once.
            purged: held
                .as_ref()
                .map(|a| a.purges.iter().map(|p| p.app_id).collect())
                .unwrap_or_default(),
        };
        let answer = http
            .post(format!(
                "{}/internal/v1/nodes/{name}/heartbeat",
                args.control_plane
            ))
            .bearer_auth(&credential)
            .json(&beat)
            .send()
            .await;
        let answer = match answer {
            Ok(r) if r.status().is_success() => r.json::<Assignments>().await.ok(),
            _ => None,
        };
        let Some(answer) = answer else {
            tokio::time::sleep(Duration::from_millis(args.heartbeat_ms)).await;
            continue;
        };
        if answer.unchanged {
            continue;
        }
        let at = now_ms();
        let wanted: HashSet<uuid::Uuid> = answer
            .instances
            .iter()
            .filter(|a| a.desired == Desired::Run)
            .map(|a| a.id)
            .collect();
        for a in answer
            .instances
            .iter()
            .filter(|a| a.desired == Desired::Run)
        {
            if !running.contains(&a.id) {
                println!("assigned {} {} {at}", a.key, a.id);
            }
        }
        let before = running.len();
        running = wanted;
        if running.len() >= before {
            held_total.fetch_add(running.len() - before, Ordering::Relaxed);
        } else {
            held_total.fetch_sub(before - running.len(), Ordering::Relaxed);
        }
        held = Some(answer);
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("paas-simnodes: {e}");
            std::process::exit(2);
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.heartbeat_ms + 30_000))
        .pool_max_idle_per_host(args.nodes)
        .build()
        .unwrap_or_default();
    let held = Arc::new(AtomicUsize::new(0));
    for index in 0..args.nodes {
        tokio::spawn(node(args.clone(), http.clone(), index, held.clone()));
    }
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!("held {}", held.load(Ordering::Relaxed));
    }
}
