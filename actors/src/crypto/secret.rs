//! Generation and hashing of every credential the server hands out. Only SHA-256 hashes of
//! device codes, refresh tokens, session ids and client secrets are ever stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest, used as the storage key of a secret.
pub type Digest32 = [u8; 32];

/// The user-code alphabet of RFC 8628 §6.1: consonants only, so no look-alike characters and no words.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Characters in a user code (shown as `XXXX-XXXX`): 20^8 ≈ 2^34.6 possibilities.
pub const USER_CODE_LEN: usize = 8;

/// A random URL-safe secret of `bytes` bytes of CSPRNG output (32 bytes = 256 bits).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    URL_SAFE_NO_PAD.encode(buf)
}

pub fn sha256(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(sha256(s))
}

/// A new random token of 32 bytes, sealed under `key` (itself a secret token): the token (as
/// [`random_token`]`(32)` spells it) and the seal (URL-safe base64). Only who holds `key` can
/// open the seal ([`open_sealed`]): the token's bytes are XORed with HMAC-SHA-256 of a fixed
/// label under `key`, a one-time pad, as each key seals one token. Whether what is opened is
/// right is for the caller to check (against the token's hash).
pub fn sealed_token(key: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let pad = seal_pad(key);
    let sealed: Vec<u8> = bytes.iter().zip(pad.iter()).map(|(b, p)| b ^ p).collect();
    (URL_SAFE_NO_PAD.encode(bytes), URL_SAFE_NO_PAD.encode(sealed))
}

/// The token [`sealed_token`] sealed under `key`, or `None` if `seal` is malformed.
pub fn open_sealed(key: &str, seal: &str) -> Option<String> {
    let sealed = URL_SAFE_NO_PAD.decode(seal).ok().filter(|s| s.len() == 32)?;
    let pad = seal_pad(key);
    let bytes: Vec<u8> = sealed.iter().zip(pad.iter()).map(|(b, p)| b ^ p).collect();
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

fn seal_pad(key: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length: this cannot fail.
    match <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(b"authgate sealed refresh-token successor");
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// Compares two strings in constant time (for their common length; lengths are not secret).
/// RFC 7636 §4.1: a code verifier is 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`.
pub fn valid_pkce_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 7636 §4.2: an S256 code challenge is the unpadded base64url of a SHA-256, 43 characters.
pub fn valid_pkce_challenge(c: &str) -> bool {
    c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// Whether `verifier` answers the S256 `challenge` (RFC 7636 §4.6), compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    valid_pkce_verifier(verifier) && ct_eq(&URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())), challenge)
}

pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh user code: 8 characters from [`USER_CODE_ALPHABET`], unformatted.
pub fn new_user_code() -> [u8; USER_CODE_LEN] {
    let mut rng = rand::rng();
    let mut code = [0u8; USER_CODE_LEN];
    for c in &mut code {
        *c = USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())];
    }
    code
}

/// Normalises what a person typed: case-insensitive, dashes and white space ignored.
/// Returns `None` unless exactly 8 characters of the alphabet remain.
pub fn normalize_user_code(input: &str) -> Option<[u8; USER_CODE_LEN]> {
    let mut code = [0u8; USER_CODE_LEN];
    let mut n = 0;
    for ch in input.chars() {
        if ch == '-' || ch.is_whitespace() {
            continue;
        }
        let up = ch.to_ascii_uppercase();
        if !up.is_ascii() || !USER_CODE_ALPHABET.contains(&(up as u8)) || n == USER_CODE_LEN {
            return None;
        }
        code[n] = up as u8;
        n += 1;
    }
    (n == USER_CODE_LEN).then_some(code)
}

/// `XXXX-XXXX`, the form shown to people.
pub fn format_user_code(code: &[u8; USER_CODE_LEN]) -> String {
    let mut s = String::with_capacity(USER_CODE_LEN + 1);
    for (i, &c) in code.iter().enumerate() {
        if i == USER_CODE_LEN / 2 {
            s.push('-');
        }
        s.push(c as char);
    }
    s
}

