//! Releases: an application's releases and their timelines, the actions ops take on
//! them, rollbacks to an earlier revision, environments' release policies and the ops
//! queue across tenants.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::platform::releases::{Release, ReleaseDetail, StoredReleasePolicy};
use platform_core::releases::gate::{Action, State};
use platform_core::releases::policy::{ReleasePolicy, Strategy};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{AppScope, TenantScope};
use crate::session::ApiAuth;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ReleasePath {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct ReleaseActionPath {
    pub id: String,
    pub action: String,
}

#[derive(Debug, Deserialize)]
pub struct EnvPath {
    pub env: String,
}

/// A release id in a path: a number, or no such release.
fn release_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(&format!("release '{text}'")))
}

/// The application's releases, newest first (at most 200).
#[utoipa::path(operation_id = "list_releases", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/releases", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<Release>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<Release>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.releases(&access, &env, &app).await?,
    )))
}

/// A release back to an earlier revision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelease {
    /// The earlier revision whose spec and secrets to run again (as a new revision).
    #[schema(minimum = 1)]
    pub revision: i32,
    /// How to move (none: the environment's default strategy).
    #[serde(default)]
    pub strategy: Option<Strategy>,
}

/// Releases an earlier revision again (a one-click rollback): its spec and secrets
/// become a new revision, released like any other, approvals and freezes included
/// (unless the environment allows fast rollbacks).
#[utoipa::path(operation_id = "create_release", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/releases", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    request_body = NewRelease,
    responses((status = 201, body = ReleaseDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: Data<AppState>,
    scope: AppScope,
    body: ApiJson<NewRelease>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let NewRelease { revision, strategy } = body.0;
    if let Some(s) = &strategy {
        s.check()?;
    }
    let detail = state
        .platform
        .roll_back_to(&access, &env, &app, revision, strategy)
        .await?;
    Ok(HttpResponse::Created().json(detail))
}

/// One release with its timeline and the actions the caller may take.
#[utoipa::path(operation_id = "get_release", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/releases/{id}", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"), ("id" = i64, Path, description = "Release")),
    responses((status = 200, body = ReleaseDetail, headers(("ETag" = String, description = "The release's version"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: Data<AppState>,
    scope: AppScope,
    path: Path<ReleasePath>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let id = release_id(&path.id)?;
    let detail = state.platform.release(&access, &env, &app, id).await?;
    let version = detail.release.version;
    Ok(ok_with_etag(&detail, version))
}

/// Why an action is taken, kept on the timeline and in the audit log.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub reason: Option<String>,
}

/// Acts on a release: `approve`, `reject`, `pause`, `resume`, `continue`, `abort` or
/// `rollback`. The environment's approval policy decides who may: a developer's
/// approval is refused (403), as is the requester's own (separation of duties) unless
/// the policy allows it; an expired request cannot be approved (409).
#[utoipa::path(operation_id = "act_on_release", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/releases/{id}/{action}", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"), ("id" = i64, Path, description = "Release"),
           ("action" = Action, Path, description = "What to do")),
    request_body(content = Option<ActionRequest>, description = "Why (optional)"),
    responses((status = 200, body = ReleaseDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn act(
    state: Data<AppState>,
    scope: AppScope,
    path: Path<ReleaseActionPath>,
    body: actix_web::web::Bytes,
) -> Result<Json<ReleaseDetail>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let ReleaseActionPath { id, action } = path.into_inner();
    let id = release_id(&id)?;
    let action = Action::parse(&action)
        .ok_or_else(|| ApiError::not_found(&format!("release action '{action}'")))?;
    // The body is optional: none, or an object with the reason.
    let request: ActionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ActionRequest::default()
    } else {
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::field(field, e.into_inner().to_string())
        })?
    };
    let reason = request.reason;
    Ok(Json(
        state
            .platform
            .act_on_release(&access, &env, &app, id, action, reason)
            .await?,
    ))
}

