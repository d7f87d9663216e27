//! The rolling strategy's planning step, pure: given what runs of the stable and the
//! target revision, how many instances of each should run next. The reconciler applies
//! one step per pass; each step keeps at least `replicas - max_unavailable` instances
//! ready and never asks for more than `replicas + max_surge`, as a Kubernetes
//! Deployment's rolling update does.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// A count of instances, or a percentage of the replica count (`"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Amount {
    Count(u32),
    /// `"0%"` to `"100%"`.
    Percent(String),
}

impl Amount {
    /// As written: `2` or `25%`.
    pub fn text(&self) -> String {
        match self {
            Self::Count(n) => n.to_string(),
            Self::Percent(p) => p.clone(),
        }
    }

    /// The amount for `replicas`, percentages rounded up (`round_up`) or down.
    pub fn resolve(&self, field: &str, replicas: u32, round_up: bool) -> Result<u32, FieldError> {
        match self {
            Self::Count(n) => Ok(*n),
            Self::Percent(text) => {
                let percent: u32 = text
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| {
                        FieldError::new(field, "must be a count or a percentage from 0% to 100%")
                    })?;
                let scaled = u64::from(replicas) * u64::from(percent);
                let n = if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                };
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            }
        }
    }
}

/// How a rolling release moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// How many instances above the replica count may run during the release.
    #[serde(default = "default_surge")]
    pub max_surge: Amount,
    /// How many instances below the replica count may be unready during the release.
    #[serde(default = "default_unavailable")]
    pub max_unavailable: Amount,
    /// At most this many new instances starting at once (none: as surge allows).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// A new instance counts as available only once ready this long.
    #[serde(default)]
    #[schema(maximum = 3600)]
    pub min_ready_s: u32,
    /// The release is rolled back when it has not finished this long after it started.
    #[serde(default = "default_deadline")]
    #[schema(minimum = 10, maximum = 86400)]
    pub progress_deadline_s: u32,
}

fn default_surge() -> Amount {
    Amount::Percent("25%".to_owned())
}
fn default_unavailable() -> Amount {
    Amount::Percent("25%".to_owned())
}
fn default_deadline() -> u32 {
    600
}

impl Default for Rolling {
    fn default() -> Self {
        Self {
            max_surge: default_surge(),
            max_unavailable: default_unavailable(),
            batch_size: None,
            min_ready_s: 0,
            progress_deadline_s: default_deadline(),
        }
    }
}

/// The limits of a rolling release for one replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub replicas: u32,
    pub surge: u32,
    pub unavailable: u32,
    pub batch: Option<u32>,
}

impl Rolling {
    /// The limits for `replicas`: surge rounds up, unavailable rounds down, and when
    /// both come to 0 one instance may be unavailable (else nothing could move).
    pub fn limits(&self, replicas: u32) -> Result<Limits, FieldError> {
        let surge = self
            .max_surge
            .resolve("strategy.max_surge", replicas, true)?;
        let mut unavailable =
            self.max_unavailable
                .resolve("strategy.max_unavailable", replicas, false)?;
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        if self.batch_size == Some(0) {
            return Err(FieldError::new("strategy.batch_size", "must be at least 1"));
        }
        Ok(Limits {
            replicas,
            surge,
            unavailable: unavailable.min(replicas),
            batch: self.batch_size,
        })
    }
}

/// What runs of the two revisions (instances that are stopping are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    pub target_total: u32,
    /// Ready (for at least the minimum ready time).
    pub target_ready: u32,
    pub stable_total: u32,
    pub stable_ready: u32,
}

/// How many instances of each revision to run next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub target: u32,
    pub stable: u32,
}

impl Step {
    /// The release is complete: every instance is the target's and ready.
    pub fn done(&self, limits: &Limits, observed: &Observed) -> bool {
        self.stable == 0
            && observed.stable_total == 0
            && self.target == limits.replicas
            && observed.target_ready == limits.replicas
    }
}

