//! The audit actor.
//!
//! Owns the audit trail (through its [`AuditRepo`]): one event per security-relevant act.
//! Recording is a cast: the caller never waits, the event rides in the store's next group
//! commit with everything else, and an event whose commit fails is written again rather than
//! dropped. Everyone records through an [`AuditSink`], which keeps events while the actor is
//! between incarnations.

mod msg;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

pub use self::msg::AuditMsg;
pub use self::sink::{AuditSink, Backlog};
use crate::store::StoreError::Closed;
use crate::store::audit::AuditRepo;
pub use crate::store::audit::{AuditEvent, AuditFilter, AuditPage, EventKind};

/// How long a failed commit waits before its events are written again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct AuditActor;

pub struct AuditArgs {
    pub repo: Arc<dyn AuditRepo>,
    /// Events recorded while no incarnation ran; written first.
    pub backlog: Backlog,
}

pub struct AuditState {
    repo: Arc<dyn AuditRepo>,
}

impl AuditState {
    /// Writes `events`; the task owns them until they are durable, whatever becomes of this
    /// actor, and writes them again after a failure.
    fn write(&self, events: Vec<AuditEvent>) {
        let repo = self.repo.clone();
        let first = repo.append(&events);
        tokio::spawn(async move {
            let mut result = first.await;
            while let Err(e) = result {
                if matches!(e, Closed) {
                    return;
                }
                tracing::error!(error = %e, events = events.len(), "audit events not committed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                result = repo.append(&events).await;
            }
        });
    }
}

/// The audit line: one per event, plain values.
fn log(e: &AuditEvent) {
    tracing::info!(
        target: "audit",
        event = e.kind.name(),
        actor = %e.actor,
        subject = %e.subject,
        client_id = e.client_id.as_deref().unwrap_or(""),
        ip = e.ip.as_deref().unwrap_or(""),
        success = e.success,
        detail = %e.detail,
        "audit"
    );
}

impl Actor for AuditActor {
    type Msg = AuditMsg;
    type State = AuditState;
    type Arguments = AuditArgs;

    async fn pre_start(&self, _myself: ActorRef<AuditMsg>, args: AuditArgs) -> Result<AuditState, ActorProcessingErr> {
        let st = AuditState { repo: args.repo };
        let backlog = args.backlog.take();
        if !backlog.is_empty() {
            st.write(backlog);
        }
        Ok(st)
    }

    async fn handle(&self, _myself: ActorRef<AuditMsg>, msg: AuditMsg, st: &mut AuditState) -> Result<(), ActorProcessingErr> {
        match msg {
            AuditMsg::Record(e) => {
                log(&e);
                st.write(vec![e]);
            }
            AuditMsg::RecordDurably { event, reply } => {
                log(&event);
                crate::runtime::commit::after(st.repo.append(&[event]), move |r| {
                    let _ = reply.send(r);
                });
            }
            AuditMsg::Query {
                filter,
                before,
                limit,
                reply,
            } => {
                // Reads queue behind the writes already submitted, so the page includes them.
                crate::runtime::commit::after(st.repo.page(filter, before, limit), move |page| {
                    let _ = reply.send(page);
                });
            }
            AuditMsg::Prune { before_ms } => crate::runtime::commit::after(st.repo.prune(before_ms), |r| match r {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned audit events past retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune audit events"),
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Handle;
    use crate::store::redb::StoreOptions;

    #[tokio::test]
    async fn events_are_kept_newest_first_filtered_paginated_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let stores = crate::store::redb::open(&dir.path().join("a.redb"), StoreOptions::default()).unwrap();
        let audit = Handle::new("audit");
        let args = AuditArgs {
            repo: stores.audit.clone(),
            backlog: Backlog::default(),
        };
        let (actor, done) = audit.spawn(AuditActor, args).await.unwrap();
        for i in 0..7u64 {
            let kind = if i % 2 == 0 {
                EventKind::LoginFailed
            } else {
                EventKind::LoginSucceeded
            };
            let e = AuditEvent::new(1_000 + i, kind, format!("user{}", i % 3), i % 2 == 1);
            assert!(audit.cast(AuditMsg::Record(e)).is_ok());
        }
        let query = |filter: AuditFilter, before: Option<String>, limit| {
            let audit = audit.clone();
            async move {
                audit
                    .ask(|reply| AuditMsg::Query {
                        filter,
                        before,
                        limit,
                        reply,
                    })
                    .await
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
        assert_eq!(stores.audit.prune(1_004).await.unwrap(), 4);
        let kept = query(AuditFilter::default(), None, 50).await;
        assert_eq!(kept.events.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![1006, 1005, 1004]);
        actor.stop(None);
        done.await.unwrap();
        stores.server.close();
    }
}
