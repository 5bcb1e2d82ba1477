//! [`Actors`]: the registry of the running system's actors, as the front end reaches them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::audit::{AuditEvent, AuditMsg, AuditSink, Backlog};
use crate::device::DeviceMsg;
use crate::directory::{ClientPublisher, ClientTable, DirectoryMsg};
use crate::limits::LimitMsg;
use crate::metrics::{Mailbox, Metrics};
use crate::provider::login::AuthProviderMsg;
use crate::provider::token_service::TokenProviderMsg;
use crate::runtime::Handle;
use crate::session::SessionMsg;
use crate::token::TokenMsg;

/// What a child is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Running,
    /// Failed; a restart is scheduled.
    Restarting,
    /// Failed too often; tried again after [`super::COOL_DOWN`].
    Down,
}

/// One child as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    pub state: ComponentState,
    /// Restarts since the server started.
    pub restarts: u64,
    /// A provider (its failure degrades the service) rather than a core actor (its failure
    /// makes the server unhealthy).
    pub provider: bool,
}

/// The addresses of every actor of one running system, the directory's client snapshot, the
/// audit sink and the metrics. Cheap to clone; each handle always reaches the current
/// incarnation.
#[derive(Clone)]
pub struct Actors {
    inner: Arc<Registry>,
}

struct Registry {
    device: Handle<DeviceMsg>,
    token: Handle<TokenMsg>,
    session: Handle<SessionMsg>,
    directory: Handle<DirectoryMsg>,
    audit_actor: Handle<AuditMsg>,
    login_api: Handle<AuthProviderMsg>,
    token_api: Handle<TokenProviderMsg>,
    limits: Handle<LimitMsg>,
    /// Whether this system shares its database with other processes (the limits actor runs).
    cluster: std::sync::atomic::AtomicBool,
    /// The directory's published client snapshots.
    clients: ClientPublisher,
    audit: AuditSink,
    backlog: Backlog,
    /// Each child's state, written by the root only; a mutex because reads (health checks)
    /// and writes (restarts) are rare and short.
    components: Mutex<BTreeMap<&'static str, Component>>,
    metrics: Arc<Metrics>,
}

impl Actors {
    pub(super) fn new() -> Self {
        let (clients, _) = watch::channel(Arc::new(ClientTable::default()));
        let metrics = Arc::new(Metrics::new());
        let audit_actor = Handle::new("audit");
        let backlog = Backlog::default();
        Self {
            inner: Arc::new(Registry {
                device: Handle::new("device"),
                token: Handle::new("token"),
                session: Handle::new("session"),
                directory: Handle::new("directory"),
                audit: AuditSink::new(audit_actor.clone(), backlog.clone(), metrics.clone()),
                audit_actor,
                login_api: Handle::new("auth_provider"),
                token_api: Handle::new("token_provider"),
                limits: Handle::new("limits"),
                cluster: std::sync::atomic::AtomicBool::new(false),
                clients: Arc::new(clients),
                backlog,
                components: Mutex::new(BTreeMap::new()),
                metrics,
            }),
        }
    }

    pub fn device(&self) -> &Handle<DeviceMsg> {
        &self.inner.device
    }
    pub fn token(&self) -> &Handle<TokenMsg> {
        &self.inner.token
    }
    pub fn session(&self) -> &Handle<SessionMsg> {
        &self.inner.session
    }
    pub fn directory(&self) -> &Handle<DirectoryMsg> {
        &self.inner.directory
    }
    pub fn audit_actor(&self) -> &Handle<AuditMsg> {
        &self.inner.audit_actor
    }
    /// The login-API provider (only running when `AUTH_MODE=http_api`).
    pub fn login_api(&self) -> &Handle<AuthProviderMsg> {
        &self.inner.login_api
    }
    /// The token-service provider (only running when `TOKEN_PROVIDER_MODE=http_api`).
    pub fn token_api(&self) -> &Handle<TokenProviderMsg> {
        &self.inner.token_api
    }

    /// The cluster-wide failure counters, when the database is shared with other processes;
    /// `None` when this process alone counts (in the front end's memory).
    pub fn limits(&self) -> Option<&Handle<LimitMsg>> {
        self.inner
            .cluster
            .load(std::sync::atomic::Ordering::Acquire)
            .then_some(&self.inner.limits)
    }

    pub(super) fn limits_handle(&self) -> &Handle<LimitMsg> {
        &self.inner.limits
    }

    pub(super) fn set_cluster(&self) {
        self.inner.cluster.store(true, std::sync::atomic::Ordering::Release);
    }

    /// This system's counters (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(super) fn shared_metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// The latest client snapshot (no message round trip: the directory publishes it).
    pub fn clients(&self) -> Arc<ClientTable> {
        self.inner.clients.borrow().clone()
    }

    pub(super) fn client_publisher(&self) -> ClientPublisher {
        self.inner.clients.clone()
    }

    /// Records an audit event without waiting (see [`AuditSink::record`]).
    pub fn audit(&self, event: AuditEvent) {
        self.inner.audit.record(event);
    }

    pub(super) fn audit_sink(&self) -> AuditSink {
        self.inner.audit.clone()
    }

    pub(super) fn audit_backlog(&self) -> Backlog {
        self.inner.backlog.clone()
    }

    /// Every counted mailbox, for `/metrics`.
    pub fn mailboxes(&self) -> [&Mailbox; 8] {
        let r = &self.inner;
        [
            r.device.mailbox(),
            r.token.mailbox(),
            r.session.mailbox(),
            r.directory.mailbox(),
            r.audit_actor.mailbox(),
            r.login_api.mailbox(),
            r.token_api.mailbox(),
            r.limits.mailbox(),
        ]
    }

    /// Every supervised child by name, with its state and restart count.
    pub fn components(&self) -> BTreeMap<&'static str, Component> {
        self.inner.components.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub(super) fn set_component(&self, name: &'static str, provider: bool, state: ComponentState, restarted: bool) {
        if let Ok(mut c) = self.inner.components.lock() {
            let e = c.entry(name).or_insert(Component {
                state,
                restarts: 0,
                provider,
            });
            e.state = state;
            if restarted {
                e.restarts += 1;
            }
        }
    }
}
