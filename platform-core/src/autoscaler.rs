//! The autoscaling evaluator: for every application with a policy, at its sample
//! interval (and at once when one of its bands starts or ends), reads the metrics,
//! decides the count (`autoscaling::decide`), writes it and the ledger row in one
//! transaction. The runtimes only converge to the count, as to any other.
//!
//! One evaluator decides at a time, whichever control plane holds a PostgreSQL advisory
//! lock; the others wait to take over. What a band does is computed from the policy at
//! each evaluation, so a trigger missed while no evaluator ran is made good at the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use tokio::sync::{Notify, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use crate::autoscaling::{
    Change, Compiled, Decision, Inputs, Metric, Policy, Reading, Recommended, decide,
};
use crate::model::{RunState, desired_replicas};
use crate::runtime::{Instance, Runtimes, WorkloadKey};
use crate::spec::AppSpec;
use crate::store;

/// The advisory lock the deciding evaluator holds ("paas-autoscaler").
const LEADER_LOCK: i64 = 0x7061_6173_6173_6372;
/// How often the evaluator looks for work.
const TICK: Duration = Duration::from_millis(250);
/// How far back recommendations and changes are remembered (the longest window or
/// period a policy may set).
const MEMORY: chrono::Duration = chrono::Duration::seconds(3600);

/// Where metrics that neither the runtime's instances nor the policy hold come from.
#[derive(Debug, Clone, Default)]
pub struct MetricSources {
    /// A Prometheus server, for `promql` rules and canary analyses.
    pub prometheus: Option<Prometheus>,
}

/// A Prometheus server (its base URL) and the client that asks it, with a timeout.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Runs an instant query; the sum of the values it returns.
    pub async fn query(&self, query: &str) -> Result<f64, PromError> {
        prometheus_query(&self.http, &self.base, query).await
    }
}

/// What the evaluator remembers of one application.
#[derive(Debug, Default)]
struct Memory {
    history: Vec<Recommended>,
    changes: Vec<Change>,
    last: Option<DateTime<Utc>>,
    /// What the last held (not applied) ledger row said, so a hold that goes on is
    /// written once, not every sample.
    last_held: Option<String>,
    /// The changes were read back from the ledger.
    seeded: bool,
    /// The next band start or end, and until when that is known (a day ahead at most);
    /// a scheduler job wakes the evaluator at it.
    next_boundary: Option<DateTime<Utc>>,
    boundary_known_until: Option<DateTime<Utc>>,
    /// The policy as last compiled, with the version and kind it was compiled for
    /// (compiling checks every band; a pass runs four times a second).
    compiled: Option<(i64, crate::spec::WorkloadKind, Arc<Compiled>)>,
}

#[derive(Debug)]
pub struct Autoscaler {
    pool: PgPool,
    runtimes: Runtimes,
    sources: MetricSources,
    started: DateTime<Utc>,
    apps: HashMap<Uuid, Memory>,
}

impl Autoscaler {
    pub fn new(pool: PgPool, runtimes: Runtimes, sources: MetricSources) -> Self {
        Self {
            pool,
            runtimes,
            sources,
            started: Utc::now(),
            apps: HashMap::new(),
        }
    }

