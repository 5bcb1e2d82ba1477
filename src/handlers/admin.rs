//! The admin console: clients, users, everyone's authorizations, and the audit trail. Only
//! users with the admin flag get in; anyone else gets 403. Each handler parses, asks an actor,
//! and renders; every change is recorded in the audit trail.

use authgate_actors::audit::{AuditEvent, AuditFilter, AuditMsg, EventKind};
use authgate_actors::directory::{ClientRecord, ClientSpec, DirectoryError, DirectoryMsg, UserRecord};
use authgate_actors::session::SessionMsg;
use authgate_actors::system::ask;
use authgate_actors::token::{AuthorizationStatus, Owner, TokenMsg};
use hyper::StatusCode;
use minijinja::context;
use serde::Serialize;

use crate::app::App;
use crate::handlers::account::{MIN_PASSWORD_LEN, PAGE_SIZE, busy, flash_redirect, page_with_flash, paginate, rows, take_flash};
use crate::handlers::web::{login_redirect, signed_in_form, viewer};
use crate::http::form::{self, Form};
use crate::http::{Request, Response};
use crate::render::Viewer;

fn forbidden(app: &App, v: &Viewer) -> Response {
    app.pages.error(
        StatusCode::FORBIDDEN,
        "Administrators only",
        "Your account cannot open the administration pages.",
        Some(v),
    )
}

/// The signed-in administrator, or the response for anyone else.
async fn admin(app: &App, req: &Request, now: u64, here: &str) -> Result<Viewer, Response> {
    match viewer(app, req, now).await {
        None => Err(login_redirect(here)),
        Some(v) if !v.is_admin => Err(forbidden(app, &v)),
        Some(v) => Ok(v),
    }
}

/// A signed-in administrator's form post, its CSRF token checked, and the client's address.
async fn admin_form(app: &App, req: Request) -> Result<(Viewer, Form, Option<String>), Response> {
    let ip = app.ip(&req);
    let (v, form, _) = signed_in_form(app, req).await?;
    if !v.is_admin {
        return Err(forbidden(app, &v));
    }
    Ok((v, form, ip))
}

fn not_found(app: &App, v: &Viewer, what: &str) -> Response {
    app.pages
        .error(StatusCode::NOT_FOUND, "Not found", &format!("There is no such {what}."), Some(v))
}

fn event(v: &Viewer, kind: EventKind, ip: Option<String>) -> AuditEvent {
    AuditEvent::new(kind, v.username.clone(), true).ip(ip)
}

// ---- clients ----

#[derive(Serialize)]
struct ClientRow {
    client_id: String,
    name: String,
    description: String,
    confidential: bool,
    grants: Vec<&'static str>,
    enabled: bool,
}

fn short_grants(c: &ClientRecord) -> Vec<&'static str> {
    let mut g = Vec::new();
    if c.allows_grant(authgate_actors::directory::GRANT_DEVICE_CODE) {
        g.push("device_code");
    }
    if c.allows_grant(authgate_actors::directory::GRANT_REFRESH_TOKEN) {
        g.push("refresh_token");
    }
    g
}

async fn clients_list(app: &App, v: &Viewer, flash: Option<String>, error: Option<&str>) -> Response {
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(v));
    };
    let Ok(list) = ask(&dir, |reply| DirectoryMsg::ListClients { reply }).await else {
        return busy(app, Some(v));
    };
    let clients: Vec<ClientRow> = list
        .iter()
        .map(|c| ClientRow {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            confidential: c.confidential,
            grants: short_grants(c),
            enabled: c.enabled,
        })
        .collect();
    let ctx = context! { user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "clients", clients => clients, error => error };
    page_with_flash(app, flash, "admin_clients.html", ctx)
}

/// `GET /admin/clients`
pub async fn clients(app: &App, req: Request, now: u64) -> Response {
    match admin(app, &req, now, "/admin/clients").await {
        Ok(v) => clients_list(app, &v, take_flash(app, &req), None).await,
        Err(r) => r,
    }
}

