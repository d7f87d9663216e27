//! A client of the real `paas` binary's API, as one user of one tenant (the demo
//! tenant `acme` unless told otherwise).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::binary::Paas;
use super::must;

/// A signed-in user calling `/api/v1/tenants/<tenant>...`.
pub struct Tenant {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub tenant: String,
}

impl Tenant {
    pub async fn login(paas: &Paas, user: &str) -> Self {
        Self::login_as(&paas.url, user, &paas.passwords[user]).await
    }

    pub async fn login_as(base: &str, user: &str, password: &str) -> Self {
        Self::login_as_in(base, user, password, "acme").await
    }

    /// Signs in and acts in `tenant`.
    pub async fn login_as_in(base: &str, user: &str, password: &str, tenant: &str) -> Self {
        let http = reqwest::Client::new();
        let body: Value = must(
            must(
                http.post(format!("{base}/api/v1/auth/token"))
                    .json(&json!({"username": user, "password": password}))
                    .send()
                    .await,
            )
            .json()
            .await,
        );
        Self {
            base: base.to_owned(),
            token: body["token"].as_str().unwrap_or_default().to_owned(),
            http,
            tenant: tenant.to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/api/v1/tenants/{}{path}", self.base, self.tenant),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let response = must(req.send().await);
        let status = response.status();
        let text = must(response.text().await);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A call to any API path (`/api/v1/...`), not only below the tenant.
    pub async fn get_api(&self, path: &str) -> (StatusCode, Value) {
        let response = must(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await,
        );
        let status = response.status();
        let text = must(response.text().await);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn onboard(&self, name: &str, spec: Value) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/applications",
                Some(json!({"environment": "dev", "name": name, "spec": spec})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub async fn instances(&self, app: &str) -> Vec<Value> {
        let (_, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/environments/dev/applications/{app}/instances"),
                None,
            )
            .await;
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the app's instances satisfy `check`; returns them.
    pub async fn wait_instances(
        &self,
        app: &str,
        what: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let instances = self.instances(app).await;
            if check(&instances) {
                return instances;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {instances:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until `url` answers 200; returns how long that took.
pub async fn wait_for_200(url: &str) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == StatusCode::OK
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
