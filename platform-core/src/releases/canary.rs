//! The canary strategy, pure: its steps (a traffic weight or an instance count, each
//! with a pause) turned into the two revisions' instance counts and the router's
//! weight, and the automated analysis that compares the canary with the stable
//! revision at each step.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// How a canary release moves: its steps, each run (and analysed) before the next, and
/// then the promotion that retires the stable revision. Services only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
    #[serde(default)]
    pub analysis: Analysis,
    /// A step's canary instances (and, at the end, the promoted ones) must be ready this
    /// long after the step began, else the release is rolled back.
    #[serde(default = "step_deadline")]
    #[schema(minimum = 10, maximum = 86400)]
    pub step_deadline_s: u32,
}

fn step_deadline() -> u32 {
    600
}

impl Canary {
    pub fn check(&self) -> Result<(), FieldError> {
        check_steps(&self.steps)?;
        let a = &self.analysis;
        if !(1..=3600).contains(&a.interval_s) {
            return Err(FieldError::new(
                "strategy.analysis.interval_s",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(0.0..=1.0).contains(&a.max_error_rate_increase) {
            return Err(FieldError::new(
                "strategy.analysis.max_error_rate_increase",
                "must be a fraction between 0 and 1",
            ));
        }
        if !(1.0..=1000.0).contains(&a.max_p99_ratio) {
            return Err(FieldError::new(
                "strategy.analysis.max_p99_ratio",
                "must be between 1 and 1000",
            ));
        }
        if !(0.0..=60_000.0).contains(&a.min_p99_increase_ms) {
            return Err(FieldError::new(
                "strategy.analysis.min_p99_increase_ms",
                "must be between 0 and 60000",
            ));
        }
        if a.failures_tolerated > 100 {
            return Err(FieldError::new(
                "strategy.analysis.failures_tolerated",
                "must be at most 100",
            ));
        }
        if let Some(q) = &a.promql {
            q.check()?;
        }
        if !(10..=86_400).contains(&self.step_deadline_s) {
            return Err(FieldError::new(
                "strategy.step_deadline_s",
                "must be between 10 and 86400 seconds",
            ));
        }
        Ok(())
    }
}

/// Where a canary release is, kept with the release (`releases.canary`): the step that
/// runs, since when, and the analysis so far. Only the canary clock
/// (`platform::releases::canary_clock`) and a person's "continue" change it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanaryState {
    /// The step that runs; the number of steps once the canary is being promoted.
    pub step: u32,
    pub step_started_at: Option<DateTime<Utc>>,
    /// When every canary instance of the step was ready: the step's pause and its
    /// analysis count from then.
    pub ready_since: Option<DateTime<Utc>>,
    pub last_check_at: Option<DateTime<Utc>>,
    pub checks: u32,
    pub failed_checks: u32,
    pub last_verdict: Option<Verdict>,
}

impl CanaryState {
    /// Whether the canary is being promoted (every step done).
    pub fn promoting(&self, c: &Canary) -> bool {
        self.step as usize >= c.steps.len()
    }

    /// Whether the step waits for a person's "continue": its instances are ready and it
    /// has no pause of its own.
    pub fn waiting_for_continue(&self, c: &Canary) -> bool {
        c.steps
            .get(self.step as usize)
            .is_some_and(|s| s.pause_s.is_none() && self.ready_since.is_some())
    }

    /// Whether an analysis check is due.
    pub fn check_due(&self, c: &Canary, now: DateTime<Utc>) -> bool {
        !self.promoting(c)
            && self
                .last_check_at
                .is_some_and(|at| now >= at + Duration::seconds(i64::from(c.analysis.interval_s)))
    }

    /// The next step begins now.
    pub fn next_step(&self, now: DateTime<Utc>) -> Self {
        Self {
            step: self.step + 1,
            step_started_at: Some(now),
            ready_since: None,
            last_check_at: None,
            ..self.clone()
        }
    }
}

/// What the canary clock does with a release at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub state: CanaryState,
    /// Timeline entries: (kind, message, the check's verdict when it is one).
    pub events: Vec<(&'static str, String)>,
    /// Why the release must be rolled back, when it must.
    pub roll_back: Option<String>,
}

/// One tick of the canary clock, pure: `target_ready` is how many instances of the
/// canary revision are ready, `verdict` the analysis check just made (when one was
/// due). Starts the step, notes when its instances are ready, counts the check, moves
/// to the next step when the pause is over, and says when the release must be rolled
/// back (failed analysis, instances not ready within the step deadline).
pub fn tick(
    c: &Canary,
    state: &CanaryState,
    replicas: u32,
    target_ready: u32,
    now: DateTime<Utc>,
    verdict: Option<Verdict>,
) -> Tick {
    let mut s = state.clone();
    let mut events = Vec::new();
    let deadline = Duration::seconds(i64::from(c.step_deadline_s));
    let started = *s.step_started_at.get_or_insert(now);
    if state.step_started_at.is_none() {
        events.push(("canary_step", describe(c, s.step, replicas)));
    }
    if s.promoting(c) {
        let roll_back = (target_ready < replicas && now > started + deadline).then(|| {
            format!(
                "the promoted instances were not ready within {} s",
                c.step_deadline_s
            )
        });
        return Tick {
            state: s,
            events,
            roll_back,
        };
    }
    let step = &c.steps[s.step as usize];
    let wanted = shape(step, replicas).canary;
    if s.ready_since.is_none() {
        if target_ready >= wanted {
            s.ready_since = Some(now);
            s.last_check_at = Some(now);
        } else if now > started + deadline {
            let why = format!(
                "step {}'s canary instances were not ready within {} s ({target_ready} of {wanted})",
                s.step + 1,
                c.step_deadline_s
            );
            return Tick {
                state: s,
                events,
                roll_back: Some(why),
            };
        }
    }
    if let Some(v) = verdict {
        s.checks += 1;
        s.last_check_at = Some(now);
        let (word, reason) = match &v {
            Verdict::Pass { reason } => ("passed", reason.clone()),
            Verdict::Fail { reason } => {
                s.failed_checks += 1;
                ("failed", reason.clone())
            }
            Verdict::Inconclusive { reason } => ("inconclusive", reason.clone()),
        };
        events.push((
            "analysis",
            format!("step {}, check {}: {word}: {reason}", s.step + 1, s.checks),
        ));
        let failed = matches!(v, Verdict::Fail { .. });
        s.last_verdict = Some(v);
        if failed && s.failed_checks > c.analysis.failures_tolerated {
            let why = format!("the canary failed its analysis: {reason}");
            return Tick {
                state: s,
                events,
                roll_back: Some(why),
            };
        }
    }
    if let (Some(ready), Some(pause)) = (s.ready_since, step.pause_s)
        && now >= ready + Duration::seconds(i64::from(pause))
    {
        s = s.next_step(now);
        events.push(("canary_step", describe(c, s.step, replicas)));
    }
    Tick {
        state: s,
        events,
        roll_back: None,
    }
}

/// A step in words, for the timeline.
pub fn describe(c: &Canary, step: u32, replicas: u32) -> String {
    let Some(s) = c.steps.get(step as usize) else {
        return "every step passed: promoting the canary".to_owned();
    };
    let shape = shape(s, replicas);
    let traffic = match shape.weight {
        Some(w) => format!("{w}% of the traffic"),
        None => "traffic by instance count".to_owned(),
    };
    let until = match s.pause_s {
        Some(p) => format!("for {p} s"),
        None => "until someone continues".to_owned(),
    };
    format!(
        "step {} of {}: {} canary instance{}, {traffic}, {until}",
        step + 1,
        c.steps.len(),
        shape.canary,
        if shape.canary == 1 { "" } else { "s" }
    )
}

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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
    /// ... or when its p99 exceeds the stable revision's by more than this factor
    #[serde(default = "latency_factor")]
    pub max_p99_ratio: f64,
    /// ... and by more than this many milliseconds: below it a difference is noise
    /// (the router's latency buckets are coarse, and a few requests make a p99).
    #[serde(default = "latency_floor")]
    pub min_p99_increase_ms: f64,
    /// Fewer requests than this in an interval: no verdict (neither pass nor fail).
    #[serde(default = "min_requests")]
    pub min_requests: u64,
    /// How many failed checks are tolerated before the release is rolled back.
    #[serde(default)]
    pub failures_tolerated: u32,
    /// Where the figures come from when not from the runtime itself: PromQL queries
    /// against the platform's Prometheus (`paas serve --prometheus-url`), run for each
    /// side. Needed on Kubernetes, where the platform does not see the traffic; on the
    /// local runtime the router's own counters serve unless this is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<PromQueries>,
}

/// PromQL queries giving one side's figures over one analysis interval. Each may use
/// `{{revision}}` (the side's revision number), `{{side}}` (`canary` or `stable`),
/// `{{tenant}}`, `{{environment}}`, `{{app}}` and `{{interval}}` (the analysis
/// interval, as `10s`), and must use `{{revision}}` or `{{side}}` to tell the sides
/// apart. A query that returns nothing counts as 0 (no requests, no errors; no p99).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromQueries {
    /// The side's requests in the interval, e.g.
    /// `sum(increase(http_requests_total{paas_dev_app="{{app}}",paas_dev_revision="{{revision}}"}[{{interval}}]))`.
    pub requests: String,
    /// The side's failed requests in the interval (5xx, say).
    pub errors: String,
    /// The side's 99th-percentile latency in milliseconds (optional: without it the
    /// analysis judges the error rate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<String>,
}

