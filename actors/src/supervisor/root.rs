//! The root actor: its children, their (re)starts and the periodic cleanup.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::backoff::Restarts;
use super::config::CoreConfig;
use super::registry::{Actors, ComponentState};
use crate::audit::{AuditActor, AuditArgs, AuditMsg};
use crate::crypto::keys::JwtKeys;
use crate::device::{DeviceActor, DeviceArgs, DeviceMsg};
use crate::directory::DirectoryMsg;
use crate::directory::{DirectoryActor, DirectoryArgs, DirectoryPeers};
use crate::limits::{LimitActor, LimitArgs, LimitMsg};
use crate::provider::login::AuthProviderActor;
use crate::provider::token_service::TokenProviderActor;
use crate::session::{SessionActor, SessionArgs, SessionMsg};
use crate::store::Stores;
use crate::store::change::{Cache, Change, FeedEvent};
use crate::time::{Millis, millis};
use crate::token::{TokenActor, TokenArgs, TokenMsg, TokenPeers};

/// Restarts of one actor allowed within a minute.
pub const MAX_RESTARTS: usize = 5;
/// How long a child that used up its restarts stays down before one more try.
pub const COOL_DOWN: Duration = Duration::from_secs(15);
/// While a shared database's change feed is down, the directory reloads this often, so a
/// disabled user or client is refused within it.
const DEGRADED_RELOAD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Child {
    Audit,
    Directory,
    Session,
    Token,
    Device,
    AuthProvider,
    TokenProvider,
    Limits,
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
            Child::Limits => "limits",
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
    /// Internal: the cleanup, deleting from the store too if `store` (this process holds the
    /// cleanup lease).
    Sweep { now: Millis, store: bool },
    /// Internal: what the shared database's change feed says, for the owners.
    Feed(FeedEvent),
    /// Internal: while the feed is down, the directory reloads every second.
    ReloadDirectory,
}

/// Opaque name of a child, carried by [`RootMsg::Restart`].
pub struct ChildName(Child);

pub(super) struct Root;

pub(super) struct RootArgs {
    pub config: CoreConfig,
    pub keys: JwtKeys,
    pub stores: Stores,
    pub actors: Actors,
}

pub(super) struct RootState {
    args: RootArgs,
    /// Whether the database is shared, and whether its feed is up now (children started
    /// later start with it).
    cache: Cache,
    /// The directory's reload timer while the feed is down.
    degraded: Option<ractor::concurrency::JoinHandle<()>>,
    /// This process's name as a lease holder.
    instance: String,
    children: HashMap<ActorId, Child>,
    restarts: Restarts<Child>,
    stopping: bool,
}

