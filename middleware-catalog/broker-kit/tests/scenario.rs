//! The Open Service Broker API as the kit serves it, over real HTTP: the scenario
//! (provision → last operation → bind → unbind → deprovision) and the specification's
//! status codes for conflicting, unknown, unauthenticated and synchronous requests,
//! with an in-memory backend.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use broker_kit::{Backend, BackendError, BindingRecord, BrokerConfig, InstanceRecord, Registry};
use serde_json::{Map, Value, json};

#[derive(Default)]
struct Memory {
    made: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
    fail_create: bool,
}

#[async_trait]
impl Backend for Memory {
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if self.fail_create {
            return Err(BackendError::new("no capacity left"));
        }
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance.id.clone());
        let mut facts = Map::new();
        facts.insert("address".into(), "127.0.0.1:1".into());
        Ok(facts)
    }
    async fn update(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        Ok(instance.facts.clone())
    }
    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError> {
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|i| *i != instance.id);
        Ok(())
    }
    async fn bind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<Map<String, Value>, BackendError> {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(binding.id.clone());
        let mut c = Map::new();
        c.insert(
            "uri".into(),
            format!("mem://{}@{}", binding.id, instance.id).into(),
        );
        Ok(c)
    }
    async fn unbind(
        &self,
        _: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError> {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|u| *u != binding.id);
        Ok(())
    }
}

fn catalog() -> osb::Catalog {
    serde_json::from_value(json!({"services": [{
        "name": "mem", "id": "svc-mem", "description": "Memory", "bindable": true, "plan_updateable": true,
        "plans": [{"id": "plan-a", "name": "a", "description": "A"}, {"id": "plan-b", "name": "b", "description": "B"}]
    }]}))
    .unwrap_or_else(|e| panic!("{e}"))
}

struct Broker {
    base: String,
    http: reqwest::Client,
    backend: Arc<Memory>,
    /// The registry's directory, removed with the broker.
    _dir: tempfile::TempDir,
}

/// A directory for a registry, removed when dropped.
fn registry_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("broker-kit-")
        .tempdir()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn start(backend: Memory) -> Broker {
    let dir = registry_dir();
    let registry = Registry::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let backend = Arc::new(backend);
    let routes = broker_kit::configure(
        BrokerConfig {
            catalog: catalog(),
            username: "platform".into(),
            password: "pw".into(),
        },
        backend.clone(),
        registry,
    );
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addrs()[0];
    tokio::spawn(server.disable_signals().run());
    Broker {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        backend,
        _dir: dir,
    }
}

impl Broker {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth("platform", Some("pw"))
            .header("X-Broker-API-Version", "2.17");
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn settle(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/v2/service_instances/{id}/last_operation"),
                    None,
                )
                .await;
            if status != 200 || body["state"] != "in progress" {
                return json!({"status": status, "body": body});
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn provision_body(plan: &str) -> Value {
    json!({"service_id": "svc-mem", "plan_id": plan, "organization_guid": "o", "space_guid": "s", "parameters": {"x": 1}})
}

#[tokio::test]
async fn the_whole_scenario_with_the_specifications_status_codes() {
    use reqwest::Method;
    let broker = start(Memory::default()).await;

    // Authentication and the version header come first.
    let anonymous = broker
        .http
        .get(format!("{}/v2/catalog", broker.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(anonymous.status().as_u16(), 401);
    let no_version = broker
        .http
        .get(format!("{}/v2/catalog", broker.base))
        .basic_auth("platform", Some("pw"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(no_version.status().as_u16(), 400);
    let (status, catalog) = broker.call(Method::GET, "/v2/catalog", None).await;
    assert_eq!(
        (status, catalog["services"][0]["name"].as_str()),
        (200, Some("mem"))
    );

    // Provisioning requires accepts_incomplete=true (this broker is asynchronous).
    let (status, body) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1",
            Some(provision_body("plan-a")),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("AsyncRequired"))
    );
    let (status, body) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1?accepts_incomplete=true",
            Some(provision_body("plan-a")),
        )
        .await;
    assert_eq!(status, 202);
    let operation = body["operation"].as_str().unwrap_or_default().to_owned();
    // The same request again while it runs: 202 with the same operation.
    let (status, again) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1?accepts_incomplete=true",
            Some(provision_body("plan-a")),
        )
        .await;
    assert_eq!(
        (status, again["operation"].as_str()),
        (202, Some(operation.as_str()))
    );
    // Binding while it is being made: a concurrency error.
    let bind = json!({"service_id": "svc-mem", "plan_id": "plan-a", "bind_resource": {"app_guid": "app-1"}});
    let (status, body) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1/service_bindings/b1",
            Some(bind.clone()),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("ConcurrencyError"))
    );
    assert_eq!(broker.settle("i1").await["body"]["state"], "succeeded");
    assert_eq!(
        broker
            .backend
            .made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len(),
        1
    );

