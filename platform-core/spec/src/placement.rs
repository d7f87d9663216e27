//! Where an application's instances may and should run, as part of its spec: node
//! affinity over node labels, affinity and anti-affinity to instances of applications
//! of the same environment (its own included) over a topology, and topology spread.
//! Kubernetes' scheduling vocabulary, which both runtimes implement: the Kubernetes
//! driver renders it to `affinity` and `topologySpreadConstraints`, the local runtime's
//! placement (`platform_core::placement`) follows the same semantics.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// An application's placement rules; empty: anywhere with room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "NodeAffinity::is_empty")]
    pub node_affinity: NodeAffinity,
    /// Run near instances of these applications.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_affinity: Vec<AppTerm>,
    /// Stay away from instances of these applications (`self`: this application's
    /// own, e.g. one instance per node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_anti_affinity: Vec<AppTerm>,
    /// Spread the application's instances evenly over a topology.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<Spread>,
    /// How many instances must stay available while a node is drained. Without one,
    /// a drain starts each instance's replacement before it stops the instance (none
    /// may be down); with one, an instance whose replacement has no room may stop
    /// first while at least `min_available` others are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudget>,
}

/// A disruption budget: the instances a voluntary disruption (a node drain) keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisruptionBudget {
    /// At least this many instances stay ready (at most 100).
    #[schema(maximum = 100)]
    pub min_available: u32,
}

/// Node affinity: every `required` expression must hold of a node's labels; each
/// `preferred` term that holds adds its weight to the node's score.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<LabelExpr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred: Vec<PreferredNodeTerm>,
}

impl NodeAffinity {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty() && self.preferred.is_empty()
    }
}

/// A preferred node term: its expressions all hold, the node scores `weight` more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferredNodeTerm {
    #[schema(minimum = 1, maximum = 100)]
    pub weight: u32,
    #[serde(rename = "match")]
    pub expressions: Vec<LabelExpr>,
}

/// A condition on one node label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelExpr {
    pub key: String,
    pub operator: Operator,
    /// For `In` and `NotIn` one or more values; for `Gt` and `Lt` exactly one integer;
    /// none for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
            Self::Gt => "Gt",
            Self::Lt => "Lt",
        }
    }
}

impl LabelExpr {
    /// Whether the expression holds of a node with this label value (`None`: the
    /// node has no such label).
    pub fn holds(&self, value: Option<&str>) -> bool {
        let number = |v: &str| v.parse::<i64>().ok();
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            // Kubernetes: a node without the label satisfies NotIn.
            Operator::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(have), Some(bound)) = (
                    value.and_then(number),
                    self.values.first().and_then(|b| number(b)),
                ) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    have > bound
                } else {
                    have < bound
                }
            }
        }
    }

    /// The expression in words: `disk In (ssd, nvme)`.
    pub fn text(&self) -> String {
        match self.operator {
            Operator::Exists | Operator::DoesNotExist => {
                format!("{} {}", self.key, self.operator.as_str())
            }
            Operator::Gt | Operator::Lt => format!(
                "{} {} {}",
                self.key,
                if self.operator == Operator::Gt {
                    ">"
                } else {
                    "<"
                },
                self.values.first().map_or("", String::as_str)
            ),
            _ => format!(
                "{} {} ({})",
                self.key,
                self.operator.as_str(),
                self.values.join(", ")
            ),
        }
    }
}

/// Affinity or anti-affinity to the instances of some applications of the same tenant
/// and environment, over a topology: two instances are "together" when their nodes
/// share the topology's value (`node`: the same node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppTerm {
    /// Application names; `self` is this application. Either these or `selector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Or: the applications whose labels (`spec.labels`) include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// `node`, `zone`, or any node label.
    #[serde(default = "node_topology")]
    pub topology: String,
    /// A rule that must hold (else the instance is not placed); otherwise a
    /// preference of `weight`.
    #[serde(default)]
    pub required: bool,
    #[serde(default = "default_weight")]
    #[schema(minimum = 1, maximum = 100)]
    pub weight: u32,
}

fn node_topology() -> String {
    "node".to_owned()
}
fn default_weight() -> u32 {
    50
}

impl AppTerm {
    /// Whether the term names this application (`self`, or its own name).
    pub fn names_self(&self, own: &str) -> bool {
        self.apps.iter().any(|a| a == "self" || a == own)
    }

    /// What the term selects, in words: `cache or batch`, `applications labelled tier=db`.
    pub fn describe(&self) -> String {
        if self.selector.is_empty() {
            self.apps.join(" or ")
        } else {
            let labels: Vec<String> = self
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("applications labelled {}", labels.join(","))
        }
    }

