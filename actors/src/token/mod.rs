//! The token actor.
//!
//! Owns every token record (through its [`TokenRepo`]), held in a [`TokenBook`]: access tokens
//! (JWTs signed here, each with a record so it can be listed and revoked, or, with
//! `TOKEN_PROVIDER_MODE=http_api`, tokens minted by the external token service, whose SHA-256
//! is stored) and refresh tokens (opaque; only their SHA-256 is stored), grouped by the
//! authorization (the approval of one device) they came from. Every change is committed
//! before the caller hears of it. Records stay here whatever mints the tokens, so switching
//! modes loses nothing.
//!
//! - [`issue`]: issuance for an approved grant, and refresh (with rotation);
//! - [`service`]: the calls to the token service, made off the mailbox; the issuance or
//!   refresh finishes when the answer comes back ([`TokenMsg::Minted`]).

mod book;
mod issue;
mod msg;
mod service;
mod shared;
mod types;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

pub use self::book::TokenBook;
use self::msg::Reading;
pub use self::msg::{AwaitingMint, TokenMsg};
pub use self::types::{
    AuthorizationPage, AuthorizationQuery, AuthorizationStatus, AuthorizationView, Grant, Owner, RefreshRequest, RevokeTarget, TokenInfo,
    TokenResponse,
};
pub use self::types::{DEVICE_NAME_RULE, device_name, invalid_token, invisible};
use crate::audit::AuditSink;
use crate::crypto::keys::JwtKeys;
use crate::directory::snapshot::ClientTable;
use crate::error::OAuthError;
use crate::provider::token_service::TokenProviderMsg;
use crate::runtime::Handle;
use crate::runtime::commit::{log_failure, reply_when_durable};
use crate::store::change::Cache;
pub use crate::store::token::{Amendment, MAX_DEVICE_NAME, Pauser};
use crate::store::token::{RevokeScope, TokenRef, TokenRepo};
pub use crate::store::token::{TokenKind, TokenRecord, TokenStatus};
use crate::time::Secs;

#[derive(Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_enabled: bool,
    pub rotation: bool,
    /// `REFRESH_TOKEN_REUSE_GRACE`: how long a refresh token replaced by rotation may be
    /// presented again by its client and answered with its successor (0: never).
    pub reuse_grace: Duration,
}

pub struct TokenActor;

/// Where the token actor reaches the rest of the system.
#[derive(Clone)]
pub struct TokenPeers {
    pub me: Handle<TokenMsg>,
    /// The directory's snapshot: whose tokens may still be used.
    pub clients: watch::Receiver<Arc<ClientTable>>,
    pub audit: AuditSink,
    /// The token-service provider and its timeout, when it mints access tokens, else `None`
    /// (local JWTs).
    pub token_api: Option<(Handle<TokenProviderMsg>, Duration)>,
}

pub struct TokenArgs {
    pub config: TokenConfig,
    /// How long an authorization's issuance is remembered after its records are gone: as long
    /// as its device code could still be presented (the code's lifetime and grace).
    pub remember_issued: Duration,
    pub keys: JwtKeys,
    pub repo: Arc<dyn TokenRepo>,
    pub peers: TokenPeers,
    pub cache: Cache,
}

pub struct TokenState {
    book: TokenBook,
    /// Authorizations whose tokens are being committed: a second request for one of them is
    /// told to retry (the first may yet fail), not that the code was used.
    issuing: HashSet<String>,
    config: TokenConfig,
    remember_issued: Secs,
    keys: JwtKeys,
    repo: Arc<dyn TokenRepo>,
    peers: TokenPeers,
    cache: Cache,
    /// Counts the events that can make a read under way out of date (see `outdated`).
    changes: u64,
    /// The count at the last event that outdates every read.
    outdated_all: u64,
    /// Recent announced changes: the count at each, and its authorization.
    recent: std::collections::VecDeque<(u64, String)>,
}