/// The next step: scale the target up as far as the surge allows (and the batch, past
/// what is ready), then take down stable instances, the unready ones first, as far as
/// the availability allows.
pub fn next(limits: &Limits, observed: &Observed) -> Step {
    let n = limits.replicas;
    let o = observed;
    // Up: within replicas + surge, counting what runs of the stable revision.
    let mut target = (n + limits.surge)
        .saturating_sub(o.stable_total)
        .max(o.target_total.min(n))
        .min(n);
    if let Some(batch) = limits.batch {
        target = target
            .min(o.target_ready + batch)
            .max(o.target_ready.min(n));
    }
    // Down: what may go while replicas - unavailable stay ready; instances of the
    // target that are not ready yet are not available.
    let min_available = n - limits.unavailable;
    let all = o.target_total + o.stable_total;
    let target_unready = o.target_total - o.target_ready.min(o.target_total);
    let mut may_go = all
        .saturating_sub(min_available)
        .saturating_sub(target_unready);
    let stable_unready = o.stable_total - o.stable_ready.min(o.stable_total);
    let unready_going = stable_unready.min(may_go);
    may_go -= unready_going;
    let ready_going = may_go.min(o.stable_ready);
    let mut stable = o.stable_total - unready_going - ready_going;
    // Never more of the stable revision than the target leaves room for.
    stable = stable.min(n.saturating_sub(o.target_ready.min(target)));
    Step { target, stable }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits(replicas: u32, surge: u32, unavailable: u32, batch: Option<u32>) -> Limits {
        Limits {
            replicas,
            surge,
            unavailable,
            batch,
        }
    }

    /// (limits, observed (target total, target ready, stable total, stable ready),
    /// expected step (target, stable)).
    type Case = (Limits, (u32, u32, u32, u32), (u32, u32));

    fn check(cases: &[Case]) {
        for (l, (tt, tr, st, sr), expected) in cases {
            let o = Observed {
                target_total: *tt,
                target_ready: *tr,
                stable_total: *st,
                stable_ready: *sr,
            };
            let step = next(l, &o);
            assert_eq!((step.target, step.stable), *expected, "{l:?} {o:?}");
        }
    }

    #[test]
    fn a_rolling_release_steps_within_surge_and_unavailability() {
        check(&[
            // 4 replicas, surge 1, unavailable 0: one new at a time, an old one goes
            // only when a new one is ready.
            (limits(4, 1, 0, None), (0, 0, 4, 4), (1, 4)),
            (limits(4, 1, 0, None), (1, 0, 4, 4), (1, 4)),
            (limits(4, 1, 0, None), (1, 1, 4, 4), (1, 3)),
            (limits(4, 1, 0, None), (1, 1, 3, 3), (2, 3)),
            (limits(4, 1, 0, None), (4, 4, 1, 1), (4, 0)),
            (limits(4, 1, 0, None), (4, 4, 0, 0), (4, 0)),
            // Surge 0, unavailable 1: take one down first, then replace it.
            (limits(4, 0, 1, None), (0, 0, 4, 4), (0, 3)),
            (limits(4, 0, 1, None), (0, 0, 3, 3), (1, 3)),
            // An unready stable instance goes first, whatever the budget.
            (limits(4, 1, 0, None), (1, 1, 4, 3), (1, 3)),
            // A batch of 2 with surge 4: two new at a time.
            (limits(4, 4, 0, Some(2)), (0, 0, 4, 4), (2, 4)),
            (limits(4, 4, 0, Some(2)), (2, 2, 4, 4), (4, 2)),
            // One replica.
            (limits(1, 1, 0, None), (0, 0, 1, 1), (1, 1)),
            (limits(1, 1, 0, None), (1, 1, 1, 1), (1, 0)),
        ]);
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let r = Rolling::default();
        assert_eq!(r.limits(10).ok(), Some(limits(10, 3, 2, None)));
        assert_eq!(r.limits(1).ok(), Some(limits(1, 1, 0, None)));
        let zero = Rolling {
            max_surge: Amount::Count(0),
            max_unavailable: Amount::Percent("10%".into()),
            ..Rolling::default()
        };
        // 10% of 4 rounds down to 0; with no surge, one may be unavailable.
        assert_eq!(zero.limits(4).ok(), Some(limits(4, 0, 1, None)));
        let bad = Rolling {
            max_surge: Amount::Percent("150%".into()),
            ..Rolling::default()
        };
        assert_eq!(
            bad.limits(4).err().map(|e| e.field),
            Some("strategy.max_surge".into())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Played out with instances that become ready after a step (some never do,
        /// for a while), every step stays within the bounds and the release ends on
        /// the target.
        #[test]
        fn every_step_stays_within_the_bounds_and_the_release_ends_on_the_target(
            replicas in 1u32..12,
            surge in 0u32..4,
            unavailable in 0u32..4,
            batch in proptest::option::of(1u32..4),
            slow in proptest::collection::vec(any::<bool>(), 60),
        ) {
            let unavailable = if surge == 0 && unavailable == 0 { 1 } else { unavailable.min(replicas) };
            let l = limits(replicas, surge, unavailable, batch);
            let mut o = Observed { target_total: 0, target_ready: 0, stable_total: replicas, stable_ready: replicas };
            for (i, lagging) in slow.iter().enumerate() {
                let step = next(&l, &o);
                prop_assert!(step.target + step.stable <= replicas + surge, "{l:?} {o:?} -> {step:?}");
                // What stays ready right after the step: ready targets, and the stable
                // instances kept (the unready ones go first).
                let stable_ready_kept = o.stable_ready.min(step.stable);
                let ready_after = o.target_ready.min(step.target) + stable_ready_kept;
                let ready_before = o.target_ready + o.stable_ready;
                prop_assert!(ready_after >= (replicas - unavailable).min(ready_before), "{l:?} {o:?} -> {step:?}");
                if step.done(&l, &o) {
                    return Ok(());
                }
                // The runtime converges; new instances become ready unless lagging (the
                // second half of the run never lags, so it must finish).
                let became_ready = if *lagging && i < 30 { o.target_ready.min(step.target) } else { step.target };
                o = Observed {
                    target_total: step.target,
                    target_ready: became_ready,
                    stable_total: step.stable,
                    stable_ready: o.stable_ready.min(step.stable),
                };
            }
            prop_assert!(false, "did not finish: {l:?} {o:?}");
        }
    }
}
