//! Signing keys for session tokens.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    /// The sealed secret (see `crate::sealing`).
    pub sealed: Option<Vec<u8>>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// Creates the first current key unless one exists (concurrent starts race safely on
/// the one-current-key index).
pub async fn insert_first(pool: &PgPool, kid: &str, sealed: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, sealed)
         SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)
         ON CONFLICT DO NOTHING",
    )
    .bind(kid)
    .bind(sealed)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Keys an earlier release stored in plaintext: `(kid, secret)`.
pub async fn plaintext(pool: &PgPool) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("SELECT kid, secret FROM signing_keys WHERE secret IS NOT NULL")
        .fetch_all(pool)
        .await
}

/// Replaces a plaintext key with its sealed form.
pub async fn seal(pool: &PgPool, kid: &str, sealed: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE signing_keys SET sealed = $2, secret = NULL WHERE kid = $1 AND secret IS NOT NULL",
    )
    .bind(kid)
    .bind(sealed)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The current key and the retired keys still inside the overlap window.
pub async fn live(pool: &PgPool, overlap_secs: i64) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, sealed, retired_at FROM signing_keys
         WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1)
         ORDER BY created_at DESC",
    )
    .bind(overlap_secs as f64)
    .fetch_all(pool)
    .await
}

/// Retires the current key and makes `kid` current.
pub async fn rotate(tx: &mut PgConnection, kid: &str, sealed: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO signing_keys (kid, sealed) VALUES ($1, $2)")
        .bind(kid)
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map(|_| ())
}

/// Records that the session `jti` was ended, and forgets sessions that have expired.
pub async fn revoke_session(
    conn: &mut PgConnection,
    jti: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO revoked_sessions (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}
