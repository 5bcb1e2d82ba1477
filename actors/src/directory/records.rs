//! The directory's rules for its records: what a valid username, client, scope or redirect
//! URI is, and the errors people see.

use crate::crypto::secret;
use crate::error::OAuthError;
use crate::store::directory::{AuthSource, ClientRecord, UserRecord};
use crate::time::Secs;

/// The device grant type (RFC 8628 §3.4).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// RFC 6749 §4.4: a confidential client acting for itself.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 6749 §4.1: a web or native app signs a person in through the browser.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// Name of the public client seeded on first start.
pub const SEEDED_CLIENT_NAME: &str = "AuthGate CLI";

impl UserRecord {
    /// A new local user with a password hash, created at `now`.
    pub fn local(username: String, password_hash: String, is_admin: bool, now: Secs) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            password_hash: Some(password_hash),
            is_admin,
            disabled: false,
            created_at: now,
            auth_source: AuthSource::Local,
            external_id: None,
            email: None,
            full_name: None,
        }
    }

    pub fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            username: self.username.clone(),
            is_admin: self.is_admin,
        }
    }

    /// An enabled administrator.
    pub(super) fn admin_in_charge(&self) -> bool {
        self.is_admin && !self.disabled
    }
}

impl ClientRecord {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The scope to grant for a request: the client's full set when none was asked for,
    /// otherwise the requested words (each of which the client must be allowed), in the
    /// client's own order so equal requests yield equal strings.
    pub fn resolve_scope(&self, requested: Option<&str>) -> Result<String, OAuthError> {
        let Some(req) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(self.scopes.join(" "));
        };
        let allowed = |w: &str| self.scopes.iter().any(|s| s == w) || OIDC_SCOPES.contains(&w);
        if let Some(w) = req.split_whitespace().find(|w| !allowed(w)) {
            let shown: String = w.chars().take(64).collect();
            return Err(OAuthError::invalid_scope(format!("scope {shown:?} is not allowed for this client")));
        }
        // In the client's order, then the OpenID Connect ones, each once.
        let granted: Vec<&str> = self
            .scopes
            .iter()
            .map(String::as_str)
            .chain(OIDC_SCOPES.iter().copied().filter(|o| !self.scopes.iter().any(|s| s == o)))
            .filter(|s| req.split_whitespace().any(|w| w == *s))
            .collect();
        Ok(granted.join(" "))
    }
}

/// The OpenID Connect scopes every client may ask for (OIDC Core §5.4, §11).
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A new client record created at `now` (and its secret, for a confidential client).
pub fn new_client(name: &str, confidential: bool, now: Secs) -> (ClientRecord, Option<String>) {
    let secret = confidential.then(|| secret::random_token(32));
    let rec = ClientRecord {
        always_refresh: false,
        resources: Vec::new(),
        client_id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        description: String::new(),
        confidential,
        secret_hash: secret.as_deref().map(secret::sha256_hex),
        grant_types: vec![GRANT_DEVICE_CODE.into(), GRANT_REFRESH_TOKEN.into()],
        scopes: vec!["read".into(), "write".into()],
        redirect_uris: Vec::new(),
        enabled: true,
        created_at: now,
    };
    (rec, secret)
}

/// A signed-in user, as the front end needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DirectoryError {
    #[error("a user named {0:?} already exists")]
    UsernameTaken(String),
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("{0:?} signs in through the external login API; its password is managed there")]
    ExternalUser(String),
    #[error("usernames are 1 to 64 visible characters with no spaces")]
    InvalidUsername,
    #[error("client names are 1 to 100 characters")]
    InvalidClientName,
    #[error("{0}")]
    InvalidClient(String),
    #[error("no such client")]
    UnknownClient,
    #[error("public clients have no secret")]
    PublicClient,
    #[error("no such user")]
    UnknownUserId,
    #[error("this would leave no enabled administrator")]
    LastAdmin,
    #[error("{0}")]
    InvalidProfile(String),
    #[error("unknown grant type {0:?} (supported: device_code, authorization_code, refresh_token, client_credentials)")]
    UnknownGrantType(String),
    #[error("The current password is not correct.")]
    WrongPassword,
    #[error(
        "Passwords are {} to {} characters.",
        crate::crypto::password::MIN_CHARS,
        crate::crypto::password::MAX_BYTES
    )]
    WeakPassword,
    #[error("The server is busy. Please try again in a moment.")]
    Busy,
    /// Done, but a follow-up (ending sessions, revoking tokens) could not be completed now.
    #[error("the change was saved, but its sessions or tokens could not all be ended yet; try again")]
    Unfinished,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A failed sign-in; deliberately says nothing about which part was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("Invalid username or password")]
    Invalid,
    #[error("Too many sign-ins at once. Please try again in a moment.")]
    Busy,
    /// The login API's user would take the name of a different existing user; nothing is merged.
    #[error("Username conflict with existing user. Please contact administrator.")]
    Conflict,
    /// The login-API provider is down or stopped mid-call.
    #[error("The sign-in service is unavailable. Please try again in a moment.")]
    Unavailable,
}

