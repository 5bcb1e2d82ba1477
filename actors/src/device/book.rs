//! The device book: every live device authorization in memory, all the rules of RFC 8628,
//! no I/O, time passed in.

use std::collections::HashMap;
use std::sync::Arc;

use crate::crypto::secret::{self, Digest32, USER_CODE_LEN};
use crate::error::ErrorCode;
use crate::store::device::{CodeGrant, DeviceRecord, RecordState};
use crate::time::Millis;

/// RFC 8628 §3.5: each `slow_down` adds 5 seconds to the interval.
const SLOW_DOWN_STEP_MS: u32 = 5_000;
/// The interval never grows past this, however hard a client hammers.
pub(super) const MAX_INTERVAL_MS: u32 = 60_000;
/// Most codes remembered as gone (see `DeviceBook::gone`).
const MAX_GONE: usize = 100_000;
/// Expired codes stay known this long, so a late poll hears `expired_token`, not `invalid_grant`.
pub const EXPIRED_GRACE_MS: Millis = 10 * 60 * 1000;

/// What the person approved: who, and the authorization the tokens will belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub user_id: String,
    pub username: String,
    pub authorization_id: String,
    pub decided_at_ms: Millis,
    pub name: Option<String>,
    pub auth_time: Option<crate::time::Secs>,
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
    /// An authorization code that was redeemed: kept (here and in the store) until it expires,
    /// so that a presentation passing its checks again is recognised as reuse.
    Redeemed,
}

impl State {
    /// The state a stored record stands for.
    fn of(stored: &RecordState) -> State {
        match stored {
            RecordState::Pending => State::Pending,
            RecordState::Approved {
                user_id,
                username,
                authorization_id,
                decided_at_ms,
                name,
                auth_time,
            } => State::Approved(Box::new(Approval {
                user_id: user_id.clone(),
                username: username.clone(),
                authorization_id: authorization_id.clone(),
                decided_at_ms: *decided_at_ms,
                name: name.clone(),
                auth_time: *auth_time,
            })),
            RecordState::Denied { .. } => State::Denied,
        }
    }
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
    /// The address the code was requested from.
    requested_from: Option<Box<str>>,
    /// RFC 8707 resources asked for (rare: a boxed slice, so an entry without grows little).
    resources: Option<Box<[String]>>,
    /// An authorization code's checks (none for a device code).
    code: Option<Box<CodeGrant>>,
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
            requested_from: self.requested_from.as_deref().map(str::to_owned),
            resources: self.resources.as_deref().map(<[String]>::to_vec).unwrap_or_default(),
            code: self.code.clone(),
        }
    }
}

impl Entry {
    /// The answer to a presentation that passed its own checks: the resources asked for must
    /// be among those granted (RFC 8707), then the state decides.
    fn redeem(&mut self, resources: &[String]) -> PollOutcome {
        let granted = self.resources.as_deref().map(<[String]>::to_vec).unwrap_or_default();
        if resources.iter().any(|r| !granted.contains(r)) {
            return PollOutcome::Error(ErrorCode::InvalidTarget, "a resource the authorization request did not ask for");
        }
        let used = if self.code.is_some() {
            "the authorization code is invalid or was already used"
        } else {
            "the device code is invalid or was already used"
        };
        match &self.state {
            State::Pending | State::Deciding => {
                PollOutcome::Error(ErrorCode::AuthorizationPending, "the user has not yet approved this device")
            }
            State::Denied => PollOutcome::Error(ErrorCode::AccessDenied, "the user denied the authorization request"),
            State::Redeeming(_) | State::Redeemed => PollOutcome::Error(ErrorCode::InvalidGrant, used),
            State::Approved(a) => {
                let approval = (**a).clone();
                self.state = State::Redeeming(a.clone());
                PollOutcome::Redeem(Box::new(Redemption {
                    approval,
                    client_id: self.client_id.to_string(),
                    scope: self.scope.to_string(),
                    audience: if resources.is_empty() {
                        granted.clone()
                    } else {
                        resources.to_vec()
                    },
                    resources: granted,
                    nonce: self.code.as_ref().and_then(|c| c.nonce.clone()),
                }))
            }
        }
    }
}

