//! Start-up, the accept loop, and graceful shutdown. `main` and the integration tests run the
//! very same [`Server`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use authgate_actors::crypto::keys::KeyError;
use authgate_actors::device::DeviceConfig;
use authgate_actors::store::postgres::PgOptions;
use authgate_actors::store::redb::StoreOptions;
use authgate_actors::store::{StoreError, Stores};
use authgate_actors::supervisor::{Actors, CoreConfig, Secrets, System};
use authgate_actors::token::TokenConfig;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::{App, AppError};
use crate::config::{DatabaseDriver, Settings};
use crate::http::cookies::CookieKeys;

/// A new connection gets this long to start its first request (a connection that says nothing
/// is closed); after that, `KEEPALIVE_TIMEOUT` bounds the wait for each request's headers.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish at shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{setting}: {0}", setting = store_setting(.0))]
    Store(#[from] StoreError),
    #[error("SERVER_ADDR: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Config(String),
    #[error("cannot start the actors: {0}")]
    Actors(String),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("{0}")]
    Keys(#[from] KeyError),
}

impl From<authgate_actors::supervisor::StartError> for StartError {
    fn from(e: authgate_actors::supervisor::StartError) -> Self {
        use authgate_actors::supervisor::StartError as E;
        match e {
            E::Store(e) => StartError::Store(e),
            E::Keys(e) => StartError::Keys(e),
            E::Actors(e) => StartError::Actors(e),
        }
    }
}

impl StartError {
    /// Exit status: 2 for a bad setting, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Store(
                StoreError::Open { .. }
                | StoreError::Locked { .. }
                | StoreError::Config(_)
                | StoreError::Unavailable(_)
                | StoreError::Schema(_),
            )
            | StartError::Bind { .. }
            | StartError::Config(_)
            | StartError::Keys(KeyError::File { .. } | KeyError::FileWithHmac) => 2,
            _ => 1,
        }
    }
}

/// Opens the database off the async threads: every owner's repository, none held here.
pub async fn open_store(settings: &Settings) -> Result<Stores, StoreError> {
    match settings.database_driver {
        DatabaseDriver::Redb => {
            let path = settings.database_path.clone();
            let options = StoreOptions {
                max_batch: settings.store_max_batch as usize,
            };
            tokio::task::spawn_blocking(move || authgate_actors::store::redb::open(&path, options))
                .await
                .map_err(|e| StoreError::Storage(e.to_string()))?
        }
        DatabaseDriver::Postgres => {
            let Some(dsn) = settings.database_dsn.clone() else {
                return Err(StoreError::Config("required with DATABASE_DRIVER=postgres".into()));
            };
            authgate_actors::store::postgres::open(PgOptions {
                dsn,
                pool_size: settings.database_pool_size as usize,
                connect_timeout: settings.database_connect_timeout,
                max_batch: settings.store_max_batch as usize,
            })
            .await
        }
    }
}

/// The setting a storage error is about, for the one line start-up prints.
pub fn store_setting(e: &StoreError) -> &'static str {
    match e {
        StoreError::Locked { .. } | StoreError::Open { .. } => "DATABASE_PATH",
        StoreError::Config(_) | StoreError::Unavailable(_) | StoreError::Schema(_) => "DATABASE_DSN",
        _ => "database",
    }
}

/// What the actors start with, from the settings; `offline` for the management commands.
pub fn core_config(settings: &Settings, offline: bool) -> Result<CoreConfig, String> {
    Ok(CoreConfig {
        device: DeviceConfig {
            code_lifetime: settings.device_code_expiration,
            poll_interval: settings.polling_interval,
            issue_timeout: settings.token_wait(),
        },
        token: TokenConfig {
            issuer: settings.base_url.clone(),
            access_ttl: settings.jwt_expiration,
            refresh_ttl: settings.refresh_token_expiration,
            refresh_enabled: settings.enable_refresh_tokens,
            rotation: settings.enable_token_rotation,
            reuse_grace: settings.refresh_token_reuse_grace,
        },
        session_max_age: settings.session_max_age,
        admin_password: settings.admin_password.clone(),
        admin_password_file: Some(settings.admin_password_file()),
        // Offline commands manage local users only; nobody signs in.
        login_api: if offline { None } else { settings.login_api()? },
        token_api: if offline { None } else { settings.token_api()? },
        cleanup_interval: settings.cleanup_interval,
        audit_retention: settings.audit_retention,
        offline,
    })
}

