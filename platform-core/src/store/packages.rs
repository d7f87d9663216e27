//! Uploaded package archives.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::Package;

#[derive(Debug)]
pub struct NewPackage<'a> {
    pub tenant_id: Uuid,
    pub digest: &'a str,
    pub filename: &'a str,
    pub files: i32,
    pub content: &'a [u8],
    pub uploaded_by: Uuid,
}

/// Stores a package; uploading the same bytes again keeps the first record. Returns
/// whether it was new.
pub async fn insert(conn: &mut PgConnection, p: NewPackage<'_>) -> Result<bool, sqlx::Error> {
    let size = i64::try_from(p.content.len()).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "INSERT INTO packages (tenant_id, digest, filename, size_bytes, files, content, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(p.tenant_id)
    .bind(p.digest)
    .bind(p.filename)
    .bind(size)
    .bind(p.files)
    .bind(p.content)
    .bind(p.uploaded_by)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

const COLUMNS: &str = "digest, filename, size_bytes, files, uploaded_at";

pub async fn list<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<Package>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM packages WHERE tenant_id = $1 ORDER BY uploaded_at DESC"
    ))
    .bind(tenant_id)
    .fetch_all(ex)
    .await
}

pub async fn find<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    digest: &str,
) -> Result<Option<Package>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM packages WHERE tenant_id = $1 AND digest = $2"
    ))
    .bind(tenant_id)
    .bind(digest)
    .fetch_optional(ex)
    .await
}

/// The bytes of a package, for the agents (any tenant's copy: the digest names them).
pub async fn content<'e>(
    ex: impl PgExecutor<'e>,
    digest: &str,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT content FROM packages WHERE digest = $1 LIMIT 1")
        .bind(digest)
        .fetch_optional(ex)
        .await
}
