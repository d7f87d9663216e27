//! `paas-database-broker`: the database service's broker. Serves the Open Service Broker API
//! and runs each instance's PostgreSQL server as an application of the platform.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use broker_kit::BrokerConfig;
use broker_kit::platform::{PlatformClient, PlatformTarget};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "paas-database-broker",
    version,
    about = "The platform's database (PostgreSQL) service broker"
)]
struct Args {
    /// Where the broker listens.
    #[arg(long, env = "PAAS_BROKER_LISTEN", default_value = "127.0.0.1:9102")]
    listen: SocketAddr,
    /// Where it keeps what it made (a registry file, mode 0600).
    #[arg(long, env = "PAAS_BROKER_STATE_DIR")]
    state_dir: PathBuf,
    /// The basic-auth user the platform signs in with.
    #[arg(long, env = "PAAS_BROKER_USERNAME", default_value = "platform")]
    username: String,
    #[arg(long, env = "PAAS_BROKER_PASSWORD", hide_env_values = true)]
    password: String,
    /// The platform whose workloads run the PostgreSQL servers.
    #[arg(long, env = "PAAS_PLATFORM_URL")]
    platform_url: String,
    #[arg(long, env = "PAAS_PLATFORM_USERNAME")]
    platform_username: String,
    #[arg(long, env = "PAAS_PLATFORM_PASSWORD", hide_env_values = true)]
    platform_password: String,
    #[arg(long, env = "PAAS_PLATFORM_TENANT", default_value = "system")]
    tenant: String,
    #[arg(long, env = "PAAS_PLATFORM_ENVIRONMENT", default_value = "services")]
    environment: String,
    /// Held while the broker runs; a second broker for the same file exits at once.
    #[arg(long)]
    lock_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let _lock = match &args.lock_file {
        Some(path) => match broker_kit::lock::hold(path)? {
            Some(lock) => Some(lock),
            None => return Ok(()),
        },
        None => None,
    };
    let platform = PlatformClient::new(PlatformTarget {
        url: args.platform_url.trim_end_matches('/').to_owned(),
        username: args.platform_username,
        password: args.platform_password,
        tenant: args.tenant,
        environment: args.environment,
    });
    let config = BrokerConfig {
        catalog: database_broker::catalog(),
        username: args.username,
        password: args.password,
    };
    tracing::info!(listen = %args.listen, version = env!("CARGO_PKG_VERSION"), "database broker serving");
    broker_kit::serve(
        config,
        Arc::new(database_broker::PostgresBackend::new(
            platform,
            args.state_dir.join("backend"),
        )),
        &args.state_dir,
        args.listen,
    )
    .await?;
    Ok(())
}
