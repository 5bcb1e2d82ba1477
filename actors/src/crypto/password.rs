//! Argon2id password hashing, always off the async threads and admitted through a [`Gate`].
//!
//! Hashes run on a few dedicated threads (half the cores, at least one) at a lowered CPU
//! priority (nice 10): when polls and token requests need the CPU they get it first, while
//! hashing still keeps a share under full load. Only a bounded number of checks may wait, so a
//! sign-in storm is refused quickly instead of starving the runtime or queueing forever. The
//! fixed threads also keep argon2's 19 MiB work buffers from spreading over many malloc arenas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, mpsc};

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

/// CPU priority of the hashing threads (0 normal, 19 lowest).
const HASH_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Admission to argon2 work: as many slots as hashing threads, and a bounded number of waiters.
pub struct Gate {
    slots: std::sync::Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// Makes glibc return argon2's 19 MiB work buffers to the system when they are freed.
///
/// By default glibc raises its mmap threshold after the first large free, and the aligned
/// buffers argon2 allocates then come from the heap, where freed ones are not reused: every
/// password check kept another 19 MiB resident. A fixed threshold keeps allocations of 4 MiB
/// and more mmapped (returned at once) and leaves smaller ones as they were.
///
/// Call it once at the start of `main`, before any other thread exists: glibc documents
/// `mallopt` as unsafe to call while other threads allocate.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes plain integers; the caller runs it before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Starts `n` hashing threads that take jobs from one queue.
fn hashing_threads(n: usize) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
            lower_priority();
            loop {
                let job = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                match job {
                    // A panicking job loses its answer (the caller sees Unavailable); the thread
                    // and its slot live on.
                    Ok(job) => {
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a password-hashing job panicked");
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password-hashing thread");
        }
    }
    tx
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value alone.
    // SAFETY: plain syscalls on the calling thread, no pointers involved.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, HASH_NICE) };
    if rc != 0 {
        tracing::debug!("could not lower the priority of a password-hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The process-wide gate every hash and check goes through: half the cores (at least one).
static GATE: LazyLock<Gate> =
    LazyLock::new(|| Gate::new(std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1), MAX_WAITING));

/// Counts a waiting check; uncounted when dropped, even if the caller gave up.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: std::sync::Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            jobs: Mutex::new(hashing_threads(slots)),
        }
    }

    /// Runs `f` on a hashing thread. The slot travels with the job and is released when the
    /// work is done, even if the caller stopped waiting; so slots = threads always holds.
    async fn run<T: Send + 'static>(
        &self,
        slot: tokio::sync::OwnedSemaphorePermit,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _slot = slot;
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .map_err(|_| PasswordError::Unavailable)?
            .send(job)
            .map_err(|_| PasswordError::Unavailable)?;
        rx.await.map_err(|_| PasswordError::Unavailable)
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
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| PasswordError::Unavailable)?;
        drop(waiting);
        if !wanted() {
            return Err(PasswordError::Abandoned);
        }
        self.run(slot, move || {
            PasswordHash::new(&phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
    }

    async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| PasswordError::Unavailable)?;
        self.run(slot, move || hash_blocking(&password)).await?
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

/// The password rule, the one place it is written: at least this many characters...
pub const MIN_CHARS: usize = 8;
/// ...and at most this many bytes (argon2 hashes every byte).
pub const MAX_BYTES: usize = 1024;

/// Why a new password cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewPasswordError {
    #[error("Passwords are {MIN_CHARS} to {MAX_BYTES} characters.")]
    Rule,
    #[error("The server is busy. Please try again in a moment.")]
    Busy,
}

/// A password that keeps the rule, already hashed: the only way to give a user a password.
#[derive(Debug, Clone)]
pub struct NewPassword {
    hash: String,
}

impl NewPassword {
    /// Checks `plain` against the rule, then hashes it off the async threads.
    pub async fn new(plain: String) -> Result<NewPassword, NewPasswordError> {
        if !keeps_rule(&plain) {
            return Err(NewPasswordError::Rule);
        }
        let hash = hash(plain).await.map_err(|_| NewPasswordError::Busy)?;
        Ok(NewPassword { hash })
    }

    /// The argon2id PHC string to store.
    pub fn into_hash(self) -> String {
        self.hash
    }
}

/// Whether `plain` keeps the password rule.
pub fn keeps_rule(plain: &str) -> bool {
    plain.chars().count() >= MIN_CHARS && plain.len() <= MAX_BYTES
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

    #[tokio::test]
    async fn a_new_password_keeps_the_rule_or_is_refused() {
        assert_eq!(NewPassword::new("seven77".into()).await.unwrap_err(), NewPasswordError::Rule);
        assert_eq!(
            NewPassword::new("x".repeat(MAX_BYTES + 1)).await.unwrap_err(),
            NewPasswordError::Rule
        );
        // Eight characters that take more than eight bytes are fine.
        let ok = NewPassword::new("pässwörd".into()).await.unwrap();
        assert!(verify("pässwörd".into(), ok.into_hash(), || true).await.unwrap());
    }

    #[test]
    fn random_passwords_are_alphanumeric() {
        let p = random_password(16);
        assert_eq!(p.len(), 16);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
