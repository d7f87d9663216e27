//! The application form: what the console's new-application and application pages
//! edit, kept as typed so that a wrong value comes back with a message beside it.

use platform_core::FieldError;
use platform_core::model::ApplicationDetail;
use platform_core::spec::{AppSpec, HealthSpec, PortProtocol, PortSpec, Resources, WorkloadKind};
use serde::Deserialize;

pub(super) const KINDS: [&str; 5] = ["service", "stateful", "job", "cronjob", "daemon"];

/// The application form as typed: every field a string, so that a wrong value comes
/// back to the user as typed, with a message beside it.
#[derive(Debug, Clone, Deserialize)]
pub struct AppForm {
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) environment: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) command: String,
    #[serde(default)]
    pub(super) args: String,
    #[serde(default)]
    pub(super) env: String,
    #[serde(default)]
    pub(super) replicas: String,
    #[serde(default)]
    pub(super) cpu_millis: String,
    #[serde(default)]
    pub(super) memory_mib: String,
    #[serde(default)]
    pub(super) schedule: String,
    /// "true" when the application serves HTTP on `$PORT`.
    #[serde(default)]
    pub(super) serves_http: String,
    #[serde(default)]
    pub(super) health_path: String,
    #[serde(default)]
    pub(super) image: String,
    #[serde(default)]
    pub(super) package: String,
    #[serde(default)]
    pub(super) limit_cpu_millis: String,
    #[serde(default)]
    pub(super) limit_memory_mib: String,
    /// A stateful application's data directory size (empty: the default).
    #[serde(default)]
    pub(super) storage_mib: String,
    /// The placement rules as JSON (empty: none).
    #[serde(default)]
    pub(super) placement: String,
    /// The application's labels, one `key=value` per line.
    #[serde(default)]
    pub(super) labels: String,
    /// "true": make the change even if not every instance can be placed.
    #[serde(default)]
    pub(super) force: String,
    /// The application's version when the form was opened (empty on the new form).
    #[serde(default)]
    pub(super) version: String,
}

impl Default for AppForm {
    fn default() -> Self {
        let defaults = Resources::default();
        Self {
            name: String::new(),
            environment: "dev".to_owned(),
            description: String::new(),
            kind: "service".to_owned(),
            command: String::new(),
            args: String::new(),
            env: String::new(),
            replicas: "1".to_owned(),
            cpu_millis: defaults.cpu_millis.to_string(),
            memory_mib: defaults.memory_mib.to_string(),
            schedule: String::new(),
            serves_http: "true".to_owned(),
            health_path: String::new(),
            image: String::new(),
            package: String::new(),
            limit_cpu_millis: String::new(),
            limit_memory_mib: String::new(),
            storage_mib: String::new(),
            placement: String::new(),
            labels: String::new(),
            force: String::new(),
            version: String::new(),
        }
    }
}

