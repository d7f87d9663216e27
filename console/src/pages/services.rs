//! The service catalog in the console: the marketplace (a card per service with its
//! broker's version, a provisioning form per plan generated from the plan's parameter
//! schema) and an environment's service instances with their state, last operation
//! and bindings (bind, unbind, deprovision).

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path, Query};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::FieldError;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::model::Tenant;
use platform_core::platform::AppQuery;
use platform_core::platform::services::{
    CatalogService, NewBinding, NewServiceInstance, ServiceBinding, ServiceInstance,
};
use serde::Deserialize;

use super::{
    FormErrors, Layout, PageError, form_errors, in_frame, render, render_with_status, see_other,
    wants_fragment,
};
use crate::scope::PageTenant;
use crate::session::PageAuth;
use crate::state::AppState;

/// An input the provisioning form shows for one parameter of a plan's schema.
#[derive(Debug, Clone)]
pub struct ParamField {
    pub name: String,
    /// `select`, `number`, `checkbox` or `text`.
    pub kind: &'static str,
    pub options: Vec<String>,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct PlanCard {
    pub name: String,
    pub description: String,
    pub free: bool,
    pub fields: Vec<ParamField>,
}

#[derive(Debug, Clone)]
pub struct ServiceCard {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub broker: String,
    pub version: String,
    pub tags: Vec<String>,
    pub plans: Vec<PlanCard>,
}

/// The inputs of a plan's schema (its top-level `properties`).
fn fields_of(schema: Option<&serde_json::Value>) -> Vec<ParamField> {
    let Some(properties) = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
    else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, p)| {
            let options: Vec<String> = p
                .get("enum")
                .and_then(|e| e.as_array())
                .map(|e| {
                    e.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let kind = if !options.is_empty() {
                "select"
            } else {
                match p.get("type").and_then(|t| t.as_str()) {
                    Some("integer" | "number") => "number",
                    Some("boolean") => "checkbox",
                    _ => "text",
                }
            };
            ParamField {
                name: name.clone(),
                kind,
                options,
                description: p
                    .get("description")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            }
        })
        .collect()
}

fn cards(services: Vec<CatalogService>) -> Vec<ServiceCard> {
    services
        .into_iter()
        .map(|s| ServiceCard {
            plans: s
                .plans
                .iter()
                .map(|p| PlanCard {
                    name: p.name.clone(),
                    description: p.description.clone(),
                    free: p.free,
                    fields: fields_of(p.create_schema.as_ref()),
                })
                .collect(),
            name: s.name,
            display_name: s.display_name,
            description: s.description,
            broker: s.broker,
            version: s.broker_version.unwrap_or_else(|| "unknown".into()),
            tags: s.tags,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "marketplace.html")]
struct MarketplacePage {
    layout: Layout,
    tenant: Tenant,
    services: Vec<ServiceCard>,
    environments: Vec<String>,
    can_provision: bool,
    /// Which plan's form the errors are about (`service/plan`).
    failed: String,
    form: Vec<(String, String)>,
    errors: FormErrors,
}

impl MarketplacePage {
    /// What the failed form held for `field`.
    fn value(&self, field: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == field)
            .map_or("", |(_, v)| v.as_str())
    }
}

async fn marketplace_page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    failed: String,
    form: Vec<(String, String)>,
    errors: FormErrors,
) -> Result<MarketplacePage, PageError> {
    let frame = in_frame(auth, access);
    let services = state
        .platform
        .catalog(&auth.0.principal, Some(&access.tenant().slug))
        .await
        .map_err(&frame)?;
    let environments = state.platform.environments(access).await.map_err(&frame)?;
    Ok(MarketplacePage {
        layout: Layout::for_tenant(&auth.0, access, "Marketplace", "marketplace"),
        tenant: access.tenant().clone(),
        services: cards(services),
        can_provision: environments.iter().any(|e| {
            access.can(Permission::ChangeApps {
                protected_environment: e.protected,
            })
        }),
        environments: environments.into_iter().map(|e| e.name).collect(),
        failed,
        form,
        errors,
    })
}

