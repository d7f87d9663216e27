//! Releases: every new revision of an application is released by the environment's
//! policy (approval, freeze windows, strategy); people approve, reject, pause, resume,
//! abort and roll back releases, each action decided by the gate inside the
//! transaction that records it and the audit entry.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Platform;
use super::apps::audit_app;
use crate::authz::{Permission, TenantAccess};
use crate::releases::canary::{Canary, CanaryState};
use crate::releases::gate::{self, Action, Actor, ApprovalPolicy, Outcome, Refusal, State};
use crate::releases::plan::Progress;
use crate::releases::policy::{ReleasePolicy, Strategy};
use crate::store::releases::ReleaseRow;
use crate::{CoreError, FieldError, store};

/// What caused a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A changed spec (or description of what runs).
    Change,
    /// A restart: the same spec and secrets as a new revision.
    Restart,
    /// A secret was set or removed.
    Secrets,
    /// Back to an earlier revision's spec and secrets.
    Rollback,
    /// The revision another environment runs, with this environment's overrides.
    Promotion,
    /// A service binding's variables were added or removed.
    Binding,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::Restart => "restart",
            Self::Secrets => "secrets",
            Self::Rollback => "rollback",
            Self::Promotion => "promotion",
            Self::Binding => "binding",
        }
    }
}

/// A release as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Release {
    pub id: i64,
    pub tenant: String,
    pub environment: String,
    pub application: String,
    pub from_revision: i32,
    pub to_revision: i32,
    /// `change`, `restart`, `secrets`, `rollback`, `promotion` or `binding`.
    pub cause: String,
    pub strategy: Strategy,
    pub state: State,
    /// Why it is where it is (what it waits for, why it was rolled back).
    pub reason: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// Who approved it so far.
    pub approvals: Vec<String>,
    /// How many approvals the environment asks for.
    pub approvals_required: u32,
    /// When a release waiting for approval expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// What ran of each revision at the reconciler's last step.
    pub progress: Option<Progress>,
    /// Where a canary release is: its step and its analysis so far.
    pub canary: Option<CanaryState>,
    /// The actions the caller may take on it now.
    pub actions: Vec<Action>,
    pub version: i64,
}

/// One entry of a release's timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReleaseEvent {
    pub at: DateTime<Utc>,
    /// The person, or none for the platform.
    pub actor: Option<String>,
    /// `requested`, `approved`, `approval`, `rejected`, `started`, `waiting`, `step`,
    /// `paused`, `resumed`, `succeeded`, `aborted`, `rolled_back`, `expired`, `superseded`.
    pub kind: String,
    pub message: String,
}

/// A release with its timeline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReleaseDetail {
    #[serde(flatten)]
    pub release: Release,
    pub timeline: Vec<ReleaseEvent>,
}

/// An environment's release policy with its version (send it back in `If-Match`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredReleasePolicy {
    pub policy: ReleasePolicy,
    /// 0 while the environment has the default policy.
    pub version: i64,
}

/// The most releases one list holds.
pub const MAX_RELEASES_PAGE: i64 = 200;

fn refusal(r: Refusal) -> CoreError {
    match r {
        Refusal::NotAllowed(m) => CoreError::NotPermitted(m),
        Refusal::WrongState(m) => CoreError::WrongState(m),
    }
}

/// The environment's policy as stored, or its default.
pub(crate) async fn policy_of(
    ex: impl sqlx::PgExecutor<'_>,
    environment_id: Uuid,
) -> Result<(ReleasePolicy, i64), CoreError> {
    let row = store::releases::policy(ex, environment_id)
        .await?
        .ok_or_else(|| CoreError::Internal(format!("environment {environment_id} is gone")))?;
    match (row.policy, row.version) {
        (Some(policy), Some(version)) => {
            let policy = serde_json::from_value(policy)
                .map_err(|e| CoreError::Internal(format!("stored release policy: {e}")))?;
            Ok((policy, version))
        }
        _ => Ok((ReleasePolicy::default_for(row.protected), 0)),
    }
}

