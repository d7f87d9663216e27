//! The message-queue broker: each service instance is a NATS server with JetStream
//! (Debian's `nats-server` on the local runtime, the `nats:2-alpine` image on
//! Kubernetes) run as a stateful application of the platform's service tenant.
//!
//! The server runs in operator mode with a full account resolver in its data
//! directory. The instance's messages live in an account of their own (subjects and
//! streams no one else sees, the plan's JetStream quota); each binding is a bearer user
//! of that account issued by a signing key of the binding's own. Unbinding removes the
//! key from the account's JWT, pushed to the running server through the system
//! account: the server refuses the user from then on and closes its connections. The
//! broker keeps the instance's keys (seeds) in its registry and the live signing keys
//! in a file per instance; nothing of it is on a command line.

pub mod client;
pub mod jwt;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use broker_kit::platform::PlatformClient;
use broker_kit::{Backend, BackendError, BindingRecord, InstanceRecord, user_name};
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::client::Connection;
use crate::jwt::{InstanceKeys, Storage};

/// The service's id in the catalog.
pub const SERVICE_ID: &str = "8b2e4f60-queue-nats";

/// A plan: name, id, description, JetStream memory and disk in MiB.
struct Plan {
    name: &'static str,
    id: &'static str,
    description: &'static str,
    memory_mib: i64,
    disk_mib: i64,
}

const PLANS: [Plan; 2] = [
    Plan {
        name: "small",
        id: "8b2e4f60-queue-nats-small",
        description: "Streams of up to 256 MiB on disk and 16 MiB in memory",
        memory_mib: 16,
        disk_mib: 256,
    },
    Plan {
        name: "large",
        id: "8b2e4f60-queue-nats-large",
        description: "Streams of up to 4 GiB on disk and 128 MiB in memory",
        memory_mib: 128,
        disk_mib: 4096,
    },
];

/// The data directory every instance gets (a volume on Kubernetes): the largest plan's
/// stream storage and room for the account resolver, whatever the plan, since an
/// instance may change plans and its volume cannot grow.
fn storage_mib() -> i64 {
    PLANS.iter().map(|p| p.disk_mib).max().unwrap_or(0) + 512
}

/// The largest message an instance accepts unless its parameters say otherwise (KiB).
const DEFAULT_MAX_PAYLOAD_KIB: u64 = 1024;

/// The broker's catalog.
pub fn catalog() -> osb::Catalog {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "max_payload_kib": {"type": "integer", "minimum": 1, "maximum": 8192, "description": "The largest message the server accepts, in KiB (1024 by default)"}
        },
        "additionalProperties": false
    });
    let plans = PLANS
        .iter()
        .map(|p| {
            serde_json::from_value(json!({
                "id": p.id, "name": p.name, "description": p.description, "free": true,
                "maximum_polling_duration": 600,
                "schemas": {"service_instance": {"create": {"parameters": schema}, "update": {"parameters": schema}}}
            }))
        })
        .collect::<Result<Vec<osb::Plan>, _>>()
        .unwrap_or_default();
    osb::Catalog {
        services: vec![osb::Service {
            name: "nats".into(),
            id: SERVICE_ID.into(),
            description: "NATS message queue with JetStream streams: an account of its own per instance, a user per binding".into(),
            tags: vec!["queue".into(), "nats".into(), "jetstream".into(), "messaging".into()],
            bindable: true,
            instances_retrievable: true,
            bindings_retrievable: true,
            plan_updateable: true,
            plans,
            metadata: Some(
                json!({"displayName": "NATS message queue", "version": env!("CARGO_PKG_VERSION"), "providerDisplayName": "PaaS middleware"}),
            ),
        }],
    }
}

fn plan(plan_id: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.id == plan_id)
}

fn storage(plan: &Plan) -> Storage {
    Storage {
        memory: plan.memory_mib << 20,
        disk: plan.disk_mib << 20,
    }
}

