//! The client mode for ops in terminals: `paas login`, `paas releases`, `paas release
//! ACTION ID` and `paas promote`, over the platform's API. The token is kept in the
//! user's config directory (`$XDG_CONFIG_HOME/paas/credentials.json`, else
//! `~/.config/paas/...`), readable by the user alone.
//!
//! Exit codes a script can use: 0 done; 1 the platform refused the request (4xx: not
//! allowed, not found, wrong state, bad input); 2 bad usage; 3 not signed in, or the
//! token is no longer accepted; 4 the platform could not be reached or failed (5xx).

use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How a command ended, as an exit code.
#[derive(Debug)]
pub enum Failure {
    Refused(String),
    NotSignedIn(String),
    Unreachable(String),
    Local(String),
}

impl Failure {
    pub fn code(&self) -> i32 {
        match self {
            Self::Refused(_) => 1,
            Self::NotSignedIn(_) => 3,
            Self::Unreachable(_) | Self::Local(_) => 4,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Refused(m) | Self::NotSignedIn(m) | Self::Unreachable(m) | Self::Local(m) => m,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The platform's address, e.g. https://paas.example.com or http://127.0.0.1:8080.
    #[arg(long, env = "PAAS_URL")]
    url: String,
    #[arg(long)]
    username: String,
    /// Read the password from standard input (one line) instead of asking for it.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReleasesArgs {
    /// Only releases waiting for an approval.
    #[arg(long, conflicts_with = "state")]
    pending: bool,
    /// Only releases in this state (progressing, succeeded, rolled_back, ...).
    #[arg(long)]
    state: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReleaseVerb {
    Show,
    Approve,
    Reject,
    Pause,
    Resume,
    Continue,
    Abort,
    Rollback,
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// What to do.
    #[arg(value_enum)]
    verb: ReleaseVerb,
    /// The release's number (see `paas releases`).
    id: i64,
    /// Why, kept on the release's timeline and in the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The application, by name.
    app: String,
    /// The environment whose running revision to promote.
    #[arg(long)]
    from: String,
    /// The environment promoted into.
    #[arg(long)]
    to: String,
    /// The tenant (needed when you belong to several).
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Serialize, Deserialize)]
struct Credentials {
    url: String,
    username: String,
    token: String,
}

fn credentials_path() -> Result<PathBuf, Failure> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Failure::Local("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    Ok(base.join("paas").join("credentials.json"))
}

fn save(credentials: &Credentials) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let path = credentials_path()?;
    let local = |e: std::io::Error| Failure::Local(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(local)?;
    }
    let text = serde_json::to_vec_pretty(credentials).map_err(|e| Failure::Local(e.to_string()))?;
    // Written beside, then moved over: a reader never sees half a file, and the token
    // is never readable by others, not even for a moment.
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(local)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(local)?;
    file.write_all(&text).map_err(local)?;
    file.sync_all().map_err(local)?;
    std::fs::rename(&partial, &path).map_err(local)?;
    Ok(path)
}

fn load() -> Result<Credentials, Failure> {
    let path = credentials_path()?;
    let text = std::fs::read(&path).map_err(|_| {
        Failure::NotSignedIn("not signed in: run `paas login --url URL --username NAME`".into())
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        Failure::NotSignedIn(format!(
            "{} cannot be read ({e}); sign in again with `paas login`",
            path.display()
        ))
    })
}

/// Reads a password from the terminal without echoing it.
fn ask_password() -> Result<String, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "Password: ");
    let _ = stderr.flush();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    let _ = writeln!(stderr);
    read.map_err(|e| Failure::Local(format!("could not read the password: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn call(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Failure::Local(e.to_string()))?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = http.request(method, &url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value["message"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned);
    let field = value["field"]
        .as_str()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    let said = format!("{}: {message}{field}", status.as_u16());
    Err(match status.as_u16() {
        401 => Failure::NotSignedIn(format!("{said}; sign in again with `paas login`")),
        400..=499 => Failure::Refused(said),
        _ => Failure::Unreachable(said),
    })
}

#[allow(clippy::print_stdout)]
fn print(text: &str) {
    println!("{text}");
}

fn print_json(value: &Value) {
    print(&serde_json::to_string_pretty(value).unwrap_or_default());
}

pub async fn login(args: LoginArgs) -> Result<(), Failure> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure::Local(format!("could not read the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if let Ok(p) = std::env::var("PAAS_PASSWORD") {
        p
    } else {
        ask_password()?
    };
    let answer = call(
        &args.url,
        None,
        reqwest::Method::POST,
        "/api/v1/auth/token",
        Some(json!({"username": args.username, "password": password})),
    )
    .await
    .map_err(|e| match e {
        // A refused login is a refusal, not an expired session.
        Failure::NotSignedIn(m) => {
            Failure::Refused(m.replace("; sign in again with `paas login`", ""))
        }
        other => other,
    })?;
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| Failure::Unreachable("the platform gave no token".into()))?;
    let path = save(&Credentials {
        url: args.url.trim_end_matches('/').to_owned(),
        username: args.username.clone(),
        token: token.to_owned(),
    })?;
    print(&format!(
        "signed in as {} (token kept in {})",
        args.username,
        path.display()
    ));
    Ok(())
}

fn release_line(r: &Value) -> String {
    format!(
        "#{:<5} {:<18} {}/{}/{}  r{} -> r{}  {}  {}{}",
        r["id"].as_i64().unwrap_or_default(),
        r["state"].as_str().unwrap_or(""),
        r["tenant"].as_str().unwrap_or(""),
        r["environment"].as_str().unwrap_or(""),
        r["application"].as_str().unwrap_or(""),
        r["from_revision"],
        r["to_revision"],
        r["cause"].as_str().unwrap_or(""),
        r["requested_by"].as_str().unwrap_or(""),
        r["reason"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!("  ({s})"))
            .unwrap_or_default(),
    )
}

pub async fn releases(args: ReleasesArgs) -> Result<(), Failure> {
    let c = load()?;
    let state = if args.pending {
        Some("pending_approval".to_owned())
    } else {
        args.state
    };
    let path = match &state {
        Some(s) => format!("/api/v1/releases?state={s}"),
        None => "/api/v1/releases".to_owned(),
    };
    let list = call(&c.url, Some(&c.token), reqwest::Method::GET, &path, None).await?;
    match args.output {
        Output::Json => print_json(&list),
        Output::Text => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                print("no releases");
            }
            for r in &items {
                print(&release_line(r));
            }
        }
    }
    Ok(())
}

