//! The database broker: PostgreSQL from Debian's server binaries (the `postgres:16`
//! image on Kubernetes), run as stateful applications of the platform's service tenant.
//!
//! - Plan `shared`: a database and an owner role per instance in one cluster the broker
//!   starts on first use (`postgres-shared`); deprovisioning drops both.
//! - Plan `dedicated`: a cluster of the instance's own, with database `app`.
//! - Each binding is a login role of its own, a member of the instance's owner role
//!   whose sessions act as the owner (`SET ROLE`), so every binding sees the same
//!   tables; unbinding ends its sessions and drops the role.
//!
//! The administrator's password is a secret of the server's application (read by the
//! start script from the environment, never on a command line); identifiers and
//! generated passwords are hexadecimal, so the SQL the broker writes never quotes input.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use broker_kit::platform::PlatformClient;
use broker_kit::{Backend, BackendError, BindingRecord, InstanceRecord};
use serde_json::{Map, Value, json};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

pub const SERVICE_ID: &str = "9a4f7c3b-database-postgresql";
const SHARED_PLAN: &str = "9a4f7c3b-database-postgresql-shared";
const DEDICATED_PLAN: &str = "9a4f7c3b-database-postgresql-dedicated";
/// The application of the shared cluster.
const SHARED_APP: &str = "postgres-shared";

pub fn catalog() -> osb::Catalog {
    let plans = [
        (
            SHARED_PLAN,
            "shared",
            "A database of its own in a cluster shared with other instances",
        ),
        (
            DEDICATED_PLAN,
            "dedicated",
            "A PostgreSQL cluster of its own",
        ),
    ]
    .iter()
    .map(|(id, name, description)| {
        serde_json::from_value(json!({
            "id": id, "name": name, "description": description, "free": true,
            "maximum_polling_duration": 600,
            "schemas": {"service_instance": {"create": {"parameters": {
                "$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
                "properties": {}, "additionalProperties": false}}}}
        }))
    })
    .collect::<Result<Vec<osb::Plan>, _>>()
    .unwrap_or_default();
    osb::Catalog {
        services: vec![osb::Service {
            name: "postgresql".into(),
            id: SERVICE_ID.into(),
            description:
                "PostgreSQL database: a database of your own, with a role of its own per binding"
                    .into(),
            tags: vec!["database".into(), "postgresql".into(), "sql".into()],
            bindable: true,
            instances_retrievable: true,
            bindings_retrievable: true,
            plan_updateable: false,
            plans,
            metadata: Some(
                json!({"displayName": "PostgreSQL database", "version": env!("CARGO_PKG_VERSION"), "providerDisplayName": "PaaS middleware"}),
            ),
        }],
    }
}

fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A lowercase hexadecimal stem of an id, safe as part of an SQL identifier.
fn stem(id: &str, len: usize) -> String {
    id.chars()
        .filter(char::is_ascii_hexdigit)
        .take(len)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Starts a cluster in the instance's data directory: `initdb` once (the administrator
/// `admin` with the password from the application's secret), then `postgres` on the
/// port the platform gives, TCP only.
const START: &str = r#"umask 077
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
# initdb and postgres look their user up: an identity the image does not list (a
# cluster's non-root UID) is named through nss_wrapper where the image has it.
if ! id -un >/dev/null 2>&1; then
  for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
    [ -f "$lib" ] && export LD_PRELOAD="$lib"
  done
  echo "postgres:x:$(id -u):$(id -g):PostgreSQL:$PWD:/bin/false" > passwd
  echo "postgres:x:$(id -g):" > group
  export NSS_WRAPPER_PASSWD="$PWD/passwd" NSS_WRAPPER_GROUP="$PWD/group"
fi
if [ ! -f data/PG_VERSION ]; then
  printf '%s' "$POSTGRES_ADMIN_PASSWORD" > pwfile
  "$BIN/initdb" -D data -U admin --auth=scram-sha-256 --pwfile=pwfile --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> data/pg_hba.conf
fi
exec "$BIN/postgres" -D data -p "$PORT" -c listen_addresses="$PG_LISTEN" -c unix_socket_directories= -c max_connections=50 -c shared_buffers=16MB"#;

/// Runs PostgreSQL clusters as platform applications.
#[derive(Debug)]
pub struct PostgresBackend {
    platform: PlatformClient,
    /// Where the shared cluster's administrator password is kept (0600).
    state_dir: PathBuf,
    ready_within: Duration,
    /// One first start of the shared cluster at a time.
    shared: tokio::sync::Mutex<()>,
}

impl PostgresBackend {
    pub fn new(platform: PlatformClient, state_dir: PathBuf) -> Self {
        Self {
            platform,
            state_dir,
            ready_within: Duration::from_secs(120),
            shared: tokio::sync::Mutex::new(()),
        }
    }

    async fn spec(&self) -> Result<Value, BackendError> {
        let local = self.platform.runs_locally().await?;
        Ok(json!({
            "kind": "stateful",
            "command": "sh",
            "image": "postgres:16",
            "args": ["-c", START],
            "env": {"PG_LISTEN": if local { "127.0.0.1" } else { "*" }},
            "replicas": 1,
            "ports": [{"name": "postgres", "protocol": "tcp"}],
            "resources": {"memory_mib": 128, "cpu_millis": 100},
            "labels": {"service": "postgresql"}
        }))
    }

    /// Starts (or finds) a cluster application; its stable address.
    async fn cluster(&self, app: &str, admin_password: &str) -> Result<String, BackendError> {
        if !self.platform.exists(app).await? {
            let spec = self.spec().await?;
            self.platform
                .deploy(
                    app,
                    "PostgreSQL cluster of the database service",
                    &spec,
                    &[("POSTGRES_ADMIN_PASSWORD", admin_password)],
                )
                .await?;
        }
        let address = self
            .platform
            .wait_address(app, "postgres", self.ready_within)
            .await?;
        // Ready as a process is not yet accepting sign-ins (initdb runs first).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match connect(&address, admin_password, "postgres").await {
                Ok(c) => {
                    let _ = c.close().await;
                    return Ok(address);
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The shared cluster's administrator password, made once.
    fn shared_password(&self) -> Result<String, BackendError> {
        let path = self.state_dir.join("shared-admin-password");
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        let password = random_secret();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.state_dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
            })
            .and_then(|mut f| f.write_all(password.as_bytes()))
            .map_err(|e| {
                BackendError::new(format!("keeping the shared cluster's password: {e}"))
            })?;
        Ok(password)
    }
}

async fn connect(
    address: &str,
    password: &str,
    database: &str,
) -> Result<PgConnection, BackendError> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "5432"));
    let options = PgConnectOptions::new()
        .host(host)
        .port(port.parse().unwrap_or(5432))
        .username("admin")
        .password(password)
        .database(database);
    tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| BackendError::new(format!("PostgreSQL at {address} did not answer in time")))?
    .map_err(|e| BackendError::new(format!("PostgreSQL at {address}: {e}")))
}

