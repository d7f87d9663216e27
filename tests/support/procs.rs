//! What really runs, read from `/proc` rather than from the platform's own view.

/// A live process (zombies are not counted: they run nothing).
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub uid: u32,
    pub cmdline: String,
}

/// Every live process.
pub fn all() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
            if state.trim_start().starts_with('Z') {
                return None;
            }
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some(Proc { pid, uid, cmdline })
        })
        .collect()
}

/// Live processes whose command line mentions `needle`, sandboxes excluded (a
/// bubblewrap leader repeats its instance's command line).
pub fn mentioning(needle: &str) -> Vec<Proc> {
    all()
        .into_iter()
        .filter(|p| p.cmdline.contains(needle) && !p.cmdline.starts_with("/usr/bin/bwrap"))
        .filter(|p| !p.cmdline.starts_with("/usr/bin/setpriv"))
        .collect()
}

/// How many live processes mention `needle` and work in `dir` (an instance works in a
/// directory of its platform's data directory): those of one platform among several
/// that run at once.
pub fn count_in(needle: &str, dir: &std::path::Path) -> usize {
    cwds_in(needle, dir).len()
}

/// The working directories of the live processes that mention `needle` and work in
/// `dir`, one per process.
pub fn cwds_in(needle: &str, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    mentioning(needle)
        .iter()
        .filter_map(|p| std::fs::read_link(format!("/proc/{}/cwd", p.pid)).ok())
        .filter(|cwd| cwd.starts_with(dir))
        .collect()
}

/// How many live processes mention `needle`.
pub fn count(needle: &str) -> usize {
    mentioning(needle).len()
}

/// Sends `signal` to the one live process that mentions `needle`; panics when there
/// is not exactly one.
pub fn signal_the_one(needle: &str, signal: nix::sys::signal::Signal) -> Proc {
    let found = mentioning(needle);
    assert_eq!(
        found.len(),
        1,
        "exactly one process with {needle}: {found:#?}"
    );
    let p = found[0].clone();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), signal);
    p
}
