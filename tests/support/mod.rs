//! Test support: the real console served over real HTTP on a random port, backed by a
//! fresh PostgreSQL database per test, with the demo accounts as the cast.

#![allow(dead_code)]

use std::collections::HashMap;

use console::{AppState, WebConfig};
use platform_core::Platform;
use platform_core::auth::TokenConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

pub fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

/// A running console.
pub struct Server {
    pub base: String,
    pub platform: Platform,
    pub pool: PgPool,
    /// Demo account passwords by username: admin, dev, ops, tadmin.
    pub passwords: HashMap<String, String>,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop accepting; the runtime ends with the test anyway.
        drop(self.handle.stop(false));
    }
}

pub async fn start(pool: PgPool) -> Server {
    let generous = WebConfig {
        login_per_user_per_minute: 1000,
        login_per_address_per_minute: 1000,
        ..WebConfig::default()
    };
    start_with(pool, generous).await
}

pub async fn start_with(pool: PgPool, config: WebConfig) -> Server {
    let master = must(platform_core::sealing::MasterKey::generate()).0;
    let platform = must(Platform::start(pool.clone(), TokenConfig::default(), master).await);
    let accounts = must(platform.bootstrap_demo().await);
    let passwords = accounts
        .iter()
        .map(|a| (a.username.clone(), a.password.expose().to_owned()))
        .collect();
    let state = AppState::new(platform.clone(), config);
    let server = must(
        actix_web::HttpServer::new(move || console::app(state.clone()))
            .workers(1)
            .bind("127.0.0.1:0"),
    );
    let addr = server.addrs()[0];
    let running = server.disable_signals().run();
    let handle = running.handle();
    tokio::spawn(running);
    Server {
        base: format!("http://{addr}"),
        platform,
        pool,
        passwords,
        handle,
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn password(&self, user: &str) -> &str {
        self.passwords.get(user).map_or("", String::as_str)
    }

    /// A bearer token for a demo user.
    pub async fn token(&self, user: &str) -> String {
        let response = must(
            reqwest::Client::new()
                .post(self.url("/api/v1/auth/token"))
                .json(&json!({"username": user, "password": self.password(user)}))
                .send()
                .await,
        );
        assert_eq!(response.status(), StatusCode::OK, "login of {user}");
        let body: Value = must(response.json().await);
        body["token"].as_str().unwrap_or_default().to_owned()
    }

    /// An API client acting as a demo user.
    pub async fn api(&self, user: &str) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(self.token(user).await),
            http: reqwest::Client::new(),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// A browser-like client (cookie jar, no redirects followed) signed in through the
    /// login form, with the session's CSRF token.
    pub async fn browser(&self, user: &str) -> Browser {
        let http = must(
            reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build(),
        );
        let page = must(must(http.get(self.url("/login")).send().await).text().await);
        let login_csrf = hidden_csrf(&page);
        let response = must(
            http.post(self.url("/login"))
                .form(&[
                    ("username", user),
                    ("password", self.password(user)),
                    ("_csrf", &login_csrf),
                    ("next", "/"),
                ])
                .send()
                .await,
        );
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "console login of {user}"
        );
        let home = must(
            must(http.get(self.url("/t/acme")).send().await)
                .text()
                .await,
        );
        Browser {
            base: self.base.clone(),
            http,
            csrf: hidden_csrf(&home),
        }
    }
}

/// The value of the first `_csrf` hidden field in a page.
pub fn hidden_csrf(page: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    page.find(marker)
        .map(|i| &page[i + marker.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Null` when the body is empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let builder = self.request(method, path);
        let builder = match body {
            Some(b) => builder.json(&b),
            None => builder,
        };
        let response = must(builder.send().await);
        let status = response.status();
        let text = must(response.text().await);
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub csrf: String,
}

impl Browser {
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = must(self.http.get(format!("{}{path}", self.base)).send().await);
        (response.status(), must(response.text().await))
    }

    /// Posts a form; `with_csrf` adds the session's token as the `_csrf` field.
    pub async fn post_form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        with_csrf: bool,
    ) -> (StatusCode, String) {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if with_csrf {
            all.push(("_csrf", &self.csrf));
        }
        let response = must(
            self.http
                .post(format!("{}{path}", self.base))
                .form(&all)
                .send()
                .await,
        );
        (response.status(), must(response.text().await))
    }
}

/// The JSON spec of a small service.
pub fn service_spec() -> Value {
    json!({"kind": "service", "command": "python3", "args": ["-m", "http.server"], "replicas": 1})
}

pub mod binary;
pub mod broker;
pub mod client;
pub mod load;
pub mod procs;
pub mod redis;
