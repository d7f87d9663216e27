//! Authentication: password hashing (argon2id) and session tokens (HS256 JWTs with
//! key rotation).

pub mod password;
pub mod tokens;

pub use tokens::{Claims, TokenConfig, TokenError, TokenService};
