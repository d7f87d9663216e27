//! Freeze windows: times in which releases into an environment wait. One-off or
//! recurring, in an IANA time zone, on the same calendar as autoscaling bands (so the
//! same rules hold across daylight-saving changes).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;
use crate::autoscaling::policy::{CompiledBand, When, compile_when};
use crate::autoscaling::schedule::{never_starts, run_at};

/// A window in which releases wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    #[schema(min_length = 1, max_length = 63)]
    pub name: String,
    pub when: When,
    /// Local dates on which a recurring window does not start.
    #[serde(default)]
    pub exclude: Vec<NaiveDate>,
}

/// The windows of an environment, checked.
#[derive(Debug, Clone)]
pub struct Freezes {
    zone: Tz,
    windows: Vec<CompiledBand>,
}

/// At most this many windows per environment.
pub const MAX_WINDOWS: usize = 20;

impl Freezes {
    pub fn compile(
        windows: &[FreezeWindow],
        zone: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldError> {
        let zone: Tz = zone.parse().map_err(|_| {
            FieldError::new(
                "time_zone",
                "unknown time zone; use an IANA name such as Europe/Berlin",
            )
        })?;
        if windows.len() > MAX_WINDOWS {
            return Err(FieldError::new(
                "freezes",
                format!("at most {MAX_WINDOWS} windows"),
            ));
        }
        let mut compiled = Vec::with_capacity(windows.len());
        for (i, w) in windows.iter().enumerate() {
            let at = |f: &str| format!("freezes[{i}].{f}");
            if w.name.trim().is_empty() || w.name.len() > 63 {
                return Err(FieldError::new(at("name"), "must be 1 to 63 characters"));
            }
            let band = CompiledBand {
                name: w.name.clone(),
                min: 0,
                max: 0,
                priority: 0,
                exclude: w.exclude.clone(),
                window: compile_when(&at, &w.when)?,
            };
            if !matches!(w.when, When::Scheduled { .. }) && never_starts(&band, now) {
                return Err(FieldError::new(
                    at("when"),
                    format!("freeze '{}' never starts", w.name),
                ));
            }
            compiled.push(band);
        }
        Ok(Self {
            zone,
            windows: compiled,
        })
    }

    /// The window in force at `at` (the one that ends last, when several), and when it
    /// ends.
    pub fn in_force(&self, at: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        self.windows
            .iter()
            .filter_map(|w| run_at(w, self.zone, at).map(|r| (w.name.clone(), r.end)))
            .max_by_key(|(_, end)| *end)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn releases_wait_in_a_weekend_freeze_and_a_year_end_freeze_in_local_time() {
        let windows: Vec<FreezeWindow> = serde_json::from_value(json!([
            {"name": "weekend", "when": {"type": "periodic", "days_of_week": ["Fri"], "start_time": "16:00", "end_time": "16:00"}},
            {"name": "year end", "when": {"type": "scheduled", "start": "2026-12-23T00:00", "end": "2027-01-04T00:00"}}
        ]))
        .unwrap_or_default();
        let f = Freezes::compile(&windows, "Europe/Berlin", at("2026-11-27T00:00:00Z"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Friday 2026-11-27 16:00 in Berlin is 15:00 UTC; the freeze lasts a day.
        assert_eq!(f.in_force(at("2026-11-27T14:59:00Z")), None);
        assert_eq!(
            f.in_force(at("2026-11-27T15:00:00Z")),
            Some(("weekend".to_owned(), at("2026-11-28T15:00:00Z")))
        );
        // Both at once (Friday 2026-12-25): the one that ends last says when releases go.
        assert_eq!(
            f.in_force(at("2026-12-25T16:00:00Z")).map(|(n, _)| n),
            Some("year end".to_owned())
        );
        let bad: Vec<FreezeWindow> = serde_json::from_value(json!([
            {"name": "never", "when": {"type": "cron", "expression": "0 0 30 2 *", "duration_minutes": 60}}
        ]))
        .unwrap_or_default();
        let err = Freezes::compile(&bad, "UTC", at("2026-11-27T00:00:00Z"))
            .err()
            .map(|e| e.field);
        assert_eq!(err.as_deref(), Some("freezes[0].when"));
        assert!(Freezes::compile(&[], "Atlantis/Capital", at("2026-11-27T00:00:00Z")).is_err());
    }
}
