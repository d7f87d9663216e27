//! What a node knows of its machine.

use std::path::PathBuf;

/// The machine's memory in MiB, from `/proc/meminfo` (4096 when it cannot be read).
pub fn machine_memory_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| u32::try_from(kib / 1024).unwrap_or(u32::MAX))
}

/// This executable, for starting shims. After the binary is replaced on disk (an
/// upgrade), the kernel names the running one `... (deleted)`: the new binary at the
/// same path is the one to run.
pub fn own_executable() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}
