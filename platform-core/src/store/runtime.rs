//! What the reconciler reads of every application, and application events.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

pub async fn append_event(
    conn: &mut PgConnection,
    application_id: Uuid,
    instance: Option<&str>,
    reason: &str,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO app_events (application_id, instance, reason, message) VALUES ($1, $2, $3, $4)")
        .bind(application_id)
        .bind(instance)
        .bind(reason)
        .bind(message)
        .execute(conn)
        .await
        .map(|_| ())
}
/// Records one event per instance named, with the same reason, in one statement.
pub async fn append_events(
    conn: &mut PgConnection,
    application_id: Uuid,
    instances: &[String],
    reason: &str,
    messages: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO app_events (application_id, instance, reason, message)
         SELECT $1, i, $3, m FROM UNNEST($2::text[], $4::text[]) AS e(i, m)",
    )
    .bind(application_id)
    .bind(instances)
    .bind(reason)
    .bind(messages)
    .execute(conn)
    .await
    .map(|_| ())
}
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub instance: Option<String>,
    pub reason: String,
    pub message: String,
}
pub async fn events<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, at, instance, reason, message FROM app_events WHERE application_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(application_id)
        .bind(limit)
        .fetch_all(ex)
        .await
}
/// The application a workload key names (live only), with its tenant, locked for the
/// rest of the transaction so that concurrent applies serialize. `FOR NO KEY UPDATE`:
/// rows that reference the application (an instance's event, written by a heartbeat
/// that holds instance rows this apply may change) still pass their foreign-key check,
/// so the two cannot deadlock.
pub async fn lock_application(
    conn: &mut PgConnection,
    tenant: &str,
    environment: &str,
    app: &str,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.id, a.tenant_id FROM applications a
         JOIN environments e ON e.id = a.environment_id JOIN tenants t ON t.id = a.tenant_id
         WHERE t.slug = $1 AND e.name = $2 AND a.name = $3 AND a.deleted_at IS NULL
         FOR NO KEY UPDATE OF a",
    )
    .bind(tenant)
    .bind(environment)
    .bind(app)
    .fetch_optional(conn)
    .await
}
/// The application a key names, live or deleted (the newest), for observation and removal.
pub async fn application_id<'e>(
    ex: impl PgExecutor<'e>,
    tenant: &str,
    environment: &str,
    app: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT a.id FROM applications a
         JOIN environments e ON e.id = a.environment_id JOIN tenants t ON t.id = a.tenant_id
         WHERE t.slug = $1 AND e.name = $2 AND a.name = $3 ORDER BY a.deleted_at DESC NULLS FIRST LIMIT 1",
    )
    .bind(tenant)
    .bind(environment)
    .bind(app)
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|(id,)| id))
}
/// What the reconciler needs of every application: live ones with their current spec,
/// and deleted ones their runtime has not released yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DesiredRow {
    pub application_id: Uuid,
    pub tenant: String,
    pub environment: String,
    pub app: String,
    pub revision: i32,
    pub spec: serde_json::Value,
    pub run_state: crate::model::RunState,
    pub deleted: bool,
    /// Replicas set by scaling, overriding the spec's.
    pub replicas: Option<i32>,
    /// The environment's runtime.
    pub runtime: String,
    /// The release that moves the application now (progressing or paused), if any:
    /// `revision` is then its target, and `spec` the target's.
    pub release_id: Option<i64>,
    pub release_state: Option<crate::releases::gate::State>,
    pub release_from: Option<i32>,
    pub release_strategy: Option<serde_json::Value>,
    pub release_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub release_progress: Option<serde_json::Value>,
    /// Where a canary release is (`CanaryState`); `null` for other strategies.
    pub release_canary: Option<serde_json::Value>,
    /// Why the moving release cannot go on (empty: it can).
    pub release_reason: Option<String>,
}
/// What every desired-state read selects (each adds its own conditions).
const DESIRED: &str = "SELECT a.id AS application_id, t.slug AS tenant, e.name AS environment, a.name AS app,
                coalesce(rel.to_revision, a.released_revision) AS revision,
                r.spec, a.run_state, a.deleted_at IS NOT NULL AS deleted, a.replicas, e.runtime,
                rel.id AS release_id, rel.state AS release_state, rel.from_revision AS release_from,
                rel.strategy AS release_strategy, rel.started_at AS release_started_at,
                rel.progress AS release_progress, rel.canary AS release_canary,
                rel.reason AS release_reason
         FROM applications a
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         LEFT JOIN releases rel ON rel.application_id = a.id AND rel.state IN ('progressing', 'paused')
         JOIN revisions r ON r.application_id = a.id AND r.number = coalesce(rel.to_revision, a.released_revision)
         WHERE (a.deleted_at IS NULL OR a.released_at IS NULL)";

