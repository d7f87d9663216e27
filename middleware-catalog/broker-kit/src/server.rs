//! The HTTP side: routes, authentication, version checks and the specification's
//! answers, over the [`Registry`] and a [`Backend`].

use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use osb::wire::{
    BindRequest, BindResponse, ErrorBody, LastOperation, OperationResponse, OperationState,
    ProvisionRequest, ProvisionResponse, UpdateRequest, codes,
};
use serde::Deserialize;
use serde_json::{Map, json};

use crate::registry::{BindingRecord, InstanceRecord, Phase, Registry};
use crate::{Backend, BackendError};

/// What a broker is: its catalog, the credentials the platform signs in with, and
/// where its registry lives.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub catalog: osb::Catalog,
    pub username: String,
    pub password: String,
}

struct Shared {
    config: BrokerConfig,
    backend: Arc<dyn Backend>,
    registry: Mutex<Registry>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Adds the broker's routes (`/v2/...`) to an actix-web app.
pub fn configure(
    config: BrokerConfig,
    backend: Arc<dyn Backend>,
    registry: Registry,
) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let shared = Data::new(Shared {
        config,
        backend,
        registry: Mutex::new(registry),
    });
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(shared.clone())
            .app_data(web::PayloadConfig::new(256 * 1024))
            // A query that does not parse is answered like every other refusal: the
            // specification's error body, as JSON.
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let response = error(
                    StatusCode::BAD_REQUEST,
                    None,
                    format!("the query is not valid: {e}"),
                );
                actix_web::error::InternalError::from_response(e, response).into()
            }))
            .service(
                web::resource("/v2/catalog")
                    .route(web::get().to(catalog))
                    .default_service(web::to(|| not_allowed("GET"))),
            )
            .service(
                web::resource("/v2/service_instances/{id}")
                    .route(web::put().to(provision))
                    .route(web::patch().to(update))
                    .route(web::delete().to(deprovision))
                    .route(web::get().to(fetch_instance))
                    .default_service(web::to(|| not_allowed("GET, PUT, PATCH, DELETE"))),
            )
            .service(
                web::resource("/v2/service_instances/{id}/last_operation")
                    .route(web::get().to(last_operation))
                    .default_service(web::to(|| not_allowed("GET"))),
            )
            .service(
                web::resource("/v2/service_instances/{id}/service_bindings/{binding}")
                    .route(web::put().to(bind))
                    .route(web::delete().to(unbind))
                    .route(web::get().to(fetch_binding))
                    .default_service(web::to(|| not_allowed("GET, PUT, DELETE"))),
            )
            .service(
                web::resource(
                    "/v2/service_instances/{id}/service_bindings/{binding}/last_operation",
                )
                .route(web::get().to(binding_last_operation))
                .default_service(web::to(|| not_allowed("GET"))),
            );
    }
}

/// A method the resource does not have: 405 with the ones it has.
async fn not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", allow))
        .json(ErrorBody::new(
            None,
            format!("this resource answers {allow}"),
        ))
}

fn error(status: StatusCode, code: Option<&str>, description: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody::new(code, description))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authentication and the version header, before anything else.
/// The answer to a request that may not go further (no or wrong credentials, no or
/// another major API version); `None` lets it in.
fn refused(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        shared.config.username, shared.config.password
    ));
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .unwrap_or_default();
    if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return Some(
            HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Basic realm=\"broker\""))
                .json(ErrorBody::new(None, "basic authentication is required")),
        );
    }
    match req
        .headers()
        .get(osb::VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        None => Some(error(
            StatusCode::BAD_REQUEST,
            None,
            format!("the {} header is required", osb::VERSION_HEADER),
        )),
        Some(v) if v.split('.').next() != Some("2") => Some(error(
            StatusCode::PRECONDITION_FAILED,
            None,
            format!("this broker speaks version {} of the API", osb::API_VERSION),
        )),
        Some(_) => None,
    }
}

/// A JSON body of the expected shape, or 400 with what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the body is not valid: {e}"))
}

/// No query parameters at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

async fn catalog(req: HttpRequest, shared: Data<Shared>, _query: Query<NoQuery>) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    HttpResponse::Ok().json(&shared.config.catalog)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AsyncQuery {
    #[serde(default)]
    accepts_incomplete: Option<bool>,
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    operation: Option<String>,
}

impl AsyncQuery {
    fn accepts_incomplete(&self) -> bool {
        self.accepts_incomplete == Some(true)
    }
}

fn async_required() -> HttpResponse {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(codes::ASYNC_REQUIRED),
        "This Service Plan requires client support for asynchronous service operations.",
    )
}