/// A future the async-trait methods can hold across an await: sqlx's executors are
/// generic over lifetimes, which a `Send` check of the outer future cannot see through,
/// so every statement runs inside a boxed future of a concrete type.
type Db<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// Runs statements (the simple protocol: several may be given at once).
fn execute<'a>(conn: &'a mut PgConnection, sql: String) -> Db<'a, ()> {
    Box::pin(async move {
        use sqlx::Executor;
        conn.execute(sql.as_str()).await.map(|_| ()).map_err(|e| {
            BackendError::new(format!(
                "PostgreSQL refused `{}`: {e}",
                sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            ))
        })
    })
}

/// Whether `sql` (one `$1` text parameter) finds anything.
fn exists<'a>(conn: &'a mut PgConnection, sql: &'static str, value: String) -> Db<'a, bool> {
    Box::pin(async move {
        sqlx::query_scalar::<_, bool>(sql)
            .bind(value)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| BackendError::new(e.to_string()))
    })
}

/// The names `sql` (one `$1` text parameter) lists.
fn names<'a>(conn: &'a mut PgConnection, sql: &'static str, value: String) -> Db<'a, Vec<String>> {
    Box::pin(async move {
        sqlx::query_scalar::<_, String>(sql)
            .bind(value)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| BackendError::new(e.to_string()))
    })
}

