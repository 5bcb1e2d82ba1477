//! JWT signing keys: the algorithm and key that sign new access tokens, the keys that still
//! verify older ones, and the JWK Set that resource servers fetch.
//!
//! `HS256` (the default) signs with `JWT_SECRET`. `ES256`, `EdDSA` and `RS256` sign with a
//! private key generated on first start and kept in the database's meta table, or read from
//! `JWT_PRIVATE_KEY_FILE`. Asymmetric tokens carry a `kid` (the key's RFC 7638 thumbprint).
//! When the signing key changes (a rotation, a new key file, another algorithm), the public
//! half of the previous one stays published and verifying until every token it signed has
//! expired. HS256 tokens always verify with `JWT_SECRET`, so switching algorithms invalidates
//! nothing.
//!
//! The keyring is read once at start-up; [`rotate`] changes the stored one (offline, like the
//! other database commands) and the server uses it from its next start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::OAuthError;
use crate::store::StoreError;
use crate::store::server::ServerRepo;
use crate::time::Secs;

/// An access token's `aud` (RFC 7519 §4.1.3): the client, or the RFC 8707 resource(s) the token
/// is meant for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// `resources` when there are any (one as a string, several as a list), else `client_id`.
    pub fn of(resources: &[String], client_id: &str) -> Self {
        match resources {
            [] => Audience::One(client_id.to_owned()),
            [one] => Audience::One(one.clone()),
            many => Audience::Many(many.to_vec()),
        }
    }
}

