//! Tenant pages: dashboard, applications, environments, members, audit log.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::FieldError;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::{
    Application, ApplicationDetail, AuditEntry, AuditFilter, Environment, Member, Revision, Role,
    Tenant,
};
use platform_core::names::{AppName, EnvName, parse_description};
use platform_core::platform::{AppQuery, NewApplication, NewEnvironment};
use platform_core::spec::{AppSpec, HealthSpec, PortProtocol, PortSpec, Resources, WorkloadKind};
use serde::Deserialize;

use super::{
    FormErrors, Layout, PageError, app_path, form_errors, render, render_with_status, see_other,
    wants_fragment,
};
use crate::session::PageAuth;
use crate::state::AppState;

const KINDS: [&str; 5] = ["service", "stateful", "job", "cronjob", "daemon"];

/// Proof of access to a tenant, or the not-found page in the user's frame.
pub(super) async fn access(
    state: &AppState,
    auth: &PageAuth,
    slug: &str,
) -> Result<TenantAccess, PageError> {
    state
        .platform
        .tenant(&auth.0.principal, slug)
        .await
        .map_err(|e| PageError::from(e).within(Layout::for_user(&auth.0, "Not found", "")))
}

fn in_frame(
    auth: &PageAuth,
    access: &TenantAccess,
) -> impl Fn(platform_core::CoreError) -> PageError {
    let layout = Layout::for_tenant(&auth.0, access, "Error", "");
    move |e| PageError::from(e).within(layout.clone())
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    tenant: Tenant,
    role: Role,
    counts: Vec<(String, i64)>,
    members: usize,
    recent: Vec<AuditEntry>,
    can_audit: bool,
    quota: platform_core::quota::Quota,
    usage: platform_core::quota::Usage,
}

pub async fn dashboard(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let fail = in_frame(&auth, &access);
    let counts = state
        .platform
        .application_counts(&access)
        .await
        .map_err(&fail)?;
    let members = state.platform.members(&access).await.map_err(&fail)?.len();
    let can_audit = access.can(Permission::ViewAudit);
    let (quota, usage) = state.platform.quota(&access).await.map_err(&fail)?;
    let recent = if can_audit {
        let filter = AuditFilter {
            limit: Some(8),
            ..AuditFilter::default()
        };
        state
            .platform
            .tenant_audit(&access, &filter)
            .await
            .map_err(&fail)?
    } else {
        Vec::new()
    };
    render(&DashboardPage {
        layout: Layout::for_tenant(
            &auth.0,
            &access,
            access.tenant().display_name.clone(),
            "dashboard",
        ),
        tenant: access.tenant().clone(),
        role: access.role(),
        counts,
        members,
        recent,
        can_audit,
        quota,
        usage,
    })
}

#[derive(Template)]
#[template(path = "apps.html", blocks = ["table"])]
struct AppsPage {
    layout: Layout,
    tenant: Tenant,
    environments: Vec<Environment>,
    apps: Vec<Application>,
    filter: String,
    search: String,
    /// The next page's address, when there is one.
    next_url: Option<String>,
    /// Whether this is a later page (a link back to the first).
    paged: bool,
}

#[derive(Debug, Deserialize)]
pub struct AppsQuery {
    environment: Option<String>,
    q: Option<String>,
    after: Option<String>,
}

pub async fn apps(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    query: Query<AppsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let fail = in_frame(&auth, &access);
    let filter = query.environment.clone().unwrap_or_default();
    let search = query.q.clone().unwrap_or_default();
    let found = state
        .platform
        .applications(
            &access,
            &AppQuery {
                environment: Some(filter.clone()),
                search: Some(search.clone()),
                after: query.after.clone(),
                ..AppQuery::default()
            },
        )
        .await
        .map_err(&fail)?;
    let next_url = found.next.map(|after| {
        let params = serde_urlencoded::to_string([
            ("environment", filter.as_str()),
            ("q", search.as_str()),
            ("after", after.as_str()),
        ])
        .unwrap_or_default();
        format!("/t/{}/apps?{params}", access.tenant().slug)
    });
    let page = AppsPage {
        layout: Layout::for_tenant(&auth.0, &access, "Applications", "apps"),
        tenant: access.tenant().clone(),
        environments: state.platform.environments(&access).await.map_err(&fail)?,
        apps: found.items,
        filter,
        search,
        next_url,
        paged: query.after.as_deref().is_some_and(|a| !a.is_empty()),
    };
    if wants_fragment(&req) {
        render(&page.as_table())
    } else {
        render(&page)
    }
}