    /// Whether an application with `labels` is selected by the term's selector.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Application labels (of `spec.labels`, and of an application term's selector): at
/// most 20, keys as Kubernetes allows (not the platform's own prefixes), values at most
/// 63 letters, digits, `-`, `_` and `.`.
pub fn check_labels(labels: &BTreeMap<String, String>, field: &str) -> Result<(), FieldError> {
    if labels.len() > 20 {
        return Err(FieldError::new(field, "at most 20 labels"));
    }
    for (k, v) in labels {
        let here = format!("{field}.{k}");
        label_key(k).map_err(|why| FieldError::new(here.clone(), why))?;
        if [
            "paas.dev/",
            "app.kubernetes.io/",
            "kubernetes.io/",
            "k8s.io/",
        ]
        .iter()
        .any(|p| k.starts_with(p) || k.contains(&format!(".{p}")))
        {
            return Err(FieldError::new(
                here,
                "is a prefix the platform keeps for itself",
            ));
        }
        let ok = v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())));
        if !ok {
            return Err(FieldError::new(
                here,
                "a label value is at most 63 letters, digits, -, _ and ., starting and ending with a letter or digit",
            ));
        }
    }
    Ok(())
}

/// Topology spread: the application's instances per topology value differ by at most
/// `max_skew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    #[serde(default = "node_topology")]
    pub topology: String,
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    pub max_skew: u32,
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnsatisfiable {
    /// An instance that would skew the spread further is not placed.
    #[default]
    DoNotSchedule,
    /// It is placed where it skews the spread least.
    ScheduleAnyway,
}

impl PlacementSpec {
    /// Whether the rules name applications other than `own` (by name or by labels):
    /// only then does placing it depend on where other applications run.
    pub fn names_others(&self, own: &str) -> bool {
        self.app_affinity
            .iter()
            .chain(&self.app_anti_affinity)
            .any(|t| !t.selector.is_empty() || t.apps.iter().any(|a| a != "self" && a != own))
    }

    /// Whether some application term selects by labels.
    pub fn selects_by_label(&self) -> bool {
        self.app_affinity
            .iter()
            .chain(&self.app_anti_affinity)
            .any(|t| !t.selector.is_empty())
    }

    /// The rules with each selector term naming the applications it selects among
    /// `labels` (every application of the environment by name, this one's included).
    pub fn resolved(&self, labels: &BTreeMap<String, BTreeMap<String, String>>) -> Self {
        let mut out = self.clone();
        for term in out
            .app_affinity
            .iter_mut()
            .chain(out.app_anti_affinity.iter_mut())
        {
            if !term.selector.is_empty() {
                term.apps = labels
                    .iter()
                    .filter(|(_, l)| term.selects(l))
                    .map(|(name, _)| name.clone())
                    .collect();
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks every rule, naming the field (under `field`, e.g. `spec.placement`).
    pub fn check(&self, field: &str) -> Result<(), FieldError> {
        let at = |rest: String| format!("{field}.{rest}");
        for (i, e) in self.node_affinity.required.iter().enumerate() {
            e.check(&at(format!("node_affinity.required[{i}]")))?;
        }
        for (i, t) in self.node_affinity.preferred.iter().enumerate() {
            let here = at(format!("node_affinity.preferred[{i}]"));
            weight(t.weight, &format!("{here}.weight"))?;
            if t.expressions.is_empty() {
                return Err(FieldError::new(
                    format!("{here}.match"),
                    "needs at least one expression",
                ));
            }
            for (j, e) in t.expressions.iter().enumerate() {
                e.check(&format!("{here}.match[{j}]"))?;
            }
        }
        for (name, terms) in [
            ("app_affinity", &self.app_affinity),
            ("app_anti_affinity", &self.app_anti_affinity),
        ] {
            for (i, t) in terms.iter().enumerate() {
                let here = at(format!("{name}[{i}]"));
                if !t.selector.is_empty() {
                    if !t.apps.is_empty() {
                        return Err(FieldError::new(
                            format!("{here}.selector"),
                            "give either apps or a selector, not both",
                        ));
                    }
                    check_labels(&t.selector, &format!("{here}.selector"))?;
                } else if t.apps.is_empty() || t.apps.len() > 20 {
                    return Err(FieldError::new(
                        format!("{here}.apps"),
                        "name 1 to 20 applications (or self), or give a selector",
                    ));
                }
                for (j, a) in t.apps.iter().enumerate() {
                    if a != "self" && crate::names::AppName::parse(a).is_err() {
                        return Err(FieldError::new(
                            format!("{here}.apps[{j}]"),
                            "must be an application name or self",
                        ));
                    }
                }
                topology(&t.topology, &format!("{here}.topology"))?;
                weight(t.weight, &format!("{here}.weight"))?;
            }
        }
        if let Some(b) = &self.disruption_budget
            && b.min_available > 100
        {
            return Err(FieldError::new(
                at("disruption_budget.min_available".to_owned()),
                "must be at most 100 (the most replicas an application has)",
            ));
        }
        let mut keys = BTreeSet::new();
        for (i, s) in self.spread.iter().enumerate() {
            let here = at(format!("spread[{i}]"));
            topology(&s.topology, &format!("{here}.topology"))?;
            if !(1..=1000).contains(&s.max_skew) {
                return Err(FieldError::new(
                    format!("{here}.max_skew"),
                    "must be between 1 and 1000",
                ));
            }
            if !keys.insert(s.topology.as_str()) {
                return Err(FieldError::new(
                    format!("{here}.topology"),
                    "spreads over this topology already",
                ));
            }
        }
        Ok(())
    }
}

fn weight(w: u32, field: &str) -> Result<(), FieldError> {
    if (1..=100).contains(&w) {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be between 1 and 100"))
    }
}

/// A node label key (as Kubernetes allows: an optional DNS prefix and `/`, then up to
/// 63 characters of letters, digits, `-`, `_` and `.`), or `node`.
fn topology(key: &str, field: &str) -> Result<(), FieldError> {
    label_key(key).map_err(|why| FieldError::new(field, why))
}

fn label_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be a node label key (letters, digits, -, _ and ., at most 63)".to_owned())
    }
}

impl LabelExpr {
    fn check(&self, field: &str) -> Result<(), FieldError> {
        label_key(&self.key).map_err(|why| FieldError::new(format!("{field}.key"), why))?;
        let values = format!("{field}.values");
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => Err(FieldError::new(
                values,
                format!("{} needs at least one value", self.operator.as_str()),
            )),
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                Err(FieldError::new(
                    values,
                    format!("{} takes no values", self.operator.as_str()),
                ))
            }
            Operator::Gt | Operator::Lt
                if self.values.len() != 1 || self.values[0].parse::<i64>().is_err() =>
            {
                Err(FieldError::new(
                    values,
                    format!("{} takes exactly one integer", self.operator.as_str()),
                ))
            }
            _ if self.values.len() > 64 => Err(FieldError::new(values, "at most 64 values")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: serde_json::Value) -> Result<(), String> {
        let spec: PlacementSpec =
            serde_json::from_value(value).map_err(|e| format!("parse: {e}"))?;
        spec.check("spec.placement").map_err(|e| e.field)
    }

