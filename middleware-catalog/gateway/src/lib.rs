//! The API gateway broker: each service instance is an HAProxy (Debian's `haproxy` on
//! the local runtime, the `haproxy:2.6` image on Kubernetes) run as an application of
//! the platform's service tenant, reached through the platform's router like any
//! application.
//!
//! An instance's parameters name its consumers: a name, the SHA-256 of the API key
//! the consumer sends as `X-API-Key` (keys are made and kept by their owners; the
//! platform and the broker only see digests) and a limit in requests per minute.
//! Binding an application exposes it under a route named after it,
//! `<gateway>/<application>/...`; unbinding takes the route away. Every change
//! renders a new configuration and becomes a new revision of the gateway's
//! application, which the platform rolls out as it rolls out any change: the new
//! server is ready before the old one stops taking requests, so a change of routes
//! or consumers loses no request.

pub mod config;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use broker_kit::platform::PlatformClient;
use broker_kit::{Backend, BackendError, BindingRecord, InstanceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{Consumer, Route};

/// The service's id in the catalog.
pub const SERVICE_ID: &str = "2c9d7a31-gateway-haproxy";
const PLAN_ID: &str = "2c9d7a31-gateway-haproxy-standard";

/// The broker's catalog.
pub fn catalog() -> osb::Catalog {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "consumers": {
                "type": "array",
                "maxItems": 100,
                "description": "Who may call the gateway's routes",
                "items": {
                    "type": "object",
                    "required": ["name", "key_sha256", "requests_per_minute"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"},
                        "key_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the consumer's API key, hexadecimal"},
                        "requests_per_minute": {"type": "integer", "minimum": 1, "maximum": 1_000_000}
                    },
                    "additionalProperties": false
                }
            }
        },
        "additionalProperties": false
    });
    let plans = serde_json::from_value(json!([{
        "id": PLAN_ID, "name": "standard", "free": true,
        "description": "Routes to bound applications, API keys and rate limits per consumer, Prometheus metrics",
        "maximum_polling_duration": 600,
        "schemas": {"service_instance": {"create": {"parameters": schema}, "update": {"parameters": schema}}}
    }]))
    .unwrap_or_default();
    osb::Catalog {
        services: vec![osb::Service {
            name: "api-gateway".into(),
            id: SERVICE_ID.into(),
            description: "API gateway: bound applications under routes, with API keys and rate limits per consumer".into(),
            tags: vec!["gateway".into(), "api".into(), "haproxy".into()],
            bindable: true,
            instances_retrievable: true,
            bindings_retrievable: true,
            plan_updateable: true,
            plans,
            metadata: Some(
                json!({"displayName": "API gateway", "version": env!("CARGO_PKG_VERSION"), "providerDisplayName": "PaaS middleware"}),
            ),
        }],
    }
}

/// The application that runs an instance's gateway.
fn app_name(instance: &InstanceRecord) -> String {
    broker_kit::app_name("gateway", instance)
}

/// The consumers an instance's parameters name.
fn consumers(instance: &InstanceRecord) -> Result<Vec<Consumer>, BackendError> {
    match instance.parameters.get("consumers") {
        None => Ok(Vec::new()),
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| BackendError::new(format!("consumers: {e}"))),
    }
}

/// The script that starts the server: the configuration and its maps from the
/// environment (in the working directory, or `/tmp` where it is read-only, as a
/// container's is on Kubernetes), then HAProxy in the foreground. (`printenv`, not `$NAME`: the local
/// runtime expands `$NAME` in arguments with the spec's environment before the shell
/// runs, which would paste the configuration into the script.)
const START: &str = r#"umask 077
[ -w . ] || cd /tmp
printenv GW_CONFIG > haproxy.cfg
printenv GW_CONSUMERS > consumers.map
printenv GW_LIMITS > limits.map
printenv GW_ROUTES > routes.map
exec haproxy -db -f haproxy.cfg"#;

