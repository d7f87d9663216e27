//! The application spec: what a revision holds. Specs are immutable once stored; every
//! change makes a new revision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;
use crate::placement::PlacementSpec;

/// How an application runs (the Kubernetes workload kinds the platform offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// Stateless and long-running, any number of interchangeable replicas.
    #[default]
    Service,
    /// Ordinal replicas with a stable identity and data directory each.
    Stateful,
    /// Runs to completion.
    Job,
    /// Runs to completion on a schedule.
    Cronjob,
    /// One replica on every node.
    Daemon,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 5] = [
        Self::Service,
        Self::Stateful,
        Self::Job,
        Self::Cronjob,
        Self::Daemon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Stateful => "stateful",
            Self::Job => "job",
            Self::Cronjob => "cronjob",
            Self::Daemon => "daemon",
        }
    }

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .ok_or_else(|| {
                FieldError::new(
                    "kind",
                    "must be one of service, stateful, job, cronjob, daemon",
                )
            })
    }
}

/// CPU and memory for one instance. CPU in millicores, memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpu")]
    #[schema(minimum = 10, maximum = 64000)]
    pub cpu_millis: u32,
    #[serde(default = "default_memory")]
    #[schema(minimum = 16, maximum = 262144)]
    pub memory_mib: u32,
}

/// Hard ceilings for one instance. Unset means no ceiling on the local runtime; on
/// Kubernetes the memory ceiling defaults to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At least `resources.cpu_millis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 64000)]
    pub cpu_millis: Option<u32>,
    /// At least `resources.memory_mib`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 262144)]
    pub memory_mib: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_mib.is_none()
    }
}

fn default_cpu() -> u32 {
    100
}

fn default_memory() -> u32 {
    128
}

fn default_replicas() -> u32 {
    1
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_millis: default_cpu(),
            memory_mib: default_memory(),
        }
    }
}

/// A port the application listens on. The runtime picks the number and passes it in
/// `PORT` (the first port) and `PORT_<NAME>` (every port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Unique among the application's ports.
    #[serde(default = "default_port_name")]
    #[schema(min_length = 1, max_length = 15, pattern = "^[a-z0-9-]+$")]
    pub name: String,
    /// `http` ports are routed by the platform's router; `tcp` ports are not.
    #[serde(default)]
    pub protocol: PortProtocol,
}

fn default_port_name() -> String {
    "http".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum PortProtocol {
    #[default]
    Http,
    Tcp,
}

/// A health check: an HTTP GET of `http_path` (2xx or 3xx passes) or, without a path, a
/// TCP connect to the first port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(default)]
    #[schema(max_length = 512, pattern = "^/[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub http_path: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600000)]
    pub initial_delay_ms: u32,
    #[serde(default = "default_period")]
    #[schema(minimum = 50, maximum = 300000)]
    pub period_ms: u32,
    #[serde(default = "default_timeout")]
    #[schema(minimum = 10, maximum = 60000)]
    pub timeout_ms: u32,
    #[serde(default = "default_failures")]
    #[schema(minimum = 1, maximum = 100)]
    pub failure_threshold: u32,
    #[serde(default = "default_successes")]
    #[schema(minimum = 1, maximum = 100)]
    pub success_threshold: u32,
}

fn default_period() -> u32 {
    1000
}
fn default_timeout() -> u32 {
    1000
}
fn default_failures() -> u32 {
    3
}
fn default_successes() -> u32 {
    1
}

impl CheckSpec {
    fn check(&self, field: &str) -> Result<(), FieldError> {
        if let Some(path) = &self.http_path
            && (!path.starts_with('/')
                || path.chars().count() > 512
                || path.chars().any(char::is_control))
        {
            return Err(FieldError::new(
                format!("{field}.http_path"),
                "must be a path starting with '/'",
            ));
        }
        if !(50..=300_000).contains(&self.period_ms) {
            return Err(FieldError::new(
                format!("{field}.period_ms"),
                "must be between 50 and 300000",
            ));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(FieldError::new(
                format!("{field}.timeout_ms"),
                "must be between 10 and 60000",
            ));
        }
        if self.initial_delay_ms > 3_600_000 {
            return Err(FieldError::new(
                format!("{field}.initial_delay_ms"),
                "must be at most 3600000",
            ));
        }
        if !(1..=100).contains(&self.failure_threshold)
            || !(1..=100).contains(&self.success_threshold)
        {
            return Err(FieldError::new(
                field.to_owned(),
                "thresholds must be between 1 and 100",
            ));
        }
        Ok(())
    }
}

