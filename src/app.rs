//! The application: shared handles, the route table (matchit) and dispatch.

use authgate_actors::crypto::keys::JwtKeys;
use authgate_actors::supervisor::{Actors, StoreStatus};
use std::time::Duration;

use authgate_actors::{ErrorCode, OAuthError};
use hyper::header::{ALLOW, CONNECTION, HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode};

use crate::config::Settings;
use crate::handlers::{account, admin, authorize, discovery, metrics, misc, oauth, web};
use crate::http::cookies::CookieKeys;
use crate::http::form;
use crate::http::guard::{Guard, client_addr, secure_headers};
use crate::http::response::{oauth_error, redirect};
use crate::http::telemetry::{HttpMetrics, X_REQUEST_ID, method_index, method_name, request_id};
use crate::http::{Request, Response};
use crate::render::Pages;

/// Every route. Handlers are picked by route and method in [`App::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Root,
    Health,
    DeviceCode,
    Token,
    TokenInfo,
    Revoke,
    Login,
    Logout,
    Device,
    DeviceVerify,
    DeviceApprove,
    Asset,
    Favicon,
    Account,
    AccountPassword,
    AccountSessions,
    AccountRevokeAll,
    AccountSessionAction,
    Admin,
    AdminClients,
    AdminClientNew,
    AdminClient,
    AdminClientAction,
    AdminUsers,
    AdminUserAction,
    AdminSessions,
    AdminSessionAction,
    AdminAudit,
    Introspect,
    UserInfo,
    Authorize,
    Metadata,
    OpenIdConfiguration,
    Jwks,
    Metrics,
}

/// Every route's path pattern (also its label in metrics and logs).
const ROUTES: [(&str, Route); 35] = [
    ("/", Route::Root),
    ("/health", Route::Health),
    ("/oauth/device/code", Route::DeviceCode),
    ("/oauth/token", Route::Token),
    ("/oauth/tokeninfo", Route::TokenInfo),
    ("/oauth/revoke", Route::Revoke),
    ("/oauth/introspect", Route::Introspect),
    ("/oauth/userinfo", Route::UserInfo),
    ("/oauth/authorize", Route::Authorize),
    ("/.well-known/oauth-authorization-server", Route::Metadata),
    ("/.well-known/openid-configuration", Route::OpenIdConfiguration),
    ("/.well-known/jwks.json", Route::Jwks),
    ("/login", Route::Login),
    ("/logout", Route::Logout),
    ("/device", Route::Device),
    ("/device/verify", Route::DeviceVerify),
    ("/device/approve", Route::DeviceApprove),
    ("/assets/{file}", Route::Asset),
    ("/favicon.ico", Route::Favicon),
    ("/account", Route::Account),
    ("/account/password", Route::AccountPassword),
    ("/account/sessions", Route::AccountSessions),
    ("/account/sessions/revoke-all", Route::AccountRevokeAll),
    ("/account/sessions/{id}/{action}", Route::AccountSessionAction),
    ("/admin", Route::Admin),
    ("/admin/clients", Route::AdminClients),
    ("/admin/clients/new", Route::AdminClientNew),
    ("/admin/clients/{id}", Route::AdminClient),
    ("/admin/clients/{id}/{action}", Route::AdminClientAction),
    ("/admin/users", Route::AdminUsers),
    ("/admin/users/{id}/{action}", Route::AdminUserAction),
    ("/admin/sessions", Route::AdminSessions),
    ("/admin/sessions/{id}/{action}", Route::AdminSessionAction),
    ("/admin/audit", Route::AdminAudit),
    ("/metrics", Route::Metrics),
];

/// Each route's metrics label, by its index in [`ROUTES`]; the last is for unmatched paths.
static ROUTE_NAMES: [&str; ROUTES.len() + 1] = {
    let mut names = ["unmatched"; ROUTES.len() + 1];
    let mut i = 0;
    while i < ROUTES.len() {
        names[i] = ROUTES[i].0;
        i += 1;
    }
    names
};

/// The router answers a route's index in [`ROUTES`].
fn routes() -> Result<matchit::Router<usize>, matchit::InsertError> {
    let mut r = matchit::Router::new();
    for (i, (path, _)) in ROUTES.iter().enumerate() {
        r.insert(*path, i)?;
    }
    Ok(r)
}

/// A request's route and path parameters.
struct Found {
    index: usize,
    route: Route,
    file: Option<String>,
    id: String,
    action: String,
}

