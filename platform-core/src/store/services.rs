//! The service catalog: brokers, plan access, service instances and the operations
//! worker's claims on them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BrokerRow {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub username: String,
    pub password_sealed: Vec<u8>,
    pub catalog: Json<osb::Catalog>,
    pub catalog_fetched_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

pub async fn insert_broker(conn: &mut PgConnection, row: &BrokerRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_brokers (id, name, url, username, password_sealed, catalog)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.url)
    .bind(&row.username)
    .bind(&row.password_sealed)
    .bind(&row.catalog)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn brokers<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<BrokerRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM service_brokers ORDER BY name")
        .fetch_all(ex)
        .await
}

pub async fn broker_by_name<'e>(
    ex: impl PgExecutor<'e>,
    name: &str,
) -> Result<Option<BrokerRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM service_brokers WHERE name = $1")
        .bind(name)
        .fetch_optional(ex)
        .await
}

pub async fn broker<'e>(
    ex: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<BrokerRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM service_brokers WHERE id = $1")
        .bind(id)
        .fetch_optional(ex)
        .await
}

/// Stores a freshly fetched catalog (and, when given, new coordinates); the new version.
pub async fn update_broker(
    conn: &mut PgConnection,
    id: Uuid,
    catalog: &osb::Catalog,
    coordinates: Option<(&str, &str, &[u8])>,
) -> Result<i64, sqlx::Error> {
    let (url, username, sealed) = match coordinates {
        Some((url, username, sealed)) => (Some(url), Some(username), Some(sealed)),
        None => (None, None, None),
    };
    sqlx::query_scalar(
        "UPDATE service_brokers SET catalog = $2, catalog_fetched_at = now(),
                url = COALESCE($3, url), username = COALESCE($4, username),
                password_sealed = COALESCE($5, password_sealed)
         WHERE id = $1 RETURNING version",
    )
    .bind(id)
    .bind(Json(catalog))
    .bind(url)
    .bind(username)
    .bind(sealed)
    .fetch_one(conn)
    .await
}

/// Removes a broker that no instance uses; whether it existed.
pub async fn delete_broker(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM service_brokers WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// How many service instances a broker holds.
pub async fn broker_instances<'e>(
    ex: impl PgExecutor<'e>,
    broker_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM service_instances WHERE broker_id = $1")
        .bind(broker_id)
        .fetch_one(ex)
        .await
}

/// Every restriction of a plan to tenants: (broker, plan, tenant slug).
pub async fn plan_access<'e>(
    ex: impl PgExecutor<'e>,
) -> Result<Vec<(Uuid, String, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.broker_id, a.plan_id, a.tenant_id, t.slug FROM service_plan_access a
         JOIN tenants t ON t.id = a.tenant_id ORDER BY t.slug",
    )
    .fetch_all(ex)
    .await
}

/// Restricts a plan to these tenants (none: every tenant may use it).
pub async fn set_plan_access(
    conn: &mut PgConnection,
    broker_id: Uuid,
    plan_id: &str,
    tenants: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM service_plan_access WHERE broker_id = $1 AND plan_id = $2")
        .bind(broker_id)
        .bind(plan_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO service_plan_access (broker_id, plan_id, tenant_id)
         SELECT $1, $2, t FROM unnest($3::uuid[]) AS t",
    )
    .bind(broker_id)
    .bind(plan_id)
    .bind(tenants)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Where a service instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "service_instance_state", rename_all = "snake_case")]
pub enum InstanceState {
    Provisioning,
    Ready,
    Updating,
    Deprovisioning,
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Ready => "ready",
            Self::Updating => "updating",
            Self::Deprovisioning => "deprovisioning",
            Self::Failed => "failed",
        }
    }
}

