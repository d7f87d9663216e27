//! The bundles this release of the platform offers, each version a manifest of its
//! own (`bundles/<name>-<version>.json`), compiled in.

use crate::manifest::{BundleManifest, version_key};

const MANIFESTS: [&str; 3] = [
    include_str!("../bundles/retail-1.0.0.json"),
    include_str!("../bundles/retail-1.1.0.json"),
    include_str!("../bundles/starter-1.0.0.json"),
];

/// Every bundle version, by name and then version (oldest first), parsed once. A
/// manifest that does not parse or validate is left out (the tests below keep that
/// from happening).
pub fn all() -> &'static [BundleManifest] {
    static ALL: std::sync::OnceLock<Vec<BundleManifest>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut out: Vec<BundleManifest> = MANIFESTS
            .iter()
            .filter_map(|text| serde_json::from_str::<BundleManifest>(text).ok())
            .filter(|m| m.validate().is_ok())
            .collect();
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(version_key(&a.version).cmp(&version_key(&b.version)))
        });
        out
    })
}

/// One version of a bundle.
pub fn find(name: &str, version: &str) -> Option<BundleManifest> {
    all()
        .iter()
        .find(|m| m.name == name && m.version == version)
        .cloned()
}

/// The newest version of a bundle.
pub fn latest(name: &str) -> Option<BundleManifest> {
    all().iter().rfind(|m| m.name == name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_parses_and_validates() {
        for text in MANIFESTS {
            let m: BundleManifest =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("a manifest: {e}"));
            assert_eq!(m.validate(), Ok(()), "{}", m.name);
        }
        assert_eq!(all().len(), MANIFESTS.len());
        assert_eq!(latest("retail").map(|m| m.version), Some("1.1.0".into()));
        assert!(find("retail", "1.0.0").is_some());
        assert!(find("retail", "9.9.9").is_none());
    }

    #[test]
    fn retail_one_one_changes_the_cache_the_storefront_and_the_report() {
        use crate::manifest::{Change, diff};
        let (Some(from), Some(to)) = (find("retail", "1.0.0"), find("retail", "1.1.0")) else {
            panic!("retail 1.0.0 and 1.1.0 are shipped");
        };
        let d = diff(&from, &to);
        let changed: Vec<(&str, &str, &Change)> = d
            .iter()
            .filter(|c| c.change != Change::Unchanged)
            .map(|c| (c.kind, c.name.as_str(), &c.change))
            .collect();
        assert_eq!(
            changed,
            [
                (
                    "service",
                    "cache",
                    &Change::Changed(vec!["parameters.maxmemory_policy".into()])
                ),
                (
                    "application",
                    "daily-report",
                    &Change::Changed(vec!["schedule".into()])
                ),
                (
                    "application",
                    "storefront",
                    &Change::Changed(vec![
                        "autoscaling.max".into(),
                        "env.FEATURE_RECOMMENDATIONS".into(),
                        "env.RETAIL_VERSION".into(),
                        "replicas".into()
                    ])
                ),
                ("binding", "storefront → queue", &Change::Added),
            ]
        );
    }
}
