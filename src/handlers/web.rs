//! The pages people use: sign in and out, enter a device's code, approve or deny it.

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::crypto::{password, secret};
use authgate_actors::device::Decision;
use authgate_actors::device::{CodeError, DeviceMsg};
use authgate_actors::directory::{AuthSource, DirectoryMsg, LoginError, UserRef};
use authgate_actors::session::SessionMsg;
use authgate_actors::time::Millis;
use authgate_actors::token::{MAX_DEVICE_NAME, device_name};
use hyper::StatusCode;
use minijinja::context;

use crate::app::App;
use crate::http::cookies::{LOGIN_CSRF, SESSION};
use crate::http::form::{self, BodyError, Form};
use crate::http::guard::{Origins, compare_origins, retry_after_secs, throttle_key};
use crate::http::response::{redirect, with_cookies, with_retry_after};
use crate::http::{Request, Response};
use crate::render::Viewer;

/// How long a sign-in form stays usable.
const LOGIN_FORM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);

/// The signed-in person behind the request's cookie: a live session of a user who still
/// exists and is not disabled.
pub(crate) async fn viewer(app: &App, req: &Request, now: Millis) -> Option<Viewer> {
    let id = app.cookies.get(req.headers(), SESSION)?;
    let probe = id.clone();
    let session = app
        .actors
        .session()
        .ask(|reply| SessionMsg::Get { id: probe, now, reply })
        .await
        .ok()??;
    let who = UserRef::Id(session.user_id.clone());
    let user = app
        .actors
        .directory()
        .ask(|reply| DirectoryMsg::GetUser { who, reply })
        .await
        .ok()??;
    if user.disabled {
        return None;
    }
    Some(Viewer {
        session_id: id,
        user_id: user.id,
        username: user.username,
        csrf_token: session.csrf_token,
        is_admin: user.is_admin,
        local_password: user.auth_source == AuthSource::Local,
        signed_in_at_ms: session.signed_in_at_ms,
    })
}

fn user_ctx(s: &Viewer) -> minijinja::Value {
    s.ctx()
}

/// Only a local path may follow sign-in: no scheme, no `//host`, no backslash tricks.
pub fn safe_next(next: Option<&str>) -> Option<&str> {
    let n = next?;
    let local = n.starts_with('/')
        && !n.starts_with("//")
        && !n.starts_with("/\\")
        && !n.chars().any(|c| c.is_control() || c == '\\')
        && n.len() <= 2048;
    local.then_some(n)
}

pub(crate) fn login_redirect(next: &str) -> Response {
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    redirect(&format!("/login?next={encoded}"))
}

/// To the sign-in form even when signed in, then on to `next`.
pub(crate) fn reauth_redirect(next: &str) -> Response {
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    redirect(&format!("/login?reauth=1&next={encoded}"))
}

pub(crate) fn body_error_page(app: &App, e: &BodyError) -> Response {
    let status = match e {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        BodyError::NotAForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::Broken => StatusCode::BAD_REQUEST,
    };
    app.pages.error(status, "Bad request", &e.to_string(), None)
}

pub(crate) fn csrf_failure(app: &App, session: Option<&Viewer>) -> Response {
    app.pages.error(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form is no longer valid. Go back, reload the page and try again.",
        session,
    )
}

/// `GET /login`
pub async fn login_page(app: &App, req: Request, now: Millis) -> Response {
    let query = form::query(&req);
    let next = safe_next(query.first("next")).unwrap_or("/device").to_owned();
    // `reauth=1`: an application asked for a fresh sign-in (OpenID Connect `prompt=login`,
    // `max_age`), so the form is shown even to someone signed in.
    let again = query.first("reauth") == Some("1");
    if !again && viewer(app, &req, now).await.is_some() {
        return redirect(&next);
    }
    let csrf = secret::random_token(24);
    let cookie = app.cookies.set(LOGIN_CSRF, csrf.clone(), LOGIN_FORM_LIFETIME);
    let page = app.pages.page(
        StatusCode::OK,
        "login.html",
        context! { csrf_token => csrf, next => next, again => again },
    );
    with_cookies(page, [cookie])
}

