//! The Open Service Broker API v2.17 catalog model (`GET /v2/catalog`), with the checks
//! the specification puts on it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// The API version this crate speaks, sent as `X-Broker-API-Version`.
pub const API_VERSION: &str = "2.17";

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
}

/// What is wrong with a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("service {index}: {field} must not be empty")]
    Empty { index: usize, field: &'static str },
    #[error("service '{service}': names use lowercase letters, digits and '-' only (CLI-friendly)")]
    NotCliFriendly { service: String },
    #[error("service '{service}' has no plans")]
    NoPlans { service: String },
    #[error("id '{id}' is used twice; service and plan ids must be globally unique")]
    DuplicateId { id: String },
    #[error("service '{service}' has two plans named '{plan}'")]
    DuplicatePlanName { service: String, plan: String },
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
                if !names.insert(plan.name.as_str()) {
                    return Err(CatalogError::DuplicatePlanName {
                        service: service.name.clone(),
                        plan: plan.name.clone(),
                    });
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
