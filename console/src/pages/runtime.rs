//! What runs: the live panel of an application page (instances, URL, events), the
//! lifecycle actions, one-click onboarding from templates, and instance logs.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::authz::TenantAccess;
use platform_core::model::{AppEvent, Environment, Tenant};
use platform_core::names::{AppName, EnvName};
use platform_core::platform::NewApplication;
use platform_core::runtime::{Instance, Phase};
use platform_core::spec::PortProtocol;
use platform_core::{CoreError, FieldError, templates};
use serde::Deserialize;

use super::tenant::access;
use super::{
    FormErrors, Layout, PageError, app_path, form_errors, render, render_with_status, see_other,
    wants_fragment,
};
use crate::session::PageAuth;
use crate::state::AppState;

/// An instance as the console shows it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub name: String,
    pub revision: i32,
    pub node: Option<String>,
    pub address: Option<String>,
    pub phase: &'static str,
    pub phase_class: &'static str,
    pub ready: bool,
    pub restarts: u32,
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
    pub message: Option<String>,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        let (phase, phase_class) = match i.phase {
            Phase::Pending => ("pending", ""),
            Phase::Starting => ("starting", "warn"),
            Phase::Running => ("running", "ok"),
            Phase::BackOff => ("crash-loop back-off", "off"),
            Phase::Stopping => ("stopping", ""),
            Phase::Succeeded => ("succeeded", "ok"),
            Phase::Failed => ("failed", "off"),
            Phase::Unknown => ("unknown", "warn"),
        };
        Self {
            name: i.name,
            revision: i.revision,
            node: i.node,
            address: i.address,
            phase,
            phase_class,
            ready: i.ready,
            restarts: i.restarts,
            cpu_millis: i.cpu_millis,
            memory_mib: i.memory_mib,
            message: i.message,
        }
    }
}

/// The live part of an application page, refreshed every two seconds by htmx.
#[derive(Debug, Clone)]
pub struct LivePanel {
    pub running: bool,
    pub desired: u32,
    pub ready: usize,
    pub serves_http: bool,
    pub url: Option<String>,
    pub path_url: Option<String>,
    pub instances: Vec<InstanceView>,
    pub events: Vec<AppEvent>,
    /// Stable addresses (TCP ports, per ordinal of a stateful application).
    pub endpoints: Vec<platform_core::runtime::Endpoint>,
}

pub async fn live_panel(
    state: &AppState,
    access: &TenantAccess,
    env: &str,
    name: &str,
) -> Result<LivePanel, CoreError> {
    let detail = state.platform.application(access, env, name).await?;
    let instances = state.platform.instances(access, env, name).await?;
    let events = state.platform.events(access, env, name, 30).await?;
    let endpoints = state.platform.endpoints(access, env, name).await?;
    let app = &detail.application;
    let running = app.run_state == platform_core::model::RunState::Running;
    let desired =
        platform_core::model::desired_replicas(app.run_state, app.scaled_replicas, &detail.spec);
    let ready = instances.iter().filter(|i| i.ready).count();
    let serves_http = detail
        .spec
        .ports
        .iter()
        .any(|p| p.protocol == PortProtocol::Http);
    let router = state
        .config
        .router_url
        .as_deref()
        .filter(|_| serves_http && ready > 0);
    let tenant = &access.tenant().slug;
    let url = router.map(|r| {
        let port = r
            .rsplit_once(':')
            .map_or("80", |(_, p)| p.trim_end_matches('/'));
        format!(
            "http://{}.{}.{}.localhost:{port}/",
            app.name, app.environment, tenant
        )
    });
    let path_url = router.map(|r| {
        format!(
            "{}/apps/{tenant}/{}/{}/",
            r.trim_end_matches('/'),
            app.environment,
            app.name
        )
    });
    Ok(LivePanel {
        running,
        desired,
        ready,
        serves_http,
        url,
        path_url,
        instances: instances.into_iter().map(InstanceView::from).collect(),
        events,
        endpoints,
    })
}

#[derive(Template)]
#[template(path = "_live.html")]
struct LiveFragment {
    live: LivePanel,
    base: String,
}

pub async fn live(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let live = live_panel(&state, &access, &env, &name).await?;
    render(&LiveFragment {
        live,
        base: app_path(&tenant, &env, &name),
    })
}

pub async fn action(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name, action) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let layout = Layout::for_tenant(&auth.0, &access, "Error", "apps");
    let result = match action.as_str() {
        "start" => state.platform.set_running(&access, &env, &name, true).await,
        "stop" => {
            state
                .platform
                .set_running(&access, &env, &name, false)
                .await
        }
        "restart" => state.platform.restart(&access, &env, &name).await,
        _ => return Err(PageError::not_found().within(layout)),
    };
    result.map_err(|e| PageError::from(e).within(layout))?;
    Ok(see_other(&format!(
        "/t/{tenant}/environments/{env}/apps/{name}"
    )))
}

