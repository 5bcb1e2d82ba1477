//! `/admin/users`: list and search, add a local user, and each change to a user (one message
//! to the directory, which ends sessions and revokes tokens where the change calls for it).

use authgate_actors::audit::EventKind;
use authgate_actors::crypto::password::{NewPassword, NewPasswordError};
use authgate_actors::directory::{DirectoryError, DirectoryMsg, UserChange, UserRecord, UserRef, profile};
use authgate_actors::runtime::FLOW_TIMEOUT;
use authgate_actors::time::Millis;
use hyper::StatusCode;
use minijinja::context;
use serde::Serialize;

use super::{admin, admin_form, directory_error_status, event, not_found};
use crate::app::App;
use crate::handlers::account::{busy, flash_redirect, page_with_flash, take_flash};
use crate::http::form::{self, Form};
use crate::http::{Request, Response};
use crate::render::Viewer;

#[derive(Serialize)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    full_name: Option<String>,
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
            full_name: u.full_name,
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
        "profile" => match profile(post.form.first("name").unwrap_or(""), post.form.first("email").unwrap_or("")) {
            Ok(change) => change,
            Err(e) => return users_list(app, v, "", None, Some(&e.to_string()), StatusCode::BAD_REQUEST).await,
        },
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
