//! The cache broker: each service instance is a Redis server (Debian's `redis-server`
//! on the local runtime, the `redis:7` image on Kubernetes) run as a stateful
//! application of the platform's service tenant, its `maxmemory` set by the plan; each
//! binding is a Redis ACL user of its own, saved in the server's ACL file so that it
//! survives restarts, and deleted (with its connections) on unbinding.

pub mod resp;

use std::time::Duration;

use async_trait::async_trait;
use broker_kit::platform::PlatformClient;
use broker_kit::{Backend, BackendError, BindingRecord, InstanceRecord, user_name};
use serde_json::{Map, Value, json};

use crate::resp::{Connection, Reply};

/// The service's id in the catalog.
pub const SERVICE_ID: &str = "6f1c2d1e-cache-redis";

/// Plans: name, id, description, maxmemory in MiB.
const PLANS: [(&str, &str, &str, u32); 3] = [
    (
        "small",
        "6f1c2d1e-cache-redis-small",
        "64 MiB of memory",
        64,
    ),
    (
        "medium",
        "6f1c2d1e-cache-redis-medium",
        "256 MiB of memory",
        256,
    ),
    (
        "large",
        "6f1c2d1e-cache-redis-large",
        "1 GiB of memory",
        1024,
    ),
];

/// The data directory every instance gets (a volume on Kubernetes): room for the
/// largest plan's snapshot and append-only file, whatever the plan, since an instance
/// may change plans and its volume cannot grow.
fn storage_mib() -> u32 {
    PLANS.iter().map(|p| p.3).max().unwrap_or(0) * 3
}

/// Eviction policies a plan's instance may be given.
const POLICIES: [&str; 4] = ["noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu"];

/// The broker's catalog.
pub fn catalog() -> osb::Catalog {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "maxmemory_policy": {"type": "string", "enum": POLICIES, "description": "What Redis evicts when memory is full"}
        },
        "additionalProperties": false
    });
    let plans = PLANS
        .iter()
        .map(|(name, id, description, _)| {
            serde_json::from_value(json!({
                "id": id, "name": name, "description": description, "free": true,
                "maximum_polling_duration": 600,
                "schemas": {"service_instance": {"create": {"parameters": schema}, "update": {"parameters": schema}}}
            }))
        })
        .collect::<Result<Vec<osb::Plan>, _>>()
        .unwrap_or_default();
    osb::Catalog {
        services: vec![osb::Service {
            name: "redis".into(),
            id: SERVICE_ID.into(),
            description:
                "Redis cache: an in-memory key-value store with a user of its own per binding"
                    .into(),
            tags: vec!["cache".into(), "redis".into(), "key-value".into()],
            bindable: true,
            instances_retrievable: true,
            bindings_retrievable: true,
            plan_updateable: true,
            plans,
            metadata: Some(
                json!({"displayName": "Redis cache", "version": env!("CARGO_PKG_VERSION"), "providerDisplayName": "PaaS middleware"}),
            ),
        }],
    }
}

