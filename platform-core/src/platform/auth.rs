//! Login, token authentication and signing-key rotation.

use std::collections::BTreeMap;

use serde_json::json;
use uuid::Uuid;

use super::{Audit, Platform, record};
use crate::auth::tokens::IssuedToken;
use crate::auth::{Claims, TokenError, password};
use crate::authz::Principal;
use crate::names::Password;
use crate::store::audit::AuditRecord;
use crate::{CoreError, store};

/// A successful login: the token to hand to the client and who it is for.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub claims: Claims,
    pub principal: Principal,
}

impl Platform {
    /// Checks a username and password and issues a session token.
    ///
    /// Unknown users, wrong passwords and disabled accounts all fail the same way and
    /// take the same time (a decoy hash is verified when the user does not exist).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source_ip: Option<&str>,
    ) -> Result<Session, CoreError> {
        let Some(password) = Password::from_login(password) else {
            return Err(CoreError::InvalidCredentials);
        };
        // A name that cannot exist is looked up as nobody (still paying for the decoy hash).
        let credentials = match crate::names::Username::parse(username) {
            Ok(valid) => store::users::credentials(&self.pool, valid.as_str()).await?,
            Err(_) => None,
        };
        let stored_hash = credentials
            .as_ref()
            .map_or(password::decoy_hash(), |c| c.password_hash.as_str());
        let matches = password::verify(&password, stored_hash).await;
        let user = match credentials {
            Some(c) if matches && !c.disabled => c,
            other => {
                // What an attacker typed is recorded, but bounded and without control bytes.
                let printable: String = username
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(64)
                    .collect();
                let mut conn = self.pool.acquire().await?;
                store::audit::append(
                    &mut conn,
                    AuditRecord {
                        tenant_id: None,
                        actor_id: other.as_ref().map(|c| c.id),
                        actor: &printable,
                        action: "session.login_failed",
                        target_kind: "user",
                        target: &printable,
                        details: json!({}),
                        source_ip,
                    },
                )
                .await?;
                return Err(CoreError::InvalidCredentials);
            }
        };
        let (principal, generation) = self
            .load_principal(user.id, source_ip)
            .await?
            .ok_or(CoreError::InvalidCredentials)?;
        let roles: BTreeMap<String, String> = principal
            .memberships()
            .iter()
            .map(|m| (m.slug.clone(), m.role.as_str().to_owned()))
            .collect();
        let IssuedToken { token, claims } = self
            .tokens
            .issue(
                user.id,
                &user.username,
                roles,
                principal.is_platform_admin(),
                generation,
            )
            .await?;
        let mut tx = self.pool.begin().await?;
        record(
            &mut tx,
            &principal,
            Audit {
                tenant_id: None,
                action: "session.login",
                target_kind: "user",
                target: &principal.username,
                details: json!({"jti": claims.jti}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Session {
            token,
            claims,
            principal,
        })
    }

    /// Verifies a session token and loads the user it names, with their current roles.
    /// A disabled or deleted user is refused even while their token is unexpired.
    pub async fn authenticate(
        &self,
        token: &str,
        source_ip: Option<&str>,
    ) -> Result<(Principal, Claims), AuthFailure> {
        let claims = self
            .tokens
            .verify(token)
            .await
            .map_err(AuthFailure::Token)?;
        let user_id =
            Uuid::parse_str(&claims.sub).map_err(|_| AuthFailure::Token(TokenError::Malformed))?;
        // Held in memory while changes are heard; otherwise one statement: the user,
        // the session's revocation and the memberships.
        let found = match self.access.session(user_id, &claims.jti) {
            Ok(found) => found,
            Err(ticket) => {
                let found = store::users::session_user(&self.pool, user_id, &claims.jti)
                    .await
                    .map_err(|e| AuthFailure::Core(e.into()))?;
                let Some(found) = found else {
                    return Err(AuthFailure::UserGone);
                };
                self.access
                    .keep_session(ticket, user_id, &claims.jti, &found);
                found
            }
        };
        if found.revoked {
            return Err(AuthFailure::LoggedOut);
        }
        if found.user.disabled {
            return Err(AuthFailure::UserGone);
        }
        if found.generation != claims.generation {
            return Err(AuthFailure::Superseded);
        }
        Ok((principal_of(found, source_ip), claims))
    }

    pub(crate) async fn load_principal(
        &self,
        user_id: Uuid,
        source_ip: Option<&str>,
    ) -> Result<Option<(Principal, i32)>, CoreError> {
        // No session yet: no jti can be revoked.
        let found = store::users::session_user(&self.pool, user_id, "").await?;
        Ok(found.filter(|f| !f.user.disabled).map(|f| {
            let generation = f.generation;
            (principal_of(f, source_ip), generation)
        }))
    }

    /// Ends a session: its token is refused from now on, even before it expires.
    pub async fn logout(&self, principal: &Principal, claims: &Claims) -> Result<(), CoreError> {
        let expires_at =
            chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(chrono::Utc::now);
        let mut tx = self.pool.begin().await?;
        store::keys::revoke_session(&mut tx, &claims.jti, expires_at).await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "session.logout",
                target_kind: "user",
                target: &principal.username,
                details: json!({"jti": claims.jti}),
            },
        )
        .await?;
        tx.commit().await?;
        self.access_changed();
        Ok(())
    }

    /// Makes a new signing key current. Tokens signed with the previous key keep working
    /// for the configured overlap.
    pub async fn rotate_signing_key(&self, principal: &Principal) -> Result<String, CoreError> {
        principal.require_platform_admin("rotate signing keys")?;
        let mut tx = self.pool.begin().await?;
        let kid = self.tokens.rotate(&mut tx).await?;
        record(
            &mut tx,
            principal,
            Audit {
                tenant_id: None,
                action: "signing_key.rotate",
                target_kind: "signing_key",
                target: &kid,
                details: json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        self.tokens.refresh().await?;
        Ok(kid)
    }

    /// Rotates the signing key on the operator's behalf (the `paas rotate-keys` command),
    /// recorded in the audit log as done by `system`.
    pub async fn rotate_signing_key_as_operator(&self) -> Result<String, CoreError> {
        let mut tx = self.pool.begin().await?;
        let kid = self.tokens.rotate(&mut tx).await?;
        store::audit::append(
            &mut tx,
            AuditRecord {
                tenant_id: None,
                actor_id: None,
                actor: "system",
                action: "signing_key.rotate",
                target_kind: "signing_key",
                target: &kid,
                details: json!({}),
                source_ip: None,
            },
        )
        .await?;
        tx.commit().await?;
        self.tokens.refresh().await?;
        Ok(kid)
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error(transparent)]
    Token(TokenError),
    #[error("the token's user no longer exists or is disabled")]
    UserGone,
    #[error("the session was ended by a logout")]
    LoggedOut,
    #[error(
        "the session was ended by a change to the account (disabled, new password or a membership removed)"
    )]
    Superseded,
    #[error(transparent)]
    Core(CoreError),
}

fn principal_of(found: store::users::SessionUser, source_ip: Option<&str>) -> Principal {
    Principal::new(found.user, found.memberships, source_ip.map(str::to_owned))
}
