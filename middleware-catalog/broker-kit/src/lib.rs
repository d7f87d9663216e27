//! The server side of the Open Service Broker API v2.17, shared by the platform's
//! middleware brokers. A broker supplies its catalog and a [`Backend`] that makes,
//! binds and removes the real thing; the kit does the rest:
//!
//! - basic authentication (constant-time comparison) and the `X-Broker-API-Version`
//!   check (400 without it, 412 for a major version other than 2);
//! - the specification's status codes: 201/202 for a new instance, 200 for an
//!   identical re-provision, 409 for a conflicting one, 410 for an unknown removal,
//!   422 `AsyncRequired` when `accepts_incomplete=true` is missing, 422
//!   `ConcurrencyError` while an operation on the instance runs;
//! - asynchronous provisioning, updating and deprovisioning (a background task per
//!   operation, `last_operation` answering from the registry);
//! - a registry of instances and bindings written atomically to the broker's state
//!   directory after each change, so a restarted broker knows what it made (an
//!   operation cut by a restart is reported `failed`, which makes the platform clean up).

pub mod cli;
pub mod lock;
pub mod platform;
pub mod registry;
mod server;
pub mod state;

use async_trait::async_trait;
use serde_json::{Map, Value};

pub use registry::{BindingRecord, InstanceRecord, Registry};
pub use server::{BrokerConfig, configure};

/// Serves a broker on `listen` until the process is asked to stop (SIGTERM, SIGINT),
/// its registry in `state_dir`.
pub async fn serve(
    config: BrokerConfig,
    backend: std::sync::Arc<dyn Backend>,
    state_dir: &std::path::Path,
    listen: std::net::SocketAddr,
) -> std::io::Result<()> {
    let registry = Registry::open(state_dir)?;
    let routes = configure(config, backend, registry);
    actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
        .workers(2)
        .shutdown_timeout(5)
        .bind(listen)?
        .run()
        .await
}

/// The application that runs an instance's server: `<kind>-` and the first twelve
/// letters and digits of the instance's id, lower case (a DNS label).
pub fn app_name(kind: &str, instance: &InstanceRecord) -> String {
    format!("{kind}-{}", short_id(&instance.id, 12))
}

/// The server-side user of a binding: `binding-` and the first sixteen letters and
/// digits of its id, lower case.
pub fn user_name(binding_id: &str) -> String {
    format!("binding-{}", short_id(binding_id, 16))
}

fn short_id(id: &str, len: usize) -> String {
    id.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(len)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The credentials every binding has for a server at `address` (`host:port`, the port
/// `default_port` when it names none): `uri` (made by `uri` from the host and port),
/// `host` and `port`.
pub fn address_credentials(
    address: &str,
    default_port: u16,
    uri: impl FnOnce(&str, u16) -> String,
) -> Map<String, Value> {
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(default_port)),
        None => (address, default_port),
    };
    let mut credentials = Map::new();
    credentials.insert("uri".into(), uri(host, port).into());
    credentials.insert("host".into(), host.into());
    credentials.insert("port".into(), port.into());
    credentials
}

/// Why the backend could not do what was asked; the text reaches the platform's users
/// as the operation's description.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What a broker does for real: make an instance of a plan, give each binding its
/// own credentials, take them away, remove the instance with everything it made.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Makes the instance; what it returns is kept in the registry as the instance's
    /// facts (addresses, the admin credential it needs later) and handed back to the
    /// other calls. Runs in the background; may take minutes.
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError>;

    /// Applies a new plan or parameters to an existing instance; the new facts.
    async fn update(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError>;

    /// Removes the instance and everything made for it (data included). Must succeed
    /// for an instance whose creation failed halfway.
    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError>;

    /// Makes credentials of this binding's own; returns what the application needs
    /// (`uri`, `host`, `port`, `username`, `password`, ...). `binding` is the record
    /// about to be kept (its credentials still empty).
    async fn bind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<Map<String, Value>, BackendError>;

    /// Revokes a binding's credentials.
    async fn unbind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_ids() {
        assert_eq!(user_name("a-b-c"), "binding-abc");
        assert_eq!(short_id("0f4e-AB12-cd34-ef56-7890", 12), "0f4eab12cd34");
    }

    #[test]
    fn credentials_name_the_address() {
        let c = address_credentials("10.0.0.5:6380", 6379, |h, p| format!("redis://{h}:{p}"));
        assert_eq!(c["uri"], "redis://10.0.0.5:6380");
        assert_eq!(c["host"], "10.0.0.5");
        assert_eq!(c["port"], 6380);
        let d = address_credentials("db.svc", 5432, |h, p| format!("postgresql://{h}:{p}"));
        assert_eq!(d["port"], 5432);
    }
}
