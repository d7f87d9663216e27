//! The router: gives every application a stable URL and sends each request to one of
//! its ready instances, round-robin.
//!
//! Two forms reach an application: the host form `http://<app>.<env>.<tenant>.localhost:<port>/`
//! and the path form `http://<router>/apps/<tenant>/<env>/<app>/...` (the prefix is
//! stripped). The route table is pulled from the control plane; when the control plane
//! cannot be reached the last table stays in force, so traffic flows on while it is
//! down. An instance that leaves the table gets no new requests; the agent keeps it
//! running for a drain period so that requests in flight finish.
//!
//! HTTP is hyper's, on both sides; nothing here parses HTTP by hand.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::proto::RouteTable;
use crate::traffic::Split;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub control_plane: String,
    pub token: String,
    /// How long to wait before asking for the route table again after a failure.
    pub refresh: Duration,
    /// The most requests in flight to one backend; more wait in the router. A backend
    /// with a short accept queue (Python's `http.server` listens with a backlog of 5)
    /// drops connections beyond it, which costs a second each.
    pub max_per_backend: usize,
    /// The suffix of host-form names, `localhost` by default.
    pub domain: String,
    /// Where the last route table is kept, so that a restarted router serves at once
    /// (even while the control plane is down).
    pub state_file: Option<std::path::PathBuf>,
    /// Where a successor asks for this router's sockets ([`crate::handover`]).
    pub control_socket: Option<std::path::PathBuf>,
    /// The router's lock, handed over with the sockets so that the successor holds it
    /// without a gap.
    pub lock: Option<Arc<crate::lock::LockGuard>>,
    /// Where the traffic counters are served (`/metrics`, `/traffic`), to holders of
    /// `metrics_token` only: tenants' instances share the node's loopback.
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token: Option<String>,
}

/// Where an application's (or a router port's) traffic goes.
#[derive(Debug, Default)]
pub(crate) struct Backends {
    /// Ready instances on ready nodes.
    pub(crate) addrs: Vec<String>,
    /// Instances on nodes that went silent: tried only after `addrs`.
    pub(crate) fallback: Vec<String>,
    pub(crate) next: AtomicUsize,
    /// During a canary release: the canary revision's instances and its share.
    pub(crate) canary: Option<CanaryBackends>,
}

/// A canary revision's ready instances and the share of the requests they get.
#[derive(Debug, Default)]
pub(crate) struct CanaryBackends {
    /// Percent of the requests, exactly: of every 100 consecutive requests (that do
    /// not ask for a side), `weight` go to the canary. `None`: by instance count.
    pub(crate) weight: Option<u32>,
    pub(crate) addrs: Vec<String>,
    pub(crate) next: AtomicUsize,
    /// Requests split so far (the weight's counter).
    pub(crate) turn: std::sync::atomic::AtomicU64,
}

/// What a request asks of a canary release in its `X-Canary` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `X-Canary: always`: only the canary's instances.
    Always,
    /// `X-Canary: never`: only the stable revision's.
    Never,
    /// No header: the split decides.
    Any,
}

impl Ask {
    fn of(headers: &hyper::HeaderMap) -> Self {
        match headers.get("x-canary").and_then(|v| v.to_str().ok()) {
            Some(v) if v.eq_ignore_ascii_case("always") => Self::Always,
            Some(v) if v.eq_ignore_ascii_case("never") => Self::Never,
            _ => Self::Any,
        }
    }
}

