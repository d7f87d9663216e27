//! Session tokens: HS256 JWTs signed with a key from a rotating key ring kept in
//! PostgreSQL, so every control-plane replica signs and verifies with the same keys.
//!
//! Validation is pinned: exactly HS256, a known `kid`, our `iss` and `aud`, and `exp`,
//! `nbf`, `iat` and `sub` all required, with a small leeway for clock skew. A retired key
//! keeps verifying for a bounded overlap (at least the token lifetime) after rotation, so
//! rotation logs nobody out; after that its tokens are refused.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::CoreError;
use crate::sealing::MasterKey;
use crate::store;

/// The one algorithm tokens are signed and verified with.
pub const ALGORITHM: Algorithm = Algorithm::HS256;

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    /// How long an issued token is valid.
    pub ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long a retired key still verifies. Never shorter than `ttl`.
    pub key_overlap: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "paas".to_owned(),
            audience: "paas-console".to_owned(),
            ttl: Duration::from_secs(8 * 3600),
            leeway: Duration::from_secs(30),
            key_overlap: Duration::from_secs(8 * 3600),
        }
    }
}

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// The username, for display and logs.
    pub name: String,
    /// The user's role in each tenant (by slug) when the token was issued. The core
    /// authorizes from the database, so a revoked role stops working at once; these are
    /// informational for API clients.
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    #[serde(default)]
    pub platform_admin: bool,
    /// The anti-CSRF token bound to this session; browser requests that change state
    /// must echo it.
    pub csrf: String,
    /// The user's session generation when the token was issued; a token of an older
    /// generation is refused (see `Platform::authenticate`).
    #[serde(default, rename = "gen")]
    pub generation: i32,
}

/// Why a token was refused. Never shown to the client in detail (it gets a plain 401);
/// logged for operators.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed or uses an unsupported algorithm")]
    Malformed,
    #[error("token uses algorithm {0:?}, only HS256 is accepted")]
    WrongAlgorithm(Algorithm),
    #[error("token has no key id")]
    MissingKid,
    #[error("token key id is unknown or its key has been retired")]
    UnknownKid,
    #[error("token was refused: {0}")]
    Invalid(String),
    #[error("the key ring could not be loaded")]
    KeyRingUnavailable,
}

#[derive(Debug, Clone)]
struct SigningKey {
    kid: String,
    secret: Vec<u8>,
    retired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct KeyRing {
    keys: Vec<SigningKey>,
    loaded_at: Option<Instant>,
}

impl KeyRing {
    fn current(&self) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.retired_at.is_none())
    }

    fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// Issues and verifies session tokens.
#[derive(Debug)]
pub struct TokenService {
    config: TokenConfig,
    pool: PgPool,
    ring: RwLock<KeyRing>,
    /// Seals the keys at rest.
    master: MasterKey,
}

/// An issued token with the claims it carries.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
}

