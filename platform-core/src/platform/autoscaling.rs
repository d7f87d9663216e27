//! Autoscaling policies: tenant admins set them; everyone in the tenant reads them, their
//! preview and the decision ledger.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Platform;
use super::apps::audit_app;
use crate::authz::{Permission, TenantAccess};
use crate::autoscaling::policy::in_years;
use crate::autoscaling::{Decision, Metric, Policy, Preview, ReplayPoint, Sample};
use crate::quota::Usage;
use crate::spec::AppSpec;
use crate::{CoreError, FieldError, store};

/// A stored policy with its version (send it back in `If-Match`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredPolicy {
    pub policy: Policy,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// One row of the decision ledger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub previous: i32,
    pub desired: i32,
    /// Whether the count was written (false: held where it was).
    pub applied: bool,
    pub reason: String,
    /// The inputs, each rule's recommendation and every clamp in order.
    pub decision: Option<Decision>,
}

fn years_message() -> String {
    let years = crate::autoscaling::policy::YEARS;
    format!("must be in the years {} to {}", years.start(), years.end())
}

/// An application the autoscaler moved lately, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecentScaling {
    pub environment: String,
    pub application: String,
    pub at: DateTime<Utc>,
    pub previous: i32,
    pub desired: i32,
    pub reason: String,
}

/// The most decisions one page of the ledger holds.
pub const MAX_DECISIONS_PAGE: u32 = 500;

/// How many instances the tenant's quota leaves an application running `spec` (beside
/// everything else the tenant runs); `None` when no limit applies.
pub(crate) async fn quota_room(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    application_id: Uuid,
    spec: &AppSpec,
) -> Result<Option<u32>, sqlx::Error> {
    let quota = super::quota_of(&store::tenants::quota(&mut *conn, tenant_id).await?);
    if quota == crate::quota::Quota::default() {
        return Ok(None);
    }
    let others = super::tenant_usage(conn, tenant_id, Some(application_id)).await?;
    Ok(quota.room(others, Usage::of(spec, 1)))
}

