//! A PostgreSQL of the platform's own for `paas up` on a machine with no database:
//! initialized once in a data directory that persists across restarts, started with
//! the system's binaries, reachable only through a Unix socket in that directory.
//!
//! # Guarantees
//! - No connection without a password: every role authenticates with SCRAM, over the
//!   socket as over TCP (which it does not listen on anyway).
//! - The platform connects as `paas_app`, which owns the platform's database and its
//!   schema but is not a superuser; the superuser's password is used only here, to
//!   create that role and database.
//! - Both passwords are generated once and kept in files only the platform's user can
//!   read, never printed or logged.
//! - A cluster made by an earlier release with passwordless (`trust`) access is moved
//!   to passwords, and its database to `paas_app`, at the next start.
//!
//! PostgreSQL refuses to run as root, so when the platform runs as root the server
//! runs as the `postgres` system user (which Debian's package creates); only the
//! cluster's own directory belongs to that user.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

/// The superuser the platform's own cluster is initialized with.
const SUPERUSER: &str = "paas";
/// The role the platform connects as.
const APP_ROLE: &str = "paas_app";
/// The socket's port number (the cluster listens on no TCP port).
const PORT: u16 = 5432;

const HBA: &str = "# Written by paas: every connection authenticates with a password.\n\
local   all   all                 scram-sha-256\n\
host    all   all   127.0.0.1/32  scram-sha-256\n\
host    all   all   ::1/128       scram-sha-256\n";

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

    /// The cluster in `data_dir`, if one was ever initialized there.
    pub fn existing(data_dir: &Path) -> Option<Self> {
        let data_dir = data_dir.canonicalize().ok()?;
        data_dir.join("postgres/PG_VERSION").exists().then(|| Self {
            bin: Self::find_binaries().unwrap_or_default(),
            data_dir,
            run_as_postgres: running_as_root(),
        })
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
        let superuser_password = pg.password("postgres-superuser.password")?;
        if !cluster.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&cluster)?;
            pg.hand_to_postgres(&cluster).await?;
            tracing::info!(dir = %cluster.display(), "initializing the platform's PostgreSQL cluster");
            // initdb reads the superuser's password from a file the postgres user can
            // read; it exists only for the moment initdb runs.
            let pwfile = cluster.with_file_name("postgres-initdb.pw");
            std::fs::write(&pwfile, &superuser_password)?;
            std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))?;
            pg.hand_to_postgres(&pwfile).await?;
            let init = pg
                .run(
                    "initdb",
                    &[
                        "-D",
                        path_str(&cluster)?,
                        "-U",
                        SUPERUSER,
                        "--auth=scram-sha-256",
                        &format!("--pwfile={}", path_str(&pwfile)?),
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ],
                    None,
                )
                .await;
            let _ = std::fs::remove_file(&pwfile);
            init.context("initdb failed")?;
        }
        let trusting = std::fs::read_to_string(cluster.join("pg_hba.conf"))
            .map(|hba| {
                hba.lines()
                    .any(|l| !l.trim_start().starts_with('#') && l.contains("trust"))
            })
            .unwrap_or(false);
        if pg
            .run("pg_ctl", &["-D", path_str(&cluster)?, "status"], None)
            .await
            .is_ok()
        {
            tracing::info!("adopting the platform's PostgreSQL, which is already running");
        } else {
            let options = format!(
                "-k {} -p {PORT} -c listen_addresses=''",
                path_str(&cluster)?
            );
            let log = cluster.join("server.log");
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
                None,
            )
            .await
            .with_context(|| format!("PostgreSQL did not start; see {}", log.display()))?;
        }
        if trusting {
            pg.require_passwords(&superuser_password).await?;
        }
        Ok(pg)
    }

    /// Moves a cluster an earlier release made with `trust` access to passwords.
    async fn require_passwords(&self, superuser_password: &str) -> anyhow::Result<()> {
        tracing::info!(
            "the platform's PostgreSQL accepted connections without a password; requiring passwords from now on"
        );
        self.psql(
            &[
                "-c",
                &format!("ALTER ROLE \"{SUPERUSER}\" PASSWORD '{superuser_password}'"),
            ],
            None,
            "postgres",
        )
        .await?;
        let hba = self.cluster_dir().join("pg_hba.conf");
        let staged = self.cluster_dir().join("pg_hba.conf.new");
        std::fs::write(&staged, HBA)?;
        self.hand_to_postgres(&staged).await?;
        std::fs::rename(&staged, &hba)?;
        self.run(
            "pg_ctl",
            &["-D", path_str(&self.cluster_dir())?, "reload"],
            None,
        )
        .await?;
        Ok(())
    }

    fn cluster_dir(&self) -> PathBuf {
        self.data_dir.join("postgres")
    }

    /// A password kept in `name` under the data directory, made on first use.
    fn password(&self, name: &str) -> anyhow::Result<String> {
        let path = self.data_dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        // Letters and digits only: nothing to quote in SQL or a URL.
        let password = {
            use rand::RngCore;
            let mut bytes = [0_u8; 24];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        std::io::Write::write_all(&mut file, password.as_bytes())?;
        Ok(password)
    }

    /// The URL of the platform's database in this cluster, as `paas_app`, making the
    /// role and the database (or handing an earlier release's database to the role)
    /// when needed.
    pub async fn database_url(&self, database: &str) -> anyhow::Result<String> {
        let socket = self.cluster_dir();
        let socket = path_str(&socket)?;
        let superuser = self.password("postgres-superuser.password")?;
        let app = self.password("postgres-app.password")?;
        let query = |sql: String| {
            let superuser = superuser.clone();
            async move {
                self.psql(&["-tAc", &sql], Some(&superuser), "postgres")
                    .await
            }
        };
        let role = query(format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}'"
        ))
        .await?;
        let verb = if role.trim() == "1" {
            "ALTER"
        } else {
            "CREATE"
        };
        query(format!(
            "{verb} ROLE \"{APP_ROLE}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{app}'"
        ))
        .await?;
        let exists = query(format!(
            "SELECT 1 FROM pg_database WHERE datname = '{database}'"
        ))
        .await?;
        if exists.trim() == "1" {
            query(format!(
                "ALTER DATABASE \"{database}\" OWNER TO \"{APP_ROLE}\""
            ))
            .await?;
            // What an earlier release made as the superuser becomes the role's.
            self.psql(&["-tAc", &hand_over_objects()], Some(&superuser), database)
                .await?;
        } else {
            query(format!(
                "CREATE DATABASE \"{database}\" OWNER \"{APP_ROLE}\""
            ))
            .await?;
        }
        query(format!("REVOKE ALL ON DATABASE \"{database}\" FROM PUBLIC")).await?;
        Ok(format!(
            "postgres://{APP_ROLE}:{app}@localhost:{PORT}/{database}?host={}",
            encode_path(socket)
        ))
    }

    async fn psql(
        &self,
        args: &[&str],
        password: Option<&str>,
        database: &str,
    ) -> anyhow::Result<String> {
        let socket = self.cluster_dir();
        let mut full = vec![
            "-h",
            path_str(&socket)?,
            "-p",
            "5432",
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
        ];
        full.extend_from_slice(args);
        self.run("psql", &full, password).await
    }

    /// Whether the cluster runs now.
    pub async fn running(&self) -> bool {
        match path_str(&self.cluster_dir()) {
            Ok(cluster) => self
                .run("pg_ctl", &["-D", cluster, "status"], None)
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Stops the cluster (fast shutdown: sessions are ended, committed data is safe).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let cluster = self.cluster_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&cluster)?, "-m", "fast", "-w", "stop"],
            None,
        )
        .await
        .map(|_| ())
    }

    async fn hand_to_postgres(&self, path: &Path) -> anyhow::Result<()> {
        if !self.run_as_postgres {
            return Ok(());
        }
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .await?;
        if !status.success() {
            bail!(
                "could not give {} to the postgres user (does the user exist?)",
                path.display()
            );
        }
        Ok(())
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        password: Option<&str>,
    ) -> anyhow::Result<String> {
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
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
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

/// SQL that gives `paas_app` the tables, views and functions of the `public` schema
/// (the sequences of identity and serial columns follow their tables).
fn hand_over_objects() -> String {
    format!(
        "DO $$ DECLARE r record; BEGIN
           FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
                      AND pg_get_userbyid(c.relowner) <> '{APP_ROLE}' LOOP
             EXECUTE format('ALTER %s %s OWNER TO {APP_ROLE}',
               CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, r.name);
           END LOOP;
           FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p
                    JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> '{APP_ROLE}' LOOP
             EXECUTE format('ALTER FUNCTION %s OWNER TO {APP_ROLE}', r.name);
           END LOOP;
         END $$"
    )
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
