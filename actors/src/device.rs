//! The device-authorization actor.
//!
//! Owns every live device authorization (RFC 8628): the device-code hashes, the user codes,
//! each code's poll timing and approval state. All of it lives in memory, rebuilt from redb at
//! start, so a poll (`/oauth/token` while pending) is answered without touching the disk.
//! Changes that a client is told about (a new code, an approval or denial, a redemption) are
//! committed to redb first; redemption is committed together with the tokens it produces, so a
//! device code redeems exactly once even across crashes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, OAuthError};
use crate::secret::{self, Digest32, USER_CODE_LEN};
use crate::store::{Op, Store, StoreError, Table, decode};
use crate::system::{Actors, ask_within, cast};
use crate::token::{Grant, TokenMsg, TokenResponse};

/// Unix time in milliseconds; taken once per request at the HTTP boundary and passed down.
pub type Millis = u64;

/// RFC 8628 §3.5: each `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN_STEP_MS: u32 = 5_000;
/// The interval never grows past this, however hard a client hammers.
const MAX_INTERVAL_MS: u32 = 60_000;
/// Expired codes stay known this long, so a late poll hears `expired_token`, not `invalid_grant`.
const EXPIRED_GRACE_MS: Millis = 10 * 60 * 1000;
/// Settings of the device flow.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub code_lifetime: Duration,
    pub poll_interval: Duration,
    /// How long a redemption waits for the token actor (longer when an external service mints).
    pub issue_timeout: Duration,
}

/// The stored form of a device authorization, keyed by SHA-256(device code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
    pub interval_ms: u32,
    #[serde(default)]
    pub state: RecordState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordState {
    #[default]
    Pending,
    Approved {
        user_id: String,
        username: String,
        authorization_id: String,
        decided_at_ms: Millis,
    },
    Denied {
        user_id: String,
        decided_at_ms: Millis,
    },
}

/// What the person approved: who, and the authorization the tokens will belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub user_id: String,
    pub username: String,
    pub authorization_id: String,
    pub decided_at_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    /// A decision is being committed; polls still hear `authorization_pending`.
    Deciding,
    Approved(Box<Approval>),
    /// Tokens are being issued for this code; no second redemption may start.
    Redeeming(Box<Approval>),
    Denied,
}

#[derive(Debug, Clone)]
struct Entry {
    user_code: [u8; USER_CODE_LEN],
    client_id: Arc<str>,
    scope: Arc<str>,
    created_at_ms: Millis,
    expires_at_ms: Millis,
    interval_ms: u32,
    /// The last poll that was accepted as on time; 0 before the first poll.
    last_poll_ms: Millis,
    /// Whether the one early poll allowed per interval has been used.
    burst_used: bool,
    state: State,
}

impl Entry {
    fn record(&self, state: RecordState) -> DeviceRecord {
        DeviceRecord {
            user_code: String::from_utf8_lossy(&self.user_code).into_owned(),
            client_id: self.client_id.to_string(),
            scope: self.scope.to_string(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            interval_ms: self.interval_ms,
            state,
        }
    }
}

/// What a poll produced, before any token is minted.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Approved: the caller must redeem (issue tokens), then report back.
    Redeem {
        approval: Approval,
        client_id: String,
        scope: String,
    },
    Error(ErrorCode, &'static str),
}

/// A code as the device receives it (the only time the device code exists in clear).
#[derive(Debug, Clone)]
pub struct NewDeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// A pending authorization as shown to the person on the confirmation page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
}

/// Why a code a person typed cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("That code is not valid. Check the code on your device and try again.")]
    Unknown,
    #[error("That code has expired. Start again on your device to get a new one.")]
    Expired,
    #[error("That code has already been used.")]
    AlreadyUsed,
    #[error("The server could not save your decision. Please try again.")]
    Store,
}

