//! The one place cookies are built: every cookie is HttpOnly, SameSite=Lax, Path=/, Secure and
//! `__Host-` prefixed when the server is reached over https, and encrypted (private jar).

use cookie::{Cookie, CookieJar, Key, SameSite};
use hyper::header::{COOKIE, HeaderMap};
use sha2::{Digest, Sha512};

/// The browser-session cookie (holds the session id).
pub const SESSION: &str = "authgate_session";
/// The sign-in form's CSRF cookie (double submit, before any session exists).
pub const LOGIN_CSRF: &str = "authgate_csrf";
/// A one-time message shown on the page a form redirects to.
pub const FLASH: &str = "authgate_flash";

#[derive(Clone)]
pub struct CookieKeys {
    key: Key,
    secure: bool,
}

impl CookieKeys {
    /// Derives the encryption key from `SESSION_SECRET` (any length ≥ 32 bytes).
    pub fn new(secret: &[u8], secure: bool) -> Self {
        let digest: [u8; 64] = Sha512::digest(secret).into();
        Self {
            key: Key::from(&digest),
            secure,
        }
    }

    fn name(&self, base: &str) -> String {
        if self.secure { format!("__Host-{base}") } else { base.to_owned() }
    }

    /// The decrypted value of cookie `base`, if present and authentic.
    pub fn get(&self, headers: &HeaderMap, base: &str) -> Option<String> {
        let name = self.name(base);
        let mut jar = CookieJar::new();
        for value in headers.get_all(COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for c in Cookie::split_parse_encoded(value.to_owned()).flatten() {
                if c.name() == name {
                    jar.add_original(c.into_owned());
                }
            }
        }
        jar.private(&self.key).get(&name).map(|c| c.value().to_owned())
    }

    /// A `Set-Cookie` value carrying `value` encrypted, living `max_age`.
    pub fn set(&self, base: &str, value: String, max_age: std::time::Duration) -> String {
        let mut jar = CookieJar::new();
        let max_age = cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
        let c = Cookie::build((self.name(base), value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(max_age)
            .build();
        jar.private_mut(&self.key).add(c);
        jar.delta().next().map(|c| c.encoded().to_string()).unwrap_or_default()
    }

    /// A `Set-Cookie` value that removes cookie `base`.
    pub fn clear(&self, base: &str) -> String {
        Cookie::build((self.name(base), ""))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .encoded()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn request_with(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    #[test]
    fn round_trip_and_tamper() {
        let keys = CookieKeys::new(&[1u8; 32], false);
        let set = keys.set(SESSION, "sid".into(), std::time::Duration::from_secs(60));
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
        assert!(!set.contains("sid;"), "value must be encrypted: {set}");
        assert_eq!(keys.get(&request_with(&set), SESSION).as_deref(), Some("sid"));
        assert_eq!(CookieKeys::new(&[2u8; 32], false).get(&request_with(&set), SESSION), None);
        assert_eq!(keys.get(&request_with("authgate_session=garbage"), SESSION), None);
        assert_eq!(keys.get(&request_with(&set), LOGIN_CSRF), None, "the name is bound to the value");
    }

    #[test]
    fn https_cookies_are_secure_and_host_prefixed() {
        let keys = CookieKeys::new(&[1u8; 32], true);
        let set = keys.set(SESSION, "sid".into(), std::time::Duration::from_secs(60));
        assert!(set.starts_with("__Host-authgate_session=") && set.contains("Secure"));
        assert_eq!(keys.get(&request_with(&set), SESSION).as_deref(), Some("sid"));
        assert!(keys.clear(SESSION).contains("Max-Age=0"));
    }
}

/// Property tests: any Cookie header decodes without panicking, and nothing but our own
/// encrypted value is ever accepted.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn forged_cookies_are_never_accepted(value in "\\PC{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = CookieKeys::new(&[7u8; 32], false);
            let mut h = HeaderMap::new();
            if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("{SESSION}={value}")) {
                h.insert(COOKIE, v);
                prop_assert_eq!(keys.get(&h, SESSION), None);
            }
            if let Ok(v) = hyper::header::HeaderValue::from_bytes(&raw) {
                h.insert(COOKIE, v);
                prop_assert_eq!(keys.get(&h, SESSION), None);
            }
        }

        #[test]
        fn our_cookies_round_trip(value in "[ -~]{0,100}") {
            let keys = CookieKeys::new(&[7u8; 32], true);
            let set = keys.set(SESSION, value.clone(), std::time::Duration::from_secs(60));
            let pair = set.split(';').next().unwrap().to_owned();
            let mut h = HeaderMap::new();
            h.insert(COOKIE, hyper::header::HeaderValue::from_str(&pair).unwrap());
            prop_assert_eq!(keys.get(&h, SESSION), Some(value));
        }
    }
}
