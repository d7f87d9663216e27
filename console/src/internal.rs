//! The internal API that node agents and the router call: registration, heartbeats and
//! the route table. It is authenticated with the shared agent token, not with user
//! sessions, and is absent when the platform has no local runtime.

use actix_web::http::StatusCode;
use actix_web::web::{self, Data, Json, Path};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use platform_core::runtime::local::{AgentError, Heartbeat, Registration};

use crate::api::ApiJson;
use crate::error::ApiError;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/internal/v1")
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .route("/nodes", web::post().to(register))
            .route("/nodes/{name}/heartbeat", web::post().to(heartbeat))
            .route("/routes", web::get().to(routes))
            .route("/packages/{digest}", web::get().to(package)),
    );
}

/// Checks the agent token in constant time; 404 when the local runtime is off, so the
/// internal API does not even appear to exist.
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let (Some(expected), Some(_)) = (state.agent_token.as_deref(), state.local_runtime.as_ref())
    else {
        return Err(ApiError::not_found("the internal API"));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_agent_token",
            "the agent token was refused",
        ))
    }
}

fn agent_error(e: AgentError) -> ApiError {
    match e {
        AgentError::UnknownNode(name) => ApiError::not_found(&format!("node '{name}'")),
        AgentError::Invalid(message) => ApiError::field("registration", message),
        AgentError::Store(e) => platform_core::CoreError::from(e).into(),
    }
}

async fn register(
    state: Data<AppState>,
    req: HttpRequest,
    body: ApiJson<Registration>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    runtime.register(&body.0).await.map_err(agent_error)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn heartbeat(
    state: Data<AppState>,
    req: HttpRequest,
    path: Path<String>,
    body: ApiJson<Heartbeat>,
) -> HttpResponse {
    let result = async {
        authorize(&state, &req)?;
        let runtime = state
            .local_runtime
            .as_ref()
            .ok_or_else(|| ApiError::not_found("the internal API"))?;
        runtime.heartbeat(&path, &body.0).await.map_err(agent_error)
    }
    .await;
    match result {
        Ok(assignments) => HttpResponse::Ok().json(assignments),
        Err(e) => e.error_response(),
    }
}

async fn routes(
    state: Data<AppState>,
    req: HttpRequest,
) -> Result<Json<platform_core::runtime::local::RouteTable>, ApiError> {
    authorize(&state, &req)?;
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    runtime
        .routes()
        .await
        .map(Json)
        .map_err(|e| platform_core::CoreError::from(e).into())
}

/// A package archive's bytes, for an agent about to start an instance that runs it.
async fn package(
    state: Data<AppState>,
    req: HttpRequest,
    path: Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    if !platform_core::package::is_digest(&path) {
        return Err(ApiError::not_found("package"));
    }
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    let bytes = runtime
        .package(&path)
        .await
        .map_err(platform_core::CoreError::from)?
        .ok_or_else(|| ApiError::not_found("package"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}
