//! Single-instance locks for agents and the router: a process holds an exclusive
//! `flock` on its lock file for as long as it lives, with its pid written inside. A
//! second process for the same node finds the lock taken and leaves the running one in
//! charge, so a restarted control plane adopts what runs instead of duplicating it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<File>,
}

/// Takes the lock at `path`, or returns the pid of the process holding it.
pub fn acquire(path: &Path) -> std::io::Result<Result<LockGuard, Option<u32>>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.seek(SeekFrom::Start(0))?;
            write!(lock, "{}", std::process::id())?;
            lock.flush()?;
            Ok(Ok(LockGuard { _lock: lock }))
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Err(holder(path))),
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}

/// Whether some process holds the lock at `path` now (a missing file is not held).
pub fn holder_alive(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Taken and released at once: nobody held it.
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The pid written in a lock file, if any.
pub fn holder(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let path = std::env::temp_dir().join(format!("paas-lock-test-{}", std::process::id()));
        let first = acquire(&path).ok().and_then(Result::ok);
        assert!(first.is_some());
        // flock is per open file description, so a second open in the same process
        // conflicts just as another process would.
        let second = acquire(&path).ok().map(|r| r.err());
        assert_eq!(second, Some(Some(Some(std::process::id()))));
        assert!(holder_alive(&path));
        drop(first);
        assert!(!holder_alive(&path));
        assert!(acquire(&path).ok().and_then(Result::ok).is_some());
    }
}
