//! Password hashing with argon2id (the `argon2` crate's defaults follow OWASP's
//! recommended parameters). Hashing is CPU-bound, so it runs on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::CoreError;
use crate::names::Password;

/// Hashes a password into a PHC string (`$argon2id$v=19$...`).
pub async fn hash(password: &Password) -> Result<String, CoreError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CoreError::Internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| CoreError::Internal(format!("password hashing task failed: {e}")))?
}

/// Checks a password against a stored PHC string. A malformed stored hash verifies
/// nothing.
pub async fn verify(password: &Password, stored: &str) -> bool {
    let password = password.clone();
    let stored = stored.to_owned();
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash of a password nobody knows, verified against when the username does not
/// exist, so that a failed login costs the same whether or not the user exists.
pub fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zq1vLzFkWwC3Hq7Rm0p0d8XoZ2m7v6c2F8kBfKSk0yI"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let pw = Password::parse_new("correct horse battery").unwrap_or_else(|e| panic!("{e}"));
        let h = hash(&pw).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&pw, &h).await);
        let other =
            Password::parse_new("incorrect horse battery").unwrap_or_else(|e| panic!("{e}"));
        assert!(!verify(&other, &h).await);
        assert!(!verify(&pw, "not a hash").await);
        assert!(!verify(&pw, decoy_hash()).await);
    }
}