fn client_form(app: &App, v: &Viewer, status: StatusCode, c: Option<&ClientRecord>, spec: &ClientSpec, error: Option<&str>) -> Response {
    let grants: Vec<&str> = spec
        .grant_types
        .iter()
        .map(|g| {
            if g.ends_with("device_code") {
                "device_code"
            } else {
                "refresh_token"
            }
        })
        .collect();
    app.pages.page(
        status,
        "admin_client_form.html",
        context! {
            user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "clients", error => error,
            client_id => c.map(|c| c.client_id.clone()), confidential => c.map_or(spec.confidential, |c| c.confidential),
            name => spec.name.clone(), description => spec.description.clone(), grants => grants,
            scopes => spec.scopes.join(" "), redirect_uris => spec.redirect_uris.join("\n"),
        },
    )
}

fn spec_of(c: &ClientRecord) -> ClientSpec {
    ClientSpec {
        name: c.name.clone(),
        description: c.description.clone(),
        confidential: c.confidential,
        grant_types: c.grant_types.clone(),
        scopes: c.scopes.clone(),
        redirect_uris: c.redirect_uris.clone(),
    }
}

/// The client fields of a posted form.
fn spec_from(form: &Form) -> ClientSpec {
    ClientSpec {
        name: form.first("name").unwrap_or("").to_owned(),
        description: form.first("description").unwrap_or("").to_owned(),
        confidential: form.first("type") == Some("confidential"),
        grant_types: form.all("grant_type").map(str::to_owned).collect(),
        scopes: form.first("scopes").unwrap_or("").split_whitespace().map(str::to_owned).collect(),
        redirect_uris: form
            .first("redirect_uris")
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// `GET /admin/clients/new`
pub async fn new_client(app: &App, req: Request, now: u64) -> Response {
    match admin(app, &req, now, "/admin/clients/new").await {
        Ok(v) => {
            let spec = ClientSpec {
                grant_types: vec!["device_code".into(), "refresh_token".into()],
                ..ClientSpec::default()
            };
            client_form(app, &v, StatusCode::OK, None, &spec, None)
        }
        Err(r) => r,
    }
}

/// `GET /admin/clients/{id}`
pub async fn edit_client(app: &App, req: Request, now: u64, id: String) -> Response {
    let v = match admin(app, &req, now, "/admin/clients").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.actors.clients().get(&id) {
        Some(c) => client_form(app, &v, StatusCode::OK, Some(c), &spec_of(c), None),
        None => not_found(app, &v, "client"),
    }
}

fn secret_page(app: &App, v: &Viewer, c: &ClientRecord, secret: &str) -> Response {
    let ctx = context! { user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", name => c.name.clone(), client_id => c.client_id.clone(), secret => secret };
    let mut r = app.pages.page(StatusCode::OK, "admin_secret.html", ctx);
    r.headers_mut()
        .insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    r
}

fn directory_error_status(e: &DirectoryError) -> StatusCode {
    match e {
        DirectoryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        DirectoryError::UnknownClient | DirectoryError::UnknownUserId | DirectoryError::UnknownUser(_) => StatusCode::NOT_FOUND,
        DirectoryError::UsernameTaken(_) | DirectoryError::LastAdmin => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `POST /admin/clients` (create)
pub async fn create_client(app: &App, req: Request) -> Response {
    let (v, form, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let spec = spec_from(&form);
    if spec.grant_types.is_empty() {
        return client_form(
            app,
            &v,
            StatusCode::BAD_REQUEST,
            None,
            &spec,
            Some("Choose at least one grant type."),
        );
    }
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(&v));
    };
    let sent = spec.clone();
    match ask(&dir, |reply| DirectoryMsg::CreateClient { spec: sent, reply }).await {
        Ok(Ok((c, secret))) => {
            app.actors.audit(
                event(&v, EventKind::ClientCreated, ip)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail(format!("{} ({})", c.name, if c.confidential { "confidential" } else { "public" })),
            );
            match secret {
                Some(s) => secret_page(app, &v, &c, &s),
                None => flash_redirect(app, "/admin/clients", &format!("Client {} was created.", c.name)),
            }
        }
        Ok(Err(e)) => client_form(app, &v, directory_error_status(&e), None, &spec, Some(&e.to_string())),
        Err(_) => busy(app, Some(&v)),
    }
}

/// `POST /admin/clients/{id}` (save edits)
pub async fn update_client(app: &App, req: Request, id: String) -> Response {
    let (v, form, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(existing) = app.actors.clients().get(&id).cloned() else {
        return not_found(app, &v, "client");
    };
    let spec = spec_from(&form);
    if spec.grant_types.is_empty() {
        return client_form(
            app,
            &v,
            StatusCode::BAD_REQUEST,
            Some(&existing),
            &spec,
            Some("Choose at least one grant type."),
        );
    }
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(&v));
    };
    let (client_id, sent) = (id.clone(), spec.clone());
    match ask(&dir, |reply| DirectoryMsg::UpdateClient {
        client_id,
        spec: sent,
        reply,
    })
    .await
    {
        Ok(Ok(c)) => {
            app.actors.audit(
                event(&v, EventKind::ClientChanged, ip)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail("details edited"),
            );
            flash_redirect(app, "/admin/clients", &format!("Client {} was saved.", c.name))
        }
        Ok(Err(e)) => client_form(app, &v, directory_error_status(&e), Some(&existing), &spec, Some(&e.to_string())),
        Err(_) => busy(app, Some(&v)),
    }
}

/// `POST /admin/clients/{id}/{enable|disable|rotate-secret|delete}`
pub async fn client_action(app: &App, req: Request, id: String, action: String) -> Response {
    let (v, _, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(&v));
    };
    let client_id = id.clone();
    let outcome: Result<(ClientRecord, Option<String>, &str), DirectoryError> = match action.as_str() {
        "enable" | "disable" => {
            let enabled = action == "enable";
            match ask(&dir, |reply| DirectoryMsg::SetClientEnabled { client_id, enabled, reply }).await {
                Ok(r) => r.map(|c| (c, None, if enabled { "enabled" } else { "disabled" })),
                Err(_) => return busy(app, Some(&v)),
            }
        }
        "rotate-secret" => match ask(&dir, |reply| DirectoryMsg::RotateClientSecret { client_id, reply }).await {
            Ok(r) => r.map(|(c, s)| (c, Some(s), "secret rotated")),
            Err(_) => return busy(app, Some(&v)),
        },
        "delete" => match ask(&dir, |reply| DirectoryMsg::DeleteClient { client_id, reply }).await {
            Ok(r) => r.map(|c| (c, None, "deleted")),
            Err(_) => return busy(app, Some(&v)),
        },
        _ => return not_found(app, &v, "action"),
    };
    match outcome {
        Ok((c, secret, what)) => {
            if action == "delete" {
                // Its tokens already stop validating (the client is gone); revoke them for good.
                let of = Owner::Client(c.client_id.clone());
                if !revoke_all(app, of).await {
                    return busy(app, Some(&v));
                }
            }
            let kind = if action == "delete" {
                EventKind::ClientDeleted
            } else {
                EventKind::ClientChanged
            };
            app.actors.audit(
                event(&v, kind, ip)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail(what),
            );
            match secret {
                Some(s) => secret_page(app, &v, &c, &s),
                None => flash_redirect(app, "/admin/clients", &format!("Client {} was {what}.", c.name)),
            }
        }
        Err(e) => {
            let status = directory_error_status(&e);
            let mut r = clients_list(app, &v, None, Some(&e.to_string())).await;
            *r.status_mut() = status;
            r
        }
    }
}

/// Revokes every token of a user or client; whether it was done.
async fn revoke_all(app: &App, of: Owner) -> bool {
    let Ok(token) = app.actors.token() else { return false };
    matches!(ask(&token, |reply| TokenMsg::RevokeAll { of, reply }).await, Ok(Ok(_)))
}

// ---- users ----

#[derive(Serialize)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    local: bool,
    is_admin: bool,
    disabled: bool,
}

async fn users_list(app: &App, v: &Viewer, q: &str, flash: Option<String>, error: Option<&str>, status: StatusCode) -> Response {
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(v));
    };
    let Ok(list) = ask(&dir, |reply| DirectoryMsg::ListUsers { reply }).await else {
        return busy(app, Some(v));
    };
    let needle = q.trim().to_lowercase();
    let users: Vec<UserRow> = list
        .into_iter()
        .filter(|u| {
            needle.is_empty()
                || u.username.to_lowercase().contains(&needle)
                || u.email.as_deref().is_some_and(|e| e.to_lowercase().contains(&needle))
        })
        .map(|u: UserRecord| UserRow {
            local: u.auth_source == authgate_actors::directory::AuthSource::Local,
            id: u.id,
            username: u.username,
            email: u.email,
            is_admin: u.is_admin,
            disabled: u.disabled,
        })
        .collect();
    let ctx = context! { user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "users", users => users, q => q, error => error };
    if status == StatusCode::OK {
        page_with_flash(app, flash, "admin_users.html", ctx)
    } else {
        app.pages.page(status, "admin_users.html", ctx)
    }
}

