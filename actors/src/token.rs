//! The token actor.
//!
//! Owns every token record: access tokens (HS256 JWTs, each with a record so it can be listed
//! and revoked, or, with `TOKEN_PROVIDER_MODE=http_api`, tokens minted by the external token
//! service, whose SHA-256 is stored) and refresh tokens (opaque; only their SHA-256 is stored),
//! grouped by the authorization (the approval of one device) they came from. The live records
//! sit in memory, rebuilt from redb at start; every change is committed before the caller hears
//! of it. Records stay here whatever mints the tokens, so switching modes loses nothing.
//!
//! When the token service mints, the actor asks its provider off the mailbox and finishes the
//! issuance or refresh when the answer comes back ([`TokenMsg::Minted`]), re-checking
//! everything, since other requests were served meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, EventKind};
use crate::error::OAuthError;
use crate::provider::token::{MintedToken, TokenProviderMsg};
use crate::provider::{CallError, caller_gone};
use crate::secret::{self, Digest32};
use crate::store::{Op, Store, StoreError, Table, decode};
use crate::system::{Actors, ask_within, cast};

/// Unix seconds.
pub type Secs = u64;

#[derive(Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_enabled: bool,
    pub rotation: bool,
}

pub use crate::keys::JwtKeys;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: Secs,
    pub exp: Secs,
    pub jti: String,
}

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
    /// SHA-256 (hex) of a refresh token; access tokens are found by `jti`.
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

/// An issuance or refresh waiting for the token service's answer.
pub struct Pending(PendingKind);

impl PendingKind {
    fn reply(&self) -> &RpcReplyPort<Result<TokenResponse, OAuthError>> {
        match self {
            PendingKind::Issue { reply, .. } | PendingKind::Refresh { reply, .. } => reply,
        }
    }
}

