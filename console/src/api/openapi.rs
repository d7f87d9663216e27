//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::web::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, apps, auth, autoscaling, bundles, packages, releases, secrets, services, tenants,
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "PaaS API", description = "Tenants, environments, members, applications, revisions and audit of the PaaS. Errors are always `{\"error\": \"snake_case_code\", \"message\": \"...\"}`."),
    paths(
        auth::issue_token, auth::me,
        tenants::my_tenants, tenants::get_tenant, tenants::list_environments, tenants::create_environment,
        tenants::list_members, tenants::set_member, tenants::remove_member, tenants::audit,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::revisions, apps::instances, apps::endpoints, apps::events, apps::conditions, apps::action, apps::scale, apps::check_placement, apps::logs, apps::apply_manifests, secrets::list, secrets::set, secrets::delete,
        autoscaling::get, autoscaling::set, autoscaling::delete, autoscaling::preview, autoscaling::what_if, autoscaling::decisions, releases::list, releases::create, releases::get, releases::act, releases::get_policy, releases::set_policy, releases::queue, releases::promote, releases::by_id, releases::override_freeze, packages::upload, packages::list, tenants::quota, admin::set_quota,
        admin::list_tenants, admin::create_tenant, admin::list_users, admin::create_user, admin::update_user,
        admin::audit, admin::rotate_keys, admin::runtimes, admin::confirm_node_lost, admin::cordon_node, admin::drain_node, admin::cordon_node_by_name, admin::drain_node_by_name,
        services::register_broker, services::list_brokers, services::get_broker, services::refresh_broker, services::delete_broker, services::set_plan_access,
        services::catalog, services::list_instances, services::provision, services::get_instance, services::update_instance, services::deprovision, services::list_bindings, services::bind, services::unbind,
        bundles::available, bundles::installed, bundles::install, bundles::get, bundles::uninstall,
    ),
    modifiers(&BearerAuth, &EveryStatus, &Links),
    tags(
        (name = "auth", description = "Tokens and identity"),
        (name = "tenants"), (name = "environments"), (name = "members"), (name = "applications"), (name = "packages", description = "Package archives the local runtime unpacks and runs"), (name = "audit"), (name = "autoscaling", description = "Autoscaling policies, their preview and the decision ledger"), (name = "releases", description = "Releases of new revisions: strategies, approvals, freezes, rollbacks"),
        (name = "services", description = "The service catalog: brokers (Open Service Broker API), the marketplace, service instances"),
        (name = "bundles", description = "Domain bundles: services, applications and bindings installed and upgraded as one"),
        (name = "admin", description = "Platform administration"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds to every operation the answers the server's shared layers give it, so that the
/// document lists every status an operation can return, each with the error body:
/// credentials (401), role (403), absent objects (404), bodies (400, 413, 415, 422),
/// parameters (422), the login limiter (429) and an unreachable dependency (503, with
/// `Retry-After`). The rules follow the layers: the extractors and middleware that
/// give these answers are the same for every route.
struct EveryStatus;

impl EveryStatus {
    fn answers(path: &str, method: &str, op: &utoipa::openapi::path::Operation) -> Vec<u16> {
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let json_body = op
            .request_body
            .as_ref()
            .is_some_and(|b| b.content.contains_key("application/json"));
        let any_body = op.request_body.is_some();
        let has_parameters = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
        let has_if_match = op.parameters.iter().flatten().any(|p| p.name == "If-Match");
        let mut codes = Vec::new();
        if path.ends_with("/openapi.json") {
            return codes;
        }
        if secured {
            codes.push(401);
            if method != "get" || path.starts_with("/api/v1/admin") {
                codes.push(403);
            }
        }
        if path.contains('{') {
            codes.push(404);
        }
        if json_body {
            codes.extend([400, 415]);
        }
        if any_body {
            codes.extend([413, 422]);
        }
        if has_parameters {
            codes.push(422);
        }
        if has_if_match {
            codes.push(400);
        }
        if path.ends_with("/auth/token") {
            codes.extend([401, 422, 429]);
        }
        codes.push(503);
        codes
    }
}

impl Modify for EveryStatus {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, schema};
        for (path, item) in &mut openapi.paths.paths {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                // A NUL cannot be stored and is refused in every parameter (by name,
                // before any handler runs); the schemas say so.
                for parameter in op.parameters.iter_mut().flatten() {
                    if let Some(utoipa::openapi::RefOr::T(schema::Schema::Object(object))) =
                        &mut parameter.schema
                    {
                        if parameter.name == "If-Match" {
                            // Optional, but never null: a header has no null.
                            object.schema_type = schema::SchemaType::Type(schema::Type::String);
                            object.pattern = Some(super::IF_MATCH_PATTERN.to_owned());
                            parameter.required = utoipa::openapi::Required::False;
                        }
                        let is_string = matches!(
                            &object.schema_type,
                            schema::SchemaType::Type(schema::Type::String)
                        ) || matches!(&object.schema_type, schema::SchemaType::Array(types) if types.contains(&schema::Type::String));
                        if is_string && object.pattern.is_none() {
                            object.pattern = Some(NO_NUL.to_owned());
                        }
                    }
                }
                for code in Self::answers(path, method, op) {
                    let key = code.to_string();
                    if op.responses.responses.contains_key(&key) {
                        continue;
                    }
                    let mut response = ResponseBuilder::new().description(describe(code)).content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    );
                    if matches!(code, 429 | 503) {
                        response = response.header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(schema::Object::with_type(schema::Type::Integer))
                                .description(Some("Seconds to wait before retrying"))
                                .build(),
                        );
                    }
                    op.responses.responses.insert(key, response.build().into());
                }
            }
        }
    }
}