/// Shared, read-only handles; one per server, behind an `Arc`.
pub struct App {
    pub actors: Actors,
    /// Whether the database takes writes (for `/health` and `/metrics`); no records.
    pub store: StoreStatus,
    pub keys: JwtKeys,
    pub cookies: CookieKeys,
    pub settings: Settings,
    pub pages: Pages,
    pub guard: Guard,
    /// The RFC 8414 metadata document (fixed at start-up).
    pub metadata: String,
    /// Set at shutdown: answers close their connections.
    pub draining: std::sync::atomic::AtomicBool,
    router: matchit::Router<usize>,
    /// Request counts and latencies by route.
    pub http_metrics: HttpMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("route table: {0}")]
    Routes(#[from] matchit::InsertError),
    #[error("templates: {0}")]
    Templates(#[from] minijinja::Error),
}

impl App {
    pub fn new(actors: Actors, store: StoreStatus, keys: JwtKeys, cookies: CookieKeys, settings: Settings) -> Result<Self, AppError> {
        Ok(Self {
            actors,
            store,
            keys,
            cookies,
            pages: Pages::new()?,
            guard: Guard::new(&settings),
            metadata: discovery::metadata_document(&settings),
            draining: std::sync::atomic::AtomicBool::new(false),
            settings,
            router: routes()?,
            http_metrics: HttpMetrics::new(&ROUTE_NAMES),
        })
    }

    /// The client's address, as text (see [`crate::http::guard::client_addr`]).
    pub fn ip(&self, req: &Request) -> Option<String> {
        self.addr(req).map(|a| a.to_string())
    }

    /// The client's address (no allocation: for the hot paths, which need it only sometimes).
    pub fn addr(&self, req: &Request) -> Option<std::net::IpAddr> {
        let peer = crate::http::PEER.try_with(|p| p.ip()).ok()?;
        Some(client_addr(peer, req.headers(), &self.guard.trusted))
    }

    /// Handles one request: sheds it at once when too many are in flight, and adds the
    /// security headers to whatever answers.
    pub async fn handle(&self, req: Request) -> Response {
        let started = std::time::Instant::now();
        let found = self.router.at(req.uri().path()).ok().and_then(|m| {
            Some(Found {
                index: *m.value,
                route: ROUTES.get(*m.value)?.1,
                file: m.params.get("file").map(str::to_owned),
                id: m.params.get("id").map(str::to_owned).unwrap_or_default(),
                action: m.params.get("action").map(str::to_owned).unwrap_or_default(),
            })
        });
        let route = found.as_ref().map(|f| f.route);
        let index = found.as_ref().map_or(ROUTES.len(), |f| f.index);
        let method = method_index(req.method());
        let request_id = request_id(req.headers());
        // Only what the request line needs, and only when it is written (the URI's clone shares
        // its bytes).
        let logged = crate::http::access_log::enabled().then(|| (req.uri().clone(), self.addr(&req)));
        let mut r = if route == Some(Route::Health) {
            self.route(req, found).await
        } else {
            match self.guard.inflight.clone().try_acquire_owned() {
                Ok(_permit) => self.route(req, found).await,
                Err(_) => self.shed(req).await,
            }
        };
        secure_headers(&mut r, self.settings.secure());
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let status = r.status().as_u16();
        let elapsed = started.elapsed();
        self.http_metrics.record(index, method, status, elapsed.as_secs_f64());
        if let Some((uri, client)) = logged {
            crate::http::access_log::write(&crate::http::access_log::Line {
                request_id: request_id.as_bytes(),
                method: method_name(method),
                path: uri.path(),
                route: ROUTE_NAMES.get(index).copied().unwrap_or("unmatched"),
                status,
                duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                client,
            });
        }
        r.headers_mut().insert(X_REQUEST_ID, request_id);
        r
    }

    /// The answer when the server is full: a device's poll hears `slow_down` (the one error
    /// RFC 8628 clients keep polling after), every other request a 503 with `Retry-After`.
    async fn shed(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let mut r = if path.starts_with("/oauth/") {
            // A glance at the body (no slot is held, so only briefly) tells a poll from the rest.
            let poll = path == "/oauth/token"
                && form::read_form_within(req, Duration::from_millis(200))
                    .await
                    .is_ok_and(|f| f.first("grant_type") == Some(authgate_actors::directory::GRANT_DEVICE_CODE));
            if poll {
                let m = self.actors.metrics();
                m.polls
                    .get_or_create(&authgate_actors::metrics::OutcomeLabel { outcome: "slow_down" })
                    .inc();
            }
            let e = if poll {
                OAuthError::new(ErrorCode::SlowDown, "the server is busy; poll more slowly")
            } else {
                OAuthError::unavailable("the server is busy; try again shortly")
            };
            oauth_error(&e)
        } else {
            self.pages.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "The server is very busy right now. Please try again in a moment.",
                None,
            )
        };
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    /// Routes one request. For requests without a body, `now` (Unix ms) is read here once and
    /// passed down; handlers that read a body take the time once the body is complete.
    async fn route(&self, req: Request, found: Option<Found>) -> Response {
        let now = crate::http::request_time();
        let Some(Found {
            route, file, id, action, ..
        }) = found
        else {
            return self
                .pages
                .error(StatusCode::NOT_FOUND, "Page not found", "There is nothing at this address.", None);
        };
        let method = req.method().clone();
        let get = method == Method::GET || method == Method::HEAD;
        let post = method == Method::POST;
        match route {
            Route::Root if get => redirect("/device"),
            Route::Health if get => misc::health(self, now).await,
            Route::DeviceCode if post => oauth::device_code(self, req, now).await,
            Route::Token if post => oauth::token(self, req).await,
            Route::TokenInfo if get => oauth::tokeninfo(self, req, now).await,
            Route::Revoke if post => oauth::revoke(self, req).await,
            Route::Introspect if post => oauth::introspect(self, req).await,
            Route::UserInfo if get || post => oauth::userinfo(self, req, now).await,
            Route::Authorize if get => authorize::authorize(self, req, now).await,
            Route::Authorize if post => authorize::decide(self, req).await,
            Route::Metadata | Route::OpenIdConfiguration if get => discovery::metadata(self),
            Route::Jwks if get => discovery::jwks(self),
            Route::Metrics if get => metrics::metrics_page(self, req, now).await,
            Route::Metadata | Route::OpenIdConfiguration | Route::Jwks if method == Method::OPTIONS => discovery::preflight(),
            Route::Login if get => web::login_page(self, req, now).await,
            Route::Login if post => web::login(self, req).await,
            Route::Logout if get => web::logout_page(self, req, now).await,
            Route::Logout if post => web::logout(self, req).await,
            Route::Device if get => web::device_page(self, req, now).await,
            Route::DeviceVerify if post => web::verify(self, req).await,
            Route::DeviceApprove if post => web::decide(self, req).await,
            Route::Asset if get => file
                .as_deref()
                .and_then(misc::asset)
                .unwrap_or_else(|| self.pages.error(StatusCode::NOT_FOUND, "Not found", "No such file.", None)),
            Route::Favicon if get => misc::asset("favicon.svg").unwrap_or_else(|| redirect("/assets/favicon.svg")),
            Route::Account if get => account::account(self, req, now).await,
            Route::AccountPassword if post => account::change_password(self, req).await,
            Route::AccountSessions if get => account::sessions_page(self, req, now).await,
            Route::AccountRevokeAll if post => account::revoke_all(self, req).await,
            Route::AccountSessionAction if post => account::session_action(self, req, id, action).await,
            Route::Admin if get => redirect("/admin/clients"),
            Route::AdminClients if get => admin::clients(self, req, now).await,
            Route::AdminClients if post => admin::create_client(self, req).await,
            Route::AdminClientNew if get => admin::new_client(self, req, now).await,
            Route::AdminClient if get => admin::edit_client(self, req, now, id).await,
            Route::AdminClient if post => admin::update_client(self, req, id).await,
            Route::AdminClientAction if post => admin::client_action(self, req, id, action).await,
            Route::AdminUsers if get => admin::users(self, req, now).await,
            Route::AdminUsers if post => admin::create_user(self, req).await,
            Route::AdminUserAction if post => admin::user_action(self, req, id, action).await,
            Route::AdminSessions if get => admin::sessions(self, req, now).await,
            Route::AdminSessionAction if post => admin::session_action(self, req, id, action).await,
            Route::AdminAudit if get => admin::audit(self, req, now).await,
            _ => self.method_not_allowed(route),
        }
    }

    fn method_not_allowed(&self, route: Route) -> Response {
        let allow = match route {
            Route::DeviceCode
            | Route::Token
            | Route::Revoke
            | Route::Introspect
            | Route::DeviceVerify
            | Route::DeviceApprove
            | Route::AccountPassword
            | Route::AccountRevokeAll
            | Route::AccountSessionAction
            | Route::AdminClientAction
            | Route::AdminUserAction
            | Route::AdminSessionAction => "POST",
            Route::Login | Route::Logout | Route::AdminClients | Route::AdminClient | Route::AdminUsers => "GET, HEAD, POST",
            Route::Metadata | Route::OpenIdConfiguration | Route::Jwks => "GET, HEAD, OPTIONS",
            Route::UserInfo | Route::Authorize => "GET, HEAD, POST",
            _ => "GET, HEAD",
        };
        let mut r = self.pages.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "This address does not accept that kind of request.",
            None,
        );
        r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        r
    }
}
