//! Tenants, their environments and their members.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{Environment, Member, Role, Tenant};

pub async fn insert(
    conn: &mut PgConnection,
    slug: &str,
    display_name: &str,
) -> Result<Tenant, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO tenants (id, slug, display_name) VALUES ($1, $2, $3)
         RETURNING id, slug, display_name, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(slug)
    .bind(display_name)
    .fetch_one(conn)
    .await
}

pub async fn all<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<Tenant>, sqlx::Error> {
    sqlx::query_as("SELECT id, slug, display_name, created_at FROM tenants ORDER BY slug")
        .fetch_all(ex)
        .await
}

pub async fn by_slug<'e>(
    ex: impl PgExecutor<'e>,
    slug: &str,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as("SELECT id, slug, display_name, created_at FROM tenants WHERE slug = $1")
        .bind(slug)
        .fetch_optional(ex)
        .await
}

pub async fn by_id<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as("SELECT id, slug, display_name, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(ex)
        .await
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: Uuid,
    username: String,
    display_name: String,
    role: String,
    disabled: bool,
    since: chrono::DateTime<chrono::Utc>,
    version: i64,
}

pub async fn members<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<Member>, sqlx::Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT u.id AS user_id, u.username, u.display_name, m.role, u.disabled, m.created_at AS since,
                m.version
         FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.tenant_id = $1 ORDER BY u.username",
    )
    .bind(tenant_id)
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Member {
                user_id: r.user_id,
                username: r.username,
                display_name: r.display_name,
                role: r.role.parse().ok()?,
                disabled: r.disabled,
                since: r.since,
                version: r.version,
            })
        })
        .collect())
}

/// Locks a membership for the rest of the transaction and returns its role and
/// version; `None` when the user is not a member.
pub async fn lock_member(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(Role, i64)>, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT role, version FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    // The column's CHECK holds it to the roles `Role` parses.
    Ok(row.and_then(|(role, version)| Some((role.parse().ok()?, version))))
}

/// Locks a tenant's row for the rest of the transaction and returns its version.
pub async fn lock_version(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await
}

/// A tenant's version (its quota is the part clients change).
pub async fn version<'e>(ex: impl PgExecutor<'e>, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_one(ex)
        .await
}

/// Adds a member or changes their role.
pub async fn upsert_member(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role",
    )
    .bind(tenant_id)
    .bind(user_id)
    .bind(role.as_str())
    .execute(conn)
    .await
    .map(|_| ())
}

/// Removes a member; returns whether they were one.
pub async fn remove_member(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    // The user's sessions end with the membership (their tokens name their roles).
    let done = sqlx::query(
        "WITH gone AS (DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2 RETURNING user_id)
         UPDATE users SET session_generation = session_generation + 1
         WHERE id IN (SELECT user_id FROM gone)",
    )
        .bind(tenant_id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How many tenant admins a tenant has (a tenant must keep at least one).
pub async fn admin_count(conn: &mut PgConnection, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 AND m.role = 'tenant_admin' AND NOT u.disabled")
            .bind(tenant_id)
            .fetch_one(conn)
            .await?;
    Ok(n)
}

const ENV_COLUMNS: &str = "id, tenant_id, name, description, protected, runtime, created_at";

pub async fn insert_environment(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: &str,
    description: &str,
    protected: bool,
    runtime: &str,
) -> Result<Environment, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO environments (id, tenant_id, name, description, protected, runtime) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {ENV_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant_id)
    .bind(name)
    .bind(description)
    .bind(protected)
    .bind(runtime)
    .fetch_one(conn)
    .await
}

pub async fn environments<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<Environment>, sqlx::Error> {
    // dev, test and prod first in their natural order, then the rest by name.
    sqlx::query_as(&format!(
        "SELECT {ENV_COLUMNS} FROM environments WHERE tenant_id = $1
         ORDER BY array_position(ARRAY['dev','test','prod'], name) NULLS LAST, name"
    ))
    .bind(tenant_id)
    .fetch_all(ex)
    .await
}

pub async fn environment<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    name: &str,
) -> Result<Option<Environment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENV_COLUMNS} FROM environments WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(ex)
    .await
}

/// A tenant's quota (None: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct QuotaRow {
    pub max_instances: Option<i32>,
    pub max_cpu_millis: Option<i32>,
    pub max_memory_mib: Option<i32>,
    pub max_service_instances: Option<i32>,
}

pub async fn quota<'e>(ex: impl PgExecutor<'e>, tenant_id: Uuid) -> Result<QuotaRow, sqlx::Error> {
    sqlx::query_as(
        "SELECT max_instances, max_cpu_millis, max_memory_mib, max_service_instances
         FROM tenants WHERE id = $1",
    )
    .bind(tenant_id)
    .fetch_one(ex)
    .await
}

pub async fn set_quota(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    quota: QuotaRow,
) -> Result<i64, sqlx::Error> {
    // The tenant's version after the change (the trigger's).
    sqlx::query_scalar(
        "UPDATE tenants SET max_instances = $2, max_cpu_millis = $3, max_memory_mib = $4,
             max_service_instances = $5
         WHERE id = $1 RETURNING version",
    )
    .bind(tenant_id)
    .bind(quota.max_instances)
    .bind(quota.max_cpu_millis)
    .bind(quota.max_memory_mib)
    .bind(quota.max_service_instances)
    .fetch_one(conn)
    .await
}

/// What a tenant's running applications ask for: instances, CPU and memory, leaving
/// out one application (the one being changed, whose new demand the caller adds).
pub async fn usage(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    except: Option<Uuid>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "WITH demand AS (
             SELECT COALESCE(a.replicas, (r.spec->>'replicas')::int, 1) AS n,
                    COALESCE((r.spec->'resources'->>'cpu_millis')::int, 100) AS cpu,
                    COALESCE((r.spec->'resources'->>'memory_mib')::int, 128) AS mem
             FROM applications a JOIN revisions r ON r.application_id = a.id AND r.number = a.current_revision
             WHERE a.tenant_id = $1 AND a.deleted_at IS NULL AND a.run_state = 'running'
               AND ($2::uuid IS NULL OR a.id <> $2) AND COALESCE(r.spec->>'kind', 'service') <> 'cronjob')
         SELECT COALESCE(sum(n), 0)::bigint, COALESCE(sum(n * cpu), 0)::bigint, COALESCE(sum(n * mem), 0)::bigint FROM demand",
    )
    .bind(tenant_id)
    .bind(except)
    .fetch_one(conn)
    .await
}

/// Locks the tenant row for the rest of the transaction (its quota is checked against
/// a usage no concurrent change can alter meanwhile).
pub async fn lock(conn: &mut PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant_id)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Serializes first-start data (demo data, the first administrator) between control
/// planes starting at once, for the rest of the transaction.
pub async fn lock_bootstrap(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(7242001)")
        .execute(conn)
        .await
        .map(|_| ())
}