/// What a token request presents with an authorization code, besides the code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub redirect_uri: Option<&'a str>,
    pub verifier: Option<&'a str>,
    /// RFC 8707 resources the token request names (none: all that were asked for).
    pub resources: &'a [String],
}

/// An authorization code to issue: the person's approval of a client's request.
#[derive(Debug, Clone)]
pub struct CodeIssue {
    pub client_id: String,
    pub scope: String,
    pub resources: Vec<String>,
    pub user_id: String,
    pub username: String,
    pub auth_time: Option<crate::time::Secs>,
    pub code: CodeGrant,
}

/// The authorization an authorization code's tokens belong to, derived from the code's key, so
/// that a code presented again after its redemption (RFC 6749 §4.1.2: reuse) still names what
/// it issued, to revoke it.
pub fn code_authorization(key: &Digest32) -> String {
    let mut half = [0u8; 16];
    half.copy_from_slice(&key[16..]);
    uuid::Builder::from_random_bytes(half).into_uuid().to_string()
}

/// What a poll produced, before any token is minted.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Approved: the caller must redeem (issue tokens), then report back.
    Redeem(Box<Redemption>),
    /// An authorization code presented again by its own client, with its redirect URI and
    /// verifier: redeemed already, or being redeemed (`in_flight`). What it issued is to be
    /// revoked (RFC 6749 §4.1.2); the presentation gets `invalid_grant`.
    Reused {
        in_flight: bool,
    },
    Error(ErrorCode, &'static str),
}

