//! Applications and their revisions.

use actix_web::HttpResponse;
use actix_web::web::{Data, Json, Path};
use platform_core::FieldError;
use platform_core::conditions::Condition;
use platform_core::manifest::Applied;
use platform_core::model::{AppEvent, Application, ApplicationDetail, Revision};
use platform_core::names::{AppName, EnvName, parse_description};
use platform_core::platform::placement::Feasibility;
use platform_core::platform::{AppQuery, NewApplication};
use platform_core::runtime::Instance;
use platform_core::spec::AppSpec;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, IfMatch, Items, Page, etag};
use crate::error::{ApiError, ErrorBody};
use crate::scope::{ActionSegment, AppScope, InstanceSegment, TenantScope};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only applications of this environment.
    pub environment: Option<String>,
    /// Only applications whose name contains this, ignoring case.
    pub search: Option<String>,
    /// Where the page starts: the `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (1 to 500, 50 when absent).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A page of the tenant's applications in name order; follow `next` for the rest.
#[utoipa::path(operation_id = "list_applications", get, path = "/api/v1/tenants/{tenant}/applications", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ListQuery),
    responses((status = 200, body = Page<Application>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: Data<AppState>,
    scope: TenantScope,
    query: ApiQuery<ListQuery>,
) -> Result<Json<Page<Application>>, ApiError> {
    let access = scope.access;
    let query = query.0;
    let page = state
        .platform
        .applications(
            &access,
            &AppQuery {
                environment: query.environment,
                search: query.search,
                after: query.after,
                limit: query.limit.unwrap_or(AppQuery::DEFAULT_LIMIT),
            },
        )
        .await?;
    Ok(Json(Page {
        items: page.items,
        next: page.next,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    #[schema(value_type = platform_core::names::EnvName)]
    pub environment: String,
    #[schema(value_type = platform_core::names::AppName)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = platform_core::names::Description)]
    pub description: String,
    pub spec: AppSpec,
    /// Create it even if not every instance can be placed (the placement pre-flight
    /// refuses it with 422 `infeasible` otherwise); the others wait as `Unschedulable`.
    #[serde(default)]
    pub force: bool,
}

/// Creates an application with its first revision.
#[utoipa::path(operation_id = "create_application", post, path = "/api/v1/tenants/{tenant}/applications", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug")),
    request_body = CreateApplication,
    responses((status = 201, body = ApplicationDetail), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    state: Data<AppState>,
    scope: TenantScope,
    body: ApiJson<CreateApplication>,
) -> Result<HttpResponse, ApiError> {
    let access = scope.access;
    let body = body.0;
    let input = NewApplication {
        environment: EnvName::parse(&body.environment).map_err(|e| e.for_field("environment"))?,
        name: AppName::parse(&body.name)?,
        description: parse_description(&body.description)?,
        spec: body.spec,
    };
    let detail = state
        .platform
        .create_application_placed(&access, input, body.force)
        .await?;
    let location = format!(
        "/api/v1/tenants/{}/environments/{}/applications/{}",
        access.tenant().slug,
        detail.application.environment,
        detail.application.name
    );
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::LOCATION, location))
        .insert_header((
            actix_web::http::header::ETAG,
            etag(detail.application.version),
        ))
        .json(detail))
}

#[utoipa::path(operation_id = "get_application", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = ApplicationDetail, headers(("ETag" = String, description = "The application's version, for If-Match"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(state: Data<AppState>, scope: AppScope) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(with_etag(
        state.platform.application(&access, &env, &app).await?,
    ))
}

/// A 200 with the application and its version as `ETag`.
fn with_etag(detail: ApplicationDetail) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::ETAG,
            etag(detail.application.version),
        ))
        .json(detail)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApplication {
    pub spec: AppSpec,
    #[schema(value_type = Option<platform_core::names::Description>)]
    pub description: Option<String>,
    /// The version this change was made against (as `If-Match` would say); the change
    /// is refused with 412 when the application has moved on.
    pub version: Option<i64>,
    /// Make the change even if not every instance can be placed (see `create`).
    #[serde(default)]
    pub force: bool,
}

/// Applies a spec: a new revision when it differs from the current one; applying the
/// same spec again changes nothing. With `If-Match` (or `version`), the change is
/// made only if the application is still at that version.
#[utoipa::path(operation_id = "update_application", put, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version this change was made against")),
    request_body = UpdateApplication,
    responses((status = 200, body = ApplicationDetail, headers(("ETag" = String, description = "The application's new version"))), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    state: Data<AppState>,
    scope: AppScope,
    if_match: IfMatch,
    body: ApiJson<UpdateApplication>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let body = body.0;
    let version = if_match.or_body(body.version)?;
    let description = body
        .description
        .as_deref()
        .map(parse_description)
        .transpose()?;
    Ok(with_etag(
        state
            .platform
            .update_application_placed(
                &access,
                &env,
                &app,
                body.spec,
                description,
                version,
                body.force,
            )
            .await?,
    ))
}

