//! The token actor's records: one row per access or refresh token, grouped by authorization.

use serde::{Deserialize, Serialize};

use super::port::Pending;
use crate::time::Secs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    Revoked,
    /// A refresh token replaced by rotation; presenting it again is reuse (RFC 9700 §4.14).
    Retired,
}

/// The stored record of one token, keyed by its id (`jti` for access tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    /// SHA-256 (hex) of a refresh token or of a token-service access token; our own access
    /// tokens are found by `jti`.
    #[serde(default)]
    pub token_hash: Option<String>,
    pub user_id: String,
    pub username: String,
    pub client_id: String,
    pub scope: String,
    pub authorization_id: String,
    pub issued_at: Secs,
    pub expires_at: Secs,
    pub status: TokenStatus,
    #[serde(default)]
    pub last_used_at: Option<Secs>,
}

/// A token as a lookup names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    Id(String),
    Hash(String),
    /// Any token of this authorization.
    Authorization(String),
}

/// Whose tokens: a revocation's, or a read's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    Authorization(String),
    User(String),
    Client(String),
}

/// Which authorizations a page of them selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageFilter {
    /// Only this username's (as its first token names it).
    pub username: Option<String>,
    /// Only those with a token active at `now`.
    pub active_only: bool,
    pub now: Secs,
}

/// One page of authorizations as stored: their ids, newest first (by first issue, then id),
/// how many the filter selects in all, and how many of those are active.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPage {
    pub ids: Vec<String>,
    pub total: usize,
    pub active: usize,
}

/// Everything the token actor holds, as loaded at start.
#[derive(Debug, Default)]
pub struct TokenData {
    pub records: Vec<TokenRecord>,
    /// Authorizations whose tokens were issued, with when (the marks [`TokenRepo::issue`]
    /// checks; kept after the records are swept, for as long as a device code could still
    /// be redeemed).
    pub issued: Vec<(String, Secs)>,
}

/// The token records. Owner: the token actor.
pub trait TokenRepo: Send + Sync {
    /// Every stored token record and issuance mark (unreadable records are skipped).
    fn load(&self) -> Pending<TokenData>;
    /// The first tokens of an authorization (a redeemed device code). Written only if no
    /// token of `authorization_id` was ever issued; `Ok(false)` otherwise. This is what makes
    /// a device code redeem exactly once, whichever process redeems it.
    fn issue(&self, authorization_id: &str, records: &[TokenRecord]) -> Pending<bool>;
    /// A refresh: `records` (the new access token, and with rotation the new refresh token
    /// and the old one retired) are written only if the refresh token `old_id` is still
    /// active; `Ok(false)` when a rotation or revocation came first. So a refresh token
    /// rotates exactly once.
    fn refresh(&self, old_id: &str, records: &[TokenRecord]) -> Pending<bool>;
    /// Writes records as they now are (revocations, last use). Revocation is final: the
    /// owner never writes a revoked record back to active, and a backend shared by several
    /// processes must refuse to.
    fn update(&self, records: &[TokenRecord]) -> Pending<()>;
    /// Deletes long-expired records, and the issuance marks of `forget` (authorizations that
    /// can no longer be redeemed).
    fn remove(&self, ids: &[String], forget: &[String]) -> Pending<()>;
    /// Revokes every token of `scope` as stored, whichever process issued or rotated it; a
    /// rotation under way for the same authorization either finishes first (and its tokens
    /// are revoked too) or finds its refresh token revoked. Answers how many records changed.
    fn revoke(&self, scope: RevokeScope) -> Pending<u64>;
    /// Deletes every stored record that expired before `expired_before`, and the issuance
    /// marks made before `marks_before` whose records are all gone, whichever process wrote
    /// them.
    fn prune(&self, expired_before: Secs, marks_before: Secs) -> Pending<()>;
    /// Every record of the tokens `owner` selects, as stored now.
    fn owned_by(&self, owner: RevokeScope) -> Pending<Vec<TokenRecord>>;
    /// One page of the authorizations `filter` selects, as stored now.
    fn page(&self, filter: PageFilter, offset: usize, limit: usize) -> Pending<StoredPage>;
    /// Every record of these authorizations, as stored now.
    fn authorizations(&self, ids: &[String]) -> Pending<Vec<TokenRecord>>;
    /// Every record of one authorization, as stored now.
    fn authorization(&self, authorization_id: &str) -> Pending<Vec<TokenRecord>>;
    /// Every record of the authorization that holds the token with this id (`jti`) or this
    /// hash, as stored now; empty when there is no such token.
    fn holding(&self, token: TokenRef) -> Pending<Vec<TokenRecord>>;
}
