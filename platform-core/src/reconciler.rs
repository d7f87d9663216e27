//! The reconciler: compares every application's desired state (PostgreSQL) with what
//! the runtime observes and takes one idempotent step toward it.
//!
//! # Guarantees
//! - Level-triggered: a pass recomputes the desired shape of every workload from the
//!   database and the runtime's observations, so a pass after a crash (of the
//!   reconciler, the control plane or an agent) picks up exactly where things are,
//!   mid-rollout included. Being told what changed only makes it faster: an
//!   application whose desired state or instances changed (a `paas_desired`
//!   notification, from any control plane) is reconciled at once, alone, without
//!   waiting for the next full pass; a node that joins or changes condition brings a
//!   full pass at once; a lost notification costs at most one period.
//! - A spec change replaces instances one at a time: one new instance is added, and an
//!   old one is removed only when a new one is ready, so capacity never drops below
//!   the replica count (max surge 1, max unavailable 0).
//!
//! # Assumptions
//! - The runtime's `apply` is idempotent and serializes concurrent calls per workload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, broadcast, watch};

use crate::model::desired_replicas;
use crate::releases::canary::CanaryState;
use crate::releases::gate::State;
use crate::releases::plan::{Moving, Plan, Verdict, plan};
use crate::releases::policy::Strategy;
use crate::runtime::{
    Instance, Phase, Placement, RevisionShape, RuntimeError, Runtimes, Slots, Workload, WorkloadKey,
};
use crate::sealing::MasterKey;
use crate::spec::{AppSpec, WorkloadKind};
use crate::store;
use crate::store::notifications::Heard;

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub applied: usize,
    pub removed: usize,
    pub failed: usize,
}

#[derive(Debug, Clone)]
pub struct Reconciler {
    pool: PgPool,
    runtimes: Runtimes,
    /// Opens revisions' secrets for runtimes that need them in the workload.
    master: MasterKey,
    /// The Prometheus a canary analysis with PromQL queries reads.
    prometheus: Option<crate::autoscaler::Prometheus>,
}

impl Reconciler {
    /// Reconciles the applications of every environment whose runtime is in
    /// `runtimes`; others are left to the control plane that drives them.
    pub fn new(pool: PgPool, runtimes: Runtimes, master: MasterKey) -> Self {
        Self {
            pool,
            runtimes,
            master,
            prometheus: None,
        }
    }

    /// Where canary analyses with PromQL queries read their figures (`paas serve
    /// --prometheus-url`); without one such an analysis is inconclusive.
    pub fn with_prometheus(mut self, prometheus: Option<crate::autoscaler::Prometheus>) -> Self {
        self.prometheus = prometheus;
        self
    }

