//! The bundle manifest: what a domain bundle installs into an environment (service
//! instances from the catalog, applications, the bindings between them), and the
//! difference between two versions of a bundle, component by component.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// A DNS-label name, e.g. `retail`.
    pub name: String,
    /// A semantic version, e.g. `1.2.0`.
    pub version: String,
    pub description: String,
    /// Service instances the bundle provisions from the catalog.
    #[serde(default)]
    pub services: Vec<ServiceComponent>,
    /// Applications the bundle onboards.
    #[serde(default)]
    pub applications: Vec<AppComponent>,
}

/// A service instance of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceComponent {
    /// The instance's name in the environment.
    pub name: String,
    /// The catalog's service and plan.
    pub service: String,
    pub plan: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// An application of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppComponent {
    pub name: String,
    /// A title for one-click onboarding (the platform's templates are a bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The id under which the onboarding page offers it alone, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub description: String,
    /// The application's spec (the platform checks it like any other).
    pub spec: Value,
    /// The bundle's service instances it is bound to.
    #[serde(default)]
    pub bindings: Vec<BindingComponent>,
    /// Its default autoscaling policy (the platform's policy document): set when the
    /// application has none, and on an upgrade replaced by the new version's only
    /// while it is still the previous version's (a tenant admin's own policy stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Value>,
    /// The release strategy (the platform's strategy document) of the releases the
    /// bundle's upgrades make of this application; the environment's default
    /// otherwise. Approvals and freeze windows stay the environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingComponent {
    /// A service component's name.
    pub service: String,
    /// The variables' prefix (the instance's name in upper case by default).
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("name '{0}' must be a DNS label (lowercase letters, digits, '-')")]
    BadName(String),
    #[error("version '{0}' must be MAJOR.MINOR.PATCH")]
    BadVersion(String),
    #[error("component '{0}' is listed twice")]
    Duplicate(String),
    #[error("application '{0}' is bound to '{1}', which is not a service of the bundle")]
    UnknownService(String, String),
    #[error("application '{0}' has a spec that is not an object")]
    BadSpec(String),
    #[error("application '{0}' has a {1} policy that is not an object")]
    BadPolicy(String, &'static str),
}

fn dns_label(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && !s.ends_with('-')
}

