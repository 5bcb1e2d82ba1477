//! `/admin/clients`: list, create, edit, enable or disable, rotate a secret, delete.

use authgate_actors::audit::EventKind;
use authgate_actors::directory::{ClientRecord, ClientSpec, DirectoryMsg};
use authgate_actors::runtime::FLOW_TIMEOUT;
use authgate_actors::time::Millis;
use authgate_actors::token::{Amendment, Pauser, TokenMsg};
use hyper::StatusCode;
use minijinja::context;
use serde::Serialize;

use super::{AdminPost, admin, admin_form, directory_error_status, event, not_found};
use crate::app::App;
use crate::handlers::account::{amendment_words, busy, flash_redirect, page_with_flash, take_flash};
use crate::http::form::Form;
use crate::http::{Request, Response};
use crate::render::Viewer;

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
    if c.allows_grant(authgate_actors::directory::GRANT_AUTHORIZATION_CODE) {
        g.push("authorization_code");
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
        .map(|g| match g.as_str() {
            g if g.ends_with("device_code") => "device_code",
            "client_credentials" => "client_credentials",
            "authorization_code" => "authorization_code",
            _ => "refresh_token",
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
            always_refresh => spec.always_refresh, resources => spec.resources.join("\n"),
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
        redirect_uris: lines(form, "redirect_uris"),
        always_refresh: form.first("always_refresh") == Some("on"),
        resources: lines(form, "resources"),
    }
}

/// The non-blank lines of a textarea, trimmed.
fn lines(form: &Form, name: &str) -> Vec<String> {
    form.first(name)
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
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
/// Disables or enables every authorization of a client (its tokens, not the client itself).
async fn client_tokens(app: &App, post: &AdminPost, client_id: String, change: Amendment) -> Response {
    let Some(client_name) = app.actors.clients().get(&client_id).map(|c| c.name.clone()) else {
        return not_found(app, &post.v, "client");
    };
    let (kind, done) = amendment_words(&change);
    let asked = app
        .actors
        .token()
        .ask(|reply| TokenMsg::AmendClient {
            client_id: client_id.clone(),
            change,
            reply,
        })
        .await;
    match asked {
        Ok(Ok(())) => {
            app.actors.audit(
                event(post, kind)
                    .subject(client_id.clone())
                    .client(client_id)
                    .detail(format!("every authorization of the client {done} by an administrator")),
            );
            flash_redirect(app, "/admin/clients", &format!("Every device of {client_name} was {done}."))
        }
        _ => busy(app, Some(&post.v)),
    }
}

pub async fn client_action(app: &App, req: Request, id: String, action: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (v, dir, client_id, now) = (&post.v, app.actors.directory(), id.clone(), post.now);
    let change = match action.as_str() {
        "disable-tokens" => Some(Amendment::Disable(Pauser::Client)),
        "enable-tokens" => Some(Amendment::Enable(Pauser::Client)),
        _ => None,
    };
    if let Some(change) = change {
        return client_tokens(app, &post, client_id, change).await;
    }
    let asked = match action.as_str() {
        "enable" | "disable" => {
            let enabled = action == "enable";
            let done = if enabled { "enabled" } else { "disabled" };
            dir.ask(|reply| DirectoryMsg::SetClientEnabled { client_id, enabled, reply })
                .await
                .map(|r| r.map(|c| (c, None::<String>, done)))
        }
        // The directory also revokes the client-credentials tokens the old secret got.
        "rotate-secret" => dir
            .ask_within(FLOW_TIMEOUT, |reply| DirectoryMsg::RotateClientSecret { client_id, now, reply })
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
