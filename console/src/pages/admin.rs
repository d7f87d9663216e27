//! Platform administration pages: tenants, users, the platform audit log.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::FieldError;
use platform_core::model::{AuditFilter, Tenant, User};
use platform_core::names::{DisplayName, Password, TenantSlug, Username};
use platform_core::platform::{NewTenant, NewUser};
use serde::Deserialize;

use super::AuditPage;
use super::{FormErrors, Layout, PageError, form_errors, render, render_with_status, see_other};
use crate::session::PageAuth;
use crate::state::AppState;

fn fail(auth: &PageAuth, title: &str) -> impl Fn(platform_core::CoreError) -> PageError {
    let layout = Layout::for_user(&auth.0, title.to_owned(), "");
    move |e| PageError::from(e).within(layout.clone())
}

#[derive(Debug, Default, Deserialize)]
pub struct TenantForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    admin: String,
}

#[derive(Template)]
#[template(path = "admin_tenants.html")]
struct TenantsPage {
    layout: Layout,
    tenants: Vec<Tenant>,
    form: TenantForm,
    errors: FormErrors,
}

async fn tenants_page(
    state: &AppState,
    auth: &PageAuth,
    form: TenantForm,
    errors: FormErrors,
) -> Result<TenantsPage, PageError> {
    Ok(TenantsPage {
        layout: Layout::for_user(&auth.0, "Tenants", "admin-tenants"),
        tenants: state
            .platform
            .all_tenants(&auth.0.principal)
            .await
            .map_err(fail(auth, "Tenants"))?,
        form,
        errors,
    })
}

#[derive(Template)]
#[template(path = "admin_runtimes.html")]
struct RuntimesPage {
    layout: Layout,
    runtimes: Vec<platform_core::platform::RuntimeOverview>,
    notice: Option<String>,
    error: Option<String>,
}

async fn runtimes_page(
    state: &AppState,
    auth: &PageAuth,
    notice: Option<String>,
    error: Option<String>,
) -> Result<RuntimesPage, PageError> {
    Ok(RuntimesPage {
        layout: Layout::for_user(&auth.0, "Runtimes", "admin-runtimes"),
        runtimes: state
            .platform
            .runtime_overview(&auth.0.principal)
            .await
            .map_err(fail(auth, "Runtimes"))?,
        notice,
        error,
    })
}

/// The runtimes this control plane drives and their nodes.
pub async fn runtimes(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&runtimes_page(&state, &auth, None, None).await?)
}

/// Confirms a silent node lost (platform administrators), saying what will move.
pub async fn confirm_node_lost(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (runtime, node) = path.into_inner();
    match state
        .platform
        .confirm_node_lost(&auth.0.principal, &runtime, &node)
        .await
    {
        Ok(loss) => {
            let notice = if loss.stateful_moved.is_empty() {
                format!("{node} is confirmed lost: its instances start on other nodes.")
            } else {
                format!(
                    "{node} is confirmed lost: its instances start on other nodes; the stateful ones ({}) from {} on, with empty data directories (their data stays on {node}).",
                    loss.stateful_moved.join(", "),
                    loss.moves_after.format("%H:%M:%S UTC")
                )
            };
            render(&runtimes_page(&state, &auth, Some(notice), None).await?)
        }
        Err(
            e @ (platform_core::CoreError::Conflict { .. }
            | platform_core::CoreError::NotFound { .. }),
        ) => render_with_status(
            &runtimes_page(&state, &auth, None, Some(e.to_string())).await?,
            StatusCode::CONFLICT,
        ),
        Err(e) => Err(fail(&auth, "Runtimes")(e)),
    }
}

