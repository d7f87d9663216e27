//! The release queue: every release of every tenant the user belongs to, pending
//! approvals first, so that ops see at once what waits for them.

use actix_web::HttpResponse;
use actix_web::web::{Data, Query};
use askama::Template;
use platform_core::platform::releases::Release;
use platform_core::releases::gate::State;
use serde::Deserialize;

use super::{Layout, PageError, render};
use crate::session::PageAuth;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "releases.html")]
struct QueuePage {
    layout: Layout,
    releases: Vec<Release>,
    filter: String,
    states: [State; 10],
}

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    #[serde(default)]
    state: String,
}

const STATES: [State; 10] = [
    State::PendingApproval,
    State::Approved,
    State::Progressing,
    State::Paused,
    State::Succeeded,
    State::Aborted,
    State::RolledBack,
    State::Failed,
    State::Rejected,
    State::Expired,
];

pub async fn queue(
    state: Data<AppState>,
    auth: PageAuth,
    query: Query<QueueQuery>,
) -> Result<HttpResponse, PageError> {
    let layout = Layout::for_user(&auth.0, "Releases", "releases");
    let filter = query.into_inner().state;
    let chosen: Vec<State> = STATES
        .into_iter()
        .filter(|s| s.as_str() == filter)
        .collect();
    if !filter.is_empty() && chosen.is_empty() {
        return Err(PageError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "Request refused",
            format!("state: '{filter}' is not a release state"),
        )
        .within(layout));
    }
    let releases = state
        .platform
        .release_queue(&auth.0.principal, &chosen)
        .await
        .map_err(|e| PageError::from(e).within(layout.clone()))?;
    render(&QueuePage {
        layout,
        releases,
        filter,
        states: STATES,
    })
}