/// A stored release as clients see it, with the actions `actor` may take on it now.
fn view_of(
    row: ReleaseRow,
    approval: &ApprovalPolicy,
    actor: Option<&Actor<'_>>,
) -> Result<Release, CoreError> {
    let now = Utc::now();
    let strategy: Strategy = serde_json::from_value(row.strategy.clone())
        .map_err(|e| CoreError::Internal(format!("release {}'s strategy: {e}", row.id)))?;
    let actions = match actor {
        Some(actor) => {
            let view = gate_view(&row);
            gate::ALL
                .into_iter()
                .filter(|a| gate::act(approval, &view, actor, *a, now).is_ok())
                .collect()
        }
        None => Vec::new(),
    };
    let canary = canary_of(&row).map(|(_, state)| state);
    Ok(Release {
        id: row.id,
        tenant: row.tenant,
        environment: row.environment,
        application: row.application,
        from_revision: row.from_revision,
        to_revision: row.to_revision,
        cause: row.cause,
        strategy,
        state: row.state,
        reason: row.reason,
        requested_by: row.requested_by,
        requested_at: row.requested_at,
        approvals: row.approvals,
        approvals_required: if approval.required {
            approval.approvals
        } else {
            0
        },
        expires_at: (row.state == State::PendingApproval)
            .then(|| row.requested_at + chrono::Duration::seconds(i64::from(approval.valid_for_s))),
        started_at: row.started_at,
        ended_at: row.ended_at,
        canary,
        progress: serde_json::from_value(row.progress).ok(),
        actions,
        version: row.version,
    })
}

/// What the gate knows of a stored release. Only a canary step without a pause of its
/// own waits for a person's "continue".
fn gate_view(row: &ReleaseRow) -> gate::Release<'_> {
    gate::Release {
        state: row.state,
        requested_by: &row.requested_by,
        requested_at: row.requested_at,
        approvals: &row.approvals,
        waiting_for_continue: canary_of(row)
            .is_some_and(|(c, state)| state.waiting_for_continue(&c)),
    }
}

/// A canary release's strategy and where it is.
fn canary_of(row: &ReleaseRow) -> Option<(Canary, CanaryState)> {
    let Ok(Strategy::Canary(c)) = serde_json::from_value(row.strategy.clone()) else {
        return None;
    };
    let state = row
        .canary
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    Some((c, state))
}

/// Why a release that may start waits instead: the freeze window in force and when it
/// ends.
fn frozen(policy: &ReleasePolicy, now: DateTime<Utc>) -> Option<String> {
    // A stored policy compiled when it was saved; one that no longer compiles (a zone
    // removed from the database) freezes nothing rather than everything.
    let freezes = policy.compile(now).ok()?;
    freezes.in_force(now).map(|(name, end)| {
        format!(
            "waits for the freeze window '{name}' to end at {}",
            end.format("%Y-%m-%d %H:%M UTC")
        )
    })
}

