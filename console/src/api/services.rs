//! The service catalog: brokers (platform administrators), the marketplace, and
//! service instances in an environment.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::platform::services::{
    BrokerInfo, CatalogService, NewBinding, NewBroker, NewServiceInstance, ServiceBinding,
    ServiceInstance, ServiceInstanceChange,
};
use platform_core::sealing::SecretValue;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, IfMatch, Items, ok_with_etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{
    ApplicationSegment, BrokerSegment, EnvScope, PlanSegment, ServiceInstanceSegment,
};
use crate::session::ApiAuth;
use crate::state::AppState;

/// A broker to register. Its catalog is fetched and checked before it is stored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBroker {
    /// A DNS label, e.g. `redis`.
    pub name: String,
    /// The broker's base URL, e.g. `http://127.0.0.1:9100`.
    pub url: String,
    /// Basic-auth credentials the platform signs in to the broker with. The password
    /// is never returned.
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegisterBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterBroker")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Registers a broker (platform administrators).
#[utoipa::path(operation_id = "register_broker", post, path = "/api/v1/admin/brokers", tag = "services",
    request_body = RegisterBroker,
    responses((status = 201, body = BrokerInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, description = "A field is invalid, or the broker could not be reached or its catalog is not valid (`broker_unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_broker(
    state: Data<AppState>,
    auth: ApiAuth,
    body: ApiJson<RegisterBroker>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let info = state
        .platform
        .register_broker(
            &auth.0.principal,
            NewBroker {
                name: body.name,
                url: body.url,
                username: body.username,
                password: SecretValue::new(body.password),
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(info))
}

/// The registered brokers, their services and plans (platform administrators).
#[utoipa::path(operation_id = "list_brokers", get, path = "/api/v1/admin/brokers", tag = "services",
    responses((status = 200, body = Items<BrokerInfo>), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_brokers(
    state: Data<AppState>,
    auth: ApiAuth,
) -> Result<Json<Items<BrokerInfo>>, ApiError> {
    Ok(Json(Items::new(
        state.platform.brokers(&auth.0.principal).await?,
    )))
}

#[utoipa::path(operation_id = "get_broker", get, path = "/api/v1/admin/brokers/{broker}", tag = "services",
    params(("broker" = String, Path, description = "The broker's name")),
    responses((status = 200, body = BrokerInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_broker(
    state: Data<AppState>,
    auth: ApiAuth,
    segment: Path<BrokerSegment>,
) -> Result<Json<BrokerInfo>, ApiError> {
    Ok(Json(
        state
            .platform
            .broker(&auth.0.principal, &segment.broker)
            .await?,
    ))
}

/// Fetches the broker's catalog again (after a new release of the broker).
#[utoipa::path(operation_id = "refresh_broker", post, path = "/api/v1/admin/brokers/{broker}/refresh", tag = "services",
    params(("broker" = String, Path, description = "The broker's name")),
    responses((status = 200, body = BrokerInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, description = "The broker could not be reached or its catalog is not valid (`broker_unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn refresh_broker(
    state: Data<AppState>,
    auth: ApiAuth,
    segment: Path<BrokerSegment>,
) -> Result<Json<BrokerInfo>, ApiError> {
    Ok(Json(
        state
            .platform
            .refresh_broker(&auth.0.principal, &segment.broker)
            .await?,
    ))
}

/// Removes a broker that holds no service instance.
#[utoipa::path(operation_id = "delete_broker", delete, path = "/api/v1/admin/brokers/{broker}", tag = "services",
    params(("broker" = String, Path, description = "The broker's name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_broker(
    state: Data<AppState>,
    auth: ApiAuth,
    segment: Path<BrokerSegment>,
) -> Result<HttpResponse, ApiError> {
    state
        .platform
        .delete_broker(&auth.0.principal, &segment.broker)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Which tenants may use a plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanAccess {
    /// Tenant slugs; empty: every tenant.
    pub tenants: Vec<String>,
}

/// Restricts a plan to some tenants, or opens it to all.
#[utoipa::path(operation_id = "set_plan_access", put, path = "/api/v1/admin/brokers/{broker}/plans/{plan}/access", tag = "services",
    params(("broker" = String, Path, description = "The broker's name"), ("plan" = String, Path, description = "The plan's id")),
    request_body = PlanAccess,
    responses((status = 200, body = BrokerInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_plan_access(
    state: Data<AppState>,
    auth: ApiAuth,
    broker: Path<BrokerSegment>,
    plan: Path<PlanSegment>,
    body: ApiJson<PlanAccess>,
) -> Result<Json<BrokerInfo>, ApiError> {
    Ok(Json(
        state
            .platform
            .set_plan_access(
                &auth.0.principal,
                &broker.broker,
                &plan.plan,
                &body.0.tenants,
            )
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CatalogQuery {
    /// Only what this tenant may use.
    pub tenant: Option<String>,
}

/// The marketplace: services with the plans the caller's tenants may use.
#[utoipa::path(operation_id = "list_catalog_services", get, path = "/api/v1/catalog/services", tag = "services",
    params(CatalogQuery),
    responses((status = 200, body = Items<CatalogService>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn catalog(
    state: Data<AppState>,
    auth: ApiAuth,
    query: ApiQuery<CatalogQuery>,
) -> Result<Json<Items<CatalogService>>, ApiError> {
    Ok(Json(Items::new(
        state
            .platform
            .catalog(&auth.0.principal, query.0.tenant.as_deref())
            .await?,
    )))
}

/// A service instance to provision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionBody {
    /// A DNS label, unique in the environment.
    pub name: String,
    /// The service's name in the marketplace.
    pub service: String,
    /// The plan's name.
    pub plan: String,
    /// Checked against the plan's schema.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(operation_id = "list_service_instances", get, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment")),
    responses((status = 200, body = Items<ServiceInstance>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_instances(
    state: Data<AppState>,
    scope: EnvScope,
) -> Result<Json<Items<ServiceInstance>>, ApiError> {
    Ok(Json(Items::new(
        state
            .platform
            .service_instances(&scope.access, &scope.env)
            .await?,
    )))
}

/// Provisions a service instance. It is answered at once (202, state `provisioning`);
/// the broker makes it afterwards, and `last_operation` says how that went.
#[utoipa::path(operation_id = "provision_service_instance", post, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment")),
    request_body = ProvisionBody,
    responses((status = 202, body = ServiceInstance), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn provision(
    state: Data<AppState>,
    scope: EnvScope,
    body: ApiJson<ProvisionBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let instance = state
        .platform
        .provision_service(
            &scope.access,
            &scope.env,
            NewServiceInstance {
                name: body.name,
                service: body.service,
                plan: body.plan,
                parameters: body.parameters,
            },
        )
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((actix_web::http::header::ETAG, super::etag(instance.version)))
        .json(instance))
}

#[utoipa::path(operation_id = "get_service_instance", get, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name")),
    responses((status = 200, body = ServiceInstance, headers(("ETag" = String, description = "The instance's version"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_instance(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
) -> Result<HttpResponse, ApiError> {
    let instance = state
        .platform
        .service_instance(&scope.access, &scope.env, &segment.service_instance)
        .await?;
    Ok(ok_with_etag(&instance, instance.version))
}

/// A change of plan, parameters, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    pub plan: Option<String>,
    /// Checked against the plan's update schema.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Updates a ready instance (202: the broker is asked afterwards).
#[utoipa::path(operation_id = "update_service_instance", patch, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was decided on")),
    request_body = UpdateBody,
    responses((status = 202, body = ServiceInstance), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_instance(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
    if_match: IfMatch,
    body: ApiJson<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let instance = state
        .platform
        .update_service(
            &scope.access,
            &scope.env,
            &segment.service_instance,
            ServiceInstanceChange {
                plan: body.plan,
                parameters: body.parameters,
            },
            if_match.0,
        )
        .await?;
    Ok(HttpResponse::Accepted().json(instance))
}

/// Deprovisions an instance (202: it is gone once the broker confirmed).
#[utoipa::path(operation_id = "deprovision_service_instance", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name"),
           ("If-Match" = Option<String>, Header, description = "The ETag of the version this removal was decided on")),
    responses((status = 202, body = ServiceInstance), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deprovision(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let instance = state
        .platform
        .deprovision_service(
            &scope.access,
            &scope.env,
            &segment.service_instance,
            if_match.0,
        )
        .await?;
    Ok(HttpResponse::Accepted().json(instance))
}

#[utoipa::path(operation_id = "list_service_bindings", get, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name")),
    responses((status = 200, body = Items<ServiceBinding>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_bindings(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
) -> Result<Json<Items<ServiceBinding>>, ApiError> {
    Ok(Json(Items::new(
        state
            .platform
            .service_bindings(&scope.access, &scope.env, &segment.service_instance)
            .await?,
    )))
}

/// A binding to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    /// An application of the instance's environment.
    pub application: String,
    /// The prefix of the variables (`CACHE` gives `CACHE_URL`, `CACHE_HOST`, ...);
    /// by default the instance's name in upper case.
    pub prefix: Option<String>,
}

/// Binds the instance to an application. The broker's credentials become secrets of a
/// new revision of the application (`<PREFIX>_URL`, `<PREFIX>_HOST`, ... and
/// `PAAS_SERVICES`), rolled out like any change; they are never returned.
#[utoipa::path(operation_id = "bind_service_instance", post, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name")),
    request_body = BindBody,
    responses((status = 201, body = ServiceBinding), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, description = "A field is invalid, or the broker could not bind (`broker_unavailable`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn bind(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
    body: ApiJson<BindBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let binding = state
        .platform
        .bind_service(
            &scope.access,
            &scope.env,
            &segment.service_instance,
            NewBinding {
                application: body.application,
                prefix: body.prefix,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(binding))
}

/// Unbinds the instance from an application: its variables leave the application in a
/// new revision at once; the broker revokes the credentials afterwards (202).
#[utoipa::path(operation_id = "unbind_service_instance", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings/{application}", tag = "services",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("service_instance" = String, Path, description = "The instance's name"),
           ("application" = String, Path, description = "The bound application")),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn unbind(
    state: Data<AppState>,
    scope: EnvScope,
    segment: Path<ServiceInstanceSegment>,
    application: Path<ApplicationSegment>,
) -> Result<HttpResponse, ApiError> {
    state
        .platform
        .unbind_service(
            &scope.access,
            &scope.env,
            &segment.service_instance,
            &application.application,
        )
        .await?;
    Ok(HttpResponse::Accepted().finish())
}
