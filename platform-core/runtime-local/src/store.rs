//! The local runtime's state: nodes, placed instances, node events and router ports.
//! Only this module writes SQL in the driver.

use chrono::{DateTime, Utc};
use platform_core::runtime::Phase;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::proto::Desired;

/// Whether a placed instance should run (`instances.desired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Wanted {
    Run,
    Stop,
}

impl From<Wanted> for Desired {
    fn from(w: Wanted) -> Self {
        match w {
            Wanted::Run => Desired::Run,
            Wanted::Stop => Desired::Stop,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    pub name: String,
    pub labels: serde_json::Value,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub address: String,
    pub api_port: i32,
    pub last_heartbeat: DateTime<Utc>,
    /// The database's clock when the row was read, so that silences are measured on
    /// one clock.
    pub now: DateTime<Utc>,
    pub heartbeat_ms: i32,
    pub confirmed_lost_at: Option<DateTime<Utc>>,
    /// The condition as last judged (`ready`, `not_ready`, `lost`).
    pub condition: String,
    /// Requests of the instances that should run there.
    pub cpu_requested: i64,
    pub memory_requested: i64,
    /// It takes no new instances.
    pub cordoned: bool,
    /// Since when it is drained (its instances move elsewhere).
    pub draining_since: Option<DateTime<Utc>>,
}
/// A node as it registers.
#[derive(Debug)]
pub struct NodeRegistration<'a> {
    pub name: &'a str,
    pub labels: &'a serde_json::Value,
    pub cpu_millis: i32,
    pub memory_mib: i32,
    pub address: &'a str,
    pub api_port: i32,
    pub heartbeat_ms: i32,
    /// SHA-256 (hex) of the credential issued to the node's agent.
    pub credential_hash: &'a str,
}
/// Registers a node (or updates it); a node that registers again is no longer
/// confirmed lost. Returns its condition before.
pub async fn upsert_node(
    conn: &mut PgConnection,
    node: &NodeRegistration<'_>,
) -> Result<Option<String>, sqlx::Error> {
    let before: Option<(String,)> =
        sqlx::query_as("SELECT condition FROM nodes WHERE name = $1 FOR UPDATE")
            .bind(node.name)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "INSERT INTO nodes (name, labels, cpu_millis, memory_mib, address, api_port, heartbeat_ms, credential_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (name) DO UPDATE SET labels = EXCLUDED.labels, cpu_millis = EXCLUDED.cpu_millis,
             memory_mib = EXCLUDED.memory_mib, address = EXCLUDED.address, api_port = EXCLUDED.api_port,
             heartbeat_ms = EXCLUDED.heartbeat_ms, credential_hash = EXCLUDED.credential_hash,
             last_heartbeat = now(), confirmed_lost_at = NULL, condition = 'ready'",
    )
    .bind(node.name)
    .bind(node.labels)
    .bind(node.cpu_millis)
    .bind(node.memory_mib)
    .bind(node.address)
    .bind(node.api_port)
    .bind(node.heartbeat_ms)
    .bind(node.credential_hash)
    .execute(conn)
    .await?;
    Ok(before.map(|(c,)| c))
}
/// Records a heartbeat: the node is ready (and no longer confirmed lost). Returns its
/// condition before, `None` when the node is not registered.
pub async fn touch_node(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE nodes n SET last_heartbeat = now(), condition = 'ready', confirmed_lost_at = NULL
         FROM (SELECT name, condition FROM nodes WHERE name = $1 FOR UPDATE) before
         WHERE n.name = before.name RETURNING before.condition",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(c,)| c))
}
/// Records a node's newly judged condition; false when it was already recorded (so
/// that two control planes record a transition once).
pub async fn set_node_condition(
    conn: &mut PgConnection,
    name: &str,
    condition: &str,
    last_heartbeat: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    // Only if no heartbeat arrived since the judgement.
    let done = sqlx::query(
        "UPDATE nodes SET condition = $2 WHERE name = $1 AND condition <> $2 AND last_heartbeat = $3",
    )
    .bind(name)
    .bind(condition)
    .bind(last_heartbeat)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
/// Marks a node confirmed lost; false when there is no such node.
pub async fn confirm_node_lost(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE nodes SET confirmed_lost_at = COALESCE(confirmed_lost_at, now()), condition = 'lost' WHERE name = $1",
    )
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
pub async fn nodes<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.name, n.labels, n.cpu_millis, n.memory_mib, n.address, n.api_port, n.last_heartbeat, now() AS now,
                n.heartbeat_ms, n.confirmed_lost_at, n.condition, n.cordoned, CASE WHEN n.cordoned THEN n.draining_since END AS draining_since,
                COALESCE(r.cpu_millis, 0) AS cpu_requested, COALESCE(r.memory_mib, 0) AS memory_requested
         FROM nodes n LEFT JOIN node_requests r ON r.node = n.name
         ORDER BY n.name",
    )
    .fetch_all(ex)
    .await
}
/// Whether every node of `wanted` ((node, CPU millis, memory MiB)) still takes new
/// instances and has that much room besides what is placed on it. Read under the
/// placement lock.
pub async fn room_holds<'e>(
    ex: impl PgExecutor<'e>,
    wanted: &[(String, i64, i64)],
) -> Result<bool, sqlx::Error> {
    if wanted.is_empty() {
        return Ok(true);
    }
    let nodes: Vec<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
    let cpu: Vec<i64> = wanted.iter().map(|w| w.1).collect();
    let memory: Vec<i64> = wanted.iter().map(|w| w.2).collect();
    let fitting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(node, cpu, memory)
         JOIN nodes n ON n.name = w.node AND NOT n.cordoned
         LEFT JOIN node_requests r ON r.node = w.node
         WHERE COALESCE(r.cpu_millis, 0) + w.cpu <= n.cpu_millis
           AND COALESCE(r.memory_mib, 0) + w.memory <= n.memory_mib",
    )
    .bind(&nodes)
    .bind(&cpu)
    .bind(&memory)
    .fetch_one(ex)
    .await?;
    Ok(fitting == i64::try_from(wanted.len()).unwrap_or(i64::MAX))
}

