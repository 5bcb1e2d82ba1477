//! `/oauth/authorize`: the authorization code grant's front door (RFC 6749 §4.1, RFC 7636,
//! RFC 9700, OpenID Connect Core §3.1.2). A person signs in, sees what a client asks for and
//! approves or denies; the browser is sent back to the client's redirect URI with a code or an
//! error. Until the client and its redirect URI are known good nothing redirects (an error page
//! instead), so no error path is an open redirect.

use std::sync::Arc;

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::crypto::secret;
use authgate_actors::device::{CodeGrant, CodeIssue, DeviceMsg};
use authgate_actors::directory::{ClientRecord, GRANT_AUTHORIZATION_CODE, safe_redirect_uri};
use authgate_actors::time::Millis;
use authgate_actors::token::{AuthorizationQuery, AuthorizationStatus, TokenMsg};
use authgate_actors::{ErrorCode, OAuthError};
use hyper::StatusCode;
use hyper::header::{CONTENT_SECURITY_POLICY, HeaderValue, LOCATION};
use minijinja::context;
use serde::Serialize;

use crate::app::App;
use crate::handlers::oauth::resources_of;
use crate::handlers::web::{body_error_page, csrf_failure, login_redirect, reauth_redirect, viewer};
use crate::http::form::{self, Form};
use crate::http::response::{bytes, no_store};
use crate::http::{Request, Response};
use crate::render::Viewer;

/// The longest authorization request taken (it travels through the sign-in page's `next`).
const MAX_REQUEST: usize = 2000;
/// The longest `state` and `nonce` echoed.
const MAX_ECHOED: usize = 512;
/// A sign-in this recent counts as fresh for `prompt=login` and a `max_age` shorter than it
/// (the round trip through the sign-in form takes a moment).
const FRESH_MS: u64 = 10_000;

/// An authorization request whose client and redirect URI are known good.
struct AuthRequest {
    client: Arc<ClientRecord>,
    /// Where the answer goes, and whether the request named it.
    redirect_uri: String,
    redirect_given: bool,
    state: Option<String>,
}

/// What was asked for, once everything checked out.
struct Asked {
    scope: String,
    nonce: Option<String>,
    challenge: Option<String>,
    resources: Vec<String>,
    prompt: Prompt,
    /// OIDC `max_age` in seconds (`prompt=login` is 0): how recent the sign-in must be.
    max_age: Option<u64>,
}

#[derive(Default, PartialEq, Eq, Clone, Copy)]
struct Prompt {
    none: bool,
    consent: bool,
}

