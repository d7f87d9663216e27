//! The append-only audit log. Records are written inside the transaction of the change
//! they describe; the table refuses updates and deletes by trigger.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::model::{AuditEntry, AuditFilter};

/// One change to record.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub tenant_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target_kind: &'a str,
    pub target: &'a str,
    pub details: serde_json::Value,
    pub source_ip: Option<&'a str>,
}

pub async fn append(conn: &mut PgConnection, record: AuditRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor_id, actor, action, target_kind, target, details, source_ip)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(record.tenant_id)
    .bind(record.actor_id)
    .bind(record.actor)
    .bind(record.action)
    .bind(record.target_kind)
    .bind(record.target)
    .bind(record.details)
    .bind(record.source_ip)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Entries newest first. `tenant_id = None` reads the platform-level log (entries with
/// no tenant: logins, users, tenants, keys).
pub async fn list<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Option<Uuid>,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let texts = [&filter.actor, &filter.action, &filter.target];
    if texts
        .iter()
        .any(|t| t.as_deref().is_some_and(|t| t.contains('\0')))
    {
        // PostgreSQL text cannot hold NUL, so nothing can match.
        return Ok(Vec::new());
    }
    let limit = filter.limit.unwrap_or(50).clamp(1, 200);
    let action_prefix = filter
        .action
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|a| format!("{}%", escape_like(a)));
    let target_part = filter
        .target
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|t| format!("%{}%", escape_like(t)));
    // Only the conditions the filter sets, and the tenant as an equality (or IS NULL):
    // `$n IS NULL OR ...` and `IS NOT DISTINCT FROM` keep PostgreSQL from using the
    // (tenant_id, id) index and from caching one plan per shape.
    let mut sql = sqlx::QueryBuilder::new(
        "SELECT id, at, actor, action, target_kind, target, details, source_ip FROM audit_log WHERE ",
    );
    match tenant_id {
        Some(id) => sql.push("tenant_id = ").push_bind(id),
        None => sql.push("tenant_id IS NULL"),
    };
    if let Some(actor) = filter.actor.as_deref().filter(|s| !s.is_empty()) {
        sql.push(" AND actor = ").push_bind(actor);
    }
    if let Some(prefix) = action_prefix {
        sql.push(" AND action LIKE ").push_bind(prefix);
    }
    if let Some(part) = target_part {
        sql.push(" AND target ILIKE ").push_bind(part);
    }
    if let Some(before) = filter.before {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(format_args!(" ORDER BY id DESC LIMIT {limit}"));
    sql.build_query_as().fetch_all(ex).await
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Who last changed a target, and when: the newest entry about it. Read only when a
/// change is refused as stale, to tell the caller who got there first.
pub async fn last_change<'e>(
    ex: impl PgExecutor<'e>,
    tenant_id: Option<Uuid>,
    target_kind: &str,
    target: &str,
) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    // Two spellings, so that each can walk the (tenant_id, id) index.
    let scope = match tenant_id {
        Some(_) => "tenant_id = $1",
        None => "tenant_id IS NULL AND $1::uuid IS NULL",
    };
    sqlx::query_as(&format!(
        "SELECT actor, at FROM audit_log
         WHERE {scope} AND target_kind = $2 AND target = $3
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(tenant_id)
    .bind(target_kind)
    .bind(target)
    .fetch_optional(ex)
    .await
}