/// The in-memory book of device authorizations: all logic, no I/O, time passed in.
#[derive(Default)]
pub struct DeviceBook {
    by_hash: HashMap<Digest32, Entry>,
    by_user_code: HashMap<[u8; USER_CODE_LEN], Digest32>,
    /// Client ids and scope strings are shared by very many codes: store each once.
    interned: HashMap<String, Arc<str>>,
}

impl DeviceBook {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_owned(), a.clone());
        a
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Unexpired codes still waiting for a person's decision.
    pub fn pending(&self, now: Millis) -> usize {
        self.by_hash
            .values()
            .filter(|e| matches!(e.state, State::Pending | State::Deciding) && e.expires_at_ms > now)
            .count()
    }

    /// Picks a user code not used by any live authorization.
    fn fresh_user_code(&self) -> Option<[u8; USER_CODE_LEN]> {
        (0..32)
            .map(|_| secret::new_user_code())
            .find(|c| !self.by_user_code.contains_key(c))
    }

    fn insert(&mut self, key: Digest32, rec: &DeviceRecord) -> bool {
        let Some(user_code) = secret::normalize_user_code(&rec.user_code) else {
            return false;
        };
        let state = match &rec.state {
            RecordState::Pending => State::Pending,
            RecordState::Approved {
                user_id,
                username,
                authorization_id,
                decided_at_ms,
            } => State::Approved(Box::new(Approval {
                user_id: user_id.clone(),
                username: username.clone(),
                authorization_id: authorization_id.clone(),
                decided_at_ms: *decided_at_ms,
            })),
            RecordState::Denied { .. } => State::Denied,
        };
        let entry = Entry {
            user_code,
            client_id: self.intern(&rec.client_id),
            scope: self.intern(&rec.scope),
            created_at_ms: rec.created_at_ms,
            expires_at_ms: rec.expires_at_ms,
            interval_ms: rec.interval_ms,
            last_poll_ms: 0,
            burst_used: false,
            state,
        };
        self.by_user_code.insert(user_code, key);
        self.by_hash.insert(key, entry);
        true
    }

    fn remove(&mut self, key: &Digest32) {
        if let Some(e) = self.by_hash.remove(key)
            && self.by_user_code.get(&e.user_code) == Some(key)
        {
            self.by_user_code.remove(&e.user_code);
        }
    }

    /// RFC 8628 §3.4/§3.5: answers one poll and applies the interval rules.
    ///
    /// The interval is measured from the last accepted poll, with a tenth of it tolerated as
    /// jitter; one early poll per interval is allowed (Go's `x/oauth2` repeats a poll while it
    /// detects the auth style). A second early poll gets `slow_down` and the code's interval
    /// grows by 5 s. An approved code moves to `Redeeming`, so exactly one poll redeems it.
    pub fn poll(&mut self, key: &Digest32, client_id: &str, now: Millis) -> PollOutcome {
        let Some(e) = self.by_hash.get_mut(key) else {
            return PollOutcome::Error(ErrorCode::InvalidGrant, "the device code is invalid or was already used");
        };
        if &*e.client_id != client_id {
            return PollOutcome::Error(ErrorCode::InvalidGrant, "the device code was issued to another client");
        }
        if now >= e.expires_at_ms {
            return PollOutcome::Error(ErrorCode::ExpiredToken, "the device code has expired; request a new one");
        }
        if e.last_poll_ms != 0 {
            let elapsed = now.saturating_sub(e.last_poll_ms);
            let due = u64::from(e.interval_ms - e.interval_ms / 10);
            if elapsed < due {
                if e.burst_used {
                    e.interval_ms = (e.interval_ms + SLOW_DOWN_STEP_MS).min(MAX_INTERVAL_MS);
                    return PollOutcome::Error(ErrorCode::SlowDown, "polling too fast; wait 5 seconds longer between polls");
                }
                e.burst_used = true;
            } else {
                e.last_poll_ms = now;
                e.burst_used = false;
            }
        } else {
            e.last_poll_ms = now;
        }
        match &e.state {
            State::Pending | State::Deciding => {
                PollOutcome::Error(ErrorCode::AuthorizationPending, "the user has not yet approved this device")
            }
            State::Denied => PollOutcome::Error(ErrorCode::AccessDenied, "the user denied the authorization request"),
            State::Redeeming(_) => PollOutcome::Error(ErrorCode::InvalidGrant, "the device code is invalid or was already used"),
            State::Approved(a) => {
                let approval = (**a).clone();
                e.state = State::Redeeming(a.clone());
                PollOutcome::Redeem {
                    approval,
                    client_id: e.client_id.to_string(),
                    scope: e.scope.to_string(),
                }
            }
        }
    }

    /// The pending authorization behind a user code, for the confirmation page.
    pub fn lookup(&self, user_code: &[u8; USER_CODE_LEN], now: Millis) -> Result<(Digest32, PendingView), CodeError> {
        let key = *self.by_user_code.get(user_code).ok_or(CodeError::Unknown)?;
        let e = self.by_hash.get(&key).ok_or(CodeError::Unknown)?;
        if now >= e.expires_at_ms {
            return Err(CodeError::Expired);
        }
        if e.state != State::Pending {
            return Err(CodeError::AlreadyUsed);
        }
        let view = PendingView {
            user_code: secret::format_user_code(&e.user_code),
            client_id: e.client_id.to_string(),
            scope: e.scope.to_string(),
        };
        Ok((key, view))
    }

    /// Expired codes past their grace period.
    fn expired(&self, now: Millis) -> Vec<Digest32> {
        self.by_hash
            .iter()
            .filter(|(_, e)| e.expires_at_ms.saturating_add(EXPIRED_GRACE_MS) <= now)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Messages of the device-authorization actor.
pub enum DeviceMsg {
    /// Issues a new device code and user code (RFC 8628 §3.2) once it is durable.
    Create {
        client_id: String,
        scope: String,
        now: Millis,
        reply: RpcReplyPort<Result<NewDeviceCode, OAuthError>>,
    },
    /// A device polls with SHA-256 of its device code (RFC 8628 §3.4).
    Poll {
        device_code_hash: Digest32,
        client_id: String,
        now: Millis,
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
        user_id: String,
        username: String,
        approve: bool,
        now: Millis,
        reply: RpcReplyPort<Result<PendingView, CodeError>>,
    },
    /// How many authorizations are held (for health and benchmarks).
    Count { reply: RpcReplyPort<usize> },
    /// How many unexpired codes wait for a person's decision (for `/metrics`).
    CountPending { now: Millis, reply: RpcReplyPort<usize> },
    /// Internal: a write this actor applied in memory has committed (or failed).
    Committed { key: Digest32, change: Committed },
    /// Internal: sweep expired codes.
    Sweep,
}

/// Internal follow-ups, sent by the task that awaited a commit.
pub enum Committed {
    CreateFailed,
    Decided(Option<Box<Approval>>),
    DecisionFailed,
    Redeemed,
    RedeemFailed,
}

pub struct DeviceActor;

pub struct DeviceArgs {
    pub config: DeviceConfig,
    pub store: Store,
    pub actors: Actors,
}

pub struct DeviceState {
    book: DeviceBook,
    config: DeviceConfig,
    store: Store,
    actors: Actors,
}

/// Loads every stored authorization; expired ones past their grace are deleted instead.
pub async fn load(store: &Store, now: Millis) -> Result<(DeviceBook, Vec<Op>), StoreError> {
    store
        .read(move |r| {
            let mut book = DeviceBook::default();
            let mut stale = Vec::new();
            r.scan(Table::DeviceCodes, |k, v| {
                let key: Option<Digest32> = k.try_into().ok();
                match (key, decode::<DeviceRecord>(v)) {
                    (Some(key), Ok(rec)) if rec.expires_at_ms.saturating_add(EXPIRED_GRACE_MS) > now => {
                        if !book.insert(key, &rec) {
                            stale.push(Op::delete(Table::DeviceCodes, k.to_vec()));
                        }
                    }
                    _ => stale.push(Op::delete(Table::DeviceCodes, k.to_vec())),
                }
                Ok(())
            })?;
            Ok((book, stale))
        })
        .await
}

impl Actor for DeviceActor {
    type Msg = DeviceMsg;
    type State = DeviceState;
    type Arguments = DeviceArgs;

    async fn pre_start(&self, _myself: ActorRef<DeviceMsg>, args: DeviceArgs) -> Result<DeviceState, ActorProcessingErr> {
        MAILBOX.reset();
        let (book, stale) = load(&args.store, crate::now_ms()).await?;
        if !stale.is_empty() {
            args.store.write(stale).await?;
        }
        tracing::info!(authorizations = book.len(), "device authorizations loaded");
        Ok(DeviceState {
            book,
            config: args.config,
            store: args.store,
            actors: args.actors,
        })
    }

    async fn handle(&self, myself: ActorRef<DeviceMsg>, msg: DeviceMsg, st: &mut DeviceState) -> Result<(), ActorProcessingErr> {
        MAILBOX.received();
        match msg {
            DeviceMsg::Create {
                client_id,
                scope,
                now,
                reply,
            } => st.create(&myself, client_id, scope, now, reply),
            DeviceMsg::Poll {
                device_code_hash,
                client_id,
                now,
                reply,
            } => match st.book.poll(&device_code_hash, &client_id, now) {
                PollOutcome::Error(code, why) => {
                    let _ = reply.send(Err(OAuthError::new(code, why)));
                }
                PollOutcome::Redeem {
                    approval,
                    client_id,
                    scope,
                } => st.redeem(&myself, device_code_hash, approval, client_id, scope, now, reply),
            },
            DeviceMsg::Lookup { user_code, now, reply } => {
                let _ = reply.send(st.book.lookup(&user_code, now).map(|(_, v)| v));
            }
            DeviceMsg::Decide {
                user_code,
                user_id,
                username,
                approve,
                now,
                reply,
            } => st.decide(&myself, user_code, user_id, username, approve, now, reply),
            DeviceMsg::Count { reply } => {
                let _ = reply.send(st.book.len());
            }
            DeviceMsg::CountPending { now, reply } => {
                let _ = reply.send(st.book.pending(now));
            }
            DeviceMsg::Committed { key, change } => st.committed(key, change),
            DeviceMsg::Sweep => st.sweep(),
        }
        Ok(())
    }
}

impl DeviceState {
    fn create(
        &mut self,
        myself: &ActorRef<DeviceMsg>,
        client_id: String,
        scope: String,
        now: Millis,
        reply: RpcReplyPort<Result<NewDeviceCode, OAuthError>>,
    ) {
        let Some(user_code) = self.book.fresh_user_code() else {
            let _ = reply.send(Err(OAuthError::unavailable("no free user code; try again")));
            return;
        };
        let device_code = secret::random_token(32);
        let key = secret::sha256(&device_code);
        let interval_ms = u32::try_from(self.config.poll_interval.as_millis())
            .unwrap_or(MAX_INTERVAL_MS)
            .max(1);
        let lifetime_ms = u64::try_from(self.config.code_lifetime.as_millis()).unwrap_or(u64::MAX);
        let rec = DeviceRecord {
            user_code: String::from_utf8_lossy(&user_code).into_owned(),
            client_id,
            scope,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(lifetime_ms),
            interval_ms,
            state: RecordState::Pending,
        };
        let op = match Op::put(Table::DeviceCodes, key.to_vec(), &rec) {
            Ok(op) => op,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        self.book.insert(key, &rec);
        let done = self.store.submit(vec![op]);
        let myself = myself.clone();
        let answer = NewDeviceCode {
            device_code,
            user_code: secret::format_user_code(&user_code),
            expires_in: lifetime_ms / 1000,
            interval: u64::from(interval_ms).div_ceil(1000),
        };
        tracing::debug!(user_code = %secret::redact_user_code(&user_code), client_id = %rec.client_id, "device code issued");
        tokio::spawn(async move {
            match done.await {
                Ok(()) => {
                    let _ = reply.send(Ok(answer));
                }
                Err(e) => {
                    let _ = cast(
                        &myself,
                        DeviceMsg::Committed {
                            key,
                            change: Committed::CreateFailed,
                        },
                    );
                    let _ = reply.send(Err(e.into()));
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn redeem(
        &mut self,
        myself: &ActorRef<DeviceMsg>,
        key: Digest32,
        approval: Approval,
        client_id: String,
        scope: String,
        now: Millis,
        reply: RpcReplyPort<Result<TokenResponse, OAuthError>>,
    ) {
        let grant = Grant {
            user_id: approval.user_id,
            username: approval.username,
            client_id,
            scope,
            authorization_id: approval.authorization_id,
        };
        let actors = self.actors.clone();
        let myself = myself.clone();
        let issue_timeout = self.config.issue_timeout;
        tokio::spawn(async move {
            // The code's deletion commits in the same transaction as the tokens.
            let consume = vec![Op::delete(Table::DeviceCodes, key.to_vec())];
            let result = match actors.token() {
                Ok(token) => ask_within(&token, issue_timeout, |r| TokenMsg::IssueForGrant {
                    grant,
                    with: consume,
                    now,
                    reply: r,
                })
                .await
                .and_then(|r| r),
                Err(e) => Err(e),
            };
            // The token actor issues at most once per authorization, so any failure can give
            // the code back: if the tokens were in fact issued, the next attempt is refused
            // with invalid_grant, which spends the code here.
            let change = match &result {
                Ok(_) => Committed::Redeemed,
                Err(e) if e.code == ErrorCode::InvalidGrant => Committed::Redeemed,
                Err(_) => Committed::RedeemFailed,
            };
            let _ = cast(&myself, DeviceMsg::Committed { key, change });
            let _ = reply.send(result);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        myself: &ActorRef<DeviceMsg>,
        user_code: [u8; USER_CODE_LEN],
        user_id: String,
        username: String,
        approve: bool,
        now: Millis,
        reply: RpcReplyPort<Result<PendingView, CodeError>>,
    ) {
        let (key, view) = match self.book.lookup(&user_code, now) {
            Ok(found) => found,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let Some(entry) = self.book.by_hash.get_mut(&key) else {
            let _ = reply.send(Err(CodeError::Unknown));
            return;
        };
        let (state, approval) = if approve {
            let a = Approval {
                user_id,
                username,
                authorization_id: uuid::Uuid::new_v4().to_string(),
                decided_at_ms: now,
            };
            let s = RecordState::Approved {
                user_id: a.user_id.clone(),
                username: a.username.clone(),
                authorization_id: a.authorization_id.clone(),
                decided_at_ms: now,
            };
            (s, Some(Box::new(a)))
        } else {
            (
                RecordState::Denied {
                    user_id,
                    decided_at_ms: now,
                },
                None,
            )
        };
        let Ok(op) = Op::put(Table::DeviceCodes, key.to_vec(), &entry.record(state)) else {
            let _ = reply.send(Err(CodeError::Store));
            return;
        };
        entry.state = State::Deciding;
        let done = self.store.submit(vec![op]);
        let myself = myself.clone();
        tokio::spawn(async move {
            let ok = done.await.is_ok();
            let change = if ok {
                Committed::Decided(approval)
            } else {
                Committed::DecisionFailed
            };
            // The state change is queued before the person hears back, so the device's next
            // poll already sees it.
            let _ = cast(&myself, DeviceMsg::Committed { key, change });
            let _ = reply.send(if ok { Ok(view) } else { Err(CodeError::Store) });
        });
    }

    fn committed(&mut self, key: Digest32, change: Committed) {
        match change {
            Committed::CreateFailed | Committed::Redeemed => self.book.remove(&key),
            Committed::Decided(approval) => {
                if let Some(e) = self.book.by_hash.get_mut(&key) {
                    e.state = match approval {
                        Some(a) => State::Approved(a),
                        None => State::Denied,
                    };
                }
            }
            Committed::DecisionFailed => {
                if let Some(e) = self.book.by_hash.get_mut(&key) {
                    e.state = State::Pending;
                }
            }
            Committed::RedeemFailed => {
                if let Some(e) = self.book.by_hash.get_mut(&key)
                    && let State::Redeeming(a) = &e.state
                {
                    e.state = State::Approved(a.clone());
                }
            }
        }
    }

    fn sweep(&mut self) {
        let expired = self.book.expired(crate::now_ms());
        if expired.is_empty() {
            return;
        }
        let ops = expired.iter().map(|k| Op::delete(Table::DeviceCodes, k.to_vec())).collect();
        let mut unredeemed = 0;
        for k in &expired {
            if self
                .book
                .by_hash
                .get(k)
                .is_some_and(|e| matches!(e.state, State::Pending | State::Deciding))
            {
                unredeemed += 1;
            }
            self.book.remove(k);
        }
        // Codes nobody decided on ran out of time (decided ones were counted as decided).
        crate::metrics::Metrics::count(&self.actors.metrics().device_codes, "expired", unredeemed);
        tracing::debug!(count = expired.len(), "expired device codes swept");
        let done = self.store.submit(ops);
        tokio::spawn(async move {
            if let Err(e) = done.await {
                tracing::warn!(error = %e, "could not delete expired device codes; they are retried at next start");
            }
        });
    }
}

/// This actor's mailbox depth (see [`crate::metrics::Mailbox`]).
static MAILBOX: crate::metrics::Mailbox = crate::metrics::Mailbox::new("device");

impl crate::system::Tracked for DeviceMsg {
    fn mailbox() -> &'static crate::metrics::Mailbox {
        &MAILBOX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    fn book_with(state: RecordState) -> (DeviceBook, Digest32) {
        let mut b = DeviceBook::default();
        let key = secret::sha256("dc");
        let rec = DeviceRecord {
            user_code: "BCDFGHJK".into(),
            client_id: "cli".into(),
            scope: "read".into(),
            created_at_ms: T0,
            expires_at_ms: T0 + 30 * 60_000,
            interval_ms: 5_000,
            state,
        };
        assert!(b.insert(key, &rec));
        (b, key)
    }

    fn code(o: &PollOutcome) -> Option<ErrorCode> {
        match o {
            PollOutcome::Error(c, _) => Some(*c),
            PollOutcome::Redeem { .. } => None,
        }
    }

    #[test]
    fn a_client_polling_at_the_advertised_pace_never_sees_slow_down() {
        let (mut b, key) = book_with(RecordState::Pending);
        for i in 0..50 {
            let o = b.poll(&key, "cli", T0 + i * 5_000);
            assert_eq!(code(&o), Some(ErrorCode::AuthorizationPending), "poll {i}");
        }
    }

    #[test]
    fn slight_jitter_is_tolerated() {
        let (mut b, key) = book_with(RecordState::Pending);
        let mut t = T0;
        for _ in 0..20 {
            assert_eq!(code(&b.poll(&key, "cli", t)), Some(ErrorCode::AuthorizationPending));
            t += 4_600;
        }
    }

    #[test]
    fn go_style_double_poll_is_not_punished() {
        let (mut b, key) = book_with(RecordState::Pending);
        for i in 0..10 {
            let t = T0 + i * 5_000;
            assert_eq!(code(&b.poll(&key, "cli", t)), Some(ErrorCode::AuthorizationPending));
            assert_eq!(code(&b.poll(&key, "cli", t + 15)), Some(ErrorCode::AuthorizationPending));
        }
    }

    #[test]
    fn a_third_poll_within_the_interval_gets_slow_down_and_the_interval_grows() {
        let (mut b, key) = book_with(RecordState::Pending);
        assert_eq!(code(&b.poll(&key, "cli", T0)), Some(ErrorCode::AuthorizationPending));
        assert_eq!(code(&b.poll(&key, "cli", T0 + 10)), Some(ErrorCode::AuthorizationPending));
        assert_eq!(code(&b.poll(&key, "cli", T0 + 20)), Some(ErrorCode::SlowDown));
        // Now 10 s apply, measured from the last accepted poll (T0).
        assert_eq!(code(&b.poll(&key, "cli", T0 + 6_000)), Some(ErrorCode::SlowDown));
        assert_eq!(
            code(&b.poll(&key, "cli", T0 + 6_000 + 15_000)),
            Some(ErrorCode::AuthorizationPending)
        );
    }

    #[test]
    fn the_first_poll_is_never_slow_down() {
        let (mut b, key) = book_with(RecordState::Pending);
        assert_eq!(code(&b.poll(&key, "cli", T0)), Some(ErrorCode::AuthorizationPending));
    }

    #[test]
    fn another_clients_poll_is_invalid_grant() {
        let (mut b, key) = book_with(RecordState::Pending);
        assert_eq!(code(&b.poll(&key, "other", T0)), Some(ErrorCode::InvalidGrant));
        assert_eq!(code(&b.poll(&secret::sha256("nope"), "cli", T0)), Some(ErrorCode::InvalidGrant));
    }

    #[test]
    fn expiry_gives_expired_token() {
        let (mut b, key) = book_with(RecordState::Pending);
        assert_eq!(code(&b.poll(&key, "cli", T0 + 30 * 60_000)), Some(ErrorCode::ExpiredToken));
    }

    #[test]
    fn denial_gives_access_denied() {
        let (mut b, key) = book_with(RecordState::Denied {
            user_id: "u".into(),
            decided_at_ms: T0,
        });
        assert_eq!(code(&b.poll(&key, "cli", T0)), Some(ErrorCode::AccessDenied));
    }

    #[test]
    fn an_approved_code_redeems_exactly_once() {
        let (mut b, key) = book_with(RecordState::Approved {
            user_id: "u".into(),
            username: "alice".into(),
            authorization_id: "a".into(),
            decided_at_ms: T0,
        });
        match b.poll(&key, "cli", T0) {
            PollOutcome::Redeem {
                approval,
                client_id,
                scope,
            } => {
                assert_eq!(approval.user_id, "u");
                assert_eq!(client_id, "cli");
                assert_eq!(scope, "read");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(code(&b.poll(&key, "cli", T0 + 5)), Some(ErrorCode::InvalidGrant));
        assert_eq!(code(&b.poll(&key, "cli", T0 + 5_000)), Some(ErrorCode::InvalidGrant));
    }

    #[test]
    fn lookup_finds_only_pending_unexpired_codes() {
        let (b, _) = book_with(RecordState::Pending);
        let (_, v) = b.lookup(b"BCDFGHJK", T0).unwrap();
        assert_eq!(v.user_code, "BCDF-GHJK");
        assert_eq!(b.lookup(b"BCDFGHJL", T0), Err(CodeError::Unknown));
        assert_eq!(b.lookup(b"BCDFGHJK", T0 + 31 * 60_000), Err(CodeError::Expired));
        let (b, _) = book_with(RecordState::Denied {
            user_id: "u".into(),
            decided_at_ms: T0,
        });
        assert_eq!(b.lookup(b"BCDFGHJK", T0), Err(CodeError::AlreadyUsed));
    }

    #[test]
    fn sweep_finds_codes_only_after_the_grace_period() {
        let (b, key) = book_with(RecordState::Pending);
        assert!(b.expired(T0 + 31 * 60_000).is_empty());
        assert_eq!(b.expired(T0 + 30 * 60_000 + EXPIRED_GRACE_MS), vec![key]);
    }
}