fn busy() -> HttpResponse {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(codes::CONCURRENCY_ERROR),
        "Another operation for this Service Instance is in progress.",
    )
}

fn in_catalog<'a>(
    shared: &'a Shared,
    service_id: &str,
    plan_id: &str,
) -> Option<(&'a osb::Service, &'a osb::Plan)> {
    let service = shared
        .config
        .catalog
        .services
        .iter()
        .find(|s| s.id == service_id)?;
    Some((service, service.plan(plan_id)?))
}

fn io_error(e: &std::io::Error) -> HttpResponse {
    tracing::error!(error = %e, "the broker's registry could not be written");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "the broker could not record the operation",
    )
}

async fn provision(
    req: HttpRequest,
    shared: Data<Shared>,
    id: Path<String>,
    query: Query<AsyncQuery>,
    bytes: Bytes,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let request: ProvisionRequest = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, None, e),
    };
    if in_catalog(&shared, &request.service_id, &request.plan_id).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "service_id and plan_id must name a plan of the catalog",
        );
    }
    if !query.accepts_incomplete() {
        return async_required();
    }
    let id = id.into_inner();
    let parameters = request.parameters.clone().unwrap_or_default();
    let operation = format!("provision-{}", uuid::Uuid::new_v4());
    let record = {
        let mut registry = shared.registry();
        if let Some(existing) = registry.instance(&id).filter(|i| i.phase != Phase::Gone) {
            let same = existing.service_id == request.service_id
                && existing.plan_id == request.plan_id
                && existing.parameters == parameters;
            return match (same, existing.phase) {
                (true, Phase::Ready) => HttpResponse::Ok().json(ProvisionResponse::default()),
                (true, Phase::Creating) => HttpResponse::Accepted().json(ProvisionResponse {
                    operation: Some(existing.operation.clone()),
                    ..ProvisionResponse::default()
                }),
                _ => error(
                    StatusCode::CONFLICT,
                    None,
                    "a service instance with this id exists with other attributes",
                ),
            };
        }
        let record = InstanceRecord {
            id: id.clone(),
            service_id: request.service_id.clone(),
            plan_id: request.plan_id.clone(),
            parameters,
            context: request.context.clone(),
            phase: Phase::Creating,
            operation: operation.clone(),
            operation_kind: "provision".into(),
            description: None,
            facts: serde_json::Map::new(),
            usable: true,
        };
        if let Err(e) = registry.put_instance(record.clone()) {
            return io_error(&e);
        }
        record
    };
    let shared_task = shared.clone();
    tokio::spawn(async move {
        let result = shared_task.backend.create(&record).await;
        finish(
            &shared_task,
            &record.id,
            &record.operation,
            result.map(Some),
        );
    });
    HttpResponse::Accepted().json(ProvisionResponse {
        operation: Some(operation),
        ..ProvisionResponse::default()
    })
}

/// Records how an operation ended, if it is still the instance's current one.
fn finish(
    shared: &Shared,
    id: &str,
    operation: &str,
    result: Result<Option<serde_json::Map<String, serde_json::Value>>, BackendError>,
) {
    let mut registry = shared.registry();
    let Some(mut record) = registry.instance(id).cloned() else {
        return;
    };
    if record.operation != operation {
        return;
    }
    let outcome = match result {
        Ok(facts) if record.operation_kind == "deprovision" => {
            let _ = facts;
            registry.remove_instance(id)
        }
        Ok(facts) => {
            if let Some(facts) = facts {
                record.facts = facts;
            }
            record.phase = Phase::Ready;
            record.description = None;
            registry.put_instance(record)
        }
        Err(e) => {
            tracing::warn!(instance = id, error = %e, kind = record.operation_kind, "operation failed");
            if record.operation_kind == "update" {
                record.phase = Phase::Ready;
                record.usable = true;
            } else {
                record.phase = Phase::Failed;
            }
            record.description = Some(e.0);
            registry.put_instance(record)
        }
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "the broker's registry could not be written");
    }
}