#[derive(Debug, Deserialize)]
pub struct ScaleForm {
    #[serde(default)]
    replicas: String,
}

pub async fn scale(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
    form: Form<ScaleForm>,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let result = match form.replicas.trim().parse::<u32>() {
        Ok(n) => state.platform.scale(&access, &env, &name, n).await,
        Err(_) => Err(FieldError::new("replicas", "must be a whole number from 0 to 100").into()),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{tenant}/environments/{env}/apps/{name}"
        ))),
        Err(e) => {
            let errors = form_errors(e)?;
            let page =
                super::tenant::app_page_with_errors(&state, &auth, &access, &env, &name, errors)
                    .await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

/// A template as the onboarding page shows it.
#[derive(Debug, Clone)]
pub struct TemplateCard {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub default_name: &'static str,
}

#[derive(Template)]
#[template(path = "onboard.html")]
struct OnboardPage {
    layout: Layout,
    tenant: Tenant,
    environments: Vec<Environment>,
    templates: Vec<TemplateCard>,
    chosen: String,
    name: String,
    errors: FormErrors,
}

fn cards() -> Vec<TemplateCard> {
    templates::all()
        .into_iter()
        .map(|t| TemplateCard {
            id: t.id,
            title: t.title,
            description: t.description,
            default_name: t.default_name,
        })
        .collect()
}

pub async fn onboard_form(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    render(&OnboardPage {
        layout: Layout::for_tenant(&auth.0, &access, "Onboard", "apps"),
        tenant: access.tenant().clone(),
        environments: state.platform.environments(&access).await?,
        templates: cards(),
        chosen: String::new(),
        name: String::new(),
        errors: FormErrors::none(),
    })
}

#[derive(Debug, Deserialize)]
pub struct OnboardForm {
    #[serde(default)]
    template: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    environment: String,
}

/// One click: the template's spec, the chosen name and environment, and off it goes.
pub async fn onboard(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<String>,
    form: Form<OnboardForm>,
) -> Result<HttpResponse, PageError> {
    let access = access(&state, &auth, &path).await?;
    let form = form.into_inner();
    let template = templates::find(&form.template).ok_or_else(PageError::not_found)?;
    let input = (|| {
        Ok::<_, FieldError>(NewApplication {
            environment: EnvName::parse(&form.environment)
                .map_err(|e| e.for_field("environment"))?,
            name: AppName::parse(form.name.trim())?,
            description: template.description.to_owned(),
            spec: template.spec.clone(),
        })
    })();
    let result = match input {
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
            let errors = form_errors(e)?;
            let page = OnboardPage {
                layout: Layout::for_tenant(&auth.0, &access, "Onboard", "apps"),
                tenant: access.tenant().clone(),
                environments: state.platform.environments(&access).await?,
                templates: cards(),
                chosen: form.template,
                name: form.name,
                errors: if errors.get("name").is_some() {
                    errors
                } else {
                    FormErrors::general_message(errors_text(&errors))
                },
            };
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

fn errors_text(errors: &FormErrors) -> String {
    errors.first().map_or_else(
        || "the application could not be created".to_owned(),
        |(f, m)| {
            if f.is_empty() {
                m.to_owned()
            } else {
                format!("{f}: {m}")
            }
        },
    )
}

#[derive(Template)]
#[template(path = "logs.html", blocks = ["lines"])]
struct LogsPage {
    layout: Layout,
    base: String,
    app: String,
    instance: String,
    tail: usize,
    lines: Vec<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    tail: Option<usize>,
}

pub async fn logs(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String, String)>,
    query: Query<LogsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let (tenant, env, name, instance) = path.into_inner();
    let access = access(&state, &auth, &tenant).await?;
    let tail = query.tail.unwrap_or(200).clamp(1, 5000);
    let (lines, error) = match state
        .platform
        .logs(&access, &env, &name, &instance, tail)
        .await
    {
        Ok(lines) => (lines, None),
        Err(CoreError::NotFound { .. }) => {
            return Err(PageError::not_found().within(Layout::for_tenant(
                &auth.0,
                &access,
                "Not found",
                "apps",
            )));
        }
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let page = LogsPage {
        layout: Layout::for_tenant(&auth.0, &access, format!("Logs of {instance}"), "apps"),
        base: app_path(&tenant, &env, &name),
        app: name,
        instance,
        tail,
        lines,
        error,
    };
    if wants_fragment(&req) {
        render(&page.as_lines())
    } else {
        render(&page)
    }
}
