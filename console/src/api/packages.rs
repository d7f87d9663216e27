//! Package archives: upload (the raw archive as the body) and list.

use actix_web::web::{Bytes, Data, Json, Query};
use actix_web::{HttpResponse, http::StatusCode};
use platform_core::model::Package;
use serde::Deserialize;
use utoipa::IntoParams;

use super::Items;
use crate::error::{ApiError, ErrorBody};
use crate::scope::TenantScope;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// A name to recognise the archive by (e.g. its file name).
    pub filename: Option<String>,
}

/// Uploads a tar or tar.gz archive. The answer's `digest` is what a spec's `package`
/// names. Uploading the same bytes again returns the same package.
#[utoipa::path(operation_id = "upload_package", post, path = "/api/v1/tenants/{tenant}/packages", tag = "packages",
    params(("tenant" = String, Path, description = "Tenant slug"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The archive (tar or tar.gz); any media type is read as bytes"),
    responses((status = 201, body = Package), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    state: Data<AppState>,
    scope: TenantScope,
    query: Query<UploadQuery>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let filename = query.filename.as_deref().unwrap_or("package.tar.gz");
    let package = state
        .platform
        .upload_package(&access, filename, &body)
        .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(package))
}

#[utoipa::path(operation_id = "list_packages", get, path = "/api/v1/tenants/{tenant}/packages", tag = "packages",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = Items<Package>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: Data<AppState>,
    scope: TenantScope,
) -> Result<Json<Items<Package>>, ApiError> {
    let access = scope.access;
    Ok(Json(Items::new(state.platform.packages(&access).await?)))
}
