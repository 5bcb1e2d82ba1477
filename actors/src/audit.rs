//! The audit actor.
//!
//! Owns the audit trail: one event per security-relevant act, kept in redb under a
//! time-ordered key (Unix ms, then a sequence number) so the newest come first on a reverse
//! scan and pruning by age is a range delete. Recording is a cast: the caller never waits, the
//! event rides in the store's next group commit with everything else, and an event whose
//! commit fails is queued again rather than dropped.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::device::Millis;
use crate::store::{Op, Store, StoreError, Table, decode};

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
    TokenIssued,
    TokenRefreshed,
    RefreshReuseDetected,
    TokenRevoked,
    PasswordChanged,
    ClientCreated,
    ClientChanged,
    ClientDeleted,
    UserCreated,
    UserChanged,
    UserDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::Logout,
        EventKind::DeviceCodeIssued,
        EventKind::DeviceApproved,
        EventKind::DeviceDenied,
        EventKind::TokenIssued,
        EventKind::TokenRefreshed,
        EventKind::RefreshReuseDetected,
        EventKind::TokenRevoked,
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
            EventKind::TokenIssued => "token_issued",
            EventKind::TokenRefreshed => "token_refreshed",
            EventKind::RefreshReuseDetected => "refresh_reuse_detected",
            EventKind::TokenRevoked => "token_revoked",
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
    /// An event now, with no subject, client, address or detail yet.
    pub fn new(kind: EventKind, actor: impl Into<String>, success: bool) -> Self {
        Self {
            at_ms: crate::now_ms(),
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
    fn matches(&self, e: &AuditEvent) -> bool {
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

/// Most rows one query looks at: queries run on the store's thread, so a filter that matches
/// little must not hold up the writes behind it.
const MAX_SCANNED: usize = 20_000;
/// Deletes per pruning transaction, for the same reason.
const PRUNE_CHUNK: usize = 5_000;
/// How long a failed commit waits before its events are written again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Messages of the audit actor.
pub enum AuditMsg {
    /// Records an event (cast; never waits).
    Record(AuditEvent),
    /// Events matching `filter`, newest first, older than the `before` cursor.
    Query {
        filter: AuditFilter,
        before: Option<String>,
        limit: usize,
        reply: RpcReplyPort<Result<AuditPage, StoreError>>,
    },
    /// Deletes events older than `before_ms` (the retention).
    Prune { before_ms: Millis },
}

fn key(at_ms: Millis, seq: u32) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub struct AuditActor;

pub struct AuditState {
    store: Store,
    /// Breaks ties between events of the same millisecond; starts at random so a restarted
    /// actor does not reuse a key within the same millisecond.
    seq: u32,
}

impl AuditState {
    fn write(&self, events: Vec<(Vec<u8>, AuditEvent)>) {
        let mut ops = Vec::with_capacity(events.len());
        for (k, e) in &events {
            match Op::put(Table::Audit, k.clone(), e) {
                Ok(op) => ops.push(op),
                Err(err) => tracing::error!(error = %err, "could not encode an audit event"),
            }
        }
        let done = self.store.submit(ops);
        let store = self.store.clone();
        // The task owns the events until they are durable, whatever becomes of this actor.
        tokio::spawn(async move {
            let mut result = done.await;
            while let Err(e) = result {
                tracing::error!(error = %e, events = events.len(), "audit events not committed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                let ops: Vec<Op> = events
                    .iter()
                    .filter_map(|(k, e)| Op::put(Table::Audit, k.clone(), e).ok())
                    .collect();
                result = match store.submit(ops).await {
                    Err(StoreError::Closed) => return,
                    other => other,
                };
            }
        });
    }
}

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = (Store, crate::system::Actors);

    async fn pre_start(&self, _myself: ActorRef<AuditMsg>, (store, actors): Self::Arguments) -> Result<AuditState, ActorProcessingErr> {
        MAILBOX.reset();
        let mut st = AuditState {
            store,
            seq: rand::random(),
        };
        let backlog = actors.take_audit_backlog();
        if !backlog.is_empty() {
            let events = backlog
                .into_iter()
                .map(|e| {
                    st.seq = st.seq.wrapping_add(1);
                    (key(e.at_ms, st.seq), e)
                })
                .collect();
            st.write(events);
        }
        Ok(st)
    }

    async fn handle(&self, _myself: ActorRef<AuditMsg>, msg: AuditMsg, st: &mut AuditState) -> Result<(), ActorProcessingErr> {
        MAILBOX.received();
        match msg {
            AuditMsg::Record(e) => {
                st.seq = st.seq.wrapping_add(1);
                tracing::info!(target: "audit", event = e.kind.name(), actor = %e.actor, subject = %e.subject, client_id = ?e.client_id, ip = ?e.ip, success = e.success, detail = %e.detail, "audit");
                st.write(vec![(key(e.at_ms, st.seq), e)]);
            }
            AuditMsg::Query {
                filter,
                before,
                limit,
                reply,
            } => {
                let before = before.and_then(|b| hex::decode(b).ok());
                let store = st.store.clone();
                // Reads queue behind the writes already submitted, so the page includes them.
                tokio::spawn(async move {
                    let page = store
                        .read(move |r| {
                            let mut page = AuditPage::default();
                            let mut scanned = 0usize;
                            let mut last = None;
                            let mut more = false;
                            r.scan_rev(Table::Audit, before.as_deref(), |k, v| {
                                scanned += 1;
                                if let Ok(e) = decode::<AuditEvent>(v)
                                    && filter.matches(&e)
                                {
                                    if page.events.len() == limit {
                                        // One more match exists: there is an older page.
                                        more = true;
                                        return Ok(false);
                                    }
                                    page.events.push(e);
                                }
                                last = Some(k.to_vec());
                                Ok(scanned < MAX_SCANNED)
                            })?;
                            if more || scanned >= MAX_SCANNED {
                                page.next = last.map(hex::encode);
                            }
                            Ok(page)
                        })
                        .await;
                    let _ = reply.send(page);
                });
            }
            AuditMsg::Prune { before_ms } => {
                let store = st.store.clone();
                tokio::spawn(async move {
                    let cutoff = key(before_ms, 0);
                    let mut pruned = 0usize;
                    // Keys are time-ordered: read the oldest chunk below the cutoff, delete it,
                    // repeat, so no one transaction holds up the writes queued behind it.
                    loop {
                        let c = cutoff.clone();
                        let chunk = store
                            .read(move |r| {
                                let mut old = Vec::new();
                                r.scan_range(Table::Audit, &c, |k| {
                                    old.push(Op::delete(Table::Audit, k.to_vec()));
                                    Ok(old.len() < PRUNE_CHUNK)
                                })?;
                                Ok(old)
                            })
                            .await;
                        match chunk {
                            Ok(ops) if ops.is_empty() => break,
                            Ok(ops) => {
                                let n = ops.len();
                                if let Err(e) = store.write(ops).await {
                                    tracing::warn!(error = %e, "could not prune audit events");
                                    break;
                                }
                                pruned += n;
                                if n < PRUNE_CHUNK {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not read audit events to prune");
                                break;
                            }
                        }
                    }
                    if pruned > 0 {
                        tracing::info!(events = pruned, "pruned audit events past retention");
                    }
                });
            }
        }
        Ok(())
    }
}

/// The op that stores `event` directly (for offline commands that run without the actor).
pub fn event_op(event: &AuditEvent) -> Result<Op, StoreError> {
    Op::put(Table::Audit, key(event.at_ms, rand::random()), event)
}

/// This actor's mailbox depth (see [`crate::metrics::Mailbox`]).
static MAILBOX: crate::metrics::Mailbox = crate::metrics::Mailbox::new("audit");

impl crate::system::Tracked for AuditMsg {
    fn mailbox() -> &'static crate::metrics::Mailbox {
        &MAILBOX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::system::cast;

    #[tokio::test]
    async fn events_are_kept_newest_first_filtered_paginated_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a.redb"), StoreOptions::default()).unwrap();
        let (audit, handle) = Actor::spawn(None, AuditActor, (store.clone(), crate::system::Actors::detached()))
            .await
            .unwrap();
        for i in 0..7u64 {
            let mut e = AuditEvent::new(
                if i % 2 == 0 {
                    EventKind::LoginFailed
                } else {
                    EventKind::LoginSucceeded
                },
                format!("user{}", i % 3),
                i % 2 == 1,
            );
            e.at_ms = 1_000 + i;
            cast(&audit, AuditMsg::Record(e)).unwrap();
        }
        let query = |filter: AuditFilter, before: Option<String>, limit| {
            let audit = audit.clone();
            async move {
                ractor::call!(audit, |reply| AuditMsg::Query {
                    filter,
                    before,
                    limit,
                    reply
                })
                .unwrap()
                .unwrap()
            }
        };
        let all = query(AuditFilter::default(), None, 5).await;
        let times: Vec<u64> = all.events.iter().map(|e| e.at_ms).collect();
        assert_eq!(times, vec![1006, 1005, 1004, 1003, 1002]);
        let rest = query(AuditFilter::default(), all.next.clone(), 5).await;
        assert_eq!(rest.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![1001, 1000]);
        assert!(rest.next.is_none());
        let failed = query(
            AuditFilter {
                kind: Some(EventKind::LoginFailed),
                user: Some("user0".into()),
                ..Default::default()
            },
            None,
            50,
        )
        .await;
        assert_eq!(failed.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![1006, 1000]);
        cast(&audit, AuditMsg::Prune { before_ms: 1_004 }).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kept = query(AuditFilter::default(), None, 50).await;
        assert_eq!(kept.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![1006, 1005, 1004]);
        audit.stop(None);
        handle.await.unwrap();
        store.close();
    }
}