    // Identical re-provisioning of a ready instance: 200; different attributes: 409.
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1?accepts_incomplete=true",
            Some(provision_body("plan-a")),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1?accepts_incomplete=true",
            Some(provision_body("plan-b")),
        )
        .await;
    assert_eq!(status, 409);
    // A plan that is not in the catalog: 400.
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i2?accepts_incomplete=true",
            Some(provision_body("plan-z")),
        )
        .await;
    assert_eq!(status, 400);

    // Binding: 201 with credentials, 200 when repeated identically, 409 otherwise.
    let (status, body) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1/service_bindings/b1",
            Some(bind.clone()),
        )
        .await;
    assert_eq!(
        (status, body["credentials"]["uri"].as_str()),
        (201, Some("mem://b1@i1"))
    );
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1/service_bindings/b1",
            Some(bind.clone()),
        )
        .await;
    assert_eq!(status, 200);
    let other = json!({"service_id": "svc-mem", "plan_id": "plan-a", "bind_resource": {"app_guid": "app-2"}});
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/i1/service_bindings/b1",
            Some(other),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = broker
        .call(
            Method::GET,
            "/v2/service_instances/i1/service_bindings/b1",
            None,
        )
        .await;
    assert_eq!(
        (status, body["credentials"]["uri"].as_str()),
        (200, Some("mem://b1@i1"))
    );

    // Unbinding: 200, then 410 for a binding that is gone.
    let unbind = "/v2/service_instances/i1/service_bindings/b1?service_id=svc-mem&plan_id=plan-a";
    let (status, _) = broker.call(Method::DELETE, unbind, None).await;
    assert_eq!(status, 200);
    assert!(
        broker
            .backend
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    );
    let (status, _) = broker.call(Method::DELETE, unbind, None).await;
    assert_eq!(status, 410);

    // An update to the other plan, asynchronous.
    let (status, _) = broker
        .call(
            Method::PATCH,
            "/v2/service_instances/i1?accepts_incomplete=true",
            Some(json!({"service_id": "svc-mem", "plan_id": "plan-b"})),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(broker.settle("i1").await["body"]["state"], "succeeded");
    let (status, body) = broker
        .call(Method::GET, "/v2/service_instances/i1", None)
        .await;
    assert_eq!((status, body["plan_id"].as_str()), (200, Some("plan-b")));

    // Deprovisioning: query parameters required, asynchronous, then 410 on the poll
    // and on a second deprovision.
    let (status, _) = broker
        .call(
            Method::DELETE,
            "/v2/service_instances/i1?accepts_incomplete=true",
            None,
        )
        .await;
    assert_eq!(status, 400);
    let delete =
        "/v2/service_instances/i1?service_id=svc-mem&plan_id=plan-b&accepts_incomplete=true";
    let (status, _) = broker.call(Method::DELETE, delete, None).await;
    assert_eq!(status, 202);
    assert_eq!(broker.settle("i1").await["status"], 410);
    assert!(
        broker
            .backend
            .made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    );
    let (status, _) = broker.call(Method::DELETE, delete, None).await;
    assert_eq!(status, 410);
    // An instance never made: 410 too.
    let (status, _) = broker
        .call(
            Method::DELETE,
            "/v2/service_instances/nope?service_id=svc-mem&plan_id=plan-a&accepts_incomplete=true",
            None,
        )
        .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn a_failed_creation_is_reported_failed_and_can_be_deprovisioned() {
    use reqwest::Method;
    let broker = start(Memory {
        fail_create: true,
        ..Memory::default()
    })
    .await;
    let (status, _) = broker
        .call(
            Method::PUT,
            "/v2/service_instances/f1?accepts_incomplete=true",
            Some(provision_body("plan-a")),
        )
        .await;
    assert_eq!(status, 202);
    let settled = broker.settle("f1").await;
    assert_eq!(settled["body"]["state"], "failed", "{settled}");
    assert_eq!(settled["body"]["description"], "no capacity left");
    // The platform's orphan mitigation: a deprovision of the failed instance works.
    let (status, _) = broker
        .call(
            Method::DELETE,
            "/v2/service_instances/f1?service_id=svc-mem&plan_id=plan-a&accepts_incomplete=true",
            None,
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(broker.settle("f1").await["status"], 410);
}

#[tokio::test]
async fn an_operation_cut_by_a_restart_is_failed_not_forgotten() {
    let temp = registry_dir();
    let dir = temp.path();
    let mut registry = Registry::open(dir).unwrap_or_else(|e| panic!("{e}"));
    registry
        .put_instance(InstanceRecord {
            id: "r1".into(),
            service_id: "svc-mem".into(),
            plan_id: "plan-a".into(),
            parameters: Map::new(),
            context: Map::new(),
            phase: broker_kit::registry::Phase::Creating,
            operation: "op".into(),
            operation_kind: "provision".into(),
            description: None,
            facts: Map::new(),
            usable: true,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    drop(registry);
    let reopened = Registry::open(dir).unwrap_or_else(|e| panic!("{e}"));
    let record = reopened
        .instance("r1")
        .cloned()
        .unwrap_or_else(|| panic!("forgotten"));
    assert_eq!(record.phase, broker_kit::registry::Phase::Failed);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("registry.json"))
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
}