/// The full grant-type name for `device_code` / `refresh_token` (or the full names themselves).
pub fn grant_type_name(short: &str) -> Result<String, DirectoryError> {
    match short.trim() {
        "device_code" | GRANT_DEVICE_CODE => Ok(GRANT_DEVICE_CODE.into()),
        "refresh_token" => Ok(GRANT_REFRESH_TOKEN.into()),
        "client_credentials" => Ok(GRANT_CLIENT_CREDENTIALS.into()),
        "authorization_code" => Ok(GRANT_AUTHORIZATION_CODE.into()),
        other => Err(DirectoryError::UnknownGrantType(other.into())),
    }
}

pub fn valid_username(u: &str) -> bool {
    !u.is_empty() && u.chars().count() <= 64 && u.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// A valid scope token (RFC 6749 §3.3): printable ASCII but space, `"` and `\`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// An absolute URI with a scheme and no fragment (RFC 6749 §3.1.2).
/// RFC 8707 §2: a resource is an absolute URI without a fragment.
pub fn valid_resource(u: &str) -> bool {
    valid_redirect_uri(u)
}

impl ClientRecord {
    /// RFC 8707: `requested` resources, each on this client's list, else `invalid_target`.
    pub fn check_resources(&self, requested: &[String]) -> Result<(), OAuthError> {
        match requested.iter().find(|r| !self.resources.contains(r)) {
            None => Ok(()),
            Some(r) => {
                let shown: String = r.chars().take(80).collect();
                Err(OAuthError::invalid_target(format!(
                    "the resource {shown} is not allowed for this client"
                )))
            }
        }
    }
}

/// An absolute URI without a fragment, at most 2000 bytes, no spaces or control characters.
fn valid_redirect_uri(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once(':') else { return false };
    !rest.is_empty()
        && u.len() <= 2000
        && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !u.contains('#')
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Where a browser may be sent with a code (RFC 9700 §4.1, RFC 8252 §7): `https`, `http` only
/// to a loopback address, or a native app's private-use scheme; never a scheme a browser would
/// run or read itself (`javascript:`, `data:`, `file:` and the like).
pub fn safe_redirect_uri(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once(':') else { return false };
    match scheme.to_ascii_lowercase().as_str() {
        "https" => rest.starts_with("//") && rest.len() > 2,
        "http" => loopback_parts(u).is_some(),
        "javascript" | "data" | "vbscript" | "file" | "blob" | "about" | "ftp" | "ws" | "wss" => false,
        // RFC 8252 §7.1: a reverse-domain scheme such as com.example.app:/callback.
        s => s.contains('.'),
    }
}

/// `http://` to a loopback host (RFC 8252 §7.3): the host, and the rest after the port.
pub fn loopback_parts(u: &str) -> Option<(&str, &str)> {
    let after = u.strip_prefix("http://")?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && h != "[" => h,
        _ => authority,
    };
    matches!(host, "127.0.0.1" | "[::1]" | "localhost").then_some((host, rest))
}

impl ClientRecord {
    /// RFC 6749 §3.1.2.3 with RFC 8252 §7.3: the registered redirect URI `requested` names:
    /// compared whole, except that a loopback `http` URI matches on any port. `None` names
    /// the only registered one, if there is exactly one.
    pub fn redirect_uri<'a>(&'a self, requested: Option<&'a str>) -> Option<&'a str> {
        let Some(r) = requested else {
            return match self.redirect_uris.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            };
        };
        let matches = |registered: &String| {
            registered == r || matches!((loopback_parts(registered), loopback_parts(r)), (Some(a), Some(b)) if a == b)
        };
        self.redirect_uris.iter().any(matches).then_some(r)
    }
}

