//! Tenants as their members see them: environments, members, audit.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::model::{
    AuditEntry, AuditFilter, Environment, Member, Role, Tenant, TenantMembership,
};
use platform_core::names::{EnvName, parse_description};
use platform_core::platform::NewEnvironment;
use platform_core::quota::{Quota, Usage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiQuery, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{TenantScope, UsernameSegment};
use crate::session::ApiAuth;
use crate::state::AppState;

/// The tenants the caller belongs to.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = Items<TenantMembership>), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn my_tenants(auth: ApiAuth) -> Json<Items<TenantMembership>> {
    Json(Items::new(auth.0.principal.memberships().to_vec()))
}

/// One tenant the caller belongs to.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_tenant(
    _state: Data<AppState>,
    scope: TenantScope,
) -> Result<Json<Tenant>, ApiError> {
    let access = scope.access;
    Ok(Json(access.tenant().clone()))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/environments", tag = "environments",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = Items<Environment>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_environments(
    state: Data<AppState>,
    scope: TenantScope,
) -> Result<Json<Items<Environment>>, ApiError> {
    let access = scope.access;
    Ok(Json(Items::new(
        state.platform.environments(&access).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironment {
    #[schema(value_type = platform_core::names::EnvName)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = platform_core::names::Description)]
    pub description: String,
    /// Changes in a protected environment need the ops or tenant_admin role.
    #[serde(default)]
    pub protected: bool,
    /// The runtime that runs its applications (`local`, or a Kubernetes cluster's
    /// name as configured on the control plane). Default `local`.
    #[serde(default)]
    pub runtime: Option<String>,
}

/// Adds an environment (tenant admins).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/environments", tag = "environments",
    params(("tenant" = String, Path, description = "Tenant slug")),
    request_body = CreateEnvironment,
    responses((status = 201, body = Environment), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_environment(
    state: Data<AppState>,
    scope: TenantScope,
    body: ApiJson<CreateEnvironment>,
) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let input = NewEnvironment {
        name: EnvName::parse(&body.0.name)?,
        description: parse_description(&body.0.description)?,
        protected: body.0.protected,
        runtime: body.0.runtime.clone(),
    };
    let env = state.platform.create_environment(&access, input).await?;
    Ok(HttpResponse::Created().json(env))
}

#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/members", tag = "members",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = Items<Member>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_members(
    state: Data<AppState>,
    scope: TenantScope,
) -> Result<Json<Items<Member>>, ApiError> {
    let access = scope.access;
    Ok(Json(Items::new(state.platform.members(&access).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    pub role: Role,
}

/// Adds a user to the tenant or changes their role (tenant admins).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/members/{username}", tag = "members",
    params(("tenant" = String, Path, description = "Tenant slug"), ("username" = String, Path, description = "The user"), ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was decided on")),
    request_body = SetMember,
    responses((status = 200, body = Member, headers(("ETag" = String, description = "The membership's version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_member(
    state: Data<AppState>,
    scope: TenantScope,
    segment: Path<UsernameSegment>,
    if_match: IfMatch,
    body: ApiJson<SetMember>,
) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let username = segment.into_inner().username;
    let member = state
        .platform
        .set_member_role(&access, &username, body.0.role, if_match.0)
        .await?;
    Ok(ok_with_etag(&member, member.version))
}

/// Removes a member (tenant admins). The last tenant admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/members/{username}", tag = "members",
    params(("tenant" = String, Path, description = "Tenant slug"), ("username" = String, Path, description = "The user"), ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was decided on")),
    responses((status = 204, description = "Removed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_member(
    state: Data<AppState>,
    scope: TenantScope,
    segment: Path<UsernameSegment>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let username = segment.into_inner().username;
    state
        .platform
        .remove_member(&access, &username, if_match.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The tenant's audit log, newest first (ops and tenant admins).
#[utoipa::path(operation_id = "tenant_audit", get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path, description = "Tenant slug"), AuditFilter),
    responses((status = 200, body = Items<AuditEntry>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit(
    state: Data<AppState>,
    scope: TenantScope,
    filter: ApiQuery<AuditFilter>,
) -> Result<Json<Items<AuditEntry>>, ApiError> {
    let access = scope.access;
    Ok(Json(Items::new(
        state.platform.tenant_audit(&access, &filter.0).await?,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaStatus {
    pub quota: Quota,
    pub usage: Usage,
    /// The tenant's version, for `If-Match` when an administrator sets the quota.
    pub version: i64,
}

/// The tenant's quota and what its running applications ask for.
#[utoipa::path(operation_id = "tenant_quota", get, path = "/api/v1/tenants/{tenant}/quota", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant slug")),
    responses((status = 200, body = QuotaStatus, headers(("ETag" = String, description = "The tenant's version"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn quota(state: Data<AppState>, scope: TenantScope) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let (quota, usage, version) = state.platform.quota(&access).await?;
    Ok(ok_with_etag(
        &QuotaStatus {
            quota,
            usage,
            version,
        },
        version,
    ))
}