impl Backends {
    /// The backends to try for one request and, during a canary release, its side.
    /// `Err` when the request asked for the canary and no canary instance is ready.
    pub(crate) fn pick(&self, ask: Ask) -> Result<(Vec<&str>, Option<Split>), &'static str> {
        let Some(canary) = &self.canary else {
            return Ok((self.order(), None));
        };
        let stable_empty = self.addrs.is_empty() && self.fallback.is_empty();
        let side = match ask {
            Ask::Always => Split::Canary,
            Ask::Never => Split::Stable,
            Ask::Any => {
                let turn = canary.turn.fetch_add(1, Ordering::Relaxed);
                let to_canary = match canary.weight {
                    // Exactly `w` of every 100: the request whose turn crosses the
                    // next multiple of 100 / w.
                    Some(w) => {
                        let w = u64::from(w.min(100));
                        (turn + 1) * w / 100 > turn * w / 100
                    }
                    None => {
                        let total = (self.addrs.len() + canary.addrs.len()) as u64;
                        total > 0 && turn % total < canary.addrs.len() as u64
                    }
                };
                match (to_canary, canary.addrs.is_empty(), stable_empty) {
                    // The side chosen has nobody ready: the other side serves.
                    (true, true, _) => Split::Stable,
                    (false, false, true) => Split::Canary,
                    (true, false, _) => Split::Canary,
                    (false, _, _) => Split::Stable,
                }
            }
        };
        match side {
            Split::Canary if canary.addrs.is_empty() => Err("no ready canary instance"),
            Split::Canary => {
                let turn = canary.next.fetch_add(1, Ordering::Relaxed);
                let n = canary.addrs.len();
                let order = (0..n)
                    .map(|i| canary.addrs[(turn + i) % n].as_str())
                    .collect();
                Ok((order, Some(Split::Canary)))
            }
            Split::Stable => Ok((self.order(), Some(Split::Stable))),
        }
    }

    /// The backends to try for one request: the ready ones in round-robin order, then
    /// the fallbacks (in their own rotation).
    pub(crate) fn order(&self) -> Vec<&str> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let rotate = |list: &'_ [String]| -> Vec<usize> {
            (0..list.len()).map(|i| (turn + i) % list.len()).collect()
        };
        rotate(&self.addrs)
            .into_iter()
            .map(|i| self.addrs[i].as_str())
            .chain(
                rotate(&self.fallback)
                    .into_iter()
                    .map(|i| self.fallback[i].as_str()),
            )
            .collect()
    }
}

/// Application (tenant, env, app) to its ready backends.
#[derive(Debug, Default)]
struct Table {
    routes: HashMap<(String, String, String), Arc<Backends>>,
}

#[derive(Debug, Clone)]
struct Shared {
    table: Arc<RwLock<Arc<Table>>>,
    /// One client per connect attempt, each giving up on a connection sooner than the
    /// next (see [`CONNECT_TIMEOUTS`]).
    clients: Arc<[Client<HttpConnector, Body>; 3]>,
    /// Requests in flight per backend address, bounded.
    limits: Arc<std::sync::Mutex<HashMap<String, Arc<Limit>>>>,
    max_per_backend: usize,
    domain: String,
    traffic: crate::traffic::Traffic,
}

/// How many requests one backend may have in flight. A backend that keeps connections
/// open gets up to [`KEEP_ALIVE_SHARE`] times as many as one that closes each one: the
/// latter costs a new connection per request, and a backend with a short accept queue
/// (Python's `http.server` listens with a backlog of 5) drops connections beyond it,
/// each drop costing a second (TCP's SYN retransmission).
#[derive(Debug)]
struct Limit {
    places: Arc<tokio::sync::Semaphore>,
    /// The backend's last response closed its connection.
    closes: std::sync::atomic::AtomicBool,
}

const KEEP_ALIVE_SHARE: u32 = 16;

impl Shared {
    /// A place among the requests in flight to `addr`; waits while it has its fill.
    async fn admit(&self, addr: &str) -> Option<(Arc<Limit>, tokio::sync::OwnedSemaphorePermit)> {
        let limit = {
            let mut limits = self.limits.lock().ok()?;
            if limits.len() > 4096 {
                // Forget backends nobody is talking to (instances come and go).
                limits.retain(|_, l| Arc::strong_count(l) > 1);
            }
            let places = self.max_per_backend * KEEP_ALIVE_SHARE as usize;
            limits
                .entry(addr.to_owned())
                .or_insert_with(|| {
                    Arc::new(Limit {
                        places: Arc::new(tokio::sync::Semaphore::new(places)),
                        closes: std::sync::atomic::AtomicBool::new(false),
                    })
                })
                .clone()
        };
        let share = if limit.closes.load(Ordering::Relaxed) {
            KEEP_ALIVE_SHARE
        } else {
            1
        };
        let permit = limit.places.clone().acquire_many_owned(share).await.ok()?;
        Some((limit, permit))
    }
}

