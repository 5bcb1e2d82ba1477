//! [`AuditSink`]: how everyone records an audit event without waiting.

use std::sync::{Arc, Mutex};

use super::msg::AuditMsg;
use crate::metrics::Metrics;
use crate::runtime::Handle;
use crate::store::audit::AuditEvent;

/// Audit events kept while no audit actor runs.
const BACKLOG_MAX: usize = 100_000;

/// Events recorded while the audit actor was between incarnations; its next one writes them.
#[derive(Clone, Default)]
pub struct Backlog(Arc<Mutex<Vec<AuditEvent>>>);

impl Backlog {
    pub fn take(&self) -> Vec<AuditEvent> {
        self.0.lock().map(|mut b| std::mem::take(&mut *b)).unwrap_or_default()
    }

    fn keep(&self, event: AuditEvent) {
        if let Ok(mut backlog) = self.0.lock() {
            // Bounded: a restart takes a fraction of a second; a flood meanwhile is logged only.
            if backlog.len() < BACKLOG_MAX {
                backlog.push(event);
            } else {
                tracing::warn!(target: "audit", event = event.kind.name(), actor = %event.actor, "audit backlog full; event logged only");
            }
        }
    }
}

/// Records audit events (and counts them in the metrics) without waiting. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    actor: Handle<AuditMsg>,
    backlog: Backlog,
    metrics: Arc<Metrics>,
}

impl AuditSink {
    pub fn new(actor: Handle<AuditMsg>, backlog: Backlog, metrics: Arc<Metrics>) -> Self {
        Self { actor, backlog, metrics }
    }

    /// Records `event`. Should the audit actor be between incarnations, the event waits in
    /// the backlog that the next incarnation writes first.
    pub fn record(&self, event: AuditEvent) {
        self.metrics.event(event.kind, event.success);
        if let Err(Some(AuditMsg::Record(event))) = self.actor.cast(AuditMsg::Record(event)) {
            self.backlog.keep(event);
        }
    }
}