/// Why a request cannot go on.
enum Refusal {
    /// Nothing trustworthy to send the browser back to: a page says what is wrong.
    Page(&'static str, String),
    /// Sent back to the client, at its (checked) redirect URI.
    Back(Box<AuthRequest>, OAuthError),
}

fn page_error(app: &App, title: &'static str, message: &str, v: Option<&Viewer>) -> Response {
    app.pages.error(StatusCode::BAD_REQUEST, title, message, v)
}

/// The client and redirect URI of a request (a page when either is not good), and its `state`.
fn identify(app: &App, form: &Form) -> Result<AuthRequest, (&'static str, String)> {
    let unknown = || {
        (
            "Unknown application",
            "The application that sent you here is not registered with this server. Go back to it and try again, or ask its administrator."
                .to_owned(),
        )
    };
    let repeated = |what: &str| {
        (
            "Bad request",
            format!("The sign-in link names {what} more than once. Go back to the application and start again."),
        )
    };
    let client_id = form.one("client_id").map_err(|_| repeated("client_id"))?.ok_or_else(unknown)?;
    let client = app
        .actors
        .clients()
        .get(client_id)
        .cloned()
        .filter(|c| c.enabled)
        .ok_or_else(unknown)?;
    let given = form.one("redirect_uri").map_err(|_| repeated("redirect_uri"))?;
    // Registered, and (for URIs registered before the rules) a place a browser may be sent.
    let Some(redirect_uri) = client.redirect_uri(given).filter(|u| safe_redirect_uri(u)).map(str::to_owned) else {
        return Err((
            "Unregistered redirect address",
            format!(
                "{} asked to send you back to an address it has not registered, so AuthGate will not go there. \
                 If you are its developer, register the redirect URI in the admin console.",
                client.name
            ),
        ));
    };
    let state = form.one("state").ok().flatten().map(str::to_owned);
    Ok(AuthRequest {
        redirect_given: given.is_some(),
        client,
        redirect_uri,
        state,
    })
}

/// Everything else the request asks, checked; errors go back to the client.
fn asked(app: &App, ar: &AuthRequest, form: &Form) -> Result<Asked, OAuthError> {
    let bad = |m: &str| OAuthError::invalid_request(m.to_owned());
    if form.one("state")?.is_some_and(|s| s.len() > MAX_ECHOED) {
        return Err(bad(&format!("state is at most {MAX_ECHOED} bytes")));
    }
    if !ar.client.allows_grant(GRANT_AUTHORIZATION_CODE) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client is not allowed to use the authorization code grant",
        ));
    }
    match form.one("response_type")? {
        Some("code") => {}
        None | Some("") => return Err(bad("parameter response_type is required")),
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    if form.one("response_mode")?.is_some_and(|m| m != "query") {
        return Err(bad("only response_mode=query is supported"));
    }
    if form.one("request")?.is_some() {
        return Err(OAuthError::new(ErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if form.one("request_uri")?.is_some() {
        return Err(OAuthError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    let scope = ar.client.resolve_scope(form.one("scope")?)?;
    let nonce = form.one("nonce")?.filter(|n| !n.is_empty()).map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_ECHOED) {
        return Err(bad(&format!("nonce is at most {MAX_ECHOED} bytes")));
    }
    let challenge = match (form.one("code_challenge")?, form.one("code_challenge_method")?) {
        (None, None) => None,
        (Some(c), Some("S256")) if secret::valid_pkce_challenge(c) => Some(c.to_owned()),
        (Some(_), Some("S256")) => {
            return Err(bad(
                "code_challenge is the unpadded base64url SHA-256 of the verifier (43 characters)",
            ));
        }
        (Some(_), None | Some("plain")) => return Err(bad("code_challenge_method must be S256 (plain is not supported)")),
        (Some(_), Some(_)) => return Err(bad("code_challenge_method must be S256")),
        (None, Some(_)) => return Err(bad("code_challenge_method without code_challenge")),
    };
    if challenge.is_none() && (!ar.client.confidential || app.settings.pkce_required) {
        return Err(bad("PKCE is required: send code_challenge with code_challenge_method=S256"));
    }
    let resources = resources_of(app, form)?;
    ar.client.check_resources(&resources)?;
    let mut prompt = Prompt::default();
    let mut max_age = match form.one("max_age")? {
        None => None,
        Some(m) => Some(m.parse::<u64>().map_err(|_| bad("max_age is a number of seconds"))?),
    };
    let prompts: Vec<&str> = form.one("prompt")?.unwrap_or("").split_whitespace().collect();
    for p in &prompts {
        match *p {
            "none" => prompt.none = true,
            "consent" => prompt.consent = true,
            // A fresh sign-in: as `max_age=0` (OIDC Core §3.1.2.1).
            "login" => max_age = Some(0),
            // Only one account signs in per browser here.
            "select_account" => {}
            _ => return Err(bad("prompt is none, login, consent or select_account")),
        }
    }
    if prompt.none && prompts.len() > 1 {
        return Err(bad("prompt=none cannot be combined with another value"));
    }
    Ok(Asked {
        scope,
        nonce,
        challenge,
        resources,
        prompt,
        max_age,
    })
}

/// Parses and checks a whole request.
fn parse(app: &App, form: &Form) -> Result<(AuthRequest, Asked), Refusal> {
    let ar = identify(app, form).map_err(|(t, m)| Refusal::Page(t, m))?;
    match asked(app, &ar, form) {
        Ok(a) => Ok((ar, a)),
        Err(e) => Err(Refusal::Back(Box::new(ar), e)),
    }
}

impl AuthRequest {
    /// The redirect URI with `params`, `state` and `iss` (RFC 9207) added to its query.
    fn back_with(&self, app: &App, params: &[(&str, &str)]) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(state) = &self.state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &app.settings.base_url);
        let sep = if self.redirect_uri.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.redirect_uri, q.finish())
    }

    /// 303 to the client (its redirect URI was checked against the registered ones).
    fn send_back(&self, app: &App, params: &[(&str, &str)]) -> Response {
        let location = self.back_with(app, params);
        let Ok(value) = HeaderValue::from_str(&location) else {
            return page_error(app, "Bad request", "The redirect address cannot be used.", None);
        };
        let mut r = bytes(
            StatusCode::SEE_OTHER,
            HeaderValue::from_static("text/plain; charset=utf-8"),
            hyper::body::Bytes::new(),
        );
        r.headers_mut().insert(LOCATION, value);
        no_store(r)
    }

    fn send_error(&self, app: &App, e: &OAuthError) -> Response {
        self.send_back(app, &[("error", e.code.as_str()), ("error_description", &e.description)])
    }
}

fn refuse(app: &App, refusal: Refusal, v: Option<&Viewer>) -> Response {
    match refusal {
        Refusal::Back(ar, e) => ar.send_error(app, &e),
        Refusal::Page(title, message) => page_error(app, title, &message, v),
    }
}

/// `GET /oauth/authorize`
pub async fn authorize(app: &App, req: Request, now: Millis) -> Response {
    let raw = req.uri().query().unwrap_or("").to_owned();
    let v = viewer(app, &req, now).await;
    request(app, raw, v, app.ip(&req), now).await
}

/// An authorization request, from the query or a POSTed form (OIDC Core §3.1.2.1).
async fn request(app: &App, raw: String, v: Option<Viewer>, ip: Option<String>, now: Millis) -> Response {
    if raw.len() > MAX_REQUEST {
        return page_error(
            app,
            "Request too long",
            "This sign-in request is too long. Go back to the application and try again.",
            None,
        );
    }
    let (ar, asked) = match parse(app, &Form::parse(raw.as_bytes())) {
        Ok(ok) => ok,
        Err(refused) => return refuse(app, refused, v.as_ref()),
    };
    let Some(v) = v else {
        if asked.prompt.none {
            return ar.send_error(app, &OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in"));
        }
        return login_redirect(&format!("/oauth/authorize?{raw}"));
    };
    // prompt=login or max_age: a sign-in too old is made again (the form, even when signed in).
    if let Some(max_age) = asked.max_age
        && now.saturating_sub(v.signed_in_at_ms) > (max_age.saturating_mul(1000)).max(FRESH_MS)
    {
        if asked.prompt.none {
            return ar.send_error(app, &OAuthError::new(ErrorCode::LoginRequired, "a fresh sign-in is required"));
        }
        return reauth_redirect(&format!("/oauth/authorize?{raw}"));
    }
    if !asked.prompt.consent && remembered(app, &ar, &asked, &v, now).await {
        return approve(app, &ar, asked, &v, (ip, now), "remembered").await;
    }
    if asked.prompt.none {
        return ar.send_error(
            app,
            &OAuthError::new(ErrorCode::ConsentRequired, "the user has not approved this client"),
        );
    }
    consent_page(app, &ar, &asked, &v, &raw)
}

/// `POST /oauth/authorize`: Approve or Deny on the consent page. The request travels in the
/// form and is checked again whole; the session's CSRF token proves the person pressed it. A
/// POST that is not the consent form is an authorization request sent as a form.
pub async fn decide(app: &App, req: Request) -> Response {
    let now = crate::http::request_time();
    let ip = app.ip(&req);
    let v = viewer(app, &req, now).await;
    let form = match form::read_form(req).await {
        Ok(f) => f,
        Err(e) => return body_error_page(app, &e),
    };
    if form.first("action").is_none() && form.first("request").is_none() {
        return request(app, form.encoded(), v, ip, now).await;
    }
    let Some(v) = v else {
        return page_error(
            app,
            "Signed out",
            "You were signed out before you decided. Go back to the application and start again.",
            None,
        );
    };
    if !form.first("csrf_token").is_some_and(|t| secret::ct_eq(t, &v.csrf_token)) {
        return csrf_failure(app, Some(&v));
    }
    let raw = form.first("request").unwrap_or("");
    let (ar, asked) = match parse(app, &Form::parse(raw.as_bytes())) {
        Ok(ok) => ok,
        Err(refused) => return refuse(app, refused, Some(&v)),
    };
    match form.first("action") {
        Some("approve") => approve(app, &ar, asked, &v, (ip, now), "approved").await,
        Some("deny") => {
            app.actors.audit(
                AuditEvent::new(now, EventKind::ConsentDenied, v.username.clone(), true)
                    .client(ar.client.client_id.clone())
                    .ip(ip)
                    .detail(format!("scope {}", asked.scope)),
            );
            ar.send_error(app, &OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"))
        }
        _ => page_error(app, "Bad request", "Choose Approve or Deny.", Some(&v)),
    }
}

/// Issues the code and sends the browser back with it.
async fn approve(app: &App, ar: &AuthRequest, asked: Asked, v: &Viewer, (ip, now): (Option<String>, Millis), how: &str) -> Response {
    let issue = CodeIssue {
        client_id: ar.client.client_id.clone(),
        scope: asked.scope.clone(),
        resources: asked.resources,
        user_id: v.user_id.clone(),
        username: v.username.clone(),
        auth_time: Some(v.signed_in_at_ms / 1000),
        code: CodeGrant {
            redirect_uri: ar.redirect_uri.clone(),
            redirect_given: ar.redirect_given,
            challenge: asked.challenge,
            nonce: asked.nonce,
        },
    };
    let issued = app
        .actors
        .device()
        .ask(|reply| DeviceMsg::IssueCode {
            issue: Box::new(issue),
            now,
            reply,
        })
        .await
        .and_then(|r| r);
    match issued {
        Ok(code) => {
            app.actors.audit(
                AuditEvent::new(now, EventKind::ConsentGranted, v.username.clone(), true)
                    .client(ar.client.client_id.clone())
                    .ip(ip)
                    .detail(format!("{how}; scope {}", asked.scope)),
            );
            ar.send_back(app, &[("code", &code)])
        }
        // RFC 6749 §4.1.2.1: the client hears that the server could not answer now.
        Err(_) => ar.send_error(
            app,
            &OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the server could not save the approval; try again",
            ),
        ),
    }
}

/// Whether this person already approved this client for at least this much, so it need not
/// ask again: only for a confidential client, whose identity its secret proves when it
/// redeems the code (RFC 8252 §8.6: a public client's cannot be, so it is always asked), and
/// only while an authorization of that client with every scope asked for is still active (so
/// revoking it in My devices withdraws the consent). Resources always ask again.
async fn remembered(app: &App, ar: &AuthRequest, asked: &Asked, v: &Viewer, now: Millis) -> bool {
    // Only to a web server's https address: a loopback port or an app's own scheme can be
    // taken by any program on the machine, and a desktop app's "secret" is in its binary.
    if !ar.client.confidential || !asked.resources.is_empty() || !ar.redirect_uri.starts_with("https://") {
        return false;
    }
    let query = AuthorizationQuery {
        user_id: Some(v.user_id.clone()),
        status: Some(AuthorizationStatus::Active),
        ..AuthorizationQuery::default()
    };
    let Ok(list) = app
        .actors
        .token()
        .ask(|reply| TokenMsg::ListAuthorizations { query, now, reply })
        .await
    else {
        return false;
    };
    list.iter().any(|a| {
        a.client_id == ar.client.client_id
            && a.status == AuthorizationStatus::Active
            && asked.scope.split_whitespace().all(|w| a.scope.split_whitespace().any(|g| g == w))
    })
}

/// What one scope lets the client do, in words.
#[derive(Serialize)]
struct ScopeLine {
    name: String,
    about: Option<&'static str>,
}

fn scope_lines(scope: &str) -> Vec<ScopeLine> {
    scope
        .split_whitespace()
        .map(|s| ScopeLine {
            name: s.to_owned(),
            about: match s {
                "openid" => Some("know who you are (your account id)"),
                "profile" => Some("see your username and name"),
                "email" => Some("see your email address"),
                "offline_access" => Some("stay signed in when you are not using it"),
                _ => None,
            },
        })
        .collect()
}

/// Where the redirect URI leads, as a person should read it: the host (with its port), or the
/// app's own scheme.
fn redirect_host(uri: &str) -> String {
    match uri.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?']).next().unwrap_or(rest).to_owned(),
        None => uri.split(':').next().map(|s| format!("the app {s}")).unwrap_or_default(),
    }
}

/// The origin a form may be sent on to: the browser checks `form-action` against the redirect
/// that follows the Approve press too.
fn form_target(uri: &str) -> Option<String> {
    let origin = match uri.split_once("://") {
        // CSP host sources have no IPv6 literals: for [::1] the scheme alone (the loopback
        // listener is the only http a client can register).
        Some((scheme, rest)) if rest.starts_with('[') => format!("{scheme}:"),
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?']).next().unwrap_or(rest)),
        None => format!("{}:", uri.split(':').next()?),
    };
    origin
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b";,'\"".contains(&b))
        .then_some(origin)
}

