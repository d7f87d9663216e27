//! Releases, their timelines (append-only) and environments' release policies.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::releases::gate::State;

/// An environment's release policy as stored (none: it has the default), and whether
/// the environment is protected (which the default depends on).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PolicyRow {
    pub protected: bool,
    pub policy: Option<serde_json::Value>,
    pub version: Option<i64>,
}

pub async fn policy<'e>(
    ex: impl PgExecutor<'e>,
    environment_id: Uuid,
) -> Result<Option<PolicyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.protected, p.policy, p.version FROM environments e
         LEFT JOIN release_policies p ON p.environment_id = e.id WHERE e.id = $1",
    )
    .bind(environment_id)
    .fetch_optional(ex)
    .await
}

/// Locks the environment's policy row when there is one; its version.
pub async fn lock_policy(
    conn: &mut PgConnection,
    environment_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM release_policies WHERE environment_id = $1 FOR UPDATE")
        .bind(environment_id)
        .fetch_optional(conn)
        .await
}

/// Writes the policy; its new version.
pub async fn upsert_policy(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Uuid,
    policy: &serde_json::Value,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO release_policies (environment_id, tenant_id, policy) VALUES ($1, $2, $3)
         ON CONFLICT (environment_id) DO UPDATE SET policy = EXCLUDED.policy, updated_at = now()
         RETURNING version",
    )
    .bind(environment_id)
    .bind(tenant_id)
    .bind(Json(policy))
    .fetch_one(conn)
    .await
}

const COLUMNS: &str = "r.id, r.tenant_id, t.slug AS tenant, r.application_id, e.name AS environment, e.id AS environment_id,
    a.name AS application, r.from_revision, r.to_revision, r.cause, r.strategy, r.state, r.reason,
    r.requested_by, r.requested_at, r.approvals, r.started_at, r.ended_at, r.progress, r.canary, r.version";
const FROM: &str = "FROM releases r JOIN applications a ON a.id = r.application_id
    JOIN environments e ON e.id = a.environment_id JOIN tenants t ON t.id = r.tenant_id";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReleaseRow {
    pub id: i64,
    pub tenant_id: Uuid,
    pub tenant: String,
    pub application_id: Uuid,
    pub environment: String,
    pub environment_id: Uuid,
    pub application: String,
    pub from_revision: i32,
    pub to_revision: i32,
    pub cause: String,
    pub strategy: serde_json::Value,
    pub state: State,
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub approvals: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub progress: serde_json::Value,
    /// Where a canary release is (`CanaryState`); `None` for other strategies.
    pub canary: Option<serde_json::Value>,
    pub version: i64,
}

/// A release to record.
#[derive(Debug, Clone)]
pub struct NewRelease<'a> {
    pub tenant_id: Uuid,
    pub application_id: Uuid,
    pub from_revision: i32,
    pub to_revision: i32,
    pub cause: &'a str,
    pub strategy: &'a serde_json::Value,
    pub state: State,
    pub reason: &'a str,
    pub requested_by: &'a str,
}

pub async fn insert(conn: &mut PgConnection, new: NewRelease<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO releases (tenant_id, application_id, from_revision, to_revision, cause, strategy, state, reason, requested_by, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $7 = 'progressing'::release_state THEN now() END)
         RETURNING id",
    )
    .bind(new.tenant_id)
    .bind(new.application_id)
    .bind(new.from_revision)
    .bind(new.to_revision)
    .bind(new.cause)
    .bind(Json(new.strategy))
    .bind(new.state)
    .bind(new.reason)
    .bind(new.requested_by)
    .fetch_one(conn)
    .await
}

/// The application's open release (waiting or moving), locked.
pub async fn lock_open(
    conn: &mut PgConnection,
    application_id: Uuid,
) -> Result<Option<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} {FROM} WHERE r.application_id = $1 AND r.state = ANY($2) FOR UPDATE OF r"
    ))
    .bind(application_id)
    .bind(&State::OPEN[..])
    .fetch_optional(conn)
    .await
}

/// One release of a tenant.
pub async fn get<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} {FROM} WHERE r.tenant_id = $1 AND r.id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(ex)
    .await
}

/// One release, whichever its tenant (the caller checks the tenant).
pub async fn by_id<'e>(
    ex: impl PgExecutor<'e>,
    id: i64,
) -> Result<Option<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} {FROM} WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(ex)
        .await
}

/// One release of a tenant, locked.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: i64,
) -> Result<Option<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} {FROM} WHERE r.tenant_id = $1 AND r.id = $2 FOR UPDATE OF r"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// An application's releases, newest first.
pub async fn of_application<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    limit: i64,
) -> Result<Vec<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} {FROM} WHERE r.application_id = $1 ORDER BY r.id DESC LIMIT {limit}"
    ))
    .bind(application_id)
    .fetch_all(ex)
    .await
}

/// The releases of these tenants, in these states (all when empty), pending approvals
/// first, then newest first.
pub async fn queue<'e>(
    ex: impl PgExecutor<'e>,
    tenant_ids: &[Uuid],
    states: &[State],
    limit: i64,
) -> Result<Vec<ReleaseRow>, sqlx::Error> {
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} {FROM} WHERE r.tenant_id = ANY("));
    sql.push_bind(tenant_ids).push(")");
    if !states.is_empty() {
        sql.push(" AND r.state = ANY(").push_bind(states).push(")");
    }
    sql.push(format!(
        " ORDER BY r.state = 'pending_approval' DESC, r.id DESC LIMIT {limit}"
    ));
    sql.build_query_as().fetch_all(ex).await
}

