//! Server-rendered pages: the minijinja templates under `templates/`, compiled into the binary.

use hyper::StatusCode;
use minijinja::{Environment, Value, context};

use crate::http::Response;
use crate::http::response::html;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("device.html", include_str!("../templates/device.html")),
    ("authorize.html", include_str!("../templates/authorize.html")),
    ("confirm.html", include_str!("../templates/confirm.html")),
    ("result.html", include_str!("../templates/result.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("logout.html", include_str!("../templates/logout.html")),
    ("account.html", include_str!("../templates/account.html")),
    ("account_sessions.html", include_str!("../templates/account_sessions.html")),
    ("admin_nav.html", include_str!("../templates/admin_nav.html")),
    ("pager.html", include_str!("../templates/pager.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("admin_clients.html", include_str!("../templates/admin_clients.html")),
    ("admin_client_form.html", include_str!("../templates/admin_client_form.html")),
    ("admin_secret.html", include_str!("../templates/admin_secret.html")),
    ("admin_users.html", include_str!("../templates/admin_users.html")),
    ("admin_sessions.html", include_str!("../templates/admin_sessions.html")),
    ("admin_audit.html", include_str!("../templates/admin_audit.html")),
];

/// How long ago, in words ("just now", "2 minutes ago", "3 hours ago").
pub fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    let (n, unit) = match secs {
        0..=9 => return "just now".to_owned(),
        10..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Unix seconds as `2026-11-22 19:30 UTC`.
fn datetime(secs: u64) -> String {
    // Years past 9999 cannot be written in RFC 3339 (and the formatter refuses them).
    if secs >= 253_402_300_800 {
        return "never".into();
    }
    let Some(t) = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)) else {
        return "never".into();
    };
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-22T19:30:05Z → 2026-11-22 19:30 UTC
    match (s.get(..10), s.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => s,
    }
}

/// The signed-in person a page is rendered for.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session id from the cookie.
    pub session_id: String,
    pub user_id: String,
    pub username: String,
    pub csrf_token: String,
    pub is_admin: bool,
    /// Signs in with a password kept here (and so may change it here).
    pub local_password: bool,
    /// When this session signed in (Unix ms).
    pub signed_in_at_ms: u64,
}

impl Viewer {
    /// What the shared header needs.
    pub fn ctx(&self) -> Value {
        context! { username => self.username.clone(), is_admin => self.is_admin }
    }
}

pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        env.add_global("app_name", "AuthGate");
        // The password rule, as values: it is written once, in the directory's crypto code.
        env.add_global("password_min", authgate_actors::crypto::password::MIN_CHARS);
        env.add_global("password_max", authgate_actors::crypto::password::MAX_BYTES);
        env.add_filter("datetime", datetime);
        Ok(Self { env })
    }

    pub fn render(&self, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// A rendered page; a template failure (a bug, not an input) becomes a plain 500 page.
    pub fn page(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        match self.render(name, ctx) {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!DOCTYPE html><title>Error</title><h1>Something went wrong</h1>".into(),
                )
            }
        }
    }

    /// The friendly error page.
    pub fn error(&self, status: StatusCode, title: &str, message: &str, viewer: Option<&Viewer>) -> Response {
        let user = viewer.map(Viewer::ctx);
        let csrf = viewer.map(|s| s.csrf_token.clone());
        self.page(
            status,
            "error.html",
            context! { status => status.as_u16(), title => title, message => message, user => user, csrf_token => csrf },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_words() {
        assert_eq!(ago(3_000), "just now");
        assert_eq!(ago(45_000), "45 seconds ago");
        assert_eq!(ago(60_000), "1 minute ago");
        assert_eq!(ago(150_000), "2 minutes ago");
        assert_eq!(ago(7_200_000), "2 hours ago");
        assert_eq!(ago(u64::MAX), format!("{} days ago", u64::MAX / 1000 / 86_400));
    }

    #[test]
    fn dates_render_and_absurd_ones_do_not_panic() {
        assert_eq!(datetime(0), "1970-01-01 00:00 UTC");
        assert_eq!(datetime(1_800_000_000), "2027-01-15 08:00 UTC");
        assert_eq!(datetime(u64::MAX), "never");
        assert_eq!(datetime(253_402_300_800), "never");
    }

    #[test]
    fn every_template_renders_and_escapes() {
        let p = Pages::new().unwrap();
        let user = context! { username => "<b>alice</b>" };
        let out = p
            .render("login.html", context! { csrf_token => "t", next => "/device", error => "Invalid" })
            .unwrap();
        assert!(out.contains("id=\"username\"") && out.contains("Invalid"));
        let out = p
            .render(
                "device.html",
                context! { user => user.clone(), csrf_token => "t", user_code => "BCDF" },
            )
            .unwrap();
        assert!(out.contains("&lt;b&gt;alice") && !out.contains("<b>alice"));
        let out = p
            .render(
                "confirm.html",
                context! {
                    user => user.clone(), csrf_token => "t", user_code => "BCDF-GHJK", client_name => "<i>CLI</i>", client_id => "c",
                    scopes => vec!["read"], requested_ago => "2 minutes ago", requested_at => 1_800_000_000u64,
                    requested_from => "<203.0.113.9>", approver_ip => "198.51.100.4", elsewhere => true, max_name => 64,
                },
            )
            .unwrap();
        assert!(out.contains("id=\"approve\"") && out.contains("BCDF-GHJK") && out.contains("id=\"elsewhere\""));
        assert!(out.contains("2 minutes ago") && out.contains("&lt;203.0.113.9&gt;") && !out.contains("<i>CLI"));
        let row = context! {
            id => "a1", name => "<script>x</script>", username => "alice", client_id => "c", client_name => "CLI",
            scopes => vec!["read"], authorized_at => 1u64, last_used_at => None::<u64>, expires_at => 2u64, status => "disabled", disabled_by => "owner",
        };
        for page in ["account_sessions.html", "admin_sessions.html"] {
            let out = p
                .render(
                    page,
                    context! { user => user.clone(), csrf_token => "t", rows => vec![row.clone()], page => 1, pages => 1, status_filter => "all", statuses => vec!["active"] },
                )
                .unwrap();
            assert!(out.contains("&lt;script&gt;x") && !out.contains("<script>x"), "{page}");
            assert!(
                out.contains("a1&#x2f;enable") && !out.contains("a1&#x2f;disable"),
                "{page}: a disabled one can be enabled"
            );
        }
        let out = p
            .render(
                "result.html",
                context! { user => user, csrf_token => "t", outcome => "approved", client_name => "CLI" },
            )
            .unwrap();
        assert!(out.contains("result-title"));
        let out = p
            .render("error.html", context! { status => 404, title => "Not found", message => "nope" })
            .unwrap();
        assert!(out.contains("nope"));
        assert!(!out.contains("<script"));
    }
}