/// Readiness decides whether an instance gets traffic; liveness whether it is restarted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default)]
    pub readiness: Option<CheckSpec>,
    #[serde(default)]
    pub liveness: Option<CheckSpec>,
}

/// The desired shape of an application, as stored in a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    #[serde(default)]
    pub kind: WorkloadKind,
    /// The program to run (a path or a name on the node's PATH; on Kubernetes, the
    /// container's entrypoint, or the image's own when empty). The local runtime
    /// needs it.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    pub command: String,
    /// The container image, e.g. `registry.example.com/shop/web:1.4.2` (ideally by
    /// digest). Kubernetes needs it; the local runtime ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub image: Option<String>,
    /// Each at most 4096 characters, with no NUL.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub args: Vec<String>,
    /// An uploaded package archive (`sha256:<hex>`) unpacked into the instance's
    /// working directory before the command starts; a relative command (`./run.sh`)
    /// is found there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub package: Option<String>,
    /// Names use letters, digits and '_' and do not start with a digit (at most 256
    /// characters); values are at most 8192 characters with no NUL.
    #[serde(default)]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// At most 1 for a daemon.
    #[serde(default = "default_replicas")]
    #[schema(minimum = 0, maximum = 100)]
    pub replicas: u32,
    /// What an instance is guaranteed (placement counts these).
    #[serde(default)]
    pub resources: Resources,
    /// What an instance may never exceed (cgroups on the local runtime when the node
    /// has them).
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// A cron expression; required for `cronjob`, refused for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Ports the application listens on; the first `http` port is routed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 8)]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "HealthSpec::is_empty")]
    pub health: HealthSpec,
    /// Where instances may and should run: node affinity, affinity and anti-affinity
    /// to applications of the environment, topology spread.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_empty")]
    pub placement: PlacementSpec,
    /// Labels other applications' placement rules select this one by (an application
    /// term's `selector`); on Kubernetes its pods carry them too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Only for `stateful`: the size of each ordinal's data directory, its working
    /// directory, which outlives restarts and revisions and goes with the application.
    /// On Kubernetes, the volume each ordinal claims (1024 MiB unless set); on the
    /// local runtime, a directory on its node's disk, not limited. It cannot change
    /// once the application exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 64, maximum = 1048576)]
    pub storage_mib: Option<u32>,
}

/// The schema of `env`, from the bounds [`AppSpec::validate`] checks.
fn env_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(AppSpec::MAX_ENV_VALUE_CHARS))
        .pattern(Some("^[^\\u0000]*$"))
        .build();
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(AppSpec::MAX_ENV_NAME_CHARS))
        .pattern(Some(ENV_NAME_PATTERN))
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(AppSpec::MAX_ENV))
        .property_names(Some(name))
        .additional_properties(Some(utoipa::openapi::schema::Schema::Object(value)))
        .description(Some(
            "Environment variables: names use letters, digits and '_' and do not start with a digit",
        ))
        .build()
}

/// What an environment variable's name must match.
const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

impl HealthSpec {
    pub fn is_empty(&self) -> bool {
        self.readiness.is_none() && self.liveness.is_none()
    }
}

impl AppSpec {
    pub const MAX_REPLICAS: u32 = 100;
    pub const MAX_ARGS: usize = 64;
    pub const MAX_ENV: usize = 128;
    pub const MAX_ENV_NAME_CHARS: usize = 256;
    pub const MAX_ENV_VALUE_CHARS: usize = 8192;

