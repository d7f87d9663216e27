//! Applications and revisions.

use serde_json::json;

use super::{Audit, Platform, audit_record, enforce_quota, enforce_quota_of, quota_of, record};
use crate::authz::{Permission, TenantAccess};
use crate::error::conflict_on_unique;
use crate::manifest::{Applied, Manifest};
use crate::model::{
    AppEvent, Application, ApplicationDetail, Environment, Revision, RunState, desired_replicas,
};
use crate::names::{AppName, EnvName};
use crate::quota::{Quota, Usage};
use crate::runtime::{Instance, WorkloadKey};
use crate::spec::AppSpec;
use crate::store::apps::RevisionRow;
use crate::{CoreError, FieldError, store};

/// Which applications a list shows: filters, and where the page starts.
#[derive(Debug, Clone)]
pub struct AppQuery {
    /// Only this environment's.
    pub environment: Option<String>,
    /// Only those whose name contains this.
    pub search: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// At most this many (1 to [`AppQuery::MAX_LIMIT`]).
    pub limit: u32,
}

impl AppQuery {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;
}

impl Default for AppQuery {
    fn default() -> Self {
        Self {
            environment: None,
            search: None,
            after: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// One page of applications, and where the next one starts (absent on the last).
#[derive(Debug, Clone)]
pub struct AppPage {
    pub items: Vec<Application>,
    pub next: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewApplication {
    pub environment: EnvName,
    pub name: AppName,
    pub description: String,
    pub spec: AppSpec,
}

impl Platform {
    /// One page of the tenant's live applications, in name order.
    pub async fn applications(
        &self,
        access: &TenantAccess,
        query: &AppQuery,
    ) -> Result<AppPage, CoreError> {
        access.require(Permission::View, "view applications")?;
        let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
            None => None,
            Some(cursor) => Some(cursor.split_once('.').ok_or_else(|| {
                FieldError::new("after", "must be the `next` of a previous page")
            })?),
        };
        if !(1..=AppQuery::MAX_LIMIT).contains(&query.limit) {
            return Err(FieldError::new(
                "limit",
                format!("must be between 1 and {}", AppQuery::MAX_LIMIT),
            )
            .into());
        }
        let limit = query.limit;
        let search = query
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let environment = query.environment.as_deref().filter(|e| !e.is_empty());
        let mut items = store::apps::page(
            &self.pool,
            access.tenant().id,
            environment,
            search,
            after,
            i64::from(limit) + 1,
        )
        .await?;
        let next = (items.len() > limit as usize).then(|| {
            items.truncate(limit as usize);
            items
                .last()
                .map(|a| format!("{}.{}", a.name, a.environment))
                .unwrap_or_default()
        });
        Ok(AppPage { items, next })
    }

    /// Creates an application and its first revision.
    pub async fn create_application(
        &self,
        access: &TenantAccess,
        input: NewApplication,
    ) -> Result<ApplicationDetail, CoreError> {
        let plan = self.plan_create(access, input).await?;
        let application = if plan.quota == Quota::default() {
            // No quota to hold: one statement, committed on its own.
            insert_planned(&self.pool, access, &plan).await?
        } else {
            let mut tx = self.pool.begin().await?;
            let application = write_create(&mut tx, access, &plan).await?;
            tx.commit().await?;
            application
        };
        Ok(ApplicationDetail {
            application,
            spec: plan.input.spec,
        })
    }

    /// Every check a create makes before it writes anything.
    async fn plan_create(
        &self,
        access: &TenantAccess,
        input: NewApplication,
    ) -> Result<PlannedCreate, CoreError> {
        input.spec.validate()?;
        self.check_package(access, &input.spec).await?;
        // The tenant's quota is read beside the environment, before the transaction; it
        // is enforced inside it, under the tenant's lock, when there is one.
        let (env, quota) = futures_util::try_join!(
            self.environment_for_change(access, input.environment.as_str()),
            async {
                let row = store::tenants::quota(&self.pool, access.tenant().id).await?;
                Ok::<_, CoreError>(quota_of(&row))
            },
        )?;
        self.preflight(&env, &input.spec)?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "change applications in a protected environment",
        )?;
        let spec_json =
            serde_json::to_value(&input.spec).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(PlannedCreate {
            env,
            quota,
            input,
            spec_json,
        })
    }

    /// An application with its current spec.
    pub async fn application(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<ApplicationDetail, CoreError> {
        access.require(Permission::View, "view applications")?;
        let application = self.find_application(access, environment, name).await?;
        let row = store::apps::revision(&self.pool, application.id, application.current_revision)
            .await?
            .ok_or_else(|| {
                CoreError::Internal(format!(
                    "application {} has no revision {}",
                    application.id, application.current_revision
                ))
            })?;
        let spec = parse_stored_spec(&row)?;
        Ok(ApplicationDetail { application, spec })
    }

    /// Every revision of an application, newest first.
    pub async fn revisions(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Vec<Revision>, CoreError> {
        access.require(Permission::View, "view applications")?;
        let application = self.find_application(access, environment, name).await?;
        store::apps::revisions(&self.pool, application.id)
            .await?
            .iter()
            .map(|row| {
                Ok(Revision {
                    number: row.number,
                    spec: parse_stored_spec(row)?,
                    secrets: row
                        .secrets
                        .as_object()
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default(),
                    created_by: row.created_by.clone(),
                    created_at: row.created_at,
                })
            })
            .collect()
    }

    /// Applies a spec: a new revision when it differs from the current one, nothing
    /// when it is the same (so applying a spec twice has the effect of applying it once).
    /// With `if_version`, refuses the change when the application is no longer at that
    /// version.
    pub async fn update_application(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        spec: AppSpec,
        description: Option<String>,
        if_version: Option<i64>,
    ) -> Result<ApplicationDetail, CoreError> {
        self.update_caused(
            access,
            environment,
            name,
            spec,
            (description, if_version),
            (super::releases::Cause::Change, None),
        )
        .await
    }

    /// An update whose release names `cause` and moves by `strategy` (`None`: the
    /// environment's default; a bundle names its own). Approvals and freezes apply
    /// either way.
    pub(super) async fn update_caused(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        spec: AppSpec,
        (description, if_version): (Option<String>, Option<i64>),
        (cause, strategy): (
            super::releases::Cause,
            Option<crate::releases::policy::Strategy>,
        ),
    ) -> Result<ApplicationDetail, CoreError> {
        let mut plan = self
            .plan_update(access, environment, name, spec, description, if_version)
            .await?;
        plan.cause = cause;
        plan.strategy = strategy;
        if plan.changes_nothing() {
            return Ok(plan.current);
        }
        let mut tx = self.pool.begin().await?;
        let detail = self.write_update(&mut tx, access, plan).await?;
        tx.commit().await?;
        Ok(detail)
    }

    /// Every check an update makes before it writes anything.
    async fn plan_update(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        spec: AppSpec,
        description: Option<String>,
        if_version: Option<i64>,
    ) -> Result<PlannedUpdate, CoreError> {
        spec.validate()?;
        self.check_package(access, &spec).await?;
        let env = self.environment(access, environment).await?;
        let permission = Permission::ChangeApps {
            protected_environment: env.protected,
        };
        // Where releases wait for an approval, anyone in the tenant may request a
        // change of the spec: it runs only once someone allowed approves it.
        let request_only = !access.can(permission);
        if request_only
            && !super::releases::policy_of(&self.pool, env.id)
                .await?
                .0
                .approval
                .required
        {
            access.require(permission, "change applications in a protected environment")?;
        }
        self.preflight(&env, &spec)?;
        let current = self.application(access, environment, name).await?;
        spec.check_change_from(&current.spec)?;
        self.check_version(
            &self.pool,
            access,
            &current.application,
            if_version,
            current.application.version,
        )
        .await?;
        let description = description.filter(|d| *d != current.application.description);
        if request_only && description.is_some() {
            // A description is not released, so a request cannot carry it.
            access.require(permission, "change descriptions in a protected environment")?;
        }
        Ok(PlannedUpdate {
            current,
            spec,
            cause: super::releases::Cause::Change,
            strategy: None,
            description,
            if_version,
        })
    }

    /// Writes a planned update: the new revision (when the spec changed), the
    /// description, and the audit record.
    async fn write_update(
        &self,
        tx: &mut sqlx::PgConnection,
        access: &TenantAccess,
        plan: PlannedUpdate,
    ) -> Result<ApplicationDetail, CoreError> {
        let PlannedUpdate {
            current,
            spec,
            cause,
            strategy,
            description,
            if_version,
        } = plan;
        let (environment, name) = (&current.application.environment, &current.application.name);
        let tenant_id = access.tenant().id;
        let app_id = current.application.id;
        let spec_json =
            serde_json::to_value(&spec).map_err(|e| CoreError::Internal(e.to_string()))?;
        let locked = store::apps::lock(&mut *tx, tenant_id, app_id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", name))?;
        self.check_version(
            &mut *tx,
            access,
            &current.application,
            if_version,
            locked.version,
        )
        .await?;
        let latest = locked.revision;
        if current.application.run_state == RunState::Running {
            // A spec that states a new replica count takes back the count from scaling.
            let scaled = current
                .application
                .scaled_replicas
                .filter(|_| current.spec.replicas == spec.replicas);
            let replicas = desired_replicas(RunState::Running, scaled, &spec);
            enforce_quota(
                &mut *tx,
                tenant_id,
                Some(app_id),
                Usage::of(&spec, replicas),
            )
            .await?;
        }
        let mut revision = latest;
        let mut release = None;
        if current.spec != spec {
            revision = latest + 1;
            // A spec that states a new replica count takes back the count from scaling.
            if current.spec.replicas != spec.replicas {
                store::runtime::set_replicas(&mut *tx, app_id, None).await?;
            }
            // The new revision runs with the secrets the current one has.
            let secrets = store::apps::revision(&mut *tx, app_id, latest)
                .await?
                .map_or_else(|| json!({}), |r| r.secrets);
            if let Some(key) = spec.env.keys().find(|k| secrets.get(k.as_str()).is_some()) {
                return Err(FieldError::new(
                    format!("spec.env.{key}"),
                    "is a secret of this application; a variable is either plain or secret",
                )
                .into());
            }
            release = Some(
                super::releases::new_revision(
                    &mut *tx, access, app_id, revision, &spec_json, &secrets, cause, strategy,
                )
                .await?,
            );
        }
        if let Some(d) = description.as_deref() {
            store::apps::set_description(&mut *tx, app_id, d).await?;
        }
        audit_app(
            &mut *tx,
            access,
            "application.update",
            environment,
            name,
            json!({"revision": revision, "previous_revision": latest, "spec": spec_json, "release": release}),
        )
        .await?;
        let application = store::apps::find(&mut *tx, tenant_id, environment, name)
            .await?
            .ok_or_else(|| CoreError::not_found("application", name.clone()))?;
        Ok(ApplicationDetail { application, spec })
    }

    /// Refuses a change made against a version the application no longer has, saying
    /// who changed it since and when.
    async fn check_version(
        &self,
        ex: impl sqlx::PgExecutor<'_>,
        access: &TenantAccess,
        application: &Application,
        expected: Option<i64>,
        current: i64,
    ) -> Result<(), CoreError> {
        let target = format!("{}/{}", application.environment, application.name);
        super::check_version(
            ex,
            Some(access.tenant().id),
            ("application", &target),
            ("application", &target),
            expected,
            Some(current),
        )
        .await
    }

    /// Deletes an application. Its revisions and audit records are kept.
    pub async fn delete_application(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "change applications in a protected environment",
        )?;
        let application = self.find_application(access, environment, name).await?;
        let tenant_id = access.tenant().id;
        let mut tx = self.pool.begin().await?;
        let locked = store::apps::lock(&mut tx, tenant_id, application.id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", name))?;
        self.check_version(&mut *tx, access, &application, if_version, locked.version)
            .await?;
        store::apps::soft_delete(&mut tx, application.id).await?;
        // Its service bindings' credentials are revoked at the brokers (the worker).
        let unbound = store::services::unbind_all_of_app(
            &mut tx,
            application.id,
            chrono::Utc::now() + chrono::Duration::hours(1),
        )
        .await?;
        audit_app(
            &mut tx,
            access,
            "application.delete",
            environment,
            name,
            json!({"last_revision": application.current_revision}),
        )
        .await?;
        tx.commit().await?;
        if unbound > 0 {
            self.service_wake.notify_one();
        }
        Ok(())
    }

    /// Applies manifests, all or nothing: each application is created when absent,
    /// given a new revision when its spec or description differs, and left alone
    /// otherwise. Every document is checked (authorisation included) before anything is
    /// written, and all of them are written in one transaction, so a refusal of any
    /// document leaves every application as it was.
    pub async fn apply_manifests(
        &self,
        access: &TenantAccess,
        manifests: Vec<Manifest>,
    ) -> Result<Vec<Applied>, CoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut plans = Vec::with_capacity(manifests.len());
        for m in manifests {
            let document = m.document;
            let key = (m.environment.to_string(), m.name.to_string());
            if !seen.insert(key.clone()) {
                return Err(FieldError::new(
                    format!("documents[{document}].metadata.name"),
                    format!("'{}/{}' is already in an earlier document", key.0, key.1),
                )
                .into());
            }
            let plan = self
                .plan_document(access, m)
                .await
                .map_err(|e| in_document(document, e))?;
            plans.push((document, plan));
        }
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(plans.len());
        for (document, plan) in plans {
            let done = match plan {
                Planned::Create(plan) => {
                    let application = write_create(&mut tx, access, &plan)
                        .await
                        .map_err(|e| in_document(document, e))?;
                    Applied::of(&application, "created")
                }
                Planned::Update(plan) if plan.changes_nothing() => {
                    Applied::of(&plan.current.application, "unchanged")
                }
                Planned::Update(plan) => {
                    let detail = self
                        .write_update(&mut tx, access, *plan)
                        .await
                        .map_err(|e| in_document(document, e))?;
                    Applied::of(&detail.application, "updated")
                }
            };
            applied.push(done);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// What applying one document would do, with every check made.
    async fn plan_document(
        &self,
        access: &TenantAccess,
        m: Manifest,
    ) -> Result<Planned, CoreError> {
        let existing = store::apps::find(
            &self.pool,
            access.tenant().id,
            m.environment.as_str(),
            m.name.as_str(),
        )
        .await?;
        Ok(match existing {
            None => Planned::Create(Box::new(
                self.plan_create(
                    access,
                    NewApplication {
                        environment: m.environment,
                        name: m.name,
                        description: m.description,
                        spec: m.spec,
                    },
                )
                .await?,
            )),
            Some(app) => Planned::Update(Box::new(
                self.plan_update(
                    access,
                    &app.environment,
                    &app.name,
                    m.spec,
                    Some(m.description),
                    None,
                )
                .await?,
            )),
        })
    }

    /// The application's instances as the runtime observes them.
    pub async fn instances(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Vec<Instance>, CoreError> {
        access.require(Permission::View, "view applications")?;
        self.find_application(access, environment, name).await?;
        let Some((runtime, key)) = self.runtime_of(access, environment, name).await? else {
            return Ok(Vec::new());
        };
        runtime.instances(&key).await.map_err(runtime_error)
    }

    /// The application's stable addresses (TCP ports on the router, per ordinal for a
    /// stateful one; Service names on Kubernetes).
    pub async fn endpoints(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Vec<crate::runtime::Endpoint>, CoreError> {
        let detail = self.application(access, environment, name).await?;
        let Some((runtime, key)) = self.runtime_of(access, environment, name).await? else {
            return Ok(Vec::new());
        };
        let replicas = desired_replicas(
            RunState::Running,
            detail.application.scaled_replicas,
            &detail.spec,
        );
        runtime
            .endpoints(&key, &detail.spec, replicas)
            .await
            .map_err(runtime_error)
    }

    /// The last `tail` lines an instance of the application wrote.
    pub async fn logs(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        instance: &str,
        tail: usize,
    ) -> Result<Vec<String>, CoreError> {
        access.require(Permission::View, "view applications")?;
        self.find_application(access, environment, name).await?;
        let Some((runtime, key)) = self.runtime_of(access, environment, name).await? else {
            return Err(CoreError::not_found("instance", instance));
        };
        runtime
            .logs(&key, instance, tail.clamp(1, 5000))
            .await
            .map_err(|e| match e {
                crate::runtime::RuntimeError::NotFound { .. } => {
                    CoreError::not_found("instance", instance)
                }
                other => runtime_error(other),
            })
    }

    /// The application's most recent events, newest first.
    pub async fn events(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<AppEvent>, CoreError> {
        access.require(Permission::View, "view applications")?;
        let application = self.find_application(access, environment, name).await?;
        let rows = store::runtime::events(&self.pool, application.id, limit.clamp(1, 500)).await?;
        Ok(rows
            .into_iter()
            .map(|r| AppEvent {
                id: r.id,
                at: r.at,
                instance: r.instance,
                reason: r.reason,
                message: r.message,
            })
            .collect())
    }

    /// The application's conditions (`Available`, `Progressing`, `Degraded`) with their
    /// reasons, from its instances and latest events.
    pub async fn conditions(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Vec<crate::conditions::Condition>, CoreError> {
        let detail = self.application(access, environment, name).await?;
        let instances = self.instances(access, environment, name).await?;
        let events = self.events(access, environment, name, 50).await?;
        Ok(Self::conditions_of(&detail, &instances, &events))
    }

    /// The conditions of an application already read with its instances and events.
    pub fn conditions_of(
        detail: &ApplicationDetail,
        instances: &[Instance],
        events: &[AppEvent],
    ) -> Vec<crate::conditions::Condition> {
        let app = &detail.application;
        crate::conditions::conditions(&crate::conditions::Observed {
            kind: detail.spec.kind,
            run_state: app.run_state,
            desired: desired_replicas(app.run_state, app.scaled_replicas, &detail.spec),
            current_revision: app.current_revision,
            instances,
            events,
        })
    }

    /// Starts or stops an application; a stopped one keeps its revisions and replicas.
    pub async fn set_running(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        running: bool,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        let application = self.change_target(access, environment, name).await?;
        let state = if running {
            RunState::Running
        } else {
            RunState::Stopped
        };
        let mut tx = self.pool.begin().await?;
        let locked = store::apps::lock(&mut tx, access.tenant().id, application.id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", name))?;
        self.check_version(&mut *tx, access, &application, if_version, locked.version)
            .await?;
        if running {
            let detail = self.application(access, environment, name).await?;
            let replicas =
                desired_replicas(RunState::Running, application.scaled_replicas, &detail.spec);
            enforce_quota(
                &mut tx,
                access.tenant().id,
                Some(application.id),
                Usage::of(&detail.spec, replicas),
            )
            .await?;
        }
        store::runtime::set_run_state(&mut tx, application.id, state).await?;
        record(
            &mut tx,
            access.principal(),
            Audit {
                tenant_id: Some(access.tenant().id),
                action: if running {
                    "application.start"
                } else {
                    "application.stop"
                },
                target_kind: "application",
                target: &format!("{environment}/{name}"),
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets the number of instances, overriding the spec's count until the next spec
    /// change that sets one.
    pub async fn scale(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
        replicas: u32,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        check_replicas(replicas)?;
        let application = self.change_target(access, environment, name).await?;
        let detail = self.application(access, environment, name).await?;
        let mut tx = self.pool.begin().await?;
        let locked = store::apps::lock(&mut tx, access.tenant().id, application.id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", name))?;
        self.check_version(&mut *tx, access, &application, if_version, locked.version)
            .await?;
        if application.run_state == RunState::Running {
            enforce_quota(
                &mut tx,
                access.tenant().id,
                Some(application.id),
                Usage::of(&detail.spec, replicas),
            )
            .await?;
        }
        store::runtime::set_replicas(&mut tx, application.id, Some(replicas as i32)).await?;
        store::autoscaling::mark_scaled_by_hand(&mut tx, application.id).await?;
        audit_app(
            &mut tx,
            access,
            "application.scale",
            environment,
            name,
            json!({"replicas": replicas, "previous": application.scaled_replicas}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Restarts every instance: the runtime stops them and the reconciler starts fresh
    /// ones.
    pub async fn restart(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<(), CoreError> {
        let application = self.change_target(access, environment, name).await?;
        let Some((runtime, key)) = self.runtime_of(access, environment, name).await? else {
            return Err(CoreError::Conflict {
                field: "runtime",
                message: "no runtime runs this environment's applications".into(),
            });
        };
        // A release moving the application goes first, whichever runtime restarts.
        {
            let mut tx = self.pool.begin().await?;
            if let Some(open) = store::releases::lock_open(&mut tx, application.id).await? {
                return Err(CoreError::WrongState(format!(
                    "release {} of this application is {}; let it finish, or abort it, before a restart",
                    open.id,
                    open.state.as_str()
                )));
            }
        }
        let rolled = runtime.restart(&key).await.map_err(runtime_error)?;
        let mut tx = self.pool.begin().await?;
        // A runtime that cannot roll the instances itself gets a new revision of the
        // same spec and secrets: the reconciler replaces the instances as for any
        // change, one at a time, an old one stopping only once a new one is ready.
        let revision = if rolled {
            None
        } else {
            let latest = store::apps::lock(&mut tx, access.tenant().id, application.id)
                .await?
                .ok_or_else(|| CoreError::not_found("application", name))?
                .revision;
            if let Some(open) = store::releases::lock_open(&mut tx, application.id).await? {
                return Err(CoreError::WrongState(format!(
                    "release {} of this application is {}; let it finish, or abort it, before a restart",
                    open.id,
                    open.state.as_str()
                )));
            }
            // What runs restarts, not a newer spec that was never released.
            let (_, released) = store::releases::context(&mut tx, application.id).await?;
            let row = store::apps::revision(&mut *tx, application.id, released)
                .await?
                .ok_or_else(|| {
                    CoreError::Internal(format!(
                        "application {} has no revision {released}",
                        application.id
                    ))
                })?;
            super::releases::new_revision(
                &mut tx,
                access,
                application.id,
                latest + 1,
                &row.spec,
                &row.secrets,
                super::releases::Cause::Restart,
                None,
            )
            .await?;
            Some(latest + 1)
        };
        audit_app(
            &mut tx,
            access,
            "application.restart",
            environment,
            name,
            json!({"revision": revision}),
        )
        .await?;
        // Instances come back at once, not at the next full pass.
        store::runtime::touch(&mut *tx, application.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An application the caller may change (404 if absent, 403 if protected for them).
    pub(crate) async fn change_target(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Application, CoreError> {
        let application = self.find_application(access, environment, name).await?;
        let env = self.environment(access, environment).await?;
        access.require(
            Permission::ChangeApps {
                protected_environment: env.protected,
            },
            "change applications in a protected environment",
        )?;
        Ok(application)
    }

    pub(crate) async fn find_application(
        &self,
        access: &TenantAccess,
        environment: &str,
        name: &str,
    ) -> Result<Application, CoreError> {
        let not_found = || CoreError::not_found("application", format!("{environment}/{name}"));
        EnvName::parse(environment).map_err(|_| not_found())?;
        AppName::parse(name).map_err(|_| not_found())?;
        store::apps::find(&self.pool, access.tenant().id, environment, name)
            .await?
            .ok_or_else(|| CoreError::not_found("application", format!("{environment}/{name}")))
    }

    /// The runtime of an application's environment and the application's workload key;
    /// `None` when this control plane runs no runtime for that environment.
    async fn runtime_of(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
    ) -> Result<Option<(std::sync::Arc<dyn crate::runtime::Runtime>, WorkloadKey)>, CoreError> {
        let Some(env) =
            store::tenants::environment(&self.pool, access.tenant().id, environment).await?
        else {
            return Ok(None);
        };
        let key = WorkloadKey {
            tenant: access.tenant().slug.clone(),
            environment: environment.to_owned(),
            app: app.to_owned(),
        };
        Ok(self.runtimes.get(&env.runtime).cloned().map(|r| (r, key)))
    }

    /// Refuses a spec the environment's runtime cannot run, naming the field. A
    /// platform with no runtimes at all (a pure API host) checks nothing.
    pub(crate) fn preflight(&self, env: &Environment, spec: &AppSpec) -> Result<(), CoreError> {
        if self.runtimes.is_empty() {
            return Ok(());
        }
        match self.runtimes.get(&env.runtime) {
            Some(runtime) => runtime.check(spec).map_err(CoreError::from),
            None => Err(FieldError::new(
                "environment",
                format!(
                    "environment '{}' runs on '{}', which this control plane does not drive",
                    env.name, env.runtime
                ),
            )
            .into()),
        }
    }

    /// The environment an application change targets. An environment that does not
    /// exist is a bad field value when the client named it in a body.
    async fn environment_for_change(
        &self,
        access: &TenantAccess,
        name: &str,
    ) -> Result<Environment, CoreError> {
        store::tenants::environment(&self.pool, access.tenant().id, name)
            .await?
            .ok_or_else(|| {
                FieldError::new(
                    "environment",
                    format!("no environment '{name}' exists in this tenant"),
                )
                .into()
            })
    }
}

fn parse_stored_spec(row: &RevisionRow) -> Result<AppSpec, CoreError> {
    serde_json::from_value(row.spec.clone()).map_err(|e| {
        CoreError::Internal(format!(
            "stored spec of revision {} does not parse: {e}",
            row.number
        ))
    })
}

/// Records a change to an application in the tenant's audit log.
/// A create whose checks have all passed.
struct PlannedCreate {
    env: Environment,
    quota: Quota,
    input: NewApplication,
    spec_json: serde_json::Value,
}

/// An update whose checks have all passed.
struct PlannedUpdate {
    current: ApplicationDetail,
    spec: AppSpec,
    /// What the new revision's release says caused it.
    cause: super::releases::Cause,
    /// The release's strategy, when not the environment's default.
    strategy: Option<crate::releases::policy::Strategy>,
    /// The new description, when it differs.
    description: Option<String>,
    if_version: Option<i64>,
}

impl PlannedUpdate {
    fn changes_nothing(&self) -> bool {
        self.current.spec == self.spec && self.description.is_none()
    }
}

/// What one manifest document will do.
enum Planned {
    Create(Box<PlannedCreate>),
    Update(Box<PlannedUpdate>),
}

impl Applied {
    fn of(application: &Application, outcome: &'static str) -> Self {
        Self {
            environment: application.environment.clone(),
            name: application.name.clone(),
            outcome,
            revision: application.current_revision,
        }
    }
}

/// Writes a planned create inside a transaction, holding the tenant's quota first.
async fn write_create(
    tx: &mut sqlx::PgConnection,
    access: &TenantAccess,
    plan: &PlannedCreate,
) -> Result<Application, CoreError> {
    let demand = Usage::of(&plan.input.spec, plan.input.spec.replicas);
    enforce_quota_of(&mut *tx, plan.quota, access.tenant().id, None, demand).await?;
    insert_planned(&mut *tx, access, plan).await
}

/// The application, its revision 1 and its audit record, in one statement.
async fn insert_planned<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    access: &TenantAccess,
    plan: &PlannedCreate,
) -> Result<Application, CoreError> {
    let (env, input) = (&plan.env, &plan.input);
    let tenant_id = access.tenant().id;
    let target = format!("{}/{}", env.name, input.name);
    let new = store::apps::NewApplication {
        tenant_id,
        environment_id: env.id,
        environment: &env.name,
        name: input.name.as_str(),
        description: &input.description,
        spec: &plan.spec_json,
        created_by: access.principal().user_id,
    };
    let audit = audit_record(
        access.principal(),
        Audit {
            tenant_id: Some(tenant_id),
            action: "application.create",
            target_kind: "application",
            target: &target,
            details: json!({"revision": 1, "spec": plan.spec_json}),
        },
    );
    store::apps::create(ex, new, audit).await.map_err(|e| {
        conflict_on_unique(
            e,
            "name",
            format!(
                "an application '{}' already exists in '{}' (or, just deleted, is still being removed)",
                input.name, env.name
            ),
        )
    })
}

/// An error about one manifest document, with its fields named as the document names
/// them.
fn in_document(document: usize, e: CoreError) -> CoreError {
    match e {
        CoreError::Invalid(FieldError { field, message }) => {
            let field = match field.as_str() {
                "name" | "environment" | "description" => format!("metadata.{field}"),
                _ => field,
            };
            FieldError::new(format!("documents[{document}].{field}"), message).into()
        }
        CoreError::Conflict { field, message } => CoreError::Conflict {
            field,
            message: format!("documents[{document}]: {message}"),
        },
        CoreError::QuotaExceeded { message } => CoreError::QuotaExceeded {
            message: format!("documents[{document}]: {message}"),
        },
        other => other,
    }
}

pub(super) async fn audit_app(
    tx: &mut sqlx::PgConnection,
    access: &TenantAccess,
    action: &str,
    environment: &str,
    name: &str,
    details: serde_json::Value,
) -> Result<(), CoreError> {
    record(
        tx,
        access.principal(),
        Audit {
            tenant_id: Some(access.tenant().id),
            action,
            target_kind: "application",
            target: &format!("{environment}/{name}"),
            details,
        },
    )
    .await
}

/// A runtime that cannot be reached is a 503 for the caller; anything else it says is
/// internal.
fn runtime_error(e: crate::runtime::RuntimeError) -> CoreError {
    match e {
        crate::runtime::RuntimeError::Unavailable(why) => CoreError::Unavailable(why),
        other => CoreError::Internal(format!("the runtime failed: {other}")),
    }
}

/// A replica count a scale may ask for.
pub(crate) fn check_replicas(replicas: u32) -> Result<(), FieldError> {
    if replicas > AppSpec::MAX_REPLICAS {
        return Err(FieldError::new(
            "replicas",
            format!("must be between 0 and {}", AppSpec::MAX_REPLICAS),
        ));
    }
    Ok(())
}