enum PendingKind {
    Issue {
        grant: Grant,
        with: Vec<Op>,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    Refresh {
        hash: Digest32,
        client_id: String,
        scope: Option<String>,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
}

/// Messages of the token actor.
pub enum TokenMsg {
    /// Mints an access (and refresh) token for an approved grant; `with` are further ops
    /// committed in the same transaction (the device code's deletion).
    IssueForGrant {
        grant: Grant,
        with: Vec<Op>,
        now: Millis,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    /// `grant_type=refresh_token` (RFC 6749 §6), by SHA-256 of the presented token.
    Refresh {
        token_hash: Digest32,
        client_id: String,
        scope: Option<String>,
        now: Millis,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    /// Whether an access token (by verified `jti`) is still active.
    Validate {
        jti: String,
        now: Millis,
        reply: RpcReplyPort<Result<TokenInfo, OAuthError>>,
    },
    /// Whether an access token that is not one of our JWTs (one the token service minted) is
    /// still active: its record here, and the service's word when the service is configured.
    ValidateOpaque {
        token: String,
        now: Millis,
        reply: RpcReplyPort<Result<TokenInfo, OAuthError>>,
    },
    /// RFC 7662: the record of a token that is active now (an access token by verified
    /// `jti`; a refresh token or token-service access token by SHA-256), else `None`.
    Introspect {
        target: RevokeTarget,
        now: Millis,
        reply: RpcReplyPort<Option<TokenRecord>>,
    },
    /// RFC 7009. `client_id`, when the request named one, must own the token or nothing happens.
    /// Answers the owner's username when something was revoked.
    Revoke {
        target: RevokeTarget,
        client_id: Option<String>,
        reply: RpcReplyPort<Result<Option<String>, OAuthError>>,
    },
    /// Every token record of one user, newest first.
    ListForUser {
        user_id: String,
        reply: RpcReplyPort<Vec<TokenRecord>>,
    },
    /// The authorizations of one user (or of everyone), newest first.
    ListAuthorizations {
        user_id: Option<String>,
        now: Millis,
        reply: RpcReplyPort<Vec<AuthorizationView>>,
    },
    /// Revokes every token of one authorization; `owner`, when given, must own it. Answers
    /// whether there was such an authorization (of that owner) to revoke.
    RevokeAuthorization {
        authorization_id: String,
        owner: Option<String>,
        reply: RpcReplyPort<Result<Option<AuthorizationView>, OAuthError>>,
    },
    /// Revokes every token of a user, or of a client; answers how many authorizations.
    RevokeAll {
        of: Owner,
        reply: RpcReplyPort<Result<usize, OAuthError>>,
    },
    /// Internal: the tokens of an authorization are durable (its issuance is no longer in flight).
    Issued { authorization_id: String },
    /// Internal: drop records long expired.
    Sweep,
    /// Internal: the token service answered for a pending issuance or refresh.
    Minted {
        pending: Pending,
        minted: Result<MintedToken, CallError>,
    },
}

use crate::device::Millis;

/// The longest lifetime accepted from the token service, in seconds.
const MAX_MINTED_TTL: Secs = 366 * 24 * 3600;
/// Records are kept this long past expiry (for session lists), then swept.
const EXPIRED_KEEP: Secs = 24 * 3600;

/// The in-memory token records and their indexes: all logic, no I/O.
#[derive(Default)]
pub struct TokenBook {
    records: HashMap<String, TokenRecord>,
    refresh_by_hash: HashMap<Digest32, String>,
    /// Access tokens minted by the token service, by SHA-256.
    access_by_hash: HashMap<Digest32, String>,
    /// User id → their authorization ids.
    by_user: HashMap<String, Vec<String>>,
    by_authorization: HashMap<String, Vec<String>>,
}

/// A change to apply: the records to write.
struct Change {
    put: Vec<TokenRecord>,
}

fn digest_of(rec: &TokenRecord) -> Option<Digest32> {
    rec.token_hash
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <Digest32>::try_from(h).ok())
}

impl TokenBook {
    fn by_hash(&mut self, kind: TokenKind) -> &mut HashMap<Digest32, String> {
        match kind {
            TokenKind::Refresh => &mut self.refresh_by_hash,
            TokenKind::Access => &mut self.access_by_hash,
        }
    }

    fn upsert(&mut self, rec: TokenRecord) {
        if let Some(h) = digest_of(&rec) {
            self.by_hash(rec.kind).insert(h, rec.id.clone());
        }
        if !self.records.contains_key(&rec.id) {
            let ids = self.by_authorization.entry(rec.authorization_id.clone()).or_default();
            if ids.is_empty() {
                self.by_user
                    .entry(rec.user_id.clone())
                    .or_default()
                    .push(rec.authorization_id.clone());
            }
            ids.push(rec.id.clone());
        }
        self.records.insert(rec.id.clone(), rec);
    }

    fn remove(&mut self, id: &str) {
        let Some(rec) = self.records.remove(id) else { return };
        if let Some(h) = digest_of(&rec) {
            let index = self.by_hash(rec.kind);
            if index.get(&h).is_some_and(|i| *i == rec.id) {
                index.remove(&h);
            }
        }
        if let Some(ids) = self.by_authorization.get_mut(&rec.authorization_id) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_authorization.remove(&rec.authorization_id);
                if let Some(auths) = self.by_user.get_mut(&rec.user_id) {
                    auths.retain(|a| *a != rec.authorization_id);
                    if auths.is_empty() {
                        self.by_user.remove(&rec.user_id);
                    }
                }
            }
        }
    }

    /// One authorization's summary, from its records.
    fn authorization(&self, authorization_id: &str, now: Secs) -> Option<AuthorizationView> {
        let recs: Vec<&TokenRecord> = self
            .by_authorization
            .get(authorization_id)?
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        let first = recs.iter().min_by_key(|r| r.issued_at)?;
        let live = |r: &&&TokenRecord| r.status == TokenStatus::Active && r.expires_at > now;
        let status = if recs.iter().any(|r| live(&r)) {
            AuthorizationStatus::Active
        } else if recs.iter().any(|r| r.status == TokenStatus::Revoked) {
            AuthorizationStatus::Revoked
        } else {
            AuthorizationStatus::Expired
        };
        let expires_at = recs
            .iter()
            .filter(|r| live(r))
            .map(|r| r.expires_at)
            .max()
            .or_else(|| recs.iter().map(|r| r.expires_at).max())
            .unwrap_or(first.expires_at);
        let last_used_at = recs
            .iter()
            .filter_map(|r| r.last_used_at)
            .chain(recs.iter().map(|r| r.issued_at).filter(|t| *t > first.issued_at))
            .max();
        Some(AuthorizationView {
            id: authorization_id.to_owned(),
            user_id: first.user_id.clone(),
            username: first.username.clone(),
            client_id: first.client_id.clone(),
            scope: first.scope.clone(),
            authorized_at: first.issued_at,
            last_used_at,
            expires_at,
            status,
        })
    }

    /// Authorizations of `user_id` (or everyone's), newest first.
    fn authorizations(&self, user_id: Option<&str>, now: Secs) -> Vec<AuthorizationView> {
        let ids: Vec<&String> = match user_id {
            Some(u) => self.by_user.get(u).into_iter().flatten().collect(),
            None => self.by_authorization.keys().collect(),
        };
        let mut list: Vec<AuthorizationView> = ids.into_iter().filter_map(|a| self.authorization(a, now)).collect();
        list.sort_by(|a, b| b.authorized_at.cmp(&a.authorized_at).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// Applies `change` in memory and returns the ops that make it durable.
    fn apply(&mut self, change: &Change) -> Result<Vec<Op>, StoreError> {
        let ops = change
            .put
            .iter()
            .map(|r| Op::put(Table::Tokens, r.id.as_bytes().to_vec(), r))
            .collect::<Result<Vec<_>, _>>()?;
        for r in &change.put {
            self.upsert(r.clone());
        }
        Ok(ops)
    }

    /// Marks every live token of these authorizations revoked.
    fn revoke_authorizations<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Change {
        let mut change = Change { put: Vec::new() };
        for a in ids {
            change.put.extend(self.revoke_authorization(a).put);
        }
        change
    }

    /// Marks every live token of an authorization revoked.
    fn revoke_authorization(&self, authorization_id: &str) -> Change {
        let mut change = Change { put: Vec::new() };
        for id in self.by_authorization.get(authorization_id).into_iter().flatten() {
            if let Some(r) = self.records.get(id)
                && r.status != TokenStatus::Revoked
            {
                change.put.push(TokenRecord {
                    status: TokenStatus::Revoked,
                    ..r.clone()
                });
            }
        }
        change
    }
}

fn scope_within(requested: &str, granted: &str) -> bool {
    requested.split_whitespace().all(|s| granted.split_whitespace().any(|g| g == s))
}

pub struct TokenActor;

pub struct TokenArgs {
    pub config: TokenConfig,
    pub keys: JwtKeys,
    pub store: Store,
    /// To reach the token-service provider.
    pub actors: Actors,
    /// The token service's timeout when it mints access tokens, else `None` (local JWTs).
    pub token_api_timeout: Option<Duration>,
}

pub struct TokenState {
    book: TokenBook,
    /// Authorizations whose tokens are being committed: a second request for one of them is
    /// told to retry (the first may yet fail), not that the code was used.
    issuing: std::collections::HashSet<String>,
    config: TokenConfig,
    keys: JwtKeys,
    store: Store,
    actors: Actors,
    token_api_timeout: Option<Duration>,
}

/// What the token service's failure means to the client.
fn mint_failed(e: &CallError) -> OAuthError {
    match e {
        CallError::Busy | CallError::Gone => OAuthError::unavailable("the token service is unavailable; try again shortly"),
        _ => OAuthError::server_error("the token service did not issue a token"),
    }
}

/// What a failed validation call means to the client: the service's refusal is an invalid
/// token; not reaching it is a retryable 503.
fn validation_failed(e: &CallError) -> OAuthError {
    match e {
        CallError::Declined(_) | CallError::BadReply(_) => OAuthError::invalid_token("the access token is invalid, expired or revoked"),
        CallError::Status(s) if (400..500).contains(s) && *s != 429 => {
            OAuthError::invalid_token("the access token is invalid, expired or revoked")
        }
        _ => OAuthError::unavailable("the token service could not be reached; try again shortly"),
    }
}

impl TokenState {
    /// Asks the token service for an access token, off the mailbox; the answer comes back as
    /// [`TokenMsg::Minted`] carrying `pending`.
    fn request_mint(&self, myself: &ActorRef<TokenMsg>, timeout: Duration, g: &Grant, scope: &str, pending: PendingKind) {
        let actors = self.actors.clone();
        let myself = myself.clone();
        let (user_id, client_id, scopes) = (g.user_id.clone(), g.client_id.clone(), scope.to_owned());
        let expires_in = self.config.access_ttl.as_secs();
        tokio::spawn(async move {
            let call = async {
                let Ok(p) = actors.token_provider() else {
                    return Err(CallError::Gone);
                };
                ask_within(&p, timeout + Duration::from_secs(1), |reply| TokenProviderMsg::Generate {
                    user_id,
                    client_id,
                    scopes,
                    expires_in,
                    reply,
                })
                .await
                .unwrap_or(Err(CallError::Gone))
            };
            // A requester that has gone gets nothing minted for it.
            let minted = tokio::select! {
                m = call => m,
                () = caller_gone(pending.reply()) => Err(CallError::Abandoned),
            };
            if let Err(e) = &minted {
                tracing::warn!(provider = "token_api", reason = %e, "the token service did not mint a token");
            }
            let pending = Pending(pending);
            if cast(&myself, TokenMsg::Minted { pending, minted }).is_err() {
                tracing::warn!("the token actor stopped while a token was being minted");
            }
        });
    }

    /// An access token and its record: a JWT signed here, or the one the token service minted.
    fn mint_access(
        &self,
        g: &Grant,
        scope: &str,
        now: Secs,
        minted: Option<MintedToken>,
    ) -> Result<(String, TokenRecord, u64), OAuthError> {
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(m) = minted {
            // One record per token: a token the service hands out twice would make two records
            // answer for one token (and revoking one leave the other).
            if self.book.access_by_hash.contains_key(&secret::sha256(&m.access_token)) {
                tracing::error!(
                    provider = "token_api",
                    "the token service returned an access token it had issued before; refused"
                );
                return Err(OAuthError::server_error("the token service did not issue a new token"));
            }
            // A service's answer cannot make a token live longer than a year.
            let ttl = m.expires_in.unwrap_or(self.config.access_ttl.as_secs()).min(MAX_MINTED_TTL);
            let rec = TokenRecord {
                id,
                kind: TokenKind::Access,
                token_hash: Some(secret::sha256_hex(&m.access_token)),
                user_id: g.user_id.clone(),
                username: g.username.clone(),
                client_id: g.client_id.clone(),
                scope: scope.to_owned(),
                authorization_id: g.authorization_id.clone(),
                issued_at: now,
                expires_at: now.saturating_add(ttl),
                status: TokenStatus::Active,
                last_used_at: None,
            };
            return Ok((m.access_token, rec, ttl));
        }
        let exp = now + self.config.access_ttl.as_secs();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: g.user_id.clone(),
            aud: g.client_id.clone(),
            client_id: g.client_id.clone(),
            scope: scope.to_owned(),
            iat: now,
            exp,
            jti: id.clone(),
        };
        let jwt = self.keys.sign(&claims)?;
        let rec = TokenRecord {
            id,
            kind: TokenKind::Access,
            token_hash: None,
            user_id: g.user_id.clone(),
            username: g.username.clone(),
            client_id: g.client_id.clone(),
            scope: scope.to_owned(),
            authorization_id: g.authorization_id.clone(),
            issued_at: now,
            expires_at: exp,
            status: TokenStatus::Active,
            last_used_at: None,
        };
        Ok((jwt, rec, self.config.access_ttl.as_secs()))
    }

    fn mint_refresh(&self, g: &Grant, now: Secs) -> (String, TokenRecord) {
        let token = secret::random_token(32);
        let rec = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            kind: TokenKind::Refresh,
            token_hash: Some(secret::sha256_hex(&token)),
            user_id: g.user_id.clone(),
            username: g.username.clone(),
            client_id: g.client_id.clone(),
            scope: g.scope.clone(),
            authorization_id: g.authorization_id.clone(),
            issued_at: now,
            expires_at: now + self.config.refresh_ttl.as_secs(),
            status: TokenStatus::Active,
            last_used_at: None,
        };
        (token, rec)
    }

    /// Applies `change`, queues its write (plus `with`), and replies `answer` once durable;
    /// `then` is sent to this actor after the commit.
    ///
    /// If the commit fails, memory has run ahead of the disk: the actor stops, and the
    /// supervisor starts it again from what the store holds (redb also refuses further writes
    /// after an I/O error, so patching records in memory would only guess).
    fn commit<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        change: Change,
        with: Vec<Op>,
        answer: Result<T, OAuthError>,
        reply: RpcReplyPort<Result<T, OAuthError>>,
        then: Option<TokenMsg>,
    ) {
        let mut ops = match self.book.apply(&change) {
            Ok(ops) => ops,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        ops.extend(with);
        let done = self.store.submit(ops);
        let myself = myself.clone();
        tokio::spawn(async move {
            match done.await {
                Ok(()) => {
                    if let Some(msg) = then {
                        let _ = cast(&myself, msg);
                    }
                    let _ = reply.send(answer);
                }
                Err(e) => {
                    myself.stop(Some(format!("a commit failed ({e}); rebuilding from the store")));
                    let _ = reply.send(Err(e.into()));
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        grant: Grant,
        with: Vec<Op>,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
        minted: Option<MintedToken>,
    ) {
        // One authorization yields tokens once: this holds even if the device actor restarted
        // mid-redemption and offers the same approval again.
        if self.issuing.contains(&grant.authorization_id) {
            let _ = reply.send(Err(OAuthError::unavailable(
                "tokens for this device code are being issued; poll again",
            )));
            return;
        }
        if self.book.by_authorization.contains_key(&grant.authorization_id) {
            let _ = reply.send(Err(OAuthError::invalid_grant("the device code was already used")));
            return;
        }
        // The approver was disabled or deleted, or the client disabled, since the approval.
        let dir = self.actors.clients();
        if !dir.user_active(&grant.user_id) || !dir.get(&grant.client_id).is_some_and(|c| c.enabled) {
            let _ = reply.send(Err(OAuthError::invalid_grant("the authorization is no longer valid")));
            return;
        }
        if let (Some(timeout), None) = (self.token_api_timeout, &minted) {
            // The authorization counts as in flight while the service mints.
            self.issuing.insert(grant.authorization_id.clone());
            let scope = grant.scope.clone();
            let g = grant.clone();
            self.request_mint(myself, timeout, &g, &scope, PendingKind::Issue { grant, with, now, reply });
            return;
        }
        let (jwt, access, expires_in) = match self.mint_access(&grant, &grant.scope, now, minted) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut put = vec![access];
        let refresh_token = self.config.refresh_enabled.then(|| {
            let (token, rec) = self.mint_refresh(&grant, now);
            put.push(rec);
            token
        });
        let answer = TokenResponse {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_in,
            scope: grant.scope.clone(),
            refresh_token,
            username: grant.username.clone(),
        };
        tracing::info!(client_id = %grant.client_id, user_id = %grant.user_id, "tokens issued");
        let settled = TokenMsg::Issued {
            authorization_id: grant.authorization_id.clone(),
        };
        self.issuing.insert(grant.authorization_id.clone());
        self.commit(myself, Change { put }, with, Ok(answer), reply, Some(settled));
    }

    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        hash: Digest32,
        client_id: String,
        scope: Option<String>,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
        minted: Option<MintedToken>,
    ) {
        let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let Some(old) = self
            .book
            .refresh_by_hash
            .get(&hash)
            .and_then(|id| self.book.records.get(id))
            .cloned()
        else {
            let _ = reply.send(Err(invalid()));
            return;
        };
        if old.client_id != client_id || !self.owner_allowed(&old) {
            let _ = reply.send(Err(invalid()));
            return;
        }
        match old.status {
            TokenStatus::Revoked => {
                let _ = reply.send(Err(invalid()));
                return;
            }
            TokenStatus::Retired => {
                // RFC 9700 §4.14: a rotated-out refresh token came back; assume it was stolen
                // and end the whole authorization.
                tracing::warn!(client_id = %old.client_id, user_id = %old.user_id, authorization_id = %old.authorization_id, "refresh token reuse detected; revoking the authorization");
                self.actors.audit(
                    AuditEvent::new(EventKind::RefreshReuseDetected, format!("client:{}", old.client_id), false)
                        .subject(old.username.clone())
                        .client(old.client_id.clone())
                        .detail(format!("authorization {} revoked", old.authorization_id)),
                );
                let change = self.book.revoke_authorization(&old.authorization_id);
                let err = Err(OAuthError::invalid_grant(
                    "the refresh token was already used; the authorization has been revoked",
                ));
                self.commit(myself, change, Vec::new(), err, reply, None);
                return;
            }
            TokenStatus::Active => {}
        }
        if old.expires_at <= now {
            let _ = reply.send(Err(invalid()));
            return;
        }
        let granted_scope = match scope.as_deref().map(str::trim) {
            None | Some("") => old.scope.clone(),
            Some(s) if scope_within(s, &old.scope) => s.split_whitespace().collect::<Vec<_>>().join(" "),
            Some(_) => {
                let _ = reply.send(Err(OAuthError::invalid_scope(
                    "the requested scope exceeds the scope originally granted",
                )));
                return;
            }
        };
        let grant = Grant {
            user_id: old.user_id.clone(),
            username: old.username.clone(),
            client_id: old.client_id.clone(),
            scope: old.scope.clone(),
            authorization_id: old.authorization_id.clone(),
        };
        if let (Some(timeout), None) = (self.token_api_timeout, &minted) {
            // Everything is checked again when the token comes back.
            let pending = PendingKind::Refresh {
                hash,
                client_id,
                scope,
                now,
                reply,
            };
            self.request_mint(myself, timeout, &grant, &granted_scope, pending);
            return;
        }
        let scope = granted_scope;
        let (jwt, access, expires_in) = match self.mint_access(&grant, &scope, now, minted) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut change = Change { put: vec![access] };
        let refresh_token = if self.config.rotation {
            let (token, rec) = self.mint_refresh(&grant, now);
            change.put.push(rec);
            change.put.push(TokenRecord {
                status: TokenStatus::Retired,
                last_used_at: Some(now),
                ..old
            });
            token
        } else {
            change.put.push(TokenRecord {
                last_used_at: Some(now),
                ..old
            });
            String::new()
        };
        let answer = TokenResponse {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_in,
            scope,
            refresh_token: (!refresh_token.is_empty()).then_some(refresh_token),
            username: grant.username.clone(),
        };
        self.commit(myself, change, Vec::new(), Ok(answer), reply, None);
    }

    fn validate(&self, jti: &str, now: Secs) -> Result<TokenInfo, OAuthError> {
        let invalid = || OAuthError::invalid_token("the access token is invalid, expired or revoked");
        let r = self.book.records.get(jti).filter(|r| self.owner_allowed(r)).ok_or_else(invalid)?;
        Self::active_info(r, now).ok_or_else(invalid)
    }

    fn introspect(&self, target: &RevokeTarget, now: Secs) -> Option<TokenRecord> {
        let id = match target {
            RevokeTarget::AccessId(jti) => jti,
            RevokeTarget::Hash(hash) => self.book.refresh_by_hash.get(hash).or_else(|| self.book.access_by_hash.get(hash))?,
        };
        self.book
            .records
            .get(id)
            .filter(|r| r.status == TokenStatus::Active && r.expires_at > now && self.owner_allowed(r))
            .cloned()
    }

    /// Tokens of a disabled or deleted client, or of a disabled or deleted user, are not valid.
    fn owner_allowed(&self, r: &TokenRecord) -> bool {
        let dir = self.actors.clients();
        dir.get(&r.client_id).is_some_and(|c| c.enabled) && dir.user_active(&r.user_id)
    }

    /// A token-service token: active here, and (when the service is configured) valid there.
    fn validate_opaque(&self, token: String, now: Secs, reply: RpcReplyPort<Result<TokenInfo, OAuthError>>) {
        let invalid = || OAuthError::invalid_token("the access token is invalid, expired or revoked");
        let info = self
            .book
            .access_by_hash
            .get(&secret::sha256(&token))
            .and_then(|id| self.book.records.get(id))
            .filter(|r| self.owner_allowed(r))
            .and_then(|r| Self::active_info(r, now));
        let (Some(info), Some(timeout)) = (info.clone(), self.token_api_timeout) else {
            // Without the service (the mode was switched back), the record alone decides.
            let _ = reply.send(info.ok_or_else(invalid));
            return;
        };
        let actors = self.actors.clone();
        tokio::spawn(async move {
            let call = async {
                let Ok(p) = actors.token_provider() else {
                    return Err(CallError::Gone);
                };
                ask_within(&p, timeout + Duration::from_secs(1), |r| TokenProviderMsg::Validate {
                    token,
                    reply: r,
                })
                .await
                .unwrap_or(Err(CallError::Gone))
            };
            let valid = tokio::select! {
                v = call => v,
                () = caller_gone(&reply) => return,
            };
            let _ = reply.send(match valid {
                Ok(true) => Ok(info),
                Ok(false) => Err(invalid()),
                Err(e) => {
                    tracing::warn!(provider = "token_api", reason = %e, "could not validate a token with the token service");
                    Err(validation_failed(&e))
                }
            });
        });
    }

    fn active_info(r: &TokenRecord, now: Secs) -> Option<TokenInfo> {
        if r.kind != TokenKind::Access || r.status != TokenStatus::Active || r.expires_at <= now {
            return None;
        }
        Some(TokenInfo {
            active: true,
            user_id: r.user_id.clone(),
            username: r.username.clone(),
            client_id: r.client_id.clone(),
            scope: r.scope.clone(),
            exp: r.expires_at,
            iat: r.issued_at,
        })
    }

    fn revoke(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        target: RevokeTarget,
        client_id: Option<String>,
        reply: RpcReplyPort<Result<Option<String>, OAuthError>>,
    ) {
        let id = match &target {
            RevokeTarget::AccessId(id) => Some(id.clone()),
            RevokeTarget::Hash(h) => self
                .book
                .refresh_by_hash
                .get(h)
                .or_else(|| self.book.access_by_hash.get(h))
                .cloned(),
        };
        let Some(rec) = id.and_then(|id| self.book.records.get(&id)).cloned() else {
            // RFC 7009 §2.2: an invalid token is not an error.
            let _ = reply.send(Ok(None));
            return;
        };
        if client_id.as_deref().is_some_and(|c| c != rec.client_id) {
            tracing::info!(token_client = %rec.client_id, "revocation by another client ignored");
            let _ = reply.send(Ok(None));
            return;
        }
        let owner = rec.username.clone();
        let change = match rec.kind {
            // Revoking a refresh token ends the authorization it belongs to.
            TokenKind::Refresh => self.book.revoke_authorization(&rec.authorization_id),
            TokenKind::Access if rec.status == TokenStatus::Active => Change {
                put: vec![TokenRecord {
                    status: TokenStatus::Revoked,
                    ..rec
                }],
            },
            TokenKind::Access => Change { put: Vec::new() },
        };
        let answer = (!change.put.is_empty()).then_some(owner);
        self.commit(myself, change, Vec::new(), Ok(answer), reply, None);
    }

    fn sweep(&mut self, now: Secs) {
        let old: Vec<String> = self
            .book
            .records
            .values()
            .filter(|r| r.expires_at.saturating_add(EXPIRED_KEEP) <= now)
            .map(|r| r.id.clone())
            .collect();
        if old.is_empty() {
            return;
        }
        let ops = old.iter().map(|id| Op::delete(Table::Tokens, id.as_bytes().to_vec())).collect();
        for id in &old {
            self.book.remove(id);
        }
        let done = self.store.submit(ops);
        tokio::spawn(async move {
            if let Err(e) = done.await {
                tracing::warn!(error = %e, "could not delete expired token records");
            }
        });
    }
}

impl Actor for TokenActor {
    type Msg = TokenMsg;
    type State = TokenState;
    type Arguments = TokenArgs;

    async fn pre_start(&self, _myself: ActorRef<TokenMsg>, args: TokenArgs) -> Result<TokenState, ActorProcessingErr> {
        MAILBOX.reset();
        let book = args
            .store
            .read(|r| {
                let mut book = TokenBook::default();
                r.scan(Table::Tokens, |_, v| {
                    match decode::<TokenRecord>(v) {
                        Ok(rec) => book.upsert(rec),
                        Err(e) => tracing::warn!(error = %e, "skipping an unreadable token record"),
                    }
                    Ok(())
                })?;
                Ok(book)
            })
            .await?;
        tracing::info!(tokens = book.records.len(), "token records loaded");
        Ok(TokenState {
            issuing: Default::default(),
            book,
            config: args.config,
            keys: args.keys,
            store: args.store,
            actors: args.actors,
            token_api_timeout: args.token_api_timeout,
        })
    }

    async fn handle(&self, myself: ActorRef<TokenMsg>, msg: TokenMsg, st: &mut TokenState) -> Result<(), ActorProcessingErr> {
        MAILBOX.received();
        match msg {
            TokenMsg::IssueForGrant { grant, with, now, reply } => st.issue(&myself, grant, with, now / 1000, reply, None),
            TokenMsg::Refresh {
                token_hash,
                client_id,
                scope,
                now,
                reply,
            } => st.refresh(&myself, token_hash, client_id, scope, now / 1000, reply, None),
            TokenMsg::Validate { jti, now, reply } => {
                let _ = reply.send(st.validate(&jti, now / 1000));
            }
            TokenMsg::ValidateOpaque { token, now, reply } => st.validate_opaque(token, now / 1000, reply),
            TokenMsg::Introspect { target, now, reply } => {
                let _ = reply.send(st.introspect(&target, now / 1000));
            }
            TokenMsg::Minted { pending, minted } => match (pending.0, minted) {
                (PendingKind::Issue { grant, with, now, reply }, minted) => {
                    st.issuing.remove(&grant.authorization_id);
                    match minted {
                        // Nobody is waiting: spend nothing (the device code stays approved).
                        Ok(_) if reply.is_closed() => {}
                        Ok(m) => st.issue(&myself, grant, with, now, reply, Some(m)),
                        Err(e) => {
                            let _ = reply.send(Err(mint_failed(&e)));
                        }
                    }
                }
                (
                    PendingKind::Refresh {
                        hash,
                        client_id,
                        scope,
                        now,
                        reply,
                    },
                    minted,
                ) => match minted {
                    // Nobody is waiting: leave the refresh token as it was (no rotation).
                    Ok(_) if reply.is_closed() => {}
                    Ok(m) => st.refresh(&myself, hash, client_id, scope, now, reply, Some(m)),
                    Err(e) => {
                        let _ = reply.send(Err(mint_failed(&e)));
                    }
                },
            },
            TokenMsg::Revoke { target, client_id, reply } => st.revoke(&myself, target, client_id, reply),
            TokenMsg::ListForUser { user_id, reply } => {
                let mut list: Vec<TokenRecord> = st.book.records.values().filter(|r| r.user_id == user_id).cloned().collect();
                list.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id)));
                let _ = reply.send(list);
            }
            TokenMsg::ListAuthorizations { user_id, now, reply } => {
                let _ = reply.send(st.book.authorizations(user_id.as_deref(), now / 1000));
            }
            TokenMsg::RevokeAuthorization {
                authorization_id,
                owner,
                reply,
            } => {
                let now = crate::now_ms() / 1000;
                let found = st
                    .book
                    .authorization(&authorization_id, now)
                    .filter(|a| owner.as_ref().is_none_or(|o| *o == a.user_id));
                match found {
                    Some(view) => {
                        let change = st.book.revoke_authorization(&authorization_id);
                        st.commit(&myself, change, Vec::new(), Ok(Some(view)), reply, None);
                    }
                    None => {
                        let _ = reply.send(Ok(None));
                    }
                }
            }
            TokenMsg::RevokeAll { of, reply } => {
                let ids: Vec<String> = match &of {
                    Owner::User(u) => st.book.by_user.get(u).cloned().unwrap_or_default(),
                    Owner::Client(c) => st
                        .book
                        .by_authorization
                        .iter()
                        .filter(|(_, recs)| recs.first().and_then(|r| st.book.records.get(r)).is_some_and(|r| r.client_id == *c))
                        .map(|(a, _)| a.clone())
                        .collect(),
                };
                let now = crate::now_ms() / 1000;
                let live = ids
                    .iter()
                    .filter(|a| {
                        st.book
                            .authorization(a, now)
                            .is_some_and(|v| v.status == AuthorizationStatus::Active)
                    })
                    .count();
                let change = st.book.revoke_authorizations(&ids);
                st.commit(&myself, change, Vec::new(), Ok(live), reply, None);
            }
            TokenMsg::Issued { authorization_id } => {
                st.issuing.remove(&authorization_id);
            }
            TokenMsg::Sweep => st.sweep(crate::now_ms() / 1000),
        }
        Ok(())
    }
}

/// This actor's mailbox depth (see [`crate::metrics::Mailbox`]).
static MAILBOX: crate::metrics::Mailbox = crate::metrics::Mailbox::new("token");

impl crate::system::Tracked for TokenMsg {
    fn mailbox() -> &'static crate::metrics::Mailbox {
        &MAILBOX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_and_tamper_detection() {
        let keys = JwtKeys::new(&[7u8; 32], "http://issuer");
        let claims = AccessClaims {
            iss: "http://issuer".into(),
            sub: "u".into(),
            aud: "c".into(),
            client_id: "c".into(),
            scope: "read".into(),
            iat: crate::now_ms() / 1000,
            exp: crate::now_ms() / 1000 + 60,
            jti: "j".into(),
        };
        let jwt = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&jwt), Some(claims.clone()));
        let mut tampered = jwt.clone();
        tampered.push('x');
        assert_eq!(keys.verify(&tampered), None);
        assert_eq!(JwtKeys::new(&[8u8; 32], "http://issuer").verify(&jwt), None);
        assert_eq!(JwtKeys::new(&[7u8; 32], "http://other").verify(&jwt), None);
        let expired = AccessClaims { exp: 1, iat: 0, ..claims };
        let jwt = keys.sign(&expired).unwrap();
        assert_eq!(keys.verify(&jwt), None);
        assert!(keys.verify_ignoring_expiry(&jwt).is_some());
    }

    #[test]
    fn scope_narrowing_is_checked_word_by_word() {
        assert!(scope_within("read", "read write"));
        assert!(scope_within("write read", "read write"));
        assert!(!scope_within("admin", "read write"));
        assert!(!scope_within("rea", "read write"));
    }

    fn rec(id: &str, auth: &str, kind: TokenKind) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            kind,
            token_hash: (kind == TokenKind::Refresh).then(|| secret::sha256_hex(id)),
            user_id: "u".into(),
            username: "alice".into(),
            client_id: "c".into(),
            scope: "read".into(),
            authorization_id: auth.into(),
            issued_at: 1,
            expires_at: 100,
            status: TokenStatus::Active,
            last_used_at: None,
        }
    }

    #[test]
    fn revoking_an_authorization_touches_only_its_tokens() {
        let mut b = TokenBook::default();
        b.upsert(rec("a1", "A", TokenKind::Access));
        b.upsert(rec("r1", "A", TokenKind::Refresh));
        b.upsert(rec("a2", "B", TokenKind::Access));
        let change = b.revoke_authorization("A");
        let ids: Vec<_> = change.put.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a1", "r1"]);
        assert!(change.put.iter().all(|r| r.status == TokenStatus::Revoked));
        b.apply(&change).unwrap();
        assert_eq!(b.records["a2"].status, TokenStatus::Active);
        assert!(b.refresh_by_hash.contains_key(&secret::sha256("r1")));
        b.remove("r1");
        assert!(!b.refresh_by_hash.contains_key(&secret::sha256("r1")));
        assert_eq!(b.by_authorization["A"], vec!["a1".to_string()]);
    }
}

