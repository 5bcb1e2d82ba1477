//! The one OAuth error type. Actors put these inside their replies; the front end maps each
//! code to an HTTP status and a JSON body in exactly one place (`src/http/error.rs`).

use std::borrow::Cow;
use std::fmt;

/// The error codes of RFC 6749 §5.2, RFC 8628 §3.5, RFC 6750 §3.1, RFC 7009 §2.2.1 and
/// RFC 8707 §2.
/// `Display` is the wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// RFC 6749 §5.2: "The request is missing a required parameter, includes an unsupported
    /// parameter value (other than grant type), repeats a parameter, ... or is otherwise malformed."
    InvalidRequest,
    /// RFC 6749 §5.2: "Client authentication failed (e.g., unknown client, no client
    /// authentication included, or unsupported authentication method)."
    InvalidClient,
    /// RFC 6749 §5.2: "The provided authorization grant ... or refresh token is invalid, expired,
    /// revoked, ... or was issued to another client."
    InvalidGrant,
    /// RFC 6749 §5.2: "The authenticated client is not authorized to use this authorization grant type."
    UnauthorizedClient,
    /// RFC 6749 §5.2: "The authorization grant type is not supported by the authorization server."
    UnsupportedGrantType,
    /// RFC 6749 §5.2: "The requested scope is invalid, unknown, malformed, or exceeds the scope
    /// granted by the resource owner."
    InvalidScope,
    /// RFC 8628 §3.5: "The authorization request is still pending as the end user hasn't yet
    /// completed the user-interaction steps."
    AuthorizationPending,
    /// RFC 8628 §3.5: "the client MUST also increase its polling interval by 5 seconds."
    SlowDown,
    /// RFC 8628 §3.5: "The authorization request was denied."
    AccessDenied,
    /// RFC 8628 §3.5: "The "device_code" has expired, and the device authorization session has concluded."
    ExpiredToken,
    /// RFC 6750 §3.1: "The access token provided is expired, revoked, malformed, or invalid."
    InvalidToken,
    /// RFC 6750 §3.1: "The request requires higher privileges than provided by the access token."
    InsufficientScope,
    /// RFC 7009 §2.2.1: "The authorization server does not support the revocation of the presented token type."
    UnsupportedTokenType,
    /// RFC 8707 §2: "The requested resource is invalid, missing, unknown, or malformed."
    InvalidTarget,
    /// RFC 6749 §4.1.2.1: "The authorization server encountered an unexpected condition."
    ServerError,
    /// RFC 6749 §4.1.2.1: "The authorization server is currently unable to handle the request due
    /// to a temporary overloading or maintenance of the server."
    TemporarilyUnavailable,
    /// RFC 6749 §4.1.2.1: "The authorization server does not support obtaining an
    /// authorization code using this method."
    UnsupportedResponseType,
    /// OIDC Core §3.1.2.6: the user must sign in, and `prompt=none` forbids asking.
    LoginRequired,
    /// OIDC Core §3.1.2.6: the user must consent, and `prompt=none` forbids asking.
    ConsentRequired,
    /// OIDC Core §3.1.2.6: the `request` parameter (a request object) is not supported.
    RequestNotSupported,
    /// OIDC Core §3.1.2.6: the `request_uri` parameter is not supported.
    RequestUriNotSupported,
}

impl ErrorCode {
    /// How many codes there are (each `as usize` is below it).
    pub const COUNT: usize = Self::RequestUriNotSupported as usize + 1;

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidTarget => "invalid_target",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth error: the wire code and a human-readable description (never containing a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }
    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn invalid_token(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidToken, d)
    }
    pub fn server_error(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ServerError, d)
    }
    pub fn invalid_target(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidTarget, d)
    }

    pub fn unavailable(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::TemporarilyUnavailable, d)
    }
}

impl From<crate::store::port::StoreError> for OAuthError {
    fn from(e: crate::store::port::StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        if matches!(e, crate::store::port::StoreError::Unavailable(_)) {
            return Self::unavailable("the database is unavailable; try again shortly");
        }
        Self::server_error("the server could not record the change; try again")
    }
}
