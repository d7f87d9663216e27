//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::web::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, apps, auth, packages, secrets, tenants};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "PaaS API", description = "Tenants, environments, members, applications, revisions and audit of the PaaS. Errors are always `{\"error\": \"snake_case_code\", \"message\": \"...\"}`."),
    paths(
        auth::issue_token, auth::me,
        tenants::my_tenants, tenants::get_tenant, tenants::list_environments, tenants::create_environment,
        tenants::list_members, tenants::set_member, tenants::remove_member, tenants::audit,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::revisions, apps::instances, apps::endpoints, apps::events, apps::conditions, apps::action, apps::scale, apps::logs, apps::apply_manifests, secrets::list, secrets::set, secrets::delete, packages::upload, packages::list, tenants::quota, admin::set_quota,
        admin::list_tenants, admin::create_tenant, admin::list_users, admin::create_user, admin::update_user,
        admin::audit, admin::rotate_keys, admin::runtimes, admin::confirm_node_lost,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Tokens and identity"),
        (name = "tenants"), (name = "environments"), (name = "members"), (name = "applications"), (name = "packages", description = "Package archives the local runtime unpacks and runs"), (name = "audit"),
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

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
        assert_eq!(count, 40, "documented operations: {ids:?}");
    }
}
