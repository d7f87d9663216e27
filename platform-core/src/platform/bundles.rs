//! Domain bundles (`domain-paas`): a named, versioned set of service instances,
//! applications and bindings installed into an environment with one request.
//!
//! A request records what the environment should have (a bundle at a version) in the
//! transaction that audits it; the bundles worker then converges the environment to
//! it, pass after pass, through the same calls a user makes (provision, onboard, apply
//! a spec, bind), acting with the rights of the user who asked: a new version's
//! changed applications are new revisions released under the environment's release
//! policy, like any change. An upgrade's answer lists what changes, component by
//! component; a dry run only answers that. Uninstalling removes what the bundle
//! installed, bindings first.

use chrono::{DateTime, Utc};
use domain_paas::manifest::{BundleManifest, ComponentDiff};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::services::{NewBinding, NewServiceInstance, ServiceInstanceChange};
use super::{Audit, Platform, record};
use crate::authz::{Permission, TenantAccess};
use crate::model::Environment;
use crate::names::{AppName, EnvName};
use crate::platform::apps::NewApplication;
use crate::releases::policy::Strategy;
use crate::spec::AppSpec;
use crate::store::bundles::{self as store, BundleState, InstallationRow};
use crate::store::services::{BindingState, InstanceState};
use crate::{CoreError, FieldError};

/// A bundle the platform offers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BundleInfo {
    pub name: String,
    pub description: String,
    /// Oldest first.
    pub versions: Vec<String>,
    pub latest: String,
    /// What the latest version installs.
    pub services: Vec<String>,
    pub applications: Vec<String>,
}

/// One component of an installed bundle and where it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentStatus {
    /// `service`, `application` or `binding`.
    pub kind: &'static str,
    pub name: String,
    /// `ready`, `provisioning`, `missing`, `bound`, `running`, ...
    pub state: String,
}

/// A bundle installed into an environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BundleInstallation {
    pub bundle: String,
    pub environment: String,
    pub version: String,
    /// During an upgrade, the version it started from.
    pub previous_version: Option<String>,
    pub state: BundleState,
    /// Why the last pass could not finish.
    pub message: Option<String>,
    pub components: Vec<ComponentStatus>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An install or upgrade request.
#[derive(Debug, Clone)]
pub struct InstallBundle {
    pub bundle: String,
    /// The latest when absent.
    pub version: Option<String>,
    pub environment: String,
    /// Only say what would change.
    pub dry_run: bool,
}

/// What an install or upgrade changes (or would change), and the installation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BundleChange {
    pub from_version: Option<String>,
    pub to_version: String,
    #[schema(value_type = Vec<Object>)]
    pub diff: Vec<ComponentDiff>,
    pub installation: Option<BundleInstallation>,
}

fn empty(name: &str) -> BundleManifest {
    BundleManifest {
        name: name.to_owned(),
        version: "0.0.0".to_owned(),
        description: String::new(),
        services: Vec::new(),
        applications: Vec::new(),
    }
}

fn manifest_of(row: &InstallationRow, version: &str) -> Result<BundleManifest, CoreError> {
    domain_paas::catalog::find(&row.bundle, version).ok_or_else(|| {
        CoreError::Internal(format!(
            "bundle {} {version} is not offered by this release",
            row.bundle
        ))
    })
}

impl Platform {
    /// The bundles this platform offers (any signed-in user may look).
    pub fn available_bundles(&self) -> Vec<BundleInfo> {
        let mut out: Vec<BundleInfo> = Vec::new();
        // By name, then version: each bundle's latest version comes last.
        for m in domain_paas::catalog::all().iter().cloned() {
            let mut versions = match out.last() {
                Some(b) if b.name == m.name => out.pop().map(|b| b.versions).unwrap_or_default(),
                _ => Vec::new(),
            };
            versions.push(m.version.clone());
            out.push(BundleInfo {
                services: m.services.iter().map(|s| s.name.clone()).collect(),
                applications: m.applications.iter().map(|a| a.name.clone()).collect(),
                name: m.name,
                description: m.description,
                latest: m.version,
                versions,
            });
        }
        out
    }

