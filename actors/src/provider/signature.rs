//! HMAC-SHA256 request signatures for service-to-service calls, both sides.
//!
//! The signed message is `<unix seconds><METHOD><path[?query]><raw body>`, concatenated with no
//! separators; the signature is its lowercase hex HMAC-SHA256 under the shared secret. AuthGate
//! sends it as `X-Signature`, with `X-Timestamp` (those seconds) and `X-Nonce` (a fresh UUID),
//! signing every attempt anew. [`Verifier`] is the receiving side: an upstream written in Rust
//! can use it as is, and README's recipe describes it for other languages.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `X-Signature` (header names are case-insensitive; these are the canonical lowercase forms).
pub const SIGNATURE_HEADER: &str = "x-signature";
/// `X-Timestamp`
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// `X-Nonce`
pub const NONCE_HEADER: &str = "x-nonce";

/// How far a timestamp may be from the receiver's clock, either way.
pub const WINDOW_SECS: u64 = 300;

fn mac(secret: &[u8], timestamp: u64, method: &str, path_and_query: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (longer ones are hashed), so this never falls back.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| Hmac::<Sha256>::new(&Default::default()));
    m.update(timestamp.to_string().as_bytes());
    m.update(method.as_bytes());
    m.update(path_and_query.as_bytes());
    m.update(body);
    m
}

/// The `X-Signature` value for one request.
pub fn sign(secret: &[u8], timestamp: u64, method: &str, path_and_query: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, method, path_and_query, body).finalize().into_bytes())
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature, X-Timestamp or X-Nonce is missing")]
    Missing,
    #[error("X-Timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("X-Timestamp is more than five minutes from the receiver's clock")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
    #[error("this nonce was already used")]
    Replayed,
}

/// What a receiver needs of one signed request.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The `X-Signature`, `X-Timestamp` and `X-Nonce` headers (`None` when absent).
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub method: &'a str,
    /// The request target as sent: path, and `?query` if any.
    pub path_and_query: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
}

/// Checks signed requests: signature (constant time), a ±[`WINDOW_SECS`] timestamp window, and
/// nonces never seen before within that window. Shareable across threads.
///
/// The nonce is not part of the signed message (the scheme signs timestamp, method, target and
/// body), so the nonce check stops a request replayed as it was; one replayed with a new nonce
/// within the window still verifies. (Refusing repeated signatures would also refuse honest
/// retries sent within the same second.) Use TLS so requests cannot be captured.
pub struct Verifier {
    secret: Vec<u8>,
    /// Nonces seen, with the timestamp they came with, and the size after the last pruning.
    /// Stale nonces are pruned whenever the map has doubled since, so each request costs O(1)
    /// amortized.
    seen: Mutex<(HashMap<String, u64>, usize)>,
}

impl Verifier {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            seen: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// Verifies one request against the receiver's clock (Unix seconds).
    pub fn verify(&self, req: &SignedRequest<'_>, now: u64) -> Result<(), SignatureError> {
        let SignedRequest {
            signature,
            timestamp,
            nonce,
            method,
            path_and_query,
            body,
        } = *req;
        let (Some(signature), Some(timestamp), Some(nonce)) = (signature, timestamp, nonce) else {
            return Err(SignatureError::Missing);
        };
        if nonce.is_empty() || nonce.len() > 128 {
            return Err(SignatureError::Missing);
        }
        let ts: u64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
        if ts.abs_diff(now) > WINDOW_SECS {
            return Err(SignatureError::Stale);
        }
        let given = hex::decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
        mac(&self.secret, ts, method, path_and_query, body)
            .verify_slice(&given)
            .map_err(|_| SignatureError::Mismatch)?;
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, after_prune) = &mut *guard;
        if seen.len() >= (*after_prune * 2).max(1024) {
            seen.retain(|_, t| t.abs_diff(now) <= WINDOW_SECS);
            *after_prune = seen.len();
        }
        if seen.get(nonce).is_some_and(|t| t.abs_diff(now) <= WINDOW_SECS) {
            return Err(SignatureError::Replayed);
        }
        seen.insert(nonce.to_owned(), ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn req<'a>(signature: Option<&'a str>, timestamp: Option<&'a str>, nonce: Option<&'a str>, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            signature,
            timestamp,
            nonce,
            method: "POST",
            path_and_query: "/verify",
            body,
        }
    }

    #[test]
    fn a_known_vector() {
        // Computed independently: printf '%s' '1700000000POST/api/verify?x=1{"a":1}' |
        //   openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, "POST", "/api/verify?x=1", br#"{"a":1}"#),
            "b6077b7052b720888f60b90d0ff7299eeb52eb246bb3f1f8e5cd6abb9e6da8f0"
        );
    }

    #[test]
    fn verifies_a_fresh_signature_once() {
        let v = Verifier::new("s3cret");
        let sig = sign(b"s3cret", NOW, "POST", "/verify", b"{}");
        let check = |nonce: &str, sig: &str, ts: u64, body: &[u8]| {
            let ts = ts.to_string();
            v.verify(&req(Some(sig), Some(ts.as_str()), Some(nonce), body), NOW)
        };
        assert_eq!(check("n1", &sig, NOW, b"{}"), Ok(()));
        assert_eq!(check("n1", &sig, NOW, b"{}"), Err(SignatureError::Replayed));
        assert_eq!(check("n2", &sig, NOW, b"{ }"), Err(SignatureError::Mismatch));
        assert_eq!(check("n3", "zz", NOW, b"{}"), Err(SignatureError::Mismatch));
        let old = sign(b"s3cret", NOW - 301, "POST", "/verify", b"{}");
        assert_eq!(check("n4", &old, NOW - 301, b"{}"), Err(SignatureError::Stale));
        let edge = sign(b"s3cret", NOW + 300, "POST", "/verify", b"{}");
        assert_eq!(check("n5", &edge, NOW + 300, b"{}"), Ok(()));
        assert_eq!(v.verify(&req(None, Some("1"), Some("n"), b""), NOW), Err(SignatureError::Missing));
        assert_eq!(
            v.verify(&req(Some(sig.as_str()), Some("soon"), Some("n6"), b"{}"), NOW),
            Err(SignatureError::BadTimestamp)
        );
    }
}
