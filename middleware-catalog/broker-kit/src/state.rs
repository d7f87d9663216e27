//! A backend's own record of one instance beside the kit's registry (what a binding
//! changed on the server, say): a JSON file per instance in the backend's directory,
//! written through a temporary file and a rename, so that a crash leaves the old file
//! or the new one.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::BackendError;

fn path(dir: &Path, instance_id: &str) -> PathBuf {
    let id: String = instance_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    dir.join(format!("{id}.json"))
}

/// The instance's record, or the default when there is none yet.
pub fn load<T: DeserializeOwned + Default>(
    dir: &Path,
    instance_id: &str,
) -> Result<T, BackendError> {
    match std::fs::read(path(dir, instance_id)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::new(format!("the instance's record is unreadable: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(BackendError::new(format!(
            "the instance's record is unreadable: {e}"
        ))),
    }
}

/// Replaces the instance's record (mode 0600).
pub fn save<T: Serialize>(dir: &Path, instance_id: &str, record: &T) -> Result<(), BackendError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| {
        BackendError::new(format!("the instance's record cannot be saved: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let target = path(dir, instance_id);
    let tmp = target.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| BackendError::new(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, &target).map_err(fail)
}

/// Removes the instance's record (none is fine).
pub fn remove(dir: &Path, instance_id: &str) -> Result<(), BackendError> {
    match std::fs::remove_file(path(dir, instance_id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError::new(format!(
            "the instance's record stays: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_goes() {
        let dir = std::env::temp_dir().join(format!("broker-state-{}", uuid::Uuid::new_v4()));
        let empty: Vec<String> = load(&dir, "a/../b").unwrap_or_else(|_| vec!["x".into()]);
        assert!(empty.is_empty());
        assert!(save(&dir, "a/../b", &vec!["one".to_owned()]).is_ok());
        // The id cannot leave the directory.
        assert!(dir.join("ab.json").exists());
        let back: Vec<String> = load(&dir, "a/../b").unwrap_or_default();
        assert_eq!(back, ["one"]);
        assert!(remove(&dir, "a/../b").is_ok());
        assert!(remove(&dir, "a/../b").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
