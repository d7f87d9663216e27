//! The [`Platform`] facade: every operation the console and API offer, each one
//! authorized, validated and, when it changes state, written in one transaction together
//! with its audit record.

mod access_cache;
mod apps;
mod auth;
pub mod autoscaling;
pub mod bundles;
mod packages;
pub mod placement;
pub mod releases;
mod runtimes;
pub mod secrets;
pub mod services;
pub(crate) mod tenancy;
mod users;

use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::CoreError;
use crate::auth::{TokenConfig, TokenService};
use crate::authz::Principal;
use crate::runtime::Runtimes;
use crate::sealing::MasterKey;
use crate::store;
use crate::store::audit::AuditRecord;

pub use apps::{AppPage, AppQuery, NewApplication};
pub use auth::{AuthFailure, Session};
pub use runtimes::{PlacedInstance, RuntimeOverview};
pub use tenancy::{NewEnvironment, NewTenant};
pub use users::NewUser;

/// The core's entry point. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Platform {
    pub(crate) pool: PgPool,
    /// Seals secrets at rest.
    master: MasterKey,
    tokens: Arc<TokenService>,
    runtimes: Runtimes,
    /// Woken after a change that concerns every workload of a runtime (a node confirmed
    /// lost), for a full reconcile pass at once. A change to one application needs no
    /// call: the database notifies every control plane of it (`paas_desired`).
    changes: Arc<tokio::sync::Notify>,
    /// Where autoscaling rules' PromQL queries go (checked when a policy is saved).
    metric_sources: crate::autoscaler::MetricSources,
    /// How service instances' operations are paced (deadlines are set from it).
    service_config: crate::services::WorkerConfig,
    /// Woken when a service instance's operation is requested.
    service_wake: Arc<tokio::sync::Notify>,
    /// Woken when a bundle is installed, upgraded or uninstalled.
    bundle_wake: Arc<tokio::sync::Notify>,
    /// Where the local runtime's router serves applications (`http://host:port`), for
    /// brokers that route to a bound application.
    router_url: Option<String>,
    /// Sessions' users and tenants' environments, held while changes are heard.
    access: Arc<access_cache::AccessCache>,
}

impl Platform {
    /// Builds the platform on a migrated database. `master` seals what must not be
    /// readable at rest (signing keys, application secrets).
    pub async fn start(
        pool: PgPool,
        token_config: TokenConfig,
        master: MasterKey,
    ) -> Result<Self, CoreError> {
        let tokens =
            Arc::new(TokenService::start(pool.clone(), token_config, master.clone()).await?);
        Ok(Self {
            pool,
            master,
            tokens,
            runtimes: Runtimes::default(),
            changes: Arc::new(tokio::sync::Notify::new()),
            metric_sources: crate::autoscaler::MetricSources::default(),
            service_config: crate::services::WorkerConfig::default(),
            service_wake: Arc::new(tokio::sync::Notify::new()),
            bundle_wake: Arc::new(tokio::sync::Notify::new()),
            router_url: None,
            access: Arc::default(),
        })
    }

    /// Where the local runtime's router serves applications.
    #[must_use]
    pub fn with_router_url(mut self, url: Option<String>) -> Self {
        self.router_url = url.map(|u| u.trim_end_matches('/').to_owned());
        self
    }

    /// Notified after a change that calls for a full reconcile pass.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    pub(crate) fn changed(&self) {
        self.changes.notify_one();
    }

    /// The runtimes that run environments' applications, by name.
    #[must_use]
    pub fn with_runtimes(mut self, runtimes: Runtimes) -> Self {
        self.runtimes = runtimes;
        self
    }

    /// Where autoscaling reads the metrics no runtime reports (a Prometheus server).
    #[must_use]
    pub fn with_metric_sources(mut self, sources: crate::autoscaler::MetricSources) -> Self {
        self.metric_sources = sources;
        self
    }

    /// How service instances' operations are paced.
    #[must_use]
    pub fn with_service_config(mut self, config: crate::services::WorkerConfig) -> Self {
        self.service_config = config;
        self
    }

    /// The worker that carries service instances' operations to their brokers; run
    /// one per control plane (they share the work through claims).
    pub fn operations_worker(&self) -> crate::services::OperationsWorker {
        crate::services::OperationsWorker::new(
            self.pool.clone(),
            self.master.clone(),
            self.service_config.clone(),
            self.service_wake.clone(),
        )
    }

    pub fn metric_sources(&self) -> &crate::autoscaler::MetricSources {
        &self.metric_sources
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// The key that seals secrets at rest (for the runtimes that hand secrets to
    /// instances).
    pub fn master_key(&self) -> &MasterKey {
        &self.master
    }

    /// Listens for changes to users, memberships, tenants, revoked sessions and
    /// environments made by any control plane, until `shutdown` turns true. While it
    /// listens, sessions and environments are served from memory (see
    /// [`access_cache`]); without it, every request reads them from the database.
    pub async fn follow_access_changes(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let access = self.access.clone();
        store::notifications::follow(
            self.pool.clone(),
            &[access_cache::CHANNEL],
            "access notifications",
            shutdown,
            |heard| match heard {
                store::notifications::Heard::Listening => access.set_live(true),
                store::notifications::Heard::Notification { .. } => access.forget(),
                store::notifications::Heard::Lost => access.set_live(false),
            },
        )
        .await;
        access.set_live(false);
    }

    /// Whether sessions and environments are served from memory: changes to them are
    /// heard (for diagnostics and tests).
    pub fn serves_access_from_memory(&self) -> bool {
        self.access.is_live()
    }

    /// After a committed change to what the access cache holds: this control plane's
    /// next request sees it without waiting for the notification.
    pub(crate) fn access_changed(&self) {
        self.access.forget();
    }

    /// Whether the database answers (for readiness probes).
    pub async fn ready(&self) -> bool {
        store::ping(&self.pool).await.is_ok()
    }
}