/// Serializes placement (until the transaction ends) among every workload and control
/// plane, so that two placements never both count on the same free capacity.
pub async fn lock_placement(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(727001)")
        .execute(conn)
        .await
        .map(|_| ())
}

/// The nodes named (every node when `None`), without what is placed on them
/// (`cpu_requested` and `memory_requested` are zero): enough to judge and reach them.
pub async fn node_views<'e>(
    ex: impl PgExecutor<'e>,
    names: Option<&[String]>,
) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.name, n.labels, n.cpu_millis, n.memory_mib, n.address, n.api_port, n.last_heartbeat, now() AS now,
                n.heartbeat_ms, n.confirmed_lost_at, n.condition, n.cordoned, CASE WHEN n.cordoned THEN n.draining_since END AS draining_since, 0::bigint AS cpu_requested, 0::bigint AS memory_requested
         FROM nodes n WHERE $1::text[] IS NULL OR n.name = ANY($1) ORDER BY n.name",
    )
    .bind(names)
    .fetch_all(ex)
    .await
}
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: Uuid,
    pub application_id: Uuid,
    pub revision: i32,
    pub ordinal: Option<i32>,
    pub name: String,
    pub node: String,
    pub desired: Wanted,
    pub cpu_request: i32,
    pub memory_request: i32,
    pub created_at: DateTime<Utc>,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: i32,
    pub port: Option<i32>,
    pub message: Option<String>,
    pub cpu_millis: Option<i32>,
    pub memory_mib: Option<i32>,
    pub observed_at: Option<DateTime<Utc>>,
}
const INSTANCE_COLUMNS: &str = "id, application_id, revision, ordinal, name, node, desired, cpu_request, memory_request, \
     created_at, phase, ready, restarts, port, message, cpu_millis, memory_mib, observed_at";
