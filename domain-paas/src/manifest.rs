//! The bundle manifest: what a domain bundle contains and requires.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// A DNS-label name, e.g. `retail`.
    pub name: String,
    /// A semantic version, e.g. `1.2.0`.
    pub version: String,
    pub description: String,
    /// Application templates the bundle offers for one-click onboarding.
    #[serde(default)]
    pub templates: Vec<TemplateRef>,
    /// Catalog services the bundle's templates bind to, by service name and plan.
    #[serde(default)]
    pub requires: Vec<ServiceRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRequirement {
    pub service: String,
    pub plan: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("name '{0}' must be a DNS label (lowercase letters, digits, '-')")]
    BadName(String),
    #[error("version '{0}' must be MAJOR.MINOR.PATCH")]
    BadVersion(String),
    #[error("template '{0}' is listed twice")]
    DuplicateTemplate(String),
}

fn dns_label(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && !s.ends_with('-')
}

impl BundleManifest {
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !dns_label(&self.name) {
            return Err(ManifestError::BadName(self.name.clone()));
        }
        let parts: Vec<&str> = self.version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.parse::<u64>().is_err())
        {
            return Err(ManifestError::BadVersion(self.version.clone()));
        }
        let mut seen = HashSet::new();
        for t in &self.templates {
            if !dns_label(&t.name) {
                return Err(ManifestError::BadName(t.name.clone()));
            }
            if !seen.insert(t.name.as_str()) {
                return Err(ManifestError::DuplicateTemplate(t.name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: serde_json::Value, expected: Result<(), ManifestError>) {
        let manifest: BundleManifest =
            serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(manifest.validate(), expected, "{json}");
    }

    #[test]
    fn manifests_are_checked() {
        use serde_json::json;
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
                   "templates": [{"name": "shop", "description": "a"}, {"name": "shop", "description": "b"}]}),
            Err(ManifestError::DuplicateTemplate("shop".into())),
        );
    }
}
