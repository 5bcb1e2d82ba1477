//! The root supervisor and the handles the front end uses to reach the actors.
//!
//! The root starts the four core actors, and the provider actors that the settings call for,
//! linked to itself. When one fails (a panic, an error in a handler, or a kill), it is restarted
//! after a growing delay; a core actor rebuilds its state from redb, a provider gets a fresh
//! HTTP client. After [`MAX_RESTARTS`] restarts within a minute the child is reported `down`
//! (requests then get a clean error, `/health` names it) and tried again only after
//! [`COOL_DOWN`], rather than spinning. Everyone reaches actors through [`Actors`], which
//! always holds the current incarnation, and reads each child's state and restart count from
//! [`Actors::components`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, RpcReplyPort, SupervisionEvent};

use crate::audit::{AuditActor, AuditEvent, AuditMsg};
use crate::device::{DeviceActor, DeviceArgs, DeviceConfig, DeviceMsg};
use crate::directory::{ClientPublisher, ClientTable, DirectoryActor, DirectoryArgs, DirectoryMsg};
use crate::error::OAuthError;
use crate::provider::ServiceConfig;
use crate::provider::auth::{AuthProviderActor, AuthProviderMsg};
use crate::provider::token::{TokenProviderActor, TokenProviderMsg};
use crate::session::{SessionActor, SessionArgs, SessionMsg};
use crate::store::{Op, Store, StoreError, Table, decode};
use crate::token::{JwtKeys, TokenActor, TokenArgs, TokenConfig, TokenMsg};

/// How long a caller waits for an actor's answer before giving up with `temporarily_unavailable`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Restarts of one actor allowed within a minute.
pub const MAX_RESTARTS: usize = 5;
/// Audit events kept while no audit actor runs.
const AUDIT_BACKLOG_MAX: usize = 100_000;
/// How long a child that used up its restarts stays down before one more try.
pub const COOL_DOWN: Duration = Duration::from_secs(15);

/// Sends `build(reply)` to `actor` and waits for the answer; an actor that is down, gone, or
/// too slow is reported as `temporarily_unavailable`.
/// A message type whose actor's mailbox depth is counted (see [`crate::metrics::Mailbox`]).
pub trait Tracked: Message {
    fn mailbox() -> &'static crate::metrics::Mailbox;
}

/// Every counted mailbox, for `/metrics`.
pub fn mailboxes() -> [&'static crate::metrics::Mailbox; 7] {
    [
        DeviceMsg::mailbox(),
        TokenMsg::mailbox(),
        SessionMsg::mailbox(),
        DirectoryMsg::mailbox(),
        AuditMsg::mailbox(),
        AuthProviderMsg::mailbox(),
        TokenProviderMsg::mailbox(),
    ]
}

/// Sends `msg` without waiting for an answer, counting it in the mailbox depth.
pub fn cast<M: Tracked>(actor: &ActorRef<M>, msg: M) -> Result<(), ractor::MessagingErr<M>> {
    M::mailbox().sent();
    actor.cast(msg).inspect_err(|_| M::mailbox().received())
}

pub async fn ask<M: Tracked, R: Send + 'static>(actor: &ActorRef<M>, build: impl FnOnce(RpcReplyPort<R>) -> M) -> Result<R, OAuthError> {
    ask_within(actor, CALL_TIMEOUT, build).await
}

/// [`ask`] with a deadline of its own (for calls that wait on an external service).
pub async fn ask_within<M: Tracked, R: Send + 'static>(
    actor: &ActorRef<M>,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<R>) -> M,
) -> Result<R, OAuthError> {
    M::mailbox().sent();
    let result = actor.call(build, Some(timeout)).await;
    if result.is_err() {
        // Not delivered. (`SenderError` means delivered, its reply port dropped: the actor
        // counted it when handling it.)
        M::mailbox().received();
    }
    match result {
        Ok(CallResult::Success(r)) => Ok(r),
        Ok(CallResult::Timeout) => Err(OAuthError::unavailable("the server is busy; try again shortly")),
        Ok(CallResult::SenderError) | Err(_) => Err(OAuthError::unavailable("the server is restarting a component; try again shortly")),
    }
}