fn plan_memory(plan_id: &str) -> Option<u32> {
    PLANS.iter().find(|p| p.1 == plan_id).map(|p| p.3)
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The application that runs an instance's server.
fn app_name(instance: &InstanceRecord) -> String {
    broker_kit::app_name("redis", instance)
}

/// The shell script that starts the server: the administrator (the `default` user)
/// from the application's secret, the bindings' users from the ACL file the server
/// saves in its data directory, and the plan's memory.
const START: &str = r#"umask 077
printf 'user default on >%s ~* &* +@all\n' "$REDIS_ADMIN_PASSWORD" > admin.acl
if [ -f users.acl ]; then grep -v '^user default ' users.acl > users.rest || true; else : > users.rest; fi
cat admin.acl users.rest > users.acl
rm -f admin.acl users.rest
exec redis-server --port "$PORT" --bind "$REDIS_BIND" --dir . --appendonly yes --save '' --aclfile users.acl --maxmemory "${MAXMEMORY_MB}mb" --maxmemory-policy "$MAXMEMORY_POLICY""#;

/// Runs Redis servers as platform applications.
#[derive(Debug)]
pub struct RedisBackend {
    platform: PlatformClient,
    /// How long a server may take to be ready.
    ready_within: Duration,
}

impl RedisBackend {
    pub fn new(platform: PlatformClient) -> Self {
        Self {
            platform,
            ready_within: Duration::from_secs(120),
        }
    }

    /// The application's spec for an instance's plan and parameters.
    async fn spec(&self, instance: &InstanceRecord) -> Result<Value, BackendError> {
        let memory = plan_memory(&instance.plan_id)
            .ok_or_else(|| BackendError::new(format!("no plan '{}'", instance.plan_id)))?;
        let policy = instance
            .parameters
            .get("maxmemory_policy")
            .and_then(Value::as_str)
            .unwrap_or("noeviction");
        if !POLICIES.contains(&policy) {
            return Err(BackendError::new(format!(
                "maxmemory_policy must be one of {}",
                POLICIES.join(", ")
            )));
        }
        // On Kubernetes the server listens on the pod's address; on the local runtime the
        // router forwards to the loopback.
        let bind = if self.platform.runs_locally().await? {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        Ok(json!({
            "kind": "stateful",
            "command": "sh",
            "image": "redis:7",
            "args": ["-c", START],
            "env": {"MAXMEMORY_MB": memory.to_string(), "MAXMEMORY_POLICY": policy, "REDIS_BIND": bind},
            "replicas": 1,
            "ports": [{"name": "redis", "protocol": "tcp"}],
            "resources": {"memory_mib": memory + 32, "cpu_millis": 100},
            "storage_mib": storage_mib(),
            "labels": {"service": "redis"}
        }))
    }

    /// Signs in to the instance's server as its administrator.
    async fn admin(&self, instance: &InstanceRecord) -> Result<Connection, BackendError> {
        let address = instance
            .facts
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let password = instance
            .facts
            .get("admin_password")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut connection = Connection::connect(address).await.map_err(|e| {
            BackendError::new(format!(
                "the Redis server at {address} cannot be reached: {e}"
            ))
        })?;
        connection
            .ok(&["AUTH", "default", password])
            .await
            .map_err(BackendError::new)?;
        Ok(connection)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let app = app_name(instance);
        let admin_password = random_secret();
        let spec = self.spec(instance).await?;
        self.platform
            .deploy(
                &app,
                "Redis server of a cache service instance",
                &spec,
                &[("REDIS_ADMIN_PASSWORD", &admin_password)],
            )
            .await?;
        let address = self
            .platform
            .wait_address(&app, "redis", self.ready_within)
            .await?;
        let mut facts = Map::new();
        facts.insert("app".into(), app.into());
        facts.insert("address".into(), address.clone().into());
        facts.insert("admin_password".into(), admin_password.into());
        // The server answers as its administrator before the instance is declared ready.
        let probe = InstanceRecord {
            facts: facts.clone(),
            ..instance.clone()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answered = match self.admin(&probe).await {
                Ok(mut c) => c.ok(&["PING"]).await.map_err(BackendError::new),
                Err(e) => Err(e),
            };
            match answered {
                Ok(_) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(facts)
    }

    async fn update(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let app = app_name(instance);
        let spec = self.spec(instance).await?;
        self.platform.update(&app, &spec).await?;
        let address = self
            .platform
            .wait_address(&app, "redis", self.ready_within)
            .await?;
        let mut facts = instance.facts.clone();
        facts.insert("address".into(), address.into());
        Ok(facts)
    }

    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError> {
        let app = app_name(instance);
        // The data goes before the server: the platform keeps a stateful ordinal's
        // directory on its node after the application is deleted. Best effort: a
        // server that never started (a failed creation) has nothing to wipe.
        if let Ok(mut admin) = self.admin(instance).await {
            let _ = admin.ok(&["FLUSHALL", "SYNC"]).await;
            if let Ok(Reply::Array(Some(users))) = admin.ok(&["ACL", "USERS"]).await {
                for user in users {
                    if let Reply::Bulk(Some(name)) = user {
                        let name = String::from_utf8_lossy(&name).into_owned();
                        if name != "default" {
                            let _ = admin.ok(&["ACL", "DELUSER", &name]).await;
                        }
                    }
                }
            }
            let _ = admin.ok(&["ACL", "SAVE"]).await;
            let _ = admin.ok(&["BGREWRITEAOF"]).await;
        }
        self.platform.remove(&app).await?;
        self.platform.wait_gone(&app, Duration::from_secs(60)).await
    }

    async fn bind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<Map<String, Value>, BackendError> {
        let binding_id = binding.id.as_str();
        let user = user_name(binding_id);
        let password = random_secret();
        let mut admin = self.admin(instance).await?;
        admin
            .ok(&[
                "ACL",
                "SETUSER",
                &user,
                "reset",
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
                "-@admin",
                "-@dangerous",
            ])
            .await
            .map_err(BackendError::new)?;
        admin
            .ok(&["ACL", "SAVE"])
            .await
            .map_err(BackendError::new)?;
        let address = instance
            .facts
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut credentials = broker_kit::address_credentials(address, 6379, |host, port| {
            format!("redis://{user}:{password}@{host}:{port}")
        });
        credentials.insert("username".into(), user.into());
        credentials.insert("password".into(), password.into());
        Ok(credentials)
    }

    async fn unbind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError> {
        let user = user_name(&binding.id);
        let mut admin = self.admin(instance).await?;
        match admin.ok(&["ACL", "DELUSER", &user]).await {
            Ok(Reply::Integer(_)) | Ok(_) => {}
            Err(e) => return Err(BackendError::new(e)),
        }
        admin
            .ok(&["ACL", "SAVE"])
            .await
            .map_err(BackendError::new)?;
        // Connections signed in as the user end with it.
        let _ = admin.ok(&["CLIENT", "KILL", "USER", &user]).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_valid() {
        let c = catalog();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.services[0].plans.len(), 3);
        assert_eq!(plan_memory("6f1c2d1e-cache-redis-medium"), Some(256));
        // The largest plan's snapshot and append-only file fit every instance's volume.
        assert_eq!(storage_mib(), 3 * 1024);
    }

    #[test]
    fn names_derive_from_ids() {
        let i = InstanceRecord {
            id: "0f4e-AB12-cd34-ef56-7890".into(),
            service_id: SERVICE_ID.into(),
            plan_id: PLANS[0].1.into(),
            parameters: Map::new(),
            context: Map::new(),
            phase: broker_kit::registry::Phase::Creating,
            operation: String::new(),
            operation_kind: String::new(),
            description: None,
            facts: Map::new(),
            usable: true,
        };
        assert_eq!(app_name(&i), "redis-0f4eab12cd34");
        assert_eq!(user_name("a-b-c"), "binding-abc");
    }
}