/// The wall clock, for the root's timers and (re)starts: a child loads its state as of now.
#[allow(clippy::disallowed_methods)] // the supervisor's timers and restarts are an edge
fn clock() -> Millis {
    crate::time::wall_clock_ms()
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, args: RootArgs) -> Result<RootState, ActorProcessingErr> {
        let feed = if args.config.offline { None } else { args.stores.take_feed() };
        let cache = if feed.is_some() {
            Cache {
                shared: true,
                trusted: true,
            }
        } else {
            Cache::ALONE
        };
        if let Some(mut feed) = feed {
            let me = myself.clone();
            tokio::spawn(async move {
                while let Some(event) = feed.recv().await {
                    if me.send_message(RootMsg::Feed(event)).is_err() {
                        return;
                    }
                }
            });
        }
        let mut st = RootState {
            args,
            cache,
            degraded: None,
            instance: uuid::Uuid::new_v4().to_string(),
            children: HashMap::new(),
            restarts: Restarts::new(MAX_RESTARTS, COOL_DOWN),
            stopping: false,
        };
        if st.cache.shared {
            st.args.actors.set_cluster();
        }
        for child in children(&st.args.config, st.cache.shared) {
            st.spawn(child, myself.get_cell()).await?;
            st.args
                .actors
                .set_component(child.name(), child.is_provider(), ComponentState::Running, false);
        }
        if !st.args.config.offline {
            myself.send_interval(st.args.config.cleanup_interval, || RootMsg::Cleanup);
        }
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<RootMsg>, msg: RootMsg, st: &mut RootState) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Restart(ChildName(child)) if !st.stopping => {
                if let Err(e) = st.spawn(child, myself.get_cell()).await {
                    tracing::error!(actor = child.name(), error = %e, "restart failed");
                    schedule_restart(&myself, st, child);
                } else {
                    st.args
                        .actors
                        .set_component(child.name(), child.is_provider(), ComponentState::Running, false);
                    let restarts = st.args.actors.components().get(child.name()).map_or(0, |c| c.restarts);
                    tracing::warn!(actor = child.name(), restarts, "actor restarted");
                }
            }
            RootMsg::Restart(_) => {}
            RootMsg::Cleanup => {
                // Deleting from the database is one process's job at a time: the holder of
                // the cleanup lease (on a database one process owns, always that one).
                let now = clock();
                let ttl = millis(st.args.config.cleanup_interval) * 2;
                let (lease, me) = (st.args.stores.server.lease("cleanup", &st.instance, now, ttl), myself.clone());
                tokio::spawn(async move {
                    let store = lease.await.unwrap_or(false);
                    let _ = me.send_message(RootMsg::Sweep { now, store });
                });
            }
            RootMsg::Sweep { now, store } => {
                // Each actor removes what has expired in its own state, off the request path.
                let actors = &st.args.actors;
                let _ = actors.device().cast(DeviceMsg::Sweep { now, store });
                let _ = actors.token().cast(TokenMsg::Sweep { now, store });
                let _ = actors.session().cast(SessionMsg::Sweep { now, store });
                if store {
                    let before_ms = now.saturating_sub(millis(st.args.config.audit_retention));
                    let _ = actors.audit_actor().cast(AuditMsg::Prune { before_ms });
                    if let Some(limits) = actors.limits() {
                        // Every throttle window is shorter than a day.
                        let before = now.saturating_sub(24 * 3600 * 1000);
                        let _ = limits.cast(LimitMsg::Sweep { before });
                    }
                }
            }
            RootMsg::Feed(event) => st.feed(&myself, event),
            RootMsg::ReloadDirectory => {
                let _ = st.args.actors.directory().cast(DirectoryMsg::Reload);
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
    let (delay, gave_up) = st.restarts.failed(child, std::time::Instant::now());
    let state = if gave_up {
        tracing::error!(
            actor = child.name(),
            "actor failed {MAX_RESTARTS} times within a minute; reported down, next try in {}s",
            COOL_DOWN.as_secs()
        );
        ComponentState::Down
    } else {
        ComponentState::Restarting
    };
    st.args.actors.set_component(child.name(), child.is_provider(), state, true);
    myself.send_after(delay, move || RootMsg::Restart(ChildName(child)));
}

/// The children to start, in order: providers and the audit trail first (others use
/// them), the device actor last (it redeems through the token actor).
fn children(config: &CoreConfig, shared: bool) -> Vec<Child> {
    if config.offline {
        // A password reset ends the user's sessions, so the session actor runs too.
        return vec![Child::Audit, Child::Session, Child::Directory];
    }
    let providers = [
        config.login_api.is_some().then_some(Child::AuthProvider),
        config.token_api.is_some().then_some(Child::TokenProvider),
    ];
    providers
        .into_iter()
        .flatten()
        .chain([Child::Audit, Child::Directory, Child::Session, Child::Token, Child::Device])
        .chain(shared.then_some(Child::Limits))
        .collect()
}

