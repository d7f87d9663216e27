//! The console: the HTTP face of the platform. Server-rendered pages (askama + htmx),
//! the JSON API under `/api/v1` with its OpenAPI document, health and metrics, and the
//! `paas` binary that runs it all.
//!
//! Only this crate knows actix-web, askama and JSON wire shapes; it holds no business
//! rules and calls `platform_core::Platform` for everything.

pub mod api;
pub mod error;
pub mod internal;
pub mod metrics;
pub mod pages;
pub mod ratelimit;
pub mod scope;
pub mod session;
pub mod state;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::web::{self, Data};
use actix_web::{App, Error, HttpRequest, HttpResponse, ResponseError};

use crate::error::ApiError;
use crate::pages::PageError;
pub use crate::state::{AppState, MetricsExposure, WebConfig};

/// The console's assets, compiled into the binary.
const CONSOLE_CSS: &str = include_str!("../static/console.css");
const HTMX_JS: &str = include_str!("../static/htmx-2.0.11.min.js");

/// Content-Security-Policy: scripts and styles only from this origin, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// The whole HTTP application: pages, API, health, metrics, assets and middleware.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let metrics_here = state.config.metrics.on_main_listener;
    App::new()
        .app_data(Data::new(state))
        .app_data(web::PathConfig::default().error_handler(|_, req| not_found_for(req)))
        .configure(api::configure)
        .configure(internal::configure)
        .configure(pages::configure)
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(|cfg| {
            if metrics_here {
                cfg.route("/metrics", web::get().to(prometheus));
            }
        })
        .route("/static/{file}", web::get().to(asset))
        .default_service(web::to(fallback))
        .wrap(from_fn(session::authenticate))
        .wrap(from_fn(refuse_unstorable_query))
        .wrap(from_fn(api_error_bodies))
        .wrap(from_fn(metrics::track))
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CSP))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "same-origin")),
        )
}

fn not_found_for(req: &HttpRequest) -> Error {
    if req.path().starts_with("/api/") {
        ApiError::not_found("the resource").into()
    } else {
        PageError::not_found().into()
    }
}

async fn fallback(req: HttpRequest) -> HttpResponse {
    if req.path().starts_with("/api/") {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route").error_response()
    } else {
        PageError::not_found().error_response()
    }
}

/// Refuses a query parameter PostgreSQL could not hold (a NUL character), naming it,
/// before any handler or database sees it.
async fn refuse_unstorable_query(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let bad = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| k.replace('\0', "\\0"));
    let Some(name) = bad else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    const WHY: &str = "must not contain a NUL character";
    let response = if req.path().starts_with("/api/") {
        ApiError::field(name, WHY).error_response()
    } else {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            format!("{name}: {WHY}"),
        )
        .error_response()
    };
    Ok(req.into_response(response).map_into_right_body())
}

/// Makes sure every API error carries the error body, including the ones actix-web
/// produces itself (405 for a wrong method, for instance).
async fn api_error_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let is_api = req.path().starts_with("/api/");
    let response = next.call(req).await?;
    let status = response.status();
    let has_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_api || has_json || !(status.is_client_error() || status.is_server_error()) {
        return Ok(response.map_into_left_body());
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = status
        .canonical_reason()
        .unwrap_or("request refused")
        .to_lowercase();
    let body = ApiError::new(status, code, message).error_response();
    Ok(response.into_response(body).map_into_right_body())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: Data<AppState>) -> HttpResponse {
    if state.platform.ready().await {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        ApiError {
            retry_after: Some(error::RETRY_AFTER_SECS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database does not answer",
            )
        }
        .error_response()
    }
}

/// The application of the metrics listener, when `/metrics` has one of its own: only
/// `/metrics`, under the same token rule.
pub fn metrics_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(Data::new(state))
        .route("/metrics", web::get().to(prometheus))
        .default_service(web::to(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this listener serves /metrics only",
            )
            .error_response()
        }))
}

async fn prometheus(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    if let Some(expected) = state.config.metrics.token.as_deref() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !session::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "/metrics needs the metrics token (Authorization: Bearer ...)",
            )
            .error_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metrics\""),
            );
            return response;
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    let (body, content_type) = match path.as_str() {
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        "htmx-2.0.11.min.js" => (HTMX_JS, "text/javascript; charset=utf-8"),
        _ => return PageError::not_found().error_response(),
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        ))
        .body(body)
}
