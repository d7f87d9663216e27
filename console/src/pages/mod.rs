//! The server-rendered console: askama templates driven by htmx, readable without
//! JavaScript. Every handler sits beside the template struct it renders.

pub mod admin;
pub mod app;
pub mod auth;
pub mod bundles;
pub mod onboard;
pub mod releases;
pub mod services;
pub mod tenant;

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::{AuditEntry, AuditFilter, Role, TenantMembership};
use platform_core::{CoreError, FieldError};
use serde::Deserialize;

use crate::session::{Authenticated, PageAuth};

/// What every page's frame needs: the user, their tenants, the current tenant.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub csrf: String,
    pub user: Option<UserNav>,
    pub tenant: Option<TenantNav>,
    pub active: &'static str,
}

#[derive(Debug, Clone)]
pub struct UserNav {
    pub username: String,
    pub display_name: String,
    pub platform_admin: bool,
    pub tenants: Vec<TenantMembership>,
}

#[derive(Debug, Clone)]
pub struct TenantNav {
    pub slug: String,
    pub display_name: String,
    pub role: Role,
    pub can_audit: bool,
}

impl Layout {
    pub fn anonymous(title: &str, csrf: String) -> Self {
        Self {
            title: title.to_owned(),
            csrf,
            user: None,
            tenant: None,
            active: "",
        }
    }

    pub fn for_user(auth: &Authenticated, title: impl Into<String>, active: &'static str) -> Self {
        let p = &auth.principal;
        Self {
            title: title.into(),
            csrf: auth.claims.csrf.clone(),
            user: Some(UserNav {
                username: p.username.clone(),
                display_name: p.display_name.clone(),
                platform_admin: p.is_platform_admin(),
                tenants: p.memberships().to_vec(),
            }),
            tenant: None,
            active,
        }
    }

    pub fn for_tenant(
        auth: &Authenticated,
        access: &TenantAccess,
        title: impl Into<String>,
        active: &'static str,
    ) -> Self {
        let tenant = access.tenant();
        Self {
            tenant: Some(TenantNav {
                slug: tenant.slug.clone(),
                display_name: tenant.display_name.clone(),
                role: access.role(),
                can_audit: access.can(Permission::ViewAudit),
            }),
            ..Self::for_user(auth, title, active)
        }
    }
}

/// Field errors of a submitted form, keyed by field path (`name`, `spec.replicas`).
/// Errors that belong to no input are kept under `""` and shown above the form.
#[derive(Debug, Clone, Default)]
pub struct FormErrors(BTreeMap<String, String>);

impl FormErrors {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn from_field(e: FieldError) -> Self {
        let mut errors = Self::default();
        errors.0.insert(e.field, e.message);
        errors
    }

    pub fn general_message(message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.0.insert(String::new(), message.into());
        errors
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Every message with its field (the empty field: about the whole form).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn get_prefix(&self, prefix: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.0.keys().any(|k| k.starts_with(prefix))
    }

    /// The first error, field and message.
    pub fn first(&self) -> Option<(&str, &str)> {
        self.0.iter().next().map(|(f, m)| (f.as_str(), m.as_str()))
    }

    pub fn general(&self) -> Option<&str> {
        self.get("")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Turns a core error from a form submission into inline errors, or passes it on
/// when it is not about the form (not found, forbidden, storage).
pub fn form_errors(e: CoreError) -> Result<FormErrors, PageError> {
    match e {
        CoreError::Invalid(field) => Ok(FormErrors::from_field(field)),
        CoreError::Conflict { field, message } => {
            Ok(FormErrors::from_field(FieldError::new(field, message)))
        }
        CoreError::Forbidden { .. }
        | CoreError::NotPermitted(_)
        | CoreError::WrongState(_)
        | CoreError::QuotaExceeded { .. }
        | CoreError::Infeasible { .. }
        | CoreError::VersionMismatch { .. }
        | CoreError::BrokerUnavailable(_) => Ok(FormErrors::general_message(e.to_string())),
        other => Err(PageError::from(other)),
    }
}

/// The hidden `version` of a form that changes an object: the version the page was
/// opened at, which the change must still find.
#[derive(Debug, Deserialize)]
pub struct VersionForm {
    #[serde(default)]
    pub version: String,
}

impl VersionForm {
    pub fn version(&self) -> Result<Option<i64>, FieldError> {
        parse_version(&self.version)
    }
}

/// JSON typed into a form, read with the failing field named: `root` when the text as a
/// whole is wrong, else the path within it (under `prefix`, when given).
pub fn parse_json_field<T: serde::de::DeserializeOwned>(
    text: &str,
    root: &str,
    prefix: Option<&str>,
) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = match (path.as_str(), prefix) {
            ("." | "", _) => root.to_owned(),
            (_, Some(prefix)) => format!("{prefix}.{path}"),
            (_, None) => path,
        };
        FieldError::new(field, e.into_inner().to_string())
    })
}

