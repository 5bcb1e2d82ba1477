//! Server-wide values and the backend itself: generated secrets, the signing keyring, and
//! whether the database can be written.

use super::port::Pending;
use crate::time::Millis;

/// Server-wide values. Owners: the supervisor (secrets, the health probe) and
/// [`crate::crypto::keys`] (the keyring), at start-up or in the offline CLI.
pub trait ServerRepo: Send + Sync {
    /// The secret kept under `name`: the stored one if there is one, else `fresh`, stored now.
    /// The first writer wins, so processes starting together agree on one secret.
    fn secret(&self, name: &str, fresh: String) -> Pending<String>;
    /// The keyring document (opaque here; [`crate::crypto::keys`] owns its format).
    fn keyring(&self) -> Pending<Option<Vec<u8>>>;
    /// Replaces the keyring, only if the stored one is still `previous` (`None`: none yet);
    /// `Ok(false)` when someone else changed it first.
    fn save_keyring(&self, previous: Option<Vec<u8>>, next: Vec<u8>) -> Pending<bool>;
    /// Takes or renews the lease `name` for `holder` until `now + ttl_ms`: `Ok(true)` if
    /// `holder` has it now (it was free, expired or already `holder`'s). So periodic work
    /// that several processes would repeat is done by one at a time.
    fn lease(&self, name: &str, holder: &str, now: Millis, ttl_ms: Millis) -> Pending<bool>;
    /// Answers once the database answers a read (it is up and not wedged).
    fn ping(&self) -> Pending<()>;
    /// Writes and commits a small record, proving the database takes writes now.
    fn probe(&self, now: Millis) -> Pending<()>;
    /// Whether the last commit failed (the disk is full or broken), without a round trip.
    fn failing(&self) -> bool;
    /// Bytes free for the database, where the backend can tell.
    fn free_space(&self) -> Option<u64>;
    /// Adds the backend's own metrics (commit latency and size) to a scrape.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry);
    /// Finishes what is queued and closes the database. Blocking: call it from
    /// `spawn_blocking`. Later operations fail with [`super::StoreError::Closed`].
    fn close(&self);
}