impl AppForm {
    pub(super) fn from_detail(detail: &ApplicationDetail) -> Self {
        let spec = &detail.spec;
        Self {
            name: detail.application.name.clone(),
            environment: detail.application.environment.clone(),
            description: detail.application.description.clone(),
            kind: spec.kind.as_str().to_owned(),
            command: spec.command.clone(),
            args: spec.args.join("\n"),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            replicas: spec.replicas.to_string(),
            cpu_millis: spec.resources.cpu_millis.to_string(),
            memory_mib: spec.resources.memory_mib.to_string(),
            schedule: spec.schedule.clone().unwrap_or_default(),
            serves_http: if spec.ports.iter().any(|p| p.protocol == PortProtocol::Http) {
                "true"
            } else {
                ""
            }
            .to_owned(),
            health_path: spec
                .health
                .readiness
                .as_ref()
                .and_then(|r| r.http_path.clone())
                .unwrap_or_default(),
            image: spec.image.clone().unwrap_or_default(),
            package: spec.package.clone().unwrap_or_default(),
            limit_cpu_millis: spec
                .limits
                .cpu_millis
                .map(|v| v.to_string())
                .unwrap_or_default(),
            limit_memory_mib: spec
                .limits
                .memory_mib
                .map(|v| v.to_string())
                .unwrap_or_default(),
            storage_mib: spec.storage_mib.map(|v| v.to_string()).unwrap_or_default(),
            placement: if spec.placement.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&spec.placement).unwrap_or_default()
            },
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            force: String::new(),
            version: detail.application.version.to_string(),
        }
    }

    /// Whether the change is to be made even if not every instance can be placed.
    pub(super) fn force(&self) -> bool {
        self.force == "true"
    }

    /// The version the form was opened at, which the change must still find.
    pub(super) fn version(&self) -> Result<Option<i64>, FieldError> {
        super::super::parse_version(&self.version)
    }

    pub fn serves_http(&self) -> bool {
        self.serves_http == "true"
    }

    /// Reads the spec fields; errors name the same paths as the API (`spec.replicas`).
    pub(super) fn spec(&self) -> Result<AppSpec, FieldError> {
        let number = |field: &str, value: &str| {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| FieldError::new(format!("spec.{field}"), "must be a whole number"))
        };
        let mut env = std::collections::BTreeMap::new();
        for line in self.env.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| {
                FieldError::new(
                    "spec.env",
                    format!("'{line}' is not of the form NAME=value"),
                )
            })?;
            env.insert(key.trim().to_owned(), value.to_owned());
        }
        let mut labels = std::collections::BTreeMap::new();
        for line in self.labels.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| {
                FieldError::new(
                    "spec.labels",
                    format!("'{line}' is not of the form key=value"),
                )
            })?;
            labels.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        let optional_number = |field: &str, value: &str| {
            Some(value.trim())
                .filter(|v| !v.is_empty())
                .map(|v| number(field, v))
                .transpose()
        };
        let text = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let spec = AppSpec {
            package: text(&self.package),
            image: text(&self.image),
            limits: platform_core::spec::Limits {
                cpu_millis: optional_number("limits.cpu_millis", &self.limit_cpu_millis)?,
                memory_mib: optional_number("limits.memory_mib", &self.limit_memory_mib)?,
            },
            kind: WorkloadKind::parse(&self.kind).map_err(|e| e.under("spec"))?,
            command: self.command.trim().to_owned(),
            args: self
                .args
                .lines()
                .map(|l| l.trim_end_matches('\r').to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            env,
            replicas: number("replicas", &self.replicas)?,
            resources: Resources {
                cpu_millis: number("resources.cpu_millis", &self.cpu_millis)?,
                memory_mib: number("resources.memory_mib", &self.memory_mib)?,
            },
            schedule: Some(self.schedule.trim().to_owned()).filter(|s| !s.is_empty()),
            ports: if self.serves_http() {
                vec![PortSpec {
                    name: "http".to_owned(),
                    protocol: PortProtocol::Http,
                }]
            } else {
                Vec::new()
            },
            placement: if self.placement.trim().is_empty() {
                Default::default()
            } else {
                super::super::parse_json_field(
                    &self.placement,
                    "spec.placement",
                    Some("spec.placement"),
                )?
            },
            labels,
            storage_mib: optional_number("storage_mib", &self.storage_mib)?,
            health: HealthSpec {
                readiness: Some(self.health_path.trim())
                    .filter(|p| !p.is_empty())
                    .map(|p| serde_json::from_value(serde_json::json!({"http_path": p})))
                    .transpose()
                    .map_err(|e| FieldError::new("spec.health.readiness", e.to_string()))?,
                liveness: None,
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_in_the_form_keeps_every_field_the_form_shows() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "command": "./run.sh", "args": ["--port", "$PORT"], "image": "shop/web:1.2",
            "package": format!("sha256:{}", "b".repeat(64)), "env": {"A": "1"}, "replicas": 3,
            "resources": {"cpu_millis": 200, "memory_mib": 256},
            "limits": {"cpu_millis": 400, "memory_mib": 512},
            "ports": [{"name": "http"}], "health": {"readiness": {"http_path": "/healthz"}},
            "placement": {"app_anti_affinity": [{"apps": ["self"], "required": true, "topology": "zone"}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let now = chrono::Utc::now();
        let detail = ApplicationDetail {
            application: platform_core::model::Application {
                id: uuid::Uuid::nil(),
                tenant_id: uuid::Uuid::nil(),
                environment: "dev".into(),
                name: "web".into(),
                description: String::new(),
                current_revision: 1,
                released_revision: 1,
                run_state: platform_core::model::RunState::Running,
                scaled_replicas: None,
                created_at: now,
                updated_at: now,
                version: 7,
            },
            spec: spec.clone(),
        };
        let form = AppForm::from_detail(&detail);
        assert_eq!(form.spec().unwrap_or_else(|e| panic!("{e:?}")), spec);
    }
}
