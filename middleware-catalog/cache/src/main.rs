//! `paas-cache-broker`: the cache service's broker. Serves the Open Service Broker API
//! and runs each instance's Redis server as an application of the platform.

use std::sync::Arc;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "paas-cache-broker",
    version,
    about = "The platform's cache (Redis) service broker"
)]
struct Args {
    #[command(flatten)]
    broker: broker_kit::cli::BrokerArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    broker_kit::cli::run(
        "cache",
        env!("CARGO_PKG_VERSION"),
        args.broker,
        cache_broker::catalog(),
        |platform, _| Arc::new(cache_broker::RedisBackend::new(platform)),
    )
    .await
}
