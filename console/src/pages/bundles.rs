//! Domain bundles in the console: the bundles the platform offers (install into an
//! environment with one click, after a preview of what it adds), and the tenant's
//! installations with their components' states (preview and apply an upgrade,
//! uninstall).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path};
use askama::Template;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::Tenant;
use platform_core::platform::bundles::{
    BundleChange, BundleInfo, BundleInstallation, InstallBundle,
};
use serde::Deserialize;

use super::{FormErrors, Layout, PageError, form_errors, in_frame, render_with_status, see_other};
use crate::scope::PageTenant;
use crate::session::PageAuth;
use crate::state::AppState;

/// One line of a previewed diff.
#[derive(Debug, Clone)]
pub struct DiffLine {
    pub kind: String,
    pub name: String,
    pub change: String,
    pub fields: String,
}

/// What installing or upgrading would change.
#[derive(Debug, Clone)]
pub struct Preview {
    pub bundle: String,
    pub environment: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub lines: Vec<DiffLine>,
}

impl Preview {
    fn of(environment: &str, bundle: &str, change: &BundleChange) -> Self {
        let lines = serde_json::to_value(&change.diff)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|l| DiffLine {
                kind: l["kind"].as_str().unwrap_or_default().to_owned(),
                name: l["name"].as_str().unwrap_or_default().to_owned(),
                change: l["change"].as_str().unwrap_or_default().to_owned(),
                fields: l["fields"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            })
            .collect();
        Self {
            bundle: bundle.to_owned(),
            environment: environment.to_owned(),
            from_version: change.from_version.clone(),
            to_version: change.to_version.clone(),
            lines,
        }
    }
}

#[derive(Template)]
#[template(path = "bundles.html")]
struct BundlesPage {
    layout: Layout,
    tenant: Tenant,
    offered: Vec<BundleInfo>,
    installed: Vec<BundleInstallation>,
    environments: Vec<String>,
    can_install: bool,
    preview: Option<Preview>,
    /// Which form the errors are about (`<bundle>` or `<env>/<bundle>`).
    failed: String,
    errors: FormErrors,
}

impl BundlesPage {
    /// The newest version of an installed bundle, when it is not the installed one.
    fn newer(&self, installation: &BundleInstallation) -> Option<&str> {
        self.offered
            .iter()
            .find(|b| b.name == installation.bundle)
            .map(|b| b.latest.as_str())
            .filter(|latest| *latest != installation.version)
    }
}

async fn page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    preview: Option<Preview>,
    failed: String,
    errors: FormErrors,
) -> Result<BundlesPage, PageError> {
    let frame = in_frame(auth, access);
    let environments = state.platform.environments(access).await.map_err(&frame)?;
    Ok(BundlesPage {
        layout: Layout::for_tenant(&auth.0, access, "Bundles", "bundles"),
        tenant: access.tenant().clone(),
        offered: state.platform.available_bundles(),
        installed: state.platform.bundles(access).await.map_err(&frame)?,
        can_install: environments.iter().any(|e| {
            access.can(Permission::ChangeApps {
                protected_environment: e.protected,
            })
        }),
        environments: environments.into_iter().map(|e| e.name).collect(),
        preview,
        failed,
        errors,
    })
}

pub async fn bundles(state: Data<AppState>, scope: PageTenant) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    render_with_status(
        &page(
            &state,
            &auth,
            &access,
            None,
            String::new(),
            FormErrors::none(),
        )
        .await?,
        StatusCode::OK,
    )
}

#[derive(Debug, Deserialize)]
pub struct InstallForm {
    pub bundle: String,
    pub version: String,
    pub environment: String,
    /// `preview` or `install`.
    pub intent: String,
    /// Which form it came from (for where its errors show).
    #[serde(default)]
    pub form: String,
}

/// Previews, installs or upgrades a bundle.
pub async fn install(
    state: Data<AppState>,
    scope: PageTenant,
    form: Form<InstallForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let form = form.into_inner();
    let dry_run = form.intent != "install";
    let result = state
        .platform
        .install_bundle(
            &access,
            InstallBundle {
                bundle: form.bundle.clone(),
                version: Some(form.version.clone()).filter(|v| !v.is_empty()),
                environment: form.environment.clone(),
                dry_run,
            },
        )
        .await;
    match result {
        Ok(_) if !dry_run => Ok(see_other(&format!("/t/{}/bundles", access.tenant().slug))),
        Ok(change) => render_with_status(
            &page(
                &state,
                &auth,
                &access,
                Some(Preview::of(&form.environment, &form.bundle, &change)),
                String::new(),
                FormErrors::none(),
            )
            .await?,
            StatusCode::OK,
        ),
        Err(e) => {
            let errors = match e {
                platform_core::CoreError::NotFound {
                    kind: "environment",
                    ..
                } => FormErrors::from_field(platform_core::FieldError::new(
                    "environment",
                    "choose an environment of this tenant",
                )),
                e => form_errors(e)?,
            };
            let failed = if form.form.is_empty() {
                form.bundle.clone()
            } else {
                form.form.clone()
            };
            render_with_status(
                &page(&state, &auth, &access, None, failed, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct InstallationPath {
    pub tenant: String,
    pub env: String,
    pub bundle: String,
}

/// Uninstalls a bundle from an environment.
pub async fn uninstall(
    state: Data<AppState>,
    scope: PageTenant,
    path: Path<InstallationPath>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let path = path.into_inner();
    match state
        .platform
        .uninstall_bundle(&access, &path.env, &path.bundle)
        .await
    {
        Ok(_) => Ok(see_other(&format!("/t/{}/bundles", access.tenant().slug))),
        Err(e) => {
            let errors = form_errors(e)?;
            render_with_status(
                &page(
                    &state,
                    &auth,
                    &access,
                    None,
                    format!("{}/{}", path.env, path.bundle),
                    errors,
                )
                .await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}