impl TokenService {
    /// Loads the key ring, creating the first key when the platform has none. Keys an
    /// earlier release kept in plaintext are sealed with `master` first.
    pub async fn start(
        pool: PgPool,
        mut config: TokenConfig,
        master: MasterKey,
    ) -> Result<Self, CoreError> {
        config.key_overlap = config.key_overlap.max(config.ttl);
        for (kid, secret) in store::keys::plaintext(&pool).await? {
            let sealed = seal_key(&master, &kid, &secret)?;
            store::keys::seal(&pool, &kid, &sealed).await?;
            tracing::info!(
                kid,
                "sealed a signing key stored in plaintext by an earlier release"
            );
        }
        let kid = new_kid();
        let sealed = seal_key(&master, &kid, &new_secret())?;
        store::keys::insert_first(&pool, &kid, &sealed).await?;
        let service = Self {
            config,
            pool,
            ring: RwLock::new(KeyRing::default()),
            master,
        };
        service.reload().await?;
        Ok(service)
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    async fn reload(&self) -> Result<(), CoreError> {
        let rows = store::keys::live(&self.pool, self.overlap_secs()).await?;
        let keys = rows
            .into_iter()
            .map(|r| {
                let sealed = r.sealed.unwrap_or_default();
                let secret = self
                    .master
                    .open(&sealed, &key_context(&r.kid))
                    .map_err(|e| CoreError::Internal(format!("signing key {}: {e}", r.kid)))?;
                Ok(SigningKey {
                    kid: r.kid,
                    secret,
                    retired_at: r.retired_at,
                })
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        let mut ring = self
            .ring
            .write()
            .map_err(|_| CoreError::Internal("key ring lock poisoned".into()))?;
        *ring = KeyRing {
            keys,
            loaded_at: Some(Instant::now()),
        };
        Ok(())
    }

    fn overlap_secs(&self) -> i64 {
        i64::try_from(self.config.key_overlap.as_secs()).unwrap_or(i64::MAX)
    }

    /// Issues a token for a user.
    pub async fn issue(
        &self,
        user_id: Uuid,
        username: &str,
        roles: BTreeMap<String, String>,
        platform_admin: bool,
        generation: i32,
    ) -> Result<IssuedToken, CoreError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.config.ttl.as_secs()).unwrap_or(3600);
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: user_id.to_string(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: Uuid::new_v4().to_string(),
            name: username.to_owned(),
            roles,
            platform_admin,
            csrf: random_token(),
            generation,
        };
        let key = {
            let ring = self
                .ring
                .read()
                .map_err(|_| CoreError::Internal("key ring lock poisoned".into()))?;
            ring.current().cloned()
        };
        let key = match key {
            Some(k) => k,
            None => {
                self.reload().await?;
                let ring = self
                    .ring
                    .read()
                    .map_err(|_| CoreError::Internal("key ring lock poisoned".into()))?;
                ring.current()
                    .cloned()
                    .ok_or_else(|| CoreError::Internal("no current signing key".into()))?
            }
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret))
            .map_err(|e| CoreError::Internal(format!("token signing failed: {e}")))?;
        Ok(IssuedToken { token, claims })
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(TokenError::WrongAlgorithm(header.alg));
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = match self.lookup(&kid)? {
            Some(key) => key,
            None => {
                // A key created by another replica since we loaded: reload, but at most
                // once a second so that forged kids cannot hammer the database.
                if self.stale_after(Duration::from_secs(1))? {
                    self.reload()
                        .await
                        .map_err(|_| TokenError::KeyRingUnavailable)?;
                }
                self.lookup(&kid)?.ok_or(TokenError::UnknownKid)?
            }
        };
        if let Some(retired) = key.retired_at {
            let overlap = chrono::Duration::seconds(self.overlap_secs());
            if Utc::now() > retired + overlap {
                return Err(TokenError::UnknownKid);
            }
        }
        let mut validation = Validation::new(ALGORITHM);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    fn lookup(&self, kid: &str) -> Result<Option<SigningKey>, TokenError> {
        let ring = self
            .ring
            .read()
            .map_err(|_| TokenError::KeyRingUnavailable)?;
        Ok(ring.find(kid).cloned())
    }

    fn stale_after(&self, age: Duration) -> Result<bool, TokenError> {
        let ring = self
            .ring
            .read()
            .map_err(|_| TokenError::KeyRingUnavailable)?;
        Ok(ring.loaded_at.is_none_or(|t| t.elapsed() >= age))
    }

    /// Makes a new current key and retires the old one; returns the new key id. The
    /// caller records the rotation in the audit log within `tx`.
    pub async fn rotate(&self, tx: &mut sqlx::PgConnection) -> Result<String, CoreError> {
        let kid = new_kid();
        let sealed = seal_key(&self.master, &kid, &new_secret())?;
        store::keys::rotate(tx, &kid, &sealed).await?;
        Ok(kid)
    }

    /// Re-reads the key ring (after a rotation has committed).
    pub async fn refresh(&self) -> Result<(), CoreError> {
        self.reload().await
    }

    /// The key id tokens are being signed with now.
    pub fn current_kid(&self) -> Option<String> {
        self.ring
            .read()
            .ok()
            .and_then(|r| r.current().map(|k| k.kid.clone()))
    }
}

/// What a signing key's seal is bound to.
pub fn key_context(kid: &str) -> String {
    format!("signing-key:{kid}")
}

fn seal_key(master: &MasterKey, kid: &str, secret: &[u8]) -> Result<Vec<u8>, CoreError> {
    master
        .seal(secret, &key_context(kid))
        .map_err(|e| CoreError::Internal(e.to_string()))
}

fn new_kid() -> String {
    format!("k{}", Utc::now().format("%Y%m%d%H%M%S%3f"))
}

fn new_secret() -> Vec<u8> {
    let mut secret = vec![0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// A random URL-safe token of 32 bytes of entropy.
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
