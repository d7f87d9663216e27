use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::spec::WorkloadKind;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn policy(v: serde_json::Value) -> Policy {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

const NOW: &str = "2026-11-27T10:00:00Z";

fn compile(v: serde_json::Value) -> Compiled {
    policy(v)
        .compile(WorkloadKind::Service, None, utc(NOW))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn refused(v: serde_json::Value, kind: WorkloadKind, room: Option<u32>) -> (String, String) {
    match policy(v).compile(kind, room, utc(NOW)) {
        Ok(_) => panic!("accepted"),
        Err(e) => (e.field, e.message),
    }
}

fn daily(name: &str, min: u32, max: u32, start: &str, end: &str) -> serde_json::Value {
    json!({"name": name, "min": min, "max": max,
           "when": {"type": "periodic", "start_time": start, "end_time": end}})
}

#[test]
fn hostile_policies_are_refused_naming_the_field() {
    let cases: Vec<(serde_json::Value, WorkloadKind, Option<u32>, &str, &str)> = vec![
        (
            json!({"min": 1, "max": 4, "time_zone": "Mars/Olympus"}),
            WorkloadKind::Service,
            None,
            "time_zone",
            "unknown time zone",
        ),
        (
            json!({"min": 5, "max": 4}),
            WorkloadKind::Service,
            None,
            "min",
            "at most max",
        ),
        (
            json!({"min": 0, "max": 0}),
            WorkloadKind::Service,
            None,
            "max",
            "between 1 and 100",
        ),
        (
            json!({"min": 0, "max": 101}),
            WorkloadKind::Service,
            None,
            "max",
            "between 1 and 100",
        ),
        (
            json!({"min": 6, "max": 10}),
            WorkloadKind::Service,
            Some(5),
            "min",
            "quota",
        ),
        (
            json!({"min": 1, "max": 10, "bands": [daily("peak", 8, 10, "08:00", "18:00")]}),
            WorkloadKind::Service,
            Some(6),
            "bands[0].min",
            "quota",
        ),
        (
            json!({"min": 1, "max": 4}),
            WorkloadKind::Cronjob,
            None,
            "kind",
            "cannot be autoscaled",
        ),
        (
            json!({"min": 1, "max": 4}),
            WorkloadKind::Daemon,
            None,
            "kind",
            "cannot be autoscaled",
        ),
        (
            json!({"min": 1, "max": 4}),
            WorkloadKind::Stateful,
            None,
            "allow_stateful",
            "highest ordinal",
        ),
        (
            json!({"min": 1, "max": 4, "sample_interval_s": 0}),
            WorkloadKind::Service,
            None,
            "sample_interval_s",
            "between 1",
        ),
        (
            json!({"min": 1, "max": 4, "rules": [{"metric": {"type": "cpu"}, "target": 0}]}),
            WorkloadKind::Service,
            None,
            "rules[0].target",
            "above 0",
        ),
        (
            json!({"min": 1, "max": 4, "rules": [{"metric": {"type": "promql", "query": " "}, "target": 5}]}),
            WorkloadKind::Service,
            None,
            "rules[0].metric.query",
            "PromQL",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [{"name": "never", "min": 1, "max": 2,
            "when": {"type": "cron", "expression": "0 0 30 2 *", "duration_minutes": 60}}]}),
            WorkloadKind::Service,
            None,
            "bands[0].when.expression",
            "never starts",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [{"name": "x", "min": 1, "max": 2,
            "when": {"type": "cron", "expression": "every day", "duration_minutes": 60}}]}),
            WorkloadKind::Service,
            None,
            "bands[0].when.expression",
            "cron expression",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [daily("a", 1, 5, "08:00", "09:00")]}),
            WorkloadKind::Service,
            None,
            "bands[0].max",
            "within the policy's bounds",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [daily("a", 1, 2, "8 o'clock", "09:00")]}),
            WorkloadKind::Service,
            None,
            "bands[0].when.start_time",
            "time of day",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [{"name": "b", "min": 1, "max": 2,
            "when": {"type": "scheduled", "start": "2026-12-24T10:00", "end": "2026-12-24T09:00"}}]}),
            WorkloadKind::Service,
            None,
            "bands[0].when.end",
            "after the start",
        ),
        (
            json!({"min": 1, "max": 4, "bands": [daily("a", 1, 2, "08:00", "09:00"), daily("a", 1, 2, "10:00", "11:00")]}),
            WorkloadKind::Service,
            None,
            "bands[1].name",
            "already named",
        ),
        (
            json!({"min": 1, "max": 4, "behavior": {"scale_down": {"stabilization_s": 7200}}}),
            WorkloadKind::Service,
            None,
            "behavior.scale_down.stabilization_s",
            "3600",
        ),
    ];
    for (v, kind, room, field, words) in cases {
        let (f, m) = refused(v.clone(), kind, room);
        assert_eq!(f, field, "{v}: {m}");
        assert!(m.contains(words), "{v}: {m}");
    }
}

