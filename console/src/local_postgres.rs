//! A PostgreSQL of the platform's own for `paas up` on a machine with no database:
//! initialized once in a data directory that persists across restarts, started with
//! the system's binaries, reachable only through a Unix socket in that directory.
//!
//! PostgreSQL refuses to run as root, so when the platform runs as root the server
//! runs as the `postgres` system user (which Debian's package creates).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

/// The superuser the platform's own cluster is initialized with.
const SUPERUSER: &str = "paas";
/// The socket's port number (the cluster listens on no TCP port).
const PORT: u16 = 5432;

#[derive(Debug)]
pub struct LocalPostgres {
    bin: PathBuf,
    data_dir: PathBuf,
    run_as_postgres: bool,
}

impl LocalPostgres {
    /// Finds the server binaries: `PAAS_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/<major>/bin` (Debian's layout), else `pg_ctl` on the PATH.
    pub fn find_binaries() -> anyhow::Result<PathBuf> {
        if let Ok(dir) = std::env::var("PAAS_PG_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((major, bin))
            })
            .collect();
        candidates.sort();
        if let Some((_, bin)) = candidates.pop() {
            return Ok(bin);
        }
        let which = std::process::Command::new("sh")
            .args(["-c", "command -v pg_ctl"])
            .output();
        if let Ok(out) = which {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if let Some(dir) = Path::new(&path).parent().filter(|_| !path.is_empty()) {
                return Ok(dir.to_path_buf());
            }
        }
        bail!(
            "no PostgreSQL server binaries found: install the `postgresql` package, set PAAS_PG_BIN, or set DATABASE_URL"
        )
    }

    /// Initializes the cluster on first use and starts it (or adopts it when a previous
    /// run left it running).
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let bin = Self::find_binaries()?;
        let run_as_postgres = running_as_root();
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let pg = Self {
            bin,
            data_dir,
            run_as_postgres,
        };
        let cluster = pg.cluster_dir();
        if !cluster.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&cluster)?;
            pg.hand_to_postgres(&pg.data_dir).await?;
            tracing::info!(dir = %cluster.display(), "initializing the platform's PostgreSQL cluster");
            pg.run(
                "initdb",
                &[
                    "-D",
                    path_str(&cluster)?,
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
            )
            .await
            .context("initdb failed")?;
        }
        if pg
            .run("pg_ctl", &["-D", path_str(&cluster)?, "status"])
            .await
            .is_ok()
        {
            tracing::info!("adopting the platform's PostgreSQL, which is already running");
        } else {
            let options = format!(
                "-k {} -p {PORT} -c listen_addresses=''",
                path_str(&cluster)?
            );
            let log = pg.data_dir.join("postgres.log");
            pg.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&cluster)?,
                    "-l",
                    path_str(&log)?,
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            .await
            .with_context(|| format!("PostgreSQL did not start; see {}", log.display()))?;
        }
        Ok(pg)
    }

    fn cluster_dir(&self) -> PathBuf {
        self.data_dir.join("postgres")
    }

    /// The URL of the platform's database in this cluster (created when missing).
    pub async fn database_url(&self, database: &str) -> anyhow::Result<String> {
        let socket = self.cluster_dir();
        let socket = path_str(&socket)?;
        let exists = self
            .psql(&[
                "-tAc",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
            ])
            .await?;
        if exists.trim() != "1" {
            self.psql(&["-c", &format!("CREATE DATABASE \"{database}\"")])
                .await?;
        }
        Ok(format!(
            "postgres://{SUPERUSER}@localhost:{PORT}/{database}?host={}",
            encode_path(socket)
        ))
    }

    async fn psql(&self, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.cluster_dir();
        let mut full = vec![
            "-h",
            path_str(&socket)?,
            "-p",
            "5432",
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ];
        full.extend_from_slice(args);
        self.run("psql", &full).await
    }

    /// Stops the cluster (fast shutdown: sessions are ended, committed data is safe).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let cluster = self.cluster_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&cluster)?, "-m", "fast", "-w", "stop"],
        )
        .await
        .map(|_| ())
    }

    async fn hand_to_postgres(&self, dir: &Path) -> anyhow::Result<()> {
        if !self.run_as_postgres {
            return Ok(());
        }
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .await?;
        if !status.success() {
            bail!(
                "could not give {} to the postgres user (does the user exist?)",
                dir.display()
            );
        }
        Ok(())
    }

    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let exe = self.bin.join(program);
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from(program)
        };
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let output = command
            .args(args)
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", exe.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            bail!(
                "{program} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        }
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))
}

fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
