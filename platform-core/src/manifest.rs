//! Declarative application manifests: YAML documents that say what an application
//! should be. Applying the same manifest again has no further effect.
//!
//! ```yaml
//! apiVersion: paas/v1
//! kind: Application
//! metadata:
//!   name: web
//!   environment: dev
//!   description: The shop's front end
//! spec:
//!   command: python3
//!   args: ["-m", "http.server", "$PORT"]
//!   replicas: 2
//!   ports: [{name: http}]
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;
use crate::names::{AppName, EnvName, parse_description};
use crate::spec::AppSpec;

pub const API_VERSION: &str = "paas/v1";

/// The largest manifest accepted, in bytes.
pub const MAX_BYTES: usize = 256 * 1024;

/// The most documents a manifest may hold (empty documents included).
pub const MAX_DOCUMENTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: AppSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
    environment: String,
    #[serde(default)]
    description: String,
}

/// One parsed, valid application manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Which document of the stream it is (from 0, empty documents counted), for errors.
    pub document: usize,
    pub name: AppName,
    pub environment: EnvName,
    pub description: String,
    pub spec: AppSpec,
}

/// What applying one manifest did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Applied {
    pub environment: String,
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub outcome: &'static str,
    pub revision: i32,
}

/// Parses a stream of YAML documents. Errors name the document (from 0) and the field.
pub fn parse(text: &str) -> Result<Vec<Manifest>, FieldError> {
    if text.len() > MAX_BYTES {
        return Err(FieldError::new(
            "documents",
            format!("a manifest holds at most {} KiB", MAX_BYTES / 1024),
        ));
    }
    let mut manifests = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if i == MAX_DOCUMENTS {
            return Err(FieldError::new(
                "documents",
                format!("a manifest holds at most {MAX_DOCUMENTS} documents"),
            ));
        }
        let at = |field: &str| format!("documents[{i}].{field}");
        let value = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| FieldError::new(format!("documents[{i}]"), e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let raw: RawManifest = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "".to_owned() } else { path };
            let message = e.into_inner().to_string();
            // The spec's own validators say "field: message"; keep only the message.
            let message = message
                .split_once(": ")
                .filter(|(f, _)| field.ends_with(f))
                .map_or(message.clone(), |(_, m)| m.to_owned());
            if field.is_empty() {
                FieldError::new(format!("documents[{i}]"), message)
            } else {
                FieldError::new(at(&field), message)
            }
        })?;
        if raw.api_version != API_VERSION {
            return Err(FieldError::new(
                at("apiVersion"),
                format!("must be {API_VERSION}"),
            ));
        }
        if raw.kind != "Application" {
            return Err(FieldError::new(at("kind"), "must be Application"));
        }
        let spec = raw.spec;
        spec.validate()
            .map_err(|e| FieldError::new(at(&e.field), e.message))?;
        manifests.push(Manifest {
            document: i,
            name: AppName::parse(&raw.metadata.name)
                .map_err(|e| FieldError::new(at("metadata.name"), e.message))?,
            environment: EnvName::parse(&raw.metadata.environment)
                .map_err(|e| FieldError::new(at("metadata.environment"), e.message))?,
            description: parse_description(&raw.metadata.description)
                .map_err(|e| FieldError::new(at("metadata.description"), e.message))?,
            spec,
        });
    }
    if manifests.is_empty() {
        return Err(FieldError::new(
            "documents",
            "the manifest holds no application",
        ));
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: paas/v1\nkind: Application\nmetadata: {name: web, environment: dev}\nspec:\n  command: python3\n  replicas: 2\n";

    fn check_err(text: &str, field: &str) {
        let err = parse(text).err().unwrap_or_else(|| panic!("{text} parsed"));
        assert!(err.field.starts_with(field), "{text}: {err}");
    }

    #[test]
    fn documents_parse_into_validated_manifests() {
        let two = format!("{WEB}---\n{}", WEB.replace("name: web", "name: api"));
        let manifests = parse(&two).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web", "api"]);
        assert_eq!(manifests[0].spec.replicas, 2);
    }

    #[test]
    fn bad_manifests_name_the_document_and_field() {
        check_err(&WEB.replace("paas/v1", "v2"), "documents[0].apiVersion");
        check_err(
            &WEB.replace("kind: Application", "kind: Pod"),
            "documents[0].kind",
        );
        check_err(
            &WEB.replace("name: web", "name: Web"),
            "documents[0].metadata.name",
        );
        check_err(
            &WEB.replace("replicas: 2", "replicas: 500"),
            "documents[0].spec.replicas",
        );
        check_err(
            &format!(
                "{WEB}---\n{}",
                WEB.replace("command: python3", "command: ''")
            ),
            "documents[1].spec.command",
        );
        check_err("", "documents");
        check_err("key: [unclosed", "documents[0]");
        // A misfit key is named where it is, not blamed on the spec.
        check_err(
            &WEB.replace("environment: dev}", "environment: dev, colour: red}"),
            "documents[0].metadata",
        );
        check_err(
            &WEB.replace("kind: Application", "kind: Application\nextra: 1"),
            "documents[0]",
        );
        check_err(
            &WEB.replace("replicas: 2", "replicas: two"),
            "documents[0].spec.replicas",
        );
    }

    #[test]
    fn a_manifest_has_a_bounded_number_of_documents_and_size() {
        let many = vec![WEB; MAX_DOCUMENTS + 1].join("---\n");
        let err = parse(&many).err().unwrap_or_else(|| panic!("parsed"));
        assert_eq!(err.field, "documents");
        assert!(err.message.contains("100 documents"), "{err}");
        let empties = "---\n".repeat(MAX_DOCUMENTS + 1);
        assert!(parse(&empties).is_err());
        let big = format!("{WEB}# {}\n", "x".repeat(MAX_BYTES));
        let err = parse(&big).err().unwrap_or_else(|| panic!("parsed"));
        assert!(err.message.contains("256 KiB"), "{err}");
        // Documents carry their place in the stream, empty ones counted.
        let gap = format!("{WEB}---\n---\n{}", WEB.replace("name: web", "name: api"));
        let docs: Vec<usize> = parse(&gap)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|m| m.document)
            .collect();
        assert_eq!(docs, [0, 2]);
    }
}
