//! `paas-queue-broker`: the message-queue service's broker. Serves the Open Service
//! Broker API and runs each instance's NATS server as an application of the platform.

use std::sync::Arc;

use broker_kit::cli::Program;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    broker_kit::cli::main(
        Program {
            name: "queue",
            binary: "paas-queue-broker",
            version: env!("CARGO_PKG_VERSION"),
            about: "The platform's message-queue (NATS with JetStream) service broker",
        },
        queue_broker::catalog(),
        |platform, state| {
            Arc::new(queue_broker::NatsBackend::new(
                platform,
                state.join("backend"),
            ))
        },
    )
    .await
}
