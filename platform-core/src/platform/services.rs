//! The service catalog for people: platform administrators register brokers and say
//! which tenants may use which plans; members see the marketplace, provision, update
//! and deprovision service instances in their environments, and bind them to
//! applications. Every change is one transaction with its audit record. Provisioning,
//! updating, deprovisioning and unbinding reach the broker afterwards, through the
//! operations worker (`crate::services`); only registering a broker (its catalog must
//! be read) and binding (its credentials must reach the caller's transaction) wait on
//! one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Audit, Platform, record};
use crate::authz::{Permission, Principal, TenantAccess};
use crate::names::AppName;
use crate::sealing::SecretValue;
use crate::services::client::{BrokerClient, CatalogFetchError, Endpoint};
use crate::services::params;
use crate::store::services::{
    self as store, BrokerRow, InstanceRow, InstanceState, Operation, Pending,
};
use crate::{CoreError, FieldError};

/// How long registering or refreshing a broker waits for its catalog.
const CATALOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A broker to register.
#[derive(Debug, Clone)]
pub struct NewBroker {
    pub name: String,
    /// `http(s)://host[:port][/path]`, no credentials, query or fragment.
    pub url: String,
    pub username: String,
    pub password: SecretValue,
}

/// A registered broker as platform administrators see it (never its password).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrokerInfo {
    pub name: String,
    pub url: String,
    pub username: String,
    pub services: Vec<BrokerService>,
    pub catalog_fetched_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub instances: i64,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrokerService {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The release of the broker that offers it (its catalog's `metadata.version`).
    pub version: Option<String>,
    pub plans: Vec<PlanInfo>,
}

/// A plan, with who may use it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub free: bool,
    pub bindable: bool,
    /// The tenants that may use it; empty: every tenant.
    pub tenants: Vec<String>,
    /// The JSON Schema of the parameters provisioning accepts, if any.
    #[schema(value_type = Option<Object>)]
    pub create_schema: Option<serde_json::Value>,
    /// The JSON Schema of the parameters an update accepts, if any.
    #[schema(value_type = Option<Object>)]
    pub update_schema: Option<serde_json::Value>,
}

/// A service in the marketplace, with the plans the caller's tenants may use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogService {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub broker: String,
    pub broker_version: Option<String>,
    pub bindable: bool,
    pub plan_updateable: bool,
    pub plans: Vec<PlanInfo>,
}