/// Refuses a change made against version `expected` of an object now at `current`
/// (`None`: it no longer exists), saying who changed it last and when, from the audit
/// log. Nothing to check when the caller named no version.
pub(crate) async fn check_version(
    ex: impl sqlx::PgExecutor<'_>,
    tenant_id: Option<Uuid>,
    object: (&'static str, &str),
    audit_target: (&str, &str),
    expected: Option<i64>,
    current: Option<i64>,
) -> Result<(), CoreError> {
    let Some(expected) = expected.filter(|e| Some(*e) != current) else {
        return Ok(());
    };
    let (kind, name) = object;
    let by = match store::audit::last_change(ex, tenant_id, audit_target.0, audit_target.1).await {
        Ok(Some((actor, at))) => format!(
            " (last by {actor} at {})",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        _ => String::new(),
    };
    let now = match current {
        Some(v) => format!("it is now at version {v}"),
        None => "it no longer exists".to_owned(),
    };
    Err(CoreError::VersionMismatch {
        current,
        message: format!(
            "{kind} '{name}' changed since version {expected}{by}; {now}. Read it again before changing it"
        ),
    })
}

/// What an audit record says, before the actor is filled in.
struct Audit<'a> {
    tenant_id: Option<Uuid>,
    action: &'a str,
    target_kind: &'a str,
    target: &'a str,
    details: serde_json::Value,
}

/// Refuses a change that would take the tenant over its quota. Locks the tenant row so
/// that concurrent changes in one tenant are checked one after the other.
async fn enforce_quota(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    except: Option<Uuid>,
    demand: crate::quota::Usage,
) -> Result<(), CoreError> {
    let q = store::tenants::quota(&mut *conn, tenant_id).await?;
    enforce_quota_of(conn, quota_of(&q), tenant_id, except, demand).await
}

/// The quota a stored row sets; the default (no limit) when it sets none.
fn quota_of(q: &store::tenants::QuotaRow) -> crate::quota::Quota {
    crate::quota::Quota {
        max_instances: q.max_instances.and_then(|v| u32::try_from(v).ok()),
        max_cpu_millis: q.max_cpu_millis.and_then(|v| u32::try_from(v).ok()),
        max_memory_mib: q.max_memory_mib.and_then(|v| u32::try_from(v).ok()),
        max_service_instances: q.max_service_instances.and_then(|v| u32::try_from(v).ok()),
    }
}

/// [`enforce_quota`] with the tenant's quota already read.
async fn enforce_quota_of(
    conn: &mut PgConnection,
    quota: crate::quota::Quota,
    tenant_id: Uuid,
    except: Option<Uuid>,
    demand: crate::quota::Usage,
) -> Result<(), CoreError> {
    // The service-instance limit is checked where instances are provisioned.
    let applications = crate::quota::Quota {
        max_service_instances: None,
        ..quota
    };
    if applications == crate::quota::Quota::default() {
        return Ok(());
    }
    store::tenants::lock(&mut *conn, tenant_id).await?;
    let current = tenant_usage(conn, tenant_id, except).await?;
    match quota.exceeded_by(current.plus(demand)) {
        Some(message) => Err(CoreError::QuotaExceeded { message }),
        None => Ok(()),
    }
}

/// What the tenant's running applications ask for, but for `except`.
async fn tenant_usage(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    except: Option<Uuid>,
) -> Result<crate::quota::Usage, sqlx::Error> {
    let (instances, cpu, mem) = store::tenants::usage(conn, tenant_id, except).await?;
    Ok(crate::quota::Usage {
        instances: u64::try_from(instances).unwrap_or(0),
        cpu_millis: u64::try_from(cpu).unwrap_or(0),
        memory_mib: u64::try_from(mem).unwrap_or(0),
    })
}

async fn record(
    conn: &mut PgConnection,
    actor: &Principal,
    audit: Audit<'_>,
) -> Result<(), CoreError> {
    store::audit::append(conn, audit_record(actor, audit))
        .await
        .map_err(CoreError::from)
}

/// The audit record of `audit`, done by `actor`.
fn audit_record<'a>(actor: &'a Principal, audit: Audit<'a>) -> AuditRecord<'a> {
    AuditRecord {
        tenant_id: audit.tenant_id,
        actor_id: Some(actor.user_id),
        actor: &actor.username,
        action: audit.action,
        target_kind: audit.target_kind,
        target: audit.target,
        details: audit.details,
        source_ip: actor.source_ip.as_deref(),
    }
}
