//! The autoscaling policy as tenant admins write it, and its validation into the form the
//! decision function and the schedule use.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;
use crate::spec::{AppSpec, WorkloadKind};

/// How an application's instance count follows its load and the calendar. One per
/// application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The fewest instances, whatever the load or the calendar.
    #[schema(maximum = 100)]
    pub min: u32,
    /// The most instances, whatever the load or the calendar.
    #[schema(minimum = 1, maximum = 100)]
    pub max: u32,
    /// Metric rules; the highest recommendation wins. None: only bands and bounds apply.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub behavior: Behavior,
    /// Scheduled (one-off) and periodic windows that set `min`/`max` while they run.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub bands: Vec<Band>,
    /// The IANA time zone the bands' dates and times are in.
    #[serde(default = "default_time_zone")]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// How often the metrics are read and a decision is taken.
    #[serde(default = "default_sample_interval")]
    #[schema(minimum = 1, maximum = 3600)]
    pub sample_interval_s: u32,
    /// Whether a stateful application may be scaled (scale-in removes the highest
    /// ordinal first, one at a time). Refused for stateful applications unless set.
    #[serde(default)]
    pub allow_stateful: bool,
}

/// One metric and the value per instance it aims for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub metric: Metric,
    /// Per instance: percent of the requested resource for `cpu` and `memory`,
    /// requests per second, milliseconds for `latency_p95`, the query's unit for `promql`.
    #[schema(exclusive_minimum = 0)]
    pub target: f64,
    /// How far the value may stray from the target before the count moves (a ratio).
    #[serde(default = "default_tolerance")]
    #[schema(minimum = 0, maximum = 1)]
    pub tolerance: f64,
    /// The most instances this rule adds in one decision.
    #[serde(default)]
    pub max_step_up: Option<u32>,
    /// The most instances this rule removes in one decision.
    #[serde(default)]
    pub max_step_down: Option<u32>,
}

/// Where a rule's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    /// CPU used, as a percentage of the instance's requested CPU, averaged over the
    /// ready instances.
    Cpu,
    /// Memory used, as a percentage of the instance's requested memory.
    Memory,
    /// Requests per second per ready instance, from the router.
    RequestsPerSecond,
    /// The 95th percentile of request latency, in milliseconds, from the router.
    LatencyP95,
    /// A PromQL query against the configured Prometheus; its value is the application's
    /// total, divided by the ready instances to compare with the target.
    Promql { query: String },
}

impl Metric {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::RequestsPerSecond => "requests_per_second",
            Self::LatencyP95 => "latency_p95",
            Self::Promql { .. } => "promql",
        }
    }
}

/// How fast the count may move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Behavior {
    #[serde(default = "Direction::default_up")]
    pub scale_up: Direction,
    #[serde(default = "Direction::default_down")]
    pub scale_down: Direction,
    /// After someone scales the application by hand, autoscaling leaves the count alone
    /// for this long.
    #[serde(default = "default_cooldown")]
    #[schema(maximum = 86400)]
    pub manual_cooldown_s: u32,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            scale_up: Direction::default_up(),
            scale_down: Direction::default_down(),
            manual_cooldown_s: default_cooldown(),
        }
    }
}

/// Limits for one direction of change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Direction {
    /// A change in this direction happens only if every recommendation within this
    /// window agrees (for scale-down: the highest recommendation in the window wins).
    #[schema(maximum = 3600)]
    pub stabilization_s: u32,
    /// Rate limits per period; `select` picks among them.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub limits: Vec<RateLimit>,
    #[serde(default)]
    pub select: Select,
}

impl Direction {
    /// Immediately, and at most +100% or +4 instances per 15 s, whichever is larger.
    pub fn default_up() -> Self {
        Self {
            stabilization_s: 0,
            limits: vec![
                RateLimit {
                    kind: LimitKind::Percent,
                    value: 100,
                    period_s: 15,
                },
                RateLimit {
                    kind: LimitKind::Instances,
                    value: 4,
                    period_s: 15,
                },
            ],
            select: Select::Max,
        }
    }

    /// After 300 s of agreement, and at most -1 instance per 60 s.
    pub fn default_down() -> Self {
        Self {
            stabilization_s: 300,
            limits: vec![RateLimit {
                kind: LimitKind::Instances,
                value: 1,
                period_s: 60,
            }],
            select: Select::Max,
        }
    }
}