/// The applications a canary release moves now (progressing, not paused).
pub async fn desired_canaries<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<DesiredRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{DESIRED} AND rel.state = 'progressing' AND rel.strategy->>'type' = 'canary' ORDER BY a.id"
    ))
    .fetch_all(ex)
    .await
}

/// Of one runtime's environments, or of all (`None`); of the given applications only,
/// or of all (`None`).
pub async fn desired<'e>(
    ex: impl PgExecutor<'e>,
    runtime: Option<&str>,
    applications: Option<&[Uuid]>,
) -> Result<Vec<DesiredRow>, sqlx::Error> {
    // Only the conditions given are in the statement: a generic plan of "$2 IS NULL OR
    // a.id = ANY($2)" cannot use the primary key and reads every application.
    let mut sql = QueryBuilder::<Postgres>::new(DESIRED);
    if let Some(runtime) = runtime {
        sql.push(" AND e.runtime = ").push_bind(runtime);
    }
    if let Some(applications) = applications {
        sql.push(" AND a.id = ANY(")
            .push_bind(applications)
            .push(")");
    }
    sql.push(" ORDER BY a.id");
    sql.build_query_as().fetch_all(ex).await
}
/// Asks every control plane to reconcile the application now (delivered at commit when
/// `ex` is in a transaction).
pub async fn touch<'e>(ex: impl PgExecutor<'e>, application_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify('paas_desired', $1::text)")
        .bind(application_id)
        .execute(ex)
        .await
        .map(|_| ())
}
pub async fn set_replicas(
    conn: &mut PgConnection,
    application_id: Uuid,
    replicas: Option<i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET replicas = $2, updated_at = now() WHERE id = $1")
        .bind(application_id)
        .bind(replicas)
        .execute(conn)
        .await
        .map(|_| ())
}
pub async fn set_run_state(
    conn: &mut PgConnection,
    application_id: Uuid,
    state: crate::model::RunState,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET run_state = $2, updated_at = now() WHERE id = $1")
        .bind(application_id)
        .bind(state)
        .execute(conn)
        .await
        .map(|_| ())
}
/// Whether one of the application's latest events already says this.
pub async fn said_recently(
    conn: &mut PgConnection,
    application_id: Uuid,
    instance: Option<&str>,
    reason: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT 1::bigint FROM (SELECT instance, reason, message FROM app_events WHERE application_id = $1
                                ORDER BY id DESC LIMIT 20) latest
         WHERE instance IS NOT DISTINCT FROM $2 AND reason = $3 AND message = $4 LIMIT 1",
    )
    .bind(application_id)
    .bind(instance)
    .bind(reason)
    .bind(message)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}
/// Records that the runtime no longer runs anything of a deleted application.
pub async fn mark_released<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET released_at = now() WHERE id = $1 AND deleted_at IS NOT NULL AND released_at IS NULL")
        .bind(application_id)
        .execute(ex)
        .await
        .map(|_| ())
}

/// Every live application of `application_id`'s environment with its labels (of its
/// newest spec), by name: what placement rules that select by label choose among.
pub async fn environment_labels<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<AppLabels, sqlx::Error> {
    labels_where(
        ex,
        "(SELECT environment_id FROM applications WHERE id = $1)",
        application_id,
    )
    .await
}

/// Every live application of an environment with its labels, by name.
pub async fn labels_in_environment<'e>(
    ex: impl PgExecutor<'e>,
    environment_id: Uuid,
) -> Result<AppLabels, sqlx::Error> {
    labels_where(ex, "$1", environment_id).await
}

/// Applications' labels by name.
pub type AppLabels = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

async fn labels_where<'e>(
    ex: impl PgExecutor<'e>,
    environment: &str,
    id: Uuid,
) -> Result<AppLabels, sqlx::Error> {
    let rows: Vec<(
        String,
        sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    )> = sqlx::query_as(&format!(
        "SELECT a.name, coalesce(r.spec->'labels', '{{}}'::jsonb)
             FROM applications a
             JOIN revisions r ON r.application_id = a.id AND r.number = a.current_revision
             WHERE a.deleted_at IS NULL AND a.environment_id = {environment}"
    ))
    .bind(id)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, labels)| (name, labels.0))
        .collect())
}
