//! The vocabulary the control plane and the nodes share, with no storage behind it:
//! application specs and names, the package format, and how a workload and an
//! instance's phase are named. The node agent and the router depend on this crate and
//! not on the core (they run where there is no database).

use std::fmt;

pub mod names;
pub mod package;
pub mod placement;
pub mod secret;
pub mod spec;
pub mod workload;

/// A value supplied for a named field is not acceptable.
///
/// `field` is the path a client used (`name`, `spec.replicas`, `spec.env.PATH`) so that
/// both the API body and the console's inline messages can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same complaint about a value the caller knows under another name.
    #[must_use]
    pub fn for_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Nests the field under a parent, e.g. `replicas` under `spec`.
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}