/// A version as numbers, for ordering (`1.10.0` after `1.9.0`).
pub fn version_key(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

impl BundleManifest {
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !dns_label(&self.name) {
            return Err(ManifestError::BadName(self.name.clone()));
        }
        if version_key(&self.version).is_none() {
            return Err(ManifestError::BadVersion(self.version.clone()));
        }
        let mut seen = HashSet::new();
        for name in self
            .services
            .iter()
            .map(|s| &s.name)
            .chain(self.applications.iter().map(|a| &a.name))
        {
            if !dns_label(name) {
                return Err(ManifestError::BadName(name.clone()));
            }
            if !seen.insert(name.as_str()) {
                return Err(ManifestError::Duplicate(name.clone()));
            }
        }
        for app in &self.applications {
            if !app.spec.is_object() {
                return Err(ManifestError::BadSpec(app.name.clone()));
            }
            for (what, policy) in [("autoscaling", &app.autoscaling), ("release", &app.release)] {
                if policy.as_ref().is_some_and(|p| !p.is_object()) {
                    return Err(ManifestError::BadPolicy(app.name.clone(), what));
                }
            }
            for b in &app.bindings {
                if !self.services.iter().any(|s| s.name == b.service) {
                    return Err(ManifestError::UnknownService(
                        app.name.clone(),
                        b.service.clone(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every binding of the bundle: (application, service component, prefix).
    pub fn bindings(&self) -> Vec<(&str, &str, Option<&str>)> {
        self.applications
            .iter()
            .flat_map(|a| {
                a.bindings
                    .iter()
                    .map(move |b| (a.name.as_str(), b.service.as_str(), b.prefix.as_deref()))
            })
            .collect()
    }
}

/// What a component does between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change", content = "fields")]
pub enum Change {
    Added,
    Removed,
    /// The fields that differ (`env.FEATURE`, `replicas`, `plan`, ...).
    Changed(Vec<String>),
    Unchanged,
}

/// One component's line of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentDiff {
    /// `service`, `application` or `binding`.
    pub kind: &'static str,
    /// The component (`storefront`; a binding is `storefront → db`).
    pub name: String,
    #[serde(flatten)]
    pub change: Change,
}

/// The paths at which two JSON values differ (objects compared key by key, anything
/// else as a whole).
fn differences(prefix: &str, from: &Value, to: &Value, out: &mut Vec<String>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                differences(
                    &path,
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(if prefix.is_empty() {
            "(whole)".to_owned()
        } else {
            prefix.to_owned()
        }),
        _ => {}
    }
}

fn change_of(from: Option<Value>, to: Option<Value>) -> Change {
    match (from, to) {
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        (Some(a), Some(b)) => {
            let mut fields = Vec::new();
            differences("", &a, &b, &mut fields);
            if fields.is_empty() {
                Change::Unchanged
            } else {
                Change::Changed(fields)
            }
        }
        (None, None) => Change::Unchanged,
    }
}

/// What installing `to` over `from` changes, component by component: services, then
/// applications, then bindings, each in name order.
pub fn diff(from: &BundleManifest, to: &BundleManifest) -> Vec<ComponentDiff> {
    let services = |m: &BundleManifest| -> BTreeMap<String, Value> {
        m.services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    serde_json::json!({"service": s.service, "plan": s.plan, "parameters": s.parameters}),
                )
            })
            .collect()
    };
    let applications = |m: &BundleManifest| -> BTreeMap<String, Value> {
        m.applications
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    serde_json::json!({"description": a.description, "spec": a.spec,
                        "autoscaling": a.autoscaling, "release": a.release}),
                )
            })
            .collect()
    };
    let bindings = |m: &BundleManifest| -> BTreeMap<String, Value> {
        m.bindings()
            .into_iter()
            .map(|(a, s, p)| (format!("{a} → {s}"), serde_json::json!({"prefix": p})))
            .collect()
    };
    let mut out = Vec::new();
    for (kind, a, b) in [
        ("service", services(from), services(to)),
        ("application", applications(from), applications(to)),
        ("binding", bindings(from), bindings(to)),
    ] {
        let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for name in names {
            let change = change_of(a.get(name).cloned(), b.get(name).cloned());
            // An application's fields are named from its spec (`spec.replicas` is
            // `replicas`).
            let change = match change {
                Change::Changed(fields) => Change::Changed(
                    fields
                        .into_iter()
                        .map(|f| f.strip_prefix("spec.").map(str::to_owned).unwrap_or(f))
                        .collect(),
                ),
                c => c,
            };
            out.push(ComponentDiff {
                kind,
                name: name.clone(),
                change,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(json: Value, expected: Result<(), ManifestError>) {
        let manifest: BundleManifest =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(manifest.validate(), expected, "{json}");
    }

    #[test]
    fn manifests_are_checked() {
        let base = |name: &str, version: &str| json!({"name": name, "version": version, "description": "Retail"});
        check(base("retail", "1.0.0"), Ok(()));
        check(
            base("Retail", "1.0.0"),
            Err(ManifestError::BadName("Retail".into())),
        );
        check(
            base("retail", "1.0"),
            Err(ManifestError::BadVersion("1.0".into())),
        );
        check(
            json!({"name": "retail", "version": "1.0.0", "description": "x",
                   "services": [{"name": "shop", "service": "redis", "plan": "small"}],
                   "applications": [{"name": "shop", "description": "a", "spec": {}}]}),
            Err(ManifestError::Duplicate("shop".into())),
        );
        check(
            json!({"name": "retail", "version": "1.0.0", "description": "x",
                   "applications": [{"name": "web", "description": "a", "spec": {}, "bindings": [{"service": "db"}]}]}),
            Err(ManifestError::UnknownService("web".into(), "db".into())),
        );
        check(
            json!({"name": "retail", "version": "1.0.0", "description": "x",
                   "applications": [{"name": "web", "description": "a", "spec": []}]}),
            Err(ManifestError::BadSpec("web".into())),
        );
    }

    #[test]
    fn versions_order_by_number() {
        assert!(version_key("1.10.0") > version_key("1.9.3"));
        assert_eq!(version_key("1.0"), None);
        assert_eq!(version_key("1.0.x"), None);
    }

    #[test]
    fn a_diff_names_each_component_and_the_fields_that_change() {
        let from: BundleManifest = serde_json::from_value(json!({
            "name": "retail", "version": "1.0.0", "description": "x",
            "services": [{"name": "db", "service": "postgresql", "plan": "shared"},
                         {"name": "old", "service": "redis", "plan": "small"}],
            "applications": [
                {"name": "web", "description": "w", "spec": {"replicas": 1, "env": {"A": "1"}}, "bindings": [{"service": "db"}]},
                {"name": "worker", "description": "k", "spec": {"replicas": 1}}
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let to: BundleManifest = serde_json::from_value(json!({
            "name": "retail", "version": "1.1.0", "description": "x",
            "services": [{"name": "db", "service": "postgresql", "plan": "dedicated"},
                         {"name": "queue", "service": "nats", "plan": "small"}],
            "applications": [
                {"name": "web", "description": "w", "spec": {"replicas": 2, "env": {"A": "1", "B": "2"}}, "bindings": [{"service": "db"}, {"service": "queue"}]},
                {"name": "worker", "description": "k", "spec": {"replicas": 1}}
            ]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let d = diff(&from, &to);
        let line = |kind: &str, name: &str| {
            d.iter()
                .find(|c| c.kind == kind && c.name == name)
                .map(|c| c.change.clone())
        };
        assert_eq!(
            line("service", "db"),
            Some(Change::Changed(vec!["plan".into()]))
        );
        assert_eq!(line("service", "old"), Some(Change::Removed));
        assert_eq!(line("service", "queue"), Some(Change::Added));
        assert_eq!(
            line("application", "web"),
            Some(Change::Changed(vec!["env.B".into(), "replicas".into()]))
        );
        assert_eq!(line("application", "worker"), Some(Change::Unchanged));
        assert_eq!(line("binding", "web → queue"), Some(Change::Added));
        assert_eq!(line("binding", "web → db"), Some(Change::Unchanged));
        let text = serde_json::to_value(&d).unwrap_or_default();
        assert_eq!(
            text[0],
            json!({"kind": "service", "name": "db", "change": "changed", "fields": ["plan"]})
        );
    }
}
