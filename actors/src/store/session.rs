//! The session actor's records: one row per signed-in browser.

use serde::{Deserialize, Serialize};

use super::port::Pending;
use crate::time::Millis;

/// SHA-256 of a session id: the key of its record (the id itself lives only in the cookie).
pub type SessionKey = [u8; 32];

/// The stored form of a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: String,
    pub username: String,
    pub csrf_token: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
}

/// The browser sessions. Owner: the session actor.
pub trait SessionRepo: Send + Sync {
    /// Every session that expires after `now`; expired and unreadable rows are deleted.
    fn load(&self, now: Millis) -> Pending<Vec<(SessionKey, SessionRecord)>>;
    /// Stores a new session.
    fn insert(&self, key: SessionKey, record: &SessionRecord) -> Pending<()>;
    /// Ends sessions; ending one that is not there is not an error.
    fn remove(&self, keys: &[SessionKey]) -> Pending<()>;
    /// Ends every session of `user_id` but `keep`, wherever it was started; answers how many.
    fn remove_for_user(&self, user_id: &str, keep: Option<SessionKey>) -> Pending<usize>;
    /// Deletes every stored session expired at `now`, whichever process started it.
    fn prune(&self, now: Millis) -> Pending<()>;
    /// One session as stored now (another process may have started or ended it).
    fn get(&self, key: SessionKey) -> Pending<Option<SessionRecord>>;
}