    #[test]
    fn every_rule_is_checked_and_names_its_field() {
        assert_eq!(check(json!({})), Ok(()));
        assert_eq!(
            check(json!({
                "node_affinity": {
                    "required": [{"key": "disk", "operator": "In", "values": ["ssd"]}],
                    "preferred": [{"weight": 20, "match": [{"key": "cpus", "operator": "Gt", "values": ["8"]}]}]},
                "app_affinity": [{"apps": ["cache"], "topology": "zone"}, {"selector": {"tier": "db"}}],
                "app_anti_affinity": [{"apps": ["self"], "required": true}],
                "spread": [{"topology": "zone", "max_skew": 1, "when_unsatisfiable": "schedule_anyway"}],
                "disruption_budget": {"min_available": 2}
            })),
            Ok(())
        );
        let cases = [
            (
                json!({"node_affinity": {"required": [{"key": "disk", "operator": "In"}]}}),
                "spec.placement.node_affinity.required[0].values",
            ),
            (
                json!({"node_affinity": {"required": [{"key": "disk", "operator": "Exists", "values": ["x"]}]}}),
                "spec.placement.node_affinity.required[0].values",
            ),
            (
                json!({"node_affinity": {"required": [{"key": "cpus", "operator": "Gt", "values": ["many"]}]}}),
                "spec.placement.node_affinity.required[0].values",
            ),
            (
                json!({"node_affinity": {"required": [{"key": "-bad", "operator": "Exists"}]}}),
                "spec.placement.node_affinity.required[0].key",
            ),
            (
                json!({"node_affinity": {"preferred": [{"weight": 0, "match": [{"key": "a", "operator": "Exists"}]}]}}),
                "spec.placement.node_affinity.preferred[0].weight",
            ),
            (
                json!({"app_affinity": [{"apps": []}]}),
                "spec.placement.app_affinity[0].apps",
            ),
            (
                json!({"app_anti_affinity": [{"apps": ["Not A Name"]}]}),
                "spec.placement.app_anti_affinity[0].apps[0]",
            ),
            (
                json!({"spread": [{"topology": "zone", "max_skew": 0}]}),
                "spec.placement.spread[0].max_skew",
            ),
            (
                json!({"spread": [{"topology": "zone"}, {"topology": "zone"}]}),
                "spec.placement.spread[1].topology",
            ),
            (
                json!({"disruption_budget": {"min_available": 101}}),
                "spec.placement.disruption_budget.min_available",
            ),
            (
                json!({"app_affinity": [{"apps": ["cache"], "selector": {"tier": "cache"}}]}),
                "spec.placement.app_affinity[0].selector",
            ),
            (
                json!({"app_anti_affinity": [{"selector": {"paas.dev/app": "x"}}]}),
                "spec.placement.app_anti_affinity[0].selector.paas.dev/app",
            ),
            (
                json!({"app_anti_affinity": [{"selector": {"tier": "-bad"}}]}),
                "spec.placement.app_anti_affinity[0].selector.tier",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(check(value.clone()), Err(field.to_owned()), "{value}");
        }
        assert!(check(json!({"teleport": true})).is_err_and(|e| e.starts_with("parse")));
        assert!(
            check(json!({"disruption_budget": {"max_unavailable": 1}}))
                .is_err_and(|e| e.starts_with("parse"))
        );
    }

    #[test]
    fn a_selector_term_names_the_applications_whose_labels_it_matches() {
        let spec: PlacementSpec = serde_json::from_value(json!({
            "app_affinity": [{"selector": {"tier": "cache"}, "required": true}],
            "app_anti_affinity": [{"apps": ["batch"]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.selects_by_label());
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let apps = BTreeMap::from([
            (
                "redis".to_owned(),
                labels(&[("tier", "cache"), ("team", "a")]),
            ),
            ("memcached".to_owned(), labels(&[("tier", "cache")])),
            ("web".to_owned(), labels(&[("tier", "front")])),
            ("bare".to_owned(), BTreeMap::new()),
        ]);
        let resolved = spec.resolved(&apps);
        assert_eq!(resolved.app_affinity[0].apps, ["memcached", "redis"]);
        assert_eq!(
            resolved.app_anti_affinity[0].apps,
            ["batch"],
            "named terms stay"
        );
        assert_eq!(
            resolved.app_affinity[0].describe(),
            "applications labelled tier=cache"
        );
        // Nothing labelled so: the term names nothing.
        assert!(
            spec.resolved(&BTreeMap::new()).app_affinity[0]
                .apps
                .is_empty()
        );
        let mut errors = BTreeMap::new();
        errors.insert("tier".to_owned(), "x".repeat(64));
        assert!(check_labels(&errors, "spec.labels").is_err_and(|e| e.field == "spec.labels.tier"));
        let many: BTreeMap<String, String> =
            (0..21).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(check_labels(&many, "spec.labels").is_err_and(|e| e.field == "spec.labels"));
    }

    #[test]
    fn expressions_hold_as_kubernetes_defines_them() {
        let e = |operator, values: &[&str]| LabelExpr {
            key: "k".into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        use Operator::*;
        let cases = [
            (e(In, &["a", "b"]), Some("b"), true),
            (e(In, &["a"]), None, false),
            (e(NotIn, &["a"]), Some("b"), true),
            (e(NotIn, &["a"]), None, true),
            (e(NotIn, &["a"]), Some("a"), false),
            (e(Exists, &[]), Some(""), true),
            (e(DoesNotExist, &[]), Some("x"), false),
            (e(Gt, &["8"]), Some("16"), true),
            (e(Gt, &["8"]), Some("8"), false),
            (e(Lt, &["8"]), Some("4"), true),
            (e(Lt, &["8"]), Some("four"), false),
            (e(Gt, &["8"]), None, false),
        ];
        for (expr, value, holds) in cases {
            assert_eq!(expr.holds(value), holds, "{} of {value:?}", expr.text());
        }
    }

    #[test]
    fn rules_name_others_by_name_or_by_labels_but_not_by_self() {
        let names = |rules: serde_json::Value| {
            serde_json::from_value::<PlacementSpec>(rules)
                .expect("rules parse")
                .names_others("web")
        };
        let cases = [
            (json!({}), false),
            (
                json!({"app_anti_affinity": [{"apps": ["self"], "required": true}]}),
                false,
            ),
            (json!({"app_anti_affinity": [{"apps": ["web"]}]}), false),
            (
                json!({"spread": [{"topology": "zone", "max_skew": 1}]}),
                false,
            ),
            (json!({"app_affinity": [{"apps": ["cache"]}]}), true),
            (
                json!({"app_anti_affinity": [{"apps": ["self", "db"]}]}),
                true,
            ),
            (
                json!({"app_affinity": [{"selector": {"tier": "db"}}]}),
                true,
            ),
        ];
        for (rules, others) in cases {
            assert_eq!(names(rules.clone()), others, "{rules}");
        }
    }
}
