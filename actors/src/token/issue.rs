//! Issuance for an approved grant, and refresh (RFC 6749 §6, rotation per RFC 9700 §4.14).

use ractor::{ActorRef, RpcReplyPort};

use super::TokenState;
use super::book::scope_within;
use super::msg::{PendingKind, TokenMsg};
use super::types::{Grant, RefreshRequest, TokenResponse};
use crate::audit::{AuditEvent, EventKind};
use crate::crypto::keys::{AccessClaims, Audience, IdClaims};
use crate::crypto::secret;
use crate::error::OAuthError;
use crate::provider::token_service::MintedToken;
use crate::runtime::commit::{after, rebuild};
use crate::store::Pending;
use crate::store::token::{RevokeScope, TokenKind, TokenRecord, TokenRef, TokenStatus};
use crate::time::Secs;

/// The longest lifetime accepted from the token service, in seconds.
const MAX_MINTED_TTL: Secs = 366 * 24 * 3600;

fn invalid_refresh() -> OAuthError {
    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
}

/// A new, active record of a `kind` token of grant `g` for `scope`, issued and expiring at
/// `issued_at` and `expires_at` (its id and hash are the caller's to set). An access token's
/// resources are its audience; a refresh token's, those granted.
fn new_record(g: &Grant, kind: TokenKind, scope: &str, (issued_at, expires_at): (Secs, Secs)) -> TokenRecord {
    TokenRecord {
        id: String::new(),
        kind,
        token_hash: None,
        user_id: g.user_id.clone(),
        username: g.username.clone(),
        client_id: g.client_id.clone(),
        scope: scope.to_owned(),
        authorization_id: g.authorization_id.clone(),
        issued_at,
        expires_at,
        status: TokenStatus::Active,
        last_used_at: None,
        name: g.name.clone(),
        successor: None,
        sealed_successor: None,
        disabled_by: None,
        auth_time: g.auth_time,
        machine: g.machine,
        resources: match kind {
            TokenKind::Access => g.audience.clone(),
            TokenKind::Refresh => g.resources.clone(),
        },
    }
}

/// What a replaced refresh token presented again stands for (see `TokenState::in_grace`).
enum Grace {
    /// Its successor, still active, and the successor's clear text: answered with again.
    Successor(Box<TokenRecord>, String),
    /// Its successor is disabled with the authorization: refused, not counted as reuse.
    Paused,
    /// Its successor is not held here (another process rotated): read the authorization.
    Unread,
    /// Past the grace, or the successor was replaced or revoked: reuse.
    Reuse,
}

/// What a caller hears when a conditional write loses to another process.
pub(super) enum Lost {
    Answer(OAuthError),
    /// A refresh asks again once (on a shared database).
    Retry(RefreshRequest),
}

