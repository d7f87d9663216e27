//! The decision: from the metrics, the policy, the calendar and the recent past, how
//! many instances an application should run, with every step that shaped the answer.
//! Pure: the evaluator gathers the inputs and applies the result.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::policy::{Compiled, Direction, LimitKind, Select};
use super::schedule::{Envelope, envelope};

/// One metric's reading for a rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reading {
    /// Per ready instance, in the rule's unit.
    pub value: f64,
    /// Over how many seconds it was measured.
    pub window_s: u32,
}

/// A count applied earlier (from the ledger): what rate limits count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
}

/// A recommendation made earlier: what the stabilisation windows look back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommended {
    pub at: DateTime<Utc>,
    pub count: u32,
}

#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub now: DateTime<Utc>,
    /// The count in force now.
    pub current: u32,
    /// How many of the instances are ready.
    pub ready: u32,
    /// One per rule, in the policy's order; `None`: the metric could not be read.
    pub readings: &'a [Option<Reading>],
    /// Recommendations since `history_since`, oldest first.
    pub history: &'a [Recommended],
    /// Since when recommendations are remembered (the evaluator's start): a scale-down
    /// window reaching further back than this cannot be trusted, so it holds.
    pub history_since: DateTime<Utc>,
    /// Changes applied by the autoscaler, oldest first.
    pub changes: &'a [Change],
    /// When someone last set the count by hand.
    pub scaled_by_hand_at: Option<DateTime<Utc>>,
    /// The most instances the tenant's quota leaves this application (`None`: no limit).
    pub quota_room: Option<u32>,
    /// The most instances the runtime's nodes can hold (`None`: unknown).
    pub capacity: Option<u32>,
    /// Scale in one instance per decision at most (a stateful application: its highest
    /// ordinal goes first, and the next only once that one is gone).
    pub one_at_a_time_down: bool,
}

/// What one rule recommends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleOutcome {
    pub metric: String,
    pub target: f64,
    pub reading: Option<Reading>,
    /// `None` when the metric is missing.
    pub recommendation: Option<u32>,
    pub note: String,
}

/// One step that changed (or held) the count on its way to the final answer, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Clamp {
    /// `rules`, `missing_metric`, `cooldown`, `stabilization`, `rate_limit`, `band`,
    /// `bounds`, `quota`.
    pub step: String,
    pub before: u32,
    pub after: u32,
    pub why: String,
}

/// The outcome of one evaluation: the ledger's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub current: u32,
    pub ready: u32,
    pub rules: Vec<RuleOutcome>,
    /// The rules' combined recommendation before any clamp.
    pub recommendation: u32,
    pub clamps: Vec<Clamp>,
    pub envelope: Envelope,
    pub desired: u32,
    /// In words, for people.
    pub reason: String,
}

impl Decision {
    /// Whether this evaluation belongs in the ledger: it changes the count, or something
    /// held the count away from what the rules asked.
    pub fn is_notable(&self) -> bool {
        self.desired != self.current || self.recommendation != self.current
    }

    /// What the stabilisation windows remember of this evaluation: the rules'
    /// recommendation, kept from falling when a metric was missing.
    pub fn remembered(&self) -> u32 {
        self.clamps
            .iter()
            .find(|c| c.step == "missing_metric")
            .map_or(self.recommendation, |c| c.after)
    }
}

fn within(at: DateTime<Utc>, now: DateTime<Utc>, seconds: u32) -> bool {
    at > now - Duration::seconds(i64::from(seconds))
}

fn hhmmss(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S UTC").to_string()
}

/// The HPA's rule for one metric: `ceil(ready × value / target)`, unchanged within the
/// tolerance. Instances not yet ready are not counted as load-free: the load is what
/// the ready ones carry, spread over the count that results.
fn recommend(
    current: u32,
    ready: u32,
    reading: Reading,
    target: f64,
    tolerance: f64,
) -> (u32, String) {
    let ratio = reading.value / target;
    if (ratio - 1.0).abs() <= tolerance {
        return (
            current,
            format!(
                "{:.3} of target, within the tolerance of {tolerance}",
                ratio
            ),
        );
    }
    let wanted = (f64::from(ready) * ratio).ceil();
    let wanted = if wanted.is_finite() && wanted > 0.0 {
        wanted.min(f64::from(u32::MAX)) as u32
    } else {
        0
    };
    (
        wanted,
        format!("{} ready × {:.3} of target = {wanted}", ready, ratio),
    )
}

