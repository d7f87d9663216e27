//! The placement pre-flight: whether an application's instances, as a spec and a
//! replica count would have them, can be placed on its runtime's nodes beside what
//! runs there now, and if not, why and what would fix it. The same choice the runtime
//! makes (`crate::placement`), over what the runtime reports of its nodes and of the
//! environment's instances.

use serde::Serialize;
use utoipa::ToSchema;

use super::{NewApplication, Platform};
use crate::CoreError;
use crate::authz::TenantAccess;
use crate::model::{ApplicationDetail, RunState};
use crate::placement::{NodeLoad, place_many};
use crate::runtime::{Phase, Placement, WorkloadKey};
use crate::spec::{AppSpec, Resources, WorkloadKind};
use crate::store;

/// What placing an application's instances would come to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Feasibility {
    /// Every instance has a node (or the runtime cannot tell: see `reason`).
    pub feasible: bool,
    /// How many instances were to be placed.
    pub replicas: u32,
    /// Where each instance that found a node would go.
    pub nodes: Vec<String>,
    /// Why the others cannot be placed, and what would fix it; or why the runtime
    /// could not be asked.
    pub reason: Option<String>,
}

impl Feasibility {
    fn unknown(replicas: u32, why: impl Into<String>) -> Self {
        Self {
            feasible: true,
            replicas,
            nodes: Vec::new(),
            reason: Some(why.into()),
        }
    }
}

