//! Form and query decoding, with the limits and the strictness OAuth asks for.

use std::borrow::Cow;

use authgate_actors::OAuthError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};

use super::Request;

/// Largest request body accepted (forms here are tiny).
pub const MAX_BODY: usize = 16 * 1024;

/// Why a body could not be read as a form.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("expected Content-Type application/x-www-form-urlencoded")]
    NotAForm,
    #[error("the request body could not be read")]
    Broken,
    #[error("the request body did not arrive in time")]
    Timeout,
}

/// A client gets this long to send a whole body once its headers are in.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Decoded `application/x-www-form-urlencoded` pairs (a body or a query string).
///
/// Decoded as `form_urlencoded::parse` does (pairs split at `&`, empty ones skipped, the name
/// ending at the first `=`, `+` as a space, `%XX` decoded, invalid UTF-8 replaced per part),
/// but into one buffer with the pairs as ranges of it: a token request costs two allocations,
/// not two per parameter (every poll is one).
#[derive(Debug, Default)]
pub struct Form {
    text: String,
    /// Each pair's name and value, as byte ranges of `text`.
    spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Form {
    pub fn parse(input: &[u8]) -> Form {
        let mut bytes: Vec<u8> = Vec::with_capacity(input.len());
        let mut spans = Vec::with_capacity(4);
        for piece in memchr::memchr_iter(b'&', input)
            .chain(std::iter::once(input.len()))
            .scan(0, |from, end| {
                let piece = &input[*from..end];
                *from = end + 1;
                Some(piece)
            })
            .filter(|p| !p.is_empty())
        {
            let (name, value) = match memchr::memchr(b'=', piece) {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &[][..]),
            };
            let start = bytes.len();
            decode_into(&mut bytes, name);
            let middle = bytes.len();
            decode_into(&mut bytes, value);
            spans.push((start..middle, middle..bytes.len()));
        }
        match String::from_utf8(bytes) {
            // Valid as a whole and at every boundary: each part is valid on its own too.
            Ok(text)
                if spans
                    .iter()
                    .all(|(n, v)| text.is_char_boundary(n.end) && text.is_char_boundary(v.end)) =>
            {
                Form { text, spans }
            }
            // Rare: replace invalid UTF-8 part by part, as `form_urlencoded` does.
            other => {
                let bytes = other.map_or_else(|e| e.into_bytes(), String::into_bytes);
                let mut text = String::with_capacity(bytes.len());
                let mut lossy = Vec::with_capacity(spans.len());
                for (n, v) in spans {
                    let start = text.len();
                    text.push_str(&String::from_utf8_lossy(&bytes[n]));
                    let middle = text.len();
                    text.push_str(&String::from_utf8_lossy(&bytes[v]));
                    lossy.push((start..middle, middle..text.len()));
                }
                Form { text, spans: lossy }
            }
        }
    }

    /// Every pair, in order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }

    /// The value of `name`; RFC 6749 §3.2 forbids repeating a parameter, so a repeat is an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut it = self.pairs().filter(|(k, _)| *k == name);
        let first = it.next().map(|(_, v)| v);
        if it.next().is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
        Ok(first)
    }

    /// A non-empty value of `name`, or `invalid_request` naming it.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        match self.one(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(OAuthError::invalid_request(format!("parameter {name} is required"))),
        }
    }

    /// The first value of `name`, for browser forms where strictness helps nobody.
    /// Every value of `name`, in order (checkboxes).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs().filter(move |(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Every pair, URL-encoded again (a POSTed request carried on as a query string).
    pub fn encoded(&self) -> String {
        form_urlencoded::Serializer::new(String::new()).extend_pairs(self.pairs()).finish()
    }
}

/// Appends `part` decoded: `+` as a space, `%XX` as that byte, anything else as it is (a `%`
/// without two hex digits too).
fn decode_into(out: &mut Vec<u8>, mut part: &[u8]) {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    // Runs of plain bytes are copied whole; only `+` and `%` are looked at one by one.
    while let Some(i) = memchr::memchr2(b'%', b'+', part) {
        out.extend_from_slice(&part[..i]);
        if part[i] == b'+' {
            out.push(b' ');
            part = &part[i + 1..];
            continue;
        }
        match (part.get(i + 1).copied().and_then(hex), part.get(i + 2).copied().and_then(hex)) {
            (Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                part = &part[i + 3..];
            }
            _ => {
                out.push(b'%');
                part = &part[i + 1..];
            }
        }
    }
    out.extend_from_slice(part);
}

/// Reads a form body, refusing other content types and anything over [`MAX_BODY`].
pub async fn read_form(req: Request) -> Result<Form, BodyError> {
    read_form_within(req, BODY_TIMEOUT).await
}

/// [`read_form`] with its own deadline for the body to arrive (the shed path uses a short one).
pub async fn read_form_within(req: Request, deadline: std::time::Duration) -> Result<Form, BodyError> {
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(BodyError::NotAForm);
    }
    let collected = tokio::time::timeout(deadline, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| BodyError::Timeout)?;
    let body = collected.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            BodyError::TooLarge
        } else {
            BodyError::Broken
        }
    })?;
    Ok(Form::parse(&body.to_bytes()))
}