    /// Checks every field, reporting the first problem with its path under `spec.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.check().map_err(|e| e.under("spec"))
    }

    /// The size of a stateful ordinal's data directory, where it has one.
    pub fn storage(&self) -> Option<u32> {
        (self.kind == WorkloadKind::Stateful)
            .then(|| self.storage_mib.unwrap_or(Self::DEFAULT_STORAGE_MIB))
    }

    pub const DEFAULT_STORAGE_MIB: u32 = 1024;

    /// Checks what may not change from `current` to this spec: a stateful
    /// application's storage (its ordinals' volumes keep the size they were made with).
    pub fn check_change_from(&self, current: &Self) -> Result<(), FieldError> {
        if let (Some(was), Some(now)) = (current.storage(), self.storage())
            && was != now
        {
            return Err(FieldError::new(
                "spec.storage_mib",
                format!(
                    "cannot change once the application exists (its ordinals' data directories were made with {was} MiB)"
                ),
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), FieldError> {
        self.placement.check("placement")?;
        crate::placement::check_labels(&self.labels, "labels")?;
        let command = self.command.trim();
        if command.is_empty() && self.image.is_none() {
            return Err(FieldError::new(
                "command",
                "must not be empty (unless an image gives the entrypoint)",
            ));
        }
        if let Some(image) = &self.image
            && (image.chars().count() > 512 || !is_image_reference(image))
        {
            return Err(FieldError::new(
                "image",
                "must be an image reference like 'registry/name:tag' or 'name@sha256:...'",
            ));
        }
        if self.command.chars().count() > 1024 || command.contains('\0') {
            return Err(FieldError::new(
                "command",
                "must be at most 1024 characters with no NUL",
            ));
        }
        if let Some(package) = &self.package
            && !crate::package::is_digest(package)
        {
            return Err(FieldError::new(
                "package",
                "must be a package digest 'sha256:<64 hex digits>' as returned by the upload",
            ));
        }
        if self.args.len() > Self::MAX_ARGS {
            return Err(FieldError::new(
                "args",
                format!("must have at most {} entries", Self::MAX_ARGS),
            ));
        }
        if let Some(i) = self
            .args
            .iter()
            .position(|a| a.chars().count() > 4096 || a.contains('\0'))
        {
            return Err(FieldError::new(
                format!("args[{i}]"),
                "must be at most 4096 characters with no NUL",
            ));
        }
        if self.env.len() > Self::MAX_ENV {
            return Err(FieldError::new(
                "env",
                format!("must have at most {} variables", Self::MAX_ENV),
            ));
        }
        for (key, value) in &self.env {
            if !is_env_key(key) {
                return Err(FieldError::new(
                    format!("env.{key}"),
                    "variable names use letters, digits and '_' and do not start with a digit",
                ));
            }
            if value.chars().count() > Self::MAX_ENV_VALUE_CHARS || value.contains('\0') {
                return Err(FieldError::new(
                    format!("env.{key}"),
                    "must be at most 8192 characters with no NUL",
                ));
            }
        }
        let max_replicas = if self.kind == WorkloadKind::Daemon {
            1
        } else {
            Self::MAX_REPLICAS
        };
        if self.replicas > max_replicas {
            return Err(FieldError::new(
                "replicas",
                format!("must be between 0 and {max_replicas}"),
            ));
        }
        if !(10..=64_000).contains(&self.resources.cpu_millis) {
            return Err(FieldError::new(
                "resources.cpu_millis",
                "must be between 10 and 64000",
            ));
        }
        if !(16..=262_144).contains(&self.resources.memory_mib) {
            return Err(FieldError::new(
                "resources.memory_mib",
                "must be between 16 and 262144",
            ));
        }
        if let Some(cpu) = self.limits.cpu_millis
            && !(self.resources.cpu_millis..=64_000).contains(&cpu)
        {
            return Err(FieldError::new(
                "limits.cpu_millis",
                "must be at least resources.cpu_millis and at most 64000",
            ));
        }
        if let Some(memory) = self.limits.memory_mib
            && !(self.resources.memory_mib..=262_144).contains(&memory)
        {
            return Err(FieldError::new(
                "limits.memory_mib",
                "must be at least resources.memory_mib and at most 262144",
            ));
        }
        if let Some(storage) = self.storage_mib {
            if self.kind != WorkloadKind::Stateful {
                return Err(FieldError::new(
                    "storage_mib",
                    "only a stateful application has a data directory to size",
                ));
            }
            if !(64..=1_048_576).contains(&storage) {
                return Err(FieldError::new(
                    "storage_mib",
                    "must be between 64 and 1048576",
                ));
            }
        }
        if self.ports.len() > 8 {
            return Err(FieldError::new("ports", "must have at most 8 entries"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let ok = !port.name.is_empty()
                && port.name.len() <= 15
                && port
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(FieldError::new(
                    format!("ports[{i}].name"),
                    "must be 1 to 15 lowercase letters, digits or '-'",
                ));
            }
            if !names.insert(port.name.as_str()) {
                return Err(FieldError::new(format!("ports[{i}].name"), "is used twice"));
            }
        }
        for (name, check) in [
            ("health.readiness", &self.health.readiness),
            ("health.liveness", &self.health.liveness),
        ] {
            if let Some(check) = check {
                check.check(name)?;
                if self.ports.is_empty() {
                    return Err(FieldError::new(name, "needs a port to check"));
                }
            }
        }
        match (self.kind, &self.schedule) {
            (WorkloadKind::Cronjob, None) => {
                return Err(FieldError::new("schedule", "is required for a cronjob"));
            }
            (WorkloadKind::Cronjob, Some(s)) => check_cron(s)?,
            (_, Some(_)) => {
                return Err(FieldError::new("schedule", "is only allowed for a cronjob"));
            }
            (_, None) => {}
        }
        Ok(())
    }
}

/// An OCI image reference: `[registry/]name[:tag][@digest]`, lowercase path parts.
fn is_image_reference(image: &str) -> bool {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg.bytes().all(|b| b.is_ascii_alphanumeric())
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
    });
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        (1..=128).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && !t.starts_with(['.', '-'])
    });
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or("");
    let registry_like = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    let name_ok = !name.is_empty()
        && name.split('/').enumerate().all(|(i, part)| {
            if i == 0 && registry_like {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
            } else {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
                    && part
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphanumeric())
            }
        });
    image.len() <= 512 && digest_ok && tag_ok && name_ok
}

