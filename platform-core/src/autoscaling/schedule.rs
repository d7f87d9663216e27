//! When bands run: local dates and times turned into instants in the policy's zone, and
//! the envelope (min/max) in force at an instant.
//!
//! Daylight saving: a local time that does not exist (skipped by a spring-forward jump)
//! starts at the first valid instant after it; one that exists twice (the repeated hour
//! of a fall-back) means its first occurrence, so a band runs once.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::policy::{Compiled, CompiledBand, Window};
use crate::FieldError;

/// The instant a local date and time means in `zone`.
pub fn resolve(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(at) = zone.from_local_datetime(&local).earliest() {
        return at.with_timezone(&Utc);
    }
    // In a gap: the first minute after it that exists (gaps are whole minutes long).
    (1..=24 * 60)
        .find_map(|m| {
            zone.from_local_datetime(&(local + Duration::minutes(m)))
                .earliest()
        })
        .map_or_else(|| local.and_utc(), |at| at.with_timezone(&Utc))
}

/// One run of a band: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Run {
    fn overlaps(&self, other: &Run) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// How many runs of a cron band are looked at, at most, in one search.
const MAX_CRON_RUNS: usize = 5_000;

fn day_matches(band: &CompiledBand, day: NaiveDate) -> bool {
    let Window::Daily {
        days_of_week,
        days_of_month,
        ..
    } = &band.window
    else {
        return false;
    };
    (days_of_week.is_empty() || days_of_week.contains(&day.weekday()))
        && (days_of_month.is_empty() || days_of_month.contains(&day.day()))
}