/// A user code as shown in logs: only its first two characters.
pub fn redact_user_code(code: &[u8; USER_CODE_LEN]) -> String {
    format!("{}{}**-****", code[0] as char, code[1] as char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_pkce_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", challenge));
        // `plain` would send the verifier itself as the challenge: never equal.
        assert!(!pkce_matches(verifier, verifier));
        assert!(!valid_pkce_verifier("short"));
        assert!(!valid_pkce_verifier(&"a".repeat(129)));
        assert!(!valid_pkce_verifier(&format!("{}+", "a".repeat(50))));
    }

    #[test]
    fn user_codes_use_only_the_alphabet_and_normalise_back() {
        for _ in 0..1000 {
            let c = new_user_code();
            assert!(c.iter().all(|b| USER_CODE_ALPHABET.contains(b)));
            let shown = format_user_code(&c);
            assert_eq!(shown.len(), 9);
            assert_eq!(normalize_user_code(&shown), Some(c));
            assert_eq!(normalize_user_code(&shown.to_lowercase()), Some(c));
        }
    }

    #[test]
    fn normalisation_ignores_dashes_and_spaces_and_rejects_the_rest() {
        assert_eq!(normalize_user_code(" bcdf - ghjk "), Some(*b"BCDFGHJK"));
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("BCDF-GHJKL"), None);
        assert_eq!(normalize_user_code("ABCD-EFGH"), None, "vowels are not in the alphabet");
        assert_eq!(normalize_user_code("BCDF-GHJ\u{0}"), None);
        assert_eq!(normalize_user_code("ẞCDF-GHJK"), None);
        assert_eq!(normalize_user_code(&"B".repeat(10_000)), None);
    }

    #[test]
    fn a_sealed_token_opens_only_with_its_key() {
        let (token, seal) = sealed_token("old-refresh-token");
        assert_eq!(token.len(), 43);
        assert_ne!(seal, token);
        assert_eq!(open_sealed("old-refresh-token", &seal).as_deref(), Some(token.as_str()));
        assert_ne!(open_sealed("another-token", &seal).as_deref(), Some(token.as_str()));
        assert_eq!(open_sealed("old-refresh-token", "not base64!"), None);
        assert_eq!(open_sealed("old-refresh-token", "AAAA"), None);
        assert_ne!(sealed_token("k").0, sealed_token("k").0, "random each time");
    }

    #[test]
    fn random_tokens_are_long_urlsafe_and_distinct() {
        let a = random_token(32);
        let b = random_token(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn constant_time_equality_matches_plain_equality() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }

    #[test]
    fn redaction_keeps_two_characters() {
        assert_eq!(redact_user_code(b"BCDFGHJK"), "BC**-****");
    }
}

/// Property tests: user-code normalization never panics, accepts only codes of the alphabet,
/// and reads back what it printed.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalization_accepts_only_real_codes(input in "\\PC{0,64}") {
            if let Some(code) = normalize_user_code(&input) {
                prop_assert!(code.iter().all(|c| USER_CODE_ALPHABET.contains(c)));
                prop_assert_eq!(normalize_user_code(&format_user_code(&code)), Some(code));
                prop_assert!(!redact_user_code(&code).contains(std::str::from_utf8(&code).unwrap()));
            }
        }

        #[test]
        fn printed_codes_survive_what_people_do_to_them(idx in proptest::collection::vec(0usize..20, 8), lower in any::<bool>()) {
            let code: [u8; USER_CODE_LEN] = std::array::from_fn(|i| USER_CODE_ALPHABET[idx[i]]);
            let shown = format_user_code(&code);
            let typed = if lower { shown.to_lowercase() } else { shown.replace('-', " ") };
            prop_assert_eq!(normalize_user_code(&typed), Some(code));
        }
    }
}
