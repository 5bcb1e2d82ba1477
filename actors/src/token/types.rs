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
    /// The device's name, as the person gave it at approval (`None`: the client's name is shown).
    pub name: Option<String>,
    /// When the person signed in for this approval (OpenID Connect `auth_time`).
    pub auth_time: Option<Secs>,
    /// Client credentials (RFC 6749 §4.4): the client acts for itself. `user_id` is the
    /// client's id and `username` empty; no refresh token, no `id_token`.
    pub machine: bool,
    /// RFC 8707: the resources granted (a refresh may ask for any of them, never more) and
    /// those this access token is for (its `aud`; none: the client).
    pub resources: Vec<String>,
    pub audience: Vec<String>,
    /// OpenID Connect: the authorization request's `nonce`, put in the `id_token` (OIDC Core
    /// §3.1.2.1); none for a device (RFC 8628 has no such parameter) and on refresh.
    pub nonce: Option<String>,
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
    /// With the `openid` scope (OpenID Connect Core §3.1.3.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The user the tokens were issued to (for the audit trail; not sent).
    #[serde(skip)]
    pub username: String,
}

pub use crate::store::token::{AuthorizationStatus, Pauser};

/// One authorization (one approved device and the tokens that came from it), as its owner or
/// an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthorizationView {
    pub id: String,
    pub user_id: String,
    pub username: String,
    pub client_id: String,
    pub scope: String,
    /// The device's name (none on authorizations made before devices had names).
    pub name: Option<String>,
    pub authorized_at: Secs,
    /// The last refresh or use, if any since the approval.
    pub last_used_at: Option<Secs>,
    /// When its longest-lived live token expires (or the last one did).
    pub expires_at: Secs,
    pub status: AuthorizationStatus,
    /// Who disabled it, while it is disabled.
    pub disabled_by: Option<Pauser>,
}

/// Which authorizations a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationQuery {
    /// One user's (by id), or everyone's.
    pub user_id: Option<String>,
    /// One username's (the admin console's filter), or everyone's.
    pub username: Option<String>,
    /// Only those with this status.
    pub status: Option<AuthorizationStatus>,
}

/// One page of authorizations, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPage {
    pub rows: Vec<AuthorizationView>,
    /// 1-based, within `1..=pages`.
    pub page: usize,
    pub pages: usize,
    /// How many of all the selected authorizations (not only this page's) are live: active or
    /// disabled, what "revoke all" would still end.
    pub live: usize,
}

/// What `/oauth/tokeninfo` reports of a valid access token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub active: bool,
    pub user_id: String,
    /// Empty (and not sent) for client credentials: there is no user.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub client_id: String,
    pub scope: String,
    /// Who the token is for: its RFC 8707 resource(s), else its client.
    pub aud: crate::crypto::keys::Audience,
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

/// A refresh as requested: the presented token and its SHA-256, the client, an optional
/// narrower scope.
pub struct RefreshRequest {
    pub token: String,
    /// RFC 8707 resources asked for (none: all that were granted).
    pub resources: Vec<String>,
    pub hash: Digest32,
    pub client_id: String,
    pub scope: Option<String>,
    pub now: Millis,
    /// Whether this is the second try, after losing a race with another process (set by the
    /// token actor; a request starts with `false`).
    pub retried: bool,
}

impl RefreshRequest {
    pub fn new(token: &str, client_id: String, scope: Option<String>, now: Millis) -> Self {
        Self {
            token: token.to_owned(),
            resources: Vec::new(),
            hash: crate::crypto::secret::sha256(token),
            client_id,
            scope,
            now,
            retried: false,
        }
    }
}

/// The one answer for an access token that is not (or no longer) good.
pub fn invalid_token() -> OAuthError {
    OAuthError::invalid_token("the access token is invalid, expired or revoked")
}

/// Characters that show nothing or turn text around (Unicode format characters): refused in
/// names, which could otherwise pose as another device's in the lists and the audit trail.
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Why a device name cannot be used.
pub const DEVICE_NAME_RULE: &str = "A device name must be 1 to 64 characters, without control or invisible characters.";

/// A device name as typed, trimmed: 1 to [`crate::store::token::MAX_DEVICE_NAME`] characters,
/// none of them control characters.
pub fn device_name(typed: &str) -> Result<String, &'static str> {
    let name = typed.trim();
    let fits = (1..=crate::store::token::MAX_DEVICE_NAME).contains(&name.chars().count());
    if fits && !name.chars().any(|c| c.is_control() || invisible(c)) {
        Ok(name.to_owned())
    } else {
        Err(DEVICE_NAME_RULE)
    }
}

#[cfg(test)]
mod tests {
    use super::device_name;

    #[test]
    fn device_names_are_trimmed_and_bounded() {
        assert_eq!(device_name("  Living room TV "), Ok("Living room TV".to_owned()));
        assert!(device_name("   ").is_err());
        assert!(device_name(&"é".repeat(64)).is_ok(), "characters, not bytes");
        assert!(device_name(&"x".repeat(65)).is_err());
        assert!(device_name("tab\there").is_err());
        assert!(device_name("TV\u{202E}vt").is_err(), "no right-to-left override");
        assert!(device_name("T\u{200B}V").is_err(), "no zero-width space");
        assert!(device_name("<script>").is_ok(), "escaped where shown, not refused");
    }
}