pub async fn release(args: ReleaseArgs) -> Result<(), Failure> {
    let c = load()?;
    let found = call(
        &c.url,
        Some(&c.token),
        reqwest::Method::GET,
        &format!("/api/v1/releases/{}", args.id),
        None,
    )
    .await?;
    let detail = if args.verb == ReleaseVerb::Show {
        found
    } else {
        let verb = match args.verb {
            ReleaseVerb::Show => "show",
            ReleaseVerb::Approve => "approve",
            ReleaseVerb::Reject => "reject",
            ReleaseVerb::Pause => "pause",
            ReleaseVerb::Resume => "resume",
            ReleaseVerb::Continue => "continue",
            ReleaseVerb::Abort => "abort",
            ReleaseVerb::Rollback => "rollback",
        };
        let path = format!(
            "/api/v1/tenants/{}/environments/{}/applications/{}/releases/{}/{verb}",
            found["tenant"].as_str().unwrap_or(""),
            found["environment"].as_str().unwrap_or(""),
            found["application"].as_str().unwrap_or(""),
            args.id
        );
        let body = json!({"reason": args.reason});
        call(
            &c.url,
            Some(&c.token),
            reqwest::Method::POST,
            &path,
            Some(body),
        )
        .await?
    };
    match args.output {
        Output::Json => print_json(&detail),
        Output::Text => {
            print(&release_line(&detail));
            for e in detail["timeline"].as_array().into_iter().flatten() {
                print(&format!(
                    "  {}  {:<12} {}{}",
                    e["at"].as_str().unwrap_or(""),
                    e["kind"].as_str().unwrap_or(""),
                    e["actor"]
                        .as_str()
                        .map(|a| format!("{a}: "))
                        .unwrap_or_default(),
                    e["message"].as_str().unwrap_or(""),
                ));
            }
        }
    }
    Ok(())
}

pub async fn promote(args: PromoteArgs) -> Result<(), Failure> {
    let c = load()?;
    let tenant = match args.tenant {
        Some(t) => t,
        None => {
            let mine = call(
                &c.url,
                Some(&c.token),
                reqwest::Method::GET,
                "/api/v1/tenants",
                None,
            )
            .await?;
            let slugs: Vec<String> = mine["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["slug"].as_str().map(str::to_owned))
                .collect();
            match &slugs[..] {
                [one] => one.clone(),
                _ => {
                    return Err(Failure::Refused(format!(
                        "you belong to {} tenants; say which with --tenant ({})",
                        slugs.len(),
                        slugs.join(", ")
                    )));
                }
            }
        }
    };
    let path = format!(
        "/api/v1/tenants/{tenant}/environments/{}/applications/{}/promote",
        args.to, args.app
    );
    let detail = call(
        &c.url,
        Some(&c.token),
        reqwest::Method::POST,
        &path,
        Some(json!({"from": args.from})),
    )
    .await?;
    match args.output {
        Output::Json => print_json(&detail),
        Output::Text => print(&release_line(&detail)),
    }
    Ok(())
}
