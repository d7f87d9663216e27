//! Autoscaling policies (one per application, versioned) and the decision ledger
//! (append-only).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub policy: serde_json::Value,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

pub async fn get<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT policy, version, updated_at FROM autoscaling_policies WHERE application_id = $1",
    )
    .bind(application_id)
    .fetch_optional(ex)
    .await
}

/// Locks the application's policy row, when there is one; its version.
pub async fn lock(
    conn: &mut PgConnection,
    application_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT version FROM autoscaling_policies WHERE application_id = $1 FOR UPDATE",
    )
    .bind(application_id)
    .fetch_optional(conn)
    .await
}

/// Writes the policy; its new version.
pub async fn upsert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    application_id: Uuid,
    policy: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO autoscaling_policies (application_id, tenant_id, policy) VALUES ($1, $2, $3)
         ON CONFLICT (application_id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()
         RETURNING version",
    )
    .bind(application_id)
    .bind(tenant_id)
    .bind(Json(policy))
    .fetch_one(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, application_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM autoscaling_policies WHERE application_id = $1")
        .bind(application_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() > 0)
}

/// What the evaluator needs of every live application that has a policy.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveRow {
    pub application_id: Uuid,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub environment: String,
    pub app: String,
    pub runtime: String,
    pub spec: serde_json::Value,
    pub run_state: crate::model::RunState,
    pub replicas: Option<i32>,
    pub scaled_by_hand_at: Option<DateTime<Utc>>,
    pub policy: serde_json::Value,
    pub policy_version: i64,
}

/// Every live application with a policy, of the given runtimes.
pub async fn active<'e>(
    ex: impl PgExecutor<'e>,
    runtimes: &[String],
) -> Result<Vec<ActiveRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id AS application_id, a.tenant_id, t.slug AS tenant, e.name AS environment,
                a.name AS app, e.runtime, r.spec, a.run_state, a.replicas, a.scaled_by_hand_at,
                p.policy, p.version AS policy_version
         FROM autoscaling_policies p
         JOIN applications a ON a.id = p.application_id AND a.deleted_at IS NULL
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         JOIN revisions r ON r.application_id = a.id AND r.number = a.current_revision
         WHERE e.runtime = ANY($1)
         ORDER BY a.id",
    )
    .bind(runtimes)
    .fetch_all(ex)
    .await
}

/// Writes the count the autoscaler decided, unless the application changed since the
/// evaluator read it (its replicas or run state): then nothing, and `false`. The
/// application's version does not move: the count is the autoscaler's to keep, and a
/// person's open form stays valid.
pub async fn set_replicas(
    conn: &mut PgConnection,
    application_id: Uuid,
    read: Option<i32>,
    replicas: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE applications SET replicas = $3
         WHERE id = $1 AND replicas IS NOT DISTINCT FROM $2 AND deleted_at IS NULL AND run_state = 'running'",
    )
    .bind(application_id)
    .bind(read)
    .bind(replicas)
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// One row of the ledger.
#[derive(Debug, Clone)]
pub struct NewDecision<'a> {
    pub tenant_id: Uuid,
    pub application_id: Uuid,
    pub at: DateTime<Utc>,
    pub previous: i32,
    pub desired: i32,
    pub applied: bool,
    pub reason: &'a str,
    pub decision: serde_json::Value,
}

pub async fn insert_decision(
    conn: &mut PgConnection,
    d: NewDecision<'_>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO autoscaling_decisions (tenant_id, application_id, at, previous, desired, applied, reason, decision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(d.tenant_id)
    .bind(d.application_id)
    .bind(d.at)
    .bind(d.previous)
    .bind(d.desired)
    .bind(d.applied)
    .bind(d.reason)
    .bind(Json(d.decision))
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub previous: i32,
    pub desired: i32,
    pub applied: bool,
    pub reason: String,
    pub decision: serde_json::Value,
}

/// The ledger of one application, newest first, before `before` (an id) when given.
pub async fn decisions<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    before: Option<i64>,
    applied_only: bool,
    limit: u32,
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT id, at, previous, desired, applied, reason, decision FROM autoscaling_decisions WHERE application_id = ",
    );
    sql.push_bind(application_id);
    if let Some(before) = before {
        sql.push(" AND id < ").push_bind(before);
    }
    if applied_only {
        sql.push(" AND applied");
    }
    sql.push(format!(" ORDER BY id DESC LIMIT {}", limit.min(500)));
    sql.build_query_as().fetch_all(ex).await
}

/// The counts the autoscaler applied to an application since `since`, oldest first:
/// what its rate limits count against, also after a restart.
pub async fn changes_since<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, i32, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, previous, desired FROM autoscaling_decisions
         WHERE application_id = $1 AND applied AND at > $2 ORDER BY id",
    )
    .bind(application_id)
    .bind(since)
    .fetch_all(ex)
    .await
}

/// Records that someone set the count by hand (the cooldown starts).
pub async fn mark_scaled_by_hand(
    conn: &mut PgConnection,
    application_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET scaled_by_hand_at = now() WHERE id = $1")
        .bind(application_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The latest applied decision of each application of a tenant since `since`, with the
/// application's environment and name; newest first.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentRow {
    pub environment: String,
    pub application: String,
    pub at: DateTime<Utc>,
    pub previous: i32,
    pub desired: i32,
    pub reason: String,
}

pub async fn recent<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    since: DateTime<Utc>,
) -> Result<Vec<RecentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT environment, application, at, previous, desired, reason FROM (
             SELECT DISTINCT ON (d.application_id) e.name AS environment, a.name AS application,
                    d.at, d.previous, d.desired, d.reason
             FROM autoscaling_decisions d
             JOIN applications a ON a.id = d.application_id AND a.deleted_at IS NULL
             JOIN environments e ON e.id = a.environment_id
             WHERE d.tenant_id = $1 AND d.at > $2 AND d.applied
             ORDER BY d.application_id, d.id DESC
         ) latest ORDER BY at DESC LIMIT 20",
    )
    .bind(tenant_id)
    .bind(since)
    .fetch_all(ex)
    .await
}
