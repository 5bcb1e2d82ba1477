//! The OAuth endpoints: device authorization (RFC 8628 §3.1), token (RFC 6749 §4/§6 and RFC 8628
//! §3.4), token info, revocation (RFC 7009) and introspection (RFC 7662). Each parses, asks an actor, and renders.

use std::sync::Arc;

use authgate_actors::audit::{AuditEvent, EventKind};
use authgate_actors::crypto::keys::Audience;
use authgate_actors::crypto::secret;
use authgate_actors::device::{CodeExchange, DeviceMsg};
use authgate_actors::directory::{
    ClientRecord, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, OIDC_SCOPES, valid_resource,
};
use authgate_actors::time::Millis;
use authgate_actors::token::{Grant, RefreshRequest, RevokeTarget, TokenInfo, TokenKind, TokenMsg, TokenResponse, invalid_token};
use authgate_actors::{ErrorCode, OAuthError};
use hyper::StatusCode;
use serde::Serialize;

use crate::app::App;
use crate::http::form::{self, ClientCredentials, Form};
use crate::http::guard::{address_key, retry_after_secs};
use crate::http::response::{json, no_store, oauth_error, too_many_requests};
use crate::http::{Request, Response};

/// Turns a handler's result into a response: the OAuth error mapping is applied here only.
fn respond(r: Result<Response, OAuthError>) -> Response {
    r.unwrap_or_else(|e| oauth_error(&e))
}

/// The client credentials and form of a POST, and the time it was complete (Unix ms).
async fn read_oauth_form(req: Request) -> Result<(Option<ClientCredentials>, Form, Millis), OAuthError> {
    let basic = form::basic_credentials(req.headers())?;
    let form = form::read_form(req).await.map_err(|e| OAuthError::invalid_request(e.to_string()))?;
    let creds = form::merge_credentials(basic, &form)?;
    Ok((creds, form, crate::http::request_time()))
}

/// Authenticates the client named by the request, which must name one.
fn authenticate(app: &App, creds: Option<ClientCredentials>) -> Result<Arc<ClientRecord>, OAuthError> {
    let creds = creds.ok_or_else(|| OAuthError::invalid_request("parameter client_id is required"))?;
    app.actors.clients().authenticate(&creds.client_id, creds.secret.as_deref())
}

fn require_grant(client: &ClientRecord, grant: &str) -> Result<(), OAuthError> {
    if client.allows_grant(grant) {
        Ok(())
    } else {
        Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client is not allowed to use this grant type",
        ))
    }
}

#[derive(Serialize)]
struct DeviceAuthorizationResponse {
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: String,
    expires_in: u64,
    interval: u64,
}

/// `POST /oauth/device/code`
pub async fn device_code(app: &App, req: Request, arrived: Millis) -> Response {
    let addr = app.addr(&req);
    if let Err(wait) = app.guard.device_codes.hit(&addr.map(address_key).unwrap_or_default(), arrived) {
        return too_many_requests("too many device codes requested from this address", retry_after_secs(wait));
    }
    respond(
        async {
            let (creds, form, now) = read_oauth_form(req).await?;
            let client = authenticate(app, creds)?;
            require_grant(&client, GRANT_DEVICE_CODE)?;
            let scope = client.resolve_scope(form.one("scope")?)?;
            let resources = resources_of(app, &form)?;
            client.check_resources(&resources)?;
            let note = format!("scope {scope}");
            let client_id = client.client_id.clone();
            let code = app
                .actors
                .device()
                .ask(|reply| DeviceMsg::Create {
                    client_id,
                    scope,
                    from: addr.map(|a| a.to_string()),
                    resources,
                    now,
                    reply,
                })
                .await??;
            app.actors.audit(
                AuditEvent::new(now, EventKind::DeviceCodeIssued, format!("client:{}", client.client_id), true)
                    .client(client.client_id.clone())
                    .ip(addr.map(|a| a.to_string()))
                    .detail(note),
            );
            let verification_uri = format!("{}/device", app.settings.base_url);
            Ok(json(
                StatusCode::OK,
                &DeviceAuthorizationResponse {
                    verification_uri_complete: format!("{verification_uri}?user_code={}", code.user_code),
                    verification_uri,
                    device_code: code.device_code,
                    user_code: code.user_code,
                    expires_in: code.expires_in,
                    interval: code.interval,
                },
            ))
        }
        .await,
    )
}