    /// Reconciles each runtime in its own loop, every `period` and at once when the
    /// desired state changes (`wake`), until `shutdown` turns true; and, beside each
    /// loop, the applications named by `paas_desired` notifications as they come. A
    /// slow or unreachable runtime (an apiserver that takes a minute to answer) delays
    /// only its own applications. Errors are logged and the next pass tries again.
    pub async fn run(
        self,
        period: Duration,
        wake: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut loops = tokio::task::JoinSet::new();
        let mut wakes = Vec::new();
        let (touched, _) = broadcast::channel::<uuid::Uuid>(TOUCHED_BACKLOG);
        for name in self.runtimes.names() {
            let own = Arc::new(Notify::new());
            wakes.push(own.clone());
            let (this, runtime, stop) = (self.clone(), name.to_owned(), shutdown.clone());
            let full = own.clone();
            loops.spawn(async move { this.run_one(&runtime, period, own, stop).await });
            let (this, runtime, stop) = (self.clone(), name.to_owned(), shutdown.clone());
            let mut heard = touched.subscribe();
            loops.spawn(async move { this.run_touched(&runtime, &mut heard, full, stop).await });
        }
        let wakes = Arc::new(wakes);
        for name in self.runtimes.names() {
            let Some(events) = self.runtimes.get(name).and_then(|r| r.instance_events()) else {
                continue;
            };
            let (pool, stop, runtime) = (self.pool.clone(), shutdown.clone(), name.to_owned());
            loops.spawn(async move { record_instance_events(pool, runtime, events, stop).await });
        }
        {
            // Waiting releases move on by the clock: a freeze ends, a request expires.
            let (pool, mut stop) = (self.pool.clone(), shutdown.clone());
            loops.spawn(async move {
                let mut every = tokio::time::interval(RELEASE_CLOCK);
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = stop.changed() => return,
                    }
                    if let Err(e) = crate::platform::releases::supervise(&pool).await {
                        tracing::warn!(error = %e, "could not move waiting releases on");
                    }
                }
            });
        }
        {
            // Canary releases move by the clock too: a step's pause ends, an analysis
            // check is due.
            let (this, mut stop) = (self.clone(), shutdown.clone());
            loops.spawn(async move {
                let mut every = tokio::time::interval(CANARY_CLOCK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = stop.changed() => return,
                    }
                    if let Err(e) = this.canary_tick().await {
                        tracing::warn!(error = %e, "could not move canary releases on");
                    }
                }
            });
        }
        {
            let (pool, wakes, stop) = (self.pool.clone(), wakes.clone(), shutdown.clone());
            loops.spawn(async move { listen(pool, touched, wakes, stop).await });
        }
        loop {
            tokio::select! {
                () = wake.notified() => wakes.iter().for_each(|w| w.notify_one()),
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        while loops.join_next().await.is_some() {}
    }

    async fn run_one(
        &self,
        runtime: &str,
        period: Duration,
        wake: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let started = std::time::Instant::now();
            match self.tick_runtime(Some(runtime)).await {
                Ok(report) => {
                    let labels = [("runtime", runtime.to_owned())];
                    metrics::gauge!("paas_reconcile_last_pass_seconds", &labels)
                        .set(started.elapsed().as_secs_f64());
                    metrics::gauge!("paas_reconcile_last_pass_workloads", &labels)
                        .set((report.applied + report.removed + report.failed) as f64);
                }
                Err(e) => tracing::warn!(runtime, error = %e, "reconcile pass failed"),
            }
        }
    }

    /// Reconciles the applications of `runtime` named on `heard`, a batch at a time
    /// (every id heard while the last batch ran). Ids missed because the backlog
    /// overflowed ask `full` for a full pass instead.
    async fn run_touched(
        &self,
        runtime: &str,
        heard: &mut broadcast::Receiver<uuid::Uuid>,
        full: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        use futures_util::StreamExt as _;
        loop {
            let first = tokio::select! {
                r = heard.recv() => r,
                _ = shutdown.changed() => return,
            };
            let mut ids = std::collections::BTreeSet::new();
            match first {
                Ok(id) => {
                    ids.insert(id);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => full.notify_one(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
            loop {
                match heard.try_recv() {
                    Ok(id) => {
                        ids.insert(id);
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => full.notify_one(),
                    Err(_) => break,
                }
            }
            if ids.is_empty() {
                continue;
            }
            let ids: Vec<uuid::Uuid> = ids.into_iter().collect();
            let rows = match store::runtime::desired(&self.pool, Some(runtime), Some(&ids)).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(runtime, error = %e, "could not read changed applications");
                    full.notify_one();
                    continue;
                }
            };
            let outcomes: Vec<Result<Outcome, sqlx::Error>> = futures_util::stream::iter(rows)
                .map(|row| self.reconcile(row, None))
                .buffer_unordered(PARALLEL_WORKLOADS)
                .collect()
                .await;
            if let Some(Err(e)) = outcomes.into_iter().find(Result::is_err) {
                tracing::warn!(runtime, error = %e, "reconciling changed applications failed");
            }
        }
    }

    /// One pass over every workload of every runtime.
    pub async fn tick(&self) -> Result<TickReport, sqlx::Error> {
        self.tick_runtime(None).await
    }

    /// One pass over the workloads of one runtime (`None`: of all). Their instances are
    /// read a batch at a time (`Runtime::instances_of_many`), then each workload is
    /// reconciled, a few at a time.
    pub async fn tick_runtime(&self, only: Option<&str>) -> Result<TickReport, sqlx::Error> {
        use futures_util::StreamExt as _;
        let rows = store::runtime::desired(&self.pool, only, None).await?;
        let mut by_runtime: BTreeMap<String, Vec<store::runtime::DesiredRow>> = BTreeMap::new();
        for row in rows {
            by_runtime.entry(row.runtime.clone()).or_default().push(row);
        }
        let mut report = TickReport::default();
        for (name, rows) in by_runtime {
            let runtime = self.runtimes.get(&name);
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let batch: Vec<store::runtime::DesiredRow> =
                    rows.by_ref().take(OBSERVE_BATCH).collect();
                let observed = match &runtime {
                    Some(runtime) => {
                        let keys: Vec<WorkloadKey> = batch.iter().map(key_of).collect();
                        match runtime.instances_of_many(&keys).await {
                            Ok(all) if all.len() == batch.len() => {
                                all.into_iter().map(Some).collect()
                            }
                            Ok(_) | Err(_) => vec![None; batch.len()],
                        }
                    }
                    None => vec![None; batch.len()],
                };
                // Workloads are independent: a few at a time, so that a pass is not the
                // sum of every workload's round trips to the database and the runtime.
                let outcomes: Vec<Result<Outcome, sqlx::Error>> =
                    futures_util::stream::iter(batch.into_iter().zip(observed))
                        .map(|(row, observed)| self.reconcile(row, observed))
                        .buffer_unordered(PARALLEL_WORKLOADS)
                        .collect()
                        .await;
                for outcome in outcomes {
                    match outcome? {
                        Outcome::Applied => report.applied += 1,
                        Outcome::Removed => report.removed += 1,
                        Outcome::Failed => report.failed += 1,
                        Outcome::Skipped => {}
                    }
                }
            }
        }
        Ok(report)
    }

    /// One step toward one workload's desired state; `observed` is its instances when
    /// they were just read with others'.
    async fn reconcile(
        &self,
        row: store::runtime::DesiredRow,
        observed: Option<Vec<Instance>>,
    ) -> Result<Outcome, sqlx::Error> {
        let key = key_of(&row);
        let Some(runtime) = self.runtimes.get(&row.runtime) else {
            return Ok(Outcome::Skipped);
        };
        if row.deleted {
            return match runtime.remove(&key).await {
                Ok(()) => {
                    store::runtime::mark_released(&self.pool, row.application_id).await?;
                    Ok(Outcome::Removed)
                }
                Err(e) => {
                    tracing::warn!(workload = %key, error = %e, "could not remove");
                    Ok(Outcome::Failed)
                }
            };
        }
        let Ok(spec) = serde_json::from_value::<AppSpec>(row.spec.clone()) else {
            tracing::error!(workload = %key, "stored spec does not parse");
            return Ok(Outcome::Failed);
        };
        let observed = match observed {
            Some(o) => Ok(o),
            None => runtime.instances(&key).await,
        };
        let observed = match observed {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(workload = %key, error = %e, "could not observe");
                return Ok(Outcome::Failed);
            }
        };
        let replicas = desired_replicas(row.run_state, row.replicas, &spec);
        let step = self.release_step(&row, &spec, replicas, &observed);
        let (planned, weight, in_place) = match &step {
            Some((_, plan)) => (plan.slots.clone(), plan.weight, plan.in_place),
            None => (
                slots(spec.kind, row.revision, replicas, &observed),
                None,
                false,
            ),
        };
        let mut revisions = Vec::new();
        for (revision, slots) in planned {
            // Every live revision runs with its own spec: an old revision's instance
            // that restarts or moves during a rollout comes back as it was.
            let spec = if revision == row.revision {
                spec.clone()
            } else {
                match self.spec_of(row.application_id, revision).await {
                    Ok(Some(own)) => own,
                    Ok(None) => {
                        tracing::error!(workload = %key, revision, "a live revision has no stored spec");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(workload = %key, revision, error = %e, "could not load a revision's spec");
                        return Ok(Outcome::Failed);
                    }
                }
            };
            let target = revision == row.revision;
            revisions.push(RevisionShape {
                revision,
                spec,
                slots,
                weight: weight.filter(|_| target),
                in_place: in_place && target,
                secrets: BTreeMap::new(),
            });
        }
        if runtime.secrets_in_workload() {
            for shape in &mut revisions {
                match self.secrets_of(row.application_id, shape.revision).await {
                    Ok(secrets) => shape.secrets = secrets,
                    Err(e) => {
                        tracing::error!(workload = %key, revision = shape.revision, error = %e, "secrets cannot be opened");
                    }
                }
            }
        }
        let app_labels = if spec.placement.selects_by_label() {
            store::runtime::environment_labels(&self.pool, row.application_id).await?
        } else {
            BTreeMap::new()
        };
        let workload = Workload {
            key: key.clone(),
            kind: spec.kind,
            revisions,
            placement: Placement {
                rules: spec.placement.clone(),
                app_labels,
                ..Placement::standard()
            },
        };
        match runtime.apply(&workload).await {
            Ok(()) => {
                if let Some((id, plan)) = step {
                    // Placed: whatever blocked the release is over.
                    if row.release_reason.as_deref().is_some_and(|r| !r.is_empty()) {
                        store::releases::set_moving_reason(&self.pool, id, "").await?;
                    }
                    self.record_step(id, row.revision, row.release_progress.as_ref(), plan)
                        .await?;
                }
                Ok(Outcome::Applied)
            }
            Err(RuntimeError::Unschedulable(why)) => {
                tracing::warn!(workload = %key, why, "cannot place every instance");
                // A release that needs room it cannot get says so, on its page and in
                // the queue, until the room is there.
                if let Some((id, _)) = step {
                    let reason = format!("cannot place every instance: {why}");
                    if store::releases::set_moving_reason(&self.pool, id, &reason).await? {
                        store::releases::event(
                            &self.pool,
                            id,
                            None,
                            "blocked",
                            &reason,
                            serde_json::json!({}),
                        )
                        .await?;
                    }
                }
                Ok(Outcome::Failed)
            }
            Err(e) => {
                tracing::warn!(workload = %key, error = %e, "could not apply");
                Ok(Outcome::Failed)
            }
        }
    }
}