#[test]
fn overlapping_bands_of_one_priority_are_refused_with_both_names() {
    let (field, message) = refused(
        json!({"min": 1, "max": 10, "bands": [
            daily("mornings", 2, 4, "08:00", "12:00"),
            {"name": "fridays", "min": 3, "max": 6,
             "when": {"type": "periodic", "days_of_week": ["Fri"], "start_time": "11:00", "end_time": "13:00"}}
        ]}),
        WorkloadKind::Service,
        None,
    );
    assert_eq!(field, "bands[1]");
    assert!(
        message.contains("'mornings'") && message.contains("'fridays'"),
        "{message}"
    );
    // With a priority, or as a scheduled band against a periodic one, they may overlap.
    compile(json!({"min": 1, "max": 10, "bands": [
        daily("mornings", 2, 4, "08:00", "12:00"),
        {"name": "fridays", "min": 3, "max": 6, "priority": 1,
         "when": {"type": "periodic", "days_of_week": ["Fri"], "start_time": "11:00", "end_time": "13:00"}},
        {"name": "launch", "min": 8, "max": 10,
         "when": {"type": "scheduled", "start": "2026-12-04T09:00", "end": "2026-12-04T17:00"}}
    ]}));
    // Two scheduled bands that overlap.
    let (field, message) = refused(
        json!({"min": 1, "max": 10, "bands": [
            {"name": "a", "min": 1, "max": 2, "when": {"type": "scheduled", "start": "2026-12-04T09:00", "end": "2026-12-04T17:00"}},
            {"name": "b", "min": 1, "max": 2, "when": {"type": "scheduled", "start": "2026-12-04T16:00", "end": "2026-12-04T18:00"}}
        ]}),
        WorkloadKind::Service,
        None,
    );
    assert_eq!(field, "bands[1]");
    assert!(message.contains("'a' and 'b'"), "{message}");
}