/// Counts a device-code poll by its answer.
fn count_poll<T>(app: &App, polled: &Result<T, OAuthError>) {
    let outcome = match polled {
        Ok(_) => "success",
        Err(e) => match e.code {
            ErrorCode::AuthorizationPending => "pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "denied",
            ErrorCode::ExpiredToken => "expired",
            _ => "invalid",
        },
    };
    let m = app.actors.metrics();
    m.polls.get_or_create(&authgate_actors::metrics::OutcomeLabel { outcome }).inc();
}

/// `POST /oauth/token`
pub async fn token(app: &App, req: Request) -> Response {
    let addr = app.addr(&req);
    respond(
        async {
            let (creds, form, now) = read_oauth_form(req).await?;
            let grant_type = form.required("grant_type")?;
            if ![
                GRANT_DEVICE_CODE,
                GRANT_AUTHORIZATION_CODE,
                GRANT_REFRESH_TOKEN,
                GRANT_CLIENT_CREDENTIALS,
            ]
            .contains(&grant_type)
            {
                return Err(OAuthError::new(
                    ErrorCode::UnsupportedGrantType,
                    "supported grant types: device_code, authorization_code, refresh_token, client_credentials",
                ));
            }
            let (kind, tokens, client_id) = if grant_type == GRANT_CLIENT_CREDENTIALS {
                let client = authenticate(app, creds)?;
                // Each token is a record: a client that asks per request is told to reuse.
                if let Err(wait) = app.guard.client_tokens.hit(&client.client_id, now) {
                    return Ok(too_many_requests(
                        "too many client-credentials tokens for this client; reuse the one you have",
                        retry_after_secs(wait),
                    ));
                }
                let tokens = client_credentials(app, &client, (form.one("scope")?, resources_of(app, &form)?), now).await?;
                (EventKind::TokenIssued, tokens, client.client_id.clone())
            } else if grant_type == GRANT_DEVICE_CODE {
                let device_code_hash = secret::sha256(form.required("device_code")?);
                let client = authenticate(app, creds)?;
                require_grant(&client, GRANT_DEVICE_CODE)?;
                let resources = resources_of(app, &form)?;
                let client_id = client.client_id.clone();
                let polled = app
                    .actors
                    .device()
                    .ask_within(app.settings.token_wait(), |reply| DeviceMsg::Poll {
                        device_code_hash,
                        client_id,
                        resources,
                        now,
                        reply,
                    })
                    .await?;
                count_poll(app, &polled);
                let tokens = polled?;
                (EventKind::TokenIssued, tokens, client.client_id.clone())
            } else if grant_type == GRANT_AUTHORIZATION_CODE {
                let code_hash = secret::sha256(form.required("code")?);
                let redirect_uri = form.one("redirect_uri")?.map(str::to_owned);
                let verifier = form.one("code_verifier")?.map(str::to_owned);
                let client = authenticate(app, creds)?;
                require_grant(&client, GRANT_AUTHORIZATION_CODE)?;
                let resources = resources_of(app, &form)?;
                let client_id = client.client_id.clone();
                let tokens = app
                    .actors
                    .device()
                    .ask_within(app.settings.token_wait(), |reply| DeviceMsg::Exchange {
                        request: Box::new(CodeExchange {
                            code_hash,
                            client_id,
                            redirect_uri,
                            verifier,
                            resources,
                            now,
                        }),
                        reply,
                    })
                    .await??;
                (EventKind::TokenIssued, tokens, client.client_id.clone())
            } else {
                let presented = form.required("refresh_token")?;
                let scope = form.one("scope")?.map(str::to_owned);
                let client = authenticate(app, creds)?;
                require_grant(&client, GRANT_REFRESH_TOKEN)?;
                let request = RefreshRequest {
                    resources: resources_of(app, &form)?,
                    ..RefreshRequest::new(presented, client.client_id.clone(), scope, now)
                };
                let tokens = app
                    .actors
                    .token()
                    .ask_within(app.settings.token_wait(), |reply| TokenMsg::Refresh { request, reply })
                    .await??;
                (EventKind::TokenRefreshed, tokens, client.client_id.clone())
            };
            app.actors.audit(
                AuditEvent::new(now, kind, format!("client:{client_id}"), true)
                    // Client credentials: the client is its own subject.
                    .subject(if tokens.username.is_empty() {
                        format!("client:{client_id}")
                    } else {
                        tokens.username.clone()
                    })
                    .client(client_id)
                    .ip(addr.map(|a| a.to_string()))
                    .detail(format!("scope {}", tokens.scope)),
            );
            Ok(json(StatusCode::OK, &tokens))
        }
        .await,
    )
}