struct Slot<M: Message>(RwLock<Option<ActorRef<M>>>);

impl<M: Message> Slot<M> {
    fn new() -> Self {
        Self(RwLock::new(None))
    }
    fn get(&self) -> Result<ActorRef<M>, OAuthError> {
        self.0
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| OAuthError::unavailable("the server is starting or restarting a component"))
    }
    fn set(&self, r: ActorRef<M>) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(r);
        }
    }
}

/// The addresses of the core actors; cheap to clone.
#[derive(Clone)]
pub struct Actors {
    inner: Arc<Slots>,
}

struct Slots {
    device: Slot<DeviceMsg>,
    token: Slot<TokenMsg>,
    session: Slot<SessionMsg>,
    directory: Slot<DirectoryMsg>,
    audit: Slot<AuditMsg>,
    auth_provider: Slot<AuthProviderMsg>,
    token_provider: Slot<TokenProviderMsg>,
    /// The directory's published client snapshots.
    clients: ClientPublisher,
    /// Audit events recorded while the audit actor was between incarnations; its next
    /// incarnation writes them first.
    audit_backlog: Mutex<Vec<AuditEvent>>,
    /// Each child's state, written by the root only; a mutex because reads (health checks)
    /// and writes (restarts) are rare and short.
    components: Mutex<BTreeMap<&'static str, Component>>,
    metrics: crate::metrics::Metrics,
}

/// What a child is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Running,
    /// Failed; a restart is scheduled.
    Restarting,
    /// Failed too often; tried again after [`COOL_DOWN`].
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

impl Actors {
    /// A handle to no actors (every lookup is `temporarily_unavailable`), for tools that run
    /// one actor on its own.
    pub fn detached() -> Self {
        Self::new()
    }

    fn new() -> Self {
        let (clients, _) = tokio::sync::watch::channel(Arc::new(ClientTable::default()));
        Self {
            inner: Arc::new(Slots {
                device: Slot::new(),
                token: Slot::new(),
                session: Slot::new(),
                directory: Slot::new(),
                audit: Slot::new(),
                auth_provider: Slot::new(),
                token_provider: Slot::new(),
                clients: Arc::new(clients),
                components: Mutex::new(BTreeMap::new()),
                audit_backlog: Mutex::new(Vec::new()),
                metrics: crate::metrics::Metrics::new(),
            }),
        }
    }

    /// This system's counters (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// The latest client snapshot (no message round trip: the directory publishes it).
    pub fn clients(&self) -> Arc<ClientTable> {
        self.inner.clients.borrow().clone()
    }
    pub fn device(&self) -> Result<ActorRef<DeviceMsg>, OAuthError> {
        self.inner.device.get()
    }
    pub fn token(&self) -> Result<ActorRef<TokenMsg>, OAuthError> {
        self.inner.token.get()
    }
    pub fn session(&self) -> Result<ActorRef<SessionMsg>, OAuthError> {
        self.inner.session.get()
    }
    pub fn directory(&self) -> Result<ActorRef<DirectoryMsg>, OAuthError> {
        self.inner.directory.get()
    }
    pub fn audit_actor(&self) -> Result<ActorRef<AuditMsg>, OAuthError> {
        self.inner.audit.get()
    }

