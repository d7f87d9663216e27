//! A release's page: its state and why, what runs of each revision (refreshed in
//! place), its timeline, and the actions the caller's role allows, each with a reason.

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

fn parse_id(text: &str) -> Result<i64, CoreError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| CoreError::not_found("release", text))
}

/// The release's page, with why the last action was refused when it was.
fn page(scope: &PageApp, release: ReleaseDetail, error: Option<String>) -> ReleasePage {
    let id = release.release.id;
    let app_base = app_path(&scope.access.tenant().slug, &scope.env, &scope.app);
    ReleasePage {
        layout: Layout::for_tenant(
            &scope.auth.0,
            &scope.access,
            format!("Release {id} of {}", scope.app),
            "apps",
        ),
        base: format!("{app_base}/releases/{id}"),
        app_base,
        release,
        error,
    }
}

pub async fn release(
    state: Data<AppState>,
    scope: PageApp,
    path: Path<ReleaseSegment>,
    req: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let fail = in_frame(&scope.auth, &scope.access);
    let id = parse_id(&path.id).map_err(&fail)?;
    let release = state
        .platform
        .release(&scope.access, &scope.env, &scope.app, id)
        .await
        .map_err(&fail)?;
    if wants_fragment(&req) {
        return render(&ReleaseLive { release });
    }
    render(&page(&scope, release, None))
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
    let fail = in_frame(&scope.auth, &scope.access);
    let ReleaseActionSegment { id, action } = path.into_inner();
    let id = parse_id(&id).map_err(&fail)?;
    let action = Action::parse(&action)
        .ok_or_else(|| fail(CoreError::not_found("release action", action)))?;
    let reason = Some(form.into_inner().reason).filter(|r| !r.trim().is_empty());
    let (access, env, app) = (&scope.access, &scope.env, &scope.app);
    match state
        .platform
        .act_on_release(access, env, app, id, action, reason)
        .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}/releases/{id}",
            app_path(&access.tenant().slug, env, app)
        ))),
        // Refused: the page again, with why, beside the actions (403, 409 or 422, as
        // the API answers).
        Err(
            e @ (CoreError::NotPermitted(_)
            | CoreError::WrongState(_)
            | CoreError::Forbidden { .. }
            | CoreError::Invalid(_)),
        ) => {
            let message = e.to_string();
            let status = crate::error::ApiError::from(e).status;
            let release = state
                .platform
                .release(access, env, app, id)
                .await
                .map_err(&fail)?;
            render_with_status(&page(&scope, release, Some(message)), status)
        }
        Err(e) => Err(fail(e)),
    }
}
