//! Sealing what must not be readable at rest (application secrets, token-signing keys)
//! with the platform's master key, which the database never holds: it comes from the
//! environment (`PAAS_MASTER_KEY`) or a key file.
//!
//! # Guarantees
//! - AES-256-GCM (ring) with a fresh random nonce per seal: the same value sealed twice
//!   gives two different ciphertexts.
//! - Each sealed value is bound to its context (what it is and whose): a ciphertext
//!   copied to another row does not open there.
//! - The key and the values it opens are never printed: [`MasterKey`] and
//!   [`SecretValue`] have redacted `Debug` and no `Display`.

use std::fmt;
use std::sync::Arc;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a key could not be read or a value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the master key must be 32 bytes, base64-encoded (44 characters)")]
    BadKey,
    #[error("a sealed value does not open with this master key (was the key changed?)")]
    WrongKeyOrDamaged,
    #[error("the system's random source failed")]
    Random,
}

/// The platform's master key. Cheap to clone.
#[derive(Clone)]
pub struct MasterKey {
    key: Arc<LessSafeKey>,
    random: SystemRandom,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from its base64 text (standard alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim()))
            .map_err(|_| SealError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: Arc::new(LessSafeKey::new(unbound)),
            random: SystemRandom::new(),
        })
    }

    /// A new random key and its base64 text (to be stored by the caller).
    pub fn generate() -> Result<(Self, String), SealError> {
        use base64::Engine;
        let mut bytes = [0_u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok((Self::from_bytes(&bytes)?, text))
    }

    /// Seals `plaintext` for `context`: nonce, then ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Self::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::WrongKeyOrDamaged);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::WrongKeyOrDamaged)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| SealError::WrongKeyOrDamaged)?;
        Ok(plain.to_vec())
    }
}

pub use platform_spec::secret::SecretValue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_context() {
        let (key, text) = MasterKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let again = MasterKey::from_base64(&text).unwrap_or_else(|e| panic!("{e}"));
        let sealed = key
            .seal(b"hunter2", "secret:app:DB_PASSWORD:1")
            .unwrap_or_default();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(
            sealed,
            key.seal(b"hunter2", "secret:app:DB_PASSWORD:1")
                .unwrap_or_default()
        );
        assert_eq!(
            again.open(&sealed, "secret:app:DB_PASSWORD:1").as_deref(),
            Ok(&b"hunter2"[..])
        );
        assert_eq!(
            again.open(&sealed, "secret:app:OTHER:1"),
            Err(SealError::WrongKeyOrDamaged)
        );
        let (other, _) = MasterKey::generate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            other.open(&sealed, "secret:app:DB_PASSWORD:1"),
            Err(SealError::WrongKeyOrDamaged)
        );
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").err(),
            Some(SealError::BadKey)
        );
        assert_eq!(
            format!("{key:?} {:?}", SecretValue::new("hunter2".into())),
            "MasterKey(..) SecretValue(..)"
        );
    }
}