    /// Records an audit event without waiting. Should the audit actor be between incarnations,
    /// the event waits in a backlog that the next incarnation writes first.
    pub fn audit(&self, event: AuditEvent) {
        self.inner.metrics.event(event.kind, event.success);
        let event = match self.inner.audit.get() {
            Ok(a) => match cast(&a, AuditMsg::Record(event)) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(AuditMsg::Record(e))) => e,
                Err(_) => return,
            },
            Err(_) => event,
        };
        if let Ok(mut backlog) = self.inner.audit_backlog.lock() {
            // Bounded: a restart takes a fraction of a second; a flood meanwhile is logged only.
            if backlog.len() < AUDIT_BACKLOG_MAX {
                backlog.push(event);
            } else {
                tracing::warn!(target: "audit", event = event.kind.name(), actor = %event.actor, "audit backlog full; event logged only");
            }
        }
    }

    /// The events recorded while no audit actor ran.
    pub(crate) fn take_audit_backlog(&self) -> Vec<AuditEvent> {
        self.inner
            .audit_backlog
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }

    /// The login-API provider (only when `AUTH_MODE=http_api`).
    pub fn auth_provider(&self) -> Result<ActorRef<AuthProviderMsg>, OAuthError> {
        self.inner.auth_provider.get()
    }
    /// The token-service provider (only when `TOKEN_PROVIDER_MODE=http_api`).
    pub fn token_provider(&self) -> Result<ActorRef<TokenProviderMsg>, OAuthError> {
        self.inner.token_provider.get()
    }

    /// Every supervised child by name, with its state and restart count.
    pub fn components(&self) -> BTreeMap<&'static str, Component> {
        self.inner.components.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set_component(&self, child: Child, state: ComponentState, restarted: bool) {
        if let Ok(mut c) = self.inner.components.lock() {
            let e = c.entry(child.name()).or_insert(Component {
                state,
                restarts: 0,
                provider: child.is_provider(),
            });
            e.state = state;
            if restarted {
                e.restarts += 1;
            }
        }
    }
}

/// Everything the core actors need to start (and to restart).
#[derive(Clone)]
pub struct CoreConfig {
    pub device: DeviceConfig,
    pub token: TokenConfig,
    pub session_max_age: Duration,
    pub admin_password: Option<String>,
    /// Where a generated admin password is written on first start.
    pub admin_password_file: Option<std::path::PathBuf>,
    /// The external login API, when sign-ins go there (`AUTH_MODE=http_api`).
    pub login_api: Option<ServiceConfig>,
    /// The external token service, when it mints access tokens (`TOKEN_PROVIDER_MODE=http_api`).
    pub token_api: Option<ServiceConfig>,
    /// How often expired device codes, tokens and sessions, and audit events past retention,
    /// are removed.
    pub cleanup_interval: Duration,
    pub audit_retention: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Child {
    Audit,
    Directory,
    Session,
    Token,
    Device,
    AuthProvider,
    TokenProvider,
}

impl Child {
    fn name(self) -> &'static str {
        match self {
            Child::Audit => "audit",
            Child::Directory => "directory",
            Child::Session => "session",
            Child::Token => "token",
            Child::Device => "device",
            Child::AuthProvider => "login_api",
            Child::TokenProvider => "token_api",
        }
    }
    fn is_provider(self) -> bool {
        matches!(self, Child::AuthProvider | Child::TokenProvider)
    }
}

/// Messages of the root supervisor.
pub enum RootMsg {
    /// Internal: start `child` again after its back-off.
    Restart(ChildName),
    /// Shutdown is under way: children that stop now stay stopped.
    ShuttingDown(RpcReplyPort<()>),
    /// Internal: time for the periodic cleanup.
    Cleanup,
}

/// Opaque name of a child, carried by [`RootMsg::Restart`].
pub struct ChildName(Child);

struct Root;

struct RootArgs {
    config: CoreConfig,
    keys: JwtKeys,
    store: Store,
    actors: Actors,
}

struct RootState {
    args: RootArgs,
    children: HashMap<ActorId, Child>,
    restarts: HashMap<Child, VecDeque<Instant>>,
    stopping: bool,
}