    /// The tenant's installed bundles.
    pub async fn bundles(
        &self,
        access: &TenantAccess,
    ) -> Result<Vec<BundleInstallation>, CoreError> {
        access.require(Permission::View, "view bundles")?;
        let envs = self.environments(access).await?;
        let mut out = Vec::new();
        for row in store::installations(&self.pool, access.tenant().id).await? {
            if let Some(env) = envs.iter().find(|e| e.id == row.environment_id) {
                out.push(self.installation_view(access, env, &row).await?);
            }
        }
        Ok(out)
    }

    /// One installed bundle.
    pub async fn bundle(
        &self,
        access: &TenantAccess,
        environment: &str,
        bundle: &str,
    ) -> Result<BundleInstallation, CoreError> {
        let env = self.environment(access, environment).await?;
        let row = store::installation(&self.pool, env.id, bundle)
            .await?
            .ok_or_else(|| CoreError::not_found("bundle", format!("{environment}/{bundle}")))?;
        self.installation_view(access, &env, &row).await
    }

    async fn installation_view(
        &self,
        access: &TenantAccess,
        env: &Environment,
        row: &InstallationRow,
    ) -> Result<BundleInstallation, CoreError> {
        let manifest = domain_paas::catalog::find(&row.bundle, &row.version)
            .unwrap_or_else(|| empty(&row.bundle));
        let mut components = Vec::new();
        for s in &manifest.services {
            let state = match self.service_instance(access, &env.name, &s.name).await {
                Ok(i) => i.state.as_str().to_owned(),
                Err(CoreError::NotFound { .. }) => "missing".to_owned(),
                Err(e) => return Err(e),
            };
            components.push(ComponentStatus {
                kind: "service",
                name: s.name.clone(),
                state,
            });
        }
        for a in &manifest.applications {
            let state = match self.application(access, &env.name, &a.name).await {
                Ok(_) => "onboarded".to_owned(),
                Err(CoreError::NotFound { .. }) => "missing".to_owned(),
                Err(e) => return Err(e),
            };
            components.push(ComponentStatus {
                kind: "application",
                name: a.name.clone(),
                state,
            });
        }
        let bindings = self.environment_bindings(access, &env.name).await?;
        for (app, service, _) in manifest.bindings() {
            let state = bindings
                .iter()
                .find(|b| b.application == app && b.instance == service)
                .map_or("missing".to_owned(), |b| {
                    serde_json::to_value(b.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                });
            components.push(ComponentStatus {
                kind: "binding",
                name: format!("{app} → {service}"),
                state,
            });
        }
        Ok(BundleInstallation {
            bundle: row.bundle.clone(),
            environment: env.name.clone(),
            version: row.version.clone(),
            previous_version: row.previous_version.clone(),
            state: row.state,
            message: row.message.clone(),
            components,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    /// Installs a bundle into an environment, or upgrades (or downgrades) the one
    /// installed there to another version. Answers at once with the per-component
    /// diff; the environment converges afterwards.
    pub async fn install_bundle(
        &self,
        access: &TenantAccess,
        request: InstallBundle,
    ) -> Result<BundleChange, CoreError> {
        let env = self.environment(access, &request.environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "install bundles in a protected environment",
        )?;
        let to = match &request.version {
            Some(v) => domain_paas::catalog::find(&request.bundle, v),
            None => domain_paas::catalog::latest(&request.bundle),
        };
        let Some(to) = to else {
            return Err(if domain_paas::catalog::latest(&request.bundle).is_none() {
                FieldError::new(
                    "bundle",
                    format!("no bundle '{}' is offered", request.bundle),
                )
            } else {
                FieldError::new(
                    "version",
                    format!(
                        "bundle '{}' has no version '{}'",
                        request.bundle,
                        request.version.as_deref().unwrap_or_default()
                    ),
                )
            }
            .into());
        };
        // Every application spec of the bundle must be one the platform takes.
        for a in &to.applications {
            let spec: AppSpec = serde_json::from_value(a.spec.clone()).map_err(|e| {
                CoreError::Internal(format!(
                    "bundle {} {}: {}: {e}",
                    to.name, to.version, a.name
                ))
            })?;
            spec.validate().map_err(|e| {
                CoreError::Internal(format!(
                    "bundle {} {}: {}: {e}",
                    to.name, to.version, a.name
                ))
            })?;
        }
        let existing = store::installation(&self.pool, env.id, &to.name).await?;
        let from = match &existing {
            Some(row) if row.state == BundleState::Uninstalling => {
                return Err(CoreError::WrongState(format!(
                    "bundle '{}' is being uninstalled from '{}'; install it again once it is gone",
                    to.name, env.name
                )));
            }
            Some(row) => Some(manifest_of(row, &row.version)?),
            None => None,
        };
        if let (Some(row), Some(from)) = (&existing, &from)
            && from.version == to.version
            && row.state != BundleState::Failed
        {
            return Err(CoreError::Conflict {
                field: "version",
                message: format!(
                    "bundle '{}' {} is already installed in '{}'",
                    to.name, to.version, env.name
                ),
            });
        }
        let diff = domain_paas::manifest::diff(from.as_ref().unwrap_or(&empty(&to.name)), &to);
        let from_version = from.as_ref().map(|m| m.version.clone());
        if request.dry_run {
            return Ok(BundleChange {
                from_version,
                to_version: to.version,
                diff,
                installation: None,
            });
        }
        let row = InstallationRow {
            id: existing.as_ref().map_or_else(Uuid::new_v4, |r| r.id),
            tenant_id: access.tenant().id,
            environment_id: env.id,
            bundle: to.name.clone(),
            version: to.version.clone(),
            previous_version: from_version.clone(),
            state: BundleState::Installing,
            message: None,
            installed_by: access.principal().user_id,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let mut tx = self.pool.begin().await?;
        store::upsert(&mut tx, &row).await?;
        let target = format!("{}/{}", env.name, to.name);
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: if from_version.is_some() {
                    "bundle.upgrade"
                } else {
                    "bundle.install"
                },
                target_kind: "bundle",
                target: &target,
                details: json!({"from": from_version, "to": to.version}),
            },
        )
        .await?;
        tx.commit().await?;
        self.bundle_wake.notify_one();
        Ok(BundleChange {
            from_version,
            to_version: to.version.clone(),
            diff,
            installation: Some(self.bundle(access, &env.name, &to.name).await?),
        })
    }

    /// Uninstalls a bundle: what it installed is removed by the worker, bindings first.
    pub async fn uninstall_bundle(
        &self,
        access: &TenantAccess,
        environment: &str,
        bundle: &str,
    ) -> Result<BundleInstallation, CoreError> {
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "uninstall bundles in a protected environment",
        )?;
        let row = store::installation(&self.pool, env.id, bundle)
            .await?
            .ok_or_else(|| CoreError::not_found("bundle", format!("{environment}/{bundle}")))?;
        let mut tx = self.pool.begin().await?;
        store::set_uninstalling(&mut tx, row.id).await?;
        let target = format!("{}/{bundle}", env.name);
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: "bundle.uninstall",
                target_kind: "bundle",
                target: &target,
                details: json!({"version": row.version}),
            },
        )
        .await?;
        tx.commit().await?;
        self.bundle_wake.notify_one();
        self.bundle(access, &env.name, bundle).await
    }

