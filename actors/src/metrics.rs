//! The counters and histograms behind `GET /metrics`, one set per running system (reached
//! through [`crate::supervisor::Actors::metrics`]). Actors and the HTTP front end update them where
//! things happen; values kept elsewhere (restarts, mailbox depths, pending codes, the store's
//! commit histograms) are read when scraped. Rendered in the OpenMetrics text format, which
//! Prometheus scrapes.
//!
//! What is counted comes from the audit events where one exists (device codes, tokens,
//! logins: [`Metrics::event`]), so the trail and the metrics cannot disagree.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::audit::EventKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabel {
    pub actor: &'static str,
}

/// A latency histogram: 100 µs to ~13 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

pub struct Metrics {
    registry: Registry,
    /// issued, approved, denied, expired.
    pub device_codes: Family<OutcomeLabel, Counter>,
    /// pending, slow_down, success, denied, expired, invalid.
    pub polls: Family<OutcomeLabel, Counter>,
    /// issued, refreshed, revoked, reuse_detected.
    pub tokens: Family<OutcomeLabel, Counter>,
    /// success, failure.
    pub logins: Family<OutcomeLabel, Counter>,
    pub provider: ProviderCounters,
}

/// What the provider actors count (each incarnation gets a clone; the values are shared).
#[derive(Clone, Debug, Default)]
pub struct ProviderCounters {
    /// By provider and outcome: success, timeout, unreachable, http_error, bad_reply (after
    /// any retries).
    pub calls: Family<ProviderLabels, Counter>,
    pub retries: Family<ProviderLabel, Counter>,
}

/// The store's commit histograms (the store's writer thread observes them).
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    pub duration: Histogram,
    pub batch: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            duration: latency_histogram(),
            batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }
}

impl CommitMetrics {
    /// Adds these histograms to a (scrape-time) registry.
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "db_commit_duration",
            "Time of one database commit (a group of writes)",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register("db_commit_batch_size", "Writes carried by one database commit", self.batch.clone());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            device_codes: Family::default(),
            polls: Family::default(),
            tokens: Family::default(),
            logins: Family::default(),
            provider: ProviderCounters::default(),
        };
        let mut r = Registry::with_prefix("authgate");
        r.register(
            "device_codes",
            "Device authorizations by what happened to them",
            m.device_codes.clone(),
        );
        r.register(
            "device_polls",
            "Token-endpoint polls with a device code, by answer",
            m.polls.clone(),
        );
        r.register(
            "tokens",
            "Token events: issued, refreshed, revoked, refresh-token reuse detected",
            m.tokens.clone(),
        );
        r.register("logins", "Sign-ins by outcome", m.logins.clone());
        r.register("provider_calls", "Calls to external services by outcome", m.provider.calls.clone());
        r.register(
            "provider_retries",
            "Retried attempts of calls to external services",
            m.provider.retries.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Counts what an audit event says happened.
    pub fn event(&self, kind: EventKind, success: bool) {
        let (family, outcome) = match kind {
            EventKind::DeviceCodeIssued => (&self.device_codes, "issued"),
            EventKind::DeviceApproved => (&self.device_codes, "approved"),
            EventKind::DeviceDenied => (&self.device_codes, "denied"),
            EventKind::TokenIssued => (&self.tokens, "issued"),
            EventKind::TokenRefreshed => (&self.tokens, "refreshed"),
            EventKind::TokenRevoked => (&self.tokens, "revoked"),
            EventKind::RefreshReuseDetected => (&self.tokens, "reuse_detected"),
            EventKind::LoginSucceeded if success => (&self.logins, "success"),
            EventKind::LoginSucceeded | EventKind::LoginFailed => (&self.logins, "failure"),
            _ => return,
        };
        family.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &'static str, n: u64) {
        if n > 0 {
            family.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
        }
    }

    /// The OpenMetrics text of these metrics followed by `others`' (the front end's, and a
    /// registry built for this scrape).
    pub fn render(&self, others: &[&Registry]) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)?;
        for r in others {
            prometheus_client::encoding::text::encode_registry(&mut out, r)?;
        }
        prometheus_client::encoding::text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Messages sent to each kind of actor and not yet handled, counted at the senders
/// ([`crate::runtime::Handle`]) and where the actor takes them ([`crate::runtime::counted`]).
/// Reset when an actor starts (its mailbox is new). One per handle, so per running system.
pub struct Mailbox {
    pub actor: &'static str,
    depth: AtomicI64,
}

impl Mailbox {
    pub const fn new(actor: &'static str) -> Self {
        Self {
            actor,
            depth: AtomicI64::new(0),
        }
    }
    pub fn sent(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }
    pub fn received(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn reset(&self) {
        self.depth.store(0, Ordering::Relaxed);
    }
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed).max(0)
    }
}

/// A gauge family for a scrape-time registry.
pub fn gauges<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static>(
    values: impl IntoIterator<Item = (L, i64)>,
) -> Family<L, Gauge> {
    let family = Family::<L, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    family
}

/// A counter family for a scrape-time registry (values counted elsewhere).
pub fn counters<L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static>(
    values: impl IntoIterator<Item = (L, u64)>,
) -> Family<L, Counter> {
    let family = Family::<L, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    family
}