impl RootState {
    async fn spawn(&mut self, child: Child, me: ActorCell) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        let id = match child {
            Child::Audit => {
                let (r, _) = Actor::spawn_linked(None, AuditActor, (a.store.clone(), a.actors.clone()), me).await?;
                a.actors.inner.audit.set(r.clone());
                r.get_id()
            }
            Child::Directory => {
                let args = DirectoryArgs {
                    store: a.store.clone(),
                    clients: a.actors.inner.clients.clone(),
                    admin_password: a.config.admin_password.clone(),
                    admin_password_file: a.config.admin_password_file.clone(),
                    actors: a.actors.clone(),
                    login_api_timeout: a.config.login_api.as_ref().map(|c| c.timeout),
                };
                let (r, _) = Actor::spawn_linked(None, DirectoryActor, args, me).await?;
                a.actors.inner.directory.set(r.clone());
                r.get_id()
            }
            Child::Session => {
                let args = SessionArgs {
                    max_age: a.config.session_max_age,
                    store: a.store.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, SessionActor, args, me).await?;
                a.actors.inner.session.set(r.clone());
                r.get_id()
            }
            Child::Token => {
                let args = TokenArgs {
                    config: a.config.token.clone(),
                    keys: a.keys.clone(),
                    store: a.store.clone(),
                    actors: a.actors.clone(),
                    token_api_timeout: a.config.token_api.as_ref().map(|c| c.timeout),
                };
                let (r, _) = Actor::spawn_linked(None, TokenActor, args, me).await?;
                a.actors.inner.token.set(r.clone());
                r.get_id()
            }
            Child::Device => {
                let args = DeviceArgs {
                    config: a.config.device.clone(),
                    store: a.store.clone(),
                    actors: a.actors.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, DeviceActor, args, me).await?;
                a.actors.inner.device.set(r.clone());
                r.get_id()
            }
            Child::AuthProvider => {
                let Some(config) = a.config.login_api.clone() else { return Ok(()) };
                let counters = a.actors.metrics().provider.clone();
                let (r, _) = Actor::spawn_linked(None, AuthProviderActor, (config, counters), me).await?;
                a.actors.inner.auth_provider.set(r.clone());
                r.get_id()
            }
            Child::TokenProvider => {
                let Some(config) = a.config.token_api.clone() else { return Ok(()) };
                let counters = a.actors.metrics().provider.clone();
                let (r, _) = Actor::spawn_linked(None, TokenProviderActor, (config, counters), me).await?;
                a.actors.inner.token_provider.set(r.clone());
                r.get_id()
            }
        };
        self.children.insert(id, child);
        Ok(())
    }
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, args: RootArgs) -> Result<RootState, ActorProcessingErr> {
        let mut st = RootState {
            args,
            children: HashMap::new(),
            restarts: HashMap::new(),
            stopping: false,
        };
        let providers = [
            st.args.config.login_api.is_some().then_some(Child::AuthProvider),
            st.args.config.token_api.is_some().then_some(Child::TokenProvider),
        ];
        let children = providers
            .into_iter()
            .flatten()
            .chain([Child::Audit, Child::Directory, Child::Session, Child::Token, Child::Device]);
        for child in children {
            st.spawn(child, myself.get_cell()).await?;
            st.args.actors.set_component(child, ComponentState::Running, false);
        }
        myself.send_interval(st.args.config.cleanup_interval, || RootMsg::Cleanup);
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<RootMsg>, msg: RootMsg, st: &mut RootState) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Restart(ChildName(child)) if !st.stopping => {
                if let Err(e) = st.spawn(child, myself.get_cell()).await {
                    tracing::error!(actor = child.name(), error = %e, "restart failed");
                    schedule_restart(&myself, st, child);
                } else {
                    st.args.actors.set_component(child, ComponentState::Running, false);
                    let restarts = st.args.actors.components().get(child.name()).map_or(0, |c| c.restarts);
                    tracing::warn!(actor = child.name(), restarts, "actor restarted");
                }
            }
            RootMsg::Restart(_) => {}
            RootMsg::Cleanup => {
                // Each actor removes what has expired in its own state, off the request path.
                let actors = &st.args.actors;
                if let Ok(d) = actors.device() {
                    let _ = cast(&d, DeviceMsg::Sweep);
                }
                if let Ok(t) = actors.token() {
                    let _ = cast(&t, TokenMsg::Sweep);
                }
                if let Ok(s) = actors.session() {
                    let _ = cast(&s, SessionMsg::Sweep);
                }
                if let Ok(a) = actors.audit_actor() {
                    let retention = u64::try_from(st.args.config.audit_retention.as_millis()).unwrap_or(u64::MAX);
                    let before_ms = crate::now_ms().saturating_sub(retention);
                    let _ = cast(&a, AuditMsg::Prune { before_ms });
                }
            }
            RootMsg::ShuttingDown(reply) => {
                st.stopping = true;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        let Some(child) = st.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if st.stopping {
            return Ok(());
        }
        tracing::error!(actor = child.name(), reason = %why, "actor stopped unexpectedly");
        schedule_restart(&myself, st, child);
        Ok(())
    }
}

