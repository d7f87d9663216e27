//! Domain bundles installed into environments, and the bundles worker's claims.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where an installation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "bundle_state", rename_all = "snake_case")]
pub enum BundleState {
    /// Being brought to its version (a first install or an upgrade).
    Installing,
    Ready,
    /// Everything it installed is being removed.
    Uninstalling,
    Failed,
}

impl std::fmt::Display for BundleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Installing => "installing",
            Self::Ready => "ready",
            Self::Uninstalling => "uninstalling",
            Self::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstallationRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub environment_id: Uuid,
    pub bundle: String,
    pub version: String,
    pub previous_version: Option<String>,
    pub state: BundleState,
    pub message: Option<String>,
    pub installed_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, environment_id, bundle, version, previous_version, state, message, installed_by, created_at, updated_at";

/// Adds an installation, or moves an existing one (same environment and bundle) to
/// another version.
pub async fn upsert(conn: &mut PgConnection, row: &InstallationRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bundle_installations (id, tenant_id, environment_id, bundle, version, previous_version, state, message, installed_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8)
         ON CONFLICT (environment_id, bundle) DO UPDATE SET
             version = EXCLUDED.version, previous_version = EXCLUDED.previous_version,
             state = EXCLUDED.state, message = NULL, installed_by = EXCLUDED.installed_by,
             claimed_until = NULL, updated_at = now()",
    )
    .bind(row.id)
    .bind(row.tenant_id)
    .bind(row.environment_id)
    .bind(&row.bundle)
    .bind(&row.version)
    .bind(&row.previous_version)
    .bind(row.state)
    .bind(row.installed_by)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn installation<'e>(
    ex: impl PgExecutor<'e>,
    environment_id: Uuid,
    bundle: &str,
) -> Result<Option<InstallationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bundle_installations WHERE environment_id = $1 AND bundle = $2"
    ))
    .bind(environment_id)
    .bind(bundle)
    .fetch_optional(ex)
    .await
}

/// A tenant's installations, by environment and bundle.
pub async fn installations<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<Vec<InstallationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bundle_installations WHERE tenant_id = $1 ORDER BY environment_id, bundle"
    ))
    .bind(tenant_id)
    .fetch_all(ex)
    .await
}

/// Installations with work to do that no control plane holds, claimed for `lease`.
pub async fn claim_pending<'e>(
    ex: impl PgExecutor<'e>,
    lease: std::time::Duration,
) -> Result<Vec<InstallationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE bundle_installations SET claimed_until = now() + $1
         WHERE id IN (SELECT id FROM bundle_installations
                      WHERE state IN ('installing', 'uninstalling')
                        AND (claimed_until IS NULL OR claimed_until < now())
                      ORDER BY updated_at LIMIT 20 FOR UPDATE SKIP LOCKED)
         RETURNING {COLUMNS}"
    ))
    .bind(lease)
    .fetch_all(ex)
    .await
}

/// Records a pass's outcome and lets the installation go (for the next pass); only if
/// it is still what the pass worked on (`pass`: the row as claimed): a request made
/// meanwhile (another version, an uninstall) is not overwritten.
pub async fn record_pass<'e>(
    ex: impl PgExecutor<'e>,
    pass: &InstallationRow,
    state: BundleState,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE bundle_installations SET state = $2, message = $3, claimed_until = NULL,
             previous_version = CASE WHEN $2 = 'ready'::bundle_state THEN NULL ELSE previous_version END,
             updated_at = CASE WHEN state = $2 AND message IS NOT DISTINCT FROM $3 THEN updated_at ELSE now() END
         WHERE id = $1 AND version = $4 AND state = $5",
    )
    .bind(pass.id)
    .bind(state)
    .bind(message)
    .bind(&pass.version)
    .bind(pass.state)
    .execute(ex)
    .await
    .map(|_| ())
}

pub async fn set_uninstalling(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE bundle_installations SET state = 'uninstalling', message = NULL, claimed_until = NULL, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn delete<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM bundle_installations WHERE id = $1")
        .bind(id)
        .execute(ex)
        .await
        .map(|_| ())
}