fn fact<'a>(instance: &'a InstanceRecord, key: &str) -> &'a str {
    instance
        .facts
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn create(&self, instance: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        let id = stem(&instance.id, 12);
        let (app, password, database, owner) = if instance.plan_id == DEDICATED_PLAN {
            (
                format!("postgres-{id}"),
                random_secret(),
                "app".to_owned(),
                "app_owner".to_owned(),
            )
        } else if instance.plan_id == SHARED_PLAN {
            (
                SHARED_APP.to_owned(),
                self.shared_password()?,
                format!("db_{id}"),
                format!("owner_{id}"),
            )
        } else {
            return Err(BackendError::new(format!("no plan '{}'", instance.plan_id)));
        };
        let address = {
            let _first = self.shared.lock().await;
            self.cluster(&app, &password).await?
        };
        let mut admin = connect(&address, &password, "postgres").await?;
        let present = exists(
            &mut admin,
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            database.clone(),
        )
        .await?;
        if !present {
            execute(&mut admin, format!("CREATE ROLE {owner} NOLOGIN"))
                .await
                .or_else(|e| {
                    if e.0.contains("already exists") {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            execute(
                &mut admin,
                format!("CREATE DATABASE {database} OWNER {owner}"),
            )
            .await?;
            execute(
                &mut admin,
                format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
            )
            .await?;
        }
        let _ = admin.close().await;
        let mut facts = Map::new();
        facts.insert("app".into(), app.into());
        facts.insert("address".into(), address.into());
        facts.insert("admin_password".into(), password.into());
        facts.insert("database".into(), database.into());
        facts.insert("owner".into(), owner.into());
        Ok(facts)
    }

    async fn update(&self, _: &InstanceRecord) -> Result<Map<String, Value>, BackendError> {
        Err(BackendError::new("database instances cannot be changed"))
    }

    async fn destroy(&self, instance: &InstanceRecord) -> Result<(), BackendError> {
        let (app, address, password) = (
            fact(instance, "app"),
            fact(instance, "address"),
            fact(instance, "admin_password"),
        );
        if app.is_empty() {
            // Creation failed before a cluster was made; for the shared plan, what may
            // exist is found by name.
            if instance.plan_id == SHARED_PLAN && self.platform.exists(SHARED_APP).await? {
                let password = self.shared_password()?;
                let address = self
                    .platform
                    .wait_address(SHARED_APP, "postgres", self.ready_within)
                    .await?;
                return drop_database(
                    &address,
                    &password,
                    &format!("db_{}", stem(&instance.id, 12)),
                    &format!("owner_{}", stem(&instance.id, 12)),
                )
                .await;
            }
            if instance.plan_id == DEDICATED_PLAN {
                let app = format!("postgres-{}", stem(&instance.id, 12));
                self.platform.remove(&app).await?;
                return self.platform.wait_gone(&app, Duration::from_secs(60)).await;
            }
            return Ok(());
        }
        // The data goes first: the platform keeps a stateful ordinal's directory after
        // its application is deleted.
        drop_database(
            address,
            password,
            fact(instance, "database"),
            fact(instance, "owner"),
        )
        .await?;
        if app != SHARED_APP {
            self.platform.remove(app).await?;
            self.platform
                .wait_gone(app, Duration::from_secs(60))
                .await?;
        }
        Ok(())
    }

    async fn bind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<Map<String, Value>, BackendError> {
        let binding_id = binding.id.as_str();
        let role = format!("b_{}", stem(binding_id, 16));
        let password = random_secret();
        let (address, database, owner) = (
            fact(instance, "address"),
            fact(instance, "database"),
            fact(instance, "owner"),
        );
        let mut admin = connect(address, fact(instance, "admin_password"), "postgres").await?;
        execute(
            &mut admin,
            format!("CREATE ROLE {role} LOGIN PASSWORD '{password}' IN ROLE {owner}"),
        )
        .await?;
        execute(
            &mut admin,
            format!("ALTER ROLE {role} SET role = '{owner}'"),
        )
        .await?;
        execute(
            &mut admin,
            format!("GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role}"),
        )
        .await?;
        let _ = admin.close().await;
        let mut credentials = broker_kit::address_credentials(address, 5432, |host, port| {
            format!("postgresql://{role}:{password}@{host}:{port}/{database}")
        });
        credentials.insert("database".into(), database.into());
        credentials.insert("username".into(), role.into());
        credentials.insert("password".into(), password.into());
        Ok(credentials)
    }

    async fn unbind(
        &self,
        instance: &InstanceRecord,
        binding: &BindingRecord,
    ) -> Result<(), BackendError> {
        let role = format!("b_{}", stem(&binding.id, 16));
        drop_role(
            fact(instance, "address"),
            fact(instance, "admin_password"),
            fact(instance, "database"),
            fact(instance, "owner"),
            &role,
        )
        .await
    }
}

/// Ends a binding role's sessions, gives what it owns to the owner, drops it.
async fn drop_role(
    address: &str,
    password: &str,
    database: &str,
    owner: &str,
    role: &str,
) -> Result<(), BackendError> {
    let mut admin = connect(address, password, "postgres").await?;
    if !exists(
        &mut admin,
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
        role.to_owned(),
    )
    .await?
    {
        return Ok(());
    }
    // Its sessions end with it.
    exists(
        &mut admin,
        "SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity WHERE usename = $1",
        role.to_owned(),
    )
    .await?;
    let mut db = connect(address, password, database).await?;
    execute(
        &mut db,
        format!("REASSIGN OWNED BY {role} TO {owner}; DROP OWNED BY {role}"),
    )
    .await?;
    let _ = db.close().await;
    execute(&mut admin, format!("DROP ROLE {role}")).await?;
    let _ = admin.close().await;
    Ok(())
}

/// Drops an instance's database, its bindings' roles and its owner.
async fn drop_database(
    address: &str,
    password: &str,
    database: &str,
    owner: &str,
) -> Result<(), BackendError> {
    let mut admin = connect(address, password, "postgres").await?;
    execute(
        &mut admin,
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    )
    .await?;
    let members = names(
        &mut admin,
        "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
         JOIN pg_roles o ON o.oid = m.roleid WHERE o.rolname = $1",
        owner.to_owned(),
    )
    .await?;
    for role in members {
        execute(&mut admin, format!("DROP ROLE IF EXISTS {role}")).await?;
    }
    execute(&mut admin, format!("DROP ROLE IF EXISTS {owner}")).await?;
    let _ = admin.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_valid_and_names_are_safe() {
        assert_eq!(catalog().validate(), Ok(()));
        assert_eq!(stem("0F4E-ab12'; DROP--", 12), "0f4eab12d");
    }
}