impl From<&str> for Audience {
    fn from(s: &str) -> Self {
        Audience::One(s.to_owned())
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub client_id: String,
    pub scope: String,
    pub iat: Secs,
    pub exp: Secs,
    pub jti: String,
}

/// The claims of an OpenID Connect `id_token` (OIDC Core §2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: Secs,
    pub iat: Secs,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<Secs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Half the hash of the access token issued with it (OIDC Core §3.1.3.6).
    pub at_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `JWT_SIGNING_ALGORITHM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SigningAlg {
    #[default]
    HS256,
    ES256,
    EdDSA,
    RS256,
}

impl SigningAlg {
    pub fn algorithm(self) -> Algorithm {
        match self {
            SigningAlg::HS256 => Algorithm::HS256,
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::RS256 => Algorithm::RS256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::HS256 => "HS256",
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::RS256 => "RS256",
        }
    }

    pub fn asymmetric(self) -> bool {
        self != SigningAlg::HS256
    }
}

impl FromStr for SigningAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "HS256" => Ok(SigningAlg::HS256),
            "ES256" => Ok(SigningAlg::ES256),
            "EdDSA" => Ok(SigningAlg::EdDSA),
            "RS256" => Ok(SigningAlg::RS256),
            other => Err(format!("`{other}` is not one of HS256, ES256, EdDSA, RS256")),
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("JWT_PRIVATE_KEY_FILE {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("JWT_PRIVATE_KEY_FILE needs JWT_SIGNING_ALGORITHM ES256, EdDSA or RS256 (HS256 signs with JWT_SECRET)")]
    FileWithHmac,
    #[error("{0}")]
    Rotate(String),
    #[error("the stored signing key is unusable: {0}")]
    Corrupt(String),
    /// Someone else (another process starting or rotating) changed the keyring between this
    /// one's read and write; nothing was written.
    #[error("the signing keyring was changed by another process meanwhile; try again")]
    Changed,
}

/// What the server was configured with.
#[derive(Debug, Clone)]
pub struct KeyOptions {
    pub alg: SigningAlg,
    pub key_file: Option<PathBuf>,
    /// `JWT_SECRET` (configured or generated): the HS256 key.
    pub secret: Vec<u8>,
    pub issuer: String,
    /// `JWT_EXPIRATION`: how long a retired key must keep verifying.
    pub access_ttl: Duration,
}

/// A generated private key, as kept in the database.
#[derive(Serialize, Deserialize, Clone)]
struct GeneratedKey {
    alg: SigningAlg,
    /// Base64 of the key's DER (PKCS#8 for EC and Ed25519, PKCS#1 for RSA).
    der: String,
    created_at: Secs,
}

/// The public half of a key that no longer signs, kept until tokens it signed have expired.
#[derive(Serialize, Deserialize, Clone)]
struct RetiredKey {
    jwk: Jwk,
    until: Secs,
}

/// The stored keyring.
#[derive(Serialize, Deserialize, Default, Clone)]
struct StoredKeyring {
    /// The generated signing key, if the signer is a generated key.
    current: Option<GeneratedKey>,
    /// The public key of whatever signed last (generated or from a file), so a change of
    /// signer retires it; `None` while HS256 signs.
    signer: Option<Jwk>,
    /// The longest `JWT_EXPIRATION` `signer` has signed with.
    signer_ttl: Secs,
    retired: Vec<RetiredKey>,
    /// Once HS256 no longer signs: when the last token `JWT_SECRET` signed expires (after
    /// that, HS256 tokens are refused). `None` while HS256 signs.
    #[serde(default)]
    hmac_until: Option<Secs>,
    /// The longest `JWT_EXPIRATION` HS256 has signed with.
    #[serde(default)]
    hmac_ttl: Secs,
    /// While HS256 signs access tokens: the generated ES256 key that signs `id_token`s (which
    /// public clients must be able to verify, so never with a shared secret).
    #[serde(default)]
    id_key: Option<GeneratedKey>,
}

/// The keys shared by the signer (the token actor) and the verifiers (the HTTP front end).
#[derive(Clone)]
pub struct JwtKeys {
    inner: Arc<Keyring>,
}

struct Keyring {
    alg: Algorithm,
    kid: Option<String>,
    encoding: EncodingKey,
    hmac: DecodingKey,
    /// HS256 tokens verify until then (Unix seconds), when HS256 no longer signs.
    hmac_until: Option<Secs>,
    /// Asymmetric keys that verify, by `kid` (the signer's and the retired ones).
    public: HashMap<String, (Algorithm, DecodingKey)>,
    issuer: String,
    /// The JWK Set document, serialised once.
    jwks: String,
    /// What signs `id_token`s: the access-token key when that is asymmetric, else the
    /// generated ES256 key. `None` only for keyrings made without the store (tests, offline).
    id_signer: Option<IdSigner>,
}

struct IdSigner {
    alg: Algorithm,
    kid: Option<String>,
    encoding: EncodingKey,
}

impl JwtKeys {
    /// HS256 with `secret`, nothing else: tests and the seed behaviour.
    pub fn new(secret: &[u8], issuer: &str) -> Self {
        Self::build(
            SigningAlg::HS256,
            None,
            EncodingKey::from_secret(secret),
            secret,
            issuer,
            &[],
            None,
            None,
        )
        .unwrap_or_else(|_| unreachable_hmac())
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        alg: SigningAlg,
        signer: Option<&Jwk>,
        encoding: EncodingKey,
        secret: &[u8],
        issuer: &str,
        retired: &[RetiredKey],
        hmac_until: Option<Secs>,
        id_key: Option<(EncodingKey, Jwk)>,
    ) -> Result<Self, KeyError> {
        let mut public = HashMap::new();
        let mut set = Vec::new();
        for jwk in signer.into_iter().chain(retired.iter().map(|r| &r.jwk)) {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let key_alg = jwk
                .common
                .key_algorithm
                .and_then(|a| match a {
                    KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                    KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
                    KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                    _ => None,
                })
                .ok_or_else(|| KeyError::Corrupt(format!("key {kid} has no algorithm")))?;
            let decoding = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Corrupt(e.to_string()))?;
            if public.insert(kid, (key_alg, decoding)).is_none() {
                set.push(jwk.clone());
            }
        }
        // The separate id_token key is published, but verifies no access token.
        let id_signer = match id_key {
            Some((id_encoding, jwk)) => {
                let kid = jwk.common.key_id.clone();
                if !set.iter().any(|k| k.common.key_id == kid) {
                    set.push(jwk);
                }
                Some(IdSigner {
                    alg: Algorithm::ES256,
                    kid,
                    encoding: id_encoding,
                })
            }
            None if alg.asymmetric() => Some(IdSigner {
                alg: alg.algorithm(),
                kid: signer.and_then(|j| j.common.key_id.clone()),
                encoding: encoding.clone(),
            }),
            None => None,
        };
        let jwks = serde_json::to_string(&JwkSet { keys: set }).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(JwtKeys {
            inner: Arc::new(Keyring {
                alg: alg.algorithm(),
                kid: signer.and_then(|j| j.common.key_id.clone()),
                encoding,
                hmac: DecodingKey::from_secret(secret),
                hmac_until,
                public,
                issuer: issuer.to_owned(),
                jwks,
                id_signer,
            }),
        })
    }

    /// The algorithm `id_token`s are signed with, if any.
    pub fn id_algorithm(&self) -> Option<Algorithm> {
        self.inner.id_signer.as_ref().map(|s| s.alg)
    }

    /// Signs an `id_token` (always asymmetric).
    pub fn sign_id(&self, claims: &IdClaims) -> Result<String, OAuthError> {
        let fail = || OAuthError::server_error("could not sign the id_token");
        let signer = self.inner.id_signer.as_ref().ok_or_else(fail)?;
        let mut header = Header::new(signer.alg);
        header.kid = signer.kid.clone();
        jsonwebtoken::encode(&header, claims, &signer.encoding).map_err(|_| fail())
    }

    /// `at_hash` of `access_token` for an `id_token` signed by this keyring: the left half of
    /// its hash (SHA-256, or SHA-512 for EdDSA), URL-safe base64 (OIDC Core §3.1.3.6).
    pub fn at_hash(&self, access_token: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use sha2::Digest as _;
        let digest: Vec<u8> = match self.id_algorithm() {
            Some(Algorithm::EdDSA) => sha2::Sha512::digest(access_token.as_bytes()).to_vec(),
            _ => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
        };
        URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
    }

    /// The algorithm new tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The `kid` of the signing key (asymmetric algorithms only).
    pub fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    /// `GET /.well-known/jwks.json`: the public keys that verify tokens now.
    pub fn jwks(&self) -> &str {
        &self.inner.jwks
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, OAuthError> {
        let mut header = Header::new(self.inner.alg);
        header.kid = self.inner.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.inner.encoding).map_err(|_| OAuthError::server_error("could not sign the access token"))
    }

    /// Checks signature, issuer and expiry at `now`; `None` for anything else.
    pub fn verify(&self, token: &str, now: Secs) -> Option<AccessClaims> {
        self.check(token, now).filter(|c| c.exp >= now)
    }

    /// Checks the signature only (revocation accepts expired tokens).
    pub fn verify_ignoring_expiry(&self, token: &str, now: Secs) -> Option<AccessClaims> {
        self.check(token, now)
    }

    /// Signature, algorithm and issuer; the caller judges expiry against its own `now`.
    fn check(&self, token: &str, now: Secs) -> Option<AccessClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        // The key decides the algorithm, never the token: an HS256 token verifies only with
        // the secret, an asymmetric one only with the key its `kid` names, of that key's type.
        let (alg, key) = match header.alg {
            Algorithm::HS256 => {
                if self.inner.hmac_until.is_some_and(|until| now >= until) {
                    return None;
                }
                (Algorithm::HS256, &self.inner.hmac)
            }
            alg => {
                let (key_alg, key) = self.inner.public.get(header.kid.as_deref()?)?;
                (*key_alg == alg).then_some(())?;
                (alg, key)
            }
        };
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.inner.issuer]);
        v.validate_aud = false;
        v.leeway = 0;
        // Expiry is judged against the caller's `now` (the claim is required by the type).
        v.validate_exp = false;
        v.set_required_spec_claims(&["iss", "sub", "jti"]);
        jsonwebtoken::decode::<AccessClaims>(token, key, &v).ok().map(|d| d.claims)
    }

    /// Reads the stored keyring, makes the configured key the signer (generating it on first
    /// start), retires the previous signer if it changed, drops retired keys past their time,
    /// and stores the result.
    pub async fn load(repo: &dyn ServerRepo, options: KeyOptions, now: Secs) -> Result<JwtKeys, KeyError> {
        let (stored, mut ring) = read_keyring(repo).await?;
        let ttl = options.access_ttl.as_secs();
        let (encoding, signer, generated) = match (&options.key_file, options.alg) {
            (Some(_), SigningAlg::HS256) => return Err(KeyError::FileWithHmac),
            (Some(path), alg) => {
                let (encoding, jwk) = read_key_file(path, alg).await?;
                (encoding, Some(jwk), None)
            }
            (None, SigningAlg::HS256) => (EncodingKey::from_secret(&options.secret), None, None),
            (None, alg) => match ring.current.clone().filter(|c| c.alg == alg) {
                Some(stored) => {
                    let (encoding, jwk) = from_generated(&stored)?;
                    (encoding, Some(jwk), Some(stored))
                }
                None => {
                    let fresh = generate(alg, now).await?;
                    let (encoding, jwk) = from_generated(&fresh)?;
                    (encoding, Some(jwk), Some(fresh))
                }
            },
        };
        let new_kid = signer.as_ref().and_then(|j| j.common.key_id.clone());
        match ring.signer.take() {
            Some(old) if old.common.key_id != new_kid => {
                let until = now + ttl.max(ring.signer_ttl);
                tracing::info!(
                    kid = old.common.key_id.as_deref().unwrap_or(""),
                    until,
                    "retired the previous signing key"
                );
                ring.retired.push(RetiredKey { jwk: old, until });
                ring.signer_ttl = ttl;
            }
            Some(_) => ring.signer_ttl = ring.signer_ttl.max(ttl),
            None => ring.signer_ttl = ttl,
        }
        if options.alg.asymmetric() {
            // HS256 signed until now (or never): its tokens verify until they expire.
            ring.hmac_until.get_or_insert(now + ttl.max(ring.hmac_ttl));
        } else {
            ring.hmac_until = None;
            ring.hmac_ttl = ring.hmac_ttl.max(ttl);
        }
        // id_tokens: with HS256 a generated ES256 key of their own; otherwise the signer, and a
        // former id key retires like any signer.
        let id_key = if options.alg.asymmetric() {
            if let Some(old) = ring.id_key.take() {
                // Its id_tokens lived as long as the HS256 access tokens they came with.
                let (_, jwk) = from_generated(&old)?;
                ring.retired.push(RetiredKey {
                    jwk,
                    until: now + ttl.max(ring.hmac_ttl),
                });
            }
            None
        } else {
            let key = match ring.id_key.clone() {
                Some(k) => k,
                None => generate(SigningAlg::ES256, now).await?,
            };
            ring.id_key = Some(key.clone());
            Some(from_generated(&key)?)
        };
        ring.retired.retain(|r| r.until > now && r.jwk.common.key_id != new_kid);
        ring.current = generated;
        ring.signer = signer.clone();
        write_keyring(repo, stored, &ring).await?;
        if let Some(kid) = &new_kid {
            tracing::info!(alg = %options.alg, kid, "signing access tokens");
        }
        Self::build(
            options.alg,
            signer.as_ref(),
            encoding,
            &options.secret,
            &options.issuer,
            &ring.retired,
            ring.hmac_until,
            id_key,
        )
    }
}

/// `authgate keys rotate`: a new generated key becomes the signer; the previous one keeps
/// verifying until the tokens it signed have expired. Answers the new `kid`.
pub async fn rotate(repo: &dyn ServerRepo, options: &KeyOptions, now: Secs) -> Result<String, KeyError> {
    if !options.alg.asymmetric() {
        return Err(KeyError::Rotate(
            "HS256 signs with JWT_SECRET, which has no rotation; set JWT_SIGNING_ALGORITHM to ES256, EdDSA or RS256".into(),
        ));
    }
    if options.key_file.is_some() {
        return Err(KeyError::Rotate(
            "the signing key comes from JWT_PRIVATE_KEY_FILE: replace that file instead (the previous key keeps verifying)".into(),
        ));
    }
    let (stored, mut ring) = read_keyring(repo).await?;
    let fresh = generate(options.alg, now).await?;
    let (_, jwk) = from_generated(&fresh)?;
    if let Some(old) = ring.signer.take() {
        let until = now + options.access_ttl.as_secs().max(ring.signer_ttl);
        ring.retired.push(RetiredKey { jwk: old, until });
    }
    ring.retired.retain(|r| r.until > now);
    let kid = jwk.common.key_id.clone().unwrap_or_default();
    ring.current = Some(fresh);
    ring.signer = Some(jwk);
    ring.signer_ttl = options.access_ttl.as_secs();
    write_keyring(repo, stored, &ring).await?;
    Ok(kid)
}

/// The stored keyring as read (to compare against when writing) and decoded.
async fn read_keyring(repo: &dyn ServerRepo) -> Result<(Option<Vec<u8>>, StoredKeyring), KeyError> {
    let stored = repo.keyring().await?;
    let ring = match &stored {
        Some(v) => serde_json::from_slice(v).map_err(|e| StoreError::Decode(e.to_string()))?,
        None => StoredKeyring::default(),
    };
    Ok((stored, ring))
}

/// Replaces the keyring that was read as `previous`; someone else's change in between (another
/// process starting or rotating) is an error to retry, never silently overwritten.
async fn write_keyring(repo: &dyn ServerRepo, previous: Option<Vec<u8>>, ring: &StoredKeyring) -> Result<(), KeyError> {
    let next = serde_json::to_vec(ring).map_err(|e| StoreError::Encode(e.to_string()))?;
    if repo.save_keyring(previous, next).await? {
        Ok(())
    } else {
        Err(KeyError::Changed)
    }
}

/// The public JWK of a private key, with `kid` (its thumbprint), `alg` and `use`.
fn public_jwk(encoding: &EncodingKey, alg: SigningAlg) -> Result<Jwk, String> {
    let mut jwk = Jwk::from_encoding_key(encoding, alg.algorithm()).map_err(|e| e.to_string())?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| e.to_string())?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

fn from_generated(key: &GeneratedKey) -> Result<(EncodingKey, Jwk), KeyError> {
    let der = B64.decode(&key.der).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let encoding = match key.alg {
        SigningAlg::ES256 => EncodingKey::from_ec_der(&der),
        SigningAlg::EdDSA => EncodingKey::from_ed_der(&der),
        SigningAlg::RS256 => EncodingKey::from_rsa_der(&der),
        SigningAlg::HS256 => return Err(KeyError::Corrupt("a stored HS256 key".into())),
    };
    let jwk = public_jwk(&encoding, key.alg).map_err(KeyError::Corrupt)?;
    Ok((encoding, jwk))
}

/// A new private key, off the async threads (an RSA key takes a while).
async fn generate(alg: SigningAlg, now: Secs) -> Result<GeneratedKey, KeyError> {
    let der = tokio::task::spawn_blocking(move || generate_der(alg))
        .await
        .map_err(|e| KeyError::Corrupt(e.to_string()))?
        .map_err(KeyError::Corrupt)?;
    Ok(GeneratedKey {
        alg,
        der: B64.encode(der),
        created_at: now,
    })
}

fn generate_der(alg: SigningAlg) -> Result<Vec<u8>, String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    match alg {
        SigningAlg::ES256 => {
            let key = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
            Ok(p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
                .map_err(|e| e.to_string())?
                .as_bytes()
                .to_vec())
        }
        SigningAlg::EdDSA => {
            let seed: [u8; 32] = rand::random();
            // PKCS#8 v1 (the seed alone): the form jsonwebtoken reads an Ed25519 key in.
            let key = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: seed,
                public_key: None,
            };
            Ok(key.to_pkcs8_der().map_err(|e| e.to_string())?.as_bytes().to_vec())
        }
        SigningAlg::RS256 => {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(|e| e.to_string())?;
            Ok(key.to_pkcs1_der().map_err(|e| e.to_string())?.as_bytes().to_vec())
        }
        SigningAlg::HS256 => Err("HS256 has no generated key".into()),
    }
}

async fn read_key_file(path: &Path, alg: SigningAlg) -> Result<(EncodingKey, Jwk), KeyError> {
    let file_error = |reason: String| KeyError::File {
        path: path.to_owned(),
        reason,
    };
    let owned = path.to_owned();
    let pem = tokio::task::spawn_blocking(move || std::fs::read(owned))
        .await
        .map_err(|e| file_error(e.to_string()))?
        .map_err(|e| file_error(e.to_string()))?;
    let encoding = match alg {
        SigningAlg::ES256 => EncodingKey::from_ec_pem(&pem),
        SigningAlg::EdDSA => EncodingKey::from_ed_pem(&pem),
        SigningAlg::RS256 => EncodingKey::from_rsa_pem(&pem),
        SigningAlg::HS256 => return Err(KeyError::FileWithHmac),
    }
    .map_err(|e| file_error(format!("not a PEM {alg} private key ({e})")))?;
    let jwk = public_jwk(&encoding, alg).map_err(|e| file_error(format!("not a usable {alg} private key ({e})")))?;
    Ok((encoding, jwk))
}

#[cold]
fn unreachable_hmac() -> JwtKeys {
    // `build` fails only on a bad asymmetric key; HS256 alone has none. Keep a usable value
    // rather than panic.
    JwtKeys {
        inner: Arc::new(Keyring {
            alg: Algorithm::HS256,
            kid: None,
            encoding: EncodingKey::from_secret(&[]),
            hmac: DecodingKey::from_secret(&[]),
            hmac_until: None,
            public: HashMap::new(),
            issuer: String::new(),
            jwks: r#"{"keys":[]}"#.into(),
            id_signer: None,
        }),
    }
}

#[cfg(test)]
mod tests;