fn schedule_restart(myself: &ActorRef<RootMsg>, st: &mut RootState, child: Child) {
    let now = Instant::now();
    let recent = st.restarts.entry(child).or_default();
    while recent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60)) {
        recent.pop_front();
    }
    let (delay, state) = if recent.len() >= MAX_RESTARTS {
        tracing::error!(
            actor = child.name(),
            "actor failed {MAX_RESTARTS} times within a minute; reported down, next try in {}s",
            COOL_DOWN.as_secs()
        );
        recent.clear();
        (COOL_DOWN, ComponentState::Down)
    } else {
        let d = Duration::from_millis(100u64 << recent.len());
        recent.push_back(now);
        (d, ComponentState::Restarting)
    };
    st.args.actors.set_component(child, state, true);
    myself.send_after(delay, move || RootMsg::Restart(ChildName(child)));
}

/// The running actor system.
pub struct System {
    pub actors: Actors,
    pub store: Store,
    pub keys: JwtKeys,
    root: ActorRef<RootMsg>,
    root_done: tokio::task::JoinHandle<()>,
}

impl System {
    /// Starts the root supervisor and, under it, every core actor (each loads its state).
    pub async fn start(store: Store, config: CoreConfig, keys: JwtKeys) -> Result<System, ActorProcessingErr> {
        let actors = Actors::new();
        let args = RootArgs {
            config,
            keys: keys.clone(),
            store: store.clone(),
            actors: actors.clone(),
        };
        let (root, root_done) = Actor::spawn(None, Root, args).await?;
        Ok(System {
            actors,
            store,
            keys,
            root,
            root_done,
        })
    }

