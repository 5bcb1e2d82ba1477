//! The admin console: clients, users, everyone's authorizations, and the audit trail. Only
//! users with the admin flag get in; anyone else gets 403. Each handler parses, asks an actor,
//! and renders; every change is recorded in the audit trail.

use authgate_actors::audit::{AuditEvent, AuditFilter, AuditMsg, EventKind};
use authgate_actors::crypto::password::{NewPassword, NewPasswordError};
use authgate_actors::directory::{ClientRecord, ClientSpec, DirectoryError, DirectoryMsg, UserChange, UserRecord, UserRef};
use authgate_actors::runtime::FLOW_TIMEOUT;
use authgate_actors::time::Millis;
use authgate_actors::token::{AuthorizationQuery, TokenMsg};
use hyper::StatusCode;
use minijinja::context;
use serde::Serialize;

use crate::app::App;
use crate::handlers::account::{PAGE_SIZE, authorization_page, busy, flash_redirect, page_with_flash, requested_page, rows, take_flash};
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
async fn admin(app: &App, req: &Request, now: Millis, here: &str) -> Result<Viewer, Response> {
    match viewer(app, req, now).await {
        None => Err(login_redirect(here)),
        Some(v) if !v.is_admin => Err(forbidden(app, &v)),
        Some(v) => Ok(v),
    }
}

/// A signed-in administrator's form post (its CSRF token checked), what the audit trail
/// records of it, and its time.
struct AdminPost {
    v: Viewer,
    form: Form,
    ip: Option<String>,
    now: Millis,
}

async fn admin_form(app: &App, req: Request) -> Result<AdminPost, Response> {
    let ip = app.ip(&req);
    let (v, form, now) = signed_in_form(app, req).await?;
    if !v.is_admin {
        return Err(forbidden(app, &v));
    }
    Ok(AdminPost { v, form, ip, now })
}

fn not_found(app: &App, v: &Viewer, what: &str) -> Response {
    app.pages
        .error(StatusCode::NOT_FOUND, "Not found", &format!("There is no such {what}."), Some(v))
}