impl Platform {
    /// Whether `replicas` instances of `app` with `spec` can be placed in `environment`
    /// (the application's own instances make room for themselves: the whole shape is
    /// placed again, beside every other application's). Members who can see the
    /// environment may ask.
    pub async fn placement_check(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        spec: &AppSpec,
        replicas: u32,
    ) -> Result<Feasibility, CoreError> {
        spec.validate()?;
        let env = self.environment(access, environment).await?;
        if spec.kind == WorkloadKind::Daemon || replicas == 0 {
            return Ok(Feasibility {
                feasible: true,
                replicas,
                nodes: Vec::new(),
                reason: None,
            });
        }
        let Some(runtime) = self.runtimes.get(&env.runtime) else {
            return Ok(Feasibility::unknown(
                replicas,
                format!("no runtime named {} answers here", env.runtime),
            ));
        };
        let nodes = match runtime.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                return Ok(Feasibility::unknown(
                    replicas,
                    format!("the runtime's nodes cannot be read just now: {e}"),
                ));
            }
        };
        let key = |app: &str| WorkloadKey {
            tenant: access.tenant().slug.clone(),
            environment: environment.to_owned(),
            app: app.to_owned(),
        };
        // The nodes' loads already count every instance's requests: other
        // applications' instances matter one by one only to rules that name them.
        let keys: Vec<WorkloadKey> = if spec.placement.names_others(app) {
            store::apps::list(&self.pool, access.tenant().id, Some(environment))
                .await?
                .iter()
                .map(|a| key(&a.name))
                .collect()
        } else {
            vec![key(app)]
        };
        let observed = match runtime.instances_of_many(&keys).await {
            Ok(o) => o,
            Err(e) => {
                return Ok(Feasibility::unknown(
                    replicas,
                    format!("the runtime's instances cannot be read just now: {e}"),
                ));
            }
        };
        let mut loads: Vec<NodeLoad> = nodes
            .into_iter()
            .map(|n| NodeLoad {
                // A node that is only slow to report (not ready, not lost) takes its
                // instances when it is back: the pre-flight counts it, as a scheduler's
                // admission would, and refuses only what no node could ever hold.
                healthy: n.healthy || n.condition != "lost",
                labels: n.labels,
                capacity: n.capacity,
                requested: n.allocated.unwrap_or(Resources {
                    cpu_millis: 0,
                    memory_mib: 0,
                }),
                workload_instances: 0,
                apps: Default::default(),
                cordoned: n.cordoned,
                name: n.name,
            })
            .collect();
        for (key, instances) in keys.iter().zip(&observed) {
            for i in instances.iter().filter(|i| i.phase != Phase::Stopping) {
                let Some(load) = i
                    .node
                    .as_deref()
                    .and_then(|n| loads.iter_mut().find(|l| l.name == n))
                else {
                    continue;
                };
                if key.app == app {
                    // Its own instances make room: it is placed again whole.
                    load.requested.cpu_millis = load
                        .requested
                        .cpu_millis
                        .saturating_sub(spec.resources.cpu_millis);
                    load.requested.memory_mib = load
                        .requested
                        .memory_mib
                        .saturating_sub(spec.resources.memory_mib);
                } else {
                    *load.apps.entry(key.app.clone()).or_insert(0) += 1;
                }
            }
        }
        let mut app_labels = Default::default();
        if spec.placement.selects_by_label() {
            app_labels = store::runtime::labels_in_environment(&self.pool, env.id).await?;
            // This application's labels as the change would have them.
            app_labels.insert(app.to_owned(), spec.labels.clone());
        }
        let placement = Placement {
            rules: spec.placement.clone(),
            app_labels,
            ..Placement::standard()
        };
        let (placed, failed) = place_many(&mut loads, &placement, app, spec.resources, replicas);
        Ok(Feasibility {
            feasible: failed.is_none(),
            replicas,
            nodes: placed,
            reason: failed.map(|e| e.to_string()),
        })
    }

    /// Refuses a change whose instances cannot all be placed, unless `force`: then the
    /// ones without a node show as `Unschedulable` with the same reason.
    pub async fn require_placeable(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        spec: &AppSpec,
        replicas: u32,
        force: bool,
    ) -> Result<(), CoreError> {
        if force {
            return Ok(());
        }
        let f = match self
            .placement_check(access, environment, app, spec, replicas)
            .await
        {
            Ok(f) => f,
            // An environment that does not exist: the change itself says so, by field.
            Err(CoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if f.feasible {
            return Ok(());
        }
        Err(CoreError::Infeasible {
            message: format!(
                "{} of {} instances can be placed; {} (send force=true to make the change anyway: the others wait as Unschedulable)",
                f.nodes.len(),
                f.replicas,
                f.reason.unwrap_or_default()
            ),
        })
    }

    /// Refuses a change whose release could not finish: the environment's strategy runs
    /// instances beyond the replica count at its peak (a rolling surge, a canary's
    /// promotion), and when those have no place and the strategy cannot stop an old
    /// instance first, the release would wait until its deadline and roll back. Unless
    /// `force`.
    pub async fn require_release_placeable(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        spec: &AppSpec,
        replicas: u32,
        force: bool,
    ) -> Result<(), CoreError> {
        // A stateful application's ordinals always move in place.
        if force
            || replicas == 0
            || matches!(spec.kind, WorkloadKind::Daemon | WorkloadKind::Stateful)
        {
            return Ok(());
        }
        let env = self.environment(access, environment).await?;
        let (policy, _) = super::releases::policy_of(&self.pool, env.id).await?;
        let strategy = policy.strategy.for_release(false, spec.kind);
        let surge = strategy.surge(replicas);
        if surge == 0 || strategy.may_stop_first(replicas) {
            return Ok(());
        }
        let peak = replicas + surge;
        let f = self
            .placement_check(access, environment, app, spec, peak)
            .await?;
        if f.feasible {
            return Ok(());
        }
        Err(CoreError::Infeasible {
            message: format!(
                "the release would not finish: its {} strategy runs {peak} instances at its peak ({surge} beyond the {replicas} replicas) and {} can be placed; {} (fix: a rolling strategy with max_unavailable of at least 1, or in_place, in the environment's release policy; fewer replicas; or room. Send force=true to release anyway)",
                strategy.name(),
                f.nodes.len(),
                f.reason.unwrap_or_default()
            ),
        })
    }

    /// Creates an application once the pre-flight says its instances can be placed
    /// (or `force`).
    pub async fn create_application_placed(
        &self,
        access: &TenantAccess,
        input: NewApplication,
        force: bool,
    ) -> Result<ApplicationDetail, CoreError> {
        input.spec.validate()?;
        self.require_placeable(
            access,
            input.environment.as_str(),
            input.name.as_str(),
            &input.spec,
            input.spec.replicas,
            force,
        )
        .await?;
        self.create_application(access, input).await
    }

    /// Applies a spec once the pre-flight says the running application's instances can
    /// be placed with it (or `force`).
    #[allow(clippy::too_many_arguments)]
    pub async fn update_application_placed(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        spec: AppSpec,
        description: Option<String>,
        if_version: Option<i64>,
        force: bool,
    ) -> Result<ApplicationDetail, CoreError> {
        spec.validate()?;
        let current = self.application(access, environment, name).await?;
        if current.application.run_state == RunState::Running {
            let replicas = current
                .application
                .scaled_replicas
                .map_or(spec.replicas, |r| u32::try_from(r).unwrap_or(0));
            self.require_placeable(access, environment, name, &spec, replicas, force)
                .await?;
            self.require_release_placeable(access, environment, name, &spec, replicas, force)
                .await?;
        }
        self.update_application(access, environment, name, spec, description, if_version)
            .await
    }

    /// Scales once the pre-flight says that many instances can be placed (or `force`).
    pub async fn scale_placed(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        replicas: u32,
        if_version: Option<i64>,
        force: bool,
    ) -> Result<(), CoreError> {
        super::apps::check_replicas(replicas)?;
        let current = self.application(access, environment, name).await?;
        self.require_placeable(access, environment, name, &current.spec, replicas, force)
            .await?;
        self.scale(access, environment, name, replicas, if_version)
            .await
    }
}