/// Moves a release to `state`. A release that starts progressing gets its start time
/// (once); one that ends, its end time. When it succeeds, its revision becomes the one
/// the application runs.
pub async fn set_state(
    conn: &mut PgConnection,
    id: i64,
    state: State,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let row: (Uuid, i32) = sqlx::query_as(
        "UPDATE releases SET state = $2, reason = $3,
             started_at = CASE WHEN $2 = 'progressing'::release_state THEN coalesce(started_at, now()) ELSE started_at END,
             ended_at = CASE WHEN $2 = ANY($4) THEN ended_at ELSE now() END
         WHERE id = $1 RETURNING application_id, to_revision",
    )
    .bind(id)
    .bind(state)
    .bind(reason)
    .bind(&State::OPEN[..])
    .fetch_one(&mut *conn)
    .await?;
    if state == State::Succeeded {
        sqlx::query("UPDATE applications SET released_revision = $2 WHERE id = $1")
            .bind(row.0)
            .bind(row.1)
            .execute(conn)
            .await?;
    }
    Ok(())
}

pub async fn add_approval(
    conn: &mut PgConnection,
    id: i64,
    username: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE releases SET approvals = array_append(approvals, $2) WHERE id = $1")
        .bind(id)
        .bind(username)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Records the shape the reconciler asked for, when it changed; whether it did.
pub async fn set_progress<'e>(
    ex: impl PgExecutor<'e>,
    id: i64,
    progress: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE releases SET progress = $2 WHERE id = $1 AND progress IS DISTINCT FROM $2")
        .bind(id)
        .bind(Json(progress))
        .execute(ex)
        .await
        .map(|r| r.rows_affected() > 0)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub kind: String,
    pub message: String,
    pub detail: serde_json::Value,
}

pub async fn event<'e>(
    ex: impl PgExecutor<'e>,
    release_id: i64,
    actor: Option<&str>,
    kind: &str,
    message: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO release_events (release_id, actor, kind, message, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(release_id)
    .bind(actor)
    .bind(kind)
    .bind(message)
    .bind(detail)
    .execute(ex)
    .await
    .map(|_| ())
}

pub async fn events<'e>(
    ex: impl PgExecutor<'e>,
    release_id: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, kind, message, detail FROM release_events WHERE release_id = $1 ORDER BY id LIMIT 1000",
    )
    .bind(release_id)
    .fetch_all(ex)
    .await
}

/// Approved releases of the given runtimes' environments that may start (their
/// freeze may have ended), and pending ones (their request may have expired): the
/// release supervisor looks at these.
pub async fn waiting<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<ReleaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} {FROM} WHERE r.state IN ('approved', 'pending_approval') ORDER BY r.id LIMIT 1000"
    ))
    .fetch_all(ex)
    .await
}

/// Of an application: its environment's id and the revision that runs when no
/// release moves it.
pub async fn context(
    conn: &mut PgConnection,
    application_id: Uuid,
) -> Result<(Uuid, i32), sqlx::Error> {
    sqlx::query_as(
        "SELECT a.environment_id, a.released_revision FROM applications a WHERE a.id = $1",
    )
    .bind(application_id)
    .fetch_one(conn)
    .await
}

/// Ends a moving (progressing or paused) release as the reconciler found it:
/// `succeeded` makes its revision the one the application runs. Whether it was still
/// moving (another control plane may have ended it first).
pub async fn conclude(
    conn: &mut PgConnection,
    id: i64,
    state: State,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let moved: Option<(Uuid, i32)> = sqlx::query_as(
        "UPDATE releases SET state = $2, reason = $3, ended_at = now()
         WHERE id = $1 AND state IN ('progressing', 'paused')
         RETURNING application_id, to_revision",
    )
    .bind(id)
    .bind(state)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((application_id, to_revision)) = moved else {
        return Ok(false);
    };
    if state == State::Succeeded {
        sqlx::query("UPDATE applications SET released_revision = $2 WHERE id = $1")
            .bind(application_id)
            .bind(to_revision)
            .execute(conn)
            .await?;
    }
    Ok(true)
}

/// Moves a progressing canary release's state from `seen` (as it was read) to
/// `state`; whether it was still `seen` (another control plane or a person's
/// "continue" may have moved it first).
pub async fn set_canary<'e>(
    ex: impl PgExecutor<'e>,
    id: i64,
    seen: Option<&serde_json::Value>,
    state: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE releases SET canary = $3
         WHERE id = $1 AND state = 'progressing' AND canary IS NOT DISTINCT FROM $2",
    )
    .bind(id)
    .bind(seen.map(Json))
    .bind(Json(state))
    .execute(ex)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Says why a moving release cannot go on just now (empty: it can); whether that
/// changed.
pub async fn set_moving_reason<'e>(
    ex: impl PgExecutor<'e>,
    id: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE releases SET reason = $2
         WHERE id = $1 AND state = 'progressing' AND reason IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(reason)
    .execute(ex)
    .await
    .map(|r| r.rows_affected() > 0)
}