/// The runs of `band` that overlap `[from, to)`, in order.
pub fn runs(band: &CompiledBand, zone: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Run> {
    let excluded = |start: DateTime<Utc>| {
        band.exclude
            .contains(&start.with_timezone(&zone).date_naive())
    };
    let mut out = Vec::new();
    match &band.window {
        Window::Scheduled { start, end } => {
            let run = Run {
                start: resolve(zone, *start),
                end: resolve(zone, *end),
            };
            if run.start < to && from < run.end && !excluded(run.start) {
                out.push(run);
            }
        }
        Window::Daily { start, end, .. } => {
            let first = from.with_timezone(&zone).date_naive() - Duration::days(1);
            let last = to.with_timezone(&zone).date_naive();
            let mut day = first;
            while day <= last {
                if day_matches(band, day) {
                    let end_day = if end > start {
                        day
                    } else {
                        day + Duration::days(1)
                    };
                    let run = Run {
                        start: resolve(zone, day.and_time(*start)),
                        end: resolve(zone, end_day.and_time(*end)),
                    };
                    if run.start < to && from < run.end && !excluded(run.start) {
                        out.push(run);
                    }
                }
                day += Duration::days(1);
            }
        }
        Window::Cron { cron, minutes } => {
            let length = Duration::minutes(i64::from(*minutes));
            // Croner walks local wall-clock times (given to it as if they were UTC); each
            // is then resolved in the zone, so gaps and repeats follow the rule above.
            let wall = |at: DateTime<Utc>| at.with_timezone(&zone).naive_local().and_utc();
            let begin = wall(from - length - Duration::days(1));
            let stop = wall(to) + Duration::days(1);
            let mut last: Option<DateTime<Utc>> = None;
            for local in cron.clone().iter_after(begin).take(MAX_CRON_RUNS) {
                if local > stop {
                    break;
                }
                let start = resolve(zone, local.naive_utc());
                if last == Some(start) {
                    continue;
                }
                last = Some(start);
                let run = Run {
                    start,
                    end: start + length,
                };
                if run.start < to && from < run.end && !excluded(run.start) {
                    out.push(run);
                }
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

/// The run of `band` in progress at `at`, if any. For a cron band this walks back from
/// `at` (its latest start is the one that ends last), so it costs a few steps, not a
/// day's worth of runs.
pub fn run_at(band: &CompiledBand, zone: Tz, at: DateTime<Utc>) -> Option<Run> {
    let Window::Cron { cron, minutes } = &band.window else {
        return runs(band, zone, at, at + Duration::seconds(1))
            .into_iter()
            .find(|r| r.start <= at && at < r.end);
    };
    let length = Duration::minutes(i64::from(*minutes));
    // Wall-clock times, as in `runs`; two hours of slack either side for an offset
    // change between a start and `at`.
    let wall = at.with_timezone(&zone).naive_local().and_utc();
    let slack = Duration::hours(2);
    cron.iter_before(wall + slack)
        .take(MAX_CRON_RUNS)
        .take_while(|local| *local > wall - length - slack)
        .map(|local| {
            let start = resolve(zone, local.naive_utc());
            Run {
                start,
                end: start + length,
            }
        })
        .find(|r| {
            r.start <= at
                && at < r.end
                && !band
                    .exclude
                    .contains(&r.start.with_timezone(&zone).date_naive())
        })
}

/// Whether a recurring band will never start after `now` (a cron expression for 30
/// February, or days that never coincide).
pub fn never_starts(band: &CompiledBand, now: DateTime<Utc>) -> bool {
    match &band.window {
        Window::Scheduled { .. } => false,
        // Every combination of weekday and day of month recurs within 28 years; the
        // exclusions are dates, so they cannot cover them all.
        Window::Daily { .. } => {
            let today = now.date_naive();
            !(0..366 * 28).any(|d| day_matches(band, today + Duration::days(d)))
        }
        Window::Cron { cron, .. } => cron.find_next_occurrence(&now, true).is_err(),
    }
}

/// How far ahead overlaps between recurring bands are looked for: four years holds a
/// leap day and every weekday of every date.
const OVERLAP_HORIZON_DAYS: i64 = 4 * 366;

/// Refuses two bands of the same kind and priority that can run at the same time,
/// naming both.
pub fn check_overlaps(policy: &Compiled, now: DateTime<Utc>) -> Result<(), FieldError> {
    let from = now - Duration::days(1);
    let to = now + Duration::days(OVERLAP_HORIZON_DAYS);
    let runs: Vec<Vec<Run>> = policy
        .bands
        .iter()
        .map(|b| runs(b, policy.zone, from, to))
        .collect();
    for (j, b) in policy.bands.iter().enumerate() {
        for (i, a) in policy.bands[..j].iter().enumerate() {
            if a.is_scheduled() != b.is_scheduled() || a.priority != b.priority {
                continue;
            }
            if let Some(at) = first_overlap(&runs[i], &runs[j]) {
                return Err(FieldError::new(
                    format!("bands[{j}]"),
                    format!(
                        "bands '{}' and '{}' overlap (first at {}) with the same priority {}; give one a higher priority or move it",
                        a.name,
                        b.name,
                        at.with_timezone(&policy.zone).format("%Y-%m-%d %H:%M %Z"),
                        a.priority
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn first_overlap(a: &[Run], b: &[Run]) -> Option<DateTime<Utc>> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].overlaps(&b[j]) {
            return Some(a[i].start.max(b[j].start));
        }
        if a[i].end <= b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
}

/// The bounds in force at an instant, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    pub min: u32,
    pub max: u32,
    /// The band that sets them; none: the policy's own bounds.
    pub band: Option<String>,
    /// `scheduled` or `periodic`.
    pub band_kind: Option<String>,
    /// When that band's run ends.
    pub until: Option<DateTime<Utc>>,
    /// Other bands running at the same time, which the precedence set aside.
    pub overridden: Vec<String>,
    /// Bands running at the same time with the same kind and priority (a draft's
    /// conflict; a saved policy has none).
    pub conflicts: Vec<String>,
}

/// The envelope at `at`: the policy's bounds, or those of the band that wins by
/// precedence: scheduled beats periodic, then the higher priority, then the narrower
/// window (the shorter run), then the name.
pub fn envelope(policy: &Compiled, at: DateTime<Utc>) -> Envelope {
    let mut running: Vec<(&CompiledBand, Run)> = policy
        .bands
        .iter()
        .filter_map(|b| run_at(b, policy.zone, at).map(|r| (b, r)))
        .collect();
    running.sort_by(|(a, ra), (b, rb)| {
        b.is_scheduled()
            .cmp(&a.is_scheduled())
            .then(b.priority.cmp(&a.priority))
            .then((ra.end - ra.start).cmp(&(rb.end - rb.start)))
            .then(a.name.cmp(&b.name))
    });
    let Some((winner, run)) = running.first() else {
        return Envelope {
            min: policy.policy.min,
            max: policy.policy.max,
            band: None,
            band_kind: None,
            until: None,
            overridden: Vec::new(),
            conflicts: Vec::new(),
        };
    };
    let conflicts: Vec<String> = running[1..]
        .iter()
        .filter(|(b, _)| b.is_scheduled() == winner.is_scheduled() && b.priority == winner.priority)
        .map(|(b, _)| b.name.clone())
        .collect();
    Envelope {
        min: winner.min,
        max: winner.max,
        band: Some(winner.name.clone()),
        band_kind: Some(winner.kind().to_owned()),
        until: Some(run.end),
        overridden: running[1..].iter().map(|(b, _)| b.name.clone()).collect(),
        conflicts: if conflicts.is_empty() {
            conflicts
        } else {
            std::iter::once(winner.name.clone())
                .chain(conflicts)
                .collect()
        },
    }
}

/// The next instants at which some band starts or ends after `after` (for the
/// scheduler: an evaluation at each boundary makes a band take effect on time).
pub fn boundaries(policy: &Compiled, after: DateTime<Utc>, within: Duration) -> Vec<DateTime<Utc>> {
    let mut out: Vec<DateTime<Utc>> = policy
        .bands
        .iter()
        .flat_map(|b| runs(b, policy.zone, after, after + within))
        .flat_map(|r| [r.start, r.end])
        .filter(|t| *t > after && *t <= after + within)
        .collect();
    out.sort();
    out.dedup();
    out
}
