//! One step of a progressing (or paused) release, pure: given what runs, the shape the
//! reconciler asks the runtime for next, and whether the release has succeeded or
//! must be rolled back. The reconciler calls it at every pass, so a release picks up
//! where it is after any crash.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::canary::{Canary, CanaryState, shape};
use super::policy::Strategy;
use super::rolling::{Limits, Observed, next};
use crate::runtime::{Instance, Phase, Slots};
use crate::spec::WorkloadKind;

/// A new instance restarted this often is crash-looping: the release rolls back.
pub const CRASH_LOOP_RESTARTS: u32 = 3;

/// A release on its way.
#[derive(Debug, Clone)]
pub struct Moving<'a> {
    pub kind: WorkloadKind,
    /// The revision that ran before (the one a rollback returns to).
    pub from: i32,
    pub to: i32,
    pub replicas: u32,
    pub strategy: &'a Strategy,
    /// Hold every instance where it is.
    pub paused: bool,
    /// Where a canary release is (its step); `None` for other strategies.
    pub canary: Option<&'a CanaryState>,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// What becomes of the release after this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Succeeded,
    RollBack(String),
}

/// What runs of the target and of every other revision (not counting instances that
/// are stopping), shown on the release's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub target: u32,
    pub target_ready: u32,
    pub stable: u32,
    pub stable_ready: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub slots: Vec<(i32, Slots)>,
    pub verdict: Verdict,
    pub progress: Progress,
    /// The percent of the traffic the target revision gets (a canary step's weight);
    /// `None`: traffic goes by instance count.
    pub weight: Option<u32>,
    /// New instances of the target take the place (the node) of the instances of other
    /// revisions stopped in the same step.
    pub in_place: bool,
}

/// The next step of `m` over `observed`.
pub fn plan(m: &Moving<'_>, observed: &[Instance]) -> Plan {
    let live: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.phase != Phase::Stopping)
        .collect();
    let min_ready = Duration::seconds(i64::from(m.strategy.min_ready_s()));
    let available = |i: &Instance| i.ready && i.since + min_ready <= m.now;
    let (target, stable): (Vec<&Instance>, Vec<&Instance>) =
        live.iter().partition(|i| i.revision == m.to);
    let progress = Progress {
        target: count(target.len()),
        target_ready: count(target.iter().filter(|i| available(i)).count()),
        stable: count(stable.len()),
        stable_ready: count(stable.iter().filter(|i| i.ready).count()),
    };
    let slots = if m.paused {
        hold(m, &live)
    } else {
        advance(m, &live, &progress)
    };
    let deadline = m.strategy.progress_deadline_s();
    let verdict = if let Some(why) = crash_loop(m, &target) {
        Verdict::RollBack(why)
    } else if done(m, &live, &progress) {
        Verdict::Succeeded
    } else if let Some(deadline) = deadline
        && !m.paused
        && m.now >= m.started_at + Duration::seconds(i64::from(deadline))
    {
        Verdict::RollBack(format!(
            "not finished within its progress deadline of {deadline} s"
        ))
    } else {
        Verdict::Continue
    };
    let weight = match (m.strategy, m.kind) {
        // An instance-count step gets the share its instances are of all of them.
        (Strategy::Canary(c), WorkloadKind::Service) => canary_step(c, m).map(|step| {
            let shape = shape(step, m.replicas);
            shape.weight.unwrap_or_else(|| {
                let all = u64::from(shape.canary) + u64::from(shape.stable);
                (u64::from(shape.canary) * 100)
                    .checked_div(all)
                    .map_or(0, |w| u32::try_from(w).unwrap_or(100))
            })
        }),
        _ => None,
    };
    Plan {
        slots,
        verdict,
        progress,
        weight,
        in_place: matches!(m.strategy, Strategy::InPlace(_)),
    }
}

