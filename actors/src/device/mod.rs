//! The device-authorization actor: the grants waiting to be redeemed.
//!
//! Owns every live device authorization (RFC 8628) through its [`DeviceRepo`]: the
//! device-code hashes, the user codes, each code's poll timing and approval state, held in a
//! [`DeviceBook`] in memory, so a poll (`/oauth/token` while pending) is answered without
//! touching the disk. Authorization codes (RFC 6749 §4.1) are the same kind of record, created
//! approved, with the redirect URI, PKCE challenge and nonce they are checked against
//! ([`CodeGrant`]); a code presented again after its redemption revokes what it issued. Changes that a client is told about (a new code, an approval or
//! denial) are committed first. A redemption asks the token actor, whose store issues an
//! authorization's tokens exactly once; the code is then forgotten here.

mod book;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use self::book::{
    Approval, CodeError, CodeIssue, Decision, DeviceBook, NewDeviceCode, PendingView, PollOutcome, Presented, Redemption,
    code_authorization,
};
use self::book::{EXPIRED_GRACE_MS, MAX_INTERVAL_MS};
use crate::audit::{AuditEvent, AuditSink, EventKind};
use crate::crypto::secret::{self, Digest32, USER_CODE_LEN};
use crate::error::{ErrorCode, OAuthError};
use crate::metrics::Metrics;
use crate::runtime::Handle;
use crate::runtime::commit::{after, log_failure};
use crate::store::change::Cache;
use crate::store::device::DeviceRepo;
pub use crate::store::device::{CodeGrant, DeviceRecord, RecordState};
use crate::time::{Millis, millis};
use crate::token::{Grant, TokenMsg, TokenResponse};

/// How long an authorization code lives (RFC 6749 §4.1.2 recommends at most 10 minutes).
pub const AUTHORIZATION_CODE_LIFETIME: Duration = Duration::from_secs(600);

/// How long a device code or authorization code can be presented at most: its lifetime, and
/// the grace in which an expired one is still recognised.
pub fn presentable_for(config: &DeviceConfig) -> Duration {
    config.code_lifetime.max(AUTHORIZATION_CODE_LIFETIME) + Duration::from_millis(EXPIRED_GRACE_MS)
}

/// Settings of the device flow.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub code_lifetime: Duration,
    pub poll_interval: Duration,
    /// How long a redemption waits for the token actor (longer when an external service mints).
    pub issue_timeout: Duration,
}

