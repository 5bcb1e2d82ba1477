//! A signed-in person's own pages: the devices they authorized (revoke one or all) and their
//! password. Each handler parses, asks an actor, and renders.

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::crypto::password::{self, NewPasswordError};
use authgate_actors::directory::{DirectoryError, DirectoryMsg, UserRef};
use authgate_actors::runtime::FLOW_TIMEOUT;
use authgate_actors::time::Millis;
use authgate_actors::token::{
    Amendment, AuthorizationPage, AuthorizationQuery, AuthorizationStatus, AuthorizationView, Owner, Pauser, TokenMsg, device_name,
};
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

/// Rows per page of authorizations and audit events.
pub const PAGE_SIZE: usize = 50;

/// One authorization as the pages show it: the client's name from one snapshot (no lookup per
/// row).
#[derive(Serialize)]
pub struct Row {
    pub id: String,
    /// The device's name: as given, else the client's name.
    pub name: String,
    pub username: String,
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub authorized_at: u64,
    pub last_used_at: Option<u64>,
    pub expires_at: u64,
    pub status: AuthorizationStatus,
    /// Who disabled it (`owner`, `admin`, `client`), while disabled.
    pub disabled_by: Option<&'static str>,
}

pub fn rows(app: &App, list: Vec<AuthorizationView>) -> Vec<Row> {
    let clients = app.actors.clients();
    list.into_iter()
        .map(|a| Row {
            client_name: clients.get(&a.client_id).map_or_else(|| a.client_id.clone(), |c| c.name.clone()),
            name: device_label(app, &a),
            scopes: a.scope.split_whitespace().map(str::to_owned).collect(),
            username: owner_label(&a),
            id: a.id,
            client_id: a.client_id,
            authorized_at: a.authorized_at,
            last_used_at: a.last_used_at,
            expires_at: a.expires_at,
            status: a.status,
            disabled_by: a.disabled_by.map(|p| p.name()),
        })
        .collect()
}

/// Whose an authorization is: its user's name, or for client credentials (no user) the
/// client's id.
pub fn owner_label(a: &AuthorizationView) -> String {
    if a.username.is_empty() {
        format!("client:{}", a.client_id)
    } else {
        a.username.clone()
    }
}

/// What a device is called: the name given to it, else its client's name.
pub fn device_label(app: &App, a: &AuthorizationView) -> String {
    a.name.clone().unwrap_or_else(|| {
        app.actors
            .clients()
            .get(&a.client_id)
            .map_or_else(|| a.client_id.clone(), |c| c.name.clone())
    })
}

/// Disables, enables or renames one authorization (`owner`'s, or anyone's for an admin).
pub async fn amend(app: &App, id: &str, owner: Option<String>, change: Amendment, now: Millis) -> Result<Option<AuthorizationView>, ()> {
    let authorization_id = id.chars().take(64).collect::<String>();
    match app
        .actors
        .token()
        .ask(|reply| TokenMsg::AmendAuthorization {
            authorization_id,
            owner,
            change,
            now,
            reply,
        })
        .await
    {
        Ok(Ok(found)) => Ok(found),
        _ => Err(()),
    }
}

/// The audit kind and the words for an amendment: (kind, past tense).
pub fn amendment_words(change: &Amendment) -> (EventKind, &'static str) {
    match change {
        Amendment::Disable(_) => (EventKind::TokenDisabled, "disabled"),
        Amendment::Enable(_) => (EventKind::TokenEnabled, "enabled"),
        Amendment::Rename(_) => (EventKind::DeviceRenamed, "renamed"),
    }
}

