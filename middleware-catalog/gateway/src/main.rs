//! `paas-gateway-broker`: the API gateway service's broker. Serves the Open Service
//! Broker API and runs each instance's HAProxy as an application of the platform.

use std::sync::Arc;

use broker_kit::cli::Program;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    broker_kit::cli::main(
        Program {
            name: "gateway",
            binary: "paas-gateway-broker",
            version: env!("CARGO_PKG_VERSION"),
            about: "The platform's API gateway (HAProxy) service broker",
        },
        gateway_broker::catalog(),
        |platform, state| {
            Arc::new(gateway_broker::GatewayBackend::new(
                platform,
                state.join("backend"),
            ))
        },
    )
    .await
}