/// Messages of the device-authorization actor.
pub enum DeviceMsg {
    /// Issues a new device code and user code (RFC 8628 §3.2) once it is durable.
    Create {
        client_id: String,
        scope: String,
        /// The address the request came from, to show the person who approves.
        from: Option<String>,
        /// RFC 8707 resources the tokens are for (already checked against the client's list).
        resources: Vec<String>,
        now: Millis,
        reply: RpcReplyPort<Result<NewDeviceCode, OAuthError>>,
    },
    /// A device polls with SHA-256 of its device code (RFC 8628 §3.4).
    Poll {
        device_code_hash: Digest32,
        client_id: String,
        /// RFC 8707 resources the token request names (none: all the device asked for).
        resources: Vec<String>,
        now: Millis,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    /// Issues an authorization code for an approval given now (RFC 6749 §4.1.2), once durable.
    IssueCode {
        issue: Box<CodeIssue>,
        now: Millis,
        reply: RpcReplyPort<Result<String, OAuthError>>,
    },
    /// `grant_type=authorization_code` with SHA-256 of the code (RFC 6749 §4.1.3).
    Exchange {
        request: Box<CodeExchange>,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    },
    /// The confirmation page looks up what a typed user code stands for.
    Lookup {
        user_code: [u8; USER_CODE_LEN],
        now: Millis,
        reply: RpcReplyPort<Result<PendingView, CodeError>>,
    },
    /// The signed-in person approves or denies; answered once the decision is durable.
    Decide {
        user_code: [u8; USER_CODE_LEN],
        decision: Decision,
        now: Millis,
        reply: RpcReplyPort<Result<PendingView, CodeError>>,
    },
    /// How many authorizations are held (for health and benchmarks).
    Count { reply: RpcReplyPort<usize> },
    /// How many unexpired codes wait for a person's decision (for `/metrics`).
    CountPending { now: Millis, reply: RpcReplyPort<usize> },
    /// Internal: a write this actor applied in memory has committed (or failed).
    Committed { key: Digest32, change: Committed },
    /// Removes the codes expired (past their grace) at `now` from memory, and from the store
    /// if `store` (on a shared database one process at a time deletes).
    Sweep { now: Millis, store: bool },
    /// Another process decided or removed this authorization: read it again if held.
    Changed { key: Digest32 },
    /// The change feed came back after being down: read everything again.
    Reload { now: Millis },
    /// Internal: an authorization read from the store (`None` when the lookup found nothing;
    /// a key with `None` when that key is not stored), then the request that needed it.
    Fetched {
        found: Option<(Digest32, Option<DeviceRecord>)>,
        then: Option<Box<DeviceMsg>>,
    },
    /// Internal: every live authorization, read after the feed came back.
    Reloaded { records: Vec<(Digest32, DeviceRecord)> },
}

/// A token request with an authorization code.
pub struct CodeExchange {
    /// SHA-256 of the code.
    pub code_hash: Digest32,
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub verifier: Option<String>,
    /// RFC 8707 resources the token request names (none: all that were asked for).
    pub resources: Vec<String>,
    pub now: Millis,
}

/// Internal follow-ups, sent by the task that awaited a commit or a redemption.
pub enum Committed {
    CreateFailed,
    Decided(Box<DeviceRecord>),
    DecisionFailed,
    Redeemed,
    /// The token store refused the issuance: it was issued before (at `now`'s presentation).
    Refused {
        now: Millis,
    },
    RedeemFailed,
}

pub struct DeviceActor;

pub struct DeviceArgs {
    pub config: DeviceConfig,
    pub repo: Arc<dyn DeviceRepo>,
    pub me: Handle<DeviceMsg>,
    pub token: Handle<TokenMsg>,
    pub metrics: Arc<Metrics>,
    /// When loading: codes expired (past their grace) by then are dropped.
    pub now: Millis,
    pub cache: Cache,
    /// Records the reuse of an authorization code.
    pub audit: AuditSink,
}

pub struct DeviceState {
    book: DeviceBook,
    config: DeviceConfig,
    repo: Arc<dyn DeviceRepo>,
    me: Handle<DeviceMsg>,
    token: Handle<TokenMsg>,
    metrics: Arc<Metrics>,
    cache: Cache,
    audit: AuditSink,
    /// Authorization codes presented again while their redemption was in flight: what it
    /// issues is revoked once it is done.
    reused: std::collections::HashMap<Digest32, Millis>,
}

impl Actor for DeviceActor {
    type Msg = DeviceMsg;
    type State = DeviceState;
    type Arguments = DeviceArgs;

    async fn pre_start(&self, _myself: ActorRef<DeviceMsg>, args: DeviceArgs) -> Result<DeviceState, ActorProcessingErr> {
        let stored = args.repo.load(args.now.saturating_sub(EXPIRED_GRACE_MS)).await?;
        let (book, unreadable) = DeviceBook::load(stored);
        if !unreadable.is_empty() {
            args.repo.remove(&unreadable).await?;
        }
        tracing::info!(authorizations = book.len(), "device authorizations loaded");
        Ok(DeviceState {
            book,
            config: args.config,
            repo: args.repo,
            me: args.me,
            token: args.token,
            metrics: args.metrics,
            cache: args.cache,
            audit: args.audit,
            reused: Default::default(),
        })
    }

