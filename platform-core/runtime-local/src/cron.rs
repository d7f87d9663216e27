//! Cron jobs on the local runtime: a tokio-cron-scheduler job per cron workload that,
//! at each scheduled time, places one run (its instances) the way a Kubernetes CronJob
//! creates a Job.
//!
//! # Guarantees
//! - At most one run at a time per workload (the `Forbid` concurrency policy): a tick
//!   that finds the previous run still active records a `Skipped` event instead.
//!   The check and the placement happen in one transaction under the application's row
//!   lock, so two control planes firing at once still start one run.
//! - The schedule lives in the stored spec; the scheduler is rebuilt from it by the
//!   reconciler's first tick after a start. Times missed while no control plane ran are
//!   skipped, not caught up.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::sync::{Mutex, OnceCell};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use platform_core::runtime::{Placement, RevisionShape, RuntimeError, WorkloadKey};

/// What a scheduled tick starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CronRun {
    pub key: WorkloadKey,
    pub shape: RevisionShape,
    pub parallelism: u32,
    pub placement: Placement,
    /// How nodes are judged when the run is placed.
    pub timing: crate::fencing::Timing,
}

struct Entry {
    run: CronRun,
    job: Uuid,
}

/// The schedules of one control plane.
#[derive(Default)]
pub(crate) struct CronTable {
    scheduler: OnceCell<JobScheduler>,
    entries: Mutex<HashMap<WorkloadKey, Entry>>,
}

impl std::fmt::Debug for CronTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronTable").finish_non_exhaustive()
    }
}

impl CronTable {
    async fn scheduler(&self) -> Result<&JobScheduler, RuntimeError> {
        self.scheduler
            .get_or_try_init(|| async {
                let scheduler = JobScheduler::new().await.map_err(other)?;
                scheduler.start().await.map_err(other)?;
                Ok(scheduler)
            })
            .await
    }

    /// Makes the workload's schedule match `run`; `None` (suspended or removed) drops it.
    /// Unchanged schedules are left alone, so a tick does not reset them.
    pub async fn sync(
        &self,
        key: &WorkloadKey,
        run: Option<CronRun>,
        pool: &PgPool,
    ) -> Result<(), RuntimeError> {
        let mut entries = self.entries.lock().await;
        if entries.get(key).map(|e| &e.run) == run.as_ref() {
            return Ok(());
        }
        if let Some(old) = entries.remove(key) {
            self.scheduler()
                .await?
                .remove(&old.job)
                .await
                .map_err(other)?;
        }
        let Some(run) = run else {
            return Ok(());
        };
        let schedule = run
            .shape
            .spec
            .schedule
            .as_deref()
            .map(platform_core::spec::normalized_schedule)
            .ok_or_else(|| RuntimeError::Other("a cron job needs a schedule".into()))?;
        let (fire_pool, fire_run) = (pool.clone(), run.clone());
        let job = Job::new_async(schedule.as_str(), move |_, _| {
            let (pool, run) = (fire_pool.clone(), fire_run.clone());
            Box::pin(async move {
                if let Err(e) = crate::start_cron_run(&pool, &run).await {
                    tracing::warn!(workload = %run.key, error = %e, "cron run not started");
                }
            })
        })
        .map_err(|e| RuntimeError::Other(format!("schedule '{schedule}': {e}")))?;
        let id = self.scheduler().await?.add(job).await.map_err(other)?;
        tracing::info!(workload = %key, schedule, "cron schedule set");
        entries.insert(key.clone(), Entry { run, job: id });
        Ok(())
    }
}

fn other(e: tokio_cron_scheduler::JobSchedulerError) -> RuntimeError {
    RuntimeError::Other(format!("scheduler: {e}"))
}
