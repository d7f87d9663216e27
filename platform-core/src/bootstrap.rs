//! First-start data: the platform administrator for production (`paas serve`) and the
//! demo tenant with one user per role for a newcomer's machine (`paas up`).

use serde_json::json;

use crate::auth::password;
use crate::model::Role;
use crate::names::Password;
use crate::platform::tenancy as tenancy_defaults;
use crate::spec::{AppSpec, HealthSpec, PortProtocol, PortSpec, Resources, WorkloadKind};
use crate::store::audit::AuditRecord;
use crate::{CoreError, Platform, store};

/// A created account, with the only copy of its password.
#[derive(Debug, Clone)]
pub struct CreatedAccount {
    pub username: String,
    pub role: String,
    pub tenants: Vec<String>,
    pub password: Password,
}

/// The demo tenants and who is in them.
const DEMO_TENANTS: [(&str, &str); 2] = [
    ("acme", "Acme Corporation"),
    ("globex", "Globex Industries"),
];

/// A demo account: username, display name, platform admin, memberships.
type DemoUser = (
    &'static str,
    &'static str,
    bool,
    &'static [(&'static str, Role)],
);

const DEMO_USERS: [DemoUser; 4] = [
    ("admin", "Platform Administrator", true, &[]),
    (
        "dev",
        "Dana Developer",
        false,
        &[("acme", Role::Developer), ("globex", Role::Developer)],
    ),
    ("ops", "Omar Ops", false, &[("acme", Role::Ops)]),
    (
        "tadmin",
        "Tara Tenant-Admin",
        false,
        &[("acme", Role::TenantAdmin), ("globex", Role::TenantAdmin)],
    ),
];

