//! What the broker made: instances and bindings, kept in memory and written to one
//! JSON file (through a temporary file and a rename, so a crash leaves the old file or
//! the new one, never half of one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where an instance's current operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Creating,
    Ready,
    Updating,
    Deleting,
    /// The last operation failed; `description` says why.
    Failed,
    /// Deprovisioned; kept so that a poll of the removal is answered 410.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// What the platform said about where the instance belongs.
    #[serde(default)]
    pub context: Map<String, Value>,
    pub phase: Phase,
    /// The last operation's id, as handed to the platform.
    pub operation: String,
    /// Which kind of operation it is: `provision`, `update` or `deprovision`.
    pub operation_kind: String,
    #[serde(default)]
    pub description: Option<String>,
    /// What the backend recorded when it made the instance.
    #[serde(default)]
    pub facts: Map<String, Value>,
    /// Whether an update that failed left the instance usable.
    #[serde(default = "yes")]
    pub usable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub id: String,
    pub instance_id: String,
    #[serde(default)]
    pub app_guid: Option<String>,
    /// Where the bound application serves HTTP, when the platform said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub credentials: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Contents {
    #[serde(default)]
    instances: BTreeMap<String, InstanceRecord>,
    #[serde(default)]
    bindings: BTreeMap<String, BindingRecord>,
}

/// The registry and the file it lives in.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    contents: Contents,
}

impl Registry {
    /// Opens (or starts) the registry in `dir`. Operations a previous process left
    /// running are over: they failed, and the platform will clean up.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("registry.json");
        let mut contents: Contents = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(e),
        };
        for instance in contents.instances.values_mut() {
            if matches!(
                instance.phase,
                Phase::Creating | Phase::Updating | Phase::Deleting
            ) {
                instance.phase = Phase::Failed;
                instance.description = Some("the broker restarted during the operation".into());
            }
        }
        let registry = Self { path, contents };
        registry.save()?;
        Ok(registry)
    }

    fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.contents)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // It holds the servers' administrator credentials.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }

    pub fn instance(&self, id: &str) -> Option<&InstanceRecord> {
        self.contents.instances.get(id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &InstanceRecord> {
        self.contents.instances.values()
    }

    /// Stores an instance (new or changed).
    pub fn put_instance(&mut self, record: InstanceRecord) -> std::io::Result<()> {
        self.contents.instances.insert(record.id.clone(), record);
        self.save()
    }

    /// Marks an instance removed (its bindings go with it).
    pub fn remove_instance(&mut self, id: &str) -> std::io::Result<()> {
        if let Some(instance) = self.contents.instances.get_mut(id) {
            instance.phase = Phase::Gone;
            instance.facts = Map::new();
        }
        self.contents.bindings.retain(|_, b| b.instance_id != id);
        self.save()
    }

    pub fn binding(&self, id: &str) -> Option<&BindingRecord> {
        self.contents.bindings.get(id)
    }

    pub fn bindings_of(&self, instance: &str) -> Vec<BindingRecord> {
        self.contents
            .bindings
            .values()
            .filter(|b| b.instance_id == instance)
            .cloned()
            .collect()
    }

    pub fn put_binding(&mut self, record: BindingRecord) -> std::io::Result<()> {
        self.contents.bindings.insert(record.id.clone(), record);
        self.save()
    }

    pub fn remove_binding(&mut self, id: &str) -> std::io::Result<()> {
        self.contents.bindings.remove(id);
        self.save()
    }
}
