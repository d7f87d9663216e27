//! Shared state of the HTTP server.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use platform_core::Platform;

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
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            trust_proxy: false,
            login_per_user_per_minute: 5,
            login_per_address_per_minute: 30,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub platform: Platform,
    pub config: Arc<WebConfig>,
    pub login_limiter: Arc<LoginLimiter>,
    pub metrics: PrometheusHandle,
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
        }
    }
}
