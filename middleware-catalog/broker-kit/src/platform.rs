//! The platform, as a broker sees it: the JSON API of the PaaS the broker belongs to,
//! through which it runs each service instance's real server as an application of the
//! platform's own service tenant (processes on the local runtime, a StatefulSet on
//! Kubernetes), so that the server is placed, supervised and healed like any
//! application.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::BackendError;

/// Where the broker deploys its servers, and as whom.
#[derive(Debug, Clone)]
pub struct PlatformTarget {
    /// The platform's console and API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub username: String,
    pub password: String,
    pub tenant: String,
    pub environment: String,
}

pub use reqwest::Method;

/// A client of the platform's API with a cached session token.
#[derive(Debug)]
pub struct PlatformClient {
    target: PlatformTarget,
    http: reqwest::Client,
    token: Mutex<Option<String>>,
}

fn failure(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("{what}: {e}"))
}

impl PlatformClient {
    pub fn new(target: PlatformTarget) -> Self {
        Self {
            target,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            token: Mutex::new(None),
        }
    }

    pub fn target(&self) -> &PlatformTarget {
        &self.target
    }

    async fn login(&self) -> Result<String, BackendError> {
        let response = self
            .http
            .post(format!("{}/api/v1/auth/token", self.target.url))
            .json(&json!({"username": self.target.username, "password": self.target.password}))
            .send()
            .await
            .map_err(|e| failure("the platform could not be reached", e))?;
        if !response.status().is_success() {
            return Err(BackendError::new(format!(
                "the platform refused the broker's sign-in ({})",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| failure("the platform's sign-in answer", e))?;
        body["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| BackendError::new("the platform's sign-in answer has no token"))
    }

    /// Whether the service environment runs on the platform's local runtime, where a
    /// server listens on the loopback (the router forwards to it); elsewhere (a pod on
    /// Kubernetes) it listens on every address of its own network namespace.
    pub async fn runs_locally(&self) -> Result<bool, BackendError> {
        let (_, envs) = self
            .call(
                Method::GET,
                &format!("/tenants/{}/environments", self.target.tenant),
                None,
            )
            .await?;
        Ok(envs["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["name"] == self.target.environment.as_str() && e["runtime"] == "local")
        }))
    }

    /// One API call (`path` below `/api/v1`): signs in again once if the session
    /// ended, and retries the platform's own faults (a 500, 502 or 503: its database
    /// restarting, say) a few times before they fail the operation.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BackendError> {
        let mut signed_in_again = false;
        let mut sign_in = false;
        let mut retries = 0_u32;
        loop {
            let token = {
                let mut cached = self.token.lock().await;
                if cached.is_none() || sign_in {
                    *cached = Some(self.login().await?);
                }
                cached.clone().unwrap_or_default()
            };
            sign_in = false;
            let mut request = self
                .http
                .request(method.clone(), format!("{}/api/v1{path}", self.target.url))
                .bearer_auth(token);
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = request
                .send()
                .await
                .map_err(|e| failure("the platform could not be reached", e))?;
            let status = response.status().as_u16();
            if status == 401 && !signed_in_again {
                signed_in_again = true;
                sign_in = true;
                continue;
            }
            if matches!(status, 500 | 502 | 503) && retries < 4 {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(250 * u64::from(retries))).await;
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok((status, value));
        }
    }

    fn app_path(&self, name: &str) -> String {
        format!(
            "/tenants/{}/environments/{}/applications/{name}",
            self.target.tenant, self.target.environment
        )
    }

    /// Runs `spec` as application `name`, its `secrets` set before any instance
    /// starts: created with no instance, the secrets set, then scaled to the spec's
    /// replicas. An application left by an earlier attempt is brought to the spec.
    pub async fn deploy(
        &self,
        name: &str,
        description: &str,
        spec: &Value,
        secrets: &[(&str, &str)],
    ) -> Result<(), BackendError> {
        let mut empty = spec.clone();
        empty["replicas"] = json!(0);
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/tenants/{}/applications", self.target.tenant),
                Some(&json!({"environment": self.target.environment, "name": name, "description": description, "spec": empty})),
            )
            .await?;
        if status != 201 && status != 409 {
            return Err(BackendError::new(format!(
                "the platform refused the server's application ({status}): {}",
                body["message"].as_str().unwrap_or_default()
            )));
        }
        for (secret, value) in secrets {
            let (status, body) = self
                .call(
                    reqwest::Method::PUT,
                    &format!("{}/secrets/{secret}", self.app_path(name)),
                    Some(&json!({"value": value})),
                )
                .await?;
            if status != 200 {
                return Err(BackendError::new(format!(
                    "the platform refused the server's secret ({status}): {}",
                    body["message"].as_str().unwrap_or_default()
                )));
            }
        }
        self.update(name, spec).await
    }

    /// Brings application `name` to `spec` (a new revision, rolled out as usual).
    pub async fn update(&self, name: &str, spec: &Value) -> Result<(), BackendError> {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &self.app_path(name),
                Some(&json!({"spec": spec})),
            )
            .await?;
        if status == 200 {
            Ok(())
        } else {
            Err(BackendError::new(format!(
                "the platform refused the server's spec ({status}): {}",
                body["message"].as_str().unwrap_or_default()
            )))
        }
    }