/// Whether a response ends its connection (HTTP/1.0 without keep-alive, or
/// `Connection: close`).
fn closes_connection(parts: &hyper::http::response::Parts) -> bool {
    let connection = parts
        .headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    connection.contains("close")
        || (parts.version <= hyper::Version::HTTP_10 && !connection.contains("keep-alive"))
}

/// A response body that holds its backend's place until it is done.
struct Admitted {
    body: Body,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl hyper::body::Body for Admitted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How long each successive attempt to connect to a backend may take. A backend whose
/// accept queue overflows drops the SYN, and TCP would send it again only after a
/// second: a fresh attempt after 50 ms (to the next ready instance, or the same one when
/// it is the only one) gets through at once. Later attempts allow for slower networks.
const CONNECT_TIMEOUTS: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(2),
];

fn client(connect_timeout: Duration) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// Counts connections in flight, so that a router handing over can wait for them.
#[derive(Debug, Default, Clone)]
struct InFlight(Arc<AtomicUsize>);

struct Guard(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> Guard {
        self.0.fetch_add(1, Ordering::Relaxed);
        Guard(self.0.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a router that handed its sockets over waits for its connections in
/// flight before it exits.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves on `listener` (and `adopted` TCP route listeners, taken over from a
/// predecessor) until `shutdown` turns true, or until it hands its sockets to a
/// successor and its connections in flight have finished.
pub async fn run(
    listener: TcpListener,
    adopted: Vec<(u16, std::net::TcpListener)>,
    config: RouterConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Shared {
        table: Arc::new(RwLock::new(Arc::new(Table::default()))),
        clients: Arc::new(CONNECT_TIMEOUTS.map(client)),
        limits: Arc::default(),
        max_per_backend: config.max_per_backend.max(1),
        domain: config.domain.clone(),
        traffic: crate::traffic::Traffic::default(),
    };
    let in_flight = InFlight::default();
    let tcp = Arc::new(match listener.local_addr() {
        Ok(addr) => crate::tcp::TcpRoutes::on(addr.ip(), in_flight.0.clone()),
        Err(_) => crate::tcp::TcpRoutes::default(),
    });
    for (port, socket) in adopted {
        tcp.adopt(port, socket);
    }
    if let Some(kept) = config.state_file.as_deref().and_then(load_table) {
        tracing::info!(
            routes = kept.routes.len(),
            "serving the route table kept by the previous router"
        );
        tcp.sync(&kept.tcp);
        install(&shared.table, kept);
    }
    let listener = Arc::new(listener);
    // Handed over: stop accepting, finish what is in flight.
    let (drain_tx, mut draining) = watch::channel(false);
    if let Some(path) = config.control_socket.clone() {
        let (listener, tcp, lock) = (listener.clone(), tcp.clone(), config.lock.clone());
        tokio::spawn(offer(path, listener, tcp, lock, drain_tx, shutdown.clone()));
    }
    if let (Some(addr), Some(token)) = (config.metrics_listen, config.metrics_token.clone()) {
        tokio::spawn(serve_traffic(
            addr,
            token,
            shared.traffic.clone(),
            draining.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(refresh_loop(
        config,
        shared.table.clone(),
        tcp.clone(),
        shutdown.clone(),
    ));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
            _ = draining.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let guard = in_flight.enter();
        let draining = draining.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |req| {
                let (shared, draining) = (shared.clone(), draining.clone());
                async move {
                    let mut response = handle(&shared, req, peer).await;
                    // Handed over: each connection closes after its next response, so
                    // the client's following request goes to the successor. (Closing
                    // an idle connection instead could cross a request in flight.)
                    if *draining.borrow() {
                        response
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tcp.stop_accepting();
    let deadline = tokio::time::Instant::now() + DRAIN;
    while in_flight.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        left = in_flight.count(),
        "handed over to the next router; exiting"
    );
}

/// Offers this router's sockets to a successor on the control socket at `path`;
/// once one took them, tells the router to drain.
async fn offer(
    path: std::path::PathBuf,
    listener: Arc<TcpListener>,
    tcp: Arc<crate::tcp::TcpRoutes>,
    lock: Option<Arc<crate::lock::LockGuard>>,
    drain: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::os::fd::AsFd;
    let control = match crate::handover::listen(&path) {
        Ok(control) => control,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "no control socket: this router cannot hand over");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            accepted = control.accept() => match accepted.and_then(|(s, _)| s.into_std()) {
                Ok(stream) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let mut sockets = Vec::new();
        if let Ok(http) = listener.as_fd().try_clone_to_owned() {
            sockets.push((crate::handover::Role::Http, http));
        }
        sockets.extend(
            tcp.sockets()
                .into_iter()
                .map(|(port, fd)| (crate::handover::Role::Tcp { port }, fd)),
        );
        if let Some(fd) = lock.as_deref().and_then(|l| l.descriptor().ok()) {
            sockets.push((crate::handover::Role::Lock, fd));
        }
        let handed =
            tokio::task::spawn_blocking(move || crate::handover::hand_over(stream, sockets)).await;
        match handed {
            Ok(Ok(true)) => {
                tracing::info!("a new router took over the listening sockets");
                if let Some(lock) = &lock {
                    lock.handed_over();
                }
                let _ = drain.send(true);
                return;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a handover failed"),
            Err(e) => tracing::warn!(error = %e, "a handover failed"),
        }
    }
}

async fn refresh_loop(
    config: RouterConfig,
    table: Arc<RwLock<Arc<Table>>>,
    tcp: Arc<crate::tcp::TcpRoutes>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each request waits at the control plane until the table changes (a long poll);
    // the timeout leaves room for that wait.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(ROUTES_WAIT + Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut failing = false;
    let mut last: Option<RouteTable> = None;
    let mut version: Option<String> = None;
    // Paces requests after a failure, or when the control plane answers at once
    // without a version (an older release).
    let mut floor = tokio::time::interval(config.refresh);
    floor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pace = true;
    loop {
        if pace {
            tokio::select! {
                _ = floor.tick() => {}
                _ = shutdown.changed() => return,
            }
        }
        let mut request = http
            .get(format!("{}/internal/v1/routes", config.control_plane))
            .bearer_auth(&config.token)
            .header("Prefer", format!("wait={}", ROUTES_WAIT.as_secs()));
        if let Some(v) = &version {
            request = request.header("If-None-Match", format!("\"{v}\""));
        }
        let fetched = async {
            let r = request.send().await?.error_for_status()?;
            if r.status() == reqwest::StatusCode::NOT_MODIFIED {
                return Ok(None);
            }
            let tag = r
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_matches('"').to_owned());
            Ok::<_, reqwest::Error>(Some((r.json::<RouteTable>().await?, tag)))
        };
        let fetched = tokio::select! {
            f = fetched => f,
            _ = shutdown.changed() => return,
        };
        match fetched {
            Ok(answer) => {
                if failing {
                    tracing::info!("route table refreshed again");
                    failing = false;
                }
                let Some((routes, tag)) = answer else {
                    pace = false;
                    continue;
                };
                pace = tag.is_none();
                version = tag;
                if last.as_ref() != Some(&routes) {
                    if let Some(path) = &config.state_file {
                        keep_table(path, &routes);
                    }
                    last = Some(routes.clone());
                    tcp.sync(&routes.tcp);
                    install(&table, routes);
                }
            }
            Err(e) => {
                pace = true;
                if !failing {
                    tracing::warn!(error = %e, "control plane unreachable; keeping the last route table");
                    failing = true;
                }
            }
        }
    }
}

/// How long the control plane may hold a route-table request waiting for a change.
const ROUTES_WAIT: Duration = Duration::from_secs(20);

/// The route table a previous router kept.
fn load_table(path: &std::path::Path) -> Option<RouteTable> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Keeps the route table for the next router (written aside, then renamed).
fn keep_table(path: &std::path::Path, routes: &RouteTable) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let staged = path.with_extension("new");
    let written = serde_json::to_vec(routes)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&staged)?
                .write_all(&bytes)
        })
        .and_then(|()| std::fs::rename(&staged, path));
    if let Err(e) = written {
        tracing::warn!(error = %e, "the route table could not be kept");
    }
}

/// Replaces the table, keeping each application's round-robin position.
fn install(table: &RwLock<Arc<Table>>, routes: RouteTable) {
    let old = table.read().map(|t| t.clone()).unwrap_or_default();
    let mut next = Table::default();
    for route in routes.routes {
        let key = (route.key.tenant, route.key.environment, route.key.app);
        let position = old
            .routes
            .get(&key)
            .map_or(0, |b| b.next.load(Ordering::Relaxed));
        let canary = route.canary.map(|c| {
            let (next, turn) =
                old.routes
                    .get(&key)
                    .and_then(|b| b.canary.as_ref())
                    .map_or((0, 0), |c| {
                        (
                            c.next.load(Ordering::Relaxed),
                            c.turn.load(Ordering::Relaxed),
                        )
                    });
            CanaryBackends {
                weight: c.weight,
                addrs: c.backends,
                next: AtomicUsize::new(next),
                turn: std::sync::atomic::AtomicU64::new(turn),
            }
        });
        next.routes.insert(
            key,
            Arc::new(Backends {
                addrs: route.backends,
                fallback: route.fallback,
                next: AtomicUsize::new(position),
                canary,
            }),
        );
    }
    if let Ok(mut t) = table.write() {
        *t = Arc::new(next);
    }
}

/// Where a request goes: the application, the path to forward, and the prefix the
/// router took off (the path form's `/apps/<tenant>/<env>/<app>`), which the
/// application learns from `X-Forwarded-Prefix` so its redirects stay inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    key: (String, String, String),
    path: String,
    prefix: Option<String>,
}

/// Which application a request is for, and the path to forward.
fn resolve(req: &Request<Incoming>, domain: &str) -> Option<Target> {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    resolve_from(host, path_and_query, domain)
}

fn resolve_from(host: &str, path_and_query: &str, domain: &str) -> Option<Target> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if let Some(names) = host.strip_suffix(domain).and_then(|n| n.strip_suffix('.')) {
        let labels: Vec<&str> = names.split('.').collect();
        if let [app, env, tenant] = labels.as_slice() {
            return Some(Target {
                key: (tenant.to_string(), env.to_string(), app.to_string()),
                path: path_and_query.to_owned(),
                prefix: None,
            });
        }
    }
    let rest = path_and_query.strip_prefix("/apps/")?;
    let mut parts = rest.splitn(4, '/');
    let (tenant, env, app) = (parts.next()?, parts.next()?, parts.next()?);
    let app = app.split('?').next().unwrap_or(app);
    let tail = parts.next().unwrap_or("");
    let forwarded = if tail.starts_with('?') || tail.is_empty() {
        let query = path_and_query
            .find('?')
            .map_or("", |i| &path_and_query[i..]);
        format!("/{}", if tail.is_empty() { query } else { tail })
    } else {
        format!("/{tail}")
    };
    Some(Target {
        key: (tenant.to_owned(), env.to_owned(), app.to_owned()),
        path: forwarded,
        prefix: Some(format!("/apps/{tenant}/{env}/{app}")),
    })
}

/// An RFC 7239 `node` value: IPv6 addresses are bracketed and quoted.
fn forwarded_node(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// An RFC 7239 value: a token as it is, anything else quoted.
fn forwarded_value(value: &str) -> String {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Tells the application how the client reached it: `X-Forwarded-For`, `-Host`,
/// `-Proto` and `-Prefix`, and the standard `Forwarded` (each appended to what a proxy
/// in front of the router already said).
fn add_forwarding(
    headers: &mut hyper::HeaderMap,
    peer: SocketAddr,
    host: Option<&HeaderValue>,
    prefix: Option<&str>,
) {
    let append = |headers: &hyper::HeaderMap, name: &str, value: String| match headers
        .get(name)
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) if !prior.is_empty() => format!("{prior}, {value}"),
        _ => value,
    };
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    let xff = append(headers, "x-forwarded-for", peer.ip().to_string());
    set(headers, "x-forwarded-for", xff);
    let mut forwarded = format!("for={};proto=http", forwarded_node(peer.ip()));
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        forwarded.push_str(&format!(";host={}", forwarded_value(host)));
        set(headers, "x-forwarded-host", host.to_owned());
    }
    let forwarded = append(headers, "forwarded", forwarded);
    set(headers, "forwarded", forwarded);
    set(headers, "x-forwarded-proto", "http".to_owned());
    match prefix {
        Some(prefix) => set(headers, "x-forwarded-prefix", prefix.to_owned()),
        // A client must not make the application believe in a prefix that is not there.
        None => {
            headers.remove("x-forwarded-prefix");
        }
    }
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(target) = resolve(&req, &shared.domain) else {
        return text(
            StatusCode::NOT_FOUND,
            "no application at this address; use http://<app>.<env>.<tenant>.localhost/ or /apps/<tenant>/<env>/<app>/",
        );
    };
    let key = target.key.clone();
    let started = std::time::Instant::now();
    let (response, side) = forward(shared, target, req, peer).await;
    shared
        .traffic
        .record_on(&key, side, response.status().as_u16(), started.elapsed());
    response
}

/// Serves the traffic counters on their own listener until the router hands over or
/// stops. A successor binds the address once its predecessor let go of it.
async fn serve_traffic(
    addr: SocketAddr,
    token: String,
    traffic: crate::traffic::Traffic,
    mut draining: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "the metrics address is not free yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let router = uuid::Uuid::new_v4().simple().to_string();
    let expected = Arc::new(format!("Bearer {token}"));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = draining.changed() => return,
            _ = shutdown.changed() => return,
        };
        let (traffic, router, expected) = (traffic.clone(), router.clone(), expected.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (traffic, router, expected) =
                    (traffic.clone(), router.clone(), expected.clone());
                async move {
                    let authorized = req
                        .headers()
                        .get(header::AUTHORIZATION)
                        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                    let response = if !authorized {
                        text(StatusCode::UNAUTHORIZED, "the metrics token is required")
                    } else {
                        let reading = traffic.read(&router);
                        match req.uri().path() {
                            "/metrics" => {
                                with_type(reading.prometheus(), "text/plain; version=0.0.4")
                            }
                            "/traffic" => with_type(
                                serde_json::to_string(&reading).unwrap_or_default(),
                                "application/json",
                            ),
                            _ => text(StatusCode::NOT_FOUND, "only /metrics and /traffic here"),
                        }
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn with_type(body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Forwards the request to one of the application's instances; the response and the
/// side of a canary release it went to.
async fn forward(
    shared: &Shared,
    Target { key, path, prefix }: Target,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Option<Split>) {
    let backends = shared
        .table
        .read()
        .ok()
        .and_then(|t| t.routes.get(&key).cloned());
    let Some(backends) = backends.filter(|b| !(b.addrs.is_empty() && b.fallback.is_empty())) else {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no ready instance of {}/{}/{}", key.0, key.1, key.2),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return (r, None);
    };
    let (order, side) = match backends.pick(Ask::of(req.headers())) {
        Ok(picked) => picked,
        Err(why) => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return (r, Some(Split::Canary));
        }
    };
    let (mut parts, body) = req.into_parts();
    // Requests without a body can be retried on another instance when a connection
    // cannot be made (an instance that just died); others are sent once.
    let bodyless = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v == "0")
        && !parts.headers.contains_key(header::TRANSFER_ENCODING);
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    add_forwarding(
        &mut parts.headers,
        peer,
        original_host.as_ref(),
        prefix.as_deref(),
    );
    let mut body = Some(body.boxed());
    let mut last_error = String::new();
    // A request without a body is tried up to three times, on the next ready instance
    // each time (the same one when it is the only one): after a failed connection, with
    // a longer connect timeout; after any other failure too, as it is idempotent. A
    // request with a body is sent once, with the most patient connect timeout.
    let attempts: &[usize] = if bodyless { &[0, 1, 2] } else { &[2] };
    for (turn, &patience) in attempts.iter().enumerate() {
        let addr = order[turn % order.len()];
        let Ok(uri) = format!("http://{addr}{path}").parse::<Uri>() else {
            return (
                text(
                    StatusCode::BAD_REQUEST,
                    "the request path cannot be forwarded",
                ),
                side,
            );
        };
        let mut outgoing = Request::from_parts(
            parts.clone(),
            body.take()
                .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed()),
        );
        *outgoing.uri_mut() = uri;
        let admitted = shared.admit(addr).await;
        match shared.clients[patience].request(outgoing).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let permit = admitted.map(|(limit, permit)| {
                    limit
                        .closes
                        .store(closes_connection(&parts), Ordering::Relaxed);
                    permit
                });
                strip_hop_by_hop(&mut parts.headers);
                let body = Admitted {
                    body: body.boxed(),
                    _permit: permit,
                };
                return (Response::from_parts(parts, body.boxed()), side);
            }
            Err(e) => {
                last_error = format!("{addr}: {e}");
                tracing::debug!(backend = %addr, error = %e, connect = e.is_connect(), "backend failed");
            }
        }
    }
    (
        text(
            StatusCode::BAD_GATEWAY,
            &format!("the application's instance did not answer ({last_error})"),
        ),
        side,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_path_forms_resolve() {
        let check =
            |host: &str, path: &str, expected: Option<(&str, &str, &str, &str, Option<&str>)>| {
                let expected = expected.map(|(t, e, a, p, prefix)| Target {
                    key: (t.to_owned(), e.to_owned(), a.to_owned()),
                    path: p.to_owned(),
                    prefix: prefix.map(str::to_owned),
                });
                assert_eq!(
                    resolve_from(host, path, "localhost"),
                    expected,
                    "{host} {path}"
                );
            };
        check(
            "web.dev.acme.localhost:8000",
            "/x?y=1",
            Some(("acme", "dev", "web", "/x?y=1", None)),
        );
        check(
            "web.dev.acme.localhost",
            "/",
            Some(("acme", "dev", "web", "/", None)),
        );
        check(
            "127.0.0.1:8000",
            "/apps/acme/dev/web/static/a.css",
            Some((
                "acme",
                "dev",
                "web",
                "/static/a.css",
                Some("/apps/acme/dev/web"),
            )),
        );
        check(
            "127.0.0.1:8000",
            "/apps/acme/dev/web",
            Some(("acme", "dev", "web", "/", Some("/apps/acme/dev/web"))),
        );
        check(
            "127.0.0.1:8000",
            "/apps/acme/dev/web?x=1",
            Some(("acme", "dev", "web", "/?x=1", Some("/apps/acme/dev/web"))),
        );
        check("127.0.0.1:8000", "/apps/acme/dev", None);
        check("dev.acme.localhost", "/", None);
        check("example.com", "/", None);
    }

    #[test]
    fn requests_rotate_over_ready_backends_and_reach_silent_nodes_only_last() {
        let backends = Backends {
            addrs: vec!["a:1".into(), "b:1".into()],
            fallback: vec!["x:1".into()],
            next: AtomicUsize::new(0),
            canary: None,
        };
        assert_eq!(backends.order(), ["a:1", "b:1", "x:1"]);
        assert_eq!(backends.order(), ["b:1", "a:1", "x:1"]);
        let only_silent = Backends {
            addrs: Vec::new(),
            fallback: vec!["x:1".into(), "y:1".into()],
            next: AtomicUsize::new(0),
            canary: None,
        };
        assert_eq!(only_silent.order(), ["x:1", "y:1"]);
    }

    fn split(stable: &[&str], canary: &[&str], weight: Option<u32>) -> Backends {
        Backends {
            addrs: stable.iter().map(|s| (*s).to_owned()).collect(),
            fallback: Vec::new(),
            next: AtomicUsize::new(0),
            canary: Some(CanaryBackends {
                weight,
                addrs: canary.iter().map(|s| (*s).to_owned()).collect(),
                ..CanaryBackends::default()
            }),
        }
    }

    fn sides(b: &Backends, n: usize, ask: Ask) -> (usize, usize) {
        let mut counts = (0, 0);
        for _ in 0..n {
            match b.pick(ask) {
                Ok((_, Some(Split::Canary))) => counts.0 += 1,
                Ok((_, Some(Split::Stable))) => counts.1 += 1,
                other => panic!("{other:?}"),
            }
        }
        counts
    }

    #[test]
    fn a_canary_gets_exactly_its_weight_and_a_header_picks_a_side() {
        // Of every 100 requests, exactly the weight go to the canary.
        for (weight, expected) in [(0, 0), (1, 1), (10, 10), (33, 33), (50, 50), (100, 100)] {
            let b = split(&["s:1", "s:2", "s:3"], &["c:1"], Some(weight));
            assert_eq!(
                sides(&b, 100, Ask::Any),
                (expected, 100 - expected),
                "{weight}%"
            );
            assert_eq!(sides(&b, 1000, Ask::Any).0, expected * 10, "{weight}%");
        }
        // `X-Canary` overrides the split, whatever the weight.
        let b = split(&["s:1"], &["c:1", "c:2"], Some(0));
        assert_eq!(sides(&b, 10, Ask::Always), (10, 0));
        let (order, _) = b.pick(Ask::Always).unwrap_or_default();
        assert!(order.iter().all(|a| a.starts_with("c:")), "{order:?}");
        let b = split(&["s:1"], &["c:1"], Some(100));
        assert_eq!(sides(&b, 10, Ask::Never), (0, 10));
        // Without a weight, by instance count: one canary of four instances.
        let b = split(&["s:1", "s:2", "s:3"], &["c:1"], None);
        assert_eq!(sides(&b, 100, Ask::Any), (25, 75));
        // Nobody ready on the chosen side: the other side serves, except that a
        // request asking for the canary is refused.
        let b = split(&["s:1"], &[], Some(100));
        assert_eq!(sides(&b, 10, Ask::Any), (0, 10));
        assert!(b.pick(Ask::Always).is_err());
        let b = split(&[], &["c:1"], Some(0));
        assert_eq!(sides(&b, 10, Ask::Any), (10, 0));
    }

    #[test]
    fn forwarding_headers_say_how_the_client_came_and_append_to_a_proxy_in_front() {
        let peer: SocketAddr = "10.0.0.7:5555".parse().unwrap_or_else(|e| panic!("{e}"));
        let host = HeaderValue::from_static("127.0.0.1:8000");
        let mut headers = hyper::HeaderMap::new();
        add_forwarding(&mut headers, peer, Some(&host), Some("/apps/acme/dev/web"));
        let get = |h: &hyper::HeaderMap, n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(get(&headers, "x-forwarded-for"), "10.0.0.7");
        assert_eq!(get(&headers, "x-forwarded-host"), "127.0.0.1:8000");
        assert_eq!(get(&headers, "x-forwarded-proto"), "http");
        assert_eq!(get(&headers, "x-forwarded-prefix"), "/apps/acme/dev/web");
        assert_eq!(
            get(&headers, "forwarded"),
            "for=10.0.0.7;proto=http;host=\"127.0.0.1:8000\""
        );

        // Behind another proxy: its entries come first; a forged prefix is dropped.
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.insert("forwarded", HeaderValue::from_static("for=203.0.113.9"));
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        let v6: SocketAddr = "[::1]:5555".parse().unwrap_or_else(|e| panic!("{e}"));
        let host = HeaderValue::from_static("web.dev.acme.localhost");
        add_forwarding(&mut headers, v6, Some(&host), None);
        assert_eq!(get(&headers, "x-forwarded-for"), "203.0.113.9, ::1");
        assert_eq!(
            get(&headers, "forwarded"),
            "for=203.0.113.9, for=\"[::1]\";proto=http;host=web.dev.acme.localhost"
        );
        assert_eq!(get(&headers, "x-forwarded-prefix"), "");
    }
}
