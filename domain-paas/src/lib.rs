//! Business-domain PaaS bundles: a named, versioned package of application templates,
//! the middleware they need from the service catalog, and default policies, released
//! independently of the core (FusionStage's "domain PaaS" layer).
//!
//! This crate defines the bundle manifest, its checks and the diff between two
//! versions; the bundles themselves are data (`bundles/`), compiled in (`catalog`).

pub mod catalog;
pub mod manifest;