/// The environment's release policy: approvals, freeze windows, the default strategy.
#[utoipa::path(operation_id = "get_release_policy", get, path = "/api/v1/tenants/{tenant}/environments/{env}/release-policy", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment")),
    responses((status = 200, body = StoredReleasePolicy, headers(("ETag" = String, description = "The policy's version (0: the default)"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_policy(
    state: Data<AppState>,
    scope: TenantScope,
    path: Path<EnvPath>,
) -> Result<HttpResponse, ApiError> {
    let stored = state
        .platform
        .release_policy(&scope.access, &path.env)
        .await?;
    Ok(ok_with_etag(&stored, stored.version))
}

/// Sets the environment's release policy (tenant admins).
#[utoipa::path(operation_id = "set_release_policy", put, path = "/api/v1/tenants/{tenant}/environments/{env}/release-policy", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the policy this change was decided on")),
    request_body = ReleasePolicy,
    responses((status = 200, body = StoredReleasePolicy, headers(("ETag" = String, description = "The policy's new version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_policy(
    state: Data<AppState>,
    scope: TenantScope,
    path: Path<EnvPath>,
    if_match: IfMatch,
    body: ApiJson<ReleasePolicy>,
) -> Result<HttpResponse, ApiError> {
    let stored = state
        .platform
        .set_release_policy(&scope.access, &path.env, body.0, if_match.0)
        .await?;
    Ok(ok_with_etag(&stored, stored.version))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Only releases in this state (e.g. `pending_approval`).
    pub state: Option<State>,
}

/// Releases across every tenant the caller belongs to: pending approvals first, then
/// newest first (at most 200). The ops queue.
#[utoipa::path(operation_id = "release_queue", get, path = "/api/v1/releases", tag = "releases",
    params(QueueQuery),
    responses((status = 200, body = Items<Release>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn queue(
    state: Data<AppState>,
    auth: ApiAuth,
    query: ApiQuery<QueueQuery>,
) -> Result<Json<Items<Release>>, ApiError> {
    let states: Vec<State> = query.0.state.into_iter().collect();
    Ok(Json(Items::new(
        state
            .platform
            .release_queue(&auth.0.principal, &states)
            .await?,
    )))
}

/// One release by its number, in whichever of the caller's tenants it is: what a
/// client that knows only the number (the `paas release` command) starts from.
#[utoipa::path(operation_id = "get_release_by_id", get, path = "/api/v1/releases/{id}", tag = "releases",
    params(("id" = i64, Path, description = "Release")),
    responses((status = 200, body = ReleaseDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn by_id(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<ReleasePath>,
) -> Result<Json<ReleaseDetail>, ApiError> {
    let id = release_id(&path.id)?;
    Ok(Json(
        state.platform.release_by_id(&auth.0.principal, id).await?,
    ))
}

/// Where a promotion comes from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The environment whose running revision to promote (e.g. `test`).
    #[schema(min_length = 1, max_length = 63)]
    pub from: String,
}

/// Promotes the revision the application of the same name runs in another environment
/// into this one: same artifact and spec, this environment's environment variables,
/// replica count and secrets kept. Released by this environment's policy.
#[utoipa::path(operation_id = "promote_application", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/promote", tag = "releases",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "The environment promoted into"), ("app" = String, Path, description = "Application")),
    request_body = PromoteRequest,
    responses((status = 201, body = ReleaseDetail), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn promote(
    state: Data<AppState>,
    scope: AppScope,
    body: ApiJson<PromoteRequest>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let detail = state
        .platform
        .promote(&access, &env, &app, &body.0.from)
        .await?;
    Ok(HttpResponse::Created().json(detail))
}

/// Why a freeze is overridden.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// Read later by everyone the release concerns: 10 to 1000 characters.
    #[schema(min_length = 10, max_length = 1000)]
    pub reason: String,
}

/// An emergency release: a platform administrator starts an approved release that a
/// freeze window holds. The reason goes on the release's timeline and into the
/// tenant's audit log.
#[utoipa::path(operation_id = "override_freeze", post, path = "/api/v1/admin/releases/{id}/override-freeze", tag = "admin",
    params(("id" = i64, Path, description = "Release")),
    request_body = OverrideRequest,
    responses((status = 200, body = Release), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn override_freeze(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<ReleasePath>,
    body: ApiJson<OverrideRequest>,
) -> Result<Json<Release>, ApiError> {
    let id = release_id(&path.id)?;
    Ok(Json(
        state
            .platform
            .override_freeze(&auth.0.principal, id, &body.0.reason)
            .await?,
    ))
}