    /// Whether an instance of `name` is ready on the application's newest revision.
    async fn ready(&self, name: &str) -> Result<bool, BackendError> {
        let (_, app) = self
            .call(reqwest::Method::GET, &self.app_path(name), None)
            .await?;
        let revision = app["current_revision"].as_i64();
        let (_, instances) = self
            .call(
                reqwest::Method::GET,
                &format!("{}/instances", self.app_path(name)),
                None,
            )
            .await?;
        Ok(instances["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["ready"] == true && i["revision"].as_i64() == revision)
        }))
    }

    /// Waits until an instance of `name` is ready on its newest revision.
    pub async fn wait_ready(&self, name: &str, within: Duration) -> Result<(), BackendError> {
        let deadline = Instant::now() + within;
        while !self.ready(name).await? {
            if Instant::now() > deadline {
                return Err(BackendError::new(format!(
                    "the server's application '{name}' was not ready within {} s",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    /// Waits until an instance of `name` is ready on its newest revision and returns
    /// the stable address of its port `port` (`host:port`).
    pub async fn wait_address(
        &self,
        name: &str,
        port: &str,
        within: Duration,
    ) -> Result<String, BackendError> {
        let deadline = Instant::now() + within;
        loop {
            if self.ready(name).await? {
                let (_, endpoints) = self
                    .call(
                        reqwest::Method::GET,
                        &format!("{}/endpoints", self.app_path(name)),
                        None,
                    )
                    .await?;
                let address = endpoints["items"].as_array().and_then(|items| {
                    items
                        .iter()
                        .find(|e| e["port"] == port && e["ordinal"].as_u64().is_none_or(|o| o == 0))
                        .and_then(|e| e["address"].as_str())
                        .map(str::to_owned)
                });
                if let Some(address) = address {
                    return Ok(address);
                }
            }
            if Instant::now() > deadline {
                return Err(BackendError::new(format!(
                    "the server's application '{name}' was not ready within {} s",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Whether application `name` exists.
    pub async fn exists(&self, name: &str) -> Result<bool, BackendError> {
        let (status, _) = self.call(Method::GET, &self.app_path(name), None).await?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(BackendError::new(format!(
                "the platform answered {status} about application '{name}'"
            ))),
        }
    }

    /// Removes application `name` (nothing to do when it is not there).
    pub async fn remove(&self, name: &str) -> Result<(), BackendError> {
        let (status, body) = self
            .call(reqwest::Method::DELETE, &self.app_path(name), None)
            .await?;
        match status {
            204 | 404 => Ok(()),
            _ => Err(BackendError::new(format!(
                "the platform refused to remove the server's application ({status}): {}",
                body["message"].as_str().unwrap_or_default()
            ))),
        }
    }

    /// Waits until no instance of `name` runs any more.
    pub async fn wait_gone(&self, name: &str, within: Duration) -> Result<(), BackendError> {
        let deadline = Instant::now() + within;
        loop {
            let (status, instances) = self
                .call(
                    reqwest::Method::GET,
                    &format!("{}/instances", self.app_path(name)),
                    None,
                )
                .await?;
            if status == 404 || instances["items"].as_array().is_none_or(Vec::is_empty) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BackendError::new(format!(
                    "the server's application '{name}' did not stop within {} s",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
