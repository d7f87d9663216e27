//! What a release moves by (its strategy) and an environment's release policy: who
//! approves, when releases wait (freeze windows) and the strategy a release takes when
//! its request names none.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::canary::Canary;
use super::freeze::{FreezeWindow, Freezes};
use super::gate::ApprovalPolicy;
use super::rolling::Rolling;
use crate::FieldError;

/// How a release moves an application from one revision to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Strategy {
    /// Batches of new instances within `max_surge` and `max_unavailable`, as a
    /// Kubernetes Deployment rolls. Stateful applications move one ordinal at a time,
    /// highest first, whatever the limits say.
    Rolling(Rolling),
    /// Instance by instance, the new revision starts in the slot the old one leaves:
    /// the same node (the same ordinal and data directory for a stateful application),
    /// one instance down at a time, no instance beyond the replica count.
    InPlace(InPlace),
    /// Small-scale verification (services): steps of traffic weight or instance count,
    /// each analysed against the stable revision, which keeps its instances until the
    /// canary is promoted; a failed analysis rolls back.
    Canary(Canary),
}

/// How an in-place release moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InPlace {
    /// A new instance counts (and the next one is replaced) only once ready this long.
    #[serde(default)]
    #[schema(maximum = 3600)]
    pub min_ready_s: u32,
    /// The release is rolled back when it has not finished this long after it started.
    #[serde(default = "in_place_deadline")]
    #[schema(minimum = 10, maximum = 86400)]
    pub progress_deadline_s: u32,
}

fn in_place_deadline() -> u32 {
    600
}

impl Default for Strategy {
    fn default() -> Self {
        Self::Rolling(Rolling::default())
    }
}

impl Strategy {
    /// The most instances beyond `replicas` a release with this strategy runs at once:
    /// a rolling release's surge, a canary's promotion (every slot doubled until the
    /// stable revision goes), none in place.
    pub fn surge(&self, replicas: u32) -> u32 {
        match self {
            Self::Rolling(r) => r.limits(replicas).map_or(0, |l| l.surge),
            Self::InPlace(_) => 0,
            Self::Canary(_) => replicas,
        }
    }

    /// Whether a release with this strategy can stop an old instance before its
    /// successor has a place (a rolling release with `max_unavailable` of at least 1).
    pub fn may_stop_first(&self, replicas: u32) -> bool {
        match self {
            Self::Rolling(r) => r.limits(replicas).is_ok_and(|l| l.unavailable > 0),
            Self::InPlace(_) => true,
            Self::Canary(_) => false,
        }
    }

    /// The strategy a release of `kind` takes from an environment's default: a canary
    /// applies to a service's changes; a restart or another kind of application rolls.
    pub fn for_release(&self, restart: bool, kind: crate::spec::WorkloadKind) -> Self {
        match self {
            Self::Canary(_) if restart || kind != crate::spec::WorkloadKind::Service => {
                Self::default()
            }
            s => s.clone(),
        }
    }

    /// Checks every field (for any replica count), naming the one that is wrong.
    pub fn check(&self) -> Result<(), FieldError> {
        let (min_ready_s, deadline) = match self {
            Self::Rolling(r) => {
                r.limits(1)?;
                (r.min_ready_s, r.progress_deadline_s)
            }
            Self::InPlace(p) => (p.min_ready_s, p.progress_deadline_s),
            Self::Canary(c) => return c.check(),
        };
        if min_ready_s > 3600 {
            return Err(FieldError::new(
                "strategy.min_ready_s",
                "must be at most 3600",
            ));
        }
        if !(10..=86_400).contains(&deadline) {
            return Err(FieldError::new(
                "strategy.progress_deadline_s",
                "must be between 10 and 86400 seconds",
            ));
        }
        Ok(())
    }