    /// Evaluates until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        // Band starts and ends are one-shot jobs on the cron scheduler that wake the
        // evaluator at the instant; the tick would catch them within TICK anyway.
        let scheduler = match JobScheduler::new().await {
            Ok(s) => match s.start().await {
                Ok(()) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "autoscaler: the band scheduler did not start");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "autoscaler: no band scheduler");
                None
            }
        };
        let mut leader: Option<PoolConnection<sqlx::Postgres>> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            leader = self.lead(leader).await;
            if leader.is_some() {
                // We may have been someone else's follower: what we remember may be
                // stale, and the windows start over from now.
                if let Err(e) = self.pass(scheduler.as_ref(), &wake).await {
                    tracing::warn!(error = %e, "autoscaler pass failed");
                }
            } else {
                self.apps.clear();
                self.started = Utc::now();
            }
            tokio::select! {
                () = tokio::time::sleep(if leader.is_some() { TICK } else { Duration::from_secs(2) }) => {}
                () = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        if let Some(mut s) = scheduler {
            let _ = s.shutdown().await;
        }
    }

    /// Keeps (or tries to take) the leader's lock; the connection that holds it.
    async fn lead(
        &mut self,
        held: Option<PoolConnection<sqlx::Postgres>>,
    ) -> Option<PoolConnection<sqlx::Postgres>> {
        if let Some(mut conn) = held {
            match sqlx::query("SELECT 1").execute(&mut *conn).await {
                Ok(_) => return Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "autoscaler: lost the connection that held the lead");
                    conn.close_on_drop();
                }
            }
        }
        let mut conn = self.pool.acquire().await.ok()?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        if got {
            tracing::info!("autoscaler: deciding for this control plane");
            self.apps.clear();
            self.started = Utc::now();
            // The lock is the session's: the connection must not go back to the pool
            // holding it, so it is kept here, and closed if it ever errs.
            Some(conn)
        } else {
            None
        }
    }

    async fn pass(
        &mut self,
        scheduler: Option<&JobScheduler>,
        wake: &Arc<Notify>,
    ) -> Result<(), sqlx::Error> {
        let names: Vec<String> = self.runtimes.names().map(str::to_owned).collect();
        let rows = store::autoscaling::active(&self.pool, &names).await?;
        let now = Utc::now();
        let live: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.application_id).collect();
        self.apps.retain(|id, _| live.contains(id));
        // Each runtime's nodes are read once a pass, and only if some evaluation is due.
        let mut nodes: HashMap<String, Option<Vec<crate::runtime::Node>>> = HashMap::new();
        for row in rows {
            let Ok(spec) = serde_json::from_value::<AppSpec>(row.spec.clone()) else {
                continue;
            };
            if row.run_state != RunState::Running {
                self.apps.remove(&row.application_id);
                continue;
            }
            let memory = self.apps.entry(row.application_id).or_default();
            let compiled = match &memory.compiled {
                Some((version, kind, c))
                    if *version == row.policy_version && *kind == spec.kind =>
                {
                    c.clone()
                }
                _ => {
                    let Ok(policy) = serde_json::from_value::<Policy>(row.policy.clone()) else {
                        tracing::warn!(application = %row.application_id, "autoscaler: stored policy does not parse");
                        continue;
                    };
                    let Ok(c) = policy.compile_draft(spec.kind, now) else {
                        continue;
                    };
                    let c = Arc::new(c);
                    memory.compiled = Some((row.policy_version, spec.kind, c.clone()));
                    memory.boundary_known_until = None;
                    c
                }
            };
            let policy = &compiled.policy;
            let interval = chrono::Duration::seconds(i64::from(policy.sample_interval_s));
            // Due at the sample interval, and when a band starts or ends.
            let due = memory.last.is_none_or(|last| now - last >= interval)
                || memory.next_boundary.is_some_and(|b| b <= now);
            if memory.boundary_known_until.is_none_or(|t| t <= now) {
                let horizon = chrono::Duration::hours(24);
                let next = crate::autoscaling::schedule::boundaries(&compiled, now, horizon)
                    .into_iter()
                    .next();
                memory.next_boundary = next;
                memory.boundary_known_until = Some(next.unwrap_or(now + horizon));
                if let (Some(scheduler), Some(at)) = (scheduler, next) {
                    let wait = (at - now).to_std().unwrap_or_default();
                    let wake = wake.clone();
                    if let Ok(job) = Job::new_one_shot_async(wait, move |_, _| {
                        let wake = wake.clone();
                        Box::pin(async move { wake.notify_one() })
                    }) {
                        let _ = scheduler.add(job).await;
                    }
                }
            }
            if !due {
                continue;
            }
            if !nodes.contains_key(&row.runtime) {
                let read = match self.runtimes.get(&row.runtime) {
                    Some(runtime) => runtime.nodes().await.ok(),
                    None => None,
                };
                nodes.insert(row.runtime.clone(), read);
            }
            let of_runtime = nodes.get(&row.runtime).and_then(Option::as_deref);
            if let Err(e) = self.evaluate(&row, &spec, &compiled, of_runtime, now).await {
                tracing::warn!(application = %row.application_id, error = %e, "autoscaler: evaluation failed");
            }
        }
        Ok(())
    }

    async fn evaluate(
        &mut self,
        row: &store::autoscaling::ActiveRow,
        spec: &AppSpec,
        policy: &Compiled,
        nodes: Option<&[crate::runtime::Node]>,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let key = WorkloadKey {
            tenant: row.tenant.clone(),
            environment: row.environment.clone(),
            app: row.app.clone(),
        };
        let runtime = self.runtimes.get(&row.runtime).cloned();
        let instances = match &runtime {
            Some(runtime) => runtime.instances(&key).await.ok(),
            None => None,
        };
        let window = Duration::from_secs(u64::from(policy.policy.sample_interval_s));
        let traffic = match &runtime {
            Some(runtime)
                if policy.policy.rules.iter().any(|r| {
                    matches!(r.metric, Metric::RequestsPerSecond | Metric::LatencyP95)
                }) =>
            {
                runtime.traffic(&key, window).await
            }
            _ => None,
        };
        let ready = instances
            .as_ref()
            .map_or(0, |i| i.iter().filter(|i| i.ready).count());
        let ready = u32::try_from(ready).unwrap_or(u32::MAX);
        let mut readings = Vec::with_capacity(policy.policy.rules.len());
        for rule in &policy.policy.rules {
            readings.push(
                self.read(&rule.metric, spec, instances.as_deref(), traffic, ready)
                    .await,
            );
        }
        let current = desired_replicas(row.run_state, row.replicas, spec);
        // What the nodes can hold, when the runtime says what is requested on them.
        let capacity =
            nodes.and_then(|n| crate::autoscaling::decide::capacity(n, &spec.resources, current));
        let mut conn = self.pool.acquire().await?;
        let room = crate::platform::autoscaling::quota_room(
            &mut conn,
            row.tenant_id,
            row.application_id,
            spec,
        )
        .await?;
        let memory = self.apps.entry(row.application_id).or_default();
        if !memory.seeded {
            memory.changes =
                store::autoscaling::changes_since(&mut *conn, row.application_id, now - MEMORY)
                    .await?
                    .into_iter()
                    .map(|(at, from, to)| Change {
                        at,
                        from: u32::try_from(from).unwrap_or(0),
                        to: u32::try_from(to).unwrap_or(0),
                    })
                    .collect();
            memory.seeded = true;
        }
        memory.history.retain(|r| r.at > now - MEMORY);
        memory.changes.retain(|c| c.at > now - MEMORY);
        let decision = decide(
            policy,
            &Inputs {
                now,
                current,
                ready,
                readings: &readings,
                history: &memory.history,
                history_since: self.started,
                changes: &memory.changes,
                scaled_by_hand_at: row.scaled_by_hand_at,
                quota_room: room,
                one_at_a_time_down: spec.kind == crate::spec::WorkloadKind::Stateful,
                capacity,
            },
        );
        memory.last = Some(now);
        memory.history.push(Recommended {
            at: now,
            count: decision.remembered(),
        });
        metrics::gauge!("paas_autoscaler_desired_instances", "tenant" => row.tenant.clone(), "environment" => row.environment.clone(), "application" => row.app.clone())
            .set(f64::from(decision.desired));
        if decision.desired != current {
            let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
            let applied = store::autoscaling::set_replicas(
                &mut tx,
                row.application_id,
                row.replicas,
                i32::try_from(decision.desired).unwrap_or(i32::MAX),
            )
            .await?;
            let reason = if applied {
                decision.reason.clone()
            } else {
                format!(
                    "{} (not applied: the application changed while it was evaluated)",
                    decision.reason
                )
            };
            write(&mut tx, row, &decision, applied, &reason).await?;
            tx.commit().await?;
            if applied {
                memory.changes.push(Change {
                    at: now,
                    from: current,
                    to: decision.desired,
                });
                memory.last_held = None;
                tracing::info!(tenant = %row.tenant, environment = %row.environment, application = %row.app,
                    from = current, to = decision.desired, reason = %decision.reason, "autoscaled");
            }
        } else if decision.is_notable() {
            let signature = held_signature(&decision);
            if memory.last_held.as_deref() != Some(signature.as_str()) {
                write(&mut conn, row, &decision, false, &decision.reason).await?;
                memory.last_held = Some(signature);
            }
        } else {
            memory.last_held = None;
        }
        Ok(())
    }

    /// One rule's reading, per ready instance.
    async fn read(
        &self,
        metric: &Metric,
        spec: &AppSpec,
        instances: Option<&[Instance]>,
        traffic: Option<crate::runtime::Traffic>,
        ready: u32,
    ) -> Option<Reading> {
        match metric {
            Metric::Cpu => usage(instances?, |i| i.cpu_millis, spec.resources.cpu_millis),
            Metric::Memory => usage(instances?, |i| i.memory_mib, spec.resources.memory_mib),
            Metric::Promql { query } => {
                let total = self.sources.prometheus.as_ref()?.query(query).await.ok()?;
                (ready > 0).then(|| Reading {
                    value: total / f64::from(ready),
                    window_s: 0,
                })
            }
            Metric::RequestsPerSecond => {
                let t = traffic?;
                (ready > 0).then(|| Reading {
                    value: t.requests_per_second / f64::from(ready),
                    window_s: u32::try_from(t.window.as_secs()).unwrap_or(u32::MAX),
                })
            }
            // Latency is not divided: the ratio to its target scales the count.
            Metric::LatencyP95 => {
                let t = traffic?;
                Some(Reading {
                    value: t.p95_ms?,
                    window_s: u32::try_from(t.window.as_secs()).unwrap_or(u32::MAX),
                })
            }
        }
    }
}