/// What an approved code redeems for.
#[derive(Debug, PartialEq, Eq)]
pub struct Redemption {
    pub approval: Approval,
    pub client_id: String,
    pub scope: String,
    /// RFC 8707: the resources granted, and those this token is for (a subset).
    pub resources: Vec<String>,
    pub audience: Vec<String>,
    /// OpenID Connect: the authorization request's `nonce` (authorization codes only).
    pub nonce: Option<String>,
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
    /// When the device asked for the code.
    pub requested_at_ms: Millis,
    /// The address it asked from, if known.
    pub requested_from: Option<String>,
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
    /// Codes held here and then read from a shared store as gone (redeemed or swept
    /// elsewhere), so a late read cannot bring one back; emptied at each sweep (by then every
    /// such read has finished), or when it holds [`MAX_GONE`].
    gone: std::collections::HashSet<Digest32>,
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
        let state = State::of(&rec.state);
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
            requested_from: rec.requested_from.as_deref().map(Box::from),
            resources: (!rec.resources.is_empty()).then(|| rec.resources.clone().into_boxed_slice()),
            code: rec.code.clone(),
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
        self.poll_for(key, client_id, &[], now)
    }

    /// [`DeviceBook::poll`] with the RFC 8707 resources the token request names: each must be
    /// one the device asked for (`invalid_target` otherwise); none means all of them.
    pub fn poll_for(&mut self, key: &Digest32, client_id: &str, resources: &[String], now: Millis) -> PollOutcome {
        let Some(e) = self.by_hash.get_mut(key) else {
            return PollOutcome::Error(ErrorCode::InvalidGrant, "the device code is invalid or was already used");
        };
        if e.code.is_some() {
            return PollOutcome::Error(ErrorCode::InvalidGrant, "the device code is invalid or was already used");
        }
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
        // RFC 8707: a resource the device did not ask for is refused at once, not after the
        // person approved (a client stops polling on this error).
        e.redeem(resources)
    }

    /// RFC 6749 §4.1.3: a client exchanges an authorization code held here (the caller
    /// checks [`DeviceBook::holds`] first: an unknown code may be a reused one). The code must
    /// be this client's, unexpired, presented with the redirect URI the request named, and with
    /// the PKCE verifier of its challenge; a verifier for a code issued without a challenge is
    /// refused (RFC 9700 §2.1.1, the downgrade). An approved code moves to `Redeeming`, so it
    /// redeems once.
    pub fn exchange(&mut self, key: &Digest32, client_id: &str, presented: Presented<'_>, now: Millis) -> PollOutcome {
        let invalid = |why| PollOutcome::Error(ErrorCode::InvalidGrant, why);
        let Some(e) = self.by_hash.get_mut(key) else {
            return invalid("the authorization code is invalid or was already used");
        };
        let Some(code) = e.code.as_deref() else {
            return invalid("the authorization code is invalid or was already used");
        };
        if &*e.client_id != client_id {
            return invalid("the authorization code was issued to another client");
        }
        if now >= e.expires_at_ms {
            return invalid("the authorization code has expired");
        }
        let redirect_ok = match presented.redirect_uri {
            Some(r) => r == code.redirect_uri,
            None => !code.redirect_given,
        };
        if !redirect_ok {
            return invalid("redirect_uri must be the one the authorization request named");
        }
        match (code.challenge.as_deref(), presented.verifier) {
            (Some(challenge), Some(v)) if !secret::pkce_matches(v, challenge) => {
                return invalid("code_verifier does not match the code_challenge");
            }
            (Some(_), None) => return invalid("code_verifier is required: the authorization request had a code_challenge"),
            (None, Some(_)) => {
                return invalid("the authorization request had no code_challenge, so no code_verifier is accepted");
            }
            _ => {}
        }
        // Only a presentation that passed every check above counts as reuse: someone who merely
        // saw the code cannot revoke what it issued.
        match e.state {
            State::Redeemed => PollOutcome::Reused { in_flight: false },
            State::Redeeming(_) => PollOutcome::Reused { in_flight: true },
            _ => e.redeem(presented.resources),
        }
    }

    /// A new authorization code for an approval given now: approved at once, its key, its
    /// record (to store) and the code itself (the only time it exists in clear); `None` when no
    /// free user code was found (every entry has one; an authorization code's is never shown).
    pub fn issue_code(&mut self, issue: CodeIssue, now: Millis, lifetime_ms: Millis) -> Option<(Digest32, DeviceRecord, String)> {
        let user_code = self.fresh_user_code()?;
        let code = secret::random_token(32);
        let key = secret::sha256(&code);
        let rec = DeviceRecord {
            user_code: String::from_utf8_lossy(&user_code).into_owned(),
            client_id: issue.client_id,
            scope: issue.scope,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(lifetime_ms),
            interval_ms: 0,
            state: RecordState::Approved {
                user_id: issue.user_id,
                username: issue.username,
                authorization_id: code_authorization(&key),
                decided_at_ms: now,
                name: None,
                auth_time: issue.auth_time,
            },
            requested_from: None,
            resources: issue.resources,
            code: Some(Box::new(issue.code)),
        };
        self.insert(key, &rec);
        Some((key, rec, code))
    }

    /// The pending authorization behind a user code, for the confirmation page.
    pub fn lookup(&self, user_code: &[u8; USER_CODE_LEN], now: Millis) -> Result<(Digest32, PendingView), CodeError> {
        let key = *self.by_user_code.get(user_code).ok_or(CodeError::Unknown)?;
        let e = self.by_hash.get(&key).filter(|e| e.code.is_none()).ok_or(CodeError::Unknown)?;
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
            requested_at_ms: e.created_at_ms,
            requested_from: e.requested_from.as_deref().map(str::to_owned),
        };
        Ok((key, view))
    }

    /// Whether the authorization stored under `key` is held.
    pub fn holds(&self, key: &Digest32) -> bool {
        self.by_hash.contains_key(key)
    }

    /// Whether the entry under `key` is an authorization code whose redemption is in flight.
    #[cfg(test)]
    fn redeeming(&self, key: &Digest32) -> bool {
        self.by_hash.get(key).is_some_and(|e| matches!(e.state, State::Redeeming(_)))
    }

    /// Whether the entry under `key` is an authorization code (not a device code).
    pub fn is_code(&self, key: &Digest32) -> bool {
        self.by_hash.get(key).is_some_and(|e| e.code.is_some())
    }

    /// Whether a live authorization has this user code.
    pub fn holds_code(&self, user_code: &[u8; USER_CODE_LEN]) -> bool {
        self.by_user_code.contains_key(user_code)
    }

    /// An authorization as the store had it when read (another process created, decided,
    /// redeemed or swept it). Stored states only move forward (pending, then decided, then
    /// gone), so of two reads that finish out of order the newer wins: a pending record never
    /// undoes a decision held here, and a code seen gone never comes back. A decision or
    /// redemption this process has in flight is left to finish; the poll timing kept here stays.
    pub fn stored(&mut self, key: Digest32, rec: Option<&DeviceRecord>) {
        if self.gone.contains(&key) {
            return;
        }
        let in_flight = |e: &Entry| matches!(e.state, State::Deciding | State::Redeeming(_));
        match (self.by_hash.get_mut(&key), rec) {
            // A pending read never undoes a decision held here.
            (Some(e), Some(rec))
                if !in_flight(e) && e.state != State::Redeemed && (rec.state != RecordState::Pending || e.state == State::Pending) =>
            {
                e.state = State::of(&rec.state);
            }
            (Some(e), None) if !in_flight(e) => {
                self.remove(&key);
                if self.gone.len() >= MAX_GONE {
                    self.gone.clear();
                }
                self.gone.insert(key);
            }
            (None, Some(rec)) => {
                self.insert(key, rec);
            }
            _ => {}
        }
    }

    /// Everything as the store had it at a reload, applied record by record as
    /// [`DeviceBook::stored`] does. A held code the snapshot lacks stays (it may be newer than
    /// the snapshot): if it was redeemed elsewhere, its next redemption here is refused by the
    /// token store, which spends it; otherwise it expires.
    pub fn reload(&mut self, records: Vec<(Digest32, DeviceRecord)>) {
        for (k, rec) in &records {
            self.stored(*k, Some(rec));
        }
    }

    /// Loads stored authorizations; answers the keys of those that cannot be held (an
    /// unreadable user code), to be deleted.
    pub fn load(records: Vec<(Digest32, DeviceRecord)>) -> (DeviceBook, Vec<Digest32>) {
        let mut book = DeviceBook::default();
        let bad = records.into_iter().filter(|(k, r)| !book.insert(*k, r)).map(|(k, _)| k).collect();
        (book, bad)
    }

    /// A new pending authorization for `client_id`, issued at `now`: its key and record (to
    /// store) and what the device is told; `None` when no free user code was found.
    pub fn create(
        &mut self,
        client_id: String,
        scope: String,
        (requested_from, resources): (Option<String>, Vec<String>),
        now: Millis,
        lifetime_ms: Millis,
        interval_ms: u32,
    ) -> Option<(Digest32, DeviceRecord, NewDeviceCode)> {
        let user_code = self.fresh_user_code()?;
        let device_code = secret::random_token(32);
        let key = secret::sha256(&device_code);
        let rec = DeviceRecord {
            user_code: String::from_utf8_lossy(&user_code).into_owned(),
            client_id,
            scope,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(lifetime_ms),
            interval_ms,
            state: RecordState::Pending,
            requested_from,
            resources,
            code: None,
        };
        let answer = NewDeviceCode {
            device_code,
            user_code: secret::format_user_code(&user_code),
            expires_in: lifetime_ms / 1000,
            interval: u64::from(interval_ms).div_ceil(1000),
        };
        self.insert(key, &rec);
        Some((key, rec, answer))
    }

    /// A person decides on the code they typed: the code moves to `Deciding` (polls still
    /// hear `authorization_pending`) until [`DeviceBook::decided`] or
    /// [`DeviceBook::undecided`]. Answers the key, the record to store and what the page shows.
    pub fn decide(
        &mut self,
        user_code: &[u8; USER_CODE_LEN],
        decision: Decision,
        now: Millis,
    ) -> Result<(Digest32, DeviceRecord, PendingView), CodeError> {
        let (key, view) = self.lookup(user_code, now)?;
        let entry = self.by_hash.get_mut(&key).ok_or(CodeError::Unknown)?;
        let state = match decision {
            Decision::Approve {
                user_id,
                username,
                name,
                auth_time,
            } => RecordState::Approved {
                user_id,
                username,
                authorization_id: uuid::Uuid::new_v4().to_string(),
                decided_at_ms: now,
                name,
                auth_time,
            },
            Decision::Deny { user_id } => RecordState::Denied {
                user_id,
                decided_at_ms: now,
            },
        };
        let rec = entry.record(state);
        entry.state = State::Deciding;
        Ok((key, rec, view))
    }

    /// The decision stored in `rec` is durable: polls now see it.
    pub fn decided(&mut self, key: &Digest32, rec: &DeviceRecord) {
        if let Some(e) = self.by_hash.get_mut(key) {
            e.state = State::of(&rec.state);
        }
    }

    /// The decision could not be stored: the code is pending again.
    pub fn undecided(&mut self, key: &Digest32) {
        if let Some(e) = self.by_hash.get_mut(key)
            && e.state == State::Deciding
        {
            e.state = State::Pending;
        }
    }

    /// The code was redeemed (or its creation failed): it is gone.
    pub fn forget(&mut self, key: &Digest32) {
        self.remove(key);
    }

    /// An authorization code's tokens were issued: it stays, redeemed, until it expires (see
    /// [`State::Redeemed`]). Answers whether it did (a device code is forgotten instead).
    pub fn redeemed(&mut self, key: &Digest32) -> bool {
        match self.by_hash.get_mut(key) {
            Some(e) if e.code.is_some() => {
                e.state = State::Redeemed;
                true
            }
            _ => {
                self.remove(key);
                false
            }
        }
    }

    /// Issuing tokens failed in a way that may be retried: the code is approved again.
    pub fn unredeemed(&mut self, key: &Digest32) {
        if let Some(e) = self.by_hash.get_mut(key)
            && let State::Redeeming(a) = &e.state
        {
            e.state = State::Approved(a.clone());
        }
    }

    /// Removes the codes expired past their grace period at `now`: their keys, and how many of
    /// them nobody had decided on.
    pub fn sweep(&mut self, now: Millis) -> (Vec<Digest32>, usize) {
        self.gone.clear();
        let expired: Vec<Digest32> = self
            .by_hash
            .iter()
            .filter(|(_, e)| e.expires_at_ms.saturating_add(EXPIRED_GRACE_MS) <= now)
            .map(|(k, _)| *k)
            .collect();
        let undecided = expired
            .iter()
            .filter(|k| {
                self.by_hash
                    .get(*k)
                    .is_some_and(|e| matches!(e.state, State::Pending | State::Deciding))
            })
            .count();
        for k in &expired {
            self.remove(k);
        }
        (expired, undecided)
    }
}

