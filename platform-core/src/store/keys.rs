//! Signing keys for session tokens.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    pub secret: Vec<u8>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Creates the first current key unless one exists (concurrent starts race safely on
/// the one-current-key index).
pub async fn insert_first(pool: &PgPool, kid: &str, secret: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, secret)
         SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)
         ON CONFLICT DO NOTHING",
    )
    .bind(kid)
    .bind(secret)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The current key and the retired keys still inside the overlap window.
pub async fn live(pool: &PgPool, overlap_secs: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, secret, retired_at FROM signing_keys
         WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
         ORDER BY created_at DESC",
    )
    .bind(overlap_secs as f64)
    .fetch_all(pool)
    .await
}

/// Retires the current key and makes `kid` current.
pub async fn rotate(tx: &mut PgConnection, kid: &str, secret: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO signing_keys (kid, secret) VALUES ($1, $2)")
        .bind(kid)
        .bind(secret)
        .execute(&mut *tx)
        .await
        .map(|_| ())
}
