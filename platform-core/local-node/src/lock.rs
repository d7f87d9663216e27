//! Single-instance locks for agents and the router: a process holds an exclusive
//! `flock` on its lock file for as long as it lives, with its pid written inside. A
//! second process for the same node finds the lock taken and leaves the running one in
//! charge, so a restarted control plane adopts what runs instead of duplicating it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped (or when the process dies), unless a copy of
/// its descriptor was handed to another process ([`LockGuard::descriptor`]), which
/// then holds it too.
#[derive(Debug)]
pub struct LockGuard {
    lock: Option<Flock<File>>,
    /// Set once a successor holds a copy: dropping must then not unlock (an unlock
    /// would release the successor's lock too; closing the descriptor does not).
    handed_over: std::sync::atomic::AtomicBool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take()
            && self.handed_over.load(std::sync::atomic::Ordering::Relaxed)
        {
            // The descriptor is closed at exit without an unlock.
            std::mem::forget(lock);
        }
    }
}

impl LockGuard {
    fn held(lock: Flock<File>) -> Self {
        Self {
            lock: Some(lock),
            handed_over: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the lock as held by a successor from now on.
    pub fn handed_over(&self) {
        self.handed_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A copy of the lock's descriptor, to hand to a successor: the lock stays held as
    /// long as either process has it.
    pub fn descriptor(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match &self.lock {
            Some(lock) => lock.as_fd().try_clone_to_owned(),
            None => Err(std::io::Error::other("the lock is gone")),
        }
    }

    /// Takes over a lock a predecessor handed over, writing this process's pid in it.
    pub fn take_over(descriptor: std::os::fd::OwnedFd) -> std::io::Result<Self> {
        let file = File::from(descriptor);
        // Locking again through the same open file is the lock already held.
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| std::io::Error::from(errno))?;
        lock.set_len(0)?;
        lock.seek(SeekFrom::Start(0))?;
        write!(lock, "{}", std::process::id())?;
        lock.flush()?;
        Ok(Self::held(lock))
    }
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
            Ok(Ok(LockGuard::held(lock)))
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
        let _ = std::fs::remove_file(&path);
    }
}
