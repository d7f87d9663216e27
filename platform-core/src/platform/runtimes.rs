//! The runtimes this control plane drives, as platform administrators see them.

use super::Platform;
use crate::CoreError;

/// One runtime this control plane drives and the nodes it reports.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RuntimeOverview {
    /// What environments name it by (`local`, or a cluster's name).
    pub name: String,
    pub nodes: Vec<crate::runtime::Node>,
    /// Why the nodes could not be read, when they could not.
    pub error: Option<String>,
}

impl Platform {
    /// Every runtime with its nodes (platform administrators only).
    pub async fn runtime_overview(
        &self,
        principal: &crate::authz::Principal,
    ) -> Result<Vec<RuntimeOverview>, CoreError> {
        principal.require_platform_admin("view the runtimes and their nodes")?;
        let mut out = Vec::new();
        for (name, runtime) in self.runtimes().iter() {
            let (nodes, error) = match runtime.nodes().await {
                Ok(nodes) => (nodes, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            out.push(RuntimeOverview {
                name: name.to_owned(),
                nodes,
                error,
            });
        }
        Ok(out)
    }
}
