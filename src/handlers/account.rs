//! A signed-in person's own pages: the devices they authorized (revoke one or all) and their
//! password. Each handler parses, asks an actor, and renders.

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::directory::{DirectoryMsg, LoginError};
use authgate_actors::session::SessionMsg;
use authgate_actors::system::{ask, ask_within};
use authgate_actors::token::{AuthorizationStatus, AuthorizationView, TokenMsg};
use hyper::StatusCode;
use minijinja::context;
use serde::Serialize;

use crate::app::App;
use crate::handlers::web::{login_redirect, signed_in_form, viewer};
use crate::http::cookies::FLASH;
use crate::http::form;
use crate::http::guard::retry_after_secs;
use crate::http::response::{redirect, with_cookies, with_retry_after};
use crate::http::{Request, Response};
use crate::render::Viewer;

/// Rows per page of authorizations.
pub const PAGE_SIZE: usize = 50;
/// Passwords set here are at least this long.
pub const MIN_PASSWORD_LEN: usize = 8;
const MAX_PASSWORD_LEN: usize = 1024;

/// One authorization as the pages show it: the client's name from one snapshot (no lookup per
/// row).
#[derive(Serialize)]
pub struct Row {
    pub id: String,
    pub username: String,
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub authorized_at: u64,
    pub last_used_at: Option<u64>,
    pub expires_at: u64,
    pub status: AuthorizationStatus,
}

pub fn rows(app: &App, list: Vec<AuthorizationView>) -> Vec<Row> {
    let clients = app.actors.clients();
    list.into_iter()
        .map(|a| Row {
            client_name: clients.get(&a.client_id).map_or_else(|| a.client_id.clone(), |c| c.name.clone()),
            scopes: a.scope.split_whitespace().map(str::to_owned).collect(),
            id: a.id,
            username: a.username,
            client_id: a.client_id,
            authorized_at: a.authorized_at,
            last_used_at: a.last_used_at,
            expires_at: a.expires_at,
            status: a.status,
        })
        .collect()
}

/// The `?page=` of a listing (1-based), and how many pages `total` rows make.
pub fn paginate(req: &Request, total: usize) -> (usize, usize) {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = form::query(req)
        .first("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    (page, pages)
}

/// A redirect to `to` carrying a one-time message for the next page.
pub fn flash_redirect(app: &App, to: &str, message: &str) -> Response {
    with_cookies(
        redirect(to),
        [app.cookies.set(FLASH, message.to_owned(), std::time::Duration::from_secs(60))],
    )
}

/// The pending one-time message, if any (the page that shows it clears the cookie).
pub fn take_flash(app: &App, req: &Request) -> Option<String> {
    app.cookies.get(req.headers(), FLASH)
}

/// Renders `template`, clearing a shown flash message.
pub fn page_with_flash(app: &App, flash: Option<String>, template: &str, ctx: minijinja::Value) -> Response {
    let shown = flash.is_some();
    let ctx = context! { flash => flash, ..ctx };
    let page = app.pages.page(StatusCode::OK, template, ctx);
    if shown {
        with_cookies(page, [app.cookies.clear(FLASH)])
    } else {
        page
    }
}

async fn authorizations(app: &App, user_id: Option<String>, now: u64) -> Option<Vec<AuthorizationView>> {
    let token = app.actors.token().ok()?;
    ask(&token, |reply| TokenMsg::ListAuthorizations { user_id, now, reply }).await.ok()
}

pub fn busy(app: &App, v: Option<&Viewer>) -> Response {
    app.pages.error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "The server is busy or restarting a component. Try again in a moment.",
        v,
    )
}

/// `GET /account/sessions?page=N`
pub async fn sessions_page(app: &App, req: Request, now: u64) -> Response {
    let Some(v) = viewer(app, &req, now).await else {
        return login_redirect("/account/sessions");
    };
    let Some(list) = authorizations(app, Some(v.user_id.clone()), now).await else {
        return busy(app, Some(&v));
    };
    let active = list.iter().any(|a| a.status == AuthorizationStatus::Active);
    let (page, pages) = paginate(&req, list.len());
    let shown: Vec<AuthorizationView> = list.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "sessions",
        rows => rows(app, shown), page => page, pages => pages, active => active,
    };
    page_with_flash(app, take_flash(app, &req), "account_sessions.html", ctx)
}

/// `POST /account/sessions/{id}/revoke`: only the owner's own authorization; anyone else's is
/// "not found".
pub async fn revoke_one(app: &App, req: Request, id: String) -> Response {
    let ip = app.ip(&req);
    let (v, _, _) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(token) = app.actors.token() else {
        return busy(app, Some(&v));
    };
    let owner = Some(v.user_id.clone());
    let authorization_id = id.chars().take(64).collect::<String>();
    match ask(&token, |reply| TokenMsg::RevokeAuthorization {
        authorization_id,
        owner,
        reply,
    })
    .await
    {
        Ok(Ok(Some(a))) => {
            app.actors.audit(
                AuditEvent::new(EventKind::TokenRevoked, v.username.clone(), true)
                    .subject(v.username.clone())
                    .client(a.client_id.clone())
                    .ip(ip)
                    .detail(format!("authorization {} revoked by its owner", a.id)),
            );
            let name = app
                .actors
                .clients()
                .get(&a.client_id)
                .map_or_else(|| a.client_id.clone(), |c| c.name.clone());
            flash_redirect(app, "/account/sessions", &format!("Access for {name} was revoked."))
        }
        Ok(Ok(None)) => app.pages.error(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such device authorization on your account.",
            Some(&v),
        ),
        _ => busy(app, Some(&v)),
    }
}

