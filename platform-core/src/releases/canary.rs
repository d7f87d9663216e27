//! The canary strategy, pure: its steps (a traffic weight or an instance count, each
//! with a pause) turned into the two revisions' instance counts and the router's
//! weight, and the automated analysis that compares the canary with the stable
//! revision at each step.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// One step of a canary release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryStep {
    /// Percent of the traffic the canary gets (the local router splits by exact weight;
    /// Kubernetes approximates it by the ratio of instances).
    #[serde(default)]
    #[schema(maximum = 100)]
    pub weight: Option<u32>,
    /// Or: this many canary instances, traffic spread over all instances.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub instances: Option<u32>,
    /// How long the step runs (and is analysed) before the next; none: it waits for a
    /// person's "continue".
    #[serde(default)]
    #[schema(maximum = 86400)]
    pub pause_s: Option<u32>,
}

/// Thresholds of the automated analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Seconds between checks.
    #[serde(default = "interval")]
    #[schema(minimum = 1, maximum = 3600)]
    pub interval_s: u32,
    /// The canary fails a check when its error rate exceeds the stable revision's by
    /// more than this (a fraction: 0.01 is one percentage point).
    #[serde(default = "error_margin")]
    pub max_error_rate_increase: f64,
    /// ... or when its p99 exceeds the stable revision's by more than this factor.
    #[serde(default = "latency_factor")]
    pub max_p99_ratio: f64,
    /// Fewer requests than this in an interval: no verdict (neither pass nor fail).
    #[serde(default = "min_requests")]
    pub min_requests: u64,
    /// How many failed checks are tolerated before the release is rolled back.
    #[serde(default)]
    pub failures_tolerated: u32,
}

fn interval() -> u32 {
    10
}
fn error_margin() -> f64 {
    0.01
}
fn latency_factor() -> f64 {
    1.5
}
fn min_requests() -> u64 {
    20
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval_s: interval(),
            max_error_rate_increase: error_margin(),
            max_p99_ratio: latency_factor(),
            min_requests: min_requests(),
            failures_tolerated: 0,
        }
    }
}

/// Checks a canary's steps: each a weight from 0 to 100 or an instance count, not both,
/// weights rising.
pub fn check_steps(steps: &[CanaryStep]) -> Result<(), FieldError> {
    if steps.is_empty() || steps.len() > 20 {
        return Err(FieldError::new("strategy.steps", "must hold 1 to 20 steps"));
    }
    let mut last_weight = 0;
    for (i, s) in steps.iter().enumerate() {
        let at = |f: &str| format!("strategy.steps[{i}]{f}");
        match (s.weight, s.instances) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(FieldError::new(at(""), "give either weight or instances"));
            }
            (Some(w), None) if w > 100 => {
                return Err(FieldError::new(at(".weight"), "must be between 0 and 100"));
            }
            (Some(w), None) if w < last_weight => {
                return Err(FieldError::new(
                    at(".weight"),
                    "weights must not fall from step to step",
                ));
            }
            (Some(w), None) => last_weight = w,
            (None, Some(0)) => return Err(FieldError::new(at(".instances"), "must be at least 1")),
            (None, Some(_)) => {}
        }
    }
    Ok(())
}

/// What a step asks of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Instances of the canary (the target revision).
    pub canary: u32,
    /// Instances of the stable revision; never fewer than the replica count while the
    /// canary runs (the stable revision is not touched until promotion).
    pub stable: u32,
    /// Percent of the traffic the router sends to the canary (`None`: by instances).
    pub weight: Option<u32>,
}

/// The shape of step `step` for `replicas`. A weighted step runs as many canary
/// instances as its share of the replicas needs (at least one); the stable revision
/// keeps its full count throughout, so an abort touches nothing of it.
pub fn shape(step: &CanaryStep, replicas: u32) -> Shape {
    match (step.weight, step.instances) {
        (Some(w), _) => Shape {
            canary: (u64::from(replicas) * u64::from(w)).div_ceil(100).max(1) as u32,
            stable: replicas,
            weight: Some(w),
        },
        (None, Some(n)) => Shape {
            canary: n,
            stable: replicas,
            weight: None,
        },
        (None, None) => Shape {
            canary: 0,
            stable: replicas,
            weight: Some(0),
        },
    }
}

/// One revision's traffic over an analysis interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    pub requests: u64,
    pub errors: u64,
    /// `None` when no request came.
    pub p99_ms: Option<f64>,
}

impl Sample {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A check's verdict, with its reason in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass { reason: String },
    Fail { reason: String },
    Inconclusive { reason: String },
}

