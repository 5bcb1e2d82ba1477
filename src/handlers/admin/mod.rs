//! The admin console: clients, users, everyone's authorizations, and the audit trail. Only
//! users with the admin flag get in; anyone else gets 403. Each handler parses, asks an actor,
//! and renders; every change is recorded in the audit trail.
//!
//! - [`clients`]: OAuth clients; [`users`]: people; [`sessions`]: everyone's device
//!   authorizations and the audit trail.

mod clients;
mod sessions;
mod users;

pub use self::clients::{client_action, clients, create_client, edit_client, new_client, update_client};
pub use self::sessions::{audit, session_action, sessions};
pub use self::users::{create_user, user_action, users};

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::directory::DirectoryError;
use authgate_actors::time::Millis;
use hyper::StatusCode;

use crate::app::App;
use crate::handlers::web::{login_redirect, signed_in_form, viewer};
use crate::http::form::Form;
use crate::http::{Request, Response};
use crate::render::Viewer;

pub(super) fn forbidden(app: &App, v: &Viewer) -> Response {
    app.pages.error(
        StatusCode::FORBIDDEN,
        "Administrators only",
        "Your account cannot open the administration pages.",
        Some(v),
    )
}

/// The signed-in administrator, or the response for anyone else.
pub(super) async fn admin(app: &App, req: &Request, now: Millis, here: &str) -> Result<Viewer, Response> {
    match viewer(app, req, now).await {
        None => Err(login_redirect(here)),
        Some(v) if !v.is_admin => Err(forbidden(app, &v)),
        Some(v) => Ok(v),
    }
}

/// A signed-in administrator's form post (its CSRF token checked), what the audit trail
/// records of it, and its time.
pub(super) struct AdminPost {
    pub v: Viewer,
    pub form: Form,
    pub ip: Option<String>,
    pub now: Millis,
}

pub(super) async fn admin_form(app: &App, req: Request) -> Result<AdminPost, Response> {
    let ip = app.ip(&req);
    let (v, form, now) = signed_in_form(app, req).await?;
    if !v.is_admin {
        return Err(forbidden(app, &v));
    }
    Ok(AdminPost { v, form, ip, now })
}

pub(super) fn not_found(app: &App, v: &Viewer, what: &str) -> Response {
    app.pages
        .error(StatusCode::NOT_FOUND, "Not found", &format!("There is no such {what}."), Some(v))
}

/// An audit event of what the administrator behind `post` did.
pub(super) fn event(post: &AdminPost, kind: EventKind) -> AuditEvent {
    AuditEvent::new(post.now, kind, post.v.username.clone(), true).ip(post.ip.clone())
}

/// The status of a page that shows a directory error.
pub(super) fn directory_error_status(e: &DirectoryError) -> StatusCode {
    match e {
        DirectoryError::Store(_) | DirectoryError::Busy | DirectoryError::Unfinished => StatusCode::SERVICE_UNAVAILABLE,
        DirectoryError::UnknownClient | DirectoryError::UnknownUserId | DirectoryError::UnknownUser(_) => StatusCode::NOT_FOUND,
        DirectoryError::UsernameTaken(_) | DirectoryError::LastAdmin => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}