impl TokenState {
    /// An access token and its record: a JWT signed here, or the one the token service minted.
    fn mint_access(
        &self,
        g: &Grant,
        scope: &str,
        now: Secs,
        minted: Option<MintedToken>,
    ) -> Result<(String, TokenRecord, u64), OAuthError> {
        let record = |id: String, token_hash: Option<String>, expires_at: Secs| TokenRecord {
            id,
            token_hash,
            ..new_record(g, TokenKind::Access, scope, (now, expires_at))
        };
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(m) = minted {
            // One record per token: a token the service hands out twice would make two records
            // answer for one token (and revoking one leave the other).
            if self.book.minted_access_token(&secret::sha256(&m.access_token)).is_some() {
                tracing::error!(
                    provider = "token_api",
                    "the token service returned an access token it had issued before; refused"
                );
                return Err(OAuthError::server_error("the token service did not issue a new token"));
            }
            // A service's answer cannot make a token live longer than a year.
            let ttl = m.expires_in.unwrap_or(self.config.access_ttl.as_secs()).min(MAX_MINTED_TTL);
            let rec = record(id, Some(secret::sha256_hex(&m.access_token)), now.saturating_add(ttl));
            return Ok((m.access_token, rec, ttl));
        }
        let ttl = self.config.access_ttl.as_secs();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: g.user_id.clone(),
            aud: Audience::of(&g.audience, &g.client_id),
            client_id: g.client_id.clone(),
            scope: scope.to_owned(),
            iat: now,
            exp: now + ttl,
            jti: id.clone(),
        };
        let jwt = self.keys.sign(&claims)?;
        Ok((jwt, record(id, None, now + ttl), ttl))
    }

    /// A refresh token's record; `token` is its clear text (new and random).
    fn mint_refresh(&self, g: &Grant, now: Secs, token: String) -> (String, TokenRecord) {
        let rec = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: Some(secret::sha256_hex(&token)),
            ..new_record(g, TokenKind::Refresh, &g.scope, (now, now + self.config.refresh_ttl.as_secs()))
        };
        (token, rec)
    }

    /// Whether a grant of `scope` gets a refresh token: with OpenID Connect (`openid`), only
    /// if `offline_access` was asked for or the client always gets one (OIDC Core §11).
    fn refreshes(&self, client_id: &str, scope: &str) -> bool {
        let has = |s: &str| scope.split_whitespace().any(|w| w == s);
        self.config.refresh_enabled
            && (!has("openid") || has("offline_access") || self.peers.clients.borrow().get(client_id).is_some_and(|c| c.always_refresh))
    }

    /// The `id_token` for tokens of `scope` issued with `access_token` at `now`, when `scope`
    /// has `openid`: who (`sub`, and with `profile` and `email` what the directory knows),
    /// for which client, when they signed in, and the access token's hash.
    fn id_token(&self, g: &Grant, scope: &str, access_token: &str, now: Secs) -> Result<Option<String>, OAuthError> {
        let has = |s: &str| scope.split_whitespace().any(|w| w == s);
        if !has("openid") || g.machine {
            return Ok(None);
        }
        let profile = self.peers.clients.borrow().profile(&g.user_id).cloned();
        let claims = IdClaims {
            iss: self.config.issuer.clone(),
            sub: g.user_id.clone(),
            aud: g.client_id.clone(),
            exp: now + self.config.access_ttl.as_secs(),
            iat: now,
            auth_time: g.auth_time,
            nonce: g.nonce.clone(),
            at_hash: self.keys.at_hash(access_token),
            preferred_username: has("profile").then(|| g.username.clone()),
            name: profile.as_ref().filter(|_| has("profile")).and_then(|p| p.name.clone()),
            email: profile.as_ref().filter(|_| has("email")).and_then(|p| p.email.clone()),
        };
        self.keys.sign_id(&claims).map(Some)
    }

    /// What the replaced refresh token `retired`, presented again as `token` (its clear text),
    /// stands for: within `REFRESH_TOKEN_REUSE_GRACE` of the rotation (the client lost the
    /// answer, or refreshed from two threads), the successor sealed under it.
    fn in_grace(&self, retired: &TokenRecord, token: &str, now: Secs) -> Grace {
        let grace = self.config.reuse_grace.as_secs();
        let (Some(replaced_at), Some(next_id), Some(seal)) = (
            retired.last_used_at,
            retired.successor.as_deref(),
            retired.sealed_successor.as_deref(),
        ) else {
            return Grace::Reuse;
        };
        if grace == 0 || now > replaced_at.saturating_add(grace) {
            return Grace::Reuse;
        }
        let Some(next) = self.book.get(next_id) else {
            return Grace::Unread;
        };
        let Some(clear) = secret::open_sealed(token, seal) else {
            return Grace::Reuse;
        };
        if next.token_hash.as_deref() != Some(secret::sha256_hex(&clear).as_str()) {
            return Grace::Reuse;
        }
        match next.status {
            TokenStatus::Active if next.expires_at > now => Grace::Successor(Box::new(next.clone()), clear),
            TokenStatus::Disabled => Grace::Paused,
            _ => Grace::Reuse,
        }
    }

    /// Applies `records` to the book, and replies `answer` once the conditional `write`
    /// lands. A write refused by its condition means another process got there first: the
    /// book ran ahead, so the actor is rebuilt, and the caller hears `lost`.
    fn commit_conditional(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        (records, write): (&[TokenRecord], Pending<bool>),
        (answer, lost): (TokenResponse, Lost),
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
        then: Option<TokenMsg>,
    ) {
        self.book.apply(records);
        let (myself, me, shared) = (myself.clone(), self.peers.me.clone(), self.cache.shared);
        let authorization_id = records.first().map(|r| r.authorization_id.clone());
        let forget: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        after(write, move |r| {
            let outcome = match r {
                Ok(true) => {
                    if let Some(msg) = then {
                        let _ = me.cast(msg);
                    }
                    Ok(answer)
                }
                // Another process got there first: the book ran ahead. On a shared database
                // only that authorization is read again; otherwise the actor is rebuilt.
                Ok(false) => {
                    match (shared, authorization_id) {
                        (true, Some(authorization_id)) => {
                            // Settled all the same (an issuance no longer in flight).
                            if let Some(msg) = then {
                                let _ = me.cast(msg);
                            }
                            let _ = me.cast(TokenMsg::Changed { authorization_id, forget });
                            if let Lost::Retry(request) = lost {
                                // After the records written ahead are dropped: read the
                                // authorization as stored, then answer from it.
                                let what = TokenRef::Hash(hex::encode(request.hash));
                                let then = Box::new(TokenMsg::Refresh { request, reply });
                                if let Err(Some(TokenMsg::ReadThen { then, .. })) = me.cast(TokenMsg::ReadThen { what, then }) {
                                    then.unavailable();
                                }
                                return;
                            }
                        }
                        _ => myself.stop(Some("another process changed these tokens first; rebuilding from the store".into())),
                    }
                    Err(match lost {
                        Lost::Answer(e) => e,
                        Lost::Retry(_) => invalid_refresh(),
                    })
                }
                Err(e) => {
                    rebuild(&myself, &e);
                    Err(e.into())
                }
            };
            let _ = reply.send(outcome);
        });
    }

    /// Issues the first tokens of an approved grant, once per authorization.
    pub(super) fn issue(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        grant: Grant,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
        minted: Option<MintedToken>,
    ) {
        // One authorization yields tokens once: this holds even if the device actor restarted
        // mid-redemption and offers the same approval again.
        if self.issuing.contains(&grant.authorization_id) {
            let _ = reply.send(Err(OAuthError::unavailable("tokens for this code are being issued; try again")));
            return;
        }
        if self.book.issued(&grant.authorization_id) {
            let _ = reply.send(Err(OAuthError::invalid_grant("the code was already used")));
            return;
        }
        // The approver was disabled or deleted, or the client disabled, since the approval.
        let allowed = {
            let clients = self.peers.clients.borrow();
            match grant.machine {
                true => clients.machine_allowed(&grant.client_id),
                false => clients.tokens_allowed(&grant.client_id, &grant.user_id),
            }
        };
        if !allowed {
            let _ = reply.send(Err(OAuthError::invalid_grant("the authorization is no longer valid")));
            return;
        }
        if let (Some((provider, timeout)), None) = (&self.peers.token_api, &minted) {
            // The authorization counts as in flight while the service mints.
            self.issuing.insert(grant.authorization_id.clone());
            let (provider, timeout, scope) = (provider.clone(), *timeout, grant.scope.clone());
            self.request_mint(provider, timeout, &grant.clone(), &scope, PendingKind::Issue { grant, now, reply });
            return;
        }
        let (jwt, access, expires_in) = match self.mint_access(&grant, &grant.scope, now, minted) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let id_token = match self.id_token(&grant, &grant.scope, &jwt, now) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut records = vec![access];
        let refresh_token = (!grant.machine && self.refreshes(&grant.client_id, &grant.scope)).then(|| {
            let (token, rec) = self.mint_refresh(&grant, now, secret::random_token(32));
            records.push(rec);
            token
        });
        let answer = TokenResponse {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_in,
            scope: grant.scope.clone(),
            refresh_token,
            id_token,
            username: grant.username.clone(),
        };
        tracing::info!(client_id = %grant.client_id, user_id = %grant.user_id, "tokens issued");
        let settled = TokenMsg::Issued {
            authorization_id: grant.authorization_id.clone(),
        };
        self.issuing.insert(grant.authorization_id.clone());
        self.book.mark_issued(&grant.authorization_id, now);
        let write = self.repo.issue(&grant.authorization_id, &records);
        let lost = Lost::Answer(OAuthError::invalid_grant("the code was already used"));
        self.commit_conditional(myself, (&records, write), (answer, lost), reply, Some(settled));
    }

    /// `grant_type=refresh_token`: a new access token, and with rotation a new refresh token
    /// in place of the presented one, which rotates exactly once.
    pub(super) fn refresh(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        request: RefreshRequest,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
        minted: Option<MintedToken>,
    ) {
        let now = request.now / 1000;
        let Some(presented) = self.book.refresh_token(&request.hash).cloned() else {
            let _ = reply.send(Err(invalid_refresh()));
            return;
        };
        if presented.client_id != request.client_id || !self.owner_allowed(&presented) {
            let _ = reply.send(Err(invalid_refresh()));
            return;
        }
        // What to refresh from: the presented token, or, for a replaced one presented again
        // within the grace, the token that replaced it (`again`).
        let (old, again) = match presented.status {
            TokenStatus::Revoked | TokenStatus::Disabled => {
                let _ = reply.send(Err(invalid_refresh()));
                return;
            }
            TokenStatus::Active => (presented, None),
            TokenStatus::Retired => match self.in_grace(&presented, &request.token, now) {
                Grace::Successor(next, clear) => (*next, Some(clear)),
                Grace::Paused => {
                    let _ = reply.send(Err(invalid_refresh()));
                    return;
                }
                Grace::Unread if self.cache.shared && !request.retried => {
                    let what = TokenRef::Authorization(presented.authorization_id.clone());
                    let request = RefreshRequest { retried: true, ..request };
                    self.read(what, Some(TokenMsg::Refresh { request, reply }), 0);
                    return;
                }
                Grace::Unread | Grace::Reuse => {
                    // RFC 9700 §4.14: a rotated-out refresh token came back; assume it was
                    // stolen and end the whole authorization.
                    let old = presented;
                    tracing::warn!(client_id = %old.client_id, user_id = %old.user_id, authorization_id = %old.authorization_id, "refresh token reuse detected; revoking the authorization");
                    self.peers.audit.record(
                        AuditEvent::new(
                            request.now,
                            EventKind::RefreshReuseDetected,
                            format!("client:{}", old.client_id),
                            false,
                        )
                        .subject(old.username.clone())
                        .client(old.client_id.clone())
                        .detail(format!("authorization {} revoked", old.authorization_id)),
                    );
                    let records = self.book.revoke_authorization(&old.authorization_id);
                    let err = Err(OAuthError::invalid_grant(
                        "the refresh token was already used; the authorization has been revoked",
                    ));
                    let scope = RevokeScope::Authorization(old.authorization_id.clone());
                    self.revoke_scope(myself, (scope, records), err, reply);
                    return;
                }
            },
        };
        if old.expires_at <= now {
            let _ = reply.send(Err(invalid_refresh()));
            return;
        }
        let granted_scope = match request.scope.as_deref().map(str::trim) {
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
            name: old.name.clone(),
            auth_time: old.auth_time,
            machine: old.is_machine(),
            // RFC 8707: a refresh may ask for any of the resources granted, never another.
            audience: if request.resources.is_empty() {
                old.resources.clone()
            } else {
                request.resources.clone()
            },
            resources: old.resources.clone(),
            nonce: None,
        };
        if grant.audience.iter().any(|r| !old.resources.contains(r)) {
            let _ = reply.send(Err(OAuthError::invalid_target("a resource this authorization was not granted")));
            return;
        }
        if let (Some((provider, timeout)), None) = (&self.peers.token_api, &minted) {
            // Everything is checked again when the token comes back.
            let (provider, timeout) = (provider.clone(), *timeout);
            self.request_mint(provider, timeout, &grant, &granted_scope, PendingKind::Refresh { request, reply });
            return;
        }
        let (jwt, access, expires_in) = match self.mint_access(&grant, &granted_scope, now, minted) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut records = vec![access];
        let refresh_token = if let Some(successor) = again {
            // The successor already issued, again: it rotates on its own next use.
            records.push(TokenRecord {
                last_used_at: Some(now),
                ..old.clone()
            });
            Some(successor)
        } else if self.config.rotation {
            // With a grace, the successor is kept sealed under the token it replaces (only
            // who presents that token can open it); without one, nothing is kept.
            let (token, sealed) = if self.config.reuse_grace.is_zero() {
                (secret::random_token(32), None)
            } else {
                let (token, seal) = secret::sealed_token(&request.token);
                (token, Some(seal))
            };
            let (token, rec) = self.mint_refresh(&grant, now, token);
            records.push(TokenRecord {
                status: TokenStatus::Retired,
                last_used_at: Some(now),
                successor: Some(rec.id.clone()),
                sealed_successor: sealed,
                ..old.clone()
            });
            records.push(rec);
            Some(token)
        } else {
            records.push(TokenRecord {
                last_used_at: Some(now),
                ..old.clone()
            });
            None
        };
        let id_token = match self.id_token(&grant, &granted_scope, &jwt, now) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let answer = TokenResponse {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_in,
            scope: granted_scope,
            refresh_token,
            id_token,
            username: grant.username.clone(),
        };
        let write = self.repo.refresh(&old.id, &records);
        // Lost to another process (it rotated, disabled or revoked first): asked once more,
        // from the records as they are now.
        let lost = if request.retried {
            Lost::Answer(invalid_refresh())
        } else {
            Lost::Retry(RefreshRequest { retried: true, ..request })
        };
        self.commit_conditional(myself, (&records, write), (answer, lost), reply, None);
    }
}
