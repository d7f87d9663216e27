//! Who an instance runs as, and what it can see: the local runtime's tenant isolation.
//!
//! An agent running as root starts every instance as an unprivileged identity of its
//! tenant (`setpriv`: its own uid and gid, no supplementary groups, no capabilities,
//! no new privileges), and, where the node has a working bubblewrap, inside a sandbox:
//! its own user, PID, IPC and UTS namespaces (it sees only its own processes), a
//! read-only view of the system, a private `/tmp`, the platform's data directory
//! hidden, and only its own working directory writable.
//!
//! # Guarantees
//! - An instance never runs as root when the agent is root.
//! - With bubblewrap, the instance's processes die with their supervisor
//!   (`--die-with-parent`), so an instance never outlives the shim that watches it.
//!
//! # Known gaps
//! - The network is shared with the node: an instance can connect to any port on it
//!   (the router, other instances). What guards the platform's own services is their
//!   authentication, not the network. The Kubernetes runtime is the one for hostile
//!   multi-tenancy.
//! - An agent that is not root cannot change identities: instances then run as the
//!   agent's own user, and the agent says so when it starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The identity and view one instance gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub uid: u32,
    pub gid: u32,
    /// `setpriv`, which drops to `uid`/`gid` before anything of the instance runs.
    pub setpriv: PathBuf,
    /// bubblewrap, when the node has one that works.
    pub bwrap: Option<PathBuf>,
    /// Paths the instance must not see (the platform's data directory); its working
    /// directory is mounted back inside.
    pub hide: Vec<PathBuf>,
    /// The sandbox's host name.
    pub hostname: String,
    /// A directory with `passwd` and `group` that name the instance's identity (the
    /// node's own entries plus `app`), mounted over `/etc/passwd` and `/etc/group`:
    /// programs that look their user up (PostgreSQL's `initdb`, say) find one.
    #[serde(default)]
    pub etc: Option<PathBuf>,
}

/// What the node offers, found once when the agent starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Instances run as per-tenant identities, in bubblewrap when `bwrap` is set.
    Identities {
        setpriv: PathBuf,
        bwrap: Option<PathBuf>,
    },
    /// Instances run as the agent's own user; the reason says why.
    None { reason: String },
}

/// The first of `names` found in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