fn is_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok
        && key.len() <= AppSpec::MAX_ENV_NAME_CHARS
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A cron expression with seconds, the form the scheduler reads: five-field (classic)
/// expressions run at second 0.
pub fn normalized_schedule(expr: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() == 5 {
        format!("0 {}", fields.join(" "))
    } else {
        fields.join(" ")
    }
}

/// The parser the local scheduler uses (seconds required, day-of-month and day-of-week
/// both matched), so a schedule that validates is one that runs.
pub fn parse_schedule(expr: &str) -> Result<croner::Cron, FieldError> {
    let fields = expr.split_whitespace().count();
    let invalid = |why: String| {
        FieldError::new(
            "schedule",
            format!("must be a cron expression of 5 or 6 fields, e.g. '*/5 * * * *' ({why})"),
        )
    };
    if !matches!(fields, 5 | 6) || expr.len() > 200 {
        return Err(invalid(format!("{fields} fields")));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&normalized_schedule(expr))
        .map_err(|e| invalid(e.to_string()))
}

fn check_cron(expr: &str) -> Result<(), FieldError> {
    parse_schedule(expr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_states_the_bounds_the_validator_checks() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(AppSpec::schema()).unwrap_or_default();
        let props = &schema["properties"];
        assert_eq!(props["replicas"]["maximum"], AppSpec::MAX_REPLICAS);
        assert_eq!(props["args"]["maxItems"], AppSpec::MAX_ARGS);
        assert_eq!(props["env"]["maxProperties"], AppSpec::MAX_ENV);
        // Every bound the schema states is one the validator holds: the value at the
        // bound passes, the one past it is refused.
        let base = || serde_json::json!({"command": "x", "ports": [{"name": "http"}]});
        let at = |path: &[&str], value: serde_json::Value| {
            let mut json = base();
            let mut target = &mut json;
            for key in &path[..path.len() - 1] {
                target = &mut target[*key];
            }
            target[path[path.len() - 1]] = value;
            spec(json).validate().is_ok()
        };
        for (path, min, max) in [
            (&["replicas"][..], 0, 100),
            (&["resources", "cpu_millis"][..], 10, 64_000),
            (&["resources", "memory_mib"][..], 16, 262_144),
            (&["health", "readiness", "period_ms"][..], 50, 300_000),
            (&["health", "readiness", "timeout_ms"][..], 10, 60_000),
            (
                &["health", "readiness", "initial_delay_ms"][..],
                0,
                3_600_000,
            ),
            (&["health", "readiness", "failure_threshold"][..], 1, 100),
        ] {
            assert!(at(path, min.into()) && at(path, max.into()), "{path:?}");
            assert!(!at(path, (max + 1).into()), "{path:?} above {max}");
            if min > 0 {
                assert!(!at(path, (min - 1).into()), "{path:?} below {min}");
            }
        }
    }

    fn spec(json: serde_json::Value) -> AppSpec {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("spec does not parse: {e}"))
    }

    fn check(json: serde_json::Value, expected: Result<(), (&str, &str)>) {
        let got = spec(json.clone())
            .validate()
            .map_err(|e| (e.field, e.message));
        let expected = expected.map_err(|(f, m)| (f.to_owned(), m.to_owned()));
        assert_eq!(got, expected, "spec {json}");
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let s = spec(serde_json::json!({"command": "python3"}));
        assert_eq!(s.kind, WorkloadKind::Service);
        assert_eq!(s.replicas, 1);
        assert_eq!(
            s.resources,
            Resources {
                cpu_millis: 100,
                memory_mib: 128
            }
        );
    }

    #[test]
    fn invalid_specs_name_the_field() {
        use serde_json::json;
        check(json!({"command": "web"}), Ok(()));
        check(
            json!({"command": "  "}),
            Err((
                "spec.command",
                "must not be empty (unless an image gives the entrypoint)",
            )),
        );
        check(json!({"image": "nginx:1.27"}), Ok(()));
        check(
            json!({"image": "registry.example.com:5000/shop/web@sha256:0123456789abcdef0123456789abcdef"}),
            Ok(()),
        );
        for bad in [
            "Nginx",
            "nginx:",
            "a b",
            "nginx@sha256:xyz",
            "/nginx",
            "nginx:-x",
        ] {
            let got = spec(json!({"image": bad})).validate();
            assert!(
                got.as_ref().is_err_and(|e| e.field == "spec.image"),
                "{bad}: {got:?}"
            );
        }
        check(
            json!({"command": "web", "replicas": 101}),
            Err(("spec.replicas", "must be between 0 and 100")),
        );
        check(
            json!({"command": "web", "kind": "daemon", "replicas": 2}),
            Err(("spec.replicas", "must be between 0 and 1")),
        );
        check(
            json!({"command": "web", "env": {"1BAD": "x"}}),
            Err((
                "spec.env.1BAD",
                "variable names use letters, digits and '_' and do not start with a digit",
            )),
        );
        check(
            json!({"command": "web", "kind": "cronjob"}),
            Err(("spec.schedule", "is required for a cronjob")),
        );
        check(
            json!({"command": "web", "kind": "cronjob", "schedule": "0 * * * *"}),
            Ok(()),
        );
        check(
            json!({"command": "web", "kind": "cronjob", "schedule": "*/2 * * * * *"}),
            Ok(()),
        );
        for bad in ["* * *", "61 * * * *", "every minute", "* * * * * * * *"] {
            let got =
                spec(json!({"command": "web", "kind": "cronjob", "schedule": bad})).validate();
            assert!(
                got.as_ref().is_err_and(|e| e.field == "spec.schedule"),
                "{bad}: {got:?}"
            );
        }
        check(
            json!({"command": "web", "schedule": "0 * * * *"}),
            Err(("spec.schedule", "is only allowed for a cronjob")),
        );
        check(
            json!({"command": "web", "resources": {"memory_mib": 64}, "limits": {"memory_mib": 32}}),
            Err((
                "spec.limits.memory_mib",
                "must be at least resources.memory_mib and at most 262144",
            )),
        );
        check(
            json!({"command": "web", "limits": {"cpu_millis": 500, "memory_mib": 256}}),
            Ok(()),
        );
        check(
            json!({"command": "web", "resources": {"cpu_millis": 1}}),
            Err(("spec.resources.cpu_millis", "must be between 10 and 64000")),
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_value::<AppSpec>(serde_json::json!({"command": "x", "replica": 3}));
        assert!(err.is_err());
    }
}