#[utoipa::path(operation_id = "delete_application", delete, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version this deletion was decided on")),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
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
        .delete_application(&access, &env, &app, if_match.0)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(operation_id = "list_revisions", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/revisions", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<Revision>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revisions(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<Revision>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.revisions(&access, &env, &app).await?,
    )))
}

#[utoipa::path(operation_id = "list_instances", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/instances", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<Instance>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn instances(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<Instance>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.instances(&access, &env, &app).await?,
    )))
}

/// The application's stable addresses: where clients and peers reach it whatever its
/// instances do (a TCP port on the router, and one per ordinal of a stateful one).
#[utoipa::path(operation_id = "list_endpoints", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/endpoints", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<platform_core::runtime::Endpoint>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn endpoints(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<platform_core::runtime::Endpoint>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.endpoints(&access, &env, &app).await?,
    )))
}

#[utoipa::path(operation_id = "list_events", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/events", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<AppEvent>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<AppEvent>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.events(&access, &env, &app, 100).await?,
    )))
}

/// The application's conditions: `Available`, `Progressing` and `Degraded`, each with a
/// stable reason and a message.
#[utoipa::path(operation_id = "list_conditions", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/conditions", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    responses((status = 200, body = Items<Condition>), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn conditions(
    state: Data<AppState>,
    scope: AppScope,
) -> Result<Json<Items<Condition>>, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    Ok(Json(Items::new(
        state.platform.conditions(&access, &env, &app).await?,
    )))
}