/// Cordons or uncordons a node (platform administrators).
pub async fn cordon_node(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (runtime, node, action) = path.into_inner();
    let cordoned = match action.as_str() {
        "cordon" => true,
        "uncordon" => false,
        _ => {
            return Err(fail(&auth, "Runtimes")(
                platform_core::CoreError::not_found("action", action),
            ));
        }
    };
    match state
        .platform
        .set_node_cordoned(&auth.0.principal, &runtime, &node, cordoned)
        .await
    {
        Ok(()) => {
            let notice = if cordoned {
                format!("{node} is cordoned: it takes no new instances; what runs there stays.")
            } else {
                format!("{node} is uncordoned: it takes new instances again.")
            };
            render(&runtimes_page(&state, &auth, Some(notice), None).await?)
        }
        Err(
            e @ (platform_core::CoreError::Conflict { .. }
            | platform_core::CoreError::NotFound { .. }),
        ) => render_with_status(
            &runtimes_page(&state, &auth, None, Some(e.to_string())).await?,
            StatusCode::CONFLICT,
        ),
        Err(e) => Err(fail(&auth, "Runtimes")(e)),
    }
}

pub async fn tenants(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&tenants_page(&state, &auth, TenantForm::default(), FormErrors::none()).await?)
}

pub async fn create_tenant(
    state: Data<AppState>,
    auth: PageAuth,
    form: Form<TenantForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let parsed = (|| {
        Ok::<_, FieldError>(NewTenant {
            slug: TenantSlug::parse(form.slug.trim())?,
            display_name: DisplayName::parse(&form.display_name)?,
            admin: Some(form.admin.trim())
                .filter(|a| !a.is_empty())
                .map(Username::parse)
                .transpose()
                .map_err(|e| e.for_field("admin"))?,
        })
    })();
    let result = match parsed {
        Ok(input) => state
            .platform
            .create_tenant(&auth.0.principal, input)
            .await
            .map(|_| ()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other("/admin/tenants")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Tenants", "admin-tenants")))?;
            render_with_status(
                &tenants_page(&state, &auth, form, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct UserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    platform_admin: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<User>,
    form: UserForm,
    errors: FormErrors,
}

async fn users_page(
    state: &AppState,
    auth: &PageAuth,
    form: UserForm,
    errors: FormErrors,
) -> Result<UsersPage, PageError> {
    Ok(UsersPage {
        layout: Layout::for_user(&auth.0, "Users", "admin-users"),
        users: state
            .platform
            .users(&auth.0.principal)
            .await
            .map_err(fail(auth, "Users"))?,
        // The password is never echoed back into the page.
        form: UserForm {
            password: String::new(),
            ..form
        },
        errors,
    })
}

pub async fn users(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(&users_page(&state, &auth, UserForm::default(), FormErrors::none()).await?)
}

pub async fn create_user(
    state: Data<AppState>,
    auth: PageAuth,
    form: Form<UserForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let parsed = (|| {
        Ok::<_, FieldError>(NewUser {
            username: Username::parse(form.username.trim())?,
            display_name: DisplayName::parse(&form.display_name)?,
            password: Password::parse_new(&form.password)?,
            platform_admin: form.platform_admin,
        })
    })();
    let result = match parsed {
        Ok(input) => state
            .platform
            .create_user(&auth.0.principal, input)
            .await
            .map(|_| ()),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => Ok(see_other("/admin/users")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Users", "admin-users")))?;
            render_with_status(
                &users_page(&state, &auth, form, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

pub async fn set_user_state(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<(String, String)>,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let (username, action) = path.into_inner();
    let version = form
        .version()
        .map_err(|e| PageError::from(platform_core::CoreError::from(e)))?;
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(PageError::not_found()),
    };
    match state
        .platform
        .set_user_disabled(&auth.0.principal, &username, disabled, version)
        .await
    {
        Ok(_) => Ok(see_other("/admin/users")),
        Err(e) => {
            let errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_user(&auth.0, "Users", "admin-users")))?;
            render_with_status(
                &users_page(&state, &auth, UserForm::default(), errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

pub async fn audit(
    state: Data<AppState>,
    auth: PageAuth,
    filter: Query<AuditFilter>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let entries = state
        .platform
        .platform_audit(&auth.0.principal, &filter)
        .await
        .map_err(fail(&auth, "Platform audit"))?;
    let page = AuditPage::new(
        Layout::for_user(&auth.0, "Platform audit", "admin-audit"),
        "Platform".to_owned(),
        "/admin/audit".to_owned(),
        &filter,
        entries,
    );
    page.respond(&req)
}