    /// One pass of the bundles worker over the installations with work to do.
    pub async fn converge_bundles(&self) -> Result<(), CoreError> {
        for row in store::claim_pending(&self.pool, std::time::Duration::from_secs(60)).await? {
            let outcome = self.converge_one(&row).await;
            let (state, message) = match outcome {
                Ok(Pass::Done) if row.state == BundleState::Uninstalling => {
                    store::delete(&self.pool, row.id).await?;
                    continue;
                }
                Ok(Pass::Done) => (BundleState::Ready, None),
                Ok(Pass::Waiting(why)) => (row.state, Some(why)),
                Err(
                    e @ (CoreError::Store(_)
                    | CoreError::Unavailable(_)
                    | CoreError::BrokerUnavailable(_)),
                ) => (row.state, Some(e.to_string())),
                Err(e) => (BundleState::Failed, Some(e.to_string())),
            };
            store::record_pass(&self.pool, &row, state, message.as_deref()).await?;
        }
        Ok(())
    }

    /// Brings one installation one step nearer its version (or its removal).
    async fn converge_one(&self, row: &InstallationRow) -> Result<Pass, CoreError> {
        let Some((principal, _)) = self.load_principal(row.installed_by, None).await? else {
            return Err(CoreError::NotPermitted(
                "the user who asked for this bundle can no longer act".into(),
            ));
        };
        let tenant = crate::store::tenants::by_id(&self.pool, row.tenant_id)
            .await?
            .ok_or_else(|| CoreError::not_found("tenant", row.tenant_id.to_string()))?;
        let access = self.tenant(&principal, &tenant.slug).await?;
        let env = self
            .environments(&access)
            .await?
            .into_iter()
            .find(|e| e.id == row.environment_id)
            .ok_or_else(|| CoreError::not_found("environment", row.environment_id.to_string()))?;
        let current = manifest_of(row, &row.version)?;
        if row.state == BundleState::Uninstalling {
            return self
                .remove_components(&access, &env, &current, &empty(&row.bundle))
                .await;
        }
        // What the version it came from had and this one has not goes first.
        let previous = match &row.previous_version {
            Some(v) => Some(manifest_of(row, v)?),
            None => None,
        };
        if let Some(previous) = &previous
            && let Pass::Waiting(why) = self
                .remove_components(&access, &env, previous, &current)
                .await?
        {
            return Ok(Pass::Waiting(why));
        }
        self.add_components(&access, &env, &current, previous.as_ref())
            .await
    }