    /// Checks the strategy for an application of `kind`: a canary needs a service.
    pub fn check_for(&self, kind: crate::spec::WorkloadKind) -> Result<(), FieldError> {
        self.check()?;
        if matches!(self, Self::Canary(_)) && kind != crate::spec::WorkloadKind::Service {
            return Err(FieldError::new(
                "strategy.type",
                format!(
                    "a canary release needs a service; this application is a {} (use rolling or in_place)",
                    kind.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// How long the whole release may take before it is rolled back (a canary's steps
    /// each have their own deadline instead: its pauses may wait for people).
    pub fn progress_deadline_s(&self) -> Option<u32> {
        match self {
            Self::Rolling(r) => Some(r.progress_deadline_s),
            Self::InPlace(p) => Some(p.progress_deadline_s),
            Self::Canary(_) => None,
        }
    }

    /// How long a new instance must be ready before it counts.
    pub fn min_ready_s(&self) -> u32 {
        match self {
            Self::Rolling(r) => r.min_ready_s,
            Self::InPlace(p) => p.min_ready_s,
            Self::Canary(_) => 0,
        }
    }

    /// The strategy in a few words, for people.
    pub fn summary(&self) -> String {
        match self {
            Self::Rolling(r) => format!(
                "rolling, max surge {}, max unavailable {}, deadline {} s",
                r.max_surge.text(),
                r.max_unavailable.text(),
                r.progress_deadline_s
            ),
            Self::InPlace(p) => format!(
                "in place, one instance at a time on its own node, deadline {} s",
                p.progress_deadline_s
            ),
            Self::Canary(c) => {
                let steps: Vec<String> = c
                    .steps
                    .iter()
                    .map(|s| match (s.weight, s.instances) {
                        (Some(w), _) => format!("{w}%"),
                        (None, Some(n)) => format!("{n} instance{}", if n == 1 { "" } else { "s" }),
                        (None, None) => "?".to_owned(),
                    })
                    .collect();
                let a = &c.analysis;
                format!(
                    "canary {}, checked every {} s (error rate at most {:.1} points above the stable revision's, p99 at most {}×, {} failed check{} tolerated)",
                    steps.join(" → "),
                    a.interval_s,
                    a.max_error_rate_increase * 100.0,
                    a.max_p99_ratio,
                    a.failures_tolerated,
                    if a.failures_tolerated == 1 { "" } else { "s" }
                )
            }
        }
    }

    /// The strategy's name, as the API writes its `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Rolling(_) => "rolling",
            Self::InPlace(_) => "in_place",
            Self::Canary(_) => "canary",
        }
    }
}

/// An environment's release policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleasePolicy {
    /// Who approves releases, how many of them, and for how long a request is valid.
    pub approval: ApprovalPolicy,
    /// The IANA time zone freeze windows are read in.
    #[serde(default = "utc")]
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// Windows in which releases wait (an emergency needs a platform administrator).
    #[serde(default)]
    pub freezes: Vec<FreezeWindow>,
    /// The strategy of a release whose request names none (every spec change).
    #[serde(default)]
    pub strategy: Strategy,
    /// Rollbacks to an earlier revision skip the approval.
    #[serde(default)]
    pub fast_rollbacks: bool,
}

fn utc() -> String {
    "UTC".to_owned()
}

impl ReleasePolicy {
    /// The policy of an environment nobody set one for: protected environments (`prod`)
    /// need one ops approval, others none.
    pub fn default_for(protected: bool) -> Self {
        Self {
            approval: if protected {
                ApprovalPolicy::protected()
            } else {
                ApprovalPolicy::open()
            },
            time_zone: utc(),
            freezes: Vec::new(),
            strategy: Strategy::default(),
            fast_rollbacks: false,
        }
    }

    /// Checks the whole policy, naming the field that is wrong; its freeze windows.
    pub fn compile(&self, now: DateTime<Utc>) -> Result<Freezes, FieldError> {
        self.approval
            .check()
            .map_err(|e| FieldError::new(format!("approval.{}", e.field), e.message))?;
        self.strategy.check()?;
        Freezes::compile(&self.freezes, &self.time_zone, now)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_policy_names_the_field_that_is_wrong() {
        let now = Utc::now();
        let check = |value: serde_json::Value| -> Result<(), String> {
            let policy: ReleasePolicy =
                serde_json::from_value(value).map_err(|e| format!("parse: {e}"))?;
            policy.compile(now).map(|_| ()).map_err(|e| e.field)
        };
        let approval = json!({"required": true});
        assert_eq!(check(json!({"approval": approval})), Ok(()));
        assert_eq!(
            check(json!({"approval": {"required": true, "approvals": 3}})),
            Err("approval.approvals".into())
        );
        assert_eq!(
            check(json!({"approval": approval, "time_zone": "Mars/Olympus"})),
            Err("time_zone".into())
        );
        assert_eq!(
            check(
                json!({"approval": approval, "strategy": {"type": "rolling", "max_surge": "120%"}})
            ),
            Err("strategy.max_surge".into())
        );
        assert_eq!(
            check(
                json!({"approval": approval, "strategy": {"type": "rolling", "progress_deadline_s": 1}})
            ),
            Err("strategy.progress_deadline_s".into())
        );
        assert!(
            check(json!({"approval": approval, "strategy": {"type": "teleport"}}))
                .is_err_and(|e| e.starts_with("parse"))
        );
        let canary = |strategy: serde_json::Value| {
            check(json!({"approval": {"required": true}, "strategy": strategy}))
        };
        assert_eq!(
            canary(
                json!({"type": "canary", "steps": [{"weight": 10, "pause_s": 60}, {"weight": 100}]})
            ),
            Ok(())
        );
        assert_eq!(
            canary(json!({"type": "canary", "steps": []})),
            Err("strategy.steps".into())
        );
        assert_eq!(
            canary(json!({"type": "canary", "steps": [{"weight": 50}, {"weight": 10}]})),
            Err("strategy.steps[1].weight".into())
        );
        assert_eq!(
            canary(
                json!({"type": "canary", "steps": [{"weight": 10}], "analysis": {"interval_s": 0}})
            ),
            Err("strategy.analysis.interval_s".into())
        );
        assert_eq!(
            canary(json!({"type": "in_place", "progress_deadline_s": 5})),
            Err("strategy.progress_deadline_s".into())
        );
        let stateful: Strategy =
            serde_json::from_value(json!({"type": "canary", "steps": [{"weight": 10}]}))
                .unwrap_or_default();
        assert_eq!(
            stateful
                .check_for(crate::spec::WorkloadKind::Stateful)
                .err()
                .map(|e| e.field),
            Some("strategy.type".into())
        );
    }

    #[test]
    fn protected_environments_need_one_ops_approval_by_default() {
        let prod = ReleasePolicy::default_for(true);
        assert!(prod.approval.required);
        assert_eq!(prod.approval.approvals, 1);
        assert!(!prod.approval.self_approval);
        assert!(!ReleasePolicy::default_for(false).approval.required);
    }
}
