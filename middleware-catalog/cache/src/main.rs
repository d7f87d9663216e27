//! `paas-cache-broker`: the cache service's broker. Serves the Open Service Broker API
//! and runs each instance's Redis server as an application of the platform.

use std::sync::Arc;

use broker_kit::cli::Program;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    broker_kit::cli::main(
        Program {
            name: "cache",
            binary: "paas-cache-broker",
            version: env!("CARGO_PKG_VERSION"),
            about: "The platform's cache (Redis) service broker",
        },
        cache_broker::catalog(),
        |platform, _| Arc::new(cache_broker::RedisBackend::new(platform)),
    )
    .await
}