/// A lifecycle action: `start`, `stop` or `restart`.
#[utoipa::path(operation_id = "application_action", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/{action}", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
        ("action" = String, Path, description = "start, stop or restart"),
        ("If-Match" = Option<String>, Header, description = "The ETag of the version this action was decided on (start and stop)")),
    responses((status = 204, description = "Done"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn action(
    state: Data<AppState>,
    scope: AppScope,
    segment: Path<ActionSegment>,
    if_match: IfMatch,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let action = segment.into_inner().action;
    match action.as_str() {
        "start" => {
            state
                .platform
                .set_running(&access, &env, &app, true, if_match.0)
                .await?
        }
        "stop" => {
            state
                .platform
                .set_running(&access, &env, &app, false, if_match.0)
                .await?
        }
        "restart" => state.platform.restart(&access, &env, &app).await?,
        _ => return Err(ApiError::not_found("the action")),
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    #[schema(minimum = 0, maximum = 100)]
    pub replicas: u32,
    /// The version this scaling was decided on (as `If-Match` would say).
    pub version: Option<i64>,
    /// Scale even if not every instance can be placed (see `create_application`).
    #[serde(default)]
    pub force: bool,
}

/// Sets the number of instances.
#[utoipa::path(operation_id = "scale_application", put, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/replicas", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    request_body = Scale,
    responses((status = 204, description = "Scaled"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn scale(
    state: Data<AppState>,
    scope: AppScope,
    if_match: IfMatch,
    body: ApiJson<Scale>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let version = if_match.or_body(body.0.version)?;
    state
        .platform
        .scale_placed(&access, &env, &app, body.0.replicas, version, body.0.force)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What the placement pre-flight is asked: the spec and replica count to try (each
/// defaults to the application's own).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementCheck {
    #[serde(default)]
    pub spec: Option<AppSpec>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub replicas: Option<u32>,
}

/// A dry run of the placement pre-flight: whether the application's instances (with
/// the spec and replica count given, else its own) can all be placed beside what runs
/// in the environment, where they would go, and if not, why and what would fix it.
#[utoipa::path(operation_id = "check_placement", post, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/placement/check", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application")),
    request_body = PlacementCheck,
    responses((status = 200, body = Feasibility), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn check_placement(
    state: Data<AppState>,
    scope: AppScope,
    body: ApiJson<PlacementCheck>,
) -> Result<HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let PlacementCheck { spec, replicas } = body.0;
    if replicas.is_some_and(|r| r > AppSpec::MAX_REPLICAS) {
        return Err(FieldError::new(
            "replicas",
            format!("must be between 0 and {}", AppSpec::MAX_REPLICAS),
        )
        .into());
    }
    let current = state.platform.application(&access, &env, &app).await?;
    let spec = spec.unwrap_or(current.spec);
    let replicas = replicas.unwrap_or_else(|| {
        current
            .application
            .scaled_replicas
            .map_or(spec.replicas, |r| u32::try_from(r).unwrap_or(0))
    });
    let f = state
        .platform
        .placement_check(&access, &env, &app, &spec, replicas)
        .await?;
    Ok(HttpResponse::Ok().json(f))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// How many of the last lines (1 to 5000, default 200).
    #[param(minimum = 1, maximum = 5000)]
    pub tail: Option<usize>,
    /// Keep the response open and send new lines as they are written, as server-sent
    /// events (`text/event-stream`, one `data:` per line).
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogLines {
    pub lines: Vec<String>,
}

/// The last lines an instance wrote (stdout and stderr); with `follow=true`, then every
/// new line as it is written (server-sent events) until the client goes away.
#[utoipa::path(operation_id = "instance_logs", get, path = "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}/instances/{instance}/logs", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug"), ("env" = String, Path, description = "Environment"), ("app" = String, Path, description = "Application"),
        ("instance" = String, Path, description = "Instance name"), LogsQuery),
    responses((status = 200, description = "The lines; with `follow=true`, a stream of server-sent events (one `data:` per line) that stays open",
        content((LogLines = "application/json"), (String = "text/event-stream"))), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logs(
    state: Data<AppState>,
    scope: AppScope,
    segment: Path<InstanceSegment>,
    query: ApiQuery<LogsQuery>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let AppScope {
        access, env, app, ..
    } = scope;
    let instance = segment.into_inner().instance;
    let query = query.0;
    let tail = query.tail.unwrap_or(200);
    if !(1..=5000).contains(&tail) {
        return Err(ApiError::field("tail", "must be between 1 and 5000"));
    }
    if !query.follow {
        let lines = state
            .platform
            .logs(&access, &env, &app, &instance, tail)
            .await?;
        return Ok(actix_web::HttpResponse::Ok().json(LogLines { lines }));
    }
    // What later polls compare with must be read through the same window as they are,
    // whatever part of it is shown first.
    let lines = state
        .platform
        .logs(&access, &env, &app, &instance, FOLLOW_WINDOW)
        .await?;
    let platform = state.platform.clone();
    let first = sse_lines(&lines[lines.len().saturating_sub(tail)..]);
    let follow = futures_util::stream::unfold(lines, move |seen| {
        let (platform, access, env, app, instance) = (
            platform.clone(),
            access.clone(),
            env.clone(),
            app.clone(),
            instance.clone(),
        );
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match platform
                .logs(&access, &env, &app, &instance, FOLLOW_WINDOW)
                .await
            {
                Ok(now) => {
                    let fresh = new_lines(&seen, &now);
                    let chunk = if fresh.is_empty() {
                        // A comment keeps proxies from closing an idle stream.
                        ": idle\n\n".to_owned()
                    } else {
                        sse_lines(fresh)
                    };
                    Some((Ok::<_, actix_web::Error>(bytes::Bytes::from(chunk)), now))
                }
                // The instance is gone: say so and end the stream.
                Err(_) => None,
            }
        }
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::once(
            async move { Ok::<_, actix_web::Error>(bytes::Bytes::from(first)) },
        ),
        follow,
    );
    Ok(actix_web::HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// How many of the last lines each poll of a followed log compares.
const FOLLOW_WINDOW: usize = 1000;

fn sse_lines(lines: &[String]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str("data: ");
        // A line never holds a newline; a carriage return would end the field early.
        out.push_str(&line.replace('\r', ""));
        out.push_str("\n\n");
    }
    out
}

/// The lines of `now` (a later tail of the same log) that `seen` did not have: what
/// follows the longest suffix of `seen` that `now` starts with.
pub fn new_lines<'a>(seen: &[String], now: &'a [String]) -> &'a [String] {
    let longest = seen.len().min(now.len());
    let overlap = (0..=longest)
        .rev()
        .find(|&k| seen[seen.len() - k..] == now[..k])
        .unwrap_or(0);
    &now[overlap..]
}

/// The largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = platform_core::manifest::MAX_BYTES;

/// Applies YAML application manifests (one or more documents). Applying the same
/// manifest again changes nothing.
#[utoipa::path(operation_id = "apply_manifests", post, path = "/api/v1/tenants/{tenant}/manifests", tag = "applications",
    params(("tenant" = String, Path, description = "Tenant slug")),
    request_body(content = String, content_type = "application/yaml", description = "YAML documents of kind Application"),
    responses((status = 200, body = Items<Applied>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn apply_manifests(
    state: Data<AppState>,
    scope: TenantScope,
    body: actix_web::web::Bytes,
) -> Result<Json<Items<Applied>>, ApiError> {
    let access = scope.access;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the manifest exceeds 256 KiB",
        ));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::field("body", "must be UTF-8 text"))?;
    if text.contains('\0') {
        return Err(ApiError::field("body", "must not contain a NUL character"));
    }
    let manifests = platform_core::manifest::parse(text)?;
    Ok(Json(Items::new(
        state.platform.apply_manifests(&access, manifests).await?,
    )))
}

#[cfg(test)]
mod tests {
    use super::new_lines;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_followed_log_yields_only_what_was_appended() {
        assert_eq!(new_lines(&v(&["a", "b"]), &v(&["a", "b", "c"])), v(&["c"]));
        // The window slid: the oldest lines dropped out of the tail.
        assert_eq!(
            new_lines(&v(&["a", "b", "c"]), &v(&["b", "c", "d", "e"])),
            v(&["d", "e"])
        );
        assert!(new_lines(&v(&["a", "b"]), &v(&["a", "b"])).is_empty());
        // Repeated lines are counted, not collapsed.
        assert_eq!(new_lines(&v(&["x", "a"]), &v(&["a", "a"])), v(&["a"]));
        assert_eq!(new_lines(&v(&[]), &v(&["a"])), v(&["a"]));
        // Nothing in common (more than a window written between polls): all of it.
        assert_eq!(new_lines(&v(&["a"]), &v(&["b", "c"])), v(&["b", "c"]));
    }
}