    /// Provisions, onboards, applies and binds what `manifest` has; `Done` when all is
    /// in place.
    async fn add_components(
        &self,
        access: &TenantAccess,
        env: &Environment,
        manifest: &BundleManifest,
        previous: Option<&BundleManifest>,
    ) -> Result<Pass, CoreError> {
        let mut waiting = Vec::new();
        // The instances found ready in this pass: bindings wait for the others.
        let mut ready = std::collections::HashSet::new();
        for s in &manifest.services {
            match self.service_instance(access, &env.name, &s.name).await {
                Ok(i) if i.state == InstanceState::Ready && i.operation.is_some() => {
                    waiting.push(format!("service '{}' is being changed", s.name));
                }
                // A new version's plan or parameters are an update of the instance.
                Ok(i)
                    if i.state == InstanceState::Ready
                        && (i.plan != s.plan || i.parameters != s.parameters) =>
                {
                    let change = ServiceInstanceChange {
                        plan: (i.plan != s.plan).then(|| s.plan.clone()),
                        parameters: (i.parameters != s.parameters).then(|| s.parameters.clone()),
                    };
                    self.update_service(access, &env.name, &s.name, change, Some(i.version))
                        .await?;
                    waiting.push(format!("service '{}' is being changed", s.name));
                }
                Ok(i) if i.state == InstanceState::Ready => {
                    ready.insert(s.name.as_str());
                }
                Ok(i) if i.state == InstanceState::Failed => {
                    return Err(CoreError::WrongState(format!(
                        "service '{}' failed: {}",
                        s.name,
                        i.last_operation
                            .and_then(|o| o.description)
                            .unwrap_or_default()
                    )));
                }
                Ok(i) => waiting.push(format!("service '{}' is {}", s.name, i.state.as_str())),
                Err(CoreError::NotFound { .. }) => {
                    self.provision_service(
                        access,
                        &env.name,
                        NewServiceInstance {
                            name: s.name.clone(),
                            service: s.service.clone(),
                            plan: s.plan.clone(),
                            parameters: Some(s.parameters.clone()).filter(|p| !p.is_empty()),
                        },
                    )
                    .await?;
                    waiting.push(format!("service '{}' is provisioning", s.name));
                }
                Err(e) => return Err(e),
            }
        }
        for a in &manifest.applications {
            let spec: AppSpec = serde_json::from_value(a.spec.clone())
                .map_err(|e| CoreError::Internal(format!("{}: {e}", a.name)))?;
            match self.application(access, &env.name, &a.name).await {
                Ok(detail) if detail.spec == spec => {}
                Ok(_) => {
                    let strategy = a
                        .release
                        .clone()
                        .map(serde_json::from_value::<Strategy>)
                        .transpose()
                        .map_err(|e| {
                            CoreError::Internal(format!("{}'s release strategy: {e}", a.name))
                        })?;
                    self.update_caused(
                        access,
                        &env.name,
                        &a.name,
                        spec,
                        (Some(a.description.clone()), None),
                        (super::releases::Cause::Change, strategy),
                    )
                    .await?;
                }
                Err(CoreError::NotFound { .. }) => {
                    let name = AppName::parse(&a.name)
                        .map_err(|_| CoreError::Internal(format!("application name {}", a.name)))?;
                    let environment = EnvName::parse(&env.name).map_err(|_| {
                        CoreError::Internal(format!("environment name {}", env.name))
                    })?;
                    let created = self
                        .create_application(
                            access,
                            NewApplication {
                                environment,
                                name,
                                description: a.description.clone(),
                                spec,
                            },
                        )
                        .await;
                    match created {
                        Ok(_) => {}
                        // No live application has the name (it was just looked up): a
                        // deleted one (an uninstall moments ago) is still being released
                        // by its runtime.
                        Err(CoreError::Conflict { field: "name", .. }) => {
                            waiting.push(format!(
                                "application '{}' waits for its deleted namesake to be removed",
                                a.name
                            ));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
            if let Some(default) = &a.autoscaling {
                let before = previous
                    .and_then(|p| p.applications.iter().find(|x| x.name == a.name))
                    .and_then(|x| x.autoscaling.as_ref());
                let via = format!("bundle {} {}", manifest.name, manifest.version);
                self.apply_default_autoscaling(access, &env.name, &a.name, default, before, &via)
                    .await?;
            }
        }
        let bindings = self.environment_bindings(access, &env.name).await?;
        for (app, service, prefix) in manifest.bindings() {
            if bindings
                .iter()
                .any(|b| b.application == app && b.instance == service)
            {
                continue;
            }
            if !ready.contains(service) {
                waiting.push(format!("binding {app} → {service} waits for the service"));
                continue;
            }
            self.bind_service(
                access,
                &env.name,
                service,
                NewBinding {
                    application: app.to_owned(),
                    prefix: prefix.map(str::to_owned),
                },
            )
            .await?;
        }
        Ok(if waiting.is_empty() {
            Pass::Done
        } else {
            Pass::Waiting(waiting.join("; "))
        })
    }

    /// Removes what `had` has and `keep` has not: bindings, then applications, then
    /// service instances (once nothing is bound to them). `Done` when all is gone.
    async fn remove_components(
        &self,
        access: &TenantAccess,
        env: &Environment,
        had: &BundleManifest,
        keep: &BundleManifest,
    ) -> Result<Pass, CoreError> {
        let mut waiting = Vec::new();
        let kept = keep.bindings();
        let bindings = self.environment_bindings(access, &env.name).await?;
        for (app, service, _) in had.bindings() {
            if kept.iter().any(|(a, s, _)| *a == app && *s == service) {
                continue;
            }
            if let Some(b) = bindings
                .iter()
                .find(|b| b.application == app && b.instance == service)
            {
                if b.state != BindingState::Unbinding {
                    match self.unbind_service(access, &env.name, service, app).await {
                        Ok(()) | Err(CoreError::NotFound { .. }) => {}
                        // A binding still being made: the next pass removes it.
                        Err(e) => busy(e)?,
                    }
                }
                waiting.push(format!("binding {app} → {service} is being removed"));
            }
        }
        // An application goes once nothing is bound to it any more.
        if !waiting.is_empty() {
            return Ok(Pass::Waiting(waiting.join("; ")));
        }
        for a in &had.applications {
            if keep.applications.iter().any(|k| k.name == a.name) {
                continue;
            }
            match self
                .delete_application(access, &env.name, &a.name, None)
                .await
            {
                Ok(()) => waiting.push(format!("application '{}' is being removed", a.name)),
                Err(CoreError::NotFound { .. }) => {}
                Err(e) => {
                    busy(e)?;
                    waiting.push(format!("application '{}' waits to be removed", a.name));
                }
            }
        }
        for s in &had.services {
            if keep.services.iter().any(|k| k.name == s.name) {
                continue;
            }
            match self.service_instance(access, &env.name, &s.name).await {
                Err(CoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
                Ok(i) if i.state == InstanceState::Deprovisioning => {
                    waiting.push(format!("service '{}' is being deprovisioned", s.name));
                }
                Ok(_) => {
                    let still_bound = self
                        .service_bindings(access, &env.name, &s.name)
                        .await
                        .map(|b| !b.is_empty())
                        .unwrap_or(false);
                    if still_bound {
                        waiting.push(format!("service '{}' waits for its bindings to go", s.name));
                    } else {
                        // An instance still being made is deprovisioned once it is.
                        if let Err(e) = self
                            .deprovision_service(access, &env.name, &s.name, None)
                            .await
                        {
                            busy(e)?;
                        }
                        waiting.push(format!("service '{}' is being deprovisioned", s.name));
                    }
                }
            }
        }
        Ok(if waiting.is_empty() {
            Pass::Done
        } else {
            Pass::Waiting(waiting.join("; "))
        })
    }

    /// Runs the bundles worker until `stop` turns true: a pass when woken by a request
    /// and every two seconds (installations wait on brokers and rollouts).
    pub async fn run_bundles_worker(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let wake = self.bundle_wake.clone();
        loop {
            if let Err(e) = self.converge_bundles().await {
                tracing::warn!(error = %e, "a bundles pass failed; the next one retries");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// Passes over a refusal that only says "not now" (an operation still running, a
/// change in flight): the next pass tries again. Anything else is the pass's error.
fn busy(e: CoreError) -> Result<(), CoreError> {
    match e {
        CoreError::WrongState(_)
        | CoreError::Conflict { .. }
        | CoreError::VersionMismatch { .. } => Ok(()),
        e => Err(e),
    }
}

/// Where a pass left an installation.
#[derive(Debug)]
enum Pass {
    Done,
    /// Waiting for brokers or rollouts; what for.
    Waiting(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaling::policy::Policy;

    #[test]
    fn every_bundles_specs_and_policies_are_the_platforms_own_and_valid() {
        let mut policies = 0;
        for bundle in domain_paas::catalog::all() {
            for a in &bundle.applications {
                let at = format!("{} {}: {}", bundle.name, bundle.version, a.name);
                let spec: AppSpec = serde_json::from_value(a.spec.clone())
                    .unwrap_or_else(|e| panic!("{at}: spec: {e}"));
                spec.validate()
                    .unwrap_or_else(|e| panic!("{at}: spec: {e:?}"));
                if let Some(p) = &a.autoscaling {
                    let policy: Policy = serde_json::from_value(p.clone())
                        .unwrap_or_else(|e| panic!("{at}: autoscaling: {e}"));
                    policy
                        .compile_draft(spec.kind, Utc::now())
                        .unwrap_or_else(|e| panic!("{at}: autoscaling: {e:?}"));
                    policies += 1;
                }
                if let Some(r) = &a.release {
                    let strategy: Strategy = serde_json::from_value(r.clone())
                        .unwrap_or_else(|e| panic!("{at}: release: {e}"));
                    strategy
                        .check_for(spec.kind)
                        .unwrap_or_else(|e| panic!("{at}: release: {e:?}"));
                    policies += 1;
                }
            }
        }
        assert!(policies >= 4, "the retail bundle's defaults are checked");
    }
}