/// What the operations worker has to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "service_operation", rename_all = "snake_case")]
pub enum Operation {
    Provision,
    Update,
    Deprovision,
    /// Orphan mitigation: deprovision what a failed provisioning may have left.
    Mitigate,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub environment_id: Uuid,
    pub name: String,
    pub broker_id: Uuid,
    pub service_id: String,
    pub plan_id: String,
    pub parameters: Json<serde_json::Map<String, serde_json::Value>>,
    pub state: InstanceState,
    pub dashboard_url: Option<String>,
    pub pending: Option<Json<Pending>>,
    pub operation: Option<Operation>,
    pub polling: bool,
    pub operation_token: Option<String>,
    pub operation_started_at: Option<DateTime<Utc>>,
    pub operation_deadline: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub claimed_until: Option<DateTime<Utc>>,
    pub last_operation: Option<String>,
    pub last_state: Option<String>,
    pub last_description: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// An update the broker has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub plan_id: String,
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

pub async fn insert_instance(
    conn: &mut PgConnection,
    row: &InstanceRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_instances (id, tenant_id, environment_id, name, broker_id, service_id,
             plan_id, parameters, state, operation, operation_started_at, operation_deadline,
             next_attempt_at, last_operation, last_state, last_description, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(row.id)
    .bind(row.tenant_id)
    .bind(row.environment_id)
    .bind(&row.name)
    .bind(row.broker_id)
    .bind(&row.service_id)
    .bind(&row.plan_id)
    .bind(&row.parameters)
    .bind(row.state)
    .bind(row.operation)
    .bind(row.operation_started_at)
    .bind(row.operation_deadline)
    .bind(row.next_attempt_at)
    .bind(&row.last_operation)
    .bind(&row.last_state)
    .bind(&row.last_description)
    .bind(&row.created_by)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The service instances of an environment.
pub async fn instances<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment_id: Uuid,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM service_instances WHERE tenant_id = $1 AND environment_id = $2 ORDER BY name",
    )
    .bind(tenant_id)
    .bind(environment_id)
    .fetch_all(ex)
    .await
}

/// One service instance by name, scoped by tenant.
pub async fn instance<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment_id: Uuid,
    name: &str,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM service_instances WHERE tenant_id = $1 AND environment_id = $2 AND name = $3",
    )
    .bind(tenant_id)
    .bind(environment_id)
    .bind(name)
    .fetch_optional(ex)
    .await
}

/// [`instance`], locked for a change.
pub async fn lock_instance(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    environment_id: Uuid,
    name: &str,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM service_instances WHERE tenant_id = $1 AND environment_id = $2 AND name = $3
         FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(environment_id)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// How many service instances the tenant has.
pub async fn tenant_instances<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM service_instances WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(ex)
        .await
}

/// Takes the next instance whose operation is due and that no control plane holds,
/// holding it for `hold`.
pub async fn claim_due<'e>(
    ex: impl PgExecutor<'e>,
    hold: std::time::Duration,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE service_instances SET claimed_until = now() + make_interval(secs => $1)
         WHERE id = (
             SELECT id FROM service_instances
             WHERE operation IS NOT NULL AND next_attempt_at <= now()
               AND (claimed_until IS NULL OR claimed_until < now())
             ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind(hold.as_secs_f64())
    .fetch_optional(ex)
    .await
}

/// When the next operation falls due (for the worker's sleep).
pub async fn next_due<'e>(ex: impl PgExecutor<'e>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(due) FROM (
             SELECT GREATEST(next_attempt_at, COALESCE(claimed_until, next_attempt_at)) AS due
             FROM service_instances WHERE operation IS NOT NULL
             UNION ALL
             SELECT GREATEST(next_attempt_at, COALESCE(claimed_until, next_attempt_at))
             FROM service_bindings WHERE operation IS NOT NULL) d",
    )
    .fetch_one(ex)
    .await
}

/// Writes what the worker made of its claim, unless someone changed the row since the
/// claim (`claimed_version`); whether it was written. The claim ends either way.
pub async fn save_progress<'e>(
    ex: impl PgExecutor<'e>,
    row: &InstanceRow,
    claimed_version: i64,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE service_instances SET plan_id = $3, parameters = $4, state = $5, dashboard_url = $6,
             pending = $7, operation = $8, polling = $9, operation_token = $10,
             operation_started_at = $11, operation_deadline = $12, next_attempt_at = $13,
             attempts = $14, claimed_until = NULL, last_operation = $15, last_state = $16,
             last_description = $17, updated_at = now()
         WHERE id = $1 AND version = $2",
    )
    .bind(row.id)
    .bind(claimed_version)
    .bind(&row.plan_id)
    .bind(&row.parameters)
    .bind(row.state)
    .bind(&row.dashboard_url)
    .bind(&row.pending)
    .bind(row.operation)
    .bind(row.polling)
    .bind(&row.operation_token)
    .bind(row.operation_started_at)
    .bind(row.operation_deadline)
    .bind(row.next_attempt_at)
    .bind(row.attempts)
    .bind(&row.last_operation)
    .bind(&row.last_state)
    .bind(&row.last_description)
    .execute(ex)
    .await?
    .rows_affected()
        == 1;
    Ok(written)
}

