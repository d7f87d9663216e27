//! Applications and their revisions.

use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::Application;
use crate::store::audit::AuditRecord;

const APP_COLUMNS: &str = "a.id, a.tenant_id, e.name AS environment, a.name, a.description, a.current_revision, a.released_revision, a.run_state, a.replicas AS scaled_replicas, a.created_at, a.updated_at, a.version";

/// A new application with its first revision, in one statement.
#[derive(Debug)]
pub struct NewApplication<'a> {
    pub tenant_id: Uuid,
    pub environment_id: Uuid,
    /// The environment's name, as the returned application carries it.
    pub environment: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub spec: &'a serde_json::Value,
    pub created_by: Uuid,
}

/// Inserts an application, its revision 1 (with no secrets) and the audit record of
/// its creation, and returns it. One statement, so one round trip and, outside a
/// transaction, one commit: creating an application is on the onboarding path.
pub async fn create<'e>(
    ex: impl PgExecutor<'e>,
    new: NewApplication<'_>,
    audit: AuditRecord<'_>,
) -> Result<Application, sqlx::Error> {
    sqlx::query_as(
        "WITH a AS (
             INSERT INTO applications (id, tenant_id, environment_id, name, description, current_revision, released_revision)
             VALUES ($1, $2, $3, $4, $5, 1, 1)
             RETURNING *
         ), r AS (
             INSERT INTO revisions (application_id, number, spec, secrets, created_by)
             SELECT id, 1, $6, '{}'::jsonb, $7 FROM a
         ), l AS (
             INSERT INTO audit_log (tenant_id, actor_id, actor, action, target_kind, target, details, source_ip)
             SELECT $9, $10, $11, $12, $13, $14, $15, $16 FROM a
         )
         SELECT a.id, a.tenant_id, $8::text AS environment, a.name, a.description, a.current_revision,
                a.released_revision, a.run_state, a.replicas AS scaled_replicas, a.created_at, a.updated_at, a.version
         FROM a",
    )
    .bind(Uuid::new_v4())
    .bind(new.tenant_id)
    .bind(new.environment_id)
    .bind(new.name)
    .bind(new.description)
    .bind(new.spec)
    .bind(new.created_by)
    .bind(new.environment)
    .bind(audit.tenant_id)
    .bind(audit.actor_id)
    .bind(audit.actor)
    .bind(audit.action)
    .bind(audit.target_kind)
    .bind(audit.target)
    .bind(audit.details)
    .bind(audit.source_ip)
    .fetch_one(ex)
    .await
}

/// Live applications of a tenant, optionally of one environment.
pub async fn list<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment: Option<&str>,
) -> Result<Vec<Application>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM applications a JOIN environments e ON e.id = a.environment_id
         WHERE a.tenant_id = $1 AND a.deleted_at IS NULL AND ($2::text IS NULL OR e.name = $2)
         ORDER BY e.name, a.name"
    ))
    .bind(tenant_id)
    .bind(environment)
    .fetch_all(ex)
    .await
}

/// One page of a tenant's live applications in (name, environment) order, after the
/// cursor `after` (name, environment), optionally in one environment and with `search`
/// in the name. The SQL holds only the conditions given, so that each combination gets
/// a plan of its own that walks an index (a generic plan for all of them sorts every
/// application of the tenant).
pub async fn page<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment: Option<&str>,
    search: Option<&str>,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<Application>, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT {APP_COLUMNS} FROM applications a JOIN environments e ON e.id = a.environment_id
         WHERE a.deleted_at IS NULL AND a.tenant_id = "
    ));
    sql.push_bind(tenant_id);
    if let Some(environment) = environment {
        sql.push(" AND a.environment_id = (SELECT id FROM environments WHERE tenant_id = ")
            .push_bind(tenant_id)
            .push(" AND name = ")
            .push_bind(environment)
            .push(")");
    }
    if let Some(search) = search {
        // Through the trigram index on lower(name) (migration 0011).
        sql.push(" AND lower(a.name) LIKE lower(")
            .push_bind(like_pattern(search))
            .push(")");
    }
    if let Some((name, env)) = after {
        sql.push(" AND a.name >= ")
            .push_bind(name)
            .push(" AND (a.name, e.name) > (")
            .push_bind(name)
            .push(", ")
            .push_bind(env)
            .push(")");
    }
    // The limit is written into the statement, not bound: with a bound limit PostgreSQL
    // plans the query afresh on every execution, which cost a third of the page.
    sql.push(format_args!(" ORDER BY a.name, e.name LIMIT {limit}"));
    sql.build_query_as().fetch_all(ex).await
}

/// `LIKE` pattern for names containing `text` literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub async fn find<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment: &str,
    name: &str,
) -> Result<Option<Application>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM applications a JOIN environments e ON e.id = a.environment_id
         WHERE a.tenant_id = $1 AND e.name = $2 AND a.name = $3 AND a.deleted_at IS NULL"
    ))
    .bind(tenant_id)
    .bind(environment)
    .bind(name)
    .fetch_optional(ex)
    .await
}

/// Locks the application row for the rest of the transaction, so concurrent spec
/// changes get consecutive revision numbers instead of a conflict (`FOR NO KEY UPDATE`,
/// which rows referencing the application do not wait for). Returns its current
/// revision and version.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT current_revision AS revision, version FROM applications
         WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What a locked application row holds that a change depends on.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Locked {
    pub revision: i32,
    pub version: i64,
}

/// A revision: the spec, and the secret versions it runs with (`{"NAME": version}`).
pub async fn insert_revision(
    conn: &mut PgConnection,
    application_id: Uuid,
    number: i32,
    spec: &serde_json::Value,
    secrets: &serde_json::Value,
    created_by: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO revisions (application_id, number, spec, secrets, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(application_id)
    .bind(number)
    .bind(spec)
    .bind(secrets)
    .bind(created_by)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn set_current_revision(
    conn: &mut PgConnection,
    id: Uuid,
    number: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET current_revision = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(number)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn set_description(
    conn: &mut PgConnection,
    id: Uuid,
    description: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET description = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(description)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn soft_delete(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE applications SET deleted_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

#[derive(Debug, sqlx::FromRow)]
pub struct RevisionRow {
    pub number: i32,
    pub spec: serde_json::Value,
    /// `{"NAME": version}` of the secrets it runs with.
    pub secrets: serde_json::Value,
    pub created_by: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn revisions<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<RevisionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.number, r.spec, r.secrets, u.username AS created_by, r.created_at
         FROM revisions r LEFT JOIN users u ON u.id = r.created_by
         WHERE r.application_id = $1 ORDER BY r.number DESC",
    )
    .bind(application_id)
    .fetch_all(ex)
    .await
}

pub async fn revision<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    number: i32,
) -> Result<Option<RevisionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.number, r.spec, r.secrets, u.username AS created_by, r.created_at
         FROM revisions r LEFT JOIN users u ON u.id = r.created_by
         WHERE r.application_id = $1 AND r.number = $2",
    )
    .bind(application_id)
    .bind(number)
    .fetch_optional(ex)
    .await
}

/// Counts of live applications per environment name.
pub async fn counts_by_environment<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.name, count(a.id) FROM environments e
         LEFT JOIN applications a ON a.environment_id = e.id AND a.deleted_at IS NULL
         WHERE e.tenant_id = $1 GROUP BY e.name
         ORDER BY array_position(ARRAY['dev','test','prod'], e.name) NULLS LAST, e.name",
    )
    .bind(tenant_id)
    .fetch_all(ex)
    .await
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn a_search_matches_its_text_literally() {
        assert_eq!(like_pattern("web"), "%web%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