/// `GET /admin/users?q=`
pub async fn users(app: &App, req: Request, now: u64) -> Response {
    let v = match admin(app, &req, now, "/admin/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q: String = form::query(&req).first("q").unwrap_or("").chars().take(100).collect();
    users_list(app, &v, &q, take_flash(app, &req), None, StatusCode::OK).await
}

fn password_ok(p: &str) -> bool {
    p.chars().count() >= MIN_PASSWORD_LEN && p.len() <= 1024
}

/// `POST /admin/users` (create a local user)
pub async fn create_user(app: &App, req: Request) -> Response {
    let (v, form, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let username = form.first("username").unwrap_or("").trim().to_owned();
    let password = form.first("password").unwrap_or("").to_owned();
    let is_admin = form.first("is_admin").is_some();
    if !password_ok(&password) {
        return users_list(
            app,
            &v,
            "",
            None,
            Some("Passwords are 8 to 1024 characters."),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let Ok(password_hash) = authgate_actors::password::hash(password).await else {
        return busy(app, Some(&v));
    };
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(&v));
    };
    let name = username.clone();
    match ask(&dir, |reply| DirectoryMsg::CreateUser {
        username: name,
        password_hash,
        is_admin,
        reply,
    })
    .await
    {
        Ok(Ok(u)) => {
            app.actors.audit(
                event(&v, EventKind::UserCreated, ip)
                    .subject(u.username.clone())
                    .detail(if is_admin { "administrator" } else { "user" }),
            );
            flash_redirect(app, "/admin/users", &format!("User {} was added.", u.username))
        }
        Ok(Err(e)) => users_list(app, &v, "", None, Some(&e.to_string()), directory_error_status(&e)).await,
        Err(_) => busy(app, Some(&v)),
    }
}

/// `POST /admin/users/{id}/{password|make-admin|remove-admin|disable|enable|delete}`
pub async fn user_action(app: &App, req: Request, id: String, action: String) -> Response {
    let (v, form, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(dir) = app.actors.directory() else {
        return busy(app, Some(&v));
    };
    let probe = id.clone();
    let target = match ask(&dir, |reply| DirectoryMsg::GetUser { id: probe, reply }).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(app, &v, "user"),
        Err(_) => return busy(app, Some(&v)),
    };
    let user_id = id.clone();
    let result: Result<String, DirectoryError> = match action.as_str() {
        "password" => {
            let password = form.first("password").unwrap_or("").to_owned();
            if !password_ok(&password) {
                return users_list(
                    app,
                    &v,
                    "",
                    None,
                    Some("Passwords are 8 to 1024 characters."),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
            let Ok(password_hash) = authgate_actors::password::hash(password).await else {
                return busy(app, Some(&v));
            };
            let username = target.username.clone();
            match ask(&dir, |reply| DirectoryMsg::SetPassword {
                username,
                password_hash,
                reply,
            })
            .await
            {
                Ok(r) => r.map(|()| "password reset".to_owned()),
                Err(_) => return busy(app, Some(&v)),
            }
        }
        "make-admin" | "remove-admin" | "disable" | "enable" => {
            let (is_admin, disabled) = match action.as_str() {
                "make-admin" => (Some(true), None),
                "remove-admin" => (Some(false), None),
                "disable" => (None, Some(true)),
                _ => (None, Some(false)),
            };
            match ask(&dir, |reply| DirectoryMsg::UpdateUser {
                id: user_id,
                is_admin,
                disabled,
                reply,
            })
            .await
            {
                Ok(r) => r.map(|_| action.replace('-', " ")),
                Err(_) => return busy(app, Some(&v)),
            }
        }
        "delete" => match ask(&dir, |reply| DirectoryMsg::DeleteUser { id: user_id, reply }).await {
            Ok(r) => r.map(|_| "deleted".to_owned()),
            Err(_) => return busy(app, Some(&v)),
        },
        _ => return not_found(app, &v, "action"),
    };
    match result {
        Ok(what) => {
            // A disabled or deleted user's browser sessions end; a deleted user's tokens are
            // revoked (a disabled user's merely stop validating while disabled).
            if matches!(action.as_str(), "disable" | "delete" | "password")
                && let Ok(sessions) = app.actors.session()
            {
                let user_id = target.id.clone();
                let _ = ask(&sessions, |reply| SessionMsg::DestroyForUser {
                    user_id,
                    keep: None,
                    reply,
                })
                .await;
            }
            if action == "delete" && !revoke_all(app, Owner::User(target.id.clone())).await {
                // The user is gone, so the tokens no longer validate; the revocation makes that
                // permanent and is worth a retry.
                return busy(app, Some(&v));
            }
            let kind = if action == "delete" {
                EventKind::UserDeleted
            } else {
                EventKind::UserChanged
            };
            app.actors
                .audit(event(&v, kind, ip).subject(target.username.clone()).detail(what.clone()));
            flash_redirect(app, "/admin/users", &format!("User {}: {what}.", target.username))
        }
        Err(e) => users_list(app, &v, "", None, Some(&e.to_string()), directory_error_status(&e)).await,
    }
}

// ---- sessions ----

/// `GET /admin/sessions?user=&page=`
pub async fn sessions(app: &App, req: Request, now: u64) -> Response {
    let v = match admin(app, &req, now, "/admin/sessions").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user_filter: String = form::query(&req).first("user").unwrap_or("").trim().chars().take(64).collect();
    let Ok(token) = app.actors.token() else {
        return busy(app, Some(&v));
    };
    let Ok(list) = ask(&token, |reply| TokenMsg::ListAuthorizations { user_id: None, now, reply }).await else {
        return busy(app, Some(&v));
    };
    let active: Vec<_> = list
        .into_iter()
        .filter(|a| a.status == AuthorizationStatus::Active && (user_filter.is_empty() || a.username == user_filter))
        .collect();
    let (page, pages) = paginate(&req, active.len());
    let shown = active.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "sessions",
        rows => rows(app, shown), page => page, pages => pages, user_filter => user_filter, error => None::<String>,
    };
    page_with_flash(app, take_flash(app, &req), "admin_sessions.html", ctx)
}

/// `POST /admin/sessions/{id}/revoke`
pub async fn revoke_session(app: &App, req: Request, id: String) -> Response {
    let (v, _, ip) = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(token) = app.actors.token() else {
        return busy(app, Some(&v));
    };
    let authorization_id = id.chars().take(64).collect::<String>();
    match ask(&token, |reply| TokenMsg::RevokeAuthorization {
        authorization_id,
        owner: None,
        reply,
    })
    .await
    {
        Ok(Ok(Some(a))) => {
            app.actors.audit(
                event(&v, EventKind::TokenRevoked, ip)
                    .subject(a.username.clone())
                    .client(a.client_id.clone())
                    .detail(format!("authorization {} revoked by an administrator", a.id)),
            );
            flash_redirect(app, "/admin/sessions", &format!("The authorization of {} was revoked.", a.username))
        }
        Ok(Ok(None)) => not_found(app, &v, "authorization"),
        _ => busy(app, Some(&v)),
    }
}

// ---- audit ----

/// `GET /admin/audit?user=&client=&event=&before=`
pub async fn audit(app: &App, req: Request, now: u64) -> Response {
    let v = match admin(app, &req, now, "/admin/audit").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = form::query(&req);
    let field = |name: &str| -> String { q.first(name).unwrap_or("").trim().chars().take(100).collect() };
    let (user, client, event_name, before) = (field("user"), field("client"), field("event"), field("before"));
    let filter = AuditFilter {
        user: (!user.is_empty()).then(|| user.clone()),
        client_id: (!client.is_empty()).then(|| client.clone()),
        kind: EventKind::from_name(&event_name),
    };
    let before = (!before.is_empty() && before.bytes().all(|b| b.is_ascii_hexdigit())).then_some(before);
    let Ok(actor) = app.actors.audit_actor() else {
        return busy(app, Some(&v));
    };
    let page = match ask(&actor, |reply| AuditMsg::Query {
        filter,
        before,
        limit: PAGE_SIZE,
        reply,
    })
    .await
    {
        Ok(Ok(p)) => p,
        _ => return busy(app, Some(&v)),
    };
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "audit", error => None::<String>,
        events => page.events, next => page.next, kinds => kinds,
        filter => context! { user => user, client => client, event => EventKind::from_name(&event_name).map(|k| k.name()).unwrap_or("") },
    };
    app.pages.page(StatusCode::OK, "admin_audit.html", ctx)
}
