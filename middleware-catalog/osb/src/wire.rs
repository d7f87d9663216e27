//! The bodies the platform and a broker exchange, beyond the catalog.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Error codes the specification names (in [`ErrorBody::error`]).
pub mod codes {
    pub const ASYNC_REQUIRED: &str = "AsyncRequired";
    pub const CONCURRENCY_ERROR: &str = "ConcurrencyError";
    pub const REQUIRES_APP: &str = "RequiresApp";
    pub const MAINTENANCE_INFO_CONFLICT: &str = "MaintenanceInfoConflict";
}

/// `PUT /v2/service_instances/:instance_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub context: Map<String, Value>,
    /// Deprecated by `context`, still required by 2.17.
    pub organization_guid: String,
    pub space_guid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_info: Option<crate::catalog::MaintenanceInfo>,
}

/// A 200, 201 or 202 answer to provisioning or updating.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProvisionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `PATCH /v2/service_instances/:instance_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRequest {
    pub service_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_values: Option<PreviousValues>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

/// A 202 answer to deprovisioning or unbinding (a 200's body is `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperationResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// Where an asynchronous operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationState {
    #[serde(rename = "in progress")]
    InProgress,
    #[serde(rename = "succeeded")]
    Succeeded,
    #[serde(rename = "failed")]
    Failed,
}

/// `GET .../last_operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastOperation {
    pub state: OperationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}

/// `PUT /v2/service_instances/:instance_id/service_bindings/:binding_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindRequest {
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_resource: Option<BindResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// What a binding is for: the platform's application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_guid: Option<String>,
    /// Where the application serves HTTP, for a service that sits in front of it (an
    /// API gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// A 200 or 201 answer to binding (a 202 carries only `operation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BindResponse {
    /// What the application needs to reach the instance: a flat object by
    /// convention (`uri`, `host`, `port`, `username`, `password`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// The body of a 4xx or 5xx answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A code from [`codes`] when one applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_usable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_repeatable: Option<bool>,
}

impl ErrorBody {
    pub fn new(error: Option<&str>, description: impl Into<String>) -> Self {
        Self {
            error: error.map(str::to_owned),
            description: Some(description.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_states_use_the_specifications_words() {
        let op: LastOperation =
            serde_json::from_str(r#"{"state": "in progress"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(op.state, OperationState::InProgress);
        assert!(serde_json::from_str::<LastOperation>(r#"{"state": "running"}"#).is_err());
        let body =
            serde_json::to_value(ProvisionResponse::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, serde_json::json!({}));
    }
}