/// RFC 8707 §2: the `resource` parameters of a request (repeatable), each an absolute URI
/// without a fragment, else `invalid_target`; whether the client may name them is checked by
/// its own list ([`ClientRecord::check_resources`]).
pub(crate) fn resources_of(app: &App, form: &Form) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    if form.all("resource").next().is_some() && app.settings.token_provider_mode != crate::config::ProviderMode::Local {
        // The token service's contract has no word for the audience it would have to set.
        return Err(OAuthError::invalid_target(
            "resource indicators are not available while an external token service mints tokens",
        ));
    }
    for r in form.all("resource") {
        if !valid_resource(r) {
            return Err(OAuthError::invalid_target("a resource is an absolute URI without a fragment"));
        }
        if !out.iter().any(|o| o == r) {
            out.push(r.to_owned());
        }
        if out.len() > 10 {
            return Err(OAuthError::invalid_target("at most 10 resources"));
        }
    }
    Ok(out)
}

/// RFC 6749 §4.4: a confidential client, authenticated, with the grant enabled, gets an access
/// token for itself (`sub` is the client): no refresh token, and `openid` is refused (there is
/// no person to say anything about).
async fn client_credentials(
    app: &App,
    client: &ClientRecord,
    (scope, resources): (Option<&str>, Vec<String>),
    now: Millis,
) -> Result<TokenResponse, OAuthError> {
    if !client.confidential {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "client credentials are for confidential clients",
        ));
    }
    require_grant(client, GRANT_CLIENT_CREDENTIALS)?;
    if app.settings.token_provider_mode != crate::config::ProviderMode::Local {
        // The token service's contract mints for a user; it has no word for a client alone.
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "client credentials are not available while an external token service mints tokens",
        ));
    }
    client.check_resources(&resources)?;
    let oidc = |s: &str| OIDC_SCOPES.contains(&s);
    if scope.is_some_and(|s| s.split_whitespace().any(oidc)) {
        return Err(OAuthError::invalid_scope(
            "the OpenID Connect scopes are about a person; client credentials act for the client",
        ));
    }
    // Asked for nothing: the client's own scopes, less any OpenID Connect one configured.
    let scope = match scope.map(str::trim).filter(|s| !s.is_empty()) {
        Some(_) => client.resolve_scope(scope)?,
        None => client.scopes.iter().filter(|s| !oidc(s)).cloned().collect::<Vec<_>>().join(" "),
    };
    let grant = Grant {
        user_id: client.client_id.clone(),
        username: String::new(),
        client_id: client.client_id.clone(),
        scope,
        authorization_id: uuid::Uuid::new_v4().to_string(),
        name: None,
        auth_time: None,
        machine: true,
        audience: resources.clone(),
        resources,
        nonce: None,
    };
    app.actors
        .token()
        .ask_within(app.settings.token_wait(), |reply| TokenMsg::IssueForGrant { grant, now, reply })
        .await?
}