pub async fn marketplace(
    state: Data<AppState>,
    scope: PageTenant,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    render(
        &marketplace_page(
            &state,
            &auth,
            &access,
            String::new(),
            Vec::new(),
            FormErrors::none(),
        )
        .await?,
    )
}

/// A parameter typed into the form, read as the plan's schema types it.
fn parameter(field: &ParamField, text: &str) -> Result<Option<serde_json::Value>, FieldError> {
    let text = text.trim();
    match field.kind {
        "checkbox" => Ok(Some(serde_json::Value::Bool(matches!(text, "on" | "true")))),
        _ if text.is_empty() => Ok(None),
        "number" => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .or_else(|_| text.parse::<f64>().map(serde_json::Value::from))
            .map(Some)
            .map_err(|_| FieldError::new(format!("parameters.{}", field.name), "must be a number")),
        _ => Ok(Some(serde_json::Value::String(text.to_owned()))),
    }
}

/// Provisions an instance from a plan's card.
pub async fn provision(
    state: Data<AppState>,
    scope: PageTenant,
    form: Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let form = form.into_inner();
    let get = |k: &str| {
        form.iter()
            .find(|(f, _)| f == k)
            .map_or("", |(_, v)| v.as_str())
            .to_owned()
    };
    let (service, plan, environment) = (get("service"), get("plan"), get("environment"));
    let catalog = state
        .platform
        .catalog(&auth.0.principal, Some(&access.tenant().slug))
        .await
        .map_err(in_frame(&auth, &access))?;
    let fields = catalog
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.plans.iter().find(|p| p.name == plan))
        .map(|p| fields_of(p.create_schema.as_ref()))
        .unwrap_or_default();
    let mut parameters = serde_json::Map::new();
    let mut result = Ok(());
    for field in &fields {
        match parameter(field, &get(&format!("param.{}", field.name))) {
            Ok(Some(v)) => {
                parameters.insert(field.name.clone(), v);
            }
            Ok(None) => {}
            Err(e) => result = Err(e.into()),
        }
    }
    let result = match result {
        Ok(()) => state
            .platform
            .provision_service(
                &access,
                &environment,
                NewServiceInstance {
                    name: get("name").trim().to_owned(),
                    service: service.clone(),
                    plan: plan.clone(),
                    parameters: Some(parameters),
                },
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{}/services?environment={environment}",
            access.tenant().slug
        ))),
        Err(platform_core::CoreError::NotFound {
            kind: "environment",
            ..
        }) => {
            let errors = FormErrors::from_field(FieldError::new(
                "environment",
                "choose an environment of this tenant",
            ));
            render_with_status(
                &marketplace_page(
                    &state,
                    &auth,
                    &access,
                    format!("{service}/{plan}"),
                    form,
                    errors,
                )
                .await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => {
            let errors = form_errors(e)?;
            render_with_status(
                &marketplace_page(
                    &state,
                    &auth,
                    &access,
                    format!("{service}/{plan}"),
                    form,
                    errors,
                )
                .await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EnvQuery {
    #[serde(default)]
    environment: Option<String>,
}

/// An instance with its bindings, for the page.
struct InstanceRow {
    instance: ServiceInstance,
    bindings: Vec<ServiceBinding>,
}

/// The instances part of the page, also served alone to htmx while an operation runs
/// (it polls only then, so that nothing a user types is swapped away).
#[derive(Template)]
#[template(path = "services_list.html")]
struct ServicesList {
    csrf: String,
    slug: String,
    environment: String,
    instances: Vec<InstanceRow>,
    applications: Vec<String>,
    can_change: bool,
    /// Which instance's form the errors are about.
    failed: String,
    errors: FormErrors,
}

impl ServicesList {
    /// Whether any instance still waits for its broker.
    fn busy(&self) -> bool {
        self.instances.iter().any(|r| {
            r.instance.operation.is_some() || r.bindings.iter().any(|b| b.operation.is_some())
        })
    }

    fn app_path(&self, app: &str) -> String {
        super::app_path(&self.slug, &self.environment, app)
    }
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    layout: Layout,
    tenant: Tenant,
    environments: Vec<String>,
    environment: String,
    list: String,
}

async fn services_list(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    environment: Option<String>,
    failed: String,
    errors: FormErrors,
) -> Result<(Vec<String>, ServicesList), PageError> {
    let frame = in_frame(auth, access);
    let environments = state.platform.environments(access).await.map_err(&frame)?;
    let env = environment
        .and_then(|name| environments.iter().find(|e| e.name == name).cloned())
        .or_else(|| environments.first().cloned())
        .ok_or_else(|| frame(platform_core::CoreError::not_found("environment", "any")))?;
    let instances = state
        .platform
        .service_instances(access, &env.name)
        .await
        .map_err(&frame)?;
    let bindings = state
        .platform
        .environment_bindings(access, &env.name)
        .await
        .map_err(&frame)?;
    let applications = state
        .platform
        .applications(
            access,
            &AppQuery {
                environment: Some(env.name.clone()),
                search: None,
                after: None,
                limit: AppQuery::MAX_LIMIT,
            },
        )
        .await
        .map_err(&frame)?
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    Ok((
        environments.into_iter().map(|e| e.name).collect(),
        ServicesList {
            csrf: auth.0.claims.csrf.clone(),
            slug: access.tenant().slug.clone(),
            can_change: access.can(Permission::ChangeApps {
                protected_environment: env.protected,
            }),
            environment: env.name,
            instances: instances
                .into_iter()
                .map(|instance| InstanceRow {
                    bindings: bindings
                        .iter()
                        .filter(|b| b.instance == instance.name)
                        .cloned()
                        .collect(),
                    instance,
                })
                .collect(),
            applications,
            failed,
            errors,
        },
    ))
}

async fn services_page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    environment: Option<String>,
    failed: String,
    errors: FormErrors,
) -> Result<ServicesPage, PageError> {
    let (environments, list) =
        services_list(state, auth, access, environment, failed, errors).await?;
    Ok(ServicesPage {
        layout: Layout::for_tenant(&auth.0, access, "Services", "services"),
        tenant: access.tenant().clone(),
        environments,
        environment: list.environment.clone(),
        list: list
            .render()
            .map_err(|e| PageError::from(platform_core::CoreError::Internal(e.to_string())))?,
    })
}

pub async fn services(
    req: HttpRequest,
    state: Data<AppState>,
    scope: PageTenant,
    query: Query<EnvQuery>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let environment = query.into_inner().environment;
    if wants_fragment(&req) {
        let (_, list) = services_list(
            &state,
            &auth,
            &access,
            environment,
            String::new(),
            FormErrors::none(),
        )
        .await?;
        return render(&list);
    }
    render(
        &services_page(
            &state,
            &auth,
            &access,
            environment,
            String::new(),
            FormErrors::none(),
        )
        .await?,
    )
}

#[derive(Debug, Deserialize)]
pub struct InstanceActionForm {
    #[serde(default)]
    application: String,
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
pub struct InstancePath {
    env: String,
    service_instance: String,
    action: String,
}

/// Bind, unbind or deprovision, from the instance's row.
pub async fn instance_action(
    state: Data<AppState>,
    scope: PageTenant,
    path: Path<InstancePath>,
    form: Form<InstanceActionForm>,
) -> Result<HttpResponse, PageError> {
    let PageTenant { auth, access } = scope;
    let InstancePath {
        env,
        service_instance,
        action,
    } = path.into_inner();
    let form = form.into_inner();
    let platform = &state.platform;
    let result = match action.as_str() {
        "bind" => platform
            .bind_service(
                &access,
                &env,
                &service_instance,
                NewBinding {
                    application: form.application.clone(),
                    prefix: Some(form.prefix.trim().to_owned()).filter(|p| !p.is_empty()),
                },
            )
            .await
            .map(|_| ()),
        "unbind" => {
            platform
                .unbind_service(&access, &env, &service_instance, &form.application)
                .await
        }
        "deprovision" => platform
            .deprovision_service(&access, &env, &service_instance, None)
            .await
            .map(|_| ()),
        _ => Err(platform_core::CoreError::not_found(
            "action",
            action.clone(),
        )),
    };
    match result {
        Ok(()) => Ok(see_other(&format!(
            "/t/{}/services?environment={env}",
            access.tenant().slug
        ))),
        Err(e) => {
            let errors = form_errors(e)?;
            render_with_status(
                &services_page(&state, &auth, &access, Some(env), service_instance, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct BrokerForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "admin_brokers.html")]
struct BrokersPage {
    layout: Layout,
    brokers: Vec<platform_core::platform::services::BrokerInfo>,
    form: BrokerForm,
    /// Which broker's action the errors are about (empty: the registration form).
    failed: String,
    errors: FormErrors,
}

async fn brokers_page(
    state: &AppState,
    auth: &PageAuth,
    form: BrokerForm,
    failed: String,
    errors: FormErrors,
) -> Result<BrokersPage, PageError> {
    let layout = Layout::for_user(&auth.0, "Brokers", "admin-brokers");
    Ok(BrokersPage {
        brokers: state
            .platform
            .brokers(&auth.0.principal)
            .await
            .map_err(|e| PageError::from(e).within(layout.clone()))?,
        layout,
        form,
        failed,
        errors,
    })
}

/// Admin → Brokers: the registered brokers, their services, versions and plans.
pub async fn brokers(state: Data<AppState>, auth: PageAuth) -> Result<HttpResponse, PageError> {
    render(
        &brokers_page(
            &state,
            &auth,
            BrokerForm::default(),
            String::new(),
            FormErrors::none(),
        )
        .await?,
    )
}

/// Registers a broker (its catalog is read first).
pub async fn register_broker(
    state: Data<AppState>,
    auth: PageAuth,
    form: Form<BrokerForm>,
) -> Result<HttpResponse, PageError> {
    let form = form.into_inner();
    let result = state
        .platform
        .register_broker(
            &auth.0.principal,
            platform_core::platform::services::NewBroker {
                name: form.name.trim().to_owned(),
                url: form.url.trim().to_owned(),
                username: form.username.clone(),
                password: platform_core::sealing::SecretValue::new(form.password.clone()),
            },
        )
        .await;
    match result {
        Ok(_) => Ok(see_other("/admin/brokers")),
        Err(e) => {
            let layout = Layout::for_user(&auth.0, "Brokers", "admin-brokers");
            let errors = form_errors(e).map_err(|e| e.within(layout))?;
            // The password is never sent back.
            let form = BrokerForm {
                password: String::new(),
                ..form
            };
            render_with_status(
                &brokers_page(&state, &auth, form, String::new(), errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct BrokerPath {
    broker: String,
    action: String,
}

/// Refreshes or removes a broker.
pub async fn broker_action(
    state: Data<AppState>,
    auth: PageAuth,
    path: Path<BrokerPath>,
) -> Result<HttpResponse, PageError> {
    let BrokerPath { broker, action } = path.into_inner();
    let principal = &auth.0.principal;
    let result = match action.as_str() {
        "refresh" => state
            .platform
            .refresh_broker(principal, &broker)
            .await
            .map(|_| ()),
        "delete" => state.platform.delete_broker(principal, &broker).await,
        _ => Err(platform_core::CoreError::not_found(
            "action",
            action.clone(),
        )),
    };
    match result {
        Ok(()) => Ok(see_other("/admin/brokers")),
        Err(e) => {
            let layout = Layout::for_user(&auth.0, "Brokers", "admin-brokers");
            let errors = form_errors(e).map_err(|e| e.within(layout))?;
            render_with_status(
                &brokers_page(&state, &auth, BrokerForm::default(), broker, errors).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}
