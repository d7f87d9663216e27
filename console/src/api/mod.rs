//! The JSON API under `/api/v1`, described by the OpenAPI document at
//! `/api/v1/openapi.json` (generated from these handlers by utoipa).

pub mod admin;
pub mod apps;
pub mod auth;
pub mod autoscaling;
pub mod bundles;
pub mod openapi;
pub mod packages;
pub mod releases;
pub mod secrets;
pub mod services;
pub mod tenants;

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::ApiError;

/// The largest JSON body the API reads.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// A list response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

impl<T> Items<T> {
    pub fn new(items: Vec<T>) -> Self {
        Self { items }
    }
}

/// One page of a list: `next`, when present, is what to send as `after` for the
/// following page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A JSON body whose errors name the field at fault (`spec.replicas: invalid type ...`)
/// and map to the API's error shape: 415 for another media type, 413 when too large,
/// 400 for malformed JSON and 422 for well-formed JSON of the wrong shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        let body = Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                ));
            }
            let bytes = body.await.map_err(|e| {
                let too_large =
                    e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE;
                if too_large {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body exceeds {MAX_JSON_BYTES} bytes"),
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        "the request body could not be read",
                    )
                }
            })?;
            parse_json(&bytes).map(ApiJson)
        })
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body of this API is an object; say so plainly rather than report
    // a field path into an array or a scalar.
    if bytes.trim_ascii_start().first() != Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    // JSON Schema counts 11.0 as an integer, so the API does too: the body is read as a
    // value first and whole floats become integers before the typed fields see them.
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        // Our own parse errors already read "field: message"; keep only the message.
        let message = err.into_inner().to_string();
        let message = message
            .split_once(": ")
            .filter(|(f, _)| field.ends_with(f))
            .map_or(message.clone(), |(_, m)| m.to_owned());
        ApiError::field(field, message)
    })
}

