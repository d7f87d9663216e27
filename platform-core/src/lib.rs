//! The business-agnostic core of the PaaS: tenants, users and roles, environments,
//! applications and their immutable revisions, authentication, authorization and the
//! append-only audit log.
//!
//! Nothing here knows HTTP, HTML or JSON wire shapes (that is `console`), and only the
//! [`store`] module writes SQL. Every tenant-scoped operation takes a [`authz::TenantAccess`],
//! which only [`Platform::tenant`] can build: tenant isolation is enforced here, by type.

pub mod auth;
pub mod authz;
pub mod autoscaler;
pub mod autoscaling;
pub mod bootstrap;
pub mod conditions;
pub mod drain;
pub mod error;
pub mod manifest;
pub mod model;
pub mod placement;
pub mod platform;
pub mod quota;
pub mod reconciler;
pub mod releases;
pub mod runtime;
pub mod sealing;
pub mod services;
pub mod store;
pub mod templates;

pub use error::{CoreError, FieldError};
pub use platform::Platform;
/// The placement vocabulary of specs (`platform_core::placement` is the engine).
pub use platform_spec::placement as placement_spec;
pub use platform_spec::{names, package, spec};