/// `POST /account/sessions/revoke-all`
pub async fn revoke_all(app: &App, req: Request) -> Response {
    let ip = app.ip(&req);
    let (v, _, _) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(token) = app.actors.token() else {
        return busy(app, Some(&v));
    };
    let of = authgate_actors::token::Owner::User(v.user_id.clone());
    match ask(&token, |reply| TokenMsg::RevokeAll { of, reply }).await {
        Ok(Ok(n)) => {
            app.actors.audit(
                AuditEvent::new(EventKind::TokenRevoked, v.username.clone(), true)
                    .subject(v.username.clone())
                    .ip(ip)
                    .detail(format!("all {n} authorizations revoked by their owner")),
            );
            flash_redirect(app, "/account/sessions", "Access for all your devices was revoked.")
        }
        _ => busy(app, Some(&v)),
    }
}

fn account_page(app: &App, v: &Viewer, email: Option<String>, flash: Option<String>, error: Option<&str>, status: StatusCode) -> Response {
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "account",
        local => v.local_password, email => email, error => error,
    };
    if status == StatusCode::OK {
        page_with_flash(app, flash, "account.html", ctx)
    } else {
        app.pages.page(status, "account.html", ctx)
    }
}

async fn email_of(app: &App, v: &Viewer) -> Option<String> {
    let dir = app.actors.directory().ok()?;
    let id = v.user_id.clone();
    ask(&dir, |reply| DirectoryMsg::GetUser { id, reply }).await.ok()??.email
}

/// `GET /account`
pub async fn account(app: &App, req: Request, now: u64) -> Response {
    let Some(v) = viewer(app, &req, now).await else {
        return login_redirect("/account");
    };
    let email = email_of(app, &v).await;
    account_page(app, &v, email, take_flash(app, &req), None, StatusCode::OK)
}

/// `POST /account/password`: the current password, then the new one; every other browser
/// session of the user ends.
pub async fn change_password(app: &App, req: Request) -> Response {
    let ip = app.ip(&req);
    let (v, form, _) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let fail = |msg: &str, status| account_page(app, &v, None, None, Some(msg), status);
    if !v.local_password {
        return fail(
            "Your password is managed by your organisation's sign-in service.",
            StatusCode::BAD_REQUEST,
        );
    }
    let current = form.first("current_password").unwrap_or("").to_owned();
    let new = form.first("new_password").unwrap_or("").to_owned();
    if new.chars().count() < MIN_PASSWORD_LEN || new.len() > MAX_PASSWORD_LEN {
        return fail("The new password must be 8 to 1024 characters.", StatusCode::BAD_REQUEST);
    }
    // The current password is checked under the same per-username throttle as sign-in, so a
    // stolen session cannot be used to guess it.
    let (now, user_key) = (authgate_actors::now_ms(), v.username.to_lowercase());
    if let Err(wait) = app.guard.login_user.hit(&user_key, now) {
        let secs = retry_after_secs(wait);
        let message = format!("Too many wrong passwords. Try again in {secs} seconds.");
        return with_retry_after(fail(&message, StatusCode::TOO_MANY_REQUESTS), secs);
    }
    let Ok(dir) = app.actors.directory() else {
        app.guard.login_user.forgive(&user_key, now);
        return busy(app, Some(&v));
    };
    let (username, password) = (v.username.clone(), current);
    let checked = ask_within(&dir, app.settings.login_wait(), |reply| DirectoryMsg::Authenticate {
        username,
        password,
        reply,
    })
    .await;
    match checked {
        Ok(Ok(_)) => app.guard.login_user.reset(&user_key),
        Ok(Err(LoginError::Busy)) | Err(_) => {
            app.guard.login_user.forgive(&user_key, now);
            return busy(app, Some(&v));
        }
        Ok(Err(_)) => {
            app.actors.audit(
                AuditEvent::new(EventKind::PasswordChanged, v.username.clone(), false)
                    .subject(v.username.clone())
                    .ip(ip)
                    .detail("wrong current password"),
            );
            return fail("The current password is not correct.", StatusCode::UNAUTHORIZED);
        }
    }
    let Ok(password_hash) = authgate_actors::password::hash(new).await else {
        return busy(app, Some(&v));
    };
    let username = v.username.clone();
    match ask(&dir, |reply| DirectoryMsg::SetPassword {
        username,
        password_hash,
        reply,
    })
    .await
    {
        Ok(Ok(())) => {}
        _ => return busy(app, Some(&v)),
    }
    if let Ok(sessions) = app.actors.session() {
        let (user_id, keep) = (v.user_id.clone(), Some(v.session_id.clone()));
        let _ = ask(&sessions, |reply| SessionMsg::DestroyForUser { user_id, keep, reply }).await;
    }
    app.actors.audit(
        AuditEvent::new(EventKind::PasswordChanged, v.username.clone(), true)
            .subject(v.username.clone())
            .ip(ip),
    );
    flash_redirect(
        app,
        "/account",
        "Your password was changed. Your other browser sessions were signed out.",
    )
}