/// A linked operation and how its parameters are filled: `(name, runtime expression)`.
type LinkTo = (&'static str, Vec<(&'static str, &'static str)>);

/// Links from what creates an object to what reads and changes it, so that a client
/// (and the conformance run's stateful phase) knows which value fills which parameter.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::link::LinkBuilder;
        let app = [
            "get_application",
            "update_application",
            "delete_application",
            "list_revisions",
            "list_instances",
            "list_events",
            "list_conditions",
            "list_endpoints",
            "scale_application",
            "list_secrets",
        ];
        let links: [(&str, &str, Vec<LinkTo>); 3] = [
            (
                "create_application",
                "201",
                app.iter()
                    .map(|op| {
                        (
                            *op,
                            vec![
                                ("tenant", "$request.path.tenant"),
                                ("env", "$response.body#/environment"),
                                ("app", "$response.body#/name"),
                            ],
                        )
                    })
                    .collect(),
            ),
            (
                "create_tenant",
                "201",
                vec![("set_tenant_quota", vec![("tenant", "$response.body#/slug")])],
            ),
            (
                "create_user",
                "201",
                vec![(
                    "update_user",
                    vec![("username", "$response.body#/username")],
                )],
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (from, status, targets) in &links {
                    if op.operation_id.as_deref() != Some(*from) {
                        continue;
                    }
                    let Some(utoipa::openapi::RefOr::T(response)) =
                        op.responses.responses.get_mut(*status)
                    else {
                        continue;
                    };
                    for (target, parameters) in targets {
                        let mut link = LinkBuilder::new().operation_id(*target);
                        for (name, expression) in parameters {
                            link = link.parameter(*name, *expression);
                        }
                        response
                            .links
                            .insert((*target).to_owned(), link.build().into());
                    }
                }
            }
        }
    }
}

/// The pattern of text that holds no NUL character.
const NO_NUL: &str = "^[^\\u0000]*$";

fn describe(code: u16) -> &'static str {
    match code {
        400 => {
            "The body is not well-formed JSON (`malformed_json`), or a header is malformed (`invalid_header`)"
        }
        401 => "No valid credentials (`unauthenticated`, `invalid_credentials`)",
        403 => "The caller's role does not allow it (`forbidden`)",
        404 => "No such object, or one of another tenant (`not_found`)",
        413 => "The body is too large (`payload_too_large`)",
        415 => "The body is not of the documented media type (`unsupported_media_type`)",
        422 => "A field or parameter is invalid (`invalid_field`, naming it)",
        429 => "Too many attempts (`too_many_requests`)",
        503 => "A dependency is unreachable (`database_unavailable`, `runtime_unavailable`)",
        _ => "Refused",
    }
}

/// The document as served: utoipa 5 writes a link's `operationId` as `operation_id`,
/// which OpenAPI does not know, so links are mended here.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|i| i.values_mut())
        {
            let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
            for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                let links = response.get_mut("links").and_then(|l| l.as_object_mut());
                for link in links.into_iter().flat_map(|l| l.values_mut()) {
                    if let Some(link) = link.as_object_mut()
                        && let Some(id) = link.remove("operation_id")
                    {
                        link.insert("operationId".to_owned(), id);
                    }
                }
            }
        }
    }
    doc
}

pub async fn document() -> Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(document_json).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_every_route_is_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let mut ids = Vec::new();
        for (_, item) in doc["paths"].as_object().into_iter().flatten() {
            for (_, op) in item.as_object().into_iter().flatten() {
                ids.extend(op["operationId"].as_str().map(str::to_owned));
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "duplicate operationIds");
        assert_eq!(count, 81, "documented operations: {ids:?}");
    }

    #[test]
    fn every_path_parameter_is_in_the_path_and_every_query_parameter_is_not() {
        let doc = document_json();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    let in_path = path.contains(&format!("{{{name}}}"));
                    let declared_path = p["in"] == "path";
                    assert_eq!(
                        in_path, declared_path,
                        "{method} {path}: {name} is {}",
                        p["in"]
                    );
                }
            }
        }
    }

    #[test]
    fn every_link_leads_to_an_operation_of_the_document() {
        let doc = document_json();
        let mut ids = std::collections::BTreeSet::new();
        let mut targets = Vec::new();
        for (_, item) in doc["paths"].as_object().into_iter().flatten() {
            for (_, op) in item.as_object().into_iter().flatten() {
                ids.extend(op["operationId"].as_str().map(str::to_owned));
                for (_, response) in op["responses"].as_object().into_iter().flatten() {
                    for (_, link) in response["links"].as_object().into_iter().flatten() {
                        targets.extend(link["operationId"].as_str().map(str::to_owned));
                    }
                }
            }
        }
        assert!(targets.len() >= 12, "{targets:?}");
        for target in targets {
            assert!(
                ids.contains(&target),
                "a link leads to no operation: {target}"
            );
        }
    }

    #[test]
    fn every_operation_documents_the_answers_of_the_shared_layers() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let op = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
        let update = op(
            "/api/v1/tenants/{tenant}/environments/{env}/applications/{app}",
            "put",
        );
        for code in [
            "200", "400", "401", "403", "404", "412", "413", "415", "422", "503",
        ] {
            assert!(update.get(code).is_some(), "update lacks {code}: {update}");
        }
        assert!(update["503"]["headers"].get("Retry-After").is_some());
        let token = op("/api/v1/auth/token", "post");
        assert!(token.get("429").is_some() && token.get("403").is_none());
        let me = op("/api/v1/me", "get");
        assert!(me.get("401").is_some() && me.get("404").is_none() && me.get("403").is_none());
    }
}
