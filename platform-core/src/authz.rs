//! Authorization: who the caller is ([`Principal`]), what each role may do
//! ([`Permission`]), and proof of access to one tenant ([`TenantAccess`]).
//!
//! A `TenantAccess` can only be made by [`crate::Platform::tenant`], which returns "not
//! found" for a tenant the caller is not a member of. Every tenant-scoped operation takes
//! one and scopes its SQL by the tenant id inside it, so one tenant's objects can never
//! be named through another's.

use uuid::Uuid;

use crate::CoreError;
use crate::model::{Role, Tenant, TenantMembership};

/// An authenticated user, as loaded from the database for this request (with their
/// memberships, in the same statement).
///
/// Only the core makes one (`Platform::authenticate` and `Platform::login`): what it
/// grants, platform administration and tenant memberships, cannot be set from outside,
/// so a principal is trusted as it is and access is not read a second time.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    platform_admin: bool,
    memberships: Vec<TenantMembership>,
    /// The client address, recorded in the audit log.
    pub source_ip: Option<String>,
}

impl Principal {
    pub(crate) fn new(
        user: crate::model::User,
        memberships: Vec<TenantMembership>,
        source_ip: Option<String>,
    ) -> Self {
        Self {
            user_id: user.id,
            username: user.username,
            display_name: user.display_name,
            platform_admin: user.platform_admin,
            memberships,
            source_ip,
        }
    }

    pub fn membership(&self, slug: &str) -> Option<&TenantMembership> {
        self.memberships.iter().find(|m| m.slug == slug)
    }

    /// The tenants the user belongs to, by slug, with their role in each.
    pub fn memberships(&self) -> &[TenantMembership] {
        &self.memberships
    }

    pub fn is_platform_admin(&self) -> bool {
        self.platform_admin
    }

    pub(crate) fn require_platform_admin(&self, action: &'static str) -> Result<(), CoreError> {
        if self.platform_admin {
            Ok(())
        } else {
            Err(CoreError::PlatformAdminOnly { action })
        }
    }
}

/// Something a member may or may not do within a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// See the tenant's environments, applications and members.
    View,
    /// Create, change or delete applications in an environment.
    ChangeApps { protected_environment: bool },
    /// Add environments.
    ManageEnvironments,
    /// Add, remove and change the role of members.
    ManageMembers,
    /// Read the tenant's audit log.
    ViewAudit,
    /// Set, change and remove applications' autoscaling policies.
    ManageAutoscaling,
}

impl Permission {
    /// The role matrix. Kept in one place so that the console, the API and the tests
    /// all read the same answer.
    pub fn allowed_for(self, role: Role) -> bool {
        match (self, role) {
            (_, Role::TenantAdmin) => true,
            (Permission::View, _) => true,
            (Permission::ChangeApps { .. }, Role::Ops) => true,
            (
                Permission::ChangeApps {
                    protected_environment,
                },
                Role::Developer,
            ) => !protected_environment,
            (Permission::ViewAudit, Role::Ops) => true,
            (
                Permission::ManageEnvironments
                | Permission::ManageMembers
                | Permission::ViewAudit
                | Permission::ManageAutoscaling,
                _,
            ) => false,
        }
    }
}

/// Proof that the principal is a member of this tenant, with their role.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    tenant: Tenant,
    role: Role,
    principal: Principal,
}

impl TenantAccess {
    pub(crate) fn new(tenant: Tenant, role: Role, principal: Principal) -> Self {
        Self {
            tenant,
            role,
            principal,
        }
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn can(&self, permission: Permission) -> bool {
        permission.allowed_for(self.role)
    }

    pub(crate) fn require(
        &self,
        permission: Permission,
        action: &'static str,
    ) -> Result<(), CoreError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(CoreError::Forbidden { action })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(permission: Permission, expected: [bool; 3]) {
        let got =
            [Role::Developer, Role::Ops, Role::TenantAdmin].map(|r| permission.allowed_for(r));
        assert_eq!(
            got, expected,
            "{permission:?} for [developer, ops, tenant_admin]"
        );
    }

    #[test]
    fn role_matrix() {
        check(Permission::View, [true, true, true]);
        check(
            Permission::ChangeApps {
                protected_environment: false,
            },
            [true, true, true],
        );
        check(
            Permission::ChangeApps {
                protected_environment: true,
            },
            [false, true, true],
        );
        check(Permission::ManageEnvironments, [false, false, true]);
        check(Permission::ManageMembers, [false, false, true]);
        check(Permission::ViewAudit, [false, true, true]);
    }
}