/// The placeholders a PromQL query of the analysis may use.
pub const PROMQL_PLACEHOLDERS: [&str; 6] = [
    "revision",
    "side",
    "tenant",
    "environment",
    "app",
    "interval",
];

impl PromQueries {
    /// The queries with their fields' names (under `strategy.analysis.promql`).
    pub fn named(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("requests", self.requests.as_str()),
            ("errors", self.errors.as_str()),
        ];
        if let Some(q) = &self.p99_ms {
            out.push(("p99_ms", q.as_str()));
        }
        out
    }

    /// Checks each query's placeholders, naming the one that is wrong.
    pub fn check(&self) -> Result<(), FieldError> {
        for (name, query) in self.named() {
            let field = format!("strategy.analysis.promql.{name}");
            if query.trim().is_empty() || query.len() > 2000 {
                return Err(FieldError::new(
                    field,
                    "must hold a query of 1 to 2000 characters",
                ));
            }
            let used = placeholders(query).map_err(|m| FieldError::new(field.clone(), m))?;
            if !used.iter().any(|p| p == "revision" || p == "side") {
                return Err(FieldError::new(
                    field,
                    "must tell the sides apart with {{revision}} or {{side}}",
                ));
            }
        }
        Ok(())
    }
}

/// The values a query's placeholders take for one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySide<'a> {
    pub revision: i32,
    pub side: &'a str,
    pub tenant: &'a str,
    pub environment: &'a str,
    pub app: &'a str,
    pub interval_s: u32,
}