/// What an administrator sets on a client.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    pub name: String,
    pub description: String,
    /// Only at creation.
    pub confidential: bool,
    /// Short (`device_code`, `refresh_token`) or full names; empty means both.
    pub grant_types: Vec<String>,
    /// Empty means `read write`.
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// Refresh tokens for OpenID Connect requests without `offline_access`.
    pub always_refresh: bool,
    /// RFC 8707 resources its tokens may be meant for.
    pub resources: Vec<String>,
}

/// Each distinct item of `items`, in first-seen order.
fn distinct(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

impl ClientSpec {
    pub fn new(name: &str, confidential: bool) -> Self {
        Self {
            name: name.to_owned(),
            confidential,
            ..Self::default()
        }
    }

    /// The spec of an existing client (for its edit form).
    pub fn of(c: &ClientRecord) -> Self {
        Self {
            name: c.name.clone(),
            description: c.description.clone(),
            confidential: c.confidential,
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            redirect_uris: c.redirect_uris.clone(),
            always_refresh: c.always_refresh,
            resources: c.resources.clone(),
        }
    }

    /// Checks every field and applies them to `rec`.
    pub(super) fn apply(&self, rec: &mut ClientRecord) -> Result<(), DirectoryError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(DirectoryError::InvalidClientName);
        }
        if self.description.chars().count() > 500 {
            return Err(DirectoryError::InvalidClient("descriptions are at most 500 characters".into()));
        }
        let grants = if self.grant_types.is_empty() {
            vec![GRANT_DEVICE_CODE.to_owned(), GRANT_REFRESH_TOKEN.to_owned()]
        } else {
            distinct(self.grant_types.iter().map(|g| grant_type_name(g)).collect::<Result<Vec<_>, _>>()?)
        };
        let scopes = if self.scopes.is_empty() {
            vec!["read".to_owned(), "write".to_owned()]
        } else {
            if self.scopes.len() > 32 {
                return Err(DirectoryError::InvalidClient("at most 32 scopes".into()));
            }
            if let Some(bad) = self.scopes.iter().find(|s| !valid_scope(s)) {
                let shown: String = bad.chars().take(64).collect();
                return Err(DirectoryError::InvalidClient(format!("{shown:?} is not a valid scope")));
            }
            distinct(self.scopes.iter().cloned())
        };
        if !rec.confidential && grants.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
            return Err(DirectoryError::InvalidClient(
                "client credentials are for confidential clients (a public one has no secret to prove it)".into(),
            ));
        }
        if self.redirect_uris.len() > 10 {
            return Err(DirectoryError::InvalidClient("at most 10 redirect URIs".into()));
        }
        if let Some(bad) = self.redirect_uris.iter().find(|u| !valid_redirect_uri(u)) {
            let shown: String = bad.chars().take(80).collect();
            return Err(DirectoryError::InvalidClient(format!(
                "{shown:?} is not an absolute URI without a fragment"
            )));
        }
        if let Some(bad) = self.redirect_uris.iter().find(|u| !safe_redirect_uri(u)) {
            let shown: String = bad.chars().take(80).collect();
            return Err(DirectoryError::InvalidClient(format!(
                "{shown:?} cannot be a redirect URI: use https, http on a loopback address (127.0.0.1, [::1], localhost) \
                 or an app's own scheme (RFC 8252)"
            )));
        }
        rec.name = name.to_owned();
        rec.description = self.description.trim().to_owned();
        rec.grant_types = grants;
        rec.scopes = scopes;
        rec.redirect_uris = self.redirect_uris.clone();
        rec.always_refresh = self.always_refresh;
        if self.resources.len() > 10 {
            return Err(DirectoryError::InvalidClient("at most 10 resources".into()));
        }
        if let Some(bad) = self.resources.iter().find(|u| !valid_resource(u)) {
            let shown: String = bad.chars().take(80).collect();
            return Err(DirectoryError::InvalidClient(format!(
                "{shown:?} is not an absolute URI without a fragment"
            )));
        }
        rec.resources = distinct(self.resources.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_resolution() {
        let (c, _) = new_client("x", false, 0);
        assert_eq!(c.resolve_scope(None).unwrap(), "read write");
        assert_eq!(c.resolve_scope(Some("  ")).unwrap(), "read write");
        assert_eq!(c.resolve_scope(Some("write read write")).unwrap(), "read write");
        assert_eq!(c.resolve_scope(Some("write")).unwrap(), "write");
        assert_eq!(
            c.resolve_scope(Some("admin")).unwrap_err().code,
            crate::error::ErrorCode::InvalidScope
        );
    }

    #[test]
    fn usernames() {
        assert!(valid_username("alice"));
        assert!(valid_username("alice@example.com"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username("a\u{0}"));
        assert!(!valid_username(&"a".repeat(65)));
    }

    #[test]
    fn redirect_uris_match_exactly_but_loopback_on_any_port() {
        let (mut c, _) = new_client("x", true, 0);
        let spec = ClientSpec {
            redirect_uris: vec![
                "https://app.example/cb".into(),
                "http://127.0.0.1/callback".into(),
                "http://[::1]:8400/cb?x=1".into(),
                "com.example.app:/oauth".into(),
            ],
            ..ClientSpec::new("x", true)
        };
        spec.apply(&mut c).unwrap();
        assert_eq!(c.redirect_uri(Some("https://app.example/cb")), Some("https://app.example/cb"));
        for wrong in [
            "https://app.example/cb/",
            "https://app.example/cb?x",
            "https://APP.example/cb",
            "https://app.example/c",
            "https://app.example.evil/cb",
            "http://app.example/cb",
            "http://127.0.0.1:99/other",
            "http://localhost:99/callback",
            "http://127.0.0.1.evil/callback",
            "http://127.0.0.1@evil/callback",
            "http://[::1]:1/cb",
        ] {
            assert_eq!(c.redirect_uri(Some(wrong)), None, "{wrong}");
        }
        assert_eq!(
            c.redirect_uri(Some("http://127.0.0.1:51234/callback")),
            Some("http://127.0.0.1:51234/callback")
        );
        assert_eq!(c.redirect_uri(Some("http://[::1]/cb?x=1")), Some("http://[::1]/cb?x=1"));
        assert_eq!(c.redirect_uri(None), None, "several registered: the request must name one");
        for unsafe_uri in [
            "javascript:alert(1)//",
            "data:text/html,x",
            "http://app.example/cb",
            "file:///etc/passwd",
            "web+x:y",
        ] {
            let spec = ClientSpec {
                redirect_uris: vec![unsafe_uri.into()],
                ..ClientSpec::new("x", true)
            };
            assert!(spec.apply(&mut c).is_err(), "{unsafe_uri}");
        }
    }

    #[test]
    fn a_client_spec_is_checked_and_deduplicated() {
        let (mut c, _) = new_client("x", false, 0);
        let spec = ClientSpec {
            grant_types: vec!["device_code".into(), GRANT_DEVICE_CODE.into()],
            scopes: vec!["read".into(), "read".into(), "files:write".into()],
            ..ClientSpec::new(" Living room ", false)
        };
        spec.apply(&mut c).unwrap();
        assert_eq!((c.name.as_str(), c.grant_types.len(), c.scopes.len()), ("Living room", 1, 2));
        let bad_scope = ClientSpec {
            scopes: vec!["a\"b".into()],
            ..ClientSpec::new("x", false)
        };
        assert!(matches!(bad_scope.apply(&mut c), Err(DirectoryError::InvalidClient(_))));
        let fragment = ClientSpec {
            redirect_uris: vec!["https://app.example/cb#x".into()],
            ..ClientSpec::new("x", false)
        };
        assert!(fragment.apply(&mut c).is_err());
        assert!(ClientSpec::new("  ", false).apply(&mut c).is_err());
    }
}