/// The environment [`START`] needs besides `PORT` and the metrics token.
pub fn server_env(
    consumers: &[Consumer],
    routes: &[Route],
    bind: &str,
) -> Result<BTreeMap<String, String>, String> {
    let rendered = config::render(consumers, routes)?;
    Ok(BTreeMap::from([
        ("GW_BIND".to_owned(), bind.to_owned()),
        ("GW_CONFIG".to_owned(), rendered.config),
        ("GW_CONSUMERS".to_owned(), rendered.consumers),
        ("GW_LIMITS".to_owned(), rendered.limits),
        ("GW_ROUTES".to_owned(), rendered.routes),
    ]))
}

/// The script the server runs (for tests that start one outside the platform).
pub fn start_script() -> &'static str {
    START
}

/// How long a binding's route change may take to roll out: the platform waits a
/// minute for a broker's answer to a binding, and a clear failure beats its timeout.
const BINDING_WITHIN: Duration = Duration::from_secs(45);

/// The routes of an instance, by binding.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RouteState {
    routes: BTreeMap<String, Route>,
}

/// Runs gateways as platform applications.
#[derive(Debug)]
pub struct GatewayBackend {
    platform: PlatformClient,
    state_dir: PathBuf,
    /// Route changes of one instance are rendered one at a time.
    routes: tokio::sync::Mutex<()>,
    ready_within: Duration,
}

impl GatewayBackend {
    pub fn new(platform: PlatformClient, state_dir: PathBuf) -> Self {
        Self {
            platform,
            state_dir,
            routes: tokio::sync::Mutex::new(()),
            ready_within: Duration::from_secs(120),
        }
    }

    async fn spec(
        &self,
        instance: &InstanceRecord,
        routes: &RouteState,
    ) -> Result<Value, BackendError> {
        if instance.plan_id != PLAN_ID {
            return Err(BackendError::new(format!("no plan '{}'", instance.plan_id)));
        }
        let bind = if self.platform.runs_locally().await? {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let routes: Vec<Route> = routes.routes.values().cloned().collect();
        let env = server_env(&consumers(instance)?, &routes, bind).map_err(BackendError::new)?;
        Ok(json!({
            "kind": "service",
            "command": "sh",
            "image": "haproxy:2.6",
            "args": ["-c", START],
            "env": env,
            "replicas": 1,
            "ports": [{"name": "http"}],
            "health": {"readiness": {"http_path": "/_gateway/health", "period_ms": 500}},
            "resources": {"memory_mib": 64, "cpu_millis": 200},
            "labels": {"service": "api-gateway"}
        }))
    }

    /// Renders the instance's gateway with its routes and waits (up to `within`) for
    /// the revision.
    async fn apply(
        &self,
        instance: &InstanceRecord,
        routes: &RouteState,
        within: Duration,
    ) -> Result<(), BackendError> {
        let app = app_name(instance);
        let spec = self.spec(instance, routes).await?;
        self.platform.update(&app, &spec).await?;
        self.platform.wait_ready(&app, within).await
    }
}

/// Where the gateway is reached. On the local runtime, where the platform names a
/// bound application by its path on the router, the same router (the part of that
/// URL before `/apps/`) under the service tenant's path; in a cluster, where it names
/// a Service, the gateway's own stable address there.
async fn gateway_url(
    route: &str,
    platform: &PlatformClient,
    app: &str,
) -> Result<String, BackendError> {
    if let Some((router, _)) = route.split_once("/apps/") {
        let target = platform.target();
        return Ok(format!(
            "{router}/apps/{}/{}/{app}",
            target.tenant, target.environment
        ));
    }
    let address = platform
        .wait_address(app, "http", Duration::from_secs(10))
        .await?;
    Ok(format!("http://{address}"))
}

/// A route's name: the bound application's, the last segment of its path on the
/// router or, for a cluster Service's URL (no path), the Service's name.
fn route_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.path().trim_end_matches('/').rsplit('/').next() {
        Some(last) if !last.is_empty() => Some(last.to_owned()),
        _ => parsed.host_str()?.split('.').next().map(str::to_owned),
    }
}