/// `GET /oauth/tokeninfo` with `?access_token=` or `Authorization: Bearer`.
pub async fn tokeninfo(app: &App, req: Request, now: Millis) -> Response {
    respond(
        async {
            let query = form::query(&req);
            let token = match (form::bearer_token(req.headers()), query.one("access_token")?) {
                (Some(_), Some(_)) => return Err(OAuthError::invalid_request("send the token once, not in both header and query")),
                (Some(t), None) | (None, Some(t)) if !t.is_empty() => t,
                _ => return Err(OAuthError::invalid_request("an access token is required")),
            };
            let info = validate_access(app, token, now).await?;
            Ok(json(StatusCode::OK, &info))
        }
        .await,
    )
}

/// Whether `token` is an access token that is active now: one of our JWTs with its record, or
/// one the token service minted.
async fn validate_access(app: &App, token: &str, now: Millis) -> Result<TokenInfo, OAuthError> {
    let actor = app.actors.token();
    match app.keys.verify(token, now / 1000) {
        Some(claims) => Ok(actor
            .ask(|reply| TokenMsg::Validate {
                jti: claims.jti,
                now,
                reply,
            })
            .await??),
        // Not a JWT of ours: perhaps one the token service minted.
        None if app.keys.verify_ignoring_expiry(token, now / 1000).is_none() && token.len() <= 8192 => {
            let token = token.to_owned();
            Ok(actor
                .ask_within(app.settings.token_wait(), |reply| TokenMsg::ValidateOpaque { token, now, reply })
                .await??)
        }
        None => Err(invalid_token()),
    }
}

/// What `/oauth/userinfo` says of the user an access token was issued to (OIDC Core §5.3):
/// `sub` always, `preferred_username` and `name` with `profile`, `email` with `email`.
#[derive(Serialize)]
struct UserInfo {
    sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

/// `GET` or `POST /oauth/userinfo` with `Authorization: Bearer` (OIDC Core §5.3). The token
/// must be active and carry `openid`; anything else is 401 `invalid_token` or 403
/// `insufficient_scope`, with a `WWW-Authenticate` challenge.
pub async fn userinfo(app: &App, req: Request, now: Millis) -> Response {
    respond(
        async {
            let token = form::bearer_token(req.headers())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| OAuthError::invalid_token("an access token is required (Authorization: Bearer)"))?;
            let info = validate_access(app, token, now).await?;
            let has = |s: &str| info.scope.split_whitespace().any(|w| w == s);
            if !has("openid") {
                return Err(OAuthError::new(
                    ErrorCode::InsufficientScope,
                    "the access token was not issued for the openid scope",
                ));
            }
            let clients = app.actors.clients();
            let profile = clients.profile(&info.user_id).ok_or_else(invalid_token)?;
            let answer = UserInfo {
                sub: info.user_id.clone(),
                preferred_username: has("profile").then(|| profile.username.clone()),
                name: profile.name.clone().filter(|_| has("profile")),
                email: profile.email.clone().filter(|_| has("email")),
            };
            Ok(no_store(json(StatusCode::OK, &answer)))
        }
        .await,
    )
}

