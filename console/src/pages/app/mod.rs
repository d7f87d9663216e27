//! Application pages: creating one, its page and spec form, deleting it, its secrets,
//! lifecycle actions, scaling and instance logs.

mod autoscaling;
mod form;
mod live;
pub(crate) mod releases;

pub use self::autoscaling::{autoscaling, autoscaling_live, delete_autoscaling, save_autoscaling};
pub use self::releases::{act as act_on_release, release};

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::{ApplicationDetail, Environment, Revision, Role, Tenant};
use platform_core::names::{AppName, EnvName, parse_description};
use platform_core::platform::NewApplication;
use platform_core::{CoreError, FieldError};
use serde::Deserialize;

use self::form::{AppForm, KINDS};
use self::live::{LiveFragment, LivePanel, live_panel};
use super::{
    FormErrors, Layout, PageError, app_path, form_errors, in_frame, render, render_with_status,
    see_other, wants_fragment,
};
use crate::scope::{ActionSegment, InstanceSegment, PageApp, PageTenant, SecretSegment};
use crate::session::PageAuth;
use crate::state::AppState;

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
    scope: PageTenant,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
    scope: PageTenant,
    form: Form<AppForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
        Ok(input) => {
            state
                .platform
                .create_application_placed(&access, input, form.force())
                .await
        }
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
    live: LivePanel,
    base: String,
    tenant: Tenant,
    role: Role,
    app: ApplicationDetail,
    revisions: Vec<Revision>,
    /// The newest releases.
    releases: Vec<platform_core::platform::releases::Release>,
    secrets: Vec<platform_core::model::SecretInfo>,
    can_change: bool,
    /// May change the spec only as a request that waits for approval.
    can_request: bool,
    approval_required: bool,
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
    let live = live_panel(state, access, env, name).await.map_err(&fail)?;
    let mut releases = state
        .platform
        .releases(access, env, name)
        .await
        .map_err(&fail)?;
    releases.truncate(10);
    let secrets = state
        .platform
        .secrets(access, env, name)
        .await
        .map_err(&fail)?;
    let can_change = access.can(Permission::ChangeApps {
        protected_environment: environment.protected,
    });
    let approval_required = state
        .platform
        .release_policy(access, env)
        .await
        .map_err(&fail)?
        .policy
        .approval
        .required;
    Ok(AppPage {
        secrets,
        live,
        base: format!("/t/{}/environments/{env}/apps/{name}", access.tenant().slug),
        layout: Layout::for_tenant(&auth.0, access, app.application.name.clone(), "apps"),
        tenant: access.tenant().clone(),
        role: access.role(),
        can_change,
        can_request: !can_change && approval_required,
        approval_required,
        form: form.unwrap_or_else(|| AppForm::from_detail(&app)),
        app,
        revisions,
        releases,
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

pub async fn app(state: Data<AppState>, scope: PageApp) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
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
    scope: PageApp,
    form: Form<AppForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let mut form = form.into_inner();
    let result = match (
        form.spec(),
        parse_description(&form.description),
        form.version(),
    ) {
        (Ok(spec), Ok(description), Ok(version)) => state
            .platform
            .update_application_placed(
                &access,
                &env,
                &name,
                spec,
                Some(description),
                version,
                form.force(),
            )
            .await
            .map(|_| ()),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{tenant}/environments/{env}/apps/{name}"
        ))),
        Err(e) => {
            if let CoreError::VersionMismatch {
                current: Some(current),
                ..
            } = &e
            {
                // The form keeps what the user typed; saving it again overwrites the
                // other change, knowingly.
                form.version = current.to_string();
            }
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_tenant(&auth.0, &access, "Error", "apps")))?;
            let page = app_page(&state, &auth, &access, &env, &name, Some(form), errors).await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

pub async fn delete_app(
    state: Data<AppState>,
    scope: PageApp,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let version =
        super::parse_version(&form.version).map_err(|e| in_frame(&auth, &access)(e.into()))?;
    state
        .platform
        .delete_application(&access, &env, &name, version)
        .await
        .map_err(in_frame(&auth, &access))?;
    Ok(see_other(&format!("/t/{tenant}/apps")))
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
    scope: PageApp,
    form: Form<SecretForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let form = form.into_inner();
    let value = platform_core::sealing::SecretValue::new(form.value);
    let result = state
        .platform
        .set_secret(&access, &env, &name, form.name.trim(), value, None)
        .await;
    secret_outcome(&state, &auth, &access, &env, &name, result.map(|_| ())).await
}

/// Removes a secret from the application page.
pub async fn delete_secret(
    state: Data<AppState>,
    scope: PageApp,
    segment: Path<SecretSegment>,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let secret = segment.into_inner().secret;
    let result = match form.version() {
        Ok(version) => {
            state
                .platform
                .delete_secret(&access, &env, &name, &secret, version)
                .await
        }
        Err(e) => Err(e.into()),
    };
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

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    layout: Layout,
    base: String,
    app: String,
    instance: String,
    tail: usize,
    lines: Vec<String>,
    error: Option<String>,
}

/// The log lines alone, for htmx requests (the page includes the same file).
#[derive(Template)]
#[template(path = "logs_lines.html")]
struct LogsLines<'a> {
    lines: &'a [String],
    error: &'a Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    tail: Option<usize>,
}

pub async fn logs(
    state: Data<AppState>,
    scope: PageApp,
    segment: Path<InstanceSegment>,
    query: Query<LogsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let instance = segment.into_inner().instance;
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
        render(&LogsLines {
            lines: &page.lines,
            error: &page.error,
        })
    } else {
        render(&page)
    }
}

pub async fn live(state: Data<AppState>, scope: PageApp) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth: _,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let live = live_panel(&state, &access, &env, &name).await?;
    render(&LiveFragment {
        live,
        base: app_path(&tenant, &env, &name),
    })
}

pub async fn action(
    state: Data<AppState>,
    scope: PageApp,
    segment: Path<ActionSegment>,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let action = segment.into_inner().action;
    let layout = Layout::for_tenant(&auth.0, &access, "Error", "apps");
    let version = match super::parse_version(&form.version) {
        Ok(v) => v,
        Err(e) => return Err(PageError::from(CoreError::from(e)).within(layout)),
    };
    let result = match action.as_str() {
        "start" => {
            state
                .platform
                .set_running(&access, &env, &name, true, version)
                .await
        }
        "stop" => {
            state
                .platform
                .set_running(&access, &env, &name, false, version)
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
    #[serde(default)]
    version: String,
}

pub async fn scale(
    state: Data<AppState>,
    scope: PageApp,
    form: Form<ScaleForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app: name,
    } = scope;
    let tenant = access.tenant().slug.clone();
    let result = match (
        form.replicas.trim().parse::<u32>(),
        super::parse_version(&form.version),
    ) {
        (Ok(n), Ok(version)) => {
            state
                .platform
                .scale_placed(&access, &env, &name, n, version, false)
                .await
        }
        (Err(_), _) => {
            Err(FieldError::new("replicas", "must be a whole number from 0 to 100").into())
        }
        (_, Err(e)) => Err(e.into()),
    };
    // The scale form shows its errors under itself.
    let result = result.map_err(|e| match e {
        CoreError::VersionMismatch { .. } | CoreError::Infeasible { .. } => {
            FieldError::new("replicas", e.to_string()).into()
        }
        other => other,
    });
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{tenant}/environments/{env}/apps/{name}"
        ))),
        Err(e) => {
            let errors = form_errors(e)?;
            let page = app_page_with_errors(&state, &auth, &access, &env, &name, errors).await?;
            render_with_status(&page, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}
