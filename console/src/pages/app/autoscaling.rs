//! An application's autoscaling page: the policy (tenant admins edit it; everyone else
//! reads it), its 7-day preview drawn as a chart, the count over the last hour and the
//! decision ledger.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Form};
use askama::Template;
use chrono::{DateTime, Duration, Utc};
use platform_core::authz::{Permission, TenantAccess};
use platform_core::autoscaling::{Policy, Preview, ReplayPoint};
use platform_core::platform::autoscaling::DecisionRecord;
use platform_core::{CoreError, FieldError};
use serde::Deserialize;

use super::super::{
    FormErrors, Layout, PageError, form_errors, in_frame, parse_version, render,
    render_with_status, see_other,
};
use crate::scope::PageApp;
use crate::session::PageAuth;
use crate::state::AppState;

/// A starting point for an application without a policy.
const EXAMPLE: &str = r#"{
  "min": 1,
  "max": 4,
  "time_zone": "UTC",
  "sample_interval_s": 5,
  "rules": [
    {"metric": {"type": "cpu"}, "target": 70}
  ],
  "bands": [
    {"name": "office hours", "min": 2, "max": 4,
     "when": {"type": "periodic", "days_of_week": ["Mon", "Tue", "Wed", "Thu", "Fri"],
              "start_time": "08:00", "end_time": "18:00"}}
  ]
}"#;

/// The 7-day preview as SVG shapes (coordinates only: nothing here comes from a user
/// as text, and the template escapes what does).
#[derive(Debug, Default)]
pub struct PreviewChart {
    pub width: usize,
    pub height: u32,
    pub top: u32,
    /// The area between max and min.
    pub area: String,
    pub min_line: String,
    pub days: Vec<(usize, String)>,
    pub dst: Vec<(usize, String)>,
    /// Points of a conflict or a quota shortfall.
    pub alerts: Vec<usize>,
    pub bands: Vec<String>,
    pub conflicts: Vec<String>,
    pub shortfalls: Vec<String>,
    pub zone: String,
}

const CHART_HEIGHT: u32 = 120;

fn y(value: u32, top: u32) -> u32 {
    CHART_HEIGHT - value.min(top) * CHART_HEIGHT / top.max(1)
}

impl PreviewChart {
    fn of(preview: &Preview) -> Self {
        let top = preview
            .points
            .iter()
            .map(|p| p.max)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut area = String::new();
        for (x, p) in preview.points.iter().enumerate() {
            area.push_str(&format!(
                "{}{x},{} ",
                if x == 0 { "M" } else { "L" },
                y(p.max, top)
            ));
        }
        let mut min_line = String::new();
        for (x, p) in preview.points.iter().enumerate().rev() {
            area.push_str(&format!("L{x},{} ", y(p.min, top)));
        }
        area.push('Z');
        for (x, p) in preview.points.iter().enumerate() {
            min_line.push_str(&format!(
                "{}{x},{} ",
                if x == 0 { "M" } else { "L" },
                y(p.min, top)
            ));
        }
        let days = preview
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.local.get(11..16) == Some("00:00"))
            .map(|(x, p)| (x, p.local.get(0..10).unwrap_or_default().to_owned()))
            .collect();
        let dst = preview
            .dst_transitions
            .iter()
            .filter_map(|t| {
                let x = preview.points.iter().position(|p| p.at == t.at)?;
                Some((x, format!("{} → {}", t.from_offset, t.to_offset)))
            })
            .collect();
        let alerts = preview
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.quota_shortfall || !p.conflicts.is_empty())
            .map(|(x, _)| x)
            .collect();
        let mut bands: Vec<String> = preview
            .points
            .iter()
            .filter_map(|p| p.band.clone())
            .collect();
        bands.sort();
        bands.dedup();
        Self {
            width: preview.points.len(),
            height: CHART_HEIGHT,
            top,
            area,
            min_line,
            days,
            dst,
            alerts,
            bands,
            conflicts: preview.conflicts.iter().map(|c| c.join(" and ")).collect(),
            shortfalls: preview.quota_shortfalls.clone(),
            zone: preview.time_zone.clone(),
        }
    }
}

