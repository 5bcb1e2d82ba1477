//! What a client or resource server discovers without asking anyone: the authorization server
//! metadata (RFC 8414, served also as OpenID Connect Discovery's `openid-configuration`: one
//! document, so the two never disagree) and the JWK Set of the keys that verify access tokens
//! and id_tokens. Both are public, cacheable, and readable from browser code (CORS).

use authgate_actors::directory::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, OIDC_SCOPES};
use hyper::StatusCode;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL,
    HeaderValue,
};
use serde::Serialize;

use crate::app::App;
use crate::config::Settings;
use crate::http::Response;
use crate::http::response::bytes;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const JWK_SET: HeaderValue = HeaderValue::from_static("application/jwk-set+json");

/// RFC 8414 §2 (and RFC 8628 §4 for the device endpoint).
#[derive(Serialize)]
struct Metadata<'a> {
    issuer: &'a str,
    authorization_endpoint: String,
    device_authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    grant_types_supported: [&'static str; 4],
    /// The authorization code grant only (no implicit or hybrid flows, RFC 9700 §2.1.2).
    response_types_supported: [&'static str; 1],
    response_modes_supported: [&'static str; 1],
    /// RFC 7636: S256 only (`plain` gives no protection against a code seen in transit).
    code_challenge_methods_supported: [&'static str; 1],
    /// RFC 9207: the authorization response carries `iss`.
    authorization_response_iss_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    /// The algorithm access tokens are signed with.
    token_signing_alg_values_supported: [&'static str; 1],
    /// OpenID Connect on the device grant: `id_token`s (always asymmetric) and userinfo.
    userinfo_endpoint: String,
    id_token_signing_alg_values_supported: [&'static str; 1],
    subject_types_supported: [&'static str; 1],
    scopes_supported: [&'static str; 4],
    claims_supported: [&'static str; 11],
    service_documentation: String,
}

/// The metadata document, built once at start-up (nothing in it changes while running).
pub fn metadata_document(settings: &Settings) -> String {
    let base = settings.base_url.trim_end_matches('/');
    let doc = Metadata {
        issuer: &settings.base_url,
        authorization_endpoint: format!("{base}/oauth/authorize"),
        device_authorization_endpoint: format!("{base}/oauth/device/code"),
        token_endpoint: format!("{base}/oauth/token"),
        revocation_endpoint: format!("{base}/oauth/revoke"),
        introspection_endpoint: format!("{base}/oauth/introspect"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        grant_types_supported: [
            GRANT_AUTHORIZATION_CODE,
            GRANT_DEVICE_CODE,
            GRANT_REFRESH_TOKEN,
            GRANT_CLIENT_CREDENTIALS,
        ],
        response_types_supported: ["code"],
        response_modes_supported: ["query"],
        code_challenge_methods_supported: ["S256"],
        authorization_response_iss_parameter_supported: true,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post", "none"],
        introspection_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
        token_signing_alg_values_supported: [settings.jwt_signing_algorithm.name()],
        userinfo_endpoint: format!("{base}/oauth/userinfo"),
        // With HS256 access tokens, id_tokens get a generated ES256 key of their own.
        id_token_signing_alg_values_supported: [if settings.jwt_signing_algorithm.asymmetric() {
            settings.jwt_signing_algorithm.name()
        } else {
            "ES256"
        }],
        subject_types_supported: ["public"],
        scopes_supported: OIDC_SCOPES,
        claims_supported: [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "preferred_username",
            "name",
            "email",
        ],
        service_documentation: format!("{base}/device"),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn public(mut r: Response, max_age: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(max_age));
    r
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub fn metadata(app: &App) -> Response {
    public(bytes(StatusCode::OK, JSON, app.metadata.clone()), "public, max-age=3600")
}

/// `GET /.well-known/jwks.json`: the signing key and the retired keys that still verify
/// (with HS256, whose key is secret, only the key that signs id_tokens).
pub fn jwks(app: &App) -> Response {
    // Short: after a key rotation (a restart) resource servers see the new key within a minute
    // even if they do not refetch on an unknown `kid`.
    public(bytes(StatusCode::OK, JWK_SET, app.keys.jwks().to_owned()), "public, max-age=60")
}

/// A CORS preflight for the two documents above.
pub fn preflight() -> Response {
    let mut r = public(bytes(StatusCode::NO_CONTENT, JSON, ""), "public, max-age=86400");
    let h = r.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    r
}
