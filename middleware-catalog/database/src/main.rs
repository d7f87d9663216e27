//! `paas-database-broker`: the database service's broker. Serves the Open Service
//! Broker API and runs each instance's PostgreSQL cluster (or the shared one) as an
//! application of the platform.

use std::sync::Arc;

use broker_kit::cli::Program;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    broker_kit::cli::main(
        Program {
            name: "database",
            binary: "paas-database-broker",
            version: env!("CARGO_PKG_VERSION"),
            about: "The platform's database (PostgreSQL) service broker",
        },
        database_broker::catalog(),
        |platform, state| {
            Arc::new(database_broker::PostgresBackend::new(
                platform,
                state.join("backend"),
            ))
        },
    )
    .await
}