/// A what-if replay as SVG: the count over the series (at most 700 points, each the
/// highest count of its stretch).
#[derive(Debug, Default)]
pub struct ReplayChart {
    pub line: String,
    pub top: u32,
    pub width: usize,
    pub from: String,
    pub to: String,
    pub highest: u32,
    pub changes: usize,
    /// The last reasons of a change, for people.
    pub reasons: Vec<String>,
}

impl ReplayChart {
    fn of(points: &[ReplayPoint]) -> Self {
        let buckets = points.len().clamp(1, 700);
        let per = points.len().div_ceil(buckets).max(1);
        let counts: Vec<u32> = points
            .chunks(per)
            .map(|c| c.iter().map(|p| p.count).max().unwrap_or(0))
            .collect();
        let top = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut line = String::new();
        for (x, c) in counts.iter().enumerate() {
            line.push_str(&format!(
                "{}{x},{} ",
                if x == 0 { "M" } else { "L" },
                y(*c, top)
            ));
        }
        let changes: Vec<&ReplayPoint> = points
            .windows(2)
            .filter(|w| w[0].count != w[1].count)
            .map(|w| &w[1])
            .collect();
        Self {
            line,
            top,
            width: counts.len(),
            from: points
                .first()
                .map(|p| p.at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            to: points
                .last()
                .map(|p| p.at.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            highest: points.iter().map(|p| p.count).max().unwrap_or(0),
            changes: changes.len(),
            reasons: changes
                .iter()
                .rev()
                .take(8)
                .map(|p| format!("{}: {}", p.at.format("%H:%M:%S"), p.reason))
                .collect(),
        }
    }
}

/// An example series for the what-if form: a minute of 40 requests a second, then two
/// of 400, then quiet.
fn example_csv() -> String {
    let start = (Utc::now() - Duration::days(1))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let at = chrono::DateTime::parse_from_rfc3339(&start)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now());
    let mut out = String::from("at,requests_per_second\n");
    for i in 0..60 {
        let rps = match i {
            0..12 => 40,
            12..36 => 400,
            _ => 20,
        };
        out.push_str(&format!(
            "{},{rps}\n",
            (at + Duration::seconds(5 * i)).format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    out
}

/// The count over the last hour, from the ledger (360 points of 10 s).
#[derive(Debug, Default)]
pub struct CountChart {
    pub line: String,
    pub top: u32,
    pub now: i32,
}

impl CountChart {
    fn of(decisions: &[DecisionRecord], now_count: i32, now: DateTime<Utc>) -> Self {
        let mut applied: Vec<&DecisionRecord> = decisions.iter().filter(|d| d.applied).collect();
        applied.sort_by_key(|d| d.at);
        let start = now - Duration::hours(1);
        let at = |t: DateTime<Utc>| -> i32 {
            match applied.iter().rev().find(|d| d.at <= t) {
                Some(d) => d.desired,
                None => applied.first().map_or(now_count, |d| d.previous),
            }
        };
        let counts: Vec<i32> = (0..=360)
            .map(|i| at(start + Duration::seconds(10 * i)))
            .collect();
        let top = counts.iter().copied().max().unwrap_or(1).max(1) as u32;
        let mut line = String::new();
        for (x, c) in counts.iter().enumerate() {
            line.push_str(&format!(
                "{}{x},{} ",
                if x == 0 { "M" } else { "L" },
                y(u32::try_from(*c).unwrap_or(0), top)
            ));
        }
        Self {
            line,
            top,
            now: now_count,
        }
    }
}

#[derive(Template)]
#[template(path = "autoscaling.html")]
pub struct AutoscalingPage {
    layout: Layout,
    base: String,
    tenant: String,
    env: String,
    app: String,
    can_edit: bool,
    has_policy: bool,
    version: String,
    text: String,
    errors: FormErrors,
    preview: Option<PreviewChart>,
    /// The preview is of the draft in the form, not of the stored policy.
    draft: bool,
    live: LivePart,
    csv: String,
    start: String,
    replay: Option<ReplayChart>,
}

#[derive(Template)]
#[template(path = "autoscaling_live.html")]
pub struct LivePart {
    base: String,
    chart: CountChart,
    decisions: Vec<DecisionRecord>,
    applied_only: bool,
}

async fn live_part(
    state: &AppState,
    access: &TenantAccess,
    env: &str,
    app: &str,
    applied_only: bool,
) -> Result<LivePart, CoreError> {
    let decisions = state
        .platform
        .autoscaling_decisions(access, env, app, None, applied_only, 50)
        .await?;
    let all_applied = state
        .platform
        .autoscaling_decisions(access, env, app, None, true, 200)
        .await?;
    let detail = state.platform.application(access, env, app).await?;
    let count = platform_core::model::desired_replicas(
        detail.application.run_state,
        detail.application.scaled_replicas,
        &detail.spec,
    );
    Ok(LivePart {
        base: base(access, env, app),
        chart: CountChart::of(&all_applied, i32::try_from(count).unwrap_or(0), Utc::now()),
        decisions,
        applied_only,
    })
}

fn base(access: &TenantAccess, env: &str, app: &str) -> String {
    format!(
        "/t/{}/environments/{env}/apps/{app}/autoscaling",
        access.tenant().slug
    )
}

struct Draft {
    text: String,
    version: String,
    errors: FormErrors,
    preview: Option<Preview>,
    csv: String,
    start: String,
    replay: Option<Vec<ReplayPoint>>,
}

async fn page(
    state: &AppState,
    auth: &PageAuth,
    access: &TenantAccess,
    env: &str,
    app: &str,
    draft: Option<Draft>,
) -> Result<AutoscalingPage, PageError> {
    let fail = in_frame(auth, access);
    let stored = state
        .platform
        .autoscaling_policy(access, env, app)
        .await
        .map_err(&fail)?;
    let is_draft = draft.as_ref().is_some_and(|d| d.preview.is_some());
    let (csv, start, replay) = match &draft {
        Some(d) => (
            d.csv.clone(),
            d.start.clone(),
            d.replay.as_deref().map(ReplayChart::of),
        ),
        None => (example_csv(), "1".to_owned(), None),
    };
    let (text, version, errors, preview) = match draft {
        Some(d) => (d.text, d.version, d.errors, d.preview),
        None => {
            let preview = match &stored {
                Some(_) => state
                    .platform
                    .autoscaling_preview(access, env, app, None, None)
                    .await
                    .ok(),
                None => None,
            };
            (
                stored.as_ref().map_or_else(
                    || EXAMPLE.to_owned(),
                    |s| serde_json::to_string_pretty(&s.policy).unwrap_or_default(),
                ),
                stored
                    .as_ref()
                    .map(|s| s.version.to_string())
                    .unwrap_or_default(),
                FormErrors::none(),
                preview,
            )
        }
    };
    let live = live_part(state, access, env, app, false)
        .await
        .map_err(&fail)?;
    Ok(AutoscalingPage {
        layout: Layout::for_tenant(&auth.0, access, format!("Autoscaling of {app}"), "apps"),
        base: base(access, env, app),
        tenant: access.tenant().slug.clone(),
        env: env.to_owned(),
        app: app.to_owned(),
        can_edit: access.can(Permission::ManageAutoscaling),
        has_policy: stored.is_some(),
        version,
        text,
        errors,
        preview: preview.as_ref().map(PreviewChart::of),
        draft: is_draft,
        live,
        csv,
        start,
        replay,
    })
}

pub async fn autoscaling(state: Data<AppState>, scope: PageApp) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    render(&page(&state, &auth, &access, &env, &app, None).await?)
}

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    applied: bool,
}

/// The count chart and the ledger, refreshed in place by htmx.
pub async fn autoscaling_live(
    state: Data<AppState>,
    scope: PageApp,
    query: actix_web::web::Query<LiveQuery>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    let part = live_part(&state, &access, &env, &app, query.applied)
        .await
        .map_err(in_frame(&auth, &access))?;
    render(&part)
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    policy: String,
    #[serde(default)]
    version: String,
    /// `preview`, `what-if` or `save`.
    #[serde(default)]
    intent: String,
    /// The what-if's series (CSV) and starting count.
    #[serde(default)]
    csv: String,
    #[serde(default)]
    start: String,
    /// `true`: save even when the maximum cannot all be placed.
    #[serde(default)]
    force: String,
}

/// Previews or saves the policy in the form. Errors are shown beside the form, which
/// keeps what was typed.
pub async fn save_autoscaling(
    state: Data<AppState>,
    scope: PageApp,
    form: Form<PolicyForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    let form = form.into_inner();
    let outcome: Result<Done, CoreError> = async {
        let policy = super::super::parse_json_field::<Policy>(&form.policy, "policy", None)?;
        match form.intent.as_str() {
            "preview" => Ok(Done::Previewed(
                state
                    .platform
                    .autoscaling_preview(&access, &env, &app, Some(policy), None)
                    .await?,
            )),
            "what-if" => {
                let samples = platform_core::autoscaling::preview::parse_csv(&form.csv)?;
                let start =
                    form.start.trim().parse::<u32>().map_err(|_| {
                        FieldError::new("start", "must be a whole number of instances")
                    })?;
                Ok(Done::Replayed(
                    state
                        .platform
                        .autoscaling_what_if(&access, &env, &app, Some(policy), start, &samples)
                        .await?,
                ))
            }
            _ => {
                let version = parse_version(&form.version)?;
                state
                    .platform
                    .set_autoscaling_policy(
                        &access,
                        &env,
                        &app,
                        policy,
                        version,
                        form.force == "true",
                    )
                    .await?;
                Ok(Done::Saved)
            }
        }
    }
    .await;
    let mut draft = Draft {
        text: form.policy,
        version: form.version,
        errors: FormErrors::none(),
        preview: None,
        csv: form.csv,
        start: form.start,
        replay: None,
    };
    let status = match outcome {
        Ok(Done::Saved) => return Ok(see_other(&base(&access, &env, &app))),
        Ok(Done::Previewed(preview)) => {
            draft.preview = Some(preview);
            StatusCode::OK
        }
        Ok(Done::Replayed(points)) => {
            draft.replay = Some(points);
            StatusCode::OK
        }
        // Not a form error: the page says so as a 403.
        Err(e @ CoreError::Forbidden { .. }) => return Err(in_frame(&auth, &access)(e)),
        Err(e) => {
            if let CoreError::VersionMismatch {
                current: Some(current),
                ..
            } = &e
            {
                // Saving again overwrites the other change, knowingly.
                draft.version = current.to_string();
            }
            draft.errors = form_errors(e)
                .map_err(|e| e.within(Layout::for_tenant(&auth.0, &access, "Error", "apps")))?;
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    render_with_status(
        &page(&state, &auth, &access, &env, &app, Some(draft)).await?,
        status,
    )
}

/// What the form's button did.
enum Done {
    Saved,
    Previewed(Preview),
    Replayed(Vec<ReplayPoint>),
}

/// Removes the policy.
pub async fn delete_autoscaling(
    state: Data<AppState>,
    scope: PageApp,
    form: Form<super::super::VersionForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    let fail = in_frame(&auth, &access);
    let version = form.version().map_err(|e| fail(e.into()))?;
    state
        .platform
        .delete_autoscaling_policy(&access, &env, &app, version)
        .await
        .map_err(&fail)?;
    Ok(see_other(&base(&access, &env, &app)))
}
