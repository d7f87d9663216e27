//! CPU and memory ceilings for instances through Linux control groups, where the
//! node lets the agent create them: cgroup v2 (`memory.max`, `cpu.max`) or the v1
//! `memory` and `cpu` controllers (`memory.limit_in_bytes`, `cpu.cfs_quota_us`).
//! Where neither is writable, usage is only measured and reported (see `usage`).
//!
//! # Guarantees
//! - Each confined instance gets its own group under the agent's group, named after
//!   the platform's data (two platforms on one host never share a group), the node
//!   and the instance; the group is removed when the instance ends.
//!
//! # Known gaps
//! - The process is moved into its group right after it is spawned (no `unsafe`
//!   pre-exec hook), so a child it forks in its first microseconds stays outside.

use std::path::{Path, PathBuf};

/// The ceilings to apply; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ceilings {
    pub cpu_millis: Option<u32>,
    pub memory_mib: Option<u32>,
}

impl Ceilings {
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_mib.is_none()
    }
}

/// Which control-group interface the node offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Cgroups {
    /// The unified hierarchy with `memory` and `cpu` delegated to our group.
    V2 { base: PathBuf },
    /// Separate v1 hierarchies; either may be missing.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
}

/// An instance's groups, removed by [`Confinement::release`].
#[derive(Debug, Default)]
pub struct Confinement {
    dirs: Vec<PathBuf>,
}

impl Confinement {
    /// Removes the instance's groups (their processes must be gone).
    pub fn release(self) {
        for dir in self.dirs {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

impl Cgroups {
    /// Finds a writable interface, creating the agent's group `leaf` under its own.
    /// `None` when the node offers none (limits are then measured, not enforced).
    pub fn detect(leaf: &str) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let v2_root = Path::new("/sys/fs/cgroup");
        if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
            let base = v2_root.join(path.trim_start_matches('/')).join(leaf);
            let controllers =
                std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.contains("memory")
                && std::fs::create_dir_all(&base).is_ok()
                && std::fs::write(base.join("cgroup.subtree_control"), "+memory +cpu").is_ok()
            {
                return Some(Self::V2 { base });
            }
        }
        let v1 = |controller: &str| -> Option<PathBuf> {
            let path = own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names.split(',').any(|n| n == controller).then_some(path)
            })?;
            let mount = Path::new("/sys/fs/cgroup").join(controller);
            let base = mount.join(path.trim_start_matches('/')).join(leaf);
            std::fs::create_dir_all(&base).ok()?;
            Some(base)
        };
        let (memory, cpu) = (v1("memory"), v1("cpu"));
        (memory.is_some() || cpu.is_some()).then_some(Self::V1 { memory, cpu })
    }

    /// Creates the instance's group(s), sets the ceilings and moves `pid` in.
    pub fn confine(&self, instance: &str, pid: u32, c: Ceilings) -> Result<Confinement, String> {
        let mut confinement = Confinement::default();
        let write = |dir: &Path, file: &str, value: String| {
            std::fs::write(dir.join(file), &value)
                .map_err(|e| format!("cannot write {value} to {}: {e}", dir.join(file).display()))
        };
        let mut enter = |base: &Path| -> Result<PathBuf, String> {
            let dir = base.join(instance);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            confinement.dirs.push(dir.clone());
            Ok(dir)
        };
        match self {
            Self::V2 { base } => {
                let dir = enter(base)?;
                if let Some(mib) = c.memory_mib {
                    write(&dir, "memory.max", (u64::from(mib) << 20).to_string())?;
                    let _ = write(&dir, "memory.swap.max", "0".into());
                }
                if let Some(millis) = c.cpu_millis {
                    write(
                        &dir,
                        "cpu.max",
                        format!("{} 100000", u64::from(millis) * 100),
                    )?;
                }
                write(&dir, "cgroup.procs", pid.to_string())?;
            }
            Self::V1 { memory, cpu } => {
                if let (Some(base), Some(mib)) = (memory, c.memory_mib) {
                    let dir = enter(base)?;
                    let bytes = (u64::from(mib) << 20).to_string();
                    write(&dir, "memory.limit_in_bytes", bytes.clone())?;
                    // Without swap accounting this file is absent; the limit still holds.
                    let _ = write(&dir, "memory.memsw.limit_in_bytes", bytes);
                    write(&dir, "cgroup.procs", pid.to_string())?;
                }
                if let (Some(base), Some(millis)) = (cpu, c.cpu_millis) {
                    let dir = enter(base)?;
                    write(&dir, "cpu.cfs_period_us", "100000".into())?;
                    write(
                        &dir,
                        "cpu.cfs_quota_us",
                        (u64::from(millis) * 100).to_string(),
                    )?;
                    write(&dir, "cgroup.procs", pid.to_string())?;
                }
            }
        }
        Ok(confinement)
    }
}
