//! Platform users (managed by platform administrators).

use serde_json::json;

use super::{Audit, Platform, record};
use crate::auth::password;
use crate::authz::Principal;
use crate::error::conflict_on_unique;
use crate::model::User;
use crate::names::{DisplayName, Password, Username};
use crate::{CoreError, store};

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub display_name: DisplayName,
    pub password: Password,
    pub platform_admin: bool,
}

impl Platform {
    pub async fn users(&self, principal: &Principal) -> Result<Vec<User>, CoreError> {
        principal.require_platform_admin("list users")?;
        Ok(store::users::all(&self.pool).await?)
    }

    pub async fn create_user(
        &self,
        principal: &Principal,
        input: NewUser,
    ) -> Result<User, CoreError> {
        principal.require_platform_admin("create users")?;
        let hash = password::hash(&input.password).await?;
        let mut tx = self.pool.begin().await?;
        let user = store::users::insert(
            &mut tx,
            input.username.as_str(),
            input.display_name.as_str(),
            &hash,
            input.platform_admin,
        )
        .await
        .map_err(|e| {
            conflict_on_unique(
                e,
                "username",
                format!("a user '{}' already exists", input.username),
            )
        })?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "user.create",
                target_kind: "user",
                target: &user.username,
                details: json!({"platform_admin": user.platform_admin}),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok(user)
    }

    /// Disables or re-enables an account. A disabled user's sessions stop working at
    /// once, because every request re-reads the user.
    pub async fn set_user_disabled(
        &self,
        principal: &Principal,
        username: &str,
        disabled: bool,
        if_version: Option<i64>,
    ) -> Result<User, CoreError> {
        principal.require_platform_admin("disable users")?;
        Username::parse(username).map_err(|_| CoreError::not_found("user", username))?;
        let mut tx = self.pool.begin().await?;
        let user = store::users::by_username(&mut *tx, username)
            .await?
            .ok_or_else(|| CoreError::not_found("user", username))?;
        let current = store::users::lock_version(&mut tx, user.id).await?;
        super::check_version(
            &mut *tx,
            None,
            ("user", username),
            ("user", username),
            if_version,
            current,
        )
        .await?;
        if disabled && user.id == principal.user_id {
            return Err(
                crate::FieldError::new("disabled", "you cannot disable your own account").into(),
            );
        }
        store::users::set_disabled(&mut tx, user.id, disabled).await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: if disabled {
                    "user.disable"
                } else {
                    "user.enable"
                },
                target_kind: "user",
                target: &user.username,
                details: json!({}),
            },
        )
        .await?;
        let user = store::users::by_id(&mut *tx, user.id)
            .await?
            .ok_or_else(|| CoreError::not_found("user", username))?;
        tx.commit().await?;
        self.access_changed();
        Ok(user)
    }
}
