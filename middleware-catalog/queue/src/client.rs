//! Enough of the NATS client protocol for a broker's administrative requests: connect
//! with a bearer JWT, publish a request and read its reply.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to a NATS server.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<TcpStream>,
    inbox: String,
    next: u64,
}

fn broken(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

impl Connection {
    /// Connects and signs in with `jwt`; fails with the server's reason if it refuses.
    pub async fn connect(address: &str, jwt: &str) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(address)).await??;
        let mut connection = Self {
            stream: BufReader::new(stream),
            inbox: format!("_INBOX.{}", uuid::Uuid::new_v4().simple()),
            next: 0,
        };
        let info = connection.line().await?;
        if !info.starts_with("INFO ") {
            return Err(broken(format!("not a NATS server: {info}")));
        }
        let connect = json!({
            "jwt": jwt, "verbose": false, "pedantic": false, "headers": false,
            "protocol": 1, "lang": "rust", "version": env!("CARGO_PKG_VERSION"),
            "name": "paas-queue-broker"
        });
        let inbox = connection.inbox.clone();
        connection
            .send(format!("CONNECT {connect}\r\nPING\r\nSUB {inbox}.* 1\r\n").as_bytes())
            .await?;
        loop {
            let line = connection.line().await?;
            if line == "PONG" {
                return Ok(connection);
            }
            if let Some(error) = line.strip_prefix("-ERR ") {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    error.trim_matches('\'').to_owned(),
                ));
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(TIMEOUT, self.stream.get_mut().write_all(bytes)).await?
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.stream.read_line(&mut line)).await??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(line.trim_end().to_owned())
    }

    /// Publishes `payload` to `subject` and waits for the reply's payload.
    pub async fn request(&mut self, subject: &str, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        let mut message = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        message.extend_from_slice(payload);
        message.extend_from_slice(b"\r\n");
        self.send(&message).await?;
        loop {
            let line = self.line().await?;
            if line == "PING" {
                self.send(b"PONG\r\n").await?;
                continue;
            }
            if let Some(error) = line.strip_prefix("-ERR ") {
                return Err(broken(error.trim_matches('\'').to_owned()));
            }
            let Some(header) = line.strip_prefix("MSG ") else {
                continue;
            };
            // MSG <subject> <sid> [reply-to] <size>
            let parts: Vec<&str> = header.split(' ').collect();
            let size: usize = parts
                .last()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| broken(format!("a malformed message: {line}")))?;
            let mut body = vec![0; size + 2];
            tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut body)).await??;
            body.truncate(size);
            if parts.first() == Some(&reply.as_str()) {
                return Ok(body);
            }
        }
    }

    /// A request whose reply is JSON.
    pub async fn request_json(&mut self, subject: &str, payload: &[u8]) -> std::io::Result<Value> {
        let body = self.request(subject, payload).await?;
        serde_json::from_slice(&body).map_err(|e| broken(format!("a reply that is not JSON: {e}")))
    }
}
