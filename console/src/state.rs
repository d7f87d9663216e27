//! Shared state of the HTTP server.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use platform_core::Platform;
use runtime_local::LocalRuntime;

use crate::ratelimit::LoginLimiter;

/// Settings of the web layer (the core has its own).
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Mark cookies `Secure` (the console is served over TLS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// Take the client address from `Forwarded` / `X-Forwarded-For` (only behind a
    /// proxy that sets them).
    pub trust_proxy: bool,
    /// Login attempts allowed per username per minute.
    pub login_per_user_per_minute: u32,
    /// Login attempts allowed per client address per minute.
    pub login_per_address_per_minute: u32,
    /// Where the router serves applications, e.g. `http://127.0.0.1:8000`, to show
    /// their URLs.
    pub router_url: Option<String>,
    /// Who may read `/metrics`, and on which listener.
    pub metrics: MetricsExposure,
}

/// How `/metrics` is exposed. By default it is open on the main listener, as a
/// single-machine platform needs; in production give it a listener of its own on a
/// private address, or a token, or both.
#[derive(Clone)]
pub struct MetricsExposure {
    /// Served on the main listener (false when it has a listener of its own).
    pub on_main_listener: bool,
    /// When set, a scrape must present `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl Default for MetricsExposure {
    fn default() -> Self {
        Self {
            on_main_listener: true,
            token: None,
        }
    }
}

impl std::fmt::Debug for MetricsExposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsExposure")
            .field("on_main_listener", &self.on_main_listener)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            trust_proxy: false,
            login_per_user_per_minute: 5,
            login_per_address_per_minute: 30,
            router_url: None,
            metrics: MetricsExposure::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub platform: Platform,
    pub config: Arc<WebConfig>,
    pub login_limiter: Arc<LoginLimiter>,
    pub metrics: PrometheusHandle,
    /// The local runtime's control-plane half, when agents may connect.
    pub local_runtime: Option<Arc<LocalRuntime>>,
    /// The secret agents and the router present.
    pub agent_token: Option<String>,
}

impl AppState {
    pub fn new(platform: Platform, config: WebConfig) -> Self {
        let login_limiter = Arc::new(LoginLimiter::new(
            config.login_per_user_per_minute,
            config.login_per_address_per_minute,
        ));
        Self {
            platform,
            config: Arc::new(config),
            login_limiter,
            metrics: crate::metrics::handle(),
            local_runtime: None,
            agent_token: None,
        }
    }

    /// Opens the internal API to agents and the router presenting `token`.
    #[must_use]
    pub fn with_local_runtime(mut self, runtime: Arc<LocalRuntime>, token: String) -> Self {
        self.local_runtime = Some(runtime);
        self.agent_token = Some(token);
        self
    }
}
