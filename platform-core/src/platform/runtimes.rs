//! The runtimes this control plane drives, as platform administrators see them.

use serde_json::json;

use super::{Audit, Platform, record};
use crate::CoreError;
use crate::runtime::{NodeLoss, RuntimeError};

/// One runtime this control plane drives and the nodes it reports.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RuntimeOverview {
    /// What environments name it by (`local`, or a cluster's name).
    pub name: String,
    pub nodes: Vec<crate::runtime::Node>,
    /// The most recent events of its nodes, newest first.
    pub events: Vec<crate::runtime::NodeEvent>,
    /// Why the nodes could not be read, when they could not.
    pub error: Option<String>,
    /// Every instance of a live application, with its node: the placement map.
    pub placed: Vec<PlacedInstance>,
}

/// One instance on the placement map.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PlacedInstance {
    pub node: String,
    pub tenant: String,
    pub environment: String,
    pub application: String,
    pub instance: String,
    pub ready: bool,
}

impl Platform {
    /// Every runtime with its nodes (platform administrators only).
    pub async fn runtime_overview(
        &self,
        principal: &crate::authz::Principal,
    ) -> Result<Vec<RuntimeOverview>, CoreError> {
        principal.require_platform_admin("view the runtimes and their nodes")?;
        let mut out = Vec::new();
        for (name, runtime) in self.runtimes().iter() {
            let (nodes, error) = match runtime.nodes().await {
                Ok(nodes) => (nodes, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            };
            let events = runtime.node_events(20).await.unwrap_or_default();
            let keys: Vec<crate::runtime::WorkloadKey> =
                crate::store::runtime::desired(&self.pool, Some(name), None)
                    .await?
                    .into_iter()
                    .filter(|r| !r.deleted)
                    .map(|r| crate::runtime::WorkloadKey {
                        tenant: r.tenant,
                        environment: r.environment,
                        app: r.app,
                    })
                    .collect();
            let mut placed = Vec::new();
            for batch in keys.chunks(500) {
                // A runtime that cannot say shows its nodes without their instances.
                let Ok(all) = runtime.instances_of_many(batch).await else {
                    break;
                };
                for (key, instances) in batch.iter().zip(all) {
                    for i in instances
                        .into_iter()
                        .filter(|i| i.phase != crate::runtime::Phase::Stopping)
                    {
                        let Some(node) = i.node else { continue };
                        placed.push(PlacedInstance {
                            node,
                            tenant: key.tenant.clone(),
                            environment: key.environment.clone(),
                            application: key.app.clone(),
                            instance: i.name,
                            ready: i.ready,
                        });
                    }
                }
            }
            out.push(RuntimeOverview {
                name: name.to_owned(),
                nodes,
                events,
                error,
                placed,
            });
        }
        Ok(out)
    }

    /// The runtime a node belongs to, for calls that name only the node: refused when
    /// no runtime reports it (404) or several do (409: name the runtime). Platform
    /// administrators only.
    pub async fn runtime_of_node(
        &self,
        principal: &crate::authz::Principal,
        node: &str,
    ) -> Result<String, CoreError> {
        principal.require_platform_admin("manage nodes")?;
        let mut found = Vec::new();
        let mut unread = Vec::new();
        for (name, runtime) in self.runtimes().iter() {
            match runtime.nodes().await {
                Ok(nodes) if nodes.iter().any(|n| n.name == node) => found.push(name.to_owned()),
                Ok(_) => {}
                Err(e) => unread.push(format!("{name} ({e})")),
            }
        }
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] if !unread.is_empty() => Err(CoreError::Unavailable(format!(
                "no runtime that answered reports node {node}; these could not be read: {}",
                unread.join(", ")
            ))),
            [] => Err(CoreError::not_found("node", node)),
            several => Err(CoreError::Conflict {
                field: "node",
                message: format!(
                    "runtimes {} each report a node named {node}: use /api/v1/admin/runtimes/<runtime>/nodes/{node}/...",
                    several.join(" and ")
                ),
            }),
        }
    }

    /// Cordons a node (it takes no new instances; what runs there stays) or uncordons
    /// it. Platform administrators only; audited when it changes anything.
    pub async fn set_node_cordoned(
        &self,
        principal: &crate::authz::Principal,
        runtime: &str,
        node: &str,
        cordoned: bool,
    ) -> Result<(), CoreError> {
        principal.require_platform_admin(if cordoned {
            "cordon nodes"
        } else {
            "uncordon nodes"
        })?;
        let driver = self.driver(runtime)?;
        let changed = driver
            .set_cordoned(node, cordoned)
            .await
            .map_err(runtime_error(runtime))?;
        if changed {
            let action = if cordoned {
                "node.cordon"
            } else {
                "node.uncordon"
            };
            self.audit_node(principal, action, runtime, node, json!({}))
                .await?;
        }
        Ok(())
    }

    /// Whether draining `node` can finish, application by application (platform
    /// administrators only); then, unless `dry_run`, drains it: refused with 422
    /// `infeasible` and the reasons when some application cannot move, unless `force`
    /// (those wait on the node, saying why). Audited when it starts a drain.
    pub async fn drain_node(
        &self,
        principal: &crate::authz::Principal,
        runtime: &str,
        node: &str,
        dry_run: bool,
        force: bool,
    ) -> Result<crate::drain::DrainPlan, CoreError> {
        principal.require_platform_admin("drain nodes")?;
        let driver = self.driver(runtime)?;
        let nodes = driver.nodes().await.map_err(runtime_error(runtime))?;
        if !nodes.iter().any(|n| n.name == node) {
            return Err(CoreError::not_found("node", node));
        }
        // Each running application with its spec (one that does not parse is skipped).
        let rows: Vec<_> = crate::store::runtime::desired(&self.pool, Some(runtime), None)
            .await?
            .into_iter()
            .filter(|r| !r.deleted && r.run_state == crate::model::RunState::Running)
            .filter_map(|r| {
                let spec = serde_json::from_value::<crate::spec::AppSpec>(r.spec.clone()).ok()?;
                Some((r, spec))
            })
            .collect();
        let keys: Vec<crate::runtime::WorkloadKey> = rows
            .iter()
            .map(|(r, _)| crate::runtime::WorkloadKey {
                tenant: r.tenant.clone(),
                environment: r.environment.clone(),
                app: r.app.clone(),
            })
            .collect();
        // Each environment's applications' labels, for rules that select by label.
        let mut labels: std::collections::BTreeMap<
            (String, String),
            crate::store::runtime::AppLabels,
        > = Default::default();
        let selecting = rows
            .iter()
            .any(|(_, spec)| spec.placement.selects_by_label());
        for (r, spec) in rows.iter().filter(|_| selecting) {
            labels
                .entry((r.tenant.clone(), r.environment.clone()))
                .or_default()
                .insert(r.app.clone(), spec.labels.clone());
        }
        let mut placed = Vec::new();
        let mut apps = Vec::new();
        for (batch, rows) in keys.chunks(500).zip(rows.chunks(500)) {
            let all = driver
                .instances_of_many(batch)
                .await
                .map_err(runtime_error(runtime))?;
            for ((key, (row, spec)), instances) in batch.iter().zip(rows).zip(all) {
                let owner = (key.tenant.clone(), key.environment.clone(), key.app.clone());
                let mut here = false;
                for i in instances
                    .iter()
                    .filter(|i| i.phase != crate::runtime::Phase::Stopping)
                {
                    let Some(on) = &i.node else { continue };
                    here |= on == node;
                    placed.push((on.clone(), owner.clone(), spec.resources));
                }
                if here {
                    let app_labels = if spec.placement.selects_by_label() {
                        labels
                            .get(&(key.tenant.clone(), key.environment.clone()))
                            .cloned()
                            .unwrap_or_default()
                    } else {
                        Default::default()
                    };
                    apps.push(crate::drain::DrainApp {
                        app_labels,
                        tenant: key.tenant.clone(),
                        environment: key.environment.clone(),
                        app: key.app.clone(),
                        replicas: row
                            .replicas
                            .and_then(|r| u32::try_from(r).ok())
                            .unwrap_or(spec.replicas),
                        spec: spec.clone(),
                    });
                }
            }
        }
        let plan = crate::drain::plan(runtime, node, nodes, &placed, &apps);
        if dry_run {
            return Ok(plan);
        }
        if !plan.feasible && !force {
            return Err(CoreError::Infeasible {
                message: format!(
                    "draining {node} cannot finish: {} (send force=true to drain anyway: those instances stay and say why)",
                    plan.blocked()
                ),
            });
        }
        let changed = driver.drain(node).await.map_err(runtime_error(runtime))?;
        if changed {
            let details = json!({"forced": force && !plan.feasible, "moves": plan.moves.len(), "blocked": plan.blocked()});
            self.audit_node(principal, "node.drain", runtime, node, details)
                .await?;
        }
        Ok(plan)
    }

    /// A platform administrator's word that a silent node is gone for good: its
    /// instances start elsewhere, stateful ones without the data they left on it (and
    /// only once the node's lease has surely run out). Refused while the node reports.
    pub async fn confirm_node_lost(
        &self,
        principal: &crate::authz::Principal,
        runtime: &str,
        node: &str,
    ) -> Result<NodeLoss, CoreError> {
        principal.require_platform_admin("confirm a node lost")?;
        let driver = self.driver(runtime)?;
        let loss = driver
            .confirm_node_lost(node)
            .await
            .map_err(runtime_error(runtime))?;
        let details =
            json!({"stateful_moved": loss.stateful_moved, "moves_after": loss.moves_after});
        self.audit_node(principal, "node.confirm_lost", runtime, node, details)
            .await?;
        Ok(loss)
    }

    /// The driver of a runtime this control plane drives, or 404.
    fn driver(
        &self,
        runtime: &str,
    ) -> Result<&std::sync::Arc<dyn crate::runtime::Runtime>, CoreError> {
        self.runtimes()
            .get(runtime)
            .ok_or_else(|| CoreError::not_found("runtime", runtime))
    }

    /// Records an administrator's action on a node in the audit log, and wakes the
    /// reconciler.
    async fn audit_node(
        &self,
        principal: &crate::authz::Principal,
        action: &'static str,
        runtime: &str,
        node: &str,
        details: serde_json::Value,
    ) -> Result<(), CoreError> {
        let mut tx = self.pool.begin().await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action,
                target_kind: "node",
                target: &format!("{runtime}/{node}"),
                details,
            },
        )
        .await?;
        tx.commit().await?;
        self.changed();
        Ok(())
    }
}

/// A runtime's refusal as the platform's error.
fn runtime_error(runtime: &str) -> impl Fn(RuntimeError) -> CoreError + '_ {
    move |e| match e {
        RuntimeError::NotFound { kind, name } => CoreError::NotFound { kind, name },
        RuntimeError::Conflict(message) => CoreError::Conflict {
            field: "node",
            message,
        },
        RuntimeError::Unsupported(what) => CoreError::Conflict {
            field: "runtime",
            message: format!("runtime '{runtime}' does not support {what}"),
        },
        RuntimeError::Unavailable(why) => CoreError::Unavailable(why),
        other => CoreError::Internal(other.to_string()),
    }
}