/// The application form as typed: every field a string, so that a wrong value comes
/// back to the user as typed, with a message beside it.
#[derive(Debug, Clone, Deserialize)]
pub struct AppForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    replicas: String,
    #[serde(default)]
    cpu_millis: String,
    #[serde(default)]
    memory_mib: String,
    #[serde(default)]
    schedule: String,
    /// "true" when the application serves HTTP on `$PORT`.
    #[serde(default)]
    serves_http: String,
    #[serde(default)]
    health_path: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    limit_cpu_millis: String,
    #[serde(default)]
    limit_memory_mib: String,
}

impl Default for AppForm {
    fn default() -> Self {
        let defaults = Resources::default();
        Self {
            name: String::new(),
            environment: "dev".to_owned(),
            description: String::new(),
            kind: "service".to_owned(),
            command: String::new(),
            args: String::new(),
            env: String::new(),
            replicas: "1".to_owned(),
            cpu_millis: defaults.cpu_millis.to_string(),
            memory_mib: defaults.memory_mib.to_string(),
            schedule: String::new(),
            serves_http: "true".to_owned(),
            health_path: String::new(),
            image: String::new(),
            package: String::new(),
            limit_cpu_millis: String::new(),
            limit_memory_mib: String::new(),
        }
    }
}

impl AppForm {
    fn from_detail(detail: &ApplicationDetail) -> Self {
        let spec = &detail.spec;
        Self {
            name: detail.application.name.clone(),
            environment: detail.application.environment.clone(),
            description: detail.application.description.clone(),
            kind: spec.kind.as_str().to_owned(),
            command: spec.command.clone(),
            args: spec.args.join("\n"),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            replicas: spec.replicas.to_string(),
            cpu_millis: spec.resources.cpu_millis.to_string(),
            memory_mib: spec.resources.memory_mib.to_string(),
            schedule: spec.schedule.clone().unwrap_or_default(),
            serves_http: if spec.ports.iter().any(|p| p.protocol == PortProtocol::Http) {
                "true"
            } else {
                ""
            }
            .to_owned(),
            health_path: spec
                .health
                .readiness
                .as_ref()
                .and_then(|r| r.http_path.clone())
                .unwrap_or_default(),
            image: spec.image.clone().unwrap_or_default(),
            package: spec.package.clone().unwrap_or_default(),
            limit_cpu_millis: spec
                .limits
                .cpu_millis
                .map(|v| v.to_string())
                .unwrap_or_default(),
            limit_memory_mib: spec
                .limits
                .memory_mib
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }
    }

    pub fn serves_http(&self) -> bool {
        self.serves_http == "true"
    }

