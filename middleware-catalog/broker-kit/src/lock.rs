//! The single-instance lock a broker holds while it lives (an exclusive `flock` on a
//! file with its pid inside), so that the supervisor of `paas up` adopts a running
//! broker instead of starting a second one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// A held lock, released when the process ends.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Flock<File>);

/// Takes the lock at `path`; `Ok(None)` when another process holds it.
pub fn hold(path: &Path) -> std::io::Result<Option<Held>> {
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
            Ok(Some(Held(lock)))
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            tracing::info!(holder = pid.trim(), "another broker process holds the lock");
            Ok(None)
        }
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}