pub async fn instances_of<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE application_id = $1 ORDER BY revision, ordinal NULLS LAST, created_at"
    ))
    .bind(application_id)
    .fetch_all(ex)
    .await
}
/// The instances of many applications, named by (tenant, environment, name), each row
/// with the index of its key in `keys`.
pub async fn instances_of_keys<'e>(
    ex: impl PgExecutor<'e>,
    keys: &[(String, String, String)],
) -> Result<Vec<(i32, InstanceRow)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Keyed {
        key_index: i32,
        #[sqlx(flatten)]
        row: InstanceRow,
    }
    let columns: String = INSTANCE_COLUMNS
        .split(", ")
        .map(|c| format!("i.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<Keyed> = sqlx::query_as(&format!(
        "SELECT (k.n - 1)::int AS key_index, {columns}
         FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(tenant, environment, app, n)
         JOIN tenants t ON t.slug = k.tenant
         JOIN environments e ON e.tenant_id = t.id AND e.name = k.environment
         JOIN applications a ON a.environment_id = e.id AND a.name = k.app AND a.deleted_at IS NULL
         JOIN instances i ON i.application_id = a.id
         ORDER BY k.n, i.revision, i.ordinal NULLS LAST, i.created_at"
    ))
    .bind(keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|k| (k.key_index, k.row)).collect())
}
#[derive(Debug)]
pub struct NewInstance<'a> {
    pub application_id: Uuid,
    pub tenant_id: Uuid,
    pub revision: i32,
    pub ordinal: Option<i32>,
    pub name: &'a str,
    pub node: &'a str,
    pub cpu_request: i32,
    pub memory_request: i32,
}

