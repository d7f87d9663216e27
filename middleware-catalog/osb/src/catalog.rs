//! The Open Service Broker API v2.17 catalog model (`GET /v2/catalog`), with the checks
//! the specification puts on it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// A broker's catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub services: Vec<Service>,
}

/// A service offering, e.g. "redis".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub id: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub bindable: bool,
    #[serde(default)]
    pub instances_retrievable: bool,
    #[serde(default)]
    pub bindings_retrievable: bool,
    #[serde(default)]
    pub plan_updateable: bool,
    pub plans: Vec<Plan>,
    /// Free-form; the platform reads `displayName` and `version` (the broker's release)
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Service {
    /// The plan with this id.
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// Whether instances of this plan can be bound (the plan's word wins).
    pub fn plan_bindable(&self, plan: &Plan) -> bool {
        plan.bindable.unwrap_or(self.bindable)
    }

    /// Whether an instance's plan can be changed (the plan's word wins).
    pub fn plan_updateable(&self, plan: &Plan) -> bool {
        plan.plan_updateable.unwrap_or(self.plan_updateable)
    }

    /// A string field of the service's metadata.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

/// A plan of a service, e.g. "small".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_updateable: Option<bool>,
    /// JSON Schemas of the parameters each operation accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Schemas>,
    /// Seconds the platform should poll an asynchronous operation at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_polling_duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<MaintenanceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// The schemas of a plan's parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schemas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_instance: Option<InstanceSchemas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_binding: Option<BindingSchemas>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSchemas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ParametersSchema>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<ParametersSchema>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BindingSchemas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<ParametersSchema>,
}

/// An operation's input: `parameters` is a JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParametersSchema {
    pub parameters: serde_json::Value,
}

/// What a plan's instances run on; provisioning may name it to be sure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceInfo {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Plan {
    /// The schema of the parameters `operation` accepts, if the plan gives one.
    pub fn parameters_schema(&self, operation: SchemaFor) -> Option<&serde_json::Value> {
        let schemas = self.schemas.as_ref()?;
        let schema = match operation {
            SchemaFor::Provision => schemas.service_instance.as_ref()?.create.as_ref(),
            SchemaFor::Update => schemas.service_instance.as_ref()?.update.as_ref(),
            SchemaFor::Bind => schemas.service_binding.as_ref()?.create.as_ref(),
        };
        schema.map(|s| &s.parameters)
    }
}

/// Which operation's parameters a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFor {
    Provision,
    Update,
    Bind,
}

/// What is wrong with a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("service {index}: {field} must not be empty")]
    Empty { index: usize, field: &'static str },
    #[error("'{service}': names use lowercase letters, digits and '-' only (CLI-friendly)")]
    NotCliFriendly { service: String },
    #[error("service '{service}' has no plans")]
    NoPlans { service: String },
    #[error("id '{id}' is used twice; service and plan ids must be globally unique")]
    DuplicateId { id: String },
    #[error("service '{service}' has two plans named '{plan}'")]
    DuplicatePlanName { service: String, plan: String },
    #[error("service '{service}' plan '{plan}': a parameters schema must be a JSON object")]
    SchemaNotObject { service: String, plan: String },
    #[error("two services are named '{service}'; service names must be unique")]
    DuplicateServiceName { service: String },
}

fn cli_friendly(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Catalog {
    /// Checks the rules the specification sets for a catalog.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let mut ids = HashSet::new();
        let mut service_names = HashSet::new();
        for (index, service) in self.services.iter().enumerate() {
            if service.id.is_empty() {
                return Err(CatalogError::Empty { index, field: "id" });
            }
            if service.description.is_empty() {
                return Err(CatalogError::Empty {
                    index,
                    field: "description",
                });
            }
            if !cli_friendly(&service.name) {
                return Err(CatalogError::NotCliFriendly {
                    service: service.name.clone(),
                });
            }
            if !service_names.insert(service.name.as_str()) {
                return Err(CatalogError::DuplicateServiceName {
                    service: service.name.clone(),
                });
            }
            if service.plans.is_empty() {
                return Err(CatalogError::NoPlans {
                    service: service.name.clone(),
                });
            }
            if !ids.insert(service.id.as_str()) {
                return Err(CatalogError::DuplicateId {
                    id: service.id.clone(),
                });
            }
            let mut names = HashSet::new();
            for plan in &service.plans {
                if !ids.insert(plan.id.as_str()) {
                    return Err(CatalogError::DuplicateId {
                        id: plan.id.clone(),
                    });
                }
                if plan.id.is_empty() {
                    return Err(CatalogError::Empty {
                        index,
                        field: "plans[].id",
                    });
                }
                if !cli_friendly(&plan.name) {
                    return Err(CatalogError::NotCliFriendly {
                        service: format!("{}/{}", service.name, plan.name),
                    });
                }
                if !names.insert(plan.name.as_str()) {
                    return Err(CatalogError::DuplicatePlanName {
                        service: service.name.clone(),
                        plan: plan.name.clone(),
                    });
                }
                for operation in [SchemaFor::Provision, SchemaFor::Update, SchemaFor::Bind] {
                    if plan
                        .parameters_schema(operation)
                        .is_some_and(|s| !s.is_object())
                    {
                        return Err(CatalogError::SchemaNotObject {
                            service: service.name.clone(),
                            plan: plan.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(json: serde_json::Value) -> Catalog {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("catalog does not parse: {e}"))
    }

    fn redis(plans: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"services": [{"name": "redis", "id": "svc-redis", "description": "Redis cache", "bindable": true, "plans": plans}]})
    }

    #[test]
    fn a_well_formed_catalog_validates() {
        let c = catalog(redis(
            serde_json::json!([{"id": "p1", "name": "small", "description": "64 MiB"}]),
        ));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn duplicate_ids_and_missing_plans_are_refused() {
        let c = catalog(redis(serde_json::json!([])));
        assert_eq!(
            c.validate(),
            Err(CatalogError::NoPlans {
                service: "redis".into()
            })
        );
        let c = catalog(redis(
            serde_json::json!([{"id": "svc-redis", "name": "small", "description": "x"}]),
        ));
        assert_eq!(
            c.validate(),
            Err(CatalogError::DuplicateId {
                id: "svc-redis".into()
            })
        );
        let c = catalog(redis(serde_json::json!([
            {"id": "p1", "name": "small", "description": "x"}, {"id": "p2", "name": "small", "description": "y"}
        ])));
        assert!(matches!(
            c.validate(),
            Err(CatalogError::DuplicatePlanName { .. })
        ));
    }
}