/// Records the instance events a runtime observed (a cluster's pod changes) as its
/// applications' events, where the release timeline and the application page read
/// them, as they do the local runtime's.
async fn record_instance_events(
    pool: PgPool,
    runtime: String,
    mut events: broadcast::Receiver<crate::runtime::InstanceEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.changed() => return,
        };
        let e = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    runtime,
                    missed,
                    "instance events came faster than they were recorded"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let recorded = async {
            let Some(id) = store::runtime::application_id(
                &pool,
                &e.key.tenant,
                &e.key.environment,
                &e.key.app,
            )
            .await?
            else {
                return Ok(());
            };
            let mut conn = pool.acquire().await?;
            store::runtime::append_event(&mut conn, id, Some(&e.instance), &e.reason, &e.message)
                .await
        };
        if let Err(err) = recorded.await {
            tracing::warn!(runtime, workload = %e.key, error = %err, "could not record an instance event");
        }
    }
}

/// The channel the database's triggers name changed applications on.
const DESIRED_CHANNEL: &str = "paas_desired";

/// Changed applications heard but not yet taken by every runtime's loop; beyond this a
/// loop falls back to a full pass.
const TOUCHED_BACKLOG: usize = 4096;

/// Hears `paas_desired` notifications and passes the application ids on. A node that
/// joined or changed condition (the payload `nodes`), or listening again after a lost
/// connection (notifications may have been missed), gives every runtime a full pass.
async fn listen(
    pool: PgPool,
    touched: broadcast::Sender<uuid::Uuid>,
    full: Arc<Vec<Arc<Notify>>>,
    shutdown: watch::Receiver<bool>,
) {
    let all = || full.iter().for_each(|w| w.notify_one());
    let mut first = true;
    store::notifications::follow(
        pool,
        &[DESIRED_CHANNEL],
        "desired-state notifications",
        shutdown,
        |heard| match heard {
            // Every loop starts with a full pass of its own.
            Heard::Listening if first => first = false,
            Heard::Listening => all(),
            Heard::Notification { payload, .. } => match payload.parse::<uuid::Uuid>() {
                // No receiver yet (no runtime) is not an error.
                Ok(id) => {
                    let _ = touched.send(id);
                }
                // A node joined or changed condition.
                Err(_) => all(),
            },
            Heard::Lost => {}
        },
    )
    .await;
}