    /// Reads the spec fields; errors name the same paths as the API (`spec.replicas`).
    fn spec(&self) -> Result<AppSpec, FieldError> {
        let number = |field: &str, value: &str| {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| FieldError::new(format!("spec.{field}"), "must be a whole number"))
        };
        let mut env = std::collections::BTreeMap::new();
        for line in self.env.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| {
                FieldError::new(
                    "spec.env",
                    format!("'{line}' is not of the form NAME=value"),
                )
            })?;
            env.insert(key.trim().to_owned(), value.to_owned());
        }
        let optional_number = |field: &str, value: &str| {
            Some(value.trim())
                .filter(|v| !v.is_empty())
                .map(|v| number(field, v))
                .transpose()
        };
        let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let spec = AppSpec {
            package: text(&self.package),
            image: text(&self.image),
            limits: platform_core::spec::Limits {
                cpu_millis: optional_number("limits.cpu_millis", &self.limit_cpu_millis)?,
                memory_mib: optional_number("limits.memory_mib", &self.limit_memory_mib)?,
            },
            kind: WorkloadKind::parse(&self.kind).map_err(|e| e.under("spec"))?,
            command: self.command.trim().to_owned(),
            args: self
                .args
                .lines()
                .map(|l| l.trim_end_matches('\r').to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            env,
            replicas: number("replicas", &self.replicas)?,
            resources: Resources {
                cpu_millis: number("resources.cpu_millis", &self.cpu_millis)?,
                memory_mib: number("resources.memory_mib", &self.memory_mib)?,
            },
            schedule: Some(self.schedule.trim().to_owned()).filter(|s| !s.is_empty()),
            ports: if self.serves_http() {
                vec![PortSpec {
                    name: "http".to_owned(),
                    protocol: PortProtocol::Http,
                }]
            } else {
                Vec::new()
            },
            health: HealthSpec {
                readiness: Some(self.health_path.trim())
                    .filter(|p| !p.is_empty())
                    .map(|p| serde_json::from_value(serde_json::json!({"http_path": p})))
                    .transpose()
                    .map_err(|e| FieldError::new("spec.health.readiness", e.to_string()))?,
                liveness: None,
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[derive(Template)]
#[template(path = "app_new.html")]
struct NewAppPage {
    layout: Layout,
    tenant: Tenant,
    environments: Vec<Environment>,
    form: AppForm,
    errors: FormErrors,
    kinds: [&'static str; 5],
}

pub async fn new_app_form(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let environments = state
        .platform
        .environments(&access)
        .await
        .map_err(in_frame(&auth, &access))?;
    render(&NewAppPage {
        layout: Layout::for_tenant(&auth.0, &access, "New application", "apps"),
        tenant: access.tenant().clone(),
        environments,
        form: AppForm::default(),
        errors: FormErrors::none(),
        kinds: KINDS,
    })
}

pub async fn create_app(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    form: Form<AppForm>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let fail = in_frame(&auth, &access);
    let form = form.into_inner();
    let parsed = (|| {
        Ok::<_, FieldError>(NewApplication {
            environment: EnvName::parse(&form.environment)
                .map_err(|e| e.for_field("environment"))?,
            name: AppName::parse(form.name.trim())?,
            description: parse_description(&form.description)?,
            spec: form.spec()?,
        })
    })();
    let result = match parsed {
        Ok(input) => state.platform.create_application(&access, input).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(detail) => Ok(see_other(&app_path(
            &access.tenant().slug,
            &detail.application.environment,
            &detail.application.name,
        ))),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_tenant(&auth.0, &access, "Error", "apps")))?;
            let page = NewAppPage {
                layout: Layout::for_tenant(&auth.0, &access, "New application", "apps"),
                tenant: access.tenant().clone(),
                environments: state.platform.environments(&access).await.map_err(&fail)?,
                form,
                errors,
                kinds: KINDS,
            };
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

#[derive(Template)]
#[template(path = "app.html")]
pub(super) struct AppPage {
    layout: Layout,
    live: super::runtime::LivePanel,
    base: String,
    tenant: Tenant,
    role: Role,
    app: ApplicationDetail,
    revisions: Vec<Revision>,
    secrets: Vec<platform_core::model::SecretInfo>,
    can_change: bool,
    form: AppForm,
    errors: FormErrors,
    kinds: [&'static str; 5],
}

async fn app_page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    env: &str,
    name: &str,
    form: Option<AppForm>,
    errors: FormErrors,
) -> Result<AppPage, PageError> {
    let fail = in_frame(auth, access);
    let app = state
        .platform
        .application(access, env, name)
        .await
        .map_err(&fail)?;
    let environment = state
        .platform
        .environment(access, env)
        .await
        .map_err(&fail)?;
    let revisions = state
        .platform
        .revisions(access, env, name)
        .await
        .map_err(&fail)?;
    let live = super::runtime::live_panel(state, access, env, name)
        .await
        .map_err(&fail)?;
    let secrets = state
        .platform
        .secrets(access, env, name)
        .await
        .map_err(&fail)?;
    Ok(AppPage {
        secrets,
        live,
        base: format!("/t/{}/environments/{env}/apps/{name}", access.tenant().slug),
        layout: Layout::for_tenant(&auth.0, access, app.application.name.clone(), "apps"),
        tenant: access.tenant().clone(),
        role: access.role(),
        can_change: access.can(Permission::ChangeApps {
            protected_environment: environment.protected,
        }),
        form: form.unwrap_or_else(|| AppForm::from_detail(&app)),
        app,
        revisions,
        errors,
        kinds: KINDS,
    })
}

/// The application page with errors from a form other than the spec form.
pub(super) async fn app_page_with_errors(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    env: &str,
    name: &str,
    errors: FormErrors,
) -> Result<AppPage, PageError> {
    app_page(state, auth, access, env, name, None, errors).await
}

pub async fn app(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    render(
        &app_page(
            &state,
            &auth,
            &access,
            &env,
            &name,
            None,
            FormErrors::none(),
        )
        .await?,
    )
}

pub async fn update_app(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
    form: Form<AppForm>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let form = form.into_inner();
    let result = match (form.spec(), parse_description(&form.description)) {
        (Ok(spec), Ok(description)) => state
            .platform
            .update_application(&access, &env, &name, spec, Some(description))
            .await
            .map(|_| ()),
        (Err(e), _) | (_, Err(e)) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{tenant}/environments/{env}/apps/{name}"
        ))),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_tenant(&auth.0, &access, "Error", "apps")))?;
            let page = app_page(&state, &auth, &access, &env, &name, Some(form), errors).await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

pub async fn delete_app(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    state
        .platform
        .delete_application(&access, &env, &name)
        .await
        .map_err(in_frame(&auth, &access))?;
    Ok(see_other(&format!("/t/{tenant}/apps")))
}

#[derive(Debug, Default, Deserialize)]
pub struct EnvForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    runtime: Option<String>,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct EnvironmentsPage {
    layout: Layout,
    tenant: Tenant,
    environments: Vec<Environment>,
    can_manage: bool,
    /// The runtimes an environment may use.
    runtimes: Vec<String>,
    form: EnvForm,
    errors: FormErrors,
}

async fn environments_page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    form: EnvForm,
    errors: FormErrors,
) -> Result<EnvironmentsPage, PageError> {
    Ok(EnvironmentsPage {
        layout: Layout::for_tenant(&auth.0, access, "Environments", "environments"),
        tenant: access.tenant().clone(),
        environments: state
            .platform
            .environments(access)
            .await
            .map_err(in_frame(auth, access))?,
        can_manage: access.can(Permission::ManageEnvironments),
        runtimes: {
            let names: Vec<String> = state
                .platform
                .runtimes()
                .names()
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                vec!["local".to_owned()]
            } else {
                names
            }
        },
        form,
        errors,
    })
}

