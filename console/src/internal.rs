//! The internal API that node agents and the router call: registration, heartbeats,
//! packages and the route table. It is absent when the platform has no local runtime.
//!
//! Two credentials, never user sessions: the shared agent token (the join token) lets
//! an agent register and the router read routes; registration issues the agent a
//! credential of its own, which alone speaks for its node (heartbeats, and the
//! packages of the instances placed on that node).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::ETAG;
use actix_web::web::{self, Data, Path};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use runtime_local::AgentError;
use runtime_local::proto::{Heartbeat, Registration};

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

fn bearer(req: &HttpRequest) -> &str {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_agent_token",
        "the agent token was refused",
    )
}

/// The node whose own credential the request presents; 401 otherwise.
async fn authorize_node(state: &AppState, req: &HttpRequest) -> Result<String, ApiError> {
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    runtime
        .authenticate_node(bearer(req))
        .await
        .map_err(|e| ApiError::from(platform_core::CoreError::from(e)))?
        .ok_or_else(refused)
}

/// Checks the agent token in constant time; 404 when the local runtime is off, so the
/// internal API does not even appear to exist.
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let (Some(expected), Some(_)) = (state.agent_token.as_deref(), state.local_runtime.as_ref())
    else {
        return Err(ApiError::not_found("the internal API"));
    };
    let given = bearer(req);
    if crate::session::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(refused())
    }
}

fn agent_error(e: AgentError) -> ApiError {
    match e {
        AgentError::UnknownNode(name) => ApiError::not_found(&format!("node '{name}'")),
        AgentError::Invalid(message) => ApiError::field("registration", message),
        AgentError::Store(e) => platform_core::CoreError::from(e).into(),
        AgentError::Secrets(why) => platform_core::CoreError::Internal(why).into(),
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
    let registered = runtime.register(&body.0).await.map_err(agent_error)?;
    Ok(HttpResponse::Ok().json(registered))
}

async fn heartbeat(
    state: Data<AppState>,
    req: HttpRequest,
    path: Path<String>,
    body: ApiJson<Heartbeat>,
) -> HttpResponse {
    let result = async {
        let node = authorize_node(&state, &req).await?;
        if node != *path {
            // A credential speaks for its own node only.
            return Err(refused());
        }
        let runtime = state
            .local_runtime
            .as_ref()
            .ok_or_else(|| ApiError::not_found("the internal API"))?;
        runtime.heartbeat(&node, &body.0).await.map_err(agent_error)
    }
    .await;
    match result {
        Ok(assignments) => HttpResponse::Ok().json(assignments),
        Err(e) => e.error_response(),
    }
}

/// The route table, with its version as an `ETag`. A router that sends the version
/// it holds (`If-None-Match`) and `Prefer: wait=<seconds>` is answered when the table
/// changes, or `304 Not Modified` when it did not within that time (a long poll).
async fn routes(state: Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let since = header("if-none-match").map(|v| v.trim().trim_matches('"').to_owned());
    let wait = header("prefer")
        .and_then(|p| {
            p.split(',')
                .find_map(|pref| pref.trim().strip_prefix("wait="))
                .and_then(|secs| secs.trim().parse::<u64>().ok())
        })
        .map_or(Duration::ZERO, Duration::from_secs);
    let answer = runtime
        .routes_since(
            since.as_deref(),
            if since.is_some() {
                wait
            } else {
                Duration::ZERO
            },
        )
        .await
        .map_err(platform_core::CoreError::from)?;
    Ok(match answer {
        Some((table, version)) => HttpResponse::Ok()
            .insert_header((ETAG, format!("\"{version}\"")))
            .json(table),
        None => {
            let version = since.unwrap_or_default();
            HttpResponse::NotModified()
                .insert_header((ETAG, format!("\"{version}\"")))
                .finish()
        }
    })
}

/// A package archive's bytes, for an agent about to start an instance that runs it
/// (only the packages of instances placed on the agent's node).
async fn package(
    state: Data<AppState>,
    req: HttpRequest,
    path: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let node = authorize_node(&state, &req).await?;
    if !platform_core::package::is_digest(&path) {
        return Err(ApiError::not_found("package"));
    }
    let runtime = state
        .local_runtime
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the internal API"))?;
    let bytes = runtime
        .package(&node, &path)
        .await
        .map_err(platform_core::CoreError::from)?
        .ok_or_else(|| ApiError::not_found("package"))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}
