//! Uploaded package archives: the local runtime's other artifact besides a command
//! on the node. A package is a tar archive, gzipped or not, named by the SHA-256 of its
//! bytes (`sha256:<hex>`), so a revision that names one always runs the same files.
//!
//! # Guarantees
//! - An archive is read in full before it is accepted: every entry must be a regular
//!   file, a directory or a symlink that stays inside the archive, with a relative path
//!   and no `..`; anything else is refused with the entry's name.
//! - Unpacking re-checks the same rules, so a corrupted copy cannot escape its
//!   directory either.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// The largest archive accepted (compressed).
pub const MAX_ARCHIVE_BYTES: usize = 64 * 1024 * 1024;
/// The most an archive may unpack to, against decompression bombs.
pub const MAX_UNPACKED_BYTES: u64 = 512 * 1024 * 1024;
/// The most entries an archive may hold.
pub const MAX_ENTRIES: usize = 20_000;
/// The most components a path in an archive may have: unpacking a path costs work per
/// component, and a 136-byte archive holding one file 2,000 directories deep cost the
/// agent a minute of CPU at every start.
pub const MAX_PATH_DEPTH: usize = 32;
/// The longest path in an archive, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The longest an archive may take to read or unpack, whatever else it holds: the
/// bounds above limit each kind of cost, this one limits their sum.
pub const MAX_UNPACK_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// `sha256:<64 lowercase hex digits>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `s` has the shape of a package digest.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What an accepted archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub compressed: bool,
    pub files: u32,
    pub unpacked_bytes: u64,
}

/// Why an archive was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArchive(pub String);

fn reader(bytes: &[u8], until: Instant) -> (bool, Box<dyn Read + '_>) {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::GzDecoder::new(bytes);
        (true, Box::new(Deadline { inner: gz, until }))
    } else {
        (
            false,
            Box::new(Deadline {
                inner: bytes,
                until,
            }),
        )
    }
}

/// A reader that fails once its deadline has passed, so that no archive, however it
/// is built, holds a thread for longer than [`MAX_UNPACK_TIME`].
struct Deadline<R> {
    inner: R,
    until: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.until {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                too_slow(),
            ));
        }
        self.inner.read(buf)
    }
}

fn too_slow() -> String {
    format!(
        "takes longer than {} s to unpack",
        MAX_UNPACK_TIME.as_secs()
    )
}

/// Reads the whole archive and checks every entry.
pub fn inspect(bytes: &[u8]) -> Result<Summary, InvalidArchive> {
    walk(bytes, None, Instant::now() + MAX_UNPACK_TIME)
}

/// Unpacks the archive into `dest` (created if needed); files already there with the
/// same names are replaced, others are kept.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<Summary, InvalidArchive> {
    std::fs::create_dir_all(dest)
        .map_err(|e| InvalidArchive(format!("cannot create {}: {e}", dest.display())))?;
    walk(bytes, Some(dest), Instant::now() + MAX_UNPACK_TIME)
}