/// The application that runs an instance's server.
fn app_name(instance: &InstanceRecord) -> String {
    broker_kit::app_name("nats", instance)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The shell script that starts the server: the operator's JWT, and the accounts' first
/// JWTs unless the resolver already holds newer ones (pushed by the broker, which
/// survive restarts in the data directory), then the configuration.
pub const START: &str = r#"umask 077
mkdir -p jwt js
printf '%s' "$NATS_OPERATOR_JWT" > operator.jwt
[ -f "jwt/$NATS_SYSTEM_ACCOUNT.jwt" ] || printf '%s' "$NATS_SYSTEM_ACCOUNT_JWT" > "jwt/$NATS_SYSTEM_ACCOUNT.jwt"
[ -f "jwt/$NATS_ACCOUNT.jwt" ] || printf '%s' "$NATS_ACCOUNT_JWT" > "jwt/$NATS_ACCOUNT.jwt"
cat > nats.conf <<EOF
port: $PORT
host: "$NATS_BIND"
server_name: "$NATS_NAME"
max_payload: $NATS_MAX_PAYLOAD
operator: "./operator.jwt"
system_account: "$NATS_SYSTEM_ACCOUNT"
resolver: { type: full, dir: "./jwt", allow_delete: false, interval: "2m", timeout: "2s" }
jetstream: { store_dir: "./js", max_memory_store: $NATS_MEMORY, max_file_store: $NATS_DISK }
EOF
exec nats-server -c nats.conf"#;

/// What a server is started with.
#[derive(Debug)]
pub struct ServerSettings<'a> {
    pub name: &'a str,
    pub keys: &'a InstanceKeys,
    pub storage: Storage,
    /// Bytes.
    pub max_payload: u64,
    /// The address the server listens on (its port is `$PORT`).
    pub bind: &'a str,
    /// When the instance was made: the issue time of its first JWTs.
    pub created: i64,
}

/// The environment [`START`] needs (the JWTs are public: claims, not keys).
pub fn server_env(s: &ServerSettings<'_>) -> Result<BTreeMap<String, String>, String> {
    let system = s.keys.system.public_key();
    let account = s.keys.account.public_key();
    let operator_jwt = jwt::operator(&s.keys.operator, &system, s.created)?;
    let system_jwt = jwt::account(&s.keys.operator, &system, "SYS", None, &[], s.created)?;
    let account_jwt = jwt::account(
        &s.keys.operator,
        &account,
        s.name,
        Some(s.storage),
        &[],
        s.created,
    )?;
    Ok(BTreeMap::from([
        ("NATS_BIND".to_owned(), s.bind.to_owned()),
        ("NATS_NAME".to_owned(), s.name.to_owned()),
        ("NATS_MAX_PAYLOAD".to_owned(), s.max_payload.to_string()),
        ("NATS_MEMORY".to_owned(), s.storage.memory.to_string()),
        ("NATS_DISK".to_owned(), s.storage.disk.to_string()),
        ("NATS_OPERATOR_JWT".to_owned(), operator_jwt),
        ("NATS_SYSTEM_ACCOUNT".to_owned(), system),
        ("NATS_SYSTEM_ACCOUNT_JWT".to_owned(), system_jwt),
        ("NATS_ACCOUNT".to_owned(), account),
        ("NATS_ACCOUNT_JWT".to_owned(), account_jwt),
    ]))
}

/// Connects to the server at `address` as a user of `issuer`'s account, minted for the
/// purpose (whoever holds the account's key may).
pub async fn connect_as(address: &str, issuer: &KeyPair, role: &str) -> Result<Connection, String> {
    let (user, _) = jwt::user(issuer, &issuer.public_key(), role, now())
        .map_err(|e| format!("a {role} user: {e}"))?;
    Connection::connect(address, &user)
        .await
        .map_err(|e| format!("the NATS server at {address} refused or could not be reached: {e}"))
}

/// Pushes an account's JWT to the running server at `address` (as the system
/// account), which stores it in its resolver and applies it to connected clients.
pub async fn push_account_jwt(
    address: &str,
    keys: &InstanceKeys,
    account_jwt: &str,
) -> Result<(), String> {
    let mut system = connect_as(address, &keys.system, "broker").await?;
    let answer = system
        .request_json("$SYS.REQ.CLAIMS.UPDATE", account_jwt.as_bytes())
        .await
        .map_err(|e| format!("the server did not take the account's JWT: {e}"))?;
    match answer["data"]["code"].as_i64() {
        Some(200) => Ok(()),
        _ => Err(format!(
            "the server refused the account's JWT: {}",
            answer.get("error").unwrap_or(&answer)
        )),
    }
}

/// The account's JWT for a plan's quota and the live bindings' signing keys.
pub fn account_jwt(
    keys: &InstanceKeys,
    name: &str,
    storage: Storage,
    signers: &[String],
    issued_at: i64,
) -> Result<String, String> {
    jwt::account(
        &keys.operator,
        &keys.account.public_key(),
        name,
        Some(storage),
        signers,
        issued_at,
    )
}

/// What the broker keeps per instance beside its registry: the binding's signing keys
/// the account's JWT lists, and the last JWT's issue time (each push must be newer).
#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountState {
    signers: BTreeMap<String, String>,
    issued_at: i64,
}

/// Runs NATS servers as platform applications.
#[derive(Debug)]
pub struct NatsBackend {
    platform: PlatformClient,
    /// Where the per-instance account state lives.
    state_dir: PathBuf,
    /// Bindings of one instance change its account one at a time.
    accounts: tokio::sync::Mutex<()>,
    /// How long a server may take to be ready.
    ready_within: Duration,
}

