//! Autoscaling as core logic: the policy tenant admins write, the calendar of its bands,
//! the decision function, the 7-day preview and the what-if replay. All pure; the
//! evaluator (`crate::autoscaler`) reads the metrics, applies the decisions and keeps
//! the ledger. Each runtime only converges to the count decided here.

pub mod decide;
pub mod policy;
pub mod preview;
pub mod schedule;

pub use decide::{Change, Clamp, Decision, Inputs, Reading, Recommended, RuleOutcome, decide};
pub use policy::{
    Band, Behavior, Compiled, Direction, LimitKind, Metric, Policy, RateLimit, Rule, Select, When,
};
pub use preview::{Preview, ReplayPoint, Sample, preview, what_if};
pub use schedule::Envelope;

#[cfg(test)]
mod tests;
