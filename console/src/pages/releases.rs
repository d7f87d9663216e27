//! The release queue: every release of every tenant the user belongs to, pending
//! approvals first, so that ops see at once what waits for them; and each
//! environment's release policy.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{Data, Form, Query};
use askama::Template;
use platform_core::CoreError;
use platform_core::authz::{Permission, TenantAccess};
use platform_core::platform::releases::Release;
use platform_core::releases::gate::State;
use platform_core::releases::policy::ReleasePolicy;
use serde::Deserialize;

use super::{
    FormErrors, Layout, PageError, form_errors, in_frame, parse_json_field, parse_version, render,
    render_with_status, see_other,
};
use crate::scope::PageEnv;
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

/// An environment's release policy: who approves, freeze windows, the default strategy.
/// Tenant admins edit it; everyone else reads it.
#[derive(Template)]
#[template(path = "release_policy.html")]
struct PolicyPage {
    layout: Layout,
    tenant: platform_core::model::Tenant,
    env: String,
    can_edit: bool,
    text: String,
    version: String,
    errors: FormErrors,
    /// The strategy of the policy shown, in words (none while the text does not parse).
    summary: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    policy: String,
    #[serde(default)]
    version: String,
}

fn policy_base(access: &TenantAccess, env: &str) -> String {
    format!(
        "/t/{}/environments/{env}/release-policy",
        access.tenant().slug
    )
}

pub async fn release_policy(
    state: Data<AppState>,
    scope: PageEnv,
) -> Result<HttpResponse, PageError> {
    let PageEnv { auth, access, env } = scope;
    let stored = state
        .platform
        .release_policy(&access, &env)
        .await
        .map_err(in_frame(&auth, &access))?;
    let text = serde_json::to_string_pretty(&stored.policy).unwrap_or_default();
    render(&PolicyPage {
        layout: Layout::for_tenant(&auth.0, &access, "Release policy", "environments"),
        tenant: access.tenant().clone(),
        can_edit: access.can(Permission::ManageEnvironments),
        summary: Some(stored.policy.strategy.summary()),
        env,
        text,
        version: stored.version.to_string(),
        errors: FormErrors::none(),
    })
}

/// Saves the policy in the form; errors are shown beside the form, which keeps what was
/// typed.
pub async fn save_release_policy(
    state: Data<AppState>,
    scope: PageEnv,
    form: Form<PolicyForm>,
) -> Result<HttpResponse, PageError> {
    let PageEnv { auth, access, env } = scope;
    let form = form.into_inner();
    let outcome: Result<(), CoreError> = async {
        let policy = parse_json_field::<ReleasePolicy>(&form.policy, "policy", None)?;
        let version = parse_version(&form.version)?;
        state
            .platform
            .set_release_policy(&access, &env, policy, version)
            .await
            .map(|_| ())
    }
    .await;
    let mut version = form.version;
    let errors = match outcome {
        Ok(()) => return Ok(see_other(&policy_base(&access, &env))),
        // Not a form error: the page says so as a 403 (or 404).
        Err(e @ (CoreError::Forbidden { .. } | CoreError::NotFound { .. })) => {
            return Err(in_frame(&auth, &access)(e));
        }
        Err(e) => {
            if let CoreError::VersionMismatch {
                current: Some(current),
                ..
            } = &e
            {
                // Saving again overwrites the other change, knowingly.
                version = current.to_string();
            }
            form_errors(e).map_err(|e| {
                e.within(Layout::for_tenant(
                    &auth.0,
                    &access,
                    "Error",
                    "environments",
                ))
            })?
        }
    };
    render_with_status(
        &PolicyPage {
            layout: Layout::for_tenant(&auth.0, &access, "Release policy", "environments"),
            tenant: access.tenant().clone(),
            can_edit: access.can(Permission::ManageEnvironments),
            summary: parse_json_field::<ReleasePolicy>(&form.policy, "policy", None)
                .ok()
                .map(|p| p.strategy.summary()),
            env,
            text: form.policy,
            version,
            errors,
        },
        StatusCode::UNPROCESSABLE_ENTITY,
    )
}