/// A service instance to provision.
#[derive(Debug, Clone)]
pub struct NewServiceInstance {
    pub name: String,
    pub service: String,
    pub plan: String,
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A change to a service instance: another plan, new parameters, or both.
#[derive(Debug, Clone, Default)]
pub struct ServiceInstanceChange {
    pub plan: Option<String>,
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A service instance as members see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceInstance {
    pub name: String,
    pub environment: String,
    pub service: String,
    pub plan: String,
    pub broker: String,
    pub state: InstanceState,
    #[schema(value_type = Object)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    pub dashboard_url: Option<String>,
    /// What the platform is doing with the broker now, if anything.
    pub operation: Option<Operation>,
    pub last_operation: Option<LastOperationInfo>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastOperationInfo {
    /// `provision`, `update`, `deprovision` or `orphan mitigation`.
    pub operation: String,
    /// `in progress`, `succeeded` or `failed`.
    pub state: String,
    pub description: Option<String>,
}

fn check_url(url: &str) -> Result<String, FieldError> {
    let parsed = url::Url::parse(url.trim())
        .map_err(|e| FieldError::new("url", format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FieldError::new("url", "must be http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FieldError::new(
            "url",
            "must not carry credentials: give them as username and password",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(FieldError::new("url", "must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The catalog's services and plans, checked as the specification and the platform
/// need them (schemas that compile).
fn check_catalog(catalog: &osb::Catalog) -> Result<(), CoreError> {
    catalog.validate().map_err(|e| {
        CoreError::BrokerUnavailable(format!("the broker's catalog is not valid: {e}"))
    })?;
    for service in &catalog.services {
        for plan in &service.plans {
            for op in [
                osb::catalog::SchemaFor::Provision,
                osb::catalog::SchemaFor::Update,
                osb::catalog::SchemaFor::Bind,
            ] {
                if let Some(schema) = plan.parameters_schema(op) {
                    params::check_schema(schema).map_err(|e| {
                        CoreError::BrokerUnavailable(format!(
                            "the broker's catalog is not valid: service '{}' plan '{}': a parameters schema does not compile: {e}",
                            service.name, plan.name
                        ))
                    })?;
                }
            }
        }
    }
    Ok(())
}

fn fetch_error(url: &str, e: CatalogFetchError) -> CoreError {
    CoreError::BrokerUnavailable(format!(
        "the catalog of the broker at {url} could not be read: {e}"
    ))
}

/// Plan restrictions: (broker, plan) → tenant slugs.
type Access = HashMap<(Uuid, String), Vec<(Uuid, String)>>;

fn plan_info(broker: Uuid, service: &osb::Service, plan: &osb::Plan, access: &Access) -> PlanInfo {
    use osb::catalog::SchemaFor;
    PlanInfo {
        id: plan.id.clone(),
        name: plan.name.clone(),
        description: plan.description.clone(),
        free: plan.free.unwrap_or(true),
        bindable: service.plan_bindable(plan),
        tenants: access
            .get(&(broker, plan.id.clone()))
            .map(|t| t.iter().map(|(_, slug)| slug.clone()).collect())
            .unwrap_or_default(),
        create_schema: plan.parameters_schema(SchemaFor::Provision).cloned(),
        update_schema: plan.parameters_schema(SchemaFor::Update).cloned(),
    }
}

fn may_use(access: &Access, broker: Uuid, plan: &str, tenant: Uuid) -> bool {
    access
        .get(&(broker, plan.to_owned()))
        .is_none_or(|tenants| tenants.iter().any(|(id, _)| *id == tenant))
}

impl Platform {
    fn broker_client(&self) -> BrokerClient {
        BrokerClient::new(CATALOG_TIMEOUT)
    }

    async fn access(&self) -> Result<Access, CoreError> {
        let mut access: Access = HashMap::new();
        for (broker, plan, tenant, slug) in store::plan_access(&self.pool).await? {
            access
                .entry((broker, plan))
                .or_default()
                .push((tenant, slug));
        }
        Ok(access)
    }

    fn broker_info(&self, row: &BrokerRow, access: &Access, instances: i64) -> BrokerInfo {
        BrokerInfo {
            name: row.name.clone(),
            url: row.url.clone(),
            username: row.username.clone(),
            services: row
                .catalog
                .services
                .iter()
                .map(|s| BrokerService {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    description: s.description.clone(),
                    version: s.metadata_str("version").map(str::to_owned),
                    plans: s
                        .plans
                        .iter()
                        .map(|p| plan_info(row.id, s, p, access))
                        .collect(),
                })
                .collect(),
            catalog_fetched_at: row.catalog_fetched_at,
            created_at: row.created_at,
            instances,
            version: row.version,
        }
    }

    /// Refuses a catalog whose service names another broker already offers.
    async fn check_names_free(
        &self,
        catalog: &osb::Catalog,
        except: Option<Uuid>,
    ) -> Result<(), CoreError> {
        for other in store::brokers(&self.pool).await? {
            if Some(other.id) == except {
                continue;
            }
            for service in &catalog.services {
                if other
                    .catalog
                    .services
                    .iter()
                    .any(|s| s.name == service.name || s.id == service.id)
                {
                    return Err(CoreError::Conflict {
                        field: "url",
                        message: format!(
                            "broker '{}' already offers a service named '{}' (or with its id); service names are unique in the marketplace",
                            other.name, service.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Registers a broker: its catalog is fetched and validated first.
    pub async fn register_broker(
        &self,
        principal: &Principal,
        new: NewBroker,
    ) -> Result<BrokerInfo, CoreError> {
        principal.require_platform_admin("register service brokers")?;
        let name = AppName::parse(&new.name)?.as_str().to_owned();
        let url = check_url(&new.url)?;
        if new.username.is_empty() || new.username.len() > 200 {
            return Err(FieldError::new("username", "must be 1 to 200 characters").into());
        }
        if new.password.expose().is_empty() || new.password.expose().len() > 1000 {
            return Err(FieldError::new("password", "must be 1 to 1000 characters").into());
        }
        if store::broker_by_name(&self.pool, &name).await?.is_some() {
            return Err(CoreError::Conflict {
                field: "name",
                message: format!("a broker named '{name}' is already registered"),
            });
        }
        let endpoint = Endpoint {
            url: url.clone(),
            username: new.username.clone(),
            password: new.password.clone(),
        };
        let catalog = self
            .broker_client()
            .catalog(&endpoint)
            .await
            .map_err(|e| fetch_error(&url, e))?;
        check_catalog(&catalog)?;
        self.check_names_free(&catalog, None).await?;
        let id = Uuid::new_v4();
        let sealed = self
            .master_key()
            .seal(
                new.password.expose().as_bytes(),
                &crate::services::client::password_context(id),
            )
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let row = BrokerRow {
            id,
            name: name.clone(),
            url: url.clone(),
            username: new.username,
            password_sealed: sealed,
            catalog: sqlx::types::Json(catalog),
            catalog_fetched_at: Utc::now(),
            created_at: Utc::now(),
            version: 1,
        };
        let mut tx = self.pool.begin().await?;
        store::insert_broker(&mut tx, &row).await.map_err(|e| {
            crate::error::conflict_on_unique(
                e,
                "name",
                format!("a broker named '{name}' is already registered"),
            )
        })?;
        let services: Vec<&str> = row
            .catalog
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "broker.register",
                target_kind: "broker",
                target: &name,
                details: json!({"url": url, "services": services}),
            },
        )
        .await?;
        tx.commit().await?;
        self.broker(principal, &name).await
    }

    /// Registers, or brings up to date, a broker the platform runs itself (the
    /// middleware brokers `paas up` starts): its catalog fetched and checked as for any
    /// broker, its coordinates and password replaced. Audited as the system.
    pub async fn ensure_broker(&self, new: NewBroker) -> Result<(), CoreError> {
        let name = AppName::parse(&new.name)?.as_str().to_owned();
        let url = check_url(&new.url)?;
        let endpoint = Endpoint {
            url: url.clone(),
            username: new.username.clone(),
            password: new.password.clone(),
        };
        let catalog = self
            .broker_client()
            .catalog(&endpoint)
            .await
            .map_err(|e| fetch_error(&url, e))?;
        check_catalog(&catalog)?;
        let existing = store::broker_by_name(&self.pool, &name).await?;
        self.check_names_free(&catalog, existing.as_ref().map(|b| b.id))
            .await?;
        let id = existing.as_ref().map_or_else(Uuid::new_v4, |b| b.id);
        let sealed = self
            .master_key()
            .seal(
                new.password.expose().as_bytes(),
                &crate::services::client::password_context(id),
            )
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let services: Vec<&str> = catalog.services.iter().map(|s| s.name.as_str()).collect();
        let details =
            json!({"url": url, "services": services, "reason": "started by the platform"});
        let mut tx = self.pool.begin().await?;
        let action = if existing.is_some() {
            store::update_broker(&mut tx, id, &catalog, Some((&url, &new.username, &sealed)))
                .await?;
            "broker.refresh"
        } else {
            let row = BrokerRow {
                id,
                name: name.clone(),
                url: url.clone(),
                username: new.username.clone(),
                password_sealed: sealed.clone(),
                catalog: sqlx::types::Json(catalog.clone()),
                catalog_fetched_at: Utc::now(),
                created_at: Utc::now(),
                version: 1,
            };
            store::insert_broker(&mut tx, &row).await?;
            "broker.register"
        };
        crate::store::audit::append(
            &mut tx,
            crate::store::audit::AuditRecord {
                tenant_id: None,
                actor_id: None,
                actor: "system",
                action,
                target_kind: "broker",
                target: &name,
                details,
                source_ip: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The registered brokers.
    pub async fn brokers(&self, principal: &Principal) -> Result<Vec<BrokerInfo>, CoreError> {
        principal.require_platform_admin("see service brokers")?;
        let access = self.access().await?;
        let mut out = Vec::new();
        for row in store::brokers(&self.pool).await? {
            let instances = store::broker_instances(&self.pool, row.id).await?;
            out.push(self.broker_info(&row, &access, instances));
        }
        Ok(out)
    }

    pub async fn broker(&self, principal: &Principal, name: &str) -> Result<BrokerInfo, CoreError> {
        principal.require_platform_admin("see service brokers")?;
        let row = store::broker_by_name(&self.pool, name)
            .await?
            .ok_or_else(|| CoreError::not_found("broker", name))?;
        let instances = store::broker_instances(&self.pool, row.id).await?;
        Ok(self.broker_info(&row, &self.access().await?, instances))
    }

    /// Fetches the broker's catalog again (a new release of the broker).
    pub async fn refresh_broker(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<BrokerInfo, CoreError> {
        principal.require_platform_admin("refresh service brokers")?;
        let row = store::broker_by_name(&self.pool, name)
            .await?
            .ok_or_else(|| CoreError::not_found("broker", name))?;
        let endpoint = Endpoint::of(self.master_key(), &row)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let catalog = self
            .broker_client()
            .catalog(&endpoint)
            .await
            .map_err(|e| fetch_error(&row.url, e))?;
        check_catalog(&catalog)?;
        self.check_names_free(&catalog, Some(row.id)).await?;
        let mut tx = self.pool.begin().await?;
        store::update_broker(&mut tx, row.id, &catalog, None).await?;
        let services: Vec<&str> = catalog.services.iter().map(|s| s.name.as_str()).collect();
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "broker.refresh",
                target_kind: "broker",
                target: name,
                details: json!({"services": services}),
            },
        )
        .await?;
        tx.commit().await?;
        self.broker(principal, name).await
    }

    /// Removes a broker that holds no service instance.
    pub async fn delete_broker(&self, principal: &Principal, name: &str) -> Result<(), CoreError> {
        principal.require_platform_admin("remove service brokers")?;
        let row = store::broker_by_name(&self.pool, name)
            .await?
            .ok_or_else(|| CoreError::not_found("broker", name))?;
        let instances = store::broker_instances(&self.pool, row.id).await?;
        if instances > 0 {
            return Err(CoreError::WrongState(format!(
                "broker '{name}' still holds {instances} service instance(s): deprovision them first"
            )));
        }
        let mut tx = self.pool.begin().await?;
        store::delete_broker(&mut tx, row.id).await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "broker.delete",
                target_kind: "broker",
                target: name,
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await.map_err(CoreError::from)
    }

    /// Restricts a plan to some tenants (an empty list: every tenant may use it).
    pub async fn set_plan_access(
        &self,
        principal: &Principal,
        broker: &str,
        plan: &str,
        tenants: &[String],
    ) -> Result<BrokerInfo, CoreError> {
        principal.require_platform_admin("set who may use a plan")?;
        let row = store::broker_by_name(&self.pool, broker)
            .await?
            .ok_or_else(|| CoreError::not_found("broker", broker))?;
        let plan_id = row
            .catalog
            .services
            .iter()
            .flat_map(|s| s.plans.iter())
            .find(|p| p.id == plan)
            .map(|p| p.id.clone())
            .ok_or_else(|| CoreError::not_found("plan", plan))?;
        let mut ids = Vec::new();
        for (i, slug) in tenants.iter().enumerate() {
            let tenant = crate::store::tenants::by_slug(&self.pool, slug)
                .await?
                .ok_or_else(|| {
                    FieldError::new(
                        format!("tenants[{i}]"),
                        format!("no tenant '{slug}' exists"),
                    )
                })?;
            ids.push(tenant.id);
        }
        ids.sort();
        ids.dedup();
        let mut tx = self.pool.begin().await?;
        store::set_plan_access(&mut tx, row.id, &plan_id, &ids).await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "broker.plan_access",
                target_kind: "broker",
                target: broker,
                details: json!({"plan": plan_id, "tenants": tenants}),
            },
        )
        .await?;
        tx.commit().await?;
        self.broker(principal, broker).await
    }

    /// The marketplace: every service with the plans the caller's tenants (or only
    /// `tenant`) may use; services with none are left out.
    pub async fn catalog(
        &self,
        principal: &Principal,
        tenant: Option<&str>,
    ) -> Result<Vec<CatalogService>, CoreError> {
        let tenants: Vec<Uuid> = match tenant {
            Some(slug) => vec![self.tenant(principal, slug).await?.tenant().id],
            None => principal
                .memberships()
                .iter()
                .map(|m| m.tenant_id)
                .collect(),
        };
        let everything = tenant.is_none() && principal.is_platform_admin();
        let access = self.access().await?;
        let mut out = Vec::new();
        for broker in store::brokers(&self.pool).await? {
            for service in &broker.catalog.services {
                let plans: Vec<PlanInfo> = service
                    .plans
                    .iter()
                    .filter(|p| {
                        everything
                            || tenants
                                .iter()
                                .any(|t| may_use(&access, broker.id, &p.id, *t))
                    })
                    .map(|p| plan_info(broker.id, service, p, &access))
                    .collect();
                if plans.is_empty() {
                    continue;
                }
                out.push(CatalogService {
                    name: service.name.clone(),
                    display_name: service
                        .metadata_str("displayName")
                        .unwrap_or(&service.name)
                        .to_owned(),
                    description: service.description.clone(),
                    tags: service.tags.clone(),
                    broker: broker.name.clone(),
                    broker_version: service.metadata_str("version").map(str::to_owned),
                    bindable: service.bindable,
                    plan_updateable: service.plan_updateable,
                    plans,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The environment's service instances.
    pub async fn service_instances(
        &self,
        access: &TenantAccess,
        environment: &str,
    ) -> Result<Vec<ServiceInstance>, CoreError> {
        let env = self.environment(access, environment).await?;
        let brokers = self.broker_names().await?;
        Ok(store::instances(&self.pool, access.tenant().id, env.id)
            .await?
            .iter()
            .map(|r| instance_view(r, &env.name, &brokers))
            .collect())
    }

    pub async fn service_instance(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<ServiceInstance, CoreError> {
        let env = self.environment(access, environment).await?;
        let not_found =
            || CoreError::not_found("service instance", format!("{environment}/{name}"));
        AppName::parse(name).map_err(|_| not_found())?;
        let row = store::instance(&self.pool, access.tenant().id, env.id, name)
            .await?
            .ok_or_else(not_found)?;
        Ok(instance_view(&row, &env.name, &self.broker_names().await?))
    }

    async fn broker_names(&self) -> Result<HashMap<Uuid, (String, osb::Catalog)>, CoreError> {
        Ok(store::brokers(&self.pool)
            .await?
            .into_iter()
            .map(|b| (b.id, (b.name, b.catalog.0)))
            .collect())
    }

    /// How long an operation of `plan` may take before it failed.
    fn operation_deadline(&self, plan: Option<&osb::Plan>) -> DateTime<Utc> {
        let platform = self.service_config.max_operation;
        let limit = plan
            .and_then(|p| p.maximum_polling_duration)
            .map_or(platform, |s| {
                platform.min(std::time::Duration::from_secs(s))
            });
        Utc::now() + chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::hours(1))
    }

    /// Provisions a service instance: stored at once as `provisioning` (its
    /// parameters checked against the plan's schema), made by the broker afterwards.
    pub async fn provision_service(
        &self,
        access: &TenantAccess,
        environment: &str,
        new: NewServiceInstance,
    ) -> Result<ServiceInstance, CoreError> {
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "provision services in a protected environment",
        )?;
        let name = AppName::parse(&new.name)?.as_str().to_owned();
        let brokers = store::brokers(&self.pool).await?;
        let (broker, service) = brokers
            .iter()
            .find_map(|b| {
                b.catalog
                    .services
                    .iter()
                    .find(|s| s.name == new.service)
                    .map(|s| (b, s))
            })
            .ok_or_else(|| {
                FieldError::new(
                    "service",
                    format!("the marketplace has no service '{}'", new.service),
                )
            })?;
        let access_rows = self.access().await?;
        let plan = service
            .plans
            .iter()
            .find(|p| {
                p.name == new.plan && may_use(&access_rows, broker.id, &p.id, access.tenant().id)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = service
                    .plans
                    .iter()
                    .filter(|p| may_use(&access_rows, broker.id, &p.id, access.tenant().id))
                    .map(|p| p.name.as_str())
                    .collect();
                FieldError::new(
                    "plan",
                    format!(
                        "service '{}' has no plan '{}' for this tenant (plans: {})",
                        service.name,
                        new.plan,
                        names.join(", ")
                    ),
                )
            })?;
        let parameters = new.parameters.unwrap_or_default();
        if let Some(schema) = plan.parameters_schema(osb::catalog::SchemaFor::Provision) {
            params::validate(schema, &serde_json::Value::Object(parameters.clone()))?;
        }
        let now = Utc::now();
        let row = InstanceRow {
            id: Uuid::new_v4(),
            tenant_id: access.tenant().id,
            environment_id: env.id,
            name: name.clone(),
            broker_id: broker.id,
            service_id: service.id.clone(),
            plan_id: plan.id.clone(),
            parameters: sqlx::types::Json(parameters),
            state: InstanceState::Provisioning,
            dashboard_url: None,
            pending: None,
            operation: Some(Operation::Provision),
            polling: false,
            operation_token: None,
            operation_started_at: Some(now),
            operation_deadline: Some(self.operation_deadline(Some(plan))),
            next_attempt_at: Some(now),
            attempts: 0,
            claimed_until: None,
            last_operation: Some("provision".into()),
            last_state: Some("in progress".into()),
            last_description: None,
            created_by: access.principal().username.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let target = format!("{}/{name}", env.name);
        let mut tx = self.pool.begin().await?;
        let quota = crate::store::tenants::quota(&mut *tx, access.tenant().id)
            .await?
            .max_service_instances;
        if let Some(max) = quota {
            crate::store::tenants::lock(&mut tx, access.tenant().id).await?;
            let used = store::tenant_instances(&mut *tx, access.tenant().id).await?;
            if used >= i64::from(max) {
                return Err(CoreError::QuotaExceeded {
                    message: format!(
                        "the tenant's quota allows {max} service instance(s) and it has {used}"
                    ),
                });
            }
        }
        store::insert_instance(&mut tx, &row).await.map_err(|e| {
            crate::error::conflict_on_unique(
                e,
                "name",
                format!(
                    "a service instance named '{name}' exists in environment '{}'",
                    env.name
                ),
            )
        })?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "service_instance.provision",
                target_kind: "service_instance",
                target: &target,
                details: json!({"service": service.name, "plan": plan.name, "broker": broker.name}),
            },
        )
        .await?;
        tx.commit().await?;
        self.service_wake.notify_one();
        self.service_instance(access, environment, &name).await
    }

    /// Changes a ready instance's plan or parameters (checked against the plan's update
    /// schema); the broker is asked afterwards and the change shows once it agreed.
    pub async fn update_service(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        change: ServiceInstanceChange,
        if_version: Option<i64>,
    ) -> Result<ServiceInstance, CoreError> {
        let (env, mut tx, row) = self
            .lock_for_change(access, environment, name, if_version)
            .await?;
        if row.state != InstanceState::Ready || row.operation.is_some() {
            return Err(CoreError::WrongState(format!(
                "service instance '{name}' is {}; only a ready instance can be updated",
                state_word(row.state)
            )));
        }
        let catalogs = self.broker_names().await?;
        let service = catalogs
            .get(&row.broker_id)
            .and_then(|(_, c)| c.services.iter().find(|s| s.id == row.service_id))
            .ok_or_else(|| {
                CoreError::WrongState("the broker no longer offers this instance's service".into())
            })?;
        let access_rows = self.access().await?;
        let plan = match &change.plan {
            None => service.plan(&row.plan_id),
            Some(p) => {
                let current = service.plan(&row.plan_id);
                let updateable =
                    current.map_or(service.plan_updateable, |c| service.plan_updateable(c));
                if current.map(|c| c.name.as_str()) != Some(p.as_str()) && !updateable {
                    return Err(FieldError::new(
                        "plan",
                        format!(
                            "service '{}' does not allow changing an instance's plan",
                            service.name
                        ),
                    )
                    .into());
                }
                Some(
                    service
                        .plans
                        .iter()
                        .find(|x| {
                            x.name == *p
                                && may_use(&access_rows, row.broker_id, &x.id, access.tenant().id)
                        })
                        .ok_or_else(|| {
                            FieldError::new(
                                "plan",
                                format!(
                                    "service '{}' has no plan '{p}' for this tenant",
                                    service.name
                                ),
                            )
                        })?,
                )
            }
        };
        if change.plan.is_none() && change.parameters.is_none() {
            return Err(FieldError::new("body", "name a new plan, new parameters, or both").into());
        }
        if let (Some(parameters), Some(schema)) = (
            &change.parameters,
            plan.and_then(|p| p.parameters_schema(osb::catalog::SchemaFor::Update)),
        ) {
            params::validate(schema, &serde_json::Value::Object(parameters.clone()))?;
        }
        let pending = Pending {
            plan_id: plan.map_or(row.plan_id.clone(), |p| p.id.clone()),
            parameters: change.parameters.clone(),
        };
        let deadline = self.operation_deadline(plan);
        store::request_operation(
            &mut tx,
            row.id,
            InstanceState::Updating,
            Operation::Update,
            deadline,
            Some(&pending),
        )
        .await?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "service_instance.update",
                target_kind: "service_instance",
                target: &format!("{}/{name}", env.name),
                details: json!({"plan": plan.map(|p| p.name.clone()), "parameters": change.parameters.is_some()}),
            },
        )
        .await?;
        tx.commit().await?;
        self.service_wake.notify_one();
        self.service_instance(access, environment, name).await
    }

    /// Deprovisions an instance (also one whose provisioning failed): the broker is
    /// asked until it confirms; the instance is gone once it did.
    pub async fn deprovision_service(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        if_version: Option<i64>,
    ) -> Result<ServiceInstance, CoreError> {
        let (env, mut tx, row) = self
            .lock_for_change(access, environment, name, if_version)
            .await?;
        let bound = store::instance_bindings(&mut *tx, row.id).await?;
        if bound > 0 {
            return Err(CoreError::WrongState(format!(
                "service instance '{name}' is bound to {bound} application(s): unbind them first"
            )));
        }
        let busy = matches!(
            row.operation,
            Some(Operation::Provision | Operation::Update)
        );
        if busy {
            return Err(CoreError::WrongState(format!(
                "service instance '{name}' is {}: wait until the broker finished (or the operation failed)",
                state_word(row.state)
            )));
        }
        let plan = self
            .broker_names()
            .await?
            .get(&row.broker_id)
            .and_then(|(_, c)| {
                c.services
                    .iter()
                    .find(|s| s.id == row.service_id)
                    .and_then(|s| s.plan(&row.plan_id))
                    .cloned()
            });
        let deadline = self.operation_deadline(plan.as_ref());
        store::request_operation(
            &mut tx,
            row.id,
            InstanceState::Deprovisioning,
            Operation::Deprovision,
            deadline,
            None,
        )
        .await?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "service_instance.deprovision",
                target_kind: "service_instance",
                target: &format!("{}/{name}", env.name),
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        self.service_wake.notify_one();
        self.service_instance(access, environment, name).await
    }

    async fn lock_for_change(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        if_version: Option<i64>,
    ) -> Result<
        (
            crate::model::Environment,
            sqlx::Transaction<'static, sqlx::Postgres>,
            InstanceRow,
        ),
        CoreError,
    > {
        let env = self.environment(access, environment).await?;
        let not_found =
            || CoreError::not_found("service instance", format!("{environment}/{name}"));
        AppName::parse(name).map_err(|_| not_found())?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "change services in a protected environment",
        )?;
        let mut tx = self.pool.begin().await?;
        let row = store::lock_instance(&mut tx, access.tenant().id, env.id, name).await?;
        super::check_version(
            &mut *tx,
            Some(access.tenant().id),
            ("service instance", name),
            ("service_instance", &format!("{}/{name}", env.name)),
            if_version,
            row.as_ref().map(|r| r.version),
        )
        .await?;
        let row = row.ok_or_else(not_found)?;
        Ok((env, tx, row))
    }
}

fn state_word(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Provisioning => "being provisioned",
        InstanceState::Ready => "ready",
        InstanceState::Updating => "being updated",
        InstanceState::Deprovisioning => "being deprovisioned",
        InstanceState::Failed => "failed",
    }
}

fn instance_view(
    row: &InstanceRow,
    environment: &str,
    brokers: &HashMap<Uuid, (String, osb::Catalog)>,
) -> ServiceInstance {
    let (broker, catalog) = brokers
        .get(&row.broker_id)
        .map_or(("?", None), |(n, c)| (n.as_str(), Some(c)));
    let service = catalog.and_then(|c| c.services.iter().find(|s| s.id == row.service_id));
    let plan = service.and_then(|s| s.plan(&row.plan_id));
    ServiceInstance {
        name: row.name.clone(),
        environment: environment.to_owned(),
        service: service.map_or(row.service_id.clone(), |s| s.name.clone()),
        plan: plan.map_or(row.plan_id.clone(), |p| p.name.clone()),
        broker: broker.to_owned(),
        state: row.state,
        parameters: row.parameters.0.clone(),
        dashboard_url: row.dashboard_url.clone(),
        operation: row.operation,
        last_operation: row.last_operation.as_ref().map(|op| LastOperationInfo {
            operation: op.clone(),
            state: row.last_state.clone().unwrap_or_default(),
            description: row.last_description.clone(),
        }),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        version: row.version,
    }
}

/// A binding to make: the application (in the instance's environment) and the prefix of
/// its variables (default: the instance's name, upper-cased).
#[derive(Debug, Clone)]
pub struct NewBinding {
    pub application: String,
    pub prefix: Option<String>,
}

/// A binding as members see it: which variables it gives the application, never their
/// values.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServiceBinding {
    pub id: Uuid,
    pub instance: String,
    pub application: String,
    pub prefix: String,
    pub state: crate::store::services::BindingState,
    /// The environment variables the application gets (values are secrets).
    pub variables: Vec<String>,
    /// What the platform still has to tell the broker, if anything.
    pub operation: Option<crate::store::services::BindingOperation>,
    pub last_description: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

fn binding_view(v: &crate::store::services::BindingView) -> ServiceBinding {
    ServiceBinding {
        id: v.row.id,
        instance: v.instance.clone(),
        application: v.application.clone(),
        prefix: v.row.prefix.clone(),
        state: v.row.state,
        variables: v.row.variables.clone(),
        operation: v.row.operation,
        last_description: v.row.last_description.clone(),
        created_by: v.row.created_by.clone(),
        created_at: v.row.created_at,
    }
}

/// What a binding's credentials are sealed for.
pub(crate) fn credentials_context(binding: Uuid) -> String {
    format!("binding:{binding}:credentials")
}

/// The variable holding every binding of an application as one JSON document.
pub const SERVICES_VARIABLE: &str = "PAAS_SERVICES";

fn check_prefix(prefix: &str) -> Result<(), FieldError> {
    let ok = (1..=40).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && prefix
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_uppercase)
        && prefix != "PAAS"
        && !prefix.starts_with("PAAS_")
        && prefix != "PORT";
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "prefix",
            "must be 1 to 40 upper-case letters, digits or '_', starting with a letter, and not PAAS or PORT",
        ))
    }
}

/// The variables a binding's credentials give: `<P>_URL` (the credentials' `uri` or
/// `url`) and `<P>_<KEY>` for every scalar credential.
pub fn binding_variables(
    prefix: &str,
    credentials: &serde_json::Map<String, serde_json::Value>,
) -> std::collections::BTreeMap<String, String> {
    let mut vars = std::collections::BTreeMap::new();
    for (key, value) in credentials {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let suffix: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        if suffix.is_empty() {
            continue;
        }
        vars.insert(format!("{prefix}_{suffix}"), text);
    }
    if let Some(url) = credentials
        .get("uri")
        .or_else(|| credentials.get("url"))
        .and_then(serde_json::Value::as_str)
    {
        vars.insert(format!("{prefix}_URL"), url.to_owned());
    }
    vars
}

impl Platform {
    /// The bindings of an instance.
    pub async fn service_bindings(
        &self,
        access: &TenantAccess,
        environment: &str,
        instance: &str,
    ) -> Result<Vec<ServiceBinding>, CoreError> {
        let env = self.environment(access, environment).await?;
        let row = self.instance_row(access, &env, instance).await?;
        Ok(
            store::bindings(&self.pool, access.tenant().id, env.id, Some(row.id))
                .await?
                .iter()
                .map(binding_view)
                .collect(),
        )
    }

    /// Every binding of an environment (the application pages show theirs).
    pub async fn environment_bindings(
        &self,
        access: &TenantAccess,
        environment: &str,
    ) -> Result<Vec<ServiceBinding>, CoreError> {
        let env = self.environment(access, environment).await?;
        Ok(
            store::bindings(&self.pool, access.tenant().id, env.id, None)
                .await?
                .iter()
                .map(binding_view)
                .collect(),
        )
    }

    async fn instance_row(
        &self,
        access: &TenantAccess,
        env: &crate::model::Environment,
        name: &str,
    ) -> Result<InstanceRow, CoreError> {
        let not_found = || CoreError::not_found("service instance", format!("{}/{name}", env.name));
        AppName::parse(name).map_err(|_| not_found())?;
        store::instance(&self.pool, access.tenant().id, env.id, name)
            .await?
            .ok_or_else(not_found)
    }

    async fn endpoint_of(&self, broker_id: Uuid) -> Result<(Endpoint, osb::Catalog), CoreError> {
        let broker = store::broker(&self.pool, broker_id)
            .await?
            .ok_or_else(|| CoreError::Internal("an instance's broker is gone".into()))?;
        let endpoint = Endpoint::of(self.master_key(), &broker)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok((endpoint, broker.catalog.0))
    }

    /// The application's `PAAS_SERVICES` document: every bound binding but `except`,
    /// plus `extra` (a binding being made), keyed by instance name.
    async fn services_document(
        &self,
        tx: &mut sqlx::PgConnection,
        application_id: Uuid,
        except: Option<Uuid>,
        extra: Option<(&str, serde_json::Value)>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, CoreError> {
        let catalogs = self.broker_names().await?;
        let mut doc = serde_json::Map::new();
        for binding in store::bindings_of_app(&mut *tx, application_id).await? {
            if Some(binding.row.id) == except {
                continue;
            }
            let Some(sealed) = &binding.row.credentials_sealed else {
                continue;
            };
            let credentials: serde_json::Value = self
                .master_key()
                .open(sealed, &credentials_context(binding.row.id))
                .ok()
                .and_then(|p| serde_json::from_slice(&p).ok())
                .unwrap_or(serde_json::Value::Null);
            let instance = store::instance_by_id(&mut *tx, binding.row.instance_id).await?;
            let (service, plan) = instance
                .as_ref()
                .and_then(|i| {
                    let (_, catalog) = catalogs.get(&i.broker_id)?;
                    let s = catalog.services.iter().find(|s| s.id == i.service_id)?;
                    Some((
                        s.name.clone(),
                        s.plan(&i.plan_id)
                            .map(|p| p.name.clone())
                            .unwrap_or_default(),
                    ))
                })
                .unwrap_or_default();
            doc.insert(
                binding.instance.clone(),
                json!({"service": service, "plan": plan, "prefix": binding.row.prefix, "credentials": credentials}),
            );
        }
        if let Some((name, value)) = extra {
            doc.insert(name.to_owned(), value);
        }
        Ok(doc)
    }

    /// Binds an instance to an application: the broker makes the credentials (a
    /// synchronous call; a broker that cannot be reached refuses the binding at once),
    /// which become sealed secrets of a new revision of the application, rolled out as
    /// any change. A bind whose outcome is unknown is unbound again by the worker.
    pub async fn bind_service(
        &self,
        access: &TenantAccess,
        environment: &str,
        instance: &str,
        new: NewBinding,
    ) -> Result<ServiceBinding, CoreError> {
        use osb::outcome::{Call, Outcome};
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "bind services in a protected environment",
        )?;
        let row = self.instance_row(access, &env, instance).await?;
        if row.state != InstanceState::Ready || row.operation.is_some() {
            return Err(CoreError::WrongState(format!(
                "service instance '{instance}' is {}; only a ready instance can be bound",
                state_word(row.state)
            )));
        }
        let application = self
            .find_application(access, environment, &new.application)
            .await
            .map_err(|_| {
                FieldError::new(
                    "application",
                    format!(
                        "no application '{}' in environment '{environment}'",
                        new.application
                    ),
                )
            })?;
        let prefix = new
            .prefix
            .unwrap_or_else(|| instance.to_ascii_uppercase().replace('-', "_"));
        check_prefix(&prefix)?;
        let (endpoint, catalog) = self.endpoint_of(row.broker_id).await?;
        let service = catalog.services.iter().find(|s| s.id == row.service_id);
        let bindable = service
            .zip(service.and_then(|s| s.plan(&row.plan_id)))
            .is_some_and(|(s, p)| s.plan_bindable(p));
        if !bindable {
            return Err(FieldError::new(
                "application",
                format!("service instance '{instance}' cannot be bound (its plan is not bindable)"),
            )
            .into());
        }
        if store::bindings_of_app(&self.pool, application.id)
            .await?
            .iter()
            .any(|b| b.row.prefix == prefix)
        {
            return Err(CoreError::Conflict {
                field: "prefix",
                message: format!(
                    "application '{}' already has a binding with prefix {prefix}",
                    new.application
                ),
            });
        }
        let id = Uuid::new_v4();
        let now = Utc::now();
        // Until the broker has answered and the answer is recorded, the row is orphan
        // mitigation waiting to happen: if this process dies mid-call, the worker
        // unbinds once the call could no longer be running.
        let after_call = now
            + chrono::Duration::from_std(
                self.service_config.call_timeout + std::time::Duration::from_secs(60),
            )
            .unwrap_or(chrono::Duration::minutes(2));
        let binding = store::BindingRow {
            id,
            tenant_id: access.tenant().id,
            instance_id: row.id,
            application_id: application.id,
            prefix: prefix.clone(),
            state: store::BindingState::Binding,
            variables: Vec::new(),
            credentials_sealed: None,
            operation: Some(store::BindingOperation::Mitigate),
            next_attempt_at: Some(after_call),
            operation_deadline: Some(self.operation_deadline(None)),
            attempts: 0,
            claimed_until: None,
            last_description: None,
            created_by: access.principal().username.clone(),
            created_at: now,
            version: 1,
        };
        let target = format!("{}/{instance}", env.name);
        let mut tx = self.pool.begin().await?;
        store::insert_binding(&mut tx, &binding)
            .await
            .map_err(|e| {
                crate::error::conflict_on_unique(
                    e,
                    "application",
                    format!(
                        "service instance '{instance}' is already bound to application '{}'",
                        new.application
                    ),
                )
            })?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "service_instance.bind",
                target_kind: "service_instance",
                target: &target,
                details: json!({"application": new.application, "prefix": prefix, "binding": id}),
            },
        )
        .await?;
        tx.commit().await?;

        let route = self.route_of(access, &env, &new.application).await;
        let request = osb::wire::BindRequest {
            service_id: row.service_id.clone(),
            plan_id: row.plan_id.clone(),
            context: {
                let mut c = serde_json::Map::new();
                c.insert("platform".into(), "paas".into());
                c.insert("tenant_id".into(), access.tenant().id.to_string().into());
                c.insert("application".into(), new.application.clone().into());
                c
            },
            bind_resource: Some(osb::wire::BindResource {
                app_guid: Some(application.id.to_string()),
                route,
            }),
            parameters: None,
        };
        let reply = BrokerClient::new(self.service_config.call_timeout)
            .bind(&endpoint, &row.id.to_string(), &id.to_string(), &request)
            .await;
        let outcome = match osb::outcome::interpret(Call::Bind, reply.answer, reply.concurrency()) {
            // This platform binds synchronously; an asynchronous answer is not one.
            Outcome::Accepted => Outcome::Failed { mitigate: true },
            o => o,
        };
        let description = reply.describe();
        let credentials = reply
            .body
            .as_ref()
            .and_then(|b| b.credentials.clone())
            .unwrap_or_default();
        if outcome == Outcome::Done {
            match self
                .record_bound(access, &binding, instance, &row, &catalog, &credentials)
                .await
            {
                Ok(()) => {
                    let views =
                        store::bindings(&self.pool, access.tenant().id, env.id, Some(row.id))
                            .await?;
                    return views
                        .iter()
                        .find(|v| v.row.id == id)
                        .map(binding_view)
                        .ok_or_else(|| CoreError::Internal("a new binding vanished".into()));
                }
                Err(e) => {
                    self.binding_failed(
                        id,
                        true,
                        &format!("the platform could not record the binding: {e}"),
                    )
                    .await?;
                    return Err(e);
                }
            }
        }
        let mitigate = matches!(outcome, Outcome::Failed { mitigate: true });
        self.binding_failed(id, mitigate, &description).await?;
        Err(CoreError::BrokerUnavailable(format!(
            "the broker did not bind service instance '{instance}': {description}"
        )))
    }

    /// The bind succeeded: the credentials sealed and the application's new revision
    /// with the variables, in one transaction.
    async fn record_bound(
        &self,
        access: &TenantAccess,
        binding: &store::BindingRow,
        instance: &str,
        row: &InstanceRow,
        catalog: &osb::Catalog,
        credentials: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), CoreError> {
        let mut vars = binding_variables(&binding.prefix, credentials);
        let service = catalog.services.iter().find(|s| s.id == row.service_id);
        let entry = json!({
            "service": service.map(|s| s.name.clone()),
            "plan": service.and_then(|s| s.plan(&row.plan_id)).map(|p| p.name.clone()),
            "prefix": binding.prefix,
            "credentials": credentials,
        });
        let sealed = self
            .master_key()
            .seal(
                serde_json::to_vec(credentials)
                    .unwrap_or_default()
                    .as_slice(),
                &credentials_context(binding.id),
            )
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let doc = self
            .services_document(
                &mut tx,
                binding.application_id,
                None,
                Some((instance, entry)),
            )
            .await?;
        let names: Vec<String> = vars.keys().cloned().collect();
        vars.insert(
            SERVICES_VARIABLE.to_owned(),
            serde_json::Value::Object(doc).to_string(),
        );
        let set: std::collections::BTreeMap<String, SecretValue> = vars
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect();
        self.change_secrets_in(
            &mut tx,
            access,
            binding.application_id,
            &set,
            &[],
            super::releases::Cause::Binding,
        )
        .await?;
        store::set_bound(&mut tx, binding.id, &sealed, &names).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A bind that did not succeed: gone when nothing can exist at the broker, else
    /// left to the worker to unbind.
    async fn binding_failed(
        &self,
        id: Uuid,
        mitigate: bool,
        description: &str,
    ) -> Result<(), CoreError> {
        let mut tx = self.pool.begin().await?;
        if mitigate {
            store::request_unbind(
                &mut tx,
                id,
                store::BindingState::Failed,
                store::BindingOperation::Mitigate,
                self.operation_deadline(None),
                Some(description),
            )
            .await?;
        } else {
            store::delete_binding(&mut *tx, id).await?;
        }
        tx.commit().await?;
        self.service_wake.notify_one();
        Ok(())
    }

    /// Unbinds an instance from an application: the variables leave the application in
    /// a new revision now; the broker revokes the credentials afterwards (the worker).
    pub async fn unbind_service(
        &self,
        access: &TenantAccess,
        environment: &str,
        instance: &str,
        application: &str,
    ) -> Result<(), CoreError> {
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "unbind services in a protected environment",
        )?;
        let row = self.instance_row(access, &env, instance).await?;
        let not_found =
            || CoreError::not_found("binding", format!("{}/{instance}/{application}", env.name));
        let app = self
            .find_application(access, environment, application)
            .await
            .map_err(|_| not_found())?;
        let mut tx = self.pool.begin().await?;
        let binding = store::lock_binding(&mut tx, row.id, app.id)
            .await?
            .ok_or_else(not_found)?;
        let doc = self
            .services_document(&mut tx, app.id, Some(binding.id), None)
            .await?;
        let mut set = std::collections::BTreeMap::new();
        let mut remove = binding.variables.clone();
        if doc.is_empty() {
            remove.push(SERVICES_VARIABLE.to_owned());
        } else {
            set.insert(
                SERVICES_VARIABLE.to_owned(),
                SecretValue::new(serde_json::Value::Object(doc).to_string()),
            );
        }
        self.change_secrets_in(
            &mut tx,
            access,
            app.id,
            &set,
            &remove,
            super::releases::Cause::Binding,
        )
        .await?;
        store::request_unbind(
            &mut tx,
            binding.id,
            store::BindingState::Unbinding,
            store::BindingOperation::Unbind,
            self.operation_deadline(None),
            None,
        )
        .await?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "service_instance.unbind",
                target_kind: "service_instance",
                target: &format!("{}/{instance}", env.name),
                details: json!({"application": application, "binding": binding.id}),
            },
        )
        .await?;
        tx.commit().await?;
        self.service_wake.notify_one();
        Ok(())
    }
}

impl Platform {
    /// The URL a broker reaches a bound application's HTTP port at (a gateway routes
    /// to it): on the local runtime, the router's path for the application; elsewhere
    /// the runtime's stable address for the port (a Service name on Kubernetes, which
    /// a broker's servers running in the same cluster resolve). `None` when the
    /// application serves no HTTP or the runtime names no address.
    async fn route_of(
        &self,
        access: &TenantAccess,
        env: &crate::model::Environment,
        app: &str,
    ) -> Option<String> {
        if env.runtime == "local" {
            return self
                .router_url
                .as_deref()
                .map(|r| format!("{r}/apps/{}/{}/{app}/", access.tenant().slug, env.name));
        }
        let detail = self.application(access, &env.name, app).await.ok()?;
        let port = detail
            .spec
            .ports
            .iter()
            .find(|p| p.protocol == crate::spec::PortProtocol::Http)?;
        let endpoints = self.endpoints(access, &env.name, app).await.ok()?;
        endpoints
            .into_iter()
            .find(|e| e.port == port.name && e.ordinal.is_none())
            .map(|e| format!("http://{}/", e.address))
    }
}