/// Property tests: any string offered as a JWT is refused without panicking, and a token we
/// signed does not survive any single-character change.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn garbage_is_never_a_valid_token(s in "\\PC{0,400}", dots in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}") {
            let keys = JwtKeys::new(&[3u8; 32], "http://issuer");
            prop_assert!(keys.verify(&s).is_none());
            prop_assert!(keys.verify(&dots).is_none());
            prop_assert!(keys.verify_ignoring_expiry(&dots).is_none());
        }

        #[test]
        fn a_changed_character_breaks_the_signature(at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_-]") {
            let keys = JwtKeys::new(&[3u8; 32], "http://issuer");
            let claims = AccessClaims {
                iss: "http://issuer".into(),
                sub: "u".into(),
                aud: "c".into(),
                client_id: "c".into(),
                scope: "read".into(),
                iat: 1,
                exp: u64::MAX / 4,
                jti: "j".into(),
            };
            let token = keys.sign(&claims).unwrap();
            let i = at.index(token.len());
            let mut bytes = token.clone().into_bytes();
            if bytes[i] != b'.' && bytes[i] != with.as_bytes()[0] {
                bytes[i] = with.as_bytes()[0];
                let changed = String::from_utf8(bytes).unwrap();
                if let Some(c) = keys.verify(&changed) {
                    // Base64 can spell the same bytes twice only in the last character's spare bits.
                    prop_assert_eq!(c, claims);
                }
            }
        }
    }
}
