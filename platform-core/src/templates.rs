//! One-click onboarding templates: ready-made application specs a developer deploys
//! with one click, each with sensible defaults for the local runtime. They are the
//! applications of the `starter` bundle (`domain-paas`), offered one by one here and
//! installable together like any bundle.

use crate::spec::AppSpec;

/// The bundle whose applications are the templates.
pub const BUNDLE: &str = "starter";

/// A template as the onboarding page shows it.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub title: String,
    pub description: String,
    /// The name the application gets unless the developer picks another.
    pub default_name: String,
    pub spec: AppSpec,
}

/// Every template, in the order the onboarding page shows them (the bundle's order).
/// An application of the bundle whose spec does not parse is left out; the tests
/// below keep that from happening.
pub fn all() -> Vec<Template> {
    domain_paas::catalog::latest(BUNDLE)
        .map(|bundle| bundle.applications)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| {
            Some(Template {
                id: a.template?,
                title: a.title.unwrap_or_else(|| a.name.clone()),
                spec: serde_json::from_value(a.spec).ok()?,
                description: a.description,
                default_name: a.name,
            })
        })
        .collect()
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
                crate::names::AppName::parse(&t.default_name).is_ok(),
                "{}",
                t.id
            );
        }
        assert_eq!(all().len(), 5);
        assert!(find("hello-http").is_some());
        assert!(find("nope").is_none());
    }
}