    async fn handle(&self, _myself: ActorRef<DeviceMsg>, msg: DeviceMsg, st: &mut DeviceState) -> Result<(), ActorProcessingErr> {
        let msg = match msg {
            DeviceMsg::Fetched { found, then } => {
                if let Some((key, rec)) = found {
                    st.book.stored(key, rec.as_ref());
                }
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
            DeviceMsg::Create {
                client_id,
                scope,
                from,
                resources,
                now,
                reply,
            } => st.create(client_id, scope, (from, resources), now, reply),
            DeviceMsg::Poll {
                device_code_hash,
                client_id,
                resources,
                now,
                reply,
            } => match st.book.poll_for(&device_code_hash, &client_id, &resources, now) {
                PollOutcome::Error(code, why) => {
                    let _ = reply.send(Err(OAuthError::new(code, why)));
                }
                PollOutcome::Redeem(r) => st.redeem(device_code_hash, *r, now, reply),
                // Only an authorization code's exchange answers this.
                PollOutcome::Reused { .. } => {
                    let _ = reply.send(Err(OAuthError::new(ErrorCode::InvalidGrant, "the device code is invalid")));
                }
            },
            DeviceMsg::IssueCode { issue, now, reply } => st.issue_code(*issue, now, reply),
            DeviceMsg::Exchange { request, reply } => st.exchange(&request, reply),
            DeviceMsg::Lookup { user_code, now, reply } => {
                let _ = reply.send(st.book.lookup(&user_code, now).map(|(_, v)| v));
            }
            DeviceMsg::Decide {
                user_code,
                decision,
                now,
                reply,
            } => st.decide(user_code, decision, now, reply),
            DeviceMsg::Count { reply } => {
                let _ = reply.send(st.book.len());
            }
            DeviceMsg::CountPending { now, reply } => {
                let _ = reply.send(st.book.pending(now));
            }
            DeviceMsg::Committed { key, change } => st.committed(key, change),
            DeviceMsg::Sweep { now, store } => st.sweep(now, store),
            // Read even when not held: a first read of it may be under way, and must not be
            // the last word (`DeviceBook::stored` keeps the newest of the two).
            DeviceMsg::Changed { key } => st.fetch(st.repo.get(key), move |rec| Some((key, rec)), None),
            DeviceMsg::Reload { now } => {
                let (load, me) = (st.repo.load(now.saturating_sub(EXPIRED_GRACE_MS)), st.me.clone());
                tokio::spawn(async move {
                    match load.await {
                        Ok(records) => {
                            let _ = me.cast(DeviceMsg::Reloaded { records });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reload device authorizations; trying again in 1 s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = me.cast(DeviceMsg::Reload { now: now + 1000 });
                        }
                    }
                });
            }
            DeviceMsg::Reloaded { records } => st.book.reload(records),
            // Handled above.
            DeviceMsg::Fetched { .. } => {}
        }
        Ok(())
    }
}

impl DeviceState {
    /// On a shared database, a code another process issued is read from the store on first
    /// use here; if so the read is started and `None` returned. (Pending polls of held codes
    /// are answered from memory even while the feed is down: a decision missed then arrives
    /// with the reload that follows.)
    fn read_through(&self, msg: DeviceMsg) -> Option<DeviceMsg> {
        let presented = match &msg {
            DeviceMsg::Poll { device_code_hash, .. } => Some(*device_code_hash),
            DeviceMsg::Exchange { request, .. } => Some(request.code_hash),
            _ => None,
        };
        if let Some(key) = presented.filter(|k| !self.book.holds(k)) {
            self.fetch(self.repo.get(key), move |rec| Some((key, rec)), Some(msg));
            return None;
        }
        match &msg {
            DeviceMsg::Lookup { user_code, .. } | DeviceMsg::Decide { user_code, .. } if !self.book.holds_code(user_code) => {
                let read = self.repo.by_user_code(&String::from_utf8_lossy(user_code));
                self.fetch(read, |found| found.map(|(key, rec)| (key, Some(rec))), Some(msg));
                None
            }
            _ => Some(msg),
        }
    }

