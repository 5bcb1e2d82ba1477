//! `/admin/sessions` (everyone's active device authorizations, paged by the token actor) and
//! `/admin/audit` (the audit trail, filtered and paged by the audit actor).

use authgate_actors::audit::{AuditFilter, AuditMsg, EventKind};
use authgate_actors::time::Millis;
use authgate_actors::token::{Amendment, AuthorizationQuery, AuthorizationStatus, Pauser, TokenMsg};
use hyper::StatusCode;
use minijinja::context;

use super::{AdminPost, admin, admin_form, event, not_found};
use crate::app::App;
use crate::handlers::account::{
    PAGE_SIZE, amend, amendment_refused, amendment_words, authorization_page, busy, device_label, flash_redirect, owner_label,
    page_with_flash, requested_page, rows, take_flash,
};
use crate::http::Request;
use crate::http::Response;
use crate::http::form;

/// `GET /admin/sessions?user=&status=&page=`: the authorizations with a status (active unless
/// `status` says otherwise; `all` for every one), paged by the token actor.
pub async fn sessions(app: &App, req: Request, now: Millis) -> Response {
    let v = match admin(app, &req, now, "/admin/sessions").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = form::query(&req);
    let user_filter: String = q.first("user").unwrap_or("").trim().chars().take(64).collect();
    let status = match q.first("status").unwrap_or("active") {
        "all" => None,
        s => Some(AuthorizationStatus::from_name(s).unwrap_or(AuthorizationStatus::Active)),
    };
    let status_filter = status.map_or("all", |s| s.name());
    let query = AuthorizationQuery {
        username: (!user_filter.is_empty()).then(|| user_filter.clone()),
        status,
        ..Default::default()
    };
    let Some(p) = authorization_page(app, query, requested_page(&req), now).await else {
        return busy(app, Some(&v));
    };
    let ctx = context! {
        user => v.ctx(), csrf_token => v.csrf_token.clone(), nav => "admin", section => "sessions",
        rows => rows(app, p.rows), page => p.page, pages => p.pages, user_filter => user_filter, error => None::<String>,
        status_filter => status_filter, statuses => AuthorizationStatus::ALL.map(|s| s.name()),
    };
    page_with_flash(app, take_flash(app, &req), "admin_sessions.html", ctx)
}

/// `POST /admin/sessions/{id}/{action}`: `revoke`, `disable` or `enable` anyone's authorization.
pub async fn session_action(app: &App, req: Request, id: String, action: String) -> Response {
    let post = match admin_form(app, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let change = match action.as_str() {
        "revoke" => return revoke_session(app, post, id).await,
        "disable" => Amendment::Disable(Pauser::Admin),
        "enable" => Amendment::Enable(Pauser::Admin),
        _ => return not_found(app, &post.v, "action"),
    };
    let (kind, done) = amendment_words(&change);
    match amend(app, &id, None, change.clone(), post.now).await {
        Ok(Some(a)) => {
            let device = device_label(app, &a);
            if let Some(refused) = amendment_refused(&a, &change, &device) {
                return flash_redirect(app, "/admin/sessions", &refused);
            }
            app.actors.audit(
                event(&post, kind)
                    .subject(owner_label(&a))
                    .client(a.client_id.clone())
                    .detail(format!("authorization {} (device \"{device}\") {done} by an administrator", a.id)),
            );
            flash_redirect(app, "/admin/sessions", &format!("{device} of {} was {done}.", owner_label(&a)))
        }
        Ok(None) => not_found(app, &post.v, "authorization"),
        Err(()) => busy(app, Some(&post.v)),
    }
}

async fn revoke_session(app: &App, post: AdminPost, id: String) -> Response {
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
                    .subject(owner_label(&a))
                    .client(a.client_id.clone())
                    .detail(format!(
                        "authorization {} (device \"{}\") revoked by an administrator",
                        a.id,
                        device_label(app, &a)
                    )),
            );
            flash_redirect(
                app,
                "/admin/sessions",
                &format!("The authorization of {} was revoked.", owner_label(&a)),
            )
        }
        Ok(Ok(None)) => not_found(app, &post.v, "authorization"),
        _ => busy(app, Some(&post.v)),
    }
}

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
