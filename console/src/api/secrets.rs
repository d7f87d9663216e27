//! Application secrets: write-only. Names, versions and authors can be read; values
//! only go in.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::model::SecretInfo;
use platform_core::sealing::SecretValue;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiJson, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{AppScope, NameSegment};
use crate::state::AppState;

/// A secret's new value. It is never returned by any call.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// At most 32 KiB, no NUL.
    pub value: String,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecret").finish_non_exhaustive()
    }
}

/// The application's secrets: names and versions, never values.
#[utoipa::path(operation_id = "list_secrets", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/secrets", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<SecretInfo>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<SecretInfo>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.secrets(&access, &env, &app).await?,
    )))
}

/// Sets a secret. The application gets a new revision that runs with it, rolled out
/// like any change; the value is never returned.
#[utoipa::path(operation_id = "set_secret", put, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/secrets/{name}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
           ("name" = String, Path, description = "The environment variable it becomes"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the secret's version this change was decided on")),
    request_body = SetSecret,
    responses((status = 200, body = SecretInfo, headers(("ETag" = String, description = "The secret's new version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    state: Data<AppState>,
    scope: AppScope,
    segment: Path<NameSegment>,
    if_match: IfMatch,
    body: ApiJson<SetSecret>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let name = segment.into_inner().name;
    let value = SecretValue::new(body.0.value);
    let info = state
        .platform
        .set_secret(&access, &env, &app, &name, value, if_match.0)
        .await?;
    Ok(ok_with_etag(&info, i64::from(info.version)))
}

/// Removes a secret; the application gets a new revision without it.
#[utoipa::path(operation_id = "delete_secret", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/secrets/{name}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
           ("name" = String, Path, description = "The secret's name"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the secret's version this removal was decided on")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: Data<AppState>,
    scope: AppScope,
    segment: Path<NameSegment>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let name = segment.into_inner().name;
    state
        .platform
        .delete_secret(&access, &env, &app, &name, if_match.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