pub async fn environments(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    render(
        &environments_page(
            &state,
            &auth,
            &access,
            EnvForm::default(),
            FormErrors::none(),
        )
        .await?,
    )
}

pub async fn create_environment(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    form: Form<EnvForm>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let form = form.into_inner();
    let result = match (
        EnvName::parse(form.name.trim()),
        parse_description(&form.description),
    ) {
        (Ok(name), Ok(description)) => state
            .platform
            .create_environment(
                &access,
                NewEnvironment {
                    name,
                    description,
                    protected: form.protected,
                    runtime: form.runtime.clone().filter(|r| !r.is_empty()),
                },
            )
            .await
            .map(|_| ()),
        (Err(e), _) | (_, Err(e)) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{}/environments",
            access.tenant().slug
        ))),
        Err(e) => {
            let errors = form_errors(e)?;
            render_with_status(
                &environments_page(&state, &auth, &access, form, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    layout: Layout,
    tenant: Tenant,
    members: Vec<Member>,
    can_manage: bool,
    roles: [Role; 3],
    errors: FormErrors,
    form_username: String,
}

async fn members_page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    form_username: String,
    errors: FormErrors,
) -> Result<MembersPage, PageError> {
    Ok(MembersPage {
        layout: Layout::for_tenant(&auth.0, access, "Members", "members"),
        tenant: access.tenant().clone(),
        members: state
            .platform
            .members(access)
            .await
            .map_err(in_frame(auth, access))?,
        can_manage: access.can(Permission::ManageMembers),
        roles: Role::ALL,
        errors,
        form_username,
    })
}

pub async fn members(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    render(&members_page(&state, &auth, &access, String::new(), FormErrors::none()).await?)
}

#[derive(Debug, Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
}

