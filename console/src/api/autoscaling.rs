//! Autoscaling: the policy (tenant admins write it), its 7-day preview, the what-if
//! replay and the decision ledger.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json};
use chrono::{DateTime, Utc};
use platform_core::autoscaling::{Policy, Preview, ReplayPoint, Sample};
use platform_core::platform::autoscaling::{DecisionRecord, StoredPolicy};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::AppScope;
use crate::state::AppState;

/// The application's autoscaling policy.
#[utoipa::path(operation_id = "get_autoscaling", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = StoredPolicy, headers(("ETag" = String, description = "The policy's version"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(state: Data<AppState>, scope: AppScope) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    match state
        .platform
        .autoscaling_policy(&access, &env, &app)
        .await?
    {
        Some(stored) => Ok(ok_with_etag(&stored, stored.version)),
        None => Err(ApiError::not_found(&format!(
            "an autoscaling policy of '{env}/{app}'"
        ))),
    }
}

/// `?force=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceQuery {
    #[serde(default)]
    pub force: bool,
}

/// Sets the application's autoscaling policy (tenant admins). From now on the count is
/// the autoscaler's: it follows the rules, bands and bounds, and a manual scale holds
/// for the policy's cooldown.
#[utoipa::path(operation_id = "set_autoscaling", put, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the policy this change was decided on"),
           ("force" = Option<bool>, Query, description = "Save even when the policy's maximum cannot all be placed (else 422 `infeasible`)")),
    request_body = Policy,
    responses((status = 200, body = StoredPolicy, headers(("ETag" = String, description = "The policy's new version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set(
    state: Data<AppState>,
    scope: AppScope,
    if_match: IfMatch,
    query: ApiQuery<ForceQuery>,
    body: ApiJson<Policy>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let stored = state
        .platform
        .set_autoscaling_policy(&access, &env, &app, body.0, if_match.0, query.0.force)
        .await?;
    Ok(ok_with_etag(&stored, stored.version))
}

/// Removes the policy; the count stays where the autoscaler left it.
#[utoipa::path(operation_id = "delete_autoscaling", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the policy this removal was decided on")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: Data<AppState>,
    scope: AppScope,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    state
        .platform
        .delete_autoscaling_policy(&access, &env, &app, if_match.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What to preview: a draft (none: the stored policy), from an instant (none: now).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[serde(default)]
    pub policy: Option<Policy>,
    #[serde(default)]
    pub from: Option<DateTime<Utc>>,
}

/// The bands and the min/max envelope for the next 7 days at 15-minute resolution,
/// with conflicts, daylight-saving changes and quota shortfalls flagged. A draft can be
/// previewed before it is saved (and may hold what saving refuses, to show it).
#[utoipa::path(operation_id = "preview_autoscaling", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/preview", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview(
    state: Data<AppState>,
    scope: AppScope,
    body: ApiJson<PreviewRequest>,
) -> Result<Json<Preview>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let PreviewRequest { policy, from } = body.0;
    Ok(Json(
        state
            .platform
            .autoscaling_preview(&access, &env, &app, policy, from)
            .await?,
    ))
}

/// A metric series to replay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIfRequest {
    /// A draft; none: the stored policy.
    #[serde(default)]
    pub policy: Option<Policy>,
    /// The count at the first sample.
    #[schema(maximum = 100)]
    pub start: u32,
    /// In time order, at most 10,000.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub samples: Vec<Sample>,
    /// The series as CSV instead (`at,value[,value...]` per line, RFC 3339 instants),
    /// e.g. an export of yesterday's requests per second. Given, it replaces `samples`.
    #[serde(default)]
    pub csv: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhatIf {
    pub points: Vec<ReplayPoint>,
}

/// Replays a metric series (e.g. yesterday's requests per second) through a draft or
/// the stored policy: the instance count it would have produced, with the reason at
/// each point. Every instance counts as ready the moment it is asked for.
#[utoipa::path(operation_id = "what_if_autoscaling", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/what-if", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    request_body = WhatIfRequest,
    responses((status = 200, body = WhatIf), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn what_if(
    state: Data<AppState>,
    scope: AppScope,
    body: ApiJson<WhatIfRequest>,
) -> Result<Json<WhatIf>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let WhatIfRequest {
        policy,
        start,
        samples,
        csv,
    } = body.0;
    let samples = match csv {
        Some(text) => platform_core::autoscaling::preview::parse_csv(&text)
            .map_err(platform_core::CoreError::from)?,
        None => samples,
    };
    let points = state
        .platform
        .autoscaling_what_if(&access, &env, &app, policy, start, &samples)
        .await?;
    Ok(Json(WhatIf { points }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionsQuery {
    /// Only rows older than this id (the last `id` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Only decisions that changed the count.
    #[serde(default)]
    pub applied: bool,
    /// At most this many (1 to 500, 50 when absent).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The decision ledger, newest first: every evaluation that changed the count or was
/// held from changing it, with its inputs, each rule's recommendation and every clamp
/// in order.
#[utoipa::path(operation_id = "autoscaling_decisions", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/decisions", tag = "autoscaling",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"), DecisionsQuery),
    responses((status = 200, body = Items<DecisionRecord>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decisions(
    state: Data<AppState>,
    scope: AppScope,
    query: ApiQuery<DecisionsQuery>,
) -> Result<Json<Items<DecisionRecord>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let query = query.0;
    if query.before.is_some_and(|b| b < 1) {
        return Err(ApiError::field("before", "must be at least 1"));
    }
    Ok(Json(Items::new(
        state
            .platform
            .autoscaling_decisions(
                &access,
                &env,
                &app,
                query.before,
                query.applied,
                query.limit.unwrap_or(50),
            )
            .await?,
    )))
}
