//! The gateway's HAProxy configuration, rendered from an instance's consumers and
//! routes (pure, so that it is tested without a server).
//!
//! A request names its consumer by `X-API-Key`: the key's SHA-256 is looked up in
//! the consumers' map (the broker never sees a key, only its digest), no match is a
//! 401. Each consumer's request rate over the last minute is tracked in a stick table
//! and compared with its limit: above it, a 429 with `Retry-After`. The first path
//! segment names the route; its backend forwards to the bound application with the
//! segment replaced by the application's path. `/_gateway/health` answers the
//! platform's readiness check; `/_gateway/metrics` is HAProxy's Prometheus exporter,
//! for the holder of the instance's metrics token (read from the environment,
//! `GW_METRICS_TOKEN`, never written into the configuration).

use serde::{Deserialize, Serialize};

/// A client of the gateway's routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub name: String,
    /// The SHA-256 of the consumer's API key, in lower-case hexadecimal.
    pub key_sha256: String,
    pub requests_per_minute: u32,
}

/// A bound application, exposed as `/<name>/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    /// Where the application is served (`host:port`).
    pub server: String,
    /// The application's path there, without the trailing slash (`/apps/acme/dev/shop`).
    pub prefix: String,
}

impl Route {
    /// The route to an application served at `url` (what the platform sends as the
    /// binding's `route`), under the application's own `name`.
    pub fn from_url(name: &str, url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("the route '{url}': {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("the route '{url}' is not http"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("the route '{url}' has no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        let route = Self {
            name: name.to_owned(),
            server: format!("{host}:{port}"),
            prefix: parsed.path().trim_end_matches('/').to_owned(),
        };
        route.check()?;
        Ok(route)
    }

    /// Nothing but safe characters reaches the configuration.
    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let server_ok = !self.server.is_empty()
            && self
                .server
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        let prefix_ok = self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
            && (self.prefix.is_empty() || self.prefix.starts_with('/'));
        if name_ok && server_ok && prefix_ok {
            Ok(())
        } else {
            Err(format!(
                "the route '{}' to {}{} has characters a gateway route cannot have",
                self.name, self.server, self.prefix
            ))
        }
    }
}

/// What the server is started with: the configuration and its map files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub config: String,
    /// `<key digest> <consumer>` per line.
    pub consumers: String,
    /// `<consumer> <requests per minute>` per line.
    pub limits: String,
    /// `<route> <route>` per line (which first path segments are routes).
    pub routes: String,
}

const JSON: &str = "content-type application/json";