/// At most `value` instances (or percent of the count at the period's start) per
/// `period_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub kind: LimitKind,
    #[schema(minimum = 1, maximum = 1000)]
    pub value: u32,
    #[schema(minimum = 1, maximum = 3600)]
    pub period_s: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Instances,
    Percent,
}

/// Which rate limit applies when several do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The one that allows the largest change.
    #[default]
    Max,
    /// The one that allows the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// A window of time that sets the bounds while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Band {
    /// Unique within the policy; named in errors and in the ledger.
    #[schema(min_length = 1, max_length = 63)]
    pub name: String,
    #[schema(maximum = 100)]
    pub min: u32,
    #[schema(minimum = 1, maximum = 100)]
    pub max: u32,
    /// Among overlapping bands of one kind, the higher priority wins; equal priorities
    /// may not overlap.
    #[serde(default)]
    pub priority: i32,
    pub when: When,
    /// Local dates on which the band does not start (holidays).
    #[serde(default)]
    #[schema(max_items = 366)]
    pub exclude: Vec<NaiveDate>,
}

/// When a band runs. Local dates and times in the policy's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum When {
    /// Once, from `start` to `end` (`YYYY-MM-DDTHH:MM`).
    Scheduled { start: String, end: String },
    /// Every matching day from `start_time` to `end_time` (`HH:MM`; an end at or
    /// before the start ends the next day). No days given: every day.
    Periodic {
        #[serde(default)]
        #[schema(value_type = Vec<String>, example = json!(["Mon", "Tue"]))]
        days_of_week: Vec<Weekday>,
        #[serde(default)]
        days_of_month: Vec<u32>,
        start_time: String,
        end_time: String,
    },
    /// Whenever a cron expression (5 or 6 fields, local time) fires, for
    /// `duration_minutes`.
    Cron {
        expression: String,
        #[schema(minimum = 1, maximum = 10080)]
        duration_minutes: u32,
    },
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}
fn default_sample_interval() -> u32 {
    5
}
fn default_tolerance() -> f64 {
    0.1
}
fn default_cooldown() -> u32 {
    300
}

/// The most rules, bands and rate limits a policy holds.
pub const MAX_RULES: usize = 10;
pub const MAX_BANDS: usize = 50;
pub const MAX_LIMITS: usize = 10;
pub const MAX_QUERY_BYTES: usize = 2000;

/// A band with its times parsed.
#[derive(Debug, Clone)]
pub struct CompiledBand {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub priority: i32,
    pub exclude: Vec<NaiveDate>,
    pub window: Window,
}

#[derive(Debug, Clone)]
pub enum Window {
    Scheduled {
        start: NaiveDateTime,
        end: NaiveDateTime,
    },
    Daily {
        days_of_week: Vec<Weekday>,
        days_of_month: Vec<u32>,
        start: NaiveTime,
        end: NaiveTime,
    },
    Cron {
        cron: Box<croner::Cron>,
        minutes: u32,
    },
}

impl CompiledBand {
    pub fn is_scheduled(&self) -> bool {
        matches!(self.window, Window::Scheduled { .. })
    }
    /// "scheduled" or "periodic": scheduled bands beat periodic ones.
    pub fn kind(&self) -> &'static str {
        if self.is_scheduled() {
            "scheduled"
        } else {
            "periodic"
        }
    }
}

/// A policy whose every field has been checked.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub policy: Policy,
    pub zone: Tz,
    pub bands: Vec<CompiledBand>,
}

/// The years a policy's dates may name (so that date arithmetic can never overflow).
pub const YEARS: std::ops::RangeInclusive<i32> = 1970..=2200;

/// Whether an instant lies in [`YEARS`].
pub fn in_years(at: DateTime<Utc>) -> bool {
    YEARS.contains(&chrono::Datelike::year(&at))
}

fn parse_local_datetime(field: &str, value: &str) -> Result<NaiveDateTime, FieldError> {
    let parsed = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .ok_or_else(|| {
            FieldError::new(
                field,
                "must be a local date and time, e.g. 2026-12-24T08:00",
            )
        })?;
    if !YEARS.contains(&chrono::Datelike::year(&parsed)) {
        return Err(FieldError::new(
            field,
            format!("must be in the years {} to {}", YEARS.start(), YEARS.end()),
        ));
    }
    Ok(parsed)
}