/// `POST /login`
pub async fn login(app: &App, req: Request) -> Response {
    let cookie_csrf = app.cookies.get(req.headers(), LOGIN_CSRF);
    let old_session = app.cookies.get(req.headers(), SESSION);
    let ip = app.ip(&req);
    let form = match form::read_form(req).await {
        Ok(f) => f,
        Err(e) => return body_error_page(app, &e),
    };
    let now = crate::http::request_time();
    let next = safe_next(form.first("next")).unwrap_or("/device").to_owned();
    let csrf_ok = matches!((&cookie_csrf, form.first("csrf_token")), (Some(c), Some(f)) if secret::ct_eq(c, f));
    if !csrf_ok {
        return csrf_failure(app, None);
    }
    let username = form.first("username").unwrap_or("").trim().to_owned();
    let password = form.first("password").unwrap_or("").to_owned();
    let failed = |app: &App, message: &str, status: StatusCode| {
        app.pages.page(
            status,
            "login.html",
            context! { csrf_token => cookie_csrf.clone(), next => next.clone(), username => username.clone(), error => message },
        )
    };
    if username.is_empty() || password.is_empty() || username.len() > 256 || password.len() > password::MAX_BYTES {
        return failed(app, &LoginError::Invalid.to_string(), StatusCode::UNAUTHORIZED);
    }
    // Throttled per typed username (whether or not it exists) and per address. The attempt is
    // counted before the password check, so concurrent attempts cannot slip past a lockout;
    // a refused attempt is refused the same way for every name, before any password check.
    let user_key = username.to_lowercase();
    let ip_key = throttle_key(ip.as_deref().unwrap_or_default());
    let g = &app.guard;
    let actors = &app.actors;
    let counted = match g.login_user.hit_everywhere(actors, LOGIN_USER, &user_key, now).await {
        Ok(()) => g
            .login_ip
            .hit_everywhere(actors, LOGIN_IP, &ip_key, now)
            .await
            .inspect_err(|_| g.login_user.forgive_everywhere(actors, LOGIN_USER, &user_key, now)),
        Err(wait) => Err(wait),
    };
    if let Err(wait) = counted {
        tracing::info!(username = %username, "sign-in refused: locked out after repeated failures");
        let secs = retry_after_secs(wait);
        let message = format!("Too many failed sign-ins. Try again in {secs} seconds.");
        return with_retry_after(failed(app, &message, StatusCode::TOO_MANY_REQUESTS), secs);
    }
    let (u, p) = (username.clone(), password);
    let user = app
        .actors
        .directory()
        .ask_within(app.settings.login_wait(), |reply| DirectoryMsg::Authenticate {
            username: u,
            password: p,
            now,
            reply,
        })
        .await;
    let user = match user {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => {
            tracing::info!(username = %username, reason = ?e, "sign-in failed");
            if matches!(e, LoginError::Busy | LoginError::Unavailable) {
                // Not the person's fault: the attempt does not count.
                g.login_user.forgive_everywhere(actors, LOGIN_USER, &user_key, now);
                g.login_ip.forgive_everywhere(actors, LOGIN_IP, &ip_key, now);
            }
            app.actors.audit(
                AuditEvent::new(now, EventKind::LoginFailed, username.clone(), false)
                    .ip(ip)
                    .detail(format!("{e:?}").to_lowercase()),
            );
            let status = match e {
                LoginError::Invalid => StatusCode::UNAUTHORIZED,
                LoginError::Conflict => StatusCode::CONFLICT,
                LoginError::Busy | LoginError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            return failed(app, &e.to_string(), status);
        }
        Err(_) => {
            g.login_user.forgive_everywhere(actors, LOGIN_USER, &user_key, now);
            g.login_ip.forgive_everywhere(actors, LOGIN_IP, &ip_key, now);
            return failed(app, "The server is busy. Please try again.", StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    g.login_user.reset_everywhere(actors, LOGIN_USER, &user_key);
    g.login_ip.forgive_everywhere(actors, LOGIN_IP, &ip_key, now);
    let sessions = app.actors.session();
    // A fresh session id at every sign-in (no fixation); the old session ends.
    if let Some(old) = old_session {
        let _ = sessions.ask(|reply| SessionMsg::Destroy { id: old, reply }).await;
    }
    let (user_id, name) = (user.id.clone(), user.username.clone());
    match sessions
        .ask(|reply| SessionMsg::Create {
            user_id,
            username: name,
            now,
            reply,
        })
        .await
    {
        Ok(Ok(s)) => {
            tracing::info!(username = %user.username, "signed in");
            app.actors
                .audit(AuditEvent::new(now, EventKind::LoginSucceeded, user.username.clone(), true).ip(ip));
            let set = app.cookies.set(SESSION, s.id, app.settings.session_max_age);
            with_cookies(redirect(&next), [set, app.cookies.clear(LOGIN_CSRF)])
        }
        _ => failed(
            app,
            "The server could not start your session. Please try again.",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// `GET /logout`: from AuthGate's own pages (the browser says `Sec-Fetch-Site: same-origin`,
/// or the `Origin` or `Referer` is this server) it signs out at once; from anywhere else it
/// asks to confirm, so that a link or an image elsewhere cannot sign anyone out.
pub async fn logout_page(app: &App, req: Request, now: Millis) -> Response {
    let Some(s) = viewer(app, &req, now).await else {
        return redirect("/login");
    };
    if same_origin(app, &req) {
        let ip = app.ip(&req);
        return end_session(app, &s, ip, now).await;
    }
    app.pages.page(
        StatusCode::OK,
        "logout.html",
        context! { user => user_ctx(&s), csrf_token => s.csrf_token.clone() },
    )
}

/// Whether the browser says the request came from one of this server's own pages. Browsers
/// set `Sec-Fetch-Site` themselves (a page cannot forge it); older ones send `Origin` or
/// `Referer`, whose host must be `BASE_URL`'s or the one the request was sent to (`Host`).
fn same_origin(app: &App, req: &Request) -> bool {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin";
    }
    // `scheme://host[:port]` of a URL, without what follows.
    let authority = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        Some(rest.split(['/', '?', '#']).next().unwrap_or_default().to_ascii_lowercase())
    };
    let ours = |url: &str| {
        authority(url).is_some_and(|a| {
            authority(&app.settings.base_url).as_deref() == Some(a.as_str()) || header("host").is_some_and(|h| h.eq_ignore_ascii_case(&a))
        })
    };
    match (header("origin"), header("referer")) {
        (Some(origin), _) => ours(origin),
        (None, Some(referer)) => ours(referer),
        (None, None) => false,
    }
}

/// Ends the session `s` and sends the browser to the sign-in page.
async fn end_session(app: &App, s: &Viewer, ip: Option<String>, now: Millis) -> Response {
    let id = s.session_id.clone();
    let _ = app.actors.session().ask(|reply| SessionMsg::Destroy { id, reply }).await;
    tracing::info!(username = %s.username, "signed out");
    app.actors
        .audit(AuditEvent::new(now, EventKind::Logout, s.username.clone(), true).ip(ip));
    with_cookies(redirect("/login"), [app.cookies.clear(SESSION)])
}

/// `POST /logout` with the session's CSRF token: ends the session.
pub async fn logout(app: &App, req: Request) -> Response {
    let ip = app.ip(&req);
    let now = crate::http::request_time();
    let session = match viewer(app, &req, now).await {
        Some(found) => found,
        None => return with_cookies(redirect("/login"), [app.cookies.clear(SESSION)]),
    };
    let form = match form::read_form(req).await {
        Ok(f) => f,
        Err(e) => return body_error_page(app, &e),
    };
    if !form.first("csrf_token").is_some_and(|t| secret::ct_eq(t, &session.csrf_token)) {
        return csrf_failure(app, Some(&session));
    }
    end_session(app, &session, ip, now).await
}

fn device_form(app: &App, status: StatusCode, s: &Viewer, user_code: &str, error: Option<&str>) -> Response {
    app.pages.page(
        status,
        "device.html",
        context! { user => user_ctx(s), csrf_token => s.csrf_token.clone(), user_code => user_code, error => error, nav => "device" },
    )
}

/// `GET /device`, optionally `?user_code=` (from `verification_uri_complete`).
pub async fn device_page(app: &App, req: Request, now: Millis) -> Response {
    let query = form::query(&req);
    let code = query.first("user_code").filter(|c| c.len() <= 32).unwrap_or("").to_owned();
    let Some(s) = viewer(app, &req, now).await else {
        let next = if code.is_empty() {
            "/device".to_owned()
        } else {
            format!(
                "/device?user_code={}",
                form_urlencoded::byte_serialize(code.as_bytes()).collect::<String>()
            )
        };
        return login_redirect(&next);
    };
    if code.is_empty() {
        return device_form(app, StatusCode::OK, &s, "", None);
    }
    // From `verification_uri_complete`: straight to the approval page (the code is shown
    // there for comparison; nothing is decided without the Approve press).
    let ip = app.ip(&req);
    confirm_code(app, &s, ip.as_deref(), now, &code, None).await
}

/// A signed-in POST from our own forms: the session and its CSRF token both check out.
/// Returns the time the request was complete, too.
pub(crate) async fn signed_in_form(app: &App, req: Request) -> Result<(Viewer, Form, Millis), Response> {
    let Some(s) = viewer(app, &req, crate::http::request_time()).await else {
        return Err(login_redirect("/device"));
    };
    let form = form::read_form(req).await.map_err(|e| body_error_page(app, &e))?;
    if !form.first("csrf_token").is_some_and(|t| secret::ct_eq(t, &s.csrf_token)) {
        return Err(csrf_failure(app, Some(&s)));
    }
    Ok((s, form, crate::http::request_time()))
}

fn code_error_status(e: &CodeError) -> StatusCode {
    match e {
        CodeError::Store => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A client's display name, from the directory's published snapshot.
fn client_name(app: &App, client_id: &str) -> String {
    app.actors
        .clients()
        .get(client_id)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| client_id.to_owned())
}

/// `POST /device/verify`: the typed code → the confirmation page (RFC 8628 §5.4).
pub async fn verify(app: &App, req: Request) -> Response {
    let ip = app.ip(&req);
    let (s, form, now) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let typed = form.first("user_code").unwrap_or("");
    confirm_code(app, &s, ip.as_deref(), now, typed, None).await
}

/// A typed (or linked) user code → the approval page, or the code form with what is wrong.
/// Counted against the code-entry limits. `error` is shown on the approval page (a name that
/// could not be used).
async fn confirm_code(app: &App, s: &Viewer, ip: Option<&str>, now: Millis, typed: &str, error: Option<&str>) -> Response {
    let shown = if typed.chars().count() <= 32 { typed } else { "" };
    if let Some(refused) = code_entry_refused(app, s, ip, now, shown).await {
        return refused;
    }
    let Some(code) = secret::normalize_user_code(typed) else {
        code_entry_failed(app, now).await;
        return device_form(app, StatusCode::BAD_REQUEST, s, shown, Some(&CodeError::Unknown.to_string()));
    };
    let looked_up = app
        .actors
        .device()
        .ask(|reply| DeviceMsg::Lookup {
            user_code: code,
            now,
            reply,
        })
        .await
        .unwrap_or(Err(CodeError::Store));
    match looked_up {
        Ok(view) => {
            code_entry_succeeded(app, s, ip, now);
            let name = client_name(app, &view.client_id);
            let scopes: Vec<&str> = view.scope.split_whitespace().collect();
            // Where the code was asked for, and whether that is where the person is now:
            // a code sent from elsewhere is how device-code phishing works.
            let origins = compare_origins(view.requested_from.as_deref(), ip);
            let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
            app.pages.page(
                status,
                "confirm.html",
                context! {
                    user => user_ctx(s), csrf_token => s.csrf_token.clone(), user_code => view.user_code,
                    client_name => name, client_id => view.client_id, scopes => scopes,
                    requested_ago => crate::render::ago(now.saturating_sub(view.requested_at_ms)),
                    requested_at => view.requested_at_ms / 1000,
                    requested_from => view.requested_from, approver_ip => ip,
                    elsewhere => origins == Origins::Different, uncomparable => origins == Origins::Unknown,
                    max_name => MAX_DEVICE_NAME, error => error,
                },
            )
        }
        Err(e) => {
            if matches!(e, CodeError::Unknown) {
                code_entry_failed(app, now).await;
            } else {
                code_entry_succeeded(app, s, ip, now);
            }
            device_form(app, code_error_status(&e), s, shown, Some(&e.to_string()))
        }
    }
}

/// RFC 8628 §5.1: code submissions are limited per browser session and per address (counted
/// before the lookup, so concurrent guesses cannot slip past a lockout; a right code is taken
/// back), and wrong codes from everyone together per minute; guessing a live code within its
/// lifetime is hopeless.
async fn code_entry_refused(app: &App, s: &Viewer, ip: Option<&str>, now: Millis, shown: &str) -> Option<Response> {
    let (g, actors) = (&app.guard, &app.actors);
    let ip_key = throttle_key(ip.unwrap_or_default());
    let counted = match g.code_global.check("all", now) {
        Ok(()) => match g.code_session.hit_everywhere(actors, CODE_SESSION, &s.session_id, now).await {
            Ok(()) => g
                .code_ip
                .hit_everywhere(actors, CODE_IP, &ip_key, now)
                .await
                .inspect_err(|_| g.code_session.forgive_everywhere(actors, CODE_SESSION, &s.session_id, now)),
            Err(wait) => Err(wait),
        },
        Err(wait) => Err(wait),
    };
    let wait = counted.err()?;
    let secs = retry_after_secs(wait);
    let message = format!("Too many wrong codes. Try again in {secs} seconds.");
    Some(with_retry_after(
        device_form(app, StatusCode::TOO_MANY_REQUESTS, s, shown, Some(&message)),
        secs,
    ))
}

/// A wrong code: it counts toward the global limit (the session and address counted it already).
async fn code_entry_failed(app: &App, now: Millis) {
    let _ = app.guard.code_global.hit_everywhere(&app.actors, CODE_GLOBAL, "all", now).await;
}

/// A right code: the session's and address's count of it is taken back.
fn code_entry_succeeded(app: &App, s: &Viewer, ip: Option<&str>, now: Millis) {
    let (g, actors) = (&app.guard, &app.actors);
    g.code_session.forgive_everywhere(actors, CODE_SESSION, &s.session_id, now);
    g.code_ip
        .forgive_everywhere(actors, CODE_IP, &throttle_key(ip.unwrap_or_default()), now);
}

/// The names of the throttles whose counts a cluster shares (see `Throttle::hit_everywhere`).
const LOGIN_USER: &str = "login-user";
const LOGIN_IP: &str = "login-ip";
const CODE_SESSION: &str = "code-session";
const CODE_IP: &str = "code-ip";
const CODE_GLOBAL: &str = "code-global";

/// `POST /device/approve` with `action=approve|deny`.
pub async fn decide(app: &App, req: Request) -> Response {
    let ip = app.ip(&req);
    let (s, form, now) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let approve = match form.first("action") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return app
                .pages
                .error(StatusCode::BAD_REQUEST, "Bad request", "Choose Approve or Deny.", Some(&s));
        }
    };
    let typed = form.first("user_code").unwrap_or("");
    let Some(code) = secret::normalize_user_code(typed) else {
        return device_form(app, StatusCode::BAD_REQUEST, &s, "", Some(&CodeError::Unknown.to_string()));
    };
    // The device's name: blank means the client's name (filled in once the code is known).
    let name = match form.first("device_name").map(str::trim).filter(|n| !n.is_empty()) {
        None => None,
        Some(n) => match device_name(n) {
            Ok(n) => Some(n),
            Err(e) if approve => return confirm_code(app, &s, ip.as_deref(), now, typed, Some(e)).await,
            Err(_) => None,
        },
    };
    let given = name.clone();
    let decision = if approve {
        Decision::Approve {
            user_id: s.user_id.clone(),
            username: s.username.clone(),
            name,
            auth_time: Some(s.signed_in_at_ms / 1000),
        }
    } else {
        Decision::Deny {
            user_id: s.user_id.clone(),
        }
    };
    let decided = app
        .actors
        .device()
        .ask(|reply| DeviceMsg::Decide {
            user_code: code,
            decision,
            now,
            reply,
        })
        .await
        .unwrap_or(Err(CodeError::Store));
    match decided {
        Ok(view) => {
            let name = client_name(app, &view.client_id);
            let device = approve.then(|| given.unwrap_or_else(|| name.clone()));
            tracing::info!(username = %s.username, client_id = %view.client_id, approved = approve, user_code = %secret::redact_user_code(&code), "device authorization decided");
            let kind = if approve {
                EventKind::DeviceApproved
            } else {
                EventKind::DeviceDenied
            };
            let mut event = AuditEvent::new(now, kind, s.username.clone(), true)
                .subject(s.username.clone())
                .client(view.client_id.clone())
                .ip(ip);
            if let Some(device) = &device {
                event = event.detail(format!("device \"{device}\""));
            }
            app.actors.audit(event);
            let outcome = if approve { "approved" } else { "denied" };
            app.pages.page(
                StatusCode::OK,
                "result.html",
                context! { user => user_ctx(&s), csrf_token => s.csrf_token.clone(), outcome => outcome, client_name => name },
            )
        }
        Err(e) => device_form(app, code_error_status(&e), &s, "", Some(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_may_follow_sign_in() {
        assert_eq!(safe_next(Some("/device?user_code=BCDF-GHJK")), Some("/device?user_code=BCDF-GHJK"));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "evil",
            "/\\/x",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
    }
}

/// Property test: whatever `next=` says, sign-in only ever sends the browser to a local path.
#[cfg(test)]
mod fuzz {
    use super::safe_next;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn next_is_always_local(s in "\\PC{0,100}", tail in "[/\\\\a-z.:]{0,20}") {
            for candidate in [s.clone(), format!("/{tail}"), format!("//{tail}"), format!("/\\{tail}")] {
                if let Some(n) = safe_next(Some(&candidate)) {
                    prop_assert!(n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'));
                }
            }
        }
    }
}