/// What a person decided on the confirmation page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `name`: the device's name, if the person gave one (else the client's name is shown).
    Approve {
        user_id: String,
        username: String,
        name: Option<String>,
        /// When the person signed in (Unix seconds).
        auth_time: Option<crate::time::Secs>,
    },
    Deny {
        user_id: String,
    },
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
            requested_from: None,
            resources: Vec::new(),
            code: None,
        };
        assert!(b.insert(key, &rec));
        (b, key)
    }

    fn code(o: &PollOutcome) -> Option<ErrorCode> {
        match o {
            PollOutcome::Error(c, _) => Some(*c),
            PollOutcome::Redeem(_) | PollOutcome::Reused { .. } => None,
        }
    }

    /// Reads of a shared store that finish out of order: the newest state wins.
    #[test]
    fn stored_states_only_move_forward() {
        let (mut b, key) = book_with(RecordState::Pending);
        let rec = |state| DeviceRecord {
            user_code: "BCDFGHJK".into(),
            client_id: "cli".into(),
            scope: "read".into(),
            created_at_ms: T0,
            expires_at_ms: T0 + 30 * 60_000,
            interval_ms: 5_000,
            state,
            requested_from: None,
            resources: Vec::new(),
            code: None,
        };
        let approved = rec(RecordState::Approved {
            auth_time: None,
            user_id: "u".into(),
            username: "alice".into(),
            authorization_id: "a".into(),
            decided_at_ms: T0,
            name: None,
        });
        b.stored(key, Some(&approved));
        b.stored(key, Some(&rec(RecordState::Pending)));
        assert!(
            matches!(b.poll(&key, "cli", T0), PollOutcome::Redeem(_)),
            "a late pending read undoes no approval"
        );
        b.unredeemed(&key);
        b.stored(key, None);
        assert!(!b.holds(&key));
        b.stored(key, Some(&approved));
        assert!(!b.holds(&key), "a late read brings no redeemed code back");
        b.reload(vec![(key, approved)]);
        assert!(!b.holds(&key));
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
            auth_time: None,
            user_id: "u".into(),
            username: "alice".into(),
            authorization_id: "a".into(),
            decided_at_ms: T0,
            name: None,
        });
        match b.poll(&key, "cli", T0) {
            PollOutcome::Redeem(r) => {
                assert_eq!(r.approval.user_id, "u");
                assert_eq!(r.client_id, "cli");
                assert_eq!(r.scope, "read");
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
        let (mut b, key) = book_with(RecordState::Pending);
        assert!(b.sweep(T0 + 31 * 60_000).0.is_empty());
        assert_eq!(b.sweep(T0 + 30 * 60_000 + EXPIRED_GRACE_MS), (vec![key], 1));
        assert!(b.is_empty());
    }

    #[test]
    fn a_decision_is_seen_by_polls_only_once_it_is_durable() {
        let mut b = DeviceBook::default();
        let (key, _, code) = b
            .create("cli".into(), "read".into(), (None, Vec::new()), T0, 600_000, 5_000)
            .unwrap();
        assert_eq!((code.expires_in, code.interval), (600, 5));
        let typed = secret::normalize_user_code(&code.user_code).unwrap();
        let approve = Decision::Approve {
            auth_time: None,
            user_id: "u".into(),
            username: "alice".into(),
            name: None,
        };
        let (k, rec, view) = b.decide(&typed, approve.clone(), T0 + 1).unwrap();
        assert_eq!((k, view.client_id.as_str()), (key, "cli"));
        assert_eq!(code_of(&b.poll(&key, "cli", T0 + 2)), Some(ErrorCode::AuthorizationPending));
        assert_eq!(b.decide(&typed, approve.clone(), T0 + 3).unwrap_err(), CodeError::AlreadyUsed);
        // The store refused: pending again, and a second try works.
        b.undecided(&key);
        let (_, rec2, _) = b.decide(&typed, approve, T0 + 4).unwrap();
        assert_ne!(rec, rec2, "each approval names a new authorization");
        b.decided(&key, &rec2);
        assert!(matches!(b.poll(&key, "cli", T0 + 5_010), PollOutcome::Redeem(_)));
        // Issuing failed for a passing reason: the code may be redeemed again.
        b.unredeemed(&key);
        assert!(matches!(b.poll(&key, "cli", T0 + 10_020), PollOutcome::Redeem(_)));
        b.forget(&key);
        assert_eq!(code_of(&b.poll(&key, "cli", T0 + 15_030)), Some(ErrorCode::InvalidGrant));
    }

    #[test]
    fn a_stored_code_with_an_unreadable_user_code_is_dropped_at_load() {
        let rec = |user_code: &str| DeviceRecord {
            user_code: user_code.into(),
            client_id: "cli".into(),
            scope: "read".into(),
            created_at_ms: T0,
            expires_at_ms: T0 + 60_000,
            interval_ms: 5_000,
            state: RecordState::Pending,
            requested_from: None,
            resources: Vec::new(),
            code: None,
        };
        let (b, bad) = DeviceBook::load(vec![([1; 32], rec("BCDFGHJK")), ([2; 32], rec("not a code"))]);
        assert_eq!((b.len(), bad), (1, vec![[2; 32]]));
    }

    fn issue(b: &mut DeviceBook, challenge: Option<&str>, redirect_given: bool) -> (Digest32, DeviceRecord, String) {
        let issue = CodeIssue {
            client_id: "web".into(),
            scope: "openid".into(),
            resources: Vec::new(),
            user_id: "u".into(),
            username: "alice".into(),
            auth_time: Some(T0 / 1000),
            code: CodeGrant {
                redirect_uri: "https://app.example/cb".into(),
                redirect_given,
                challenge: challenge.map(str::to_owned),
                nonce: Some("n-0S6".into()),
            },
        };
        b.issue_code(issue, T0, 600_000).unwrap()
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn presented(redirect_uri: Option<&'static str>, verifier: Option<&'static str>) -> Presented<'static> {
        Presented {
            redirect_uri,
            verifier,
            resources: &[],
        }
    }

    #[test]
    fn an_authorization_code_is_checked_then_redeems_once_and_is_no_device_code() {
        let mut b = DeviceBook::default();
        let (key, rec, clear) = issue(&mut b, Some(CHALLENGE), true);
        assert_eq!(secret::sha256(&clear), key, "stored by its hash only");
        assert!(!rec.user_code.is_empty() && rec.code.is_some());
        let cb = Some("https://app.example/cb");
        for (what, p, client) in [
            ("another client", presented(cb, Some(VERIFIER)), "other"),
            ("no verifier", presented(cb, None), "web"),
            ("a wrong verifier", presented(cb, Some(CHALLENGE)), "web"),
            ("no redirect_uri", presented(None, Some(VERIFIER)), "web"),
            (
                "another redirect_uri",
                presented(Some("https://app.example/cb2"), Some(VERIFIER)),
                "web",
            ),
        ] {
            assert_eq!(code(&b.exchange(&key, client, p, T0 + 1)), Some(ErrorCode::InvalidGrant), "{what}");
        }
        // Not a device code: polling it, or typing its user code, finds nothing.
        assert_eq!(code(&b.poll(&key, "web", T0 + 1)), Some(ErrorCode::InvalidGrant));
        let user_code = secret::normalize_user_code(&rec.user_code).unwrap();
        assert_eq!(b.lookup(&user_code, T0 + 1).unwrap_err(), CodeError::Unknown);
        match b.exchange(&key, "web", presented(cb, Some(VERIFIER)), T0 + 2) {
            PollOutcome::Redeem(r) => {
                assert_eq!(r.nonce.as_deref(), Some("n-0S6"));
                assert_eq!(r.approval.authorization_id, code_authorization(&key));
                assert_eq!(r.approval.auth_time, Some(T0 / 1000));
            }
            other => panic!("{other:?}"),
        }
        assert!(b.redeeming(&key) && b.is_code(&key));
        // Presented again while redeeming, then after: reuse, but only when every check passes
        // (someone who merely saw the code is refused, and revokes nothing).
        let again = |b: &mut DeviceBook, p| b.exchange(&key, "web", p, T0 + 3);
        assert_eq!(
            again(&mut b, presented(cb, Some(VERIFIER))),
            PollOutcome::Reused { in_flight: true }
        );
        assert!(b.redeemed(&key), "an authorization code stays, redeemed");
        assert_eq!(
            again(&mut b, presented(cb, Some(VERIFIER))),
            PollOutcome::Reused { in_flight: false }
        );
        assert_eq!(code(&again(&mut b, presented(cb, Some(CHALLENGE)))), Some(ErrorCode::InvalidGrant));
        assert_eq!(
            code(&b.exchange(&key, "other", presented(cb, Some(VERIFIER)), T0 + 3)),
            Some(ErrorCode::InvalidGrant)
        );
        // A late read of its stored (approved) record does not bring it back.
        b.stored(key, Some(&rec));
        assert_eq!(
            again(&mut b, presented(cb, Some(VERIFIER))),
            PollOutcome::Reused { in_flight: false }
        );
        // Gone at its expiry (past the grace), like any code.
        let (swept, _) = b.sweep(T0 + 600_000 + EXPIRED_GRACE_MS);
        assert_eq!(swept, vec![key]);
    }

    #[test]
    fn an_authorization_code_expires_and_refuses_a_verifier_it_had_no_challenge_for() {
        let mut b = DeviceBook::default();
        let (key, _, _) = issue(&mut b, None, false);
        assert_eq!(
            code(&b.exchange(&key, "web", presented(None, Some(VERIFIER)), T0 + 1)),
            Some(ErrorCode::InvalidGrant),
            "the PKCE downgrade"
        );
        assert_eq!(
            code(&b.exchange(&key, "web", presented(None, None), T0 + 600_000)),
            Some(ErrorCode::InvalidGrant),
            "expired after 10 minutes"
        );
        // Not named in the request: may be named (the one used) or left out at the token endpoint.
        assert!(matches!(
            b.exchange(&key, "web", presented(Some("https://app.example/cb"), None), T0 + 1),
            PollOutcome::Redeem(_)
        ));
    }

    fn code_of(o: &PollOutcome) -> Option<ErrorCode> {
        code(o)
    }
}