impl<'a> NewInstance<'a> {
    /// An instance of `revision` (at `ordinal`, for stateful sets) on `node`, charged
    /// with `request`.
    pub fn of(
        application_id: Uuid,
        tenant_id: Uuid,
        revision: i32,
        ordinal: Option<u32>,
        name: &'a str,
        node: &'a str,
        request: platform_core::spec::Resources,
    ) -> Self {
        Self {
            application_id,
            tenant_id,
            revision,
            ordinal: ordinal.and_then(|o| i32::try_from(o).ok()),
            name,
            node,
            cpu_request: i32::try_from(request.cpu_millis).unwrap_or(i32::MAX),
            memory_request: i32::try_from(request.memory_mib).unwrap_or(i32::MAX),
        }
    }
}
pub async fn insert_instance(
    conn: &mut PgConnection,
    new: NewInstance<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO instances (id, application_id, tenant_id, revision, ordinal, name, node, cpu_request, memory_request)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(new.application_id)
    .bind(new.tenant_id)
    .bind(new.revision)
    .bind(new.ordinal)
    .bind(new.name)
    .bind(new.node)
    .bind(new.cpu_request)
    .bind(new.memory_request)
    .execute(conn)
    .await?;
    Ok(id)
}
/// Inserts many instances in one statement.
pub async fn insert_instances(
    conn: &mut PgConnection,
    new: &[NewInstance<'_>],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO instances (id, application_id, tenant_id, revision, ordinal, name, node, cpu_request, memory_request)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::int[], $6::text[], $7::text[], $8::int[], $9::int[])",
    )
    .bind(new.iter().map(|_| Uuid::new_v4()).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.application_id).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.tenant_id).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.revision).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.ordinal).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.name).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.node).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.cpu_request).collect::<Vec<_>>())
    .bind(new.iter().map(|n| n.memory_request).collect::<Vec<_>>())
    .execute(conn)
    .await
    .map(|_| ())
}
/// Marks instances to stop, locking them in id order first, the order a heartbeat
/// locks its node's instances in, so the two do not deadlock over them.
pub async fn mark_stop(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE instances SET desired = 'stop'
         WHERE id IN (SELECT id FROM instances WHERE id = ANY($1) ORDER BY id FOR UPDATE)",
    )
    .bind(ids)
    .execute(conn)
    .await
    .map(|_| ())
}
/// An instance a node should run or stop, with the spec of its revision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AssignmentRow {
    pub id: Uuid,
    pub application_id: Uuid,
    pub name: String,
    pub revision: i32,
    pub ordinal: Option<i32>,
    pub desired: Wanted,
    pub spec: serde_json::Value,
    /// The secret versions of the revision (`{"NAME": version}`).
    pub secrets: serde_json::Value,
    pub tenant: String,
    pub environment: String,
    pub app: String,
    /// The tenant's instance identity on this platform.
    pub uid: i64,
}
pub async fn assignments<'e>(
    ex: impl PgExecutor<'e>,
    node: &str,
) -> Result<Vec<AssignmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.id, i.application_id, i.name, i.revision, i.ordinal, i.desired, r.spec, r.secrets,
                t.slug AS tenant, e.name AS environment, a.name AS app,
                (SELECT uid_base FROM platform) + t.uid_offset AS uid
         FROM instances i
         JOIN revisions r ON r.application_id = i.application_id AND r.number = i.revision
         JOIN applications a ON a.id = i.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         WHERE i.node = $1 ORDER BY i.created_at",
    )
    .bind(node)
    .fetch_all(ex)
    .await
}
/// One instance as an agent reported it.
#[derive(Debug, Clone)]
pub struct Observation {
    pub id: Uuid,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: i32,
    pub port: Option<i32>,
    pub ports: serde_json::Value,
    pub message: Option<String>,
    pub cpu_millis: Option<i32>,
    pub memory_mib: Option<i32>,
}
/// Stores a node's observations of its instances in two statements whatever their
/// number (writing only rows that changed, so that `observed_at` says since when each
/// is as observed); returns the rows as they were before, for the instances that are
/// on `node`. Others (an instance moved away meanwhile) are ignored.
pub async fn observe_all(
    conn: &mut PgConnection,
    node: &str,
    observations: &[Observation],
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    if observations.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = observations.iter().map(|o| o.id).collect();
    let before: Vec<InstanceRow> = sqlx::query_as(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE node = $1 AND id = ANY($2) ORDER BY id FOR UPDATE"
    ))
    .bind(node)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    if before.is_empty() {
        return Ok(before);
    }
    sqlx::query(
        "UPDATE instances i SET phase = u.phase, ready = u.ready, restarts = u.restarts, port = u.port,
             message = u.message, cpu_millis = u.cpu_millis, memory_mib = u.memory_mib, ports = u.ports,
             observed_at = now()
         FROM unnest($2::uuid[], $3::text[], $4::bool[], $5::int4[], $6::int4[], $7::text[], $8::int4[],
                     $9::int4[], $10::jsonb[])
              AS u(id, phase, ready, restarts, port, message, cpu_millis, memory_mib, ports)
         WHERE i.id = u.id AND i.node = $1
           AND (i.phase, i.ready, i.restarts, i.port, i.message, i.cpu_millis, i.memory_mib, i.ports)
               IS DISTINCT FROM (u.phase, u.ready, u.restarts, u.port, u.message, u.cpu_millis, u.memory_mib, u.ports)",
    )
    .bind(node)
    .bind(&ids)
    .bind(observations.iter().map(|o| o.phase.as_str()).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.ready).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.restarts).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.port).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.message.clone()).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.cpu_millis).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.memory_mib).collect::<Vec<_>>())
    .bind(observations.iter().map(|o| o.ports.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(before)
}
/// Forgets the instances a node was told to stop and no longer reports; returns them.
pub async fn forget_stopped(
    conn: &mut PgConnection,
    node: &str,
    reported: &[Uuid],
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "DELETE FROM instances WHERE node = $1 AND desired = 'stop' AND NOT (id = ANY($2)) RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(node)
    .bind(reported)
    .fetch_all(conn)
    .await
}
/// Asks every node to remove a deleted application's files (again, if it was asked
/// before and has not acknowledged).
pub async fn add_purges(conn: &mut PgConnection, application_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO local_purges (node, application_id) SELECT name, $1 FROM nodes
         ON CONFLICT DO NOTHING",
    )
    .bind(application_id)
    .execute(conn)
    .await
    .map(|_| ())
}
/// A deleted application whose files a node should remove.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PurgeRow {
    pub application_id: Uuid,
    pub tenant: String,
    pub environment: String,
    pub app: String,
}
pub async fn purges<'e>(ex: impl PgExecutor<'e>, node: &str) -> Result<Vec<PurgeRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.application_id, t.slug AS tenant, e.name AS environment, a.name AS app
         FROM local_purges p
         JOIN applications a ON a.id = p.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         WHERE p.node = $1 ORDER BY p.created_at, p.application_id",
    )
    .bind(node)
    .fetch_all(ex)
    .await
}
/// Takes a node's acknowledgement that it removed these applications' files.
pub async fn acknowledge_purges(
    conn: &mut PgConnection,
    node: &str,
    application_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if application_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM local_purges WHERE node = $1 AND application_id = ANY($2)")
        .bind(node)
        .bind(application_ids)
        .execute(conn)
        .await
        .map(|_| ())
}
/// A backend the router may send an application's traffic to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RouteRow {
    pub tenant: String,
    pub environment: String,
    pub app: String,
    pub address: String,
    pub port: i32,
    /// How long its node has been silent, in milliseconds, and how often it beats.
    pub silent_ms: i64,
    pub heartbeat_ms: i32,
    pub revision: i32,
    /// The application's traffic split, when a canary release gives one: the canary
    /// revision and its weight.
    pub split_revision: Option<i32>,
    pub split_weight: Option<i32>,
}
/// Wanted instances that were ready when last reported, with a port, on nodes not
/// confirmed lost.
pub async fn routes<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<RouteRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.slug AS tenant, e.name AS environment, a.name AS app, n.address, i.port,
                (extract(epoch FROM now() - n.last_heartbeat) * 1000)::bigint AS silent_ms, n.heartbeat_ms,
                i.revision, s.revision AS split_revision, s.weight AS split_weight
         FROM instances i
         JOIN nodes n ON n.name = i.node
         JOIN applications a ON a.id = i.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         LEFT JOIN traffic_splits s ON s.application_id = a.id
         WHERE i.desired = 'run' AND i.ready AND i.port IS NOT NULL AND a.deleted_at IS NULL
           AND n.confirmed_lost_at IS NULL
         ORDER BY t.slug, e.name, a.name, i.name",
    )
    .fetch_all(ex)
    .await
}
/// Instances that should run of the other applications of `application_id`'s
/// environment, per node and application name.
pub async fn neighbours<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.node, a.name, count(*)
         FROM instances i
         JOIN applications a ON a.id = i.application_id
         WHERE i.desired = 'run' AND a.id <> $1 AND a.deleted_at IS NULL
           AND a.environment_id = (SELECT environment_id FROM applications WHERE id = $1)
         GROUP BY i.node, a.name",
    )
    .bind(application_id)
    .fetch_all(ex)
    .await
}