fn walk(bytes: &[u8], dest: Option<&Path>, until: Instant) -> Result<Summary, InvalidArchive> {
    if bytes.is_empty() {
        return Err(InvalidArchive("the archive is empty".into()));
    }
    let (compressed, input) = reader(bytes, until);
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let not_tar = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return InvalidArchive(too_slow());
        }
        InvalidArchive(format!(
            "not a tar or tar.gz archive ({})",
            if compressed {
                format!("gzip stream: {e}")
            } else {
                e.to_string()
            }
        ))
    };
    let mut summary = Summary {
        compressed,
        files: 0,
        unpacked_bytes: 0,
    };
    let mut entries = 0_usize;
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        entries += 1;
        if Instant::now() > until {
            return Err(InvalidArchive(too_slow()));
        }
        if entries > MAX_ENTRIES {
            return Err(InvalidArchive(format!("more than {MAX_ENTRIES} entries")));
        }
        let path: PathBuf = entry.path().map_err(not_tar)?.into_owned();
        let shown = path.display().to_string();
        if let Err(why) = within_bounds(&path) {
            return Err(InvalidArchive(format!(
                "entry '{}…' {why}",
                shown.chars().take(80).collect::<String>()
            )));
        }
        if !is_contained(&path) {
            return Err(InvalidArchive(format!(
                "entry '{shown}' is not a relative path inside the archive"
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(not_tar)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let resolved = path.parent().unwrap_or(Path::new("")).join(&target);
            if within_bounds(&target).is_err() || within_bounds(&resolved).is_err() {
                return Err(InvalidArchive(format!(
                    "link '{shown}' points too deep or too far"
                )));
            }
            if target.is_absolute() || !is_contained(&resolved) {
                return Err(InvalidArchive(format!(
                    "link '{shown}' points outside the archive"
                )));
            }
        } else if !(kind.is_file() || kind.is_dir() || kind.is_pax_global_extensions()) {
            return Err(InvalidArchive(format!(
                "entry '{shown}' is neither a file, a directory nor a link"
            )));
        }
        if kind.is_file() {
            summary.files += 1;
            summary.unpacked_bytes += entry.size();
            if summary.unpacked_bytes > MAX_UNPACKED_BYTES {
                return Err(InvalidArchive(format!(
                    "unpacks to more than {} MiB",
                    MAX_UNPACKED_BYTES / 1024 / 1024
                )));
            }
        }
        match dest {
            Some(dest) => {
                let inside = entry
                    .unpack_in(dest)
                    .map_err(|e| InvalidArchive(format!("cannot unpack '{shown}': {e}")))?;
                if !inside {
                    return Err(InvalidArchive(format!(
                        "entry '{shown}' would land outside the directory"
                    )));
                }
            }
            // Reading the data proves the stream is whole (a truncated archive fails).
            None => {
                std::io::copy(&mut entry, &mut std::io::sink()).map_err(not_tar)?;
            }
        }
    }
    if entries == 0 {
        return Err(InvalidArchive(
            "not a tar or tar.gz archive (no entries)".into(),
        ));
    }
    Ok(summary)
}

/// Refuses a path deeper or longer than an archive may hold, saying which.
fn within_bounds(path: &Path) -> Result<(), String> {
    if path.as_os_str().len() > MAX_PATH_BYTES {
        return Err(format!("is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.components().count() > MAX_PATH_DEPTH {
        return Err(format!("is more than {MAX_PATH_DEPTH} directories deep"));
    }
    Ok(())
}

/// A relative path that never climbs above its root.
fn is_contained(path: &Path) -> bool {
    let mut depth = 0_i32;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_entry_type(tar::EntryType::Regular);
            // Written raw so that hostile paths can be built too.
            let name = header.as_old_mut().name.as_mut_slice();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder
                .append(&header, *data)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let tar = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));
        if !gzip {
            return tar;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap_or_else(|e| panic!("{e}"));
        gz.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_tar_gz_is_inspected_and_unpacked() {
        let bytes = archive(
            &[("bin/run.sh", b"#!/bin/sh\necho hi\n"), ("README", b"x")],
            true,
        );
        let summary = inspect(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((summary.compressed, summary.files), (true, 2));
        let dir = std::env::temp_dir().join(format!("pkg-test-{}", uuid::Uuid::new_v4()));
        unpack(&bytes, &dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(dir.join("bin/run.sh"))
                .ok()
                .as_deref(),
            Some("#!/bin/sh\necho hi\n")
        );
        let _ = std::fs::remove_dir_all(dir);
        assert!(inspect(&archive(&[("a", b"1")], false)).is_ok());
    }

    #[test]
    fn an_archive_that_takes_too_long_is_refused_whatever_it_holds() {
        let past = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        for compressed in [true, false] {
            let bytes = archive(&[("a", b"1")], compressed);
            let got = walk(&bytes, None, past);
            assert!(got.as_ref().is_err_and(|e| e.0 == too_slow()), "{got:?}");
            assert!(walk(&bytes, None, Instant::now() + MAX_UNPACK_TIME).is_ok());
        }
    }

    #[test]
    fn what_is_not_a_safe_archive_is_refused_with_a_reason() {
        let refused = |bytes: &[u8], why: &str| {
            let got = inspect(bytes);
            assert!(
                got.as_ref().is_err_and(|e| e.0.contains(why)),
                "{why}: {got:?}"
            );
        };
        refused(b"", "empty");
        refused(b"this is plain text, not an archive at all", "not a tar");
        refused(&[0x1f, 0x8b, 0, 1, 2, 3], "gzip");
        let whole = archive(&[("a", &[7; 4000])], true);
        refused(&whole[..whole.len() / 2], "not a tar");
        refused(
            &archive(&[("../escape", b"x")], false),
            "not a relative path",
        );
        refused(
            &archive(&[("a/../../escape", b"x")], false),
            "not a relative path",
        );
        refused(
            &archive(&[("/etc/passwd", b"x")], false),
            "not a relative path",
        );
        let deep = format!("{}f", "d/".repeat(MAX_PATH_DEPTH));
        refused(&archive(&[(&deep, b"x")], true), "directories deep");
        let fits = format!("{}f", "d/".repeat(MAX_PATH_DEPTH - 1));
        assert!(inspect(&archive(&[(&fits, b"x")], true)).is_ok());
        assert!(within_bounds(Path::new(&"n".repeat(MAX_PATH_BYTES + 1))).is_err());
        assert!(within_bounds(Path::new(&"n".repeat(MAX_PATH_BYTES))).is_ok());
    }

    #[test]
    fn digests_have_one_shape() {
        let d = digest_of(b"abc");
        assert!(is_digest(&d), "{d}");
        assert!(!is_digest("sha256:ABC"));
        assert!(!is_digest("md5:00"));
    }
}
