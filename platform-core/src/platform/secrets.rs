//! Application secrets: write-only values (never returned, logged or audited), sealed
//! with the master key, handed to instances as environment variables. Setting or
//! removing one makes a new revision, rolled out like any spec change.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use super::Platform;
use super::apps::audit_app;
use crate::authz::{Permission, TenantAccess};
use crate::model::SecretInfo;
use crate::sealing::{MasterKey, SecretValue};
use crate::{CoreError, FieldError, store};

/// At most this many secrets per application.
pub const MAX_SECRETS: usize = 64;
/// The largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 32 * 1024;

/// What a secret's seal is bound to: its application, name and version.
fn context(application_id: Uuid, name: &str, version: i32) -> String {
    format!("secret:{application_id}:{name}:{version}")
}

/// Checks a secret's name: an environment variable's.
fn check_name(name: &str) -> Result<(), FieldError> {
    let valid = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "must be 1 to 128 letters, digits or '_', not starting with a digit",
        ))
    }
}

impl Platform {
    /// The application's secrets: names, versions and who set them, never values.
    pub async fn secrets(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
    ) -> Result<Vec<SecretInfo>, CoreError> {
        access.require(Permission::View, "view applications")?;
        let application = self.find_application(access, environment, app).await?;
        Ok(store::secrets::latest(&self.pool, application.id)
            .await?
            .into_iter()
            .filter(|r| r.present)
            .map(|r| SecretInfo {
                name: r.name,
                version: r.version,
                updated_by: r.created_by,
                updated_at: r.created_at,
            })
            .collect())
    }

    /// Sets a secret (a new version), making a new revision that runs with it.
    pub async fn set_secret(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        name: &str,
        value: SecretValue,
        if_version: Option<i64>,
    ) -> Result<SecretInfo, CoreError> {
        check_name(name)?;
        let bytes = value.expose().as_bytes();
        if bytes.len() > MAX_SECRET_BYTES || bytes.contains(&0) {
            return Err(FieldError::new(
                "value",
                format!("must be at most {MAX_SECRET_BYTES} bytes with no NUL"),
            )
            .into());
        }
        self.change_secret(access, environment, app, name, Some(&value), if_version)
            .await?
            .ok_or_else(|| CoreError::Internal("a set secret has no version".into()))
    }

    /// Removes a secret, making a new revision that runs without it.
    pub async fn delete_secret(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        name: &str,
        if_version: Option<i64>,
    ) -> Result<(), CoreError> {
        check_name(name).map_err(|_| CoreError::not_found("secret", name))?;
        self.change_secret(access, environment, app, name, None, if_version)
            .await
            .map(|_| ())
    }

