//! Platform users.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::User;

const USER_COLUMNS: &str =
    "id, username, display_name, platform_admin, disabled, created_at, version";

/// A user with the password hash, for login only.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub platform_admin: bool,
    pub disabled: bool,
}

pub async fn insert(
    conn: &mut PgConnection,
    username: &str,
    display_name: &str,
    password_hash: &str,
    platform_admin: bool,
) -> Result<User, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO users (id, username, display_name, password_hash, platform_admin)
         VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(username)
    .bind(display_name)
    .bind(password_hash)
    .bind(platform_admin)
    .fetch_one(conn)
    .await
}

pub async fn credentials<'e>(
    ex: impl PgExecutor<'e>,
    username: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, username, password_hash, platform_admin, disabled FROM users WHERE username = $1")
        .bind(username)
        .fetch_optional(ex)
        .await
}

pub async fn by_id<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(ex)
        .await
}

pub async fn by_username<'e>(
    ex: impl PgExecutor<'e>,
    username: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(ex)
    .await
}

pub async fn all<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))
    .fetch_all(ex)
    .await
}

pub async fn count<'e>(ex: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM users")
        .fetch_one(ex)
        .await?;
    Ok(n)
}

pub async fn platform_admin_count<'e>(ex: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM users WHERE platform_admin AND NOT disabled")
            .fetch_one(ex)
            .await?;
    Ok(n)
}

/// Locks a user's row for the rest of the transaction and returns its version.
pub async fn lock_version(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn set_disabled(
    conn: &mut PgConnection,
    id: Uuid,
    disabled: bool,
) -> Result<(), sqlx::Error> {
    // Disabling ends every session issued so far, for good: re-enabling does not bring
    // them back.
    sqlx::query(
        "UPDATE users SET disabled = $2,
                session_generation = session_generation + CASE WHEN $2 THEN 1 ELSE 0 END
         WHERE id = $1",
    )
    .bind(id)
    .bind(disabled)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn set_password(
    conn: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    // A new password ends every session issued with the old one.
    sqlx::query(
        "UPDATE users SET password_hash = $2, session_generation = session_generation + 1
         WHERE id = $1",
    )
    .bind(id)
    .bind(password_hash)
    .execute(conn)
    .await
    .map(|_| ())
}

/// What a request's credentials come to, read in one statement: the user, whether the
/// session was revoked, and the user's tenants with a role in each (in slug order).
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user: User,
    pub revoked: bool,
    /// The user's session generation: a token of another generation is refused.
    pub generation: i32,
    pub memberships: Vec<crate::model::TenantMembership>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    username: String,
    display_name: String,
    platform_admin: bool,
    disabled: bool,
    created_at: chrono::DateTime<chrono::Utc>,
    version: i64,
    revoked: bool,
    session_generation: i32,
    tenant_id: Option<Uuid>,
    slug: Option<String>,
    tenant_name: Option<String>,
    tenant_created_at: Option<chrono::DateTime<chrono::Utc>>,
    role: Option<String>,
}

/// The user `id` as session `jti` sees it; `None` when there is no such user.
pub async fn session_user<'e>(
    ex: impl PgExecutor<'e>,
    id: Uuid,
    jti: &str,
) -> Result<Option<SessionUser>, sqlx::Error> {
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT u.id, u.username, u.display_name, u.platform_admin, u.disabled, u.created_at, u.version,
                EXISTS (SELECT 1 FROM revoked_sessions WHERE jti = $2) AS revoked, u.session_generation,
                t.id AS tenant_id, t.slug, t.display_name AS tenant_name,
                t.created_at AS tenant_created_at, m.role
         FROM users u
         LEFT JOIN memberships m ON m.user_id = u.id
         LEFT JOIN tenants t ON t.id = m.tenant_id
         WHERE u.id = $1
         ORDER BY t.slug",
    )
    .bind(id)
    .bind(jti)
    .fetch_all(ex)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let user = User {
        id: first.id,
        username: first.username.clone(),
        display_name: first.display_name.clone(),
        platform_admin: first.platform_admin,
        disabled: first.disabled,
        created_at: first.created_at,
        version: first.version,
    };
    let revoked = first.revoked;
    let generation = first.session_generation;
    let memberships = rows
        .into_iter()
        .filter_map(|r| {
            Some(crate::model::TenantMembership {
                tenant_id: r.tenant_id?,
                slug: r.slug?,
                display_name: r.tenant_name?,
                role: r.role?.parse().ok()?,
                tenant_created_at: r.tenant_created_at?,
            })
        })
        .collect();
    Ok(Some(SessionUser {
        user,
        revoked,
        generation,
        memberships,
    }))
}