impl Platform {
    /// The application's policy, if it has one.
    pub async fn autoscaling_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
    ) -> Result<Option<StoredPolicy>, CoreError> {
        access.require(Permission::View, "view applications")?;
        let application = self.find_application(access, environment, app).await?;
        let Some(row) = store::autoscaling::get(&self.pool, application.id).await? else {
            return Ok(None);
        };
        let policy = serde_json::from_value(row.policy)
            .map_err(|e| CoreError::Internal(format!("stored autoscaling policy: {e}")))?;
        Ok(Some(StoredPolicy {
            policy,
            version: row.version,
            updated_at: row.updated_at,
        }))
    }

    /// Sets (or replaces) the application's policy. Tenant admins only.
    pub async fn set_autoscaling_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        policy: Policy,
        if_version: Option<i64>,
        force: bool,
    ) -> Result<StoredPolicy, CoreError> {
        access.require(Permission::ManageAutoscaling, "set autoscaling policies")?;
        self.write_autoscaling_policy(access, environment, app, policy, (if_version, force), None)
            .await
    }

    /// Applies a bundle's default policy to the application it installed: when it has
    /// none, or still has the previous version's default (`previous`), never over a
    /// policy someone set. The bundle catalog is the platform's own (compiled in, not
    /// sent by users), so its defaults are applied with the installer's rights to the
    /// application even where they do not include managing autoscaling; the audit
    /// record says which bundle set it.
    pub(super) async fn apply_default_autoscaling(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        default: &serde_json::Value,
        previous: Option<&serde_json::Value>,
        via: &str,
    ) -> Result<(), CoreError> {
        let parse = |v: &serde_json::Value| serde_json::from_value::<Policy>(v.clone());
        let policy = parse(default).map_err(|e| {
            CoreError::Internal(format!("{app}: the bundle's autoscaling policy: {e}"))
        })?;
        let current = self.autoscaling_policy(access, environment, app).await?;
        let replace = match &current {
            None => true,
            Some(stored) => {
                stored.policy != policy
                    && previous
                        .and_then(|p| parse(p).ok())
                        .is_some_and(|p| p == stored.policy)
            }
        };
        if !replace {
            return Ok(());
        }
        let version = current.map(|c| c.version);
        self.write_autoscaling_policy(
            access,
            environment,
            app,
            policy,
            (version, false),
            Some(via),
        )
        .await
        .map(|_| ())
    }

    /// Checks and stores a policy; `via` names what set it (a bundle) for the audit.
    async fn write_autoscaling_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        policy: Policy,
        (if_version, force): (Option<i64>, bool),
        via: Option<&str>,
    ) -> Result<StoredPolicy, CoreError> {
        let detail = self.application(access, environment, app).await?;
        let id = detail.application.id;
        policy.compile_draft(detail.spec.kind, Utc::now())?;
        self.check_promql(&policy).await?;
        // The most instances the policy may ever ask for must have a place.
        let peak = policy
            .bands
            .iter()
            .map(|b| b.max)
            .fold(policy.max, u32::max);
        self.require_placeable(access, environment, app, &detail.spec, peak, force)
            .await
            .map_err(|e| match e {
                CoreError::Infeasible { message } => CoreError::Infeasible {
                    message: format!(
                        "the policy's maximum of {peak} instances cannot be placed: {message}"
                    ),
                },
                other => other,
            })?;
        let mut tx = self.pool.begin().await?;
        store::apps::lock(&mut tx, access.tenant().id, id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", app))?;
        let current = store::autoscaling::lock(&mut tx, id).await?;
        self.check_policy_version(&mut *tx, access, environment, app, if_version, current)
            .await?;
        let room = quota_room(&mut tx, access.tenant().id, id, &detail.spec).await?;
        policy.compile(detail.spec.kind, room, Utc::now())?;
        let value = serde_json::to_value(&policy)
            .map_err(|e| CoreError::Internal(format!("autoscaling policy: {e}")))?;
        let version = store::autoscaling::upsert(&mut tx, access.tenant().id, id, &value).await?;
        let mut details = json!({"policy": value, "version": version});
        if let Some(via) = via {
            details["via"] = json!(via);
        }
        audit_app(
            &mut tx,
            access,
            if current.is_some() {
                "autoscaling.update"
            } else {
                "autoscaling.create"
            },
            environment,
            app,
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(StoredPolicy {
            policy,
            version,
            updated_at: Utc::now(),
        })
    }

    /// Removes the policy: the count stays where it is until someone scales by hand.
    pub async fn delete_autoscaling_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        access.require(Permission::ManageAutoscaling, "remove autoscaling policies")?;
        let application = self.find_application(access, environment, app).await?;
        let mut tx = self.pool.begin().await?;
        let current = store::autoscaling::lock(&mut tx, application.id).await?;
        if current.is_none() {
            return Err(CoreError::not_found(
                "autoscaling policy",
                format!("{environment}/{app}"),
            ));
        }
        self.check_policy_version(&mut *tx, access, environment, app, if_version, current)
            .await?;
        store::autoscaling::delete(&mut tx, application.id).await?;
        audit_app(
            &mut tx,
            access,
            "autoscaling.delete",
            environment,
            app,
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refuses a `promql` rule whose query the configured Prometheus does not answer
    /// with a number (or when no Prometheus is configured).
    async fn check_promql(&self, policy: &Policy) -> Result<(), CoreError> {
        for (i, rule) in policy.rules.iter().enumerate() {
            let Metric::Promql { query } = &rule.metric else {
                continue;
            };
            let field = format!("rules[{i}].metric.query");
            self.prometheus_for(&field)?
                .query(query)
                .await
                .map_err(|e| {
                    FieldError::new(field, format!("{e}; the query must return a number"))
                })?;
        }
        Ok(())
    }

    /// The configured Prometheus, or why `field` cannot name a query.
    pub(super) fn prometheus_for(
        &self,
        field: &str,
    ) -> Result<&crate::autoscaler::Prometheus, CoreError> {
        self.metric_sources.prometheus.as_ref().ok_or_else(|| {
            FieldError::new(
                field,
                "no Prometheus is configured for this platform (paas serve --prometheus-url)",
            )
            .into()
        })
    }

    async fn check_policy_version(
        &self,
        ex: impl sqlx::PgExecutor<'_>,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        expected: Option<i64>,
        current: Option<i64>,
    ) -> Result<(), CoreError> {
        let target = format!("{environment}/{app}");
        super::check_version(
            ex,
            Some(access.tenant().id),
            ("autoscaling policy", &target),
            ("application", &target),
            expected,
            current,
        )
        .await
    }

    /// The policy to preview or replay: the draft given, else the stored one; with the
    /// application's spec and the room its quota leaves.
    async fn policy_in_context(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        draft: Option<Policy>,
    ) -> Result<(crate::autoscaling::Compiled, Option<u32>), CoreError> {
        access.require(Permission::View, "view applications")?;
        let detail = self.application(access, environment, app).await?;
        let policy = match draft {
            Some(p) => p,
            None => {
                self.autoscaling_policy(access, environment, app)
                    .await?
                    .ok_or_else(|| {
                        CoreError::not_found("autoscaling policy", format!("{environment}/{app}"))
                    })?
                    .policy
            }
        };
        let mut conn = self.pool.acquire().await?;
        let room = quota_room(
            &mut conn,
            access.tenant().id,
            detail.application.id,
            &detail.spec,
        )
        .await?;
        // A draft may hold what saving refuses (overlaps, a band beyond the quota): the
        // preview is where people see it.
        let compiled = policy.compile_draft(detail.spec.kind, Utc::now())?;
        Ok((compiled, room))
    }

    /// The next 7 days of a draft (or the stored policy), at 15-minute resolution.
    pub async fn autoscaling_preview(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        draft: Option<Policy>,
        from: Option<DateTime<Utc>>,
    ) -> Result<Preview, CoreError> {
        if from.is_some_and(|f| !in_years(f)) {
            return Err(FieldError::new("from", years_message()).into());
        }
        let (compiled, room) = self
            .policy_in_context(access, environment, app, draft)
            .await?;
        Ok(crate::autoscaling::preview(
            &compiled,
            from.unwrap_or_else(Utc::now),
            room,
        ))
    }

    /// Replays a metric series through a draft (or the stored policy).
    pub async fn autoscaling_what_if(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        draft: Option<Policy>,
        start: u32,
        samples: &[Sample],
    ) -> Result<Vec<ReplayPoint>, CoreError> {
        if samples.len() > crate::autoscaling::preview::MAX_SAMPLES {
            return Err(FieldError::new(
                "samples",
                format!(
                    "at most {} samples",
                    crate::autoscaling::preview::MAX_SAMPLES
                ),
            )
            .into());
        }
        if let Some(i) = samples.iter().position(|s| !in_years(s.at)) {
            return Err(FieldError::new(format!("samples[{i}].at"), years_message()).into());
        }
        if let Some(i) = samples.windows(2).position(|w| w[1].at <= w[0].at) {
            return Err(FieldError::new(
                format!("samples[{}].at", i + 1),
                "must be later than the sample before it",
            )
            .into());
        }
        let (compiled, room) = self
            .policy_in_context(access, environment, app, draft)
            .await?;
        let rules = compiled.policy.rules.len();
        if let Some(i) = samples.iter().position(|s| s.values.len() != rules) {
            return Err(FieldError::new(
                format!("samples[{i}].values"),
                format!("must hold one value per rule ({rules})"),
            )
            .into());
        }
        if let Some(i) = samples.iter().position(|s| {
            s.values
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || *v < 0.0)
        }) {
            return Err(FieldError::new(
                format!("samples[{i}].values"),
                "must be numbers of at least 0 (or null for a missing reading)",
            )
            .into());
        }
        if start > AppSpec::MAX_REPLICAS {
            return Err(FieldError::new(
                "start",
                format!("must be between 0 and {}", AppSpec::MAX_REPLICAS),
            )
            .into());
        }
        Ok(crate::autoscaling::what_if(&compiled, start, samples, room))
    }

    /// The applications of the tenant the autoscaler moved in the last 15 minutes, each
    /// with its latest change; newest first.
    pub async fn recent_scaling(
        &self,
        access: &TenantAccess,
    ) -> Result<Vec<RecentScaling>, CoreError> {
        access.require(Permission::View, "view applications")?;
        let since = Utc::now() - chrono::Duration::minutes(15);
        Ok(
            store::autoscaling::recent(&self.pool, access.tenant().id, since)
                .await?
                .into_iter()
                .map(|r| RecentScaling {
                    environment: r.environment,
                    application: r.application,
                    at: r.at,
                    previous: r.previous,
                    desired: r.desired,
                    reason: r.reason,
                })
                .collect(),
        )
    }

    /// The ledger, newest first.
    pub async fn autoscaling_decisions(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        before: Option<i64>,
        applied_only: bool,
        limit: u32,
    ) -> Result<Vec<DecisionRecord>, CoreError> {
        access.require(Permission::View, "view applications")?;
        if !(1..=MAX_DECISIONS_PAGE).contains(&limit) {
            return Err(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_DECISIONS_PAGE}"),
            )
            .into());
        }
        let application = self.find_application(access, environment, app).await?;
        Ok(
            store::autoscaling::decisions(&self.pool, application.id, before, applied_only, limit)
                .await?
                .into_iter()
                .map(|r| DecisionRecord {
                    id: r.id,
                    at: r.at,
                    previous: r.previous,
                    desired: r.desired,
                    applied: r.applied,
                    reason: r.reason,
                    decision: serde_json::from_value(r.decision).ok(),
                })
                .collect(),
        )
    }
}
