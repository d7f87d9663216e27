//! A release's page: its state and why, what runs of each revision (refreshed in
//! place), its timeline, and the actions the caller's role allows, each with a reason.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Path};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use platform_core::CoreError;
use platform_core::platform::releases::ReleaseDetail;
use platform_core::releases::gate::Action;
use serde::Deserialize;

use super::super::{
    Layout, PageError, app_path, in_frame, render, render_with_status, see_other, wants_fragment,
};
use crate::scope::PageApp;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ReleaseSegment {
    id: String,
}

#[derive(Debug, Deserialize)]
pub struct ReleaseActionSegment {
    id: String,
    action: String,
}

#[derive(Template)]
#[template(path = "release.html")]
struct ReleasePage {
    layout: Layout,
    app_base: String,
    base: String,
    release: ReleaseDetail,
    error: Option<String>,
}

/// The part of the page that refreshes itself.
#[derive(Template)]
#[template(path = "release_live.html")]
struct ReleaseLive {
    release: ReleaseDetail,
}

/// How an action reads on its button.
pub fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Approve => "Approve",
        Action::Reject => "Reject",
        Action::Pause => "Pause",
        Action::Resume => "Resume",
        Action::Continue => "Continue",
        Action::Abort => "Abort",
        Action::Rollback => "Roll back",
    }
}

/// The button style of an action: going forward is primary.
pub fn action_class(action: &Action) -> &'static str {
    match action {
        Action::Approve | Action::Resume | Action::Continue => "primary",
        _ => "secondary",
    }
}

/// An action as it is named in paths.
pub fn action_path(action: &Action) -> &'static str {
    match action {
        Action::Approve => "approve",
        Action::Reject => "reject",
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Continue => "continue",
        Action::Abort => "abort",
        Action::Rollback => "rollback",
    }
}

fn parse_id(text: &str) -> Result<i64, CoreError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| CoreError::not_found("release", text))
}

pub async fn release(
    state: Data<AppState>,
    scope: PageApp,
    path: Path<ReleaseSegment>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    let fail = in_frame(&auth, &access);
    let id = parse_id(&path.id).map_err(&fail)?;
    let release = state
        .platform
        .release(&access, &env, &app, id)
        .await
        .map_err(&fail)?;
    if wants_fragment(&req) {
        return render(&ReleaseLive { release });
    }
    let app_base = app_path(&access.tenant().slug, &env, &app);
    render(&ReleasePage {
        layout: Layout::for_tenant(&auth.0, &access, format!("Release {id} of {app}"), "apps"),
        base: format!("{app_base}/releases/{id}"),
        app_base,
        release,
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    reason: String,
}

pub async fn act(
    state: Data<AppState>,
    scope: PageApp,
    path: Path<ReleaseActionSegment>,
    form: Form<ActionForm>,
) -> Result<HttpResponse, PageError> {
    let PageApp {
        auth,
        access,
        env,
        app,
    } = scope;
    let fail = in_frame(&auth, &access);
    let ReleaseActionSegment { id, action } = path.into_inner();
    let id = parse_id(&id).map_err(&fail)?;
    let action: Action = serde_json::from_value(serde_json::Value::String(action.clone()))
        .map_err(|_| fail(CoreError::not_found("release action", action)))?;
    let reason = Some(form.into_inner().reason).filter(|r| !r.trim().is_empty());
    let app_base = app_path(&access.tenant().slug, &env, &app);
    let base = format!("{app_base}/releases/{id}");
    match state
        .platform
        .act_on_release(&access, &env, &app, id, action, reason)
        .await
    {
        Ok(_) => Ok(see_other(&base)),
        // Refused: the page again, with why, beside the actions.
        Err(
            e @ (CoreError::NotPermitted(_)
            | CoreError::WrongState(_)
            | CoreError::Forbidden { .. }
            | CoreError::Invalid(_)),
        ) => {
            let status = match &e {
                CoreError::NotPermitted(_) | CoreError::Forbidden { .. } => StatusCode::FORBIDDEN,
                CoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::CONFLICT,
            };
            let release = state
                .platform
                .release(&access, &env, &app, id)
                .await
                .map_err(&fail)?;
            render_with_status(
                &ReleasePage {
                    layout: Layout::for_tenant(
                        &auth.0,
                        &access,
                        format!("Release {id} of {app}"),
                        "apps",
                    ),
                    app_base,
                    base,
                    release,
                    error: Some(e.to_string()),
                },
                status,
            )
        }
        Err(e) => Err(fail(e)),
    }
}