/// Ends a claim whose result was not written.
pub async fn release_claim<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE service_instances SET claimed_until = NULL WHERE id = $1")
        .bind(id)
        .execute(ex)
        .await
        .map(|_| ())
}

/// Forgets an instance the broker no longer has, unless someone changed it since the
/// claim; whether it was removed.
pub async fn delete_instance<'e>(
    ex: impl PgExecutor<'e>,
    id: Uuid,
    claimed_version: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM service_instances WHERE id = $1 AND version = $2")
        .bind(id)
        .bind(claimed_version)
        .execute(ex)
        .await
        .map(|r| r.rows_affected() == 1)
}

/// Asks the worker for `operation` on a locked instance, now.
pub async fn request_operation(
    conn: &mut PgConnection,
    id: Uuid,
    state: InstanceState,
    operation: Operation,
    deadline: DateTime<Utc>,
    pending: Option<&Pending>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE service_instances SET state = $2, operation = $3, polling = false,
             operation_token = NULL, operation_started_at = now(), operation_deadline = $4,
             next_attempt_at = now(), attempts = 0, pending = $5, last_operation = $6,
             last_state = 'in progress', last_description = NULL, updated_at = now()
         WHERE id = $1 RETURNING version",
    )
    .bind(id)
    .bind(state)
    .bind(operation)
    .bind(deadline)
    .bind(pending.map(Json))
    .bind(operation_name(operation))
    .fetch_one(conn)
    .await
}

/// The operation's name as users read it.
pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Provision => "provision",
        Operation::Update => "update",
        Operation::Deprovision => "deprovision",
        Operation::Mitigate => "orphan mitigation",
    }
}

/// Where a binding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "service_binding_state", rename_all = "snake_case")]
pub enum BindingState {
    /// The broker is being asked (a crash now leaves the row to orphan mitigation).
    Binding,
    Bound,
    Unbinding,
    Failed,
}

impl BindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binding => "binding",
            Self::Bound => "bound",
            Self::Unbinding => "unbinding",
            Self::Failed => "failed",
        }
    }
}

/// What the worker still has to tell the broker about a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "service_binding_operation", rename_all = "snake_case")]
pub enum BindingOperation {
    Unbind,
    /// Orphan mitigation: unbind what a bind with no clear answer may have made.
    Mitigate,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub instance_id: Uuid,
    pub application_id: Uuid,
    pub prefix: String,
    pub state: BindingState,
    pub variables: Vec<String>,
    pub credentials_sealed: Option<Vec<u8>>,
    pub operation: Option<BindingOperation>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub operation_deadline: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub claimed_until: Option<DateTime<Utc>>,
    pub last_description: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

/// A binding with the names of its instance and application.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingView {
    #[sqlx(flatten)]
    pub row: BindingRow,
    pub instance: String,
    pub application: String,
}

pub async fn insert_binding(conn: &mut PgConnection, row: &BindingRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_bindings (id, tenant_id, instance_id, application_id, prefix, state,
             variables, credentials_sealed, operation, next_attempt_at, operation_deadline,
             last_description, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(row.id)
    .bind(row.tenant_id)
    .bind(row.instance_id)
    .bind(row.application_id)
    .bind(&row.prefix)
    .bind(row.state)
    .bind(&row.variables)
    .bind(&row.credentials_sealed)
    .bind(row.operation)
    .bind(row.next_attempt_at)
    .bind(row.operation_deadline)
    .bind(&row.last_description)
    .bind(&row.created_by)
    .execute(conn)
    .await
    .map(|_| ())
}

const BINDING_VIEW: &str = "SELECT b.*, i.name AS instance, a.name AS application
     FROM service_bindings b JOIN service_instances i ON i.id = b.instance_id
     JOIN applications a ON a.id = b.application_id";

/// The bindings of an instance (or of every instance of an environment).
pub async fn bindings<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Uuid,
    environment_id: Uuid,
    instance_id: Option<Uuid>,
) -> Result<Vec<BindingView>, sqlx::Error> {
    let mut q = sqlx::QueryBuilder::new(BINDING_VIEW);
    q.push(" WHERE b.tenant_id = ").push_bind(tenant_id);
    q.push(" AND i.environment_id = ").push_bind(environment_id);
    if let Some(id) = instance_id {
        q.push(" AND b.instance_id = ").push_bind(id);
    }
    q.push(" ORDER BY i.name, a.name, b.created_at");
    q.build_query_as().fetch_all(ex).await
}

