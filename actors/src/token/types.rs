//! What the token actor answers with, and what its requests name.

use serde::{Deserialize, Serialize};

use crate::crypto::secret::Digest32;
use crate::error::OAuthError;
use crate::time::{Millis, Secs};

/// Who approved what: the input to token issuance.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: String,
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub authorization_id: String,
}

/// The successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The user the tokens were issued to (for the audit trail; not sent).
    #[serde(skip)]
    pub username: String,
}

/// Where an authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationStatus {
    Active,
    Expired,
    Revoked,
}

/// One authorization (one approved device and the tokens that came from it), as its owner or
/// an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationView {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub authorized_at: Secs,
    /// The last refresh or use, if any since the approval.
    pub last_used_at: Option<Secs>,
    /// When its longest-lived live token expires (or the last one did).
    pub expires_at: Secs,
    pub status: AuthorizationStatus,
}

/// Which authorizations a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationQuery {
    /// One user's (by id), or everyone's.
    pub user_id: Option<String>,
    /// One username's (the admin console's filter), or everyone's.
    pub username: Option<String>,
    /// Only active ones.
    pub active_only: bool,
}

/// One page of authorizations, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPage {
    pub rows: Vec<AuthorizationView>,
    /// 1-based, within `1..=pages`.
    pub page: usize,
    pub pages: usize,
    /// How many of all the selected authorizations (not only this page's) are active.
    pub active: usize,
}

/// What `/oauth/tokeninfo` reports of a valid access token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub active: bool,
    pub user_id: String,
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub exp: Secs,
    pub iat: Secs,
}

/// What a revocation request names.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// An access token, by its verified `jti`.
    AccessId(String),
    /// A refresh token or a token-service access token, by its SHA-256.
    Hash(Digest32),
}

/// Whose tokens a mass revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Client(String),
}

/// A refresh as requested: the presented token's SHA-256, the client, an optional narrower scope.
pub struct RefreshRequest {
    pub hash: Digest32,
    pub client_id: String,
    pub scope: Option<String>,
    pub now: Millis,
}

/// The one answer for an access token that is not (or no longer) good.
pub fn invalid_token() -> OAuthError {
    OAuthError::invalid_token("the access token is invalid, expired or revoked")
}
