//! Argon2id password hashing, always off the async threads and capped: at most one hash per
//! core runs at once, so a login storm queues instead of starving the runtime.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use tokio::sync::Semaphore;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)));

#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordError {
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("the password hashing pool is shut down")]
    Unavailable,
}

/// An argon2id PHC string for `password` (default parameters: 19 MiB, 2 passes).
pub async fn hash(password: String) -> Result<String, PasswordError> {
    let _permit = PERMITS.acquire().await.map_err(|_| PasswordError::Unavailable)?;
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|_| PasswordError::Unavailable)?
}

pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
pub async fn verify(password: String, phc: String) -> bool {
    let Ok(_permit) = PERMITS.acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A random password of `len` letters and digits, for seeded accounts.
pub fn random_password(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), h.clone()).await);
        assert!(!verify("wrong".into(), h).await);
        assert!(!verify("x".into(), "not a hash".into()).await);
    }

    #[test]
    fn random_passwords_are_alphanumeric() {
        let p = random_password(16);
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