pub fn query(req: &Request) -> Form {
    Form::parse(req.uri().query().unwrap_or("").as_bytes())
}

/// The client a request speaks for (RFC 6749 §2.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<String>,
}

/// `Authorization: Basic` credentials, form-urlencoding decoded (RFC 6749 §2.3.1). Malformed
/// ones are a failed client authentication (`invalid_client`, RFC 6749 §5.2).
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<ClientCredentials>, OAuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Ok(None) };
    let bad = || OAuthError::invalid_client("malformed Basic credentials in the Authorization header");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let id = url_decode(id);
    if id.is_empty() {
        return Err(bad());
    }
    let secret = url_decode(secret);
    Ok(Some(ClientCredentials {
        client_id: id.into_owned(),
        secret: (!secret.is_empty()).then(|| secret.into_owned()),
    }))
}

fn url_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let plus = s.replace('+', " ");
    Cow::Owned(percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned())
}

/// The client identity of a request: HTTP Basic, or `client_id` (and `client_secret`) in the
/// body. Two different identities, or two ways of sending a secret, are `invalid_request`.
pub fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<Option<ClientCredentials>, OAuthError> {
    merge_credentials(basic_credentials(headers)?, form)
}

/// Combines Basic credentials (already parsed) with the body's; see [`client_credentials`].
pub fn merge_credentials(basic: Option<ClientCredentials>, form: &Form) -> Result<Option<ClientCredentials>, OAuthError> {
    let body_id = form.one("client_id")?.filter(|s| !s.is_empty());
    let body_secret = form.one("client_secret")?.filter(|s| !s.is_empty());
    match basic {
        Some(b) => {
            if body_id.is_some_and(|id| id != b.client_id) {
                return Err(OAuthError::invalid_request("the request names two different clients"));
            }
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request("use only one client authentication method per request"));
            }
            Ok(Some(b))
        }
        None => Ok(body_id.map(|id| ClientCredentials {
            client_id: id.to_owned(),
            secret: body_secret.map(str::to_owned),
        })),
    }
}

/// A bearer token from `Authorization: Bearer` (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let f = Form::parse(b"a=1&a=2&b=x%20y");
        assert!(f.one("a").is_err());
        assert_eq!(f.one("b").unwrap(), Some("x y"));
        assert_eq!(f.required("c").unwrap_err().code, authgate_actors::ErrorCode::InvalidRequest);
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let raw = STANDARD.encode("my%20client:s%3Acret+x");
        let c = client_credentials(&headers(&format!("Basic {raw}")), &Form::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.client_id, "my client");
        assert_eq!(c.secret.as_deref(), Some("s:cret x"));
    }

    #[test]
    fn basic_with_empty_password_is_a_public_client() {
        let raw = STANDARD.encode("cli:");
        let c = client_credentials(&headers(&format!("basic {raw}")), &Form::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            ClientCredentials {
                client_id: "cli".into(),
                secret: None
            }
        );
    }

    #[test]
    fn two_identities_are_invalid_request() {
        let raw = STANDARD.encode("a:");
        let f = Form::parse(b"client_id=b");
        assert!(client_credentials(&headers(&format!("Basic {raw}")), &f).is_err());
        let f = Form::parse(b"client_id=a");
        assert!(client_credentials(&headers(&format!("Basic {raw}")), &f).is_ok());
    }

    #[test]
    fn malformed_basic_is_invalid_client() {
        assert!(client_credentials(&headers("Basic !!!"), &Form::default()).is_err());
        let raw = STANDARD.encode("nocolon");
        assert!(client_credentials(&headers(&format!("Basic {raw}")), &Form::default()).is_err());
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
    }
}

/// Property tests (proptest): hostile bytes never panic the decoders. CI runs the default case
/// count; `scripts/fuzz.sh` runs many more.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_body_decodes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let f = Form::parse(&bytes);
            let _ = f.one("client_id");
            let _ = f.first("user_code");
            let _ = f.all("grant_type").count();
        }

        #[test]
        fn decodes_exactly_as_form_urlencoded(bytes in proptest::collection::vec(
            prop_oneof![Just(b'&'), Just(b'='), Just(b'%'), Just(b'+'), Just(b'a'), Just(b'F'), Just(b'3'), any::<u8>()], 0..300)
        ) {
            let ours: Vec<(String, String)> = Form::parse(&bytes).pairs().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn encoded_pairs_come_back_as_they_were(pairs in proptest::collection::vec(("[a-z_]{1,12}", "\\PC{0,40}"), 0..8)) {
            let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter()).finish();
            let f = Form::parse(body.as_bytes());
            for (k, v) in &pairs {
                let first = pairs.iter().find(|(k2, _)| k2 == k).map(|(_, v2)| v2.as_str());
                prop_assert_eq!(f.first(k), first);
                let _ = v;
            }
        }

        #[test]
        fn any_authorization_header_is_handled(value in "\\PC{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut h = HeaderMap::new();
            if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                h.insert(AUTHORIZATION, v);
                let _ = basic_credentials(&h);
                let _ = bearer_token(&h);
            }
            if let Ok(v) = hyper::header::HeaderValue::from_bytes(&raw) {
                h.insert(AUTHORIZATION, v);
                let _ = basic_credentials(&h);
                let _ = bearer_token(&h);
            }
        }
    }
}
