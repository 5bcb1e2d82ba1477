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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    Revoked,
    /// A refresh token replaced by rotation; presenting it again is reuse (RFC 9700 §4.14).
    Retired,
    /// Paused with its whole authorization: refused until enabled again (then active until
    /// its own expiry). Only active records become disabled, and only disabled ones active.
    Disabled,
}

impl TokenStatus {
    /// Revoked or retired: no later write may make it active or disabled again.
    pub fn is_final(self) -> bool {
        matches!(self, TokenStatus::Revoked | TokenStatus::Retired)
    }
}

/// Where an authorization (the tokens of one approved device) stands, as its owner and the
/// admin console see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationStatus {
    /// A token of it is active and unexpired.
    Active,
    /// None active, but one disabled and unexpired: enabling brings it back.
    Disabled,
    /// None live, and one was revoked.
    Revoked,
    Expired,
}

impl AuthorizationStatus {
    pub const ALL: [AuthorizationStatus; 4] = [Self::Active, Self::Disabled, Self::Revoked, Self::Expired];

    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The status of an authorization whose records have these statuses and expiries, at `now`.
    pub fn of<'a>(records: impl IntoIterator<Item = (&'a TokenStatus, Secs)>, now: Secs) -> Self {
        let (mut live, mut paused, mut revoked) = (false, false, false);
        for (status, expires_at) in records {
            let unexpired = expires_at > now;
            live |= *status == TokenStatus::Active && unexpired;
            paused |= *status == TokenStatus::Disabled && unexpired;
            revoked |= *status == TokenStatus::Revoked;
        }
        if live {
            Self::Active
        } else if paused {
            Self::Disabled
        } else if revoked {
            Self::Revoked
        } else {
            Self::Expired
        }
    }
}

/// The longest device name, in characters.
pub const MAX_DEVICE_NAME: usize = 64;

/// Who disabled an authorization, which decides who may enable it again: its owner only
/// what they disabled themselves, a client-wide enable only what a client-wide disable
/// paused, an administrator anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pauser {
    Owner,
    Admin,
    /// An administrator, for every authorization of a client at once.
    Client,
}

impl Pauser {
    pub fn name(self) -> &'static str {
        match self {
            Pauser::Owner => "owner",
            Pauser::Admin => "admin",
            Pauser::Client => "client",
        }
    }

    /// Whether this one may enable what `paused_by` disabled (`None`: a record from before
    /// pausers were kept, which only an administrator enables).
    pub fn may_enable(self, paused_by: Option<Pauser>) -> bool {
        self == Pauser::Admin || paused_by == Some(self)
    }

    /// Whether a disable by this one takes over a pause by `paused_by`.
    pub fn takes_over(self, paused_by: Option<Pauser>) -> bool {
        Self::rank(paused_by) < Self::rank(Some(self))
    }

    /// Whose pause stands over whose: an administrator's over a client-wide one's over the
    /// owner's (`None` counts as an administrator's). A disable by a higher one takes over a
    /// lower one's pause, so that the owner cannot lift what an administrator meant.
    fn rank(paused_by: Option<Pauser>) -> u8 {
        match paused_by {
            Some(Pauser::Owner) => 0,
            Some(Pauser::Client) => 1,
            Some(Pauser::Admin) | None => 2,
        }
    }
}

/// A change to every token of an authorization (or of a client's authorizations) other than
/// revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amendment {
    /// Active tokens become disabled, by this one.
    Disable(Pauser),
    /// Disabled tokens become active again, those this one may enable.
    Enable(Pauser),
    /// Every token gets this device name.
    Rename(String),
}

impl Amendment {
    /// `r` as amended, or `None` if this amendment leaves it as it is.
    pub fn apply(&self, r: &TokenRecord) -> Option<TokenRecord> {
        match self {
            Amendment::Disable(by)
                if r.status == TokenStatus::Active || (r.status == TokenStatus::Disabled && by.takes_over(r.disabled_by)) =>
            {
                Some(TokenRecord {
                    status: TokenStatus::Disabled,
                    disabled_by: Some(*by),
                    ..r.clone()
                })
            }
            Amendment::Enable(by) if r.status == TokenStatus::Disabled && by.may_enable(r.disabled_by) => Some(TokenRecord {
                status: TokenStatus::Active,
                disabled_by: None,
                ..r.clone()
            }),
            Amendment::Rename(name) if r.name.as_deref() != Some(name) => Some(TokenRecord {
                name: Some(name.clone()),
                ..r.clone()
            }),
            _ => None,
        }
    }
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
    /// The last use; for a retired refresh token, when it was replaced.
    #[serde(default)]
    pub last_used_at: Option<Secs>,
    /// The device's name, given at approval (else the client's name) or later by its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a refresh token retired by rotation: the id of the refresh token that replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// With a reuse grace, that successor sealed under this (retired) token: what a reuse
    /// within `REFRESH_TOKEN_REUSE_GRACE` is answered with. Erased once the grace is over
    /// (see [`TokenRepo::prune`]), so an old token never opens the way to a later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_successor: Option<String>,
    /// Who disabled it, while disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<Pauser>,
    /// When the person signed in for the approval this token came from (OpenID Connect
    /// `auth_time`, repeated in the `id_token` of each refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<Secs>,
    /// Issued to a client acting for itself (client credentials): no user; `user_id` is the
    /// client's id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub machine: bool,
    /// RFC 8707: for an access token, the resources it is for (its `aud`); for a refresh
    /// token, the resources granted, which later refreshes may narrow but never widen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

impl TokenRecord {
    /// Whether it was issued to a client acting for itself (client credentials): no user, the
    /// client its subject.
    pub fn is_machine(&self) -> bool {
        self.machine
    }
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
    /// Only those with this status at `now`.
    pub status: Option<AuthorizationStatus>,
    pub now: Secs,
}

/// One page of authorizations as stored: their ids, newest first (by first issue, then id),
/// how many the filter selects in all, and how many of those are live (active or disabled:
/// what a revocation would still end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPage {
    pub ids: Vec<String>,
    pub total: usize,
    pub live: usize,
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
    /// Applies `change` to every token of `scope` as stored (with the same lock as
    /// [`TokenRepo::revoke`], so a rotation under way either finishes first and its tokens are
    /// amended too, or finds its refresh token disabled). Revoked and retired tokens are never
    /// made active. Answers how many records changed.
    fn amend(&self, scope: RevokeScope, change: Amendment) -> Pending<u64>;
    /// Revokes every token of `scope` as stored, whichever process issued or rotated it; a
    /// rotation under way for the same authorization either finishes first (and its tokens
    /// are revoked too) or finds its refresh token revoked. Answers how many records changed.
    fn revoke(&self, scope: RevokeScope) -> Pending<u64>;
    /// Deletes every stored record that expired before `expired_before`, and the issuance
    /// marks made before `marks_before` whose records are all gone, and erases the sealed
    /// successors of refresh tokens replaced before `unseal_before`, whichever process wrote
    /// them.
    fn prune(&self, expired_before: Secs, marks_before: Secs, unseal_before: Secs) -> Pending<()>;
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