/// A form's hidden `version`: empty is none (the form does not hold one).
pub fn parse_version(text: &str) -> Result<Option<i64>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| FieldError::new("version", "must be the version the page was opened at"))
}

/// A failed page: rendered as the console's error page with the matching status.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    heading: &'static str,
    message: String,
    layout: Option<Box<Layout>>,
    /// Seconds to wait before retrying (`Retry-After`), for a dependency that is down.
    retry_after: Option<u64>,
}

impl PageError {
    pub fn new(status: StatusCode, heading: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            heading,
            message: message.into(),
            layout: None,
            retry_after: None,
        }
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here, or you do not have access to it.",
        )
    }

    /// Shows the error inside the user's console frame instead of a bare page.
    pub fn within(mut self, layout: Layout) -> Self {
        self.layout = Some(Box::new(layout));
        self
    }
}

impl From<CoreError> for PageError {
    fn from(e: CoreError) -> Self {
        let api = crate::error::ApiError::from(e);
        let heading = match api.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::SERVICE_UNAVAILABLE => "Temporarily unavailable",
            s if s.is_server_error() => "Something went wrong",
            _ => "Request refused",
        };
        Self {
            retry_after: api.retry_after,
            ..Self::new(api.status, heading, api.message)
        }
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    layout: &'a Layout,
    heading: &'a str,
    message: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let fallback = Layout::anonymous(self.heading, String::new());
        let layout = self.layout.as_deref().unwrap_or(&fallback);
        let page = ErrorPage {
            layout,
            heading: self.heading,
            message: &self.message,
        };
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        match page.render() {
            Ok(body) => response.content_type(ContentType::html()).body(body),
            Err(_) => response
                .content_type(ContentType::plaintext())
                .body(self.message.clone()),
        }
    }
}

/// Renders a template as a full page.
pub fn render(template: &impl Template) -> Result<HttpResponse, PageError> {
    render_with_status(template, StatusCode::OK)
}

pub fn render_with_status(
    template: &impl Template,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let body = template.render().map_err(|e| {
        tracing::error!(error = %e, "template rendering failed");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "the page could not be rendered",
        )
    })?;
    Ok(HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(body))
}

/// Whether htmx asked for a fragment (a targeted swap), as opposed to a boosted
/// navigation or a plain browser request, which get the whole page.
pub fn wants_fragment(req: &HttpRequest) -> bool {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()) == Some("true");
    header("HX-Request") && !header("HX-Boosted")
}

/// The console path of an application's page.
pub fn app_path(tenant: &str, environment: &str, name: &str) -> String {
    format!("/t/{tenant}/environments/{environment}/apps/{name}")
}

/// A redirect after a successful form post (303, so the browser GETs the target).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location.to_owned()))
        .finish()
}

/// Errors of a tenant page, shown in the tenant's frame.
pub(crate) fn in_frame(
    auth: &PageAuth,
    access: &TenantAccess,
) -> impl Fn(platform_core::CoreError) -> PageError {
    let layout = Layout::for_tenant(&auth.0, access, "Error", "");
    move |e| PageError::from(e).within(layout.clone())
}

#[derive(Template)]
#[template(path = "audit.html")]
/// An audit log page, of a tenant or of the whole platform.
pub(crate) struct AuditPage {
    pub layout: Layout,
    pub scope_label: String,
    pub base: String,
    pub entries: Vec<AuditEntry>,
    pub filter_actor: String,
    pub filter_action: String,
    pub filter_target: String,
    pub older: Option<i64>,
}

/// The audit entries alone, for htmx requests (the page includes the same file).
#[derive(Template)]
#[template(path = "audit_rows.html")]
struct AuditRows<'a> {
    base: &'a str,
    entries: &'a [AuditEntry],
    filter_actor: &'a str,
    filter_action: &'a str,
    filter_target: &'a str,
    older: &'a Option<i64>,
}

impl AuditPage {
    pub fn new(
        layout: Layout,
        scope_label: String,
        base: String,
        filter: &AuditFilter,
        entries: Vec<AuditEntry>,
    ) -> Self {
        let limit = filter.limit.unwrap_or(50).clamp(1, 200);
        let older = (entries.len() as i64 == limit)
            .then(|| entries.last().map(|e| e.id))
            .flatten();
        Self {
            layout,
            scope_label,
            base,
            entries,
            filter_actor: filter.actor.clone().unwrap_or_default(),
            filter_action: filter.action.clone().unwrap_or_default(),
            filter_target: filter.target.clone().unwrap_or_default(),
            older,
        }
    }

