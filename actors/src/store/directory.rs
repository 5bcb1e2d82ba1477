//! The directory actor's records: users and OAuth clients.

use serde::{Deserialize, Serialize};

use super::port::Pending;
use crate::time::Secs;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// argon2id PHC string; `None` for users who sign in elsewhere.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: Secs,
    /// Where the user signs in.
    #[serde(default)]
    pub auth_source: AuthSource,
    /// The login API's id for the user (`auth_source = http_api`).
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

/// Where a user's password is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthSource {
    /// Here, against the stored argon2id hash.
    #[default]
    Local,
    /// By the external login API (`AUTH_MODE=http_api`); no hash is stored.
    HttpApi,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub confidential: bool,
    /// SHA-256 (hex) of the client secret; secrets are 256-bit random, so a fast hash suffices.
    #[serde(default)]
    pub secret_hash: Option<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub enabled: bool,
    pub created_at: Secs,
    /// Refresh tokens even when an OpenID Connect request (`openid`) did not ask for
    /// `offline_access`.
    #[serde(default)]
    pub always_refresh: bool,
    /// RFC 8707: the resources (absolute URIs) its tokens may be meant for; empty, none.
    #[serde(default)]
    pub resources: Vec<String>,
}

/// Everything the directory holds, as loaded at start.
#[derive(Debug, Default)]
pub struct DirectoryData {
    pub users: Vec<UserRecord>,
    pub clients: Vec<ClientRecord>,
    /// Whether the first start's admin and client were ever created.
    pub seeded: bool,
}

/// Users and clients. Owner: the directory actor.
pub trait DirectoryRepo: Send + Sync {
    /// Every user and client (unreadable rows are skipped with a warning), and the seed mark.
    fn load(&self) -> Pending<DirectoryData>;
    /// The first start's administrator and client, and the seed mark, together. Written only
    /// if nothing was seeded yet; `Ok(false)` when another process seeded first.
    fn seed(&self, admin: &UserRecord, client: &ClientRecord) -> Pending<bool>;
    /// Creates or replaces a user. Usernames are unique: `Ok(false)`, with nothing written,
    /// when another user already has this one. (In one process the owner's book refuses
    /// first; a shared database enforces it with a unique index.)
    fn save_user(&self, user: &UserRecord) -> Pending<bool>;
    fn remove_user(&self, id: &str) -> Pending<()>;
    /// Creates or replaces a client.
    fn save_client(&self, client: &ClientRecord) -> Pending<()>;
    fn remove_client(&self, client_id: &str) -> Pending<()>;
    /// One user as stored now.
    fn user(&self, id: &str) -> Pending<Option<UserRecord>>;
    /// One client as stored now.
    fn client(&self, client_id: &str) -> Pending<Option<ClientRecord>>;
}