#[test]
fn precedence_scheduled_then_priority_then_the_narrower_window() {
    let p = compile(json!({"min": 1, "max": 20, "time_zone": "UTC", "bands": [
        daily("day", 2, 10, "06:00", "22:00"),
        {"name": "lunch", "min": 4, "max": 10, "priority": 1,
         "when": {"type": "periodic", "start_time": "11:00", "end_time": "14:00"}},
        {"name": "sale", "min": 12, "max": 20,
         "when": {"type": "scheduled", "start": "2026-12-01T12:00", "end": "2026-12-01T13:00"}},
    ]}));
    let at = |s: &str| schedule::envelope(&p, utc(s));
    assert_eq!(
        (
            at("2026-11-30T05:00:00Z").min,
            at("2026-11-30T05:00:00Z").band
        ),
        (1, None)
    );
    assert_eq!(at("2026-11-30T07:00:00Z").band.as_deref(), Some("day"));
    let lunch = at("2026-11-30T12:00:00Z");
    assert_eq!((lunch.band.as_deref(), lunch.min), (Some("lunch"), 4));
    assert_eq!(lunch.overridden, vec!["day".to_owned()]);
    let sale = at("2026-12-01T12:30:00Z");
    assert_eq!(
        (sale.band.as_deref(), sale.min, sale.band_kind.as_deref()),
        (Some("sale"), 12, Some("scheduled"))
    );
    // Equal priority, different lengths (a draft may hold this; the preview flags it):
    // the narrower run wins.
    let draft = policy(json!({"min": 1, "max": 20, "bands": [
        daily("long", 2, 10, "06:00", "22:00"),
        daily("short", 5, 10, "09:00", "10:00"),
    ]}));
    let zone: chrono_tz::Tz = chrono_tz::UTC;
    let compiled = Compiled {
        policy: draft.clone(),
        zone,
        bands: draft
            .bands
            .iter()
            .map(|b| {
                let single = Policy {
                    bands: vec![b.clone()],
                    ..draft.clone()
                };
                single
                    .compile(WorkloadKind::Service, None, utc(NOW))
                    .map(|c| c.bands[0].clone())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect(),
    };
    let env = schedule::envelope(&compiled, utc("2026-11-30T09:30:00Z"));
    assert_eq!(env.band.as_deref(), Some("short"));
    assert_eq!(env.conflicts, vec!["short".to_owned(), "long".to_owned()]);
}

#[test]
fn a_band_in_a_skipped_hour_starts_at_the_first_valid_instant_and_one_in_a_repeated_hour_runs_once()
{
    // Berlin: 2027-03-28 02:00 CET jumps to 03:00 CEST; 2027-10-31 03:00 CEST falls
    // back to 02:00 CET.
    let p = compile(
        json!({"min": 1, "max": 10, "time_zone": "Europe/Berlin", "bands": [
            daily("night", 3, 5, "02:30", "04:00"),
        ]}),
    );
    let band = &p.bands[0];
    let runs = schedule::runs(
        band,
        p.zone,
        utc("2027-03-27T12:00:00Z"),
        utc("2027-03-28T12:00:00Z"),
    );
    assert_eq!(runs.len(), 1);
    // 02:30 does not exist that night: the run starts at 03:00 CEST = 01:00 UTC.
    assert_eq!(runs[0].start, utc("2027-03-28T01:00:00Z"));
    assert_eq!(runs[0].end, utc("2027-03-28T02:00:00Z"));
    let fall = schedule::runs(
        band,
        p.zone,
        utc("2027-10-30T12:00:00Z"),
        utc("2027-10-31T12:00:00Z"),
    );
    assert_eq!(fall.len(), 1, "{fall:?}");
    // 02:30 exists twice: the first one (CEST, +02:00), until 04:00 CET (+01:00).
    assert_eq!(fall[0].start, utc("2027-10-31T00:30:00Z"));
    assert_eq!(fall[0].end, utc("2027-10-31T03:00:00Z"));
    // A cron band in the repeated hour runs once too.
    let c = compile(
        json!({"min": 1, "max": 10, "time_zone": "Europe/Berlin", "bands": [
            {"name": "c", "min": 2, "max": 3, "when": {"type": "cron", "expression": "30 2 * * *", "duration_minutes": 10}},
        ]}),
    );
    let cron = schedule::runs(
        &c.bands[0],
        c.zone,
        utc("2027-10-30T12:00:00Z"),
        utc("2027-10-31T12:00:00Z"),
    );
    assert_eq!(
        cron.iter().map(|r| r.start).collect::<Vec<_>>(),
        vec![utc("2027-10-31T00:30:00Z")]
    );
    let spring = schedule::runs(
        &c.bands[0],
        c.zone,
        utc("2027-03-27T12:00:00Z"),
        utc("2027-03-28T12:00:00Z"),
    );
    assert_eq!(
        spring.iter().map(|r| r.start).collect::<Vec<_>>(),
        vec![utc("2027-03-28T01:00:00Z")]
    );
}

#[test]
fn the_southern_hemisphere_changes_the_other_way_round() {
    // Sydney: 2027-04-04 03:00 AEDT falls back to 02:00 AEST; 2027-10-03 02:00 AEST
    // jumps to 03:00 AEDT.
    let p = compile(
        json!({"min": 1, "max": 10, "time_zone": "Australia/Sydney", "bands": [
            daily("early", 2, 4, "02:15", "06:00"),
        ]}),
    );
    let april = schedule::runs(
        &p.bands[0],
        p.zone,
        utc("2027-04-03T00:00:00Z"),
        utc("2027-04-04T12:00:00Z"),
    );
    let april: Vec<_> = april
        .iter()
        .filter(|r| r.start >= utc("2027-04-03T12:00:00Z"))
        .collect();
    assert_eq!(april.len(), 1);
    // The first 02:15 (AEDT, +11:00) until 06:00 AEST (+10:00): 4 h 45 min that night.
    assert_eq!(april[0].start, utc("2027-04-03T15:15:00Z"));
    assert_eq!(april[0].end, utc("2027-04-03T20:00:00Z"));
    let october = schedule::runs(
        &p.bands[0],
        p.zone,
        utc("2027-10-02T12:00:00Z"),
        utc("2027-10-03T12:00:00Z"),
    );
    assert_eq!(october.len(), 1);
    // 02:15 is skipped: 03:00 AEDT = 16:00 UTC the day before.
    assert_eq!(october[0].start, utc("2027-10-02T16:00:00Z"));
    let preview = preview(&p, utc("2027-09-30T00:00:00Z"), None);
    assert_eq!(preview.points.len(), 672);
    assert_eq!(preview.dst_transitions.len(), 1);
    assert_eq!(
        (
            preview.dst_transitions[0].from_offset.as_str(),
            preview.dst_transitions[0].to_offset.as_str()
        ),
        ("+10:00", "+11:00")
    );
    assert_eq!(preview.dst_transitions[0].at, utc("2027-10-02T16:00:00Z"));
}

#[test]
fn a_leap_day_band_and_a_holiday_exclusion() {
    let p = compile(
        json!({"min": 1, "max": 10, "time_zone": "America/New_York", "bands": [
            {"name": "month-end", "min": 6, "max": 10,
             "when": {"type": "periodic", "days_of_month": [29], "start_time": "00:00", "end_time": "23:59"}},
            {"name": "weekdays", "min": 3, "max": 8, "priority": -1, "exclude": ["2026-12-25"],
             "when": {"type": "periodic", "days_of_week": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start_time": "09:00", "end_time": "17:00"}},
        ]}),
    );
    // 2028-02-29 is a Tuesday: the leap-day band wins by priority.
    let leap = schedule::envelope(&p, utc("2028-02-29T15:00:00Z"));
    assert_eq!((leap.band.as_deref(), leap.min), (Some("month-end"), 6));
    assert_eq!(leap.overridden, vec!["weekdays".to_owned()]);
    let day_before = schedule::envelope(&p, utc("2028-02-28T15:00:00Z"));
    assert_eq!(day_before.band.as_deref(), Some("weekdays"));
    // 2026-12-25 (a Friday) is excluded; the 24th is not.
    assert_eq!(
        schedule::envelope(&p, utc("2026-12-25T15:00:00Z")).band,
        None
    );
    assert_eq!(
        schedule::envelope(&p, utc("2026-12-24T15:00:00Z"))
            .band
            .as_deref(),
        Some("weekdays")
    );
    assert_eq!(
        NaiveDate::from_ymd_opt(2028, 2, 29)
            .map(|d| d.to_string())
            .as_deref(),
        Some("2028-02-29")
    );
}

#[test]
fn the_preview_flags_conflicts_of_a_draft_and_quota_shortfalls() {
    let draft = policy(json!({"min": 1, "max": 10, "bands": [
        daily("a", 2, 9, "08:00", "12:00"),
    ]}));
    let p = draft
        .compile(WorkloadKind::Service, None, utc(NOW))
        .unwrap_or_else(|e| panic!("{e}"));
    let preview = preview(&p, utc("2026-11-27T00:07:00Z"), Some(8));
    assert_eq!(preview.from, utc("2026-11-27T00:00:00Z"));
    assert_eq!(preview.points.len(), 7 * 96);
    assert!(preview.quota_shortfalls.is_empty());
    let nine = preview::preview(&p, utc(NOW), Some(1));
    assert_eq!(nine.quota_shortfalls, vec!["a".to_owned()]);
    assert!(nine.points.iter().any(|pt| pt.quota_shortfall));
    let at8 = preview
        .points
        .iter()
        .find(|pt| pt.at == utc("2026-11-27T08:00:00Z"));
    assert_eq!(at8.map(|pt| (pt.min, pt.max)), Some((2, 9)));
    let at12 = preview
        .points
        .iter()
        .find(|pt| pt.at == utc("2026-11-27T12:00:00Z"));
    assert_eq!(at12.map(|pt| (pt.min, pt.max)), Some((1, 10)));
}

fn cpu_policy(extra: serde_json::Value) -> Compiled {
    let mut v = json!({"min": 1, "max": 20, "rules": [{"metric": {"type": "cpu"}, "target": 50}]});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    compile(v)
}

fn reading(value: f64) -> Option<Reading> {
    Some(Reading { value, window_s: 5 })
}

fn run(
    p: &Compiled,
    current: u32,
    readings: &[Option<Reading>],
    history: &[Recommended],
    changes: &[Change],
) -> Decision {
    decide(
        p,
        &Inputs {
            now: utc(NOW),
            current,
            ready: current,
            readings,
            history,
            history_since: utc(NOW) - Duration::hours(1),
            changes,
            scaled_by_hand_at: None,
            quota_room: None,
            one_at_a_time_down: false,
            capacity: None,
        },
    )
}

#[test]
fn the_hpa_formula_scales_up_at_once_within_the_rate_limit() {
    let p = cpu_policy(json!({}));
    // 2 instances at 150% of target: ceil(2 × 3) = 6; +100% or +4 per 15 s allows 6.
    let d = run(&p, 2, &[reading(150.0)], &[], &[]);
    assert_eq!(d.desired, 6, "{d:?}");
    assert_eq!(d.reason, "2 → 6: highest recommendation: 6 (cpu)");
    // 2 → 20 is limited to max(2 × 2, 2 + 4) = 6.
    let d = run(&p, 2, &[reading(500.0)], &[], &[]);
    assert_eq!(d.desired, 6);
    assert_eq!(d.clamps.last().map(|c| c.step.as_str()), Some("rate_limit"));
    // Within the tolerance nothing moves.
    let d = run(&p, 4, &[reading(54.0)], &[], &[]);
    assert_eq!(d.desired, 4);
    assert!(!d.is_notable());
}

#[test]
fn scale_down_waits_for_the_window_and_a_missing_metric_never_scales_down() {
    let p = cpu_policy(json!({}));
    let now = utc(NOW);
    // A recommendation of 6 two minutes ago holds the count at 6 for the 300 s window.
    let history = [Recommended {
        at: now - Duration::seconds(120),
        count: 6,
    }];
    let d = run(&p, 6, &[reading(10.0)], &history, &[]);
    assert_eq!(d.desired, 6);
    assert!(
        d.reason
            .starts_with("held at 6 by the scale-down window until 10:03:00"),
        "{}",
        d.reason
    );
    assert!(d.is_notable());
    // Once it is older than the window: -1 per 60 s.
    let old = [Recommended {
        at: now - Duration::seconds(400),
        count: 6,
    }];
    let d = run(&p, 6, &[reading(10.0)], &old, &[]);
    assert_eq!(d.desired, 5, "{d:?}");
    // The evaluator started 100 s ago: it cannot know the window yet.
    let d = decide(
        &p,
        &Inputs {
            history_since: now - Duration::seconds(100),
            ..inputs(&p, 6, &[reading(10.0)])
        },
    );
    assert_eq!(d.desired, 6);
    let d = run(&p, 6, &[None], &old, &[]);
    assert_eq!(d.desired, 6);
    assert_eq!(d.rules[0].note, "metric missing");
    // Two rules: one missing, one asking for more: up.
    let two = compile(json!({"min": 1, "max": 20, "rules": [
        {"metric": {"type": "cpu"}, "target": 50},
        {"metric": {"type": "requests_per_second"}, "target": 100}]}));
    let d = run(&two, 2, &[None, reading(300.0)], &[], &[]);
    assert_eq!(d.desired, 6);
}

fn inputs<'a>(_p: &Compiled, current: u32, readings: &'a [Option<Reading>]) -> Inputs<'a> {
    Inputs {
        now: utc(NOW),
        current,
        ready: current,
        readings,
        history: &[],
        history_since: utc(NOW) - Duration::hours(1),
        changes: &[],
        scaled_by_hand_at: None,
        quota_room: None,
        one_at_a_time_down: false,
        capacity: None,
    }
}

#[test]
fn a_manual_scale_holds_for_the_cooldown_a_band_lifts_the_floor_and_the_quota_caps() {
    let p = cpu_policy(json!({"bands": [daily("business", 8, 20, "09:00", "17:00")]}));
    let now = utc(NOW);
    let d = decide(
        &p,
        &Inputs {
            scaled_by_hand_at: Some(now - Duration::seconds(60)),
            ..inputs(&p, 10, &[reading(200.0)])
        },
    );
    assert_eq!(d.desired, 10);
    assert!(
        d.reason
            .contains("scaled by hand at 09:59:00 UTC; autoscaling resumes at 10:04:00 UTC"),
        "{}",
        d.reason
    );
    // 10:00 UTC is inside the band: 3 idle instances are lifted to 8 at once.
    let d = run(&p, 3, &[reading(50.0)], &[], &[]);
    assert_eq!(d.desired, 8);
    assert!(
        d.reason.contains("periodic band 'business' sets 8..20"),
        "{}",
        d.reason
    );
    // The quota leaves 5: short of the band's 8, it caps and says so.
    let d = decide(
        &p,
        &Inputs {
            quota_room: Some(5),
            ..inputs(&p, 3, &[reading(50.0)])
        },
    );
    assert_eq!(d.desired, 5);
    assert!(d.reason.contains("short of the required 8"), "{}", d.reason);
}

#[test]
fn a_replay_of_a_load_step_scales_out_then_back_in_after_the_window() {
    let p = compile(json!({"min": 1, "max": 10,
        "rules": [{"metric": {"type": "requests_per_second"}, "target": 100}]}));
    let start = utc(NOW);
    let samples: Vec<Sample> = (0..200)
        .map(|i| Sample {
            at: start + Duration::seconds(5 * i),
            values: vec![Some(if (10..40).contains(&i) { 650.0 } else { 80.0 })],
        })
        .collect();
    let curve = what_if(&p, 1, &samples, None);
    let at = |i: usize| curve[i].count;
    assert_eq!(at(9), 1);
    // 650 rps on 1: ceil(6.5) = 7, limited to max(+100%, +4) per 15 s = 5; once the
    // period has passed, 130 each: 7, where 93 each is within the tolerance.
    assert_eq!(at(10), 5, "{:?}", curve[10]);
    assert_eq!((at(11), at(12)), (5, 5));
    assert!(
        curve[11].reason.contains("+4 per 15 s"),
        "{}",
        curve[11].reason
    );
    assert!(
        curve[13..40].iter().all(|pt| pt.count == 7),
        "{:?}",
        &curve[10..15]
    );
    // The last high recommendation was at sample 39 (195 s); the window of 300 s ends
    // at 495 s (sample 99), then the count falls one per minute.
    assert_eq!(at(98), 7);
    let first_down = 40 + curve[40..].iter().position(|pt| pt.count < 7).unwrap_or(0);
    assert_eq!(first_down, 99, "{:?}", &curve[95..105]);
    assert_eq!(at(99 + 12), 5);
    assert_eq!(curve.last().map(|pt| pt.count), Some(1));
}

fn arb_policy() -> impl Strategy<Value = (Compiled, Option<u32>)> {
    (
        0u32..10,
        1u32..30,
        0u32..5,
        0u32..40,
        proptest::option::of(1u32..30),
        0u32..600,
        0.0f64..0.5,
    )
        .prop_map(
            |(min, span, band_min_off, band_span, room, window, tolerance)| {
                let max = min + span;
                let bmin = (min + band_min_off).min(max);
                let bmax = (bmin + band_span).min(max).max(bmin).max(1);
                let p = Policy {
                    min,
                    max,
                    rules: vec![Rule {
                        metric: Metric::Cpu,
                        target: 50.0,
                        tolerance,
                        max_step_up: None,
                        max_step_down: None,
                    }],
                    behavior: Behavior {
                        scale_down: Direction {
                            stabilization_s: window,
                            ..Direction::default_down()
                        },
                        ..Behavior::default()
                    },
                    bands: vec![Band {
                        name: "b".into(),
                        min: bmin,
                        max: bmax,
                        priority: 0,
                        when: When::Periodic {
                            days_of_week: vec![],
                            days_of_month: vec![],
                            start_time: "09:00".into(),
                            end_time: "11:00".into(),
                        },
                        exclude: vec![],
                    }],
                    time_zone: "UTC".into(),
                    sample_interval_s: 5,
                    allow_stateful: false,
                };
                let compiled = p
                    .compile(WorkloadKind::Service, None, utc(NOW))
                    .unwrap_or_else(|e| panic!("{e}"));
                (compiled, room)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_count_stays_within_band_bounds_and_quota(
        (p, room) in arb_policy(),
        current in 0u32..40,
        value in proptest::option::of(0.0f64..1000.0),
        minutes in 0i64..1440,
        recent in proptest::collection::vec((0i64..900, 0u32..40), 0..8),
    ) {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).single().unwrap_or_default() + Duration::minutes(minutes);
        let history: Vec<Recommended> = recent.iter().map(|(ago, c)| Recommended { at: now - Duration::seconds(*ago), count: *c }).collect();
        let readings = [value.map(|v| Reading { value: v, window_s: 5 })];
        let d = decide(&p, &Inputs {
            now, current, ready: current, readings: &readings, history: &history,
            history_since: now - Duration::hours(2), changes: &[], scaled_by_hand_at: None, quota_room: room, one_at_a_time_down: false,
            capacity: None,
        });
        let env = schedule::envelope(&p, now);
        let cap = room.map_or(env.max, |r| r.min(env.max));
        let floor = room.map_or(env.min, |r| r.min(env.min));
        prop_assert!(d.desired <= cap && d.desired >= floor, "{} not in {}..{}: {:?}", d.desired, floor, cap, d);
        // Never down on a missing metric, unless the envelope forces it.
        if value.is_none() && current <= cap {
            prop_assert!(d.desired >= current.min(cap));
        }
        // Down never below the highest recommendation remembered in the window.
        if d.desired < current {
            let window = p.policy.behavior.scale_down.stabilization_s;
            let highest = history.iter().filter(|r| r.at > now - Duration::seconds(i64::from(window))).map(|r| r.count).max().unwrap_or(0);
            prop_assert!(d.desired >= highest.min(current) || d.desired == cap, "{d:?}");
            // -1 per 60 s at most, unless the envelope forces more.
            prop_assert!(current - d.desired <= 1 || d.desired == cap);
        }
        // Up by at most max(+100%, +4) unless the envelope's floor forces more.
        if d.desired > current {
            prop_assert!(d.desired <= (current * 2).max(current + 4) || d.desired == floor);
        }
    }

    #[test]
    fn a_constant_metric_within_the_tolerance_never_moves_the_count(
        (p, _room) in arb_policy(),
        ratio in 0.95f64..1.05,
        steps in 1usize..50,
    ) {
        // Outside any band and within the policy's bounds.
        let start = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).single().unwrap_or_default();
        let env = schedule::envelope(&p, start);
        let current = env.min.max(1).min(env.max);
        let tolerance = p.policy.rules[0].tolerance;
        prop_assume!((ratio - 1.0).abs() <= tolerance);
        let samples: Vec<Sample> = (0..steps).map(|i| Sample {
            at: start + Duration::seconds(5 * i as i64),
            values: vec![Some(50.0 * ratio * f64::from(current))],
        }).collect();
        let curve = what_if(&p, current, &samples, None);
        prop_assert!(curve.iter().all(|pt| pt.count == current), "{curve:?}");
    }
}

#[test]
fn a_stateful_application_scales_in_one_ordinal_at_a_time() {
    let p = cpu_policy(json!({"allow_stateful": true,
        "behavior": {"scale_down": {"stabilization_s": 0, "limits": [{"kind": "instances", "value": 10, "period_s": 1}]}}}));
    let readings = [reading(1.0)];
    let service = decide(&p, &inputs(&p, 5, &readings));
    assert_eq!(service.desired, 1);
    let stateful = decide(
        &p,
        &Inputs {
            one_at_a_time_down: true,
            ..inputs(&p, 5, &readings)
        },
    );
    assert_eq!(stateful.desired, 4);
    assert!(
        stateful.reason.contains("highest ordinal"),
        "{}",
        stateful.reason
    );
}

#[test]
fn the_count_stops_at_what_the_nodes_can_hold() {
    use crate::runtime::Node;
    use crate::spec::Resources;
    let node = |cpu, used_cpu, healthy| Node {
        name: "n".into(),
        labels: Default::default(),
        capacity: Resources {
            cpu_millis: cpu,
            memory_mib: 4096,
        },
        allocated: Some(Resources {
            cpu_millis: used_cpu,
            memory_mib: 0,
        }),
        healthy,
        cordoned: false,
        draining: false,
        condition: "ready".into(),
        message: None,
        last_seen: None,
    };
    let each = Resources {
        cpu_millis: 250,
        memory_mib: 128,
    };
    // 2 running; one node has room for 4 more, a second for 1, an unhealthy one counts not.
    let nodes = [
        node(2000, 1000, true),
        node(1000, 700, true),
        node(4000, 0, false),
    ];
    assert_eq!(decide::capacity(&nodes, &each, 2), Some(7));
    let unknown = Node {
        allocated: None,
        ..node(1000, 0, true)
    };
    assert_eq!(decide::capacity(&[unknown], &each, 2), None);
    let p = cpu_policy(json!({}));
    let readings = [reading(400.0)];
    let d = decide(
        &p,
        &Inputs {
            capacity: Some(5),
            ..inputs(&p, 2, &readings)
        },
    );
    assert_eq!(d.desired, 5, "{d:?}");
    assert_eq!(d.clamps.last().map(|c| c.step.as_str()), Some("capacity"));
    assert!(
        d.reason.contains("the nodes have room for 5"),
        "{}",
        d.reason
    );
}

#[test]
fn a_what_if_series_is_read_from_csv_with_the_bad_line_named() {
    let samples = preview::parse_csv("at,rps\n# yesterday\n2026-11-26T10:00:00Z,50\n2026-11-26T10:00:05Z,\n\n2026-11-26T10:00:10+01:00, 600.5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[1].values, vec![None]);
    assert_eq!(samples[2].at, utc("2026-11-26T09:00:10Z"));
    assert_eq!(samples[2].values, vec![Some(600.5)]);
    let err = preview::parse_csv("2026-11-26T10:00:00Z,1\nyesterday,2")
        .err()
        .map(|e| (e.field, e.message));
    assert_eq!(err.as_ref().map(|e| e.0.as_str()), Some("csv"));
    assert!(
        err.map(|e| e.1)
            .unwrap_or_default()
            .starts_with("line 2: 'yesterday'")
    );
    assert!(preview::parse_csv("2026-11-26T10:00:00Z,lots").is_err());
}