/// Every traffic split, by the application's key: (tenant, environment, app, revision,
/// weight).
pub async fn splits<'e>(
    ex: impl PgExecutor<'e>,
) -> Result<Vec<(String, String, String, i32, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.slug, e.name, a.name, s.revision, s.weight
         FROM traffic_splits s
         JOIN applications a ON a.id = s.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id",
    )
    .fetch_all(ex)
    .await
}

/// Sets (or, with `None`, removes) an application's traffic split: the canary
/// revision and its weight.
pub async fn set_split<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
    split: Option<(i32, i32)>,
) -> Result<(), sqlx::Error> {
    match split {
        Some((revision, weight)) => sqlx::query(
            "INSERT INTO traffic_splits (application_id, revision, weight) VALUES ($1, $2, $3)
             ON CONFLICT (application_id) DO UPDATE SET revision = $2, weight = $3, updated_at = now()
             WHERE (traffic_splits.revision, traffic_splits.weight) IS DISTINCT FROM ($2, $3)",
        )
        .bind(application_id)
        .bind(revision)
        .bind(weight)
        .execute(ex)
        .await
        .map(|_| ()),
        None => sqlx::query("DELETE FROM traffic_splits WHERE application_id = $1")
            .bind(application_id)
            .execute(ex)
            .await
            .map(|_| ()),
    }
}