impl Platform {
    /// Creates the demo data when the platform has no users at all; returns the accounts
    /// created (empty when the platform was already initialized).
    ///
    /// Runs in one transaction, so a crash leaves either everything or nothing.
    pub async fn bootstrap_demo(&self) -> Result<Vec<CreatedAccount>, CoreError> {
        let mut tx = self.pool.begin().await?;
        // Serializes concurrent first starts.
        store::tenants::lock_bootstrap(&mut tx).await?;
        if store::users::count(&mut *tx).await? > 0 {
            return Ok(Vec::new());
        }
        let mut tenant_ids = Vec::new();
        for (slug, name) in DEMO_TENANTS {
            let tenant = store::tenants::insert(&mut tx, slug, name).await?;
            for (env, description, protected) in tenancy_defaults::DEFAULT_ENVIRONMENTS {
                store::tenants::insert_environment(
                    &mut tx,
                    tenant.id,
                    env,
                    description,
                    protected,
                    "local",
                )
                .await?;
            }
            system_audit(&mut tx, Some(tenant.id), "tenant.create", "tenant", slug).await?;
            // A generous quota, so that the demo shows quotas at work without getting
            // in the way.
            store::tenants::set_quota(
                &mut tx,
                tenant.id,
                store::tenants::QuotaRow {
                    max_instances: Some(20),
                    max_cpu_millis: Some(4000),
                    max_memory_mib: Some(4096),
                    max_service_instances: Some(10),
                },
            )
            .await?;
            tenant_ids.push((slug, tenant.id));
        }
        let mut accounts = Vec::new();
        for (username, display_name, platform_admin, memberships) in DEMO_USERS {
            let password = Password::generate();
            let hash = password::hash(&password).await?;
            let user = store::users::insert(&mut tx, username, display_name, &hash, platform_admin)
                .await?;
            system_audit(&mut tx, None, "user.create", "user", username).await?;
            for (slug, role) in memberships {
                if let Some((_, tenant_id)) = tenant_ids.iter().find(|(s, _)| s == slug) {
                    store::tenants::upsert_member(&mut tx, *tenant_id, user.id, *role).await?;
                    system_audit(&mut tx, Some(*tenant_id), "member.add", "user", username).await?;
                }
            }
            let role = if platform_admin {
                "platform_admin".to_owned()
            } else {
                memberships
                    .first()
                    .map(|(_, r)| r.as_str().to_owned())
                    .unwrap_or_default()
            };
            accounts.push(CreatedAccount {
                username: username.to_owned(),
                role,
                tenants: memberships.iter().map(|(s, _)| (*s).to_owned()).collect(),
                password,
            });
        }
        // One sample application so the console has something to show.
        let dev_user = store::users::by_username(&mut *tx, "dev").await?;
        if let (Some((_, acme)), Some(dev_user)) = (tenant_ids.first(), dev_user)
            && let Some(env) = store::tenants::environment(&mut *tx, *acme, "dev").await?
        {
            {
                let spec = AppSpec {
                    package: None,
                    image: None,
                    limits: Default::default(),
                    kind: WorkloadKind::Service,
                    command: "python3".to_owned(),
                    args: vec![
                        "-m".to_owned(),
                        "http.server".to_owned(),
                        "$PORT".to_owned(),
                    ],
                    env: [("GREETING".to_owned(), "hello".to_owned())].into(),
                    replicas: 2,
                    resources: Resources::default(),
                    schedule: None,
                    ports: vec![PortSpec {
                        name: "http".to_owned(),
                        protocol: PortProtocol::Http,
                    }],
                    health: HealthSpec::default(),
                    placement: Default::default(),
                    labels: Default::default(),
                    storage_mib: None,
                };
                let spec_json =
                    serde_json::to_value(&spec).map_err(|e| CoreError::Internal(e.to_string()))?;
                store::apps::create(
                    &mut *tx,
                    store::apps::NewApplication {
                        tenant_id: *acme,
                        environment_id: env.id,
                        environment: &env.name,
                        name: "hello",
                        description: "A sample static HTTP service.",
                        spec: &spec_json,
                        created_by: dev_user.id,
                    },
                    system_record(
                        Some(*acme),
                        "application.create",
                        "application",
                        "dev/hello",
                    ),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(accounts)
    }

    /// Makes sure the platform's own service tenant exists: tenant `system` with its
    /// environment `services`, where the middleware brokers run their servers as
    /// applications, and the brokers' account `username` (a tenant admin there and
    /// nowhere else) signing in with `password` (set again on every start: the file
    /// `paas up` keeps it in is the source of truth). Idempotent.
    pub async fn bootstrap_services(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<(), CoreError> {
        let username = crate::names::Username::parse(username)?;
        let hash = password::hash(password).await?;
        let mut tx = self.pool.begin().await?;
        store::tenants::lock_bootstrap(&mut tx).await?;
        let tenant = match store::tenants::by_slug(&mut *tx, SERVICE_TENANT).await? {
            Some(t) => t,
            None => {
                let t =
                    store::tenants::insert(&mut tx, SERVICE_TENANT, "Platform services").await?;
                system_audit(
                    &mut tx,
                    Some(t.id),
                    "tenant.create",
                    "tenant",
                    SERVICE_TENANT,
                )
                .await?;
                t
            }
        };
        if store::tenants::environment(&mut *tx, tenant.id, SERVICE_ENVIRONMENT)
            .await?
            .is_none()
        {
            store::tenants::insert_environment(
                &mut tx,
                tenant.id,
                SERVICE_ENVIRONMENT,
                "Servers of the service catalog's instances, run by the brokers",
                false,
                "local",
            )
            .await?;
        }
        let user = match store::users::credentials(&mut *tx, username.as_str()).await? {
            Some(user) => {
                if !password::verify(password, &user.password_hash).await {
                    store::users::set_password(&mut tx, user.id, &hash).await?;
                }
                user.id
            }
            None => {
                let user = store::users::insert(
                    &mut tx,
                    username.as_str(),
                    "Service brokers",
                    &hash,
                    false,
                )
                .await?;
                system_audit(&mut tx, None, "user.create", "user", username.as_str()).await?;
                user.id
            }
        };
        if store::tenants::members(&mut *tx, tenant.id)
            .await?
            .iter()
            .all(|m| m.username != username.as_str())
        {
            store::tenants::upsert_member(&mut tx, tenant.id, user, Role::TenantAdmin).await?;
            system_audit(
                &mut tx,
                Some(tenant.id),
                "member.add",
                "user",
                username.as_str(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates the platform administrator `username` with `password` unless an enabled
    /// platform administrator exists; returns whether it created one.
    pub async fn bootstrap_admin(
        &self,
        username: &str,
        password: &Password,
    ) -> Result<bool, CoreError> {
        let username = crate::names::Username::parse(username)?;
        let mut tx = self.pool.begin().await?;
        store::tenants::lock_bootstrap(&mut tx).await?;
        if store::users::platform_admin_count(&mut *tx).await? > 0 {
            return Ok(false);
        }
        let hash = password::hash(password).await?;
        match store::users::by_username(&mut *tx, username.as_str()).await? {
            Some(_) => {
                return Err(CoreError::Conflict {
                    field: "username",
                    message: format!(
                        "user '{username}' exists but is not an enabled platform administrator"
                    ),
                });
            }
            None => {
                store::users::insert(
                    &mut tx,
                    username.as_str(),
                    "Platform Administrator",
                    &hash,
                    true,
                )
                .await?;
            }
        }
        system_audit(&mut tx, None, "user.create", "user", username.as_str()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The tenant the platform's own services run in.
pub const SERVICE_TENANT: &str = "system";
/// Its environment for the brokers' servers.
pub const SERVICE_ENVIRONMENT: &str = "services";

async fn system_audit(
    tx: &mut sqlx::PgConnection,
    tenant_id: Option<uuid::Uuid>,
    action: &str,
    kind: &str,
    target: &str,
) -> Result<(), CoreError> {
    store::audit::append(tx, system_record(tenant_id, action, kind, target))
        .await
        .map_err(CoreError::from)
}

/// An audit record of the first start, done by the system.
fn system_record<'a>(
    tenant_id: Option<uuid::Uuid>,
    action: &'a str,
    kind: &'a str,
    target: &'a str,
) -> AuditRecord<'a> {
    AuditRecord {
        tenant_id,
        actor_id: None,
        actor: "system",
        action,
        target_kind: kind,
        target,
        details: json!({"reason": "first start"}),
        source_ip: None,
    }
}
