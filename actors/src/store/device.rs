//! The device actor's records: one row per live device authorization (RFC 8628).

use serde::{Deserialize, Serialize};

use super::port::Pending;
use crate::time::Millis;

/// SHA-256 of a device code: the key of its authorization (the code itself is never stored).
pub type DeviceKey = [u8; 32];

/// The stored form of a device authorization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRecord {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
    pub interval_ms: u32,
    #[serde(default)]
    pub state: RecordState,
    /// The address the code was requested from (shown on the approval page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_from: Option<String>,
    /// RFC 8707: the resources the tokens are for (checked against the client's list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// An authorization code (RFC 6749 §4.1) rather than a device code: created approved,
    /// redeemed by the client that asked, at the redirect URI it named, with its PKCE verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Box<CodeGrant>>,
}

/// What an authorization code was issued against, checked when it is exchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeGrant {
    /// The redirect URI the code was sent to.
    pub redirect_uri: String,
    /// Whether the authorization request named it (then the token request must name it too,
    /// RFC 6749 §4.1.3).
    pub redirect_given: bool,
    /// RFC 7636: the S256 code challenge, if the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// OpenID Connect: the `nonce` to put in the `id_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordState {
    #[default]
    Pending,
    Approved {
        user_id: String,
        username: String,
        authorization_id: String,
        decided_at_ms: Millis,
        /// The device's name as the person gave it (`None`: the client's name is shown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// When the person signed in (Unix seconds; OpenID Connect `auth_time`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_time: Option<crate::time::Secs>,
    },
    Denied {
        user_id: String,
        decided_at_ms: Millis,
    },
}

/// The device authorizations. Owner: the device actor.
pub trait DeviceRepo: Send + Sync {
    /// Every stored authorization that expires at or after `keep_from`. Those that expired
    /// before it are deleted, as are rows that cannot be read.
    fn load(&self, keep_from: Millis) -> Pending<Vec<(DeviceKey, DeviceRecord)>>;
    /// Stores a new, pending authorization. User codes are unique among stored
    /// authorizations: `Ok(false)`, with nothing written, when another has this one (in one
    /// process the owner's book picks a free one first; a shared database enforces it).
    fn insert(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool>;
    /// Records a person's decision (`record` carries the approved or denied state). Applied
    /// only while the stored authorization is still pending; `Ok(false)` when it was decided
    /// already, redeemed, or is gone. So one code is decided once, whichever process decides.
    fn decide(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool>;
    /// Deletes authorizations: redeemed, expired, or whose creation failed. Deleting one that
    /// is not there is not an error.
    fn remove(&self, keys: &[DeviceKey]) -> Pending<()>;
    /// Deletes every stored authorization that expired before `before`, whichever process
    /// created it (the periodic cleanup of a shared database).
    fn prune(&self, before: Millis) -> Pending<()>;
    /// One authorization as stored now (another process may have created or decided it).
    fn get(&self, key: DeviceKey) -> Pending<Option<DeviceRecord>>;
    /// The authorization a user code stands for, as stored now.
    fn by_user_code(&self, user_code: &str) -> Pending<Option<(DeviceKey, DeviceRecord)>>;
}