/// Cordons or uncordons a node; whether its state changed (`None`: no such node).
pub async fn set_cordoned(
    conn: &mut PgConnection,
    node: &str,
    cordoned: bool,
) -> Result<Option<bool>, sqlx::Error> {
    let before: Option<bool> =
        sqlx::query_scalar("SELECT cordoned FROM nodes WHERE name = $1 FOR UPDATE")
            .bind(node)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    if before != cordoned {
        // Uncordoning ends a drain too.
        sqlx::query("UPDATE nodes SET cordoned = $2, draining_since = NULL WHERE name = $1")
            .bind(node)
            .bind(cordoned)
            .execute(conn)
            .await?;
    }
    Ok(Some(before != cordoned))
}

/// Cordons a node and marks it drained, unless it is drained already: whether that
/// changed anything, `None` for an unknown node.
pub async fn set_draining(
    conn: &mut PgConnection,
    node: &str,
) -> Result<Option<bool>, sqlx::Error> {
    let before: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT CASE WHEN cordoned THEN draining_since END FROM nodes WHERE name = $1 FOR UPDATE",
    )
    .bind(node)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    if before.is_none() {
        sqlx::query("UPDATE nodes SET cordoned = true, draining_since = now() WHERE name = $1")
            .bind(node)
            .execute(conn)
            .await?;
    }
    Ok(Some(before.is_none()))
}
/// Records something that happened to a node; false when there is no such node.
pub async fn append_node_event(
    conn: &mut PgConnection,
    node: &str,
    reason: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO node_events (node, reason, message) SELECT name, $2, $3 FROM nodes WHERE name = $1",
    )
    .bind(node)
    .bind(reason)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeEventRow {
    pub id: i64,
    pub node: String,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub message: String,
}
/// The most recent node events, newest first.
pub async fn node_events<'e>(
    ex: impl PgExecutor<'e>,
    limit: i64,
) -> Result<Vec<NodeEventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, node, at, reason, message FROM node_events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(ex)
    .await
}
/// The stateful instances that should run on a node, as `tenant/env/app-ordinal`.
pub async fn stateful_on<'e>(
    ex: impl PgExecutor<'e>,
    node: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT t.slug || '/' || e.name || '/' || i.name
         FROM instances i
         JOIN applications a ON a.id = i.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         WHERE i.node = $1 AND i.desired = 'run' AND i.ordinal IS NOT NULL
         ORDER BY 1",
    )
    .bind(node)
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
/// The SHA-256 (hex) of the credential of a node, if it has one.
pub async fn node_credential_hash<'e>(
    ex: impl PgExecutor<'e>,
    node: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT credential_hash FROM nodes WHERE name = $1")
            .bind(node)
            .fetch_optional(ex)
            .await?;
    Ok(row.and_then(|(h,)| h))
}
/// Whether an instance placed on `node` (and wanted there) runs the package `digest`.
pub async fn package_assigned<'e>(
    ex: impl PgExecutor<'e>,
    node: &str,
    digest: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM instances i JOIN revisions r ON r.application_id = i.application_id AND r.number = i.revision
         WHERE i.node = $1 AND i.desired = 'run' AND r.spec->>'package' = $2 LIMIT 1",
    )
    .bind(node)
    .bind(digest)
    .fetch_optional(ex)
    .await?;
    Ok(row.is_some())
}
/// A stable address on the router: `port` forwards to the application's instances
/// listening on `port_name` (one ordinal's, or any ready one's when `ordinal` is -1).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RouterPortRow {
    pub port_name: String,
    pub ordinal: i32,
    pub port: i32,
}
pub async fn router_ports<'e>(
    ex: impl PgExecutor<'e>,
    application_id: Uuid,
) -> Result<Vec<RouterPortRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT port_name, ordinal, port FROM router_ports WHERE application_id = $1 ORDER BY port_name, ordinal",
    )
    .bind(application_id)
    .fetch_all(ex)
    .await
}
/// Gives the application a router port for each `(port name, ordinal)` it lacks, the
/// lowest free ones in `range`; false when the range is exhausted. Allocations are
/// serialized (the table is locked) so two applications never race for a port.
pub async fn allocate_router_ports(
    conn: &mut PgConnection,
    application_id: Uuid,
    wanted: &[(String, i32)],
    range: (i32, i32),
) -> Result<bool, sqlx::Error> {
    sqlx::query("LOCK TABLE router_ports IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    for (name, ordinal) in wanted {
        let done = sqlx::query(
            "INSERT INTO router_ports (application_id, port_name, ordinal, port)
             SELECT $1, $2, $3, p FROM generate_series($4::int, $5::int) p
             WHERE NOT EXISTS (SELECT 1 FROM router_ports r WHERE r.port = p)
             ORDER BY p LIMIT 1
             ON CONFLICT (application_id, port_name, ordinal) DO NOTHING",
        )
        .bind(application_id)
        .bind(name)
        .bind(ordinal)
        .bind(range.0)
        .bind(range.1)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            let exists: Option<(i32,)> = sqlx::query_as(
                "SELECT port FROM router_ports WHERE application_id = $1 AND port_name = $2 AND ordinal = $3",
            )
            .bind(application_id)
            .bind(name)
            .bind(ordinal)
            .fetch_optional(&mut *conn)
            .await?;
            if exists.is_none() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
/// Frees an application's router ports (it is gone).
pub async fn release_router_ports(
    conn: &mut PgConnection,
    application_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM router_ports WHERE application_id = $1")
        .bind(application_id)
        .execute(conn)
        .await
        .map(|_| ())
}
/// One backend (or none) of a router port.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TcpRouteRow {
    pub listen: i32,
    pub tenant: String,
    pub environment: String,
    pub app: String,
    pub port_name: String,
    pub ordinal: i32,
    pub address: Option<String>,
    pub port: Option<i32>,
    pub silent_ms: Option<i64>,
    pub heartbeat_ms: Option<i32>,
}
/// Every router port with the instances it forwards to (rows without an address are
/// ports with no ready instance now).
pub async fn tcp_routes<'e>(ex: impl PgExecutor<'e>) -> Result<Vec<TcpRouteRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rp.port AS listen, t.slug AS tenant, e.name AS environment, a.name AS app, rp.port_name, rp.ordinal,
                n.address, (i.ports ->> rp.port_name)::int AS port,
                (extract(epoch FROM now() - n.last_heartbeat) * 1000)::bigint AS silent_ms, n.heartbeat_ms
         FROM router_ports rp
         JOIN applications a ON a.id = rp.application_id
         JOIN environments e ON e.id = a.environment_id
         JOIN tenants t ON t.id = a.tenant_id
         LEFT JOIN (instances i JOIN nodes n ON n.name = i.node AND n.confirmed_lost_at IS NULL)
           ON i.application_id = rp.application_id AND i.desired = 'run' AND i.ready
              AND i.ports ? rp.port_name AND (rp.ordinal = -1 OR i.ordinal = rp.ordinal)
         WHERE a.deleted_at IS NULL
         ORDER BY rp.port, i.name",
    )
    .fetch_all(ex)
    .await
}
