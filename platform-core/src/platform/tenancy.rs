//! Tenants, environments, members and the tenant's audit log.

use serde_json::json;

use super::{Audit, Platform, record};
use crate::authz::{Permission, Principal, TenantAccess};
use crate::error::conflict_on_unique;
use crate::model::{AuditEntry, AuditFilter, Environment, Member, Role, Tenant, TenantMembership};
use crate::names::{DisplayName, EnvName, TenantSlug, Username};
use crate::quota::{Quota, Usage};
use crate::{CoreError, FieldError, store};

/// The environments every new tenant starts with; `prod` is protected.
pub const DEFAULT_ENVIRONMENTS: [(&str, &str, bool); 3] = [
    ("dev", "Development: developers deploy freely.", false),
    ("test", "Testing and staging.", false),
    (
        "prod",
        "Production: changes need the ops or tenant admin role.",
        true,
    ),
];

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub display_name: DisplayName,
    /// An existing user to make the tenant's first admin.
    pub admin: Option<Username>,
}

#[derive(Debug, Clone)]
pub struct NewEnvironment {
    pub name: EnvName,
    pub description: String,
    pub protected: bool,
    /// The runtime that runs its applications; `None` is `local`.
    pub runtime: Option<String>,
}

impl Platform {
    /// Proof of access to a tenant. A tenant the caller is not a member of is reported
    /// as not found, exactly like one that does not exist.
    pub async fn tenant(
        &self,
        principal: &Principal,
        slug: &str,
    ) -> Result<TenantAccess, CoreError> {
        // A principal is loaded from the database for each request (`authenticate`), with
        // its memberships in the same statement, so they are as current as a second read
        // here would be. A membership removed a moment ago no longer opens the tenant to
        // the caller's next request.
        let m = principal
            .membership(slug)
            .ok_or_else(|| CoreError::not_found("tenant", slug))?;
        let tenant = Tenant {
            id: m.tenant_id,
            slug: m.slug.clone(),
            display_name: m.display_name.clone(),
            created_at: m.tenant_created_at,
        };
        Ok(TenantAccess::new(tenant, m.role, principal.clone()))
    }

