//! The operations worker: takes each service instance whose operation is due (any
//! control plane may run one; a claim holds a row for one call), makes the call or the
//! poll, and writes what [`advance`] makes of the answer.
//!
//! [`advance`] is pure: the instance as it was, the answer as [`osb::outcome`] reads
//! it, and the clock in; the instance as it must be (or its removal) out.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use osb::outcome::{Call, Outcome, Poll};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};

use super::client::{BrokerClient, Endpoint};
use crate::sealing::{MasterKey, SecretValue};
use crate::store::services::{self as store, InstanceRow, InstanceState, Operation};

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long one call to a broker may take.
    pub call_timeout: Duration,
    /// Polling stops after this (or the plan's `maximum_polling_duration`, if shorter)
    /// and the operation failed.
    pub max_operation: Duration,
    /// Between polls when the broker sends no `Retry-After`.
    pub poll_interval: Duration,
    /// The longest wait between two attempts at a broker that could not be reached.
    pub max_backoff: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            call_timeout: super::client::DEFAULT_TIMEOUT,
            max_operation: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            concurrency: 8,
        }
    }
}

/// What came back from one call or poll, as [`advance`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Called {
        outcome: Outcome,
        /// For the user: the broker's description or what the wire said.
        description: String,
        /// From a success's body.
        dashboard_url: Option<String>,
        operation_token: Option<String>,
        retry_after: Option<Duration>,
        /// From an error body: whether the instance still works after a failed update.
        instance_usable: Option<bool>,
    },
    Polled {
        poll: Poll,
        description: Option<String>,
        retry_after: Option<Duration>,
        instance_usable: Option<bool>,
    },
}

/// What to do with the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Save,
    /// The broker no longer has the instance and the user asked for its removal.
    Forget,
}

const CLEANING: &str = " (removing what the broker may have made)";
const CLEANED: &str = " (what the broker may have made was removed)";
const NOT_CLEANED: &str =
    " (the broker may still hold a partial instance: it did not confirm its removal)";

/// The call an operation makes (a mitigation is a deprovision).
pub fn call_of(operation: Operation) -> Call {
    match operation {
        Operation::Provision => Call::Provision,
        Operation::Update => Call::Update,
        Operation::Deprovision | Operation::Mitigate => Call::Deprovision,
    }
}

/// Moves `row` on by what the broker answered to its operation.
pub fn advance(
    row: &mut InstanceRow,
    event: Event,
    now: DateTime<Utc>,
    config: &WorkerConfig,
) -> Disposition {
    let Some(operation) = row.operation else {
        return Disposition::Save;
    };
    let overdue = row.operation_deadline.is_some_and(|d| now >= d);
    match event {
        Event::Called {
            outcome,
            description,
            dashboard_url,
            operation_token,
            retry_after,
            instance_usable,
        } => match outcome {
            Outcome::Done | Outcome::Gone => succeeded(row, operation, dashboard_url),
            Outcome::Accepted => {
                if dashboard_url.is_some() {
                    row.dashboard_url = dashboard_url;
                }
                row.polling = true;
                row.operation_token = operation_token;
                row.attempts = 0;
                row.last_state = Some("in progress".into());
                row.next_attempt_at = Some(now + wait(retry_after, config.poll_interval));
                Disposition::Save
            }
            Outcome::Refused => failed(
                row,
                operation,
                description,
                false,
                instance_usable,
                now,
                config,
            ),
            Outcome::TryLater if !overdue => again(row, description, now, config),
            Outcome::TryLater => failed(
                row,
                operation,
                format!(
                    "{description}; gave up after {}",
                    human(config.max_operation)
                ),
                true,
                instance_usable,
                now,
                config,
            ),
            Outcome::Failed { mitigate } => failed(
                row,
                operation,
                description,
                mitigate,
                instance_usable,
                now,
                config,
            ),
        },
        Event::Polled {
            poll,
            description,
            retry_after,
            instance_usable,
        } => match poll {
            Poll::Succeeded | Poll::Gone => succeeded(row, operation, None),
            Poll::Failed { mitigate } => failed(
                row,
                operation,
                description.unwrap_or_else(|| "the broker reports the operation failed".into()),
                mitigate,
                instance_usable,
                now,
                config,
            ),
            Poll::InProgress | Poll::Again if overdue => failed(
                row,
                operation,
                "the broker did not finish the operation within its maximum polling duration"
                    .into(),
                true,
                instance_usable,
                now,
                config,
            ),
            Poll::InProgress | Poll::Again => {
                if poll == Poll::InProgress {
                    row.last_description = description;
                    row.attempts = 0;
                } else {
                    row.attempts += 1;
                }
                row.next_attempt_at = Some(now + wait(retry_after, config.poll_interval));
                Disposition::Save
            }
        },
    }
}

