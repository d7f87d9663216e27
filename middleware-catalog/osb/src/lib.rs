//! The Open Service Broker API v2.17 as both sides speak it: the platform (a client of
//! every broker, in the core) and the brokers (servers, in `middleware-catalog/`).
//! Nothing here does I/O; the crate is the contract, so that neither side links the
//! other.
//!
//! - [`catalog`]: what a broker offers (`GET /v2/catalog`) and the specification's
//!   checks on it.
//! - [`wire`]: the bodies of provisioning, updating, binding, polling and errors.
//! - [`outcome`]: how the platform reads an answer (or its absence), including the
//!   specification's orphan-mitigation table.

pub mod catalog;
pub mod outcome;
pub mod wire;

pub use catalog::{Catalog, CatalogError, Plan, Service};

/// The API version both sides speak, sent as `X-Broker-API-Version`.
pub const API_VERSION: &str = "2.17";
/// The header that carries it.
pub const VERSION_HEADER: &str = "X-Broker-API-Version";