/// Turns every float with no fractional part (within ±2^53, where floats are exact)
/// into the integer it equals.
fn whole_floats_as_integers(value: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                // The bound above makes the conversion exact.
                #[allow(clippy::cast_possible_truncation)]
                let whole = f as i64;
                *value = serde_json::Value::from(whole);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

/// Routes of `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .app_data(web::PayloadConfig::new(MAX_JSON_BYTES))
            .route("/openapi.json", web::get().to(openapi::document))
            .route("/auth/token", web::post().to(auth::issue_token))
            .route("/me", web::get().to(auth::me))
            .route("/tenants", web::get().to(tenants::my_tenants))
            .route("/tenants/{tenant}", web::get().to(tenants::get_tenant))
            .route(
                "/tenants/{tenant}/environments",
                web::get().to(tenants::list_environments),
            )
            .route(
                "/tenants/{tenant}/environments",
                web::post().to(tenants::create_environment),
            )
            .route(
                "/tenants/{tenant}/members",
                web::get().to(tenants::list_members),
            )
            .route(
                "/tenants/{tenant}/members/{username}",
                web::put().to(tenants::set_member),
            )
            .route(
                "/tenants/{tenant}/members/{username}",
                web::delete().to(tenants::remove_member),
            )
            .route("/tenants/{tenant}/audit", web::get().to(tenants::audit))
            .route("/tenants/{tenant}/applications", web::get().to(apps::list))
            .route(
                "/tenants/{tenant}/applications",
                web::post().to(apps::create),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}",
                web::get().to(apps::get),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}",
                web::put().to(apps::update),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}",
                web::delete().to(apps::delete),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/revisions",
                web::get().to(apps::revisions),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/instances",
                web::get().to(apps::instances),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/events",
                web::get().to(apps::events),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/conditions",
                web::get().to(apps::conditions),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/endpoints",
                web::get().to(apps::endpoints),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/replicas",
                web::put().to(apps::scale),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/placement/check",
                web::post().to(apps::check_placement),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/secrets",
                web::get().to(secrets::list),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/secrets/{name}",
                web::put().to(secrets::set),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/secrets/{name}",
                web::delete().to(secrets::delete),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling",
                web::get().to(autoscaling::get),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling",
                web::put().to(autoscaling::set),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling",
                web::delete().to(autoscaling::delete),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/preview",
                web::post().to(autoscaling::preview),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/what-if",
                web::post().to(autoscaling::what_if),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/autoscaling/decisions",
                web::get().to(autoscaling::decisions),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/releases",
                web::get().to(releases::list),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/releases",
                web::post().to(releases::create),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/releases/{id}",
                web::get().to(releases::get),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/releases/{id}/{action}",
                web::post().to(releases::act),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/release-policy",
                web::get().to(releases::get_policy),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/release-policy",
                web::put().to(releases::set_policy),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/promote",
                web::post().to(releases::promote),
            )
            .route("/releases", web::get().to(releases::queue))
            .route("/releases/{id}", web::get().to(releases::by_id))
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/{action}",
                web::post().to(apps::action),
            )
            .route("/tenants/{tenant}/quota", web::get().to(tenants::quota))
            .service(
                web::resource("/tenants/{tenant}/packages")
                    .app_data(web::PayloadConfig::new(
                        platform_core::package::MAX_ARCHIVE_BYTES,
                    ))
                    .route(web::post().to(packages::upload))
                    .route(web::get().to(packages::list))
                    .default_service(web::to(not_found)),
            )
            .service(
                web::resource("/tenants/{tenant}/manifests")
                    .app_data(web::PayloadConfig::new(256 * 1024))
                    .route(web::post().to(apps::apply_manifests))
                    .default_service(web::to(not_found)),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/applications/{app}/instances/{instance}/logs",
                web::get().to(apps::logs),
            )
            .route(
                "/admin/tenants/{tenant}/quota",
                web::put().to(admin::set_quota),
            )
            .route("/admin/tenants", web::get().to(admin::list_tenants))
            .route("/admin/tenants", web::post().to(admin::create_tenant))
            .route("/admin/users", web::get().to(admin::list_users))
            .route("/admin/users", web::post().to(admin::create_user))
            .route(
                "/admin/users/{username}",
                web::patch().to(admin::update_user),
            )
            .route("/admin/audit", web::get().to(admin::audit))
            .route(
                "/admin/releases/{id}/override-freeze",
                web::post().to(releases::override_freeze),
            )
            .route("/admin/runtimes", web::get().to(admin::runtimes))
            .route(
                "/admin/runtimes/{runtime}/nodes/{node}/confirm-lost",
                web::post().to(admin::confirm_node_lost),
            )
            .route(
                "/admin/runtimes/{runtime}/nodes/{node}/drain",
                web::post().to(admin::drain_node),
            )
            .route(
                "/admin/runtimes/{runtime}/nodes/{node}/{action}",
                web::post().to(admin::cordon_node),
            )
            .route(
                "/admin/nodes/{node}/drain",
                web::post().to(admin::drain_node_by_name),
            )
            .route(
                "/admin/nodes/{node}/{action}",
                web::post().to(admin::cordon_node_by_name),
            )
            .route("/admin/brokers", web::get().to(services::list_brokers))
            .route("/admin/brokers", web::post().to(services::register_broker))
            .route(
                "/admin/brokers/{broker}",
                web::get().to(services::get_broker),
            )
            .route(
                "/admin/brokers/{broker}",
                web::delete().to(services::delete_broker),
            )
            .route(
                "/admin/brokers/{broker}/refresh",
                web::post().to(services::refresh_broker),
            )
            .route(
                "/admin/brokers/{broker}/plans/{plan}/access",
                web::put().to(services::set_plan_access),
            )
            .route("/catalog/services", web::get().to(services::catalog))
            .route("/bundles", web::get().to(bundles::available))
            .route("/tenants/{tenant}/bundles", web::get().to(bundles::installed))
            .route("/tenants/{tenant}/bundles", web::post().to(bundles::install))
            .route(
                "/tenants/{tenant}/environments/{env}/bundles/{bundle}",
                web::get().to(bundles::get),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/bundles/{bundle}",
                web::delete().to(bundles::uninstall),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances",
                web::get().to(services::list_instances),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances",
                web::post().to(services::provision),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}",
                web::get().to(services::get_instance),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}",
                web::patch().to(services::update_instance),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}",
                web::delete().to(services::deprovision),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings",
                web::get().to(services::list_bindings),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings",
                web::post().to(services::bind),
            )
            .route(
                "/tenants/{tenant}/environments/{env}/service-instances/{service_instance}/bindings/{application}",
                web::delete().to(services::unbind),
            )
            .route(
                "/admin/signing-keys/rotate",
                web::post().to(admin::rotate_keys),
            )
            .default_service(web::to(not_found)),
    );
}

/// What answers a request no route took: 405 with `Allow` when the path is an
/// operation's path under another method, 404 otherwise. The methods come from the
/// OpenAPI document, which a test holds equal to the routes.
async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let path = req.path().strip_prefix("/api/v1").unwrap_or(req.path());
    let allowed = allowed_methods(path);
    if allowed.is_empty() {
        return actix_web::ResponseError::error_response(&ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such API route",
        ));
    }
    let allow = allowed.join(", ");
    let mut response = actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not an operation of this path; it allows {allow}",
            req.method()
        ),
    ));
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// The methods the API document declares for a concrete path (under `/api/v1`).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    static OPERATIONS: std::sync::OnceLock<Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    let operations = OPERATIONS.get_or_init(|| {
        let doc = <openapi::ApiDoc as utoipa::OpenApi>::openapi();
        doc.paths
            .paths
            .iter()
            .map(|(template, item)| {
                let template = template.strip_prefix("/api/v1").unwrap_or(template);
                let methods = [
                    ("GET", item.get.is_some()),
                    ("PUT", item.put.is_some()),
                    ("POST", item.post.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                let methods = methods
                    .into_iter()
                    .filter_map(|(m, declared)| declared.then_some(m))
                    .collect();
                (actix_web::dev::ResourceDef::new(template), methods)
            })
            .collect()
    });
    // Where templates overlap (`.../{app}/events` and `.../{app}/{action}`), the
    // router takes the most literal one, and so does `Allow`.
    let literal_segments = |def: &actix_web::dev::ResourceDef| {
        def.pattern()
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.contains('{'))
            .count()
    };
    let matching: Vec<_> = operations
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .collect();
    let most_literal = matching
        .iter()
        .map(|(def, _)| literal_segments(def))
        .max()
        .unwrap_or(0);
    let mut allowed: Vec<&'static str> = matching
        .iter()
        .filter(|(def, _)| literal_segments(def) == most_literal)
        .flat_map(|(_, methods)| methods.iter().copied())
        .collect();
    allowed.sort_unstable();
    allowed.dedup();
    allowed
}