/// The canary step that runs, `None` once promoting.
fn canary_step<'c>(c: &'c Canary, m: &Moving<'_>) -> Option<&'c super::canary::CanaryStep> {
    let state = m.canary.cloned().unwrap_or_default();
    c.steps.get(state.step as usize)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn crash_loop(m: &Moving<'_>, target: &[&Instance]) -> Option<String> {
    let worst = target.iter().max_by_key(|i| i.restarts)?;
    if worst.phase == Phase::Failed && m.kind != WorkloadKind::Job {
        return Some(format!(
            "new instance {} failed: {}",
            worst.name,
            worst.message.as_deref().unwrap_or("it cannot run")
        ));
    }
    (worst.restarts >= CRASH_LOOP_RESTARTS).then(|| {
        format!(
            "new instance {} is crash-looping ({} restarts)",
            worst.name, worst.restarts
        )
    })
}

fn done(m: &Moving<'_>, live: &[&Instance], p: &Progress) -> bool {
    match m.kind {
        // A job's or cron job's next run takes the new revision: nothing to wait for.
        WorkloadKind::Job | WorkloadKind::Cronjob => true,
        WorkloadKind::Daemon => p.stable == 0 && p.target_ready == p.target,
        WorkloadKind::Stateful => {
            p.stable == 0
                && (0..m.replicas).all(|o| {
                    live.iter()
                        .any(|i| i.ordinal == Some(o) && i.revision == m.to && i.ready)
                })
        }
        WorkloadKind::Service => {
            p.stable == 0 && p.target >= m.replicas && p.target_ready >= m.replicas
        }
    }
}

/// Every revision keeps what it runs (instances that went away are not replaced until
/// the release resumes, except that the target keeps at least what it has).
fn hold(m: &Moving<'_>, live: &[&Instance]) -> Vec<(i32, Slots)> {
    match m.kind {
        WorkloadKind::Stateful => {
            let mut by_revision: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
            for ordinal in 0..m.replicas {
                let revision = live
                    .iter()
                    .find(|i| i.ordinal == Some(ordinal))
                    .map_or(m.from, |i| i.revision);
                by_revision.entry(revision).or_default().push(ordinal);
            }
            by_revision.entry(m.to).or_default();
            by_revision
                .into_iter()
                .map(|(r, ordinals)| (r, Slots::Ordinals(ordinals)))
                .collect()
        }
        WorkloadKind::Service => {
            let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
            counts.insert(m.to, 0);
            for i in live {
                *counts.entry(i.revision).or_default() += 1;
            }
            // Nothing left of any revision (a stop and start while paused): the
            // stable revision runs the replicas.
            if counts.values().all(|n| *n == 0) {
                counts.insert(m.from, m.replicas);
            }
            order(m.to, counts)
        }
        // A daemon, a job and a cron job have no partial shape to hold.
        _ => crate::reconciler::slots(m.kind, m.to, m.replicas, &[]),
    }
}

fn advance(m: &Moving<'_>, live: &[&Instance], p: &Progress) -> Vec<(i32, Slots)> {
    let as_always = || {
        let owned: Vec<Instance> = live.iter().map(|i| (*i).clone()).collect();
        crate::reconciler::slots(m.kind, m.to, m.replicas, &owned)
    };
    // Stateful applications move one ordinal at a time, in place, whatever the
    // strategy; daemons, jobs and cron jobs take the new revision as they always do.
    if m.kind != WorkloadKind::Service || m.replicas == 0 {
        return as_always();
    }
    let step = match m.strategy {
        Strategy::Rolling(rolling) => {
            let Ok(limits) = rolling.limits(m.replicas) else {
                // Checked when the release was made; a stored strategy that no longer
                // checks moves as the reconciler always did (one new instance at a time).
                return as_always();
            };
            next(&limits, &observed(p))
        }
        Strategy::InPlace(_) => in_place(m.replicas, p),
        Strategy::Canary(c) => match canary_step(c, m) {
            // The stable revision keeps every instance while the canary runs.
            Some(step) => {
                let shape = shape(step, m.replicas);
                super::rolling::Step {
                    target: shape.canary,
                    stable: m.replicas,
                }
            }
            // Promoted: the target takes every slot, the stable revision going only as
            // the target's instances are ready.
            None => next(
                &Limits {
                    replicas: m.replicas,
                    surge: m.replicas,
                    unavailable: 0,
                    batch: None,
                },
                &observed(p),
            ),
        },
    };
    // The stable budget goes to the release's `from` revision first, then to the
    // newest of any others (left by a release this one superseded).
    let mut others: BTreeMap<i32, u32> = BTreeMap::new();
    for i in live.iter().filter(|i| i.revision != m.to) {
        *others.entry(i.revision).or_default() += 1;
    }
    let mut budget = step.stable;
    let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
    counts.insert(m.to, step.target);
    let from_has = others.remove(&m.from).unwrap_or(0);
    let keep = from_has.min(budget);
    budget -= keep;
    counts.insert(m.from, keep);
    for (revision, has) in others.into_iter().rev() {
        let keep = has.min(budget);
        budget -= keep;
        counts.insert(revision, keep);
    }
    order(m.to, counts)
}

fn observed(p: &Progress) -> Observed {
    Observed {
        target_total: p.target,
        target_ready: p.target_ready,
        stable_total: p.stable,
        stable_ready: p.stable_ready,
    }
}

/// An in-place step: once every new instance is ready, one old instance gives its slot
/// to a new one (both in the same step, so that the new one takes its node); never more
/// instances than the replica count, never more than one of them down.
fn in_place(replicas: u32, p: &Progress) -> super::rolling::Step {
    let settled = p.target_ready >= p.target;
    let target = if settled {
        (p.target + 1).min(replicas)
    } else {
        p.target.min(replicas)
    };
    super::rolling::Step {
        target,
        stable: replicas - target,
    }
}

/// The target first, then the others newest first.
fn order(to: i32, mut counts: BTreeMap<i32, u32>) -> Vec<(i32, Slots)> {
    let target = counts.remove(&to).unwrap_or(0);
    let mut slots = vec![(to, Slots::Count(target))];
    slots.extend(
        counts
            .into_iter()
            .rev()
            .map(|(revision, n)| (revision, Slots::Count(n))),
    );
    slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::releases::rolling::{Amount, Rolling};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn inst(revision: i32, ready: bool) -> Instance {
        Instance {
            name: format!("r{revision}"),
            revision,
            ordinal: None,
            node: None,
            address: None,
            phase: Phase::Running,
            ready,
            restarts: 0,
            cpu_millis: None,
            memory_mib: None,
            message: None,
            since: at(0),
        }
    }

    fn rolling(surge: u32, unavailable: u32, min_ready_s: u32) -> Strategy {
        Strategy::Rolling(Rolling {
            max_surge: Amount::Count(surge),
            max_unavailable: Amount::Count(unavailable),
            batch_size: None,
            min_ready_s,
            progress_deadline_s: 600,
        })
    }

    fn moving(strategy: &Strategy, replicas: u32, paused: bool, now: i64) -> Moving<'_> {
        Moving {
            kind: WorkloadKind::Service,
            from: 1,
            to: 2,
            replicas,
            strategy,
            paused,
            canary: None,
            started_at: at(0),
            now: at(now),
        }
    }

    /// (what runs as (revision, ready), seconds since the start, paused, expected slots
    /// as (revision, count), expected verdict).
    type Case = (
        &'static [(i32, bool)],
        i64,
        bool,
        &'static [(i32, u32)],
        Verdict,
    );

    fn check(strategy: &Strategy, replicas: u32, cases: &[Case]) {
        for (running, now, paused, slots, verdict) in cases {
            let observed: Vec<Instance> = running.iter().map(|(r, ok)| inst(*r, *ok)).collect();
            let got = plan(&moving(strategy, replicas, *paused, *now), &observed);
            let expected: Vec<(i32, Slots)> =
                slots.iter().map(|(r, n)| (*r, Slots::Count(*n))).collect();
            assert_eq!(
                (got.slots, got.verdict),
                (expected, verdict.clone()),
                "{running:?} at {now} s, paused {paused}"
            );
        }
    }

    #[test]
    fn a_rolling_release_surges_then_retires_the_stable_revision_and_succeeds() {
        use Verdict::*;
        let s = rolling(1, 0, 0);
        check(
            &s,
            2,
            &[
                (
                    &[(1, true), (1, true)],
                    1,
                    false,
                    &[(2, 1), (1, 2)],
                    Continue,
                ),
                (
                    &[(1, true), (1, true), (2, false)],
                    2,
                    false,
                    &[(2, 1), (1, 2)],
                    Continue,
                ),
                (
                    &[(1, true), (1, true), (2, true)],
                    3,
                    false,
                    &[(2, 1), (1, 1)],
                    Continue,
                ),
                (
                    &[(1, true), (2, true)],
                    4,
                    false,
                    &[(2, 2), (1, 1)],
                    Continue,
                ),
                (
                    &[(1, true), (2, true), (2, true)],
                    5,
                    false,
                    &[(2, 2), (1, 0)],
                    Continue,
                ),
                (
                    &[(2, true), (2, true)],
                    6,
                    false,
                    &[(2, 2), (1, 0)],
                    Succeeded,
                ),
            ],
        );
    }

    #[test]
    fn a_new_instance_counts_only_once_ready_for_the_minimum_time() {
        let s = rolling(1, 0, 30);
        check(
            &s,
            1,
            &[
                // Ready since 0 s, asked at 10 s: not yet available, the stable stays.
                (
                    &[(1, true), (2, true)],
                    10,
                    false,
                    &[(2, 1), (1, 1)],
                    Verdict::Continue,
                ),
                (
                    &[(1, true), (2, true)],
                    31,
                    false,
                    &[(2, 1), (1, 0)],
                    Verdict::Continue,
                ),
            ],
        );
    }

    #[test]
    fn a_paused_release_holds_every_revision_where_it_is() {
        let s = rolling(1, 0, 0);
        check(
            &s,
            3,
            &[
                (
                    &[(1, true), (1, true), (2, true)],
                    5,
                    true,
                    &[(2, 1), (1, 2)],
                    Verdict::Continue,
                ),
                // Paused past the deadline: no rollback while a person holds it.
                (
                    &[(1, true), (2, true)],
                    10_000,
                    true,
                    &[(2, 1), (1, 1)],
                    Verdict::Continue,
                ),
                (&[], 5, true, &[(2, 0), (1, 3)], Verdict::Continue),
            ],
        );
    }

    #[test]
    fn a_release_rolls_back_on_its_deadline_or_a_crash_looping_instance() {
        let s = rolling(1, 0, 0);
        let stuck: &[(i32, bool)] = &[(1, true), (2, false)];
        let got = plan(
            &moving(&s, 1, false, 601),
            &stuck
                .iter()
                .map(|(r, ok)| inst(*r, *ok))
                .collect::<Vec<_>>(),
        );
        assert!(matches!(got.verdict, Verdict::RollBack(why) if why.contains("600 s")));
        let mut looping = inst(2, false);
        looping.restarts = CRASH_LOOP_RESTARTS;
        let got = plan(&moving(&s, 1, false, 5), &[inst(1, true), looping]);
        assert!(matches!(got.verdict, Verdict::RollBack(why) if why.contains("crash-looping")));
    }

    #[test]
    fn instances_left_by_a_superseded_release_go_before_the_from_revision() {
        // Release 1 -> 3 while revision 2 (of a superseded release) still runs one.
        let s = rolling(1, 0, 0);
        let observed = [inst(1, true), inst(2, true), inst(3, true)];
        let m = Moving {
            to: 3,
            ..moving(&s, 2, false, 1)
        };
        let got = plan(&m, &observed);
        // Surge 1 over 3 ready: one may go, and it is revision 2's.
        assert_eq!(
            got.slots,
            vec![
                (3, Slots::Count(1)),
                (2, Slots::Count(0)),
                (1, Slots::Count(1))
            ]
        );
    }

    fn canary(steps: &[(Option<u32>, Option<u32>)]) -> Strategy {
        Strategy::Canary(Canary {
            steps: steps
                .iter()
                .map(|(weight, instances)| super::super::canary::CanaryStep {
                    weight: *weight,
                    instances: *instances,
                    pause_s: Some(10),
                })
                .collect(),
            analysis: super::super::canary::Analysis::default(),
            step_deadline_s: 600,
        })
    }

    #[test]
    fn a_canary_step_adds_its_instances_beside_an_untouched_stable_revision() {
        let s = canary(&[(Some(10), None), (Some(50), None), (None, Some(2))]);
        let running: Vec<Instance> = (0..4).map(|_| inst(1, true)).collect();
        // (step, canary instances running, expected canary slots, expected weight)
        let cases: &[(u32, u32, u32, Option<u32>)] = &[
            (0, 0, 1, Some(10)),
            (0, 1, 1, Some(10)),
            (1, 1, 2, Some(50)),
            // An instance-count step: its instances' share of all (2 of 6).
            (2, 2, 2, Some(33)),
        ];
        for (step, canaries, slots, weight) in cases {
            let state = CanaryState {
                step: *step,
                ..CanaryState::default()
            };
            let mut observed = running.clone();
            observed.extend((0..*canaries).map(|_| inst(2, true)));
            let m = Moving {
                canary: Some(&state),
                ..moving(&s, 4, false, 5)
            };
            let got = plan(&m, &observed);
            assert_eq!(
                (got.slots.clone(), got.weight, got.verdict.clone()),
                (
                    vec![(2, Slots::Count(*slots)), (1, Slots::Count(4))],
                    *weight,
                    Verdict::Continue
                ),
                "step {step}"
            );
            // Never a deadline while steps run: their own deadlines rule.
            let late = Moving {
                canary: Some(&state),
                ..moving(&s, 4, false, 100_000)
            };
            assert_eq!(plan(&late, &observed).verdict, Verdict::Continue);
        }
        // Promoting: every slot to the canary, the stable revision going as the new
        // instances are ready; then success.
        let done = CanaryState {
            step: 3,
            ..CanaryState::default()
        };
        let m = Moving {
            canary: Some(&done),
            ..moving(&s, 2, false, 5)
        };
        let observed = [inst(1, true), inst(1, true), inst(2, true)];
        let got = plan(&m, &observed);
        assert_eq!(got.slots, vec![(2, Slots::Count(2)), (1, Slots::Count(1))]);
        assert_eq!(got.weight, None);
        let observed = [inst(2, true), inst(2, true)];
        assert_eq!(plan(&m, &observed).verdict, Verdict::Succeeded);
    }

    #[test]
    fn an_in_place_release_swaps_one_instance_at_a_time_and_never_surges() {
        use Verdict::*;
        let s = Strategy::InPlace(super::super::policy::InPlace {
            min_ready_s: 0,
            progress_deadline_s: 600,
        });
        check(
            &s,
            3,
            &[
                // One old instance gives its slot to a new one in the same step.
                (
                    &[(1, true), (1, true), (1, true)],
                    1,
                    false,
                    &[(2, 1), (1, 2)],
                    Continue,
                ),
                // The new one is not ready yet: nothing else moves.
                (
                    &[(1, true), (1, true), (2, false)],
                    2,
                    false,
                    &[(2, 1), (1, 2)],
                    Continue,
                ),
                (
                    &[(1, true), (1, true), (2, true)],
                    3,
                    false,
                    &[(2, 2), (1, 1)],
                    Continue,
                ),
                (
                    &[(1, true), (2, true), (2, true)],
                    4,
                    false,
                    &[(2, 3), (1, 0)],
                    Continue,
                ),
                (
                    &[(2, true), (2, true), (2, true)],
                    5,
                    false,
                    &[(2, 3), (1, 0)],
                    Succeeded,
                ),
            ],
        );
        let got = plan(&moving(&s, 3, false, 1), &[inst(1, true)]);
        assert!(got.in_place);
    }
}