impl RootState {
    /// Hands a change to its owner; on the feed going down or up, tells every owner.
    fn feed(&mut self, myself: &ActorRef<RootMsg>, event: FeedEvent) {
        let (a, now) = (&self.args.actors, clock());
        match event {
            FeedEvent::Changed(Change::Device(key)) => {
                let _ = a.device().cast(DeviceMsg::Changed { key });
            }
            FeedEvent::Changed(Change::Authorization(authorization_id)) => {
                let _ = a.token().cast(TokenMsg::Changed {
                    authorization_id,
                    forget: Vec::new(),
                });
            }
            FeedEvent::Changed(Change::Session(key)) => {
                let _ = a.session().cast(SessionMsg::Ended { key });
            }
            FeedEvent::Changed(change @ (Change::User(_) | Change::Client(_))) => {
                let _ = a.directory().cast(DirectoryMsg::Changed { change });
            }
            FeedEvent::Lost => {
                self.cache.trusted = false;
                let _ = a.session().cast(SessionMsg::Feed { up: false, now });
                let _ = a.token().cast(TokenMsg::Feed { up: false, now });
                if self.degraded.is_none() {
                    self.degraded = Some(myself.send_interval(DEGRADED_RELOAD, || RootMsg::ReloadDirectory));
                }
            }
            FeedEvent::Resync => {
                self.cache.trusted = true;
                if let Some(timer) = self.degraded.take() {
                    timer.abort();
                }
                let _ = a.session().cast(SessionMsg::Feed { up: true, now });
                let _ = a.token().cast(TokenMsg::Feed { up: true, now });
                let _ = a.device().cast(DeviceMsg::Reload { now });
                let _ = a.directory().cast(DirectoryMsg::Reload);
            }
        }
    }

    /// Starts `child` with its repository and peers, as its current incarnation.
    async fn spawn(&mut self, child: Child, me: ActorCell) -> Result<(), ActorProcessingErr> {
        let (a, config, stores, now) = (&self.args.actors, &self.args.config, &self.args.stores, clock());
        let id = match child {
            Child::Audit => {
                let args = AuditArgs {
                    repo: stores.audit.clone(),
                    backlog: a.audit_backlog(),
                };
                a.audit_actor().spawn_linked(AuditActor, args, me).await?
            }
            Child::Directory => {
                let args = DirectoryArgs {
                    repo: stores.directory.clone(),
                    clients: a.client_publisher(),
                    admin_password: config.admin_password.clone(),
                    admin_password_file: config.admin_password_file.clone(),
                    peers: DirectoryPeers {
                        me: a.directory().clone(),
                        session: a.session().clone(),
                        token: a.token().clone(),
                        login_api: config.login_api.as_ref().map(|c| (a.login_api().clone(), c.timeout)),
                    },
                    now,
                };
                a.directory().spawn_linked(DirectoryActor, args, me).await?
            }
            Child::Session => {
                let args = SessionArgs {
                    max_age: config.session_max_age,
                    repo: stores.session.clone(),
                    now,
                    cache: self.cache,
                };
                a.session().spawn_linked(SessionActor, args, me).await?
            }
            Child::Token => {
                let args = TokenArgs {
                    config: config.token.clone(),
                    remember_issued: crate::device::presentable_for(&config.device),
                    keys: self.args.keys.clone(),
                    repo: stores.token.clone(),
                    peers: TokenPeers {
                        me: a.token().clone(),
                        clients: a.client_publisher().subscribe(),
                        audit: a.audit_sink(),
                        token_api: config.token_api.as_ref().map(|c| (a.token_api().clone(), c.timeout)),
                    },
                    cache: self.cache,
                };
                a.token().spawn_linked(TokenActor, args, me).await?
            }
            Child::Device => {
                let args = DeviceArgs {
                    config: config.device.clone(),
                    repo: stores.device.clone(),
                    me: a.device().clone(),
                    token: a.token().clone(),
                    metrics: a.shared_metrics(),
                    now,
                    cache: self.cache,
                    audit: a.audit_sink(),
                };
                a.device().spawn_linked(DeviceActor, args, me).await?
            }
            Child::AuthProvider => {
                let Some(service) = config.login_api.clone() else { return Ok(()) };
                let counters = a.metrics().provider.clone();
                a.login_api().spawn_linked(AuthProviderActor, (service, counters), me).await?
            }
            Child::Limits => {
                let Some(repo) = stores.limits.clone() else { return Ok(()) };
                a.limits_handle().spawn_linked(LimitActor, LimitArgs { repo }, me).await?
            }
            Child::TokenProvider => {
                let Some(service) = config.token_api.clone() else { return Ok(()) };
                let counters = a.metrics().provider.clone();
                a.token_api().spawn_linked(TokenProviderActor, (service, counters), me).await?
            }
        };
        self.children.insert(id, child);
        Ok(())
    }
}