/// A query string whose errors name the parameter at fault (422 `invalid_field`), as
/// [`ApiJson`] does for bodies.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let de = serde_urlencoded::Deserializer::new(pairs);
        std::future::ready(
            serde_path_to_error::deserialize(de)
                .map(ApiQuery)
                .map_err(|err| {
                    let path = err.path().to_string();
                    let field = if path == "." {
                        "query".to_owned()
                    } else {
                        path
                    };
                    ApiError::field(field, err.into_inner().to_string())
                }),
        )
    }
}

/// The `If-Match` of a change: the version (from an `ETag` this API gave) the client
/// read, or none (absent, empty, or `*`). A value of another shape is refused with 400
/// before anything is read; a well-formed version that is no longer current is the
/// core's 412.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<i64>);

impl IfMatch {
    /// The version a change must find: `If-Match`, else the body's `version`; both
    /// given and different is a contradiction the client must resolve.
    pub fn or_body(self, body: Option<i64>) -> Result<Option<i64>, ApiError> {
        match (self.0, body) {
            (Some(header), Some(body)) if header != body => Err(ApiError::field(
                "version",
                format!("is {body} but If-Match says {header}"),
            )),
            (header, body) => Ok(header.or(body)),
        }
    }
}

/// A 200 with a JSON body and the version it is at as `ETag`.
pub fn ok_with_etag<T: Serialize>(body: &T, version: i64) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, etag(version)))
        .json(body)
}

/// What an `If-Match` this API understands looks like.
/// (Empty is allowed, and means no precondition, as when the header is absent.)
pub const IF_MATCH_PATTERN: &str = "^(\\*|\"[0-9]+\")?$";

/// The entity tag of a version, as `ETag` carries it.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(value) = req.headers().get(actix_web::http::header::IF_MATCH) else {
            return std::future::ready(Ok(Self(None)));
        };
        // A value that is not visible ASCII names no version of ours: malformed, below.
        let version = match value.to_str().map(str::trim) {
            // An empty value names no version: as if the header were absent.
            Ok("*" | "") => return std::future::ready(Ok(Self(None))),
            Ok(text) => text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok()),
            Err(_) => None,
        };
        std::future::ready(match version {
            Some(v) => Ok(Self(Some(v))),
            None => Err(ApiError {
                field: Some("If-Match".to_owned()),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_header",
                    format!(
                        "If-Match must be `*` or one entity tag this API sent as ETag, such as \"3\" (matching {IF_MATCH_PATTERN})"
                    ),
                )
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: platform_core::names::AppName,
        spec: platform_core::spec::AppSpec,
    }

    fn check(json: &str, expected: (u16, &str, Option<&str>)) {
        let err = parse_json::<Body>(json.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{json} parsed"));
        assert_eq!(
            (err.status.as_u16(), err.code, err.field.as_deref()),
            expected,
            "{json}: {}",
            err.message
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        check("{", (400, "malformed_json", None));
        check("[1,2]", (422, "invalid_field", Some("body")));
        check(
            r#"{"name": "Bad Name", "spec": {"command": "x"}}"#,
            (422, "invalid_field", Some("name")),
        );
        check(
            r#"{"name": "ok", "spec": {"command": "x", "replicas": "three"}}"#,
            (422, "invalid_field", Some("spec.replicas")),
        );
        check(
            r#"{"name": "ok", "spec": {"command": "x", "replica": 3}}"#,
            (422, "invalid_field", Some("spec.replica")),
        );
        check(r#"{"name": "ok"}"#, (422, "invalid_field", Some("body")));
        check(
            r#"{"name": "ok", "spec": {"command": "x", "replicas": 2.5}}"#,
            (422, "invalid_field", Some("spec.replicas")),
        );
    }

    #[test]
    fn a_whole_float_is_an_integer_as_json_schema_says() {
        let body: Body =
            parse_json(br#"{"name": "ok", "spec": {"command": "x", "replicas": 3.0}}"#)
                .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(body.spec.replicas, 3);
        let body: Body =
            parse_json(br#"{"name": "ok", "spec": {"command": "x", "replicas": 3e0}}"#)
                .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(body.spec.replicas, 3);
    }
}
