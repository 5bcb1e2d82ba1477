//! Argon2id password hashing, always off the async threads and admitted through a [`Gate`]:
//! hashes run on at most half the cores at once, and only a bounded number of checks may wait, so a
//! sign-in storm is refused quickly instead of starving the runtime or queueing forever.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use tokio::sync::Semaphore;

/// Most password checks that may wait for a hashing slot; past that, a check is refused at
/// once ([`PasswordError::Busy`]) instead of growing a queue no one will live to see served.
pub const MAX_WAITING: usize = 64;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordError {
    #[error("too many password checks are waiting")]
    Busy,
    #[error("the caller no longer waits for this check")]
    Abandoned,
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error("the password hashing pool is shut down")]
    Unavailable,
}

/// Admission to argon2 work: a slot per core, and a bounded number of waiters.
pub struct Gate {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// The process-wide gate every hash and check goes through.
static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2), MAX_WAITING));

/// Counts a waiting check; uncounted when dropped, even if the caller gave up.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            slots: Semaphore::new(slots.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    fn enter(&self) -> Option<Waiting<'_>> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(&self.waiting))
    }

    /// See [`verify`].
    pub async fn verify(&self, password: String, phc: String, wanted: impl Fn() -> bool) -> Result<bool, PasswordError> {
        let waiting = self.enter().ok_or(PasswordError::Busy)?;
        let _slot = self.slots.acquire().await.map_err(|_| PasswordError::Unavailable)?;
        drop(waiting);
        if !wanted() {
            return Err(PasswordError::Abandoned);
        }
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .map_err(|_| PasswordError::Unavailable)
    }

    async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let _slot = self.slots.acquire().await.map_err(|_| PasswordError::Unavailable)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|_| PasswordError::Unavailable)?
    }
}

/// An argon2id PHC string for `password` (default parameters: 19 MiB, 2 passes).
pub async fn hash(password: String) -> Result<String, PasswordError> {
    GATE.hash(password).await
}

pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (a malformed hash never matches).
/// `wanted` is asked once a hashing slot is free; if the caller has gone, no hash is computed.
pub async fn verify(password: String, phc: String, wanted: impl Fn() -> bool) -> Result<bool, PasswordError> {
    GATE.verify(password, phc, wanted).await
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
        assert!(verify("correct horse".into(), h.clone(), || true).await.unwrap());
        assert!(!verify("wrong".into(), h.clone(), || true).await.unwrap());
        assert!(!verify("x".into(), "not a hash".into(), || true).await.unwrap());
        assert!(matches!(
            verify("correct horse".into(), h, || false).await,
            Err(PasswordError::Abandoned)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_checks_is_refused_past_the_waiting_limit() {
        let h = hash("pw".into()).await.unwrap();
        let gate = std::sync::Arc::new(Gate::new(1, 4));
        let checks: Vec<_> = (0..12)
            .map(|_| {
                let (gate, h) = (gate.clone(), h.clone());
                tokio::spawn(async move { gate.verify("pw".into(), h, || true).await })
            })
            .collect();
        let (mut busy, mut ok) = (0, 0);
        for c in checks {
            match c.await.unwrap() {
                Err(PasswordError::Busy) => busy += 1,
                Ok(true) => ok += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(busy > 0 && ok >= 4, "busy={busy} ok={ok}");
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0, "every waiter was uncounted");
    }

    #[test]
    fn random_passwords_are_alphanumeric() {
        let p = random_password(16);
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