    /// Reads from the store off the mailbox, then applies what it found and handles `then`.
    /// If the read fails, `then` is answered that the database is unavailable.
    fn fetch<T: Send + 'static>(
        &self,
        read: crate::store::Pending<T>,
        found: impl FnOnce(T) -> Option<(Digest32, Option<DeviceRecord>)> + Send + 'static,
        then: Option<DeviceMsg>,
    ) {
        let me = self.me.clone();
        tokio::spawn(async move {
            let found = match read.await {
                Ok(v) => found(v),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a device authorization from the database");
                    if let Some(msg) = then {
                        unavailable(msg);
                    }
                    return;
                }
            };
            let _ = me.cast(DeviceMsg::Fetched {
                found,
                then: then.map(Box::new),
            });
        });
    }

    /// Tells this actor how a write or redemption it started ended.
    fn report(me: &Handle<DeviceMsg>, key: Digest32, change: Committed) {
        let _ = me.cast(DeviceMsg::Committed { key, change });
    }

    fn create(
        &mut self,
        client_id: String,
        scope: String,
        (from, resources): (Option<String>, Vec<String>),
        now: Millis,
        reply: RpcReplyPort<Result<NewDeviceCode, OAuthError>>,
    ) {
        let interval_ms = u32::try_from(self.config.poll_interval.as_millis())
            .unwrap_or(MAX_INTERVAL_MS)
            .max(1);
        let lifetime_ms = millis(self.config.code_lifetime);
        let Some((key, rec, answer)) = self.book.create(client_id, scope, (from, resources), now, lifetime_ms, interval_ms) else {
            let _ = reply.send(Err(OAuthError::unavailable("no free user code; try again")));
            return;
        };
        tracing::debug!(user_code = %secret::redact_user_code(&answer_code(&rec)), client_id = %rec.client_id, "device code issued");
        let me = self.me.clone();
        let (client_id, scope, from, resources) = (
            rec.client_id.clone(),
            rec.scope.clone(),
            rec.requested_from.clone(),
            rec.resources.clone(),
        );
        after(self.repo.insert(key, &rec), move |r| match r {
            Ok(true) => {
                let _ = reply.send(Ok(answer));
            }
            // Another process holds this user code (a shared database): try a fresh one.
            Ok(false) => {
                Self::report(&me, key, Committed::CreateFailed);
                if let Err(Some(DeviceMsg::Create { reply, .. })) = me.cast(DeviceMsg::Create {
                    client_id,
                    scope,
                    from,
                    resources,
                    now,
                    reply,
                }) {
                    let _ = reply.send(Err(OAuthError::unavailable("no free user code; try again")));
                }
            }
            Err(e) => {
                Self::report(&me, key, Committed::CreateFailed);
                let _ = reply.send(Err(e.into()));
            }
        });
    }

    /// Stores a new authorization code, approved, and answers it once durable.
    fn issue_code(&mut self, issue: CodeIssue, now: Millis, reply: RpcReplyPort<Result<String, OAuthError>>) {
        let lifetime_ms = millis(AUTHORIZATION_CODE_LIFETIME);
        let Some((key, rec, code)) = self.book.issue_code(issue.clone(), now, lifetime_ms) else {
            let _ = reply.send(Err(OAuthError::unavailable("no free code; try again")));
            return;
        };
        let me = self.me.clone();
        after(self.repo.insert(key, &rec), move |r| match r {
            Ok(true) => {
                let _ = reply.send(Ok(code));
            }
            // Its (never shown) user code is taken in a shared database: draw again.
            Ok(false) => {
                Self::report(&me, key, Committed::CreateFailed);
                if let Err(Some(DeviceMsg::IssueCode { reply, .. })) = me.cast(DeviceMsg::IssueCode {
                    issue: Box::new(issue),
                    now,
                    reply,
                }) {
                    let _ = reply.send(Err(OAuthError::unavailable("no free code; try again")));
                }
            }
            Err(e) => {
                Self::report(&me, key, Committed::CreateFailed);
                let _ = reply.send(Err(e.into()));
            }
        });
    }