/// Most recent changes remembered (far more than arrive while one read is under way).
const MAX_RECENT: usize = 4096;
/// A read found out of date is made again at most this often before it is kept.
const MAX_REREADS: u8 = 3;

impl TokenState {
    /// On a shared database: whether `msg` needs its token read from the store first (not
    /// held here, or the feed is down); if so the read is started and `None` returned.
    fn read_through(&self, msg: TokenMsg) -> Option<TokenMsg> {
        let Some((token, hit)) = msg.names(&self.book) else {
            return Some(msg);
        };
        if !self.cache.read_through(hit) {
            return Some(msg);
        }
        self.read(token, Some(msg), 0);
        None
    }

    /// Starts reading every record of `authorization_id` again.
    fn refetch(&self, authorization_id: &str) {
        self.read(TokenRef::Authorization(authorization_id.to_owned()), None, 0);
    }

    /// Reads the authorization `what` names off the mailbox; `Fetched` brings the records
    /// back, with the change count as of now. If the read fails, `then` is answered that the
    /// database is unavailable.
    fn read(&self, what: TokenRef, then: Option<TokenMsg>, attempt: u8) {
        let (read, me, since) = (self.repo.holding(what.clone()), self.peers.me.clone(), self.changes);
        tokio::spawn(async move {
            match read.await {
                Ok(records) => {
                    let fetched = TokenMsg::Fetched {
                        records,
                        then: then.map(Box::new),
                        read: Reading { what, since, attempt },
                    };
                    if let Err(Some(TokenMsg::Fetched { then: Some(msg), .. })) = me.cast(fetched) {
                        msg.unavailable();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read tokens from the database");
                    if let Some(msg) = then {
                        msg.unavailable();
                    }
                }
            }
        });
    }

    /// Whether records read since change count `since` may be older than what this process
    /// has heard of since: a change of one of their authorizations was announced, the feed
    /// went down or came back, or a revocation by scope made here committed. Such a read is
    /// made again rather than kept.
    fn outdated(&self, since: u64, records: &[TokenRecord], what: &TokenRef) -> bool {
        if self.outdated_all > since {
            return true;
        }
        // Changes dropped from the list of recent ones are unknown: assume the worst.
        if self.recent.front().is_some_and(|(n, _)| *n > since + 1) {
            return true;
        }
        self.recent.iter().any(|(n, a)| {
            *n > since && (records.iter().any(|r| r.authorization_id == *a) || matches!(what, TokenRef::Authorization(x) if x == a))
        })
    }

    /// Counts a change of `authorization_id` announced by another process.
    fn heard_of(&mut self, authorization_id: &str) {
        self.changes += 1;
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.changes, authorization_id.to_owned()));
    }

    /// Counts an event that makes every read under way out of date.
    fn outdate_all(&mut self) {
        self.changes += 1;
        self.outdated_all = self.changes;
    }

    /// Whether the tokens of `r` may still be used: its client and its user are enabled (a
    /// client acting for itself has no user).
    fn owner_allowed(&self, r: &TokenRecord) -> bool {
        let clients = self.peers.clients.borrow();
        if r.is_machine() {
            // Taking the grant away ends the tokens it gave, like disabling the client.
            return clients.machine_allowed(&r.client_id);
        }
        clients.tokens_allowed(&r.client_id, &r.user_id)
    }

    fn validate(&self, jti: &str, now: Secs) -> Result<TokenInfo, OAuthError> {
        self.book
            .get(jti)
            .filter(|r| self.owner_allowed(r))
            .and_then(|r| TokenBook::active_info(r, now))
            .ok_or_else(types::invalid_token)
    }

    fn introspect(&self, target: &RevokeTarget, now: Secs) -> Option<TokenRecord> {
        self.book
            .target(target)
            .filter(|r| r.status == TokenStatus::Active && r.expires_at > now && self.owner_allowed(r))
            .cloned()
    }

    /// Applies `records` (revocations, last use) and replies `answer` once they are durable.
    fn save<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        records: Vec<TokenRecord>,
        answer: Result<T, OAuthError>,
        reply: RpcReplyPort<Result<T, OAuthError>>,
    ) {
        self.book.apply(&records);
        let write = self.repo.update(&records);
        reply_when_durable(myself, write, reply, answer);
    }

    /// Revokes every token of `scope`: see [`TokenState::write_scope`].
    fn revoke_scope<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        (scope, records): (RevokeScope, Vec<TokenRecord>),
        answer: Result<T, OAuthError>,
        reply: RpcReplyPort<Result<T, OAuthError>>,
    ) {
        self.write_scope(myself, (scope, records), |repo, scope| repo.revoke(scope), answer, reply);
    }

    /// Changes every token of a scope (a revocation, a disable, an enable, a rename):
    /// `records` are the changed records this book knows of; on a shared database `in_store`
    /// makes the change by scope instead, which also reaches tokens other processes issued or
    /// rotated that this one has not heard of yet.
    ///
    /// After the commit, the authorizations of the scope held here are read again: a read
    /// that started before the commit (and finished after the change was applied here) may
    /// have brought back what the change replaced, and this process hears no announcement of
    /// its own writes.
    fn write_scope<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        (scope, records): (RevokeScope, Vec<TokenRecord>),
        in_store: impl FnOnce(&dyn TokenRepo, RevokeScope) -> crate::store::Pending<u64>,
        answer: Result<T, OAuthError>,
        reply: RpcReplyPort<Result<T, OAuthError>>,
    ) {
        if !self.cache.shared {
            return self.save(myself, records, answer, reply);
        }
        self.book.apply(&records);
        self.outdate_all();
        let held = match &scope {
            RevokeScope::Authorization(a) => vec![a.clone()],
            RevokeScope::User(u) => self.book.authorizations_of(&Owner::User(u.clone())),
            RevokeScope::Client(c) => self.book.authorizations_of(&Owner::Client(c.clone())),
        };
        let (write, me) = (in_store(&*self.repo, scope), self.peers.me.clone());
        let write = Box::pin(async move {
            let done = write.await.map(|_| ());
            // Reads that started before the commit may predate the change.
            let _ = me.cast(TokenMsg::Outdated);
            for authorization_id in held {
                let _ = me.cast(TokenMsg::Changed {
                    authorization_id,
                    forget: Vec::new(),
                });
            }
            done
        });
        reply_when_durable(myself, write, reply, answer);
    }

    fn revoke(
        &mut self,
        myself: &ActorRef<TokenMsg>,
        target: RevokeTarget,
        client_id: Option<String>,
        reply: RpcReplyPort<Result<Option<String>, OAuthError>>,
    ) {
        let Some(rec) = self.book.target(&target).cloned() else {
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
        if rec.kind == TokenKind::Refresh {
            // Revoking a refresh token ends the authorization it belongs to.
            let records = self.book.revoke_authorization(&rec.authorization_id);
            let answer = (!records.is_empty() || self.cache.shared).then_some(owner);
            let scope = RevokeScope::Authorization(rec.authorization_id);
            return self.revoke_scope(myself, (scope, records), Ok(answer), reply);
        }
        let records = match rec.status {
            TokenStatus::Active | TokenStatus::Disabled => vec![TokenRecord {
                status: TokenStatus::Revoked,
                ..rec
            }],
            TokenStatus::Revoked | TokenStatus::Retired => Vec::new(),
        };
        let answer = (!records.is_empty()).then_some(owner);
        self.save(myself, records, Ok(answer), reply);
    }
}

