//! Domain bundles: what the platform offers, what a tenant installed, install and
//! upgrade (with the per-component diff, or only the diff), uninstall.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::platform::bundles::{
    BundleChange, BundleInfo, BundleInstallation, InstallBundle,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiJson, Items};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{BundleSegment, EnvScope, TenantScope};
use crate::session::ApiAuth;
use crate::state::AppState;

/// The bundles this platform offers, each with its versions.
#[utoipa::path(operation_id = "list_bundles", get, path = "/api/v1/bundles", tag = "bundles",
    responses((status = 200, body = Items<BundleInfo>)),
    security(("bearer" = [])))]
pub async fn available(state: Data<AppState>, _auth: ApiAuth) -> Json<Items<BundleInfo>> {
    Json(Items::new(state.platform.available_bundles()))
}

#[utoipa::path(operation_id = "list_installed_bundles", get, path = "/api/v1/tenants/{tenant}/bundles", tag = "bundles",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = Items<BundleInstallation>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn installed(
    state: Data<AppState>,
    scope: TenantScope,
) -> Result<Json<Items<BundleInstallation>>, ApiError> {
    Ok(Json(Items::new(
        state.platform.bundles(&scope.access).await?,
    )))
}

/// A bundle to install into an environment, or the version to move it to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallBody {
    pub bundle: String,
    /// The latest when absent.
    pub version: Option<String>,
    pub environment: String,
    /// Only answer what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// Installs a bundle into an environment, or moves the one installed there to another
/// version. Answers with what changes, component by component (202; 200 for a dry
/// run, which changes nothing); the environment converges afterwards, changed
/// applications through the environment's release policy.
#[utoipa::path(operation_id = "install_bundle", post, path = "/api/v1/tenants/{tenant}/bundles", tag = "bundles",
    params(("tenant" = String, Path, description = "Tenant slug")),
    request_body = InstallBody,
    responses((status = 200, description = "A dry run: what would change", body = BundleChange), (status = 202, body = BundleChange),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn install(
    state: Data<AppState>,
    scope: TenantScope,
    body: ApiJson<InstallBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let dry_run = body.dry_run;
    let change = state
        .platform
        .install_bundle(
            &scope.access,
            InstallBundle {
                bundle: body.bundle,
                version: body.version,
                environment: body.environment,
                dry_run,
            },
        )
        .await?;
    Ok(if dry_run {
        HttpResponse::Ok().json(change)
    } else {
        HttpResponse::Accepted().json(change)
    })
}

#[utoipa::path(operation_id = "get_installed_bundle", get, path = "/api/v1/tenants/{tenant}/environments/{env}/bundles/{bundle}", tag = "bundles",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("bundle" = String, Path, description = "The bundle's name")),
    responses((status = 200, body = BundleInstallation), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<BundleSegment>,
) -> Result<Json<BundleInstallation>, ApiError> {
    Ok(Json(
        state
            .platform
            .bundle(&scope.access, &scope.env, &segment.bundle)
            .await?,
    ))
}

/// Uninstalls a bundle: what it installed is removed afterwards, bindings first (202).
#[utoipa::path(operation_id = "uninstall_bundle", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/bundles/{bundle}", tag = "bundles",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("bundle" = String, Path, description = "The bundle's name")),
    responses((status = 202, body = BundleInstallation), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn uninstall(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<BundleSegment>,
) -> Result<HttpResponse, ApiError> {
    let installation = state
        .platform
        .uninstall_bundle(&scope.access, &scope.env, &segment.bundle)
        .await?;
    Ok(HttpResponse::Accepted().json(installation))
}