    /// An authorization code presented at the token endpoint. One not held (on a shared
    /// database, not stored either) is unknown, expired long ago, or redeemed already: if it
    /// was redeemed, what it issued is revoked (RFC 6749 §4.1.2), as it is for one presented
    /// while its redemption is in flight.
    fn exchange(&mut self, request: &CodeExchange, reply: RpcReplyPort<Result<TokenResponse, OAuthError>>) {
        let (key, now) = (request.code_hash, request.now);
        let presented = Presented {
            redirect_uri: request.redirect_uri.as_deref(),
            verifier: request.verifier.as_deref(),
            resources: &request.resources,
        };
        let used = || Err(OAuthError::new(ErrorCode::InvalidGrant, "the authorization code was already used"));
        match self.book.exchange(&key, &request.client_id, presented, now) {
            PollOutcome::Redeem(r) => self.redeem(key, *r, now, reply),
            PollOutcome::Reused { in_flight } => {
                if in_flight {
                    // Revoked once the redemption under way is done.
                    self.reused.insert(key, now);
                } else {
                    self.revoke_reused(key, now);
                }
                let _ = reply.send(used());
            }
            PollOutcome::Error(code, why) => {
                let _ = reply.send(Err(OAuthError::new(code, why)));
            }
        }
    }

    /// Revokes the authorization a reused authorization code issued (RFC 6749 §4.1.2), and
    /// records it in the audit trail.
    fn revoke_reused(&self, key: Digest32, now: Millis) {
        let (token, audit) = (self.token.clone(), self.audit.clone());
        let authorization_id = code_authorization(&key);
        tokio::spawn(async move {
            let revoked = token
                .ask(|reply| TokenMsg::RevokeAuthorization {
                    authorization_id: authorization_id.clone(),
                    owner: None,
                    now,
                    reply,
                })
                .await;
            if let Ok(Ok(Some(a))) = revoked {
                tracing::warn!(%authorization_id, "an authorization code was used again: its tokens are revoked");
                audit.record(
                    AuditEvent::new(now, EventKind::CodeReuseDetected, format!("client:{}", a.client_id), false)
                        .subject(a.username)
                        .client(a.client_id)
                        .detail(format!("authorization {authorization_id} revoked")),
                );
            }
        });
    }

    fn redeem(&mut self, key: Digest32, r: Redemption, now: Millis, reply: RpcReplyPort<Result<TokenResponse, OAuthError>>) {
        let Redemption {
            approval,
            client_id,
            scope,
            resources,
            audience,
            nonce,
        } = r;
        let grant = Grant {
            user_id: approval.user_id,
            username: approval.username,
            client_id,
            scope,
            authorization_id: approval.authorization_id,
            name: approval.name,
            auth_time: approval.auth_time,
            machine: false,
            resources,
            audience,
            nonce,
        };
        let (token, me, issue_timeout) = (self.token.clone(), self.me.clone(), self.config.issue_timeout);
        tokio::spawn(async move {
            let result = token
                .ask_within(issue_timeout, |r| TokenMsg::IssueForGrant { grant, now, reply: r })
                .await
                .and_then(|r| r);
            // The token store issues at most once per authorization, so any failure can give
            // the code back: if the tokens were in fact issued, the next attempt is refused
            // with invalid_grant, which spends the code here.
            let change = match &result {
                Ok(_) => Committed::Redeemed,
                Err(e) if e.code == ErrorCode::InvalidGrant => Committed::Refused { now },
                Err(_) => Committed::RedeemFailed,
            };
            Self::report(&me, key, change);
            let _ = reply.send(result);
        });
    }

