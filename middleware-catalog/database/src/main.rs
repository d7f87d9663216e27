//! `paas-database-broker`: the database service's broker. Serves the Open Service
//! Broker API and runs each instance's PostgreSQL cluster (or the shared one) as an
//! application of the platform.

use std::sync::Arc;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "paas-database-broker",
    version,
    about = "The platform's database (PostgreSQL) service broker"
)]
struct Args {
    #[command(flatten)]
    broker: broker_kit::cli::BrokerArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    broker_kit::cli::run(
        "database",
        env!("CARGO_PKG_VERSION"),
        args.broker,
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