fn consent_page(app: &App, ar: &AuthRequest, asked: &Asked, v: &Viewer, raw: &str) -> Response {
    let mut r = app.pages.page(
        StatusCode::OK,
        "authorize.html",
        context! {
            user => v.ctx(), csrf_token => v.csrf_token.clone(), request => raw,
            client_name => ar.client.name.clone(), client_id => ar.client.client_id.clone(),
            description => ar.client.description.clone(), scopes => scope_lines(&asked.scope),
            redirect_host => redirect_host(&ar.redirect_uri), resources => asked.resources.clone(),
            remembers => ar.client.confidential,
        },
    );
    let target = form_target(&ar.redirect_uri).unwrap_or_default();
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {target}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(CONTENT_SECURITY_POLICY, value);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consent_page_names_where_the_browser_goes() {
        assert_eq!(redirect_host("https://app.example:8443/cb?x=1"), "app.example:8443");
        assert_eq!(redirect_host("http://127.0.0.1:5000/callback"), "127.0.0.1:5000");
        assert_eq!(redirect_host("com.example.app:/oauth"), "the app com.example.app");
        assert_eq!(form_target("https://app.example/cb").as_deref(), Some("https://app.example"));
        assert_eq!(form_target("com.example.app:/cb").as_deref(), Some("com.example.app:"));
        assert_eq!(form_target("https://a.example;script-src/x"), None);
        assert_eq!(form_target("http://[::1]:8400/cb").as_deref(), Some("http:"));
        assert_eq!(form_target("http://127.0.0.1:8400/cb").as_deref(), Some("http://127.0.0.1:8400"));
    }
}