/// Compares the canary with the stable revision over one interval.
pub fn analyse(analysis: &Analysis, canary: &Sample, stable: &Sample) -> Verdict {
    if canary.requests < analysis.min_requests {
        return Verdict::Inconclusive {
            reason: format!(
                "the canary had {} requests, fewer than the {} a verdict needs",
                canary.requests, analysis.min_requests
            ),
        };
    }
    let (c, s) = (canary.error_rate(), stable.error_rate());
    if c > s + analysis.max_error_rate_increase {
        return Verdict::Fail {
            reason: format!(
                "error rate {:.2}% against the stable revision's {:.2}% (at most {:.2} points more)",
                c * 100.0,
                s * 100.0,
                analysis.max_error_rate_increase * 100.0
            ),
        };
    }
    if let (Some(cp), Some(sp)) = (canary.p99_ms, stable.p99_ms)
        && sp > 0.0
        && cp > sp * analysis.max_p99_ratio
    {
        return Verdict::Fail {
            reason: format!(
                "p99 {cp:.1} ms against the stable revision's {sp:.1} ms (at most {}×)",
                analysis.max_p99_ratio
            ),
        };
    }
    Verdict::Pass {
        reason: format!("error rate {:.2}% (stable {:.2}%)", c * 100.0, s * 100.0),
    }
}

/// Whether the failed checks so far call for a rollback.
pub fn must_roll_back(analysis: &Analysis, verdicts: &[Verdict]) -> bool {
    let failed = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Fail { .. }))
        .count();
    failed > analysis.failures_tolerated as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(w: u32) -> CanaryStep {
        CanaryStep {
            weight: Some(w),
            instances: None,
            pause_s: Some(60),
        }
    }

    #[test]
    fn steps_become_instance_counts_and_weights_and_the_stable_revision_keeps_its_count() {
        let cases = [
            (
                weight(10),
                4,
                Shape {
                    canary: 1,
                    stable: 4,
                    weight: Some(10),
                },
            ),
            (
                weight(50),
                4,
                Shape {
                    canary: 2,
                    stable: 4,
                    weight: Some(50),
                },
            ),
            (
                weight(100),
                3,
                Shape {
                    canary: 3,
                    stable: 3,
                    weight: Some(100),
                },
            ),
            (
                weight(1),
                1,
                Shape {
                    canary: 1,
                    stable: 1,
                    weight: Some(1),
                },
            ),
            (
                CanaryStep {
                    weight: None,
                    instances: Some(2),
                    pause_s: None,
                },
                5,
                Shape {
                    canary: 2,
                    stable: 5,
                    weight: None,
                },
            ),
        ];
        for (step, replicas, expected) in cases {
            assert_eq!(shape(&step, replicas), expected, "{step:?} of {replicas}");
        }
        assert!(check_steps(&[weight(10), weight(50), weight(100)]).is_ok());
        let falling = check_steps(&[weight(50), weight(10)])
            .err()
            .map(|e| e.field);
        assert_eq!(falling.as_deref(), Some("strategy.steps[1].weight"));
        let both = CanaryStep {
            weight: Some(5),
            instances: Some(1),
            pause_s: None,
        };
        assert_eq!(
            check_steps(&[both]).err().map(|e| e.field).as_deref(),
            Some("strategy.steps[0]")
        );
        assert!(check_steps(&[]).is_err());
    }

    #[test]
    fn a_canary_failing_one_request_in_five_fails_its_checks_and_rolls_back() {
        let analysis = Analysis::default();
        let stable = Sample {
            requests: 1000,
            errors: 1,
            p99_ms: Some(12.0),
        };
        let bad = Sample {
            requests: 100,
            errors: 20,
            p99_ms: Some(11.0),
        };
        let v = analyse(&analysis, &bad, &stable);
        assert!(
            matches!(&v, Verdict::Fail { reason } if reason.contains("20.00%")),
            "{v:?}"
        );
        let slow = Sample {
            requests: 100,
            errors: 0,
            p99_ms: Some(40.0),
        };
        assert!(
            matches!(analyse(&analysis, &slow, &stable), Verdict::Fail { reason } if reason.contains("p99"))
        );
        let good = Sample {
            requests: 100,
            errors: 0,
            p99_ms: Some(13.0),
        };
        assert!(matches!(
            analyse(&analysis, &good, &stable),
            Verdict::Pass { .. }
        ));
        let quiet = Sample {
            requests: 3,
            errors: 3,
            p99_ms: None,
        };
        assert!(matches!(
            analyse(&analysis, &quiet, &stable),
            Verdict::Inconclusive { .. }
        ));
        // One failure rolls back by default; with one tolerated, the second does.
        let one = [v.clone()];
        assert!(must_roll_back(&analysis, &one));
        let tolerant = Analysis {
            failures_tolerated: 1,
            ..analysis
        };
        assert!(!must_roll_back(&tolerant, &one));
        assert!(must_roll_back(
            &tolerant,
            &[
                v.clone(),
                Verdict::Inconclusive {
                    reason: String::new()
                },
                v
            ]
        ));
    }
}
