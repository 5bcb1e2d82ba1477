//! The audit actor's records: the audit trail, one event per security-relevant act.

use serde::{Deserialize, Serialize};

use super::port::Pending;
use crate::time::Millis;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LoginSucceeded,
    LoginFailed,
    Logout,
    DeviceCodeIssued,
    DeviceApproved,
    DeviceDenied,
    ConsentGranted,
    ConsentDenied,
    TokenIssued,
    TokenRefreshed,
    RefreshReuseDetected,
    CodeReuseDetected,
    TokenRevoked,
    TokenDisabled,
    TokenEnabled,
    DeviceRenamed,
    PasswordChanged,
    ClientCreated,
    ClientChanged,
    ClientDeleted,
    UserCreated,
    UserChanged,
    UserDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::Logout,
        EventKind::DeviceCodeIssued,
        EventKind::DeviceApproved,
        EventKind::DeviceDenied,
        EventKind::ConsentGranted,
        EventKind::ConsentDenied,
        EventKind::TokenIssued,
        EventKind::TokenRefreshed,
        EventKind::RefreshReuseDetected,
        EventKind::CodeReuseDetected,
        EventKind::TokenRevoked,
        EventKind::TokenDisabled,
        EventKind::TokenEnabled,
        EventKind::DeviceRenamed,
        EventKind::PasswordChanged,
        EventKind::ClientCreated,
        EventKind::ClientChanged,
        EventKind::ClientDeleted,
        EventKind::UserCreated,
        EventKind::UserChanged,
        EventKind::UserDeleted,
    ];

    /// The wire name (`login_failed`, ...).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::DeviceCodeIssued => "device_code_issued",
            EventKind::DeviceApproved => "device_approved",
            EventKind::DeviceDenied => "device_denied",
            EventKind::ConsentGranted => "consent_granted",
            EventKind::ConsentDenied => "consent_denied",
            EventKind::TokenIssued => "token_issued",
            EventKind::TokenRefreshed => "token_refreshed",
            EventKind::RefreshReuseDetected => "refresh_reuse_detected",
            EventKind::CodeReuseDetected => "code_reuse_detected",
            EventKind::TokenRevoked => "token_revoked",
            EventKind::TokenDisabled => "token_disabled",
            EventKind::TokenEnabled => "token_enabled",
            EventKind::DeviceRenamed => "device_renamed",
            EventKind::PasswordChanged => "password_changed",
            EventKind::ClientCreated => "client_created",
            EventKind::ClientChanged => "client_changed",
            EventKind::ClientDeleted => "client_deleted",
            EventKind::UserCreated => "user_created",
            EventKind::UserChanged => "user_changed",
            EventKind::UserDeleted => "user_deleted",
        }
    }

    pub fn from_name(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: Millis,
    pub kind: EventKind,
    /// Who acted: a username, `client:<id>`, or `system`.
    pub actor: String,
    /// What it was done to: a username, a client id, an authorization id...
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    pub success: bool,
    /// A short, secret-free note (a failure reason, the fields changed).
    #[serde(default)]
    pub detail: String,
}

impl AuditEvent {
    /// An event at `now`, with no subject, client, address or detail yet.
    pub fn new(now: Millis, kind: EventKind, actor: impl Into<String>, success: bool) -> Self {
        Self {
            at_ms: now,
            kind,
            actor: actor.into(),
            subject: String::new(),
            client_id: None,
            ip: None,
            success,
            detail: String::new(),
        }
    }
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = s.into();
        self
    }
    pub fn client(mut self, c: impl Into<String>) -> Self {
        self.client_id = Some(c.into());
        self
    }
    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }
}

/// Which events a query wants; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Matches the actor or the subject.
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub kind: Option<EventKind>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.user.as_ref().is_none_or(|u| e.actor == *u || e.subject == *u)
            && self.client_id.as_ref().is_none_or(|c| e.client_id.as_ref() == Some(c))
            && self.kind.is_none_or(|k| e.kind == k)
    }
}

/// One page of events, newest first, and the cursor for the next (older) page.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// The audit trail, kept in time order. Owner: the audit actor (the offline CLI records its
/// events through the same repository).
pub trait AuditRepo: Send + Sync {
    /// Appends events. Events are never changed once written; two events of the same
    /// millisecond both stay.
    fn append(&self, events: &[AuditEvent]) -> Pending<()>;
    /// Up to `limit` events matching `filter`, newest first, older than the `before` cursor
    /// (from an earlier page's `next`; an unreadable cursor starts at the newest). Scans a
    /// bounded number of rows, so a rare match may need several pages.
    fn page(&self, filter: AuditFilter, before: Option<String>, limit: usize) -> Pending<AuditPage>;
    /// Deletes the events older than `before`, in chunks that never hold up other writes for
    /// long; answers how many went.
    fn prune(&self, before: Millis) -> Pending<usize>;
}
