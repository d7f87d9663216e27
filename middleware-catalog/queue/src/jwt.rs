//! NATS's decentralized authentication, as far as the broker needs it: the nkeys of an
//! instance (an operator, the system account, the instance's account), and the JWTs
//! (version 2 claims, signed `ed25519-nkey`) that make them known to the server.
//!
//! Each binding gets a signing key of its own, listed in the account's JWT, and a
//! bearer user JWT issued by that key. Unbinding pushes the account's JWT without the
//! key: the server then refuses the user's JWT and closes its connections. The account's
//! JWT is therefore a function of the live bindings alone.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::Digest as _;

/// A JetStream quota (bytes; `-1` is unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storage {
    pub memory: i64,
    pub disk: i64,
}

/// Signs `claims` as `issuer`: the JWT's `iss`, `iat` and `jti` are filled in here.
pub fn encode(issuer: &KeyPair, mut claims: Value, issued_at: i64) -> Result<String, String> {
    let object = claims
        .as_object_mut()
        .ok_or_else(|| "claims must be an object".to_owned())?;
    object.insert("iss".into(), issuer.public_key().into());
    object.insert("iat".into(), issued_at.into());
    object.insert("jti".into(), "".into());
    // The id is a digest of the claims without it, as NATS's own tools make it.
    let unsigned = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let digest = sha2::Sha256::digest(&unsigned);
    let jti = data_encoding::BASE32_NOPAD.encode(&digest);
    if let Some(object) = claims.as_object_mut() {
        object.insert("jti".into(), jti.into());
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(|e| e.to_string())?);
    let signing_input = format!("{header}.{body}");
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The claims of a JWT (unverified: for tests and diagnostics).
pub fn claims(jwt: &str) -> Option<Value> {
    let body = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// The operator: the root of trust the server is configured with.
pub fn operator(operator: &KeyPair, system_account: &str, now: i64) -> Result<String, String> {
    encode(
        operator,
        json!({
            "sub": operator.public_key(),
            "name": "paas-queue",
            "nats": {"type": "operator", "version": 2, "system_account": system_account}
        }),
        now,
    )
}

/// An account; `storage` enables JetStream with that quota (the system account has none).
pub fn account(
    operator: &KeyPair,
    account: &str,
    name: &str,
    storage: Option<Storage>,
    signing_keys: &[String],
    issued_at: i64,
) -> Result<String, String> {
    let (memory, disk, streams, consumers) = match storage {
        Some(s) => (s.memory, s.disk, -1, -1),
        None => (0, 0, 0, 0),
    };
    encode(
        operator,
        json!({
            "sub": account,
            "name": name,
            "nats": {
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": memory, "disk_storage": disk,
                    "streams": streams, "consumer": consumers
                },
                "signing_keys": signing_keys,
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
                "version": 2
            }
        }),
        issued_at,
    )
}

/// A bearer user of `account`, issued by `signer` (the account's key or one of its
/// signing keys): whoever holds the JWT connects as the user, no key needed. The JWT
/// and the user's seed (for clients that want a credentials file).
pub fn user(
    signer: &KeyPair,
    account: &str,
    name: &str,
    now: i64,
) -> Result<(String, String), String> {
    let user = KeyPair::new_user();
    let seed = user.seed().map_err(|e| e.to_string())?;
    let mut nats = json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "bearer_token": true, "type": "user", "version": 2
    });
    if signer.public_key() != account
        && let Some(object) = nats.as_object_mut()
    {
        object.insert("issuer_account".into(), account.into());
    }
    let jwt = encode(
        signer,
        json!({"sub": user.public_key(), "name": name, "nats": nats}),
        now,
    )?;
    Ok((jwt, seed))
}

/// A NATS credentials file: the user's JWT and seed in the decorated format NATS
/// clients read.
pub fn credentials_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// The keys of one instance, kept by the broker as seeds.
#[derive(Debug)]
pub struct InstanceKeys {
    pub operator: KeyPair,
    pub system: KeyPair,
    pub account: KeyPair,
}

impl InstanceKeys {
    pub fn generate() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    /// The seeds, by role.
    pub fn seeds(&self) -> Result<BTreeMap<&'static str, String>, String> {
        let seed = |k: &KeyPair| k.seed().map_err(|e| e.to_string());
        Ok(BTreeMap::from([
            ("operator", seed(&self.operator)?),
            ("system", seed(&self.system)?),
            ("account", seed(&self.account)?),
        ]))
    }

    pub fn from_seeds(seeds: &serde_json::Map<String, Value>) -> Result<Self, String> {
        let get = |role: &str| {
            let seed = seeds
                .get(role)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the instance has no {role} key"))?;
            KeyPair::from_seed(seed).map_err(|e| format!("the {role} key is unusable: {e}"))
        };
        Ok(Self {
            operator: get("operator")?,
            system: get("system")?,
            account: get("account")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(jwt: &str, issuer: &str) -> bool {
        let mut parts = jwt.rsplitn(2, '.');
        let (Some(signature), Some(input)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        KeyPair::from_public_key(issuer)
            .and_then(|k| k.verify(input.as_bytes(), &signature))
            .is_ok()
    }

    #[test]
    fn a_jwt_is_signed_by_its_issuer_and_names_it() {
        let keys = InstanceKeys::generate();
        let jwt = account(
            &keys.operator,
            &keys.account.public_key(),
            "orders",
            Some(Storage {
                memory: 1 << 20,
                disk: 64 << 20,
            }),
            &[],
            1_700_000_000,
        )
        .unwrap_or_default();
        assert!(verify(&jwt, &keys.operator.public_key()));
        assert!(!verify(&jwt, &keys.account.public_key()));
        let c = claims(&jwt).unwrap_or_default();
        assert_eq!(c["iss"], keys.operator.public_key());
        assert_eq!(c["sub"], keys.account.public_key());
        assert_eq!(c["iat"], 1_700_000_000);
        assert_eq!(c["nats"]["limits"]["disk_storage"], 64 << 20);
        assert_eq!(c["jti"].as_str().map(str::len), Some(52));
    }

    #[test]
    fn a_user_issued_by_a_signing_key_names_its_account() {
        let keys = InstanceKeys::generate();
        let signer = KeyPair::new_account();
        let account_key = keys.account.public_key();
        let (jwt, seed) = user(&signer, &account_key, "binding-1", 1).unwrap_or_default();
        assert!(seed.starts_with("SU"));
        assert!(credentials_file(&jwt, &seed).contains(&jwt));
        assert!(verify(&jwt, &signer.public_key()));
        let c = claims(&jwt).unwrap_or_default();
        assert_eq!(c["nats"]["issuer_account"], account_key);
        assert_eq!(c["nats"]["bearer_token"], true);
        assert!(c["sub"].as_str().is_some_and(|s| s.starts_with('U')));
        let (own, _) = user(&keys.account, &account_key, "admin", 1).unwrap_or_default();
        assert!(claims(&own).is_some_and(|c| c["nats"].get("issuer_account").is_none()));
    }

    #[test]
    fn seeds_round_trip() {
        let keys = InstanceKeys::generate();
        let seeds: serde_json::Map<String, Value> = keys
            .seeds()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        let again = InstanceKeys::from_seeds(&seeds).map(|k| k.account.public_key());
        assert_eq!(again, Ok(keys.account.public_key()));
        assert!(InstanceKeys::from_seeds(&serde_json::Map::new()).is_err());
    }
}
