//! The 7-day preview of a policy's bands and envelope, and the what-if replay of a
//! metric series through the decision function.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::decide::{Change, Inputs, Reading, Recommended, decide};
use super::policy::Compiled;
use super::schedule::envelope;

/// The preview's resolution and length.
pub const STEP_MINUTES: i64 = 15;
pub const DAYS: i64 = 7;

/// One 15-minute point of the preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PreviewPoint {
    pub at: DateTime<Utc>,
    /// The local time in the policy's zone, with its offset.
    pub local: String,
    pub min: u32,
    pub max: u32,
    pub band: Option<String>,
    /// Bands running at the same time with the same kind and priority.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// The band's minimum exceeds what the quota leaves the application.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quota_shortfall: bool,
}

/// A change of the zone's UTC offset inside the preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DstTransition {
    /// The first preview point after the change.
    pub at: DateTime<Utc>,
    pub from_offset: String,
    pub to_offset: String,
}

/// The preview: every point, and what in it needs a person's eye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Preview {
    pub time_zone: String,
    pub from: DateTime<Utc>,
    pub step_minutes: u32,
    pub points: Vec<PreviewPoint>,
    pub dst_transitions: Vec<DstTransition>,
    /// Pairs (or more) of bands that run at the same time with the same priority.
    pub conflicts: Vec<Vec<String>>,
    /// Bands whose minimum the quota cannot hold.
    pub quota_shortfalls: Vec<String>,
    /// The most instances the quota leaves the application, when it limits it.
    pub quota_room: Option<u32>,
}

/// The next 7 days from `from` (rounded down to 15 minutes).
pub fn preview(policy: &Compiled, from: DateTime<Utc>, quota_room: Option<u32>) -> Preview {
    let step = Duration::minutes(STEP_MINUTES);
    let from = from.duration_trunc(step).unwrap_or(from);
    let count = DAYS * 24 * 60 / STEP_MINUTES;
    let mut points = Vec::with_capacity(count as usize);
    let mut dst_transitions = Vec::new();
    let mut conflicts: Vec<Vec<String>> = Vec::new();
    let mut quota_shortfalls: Vec<String> = Vec::new();
    let mut previous_offset: Option<String> = None;
    for i in 0..count {
        let at = from + step * i as i32;
        let local = at.with_timezone(&policy.zone);
        let offset = local.format("%:z").to_string();
        if let Some(before) = &previous_offset
            && *before != offset
        {
            dst_transitions.push(DstTransition {
                at,
                from_offset: before.clone(),
                to_offset: offset.clone(),
            });
        }
        previous_offset = Some(offset);
        let env = envelope(policy, at);
        let shortfall = quota_room.is_some_and(|room| env.min > room);
        if shortfall
            && let Some(band) = &env.band
            && !quota_shortfalls.contains(band)
        {
            quota_shortfalls.push(band.clone());
        }
        if !env.conflicts.is_empty() && !conflicts.contains(&env.conflicts) {
            conflicts.push(env.conflicts.clone());
        }
        points.push(PreviewPoint {
            at,
            local: local.format("%Y-%m-%d %H:%M %:z").to_string(),
            min: env.min,
            max: env.max,
            band: env.band,
            conflicts: env.conflicts,
            quota_shortfall: shortfall,
        });
    }
    Preview {
        time_zone: policy.policy.time_zone.clone(),
        from,
        step_minutes: STEP_MINUTES as u32,
        points,
        dst_transitions,
        conflicts,
        quota_shortfalls,
        quota_room,
    }
}

/// One sample of a what-if series: the metric values (one per rule, in order; `null`
/// for a missing one) at an instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// The application's total for each rule (e.g. requests per second over all
    /// instances; for `cpu` and `memory` the sum of percentages), divided by the count
    /// the replay runs at that point.
    pub values: Vec<Option<f64>>,
}

/// One point of the replayed curve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReplayPoint {
    pub at: DateTime<Utc>,
    pub count: u32,
    pub reason: String,
}

/// The most samples a what-if takes.
pub const MAX_SAMPLES: usize = 10_000;

/// Replays a series through the policy from `start` instances, every instance ready as
/// soon as it is asked for (the curve the policy would have drawn, not the runtime's).
pub fn what_if(
    policy: &Compiled,
    start: u32,
    samples: &[Sample],
    quota_room: Option<u32>,
) -> Vec<ReplayPoint> {
    let mut current = start;
    let mut history: Vec<Recommended> = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    // The replay remembers from well before its first sample, so its windows are judged
    // on the series alone.
    let history_since = first.at - Duration::days(1);
    let longest = i64::from(
        policy
            .policy
            .behavior
            .scale_down
            .stabilization_s
            .max(policy.policy.behavior.scale_up.stabilization_s)
            .max(3600),
    );
    let mut out = Vec::with_capacity(samples.len());
    for sample in samples {
        let readings: Vec<Option<Reading>> = sample
            .values
            .iter()
            .map(|v| {
                v.map(|total| Reading {
                    value: total / f64::from(current.max(1)),
                    window_s: 0,
                })
            })
            .collect();
        let cutoff = sample.at - Duration::seconds(longest);
        history.retain(|r| r.at > cutoff);
        changes.retain(|c| c.at > cutoff);
        let decision = decide(
            policy,
            &Inputs {
                now: sample.at,
                current,
                ready: current,
                readings: &readings,
                history: &history,
                history_since,
                changes: &changes,
                scaled_by_hand_at: None,
                quota_room,
                one_at_a_time_down: false,
                capacity: None,
            },
        );
        history.push(Recommended {
            at: sample.at,
            count: decision.remembered(),
        });
        if decision.desired != current {
            changes.push(Change {
                at: sample.at,
                from: current,
                to: decision.desired,
            });
        }
        current = decision.desired;
        out.push(ReplayPoint {
            at: sample.at,
            count: current,
            reason: decision.reason,
        });
    }
    out
}

/// Reads a what-if series from CSV text: one sample per line, `at,value[,value...]`
/// (an RFC 3339 instant, then one number per rule; an empty value is a missing
/// reading). Blank lines, `#` comments and a header line starting with `at` are
/// skipped. No quoting: the values are numbers.
pub fn parse_csv(text: &str) -> Result<Vec<Sample>, crate::FieldError> {
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || (samples.is_empty() && line.to_ascii_lowercase().starts_with("at"))
        {
            continue;
        }
        let bad = |why: String| crate::FieldError::new("csv", format!("line {}: {why}", n + 1));
        let mut cols = line.split(',').map(str::trim);
        let at = cols.next().unwrap_or_default();
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|_| {
                bad(format!(
                    "'{}' is not an RFC 3339 instant such as 2026-11-27T10:00:00Z",
                    at.chars().take(40).collect::<String>()
                ))
            })?
            .with_timezone(&Utc);
        let values = cols
            .map(|v| {
                if v.is_empty() {
                    Ok(None)
                } else {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .map(Some)
                        .ok_or_else(|| {
                            bad(format!(
                                "'{}' is not a number",
                                v.chars().take(40).collect::<String>()
                            ))
                        })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        samples.push(Sample { at, values });
        if samples.len() > MAX_SAMPLES {
            return Err(bad(format!("at most {MAX_SAMPLES} samples")));
        }
    }
    Ok(samples)
}