fn wait(retry_after: Option<Duration>, default: Duration) -> chrono::Duration {
    chrono::Duration::from_std(retry_after.unwrap_or(default))
        .unwrap_or(chrono::Duration::seconds(2))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Nothing more to do for now.
fn idle(row: &mut InstanceRow) {
    row.operation = None;
    row.polling = false;
    row.operation_token = None;
    row.next_attempt_at = None;
    row.attempts = 0;
}

fn succeeded(
    row: &mut InstanceRow,
    operation: Operation,
    dashboard_url: Option<String>,
) -> Disposition {
    match operation {
        Operation::Deprovision => return Disposition::Forget,
        Operation::Mitigate => {
            let reason = row
                .last_description
                .as_deref()
                .unwrap_or("provisioning failed")
                .trim_end_matches(CLEANING)
                .to_owned();
            row.last_description = Some(format!("{reason}{CLEANED}"));
            row.last_operation = Some("provision".into());
            row.last_state = Some("failed".into());
            row.state = InstanceState::Failed;
        }
        Operation::Provision => {
            if dashboard_url.is_some() {
                row.dashboard_url = dashboard_url;
            }
            row.state = InstanceState::Ready;
            row.last_state = Some("succeeded".into());
            row.last_description = None;
        }
        Operation::Update => {
            if let Some(pending) = row.pending.take() {
                row.plan_id = pending.0.plan_id;
                if let Some(parameters) = pending.0.parameters {
                    row.parameters = sqlx::types::Json(parameters);
                }
            }
            row.state = InstanceState::Ready;
            row.last_state = Some("succeeded".into());
            row.last_description = None;
        }
    }
    idle(row);
    Disposition::Save
}

/// Tries the same call again after a backoff (1, 2, 4 ... s, at most `max_backoff`).
fn again(
    row: &mut InstanceRow,
    description: String,
    now: DateTime<Utc>,
    config: &WorkerConfig,
) -> Disposition {
    let backoff = Duration::from_secs(1 << row.attempts.clamp(0, 16)).min(config.max_backoff);
    row.attempts += 1;
    row.last_description = Some(format!("{description}; trying again"));
    row.next_attempt_at = Some(now + wait(Some(backoff), backoff));
    Disposition::Save
}

#[allow(clippy::too_many_arguments)]
fn failed(
    row: &mut InstanceRow,
    operation: Operation,
    description: String,
    mitigate: bool,
    instance_usable: Option<bool>,
    now: DateTime<Utc>,
    config: &WorkerConfig,
) -> Disposition {
    let overdue = row.operation_deadline.is_some_and(|d| now >= d);
    match operation {
        Operation::Provision => {
            row.state = InstanceState::Failed;
            row.last_state = Some("failed".into());
            if mitigate {
                row.last_description = Some(format!("{description}{CLEANING}"));
                row.operation = Some(Operation::Mitigate);
                row.polling = false;
                row.operation_token = None;
                row.attempts = 0;
                row.operation_started_at = Some(now);
                row.operation_deadline =
                    Some(now + wait(Some(config.max_operation), config.max_operation));
                row.next_attempt_at = Some(now);
            } else {
                row.last_description = Some(description);
                idle(row);
            }
        }
        Operation::Update => {
            // The broker keeps the instance as it was unless it says it is unusable.
            row.pending = None;
            row.state = if instance_usable == Some(false) {
                InstanceState::Failed
            } else {
                InstanceState::Ready
            };
            row.last_state = Some("failed".into());
            row.last_description = Some(description);
            idle(row);
        }
        // A removal is tried until the broker confirms it, within the deadline.
        Operation::Deprovision | Operation::Mitigate if !overdue => {
            row.polling = false;
            row.operation_token = None;
            return again(row, description, now, config);
        }
        Operation::Deprovision => {
            row.state = InstanceState::Failed;
            row.last_state = Some("failed".into());
            row.last_description = Some(format!(
                "{description}; the instance may still exist at the broker: delete it again to retry"
            ));
            idle(row);
        }
        Operation::Mitigate => {
            let reason = row
                .last_description
                .as_deref()
                .unwrap_or("provisioning failed")
                .trim_end_matches(CLEANING)
                .trim_end_matches("; trying again")
                .to_owned();
            row.last_description = Some(format!("{reason}{NOT_CLEANED}"));
            row.last_operation = Some("provision".into());
            idle(row);
        }
    }
    Disposition::Save
}

/// Runs service instances' operations against their brokers.
#[derive(Debug, Clone)]
pub struct OperationsWorker {
    pool: PgPool,
    master: MasterKey,
    client: BrokerClient,
    config: WorkerConfig,
    wake: Arc<Notify>,
}

impl OperationsWorker {
    pub fn new(pool: PgPool, master: MasterKey, config: WorkerConfig, wake: Arc<Notify>) -> Self {
        Self {
            pool,
            master,
            client: BrokerClient::new(config.call_timeout),
            config,
            wake,
        }
    }

    /// Works until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        // A claim outlives the longest call, so that two control planes never call a
        // broker for the same instance at once.
        let hold = self.config.call_timeout + Duration::from_secs(30);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            match store::claim_due_binding(&self.pool, hold).await {
                Ok(Some(binding)) => {
                    let worker = self.clone();
                    tokio::spawn(async move {
                        let id = binding.id;
                        if let Err(e) = worker.work_binding(binding).await {
                            tracing::warn!(binding = %id, error = %e, "service binding: could not record the broker's answer");
                        }
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "service operations: the store is unavailable")
                }
            }
            match store::claim_due(&self.pool, hold).await {
                Ok(Some(row)) => {
                    let worker = self.clone();
                    tokio::spawn(async move {
                        let id = row.id;
                        if let Err(e) = worker.work(row).await {
                            tracing::warn!(instance = %id, error = %e, "service operation: could not record the broker's answer");
                            let _ = store::release_claim(&worker.pool, id).await;
                        }
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => drop(permit),
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "service operations: the store is unavailable");
                }
            }
            let sleep = match store::next_due(&self.pool).await {
                Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                _ => Duration::from_secs(1),
            }
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The broker's endpoint. A password that does not open (the master key was
    /// changed) is sent empty: the broker refuses it, and the operation fails with that.
    fn endpoint(&self, broker: &store::BrokerRow) -> Endpoint {
        Endpoint::of(&self.master, broker).unwrap_or_else(|e| {
            tracing::error!(broker = %broker.name, error = %e, "the broker's password does not open");
            Endpoint {
                url: broker.url.trim_end_matches('/').to_owned(),
                username: broker.username.clone(),
                password: SecretValue::new(String::new()),
            }
        })
    }

    /// One call or poll for a claimed instance, and its result written.
    async fn work(&self, mut row: InstanceRow) -> Result<(), sqlx::Error> {
        let claimed_version = row.version;
        let Some(operation) = row.operation else {
            return store::release_claim(&self.pool, row.id).await;
        };
        let Some(broker) = store::broker(&self.pool, row.broker_id).await? else {
            // Nothing can be asked of a broker that is gone (a broker with instances
            // cannot be removed through the platform): the operation ends here.
            row.last_state = Some("failed".into());
            row.last_description = Some("the instance's broker is no longer registered".into());
            if row.state != InstanceState::Ready {
                row.state = InstanceState::Failed;
            }
            idle(&mut row);
            store::save_progress(&self.pool, &row, claimed_version).await?;
            return Ok(());
        };
        let endpoint = self.endpoint(&broker);
        let event = self.call(&endpoint, &row, operation).await;
        tracing::debug!(instance = %row.id, ?operation, ?event, "service operation");
        match advance(&mut row, event, Utc::now(), &self.config) {
            Disposition::Save => {
                if !store::save_progress(&self.pool, &row, claimed_version).await? {
                    store::release_claim(&self.pool, row.id).await?;
                }
            }
            Disposition::Forget => {
                if !store::delete_instance(&self.pool, row.id, claimed_version).await? {
                    store::release_claim(&self.pool, row.id).await?;
                }
            }
        }
        if row.next_attempt_at.is_some() {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Unbinds a binding at its broker (an unbinding a user asked for, or orphan
    /// mitigation of a bind whose outcome is unknown), retried until the broker
    /// confirms or the deadline passes.
    async fn work_binding(&self, mut row: store::BindingRow) -> Result<(), sqlx::Error> {
        let Some(instance) = store::instance_by_id(&self.pool, row.instance_id).await? else {
            return store::delete_binding(&self.pool, row.id).await;
        };
        let Some(broker) = store::broker(&self.pool, instance.broker_id).await? else {
            return store::delete_binding(&self.pool, row.id).await;
        };
        let endpoint = self.endpoint(&broker);
        let reply = self
            .client
            .unbind(
                &endpoint,
                &instance.id.to_string(),
                &row.id.to_string(),
                &instance.service_id,
                &instance.plan_id,
            )
            .await;
        let outcome = osb::outcome::interpret(Call::Unbind, reply.answer, reply.concurrency());
        let now = Utc::now();
        let mitigation = row.operation == Some(store::BindingOperation::Mitigate);
        match outcome {
            Outcome::Done | Outcome::Gone if !mitigation => {
                return store::delete_binding(&self.pool, row.id).await;
            }
            Outcome::Done | Outcome::Gone => {
                let reason = row
                    .last_description
                    .clone()
                    .unwrap_or_else(|| "binding failed".into());
                row.last_description = Some(format!("{reason}{CLEANED}"));
                row.state = store::BindingState::Failed;
                row.operation = None;
                row.next_attempt_at = None;
            }
            _ if row.operation_deadline.is_some_and(|d| now >= d) => {
                let reason = row.last_description.clone().unwrap_or_default();
                row.last_description = Some(format!(
                    "{reason} (the broker did not confirm the unbinding: {})",
                    reply.describe()
                ));
                row.state = store::BindingState::Failed;
                row.operation = None;
                row.next_attempt_at = None;
            }
            _ => {
                let backoff = Duration::from_secs(1 << row.attempts.clamp(0, 16))
                    .min(self.config.max_backoff);
                row.attempts += 1;
                row.next_attempt_at = Some(now + wait(Some(backoff), backoff));
                self.wake.notify_one();
            }
        }
        store::save_binding_progress(&self.pool, &row).await
    }

    async fn call(&self, endpoint: &Endpoint, row: &InstanceRow, operation: Operation) -> Event {
        let id = row.id.to_string();
        let call = call_of(operation);
        if row.polling {
            let reply = self
                .client
                .last_operation(
                    endpoint,
                    &id,
                    &row.service_id,
                    &row.plan_id,
                    row.operation_token.as_deref(),
                )
                .await;
            let state = reply.body.as_ref().map(|b| b.state);
            let poll = match reply.code() {
                Some(code) => osb::outcome::interpret_poll(call, code, state),
                None => Poll::Again,
            };
            let description = reply
                .body
                .as_ref()
                .and_then(|b| b.description.clone())
                .or_else(|| (poll == Poll::Again).then(|| reply.describe()));
            return Event::Polled {
                poll,
                description,
                retry_after: reply.retry_after,
                instance_usable: reply.body.as_ref().and_then(|b| b.instance_usable),
            };
        }
        let (reply_answer, description, concurrency, retry_after, usable, dashboard, token) =
            match operation {
                Operation::Provision => {
                    let body = osb::wire::ProvisionRequest {
                        service_id: row.service_id.clone(),
                        plan_id: row.plan_id.clone(),
                        context: context(row),
                        organization_guid: row.tenant_id.to_string(),
                        space_guid: row.environment_id.to_string(),
                        parameters: Some(row.parameters.0.clone()).filter(|p| !p.is_empty()),
                        maintenance_info: None,
                    };
                    let r = self.client.provision(endpoint, &id, &body).await;
                    let body = r.body.clone().unwrap_or_default();
                    (
                        r.answer,
                        r.describe(),
                        r.concurrency(),
                        r.retry_after,
                        r.error.as_ref().and_then(|e| e.instance_usable),
                        body.dashboard_url,
                        body.operation,
                    )
                }
                Operation::Update => {
                    let pending = row.pending.as_ref().map(|p| p.0.clone());
                    let body = osb::wire::UpdateRequest {
                        service_id: row.service_id.clone(),
                        plan_id: pending
                            .as_ref()
                            .map(|p| p.plan_id.clone())
                            .filter(|p| *p != row.plan_id),
                        parameters: pending.and_then(|p| p.parameters),
                        context: context(row),
                        previous_values: Some(osb::wire::PreviousValues {
                            service_id: Some(row.service_id.clone()),
                            plan_id: Some(row.plan_id.clone()),
                        }),
                    };
                    let r = self.client.update(endpoint, &id, &body).await;
                    let body = r.body.clone().unwrap_or_default();
                    (
                        r.answer,
                        r.describe(),
                        r.concurrency(),
                        r.retry_after,
                        r.error.as_ref().and_then(|e| e.instance_usable),
                        body.dashboard_url,
                        body.operation,
                    )
                }
                Operation::Deprovision | Operation::Mitigate => {
                    let r = self
                        .client
                        .deprovision(endpoint, &id, &row.service_id, &row.plan_id)
                        .await;
                    let token = r.body.as_ref().and_then(|b| b.operation.clone());
                    (
                        r.answer,
                        r.describe(),
                        r.concurrency(),
                        r.retry_after,
                        r.error.as_ref().and_then(|e| e.instance_usable),
                        None,
                        token,
                    )
                }
            };
        Event::Called {
            outcome: osb::outcome::interpret(call, reply_answer, concurrency),
            description,
            dashboard_url: dashboard,
            operation_token: token,
            retry_after,
            instance_usable: usable,
        }
    }
}

/// The `context` object sent with provisioning and updates.
fn context(row: &InstanceRow) -> serde_json::Map<String, serde_json::Value> {
    let mut c = serde_json::Map::new();
    c.insert("platform".into(), "paas".into());
    c.insert("tenant_id".into(), row.tenant_id.to_string().into());
    c.insert(
        "environment_id".into(),
        row.environment_id.to_string().into(),
    );
    c.insert("instance_name".into(), row.name.clone().into());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use osb::outcome::Outcome;
    use sqlx::types::Json;
    use uuid::Uuid;

    fn row(operation: Operation, state: InstanceState) -> InstanceRow {
        let now = Utc::now();
        InstanceRow {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            environment_id: Uuid::nil(),
            name: "cache".into(),
            broker_id: Uuid::nil(),
            service_id: "s".into(),
            plan_id: "p1".into(),
            parameters: Json(serde_json::Map::new()),
            state,
            dashboard_url: None,
            pending: None,
            operation: Some(operation),
            polling: false,
            operation_token: None,
            operation_started_at: Some(now),
            operation_deadline: Some(now + chrono::Duration::minutes(10)),
            next_attempt_at: Some(now),
            attempts: 0,
            claimed_until: None,
            last_operation: Some("provision".into()),
            last_state: Some("in progress".into()),
            last_description: None,
            created_by: "dev".into(),
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    fn called(outcome: Outcome) -> Event {
        Event::Called {
            outcome,
            description: "the broker answered 500".into(),
            dashboard_url: None,
            operation_token: Some("op".into()),
            retry_after: None,
            instance_usable: None,
        }
    }

    fn polled(poll: Poll) -> Event {
        Event::Polled {
            poll,
            description: Some("working".into()),
            retry_after: Some(Duration::from_secs(7)),
            instance_usable: None,
        }
    }

    /// (operation, event, expected state, expected next operation, disposition)
    #[test]
    fn each_answer_moves_an_instance_where_the_specification_says() {
        use InstanceState::*;
        use Operation::*;
        let config = WorkerConfig::default();
        let failed_mitigated = Outcome::Failed { mitigate: true };
        let table: Vec<(
            Operation,
            InstanceState,
            Event,
            InstanceState,
            Option<Operation>,
            Disposition,
        )> = vec![
            (
                Provision,
                Provisioning,
                called(Outcome::Done),
                Ready,
                None,
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                called(Outcome::Accepted),
                Provisioning,
                Some(Provision),
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                called(Outcome::Refused),
                Failed,
                None,
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                called(Outcome::TryLater),
                Provisioning,
                Some(Provision),
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                called(failed_mitigated),
                Failed,
                Some(Mitigate),
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                polled(Poll::InProgress),
                Provisioning,
                Some(Provision),
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                polled(Poll::Failed { mitigate: true }),
                Failed,
                Some(Mitigate),
                Disposition::Save,
            ),
            (
                Provision,
                Provisioning,
                polled(Poll::Succeeded),
                Ready,
                None,
                Disposition::Save,
            ),
            (
                Update,
                Updating,
                called(Outcome::Failed { mitigate: false }),
                Ready,
                None,
                Disposition::Save,
            ),
            (
                Update,
                Updating,
                polled(Poll::Succeeded),
                Ready,
                None,
                Disposition::Save,
            ),
            (
                Deprovision,
                Deprovisioning,
                called(Outcome::Done),
                Deprovisioning,
                Some(Deprovision),
                Disposition::Forget,
            ),
            (
                Deprovision,
                Deprovisioning,
                called(Outcome::Gone),
                Deprovisioning,
                Some(Deprovision),
                Disposition::Forget,
            ),
            (
                Deprovision,
                Deprovisioning,
                called(failed_mitigated),
                Deprovisioning,
                Some(Deprovision),
                Disposition::Save,
            ),
            (
                Deprovision,
                Deprovisioning,
                polled(Poll::Gone),
                Deprovisioning,
                Some(Deprovision),
                Disposition::Forget,
            ),
            (
                Mitigate,
                Failed,
                called(Outcome::Gone),
                Failed,
                None,
                Disposition::Save,
            ),
            (
                Mitigate,
                Failed,
                called(failed_mitigated),
                Failed,
                Some(Mitigate),
                Disposition::Save,
            ),
        ];
        let now = Utc::now();
        for (i, (operation, state, event, expected_state, expected_op, expected)) in
            table.into_iter().enumerate()
        {
            let mut r = row(operation, state);
            let disposition = advance(&mut r, event, now, &config);
            assert_eq!(disposition, expected, "row {i}");
            if disposition == Disposition::Save {
                assert_eq!(
                    (r.state, r.operation),
                    (expected_state, expected_op),
                    "row {i}"
                );
                assert_eq!(
                    r.operation.is_some(),
                    r.next_attempt_at.is_some(),
                    "row {i}: the database's CHECK"
                );
            }
        }
    }

    #[test]
    fn polling_honours_retry_after_and_stops_at_the_deadline() {
        let config = WorkerConfig::default();
        let now = Utc::now();
        let mut r = row(Operation::Provision, InstanceState::Provisioning);
        r.polling = true;
        advance(&mut r, polled(Poll::InProgress), now, &config);
        assert_eq!(r.next_attempt_at, Some(now + chrono::Duration::seconds(7)));
        assert_eq!(r.last_description.as_deref(), Some("working"));
        let late = now + chrono::Duration::minutes(11);
        advance(&mut r, polled(Poll::InProgress), late, &config);
        assert_eq!(
            (r.state, r.operation),
            (InstanceState::Failed, Some(Operation::Mitigate))
        );
        assert!(
            r.last_description
                .as_deref()
                .is_some_and(|d| d.contains("maximum polling duration"))
        );
    }

    #[test]
    fn an_unreachable_broker_is_retried_with_a_growing_backoff() {
        let config = WorkerConfig::default();
        let now = Utc::now();
        let mut r = row(Operation::Provision, InstanceState::Provisioning);
        let mut waits = Vec::new();
        for _ in 0..8 {
            advance(&mut r, called(Outcome::TryLater), now, &config);
            waits.push((r.next_attempt_at.unwrap_or(now) - now).num_seconds());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(r.state, InstanceState::Provisioning);
    }

    #[test]
    fn a_successful_update_takes_the_pending_plan() {
        let mut r = row(Operation::Update, InstanceState::Updating);
        r.pending = Some(Json(crate::store::services::Pending {
            plan_id: "p2".into(),
            parameters: None,
        }));
        advance(
            &mut r,
            called(Outcome::Done),
            Utc::now(),
            &WorkerConfig::default(),
        );
        assert_eq!((r.plan_id.as_str(), r.state), ("p2", InstanceState::Ready));
        assert!(r.pending.is_none());
    }
}
