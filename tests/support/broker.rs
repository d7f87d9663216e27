//! A scripted Open Service Broker for the platform's side of the catalog: it answers
//! each call as the test says (a status and body, no answer at all, or a closed
//! connection) and records every request it saw. Plain HTTP/1.1 over a TCP listener,
//! one request per connection, so that a fault is exactly the one the test asks for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How the broker answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status, a JSON body and an optional `Retry-After` in seconds.
    Json(u16, Value, Option<u64>),
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and closes the connection.
    Close,
}

pub fn ok(code: u16, body: Value) -> Answer {
    Answer::Json(code, body, None)
}

/// A request the broker saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Per method and kind ("PUT", "PATCH", "DELETE", "POLL"): answers in order; the
    /// last one repeats.
    answers: Vec<(String, VecDeque<Answer>)>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct FakeBroker {
    pub url: String,
    script: Arc<Mutex<Script>>,
    catalog: Value,
}

/// The catalog the fake broker offers: one service, two plans, a parameters schema.
pub fn catalog() -> Value {
    json!({"services": [{
    "name": "kv", "id": "svc-kv", "description": "A key-value store", "bindable": true,
    "plan_updateable": true, "tags": ["cache"],
    "metadata": {"displayName": "Key-value store", "version": "1.4.2"},
    "plans": [
        {"id": "kv-small", "name": "small", "description": "64 MiB", "free": true,
         "maximum_polling_duration": 3,
         "schemas": {"service_instance": {
            "create": {"parameters": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                "properties": {"maxmemory_mb": {"type": "integer", "minimum": 16, "maximum": 64}},
                "additionalProperties": false}},
            "update": {"parameters": {"type": "object"}}}}},
        {"id": "kv-large", "name": "large", "description": "1 GiB", "free": false}
    ]}]})
}

impl FakeBroker {
    pub async fn start() -> Self {
        Self::start_with(catalog()).await
    }

    pub async fn start_with(catalog: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let broker = Self {
            url: format!("http://{addr}"),
            script: Arc::new(Mutex::new(Script::default())),
            catalog,
        };
        let me = broker.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move { me.serve(socket).await });
            }
        });
        broker
    }

    /// Answers the next calls of `kind` (`PUT`, `PATCH`, `DELETE`, `POLL`, `BIND`, `UNBIND`) in order; the
    /// last answer repeats.
    pub fn script(&self, kind: &str, answers: Vec<Answer>) {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        script.answers.retain(|(k, _)| k != kind);
        script.answers.push((kind.to_owned(), answers.into()));
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .clone()
    }

    /// The requests to bindings of one method.
    pub fn binding_calls(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.target.contains("/service_bindings/"))
            .collect()
    }

    /// The requests of one method to instances (not the catalog, polls or bindings).
    pub fn calls(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| {
                s.method == method
                    && !s.target.contains("last_operation")
                    && !s.target.contains("/service_bindings/")
                    && s.target.starts_with("/v2/service_instances")
            })
            .collect()
    }

    fn next(&self, kind: &str) -> Answer {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        let default = match kind {
            "PUT" => ok(201, json!({})),
            "BIND" => ok(
                201,
                json!({"credentials": {"uri": "kv://u1:p1@kv.example:7000", "host": "kv.example", "port": 7000, "username": "u1", "password": "p1"}}),
            ),
            "POLL" => ok(200, json!({"state": "succeeded"})),
            _ => ok(200, json!({})),
        };
        let Some((_, queue)) = script.answers.iter_mut().find(|(k, _)| k == kind) else {
            return default;
        };
        if queue.len() > 1 {
            queue.pop_front().unwrap_or(default)
        } else {
            queue.front().cloned().unwrap_or(default)
        }
    }

    async fn serve(&self, mut socket: tokio::net::TcpStream) {
        let mut buffer = Vec::new();
        let mut chunk = [0_u8; 4096];
        let head_end = loop {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body =
            serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
        let seen = Seen {
            method: method.clone(),
            target: target.clone(),
            headers,
            body,
        };
        let authorized = seen.header("authorization")
            == Some(&format!(
                "Basic {}",
                basic("platform", "s3cret-broker-pass")
            ));
        let versioned = seen.header("x-broker-api-version") == Some("2.17");
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .push(seen);
        let answer = if !authorized {
            ok(401, json!({"description": "who are you?"}))
        } else if !versioned {
            ok(
                412,
                json!({"description": "X-Broker-API-Version 2.17 required"}),
            )
        } else if method == "GET" && target == "/v2/catalog" {
            ok(200, self.catalog.clone())
        } else if method == "GET" && target.contains("/last_operation") {
            self.next("POLL")
        } else if target.contains("/service_bindings/") {
            self.next(if method == "PUT" { "BIND" } else { "UNBIND" })
        } else {
            self.next(&method)
        };
        match answer {
            Answer::Hang => {
                tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            }
            Answer::Close => drop(socket),
            Answer::Json(code, body, retry_after) => {
                let body = body.to_string();
                let retry = retry_after
                    .map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{retry}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
