//! What every broker binary shares: its command line (where it listens and keeps its
//! registry, the credentials the platform signs in with, the platform it deploys its
//! servers on, the lock `paas up` adopts it by) and its start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::platform::{PlatformClient, PlatformTarget};
use crate::{Backend, BrokerConfig};

/// A broker's command line (flattened into each broker binary's own).
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Where the broker listens.
    #[arg(long, env = "PAAS_BROKER_LISTEN")]
    pub listen: SocketAddr,
    /// Where it keeps what it made (a registry file, mode 0600).
    #[arg(long, env = "PAAS_BROKER_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The basic-auth user the platform signs in with.
    #[arg(long, env = "PAAS_BROKER_USERNAME", default_value = "platform")]
    pub username: String,
    #[arg(long, env = "PAAS_BROKER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// The platform whose workloads run the Redis servers.
    #[arg(long, env = "PAAS_PLATFORM_URL")]
    pub platform_url: String,
    #[arg(long, env = "PAAS_PLATFORM_USERNAME")]
    pub platform_username: String,
    #[arg(long, env = "PAAS_PLATFORM_PASSWORD", hide_env_values = true)]
    pub platform_password: String,
    #[arg(long, env = "PAAS_PLATFORM_TENANT", default_value = "system")]
    pub tenant: String,
    #[arg(long, env = "PAAS_PLATFORM_ENVIRONMENT", default_value = "services")]
    pub environment: String,
    /// Held while the broker runs; a second broker for the same file exits at once.
    #[arg(long)]
    pub lock_file: Option<PathBuf>,
}

/// What a broker binary is.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The broker's name in the platform's catalog (`cache`).
    pub name: &'static str,
    /// Its executable (`paas-cache-broker`).
    pub binary: &'static str,
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
}

/// A broker binary's whole `main`: reads the command line ([`BrokerArgs`]; `--help`
/// and `--version` answered), then [`run`]s.
pub async fn main(
    program: Program,
    catalog: osb::Catalog,
    make: impl FnOnce(PlatformClient, &Path) -> Arc<dyn Backend>,
) -> std::io::Result<()> {
    use clap::{Args as _, FromArgMatches as _};
    let command = BrokerArgs::augment_args(
        clap::Command::new(program.binary)
            .version(program.version)
            .about(program.about),
    );
    let args = BrokerArgs::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    run(program.name, program.version, args, catalog, make).await
}

/// Logs, takes the lock (a second broker for the same lock exits at once), and serves
/// `catalog` with the backend `make` builds from the platform client and the broker's
/// state directory, until the process is asked to stop.
pub async fn run(
    name: &str,
    version: &str,
    args: BrokerArgs,
    catalog: osb::Catalog,
    make: impl FnOnce(PlatformClient, &Path) -> Arc<dyn Backend>,
) -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _lock = match &args.lock_file {
        Some(path) => match crate::lock::hold(path)? {
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
    let backend = make(platform, &args.state_dir);
    let config = BrokerConfig {
        catalog,
        username: args.username,
        password: args.password,
    };
    tracing::info!(listen = %args.listen, version, "{name} broker serving");
    crate::serve(config, backend, &args.state_dir, args.listen).await
}