/// Renders the gateway for `consumers` and `routes`. The server listens on
/// `${GW_BIND}:${PORT}` (from its environment).
pub fn render(consumers: &[Consumer], routes: &[Route]) -> Result<Rendered, String> {
    for c in consumers {
        let name_ok = !c.name.is_empty()
            && c.name.len() <= 32
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
        let digest_ok =
            c.key_sha256.len() == 64 && c.key_sha256.chars().all(|ch| ch.is_ascii_hexdigit());
        if !name_ok || !digest_ok {
            return Err(format!("consumer '{}' is not well formed", c.name));
        }
    }
    for r in routes {
        r.check()?;
    }
    let mut config = format!(
        r#"global
  maxconn 4096
  hard-stop-after 30s
  default-path config

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s

frontend gateway
  bind "${{GW_BIND}}:${{PORT}}"
  http-request return status 200 {JSON} string '{{"status":"ok"}}' if {{ path /_gateway/health }}
  http-request use-service prometheus-exporter if {{ path /_gateway/metrics }} {{ req.hdr(authorization) -m str "Bearer ${{GW_METRICS_TOKEN}}" }}
  http-request return status 401 {JSON} string '{{"error":"unauthorized","message":"the metrics need the instance metrics token"}}' if {{ path_beg /_gateway/ }}
  http-request set-var(txn.consumer) req.hdr(x-api-key),sha2(256),hex,lower,map(consumers.map)
  http-request return status 401 {JSON} string '{{"error":"unauthorized","message":"a valid X-API-Key header is required"}}' unless {{ var(txn.consumer) -m found }}
  http-request track-sc0 var(txn.consumer) table consumers
  http-request set-var(txn.limit) var(txn.consumer),map_str_int(limits.map,0)
  http-request return status 429 {JSON} hdr retry-after 60 string '{{"error":"rate_limited","message":"the consumer is over its requests per minute"}}' if {{ sc_http_req_rate(0),sub(txn.limit) gt 0 }}
  http-request set-var(txn.route) path,field(2,/)
  use_backend route_%[var(txn.route)] if {{ var(txn.route),map(routes.map) -m found }}
  default_backend no_route

backend consumers
  stick-table type string len 32 size 10k expire 2m store http_req_rate(1m),http_req_cnt

backend no_route
  http-request return status 404 {JSON} string '{{"error":"not_found","message":"no route by this name"}}'
"#
    );
    for r in routes {
        config.push_str(&format!(
            "\nbackend route_{name}\n  http-request set-path \"%[path,regsub(^/{name},{prefix})]\"\n  http-request set-header host {server}\n  server upstream {server}\n",
            name = r.name,
            prefix = if r.prefix.is_empty() { "" } else { &r.prefix },
            server = r.server,
        ));
    }
    let lines = |items: Vec<String>| {
        let mut text = items.join("\n");
        text.push('\n');
        text
    };
    Ok(Rendered {
        config,
        consumers: lines(
            consumers
                .iter()
                .map(|c| format!("{} {}", c.key_sha256.to_ascii_lowercase(), c.name))
                .collect(),
        ),
        limits: lines(
            consumers
                .iter()
                .map(|c| format!("{} {}", c.name, c.requests_per_minute))
                .collect(),
        ),
        routes: lines(
            routes
                .iter()
                .map(|r| format!("{} {}", r.name, r.name))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str) -> Consumer {
        Consumer {
            name: name.into(),
            key_sha256: "ab".repeat(32),
            requests_per_minute: 60,
        }
    }

    #[test]
    fn a_route_comes_from_the_applications_url() {
        let r = Route::from_url("shop", "http://127.0.0.1:8000/apps/acme/dev/shop/");
        assert_eq!(
            r,
            Ok(Route {
                name: "shop".into(),
                server: "127.0.0.1:8000".into(),
                prefix: "/apps/acme/dev/shop".into(),
            })
        );
        let plain = Route::from_url("web", "http://web.prod.svc");
        assert_eq!(
            plain.map(|r| (r.server, r.prefix)),
            Ok(("web.prod.svc:80".into(), String::new()))
        );
        assert!(Route::from_url("shop", "https://x/").is_err());
        assert!(Route::from_url("shop", "not a url").is_err());
        // Nothing that could end a configuration line or a regular expression.
        assert!(Route::from_url("shop", "http://h/a%20b/").is_err());
        assert!(Route::from_url("Shop", "http://h/a/").is_err());
        assert!(Route::from_url("shop", "http://h/a(b)/").is_err());
    }

    #[test]
    fn the_configuration_has_a_backend_per_route_and_maps_per_consumer() {
        let routes = [
            Route::from_url("shop", "http://127.0.0.1:8000/apps/acme/dev/shop/")
                .unwrap_or_else(|e| panic!("{e}")),
            Route::from_url("orders", "http://127.0.0.1:8000/apps/acme/dev/orders/")
                .unwrap_or_else(|e| panic!("{e}")),
        ];
        let r = render(&[consumer("mobile"), consumer("partner")], &routes)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.config.contains("backend route_shop\n"));
        assert!(r.config.contains("regsub(^/orders,/apps/acme/dev/orders)"));
        assert!(r.config.contains("bind \"${GW_BIND}:${PORT}\""));
        assert!(r.config.contains("Bearer ${GW_METRICS_TOKEN}"));
        assert_eq!(r.routes, "shop shop\norders orders\n");
        assert_eq!(r.limits, "mobile 60\npartner 60\n");
        assert!(
            r.consumers
                .starts_with(&format!("{} mobile\n", "ab".repeat(32)))
        );
    }

    #[test]
    fn a_malformed_consumer_is_refused() {
        let mut bad = consumer("mobile");
        bad.key_sha256 = "zz".into();
        assert!(render(&[bad], &[]).is_err());
        assert!(render(&[consumer("Mobile App")], &[]).is_err());
        assert!(render(&[], &[]).is_ok());
    }
}