    /// One transaction: the new version, the new revision and the audit record (which
    /// names the secret, never its value).
    async fn change_secret(
        &self,
        access: &TenantAccess,
        environment: &str,
        app: &str,
        name: &str,
        value: Option<&SecretValue>,
        if_version: Option<i64>,
    ) -> Result<Option<SecretInfo>, CoreError> {
        let application = self.change_target(access, environment, app).await?;
        let app_id = application.id;
        let mut tx = self.pool.begin().await?;
        let current = store::apps::lock(&mut tx, access.tenant().id, app_id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", app))?
            .revision;
        let revision = store::apps::revision(&mut *tx, app_id, current)
            .await?
            .ok_or_else(|| {
                CoreError::Internal(format!("application {app_id} has no revision {current}"))
            })?;
        let mut versions: BTreeMap<String, i32> =
            serde_json::from_value(revision.secrets.clone()).unwrap_or_default();
        let target = format!("{environment}/{app}");
        super::check_version(
            &mut *tx,
            Some(access.tenant().id),
            ("secret", name),
            ("application", &target),
            if_version,
            versions.get(name).map(|v| i64::from(*v)),
        )
        .await?;
        let spec_env_has = revision.spec.get("env").and_then(|e| e.get(name)).is_some();
        match value {
            Some(_) if spec_env_has => {
                return Err(FieldError::new(
                    "name",
                    format!("'{name}' is a plain environment variable of the application: remove it from spec.env first"),
                )
                .into());
            }
            Some(_) if !versions.contains_key(name) && versions.len() >= MAX_SECRETS => {
                return Err(FieldError::new(
                    "name",
                    format!("an application has at most {MAX_SECRETS} secrets"),
                )
                .into());
            }
            None if !versions.contains_key(name) => {
                return Err(CoreError::not_found("secret", name));
            }
            _ => {}
        }
        // The version number is known only once inserted; the seal binds it, so the
        // version is reserved first and the value sealed for exactly that version.
        let user = access.principal().user_id;
        let version = match value {
            Some(value) => {
                let next = store::secrets::latest(&mut *tx, app_id)
                    .await?
                    .into_iter()
                    .find(|r| r.name == name)
                    .map_or(1, |r| r.version + 1);
                let sealed = self
                    .master_key()
                    .seal(value.expose().as_bytes(), &context(app_id, name, next))
                    .map_err(|e| CoreError::Internal(e.to_string()))?;
                let version =
                    store::secrets::insert_version(&mut tx, app_id, name, Some(&sealed), user)
                        .await?;
                if version != next {
                    return Err(CoreError::Internal("secret version raced".into()));
                }
                versions.insert(name.to_owned(), version);
                Some(version)
            }
            None => {
                store::secrets::insert_version(&mut tx, app_id, name, None, user).await?;
                versions.remove(name);
                None
            }
        };
        let next_revision = current + 1;
        let secrets_json =
            serde_json::to_value(&versions).map_err(|e| CoreError::Internal(e.to_string()))?;
        let release = super::releases::new_revision(
            &mut tx,
            access,
            app_id,
            next_revision,
            &revision.spec,
            &secrets_json,
            super::releases::Cause::Secrets,
            None,
        )
        .await?;
        audit_app(
            &mut tx,
            access,
            if value.is_some() {
                "application.secret.set"
            } else {
                "application.secret.delete"
            },
            environment,
            app,
            json!({"secret": name, "version": version, "revision": next_revision, "release": release}),
        )
        .await?;
        let info = match version {
            Some(version) => store::secrets::latest(&mut *tx, app_id)
                .await?
                .into_iter()
                .find(|r| r.name == name && r.version == version)
                .map(|r| SecretInfo {
                    name: r.name,
                    version: r.version,
                    updated_by: r.created_by,
                    updated_at: r.created_at,
                }),
            None => None,
        };
        tx.commit().await?;
        Ok(info)
    }
}

impl Platform {
    /// Sets and removes several secrets in one new revision (a service binding's
    /// variables), in the caller's transaction; the new revision's number. The
    /// application is locked; a name that is a plain variable of its spec is refused.
    pub(crate) async fn change_secrets_in(
        &self,
        tx: &mut sqlx::PgConnection,
        access: &TenantAccess,
        app_id: Uuid,
        set: &BTreeMap<String, SecretValue>,
        remove: &[String],
        cause: super::releases::Cause,
    ) -> Result<i32, CoreError> {
        let current = store::apps::lock(&mut *tx, access.tenant().id, app_id)
            .await?
            .ok_or_else(|| CoreError::not_found("application", app_id.to_string()))?
            .revision;
        let revision = store::apps::revision(&mut *tx, app_id, current)
            .await?
            .ok_or_else(|| {
                CoreError::Internal(format!("application {app_id} has no revision {current}"))
            })?;
        let mut versions: BTreeMap<String, i32> =
            serde_json::from_value(revision.secrets.clone()).unwrap_or_default();
        let user = access.principal().user_id;
        for (name, value) in set {
            check_name(name)?;
            if revision.spec.get("env").and_then(|e| e.get(name)).is_some() {
                return Err(FieldError::new(
                    "name",
                    format!("'{name}' is a plain environment variable of the application: remove it from spec.env or bind under another name"),
                )
                .into());
            }
            let next = store::secrets::latest(&mut *tx, app_id)
                .await?
                .into_iter()
                .find(|r| r.name == *name)
                .map_or(1, |r| r.version + 1);
            let sealed = self
                .master_key()
                .seal(value.expose().as_bytes(), &context(app_id, name, next))
                .map_err(|e| CoreError::Internal(e.to_string()))?;
            let version =
                store::secrets::insert_version(&mut *tx, app_id, name, Some(&sealed), user).await?;
            versions.insert(name.clone(), version);
        }
        for name in remove {
            if versions.remove(name).is_some() {
                store::secrets::insert_version(&mut *tx, app_id, name, None, user).await?;
            }
        }
        if versions.len() > MAX_SECRETS {
            return Err(FieldError::new(
                "name",
                format!("an application has at most {MAX_SECRETS} secrets"),
            )
            .into());
        }
        let next_revision = current + 1;
        let secrets_json =
            serde_json::to_value(&versions).map_err(|e| CoreError::Internal(e.to_string()))?;
        super::releases::new_revision(
            &mut *tx,
            access,
            app_id,
            next_revision,
            &revision.spec,
            &secrets_json,
            cause,
            None,
        )
        .await?;
        Ok(next_revision)
    }
}

/// The secret values a revision of an application runs with, opened.
pub async fn of_revision<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    master: &MasterKey,
    application_id: Uuid,
    versions: &serde_json::Value,
) -> Result<BTreeMap<String, SecretValue>, CoreError> {
    let versions: BTreeMap<String, i32> =
        serde_json::from_value(versions.clone()).unwrap_or_default();
    if versions.is_empty() {
        return Ok(BTreeMap::new());
    }
    store::secrets::sealed(ex, application_id, &versions)
        .await?
        .into_iter()
        .map(|(name, version, sealed)| {
            let plain = master
                .open(&sealed, &context(application_id, &name, version))
                .map_err(|e| CoreError::Internal(format!("secret {name}: {e}")))?;
            let text = String::from_utf8(plain)
                .map_err(|_| CoreError::Internal(format!("secret {name} is not UTF-8")))?;
            Ok((name, SecretValue::new(text)))
        })
        .collect()
}
