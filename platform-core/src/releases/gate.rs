//! A release's states and the actions people take on it, pure: who may approve (the
//! environment's approval policy, separation of duties, expiry), and which action is
//! allowed in which state. The core calls [`act`] inside the transaction that records
//! the action, so the rules hold whichever client asked.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::Role;

/// Where a release is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "release_state", rename_all = "snake_case")]
pub enum State {
    PendingApproval,
    Approved,
    Progressing,
    Paused,
    Succeeded,
    Aborted,
    RolledBack,
    Failed,
    Rejected,
    Expired,
}

impl State {
    /// The states of a release that still moves (or waits to): at most one per
    /// application.
    pub const OPEN: [State; 4] = [
        State::PendingApproval,
        State::Approved,
        State::Progressing,
        State::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// No action moves a release out of these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Aborted
                | Self::RolledBack
                | Self::Failed
                | Self::Rejected
                | Self::Expired
        )
    }
}

/// What a person does to a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    Reject,
    Pause,
    Resume,
    /// Past a step that waits for a person.
    Continue,
    Abort,
    Rollback,
}

impl Action {
    /// As it is named in paths, the audit log and on the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Continue => "continue",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
        }
    }

    /// The action named `text`, as `as_str` names it.
    pub fn parse(text: &str) -> Option<Self> {
        ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Every action, in the order buttons show them.
pub const ALL: [Action; 7] = [
    Action::Approve,
    Action::Reject,
    Action::Pause,
    Action::Resume,
    Action::Continue,
    Action::Abort,
    Action::Rollback,
];

/// Who may approve releases into an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Whether releases into the environment wait for approval at all.
    pub required: bool,
    /// Members with this role may approve (tenant admins always may).
    #[serde(default = "default_role")]
    pub role: Role,
    /// These users may approve too, whatever their role.
    #[serde(default)]
    pub users: Vec<String>,
    /// How many distinct approvers a release needs (1 or 2).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 2)]
    pub approvals: u32,
    /// Whether the person who caused the release may approve it (never by default).
    #[serde(default)]
    pub self_approval: bool,
    /// How long a release waits for its approvals before it expires.
    #[serde(default = "day")]
    #[schema(minimum = 60, maximum = 2592000)]
    pub valid_for_s: u32,
}

fn default_role() -> Role {
    Role::Ops
}
fn one() -> u32 {
    1
}
fn day() -> u32 {
    86_400
}

impl ApprovalPolicy {
    /// The default of a protected environment (`prod`): one approval by ops.
    pub fn protected() -> Self {
        Self {
            required: true,
            role: Role::Ops,
            users: Vec::new(),
            approvals: 1,
            self_approval: false,
            valid_for_s: day(),
        }
    }

    /// The default elsewhere: no approval.
    pub fn open() -> Self {
        Self {
            required: false,
            ..Self::protected()
        }
    }

    pub fn check(&self) -> Result<(), crate::FieldError> {
        if !(1..=2).contains(&self.approvals) {
            return Err(crate::FieldError::new("approvals", "must be 1 or 2"));
        }
        if !(60..=2_592_000).contains(&self.valid_for_s) {
            return Err(crate::FieldError::new(
                "valid_for_s",
                "must be between 60 seconds and 30 days",
            ));
        }
        if self.users.len() > 50 {
            return Err(crate::FieldError::new("users", "at most 50 users"));
        }
        Ok(())
    }
}

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor<'a> {
    pub username: &'a str,
    pub role: Role,
}

/// What the gate knows of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release<'a> {
    pub state: State,
    pub requested_by: &'a str,
    pub requested_at: DateTime<Utc>,
    /// Who approved it so far.
    pub approvals: &'a [String],
    /// The release's current step waits for a person's "continue".
    pub waiting_for_continue: bool,
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The actor's role or name does not allow it (403).
    #[error("{0}")]
    NotAllowed(String),
    /// The release is not in a state where this makes sense (409).
    #[error("{0}")]
    WrongState(String),
}

/// The outcome of an allowed action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The release moves to this state.
    State(State),
    /// An approval was recorded; more are needed.
    ApprovalRecorded { still_needed: u32 },
    /// The waiting step goes on (the state stays `progressing`).
    Continued,
}

fn may_approve(policy: &ApprovalPolicy, actor: &Actor<'_>) -> bool {
    actor.role == Role::TenantAdmin
        || actor.role == policy.role
        || policy.users.iter().any(|u| u == actor.username)
}

/// May this person change releases at all (pause, resume, continue, abort, roll back)?
/// Those who may approve, and ops.
fn may_operate(policy: &ApprovalPolicy, actor: &Actor<'_>) -> bool {
    may_approve(policy, actor) || actor.role == Role::Ops
}