/// The `{{name}}` placeholders of a query, in order; an unknown or unclosed one is an
/// error in words.
fn placeholders(query: &str) -> Result<Vec<String>, String> {
    let mut used = Vec::new();
    substitute(query, |name| {
        used.push(name.to_owned());
        Some(String::new())
    })?;
    Ok(used)
}

/// The query with its placeholders filled in for one side (a checked query: an unknown
/// placeholder is left as it is).
pub fn fill(query: &str, side: &QuerySide<'_>) -> String {
    let filled = substitute(query, |name| {
        Some(match name {
            "revision" => side.revision.to_string(),
            "side" => side.side.to_owned(),
            "tenant" => side.tenant.to_owned(),
            "environment" => side.environment.to_owned(),
            "app" => side.app.to_owned(),
            "interval" => format!("{}s", side.interval_s),
            _ => return None,
        })
    });
    filled.unwrap_or_else(|_| query.to_owned())
}

/// The query with each `{{name}}` replaced by `value(name)`; `None` from it, or an
/// unclosed `{{`, is an error in words (naming the placeholders there are).
fn substitute(
    query: &str,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(query.len() + 16);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "has a {{ without its }}".to_owned())?;
        let name = after[..end].trim();
        let known = PROMQL_PLACEHOLDERS.contains(&name);
        match value(name).filter(|_| known) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "{{{{{name}}}}} is not a placeholder (known: {})",
                    PROMQL_PLACEHOLDERS
                        .map(|p| format!("{{{{{p}}}}}"))
                        .join(", ")
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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
fn latency_floor() -> f64 {
    25.0
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
            min_p99_increase_ms: latency_floor(),
            min_requests: min_requests(),
            failures_tolerated: 0,
            promql: None,
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

impl Verdict {
    /// The verdict and its reason, in words.
    pub fn summary(&self) -> String {
        match self {
            Self::Pass { reason } => format!("passed ({reason})"),
            Self::Fail { reason } => format!("failed ({reason})"),
            Self::Inconclusive { reason } => format!("inconclusive ({reason})"),
        }
    }
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
        && cp - sp > analysis.min_p99_increase_ms
    {
        return Verdict::Fail {
            reason: format!(
                "p99 {cp:.1} ms against the stable revision's {sp:.1} ms (at most {}× and {} ms more)",
                analysis.max_p99_ratio, analysis.min_p99_increase_ms
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
        // 1.6× a fast stable revision, but only 1.5 ms more: noise, not a failure.
        let fast = Sample {
            requests: 1000,
            errors: 0,
            p99_ms: Some(2.5),
        };
        let noisy = Sample {
            requests: 100,
            errors: 0,
            p99_ms: Some(4.0),
        };
        assert!(matches!(
            analyse(&analysis, &noisy, &fast),
            Verdict::Pass { .. }
        ));
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

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn two_steps() -> Canary {
        Canary {
            steps: vec![
                weight(20),
                CanaryStep {
                    weight: Some(50),
                    instances: None,
                    pause_s: None,
                },
            ],
            analysis: Analysis {
                interval_s: 10,
                ..Analysis::default()
            },
            step_deadline_s: 60,
        }
    }

    #[test]
    fn the_canary_clock_starts_a_step_waits_for_its_instances_checks_and_moves_on() {
        let c = two_steps();
        let start = tick(&c, &CanaryState::default(), 4, 0, at(0), None);
        assert_eq!(start.state.step_started_at, Some(at(0)));
        assert_eq!(start.events.len(), 1);
        assert!(
            start.events[0].1.contains("20% of the traffic"),
            "{:?}",
            start.events
        );
        // Its one instance ready: the pause and the checks count from now.
        let ready = tick(&c, &start.state, 4, 1, at(5), None);
        assert_eq!(ready.state.ready_since, Some(at(5)));
        assert!(!ready.state.check_due(&c, at(14)));
        assert!(ready.state.check_due(&c, at(15)));
        let pass = Verdict::Pass {
            reason: "fine".into(),
        };
        let checked = tick(&c, &ready.state, 4, 1, at(15), Some(pass));
        assert_eq!((checked.state.checks, checked.state.failed_checks), (1, 0));
        assert_eq!(checked.roll_back, None);
        // The pause (60 s from ready) over: step 2, which waits for a person.
        let next = tick(&c, &checked.state, 4, 1, at(65), None);
        assert_eq!(next.state.step, 1);
        assert_eq!(next.state.ready_since, None);
        let waiting = tick(&c, &next.state, 4, 2, at(66), None);
        assert!(waiting.state.waiting_for_continue(&c));
        let still = tick(&c, &waiting.state, 4, 2, at(10_000), None);
        assert_eq!(still.state.step, 1, "no pause: only a person moves it on");
        let promoting = still.state.next_step(at(10_001));
        assert!(promoting.promoting(&c));
        assert!(!promoting.check_due(&c, at(20_000)));
    }

    #[test]
    fn a_failed_check_or_a_step_not_ready_in_time_rolls_the_canary_back() {
        let c = two_steps();
        let ready = CanaryState {
            step_started_at: Some(at(0)),
            ready_since: Some(at(1)),
            last_check_at: Some(at(1)),
            ..CanaryState::default()
        };
        let fail = Verdict::Fail {
            reason: "error rate 20.00%".into(),
        };
        let t = tick(&c, &ready, 4, 1, at(11), Some(fail.clone()));
        assert!(t.roll_back.is_some_and(|why| why.contains("20.00%")));
        let tolerant = Canary {
            analysis: Analysis {
                failures_tolerated: 1,
                ..c.analysis.clone()
            },
            ..c.clone()
        };
        let first = tick(&tolerant, &ready, 4, 1, at(11), Some(fail.clone()));
        assert_eq!(first.roll_back, None);
        let second = tick(&tolerant, &first.state, 4, 1, at(21), Some(fail));
        assert!(second.roll_back.is_some());
        // Instances never ready within the step's deadline.
        let started = CanaryState {
            step_started_at: Some(at(0)),
            ..CanaryState::default()
        };
        assert_eq!(tick(&c, &started, 4, 0, at(60), None).roll_back, None);
        assert!(
            tick(&c, &started, 4, 0, at(61), None)
                .roll_back
                .is_some_and(|why| why.contains("not ready within 60 s"))
        );
    }

    #[test]
    fn promql_queries_name_their_placeholders_and_fill_them_per_side() {
        let q = |requests: &str| PromQueries {
            requests: requests.to_owned(),
            errors: "sum(increase(e{rev=\"{{revision}}\"}[{{interval}}]))".to_owned(),
            p99_ms: None,
        };
        let cases: [(&str, Option<&str>); 7] = [
            ("sum(increase(r{rev=\"{{revision}}\"}[{{interval}}]))", None),
            (
                "sum(increase(r{split=\"{{ side }}\",app=\"{{app}}\"}[1m]))",
                None,
            ),
            ("sum(r{app=\"{{app}}\"})", Some("must tell the sides apart")),
            (
                "sum(r{rev=\"{{rev}}\"})",
                Some("{{rev}} is not a placeholder"),
            ),
            ("sum(r{rev=\"{{revision\"})", Some("without its }}")),
            ("   ", Some("1 to 2000 characters")),
            ("r{x=\"{{revision}}\"}", None),
        ];
        for (requests, expected) in cases {
            let got = Canary {
                steps: vec![weight(10)],
                analysis: Analysis {
                    promql: Some(q(requests)),
                    ..Analysis::default()
                },
                step_deadline_s: 600,
            }
            .check();
            match expected {
                None => assert_eq!(got, Ok(()), "{requests}"),
                Some(message) => {
                    let e = got.expect_err(requests);
                    assert_eq!(e.field, "strategy.analysis.promql.requests");
                    assert!(e.message.contains(message), "{requests}: {}", e.message);
                }
            }
        }
        let side = QuerySide {
            revision: 7,
            side: "canary",
            tenant: "acme",
            environment: "prod",
            app: "shop",
            interval_s: 10,
        };
        assert_eq!(
            fill(
                "sum(increase(r{t=\"{{tenant}}\",e=\"{{environment}}\",a=\"{{app}}\",r=\"{{revision}}\",s=\"{{ side }}\"}[{{interval}}]))",
                &side
            ),
            "sum(increase(r{t=\"acme\",e=\"prod\",a=\"shop\",r=\"7\",s=\"canary\"}[10s]))"
        );
        // The label matchers' own braces are left alone.
        assert_eq!(fill("up{job=\"x\"}", &side), "up{job=\"x\"}");
    }
}