async fn update(
    req: HttpRequest,
    shared: Data<Shared>,
    id: Path<String>,
    query: Query<AsyncQuery>,
    bytes: Bytes,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let request: UpdateRequest = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, None, e),
    };
    if !query.accepts_incomplete() {
        return async_required();
    }
    let id = id.into_inner();
    let operation = format!("update-{}", uuid::Uuid::new_v4());
    let record = {
        let mut registry = shared.registry();
        let Some(existing) = registry
            .instance(&id)
            .filter(|i| i.phase != Phase::Gone)
            .cloned()
        else {
            return error(StatusCode::BAD_REQUEST, None, "no such service instance");
        };
        if existing.phase != Phase::Ready {
            return busy();
        }
        let plan_id = request
            .plan_id
            .clone()
            .unwrap_or_else(|| existing.plan_id.clone());
        let Some((service, _)) = in_catalog(&shared, &existing.service_id, &plan_id) else {
            return error(
                StatusCode::BAD_REQUEST,
                None,
                "plan_id must name a plan of the instance's service",
            );
        };
        if plan_id != existing.plan_id && !service.plan_updateable {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                "this service's plans cannot be changed",
            );
        }
        let mut record = existing;
        record.previous_plan(plan_id, request.parameters.clone());
        record.phase = Phase::Updating;
        record.operation = operation.clone();
        record.operation_kind = "update".into();
        record.description = None;
        if let Err(e) = registry.put_instance(record.clone()) {
            return io_error(&e);
        }
        record
    };
    let shared_task = shared.clone();
    tokio::spawn(async move {
        let result = shared_task.backend.update(&record).await;
        finish(
            &shared_task,
            &record.id,
            &record.operation,
            result.map(Some),
        );
    });
    HttpResponse::Accepted().json(ProvisionResponse {
        operation: Some(operation),
        ..ProvisionResponse::default()
    })
}

impl InstanceRecord {
    /// Takes the update's plan and (when given) parameters.
    fn previous_plan(
        &mut self,
        plan_id: String,
        parameters: Option<serde_json::Map<String, serde_json::Value>>,
    ) {
        self.plan_id = plan_id;
        if let Some(p) = parameters {
            self.parameters = p;
        }
    }
}

async fn deprovision(
    req: HttpRequest,
    shared: Data<Shared>,
    id: Path<String>,
    query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    if query.service_id.is_none() || query.plan_id.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "service_id and plan_id are required",
        );
    }
    if !query.accepts_incomplete() {
        return async_required();
    }
    let id = id.into_inner();
    let operation = format!("deprovision-{}", uuid::Uuid::new_v4());
    let (record, bindings) = {
        let mut registry = shared.registry();
        let Some(existing) = registry
            .instance(&id)
            .filter(|i| i.phase != Phase::Gone)
            .cloned()
        else {
            return HttpResponse::Gone().json(json!({}));
        };
        if matches!(existing.phase, Phase::Creating | Phase::Updating) {
            return busy();
        }
        if existing.phase == Phase::Deleting {
            return HttpResponse::Accepted().json(OperationResponse {
                operation: Some(existing.operation),
            });
        }
        let mut record = existing;
        record.phase = Phase::Deleting;
        record.operation = operation.clone();
        record.operation_kind = "deprovision".into();
        record.description = None;
        if let Err(e) = registry.put_instance(record.clone()) {
            return io_error(&e);
        }
        let bindings = registry.bindings_of(&id);
        (record, bindings)
    };
    let shared_task = shared.clone();
    tokio::spawn(async move {
        for binding in &bindings {
            if let Err(e) = shared_task.backend.unbind(&record, binding).await {
                tracing::warn!(binding = binding.id, error = %e, "unbinding before deprovisioning failed");
            }
        }
        let result = shared_task.backend.destroy(&record).await;
        finish(
            &shared_task,
            &record.id,
            &record.operation,
            result.map(|()| None),
        );
    });
    HttpResponse::Accepted().json(OperationResponse {
        operation: Some(operation),
    })
}

async fn fetch_instance(
    req: HttpRequest,
    shared: Data<Shared>,
    id: Path<String>,
    _query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let registry = shared.registry();
    match registry.instance(&id) {
        Some(i) if matches!(i.phase, Phase::Ready | Phase::Updating) => {
            HttpResponse::Ok().json(json!({
                "service_id": i.service_id, "plan_id": i.plan_id, "parameters": i.parameters,
            }))
        }
        Some(i) if i.phase == Phase::Creating => busy(),
        _ => error(StatusCode::NOT_FOUND, None, "no such service instance"),
    }
}

async fn last_operation(
    req: HttpRequest,
    shared: Data<Shared>,
    id: Path<String>,
    query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let registry = shared.registry();
    let Some(record) = registry.instance(&id) else {
        return error(StatusCode::NOT_FOUND, None, "no such service instance");
    };
    if record.phase == Phase::Gone {
        return HttpResponse::Gone().json(json!({}));
    }
    if query
        .operation
        .as_deref()
        .is_some_and(|op| op != record.operation)
    {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "that is not this instance's last operation",
        );
    }
    let state = match record.phase {
        Phase::Creating | Phase::Updating | Phase::Deleting => OperationState::InProgress,
        Phase::Ready if record.description.is_some() => OperationState::Failed,
        Phase::Ready | Phase::Gone => OperationState::Succeeded,
        Phase::Failed => OperationState::Failed,
    };
    let update = record.operation_kind == "update";
    let failed = state == OperationState::Failed;
    HttpResponse::Ok()
        .insert_header(("Retry-After", "1"))
        .json(LastOperation {
            state,
            description: record.description.clone().or_else(|| {
                (state == OperationState::InProgress)
                    .then(|| format!("{} in progress", record.operation_kind))
            }),
            instance_usable: (failed && update).then_some(record.usable),
            update_repeatable: (failed && update).then_some(true),
        })
}

