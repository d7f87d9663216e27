//! `paas down`: stops everything a `paas up` runs from a data directory.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory of the platform to stop (as given to `paas up`).
    #[arg(long, env = "PAAS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(crate::up::default_data_dir);
    local_host::stop::everything(&data_dir).await;
    Ok(())
}