/// The rate limits of one direction: the furthest the count may go from `current` now.
fn rate_bound(
    direction: &Direction,
    up: bool,
    current: u32,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Option<(u32, String)> {
    if direction.select == Select::Disabled {
        return Some((current, "changes in this direction are disabled".to_owned()));
    }
    let bounds = direction.limits.iter().map(|limit| {
        // What the count was when the period began: now's count minus what changed in it.
        let moved: i64 = changes
            .iter()
            .filter(|c| within(c.at, now, limit.period_s))
            .map(|c| i64::from(c.to) - i64::from(c.from))
            .sum();
        let start = (i64::from(current) - moved).max(0);
        let bound = match (limit.kind, up) {
            (LimitKind::Instances, true) => start + i64::from(limit.value),
            (LimitKind::Instances, false) => start - i64::from(limit.value),
            (LimitKind::Percent, true) => start + (start * i64::from(limit.value) + 99) / 100,
            (LimitKind::Percent, false) => start - start * i64::from(limit.value) / 100,
        };
        let bound = u32::try_from(bound.max(0)).unwrap_or(u32::MAX);
        let unit = match limit.kind {
            LimitKind::Instances => "",
            LimitKind::Percent => "%",
        };
        (
            bound,
            format!(
                "at most {}{}{unit} per {} s",
                if up { "+" } else { "-" },
                limit.value,
                limit.period_s
            ),
        )
    });
    // Max: the limit that allows the largest change; Min: the smallest.
    let pick_largest_change = direction.select == Select::Max;
    bounds.reduce(|a, b| {
        let a_further = if up { a.0 >= b.0 } else { a.0 <= b.0 };
        if a_further == pick_largest_change {
            a
        } else {
            b
        }
    })
}

/// Decides the count. The steps, in order: the rules (highest wins; a missing metric
/// never lets the count fall), the cooldown after a manual scale, the stabilisation
/// windows, the rate limits, the band or bounds in force, the quota.
pub fn decide(policy: &Compiled, inputs: &Inputs<'_>) -> Decision {
    let now = inputs.now;
    let current = inputs.current;
    let env = envelope(policy, now);
    let mut clamps: Vec<Clamp> = Vec::new();
    let push = |clamps: &mut Vec<Clamp>, step: &str, before: u32, after: u32, why: String| {
        clamps.push(Clamp {
            step: step.to_owned(),
            before,
            after,
            why,
        });
        after
    };

    // 1. The rules.
    let mut rules = Vec::with_capacity(policy.policy.rules.len());
    let mut missing = false;
    for (i, rule) in policy.policy.rules.iter().enumerate() {
        let reading = inputs.readings.get(i).copied().flatten();
        let (recommendation, note) = match reading {
            Some(r) if r.value.is_finite() && inputs.ready > 0 => {
                let (mut n, mut note) =
                    recommend(current, inputs.ready, r, rule.target, rule.tolerance);
                if let Some(step) = rule.max_step_up
                    && n > current.saturating_add(step)
                {
                    n = current.saturating_add(step);
                    note.push_str(&format!("; this rule adds at most {step}"));
                }
                if let Some(step) = rule.max_step_down
                    && n < current.saturating_sub(step)
                {
                    n = current.saturating_sub(step);
                    note.push_str(&format!("; this rule removes at most {step}"));
                }
                (Some(n), note)
            }
            Some(_) => {
                missing = true;
                (None, "no ready instance to measure".to_owned())
            }
            None => {
                missing = true;
                (None, "metric missing".to_owned())
            }
        };
        rules.push(RuleOutcome {
            metric: rule.metric.name().to_owned(),
            target: rule.target,
            reading,
            recommendation,
            note,
        });
    }
    let recommendation = rules
        .iter()
        .filter_map(|r| r.recommendation)
        .max()
        .unwrap_or(current);
    let mut count = recommendation;
    if !rules.is_empty() {
        let best = rules
            .iter()
            .filter(|r| r.recommendation == Some(recommendation))
            .map(|r| r.metric.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        push(
            &mut clamps,
            "rules",
            current,
            count,
            if best.is_empty() {
                "no rule could be evaluated".to_owned()
            } else {
                format!("highest recommendation: {recommendation} ({best})")
            },
        );
    }
    if missing && count < current {
        count = push(
            &mut clamps,
            "missing_metric",
            count,
            current,
            "a metric is missing, so the count does not fall".to_owned(),
        );
    }

    // 2. A manual scale holds the count for the cooldown.
    let cooldown = policy.policy.behavior.manual_cooldown_s;
    if let Some(by_hand) = inputs.scaled_by_hand_at
        && within(by_hand, now, cooldown)
        && count != current
    {
        let until = by_hand + Duration::seconds(i64::from(cooldown));
        count = push(
            &mut clamps,
            "cooldown",
            count,
            current,
            format!(
                "scaled by hand at {}; autoscaling resumes at {}",
                hhmmss(by_hand),
                hhmmss(until)
            ),
        );
    }

    // 3. Stabilisation: up only if every recommendation in the up-window asks for at
    // least that much; down only as far as the highest in the down-window.
    let behavior = &policy.policy.behavior;
    if count > current && behavior.scale_up.stabilization_s > 0 {
        let window = behavior.scale_up.stabilization_s;
        let lowest = inputs
            .history
            .iter()
            .filter(|r| within(r.at, now, window))
            .map(|r| r.count)
            .chain(std::iter::once(count))
            .min()
            .unwrap_or(count)
            .max(current);
        if lowest < count {
            count = push(
                &mut clamps,
                "stabilization",
                count,
                lowest,
                format!("the lowest recommendation of the last {window} s is {lowest}"),
            );
        }
    }
    if count < current {
        let window = behavior.scale_down.stabilization_s;
        let remembered_from = now - Duration::seconds(i64::from(window));
        if inputs.history_since > remembered_from && window > 0 {
            let until = inputs.history_since + Duration::seconds(i64::from(window));
            count = push(
                &mut clamps,
                "stabilization",
                count,
                current,
                format!(
                    "held at {current} by the scale-down window until {} (recommendations are remembered since {})",
                    hhmmss(until),
                    hhmmss(inputs.history_since)
                ),
            );
        } else {
            let highest = inputs
                .history
                .iter()
                .filter(|r| within(r.at, now, window))
                .map(|r| r.count)
                .chain(std::iter::once(count))
                .max()
                .unwrap_or(count)
                .min(current);
            if highest > count {
                // When the highest recommendation leaves the window, the count may fall.
                let until = inputs
                    .history
                    .iter()
                    .filter(|r| within(r.at, now, window) && r.count >= highest)
                    .map(|r| r.at + Duration::seconds(i64::from(window)))
                    .max();
                count = push(
                    &mut clamps,
                    "stabilization",
                    count,
                    highest,
                    match until {
                        Some(until) if highest == current => format!(
                            "held at {highest} by the scale-down window until {}",
                            hhmmss(until)
                        ),
                        _ => format!(
                            "the highest recommendation of the last {window} s is {highest}"
                        ),
                    },
                );
            }
        }
    }

    // 4. Rate limits.
    if count != current {
        let up = count > current;
        let direction = if up {
            &behavior.scale_up
        } else {
            &behavior.scale_down
        };
        if let Some((bound, why)) = rate_bound(direction, up, current, inputs.changes, now) {
            let limited = if up {
                count.min(bound.max(current))
            } else {
                count.max(bound.min(current))
            };
            if limited != count {
                count = push(&mut clamps, "rate_limit", count, limited, why);
            }
        }
    }

    if inputs.one_at_a_time_down && count + 1 < current {
        count = push(
            &mut clamps,
            "rate_limit",
            count,
            current - 1,
            "a stateful application scales in one instance (its highest ordinal) at a time"
                .to_owned(),
        );
    }

    // 5. The band or the policy's bounds in force (they win over rate limits: a floor
    // is a floor).
    if count < env.min || count > env.max {
        let bounded = count.clamp(env.min, env.max);
        let step = if env.band.is_some() { "band" } else { "bounds" };
        let why = match (&env.band, env.until) {
            (Some(band), Some(until)) => format!(
                "{} band '{band}' sets {}..{} until {}",
                env.band_kind.as_deref().unwrap_or("a"),
                env.min,
                env.max,
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            _ => format!("the policy's bounds are {}..{}", env.min, env.max),
        };
        count = push(&mut clamps, step, count, bounded, why);
    }

    // 6. The quota.
    if let Some(room) = inputs.quota_room
        && count > room
    {
        let why = if room < env.min {
            format!(
                "the tenant's quota leaves room for {room}, short of the required {}",
                env.min
            )
        } else {
            format!("the tenant's quota leaves room for {room}")
        };
        count = push(&mut clamps, "quota", count, room, why);
    }

    // 7. What the nodes can hold (never below what already runs).
    if let Some(capacity) = inputs.capacity
        && count > capacity.max(current)
    {
        let room = capacity.max(current);
        count = push(
            &mut clamps,
            "capacity",
            count,
            room,
            format!("the nodes have room for {room} instances of this size"),
        );
    }

    let reason = if count == current {
        match clamps.iter().rev().find(|c| c.before != c.after) {
            Some(c) if c.why.starts_with("held at") => c.why.clone(),
            Some(c) => format!("held at {current}: {}", c.why),
            None => format!("steady at {current}"),
        }
    } else {
        let cause = clamps
            .iter()
            .rev()
            .find(|c| c.after == count && c.before != c.after)
            .map_or_else(String::new, |c| format!(": {}", c.why));
        format!("{current} → {count}{cause}")
    };
    Decision {
        at: now,
        current,
        ready: inputs.ready,
        rules,
        recommendation,
        clamps,
        envelope: env,
        desired: count,
        reason,
    }
}

/// How many instances of `each` the healthy nodes can hold: those that run (`current`)
/// plus what fits in each node's unrequested capacity. `None` when a node does not say
/// what is requested on it.
pub fn capacity(
    nodes: &[crate::runtime::Node],
    each: &crate::spec::Resources,
    current: u32,
) -> Option<u32> {
    let mut free = 0u64;
    for node in nodes.iter().filter(|n| n.healthy) {
        let allocated = node.allocated.as_ref()?;
        let cpu = node
            .capacity
            .cpu_millis
            .saturating_sub(allocated.cpu_millis)
            / each.cpu_millis.max(1);
        let memory = node
            .capacity
            .memory_mib
            .saturating_sub(allocated.memory_mib)
            / each.memory_mib.max(1);
        free += u64::from(cpu.min(memory));
    }
    Some(u32::try_from(u64::from(current) + free).unwrap_or(u32::MAX))
}
