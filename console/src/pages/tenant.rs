//! Tenant pages: dashboard, applications, environments, members, audit log.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::{
    Application, AuditEntry, AuditFilter, Environment, Member, Role, Tenant,
};
use platform_core::names::{EnvName, parse_description};
use platform_core::platform::{AppQuery, NewEnvironment};
use serde::Deserialize;

use super::{
    AuditPage, FormErrors, Layout, PageError, form_errors, in_frame, render, render_with_status,
    see_other, wants_fragment,
};
use crate::scope::{PageTenant, UsernameSegment};
use crate::session::PageAuth;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    tenant: Tenant,
    role: Role,
    /// Applications the autoscaler moved in the last 15 minutes.
    scaling: Vec<platform_core::platform::autoscaling::RecentScaling>,
    counts: Vec<(String, i64)>,
    members: usize,
    recent: Vec<AuditEntry>,
    can_audit: bool,
    quota: platform_core::quota::Quota,
    usage: platform_core::quota::Usage,
}

pub async fn dashboard(
    state: Data<AppState>,
    scope: PageTenant,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let fail = in_frame(&auth, &access);
    let counts = state
        .platform
        .application_counts(&access)
        .await
        .map_err(&fail)?;
    let members = state.platform.members(&access).await.map_err(&fail)?.len();
    let can_audit = access.can(Permission::ViewAudit);
    let (quota, usage, _) = state.platform.quota(&access).await.map_err(&fail)?;
    let scaling = state
        .platform
        .recent_scaling(&access)
        .await
        .map_err(&fail)?;
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
        scaling,
        counts,
        members,
        recent,
        can_audit,
        quota,
        usage,
    })
}

#[derive(Template)]
#[template(path = "apps.html")]
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

/// The applications table alone, for htmx requests (the page includes the same file).
#[derive(Template)]
#[template(path = "apps_table.html")]
struct AppsTable<'a> {
    tenant: &'a Tenant,
    apps: &'a [Application],
    filter: &'a str,
    search: &'a str,
    next_url: &'a Option<String>,
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
    scope: PageTenant,
    query: Query<AppsQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let fail = in_frame(&auth, &access);
    let filter = query.environment.clone().unwrap_or_default();
    let search = query.q.clone().unwrap_or_default();
    let app_query = AppQuery {
        environment: Some(filter.clone()),
        search: Some(search.clone()),
        after: query.after.clone(),
        ..AppQuery::default()
    };
    // Two independent reads, at the same time.
    let (found, environments) = futures_util::try_join!(
        state.platform.applications(&access, &app_query),
        state.platform.environments(&access),
    )
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
        environments,
        apps: found.items,
        filter,
        search,
        next_url,
        paged: query.after.as_deref().is_some_and(|a| !a.is_empty()),
    };
    if wants_fragment(&req) {
        render(&AppsTable {
            tenant: &page.tenant,
            apps: &page.apps,
            filter: &page.filter,
            search: &page.search,
            next_url: &page.next_url,
            paged: page.paged,
        })
    } else {
        render(&page)
    }
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
    scope: PageTenant,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
    scope: PageTenant,
    form: Form<EnvForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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

pub async fn members(state: Data<AppState>, scope: PageTenant) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    render(&members_page(&state, &auth, &access, String::new(), FormErrors::none()).await?)
}

#[derive(Debug, Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    role: String,
    /// The membership's version when the page was opened (empty when adding).
    #[serde(default)]
    version: String,
}

pub async fn set_member(
    state: Data<AppState>,
    scope: PageTenant,
    form: Form<MemberForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let result = match (
        form.role.parse::<Role>(),
        super::parse_version(&form.version),
    ) {
        (Ok(role), Ok(version)) => state
            .platform
            .set_member_role(&access, form.username.trim(), role, version)
            .await
            .map(|_| ()),
        (Err(e), _) | (_, Err(e)) => Err(e.into()),
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
    scope: PageTenant,
    segment: Path<UsernameSegment>,
    form: Form<super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let tenant = access.tenant().slug.clone();
    let username = segment.into_inner().username;
    let removed = match form.version() {
        Ok(version) => {
            state
                .platform
                .remove_member(&access, &username, version)
                .await
        }
        Err(e) => Err(e.into()),
    };
    match removed {
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

pub async fn audit(
    state: Data<AppState>,
    scope: PageTenant,
    filter: Query<AuditFilter>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
