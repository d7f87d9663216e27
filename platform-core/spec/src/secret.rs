//! A secret's value as it travels to the instance that uses it.

use std::fmt;

/// A secret's value: it can be handed on (to the instance that needs it), never
/// printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that hands it to an instance.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