/// Whether a release waiting for approval has run out of time.
pub fn expired(policy: &ApprovalPolicy, release: &Release<'_>, now: DateTime<Utc>) -> bool {
    release.state == State::PendingApproval
        && now >= release.requested_at + Duration::seconds(i64::from(policy.valid_for_s))
}

/// Decides an action on a release.
pub fn act(
    policy: &ApprovalPolicy,
    release: &Release<'_>,
    actor: &Actor<'_>,
    action: Action,
    now: DateTime<Utc>,
) -> Result<Outcome, Refusal> {
    let wrong = |what: &str| {
        Err(Refusal::WrongState(format!(
            "a release that is {} cannot be {what}",
            release.state.as_str()
        )))
    };
    if release.state.is_final() {
        return wrong(match action {
            Action::Approve => "approved",
            Action::Reject => "rejected",
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Continue => "continued",
            Action::Abort => "aborted",
            Action::Rollback => "rolled back",
        });
    }
    match action {
        Action::Approve | Action::Reject => {
            if !may_approve(policy, actor) {
                return Err(Refusal::NotAllowed(format!(
                    "only {} or the policy's named users may {} releases here",
                    policy.role.as_str(),
                    if action == Action::Approve {
                        "approve"
                    } else {
                        "reject"
                    }
                )));
            }
            if release.state != State::PendingApproval {
                return wrong(if action == Action::Approve {
                    "approved"
                } else {
                    "rejected"
                });
            }
            if expired(policy, release, now) {
                return Err(Refusal::WrongState(
                    "the approval request has expired; request the release again".into(),
                ));
            }
            if action == Action::Reject {
                return Ok(Outcome::State(State::Rejected));
            }
            if actor.username == release.requested_by && !policy.self_approval {
                return Err(Refusal::NotAllowed(
                    "you requested this release; someone else must approve it".into(),
                ));
            }
            if release.approvals.iter().any(|a| a == actor.username) {
                return Err(Refusal::WrongState(
                    "you already approved this release".into(),
                ));
            }
            let have = u32::try_from(release.approvals.len()).unwrap_or(u32::MAX) + 1;
            if have >= policy.approvals {
                Ok(Outcome::State(State::Approved))
            } else {
                Ok(Outcome::ApprovalRecorded {
                    still_needed: policy.approvals - have,
                })
            }
        }
        _ if !may_operate(policy, actor) => Err(Refusal::NotAllowed(
            "only ops, tenant admins and the environment's approvers may operate releases".into(),
        )),
        Action::Pause => match release.state {
            State::Progressing | State::Approved => Ok(Outcome::State(State::Paused)),
            _ => wrong("paused"),
        },
        Action::Resume => match release.state {
            State::Paused => Ok(Outcome::State(State::Progressing)),
            _ => wrong("resumed"),
        },
        Action::Continue => match release.state {
            State::Progressing if release.waiting_for_continue => Ok(Outcome::Continued),
            State::Progressing => Err(Refusal::WrongState(
                "the release is not waiting for anyone".into(),
            )),
            _ => wrong("continued"),
        },
        Action::Abort => Ok(Outcome::State(State::Aborted)),
        Action::Rollback => match release.state {
            State::Progressing | State::Paused => Ok(Outcome::State(State::RolledBack)),
            _ => wrong("rolled back"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    const NOW: &str = "2026-11-27T12:00:00Z";

    fn release<'a>(state: State, approvals: &'a [String]) -> Release<'a> {
        Release {
            state,
            requested_by: "dev",
            requested_at: at("2026-11-27T11:00:00Z"),
            approvals,
            waiting_for_continue: false,
        }
    }

    fn actor(username: &str, role: Role) -> Actor<'_> {
        Actor { username, role }
    }

    #[test]
    fn every_role_and_action_on_a_pending_release() {
        let policy = ApprovalPolicy::protected();
        let none: Vec<String> = Vec::new();
        let pending = release(State::PendingApproval, &none);
        let now = at(NOW);
        let cases: &[(&str, Role, Action, Result<Outcome, &str>)] = &[
            (
                "ops1",
                Role::Ops,
                Action::Approve,
                Ok(Outcome::State(State::Approved)),
            ),
            (
                "ops1",
                Role::Ops,
                Action::Reject,
                Ok(Outcome::State(State::Rejected)),
            ),
            (
                "tadmin",
                Role::TenantAdmin,
                Action::Approve,
                Ok(Outcome::State(State::Approved)),
            ),
            ("dev2", Role::Developer, Action::Approve, Err("only ops")),
            ("dev2", Role::Developer, Action::Reject, Err("only ops")),
            (
                "dev2",
                Role::Developer,
                Action::Abort,
                Err("only ops, tenant admins"),
            ),
            ("ops1", Role::Ops, Action::Pause, Err("cannot be paused")),
            (
                "ops1",
                Role::Ops,
                Action::Abort,
                Ok(Outcome::State(State::Aborted)),
            ),
            (
                "ops1",
                Role::Ops,
                Action::Continue,
                Err("cannot be continued"),
            ),
        ];
        for (name, role, action, expected) in cases {
            let got = act(&policy, &pending, &actor(name, *role), *action, now);
            match (expected, &got) {
                (Ok(outcome), Ok(g)) => assert_eq!(g, outcome, "{name} {action:?}"),
                (Err(words), Err(e)) => {
                    assert!(e.to_string().contains(words), "{name} {action:?}: {e}")
                }
                _ => panic!("{name} {action:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_requester_cannot_approve_two_approvers_are_distinct_and_a_request_expires() {
        let mut policy = ApprovalPolicy::protected();
        let none: Vec<String> = Vec::new();
        let now = at(NOW);
        // dev requested it and is (also) a named approver: still not theirs to approve.
        policy.users = vec!["dev".into()];
        let own = act(
            &policy,
            &release(State::PendingApproval, &none),
            &actor("dev", Role::Developer),
            Action::Approve,
            now,
        );
        assert!(matches!(own, Err(Refusal::NotAllowed(m)) if m.contains("someone else")));
        policy.self_approval = true;
        let own = act(
            &policy,
            &release(State::PendingApproval, &none),
            &actor("dev", Role::Developer),
            Action::Approve,
            now,
        );
        assert_eq!(own, Ok(Outcome::State(State::Approved)));
        // Two approvals: the first is recorded, the same person cannot give the second.
        let two = ApprovalPolicy {
            approvals: 2,
            ..ApprovalPolicy::protected()
        };
        let first = act(
            &two,
            &release(State::PendingApproval, &none),
            &actor("ops1", Role::Ops),
            Action::Approve,
            now,
        );
        assert_eq!(first, Ok(Outcome::ApprovalRecorded { still_needed: 1 }));
        let given = vec!["ops1".to_owned()];
        let again = act(
            &two,
            &release(State::PendingApproval, &given),
            &actor("ops1", Role::Ops),
            Action::Approve,
            now,
        );
        assert!(matches!(again, Err(Refusal::WrongState(m)) if m.contains("already approved")));
        let second = act(
            &two,
            &release(State::PendingApproval, &given),
            &actor("ops2", Role::Ops),
            Action::Approve,
            now,
        );
        assert_eq!(second, Ok(Outcome::State(State::Approved)));
        // A day later the request has expired.
        let late = at("2026-11-28T11:00:00Z");
        assert!(expired(&two, &release(State::PendingApproval, &none), late));
        let stale = act(
            &two,
            &release(State::PendingApproval, &none),
            &actor("ops2", Role::Ops),
            Action::Approve,
            late,
        );
        assert!(matches!(stale, Err(Refusal::WrongState(m)) if m.contains("expired")));
    }

    #[test]
    fn a_running_release_pauses_resumes_continues_and_rolls_back_and_a_finished_one_does_nothing() {
        let policy = ApprovalPolicy::protected();
        let none: Vec<String> = Vec::new();
        let now = at(NOW);
        let ops = actor("ops1", Role::Ops);
        let running = release(State::Progressing, &none);
        assert_eq!(
            act(&policy, &running, &ops, Action::Pause, now),
            Ok(Outcome::State(State::Paused))
        );
        assert!(act(&policy, &running, &ops, Action::Continue, now).is_err());
        let waiting = Release {
            waiting_for_continue: true,
            ..running.clone()
        };
        assert_eq!(
            act(&policy, &waiting, &ops, Action::Continue, now),
            Ok(Outcome::Continued)
        );
        let paused = release(State::Paused, &none);
        assert_eq!(
            act(&policy, &paused, &ops, Action::Resume, now),
            Ok(Outcome::State(State::Progressing))
        );
        assert_eq!(
            act(&policy, &paused, &ops, Action::Rollback, now),
            Ok(Outcome::State(State::RolledBack))
        );
        for done in [
            State::Succeeded,
            State::Aborted,
            State::RolledBack,
            State::Failed,
            State::Rejected,
            State::Expired,
        ] {
            for action in [
                Action::Approve,
                Action::Reject,
                Action::Pause,
                Action::Resume,
                Action::Continue,
                Action::Abort,
                Action::Rollback,
            ] {
                assert!(
                    matches!(
                        act(&policy, &release(done, &none), &ops, action, now),
                        Err(Refusal::WrongState(_))
                    ),
                    "{done:?} {action:?}"
                );
            }
        }
        assert!(
            ApprovalPolicy {
                approvals: 3,
                ..ApprovalPolicy::protected()
            }
            .check()
            .is_err()
        );
        assert!(!ApprovalPolicy::open().required);
    }
}