impl NatsBackend {
    pub fn new(platform: PlatformClient, state_dir: PathBuf) -> Self {
        Self {
            platform,
            state_dir,
            accounts: tokio::sync::Mutex::new(()),
            ready_within: Duration::from_secs(120),
        }
    }

    fn load_state(&self, instance: &InstanceRecord) -> Result<AccountState, BackendError> {
        broker_kit::state::load(&self.state_dir, &instance.id)
    }

    fn save_state(
        &self,
        instance: &InstanceRecord,
        state: &AccountState,
    ) -> Result<(), BackendError> {
        broker_kit::state::save(&self.state_dir, &instance.id, state)
    }

    /// The application's spec for an instance's plan and parameters, and its keys.
    async fn spec(
        &self,
        instance: &InstanceRecord,
        keys: &InstanceKeys,
    ) -> Result<Value, BackendError> {
        let plan = plan(&instance.plan_id)
            .ok_or_else(|| BackendError::new(format!("no plan '{}'", instance.plan_id)))?;
        let max_payload_kib = match instance.parameters.get("max_payload_kib") {
            None => DEFAULT_MAX_PAYLOAD_KIB,
            Some(v) => v
                .as_u64()
                .filter(|k| (1..=8192).contains(k))
                .ok_or_else(|| {
                    BackendError::new("max_payload_kib must be an integer from 1 to 8192")
                })?,
        };
        let bind = if self.platform.runs_locally().await? {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let storage = storage(plan);
        // The first JWTs are issued at the instance's creation and never change, so
        // that a changed plan does not make the server's start script look different.
        let created = instance
            .facts
            .get("created_at")
            .and_then(Value::as_i64)
            .unwrap_or_else(now);
        let env = server_env(&ServerSettings {
            name: &app_name(instance),
            keys,
            storage,
            max_payload: max_payload_kib * 1024,
            bind,
            created,
        })
        .map_err(|e| BackendError::new(format!("the instance's JWTs: {e}")))?;
        Ok(json!({
            "kind": "stateful",
            "command": "sh",
            "image": "nats:2-alpine",
            "args": ["-c", START],
            "env": env,
            "replicas": 1,
            "ports": [{"name": "nats", "protocol": "tcp"}],
            "resources": {"memory_mib": plan.memory_mib + 64, "cpu_millis": 100},
            "storage_mib": storage_mib(),
            "labels": {"service": "nats"}
        }))
    }

    fn address(instance: &InstanceRecord) -> &str {
        instance
            .facts
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Connects to the instance's server as a user of `issuer`'s account.
    async fn connect(
        instance: &InstanceRecord,
        issuer: &KeyPair,
    ) -> Result<Connection, BackendError> {
        connect_as(Self::address(instance), issuer, "broker")
            .await
            .map_err(BackendError::new)
    }

    /// Pushes the account's JWT with the current signing keys to the running server.
    async fn push_account(
        &self,
        instance: &InstanceRecord,
        keys: &InstanceKeys,
        state: &mut AccountState,
    ) -> Result<(), BackendError> {
        let plan = plan(&instance.plan_id)
            .ok_or_else(|| BackendError::new(format!("no plan '{}'", instance.plan_id)))?;
        state.issued_at = now().max(state.issued_at + 1);
        let signers: Vec<String> = state.signers.values().cloned().collect();
        let jwt = account_jwt(
            keys,
            &app_name(instance),
            storage(plan),
            &signers,
            state.issued_at,
        )
        .map_err(|e| BackendError::new(format!("the account's JWT: {e}")))?;
        self.save_state(instance, state)?;
        push_account_jwt(Self::address(instance), keys, &jwt)
            .await
            .map_err(BackendError::new)
    }

    /// Waits until the server answers the account's JetStream as the account.
    async fn wait_ready(
        &self,
        instance: &InstanceRecord,
        keys: &InstanceKeys,
    ) -> Result<(), BackendError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answered = match Self::connect(instance, &keys.account).await {
                Ok(mut c) => c
                    .request_json("$JS.API.INFO", b"")
                    .await
                    .map_err(|e| BackendError::new(e.to_string()))
                    .and_then(|info| match info.get("error") {
                        Some(e) => Err(BackendError::new(format!("JetStream is not ready: {e}"))),
                        None => Ok(()),
                    }),
                Err(e) => Err(e),
            };
            match answered {
                Ok(()) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn keys(instance: &InstanceRecord) -> Result<InstanceKeys, BackendError> {
        let seeds = instance
            .facts
            .get("seeds")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        InstanceKeys::from_seeds(&seeds).map_err(BackendError::new)
    }
}

#[async_trait]
impl Backend for NatsBackend {
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let app = app_name(instance);
        let keys = InstanceKeys::generate();
        let mut facts = Map::new();
        facts.insert("app".into(), app.clone().into());
        facts.insert("created_at".into(), now().into());
        let seeds = keys.seeds().map_err(BackendError::new)?;
        facts.insert(
            "seeds".into(),
            Value::Object(
                seeds
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .collect(),
            ),
        );
        facts.insert("account".into(), keys.account.public_key().into());
        let with_facts = InstanceRecord {
            facts: facts.clone(),
            ..instance.clone()
        };
        let spec = self.spec(&with_facts, &keys).await?;
        self.platform
            .deploy(
                &app,
                "NATS server of a message-queue service instance",
                &spec,
                &[],
            )
            .await?;
        let address = self
            .platform
            .wait_address(&app, "nats", self.ready_within)
            .await?;
        facts.insert("address".into(), address.into());
        let probe = InstanceRecord {
            facts: facts.clone(),
            ..instance.clone()
        };
        self.wait_ready(&probe, &keys).await?;
        Ok(facts)
    }

    async fn update(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let app = app_name(instance);
        let keys = Self::keys(instance)?;
        let spec = self.spec(instance, &keys).await?;
        self.platform.update(&app, &spec).await?;
        let address = self
            .platform
            .wait_address(&app, "nats", self.ready_within)
            .await?;
        let mut facts = instance.facts.clone();
        facts.insert("address".into(), address.into());
        let updated = InstanceRecord {
            facts: facts.clone(),
            ..instance.clone()
        };
        self.wait_ready(&updated, &keys).await?;
        // The new plan's quota, in the account's JWT.
        let _guard = self.accounts.lock().await;
        let mut state = self.load_state(&updated)?;
        self.push_account(&updated, &keys, &mut state).await?;
        Ok(facts)
    }

    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError> {
        let app = app_name(instance);
        // The streams go before the server: the platform keeps a stateful ordinal's
        // directory on its node after the application is deleted. Best effort: a
        // server that never started (a failed creation) has nothing to wipe.
        if let Ok(keys) = Self::keys(instance)
            && let Ok(mut account) = Self::connect(instance, &keys.account).await
            && let Ok(names) = account.request_json("$JS.API.STREAM.NAMES", b"{}").await
        {
            for name in names["streams"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    let _ = account
                        .request_json(&format!("$JS.API.STREAM.DELETE.{name}"), b"")
                        .await;
                }
            }
        }
        self.platform.remove(&app).await?;
        self.platform
            .wait_gone(&app, Duration::from_secs(60))
            .await?;
        broker_kit::state::remove(&self.state_dir, &instance.id)
    }

    async fn bind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<Map<String, Value>, BackendError> {
        let binding_id = binding.id.as_str();
        let keys = Self::keys(instance)?;
        let account = keys.account.public_key();
        let user = user_name(binding_id);
        let signer = KeyPair::new_account();
        {
            let _guard = self.accounts.lock().await;
            let mut state = self.load_state(instance)?;
            state
                .signers
                .insert(binding_id.to_owned(), signer.public_key());
            self.push_account(instance, &keys, &mut state).await?;
        }
        let (user_jwt, seed) = jwt::user(&signer, &account, &user, now())
            .map_err(|e| BackendError::new(format!("the binding's user: {e}")))?;
        let address = Self::address(instance);
        let mut credentials = broker_kit::address_credentials(address, 4222, |host, port| {
            format!("nats://{host}:{port}")
        });
        credentials.insert("username".into(), user.into());
        credentials.insert("account".into(), account.into());
        credentials.insert("jwt".into(), user_jwt.clone().into());
        credentials.insert(
            "creds".into(),
            jwt::credentials_file(&user_jwt, &seed).into(),
        );
        Ok(credentials)
    }

    async fn unbind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError> {
        let keys = Self::keys(instance)?;
        let _guard = self.accounts.lock().await;
        let mut state = self.load_state(instance)?;
        state.signers.remove(&binding.id);
        self.push_account(instance, &keys, &mut state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_valid() {
        let c = catalog();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.services[0].plans.len(), 2);
        assert_eq!(
            plan("8b2e4f60-queue-nats-large").map(|p| p.disk_mib),
            Some(4096)
        );
        // Whatever plan an instance moves to, its streams fit its volume.
        assert_eq!(storage_mib(), 4096 + 512);
    }

    #[test]
    fn names_derive_from_ids() {
        let i = InstanceRecord {
            id: "0f4e-AB12-cd34-ef56-7890".into(),
            service_id: SERVICE_ID.into(),
            plan_id: PLANS[0].id.into(),
            parameters: Map::new(),
            context: Map::new(),
            phase: broker_kit::registry::Phase::Creating,
            operation: String::new(),
            operation_kind: String::new(),
            description: None,
            facts: Map::new(),
            usable: true,
        };
        assert_eq!(app_name(&i), "nats-0f4eab12cd34");
        assert_eq!(user_name("a-b-c"), "binding-abc");
    }
}
