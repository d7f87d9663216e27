//! One-click onboarding from templates.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Form};
use askama::Template;
use platform_core::model::{Environment, Tenant};
use platform_core::names::{AppName, EnvName};
use platform_core::platform::NewApplication;
use platform_core::{FieldError, templates};
use serde::Deserialize;

use super::{
    FormErrors, Layout, PageError, app_path, form_errors, render, render_with_status, see_other,
};
use crate::scope::PageTenant;
use crate::state::AppState;

/// A template as the onboarding page shows it.
#[derive(Debug, Clone)]
pub struct TemplateCard {
    pub id: String,
    pub title: String,
    pub description: String,
    pub default_name: String,
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
    scope: PageTenant,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
    scope: PageTenant,
    form: Form<OnboardForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
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