#[async_trait]
impl Backend for GatewayBackend {
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let app = app_name(instance);
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let spec = self.spec(instance, &RouteState::default()).await?;
        self.platform
            .deploy(
                &app,
                "API gateway of a service instance",
                &spec,
                &[("GW_METRICS_TOKEN", &token)],
            )
            .await?;
        self.platform.wait_ready(&app, self.ready_within).await?;
        let mut facts = Map::new();
        facts.insert("app".into(), app.into());
        facts.insert("metrics_token".into(), token.into());
        Ok(facts)
    }

    async fn update(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let _guard = self.routes.lock().await;
        let routes = broker_kit::state::load(&self.state_dir, &instance.id)?;
        self.apply(instance, &routes, self.ready_within).await?;
        Ok(instance.facts.clone())
    }

    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError> {
        let app = app_name(instance);
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
        let url = binding.route.as_deref().ok_or_else(|| {
            BackendError::new("the platform named no HTTP route for the application; only an application the platform serves over HTTP can be bound to a gateway")
        })?;
        let name = route_name(url).unwrap_or_default();
        let route = Route::from_url(&name, url).map_err(BackendError::new)?;
        let _guard = self.routes.lock().await;
        let mut routes: RouteState = broker_kit::state::load(&self.state_dir, &instance.id)?;
        if routes
            .routes
            .iter()
            .any(|(id, r)| r.name == route.name && *id != binding.id)
        {
            return Err(BackendError::new(format!(
                "the gateway already has a route named '{}'",
                route.name
            )));
        }
        routes.routes.insert(binding.id.clone(), route.clone());
        broker_kit::state::save(&self.state_dir, &instance.id, &routes)?;
        self.apply(instance, &routes, BINDING_WITHIN).await?;
        let app = app_name(instance);
        let base = gateway_url(url, &self.platform, &app).await?;
        let mut credentials = Map::new();
        credentials.insert("uri".into(), format!("{base}/{}/", route.name).into());
        credentials.insert("route".into(), format!("/{}", route.name).into());
        credentials.insert(
            "metrics_url".into(),
            format!("{base}/_gateway/metrics").into(),
        );
        credentials.insert(
            "metrics_token".into(),
            instance
                .facts
                .get("metrics_token")
                .cloned()
                .unwrap_or(Value::Null),
        );
        Ok(credentials)
    }

    async fn unbind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError> {
        let _guard = self.routes.lock().await;
        let mut routes: RouteState = broker_kit::state::load(&self.state_dir, &instance.id)?;
        if routes.routes.remove(&binding.id).is_none() {
            return Ok(());
        }
        broker_kit::state::save(&self.state_dir, &instance.id, &routes)?;
        self.apply(instance, &routes, BINDING_WITHIN).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_named_after_its_application_on_the_router_and_in_a_cluster() {
        let name = |url: &str| route_name(url);
        assert_eq!(
            name("http://127.0.0.1:8080/apps/acme/dev/storefront/").as_deref(),
            Some("storefront")
        );
        assert_eq!(
            name("http://storefront.paas-acme-dev.svc.cluster.local:8080/").as_deref(),
            Some("storefront")
        );
        assert_eq!(name("not a url"), None);
    }

    #[test]
    fn the_catalog_is_valid() {
        let c = catalog();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.services[0].plans.len(), 1);
    }

    #[test]
    fn consumers_come_from_the_parameters() {
        let mut i = InstanceRecord {
            id: "0f4e-AB12-cd34-ef56-7890".into(),
            service_id: SERVICE_ID.into(),
            plan_id: PLAN_ID.into(),
            parameters: Map::new(),
            context: Map::new(),
            phase: broker_kit::registry::Phase::Creating,
            operation: String::new(),
            operation_kind: String::new(),
            description: None,
            facts: Map::new(),
            usable: true,
        };
        assert_eq!(app_name(&i), "gateway-0f4eab12cd34");
        assert_eq!(consumers(&i).ok().map(|c| c.len()), Some(0));
        i.parameters.insert(
            "consumers".into(),
            json!([{"name": "mobile", "key_sha256": "ab".repeat(32), "requests_per_minute": 5}]),
        );
        assert_eq!(
            consumers(&i).ok().map(|c| c[0].requests_per_minute),
            Some(5)
        );
        i.parameters
            .insert("consumers".into(), json!([{"name": "mobile"}]));
        assert!(consumers(&i).is_err());
    }
}
