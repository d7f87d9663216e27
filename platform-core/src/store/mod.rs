//! PostgreSQL access. This module and its children are the only place in the platform
//! that writes SQL; everything else calls these functions.
//!
//! Functions that change state take a `&mut PgConnection` so the caller can run them
//! inside the transaction that also appends the audit record.

pub mod apps;
pub mod audit;
pub mod autoscaling;
pub mod bundles;
pub mod keys;
pub mod notifications;
pub mod packages;
pub mod releases;
pub mod runtime;
pub mod secrets;
pub mod services;
pub mod tenants;
pub mod users;

use std::time::Duration;

use sqlx::Connection;
pub use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The platform's schema history, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a connection pool.
pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out: a round trip before each query,
        // doubling the cost of a short one. Only a connection idle long enough to have
        // been dropped by the server or a proxy is pinged; one that broke while in use
        // is already discarded by sqlx.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
}

/// A pooled connection idle for this long is pinged before it is used again.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects to the database at `url` and applies pending migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<PgPool, OpenError> {
    let options: PgConnectOptions = url.parse().map_err(OpenError::BadUrl)?;
    let pool = connect(options, max_connections)
        .await
        .map_err(OpenError::Connect)?;
    migrate(&pool).await.map_err(OpenError::Migrate)?;
    Ok(pool)
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("could not connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("could not apply migrations: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

/// Applies every migration not yet applied. Safe to run from several replicas at once:
/// sqlx serializes them with an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