/// Why `change` did nothing to `a` (as it was before), if it did nothing: said to the person,
/// and not audited.
pub fn amendment_refused(a: &AuthorizationView, change: &Amendment, device: &str) -> Option<String> {
    match change {
        Amendment::Disable(by)
            if a.status != AuthorizationStatus::Active && !(a.status == AuthorizationStatus::Disabled && by.takes_over(a.disabled_by)) =>
        {
            Some(format!("{device} is {}: there is nothing to disable.", a.status.name()))
        }
        Amendment::Enable(_) if a.status != AuthorizationStatus::Disabled => Some(format!("{device} is not disabled.")),
        Amendment::Enable(by) if !by.may_enable(a.disabled_by) => Some(format!(
            "{device} was disabled by an administrator; only an administrator can enable it."
        )),
        Amendment::Rename(_) if a.status == AuthorizationStatus::Revoked => Some(format!("{device} is revoked.")),
        _ => None,
    }
}

/// `POST /account/sessions/{id}/{action}`: `revoke`, `disable`, `enable`, or `rename` (with
/// `name`); only the owner's own authorization, anyone else's is "not found".
pub async fn session_action(app: &App, req: Request, id: String, action: String) -> Response {
    if action == "revoke" {
        return revoke_one(app, req, id).await;
    }
    let ip = app.ip(&req);
    let (v, form, now) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let change = match action.as_str() {
        "disable" => Amendment::Disable(Pauser::Owner),
        "enable" => Amendment::Enable(Pauser::Owner),
        "rename" => match device_name(form.first("name").unwrap_or("")) {
            Ok(name) => Amendment::Rename(name),
            Err(rule) => return app.pages.error(StatusCode::BAD_REQUEST, "Name not changed", rule, Some(&v)),
        },
        _ => {
            return app
                .pages
                .error(StatusCode::NOT_FOUND, "Not found", "There is no such action.", Some(&v));
        }
    };
    let (kind, done) = amendment_words(&change);
    let new_name = match &change {
        Amendment::Rename(n) => Some(n.clone()),
        _ => None,
    };
    match amend(app, &id, Some(v.user_id.clone()), change.clone(), now).await {
        Ok(Some(a)) => {
            let was = device_label(app, &a);
            if let Some(refused) = amendment_refused(&a, &change, &was) {
                return flash_redirect(app, "/account/sessions", &refused);
            }
            let detail = match &new_name {
                Some(n) => format!("authorization {} (device \"{was}\") renamed \"{n}\" by its owner", a.id),
                None => format!("authorization {} (device \"{was}\") {done} by its owner", a.id),
            };
            app.actors.audit(
                AuditEvent::new(now, kind, v.username.clone(), true)
                    .subject(v.username.clone())
                    .client(a.client_id.clone())
                    .ip(ip)
                    .detail(detail),
            );
            let message = match new_name {
                Some(n) => format!("{was} is now called {n}."),
                None => format!("{was} was {done}."),
            };
            flash_redirect(app, "/account/sessions", &message)
        }
        Ok(None) => app.pages.error(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such device authorization on your account.",
            Some(&v),
        ),
        Err(()) => busy(app, Some(&v)),
    }
}

/// The `?page=` a listing asks for (1-based; the owner of the list clamps it).
pub fn requested_page(req: &Request) -> usize {
    form::query(req).first("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1)
}

/// One page of the authorizations `query` selects, paged by the token actor.
pub async fn authorization_page(app: &App, query: AuthorizationQuery, page: usize, now: Millis) -> Option<AuthorizationPage> {
    app.actors
        .token()
        .ask(|reply| TokenMsg::PageAuthorizations {
            query,
            page,
            per_page: PAGE_SIZE,
            now,
            reply,
        })
        .await
        .ok()
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

pub fn busy(app: &App, v: Option<&Viewer>) -> Response {
    app.pages.error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "The server is busy or restarting a component. Try again in a moment.",
        v,
    )
}

/// `GET /account/sessions?page=N`
pub async fn sessions_page(app: &App, req: Request, now: Millis) -> Response {
    let Some(v) = viewer(app, &req, now).await else {
        return login_redirect("/account/sessions");
    };
    let query = AuthorizationQuery {
        user_id: Some(v.user_id.clone()),
        ..Default::default()
    };
    let Some(p) = authorization_page(app, query, requested_page(&req), now).await else {
        return busy(app, Some(&v));
    };
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "sessions",
        rows => rows(app, p.rows), page => p.page, pages => p.pages, active => p.live > 0,
    };
    page_with_flash(app, take_flash(app, &req), "account_sessions.html", ctx)
}