/// Starts the actor system on the database the settings name (secrets and keys resolved
/// through their owners).
pub async fn start_system(settings: &Settings, offline: bool) -> Result<System, StartError> {
    let config = core_config(settings, offline).map_err(StartError::Config)?;
    let stores = open_store(settings).await?;
    if offline {
        return Ok(System::start_offline(stores, config).await?);
    }
    let secrets = Secrets {
        jwt: settings.jwt_secret.clone(),
        session: settings.session_secret.clone(),
    };
    #[allow(clippy::disallowed_methods)] // start-up is an edge: the keyring is checked as of now
    let now = authgate_actors::time::wall_clock_ms();
    Ok(System::start(stores, config, secrets, |jwt| settings.key_options(jwt), now).await?)
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    /// The actors, for embedding programs and test fixtures.
    pub actors: Actors,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, starts the actors, binds the socket and starts serving.
    pub async fn start(settings: Settings) -> Result<Server, StartError> {
        let system = start_system(&settings, false).await?;
        let bound = match TcpListener::bind(settings.server_addr).await {
            Ok(l) => l.local_addr().map(|a| (l, a)),
            Err(e) => Err(e),
        };
        let (listener, addr) = match bound {
            Ok(x) => x,
            Err(source) => {
                system.shutdown().await;
                return Err(StartError::Bind {
                    addr: settings.server_addr,
                    source,
                });
            }
        };
        let cookies = CookieKeys::new(&system.session_secret, settings.secure());
        let app = match App::new(system.actors.clone(), system.store_status(), system.keys.clone(), cookies, settings) {
            Ok(app) => Arc::new(app),
            Err(e) => {
                system.shutdown().await;
                return Err(e.into());
            }
        };
        let actors = system.actors.clone();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            serve(listener, app, stopped).await;
            system.shutdown().await;
            tracing::info!("stopped; database closed");
        });
        tracing::info!(%addr, "listening");
        Ok(Server { addr, actors, stop, task })
    }

    /// Stops accepting, lets in-flight requests finish (up to a deadline), stops the actors and
    /// closes the database.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// How long, at shutdown, connections that have not finished a request yet get to send one
/// (answered with `Connection: close`) before idle ones are closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(1000);
/// At most this long, at shutdown, taking connections already queued in the kernel.
const BACKLOG_DRAIN_LIMIT: Duration = Duration::from_millis(200);

/// Marks a connection's first request (or its end) once, for the shutdown grace.
struct FirstRequest(AtomicBool, Arc<AtomicUsize>);

impl FirstRequest {
    fn arrived(&self) {
        if !self.0.swap(true, Ordering::Relaxed) {
            self.1.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // hyper's header timer starts when it waits for a request's head, so it bounds both an idle
    // kept-alive connection and a slow request's headers: KEEPALIVE_TIMEOUT. A new connection's
    // first byte has its own, shorter deadline (`FirstByte`).
    let keepalive = app.settings.keepalive_timeout;
    let first_byte = FIRST_BYTE_TIMEOUT.min(keepalive);
    http.timer(TokioTimer::new()).header_read_timeout(keepalive).keep_alive(true);
    // At most MAX_CONNECTIONS open at once: beyond it the loop stops accepting, and new
    // connections wait in the kernel's backlog instead of costing memory here.
    let max = app.settings.max_connections as usize;
    let connections = Arc::new(tokio::sync::Semaphore::new(max));
    // Connections that have not yet sent a request (what the shutdown grace waits for).
    let fresh = Arc::new(AtomicUsize::new(0));
    let serve_one = |stream: tokio::net::TcpStream, peer: SocketAddr, permit: Option<tokio::sync::OwnedSemaphorePermit>| {
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        fresh.fetch_add(1, Ordering::Relaxed);
        let first = Arc::new(FirstRequest(AtomicBool::new(false), fresh.clone()));
        let seen = first.clone();
        let service = service_fn(move |req: crate::http::Request| {
            let app = app.clone();
            seen.arrived();
            crate::http::PEER.scope(peer, async move { Ok::<_, Infallible>(handling(app, req).await) })
        });
        let stream = FirstByte::new(stream, first_byte);
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            first.arrived();
        });
    };
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_one(stream, peer, Some(permit)),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    // From here every answer says `Connection: close`.
    app.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    // Connections the kernel has completed but nobody accepted yet would be reset when the
    // socket closes: take them first (within bounds, should clients keep arriving).
    let until = tokio::time::Instant::now() + BACKLOG_DRAIN_LIMIT;
    for _ in 0..max {
        let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await else {
            break;
        };
        serve_one(stream, peer, connections.clone().try_acquire_owned().ok());
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    drop(listener);
    // A connection accepted a moment ago may not have sent its request yet, and a graceful
    // shutdown closes a connection with no request in progress at once: give those a moment.
    let grace = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while fresh.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open at the shutdown deadline");
    }
}

/// A request's answer, boxed outside any async body. hyper keeps room for one request's future
/// in every connection for as long as the connection lives, and `App::handle`'s holds the
/// state of every route (kilobytes): boxed, an idle kept-alive connection keeps a pointer, and
/// the room exists only while a request is answered.
fn handling(app: Arc<App>, req: crate::http::Request) -> std::pin::Pin<Box<dyn Future<Output = crate::http::Response> + Send>> {
    Box::pin(async move { app.handle(req).await })
}

/// A new connection's stream: until its first byte arrives, a read that would wait past the
/// deadline fails instead (a connection that never speaks is closed as soon as before, however
/// long `KEEPALIVE_TIMEOUT` is); from the first byte on it is the stream itself.
struct FirstByte {
    io: tokio::net::TcpStream,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl FirstByte {
    fn new(io: tokio::net::TcpStream, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl tokio::io::AsyncRead for FirstByte {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future as _;
        let this = self.get_mut();
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            std::task::Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request on a new connection",
                    )));
                }
                std::task::Poll::Pending
            }
            ready => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                ready
            }
        }
    }
}

impl tokio::io::AsyncWrite for FirstByte {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