    /// The tenants the caller belongs to.
    pub fn my_tenants<'p>(&self, principal: &'p Principal) -> &'p [TenantMembership] {
        principal.memberships()
    }

    /// Every tenant (platform administrators only).
    pub async fn all_tenants(&self, principal: &Principal) -> Result<Vec<Tenant>, CoreError> {
        principal.require_platform_admin("list all tenants")?;
        Ok(store::tenants::all(&self.pool).await?)
    }

    /// Creates a tenant with the default environments and, optionally, its first admin.
    pub async fn create_tenant(
        &self,
        principal: &Principal,
        input: NewTenant,
    ) -> Result<Tenant, CoreError> {
        principal.require_platform_admin("create tenants")?;
        let mut tx = self.pool.begin().await?;
        let tenant =
            store::tenants::insert(&mut tx, input.slug.as_str(), input.display_name.as_str())
                .await
                .map_err(|e| {
                    conflict_on_unique(
                        e,
                        "slug",
                        format!("a tenant '{}' already exists", input.slug),
                    )
                })?;
        for (name, description, protected) in DEFAULT_ENVIRONMENTS {
            store::tenants::insert_environment(
                &mut tx,
                tenant.id,
                name,
                description,
                protected,
                "local",
            )
            .await?;
        }
        if let Some(admin) = &input.admin {
            let user = store::users::by_username(&mut *tx, admin.as_str())
                .await?
                .ok_or_else(|| FieldError::new("admin", format!("no user '{admin}' exists")))?;
            store::tenants::upsert_member(&mut tx, tenant.id, user.id, Role::TenantAdmin).await?;
        }
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: Some(tenant.id),
                action: "tenant.create",
                target_kind: "tenant",
                target: &tenant.slug,
                details: json!({"display_name": tenant.display_name, "admin": input.admin}),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok(tenant)
    }

    pub async fn environments(&self, access: &TenantAccess) -> Result<Vec<Environment>, CoreError> {
        access.require(Permission::View, "view environments")?;
        let tenant = access.tenant().id;
        match self.access.environments(tenant) {
            Ok(held) => Ok(held),
            Err(ticket) => {
                let found = store::tenants::environments(&self.pool, tenant).await?;
                self.access.keep_environments(ticket, tenant, &found);
                Ok(found)
            }
        }
    }

    pub async fn environment(
        &self,
        access: &TenantAccess,
        name: &str,
    ) -> Result<Environment, CoreError> {
        access.require(Permission::View, "view environments")?;
        EnvName::parse(name).map_err(|_| CoreError::not_found("environment", name))?;
        store::tenants::environment(&self.pool, access.tenant().id, name)
            .await?
            .ok_or_else(|| CoreError::not_found("environment", name))
    }

    pub async fn create_environment(
        &self,
        access: &TenantAccess,
        input: NewEnvironment,
    ) -> Result<Environment, CoreError> {
        access.require(Permission::ManageEnvironments, "add environments")?;
        let runtime = input
            .runtime
            .as_deref()
            .unwrap_or("local")
            .trim()
            .to_owned();
        let known = self.runtimes().names().any(|n| n == runtime);
        let allowed = known || (self.runtimes().is_empty() && runtime == "local");
        if !allowed {
            let names: Vec<&str> = self.runtimes().names().collect();
            return Err(crate::FieldError::new(
                "runtime",
                format!(
                    "must be one of this platform's runtimes: {}",
                    names.join(", ")
                ),
            )
            .into());
        }
        let tenant_id = access.tenant().id;
        let mut tx = self.pool.begin().await?;
        let env = store::tenants::insert_environment(
            &mut tx,
            tenant_id,
            input.name.as_str(),
            &input.description,
            input.protected,
            &runtime,
        )
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                "name",
                format!("an environment '{}' already exists", input.name),
            )
        })?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(tenant_id),
                action: "environment.create",
                target_kind: "environment",
                target: &env.name,
                details: json!({"protected": env.protected}),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok(env)
    }

    pub async fn members(&self, access: &TenantAccess) -> Result<Vec<Member>, CoreError> {
        access.require(Permission::View, "view members")?;
        Ok(store::tenants::members(&self.pool, access.tenant().id).await?)
    }

    /// Adds a user to the tenant with a role, or changes their role. With `if_version`,
    /// only if the membership is still at that version.
    pub async fn set_member_role(
        &self,
        access: &TenantAccess,
        username: &str,
        role: Role,
        if_version: Option<i64>,
    ) -> Result<Member, CoreError> {
        access.require(Permission::ManageMembers, "manage members")?;
        let tenant_id = access.tenant().id;
        let username = Username::parse(username)?;
        let username = username.as_str();
        let mut tx = self.pool.begin().await?;
        let user = store::users::by_username(&mut *tx, username)
            .await?
            .ok_or_else(|| FieldError::new("username", format!("no user '{username}' exists")))?;
        let previous = lock_member(&mut tx, tenant_id, user.id, username, if_version).await?;
        store::tenants::upsert_member(&mut tx, tenant_id, user.id, role).await?;
        if previous == Some(Role::TenantAdmin) && role != Role::TenantAdmin {
            ensure_an_admin_remains(&mut tx, tenant_id).await?;
        }
        let action = if previous.is_some() {
            "member.role_change"
        } else {
            "member.add"
        };
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(tenant_id),
                action,
                target_kind: "user",
                target: &user.username,
                details: json!({"role": role, "previous_role": previous}),
            },
        )
        .await?;
        let member = store::tenants::members(&mut *tx, tenant_id)
            .await?
            .into_iter()
            .find(|m| m.user_id == user.id)
            .ok_or_else(|| {
                CoreError::Internal("member vanished inside its own transaction".into())
            })?;
        tx.commit().await?;
        self.access_changed();
        Ok(member)
    }

    pub async fn remove_member(
        &self,
        access: &TenantAccess,
        username: &str,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        access.require(Permission::ManageMembers, "manage members")?;
        let tenant_id = access.tenant().id;
        let not_found = || CoreError::not_found("member", username);
        Username::parse(username).map_err(|_| not_found())?;
        let mut tx = self.pool.begin().await?;
        let user = store::users::by_username(&mut *tx, username)
            .await?
            .ok_or_else(not_found)?;
        lock_member(&mut tx, tenant_id, user.id, username, if_version)
            .await?
            .ok_or_else(not_found)?;
        if !store::tenants::remove_member(&mut tx, tenant_id, user.id).await? {
            return Err(not_found());
        }
        ensure_an_admin_remains(&mut tx, tenant_id).await?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(tenant_id),
                action: "member.remove",
                target_kind: "user",
                target: username,
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok(())
    }

    /// The tenant's audit log, newest first.
    pub async fn tenant_audit(
        &self,
        access: &TenantAccess,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, CoreError> {
        access.require(Permission::ViewAudit, "read the audit log")?;
        filter.check()?;
        Ok(store::audit::list(&self.pool, Some(access.tenant().id), filter).await?)
    }

    /// The platform-level audit log (logins, users, tenants, keys), newest first.
    pub async fn platform_audit(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, CoreError> {
        principal.require_platform_admin("read the platform audit log")?;
        filter.check()?;
        Ok(store::audit::list(&self.pool, None, filter).await?)
    }

    /// The tenant's quota and what its running applications ask for now.
    /// The tenant's quota, what its running applications use, and the tenant's version
    /// (for `If-Match` on a change of the quota).
    pub async fn quota(&self, access: &TenantAccess) -> Result<(Quota, Usage, i64), CoreError> {
        access.require(Permission::View, "view the quota")?;
        let q = store::tenants::quota(&self.pool, access.tenant().id).await?;
        let version = store::tenants::version(&self.pool, access.tenant().id).await?;
        let mut conn = self.pool.acquire().await?;
        let (instances, cpu, mem) =
            store::tenants::usage(&mut conn, access.tenant().id, None).await?;
        Ok((
            Quota {
                max_instances: q.max_instances.and_then(|v| u32::try_from(v).ok()),
                max_cpu_millis: q.max_cpu_millis.and_then(|v| u32::try_from(v).ok()),
                max_memory_mib: q.max_memory_mib.and_then(|v| u32::try_from(v).ok()),
                max_service_instances: q.max_service_instances.and_then(|v| u32::try_from(v).ok()),
            },
            Usage {
                instances: u64::try_from(instances).unwrap_or(0),
                cpu_millis: u64::try_from(cpu).unwrap_or(0),
                memory_mib: u64::try_from(mem).unwrap_or(0),
            },
            version,
        ))
    }

    /// Sets a tenant's quota (platform administrators). Running applications are not
    /// stopped by a lower quota; changes that would exceed it are refused.
    pub async fn set_quota(
        &self,
        principal: &Principal,
        slug: &str,
        quota: Quota,
        if_version: Option<i64>,
    ) -> Result<(Quota, i64), CoreError> {
        principal.require_platform_admin("set quotas")?;
        quota.check()?;
        let tenant = store::tenants::by_slug(&self.pool, slug)
            .await?
            .ok_or_else(|| CoreError::not_found("tenant", slug))?;
        // Checked above: every limit fits.
        let to_i32 = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
        let mut tx = self.pool.begin().await?;
        let current = store::tenants::lock_version(&mut tx, tenant.id).await?;
        super::check_version(
            &mut *tx,
            Some(tenant.id),
            ("tenant", slug),
            ("tenant", slug),
            if_version,
            current,
        )
        .await?;
        let version = store::tenants::set_quota(
            &mut tx,
            tenant.id,
            store::tenants::QuotaRow {
                max_instances: to_i32(quota.max_instances),
                max_cpu_millis: to_i32(quota.max_cpu_millis),
                max_memory_mib: to_i32(quota.max_memory_mib),
                max_service_instances: to_i32(quota.max_service_instances),
            },
        )
        .await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: Some(tenant.id),
                action: "tenant.quota",
                target_kind: "tenant",
                target: &tenant.slug,
                details: json!(quota),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok((quota, version))
    }

    /// Live application counts per environment, for the dashboard.
    pub async fn application_counts(
        &self,
        access: &TenantAccess,
    ) -> Result<Vec<(String, i64)>, CoreError> {
        access.require(Permission::View, "view applications")?;
        Ok(store::apps::counts_by_environment(&self.pool, access.tenant().id).await?)
    }
}

/// Refuses a change that would leave the tenant without an enabled admin: nobody could
/// manage its members any more.
async fn ensure_an_admin_remains(
    tx: &mut sqlx::PgConnection,
    tenant_id: uuid::Uuid,
) -> Result<(), CoreError> {
    if store::tenants::admin_count(tx, tenant_id).await? == 0 {
        return Err(FieldError::new("role", "a tenant must keep at least one tenant admin").into());
    }
    Ok(())
}

/// Locks a user's membership for the rest of the transaction and refuses a change made
/// against a version it no longer has; returns the role it has (`None`: not a member).
async fn lock_member(
    tx: &mut sqlx::PgConnection,
    tenant_id: uuid::Uuid,
    user_id: uuid::Uuid,
    username: &str,
    if_version: Option<i64>,
) -> Result<Option<Role>, CoreError> {
    let current = store::tenants::lock_member(&mut *tx, tenant_id, user_id).await?;
    super::check_version(
        &mut *tx,
        Some(tenant_id),
        ("member", username),
        ("user", username),
        if_version,
        current.map(|(_, version)| version),
    )
    .await?;
    Ok(current.map(|(role, _)| role))
}