impl Actor for TokenActor {
    type Msg = TokenMsg;
    type State = TokenState;
    type Arguments = TokenArgs;

    async fn pre_start(&self, _myself: ActorRef<TokenMsg>, args: TokenArgs) -> Result<TokenState, ActorProcessingErr> {
        let book = if args.cache.shared {
            // Read on demand: see `shared.rs`.
            tracing::info!("token records are read from the shared database as they are used");
            TokenBook::default()
        } else {
            let book = TokenBook::load(args.repo.load().await?);
            tracing::info!(tokens = book.len(), "token records loaded");
            book
        };
        Ok(TokenState {
            book,
            issuing: HashSet::new(),
            config: args.config,
            remember_issued: args.remember_issued.as_secs(),
            keys: args.keys,
            repo: args.repo,
            peers: args.peers,
            cache: args.cache,
            changes: 0,
            outdated_all: 0,
            recent: std::collections::VecDeque::new(),
        })
    }

    async fn handle(&self, myself: ActorRef<TokenMsg>, msg: TokenMsg, st: &mut TokenState) -> Result<(), ActorProcessingErr> {
        let msg = match msg {
            TokenMsg::Fetched { records, then, read } if read.attempt < MAX_REREADS && st.outdated(read.since, &records, &read.what) => {
                st.read(read.what, then.map(|m| *m), read.attempt + 1);
                return Ok(());
            }
            TokenMsg::Fetched { records, then, .. } => {
                st.book.merge(records);
                match then {
                    Some(then) => *then,
                    None => return Ok(()),
                }
            }
            msg if st.cache.shared => match st.read_through(msg) {
                Some(msg) => msg,
                None => return Ok(()),
            },
            msg => msg,
        };
        match msg {
            TokenMsg::IssueForGrant { grant, now, reply } => st.issue(&myself, grant, now / 1000, reply, None),
            TokenMsg::Refresh { request, reply } => st.refresh(&myself, request, reply, None),
            TokenMsg::Validate { jti, now, reply } => {
                let _ = reply.send(st.validate(&jti, now / 1000));
            }
            TokenMsg::ValidateOpaque { token, now, reply } => st.validate_opaque(token, now / 1000, reply),
            TokenMsg::Introspect { target, now, reply } => {
                let _ = reply.send(st.introspect(&target, now / 1000));
            }
            TokenMsg::Minted { pending, minted } => st.minted(&myself, pending, minted),
            TokenMsg::Revoke { target, client_id, reply } => st.revoke(&myself, target, client_id, reply),
            TokenMsg::ListForUser { user_id, reply } if st.cache.shared => st.records_from_store(user_id, reply),
            TokenMsg::ListForUser { user_id, reply } => {
                let _ = reply.send(st.book.records_of(&user_id));
            }
            TokenMsg::ListAuthorizations { query, now, reply } if st.cache.shared => st.list_from_store(query, now, reply),
            TokenMsg::ListAuthorizations { query, now, reply } => {
                let _ = reply.send(st.book.authorizations(&query, now / 1000));
            }
            TokenMsg::PageAuthorizations {
                query,
                page,
                per_page,
                now,
                reply,
            } if st.cache.shared => st.page_from_store(query, (page, per_page), now, reply),
            TokenMsg::PageAuthorizations {
                query,
                page,
                per_page,
                now,
                reply,
            } => {
                let _ = reply.send(st.book.authorization_page(&query, page, per_page, now / 1000));
            }
            TokenMsg::RevokeAuthorization {
                authorization_id,
                owner,
                now,
                reply,
            } => match st.book.owned_authorization(&authorization_id, owner.as_deref(), now / 1000) {
                Some(view) => {
                    let records = st.book.revoke_authorization(&authorization_id);
                    let scope = RevokeScope::Authorization(authorization_id);
                    st.revoke_scope(&myself, (scope, records), Ok(Some(view)), reply);
                }
                None => {
                    let _ = reply.send(Ok(None));
                }
            },
            TokenMsg::AmendAuthorization {
                authorization_id,
                owner,
                change,
                now,
                reply,
            } => match st.book.owned_authorization(&authorization_id, owner.as_deref(), now / 1000) {
                Some(view) => {
                    let records = st.book.amend_authorization(&authorization_id, &change);
                    let scope = RevokeScope::Authorization(authorization_id);
                    st.write_scope(
                        &myself,
                        (scope, records),
                        |repo, scope| repo.amend(scope, change),
                        Ok(Some(view)),
                        reply,
                    );
                }
                None => {
                    let _ = reply.send(Ok(None));
                }
            },
            TokenMsg::AmendClient { client_id, change, reply } => {
                let records = st
                    .book
                    .authorizations_of(&Owner::Client(client_id.clone()))
                    .iter()
                    .flat_map(|a| st.book.amend_authorization(a, &change))
                    .collect();
                let scope = RevokeScope::Client(client_id);
                st.write_scope(&myself, (scope, records), |repo, scope| repo.amend(scope, change), Ok(()), reply);
            }
            TokenMsg::RevokeAll { of, now, reply } if st.cache.shared => st.revoke_all_in_store(of, now, reply),
            TokenMsg::RevokeAll { of, now, reply } => {
                let ids = st.book.authorizations_of(&of);
                let live = ids
                    .iter()
                    .filter(|a| {
                        st.book
                            .authorization(a, now / 1000)
                            .is_some_and(|v| matches!(v.status, AuthorizationStatus::Active | AuthorizationStatus::Disabled))
                    })
                    .count();
                let records = ids.iter().flat_map(|a| st.book.revoke_authorization(a)).collect();
                let scope = match of {
                    Owner::User(u) => RevokeScope::User(u),
                    Owner::Client(c) => RevokeScope::Client(c),
                };
                st.revoke_scope(&myself, (scope, records), Ok(live), reply);
            }
            TokenMsg::Issued { authorization_id } => {
                st.issuing.remove(&authorization_id);
            }
            TokenMsg::Sweep { now, store } if st.cache.shared => {
                st.book.sweep(now / 1000, st.remember_issued);
                if store {
                    // Every process's records and marks, not only those held here.
                    let now = now / 1000;
                    let write = st.repo.prune(
                        now.saturating_sub(book::EXPIRED_KEEP),
                        now.saturating_sub(st.remember_issued),
                        now.saturating_sub(st.config.reuse_grace.as_secs()),
                    );
                    log_failure(write, "delete expired token records");
                }
            }
            TokenMsg::Sweep { now, store } => {
                let (old, forget) = st.book.sweep(now / 1000, st.remember_issued);
                if store && (!old.is_empty() || !forget.is_empty()) {
                    log_failure(st.repo.remove(&old, &forget), "delete expired token records");
                }
                // Successors sealed for the reuse grace are kept no longer than it.
                let unsealed = st.book.unseal(now / 1000 - st.config.reuse_grace.as_secs().min(now / 1000));
                if store && !unsealed.is_empty() {
                    st.book.apply(&unsealed);
                    log_failure(st.repo.update(&unsealed), "erase sealed refresh-token successors");
                }
            }
            TokenMsg::Changed { authorization_id, forget } => {
                st.heard_of(&authorization_id);
                for id in &forget {
                    st.book.remove(id);
                }
                // Only what is held is kept current; the rest is read when it is used.
                if !forget.is_empty() || st.book.has_authorization(&authorization_id) {
                    st.refetch(&authorization_id);
                }
            }
            TokenMsg::Feed { up: false, .. } => {
                st.outdate_all();
                st.cache.trusted = false;
            }
            // Back from an outage: what is held may have missed changes, and everything is
            // read on demand anyway, so nothing is kept.
            TokenMsg::Feed { up: true, .. } => {
                st.outdate_all();
                st.book = TokenBook::default();
                st.cache.trusted = true;
            }
            TokenMsg::Outdated => st.outdate_all(),
            TokenMsg::ReadThen { what, then } => st.read(what, Some(*then), 0),
            TokenMsg::Forget => {
                st.outdate_all();
                st.book = TokenBook::default();
            }
            // Handled above.
            TokenMsg::Fetched { .. } => {}
        }
        Ok(())
    }
}