    /// Stops every actor, lets queued writes commit, and closes the database file.
    pub async fn shutdown(self) {
        let _ = self.root.call(RootMsg::ShuttingDown, Some(CALL_TIMEOUT)).await;
        let _ = self.root.stop_children_and_wait(None, Some(CALL_TIMEOUT)).await;
        self.root.stop(None);
        let _ = self.root_done.await;
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

/// Where a server secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Configured,
    Stored,
    Generated,
}

/// The secret `name`: the configured value if set, else the one kept in the database, else a
/// new random one that is kept there so tokens and sessions survive restarts.
pub async fn server_secret(store: &Store, name: &'static str, configured: Option<&str>) -> Result<(Vec<u8>, SecretSource), StoreError> {
    if let Some(s) = configured {
        return Ok((s.as_bytes().to_vec(), SecretSource::Configured));
    }
    let key = format!("secret:{name}").into_bytes();
    let k = key.clone();
    if let Some(v) = store.read(move |r| r.get(Table::Meta, &k)).await? {
        let s: String = decode(&v)?;
        return Ok((s.into_bytes(), SecretSource::Stored));
    }
    let s = crate::secret::random_token(48);
    store.write(vec![Op::put(Table::Meta, key, &s)?]).await?;
    Ok((s.into_bytes(), SecretSource::Generated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceConfig, DeviceMsg};
    use crate::store::StoreOptions;

    fn config() -> CoreConfig {
        CoreConfig {
            device: DeviceConfig {
                code_lifetime: Duration::from_secs(600),
                poll_interval: Duration::from_secs(5),
                issue_timeout: CALL_TIMEOUT,
            },
            token: TokenConfig {
                issuer: "http://test".into(),
                access_ttl: Duration::from_secs(60),
                refresh_ttl: Duration::from_secs(600),
                refresh_enabled: true,
                rotation: false,
            },
            session_max_age: Duration::from_secs(600),
            admin_password: Some("admin-password".into()),
            admin_password_file: None,
            login_api: None,
            token_api: None,
            cleanup_interval: Duration::from_secs(3600),
            audit_retention: Duration::from_secs(3600),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_actor_is_restarted_and_rebuilds_its_state_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
        let keys = JwtKeys::new(&[1u8; 32], "http://test");
        let system = System::start(store, config(), keys).await.unwrap();
        let device = system.actors.device().unwrap();
        let code = ask(&device, |reply| DeviceMsg::Create {
            client_id: "c".into(),
            scope: "read".into(),
            now: crate::now_ms(),
            reply,
        })
        .await
        .unwrap()
        .unwrap();
        device.kill();
        let mut restarted = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(d) = system.actors.device()
                && d.get_id() != device.get_id()
                && let Ok(n) = ask(&d, |reply| DeviceMsg::Count { reply }).await
            {
                restarted = Some((d, n));
                break;
            }
        }
        let (fresh, count) = restarted.expect("the device actor was restarted");
        assert_eq!(count, 1, "the pending code was reloaded from the store");
        let poll = ask(&fresh, |reply| DeviceMsg::Poll {
            device_code_hash: crate::secret::sha256(&code.device_code),
            client_id: "c".into(),
            now: crate::now_ms(),
            reply,
        })
        .await
        .unwrap();
        assert_eq!(poll.unwrap_err().code, crate::ErrorCode::AuthorizationPending);
        system.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_authorization_yields_tokens_once() {
        use crate::store::{Op, Table};
        use crate::token::{Grant, TokenMsg};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
        let system = System::start(store, config(), JwtKeys::new(&[1u8; 32], "http://test"))
            .await
            .unwrap();
        let token = system.actors.token().unwrap();
        // The seeded admin and CLI client (issuance checks both are still active).
        let dir = system.actors.directory().unwrap();
        let admin = ask(&dir, |reply| crate::directory::DirectoryMsg::ListUsers { reply })
            .await
            .unwrap()
            .remove(0);
        let client = ask(&dir, |reply| crate::directory::DirectoryMsg::ListClients { reply })
            .await
            .unwrap()
            .remove(0);
        let grant = Grant {
            user_id: admin.id.clone(),
            username: admin.username.clone(),
            client_id: client.client_id.clone(),
            scope: "read".into(),
            authorization_id: "auth-1".into(),
        };
        let issue = |g: Grant| {
            let token = token.clone();
            async move {
                let with = vec![Op::delete(Table::DeviceCodes, b"k".to_vec())];
                ask(&token, |reply| TokenMsg::IssueForGrant {
                    grant: g,
                    with,
                    now: crate::now_ms(),
                    reply,
                })
                .await
                .unwrap()
            }
        };
        assert!(issue(grant.clone()).await.is_ok());
        assert_eq!(issue(grant).await.unwrap_err().code, crate::ErrorCode::InvalidGrant);
        system.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secrets_are_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        let (a, src) = server_secret(&store, "jwt", None).await.unwrap();
        assert_eq!(src, SecretSource::Generated);
        assert!(a.len() >= 32);
        let (b, src) = server_secret(&store, "jwt", None).await.unwrap();
        assert_eq!((b.clone(), src), (a.clone(), SecretSource::Stored));
        let (c, src) = server_secret(&store, "jwt", Some("configured-secret-of-enough-length"))
            .await
            .unwrap();
        assert_eq!(
            (c.as_slice(), src),
            (&b"configured-secret-of-enough-length"[..], SecretSource::Configured)
        );
        store.close();
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(server_secret(&store, "jwt", None).await.unwrap().0, a);
        store.close();
    }
}
