//! How a workload is named and what phase an instance is in: shared by the core's
//! runtime port, the drivers and the node agent.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which application a workload is: tenant, environment and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct WorkloadKey {
    pub tenant: String,
    pub environment: String,
    pub app: String,
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.environment, self.app)
    }
}

/// The life of an instance as a driver observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum Phase {
    /// Accepted, not yet placed or started.
    Pending,
    /// The process or container is starting; not yet ready.
    Starting,
    /// Running; see `ready` for whether it passes its readiness check.
    Running,
    /// Exited unexpectedly and waits before the next restart.
    BackOff,
    /// Being stopped (draining, then terminated).
    Stopping,
    /// Ran to completion (jobs).
    Succeeded,
    /// Gave up: a job out of retries, or an artifact that cannot run at all.
    Failed,
    /// Its node does not report: what it does now is not known (the message says what
    /// was last known, and why it stays or moves).
    Unknown,
}

impl Phase {
    /// The phase as stored and as the API spells it (`back_off`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::BackOff => "back_off",
            Self::Stopping => "stopping",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}
