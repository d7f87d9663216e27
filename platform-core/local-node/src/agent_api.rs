//! The agent's own small API, for the control plane: the logs of the instances it runs
//! (they stay on the node that wrote them). Authenticated with the agent token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::logs::LogFile;

/// The logs the agent can serve, by instance id.
pub type LogIndex = Arc<Mutex<HashMap<Uuid, LogFile>>>;

pub async fn serve(
    listener: TcpListener,
    token: String,
    logs: LogIndex,
    mut shutdown: watch::Receiver<bool>,
) {
    let token = Arc::new(token);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let (token, logs) = (token.clone(), logs.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (token, logs) = (token.clone(), logs.clone());
                async move { Ok::<_, Infallible>(handle(&req, &token, &logs)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: String, json: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let kind = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn handle(req: &Request<Incoming>, token: &str, logs: &LogIndex) -> Response<Full<Bytes>> {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0_u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return reply(
            StatusCode::UNAUTHORIZED,
            "agent token required\n".into(),
            false,
        );
    }
    let path = req.uri().path();
    let Some(id) = path
        .strip_prefix("/v1/instances/")
        .and_then(|r| r.strip_suffix("/logs"))
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return reply(StatusCode::NOT_FOUND, "no such route\n".into(), false);
    };
    let tail = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("tail=")))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(200)
        .clamp(1, 5000);
    let log = logs.lock().ok().and_then(|index| index.get(&id).cloned());
    match log {
        Some(log) => reply(
            StatusCode::OK,
            serde_json::to_string(&log.tail(tail)).unwrap_or_else(|_| "[]".into()),
            true,
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            "no such instance on this node\n".into(),
            false,
        ),
    }
}
