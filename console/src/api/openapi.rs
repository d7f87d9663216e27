//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::web::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, apps, auth, tenants};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "PaaS API", description = "Tenants, environments, members, applications, revisions and audit of the PaaS. Errors are always `{\"error\": \"snake_case_code\", \"message\": \"...\"}`."),
    paths(
        auth::issue_token, auth::me,
        tenants::my_tenants, tenants::get_tenant, tenants::list_environments, tenants::create_environment,
        tenants::list_members, tenants::set_member, tenants::remove_member, tenants::audit,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::revisions,
        admin::list_tenants, admin::create_tenant, admin::list_users, admin::create_user, admin::update_user,
        admin::audit, admin::rotate_keys,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Tokens and identity"),
        (name = "tenants"), (name = "environments"), (name = "members"), (name = "applications"), (name = "audit"),
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
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