impl Isolation {
    /// Finds what this node can do: root and `setpriv` for identities, and a bubblewrap
    /// that can really make its namespaces as an unprivileged user (tried once).
    pub fn detect() -> Self {
        if !nix::unistd::geteuid().is_root() {
            return Self::None {
                reason: "the agent does not run as root, so instances run as its own user".into(),
            };
        }
        let Some(setpriv) = find_program("setpriv") else {
            return Self::None {
                reason: "setpriv (util-linux) is missing, so instances cannot change identity"
                    .into(),
            };
        };
        let bwrap = find_program("bwrap").filter(|bwrap| {
            let probe = Sandbox {
                uid: 65534,
                gid: 65534,
                setpriv: setpriv.clone(),
                bwrap: Some(bwrap.clone()),
                hide: Vec::new(),
                hostname: "probe".into(),
                etc: None,
            };
            let (program, args) = probe.wrap(Path::new("/bin/true"), &[], Path::new("/"));
            std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        Self::Identities { setpriv, bwrap }
    }

    /// How the node's instances are isolated, for the agent's start-up line.
    pub fn describe(&self) -> String {
        match self {
            Self::Identities {
                bwrap: Some(_), ..
            } => "per-tenant identities in a bubblewrap sandbox (own PID, IPC, UTS and mount namespaces)".into(),
            Self::Identities { bwrap: None, .. } => "per-tenant identities WITHOUT a sandbox: bubblewrap is missing or cannot make namespaces here; instances of one tenant can see each other's processes".into(),
            Self::None { reason } => format!("NO isolation: {reason}"),
        }
    }

    /// The sandbox of an instance of the tenant with this identity.
    pub fn sandbox(&self, uid: u32, hide: &[PathBuf], hostname: &str) -> Option<Sandbox> {
        match self {
            Self::Identities { setpriv, bwrap } => Some(Sandbox {
                uid,
                gid: uid,
                setpriv: setpriv.clone(),
                bwrap: bwrap.clone(),
                hide: hide.to_vec(),
                hostname: hostname.to_owned(),
                etc: None,
            }),
            Self::None { .. } => None,
        }
    }
}

/// Writes `dir/passwd` and `dir/group`: the node's entries and one for `uid`/`gid`
/// named `app` (root-owned, readable by all, so that the sandbox can mount them).
pub fn write_identity_files(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let keep = |path: &str, id_field: usize, id: u32| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split(':').nth(id_field) != Some(id.to_string().as_str())
                    && !l.starts_with("app:")
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let passwd = format!(
        "{}app:x:{uid}:{gid}:application:/tmp:/usr/sbin/nologin\n",
        keep("/etc/passwd", 2, uid)
    );
    let group = format!("{}app:x:{gid}:\n", keep("/etc/group", 2, gid));
    for (name, text) in [("passwd", passwd), ("group", group)] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(tmp, path)?;
    }
    Ok(())
}

impl Sandbox {
    /// Whether the instance's first process is the sandbox's (bubblewrap) rather than
    /// the instance's own: signals meant for the instance then skip it, because
    /// bubblewrap dies of SIGTERM and would take the instance down without its grace
    /// period.
    pub fn has_leader(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The program and arguments that run `program args` in this sandbox with
    /// `workdir` as its only writable directory.
    pub fn wrap(
        &self,
        program: &Path,
        args: &[String],
        workdir: &Path,
    ) -> (PathBuf, Vec<OsString>) {
        let mut out: Vec<OsString> = [
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".into(),
            "--no-new-privs".into(),
            "--inh-caps=-all".into(),
            "--bounding-set=-all".into(),
            "--pdeathsig=KILL".into(),
            "--".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        if let Some(bwrap) = &self.bwrap {
            out.push(bwrap.clone().into());
            for flag in [
                "--unshare-user",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
            ] {
                out.push(flag.into());
            }
            for hidden in &self.hide {
                out.push("--tmpfs".into());
                out.push(hidden.clone().into());
            }
            if let Some(etc) = &self.etc {
                for file in ["passwd", "group"] {
                    out.push("--ro-bind".into());
                    out.push(etc.join(file).into());
                    out.push(Path::new("/etc").join(file).into());
                }
            }
            out.push("--bind".into());
            out.push(workdir.into());
            out.push(workdir.into());
            out.push("--chdir".into());
            out.push(workdir.into());
            out.push("--hostname".into());
            out.push(self.hostname.clone().into());
            out.push("--".into());
        }
        out.push(program.into());
        out.extend(args.iter().map(OsString::from));
        (self.setpriv.clone(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_files_name_the_instances_user_beside_the_nodes() {
        let dir = std::env::temp_dir().join(format!("paas-identity-{}", std::process::id()));
        write_identity_files(&dir, 1_234_567, 1_234_567).unwrap_or_else(|e| panic!("{e}"));
        let passwd = std::fs::read_to_string(dir.join("passwd")).unwrap_or_default();
        assert!(passwd.starts_with("root:"), "{passwd}");
        assert!(
            passwd.ends_with("app:x:1234567:1234567:application:/tmp:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        let group = std::fs::read_to_string(dir.join("group")).unwrap_or_default();
        assert!(group.ends_with("app:x:1234567:\n"), "{group}");
        // Written again, the entry is not repeated.
        write_identity_files(&dir, 1_234_567, 1_234_567).unwrap_or_else(|e| panic!("{e}"));
        let again = std::fs::read_to_string(dir.join("passwd")).unwrap_or_default();
        assert_eq!(again.matches("app:x:").count(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_instance_runs_after_the_identity_change_and_inside_the_sandbox() {
        let sandbox = Sandbox {
            uid: 1_000_001,
            gid: 1_000_001,
            setpriv: "/usr/bin/setpriv".into(),
            bwrap: Some("/usr/bin/bwrap".into()),
            hide: vec!["/var/lib/paas".into()],
            hostname: "web-1".into(),
            etc: Some("/var/lib/paas/agents/n1/identities/1000001".into()),
        };
        let (program, args) = sandbox.wrap(
            Path::new("/usr/bin/python3"),
            &["-m".into(), "http.server".into()],
            Path::new("/var/lib/paas/agents/n1/work/acme/dev/web/w1"),
        );
        assert_eq!(program, Path::new("/usr/bin/setpriv"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |s: &str| args.iter().position(|a| a == s).unwrap_or(usize::MAX);
        assert!(args.contains(&"--reuid=1000001".to_owned()));
        assert!(args.contains(&"--clear-groups".to_owned()));
        assert!(at("--no-new-privs") < at("/usr/bin/bwrap"));
        // The data directory is hidden before the working directory is mounted back.
        assert!(at("/var/lib/paas") < at("--bind"));
        assert!(at("--bind") < at("/usr/bin/python3"));
        assert_eq!(args.last().map(String::as_str), Some("http.server"));
        // The identity has a name inside: the node's passwd with the instance's entry.
        assert_eq!(
            args.get(at("/var/lib/paas/agents/n1/identities/1000001/passwd") + 1)
                .map(String::as_str),
            Some("/etc/passwd")
        );

        let plain = Sandbox {
            bwrap: None,
            ..sandbox
        };
        let (_, args) = plain.wrap(Path::new("/bin/sh"), &[], Path::new("/w"));
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args.last().map(String::as_str), Some("/bin/sh"));
        assert!(!args.iter().any(|a| a.contains("bwrap")));
        assert!(!plain.has_leader());
    }
}