/// The average use of the ready instances that report it, in percent of the request.
fn usage(
    instances: &[Instance],
    used: impl Fn(&Instance) -> Option<u32>,
    requested: u32,
) -> Option<Reading> {
    let values: Vec<f64> = instances
        .iter()
        .filter(|i| i.ready)
        .filter_map(|i| used(i).map(f64::from))
        .collect();
    if values.is_empty() || requested == 0 {
        return None;
    }
    let average = values.iter().sum::<f64>() / values.len() as f64;
    Some(Reading {
        value: average * 100.0 / f64::from(requested),
        window_s: 0,
    })
}

/// What a hold is about, without the times in its words: the same hold goes on as long
/// as this does not change.
fn held_signature(d: &Decision) -> String {
    let steps: Vec<String> = d
        .clamps
        .iter()
        .map(|c| format!("{}:{}>{}", c.step, c.before, c.after))
        .collect();
    format!("{}|{}|{}", d.current, d.recommendation, steps.join(","))
}

async fn write(
    conn: &mut sqlx::PgConnection,
    row: &store::autoscaling::ActiveRow,
    decision: &Decision,
    applied: bool,
    reason: &str,
) -> Result<(), sqlx::Error> {
    store::autoscaling::insert_decision(
        conn,
        store::autoscaling::NewDecision {
            tenant_id: row.tenant_id,
            application_id: row.application_id,
            at: decision.at,
            previous: i32::try_from(decision.current).unwrap_or(i32::MAX),
            desired: i32::try_from(decision.desired).unwrap_or(i32::MAX),
            applied,
            reason,
            decision: serde_json::to_value(decision).unwrap_or_default(),
        },
    )
    .await
    .map(|_| ())
}

/// Error of a PromQL source, in words.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("Prometheus did not answer: {0}")]
    Unreachable(String),
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    #[error("the query returned no number")]
    NoValue,
}

async fn prometheus_query(
    http: &reqwest::Client,
    base: &str,
    query: &str,
) -> Result<f64, PromError> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let response = http
        .get(&url)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| PromError::Unreachable(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| PromError::Unreachable(e.to_string()))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(PromError::Refused(
            body["error"]
                .as_str()
                .unwrap_or("unknown error")
                .chars()
                .take(300)
                .collect(),
        ));
    }
    let data = &body["data"];
    let number = |v: &serde_json::Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
    let value = match data["resultType"].as_str() {
        Some("scalar") => number(&data["result"]),
        Some("vector") => data["result"].as_array().and_then(|r| {
            let values: Vec<f64> = r.iter().filter_map(|s| number(&s["value"])).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        }),
        _ => None,
    };
    value.filter(|v| v.is_finite()).ok_or(PromError::NoValue)
}