/// `POST /account/sessions/{id}/revoke`: only the owner's own authorization; anyone else's is
/// "not found".
async fn revoke_one(app: &App, req: Request, id: String) -> Response {
    let ip = app.ip(&req);
    let (v, _, now) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let owner = Some(v.user_id.clone());
    let authorization_id = id.chars().take(64).collect::<String>();
    match app
        .actors
        .token()
        .ask(|reply| TokenMsg::RevokeAuthorization {
            authorization_id,
            owner,
            now,
            reply,
        })
        .await
    {
        Ok(Ok(Some(a))) => {
            app.actors.audit(
                AuditEvent::new(now, EventKind::TokenRevoked, v.username.clone(), true)
                    .subject(v.username.clone())
                    .client(a.client_id.clone())
                    .ip(ip)
                    .detail(format!(
                        "authorization {} (device \"{}\") revoked by its owner",
                        a.id,
                        device_label(app, &a)
                    )),
            );
            let name = device_label(app, &a);
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
    let (v, _, now) = match signed_in_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let of = Owner::User(v.user_id.clone());
    match app.actors.token().ask(|reply| TokenMsg::RevokeAll { of, now, reply }).await {
        Ok(Ok(n)) => {
            app.actors.audit(
                AuditEvent::new(now, EventKind::TokenRevoked, v.username.clone(), true)
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
    let who = UserRef::Id(v.user_id.clone());
    app.actors
        .directory()
        .ask(|reply| DirectoryMsg::GetUser { who, reply })
        .await
        .ok()??
        .email
}

/// `GET /account`
pub async fn account(app: &App, req: Request, now: Millis) -> Response {
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
    let (v, form, now) = match signed_in_form(app, req).await {
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
    if !password::keeps_rule(&new) {
        return fail(&NewPasswordError::Rule.to_string(), StatusCode::BAD_REQUEST);
    }
    // The current password is checked under the same per-username throttle as sign-in, so a
    // stolen session cannot be used to guess it.
    let user_key = v.username.to_lowercase();
    if let Err(wait) = app.guard.login_user.hit(&user_key, now) {
        let secs = retry_after_secs(wait);
        let message = format!("Too many wrong passwords. Try again in {secs} seconds.");
        return with_retry_after(fail(&message, StatusCode::TOO_MANY_REQUESTS), secs);
    }
    let (username, keep_session) = (v.username.clone(), v.session_id.clone());
    let changed = app
        .actors
        .directory()
        .ask_within(FLOW_TIMEOUT, |reply| DirectoryMsg::ChangePassword {
            username,
            current,
            new,
            keep_session,
            now,
            reply,
        })
        .await
        .unwrap_or(Err(DirectoryError::Busy));
    match changed {
        Ok(()) => app.guard.login_user.reset(&user_key),
        Err(DirectoryError::WrongPassword) => {
            app.actors.audit(
                AuditEvent::new(now, EventKind::PasswordChanged, v.username.clone(), false)
                    .subject(v.username.clone())
                    .ip(ip)
                    .detail("wrong current password"),
            );
            return fail(&DirectoryError::WrongPassword.to_string(), StatusCode::UNAUTHORIZED);
        }
        Err(_) => {
            app.guard.login_user.forgive(&user_key, now);
            return busy(app, Some(&v));
        }
    }
    app.actors.audit(
        AuditEvent::new(now, EventKind::PasswordChanged, v.username.clone(), true)
            .subject(v.username.clone())
            .ip(ip),
    );
    flash_redirect(
        app,
        "/account",
        "Your password was changed. Your other browser sessions were signed out.",
    )
}