fn parse_time(field: &str, value: &str) -> Result<NaiveTime, FieldError> {
    ["%H:%M", "%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveTime::parse_from_str(value, f).ok())
        .ok_or_else(|| FieldError::new(field, "must be a time of day, e.g. 08:30"))
}

impl Policy {
    /// Checks the policy for an application of `kind` and compiles its bands.
    /// `room`: the most instances the tenant's quota leaves this application, when the
    /// quota limits it.
    pub fn compile(
        &self,
        kind: WorkloadKind,
        room: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Compiled, FieldError> {
        let compiled = self.compile_draft_within(kind, room, now)?;
        super::schedule::check_overlaps(&compiled, now)?;
        Ok(compiled)
    }

    /// Checks a draft for previewing: everything [`Policy::compile`] checks except what
    /// the preview exists to show (overlapping bands, bands beyond the quota).
    pub fn compile_draft(
        &self,
        kind: WorkloadKind,
        now: DateTime<Utc>,
    ) -> Result<Compiled, FieldError> {
        self.compile_draft_within(kind, None, now)
    }

    fn compile_draft_within(
        &self,
        kind: WorkloadKind,
        room: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<Compiled, FieldError> {
        match kind {
            WorkloadKind::Service => {}
            WorkloadKind::Stateful if self.allow_stateful => {}
            WorkloadKind::Stateful => {
                return Err(FieldError::new(
                    "allow_stateful",
                    "a stateful application scales only when the policy allows it (scale-in removes the highest ordinal first)",
                ));
            }
            other => {
                return Err(FieldError::new(
                    "kind",
                    format!(
                        "a {} application cannot be autoscaled; only services and stateful applications can",
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        let most = AppSpec::MAX_REPLICAS;
        if self.max == 0 || self.max > most {
            return Err(FieldError::new(
                "max",
                format!("must be between 1 and {most}"),
            ));
        }
        if self.min > self.max {
            return Err(FieldError::new(
                "min",
                format!("must be at most max ({})", self.max),
            ));
        }
        if let Some(room) = room
            && self.min > room
        {
            return Err(FieldError::new(
                "min",
                format!(
                    "{} instances exceed what the tenant's quota leaves this application ({room})",
                    self.min
                ),
            ));
        }
        let zone: Tz = self.time_zone.parse().map_err(|_| {
            FieldError::new(
                "time_zone",
                format!(
                    "unknown time zone '{}'; use an IANA name such as Europe/Berlin",
                    self.time_zone.chars().take(64).collect::<String>()
                ),
            )
        })?;
        if !(1..=3600).contains(&self.sample_interval_s) {
            return Err(FieldError::new(
                "sample_interval_s",
                "must be between 1 and 3600 seconds",
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(FieldError::new(
                "rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            if !rule.target.is_finite() || rule.target <= 0.0 {
                return Err(FieldError::new(at("target"), "must be a number above 0"));
            }
            if !(0.0..=1.0).contains(&rule.tolerance) {
                return Err(FieldError::new(at("tolerance"), "must be between 0 and 1"));
            }
            if let Metric::Promql { query } = &rule.metric
                && (query.trim().is_empty() || query.len() > MAX_QUERY_BYTES)
            {
                return Err(FieldError::new(
                    at("metric.query"),
                    format!("must be a PromQL query of 1 to {MAX_QUERY_BYTES} bytes"),
                ));
            }
            for (f, step) in [
                ("max_step_up", rule.max_step_up),
                ("max_step_down", rule.max_step_down),
            ] {
                if step == Some(0) || step.is_some_and(|s| s > most) {
                    return Err(FieldError::new(
                        at(f),
                        format!("must be between 1 and {most}"),
                    ));
                }
            }
        }
        for (name, direction) in [
            ("behavior.scale_up", &self.behavior.scale_up),
            ("behavior.scale_down", &self.behavior.scale_down),
        ] {
            if direction.stabilization_s > 3600 {
                return Err(FieldError::new(
                    format!("{name}.stabilization_s"),
                    "must be at most 3600 seconds",
                ));
            }
            if direction.limits.len() > MAX_LIMITS {
                return Err(FieldError::new(
                    format!("{name}.limits"),
                    format!("at most {MAX_LIMITS} limits"),
                ));
            }
            for (i, limit) in direction.limits.iter().enumerate() {
                if !(1..=1000).contains(&limit.value) {
                    return Err(FieldError::new(
                        format!("{name}.limits[{i}].value"),
                        "must be between 1 and 1000",
                    ));
                }
                if !(1..=3600).contains(&limit.period_s) {
                    return Err(FieldError::new(
                        format!("{name}.limits[{i}].period_s"),
                        "must be between 1 and 3600 seconds",
                    ));
                }
            }
        }
        if self.behavior.manual_cooldown_s > 86_400 {
            return Err(FieldError::new(
                "behavior.manual_cooldown_s",
                "must be at most 86400 seconds",
            ));
        }
        if self.bands.len() > MAX_BANDS {
            return Err(FieldError::new(
                "bands",
                format!("at most {MAX_BANDS} bands"),
            ));
        }
        let mut bands = Vec::with_capacity(self.bands.len());
        for (i, band) in self.bands.iter().enumerate() {
            bands.push(self.compile_band(i, band, room, now)?);
        }
        Ok(Compiled {
            policy: self.clone(),
            zone,
            bands,
        })
    }

    fn compile_band(
        &self,
        i: usize,
        band: &Band,
        room: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<CompiledBand, FieldError> {
        let at = |f: &str| format!("bands[{i}].{f}");
        let name_ok = !band.name.is_empty()
            && band.name.len() <= 63
            && band
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' '));
        if !name_ok {
            return Err(FieldError::new(
                at("name"),
                "must be 1 to 63 letters, digits, spaces, '-' or '_'",
            ));
        }
        if self.bands[..i].iter().any(|b| b.name == band.name) {
            return Err(FieldError::new(
                at("name"),
                format!("another band is already named '{}'", band.name),
            ));
        }
        if band.min > band.max {
            return Err(FieldError::new(
                at("min"),
                format!("must be at most the band's max ({})", band.max),
            ));
        }
        if band.min < self.min || band.max > self.max {
            return Err(FieldError::new(
                if band.min < self.min {
                    at("min")
                } else {
                    at("max")
                },
                format!(
                    "the band's {}..{} must lie within the policy's bounds {}..{}",
                    band.min, band.max, self.min, self.max
                ),
            ));
        }
        if let Some(room) = room
            && band.min > room
        {
            return Err(FieldError::new(
                at("min"),
                format!(
                    "band '{}' asks for at least {} instances; the tenant's quota leaves this application {room}",
                    band.name, band.min
                ),
            ));
        }
        if band.exclude.len() > 366 {
            return Err(FieldError::new(at("exclude"), "at most 366 dates"));
        }
        let window = compile_when(&at, &band.when)?;
        let compiled = CompiledBand {
            name: band.name.clone(),
            min: band.min,
            max: band.max,
            priority: band.priority,
            exclude: band.exclude.clone(),
            window,
        };
        if !matches!(compiled.window, Window::Scheduled { .. })
            && super::schedule::never_starts(&compiled, now)
        {
            return Err(FieldError::new(
                match band.when {
                    When::Cron { .. } => at("when.expression"),
                    _ => at("when"),
                },
                format!("band '{}' never starts", band.name),
            ));
        }
        Ok(compiled)
    }
}

/// Checks a window's dates, times or cron expression (`at` names a field of it).
pub fn compile_when(at: &dyn Fn(&str) -> String, when: &When) -> Result<Window, FieldError> {
    Ok(match when {
        When::Scheduled { start, end } => {
            let start = parse_local_datetime(&at("when.start"), start)?;
            let end = parse_local_datetime(&at("when.end"), end)?;
            if end <= start {
                return Err(FieldError::new(at("when.end"), "must be after the start"));
            }
            Window::Scheduled { start, end }
        }
        When::Periodic {
            days_of_week,
            days_of_month,
            start_time,
            end_time,
        } => {
            if let Some(day) = days_of_month.iter().find(|d| !(1..=31).contains(*d)) {
                return Err(FieldError::new(
                    at("when.days_of_month"),
                    format!("{day} is not a day of a month (1 to 31)"),
                ));
            }
            if days_of_week.len() > 7 || days_of_month.len() > 31 {
                return Err(FieldError::new(at("when"), "too many days"));
            }
            let start = parse_time(&at("when.start_time"), start_time)?;
            let end = parse_time(&at("when.end_time"), end_time)?;
            Window::Daily {
                days_of_week: days_of_week.clone(),
                days_of_month: days_of_month.clone(),
                start,
                end,
            }
        }
        When::Cron {
            expression,
            duration_minutes,
        } => {
            let cron = crate::spec::parse_schedule(expression)
                .map_err(|e| e.for_field(at("when.expression")))?;
            if !(1..=10_080).contains(duration_minutes) {
                return Err(FieldError::new(
                    at("when.duration_minutes"),
                    "must be between 1 and 10080 (a week)",
                ));
            }
            Window::Cron {
                cron: Box::new(cron),
                minutes: *duration_minutes,
            }
        }
    })
}
