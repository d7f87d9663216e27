//! Application secrets: sealed versions, append-only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The newest version of one secret name of an application (deleted names included,
/// with no value).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretVersionRow {
    pub name: String,
    pub version: i32,
    pub present: bool,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The newest version of every secret name the application ever had.
pub async fn latest<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<SecretVersionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (s.name) s.name, s.version, s.sealed IS NOT NULL AS present,
                u.username AS created_by, s.created_at
         FROM app_secrets s LEFT JOIN users u ON u.id = s.created_by
         WHERE s.application_id = $1
         ORDER BY s.name, s.version DESC",
    )
    .bind(application_id)
    .fetch_all(ex)
    .await
}

/// Records a new version of a secret (`sealed` `None` deletes it); returns its number.
pub async fn insert_version(
    conn: &mut PgConnection,
    application_id: Uuid,
    name: &str,
    sealed: Option<&[u8]>,
    created_by: Uuid,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO app_secrets (application_id, name, version, sealed, created_by)
         SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4 FROM app_secrets
         WHERE application_id = $1 AND name = $2
         RETURNING version",
    )
    .bind(application_id)
    .bind(name)
    .bind(sealed)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

/// The version a sealed value was sealed for, with the value: `(name, version, sealed)`.
pub type SealedSecret = (String, i32, Vec<u8>);

/// The sealed values of the given versions of an application's secrets.
pub async fn sealed<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    versions: &BTreeMap<String, i32>,
) -> Result<Vec<SealedSecret>, sqlx::Error> {
    if versions.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = versions.keys().map(String::as_str).collect();
    let numbers: Vec<i32> = versions.values().copied().collect();
    sqlx::query_as(
        "SELECT s.name, s.version, s.sealed FROM app_secrets s
         JOIN unnest($2::text[], $3::int[]) AS wanted (name, version)
           ON wanted.name = s.name AND wanted.version = s.version
         WHERE s.application_id = $1 AND s.sealed IS NOT NULL",
    )
    .bind(application_id)
    .bind(names)
    .bind(numbers)
    .fetch_all(ex)
    .await
}
