//! Response builders, and the one mapping from [`OAuthError`] to status, headers and body.

use authgate_actors::{ErrorCode, OAuthError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, PRAGMA, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};
use serde::Serialize;

use super::Response;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

pub fn bytes(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    // Room for every header a response gets (caching, cookies, the security set) at once.
    r.headers_mut().reserve(12);
    r.headers_mut().insert(CONTENT_TYPE, content_type);
    r
}

/// A JSON response that no cache may keep (every OAuth response is one).
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => no_store(bytes(status, JSON, body)),
        Err(_) => oauth_error(&OAuthError::server_error("could not encode the response")),
    }
}

pub fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    r.headers_mut().insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub fn html(status: StatusCode, body: String) -> Response {
    no_store(bytes(status, HTML, body))
}

/// 303 See Other to a local path.
pub fn redirect(location: &str) -> Response {
    let mut r = bytes(
        StatusCode::SEE_OTHER,
        HeaderValue::from_static("text/plain; charset=utf-8"),
        Bytes::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    no_store(r)
}

/// Adds `Retry-After: secs`.
pub fn with_retry_after(mut r: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

/// 429 for a client that asks too often: the OAuth error body (`temporarily_unavailable`, the
/// closest RFC 6749 code) with `Retry-After`.
pub fn too_many_requests(description: &'static str, secs: u64) -> Response {
    let mut r = oauth_error(&OAuthError::unavailable(description));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    with_retry_after(r, secs)
}

pub fn with_cookies(mut r: Response, cookies: impl IntoIterator<Item = String>) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(SET_COOKIE, v);
        }
    }
    r
}

/// The HTTP status of each OAuth error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidGrant
        | ErrorCode::UnauthorizedClient
        | ErrorCode::UnsupportedGrantType
        | ErrorCode::InvalidScope
        | ErrorCode::AuthorizationPending
        | ErrorCode::SlowDown
        | ErrorCode::AccessDenied
        | ErrorCode::ExpiredToken
        | ErrorCode::InvalidTarget
        | ErrorCode::UnsupportedTokenType
        | ErrorCode::UnsupportedResponseType
        | ErrorCode::LoginRequired
        | ErrorCode::ConsentRequired
        | ErrorCode::RequestNotSupported
        | ErrorCode::RequestUriNotSupported => StatusCode::BAD_REQUEST,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

/// The body of an error whose description is fixed text, encoded once per code: a pending
/// poll, the most frequent answer there is, costs a comparison instead of a serialisation.
static FIXED_BODIES: [std::sync::OnceLock<(&'static str, Bytes)>; ErrorCode::COUNT] =
    [const { std::sync::OnceLock::new() }; ErrorCode::COUNT];

fn error_body(e: &OAuthError) -> Result<Bytes, serde_json::Error> {
    let encode = || {
        serde_json::to_vec(&ErrorBody {
            error: e.code.as_str(),
            error_description: &e.description,
        })
        .map(Bytes::from)
    };
    let std::borrow::Cow::Borrowed(description) = e.description else {
        return encode();
    };
    let Some(slot) = FIXED_BODIES.get(e.code as usize) else {
        return encode();
    };
    match slot.get() {
        Some((d, body)) if *d == description => Ok(body.clone()),
        Some(_) => encode(),
        None => {
            let body = encode()?;
            let _ = slot.set((description, body.clone()));
            Ok(body)
        }
    }
}

/// RFC 6749 §5.2: `{"error", "error_description"}` with the status and headers the code needs.
pub fn oauth_error(e: &OAuthError) -> Response {
    let mut r = match error_body(e) {
        Ok(b) => no_store(bytes(status_of(e.code), JSON, b)),
        Err(_) => no_store(bytes(
            StatusCode::INTERNAL_SERVER_ERROR,
            JSON,
            Bytes::from_static(b"{\"error\":\"server_error\"}"),
        )),
    };
    match e.code {
        ErrorCode::InvalidClient => {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"authgate\""));
        }
        ErrorCode::InvalidToken => {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        }
        ErrorCode::InsufficientScope => {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"openid\""),
            );
        }
        ErrorCode::TemporarilyUnavailable => {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses_follow_the_rfcs() {
        assert_eq!(status_of(ErrorCode::AuthorizationPending), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::SlowDown), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::InvalidClient), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(ErrorCode::InvalidToken), StatusCode::UNAUTHORIZED);
        let r = oauth_error(&OAuthError::invalid_client("x"));
        assert!(r.headers().contains_key(WWW_AUTHENTICATE));
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    }

    #[test]
    fn fixed_error_bodies_are_reused_and_other_descriptions_are_not_mixed_up() {
        use http_body_util::BodyExt;
        let body = |e: &OAuthError| {
            let r = oauth_error(e);
            let b = block_on(r.into_body().collect()).unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&b).unwrap()
        };
        let pending = OAuthError::new(ErrorCode::SlowDown, "wait longer");
        assert_eq!(body(&pending)["error_description"], "wait longer");
        assert_eq!(body(&pending)["error_description"], "wait longer", "the cached body");
        let other = OAuthError::new(ErrorCode::SlowDown, "another \"quoted\" text");
        assert_eq!(body(&other)["error_description"], "another \"quoted\" text");
        // Every code has a slot (the last one too).
        assert!(FIXED_BODIES.get(ErrorCode::TemporarilyUnavailable as usize).is_some());
        let owned = OAuthError::new(ErrorCode::SlowDown, format!("made at {}", 42));
        assert_eq!(body(&owned)["error_description"], "made at 42");
        assert_eq!(body(&owned)["error"], "slow_down");
    }

    /// Polls a future that is ready at once (a collected in-memory body).
    fn block_on<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(f)
    }
}
