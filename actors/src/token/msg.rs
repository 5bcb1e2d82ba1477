//! The token actor's messages.

use ractor::RpcReplyPort;

use super::types::{
    AuthorizationPage, AuthorizationQuery, AuthorizationView, Grant, Owner, RefreshRequest, RevokeTarget, TokenInfo, TokenResponse,
};
use crate::crypto::secret::Digest32;
use crate::error::OAuthError;
use crate::provider::CallError;
use crate::provider::token_service::MintedToken;
use crate::store::token::Amendment;
use crate::store::token::{TokenRecord, TokenRef};
use crate::time::{Millis, Secs};

/// Messages of the token actor. Every `now` is Unix milliseconds, read at the edge.
pub enum TokenMsg {
    /// Mints an access (and refresh) token for an approved grant, once per authorization.
    IssueForGrant {
        grant: Grant,
        now: Millis,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    /// `grant_type=refresh_token` (RFC 6749 §6).
    Refresh {
        request: RefreshRequest,
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
    /// The authorizations `query` selects, newest first.
    ListAuthorizations {
        query: AuthorizationQuery,
        now: Millis,
        reply: RpcReplyPort<Vec<AuthorizationView>>,
    },
    /// One page of them.
    PageAuthorizations {
        query: AuthorizationQuery,
        page: usize,
        per_page: usize,
        now: Millis,
        reply: RpcReplyPort<AuthorizationPage>,
    },
    /// Revokes every token of one authorization; `owner`, when given, must own it. Answers
    /// the authorization (of that owner) if there was one to revoke.
    RevokeAuthorization {
        authorization_id: String,
        owner: Option<String>,
        now: Millis,
        reply: RpcReplyPort<Result<Option<AuthorizationView>, OAuthError>>,
    },
    /// Disables, enables or renames one authorization; `owner`, when given, must own it.
    /// Answers the authorization as it was (of that owner) if there is one.
    AmendAuthorization {
        authorization_id: String,
        owner: Option<String>,
        change: Amendment,
        now: Millis,
        reply: RpcReplyPort<Result<Option<AuthorizationView>, OAuthError>>,
    },
    /// Disables or enables every authorization of a client.
    AmendClient {
        client_id: String,
        change: Amendment,
        reply: RpcReplyPort<Result<(), OAuthError>>,
    },
    /// Revokes every token of a user, or of a client; answers how many authorizations were live.
    RevokeAll {
        of: Owner,
        now: Millis,
        reply: RpcReplyPort<Result<usize, OAuthError>>,
    },
    /// Internal: the tokens of an authorization are durable (its issuance is no longer in flight).
    Issued { authorization_id: String },
    /// Drops records long expired at `now` from memory, and from the store if `store` (see
    /// `DeviceMsg::Sweep`).
    Sweep { now: Millis, store: bool },
    /// Another process issued, refreshed or revoked tokens of this authorization: it is
    /// read again, after the records `forget` (ones this process wrote ahead and lost a race
    /// with) are dropped.
    Changed { authorization_id: String, forget: Vec<String> },
    /// The change feed went down (`up` false: read every answer through from the database)
    /// or came back (forget what is held, then trust what is read again).
    Feed { up: bool, now: Millis },
    /// Internal: records read from the store (those of one authorization), applied before
    /// `then` is handled.
    Fetched {
        records: Vec<TokenRecord>,
        then: Option<Box<TokenMsg>>,
        /// What it was read for, and the change count when the read started (see
        /// `TokenState::outdated`).
        read: Reading,
    },
    /// Internal: reads the authorization `what` names from the store, then handles `then`.
    ReadThen { what: TokenRef, then: Box<TokenMsg> },
    /// Internal: a revocation by scope this process made has committed; reads started before
    /// it are out of date.
    Outdated,
    /// Internal: forget every held record (a write failed; they are read again on use).
    Forget,
    /// Internal: the token service answered for a pending issuance or refresh.
    Minted {
        pending: AwaitingMint,
        minted: Result<MintedToken, CallError>,
    },
}

impl TokenMsg {
    /// The token a request names, and whether `book` holds it: what a read-through fetches.
    pub(super) fn names(&self, book: &super::TokenBook) -> Option<(TokenRef, bool)> {
        use super::types::RevokeTarget;
        let by_hash = |h: &Digest32| TokenRef::Hash(hex::encode(h));
        match self {
            TokenMsg::Refresh { request, .. } => Some((by_hash(&request.hash), book.refresh_token(&request.hash).is_some())),
            TokenMsg::Validate { jti, .. } => Some((TokenRef::Id(jti.clone()), book.get(jti).is_some())),
            TokenMsg::ValidateOpaque { token, .. } => {
                let h = crate::crypto::secret::sha256(token);
                Some((by_hash(&h), book.minted_access_token(&h).is_some()))
            }
            TokenMsg::RevokeAuthorization { authorization_id, .. } | TokenMsg::AmendAuthorization { authorization_id, .. } => Some((
                TokenRef::Authorization(authorization_id.clone()),
                book.has_authorization(authorization_id),
            )),
            TokenMsg::Introspect { target, .. } | TokenMsg::Revoke { target, .. } => {
                let r = match target {
                    RevokeTarget::AccessId(id) => TokenRef::Id(id.clone()),
                    RevokeTarget::Hash(h) => by_hash(h),
                };
                Some((r, book.target(target).is_some()))
            }
            _ => None,
        }
    }

    /// Answers a request whose token could not be checked against the database: refused, as
    /// the database is unavailable (introspection says inactive).
    pub(super) fn unavailable(self) {
        let err = || OAuthError::unavailable("the database is unavailable; try again shortly");
        match self {
            TokenMsg::Refresh { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            TokenMsg::Validate { reply, .. } | TokenMsg::ValidateOpaque { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            TokenMsg::Introspect { reply, .. } => {
                let _ = reply.send(None);
            }
            TokenMsg::Revoke { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            TokenMsg::RevokeAuthorization { reply, .. } | TokenMsg::AmendAuthorization { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            _ => {}
        }
    }
}

/// What a read from the store was for, so that it can be made again if it is out of date.
pub struct Reading {
    pub(super) what: TokenRef,
    pub(super) since: u64,
    pub(super) attempt: u8,
}

/// An issuance or refresh waiting for the token service's answer.
pub struct AwaitingMint(pub(super) PendingKind);

pub(super) enum PendingKind {
    Issue {
        grant: Grant,
        now: Secs,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    Refresh {
        request: RefreshRequest,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
}

impl PendingKind {
    pub(super) fn reply(&self) -> &RpcReplyPort<Result<TokenResponse, OAuthError>> {
        match self {
            PendingKind::Issue { reply, .. } | PendingKind::Refresh { reply, .. } => reply,
        }
    }
}