/// An audit event of what the administrator behind `post` did.
fn event(post: &AdminPost, kind: EventKind) -> AuditEvent {
    AuditEvent::new(post.now, kind, post.v.username.clone(), true).ip(post.ip.clone())
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
    let Ok(list) = app.actors.directory().ask(|reply| DirectoryMsg::ListClients { reply }).await else {
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
pub async fn clients(app: &App, req: Request, now: Millis) -> Response {
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
pub async fn new_client(app: &App, req: Request, now: Millis) -> Response {
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
pub async fn edit_client(app: &App, req: Request, now: Millis, id: String) -> Response {
    let v = match admin(app, &req, now, "/admin/clients").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.actors.clients().get(&id) {
        Some(c) => client_form(app, &v, StatusCode::OK, Some(c), &ClientSpec::of(c), None),
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
        DirectoryError::Store(_) | DirectoryError::Busy | DirectoryError::Unfinished => StatusCode::SERVICE_UNAVAILABLE,
        DirectoryError::UnknownClient | DirectoryError::UnknownUserId | DirectoryError::UnknownUser(_) => StatusCode::NOT_FOUND,
        DirectoryError::UsernameTaken(_) | DirectoryError::LastAdmin => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `POST /admin/clients` (create)
pub async fn create_client(app: &App, req: Request) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (v, spec) = (&post.v, spec_from(&post.form));
    if spec.grant_types.is_empty() {
        return client_form(
            app,
            v,
            StatusCode::BAD_REQUEST,
            None,
            &spec,
            Some("Choose at least one grant type."),
        );
    }
    let (sent, now) = (spec.clone(), post.now);
    match app
        .actors
        .directory()
        .ask(|reply| DirectoryMsg::CreateClient { spec: sent, now, reply })
        .await
    {
        Ok(Ok((c, secret))) => {
            app.actors.audit(
                event(&post, EventKind::ClientCreated)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail(format!("{} ({})", c.name, if c.confidential { "confidential" } else { "public" })),
            );
            match secret {
                Some(s) => secret_page(app, v, &c, &s),
                None => flash_redirect(app, "/admin/clients", &format!("Client {} was created.", c.name)),
            }
        }
        Ok(Err(e)) => client_form(app, v, directory_error_status(&e), None, &spec, Some(&e.to_string())),
        Err(_) => busy(app, Some(v)),
    }
}

/// `POST /admin/clients/{id}` (save edits)
pub async fn update_client(app: &App, req: Request, id: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = &post.v;
    let Some(existing) = app.actors.clients().get(&id).cloned() else {
        return not_found(app, v, "client");
    };
    let spec = spec_from(&post.form);
    if spec.grant_types.is_empty() {
        let error = Some("Choose at least one grant type.");
        return client_form(app, v, StatusCode::BAD_REQUEST, Some(&existing), &spec, error);
    }
    let (client_id, sent) = (id.clone(), spec.clone());
    match app
        .actors
        .directory()
        .ask(|reply| DirectoryMsg::UpdateClient {
            client_id,
            spec: sent,
            reply,
        })
        .await
    {
        Ok(Ok(c)) => {
            app.actors.audit(
                event(&post, EventKind::ClientChanged)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail("details edited"),
            );
            flash_redirect(app, "/admin/clients", &format!("Client {} was saved.", c.name))
        }
        Ok(Err(e)) => client_form(app, v, directory_error_status(&e), Some(&existing), &spec, Some(&e.to_string())),
        Err(_) => busy(app, Some(v)),
    }
}

/// `POST /admin/clients/{id}/{enable|disable|rotate-secret|delete}`
pub async fn client_action(app: &App, req: Request, id: String, action: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (v, dir, client_id, now) = (&post.v, app.actors.directory(), id.clone(), post.now);
    let asked = match action.as_str() {
        "enable" | "disable" => {
            let enabled = action == "enable";
            let done = if enabled { "enabled" } else { "disabled" };
            dir.ask(|reply| DirectoryMsg::SetClientEnabled { client_id, enabled, reply })
                .await
                .map(|r| r.map(|c| (c, None::<String>, done)))
        }
        "rotate-secret" => dir
            .ask(|reply| DirectoryMsg::RotateClientSecret { client_id, reply })
            .await
            .map(|r| r.map(|(c, s)| (c, Some(s), "secret rotated"))),
        // The directory deletes the client and has its tokens revoked.
        "delete" => dir
            .ask_within(FLOW_TIMEOUT, |reply| DirectoryMsg::DeleteClient { client_id, now, reply })
            .await
            .map(|r| r.map(|c| (c, None::<String>, "deleted"))),
        _ => return not_found(app, v, "action"),
    };
    let Ok(outcome) = asked else {
        return busy(app, Some(v));
    };
    match outcome {
        Ok((c, secret, what)) => {
            let kind = if action == "delete" {
                EventKind::ClientDeleted
            } else {
                EventKind::ClientChanged
            };
            app.actors.audit(
                event(&post, kind)
                    .subject(c.client_id.clone())
                    .client(c.client_id.clone())
                    .detail(what),
            );
            match secret {
                Some(s) => secret_page(app, v, &c, &s),
                None => flash_redirect(app, "/admin/clients", &format!("Client {} was {what}.", c.name)),
            }
        }
        Err(e) => {
            let status = directory_error_status(&e);
            let mut r = clients_list(app, v, None, Some(&e.to_string())).await;
            *r.status_mut() = status;
            r
        }
    }
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
    let Ok(list) = app.actors.directory().ask(|reply| DirectoryMsg::ListUsers { reply }).await else {
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
pub async fn users(app: &App, req: Request, now: Millis) -> Response {
    let v = match admin(app, &req, now, "/admin/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q: String = form::query(&req).first("q").unwrap_or("").chars().take(100).collect();
    users_list(app, &v, &q, take_flash(app, &req), None, StatusCode::OK).await
}

/// A new password from the form, checked against the rule and hashed; or the page that says why not.
async fn new_password(app: &App, v: &Viewer, form: &Form) -> Result<NewPassword, Response> {
    match NewPassword::new(form.first("password").unwrap_or("").to_owned()).await {
        Ok(p) => Ok(p),
        Err(e @ NewPasswordError::Rule) => Err(users_list(app, v, "", None, Some(&e.to_string()), StatusCode::BAD_REQUEST).await),
        Err(NewPasswordError::Busy) => Err(busy(app, Some(v))),
    }
}

/// `POST /admin/users` (create a local user)
pub async fn create_user(app: &App, req: Request) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = &post.v;
    let username = post.form.first("username").unwrap_or("").trim().to_owned();
    let is_admin = post.form.first("is_admin").is_some();
    let password = match new_password(app, v, &post.form).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (name, now) = (username.clone(), post.now);
    match app
        .actors
        .directory()
        .ask(|reply| DirectoryMsg::CreateUser {
            username: name,
            password,
            is_admin,
            now,
            reply,
        })
        .await
    {
        Ok(Ok(u)) => {
            app.actors.audit(
                event(&post, EventKind::UserCreated)
                    .subject(u.username.clone())
                    .detail(if is_admin { "administrator" } else { "user" }),
            );
            flash_redirect(app, "/admin/users", &format!("User {} was added.", u.username))
        }
        Ok(Err(e)) => users_list(app, v, "", None, Some(&e.to_string()), directory_error_status(&e)).await,
        Err(_) => busy(app, Some(v)),
    }
}

/// `POST /admin/users/{id}/{password|make-admin|remove-admin|disable|enable|delete}`: one
/// message to the directory, which also ends the user's sessions and revokes their tokens
/// where the change calls for it.
pub async fn user_action(app: &App, req: Request, id: String, action: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = &post.v;
    let change = match action.as_str() {
        "password" => match new_password(app, v, &post.form).await {
            Ok(p) => UserChange::Password(p),
            Err(r) => return r,
        },
        "make-admin" => UserChange::Admin(true),
        "remove-admin" => UserChange::Admin(false),
        "disable" => UserChange::Disabled(true),
        "enable" => UserChange::Disabled(false),
        "delete" => UserChange::Delete,
        _ => return not_found(app, v, "action"),
    };
    let (what, delete, now) = (change.describe(), matches!(change, UserChange::Delete), post.now);
    let who = UserRef::Id(id);
    let changed = app
        .actors
        .directory()
        .ask_within(FLOW_TIMEOUT, |reply| DirectoryMsg::ChangeUser {
            who,
            change,
            keep_session: None,
            now,
            reply,
        })
        .await;
    match changed {
        Ok(Ok(user)) => {
            let kind = if delete { EventKind::UserDeleted } else { EventKind::UserChanged };
            app.actors.audit(event(&post, kind).subject(user.username.clone()).detail(what));
            flash_redirect(app, "/admin/users", &format!("User {}: {what}.", user.username))
        }
        Ok(Err(DirectoryError::UnknownUserId)) => not_found(app, v, "user"),
        Ok(Err(e)) => users_list(app, v, "", None, Some(&e.to_string()), directory_error_status(&e)).await,
        Err(_) => busy(app, Some(v)),
    }
}

// ---- sessions ----

/// `GET /admin/sessions?user=&page=`: the active authorizations, paged by the token actor.
pub async fn sessions(app: &App, req: Request, now: Millis) -> Response {
    let v = match admin(app, &req, now, "/admin/sessions").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user_filter: String = form::query(&req).first("user").unwrap_or("").trim().chars().take(64).collect();
    let query = AuthorizationQuery {
        username: (!user_filter.is_empty()).then(|| user_filter.clone()),
        active_only: true,
        ..Default::default()
    };
    let Some(p) = authorization_page(app, query, requested_page(&req), now).await else {
        return busy(app, Some(&v));
    };
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "sessions",
        rows => rows(app, p.rows), page => p.page, pages => p.pages, user_filter => user_filter, error => None::<String>,
    };
    page_with_flash(app, take_flash(app, &req), "admin_sessions.html", ctx)
}

/// `POST /admin/sessions/{id}/revoke`
pub async fn revoke_session(app: &App, req: Request, id: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (authorization_id, now) = (id.chars().take(64).collect::<String>(), post.now);
    let revoked = app
        .actors
        .token()
        .ask(|reply| TokenMsg::RevokeAuthorization {
            authorization_id,
            owner: None,
            now,
            reply,
        })
        .await;
    match revoked {
        Ok(Ok(Some(a))) => {
            app.actors.audit(
                event(&post, EventKind::TokenRevoked)
                    .subject(a.username.clone())
                    .client(a.client_id.clone())
                    .detail(format!("authorization {} revoked by an administrator", a.id)),
            );
            flash_redirect(app, "/admin/sessions", &format!("The authorization of {} was revoked.", a.username))
        }
        Ok(Ok(None)) => not_found(app, &post.v, "authorization"),
        _ => busy(app, Some(&post.v)),
    }
}

// ---- audit ----

/// `GET /admin/audit?user=&client=&event=&before=`
pub async fn audit(app: &App, req: Request, now: Millis) -> Response {
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
    let page = match app
        .actors
        .audit_actor()
        .ask(|reply| AuditMsg::Query {
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