/// Makes revision `number` of the application (locked by the caller, in `tx`) with this
/// spec and these secrets, makes it the application's newest, and opens its release by
/// the environment's policy. An open release of the application is superseded: the new
/// one starts from what runs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn new_revision(
    tx: &mut sqlx::PgConnection,
    access: &TenantAccess,
    application_id: Uuid,
    number: i32,
    spec: &serde_json::Value,
    secrets: &serde_json::Value,
    cause: Cause,
    strategy: Option<Strategy>,
) -> Result<i64, CoreError> {
    store::apps::insert_revision(
        &mut *tx,
        application_id,
        number,
        spec,
        secrets,
        access.principal().user_id,
    )
    .await?;
    store::apps::set_current_revision(&mut *tx, application_id, number).await?;
    let (environment_id, released) = store::releases::context(&mut *tx, application_id).await?;
    let (policy, _) = policy_of(&mut *tx, environment_id).await?;
    let username = access.principal().username.as_str();
    if let Some(open) = store::releases::lock_open(&mut *tx, application_id).await? {
        let why = format!("superseded by revision {number}");
        store::releases::set_state(&mut *tx, open.id, State::Aborted, &why).await?;
        store::releases::event(
            &mut *tx,
            open.id,
            Some(username),
            "superseded",
            &why,
            json!({}),
        )
        .await?;
    }
    let kind = serde_json::from_value::<crate::spec::AppSpec>(spec.clone())
        .map(|s| s.kind)
        .map_err(|e| CoreError::Internal(format!("a revision's spec does not parse: {e}")))?;
    let strategy = match strategy {
        // Asked for by name: it must suit the application.
        Some(s) => {
            s.check_for(kind)?;
            s
        }
        // The environment's default: a canary applies to a service's changes; a restart
        // or another kind of application rolls.
        None => policy.strategy.for_release(cause == Cause::Restart, kind),
    };
    let now = Utc::now();
    // A restart runs the same spec and artifact again: nothing to approve or freeze.
    let needs_approval = policy.approval.required
        && cause != Cause::Restart
        && !(cause == Cause::Rollback && policy.fast_rollbacks);
    let (state, reason) = if cause == Cause::Restart {
        (State::Progressing, String::new())
    } else if needs_approval {
        (
            State::PendingApproval,
            format!(
                "waits for {} approval{}",
                policy.approval.approvals,
                if policy.approval.approvals == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        )
    } else if let Some(why) = frozen(&policy, now) {
        (State::Approved, why)
    } else {
        (State::Progressing, String::new())
    };
    let strategy_json =
        serde_json::to_value(&strategy).map_err(|e| CoreError::Internal(e.to_string()))?;
    let id = store::releases::insert(
        &mut *tx,
        store::releases::NewRelease {
            tenant_id: access.tenant().id,
            application_id,
            from_revision: released,
            to_revision: number,
            cause: cause.as_str(),
            strategy: &strategy_json,
            state,
            reason: &reason,
            requested_by: username,
        },
    )
    .await?;
    store::releases::event(
        &mut *tx,
        id,
        Some(username),
        "requested",
        &format!("revision {released} → {number} ({})", cause.as_str()),
        json!({"strategy": strategy_json}),
    )
    .await?;
    match state {
        State::Progressing => {
            store::releases::event(
                &mut *tx,
                id,
                None,
                "started",
                "no approval needed",
                json!({}),
            )
            .await?;
        }
        _ => store::releases::event(&mut *tx, id, None, "waiting", &reason, json!({})).await?,
    }
    Ok(id)
}

impl Platform {
    fn release_view(
        &self,
        access: &TenantAccess,
        row: ReleaseRow,
        approval: &ApprovalPolicy,
    ) -> Result<Release, CoreError> {
        let actor = Actor {
            username: &access.principal().username,
            role: access.role(),
        };
        view_of(row, approval, Some(&actor))
    }

    /// An application's releases, newest first.
    pub async fn releases(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
    ) -> Result<Vec<Release>, CoreError> {
        access.require(Permission::View, "view releases")?;
        let env = self.environment(access, environment).await?;
        let application = self.find_application(access, environment, app).await?;
        let (policy, _) = policy_of(&self.pool, env.id).await?;
        store::releases::of_application(&self.pool, application.id, MAX_RELEASES_PAGE)
            .await?
            .into_iter()
            .map(|row| self.release_view(access, row, &policy.approval))
            .collect()
    }

    /// One release with its timeline; 404 when it is not this application's.
    pub async fn release(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        id: i64,
    ) -> Result<ReleaseDetail, CoreError> {
        access.require(Permission::View, "view releases")?;
        let env = self.environment(access, environment).await?;
        let row = store::releases::get(&self.pool, access.tenant().id, id)
            .await?
            .filter(|r| r.environment == environment && r.application == app)
            .ok_or_else(|| CoreError::not_found("release", id.to_string()))?;
        let timeline = store::releases::events(&self.pool, id)
            .await?
            .into_iter()
            .map(|e| ReleaseEvent {
                at: e.at,
                actor: e.actor,
                kind: e.kind,
                message: e.message,
            })
            .collect();
        let (policy, _) = policy_of(&self.pool, env.id).await?;
        Ok(ReleaseDetail {
            release: self.release_view(access, row, &policy.approval)?,
            timeline,
        })
    }

    /// Takes an action on a release, as the gate allows it; audited with the reason.
    pub async fn act_on_release(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        id: i64,
        action: Action,
        reason: Option<String>,
    ) -> Result<ReleaseDetail, CoreError> {
        access.require(Permission::View, "view releases")?;
        let reason = reason.unwrap_or_default();
        if reason.len() > 1000 || reason.contains('\0') {
            return Err(
                FieldError::new("reason", "must be at most 1000 characters, with no NUL").into(),
            );
        }
        let env = self.environment(access, environment).await?;
        let mut tx = self.pool.begin().await?;
        let row = store::releases::lock(&mut tx, access.tenant().id, id)
            .await?
            .filter(|r| r.environment == environment && r.application == app)
            .ok_or_else(|| CoreError::not_found("release", id.to_string()))?;
        let (policy, _) = policy_of(&mut *tx, env.id).await?;
        let now = Utc::now();
        let actor = Actor {
            username: &access.principal().username,
            role: access.role(),
        };
        let view = gate_view(&row);
        let outcome = gate::act(&policy.approval, &view, &actor, action, now).map_err(refusal)?;
        let username = access.principal().username.as_str();
        let verb = action.as_str();
        let message = if reason.is_empty() {
            verb.to_owned()
        } else {
            format!("{verb}: {reason}")
        };
        match outcome {
            Outcome::State(State::Approved) => {
                store::releases::add_approval(&mut tx, id, username).await?;
                store::releases::event(
                    &mut *tx,
                    id,
                    Some(username),
                    "approved",
                    &message,
                    json!({}),
                )
                .await?;
                let (state, why) = match frozen(&policy, now) {
                    Some(why) => (State::Approved, why),
                    None => (State::Progressing, String::new()),
                };
                store::releases::set_state(&mut tx, id, state, &why).await?;
                let (kind, text) = if state == State::Progressing {
                    ("started", "approved")
                } else {
                    ("waiting", why.as_str())
                };
                store::releases::event(&mut *tx, id, None, kind, text, json!({})).await?;
            }
            Outcome::ApprovalRecorded { still_needed } => {
                store::releases::add_approval(&mut tx, id, username).await?;
                let why = format!(
                    "waits for {still_needed} more approval{}",
                    if still_needed == 1 { "" } else { "s" }
                );
                store::releases::set_state(&mut tx, id, State::PendingApproval, &why).await?;
                store::releases::event(
                    &mut *tx,
                    id,
                    Some(username),
                    "approval",
                    &message,
                    json!({}),
                )
                .await?;
            }
            Outcome::State(state) => {
                let why = match state {
                    State::Progressing | State::Paused => String::new(),
                    _ => format!(
                        "{verb} by {username}{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        }
                    ),
                };
                store::releases::set_state(&mut tx, id, state, &why).await?;
                store::releases::event(
                    &mut *tx,
                    id,
                    Some(username),
                    state_event(state),
                    &message,
                    json!({}),
                )
                .await?;
            }
            Outcome::Continued => {
                store::releases::event(
                    &mut *tx,
                    id,
                    Some(username),
                    "continued",
                    &message,
                    json!({}),
                )
                .await?;
                // The gate lets only a canary waiting at a step continue: its next step.
                if let Some((c, state)) = canary_of(&row) {
                    let next = state.next_step(now);
                    let value = serde_json::to_value(&next)
                        .map_err(|e| CoreError::Internal(e.to_string()))?;
                    store::releases::set_canary(&mut *tx, id, row.canary.as_ref(), &value).await?;
                    let replicas =
                        store::runtime::desired(&mut *tx, None, Some(&[row.application_id]))
                            .await?
                            .first()
                            .and_then(|d| {
                                let spec = serde_json::from_value(d.spec.clone()).ok()?;
                                Some(crate::model::desired_replicas(
                                    d.run_state,
                                    d.replicas,
                                    &spec,
                                ))
                            })
                            .unwrap_or(0);
                    store::releases::event(
                        &mut *tx,
                        id,
                        None,
                        "canary_step",
                        &crate::releases::canary::describe(&c, next.step, replicas),
                        json!({"step": next.step}),
                    )
                    .await?;
                    store::runtime::touch(&mut *tx, row.application_id).await?;
                }
            }
        }
        audit_app(
            &mut tx,
            access,
            &format!("release.{verb}"),
            environment,
            app,
            json!({"release": id, "reason": reason}),
        )
        .await?;
        tx.commit().await?;
        self.release(access, environment, app, id).await
    }

    /// Opens a release back to an earlier revision: a new revision with that
    /// revision's spec and secrets, gated like any other (unless the environment allows
    /// fast rollbacks).
    pub async fn roll_back_to(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        revision: i32,
        strategy: Option<Strategy>,
    ) -> Result<ReleaseDetail, CoreError> {
        let application = self.change_target(access, environment, app).await?;
        if let Some(s) = &strategy {
            s.check()?;
            self.check_analysis_queries(s).await?;
        }
        let mut tx = self.pool.begin().await?;
        let latest = store::apps::lock(&mut tx, access.tenant().id, application.id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", app))?
            .revision;
        let row = store::apps::revision(&mut *tx, application.id, revision)
            .await?
            .ok_or_else(|| {
                FieldError::new(
                    "revision",
                    format!("this application has no revision {revision}"),
                )
            })?;
        let (_, released) = store::releases::context(&mut tx, application.id).await?;
        let moving = store::releases::lock_open(&mut tx, application.id).await?;
        if revision == released && moving.is_none() {
            return Err(FieldError::new(
                "revision",
                format!("revision {revision} is the one that runs"),
            )
            .into());
        }
        let id = new_revision(
            &mut tx,
            access,
            application.id,
            latest + 1,
            &row.spec,
            &row.secrets,
            Cause::Rollback,
            strategy,
        )
        .await?;
        audit_app(
            &mut tx,
            access,
            "release.rollback",
            environment,
            app,
            json!({"release": id, "to_revision": revision, "revision": latest + 1}),
        )
        .await?;
        tx.commit().await?;
        self.release(access, environment, app, id).await
    }

    /// Promotes into `environment` the revision the application of the same name runs
    /// in `from`: the same artifact and spec, with this environment's own environment
    /// variables and replica count kept (its secrets stay its own). Released by this
    /// environment's policy like any change.
    pub async fn promote(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        from: &str,
    ) -> Result<ReleaseDetail, CoreError> {
        if from == environment {
            return Err(FieldError::new("from", "must be another environment").into());
        }
        let source = self
            .application(access, from, app)
            .await
            .map_err(|e| match e {
                CoreError::NotFound { .. } => FieldError::new(
                    "from",
                    format!("environment '{from}' has no application '{app}'"),
                )
                .into(),
                other => other,
            })?;
        let runs = source.application.released_revision;
        let row = store::apps::revision(&self.pool, source.application.id, runs)
            .await?
            .ok_or_else(|| CoreError::Internal(format!("{from}/{app} has no revision {runs}")))?;
        let mut spec: crate::spec::AppSpec = serde_json::from_value(row.spec)
            .map_err(|e| CoreError::Internal(format!("revision {runs}'s spec: {e}")))?;
        let target = self.application(access, environment, app).await?;
        spec.env = target.spec.env.clone();
        spec.replicas = target.spec.replicas;
        if spec == target.spec {
            return Err(CoreError::WrongState(format!(
                "{environment}/{app} already has the spec {from} runs (r{runs})"
            )));
        }
        let detail = self
            .update_caused(
                access,
                environment,
                app,
                spec,
                (None, None),
                (Cause::Promotion, None),
            )
            .await?;
        let open = store::releases::of_application(&self.pool, detail.application.id, 1)
            .await?
            .into_iter()
            .next()
            .filter(|r| r.to_revision == detail.application.current_revision)
            .ok_or_else(|| CoreError::Internal("the promotion opened no release".into()))?;
        store::releases::event(
            &self.pool,
            open.id,
            Some(&access.principal().username),
            "promoted",
            &format!("from {from} r{runs}"),
            json!({"from": from, "revision": runs}),
        )
        .await?;
        self.release(access, environment, app, open.id).await
    }

    /// One release by its number, in whichever of the caller's tenants it is (404
    /// otherwise, as for a release that does not exist).
    pub async fn release_by_id(
        &self,
        principal: &crate::authz::Principal,
        id: i64,
    ) -> Result<ReleaseDetail, CoreError> {
        let not_found = || CoreError::not_found("release", id.to_string());
        let row = store::releases::by_id(&self.pool, id)
            .await?
            .ok_or_else(not_found)?;
        if principal.membership(&row.tenant).is_none() {
            return Err(not_found());
        }
        let access = self.tenant(principal, &row.tenant).await?;
        self.release(&access, &row.environment, &row.application, id)
            .await
    }

    /// An emergency: a platform administrator starts an approved release that a freeze
    /// window holds, with a written reason (on the release's timeline and in the
    /// tenant's audit log). Administrators need no membership for this, and see
    /// nothing of the tenant beyond the release's state.
    pub async fn override_freeze(
        &self,
        principal: &crate::authz::Principal,
        id: i64,
        reason: &str,
    ) -> Result<Release, CoreError> {
        principal.require_platform_admin("override a freeze window")?;
        let reason = reason.trim();
        if reason.len() < 10 || reason.len() > 1000 || reason.contains('\0') {
            return Err(FieldError::new(
                "reason",
                "say why, in 10 to 1000 characters: an override is read later",
            )
            .into());
        }
        let mut tx = self.pool.begin().await?;
        let row = store::releases::by_id(&mut *tx, id)
            .await?
            .ok_or_else(|| CoreError::not_found("release", id.to_string()))?;
        let row = store::releases::lock(&mut tx, row.tenant_id, id)
            .await?
            .ok_or_else(|| CoreError::not_found("release", id.to_string()))?;
        if row.state != State::Approved {
            return Err(CoreError::WrongState(format!(
                "only an approved release that a freeze window holds can be started by an override; this one is {}",
                row.state.as_str()
            )));
        }
        store::releases::set_state(&mut tx, id, State::Progressing, "").await?;
        let message = format!("freeze overridden: {reason}");
        store::releases::event(
            &mut *tx,
            id,
            Some(&principal.username),
            "override",
            &message,
            json!({}),
        )
        .await?;
        super::record(
            &mut tx,
            principal,
            super::Audit {
                tenant_id: Some(row.tenant_id),
                action: "release.override_freeze",
                target_kind: "application",
                target: &format!("{}/{}", row.environment, row.application),
                details: json!({"release": id, "reason": reason}),
            },
        )
        .await?;
        tx.commit().await?;
        let row = store::releases::by_id(&self.pool, id)
            .await?
            .ok_or_else(|| CoreError::not_found("release", id.to_string()))?;
        let (policy, _) = policy_of(&self.pool, row.environment_id).await?;
        // An administrator acts on releases only through overrides: no actions.
        view_of(row, &policy.approval, None)
    }

    /// Releases across every tenant the caller belongs to (the ops queue), pending
    /// approvals first; only those in `states` when any are given.
    pub async fn release_queue(
        &self,
        principal: &crate::authz::Principal,
        states: &[State],
    ) -> Result<Vec<Release>, CoreError> {
        let mut out = Vec::new();
        let slugs: Vec<String> = principal
            .memberships()
            .iter()
            .map(|m| m.slug.clone())
            .collect();
        let mut accesses = Vec::new();
        for slug in &slugs {
            accesses.push(self.tenant(principal, slug).await?);
        }
        let ids: Vec<Uuid> = accesses.iter().map(|a| a.tenant().id).collect();
        let rows = store::releases::queue(&self.pool, &ids, states, MAX_RELEASES_PAGE).await?;
        let mut policies = std::collections::HashMap::new();
        for row in rows {
            let Some(access) = accesses.iter().find(|a| a.tenant().id == row.tenant_id) else {
                continue;
            };
            let policy = match policies.get(&row.environment_id) {
                Some(p) => p,
                None => {
                    let (p, _) = policy_of(&self.pool, row.environment_id).await?;
                    policies.entry(row.environment_id).or_insert(p)
                }
            };
            let approval = policy.approval.clone();
            out.push(self.release_view(access, row, &approval)?);
        }
        Ok(out)
    }

    /// The environment's release policy (its default when none was set).
    pub async fn release_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
    ) -> Result<StoredReleasePolicy, CoreError> {
        let env = self.environment(access, environment).await?;
        let (policy, version) = policy_of(&self.pool, env.id).await?;
        Ok(StoredReleasePolicy { policy, version })
    }

    /// Refuses a canary analysis whose PromQL queries cannot be run: no Prometheus is
    /// configured, or it refuses a query (filled in for revision 1 of `app` in `env`;
    /// a query that finds nothing yet is fine).
    async fn check_analysis_queries(&self, strategy: &Strategy) -> Result<(), CoreError> {
        let Strategy::Canary(c) = strategy else {
            return Ok(());
        };
        let Some(queries) = &c.analysis.promql else {
            return Ok(());
        };
        let prometheus = self.prometheus_for("strategy.analysis.promql")?;
        let side = crate::releases::canary::QuerySide {
            revision: 1,
            side: "canary",
            tenant: "tenant",
            environment: "env",
            app: "app",
            interval_s: c.analysis.interval_s,
        };
        for (name, query) in queries.named() {
            let filled = crate::releases::canary::fill(query, &side);
            match prometheus.query(&filled).await {
                Ok(_) | Err(crate::autoscaler::PromError::NoValue) => {}
                Err(e) => {
                    return Err(FieldError::new(
                        format!("strategy.analysis.promql.{name}"),
                        e.to_string(),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Sets the environment's release policy. Tenant admins only.
    pub async fn set_release_policy(
        &self,
        access: &TenantAccess,
        environment: &str,
        policy: ReleasePolicy,
        if_version: Option<i64>,
    ) -> Result<StoredReleasePolicy, CoreError> {
        access.require(Permission::ManageEnvironments, "set release policies")?;
        let env = self.environment(access, environment).await?;
        policy.compile(Utc::now())?;
        self.check_analysis_queries(&policy.strategy).await?;
        let mut tx = self.pool.begin().await?;
        let current = store::releases::lock_policy(&mut tx, env.id).await?;
        super::check_version(
            &mut *tx,
            Some(access.tenant().id),
            ("release policy", environment),
            ("environment", environment),
            if_version,
            Some(current.unwrap_or(0)),
        )
        .await?;
        let value =
            serde_json::to_value(&policy).map_err(|e| CoreError::Internal(e.to_string()))?;
        let version =
            store::releases::upsert_policy(&mut tx, access.tenant().id, env.id, &value).await?;
        super::record(
            &mut tx,
            access.principal(),
            super::Audit {
                tenant_id: Some(access.tenant().id),
                action: "release_policy.update",
                target_kind: "environment",
                target: environment,
                details: json!({"policy": value, "version": version}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(StoredReleasePolicy { policy, version })
    }
}

fn state_event(state: State) -> &'static str {
    match state {
        State::Progressing => "resumed",
        State::Paused => "paused",
        State::Rejected => "rejected",
        State::Aborted => "aborted",
        State::RolledBack => "rolled_back",
        other => other.as_str(),
    }
}

/// Moves waiting releases on: approved ones whose freeze ended start; pending ones past
/// their approval window expire. Safe to run from every control plane at once (each
/// change is made on the locked row, only from the state it was read in).
pub async fn supervise(pool: &sqlx::PgPool) -> Result<usize, CoreError> {
    let now = Utc::now();
    let mut moved = 0;
    for row in store::releases::waiting(pool).await? {
        let (policy, _) = policy_of(pool, row.environment_id).await?;
        let next = match row.state {
            State::PendingApproval => {
                gate::expired(&policy.approval, &gate_view(&row), now).then(|| {
                    (
                        State::Expired,
                        "expired",
                        format!(
                            "no approval within {} s; request the release again",
                            policy.approval.valid_for_s
                        ),
                    )
                })
            }
            State::Approved => frozen(&policy, now).is_none().then(|| {
                (
                    State::Progressing,
                    "started",
                    "the freeze window ended".to_owned(),
                )
            }),
            _ => None,
        };
        let Some((state, kind, why)) = next else {
            continue;
        };
        let mut tx = pool.begin().await?;
        let Some(locked) = store::releases::lock(&mut tx, row.tenant_id, row.id).await? else {
            continue;
        };
        if locked.state != row.state {
            continue;
        }
        let reason = if state == State::Progressing {
            ""
        } else {
            why.as_str()
        };
        store::releases::set_state(&mut tx, row.id, state, reason).await?;
        store::releases::event(&mut *tx, row.id, None, kind, &why, json!({})).await?;
        tx.commit().await?;
        moved += 1;
    }
    Ok(moved)
}