pub async fn set_member(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    form: Form<MemberForm>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let result = match form.role.parse::<Role>() {
        Ok(role) => state
            .platform
            .set_member_role(&access, form.username.trim(), role)
            .await
            .map(|_| ()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other(&format!("/t/{}/members", access.tenant().slug))),
        Err(e) => {
            let errors = form_errors(e)?;
            let page = members_page(&state, &auth, &access, form.username.clone(), errors).await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

pub async fn remove_member(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, username) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    match state.platform.remove_member(&access, &username).await {
        Ok(()) => Ok(see_other(&format!("/t/{tenant}/members"))),
        Err(e) => {
            let errors = form_errors(e)?;
            let errors = if errors.general().is_none() {
                FormErrors::general_message(
                    errors
                        .get("role")
                        .or(errors.get("username"))
                        .unwrap_or("the member could not be removed"),
                )
            } else {
                errors
            };
            let page = members_page(&state, &auth, &access, String::new(), errors).await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html", blocks = ["rows"])]
pub(super) struct AuditPage {
    pub layout: Layout,
    pub scope_label: String,
    pub base: String,
    pub entries: Vec<AuditEntry>,
    pub filter_actor: String,
    pub filter_action: String,
    pub filter_target: String,
    pub older: Option<i64>,
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
            render(&self.as_rows())
        } else {
            render(self)
        }
    }
}

pub async fn audit(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    filter: Query<AuditFilter>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let entries = state
        .platform
        .tenant_audit(&access, &filter)
        .await
        .map_err(in_frame(&auth, &access))?;
    let page = AuditPage::new(
        Layout::for_tenant(&auth.0, &access, "Audit log", "audit"),
        access.tenant().display_name.clone(),
        format!("/t/{}/audit", access.tenant().slug),
        &filter,
        entries,
    );
    page.respond(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_in_the_form_keeps_every_field_the_form_shows() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "command": "./run.sh", "args": ["--port", "$PORT"], "image": "shop/web:1.2",
            "package": format!("sha256:{}", "b".repeat(64)), "env": {"A": "1"}, "replicas": 3,
            "resources": {"cpu_millis": 200, "memory_mib": 256},
            "limits": {"cpu_millis": 400, "memory_mib": 512},
            "ports": [{"name": "http"}], "health": {"readiness": {"http_path": "/healthz"}}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let now = chrono::Utc::now();
        let detail = ApplicationDetail {
            application: platform_core::model::Application {
                id: uuid::Uuid::nil(),
                tenant_id: uuid::Uuid::nil(),
                environment: "dev".into(),
                name: "web".into(),
                description: String::new(),
                current_revision: 1,
                run_state: platform_core::model::RunState::Running,
                scaled_replicas: None,
                created_at: now,
                updated_at: now,
            },
            spec: spec.clone(),
        };
        let form = AppForm::from_detail(&detail);
        assert_eq!(form.spec().unwrap_or_else(|e| panic!("{e:?}")), spec);
    }
}

#[derive(Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

impl std::fmt::Debug for SecretForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretForm")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Sets a secret from the application page; errors show beside the secret form.
pub async fn set_secret(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
    form: Form<SecretForm>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let form = form.into_inner();
    let value = platform_core::sealing::SecretValue::new(form.value);
    let result = state
        .platform
        .set_secret(&access, &env, &name, form.name.trim(), value)
        .await;
    secret_outcome(&state, &auth, &access, &env, &name, result.map(|_| ())).await
}

/// Removes a secret from the application page.
pub async fn delete_secret(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name, secret) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let result = state
        .platform
        .delete_secret(&access, &env, &name, &secret)
        .await;
    secret_outcome(&state, &auth, &access, &env, &name, result).await
}

async fn secret_outcome(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    env: &str,
    name: &str,
    result: Result<(), platform_core::CoreError>,
) -> Result<HttpResponse, PageError> {
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{}/environments/{env}/apps/{name}#secrets",
            access.tenant().slug
        ))),
        Err(e) => {
            // The secret form's fields are named apart from the spec form's.
            let e = match e {
                platform_core::CoreError::Invalid(field) => {
                    let renamed = format!("secret_{}", field.field);
                    platform_core::CoreError::Invalid(field.for_field(renamed))
                }
                other => other,
            };
            let errors = form_errors(e).map_err(|e| {
                e.within(Layout::for_tenant(&auth.0, access, name.to_owned(), "apps"))
            })?;
            render_with_status(
                &app_page_with_errors(state, auth, access, env, name, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}
