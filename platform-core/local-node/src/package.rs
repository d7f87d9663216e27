//! Fetching and unpacking an instance's package archive before its first start.
//!
//! Archives are downloaded from the control plane once per node and kept in a cache
//! named by digest; the bytes are checked against the digest before use.

use std::path::{Path, PathBuf};
use std::time::Duration;

use platform_spec::package;

/// Where an instance's package comes from.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PackageSource {
    /// `sha256:<hex>`.
    pub digest: String,
    /// The control plane's base URL.
    pub control_plane: String,
    /// The file holding the node's credential (read at each download: the agent
    /// renews it when it registers again).
    pub credential_file: PathBuf,
    /// The node's package cache.
    pub cache_dir: PathBuf,
}

impl std::fmt::Debug for PackageSource {
    // Written by hand so that a credential never reaches a log, whatever is added.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageSource")
            .field("digest", &self.digest)
            .field("control_plane", &self.control_plane)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// Why a package could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallError {
    /// Worth retrying: the control plane did not answer, or the transfer was damaged.
    Unavailable(String),
    /// Never going to work: the archive is not a safe archive.
    Invalid(String),
}

impl PackageSource {
    /// Makes the package's files present in `workdir`.
    pub async fn install(
        &self,
        http: &reqwest::Client,
        workdir: &Path,
    ) -> Result<(), InstallError> {
        let bytes = self.fetch(http).await?;
        let dest = workdir.to_owned();
        let digest = self.digest.clone();
        tokio::task::spawn_blocking(move || package::unpack(&bytes, &dest))
            .await
            .map_err(|e| InstallError::Unavailable(e.to_string()))?
            .map(|_| ())
            .map_err(|e| InstallError::Invalid(format!("package {digest} cannot be unpacked: {e}")))
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Vec<u8>, InstallError> {
        let hex = self.digest.trim_start_matches("sha256:");
        let cached = self.cache_dir.join(format!("{hex}.archive"));
        if let Ok(bytes) = tokio::fs::read(&cached).await
            && package::digest_of(&bytes) == self.digest
        {
            return Ok(bytes);
        }
        let url = format!(
            "{}/internal/v1/packages/{}",
            self.control_plane.trim_end_matches('/'),
            self.digest
        );
        let unavailable =
            |e: String| InstallError::Unavailable(format!("package {}: {e}", self.digest));
        let credential = tokio::fs::read_to_string(&self.credential_file)
            .await
            .map_err(|e| unavailable(format!("the node's credential cannot be read: {e}")))?;
        let response = http
            .get(&url)
            .bearer_auth(credential.trim())
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(InstallError::Invalid(format!(
                "package {} does not exist on the control plane",
                self.digest
            )));
        }
        let bytes = response
            .error_for_status()
            .map_err(|e| unavailable(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .to_vec();
        if package::digest_of(&bytes) != self.digest {
            return Err(unavailable(
                "the downloaded bytes do not match the digest".into(),
            ));
        }
        // Written aside and renamed, so a crash never leaves a half file under the name.
        let partial = self
            .cache_dir
            .join(format!("{hex}.partial-{}", std::process::id()));
        let stored = async {
            tokio::fs::create_dir_all(&self.cache_dir).await?;
            tokio::fs::write(&partial, &bytes).await?;
            tokio::fs::rename(&partial, &cached).await
        }
        .await;
        if let Err(e) = stored {
            tracing::warn!(error = %e, "package cache not written; the next start downloads again");
        }
        Ok(bytes)
    }
}
