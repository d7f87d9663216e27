//! Platform administration: tenants, users, signing keys, the platform audit log.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::drain::DrainPlan;
use platform_core::model::{AuditEntry, AuditFilter, Tenant, User};
use platform_core::names::{DisplayName, Password, TenantSlug, Username};
use platform_core::platform::{NewTenant, NewUser, RuntimeOverview};
use platform_core::quota::Quota;
use platform_core::runtime::NodeLoss;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiQuery, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::session::ApiAuth;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin",
    responses((status = 200, body = Items<Tenant>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tenants(
    state: Data<AppState>,
    auth: ApiAuth,
) -> Result<Json<Items<Tenant>>, ApiError> {
    Ok(Json(Items::new(
        state.platform.all_tenants(&auth.0.principal).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(value_type = platform_core::names::TenantSlug)]
    pub slug: String,
    #[schema(value_type = platform_core::names::DisplayName)]
    pub display_name: String,
    /// An existing user to make the tenant's first admin.
    #[schema(value_type = Option<platform_core::names::Username>)]
    pub admin: Option<String>,
}

/// Creates a tenant with the `dev`, `test` and `prod` environments.
#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin",
    request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    state: Data<AppState>,
    auth: ApiAuth,
    body: ApiJson<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let input = NewTenant {
        slug: TenantSlug::parse(&body.slug)?,
        display_name: DisplayName::parse(&body.display_name)?,
        // Absent or null is no admin; an empty name is refused like any invalid one.
        admin: body
            .admin
            .as_deref()
            .map(Username::parse)
            .transpose()
            .map_err(|e| e.for_field("admin"))?,
    };
    let tenant = state
        .platform
        .create_tenant(&auth.0.principal, input)
        .await?;
    Ok(HttpResponse::Created().json(tenant))
}

#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin",
    responses((status = 200, body = Items<User>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_users(
    state: Data<AppState>,
    auth: ApiAuth,
) -> Result<Json<Items<User>>, ApiError> {
    Ok(Json(Items::new(
        state.platform.users(&auth.0.principal).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(value_type = platform_core::names::Username)]
    pub username: String,
    #[schema(value_type = platform_core::names::DisplayName)]
    pub display_name: String,
    /// 10 to 1024 characters.
    #[schema(schema_with = platform_core::names::Password::new_schema)]
    pub password: String,
    #[serde(default)]
    pub platform_admin: bool,
}

#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin",
    request_body = CreateUser,
    responses((status = 201, body = User), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_user(
    state: Data<AppState>,
    auth: ApiAuth,
    body: ApiJson<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let input = NewUser {
        username: Username::parse(&body.username)?,
        display_name: DisplayName::parse(&body.display_name)?,
        password: Password::parse_new(&body.password)?,
        platform_admin: body.platform_admin,
    };
    let user = state.platform.create_user(&auth.0.principal, input).await?;
    Ok(HttpResponse::Created().json(user))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub disabled: bool,
}

/// Disables or re-enables a user; a disabled user's sessions stop working at once.
#[utoipa::path(patch, path = "/api/v1/admin/users/{username}", tag = "admin",
    params(("username" = String, Path, description = "The user"), ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was decided on")),
    request_body = UpdateUser,
    responses((status = 200, body = User, headers(("ETag" = String, description = "The user's version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_user(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<String>,
    if_match: IfMatch,
    body: ApiJson<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    let user = state
        .platform
        .set_user_disabled(&auth.0.principal, &path, body.0.disabled, if_match.0)
        .await?;
    Ok(ok_with_etag(&user, user.version))
}

/// The platform-level audit log: logins, users, tenants, signing keys.
#[utoipa::path(operation_id = "platform_audit", get, path = "/api/v1/admin/audit", tag = "admin",
    params(AuditFilter),
    responses((status = 200, body = Items<AuditEntry>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit(
    state: Data<AppState>,
    auth: ApiAuth,
    filter: ApiQuery<AuditFilter>,
) -> Result<Json<Items<AuditEntry>>, ApiError> {
    Ok(Json(Items::new(
        state
            .platform
            .platform_audit(&auth.0.principal, &filter.0)
            .await?,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    /// The key id new tokens carry.
    pub kid: String,
}

/// Makes a new signing key current; tokens signed with the previous key keep working
/// for the configured overlap.
#[utoipa::path(post, path = "/api/v1/admin/signing-keys/rotate", tag = "admin",
    responses((status = 200, body = RotatedKey), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_keys(
    state: Data<AppState>,
    auth: ApiAuth,
) -> Result<Json<RotatedKey>, ApiError> {
    Ok(Json(RotatedKey {
        kid: state.platform.rotate_signing_key(&auth.0.principal).await?,
    }))
}

/// Sets a tenant's quota; omitted or null limits are unlimited.
#[utoipa::path(operation_id = "set_tenant_quota", put, path = "/api/v1/admin/tenants/{tenant}/quota", tag = "admin",
    params(("tenant" = String, Path, description = "Tenant slug"), ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was decided on")),
    request_body = Quota,
    responses((status = 200, body = Quota, headers(("ETag" = String, description = "The tenant's new version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_quota(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<String>,
    if_match: IfMatch,
    body: ApiJson<Quota>,
) -> Result<HttpResponse, ApiError> {
    let (quota, version) = state
        .platform
        .set_quota(&auth.0.principal, &path, body.0, if_match.0)
        .await?;
    Ok(ok_with_etag(&quota, version))
}

/// The runtimes this control plane drives and their nodes (labels, capacity, health).
#[utoipa::path(operation_id = "list_runtimes", get, path = "/api/v1/admin/runtimes", tag = "admin",
    responses((status = 200, body = Items<RuntimeOverview>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn runtimes(
    state: Data<AppState>,
    auth: ApiAuth,
) -> Result<Json<Items<RuntimeOverview>>, ApiError> {
    Ok(Json(Items::new(
        state.platform.runtime_overview(&auth.0.principal).await?,
    )))
}

/// Cordons a node (`cordon`: it takes no new instances, what runs there stays) or
/// uncordons it (`uncordon`). Platform administrators only.
#[utoipa::path(operation_id = "cordon_node", post, path = "/api/v1/admin/runtimes/{runtime}/nodes/{node}/{action}", tag = "admin",
    params(("runtime" = String, Path, description = "The runtime's name, e.g. `local`"), ("node" = String, Path, description = "The node's name"),
        ("action" = String, Path, description = "`cordon` or `uncordon`")),
    responses((status = 204, description = "Done"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cordon_node(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (runtime, node, action) = path.into_inner();
    let cordoned = match action.as_str() {
        "cordon" => true,
        "uncordon" => false,
        _ => {
            return Err(ApiError::from(platform_core::CoreError::not_found(
                "action", action,
            )));
        }
    };
    state
        .platform
        .set_node_cordoned(&auth.0.principal, &runtime, &node, cordoned)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What a drain request asks.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Only say whether the drain can finish and how each application would move.
    #[serde(default)]
    pub dry_run: bool,
    /// Drain even when some application cannot move (its instances stay on the node
    /// and say why).
    #[serde(default)]
    pub force: bool,
}

/// Drains a node: it is cordoned and its instances move elsewhere one at a time per
/// application, each replacement started before its instance stops unless the
/// application's disruption budget lets it stop first. Refused with 422 `infeasible`
/// and the reason per application when the drain could not finish (unless `force`);
/// `dry_run` only answers the plan. Uncordoning ends a drain. Platform administrators
/// only.
#[utoipa::path(operation_id = "drain_node", post, path = "/api/v1/admin/runtimes/{runtime}/nodes/{node}/drain", tag = "admin",
    params(("runtime" = String, Path, description = "The runtime's name, e.g. `local`"), ("node" = String, Path, description = "The node's name")),
    request_body = DrainRequest,
    responses((status = 200, body = DrainPlan), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn drain_node(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<(String, String)>,
    body: ApiJson<DrainRequest>,
) -> Result<Json<DrainPlan>, ApiError> {
    let (runtime, node) = path.into_inner();
    Ok(Json(
        state
            .platform
            .drain_node(
                &auth.0.principal,
                &runtime,
                &node,
                body.0.dry_run,
                body.0.force,
            )
            .await?,
    ))
}

/// Cordons or uncordons a node of whichever runtime reports it (409 when several
/// runtimes have a node of that name: name the runtime then).
#[utoipa::path(operation_id = "cordon_node_by_name", post, path = "/api/v1/admin/nodes/{node}/{action}", tag = "admin",
    params(("node" = String, Path, description = "The node's name"),
        ("action" = String, Path, description = "`cordon` or `uncordon`")),
    responses((status = 204, description = "Done"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cordon_node_by_name(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (node, action) = path.into_inner();
    let runtime = state
        .platform
        .runtime_of_node(&auth.0.principal, &node)
        .await?;
    cordon_node(state, auth, Path::from((runtime, node, action))).await
}

/// Drains a node of whichever runtime reports it (see `drain_node`).
#[utoipa::path(operation_id = "drain_node_by_name", post, path = "/api/v1/admin/nodes/{node}/drain", tag = "admin",
    params(("node" = String, Path, description = "The node's name")),
    request_body = DrainRequest,
    responses((status = 200, body = DrainPlan), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn drain_node_by_name(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<String>,
    body: ApiJson<DrainRequest>,
) -> Result<Json<DrainPlan>, ApiError> {
    let node = path.into_inner();
    let runtime = state
        .platform
        .runtime_of_node(&auth.0.principal, &node)
        .await?;
    drain_node(state, auth, Path::from((runtime, node)), body).await
}

/// Confirms that a silent node is gone for good: its instances start elsewhere, and
/// stateful ones without the data they left on it, once its lease has surely run out.
/// Refused (409) while the node still reports.
#[utoipa::path(operation_id = "confirm_node_lost", post, path = "/api/v1/admin/runtimes/{runtime}/nodes/{node}/confirm-lost", tag = "admin",
    params(("runtime" = String, Path, description = "The runtime's name, e.g. `local`"), ("node" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeLoss), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn confirm_node_lost(
    state: Data<AppState>,
    auth: ApiAuth,
    path: Path<(String, String)>,
) -> Result<Json<NodeLoss>, ApiError> {
    let (runtime, node) = path.into_inner();
    Ok(Json(
        state
            .platform
            .confirm_node_lost(&auth.0.principal, &runtime, &node)
            .await?,
    ))
}