    pub fn respond(&self, req: &HttpRequest) -> Result<HttpResponse, PageError> {
        if wants_fragment(req) {
            render(&AuditRows {
                base: &self.base,
                entries: &self.entries,
                filter_actor: &self.filter_actor,
                filter_action: &self.filter_action,
                filter_target: &self.filter_target,
                older: &self.older,
            })
        } else {
            render(self)
        }
    }
}

/// Console routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(crate::session::MAX_FORM_BYTES)
            .error_handler(|err, _| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    "Request refused",
                    format!("the form could not be read: {err}"),
                )
                .into()
            }),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Request refused",
            format!("the query string could not be read: {err}"),
        )
        .into()
    }))
    .route("/", web::get().to(auth::home))
    .route("/login", web::get().to(auth::login_form))
    .route("/login", web::post().to(auth::login))
    .route("/logout", web::post().to(auth::logout))
    .route("/t/{tenant}", web::get().to(tenant::dashboard))
    .route("/t/{tenant}/apps", web::get().to(tenant::apps))
    .route(
        "/t/{tenant}/marketplace",
        web::get().to(services::marketplace),
    )
    .route("/t/{tenant}/bundles", web::get().to(bundles::bundles))
    .route("/t/{tenant}/bundles", web::post().to(bundles::install))
    .route(
        "/t/{tenant}/bundles/{env}/{bundle}/uninstall",
        web::post().to(bundles::uninstall),
    )
    .route("/t/{tenant}/services", web::get().to(services::services))
    .route("/t/{tenant}/services", web::post().to(services::provision))
    .route(
        "/t/{tenant}/services/{env}/{service_instance}/{action}",
        web::post().to(services::instance_action),
    )
    .route("/t/{tenant}/apps/new", web::get().to(app::new_app_form))
    .route("/t/{tenant}/apps/new", web::post().to(app::create_app))
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}",
        web::get().to(app::app),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}",
        web::post().to(app::update_app),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/delete",
        web::post().to(app::delete_app),
    )
    .route(
        "/t/{tenant}/environments",
        web::get().to(tenant::environments),
    )
    .route(
        "/t/{tenant}/environments",
        web::post().to(tenant::create_environment),
    )
    .route(
        "/t/{tenant}/environments/{env}/release-policy",
        web::get().to(releases::release_policy),
    )
    .route(
        "/t/{tenant}/environments/{env}/release-policy",
        web::post().to(releases::save_release_policy),
    )
    .route("/t/{tenant}/members", web::get().to(tenant::members))
    .route("/t/{tenant}/members", web::post().to(tenant::set_member))
    .route(
        "/t/{tenant}/members/{username}/remove",
        web::post().to(tenant::remove_member),
    )
    .route("/t/{tenant}/audit", web::get().to(tenant::audit))
    .route("/t/{tenant}/onboard", web::get().to(onboard::onboard_form))
    .route("/t/{tenant}/onboard", web::post().to(onboard::onboard))
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/live",
        web::get().to(app::live),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/autoscaling",
        web::get().to(app::autoscaling),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/autoscaling",
        web::post().to(app::save_autoscaling),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/autoscaling/live",
        web::get().to(app::autoscaling_live),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/autoscaling/delete",
        web::post().to(app::delete_autoscaling),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/scale",
        web::post().to(app::scale),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/secrets",
        web::post().to(app::set_secret),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/secrets/{secret}/delete",
        web::post().to(app::delete_secret),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/action/{action}",
        web::post().to(app::action),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/instances/{instance}/logs",
        web::get().to(app::logs),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/releases/{id}",
        web::get().to(app::release),
    )
    .route(
        "/t/{tenant}/environments/{env}/apps/{app}/releases/{id}/{action}",
        web::post().to(app::act_on_release),
    )
    .route("/releases", web::get().to(releases::queue))
    .route("/admin/tenants", web::get().to(admin::tenants))
    .route("/admin/tenants", web::post().to(admin::create_tenant))
    .route("/admin/users", web::get().to(admin::users))
    .route("/admin/users", web::post().to(admin::create_user))
    .route(
        "/admin/users/{username}/{action}",
        web::post().to(admin::set_user_state),
    )
    .route("/admin/audit", web::get().to(admin::audit))
    .route("/admin/runtimes", web::get().to(admin::runtimes))
    .route("/admin/brokers", web::get().to(services::brokers))
    .route("/admin/brokers", web::post().to(services::register_broker))
    .route(
        "/admin/brokers/{broker}/{action}",
        web::post().to(services::broker_action),
    )
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
    );
}
