//! One-click onboarding templates: ready-made application specs a developer deploys
//! with one click, each with sensible defaults for the local runtime.

use serde_json::json;

use crate::spec::AppSpec;

/// A template as the onboarding page shows it.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// The name the application gets unless the developer picks another.
    pub default_name: &'static str,
    pub spec: AppSpec,
}

/// The sample HTTP service shipped with the platform: answers `/` with a greeting that
/// names the instance, `/healthz` for readiness, and logs each request.
const HELLO_HTTP: &str = r#"
import http.server, json, os, socket, sys
name = os.environ.get("PAAS_INSTANCE", socket.gethostname())
greeting = os.environ.get("GREETING", "Hello from the platform")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body, kind = b"ok\n", "text/plain"
        else:
            body, kind = json.dumps({"message": greeting, "instance": name, "path": self.path}).encode() + b"\n", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (name, fmt % args))
        sys.stdout.flush()
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn spec(value: serde_json::Value) -> AppSpec {
    // The templates are constants checked by the tests below; a failure here is a bug
    // in this file, caught before release.
    serde_json::from_value(value).unwrap_or_else(|e| unreachable_template(&e))
}

#[allow(clippy::panic)]
fn unreachable_template(e: &serde_json::Error) -> AppSpec {
    panic!("a built-in template does not parse: {e}")
}

/// Every template, in the order the onboarding page shows them.
pub fn all() -> Vec<Template> {
    vec![
        Template {
            id: "hello-http",
            title: "Sample HTTP service",
            description: "A small JSON web service with a health endpoint, two instances behind the router.",
            default_name: "hello-web",
            spec: spec(json!({
                "kind": "service", "command": "python3", "args": ["-u", "-c", HELLO_HTTP], "replicas": 2,
                "env": {"GREETING": "Hello from the platform"},
                "ports": [{"name": "http"}],
                "health": {"readiness": {"http_path": "/healthz", "period_ms": 500}, "liveness": {"http_path": "/healthz", "period_ms": 5000}}
            })),
        },
        Template {
            id: "static-site",
            title: "Static site",
            description: "Serves a generated web page from its working directory.",
            default_name: "site",
            spec: spec(json!({
                "kind": "service", "command": "sh",
                "args": ["-c", "mkdir -p public && printf '<!doctype html><title>%s</title><h1>%s</h1><p>Served by instance %s.</p>\\n' \"$TITLE\" \"$TITLE\" \"$PAAS_INSTANCE\" > public/index.html && exec python3 -m http.server \"$PORT\" --bind 127.0.0.1 --directory public"],
                "replicas": 1, "env": {"TITLE": "It works"}, "ports": [{"name": "http"}],
                "health": {"readiness": {"http_path": "/", "period_ms": 500}}
            })),
        },
        Template {
            id: "worker",
            title: "Background worker",
            description: "A long-running process without a port that works through a queue.",
            default_name: "worker",
            spec: spec(json!({
                "kind": "service", "command": "sh",
                "args": ["-c", "n=0; while true; do n=$((n+1)); echo \"processed item $n\"; sleep 5; done"],
                "replicas": 1
            })),
        },
        Template {
            id: "job",
            title: "One-off job",
            description: "Runs to completion once, retried on failure (e.g. a database migration).",
            default_name: "migrate",
            spec: spec(json!({
                "kind": "job", "command": "sh", "args": ["-c", "echo 'applying migrations'; sleep 2; echo 'done'"], "replicas": 1
            })),
        },
        Template {
            id: "cron-job",
            title: "Cron job",
            description: "Runs on a schedule: every minute, on the minute.",
            default_name: "report",
            spec: spec(json!({
                "kind": "cronjob", "command": "sh", "args": ["-c", "echo \"report generated at $(date -u +%H:%M:%S)\""],
                "replicas": 1, "schedule": "0 * * * * *"
            })),
        },
    ]
}

pub fn find(id: &str) -> Option<Template> {
    all().into_iter().find(|t| t.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_a_valid_spec_with_a_valid_name() {
        for t in all() {
            assert!(
                t.spec.validate().is_ok(),
                "{}: {:?}",
                t.id,
                t.spec.validate()
            );
            assert!(
                crate::names::AppName::parse(t.default_name).is_ok(),
                "{}",
                t.id
            );
        }
        assert!(find("hello-http").is_some());
        assert!(find("nope").is_none());
    }
}