/// The live bindings of an application (its variables' sources).
pub async fn bindings_of_app<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<BindingView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "{BINDING_VIEW} WHERE b.application_id = $1 AND b.state = 'bound' ORDER BY b.prefix"
    ))
    .bind(application_id)
    .fetch_all(ex)
    .await
}

/// How many bindings an instance has that are not gone yet.
pub async fn instance_bindings<'e>(
    ex: impl PgExecutor<'e>,
    instance_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM service_bindings WHERE instance_id = $1 AND state <> 'failed'",
    )
    .bind(instance_id)
    .fetch_one(ex)
    .await
}

/// The instance's bound binding of an application, locked.
pub async fn lock_binding(
    conn: &mut PgConnection,
    instance_id: Uuid,
    application_id: Uuid,
) -> Result<Option<BindingRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM service_bindings WHERE instance_id = $1 AND application_id = $2
           AND state = 'bound' FOR UPDATE",
    )
    .bind(instance_id)
    .bind(application_id)
    .fetch_optional(conn)
    .await
}

/// Records a successful bind: the sealed credentials and the variables set.
pub async fn set_bound(
    conn: &mut PgConnection,
    id: Uuid,
    sealed: &[u8],
    variables: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE service_bindings SET state = 'bound', credentials_sealed = $2, variables = $3,
             operation = NULL, next_attempt_at = NULL, last_description = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(sealed)
    .bind(variables)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Hands a binding to the worker: unbind (or mitigate) at the broker, from now on.
pub async fn request_unbind(
    conn: &mut PgConnection,
    id: Uuid,
    state: BindingState,
    operation: BindingOperation,
    deadline: DateTime<Utc>,
    description: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE service_bindings SET state = $2, operation = $3, next_attempt_at = now(),
             operation_deadline = $4, attempts = 0, credentials_sealed = NULL,
             last_description = COALESCE($5, last_description)
         WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(operation)
    .bind(deadline)
    .bind(description)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Every bound binding of a deleted application goes to the worker for unbinding.
pub async fn unbind_all_of_app(
    conn: &mut PgConnection,
    application_id: Uuid,
    deadline: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE service_bindings SET state = 'unbinding', operation = 'unbind',
             next_attempt_at = now(), operation_deadline = $2, attempts = 0,
             credentials_sealed = NULL
         WHERE application_id = $1 AND state = 'bound'",
    )
    .bind(application_id)
    .bind(deadline)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Takes the next binding whose operation is due, as [`claim_due`] does for instances.
pub async fn claim_due_binding<'e>(
    ex: impl PgExecutor<'e>,
    hold: std::time::Duration,
) -> Result<Option<BindingRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE service_bindings SET claimed_until = now() + make_interval(secs => $1)
         WHERE id = (
             SELECT id FROM service_bindings
             WHERE operation IS NOT NULL AND next_attempt_at <= now()
               AND (claimed_until IS NULL OR claimed_until < now())
             ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind(hold.as_secs_f64())
    .fetch_optional(ex)
    .await
}

/// Writes a binding's next attempt (or its end), ending the claim.
pub async fn save_binding_progress<'e>(
    ex: impl PgExecutor<'e>,
    row: &BindingRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE service_bindings SET state = $2, operation = $3, next_attempt_at = $4,
             attempts = $5, claimed_until = NULL, last_description = $6
         WHERE id = $1",
    )
    .bind(row.id)
    .bind(row.state)
    .bind(row.operation)
    .bind(row.next_attempt_at)
    .bind(row.attempts)
    .bind(&row.last_description)
    .execute(ex)
    .await
    .map(|_| ())
}

/// Forgets a binding the broker no longer has.
pub async fn delete_binding<'e>(ex: impl PgExecutor<'e>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM service_bindings WHERE id = $1")
        .bind(id)
        .execute(ex)
        .await
        .map(|_| ())
}

/// One service instance by id (no tenant scope: for the platform's own bookkeeping).
pub async fn instance_by_id<'e>(
    ex: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<InstanceRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM service_instances WHERE id = $1")
        .bind(id)
        .fetch_optional(ex)
        .await
}
