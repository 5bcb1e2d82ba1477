//! The audit actor's messages.

use ractor::RpcReplyPort;

use crate::store::StoreError;
use crate::store::audit::{AuditEvent, AuditFilter, AuditPage};
use crate::time::Millis;

/// Messages of the audit actor.
pub enum AuditMsg {
    /// Records an event (cast; never waits).
    Record(AuditEvent),
    /// Records an event and answers once it is durable (the offline CLI, which exits next).
    RecordDurably {
        event: AuditEvent,
        reply: RpcReplyPort<Result<(), StoreError>>,
    },
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
