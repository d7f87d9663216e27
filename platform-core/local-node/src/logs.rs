//! An instance's output: stdout and stderr interleaved into one file per instance,
//! bounded in size by rotating into a single `.1` file (so at most twice the limit is
//! kept), and read back by tail.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

/// The longest line kept; longer lines are cut (a runaway line must not grow a file
/// past its bound).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug)]
struct Writer {
    file: Option<File>,
    written: u64,
}

/// The log of one instance. It crosses processes (agent to shim) as its path and
/// limit.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "LogSpec", from = "LogSpec")]
pub struct LogFile {
    path: PathBuf,
    limit: u64,
    writer: Arc<Mutex<Writer>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LogSpec {
    path: PathBuf,
    limit: u64,
}

impl From<LogFile> for LogSpec {
    fn from(log: LogFile) -> Self {
        Self {
            path: log.path,
            limit: log.limit,
        }
    }
}

impl From<LogSpec> for LogFile {
    fn from(spec: LogSpec) -> Self {
        Self::at(spec.path, spec.limit)
    }
}

impl LogFile {
    /// A log at `dir/<name>.log` that rotates past `limit` bytes.
    pub fn new(dir: &Path, name: &str, limit: u64) -> Self {
        Self::at(dir.join(format!("{name}.log")), limit)
    }

    fn at(path: PathBuf, limit: u64) -> Self {
        Self {
            path,
            limit: limit.max(1024),
            writer: Arc::new(Mutex::new(Writer {
                file: None,
                written: 0,
            })),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("log.1")
    }

    /// Copies lines from `source` (a child's stdout or stderr) until it closes.
    pub async fn capture(&self, source: impl AsyncRead + Unpin) {
        let mut reader = tokio::io::BufReader::new(source);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.last() != Some(&b'\n') {
                        line.push(b'\n');
                    }
                    if let Err(e) = self.append(&line).await {
                        tracing::warn!(log = %self.path.display(), error = %e, "could not write instance log");
                        return;
                    }
                }
            }
        }
    }

    /// Appends one line written by the supervisor itself (e.g. why it restarted).
    pub async fn note(&self, text: &str) {
        let line = format!("[paas] {text}\n");
        if let Err(e) = self.append(line.as_bytes()).await {
            tracing::warn!(log = %self.path.display(), error = %e, "could not write instance log");
        }
    }

    async fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        if w.file.is_none() || w.written + bytes.len() as u64 > self.limit {
            if w.file.is_some()
                || tokio::fs::metadata(&self.path)
                    .await
                    .is_ok_and(|m| m.len() > 0)
            {
                w.file = None;
                let _ = tokio::fs::rename(&self.path, self.rotated()).await;
            }
            if let Some(parent) = self.path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            w.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .await?,
            );
            w.written = 0;
        }
        if let Some(file) = w.file.as_mut() {
            file.write_all(bytes).await?;
            file.flush().await?;
        }
        w.written += bytes.len() as u64;
        Ok(())
    }

    /// The last `n` lines, oldest first, across the rotated and the current file.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut lines = VecDeque::with_capacity(n + 1);
        for path in [self.rotated(), self.path.clone()] {
            if let Ok(file) = std::fs::File::open(&path) {
                for line in BufReader::new(file).split(b'\n').map_while(Result::ok) {
                    lines.push_back(String::from_utf8_lossy(&line).into_owned());
                    if lines.len() > n {
                        lines.pop_front();
                    }
                }
            }
        }
        lines.into()
    }

    /// Bytes on disk for this log (both files).
    pub fn size_on_disk(&self) -> u64 {
        [self.rotated(), self.path.clone()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}