/// How often waiting releases are looked at (a freeze window's end, an approval
/// request's expiry).
const RELEASE_CLOCK: Duration = Duration::from_secs(5);

/// How often canary releases are looked at (a step's pause, an analysis check).
const CANARY_CLOCK: Duration = Duration::from_secs(1);

/// How many workloads' instances a pass reads at once.
const OBSERVE_BATCH: usize = 500;

fn key_of(row: &store::runtime::DesiredRow) -> WorkloadKey {
    WorkloadKey {
        tenant: row.tenant.clone(),
        environment: row.environment.clone(),
        app: row.app.clone(),
    }
}

/// How many workloads one pass reconciles at a time.
const PARALLEL_WORKLOADS: usize = 8;

/// What reconciling one workload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Removed,
    Failed,
    Skipped,
}

impl Reconciler {
    /// The next step of the release that moves the application, when one does.
    fn release_step(
        &self,
        row: &store::runtime::DesiredRow,
        spec: &AppSpec,
        replicas: u32,
        observed: &[Instance],
    ) -> Option<(i64, Plan)> {
        let (id, from, state, strategy) = match (
            row.release_id,
            row.release_from,
            row.release_state,
            &row.release_strategy,
        ) {
            (Some(id), Some(from), Some(state), Some(strategy)) => (id, from, state, strategy),
            _ => return None,
        };
        let strategy: Strategy = match serde_json::from_value(strategy.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(release = id, error = %e, "a release's stored strategy does not parse");
                return None;
            }
        };
        let now = chrono::Utc::now();
        let canary: Option<CanaryState> = row
            .release_canary
            .as_ref()
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        let moving = Moving {
            kind: spec.kind,
            from,
            to: row.revision,
            replicas,
            strategy: &strategy,
            paused: state == State::Paused,
            canary: canary.as_ref(),
            started_at: row.release_started_at.unwrap_or(now),
            now,
        };
        Some((id, plan(&moving, observed)))
    }

    /// Records what a release's step asked for (on its timeline when it changed), and
    /// ends the release when the step says it succeeded or must roll back.
    async fn record_step(
        &self,
        id: i64,
        to: i32,
        known: Option<&serde_json::Value>,
        plan: Plan,
    ) -> Result<(), sqlx::Error> {
        let p = plan.progress;
        let progress = serde_json::to_value(p).unwrap_or_default();
        // Written (with its timeline entry) only when it moved since the row was read.
        if known != Some(&progress)
            && store::releases::set_progress(&self.pool, id, &progress).await?
        {
            let message = format!(
                "revision {to}: {} of {} ready; earlier revisions: {} of {} ready",
                p.target_ready, p.target, p.stable_ready, p.stable
            );
            store::releases::event(&self.pool, id, None, "step", &message, progress).await?;
        }
        let (state, kind, why) = match plan.verdict {
            Verdict::Continue => return Ok(()),
            Verdict::Succeeded => (
                State::Succeeded,
                "succeeded",
                format!("every instance runs revision {to}"),
            ),
            Verdict::RollBack(why) => (State::RolledBack, "rolled_back", why),
        };
        let mut tx = self.pool.begin().await?;
        let reason = if state == State::Succeeded {
            ""
        } else {
            why.as_str()
        };
        if store::releases::conclude(&mut tx, id, state, reason).await? {
            store::releases::event(&mut *tx, id, None, kind, &why, serde_json::json!({})).await?;
            tx.commit().await?;
            if state == State::RolledBack {
                tracing::warn!(release = id, why, "release rolled back automatically");
            }
        }
        Ok(())
    }

    /// One tick of the canary clock over every progressing canary release: starts and
    /// ends steps, runs the analysis checks that are due (from the runtime's traffic
    /// figures) and rolls back a canary that failed them. Safe with several control
    /// planes: each change is made only if the release's canary state is still the one
    /// read.
    pub async fn canary_tick(&self) -> Result<(), sqlx::Error> {
        for row in store::runtime::desired_canaries(&self.pool).await? {
            let (Some(id), Some(strategy)) = (row.release_id, &row.release_strategy) else {
                continue;
            };
            let Ok(Strategy::Canary(c)) = serde_json::from_value::<Strategy>(strategy.clone())
            else {
                continue;
            };
            let Ok(spec) = serde_json::from_value::<AppSpec>(row.spec.clone()) else {
                continue;
            };
            let state: CanaryState = row
                .release_canary
                .as_ref()
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let target_ready = row
                .release_progress
                .as_ref()
                .and_then(|p| {
                    serde_json::from_value::<crate::releases::plan::Progress>(p.clone()).ok()
                })
                .map_or(0, |p| p.target_ready);
            let replicas = desired_replicas(row.run_state, row.replicas, &spec);
            let now = chrono::Utc::now();
            // A runtime's own figures are read at every tick of a running step (it
            // keeps its readings a tick apart) and judged when a check is due;
            // Prometheus is asked only then, over the interval.
            let running = state.ready_since.is_some() && !state.promoting(&c);
            let due = state.check_due(&c, now);
            let no_figures = || "no traffic figures for this runtime".to_owned();
            let figures = match (self.runtimes.get(&row.runtime), &c.analysis.promql) {
                (_, Some(queries)) if running && due => {
                    self.prometheus_figures(&row, queries, c.analysis.interval_s)
                        .await
                }
                (Some(runtime), None) if running => {
                    let window = Duration::from_secs(u64::from(c.analysis.interval_s));
                    runtime
                        .canary_traffic(&key_of(&row), window)
                        .await
                        .ok_or_else(no_figures)
                }
                _ => Err(no_figures()),
            };
            let verdict = due.then(|| match figures {
                Ok(t) => crate::releases::canary::analyse(&c.analysis, &t.canary, &t.stable),
                Err(reason) => crate::releases::canary::Verdict::Inconclusive { reason },
            });
            let tick =
                crate::releases::canary::tick(&c, &state, replicas, target_ready, now, verdict);
            if tick.state == state && tick.roll_back.is_none() {
                continue;
            }
            let value = serde_json::to_value(&tick.state).unwrap_or_default();
            let mut tx = self.pool.begin().await?;
            if !store::releases::set_canary(&mut *tx, id, row.release_canary.as_ref(), &value)
                .await?
            {
                continue;
            }
            for (kind, message) in &tick.events {
                let detail = match (kind, &tick.state.last_verdict) {
                    (&"analysis", Some(v)) => serde_json::to_value(v).unwrap_or_default(),
                    _ => serde_json::json!({"step": tick.state.step}),
                };
                store::releases::event(&mut *tx, id, None, kind, message, detail).await?;
            }
            if let Some(why) = &tick.roll_back {
                if store::releases::conclude(&mut tx, id, State::RolledBack, why).await? {
                    store::releases::event(
                        &mut *tx,
                        id,
                        None,
                        "rolled_back",
                        why,
                        serde_json::json!({}),
                    )
                    .await?;
                    tracing::warn!(release = id, why, "canary rolled back automatically");
                }
            } else if tick.state.step != state.step {
                // The next step's shape: reconcile it now.
                store::runtime::touch(&mut *tx, row.application_id).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// A canary release's figures from Prometheus: each query run for the canary
    /// (the release's target) and for the stable revision (its `from`). A query that
    /// returns nothing counts as no requests, no errors, no p99.
    async fn prometheus_figures(
        &self,
        row: &store::runtime::DesiredRow,
        queries: &crate::releases::canary::PromQueries,
        interval_s: u32,
    ) -> Result<crate::runtime::CanaryTraffic, String> {
        use crate::autoscaler::PromError;
        use crate::releases::canary::{QuerySide, Sample, fill};
        let Some(prometheus) = &self.prometheus else {
            return Err(
                "the analysis reads Prometheus, and none is configured (paas serve --prometheus-url)"
                    .to_owned(),
            );
        };
        let Some(stable) = row.release_from else {
            return Err("the release has no stable revision".to_owned());
        };
        let mut samples = Vec::with_capacity(2);
        for (side, revision) in [("canary", row.revision), ("stable", stable)] {
            let at = QuerySide {
                revision,
                side,
                tenant: &row.tenant,
                environment: &row.environment,
                app: &row.app,
                interval_s,
            };
            let mut values = Vec::with_capacity(3);
            for (name, query) in queries.named() {
                let value = match prometheus.query(&fill(query, &at)).await {
                    Ok(v) => Some(v),
                    Err(PromError::NoValue) => None,
                    Err(e) => return Err(format!("the {side}'s {name} query: {e}")),
                };
                values.push(value);
            }
            let count = |v: Option<f64>| v.map_or(0, |v| v.max(0.0).round() as u64);
            samples.push(Sample {
                requests: count(values[0]),
                errors: count(values[1]),
                p99_ms: values.get(2).copied().flatten().filter(|v| *v >= 0.0),
            });
        }
        Ok(crate::runtime::CanaryTraffic {
            canary: samples[0],
            stable: samples[1],
        })
    }

    /// The spec one revision of an application was created with.
    async fn spec_of(
        &self,
        application_id: uuid::Uuid,
        revision: i32,
    ) -> Result<Option<AppSpec>, crate::CoreError> {
        let Some(row) = store::apps::revision(&self.pool, application_id, revision).await? else {
            return Ok(None);
        };
        serde_json::from_value(row.spec).map(Some).map_err(|e| {
            crate::CoreError::Internal(format!(
                "revision {revision}'s stored spec does not parse: {e}"
            ))
        })
    }

    /// The opened secrets of one revision of an application.
    async fn secrets_of(
        &self,
        application_id: uuid::Uuid,
        revision: i32,
    ) -> Result<BTreeMap<String, crate::sealing::SecretValue>, crate::CoreError> {
        let Some(row) = store::apps::revision(&self.pool, application_id, revision).await? else {
            return Ok(BTreeMap::new());
        };
        crate::platform::secrets::of_revision(
            &self.pool,
            &self.master,
            application_id,
            &row.secrets,
        )
        .await
    }
}

/// The revisions that should run and their slots, given the workload's kind, the
/// current revision, the replica count and what runs now. Pure: each revision's spec
/// is its own record's, loaded by the caller.
pub fn slots(
    kind: WorkloadKind,
    current: i32,
    replicas: u32,
    observed: &[Instance],
) -> Vec<(i32, Slots)> {
    let live: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.phase != Phase::Stopping)
        .collect();
    match kind {
        WorkloadKind::Daemon => {
            let slots = if replicas == 0 {
                Slots::Count(0)
            } else {
                Slots::EveryNode
            };
            vec![(current, slots)]
        }
        // A cron job's runs are started by its schedule; the count is each run's size.
        WorkloadKind::Cronjob => vec![(current, Slots::Count(replicas))],
        WorkloadKind::Stateful => stateful_slots(current, replicas, &live),
        WorkloadKind::Service | WorkloadKind::Job => {
            let new_ready = live
                .iter()
                .filter(|i| i.revision == current && i.ready)
                .count() as u32;
            let mut old: BTreeMap<i32, u32> = BTreeMap::new();
            for i in live.iter().filter(|i| i.revision != current) {
                *old.entry(i.revision).or_default() += 1;
            }
            // A job's instance that completed counts as done, not as missing.
            if old.is_empty() || kind == WorkloadKind::Job || replicas == 0 {
                return vec![(current, Slots::Count(replicas))];
            }
            let new_target = replicas.min(new_ready + 1);
            let mut old_budget = replicas.saturating_sub(new_ready);
            let mut slots = vec![(current, Slots::Count(new_target))];
            // Keep the newest old revisions first.
            for (revision, count) in old.into_iter().rev() {
                let keep = count.min(old_budget);
                old_budget -= keep;
                slots.push((revision, Slots::Count(keep)));
            }
            slots
        }
    }
}

/// Stateful sets move one ordinal at a time, highest first, to the new revision, and
/// only while every ordinal already moved is ready.
fn stateful_slots(current: i32, replicas: u32, live: &[&Instance]) -> Vec<(i32, Slots)> {
    let holder = |ordinal: u32| live.iter().find(|i| i.ordinal == Some(ordinal));
    let mut moved_ready = true;
    let mut next_to_move: Option<u32> = None;
    for ordinal in (0..replicas).rev() {
        match holder(ordinal) {
            Some(i) if i.revision == current => moved_ready &= i.ready,
            Some(_) if next_to_move.is_none() => next_to_move = Some(ordinal),
            Some(_) => {}
            None => {}
        }
    }
    let mut by_revision: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for ordinal in 0..replicas {
        let revision = match holder(ordinal) {
            Some(i) if i.revision != current && !(moved_ready && next_to_move == Some(ordinal)) => {
                i.revision
            }
            _ => current,
        };
        by_revision.entry(revision).or_default().push(ordinal);
    }
    by_revision.entry(current).or_default();
    by_revision
        .into_iter()
        .map(|(revision, ordinals)| (revision, Slots::Ordinals(ordinals)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunState;

    #[test]
    fn a_stopped_application_wants_none_and_scaling_overrides_the_spec() {
        let spec: AppSpec =
            serde_json::from_value(serde_json::json!({"command": "x", "replicas": 3}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(desired_replicas(RunState::Running, None, &spec), 3);
        assert_eq!(desired_replicas(RunState::Running, Some(5), &spec), 5);
        assert_eq!(desired_replicas(RunState::Stopped, Some(5), &spec), 0);
        assert_eq!(desired_replicas(RunState::Running, Some(-1), &spec), 0);
    }

    fn inst(revision: i32, ready: bool, ordinal: Option<u32>) -> Instance {
        Instance {
            name: format!("i{revision}"),
            revision,
            ordinal,
            node: None,
            address: None,
            phase: Phase::Running,
            ready,
            restarts: 0,
            cpu_millis: None,
            memory_mib: None,
            message: None,
            since: chrono::Utc::now(),
        }
    }

    fn check(kind: WorkloadKind, replicas: u32, observed: &[Instance], expected: &[(i32, Slots)]) {
        let got = slots(kind, 2, replicas, observed);
        assert_eq!(
            got,
            expected,
            "observed {:?}",
            observed
                .iter()
                .map(|i| (i.revision, i.ready, i.ordinal))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_rolling_replacement_adds_one_then_removes_one_per_ready_instance() {
        use Slots::Count;
        let svc = WorkloadKind::Service;
        // Steady state.
        check(
            svc,
            3,
            &[
                inst(2, true, None),
                inst(2, true, None),
                inst(2, true, None),
            ],
            &[(2, Count(3))],
        );
        // Revision 2 arrives over three ready instances of revision 1: surge one.
        let old = [
            inst(1, true, None),
            inst(1, true, None),
            inst(1, true, None),
        ];
        check(svc, 3, &old, &[(2, Count(1)), (1, Count(3))]);
        // The new one is not ready yet: nothing more happens.
        let mut starting = old.to_vec();
        starting.push(inst(2, false, None));
        check(svc, 3, &starting, &[(2, Count(1)), (1, Count(3))]);
        // It is ready: one old goes, one more new comes.
        let mut one_ready = old.to_vec();
        one_ready.push(inst(2, true, None));
        check(svc, 3, &one_ready, &[(2, Count(2)), (1, Count(2))]);
        // All new ready: old revision goes to zero.
        let done = [
            inst(1, true, None),
            inst(2, true, None),
            inst(2, true, None),
            inst(2, true, None),
        ];
        check(svc, 3, &done, &[(2, Count(3)), (1, Count(0))]);
        // Scaling to zero stops everything at once.
        check(svc, 0, &old, &[(2, Count(0))]);
    }

    #[test]
    fn stateful_sets_move_the_highest_ordinal_first_when_the_moved_ones_are_ready() {
        use Slots::Ordinals;
        let st = WorkloadKind::Stateful;
        let old = [
            inst(1, true, Some(0)),
            inst(1, true, Some(1)),
            inst(1, true, Some(2)),
        ];
        check(
            st,
            3,
            &old,
            &[(1, Ordinals(vec![0, 1])), (2, Ordinals(vec![2]))],
        );
        let moving = [
            inst(1, true, Some(0)),
            inst(1, true, Some(1)),
            inst(2, false, Some(2)),
        ];
        check(
            st,
            3,
            &moving,
            &[(1, Ordinals(vec![0, 1])), (2, Ordinals(vec![2]))],
        );
        let moved = [
            inst(1, true, Some(0)),
            inst(1, true, Some(1)),
            inst(2, true, Some(2)),
        ];
        check(
            st,
            3,
            &moved,
            &[(1, Ordinals(vec![0])), (2, Ordinals(vec![1, 2]))],
        );
        check(st, 2, &[], &[(2, Ordinals(vec![0, 1]))]);
    }

    #[test]
    fn daemons_run_everywhere_and_cron_jobs_size_their_runs() {
        check(WorkloadKind::Daemon, 1, &[], &[(2, Slots::EveryNode)]);
        check(WorkloadKind::Cronjob, 1, &[], &[(2, Slots::Count(1))]);
        check(WorkloadKind::Cronjob, 0, &[], &[(2, Slots::Count(0))]);
        check(
            WorkloadKind::Job,
            1,
            &[inst(1, false, None)],
            &[(2, Slots::Count(1))],
        );
    }
}
