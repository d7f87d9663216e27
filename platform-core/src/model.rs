//! The records the core reads and returns: tenants, users, memberships, environments,
//! applications, revisions and audit entries.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::FieldError;
use crate::spec::AppSpec;

/// A member's role within one tenant. Platform administration is not a tenant role; it
/// is a flag on the user ([`User::platform_admin`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Onboards and changes applications in unprotected environments.
    Developer,
    /// Operates applications in every environment, including protected ones.
    Ops,
    /// Everything in the tenant: members, environments, applications, audit.
    TenantAdmin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Developer, Role::Ops, Role::TenantAdmin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::Ops => "ops",
            Role::TenantAdmin => "tenant_admin",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Developer => "Developer",
            Role::Ops => "Ops",
            Role::TenantAdmin => "Tenant admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| FieldError::new("role", "must be one of developer, ops, tenant_admin"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub platform_admin: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// Moves on with every change (send it back in `If-Match`).
    pub version: i64,
}

/// A tenant as seen by one of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TenantMembership {
    pub tenant_id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub role: Role,
    /// When the tenant was created; not part of the membership's API view.
    #[serde(skip)]
    pub tenant_created_at: DateTime<Utc>,
}

/// A member of a tenant, as the tenant's admins see them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    pub since: DateTime<Utc>,
    /// The membership's version: moves on when the role changes.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Environment {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub name: String,
    pub description: String,
    /// Changes to applications in a protected environment need the `ops` or
    /// `tenant_admin` role.
    pub protected: bool,
    /// The runtime that runs this environment's applications (`local` for now).
    pub runtime: String,
    pub created_at: DateTime<Utc>,
}

/// Whether an application's instances should run (an operator can stop it without
/// deleting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunState {
    Running,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
}

/// How many instances a running application asks for: none when stopped, else the
/// count set by scaling, else its spec's. The one place this rule lives.
pub fn desired_replicas(run_state: RunState, scaled: Option<i32>, spec: &AppSpec) -> u32 {
    match (run_state, scaled) {
        (RunState::Stopped, _) => 0,
        (RunState::Running, Some(scaled)) => u32::try_from(scaled).unwrap_or(0),
        (RunState::Running, None) => spec.replicas,
    }
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Application {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub environment: String,
    pub name: String,
    pub description: String,
    /// The newest revision: the spec last asked for.
    pub current_revision: i32,
    /// The revision that runs when no release moves the application (the last one a
    /// release finished on); a release in progress runs its target beside it.
    pub released_revision: i32,
    pub run_state: RunState,
    /// Replicas set by scaling; when absent the spec's count applies.
    pub scaled_replicas: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Moves on with every change; send it back in `If-Match` (or as `version`) to
    /// refuse a change when someone else changed the application since.
    pub version: i64,
}

/// Something that happened to an application's instances.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub instance: Option<String>,
    /// `Scheduled`, `Started`, `Ready`, `Crashed`, `Restarted`, `Stopping`, `Stopped`, ...
    pub reason: String,
    pub message: String,
}

/// An application with the spec of its current revision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationDetail {
    #[serde(flatten)]
    pub application: Application,
    pub spec: AppSpec,
}

/// One immutable version of an application's spec.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revision {
    pub number: i32,
    pub spec: AppSpec,
    /// The names of the secrets it runs with (their values are never shown).
    pub secrets: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A secret of an application, as anyone may see it: never its value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// Each change is a new version.
    pub version: i32,
    pub updated_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target_kind: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub source_ip: Option<String>,
}

/// Which audit entries to show; every field narrows the result.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Exact username of the actor.
    pub actor: Option<String>,
    /// Action prefix, e.g. `application.` or `member.add`.
    pub action: Option<String>,
    /// Substring of the target's name.
    pub target: Option<String>,
    /// Only entries with an id below this one (for paging backwards).
    pub before: Option<i64>,
    /// At most this many entries (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

impl AuditFilter {
    pub const MAX_LIMIT: i64 = 200;

    /// Refuses a limit outside 1 to [`AuditFilter::MAX_LIMIT`].
    pub fn check(&self) -> Result<(), crate::FieldError> {
        match self.limit {
            Some(l) if !(1..=Self::MAX_LIMIT).contains(&l) => Err(crate::FieldError::new(
                "limit",
                format!("must be between 1 and {}", Self::MAX_LIMIT),
            )),
            _ => Ok(()),
        }
    }
}

/// An uploaded package archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Package {
    /// `sha256:<hex>`: what a spec's `package` names.
    pub digest: String,
    pub filename: String,
    pub size_bytes: i64,
    /// Regular files in the archive.
    pub files: i32,
    pub uploaded_at: DateTime<Utc>,
}