    fn decide(
        &mut self,
        user_code: [u8; USER_CODE_LEN],
        decision: Decision,
        now: Millis,
        reply: RpcReplyPort<Result<PendingView, CodeError>>,
    ) {
        let (key, rec, view) = match self.book.decide(&user_code, decision, now) {
            Ok(found) => found,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let me = self.me.clone();
        after(self.repo.decide(key, &rec), move |r| {
            // The state change is queued before the person hears back, so the device's next
            // poll already sees it.
            let outcome = match r {
                Ok(true) => {
                    Self::report(&me, key, Committed::Decided(Box::new(rec)));
                    Ok(view)
                }
                // Decided elsewhere first (another process sharing the database).
                Ok(false) => {
                    Self::report(&me, key, Committed::DecisionFailed);
                    // What the other process decided: read it.
                    let _ = me.cast(DeviceMsg::Changed { key });
                    Err(CodeError::AlreadyUsed)
                }
                Err(_) => {
                    Self::report(&me, key, Committed::DecisionFailed);
                    Err(CodeError::Store)
                }
            };
            let _ = reply.send(outcome);
        });
    }

    fn committed(&mut self, key: Digest32, change: Committed) {
        match change {
            Committed::CreateFailed => self.book.forget(&key),
            Committed::Redeemed => {
                // A device code is deleted; an authorization code stays, redeemed, until it
                // expires, in the store too, so that its reuse is recognised on any instance.
                if !self.book.redeemed(&key) {
                    log_failure(self.repo.remove(&[key]), "delete a redeemed device code");
                }
                if let Some(at) = self.reused.remove(&key) {
                    // Presented again while it was being redeemed (RFC 6749 §4.1.2).
                    self.revoke_reused(key, at);
                }
            }
            Committed::Refused { now } => {
                // The token store had issued for it already: an authorization code redeemed by
                // another process, so this presentation is a reuse.
                if self.book.is_code(&key) {
                    self.revoke_reused(key, now);
                }
                self.committed(key, Committed::Redeemed);
            }
            Committed::Decided(rec) => self.book.decided(&key, &rec),
            Committed::DecisionFailed => self.book.undecided(&key),
            Committed::RedeemFailed => {
                self.reused.remove(&key);
                self.book.unredeemed(&key);
            }
        }
    }

    fn sweep(&mut self, now: Millis, store: bool) {
        if store && self.cache.shared {
            // Every process's expired codes, not only those held here.
            let before = now.saturating_sub(EXPIRED_GRACE_MS);
            log_failure(self.repo.prune(before), "delete expired device codes");
        }
        let (expired, undecided) = self.book.sweep(now);
        let book = &self.book;
        self.reused.retain(|k, _| book.holds(k));
        if expired.is_empty() {
            return;
        }
        // Codes nobody decided on ran out of time (decided ones were counted as decided).
        Metrics::count(&self.metrics.device_codes, "expired", undecided as u64);
        tracing::debug!(count = expired.len(), "expired device codes swept");
        if store && !self.cache.shared {
            log_failure(self.repo.remove(&expired), "delete expired device codes");
        }
    }
}

/// Answers a request that needed the database when it could not be read.
fn unavailable(msg: DeviceMsg) {
    match msg {
        DeviceMsg::Poll { reply, .. } | DeviceMsg::Exchange { reply, .. } => {
            let _ = reply.send(Err(OAuthError::unavailable("the database is unavailable; poll again")));
        }
        DeviceMsg::Lookup { reply, .. } | DeviceMsg::Decide { reply, .. } => {
            let _ = reply.send(Err(CodeError::Store));
        }
        _ => {}
    }
}

/// The stored user code as bytes (for the redacted log line).
fn answer_code(rec: &DeviceRecord) -> [u8; USER_CODE_LEN] {
    secret::normalize_user_code(&rec.user_code).unwrap_or([b'?'; USER_CODE_LEN])
}