/// `POST /oauth/revoke` (RFC 7009): 200 for every well-formed request.
pub async fn revoke(app: &App, req: Request) -> Response {
    let addr = app.addr(&req);
    respond(
        async {
            let (creds, form, now) = read_oauth_form(req).await?;
            let token = form.required("token")?;
            // The hint is optional and only an optimisation (RFC 7009 §2.1); the token's own form
            // tells its type, so the hint is checked for repetition and otherwise ignored.
            form.one("token_type_hint")?;
            let client_id = match creds {
                Some(creds) => Some(authenticate(app, Some(creds))?.client_id.clone()),
                None => None,
            };
            // A JWT we signed is an access token; anything else may be a refresh token or an
            // access token the token service minted.
            let target = match app.keys.verify_ignoring_expiry(token, now / 1000) {
                Some(claims) => RevokeTarget::AccessId(claims.jti),
                None => RevokeTarget::Hash(secret::sha256(token)),
            };
            let by = client_id.clone();
            let revoked = app
                .actors
                .token()
                .ask(|reply| TokenMsg::Revoke { target, client_id, reply })
                .await??;
            if let Some(subject) = revoked {
                let actor = by.as_deref().map_or_else(|| "anonymous".to_owned(), |c| format!("client:{c}"));
                app.actors.audit(
                    AuditEvent::new(now, EventKind::TokenRevoked, actor, true)
                        .subject(subject)
                        .ip(addr.map(|a| a.to_string()))
                        .detail("RFC 7009"),
                );
            }
            Ok(no_store(crate::http::response::bytes(
                StatusCode::OK,
                hyper::header::HeaderValue::from_static("application/json"),
                "{}",
            )))
        }
        .await,
    )
}

/// An RFC 7662 answer; inactive tokens say only `{"active":false}`.
#[derive(Serialize, Default)]
struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// `POST /oauth/introspect` (RFC 7662). The caller authenticates as a client (Basic or body).
/// A confidential client (a resource server) may introspect any token; a public client only
/// the tokens issued to it. Unknown, expired, revoked or foreign tokens are `{"active":false}`.
pub async fn introspect(app: &App, req: Request) -> Response {
    respond(
        async {
            let (creds, form, now) = read_oauth_form(req).await?;
            // RFC 7662 §2.1: the caller must authenticate; without credentials that is
            // invalid_client (401 with a Basic challenge), per RFC 6749 §5.2.
            let creds = creds.ok_or_else(|| OAuthError::invalid_client("client authentication is required to introspect"))?;
            let client = authenticate(app, Some(creds))?;
            let token = form.required("token")?;
            // The hint only speeds a search (RFC 7662 §2.1); every kind is looked up anyway.
            form.one("token_type_hint")?;
            let inactive = || Ok(json(StatusCode::OK, &Introspection::default()));
            let target = match app.keys.verify(token, now / 1000) {
                Some(claims) => RevokeTarget::AccessId(claims.jti),
                // One of our JWTs, but expired or not ours to vouch for any more.
                None if app.keys.verify_ignoring_expiry(token, now / 1000).is_some() => return inactive(),
                None if token.len() > 8192 => return inactive(),
                None => RevokeTarget::Hash(secret::sha256(token)),
            };
            let record = app.actors.token().ask(|reply| TokenMsg::Introspect { target, now, reply }).await?;
            let Some(r) = record.filter(|r| client.confidential || r.client_id == client.client_id) else {
                return inactive();
            };
            let access = r.kind == TokenKind::Access;
            Ok(json(
                StatusCode::OK,
                &Introspection {
                    active: true,
                    scope: Some(r.scope),
                    // None for client credentials: there is no user.
                    username: (!r.username.is_empty()).then_some(r.username),
                    token_type: Some(if access { "Bearer" } else { "refresh_token" }),
                    exp: Some(r.expires_at),
                    iat: Some(r.issued_at),
                    sub: Some(r.user_id),
                    // An access token's resources (RFC 8707), else its client.
                    aud: Some(Audience::of(if access { &r.resources } else { &[] }, &r.client_id)),
                    client_id: Some(r.client_id),
                    iss: Some(app.settings.base_url.clone()),
                    jti: access.then_some(r.id),
                },
            ))
        }
        .await,
    )
}