async fn bind(
    req: HttpRequest,
    shared: Data<Shared>,
    path: Path<(String, String)>,
    bytes: Bytes,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let request: BindRequest = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, None, e),
    };
    let (id, binding_id) = path.into_inner();
    let parameters = request.parameters.clone().unwrap_or_default();
    let app_guid = request
        .bind_resource
        .as_ref()
        .and_then(|r| r.app_guid.clone());
    let route = request.bind_resource.as_ref().and_then(|r| r.route.clone());
    let instance = {
        let registry = shared.registry();
        if let Some(existing) = registry.binding(&binding_id) {
            let same = existing.instance_id == id
                && existing.parameters == parameters
                && existing.app_guid == app_guid;
            return if same {
                HttpResponse::Ok().json(BindResponse {
                    credentials: Some(existing.credentials.clone()),
                    ..BindResponse::default()
                })
            } else {
                error(
                    StatusCode::CONFLICT,
                    None,
                    "a binding with this id exists with other attributes",
                )
            };
        }
        match registry.instance(&id) {
            Some(i) if i.phase == Phase::Ready => i.clone(),
            Some(i) if matches!(i.phase, Phase::Creating | Phase::Updating | Phase::Deleting) => {
                return busy();
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    None,
                    "no ready service instance with this id",
                );
            }
        }
    };
    if in_catalog(&shared, &request.service_id, &request.plan_id)
        .is_none_or(|(s, p)| !s.plan_bindable(p))
    {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "service_id and plan_id must name a bindable plan",
        );
    }
    let mut record = BindingRecord {
        id: binding_id,
        instance_id: id,
        app_guid,
        route,
        parameters,
        credentials: Map::new(),
    };
    match shared.backend.bind(&instance, &record).await {
        Ok(credentials) => {
            record.credentials = credentials.clone();
            if let Err(e) = shared.registry().put_binding(record) {
                return io_error(&e);
            }
            HttpResponse::Created().json(BindResponse {
                credentials: Some(credentials),
                ..BindResponse::default()
            })
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.0),
    }
}

async fn unbind(
    req: HttpRequest,
    shared: Data<Shared>,
    path: Path<(String, String)>,
    query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    if query.service_id.is_none() || query.plan_id.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "service_id and plan_id are required",
        );
    }
    let (id, binding_id) = path.into_inner();
    let (instance, binding) = {
        let registry = shared.registry();
        let Some(binding) = registry
            .binding(&binding_id)
            .filter(|b| b.instance_id == id)
            .cloned()
        else {
            return HttpResponse::Gone().json(json!({}));
        };
        let Some(instance) = registry.instance(&id).cloned() else {
            return HttpResponse::Gone().json(json!({}));
        };
        (instance, binding)
    };
    match shared.backend.unbind(&instance, &binding).await {
        Ok(()) => match shared.registry().remove_binding(&binding_id) {
            Ok(()) => HttpResponse::Ok().json(json!({})),
            Err(e) => io_error(&e),
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, e.0),
    }
}

async fn fetch_binding(
    req: HttpRequest,
    shared: Data<Shared>,
    path: Path<(String, String)>,
    _query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let (id, binding_id) = path.into_inner();
    match shared
        .registry()
        .binding(&binding_id)
        .filter(|b| b.instance_id == id)
    {
        Some(b) => HttpResponse::Ok().json(BindResponse {
            credentials: Some(b.credentials.clone()),
            ..BindResponse::default()
        }),
        None => error(StatusCode::NOT_FOUND, None, "no such binding"),
    }
}

/// Bindings are made synchronously: a poll finds them done, or gone.
async fn binding_last_operation(
    req: HttpRequest,
    shared: Data<Shared>,
    path: Path<(String, String)>,
    _query: Query<AsyncQuery>,
) -> HttpResponse {
    if let Some(r) = refused(&req, &shared) {
        return r;
    }
    let (_, binding_id) = path.into_inner();
    if shared.registry().binding(&binding_id).is_some() {
        HttpResponse::Ok().json(LastOperation {
            state: OperationState::Succeeded,
            description: None,
            instance_usable: None,
            update_repeatable: None,
        })
    } else {
        HttpResponse::Gone().json(json!({}))
    }
}
