//! The directory actor.
//!
//! Owns the users (with their argon2id password hashes, or the external login API's id for
//! users who sign in there) and the OAuth clients (with SHA-256 of confidential clients'
//! secrets). Both are small, read-mostly registries consulted together
//! (client authentication on every token request, password checks at sign-in), so one actor
//! holds both in memory, rebuilt from redb at start. It also seeds the first admin and the
//! CLI client on the very first start.
//!
//! Client authentication runs on every token request, so the actor also publishes an
//! immutable [`ClientTable`] snapshot after each change to clients (a `watch` channel: the
//! actor stays the only writer, readers never wait for its mailbox).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::OAuthError;
use crate::password;
use crate::provider::auth::{AuthProviderMsg, ExternalUser};
use crate::provider::{CallError, caller_gone};
use crate::secret;
use crate::store::{Op, Store, StoreError, Table, decode};
use crate::system::{Actors, ask_within, cast};

/// The device grant type (RFC 8628 §3.4).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// Name of the public client seeded on first start.
pub const SEEDED_CLIENT_NAME: &str = "AuthGate CLI";
const SEED_MARKER: &[u8] = b"seeded";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// argon2id PHC string; `None` for users who sign in elsewhere.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: u64,
    /// Where the user signs in.
    #[serde(default)]
    pub auth_source: AuthSource,
    /// The login API's id for the user (`auth_source = http_api`).
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

/// Where a user's password is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthSource {
    /// Here, against the stored argon2id hash.
    #[default]
    Local,
    /// By the external login API (`AUTH_MODE=http_api`); no hash is stored.
    HttpApi,
}

impl UserRecord {
    /// A new local user with a password hash.
    pub fn local(username: String, password_hash: String, is_admin: bool) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            password_hash: Some(password_hash),
            is_admin,
            disabled: false,
            created_at: now_secs(),
            auth_source: AuthSource::Local,
            external_id: None,
            email: None,
            full_name: None,
        }
    }

    fn view(&self) -> UserView {
        UserView {
            id: self.id.clone(),
            username: self.username.clone(),
            is_admin: self.is_admin,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub confidential: bool,
    /// SHA-256 (hex) of the client secret; secrets are 256-bit random, so a fast hash suffices.
    #[serde(default)]
    pub secret_hash: Option<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub enabled: bool,
    pub created_at: u64,
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
        if let Some(w) = req.split_whitespace().find(|w| !self.scopes.iter().any(|s| s == w)) {
            let shown: String = w.chars().take(64).collect();
            return Err(OAuthError::invalid_scope(format!("scope {shown:?} is not allowed for this client")));
        }
        let granted: Vec<&str> = self
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| req.split_whitespace().any(|w| w == *s))
            .collect();
        Ok(granted.join(" "))
    }
}

/// An immutable snapshot of every OAuth client, published by the directory actor, with the
/// ids of the users who exist and are enabled (the token actor refuses everyone else's tokens).
#[derive(Debug, Default)]
pub struct ClientTable {
    clients: HashMap<String, Arc<ClientRecord>>,
    active_users: std::collections::HashSet<String>,
}

/// Where the directory publishes client snapshots; it outlives any one incarnation of the actor.
pub type ClientPublisher = Arc<watch::Sender<Arc<ClientTable>>>;

impl ClientTable {
    pub fn get(&self, client_id: &str) -> Option<&Arc<ClientRecord>> {
        self.clients.get(client_id)
    }

    /// Whether the user exists and is not disabled.
    pub fn user_active(&self, user_id: &str) -> bool {
        self.active_users.contains(user_id)
    }

    /// RFC 6749 §2.3: authenticates a client by id and, for a confidential client, its secret
    /// (compared as SHA-256 in constant time). Unknown, disabled, or wrong → `invalid_client`.
    pub fn authenticate(&self, client_id: &str, secret: Option<&str>) -> Result<Arc<ClientRecord>, OAuthError> {
        let unknown = || OAuthError::invalid_client("client authentication failed");
        let client = self.clients.get(client_id).filter(|c| c.enabled).ok_or_else(unknown)?;
        let secret = secret.filter(|s| !s.is_empty());
        match (client.confidential, secret, client.secret_hash.as_deref()) {
            (false, None, _) => Ok(client.clone()),
            (false, Some(_), _) => Err(OAuthError::invalid_client("public clients have no secret")),
            (true, Some(s), Some(h)) if secret::ct_eq(&secret::sha256_hex(s), h) => Ok(client.clone()),
            (true, _, _) => Err(unknown()),
        }
    }
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
    #[error("unknown grant type {0:?} (supported: device_code, refresh_token)")]
    UnknownGrantType(String),
    #[error(transparent)]
    Store(#[from] StoreError),
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
        other => Err(DirectoryError::UnknownGrantType(other.into())),
    }
}

pub fn valid_username(u: &str) -> bool {
    !u.is_empty() && u.chars().count() <= 64 && u.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// Messages of the directory actor.
pub enum DirectoryMsg {
    /// Checks a password and answers with the user or a [`LoginError`]. A local user is checked
    /// here (argon2id, off the actor); anyone else, when a login API is configured, there.
    Authenticate {
        username: String,
        password: String,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    },
    /// Internal: the login API accepted `username`; link or create the local record.
    ExternalLogin {
        username: String,
        user: ExternalUser,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    },
    /// Adds a user; the caller hashed the password with [`password::hash`] (keeps argon2 off this actor).
    CreateUser {
        username: String,
        password_hash: String,
        is_admin: bool,
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    },
    SetPassword {
        username: String,
        password_hash: String,
        reply: RpcReplyPort<Result<(), DirectoryError>>,
    },
    ListUsers {
        reply: RpcReplyPort<Vec<UserRecord>>,
    },
    /// Adds a client; a confidential one gets a secret, returned here once and stored hashed.
    CreateClient {
        spec: ClientSpec,
        reply: RpcReplyPort<Result<(ClientRecord, Option<String>), DirectoryError>>,
    },
    /// Changes a client's name, description, grant types, scopes and redirect URIs (its kind,
    /// public or confidential, stays).
    UpdateClient {
        client_id: String,
        spec: ClientSpec,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    /// A disabled client is refused (`invalid_client`) and its tokens stop validating.
    SetClientEnabled {
        client_id: String,
        enabled: bool,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    /// A new secret for a confidential client, returned once; the old one stops working.
    RotateClientSecret {
        client_id: String,
        reply: RpcReplyPort<Result<(ClientRecord, String), DirectoryError>>,
    },
    DeleteClient {
        client_id: String,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    GetUser {
        id: String,
        reply: RpcReplyPort<Option<UserRecord>>,
    },
    /// Grants or removes admin, disables or enables; never leaves no enabled administrator.
    UpdateUser {
        id: String,
        is_admin: Option<bool>,
        disabled: Option<bool>,
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    },
    DeleteUser {
        id: String,
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    },
    ListClients {
        reply: RpcReplyPort<Vec<Arc<ClientRecord>>>,
    },
}

pub struct DirectoryActor;

pub struct DirectoryArgs {
    pub store: Store,
    /// Where client snapshots go.
    pub clients: ClientPublisher,
    /// Password of the admin seeded on first start; random when `None`.
    pub admin_password: Option<String>,
    /// Where a generated admin password is written (mode 0600), so that it never reaches a log.
    pub admin_password_file: Option<std::path::PathBuf>,
    /// To reach the login-API provider.
    pub actors: Actors,
    /// The login API's timeout when sign-ins go there (`AUTH_MODE=http_api`), else `None`.
    pub login_api_timeout: Option<Duration>,
}

pub struct DirectoryState {
    users: HashMap<String, UserRecord>,
    by_username: HashMap<String, String>,
    /// Login-API id → user id.
    by_external: HashMap<String, String>,
    clients: HashMap<String, Arc<ClientRecord>>,
    published: ClientPublisher,
    /// Verified against when the username is unknown, so timing does not reveal which users exist.
    dummy_hash: String,
    store: Store,
    actors: Actors,
    login_api_timeout: Option<Duration>,
}

fn now_secs() -> u64 {
    crate::now_ms() / 1000
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
}

/// A valid scope token (RFC 6749 §3.3): printable ASCII but space, `"` and `\`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// An absolute URI with a scheme and no fragment (RFC 6749 §3.1.2).
fn valid_redirect_uri(u: &str) -> bool {
    let Some((scheme, rest)) = u.split_once(':') else { return false };
    !rest.is_empty()
        && u.len() <= 2000
        && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !u.contains('#')
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ClientSpec {
    pub fn new(name: &str, confidential: bool) -> Self {
        Self {
            name: name.to_owned(),
            confidential,
            ..Self::default()
        }
    }

    /// Checks every field and applies them to `rec`.
    fn apply(&self, rec: &mut ClientRecord) -> Result<(), DirectoryError> {
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
            let mut g: Vec<String> = Vec::new();
            for name in self.grant_types.iter().map(|g| grant_type_name(g)) {
                let name = name?;
                if !g.contains(&name) {
                    g.push(name);
                }
            }
            g
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
            let mut s: Vec<String> = Vec::new();
            for scope in &self.scopes {
                if !s.contains(scope) {
                    s.push(scope.clone());
                }
            }
            s
        };
        if self.redirect_uris.len() > 10 {
            return Err(DirectoryError::InvalidClient("at most 10 redirect URIs".into()));
        }
        if let Some(bad) = self.redirect_uris.iter().find(|u| !valid_redirect_uri(u)) {
            let shown: String = bad.chars().take(80).collect();
            return Err(DirectoryError::InvalidClient(format!(
                "{shown:?} is not an absolute URI without a fragment"
            )));
        }
        rec.name = name.to_owned();
        rec.description = self.description.trim().to_owned();
        rec.grant_types = grants;
        rec.scopes = scopes;
        rec.redirect_uris = self.redirect_uris.clone();
        Ok(())
    }
}

/// Writes `secret` to a new file that only this user may read (0600 on Unix).
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    // A new file, never an existing one (which might be a link elsewhere, or readable by others).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// A new client record (and its secret, for a confidential client).
pub fn new_client(name: &str, confidential: bool) -> (ClientRecord, Option<String>) {
    let secret = confidential.then(|| secret::random_token(32));
    let rec = ClientRecord {
        client_id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        description: String::new(),
        confidential,
        secret_hash: secret.as_deref().map(secret::sha256_hex),
        grant_types: vec![GRANT_DEVICE_CODE.into(), GRANT_REFRESH_TOKEN.into()],
        scopes: vec!["read".into(), "write".into()],
        redirect_uris: Vec::new(),
        enabled: true,
        created_at: now_secs(),
    };
    (rec, secret)
}

impl DirectoryState {
    fn insert_user(&mut self, u: UserRecord) {
        if let Some(old) = self.users.get(&u.id)
            && old.username != u.username
        {
            self.by_username.remove(&old.username);
        }
        self.by_username.insert(u.username.clone(), u.id.clone());
        if let Some(ext) = &u.external_id {
            self.by_external.insert(ext.clone(), u.id.clone());
        }
        self.users.insert(u.id.clone(), u);
    }

    fn user_by_name(&self, username: &str) -> Option<&UserRecord> {
        self.by_username.get(username).and_then(|id| self.users.get(id))
    }

    /// First start only: the admin user and the CLI client. A generated password goes to a
    /// file only its owner can read, never to the log.
    async fn seed(&mut self, admin_password: Option<String>, password_file: Option<std::path::PathBuf>) -> Result<(), ActorProcessingErr> {
        let generated = admin_password.is_none();
        let password = admin_password.unwrap_or_else(|| password::random_password(16));
        let admin = UserRecord::local("admin".into(), password::hash(password.clone()).await?, true);
        let (client, _) = new_client(SEEDED_CLIENT_NAME, false);
        let ops = vec![
            Op::put(Table::Users, admin.id.as_bytes().to_vec(), &admin)?,
            Op::put(Table::Clients, client.client_id.as_bytes().to_vec(), &client)?,
            Op::put(Table::Meta, SEED_MARKER.to_vec(), &true)?,
        ];
        // The password file first: if it cannot be written, nothing is seeded and the next
        // start tries again, rather than leaving an admin whose password nobody knows.
        let shown = match (generated, password_file) {
            (true, Some(path)) => {
                let shown = path.display().to_string();
                let secret = password.clone();
                tokio::task::spawn_blocking(move || write_private(&path, &secret)).await??;
                Some(shown)
            }
            (true, None) => return Err("a generated admin password needs somewhere to be written".into()),
            (false, _) => None,
        };
        self.store.write(ops).await?;
        match shown {
            Some(shown) => {
                tracing::warn!(username = "admin", password_file = %shown, "first start: created the admin user; its generated password is in this file (readable only by this user). Sign in, change it, and delete the file")
            }
            None => tracing::warn!(username = "admin", "first start: created the admin user with ADMIN_PASSWORD"),
        }
        tracing::warn!(client_id = %client.client_id, name = SEEDED_CLIENT_NAME, "first start: created the public OAuth client for CLI tools");
        self.insert_user(admin);
        self.clients.insert(client.client_id.clone(), Arc::new(client));
        Ok(())
    }

    fn remove_user(&mut self, id: &str) -> Option<UserRecord> {
        let u = self.users.remove(id)?;
        self.by_username.remove(&u.username);
        if let Some(ext) = &u.external_id {
            self.by_external.remove(ext);
        }
        Some(u)
    }

    /// Whether replacing user `id` by `with` (or deleting it) leaves no enabled administrator.
    fn leaves_no_admin(&self, id: &str, with: Option<&UserRecord>) -> bool {
        let was = self.users.get(id).is_some_and(|u| u.is_admin && !u.disabled);
        let stays = with.is_some_and(|u| u.is_admin && !u.disabled);
        was && !stays && !self.users.values().any(|u| u.id != id && u.is_admin && !u.disabled)
    }

    /// Stores a new or changed client, publishes the snapshot, and replies `answer(client)`
    /// once durable.
    fn save_client<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<DirectoryMsg>,
        client: ClientRecord,
        answer: impl FnOnce(ClientRecord) -> T,
        reply: RpcReplyPort<Result<T, DirectoryError>>,
    ) {
        match Op::put(Table::Clients, client.client_id.as_bytes().to_vec(), &client) {
            Ok(op) => {
                self.clients.insert(client.client_id.clone(), Arc::new(client.clone()));
                self.publish();
                self.write_then(myself, vec![op], answer(client), reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Publishes the current clients as a fresh immutable snapshot.
    fn publish(&self) {
        self.published.send_replace(Arc::new(ClientTable {
            clients: self.clients.clone(),
            active_users: self.users.values().filter(|u| !u.disabled).map(|u| u.id.clone()).collect(),
        }));
    }

    /// Queues `ops` and replies `answer` once durable.
    fn write_then<T: Send + 'static>(
        &self,
        myself: &ActorRef<DirectoryMsg>,
        ops: Vec<Op>,
        answer: T,
        reply: RpcReplyPort<Result<T, DirectoryError>>,
    ) {
        self.commit_then(myself, ops, move |r| {
            let _ = reply.send(r.map(|()| answer).map_err(DirectoryError::from));
        });
    }

    /// Queues `ops` and calls `done` with the commit's outcome. A failed commit leaves memory
    /// (and the published clients) ahead of the disk, so the actor stops and is rebuilt from
    /// the store.
    fn commit_then(&self, myself: &ActorRef<DirectoryMsg>, ops: Vec<Op>, done: impl FnOnce(Result<(), StoreError>) + Send + 'static) {
        let committed = self.store.submit(ops);
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = committed.await;
            if let Err(e) = &result {
                myself.stop(Some(format!("a commit failed ({e}); rebuilding from the store")));
            }
            done(result);
        });
    }

    /// Asks the login API, off the actor; its answer comes back as [`DirectoryMsg::ExternalLogin`].
    fn external_login(
        &self,
        myself: &ActorRef<DirectoryMsg>,
        username: String,
        password: String,
        timeout: Duration,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    ) {
        let actors = self.actors.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let call = async {
                let Ok(p) = actors.auth_provider() else {
                    return Err(CallError::Gone);
                };
                // A little beyond the provider's own deadline, so its answer wins the race.
                let wait = timeout + Duration::from_secs(1);
                ask_within(&p, wait, |r| AuthProviderMsg::Login {
                    username: username.clone(),
                    password,
                    reply: r,
                })
                .await
                .unwrap_or(Err(CallError::Gone))
            };
            // If the browser gives up, so does the call to the API.
            let asked = tokio::select! {
                r = call => r,
                () = caller_gone(&reply) => return,
            };
            match asked {
                Ok(user) => {
                    if let Err(e) = cast(&myself, DirectoryMsg::ExternalLogin { username, user, reply }) {
                        tracing::warn!(error = %e, "the directory stopped during an external sign-in");
                    }
                }
                Err(e) => {
                    tracing::info!(username = %username, reason = %e, source = "http_api", "sign-in failed");
                    let _ = reply.send(Err(match e {
                        CallError::Busy => LoginError::Busy,
                        CallError::Gone => LoginError::Unavailable,
                        _ => LoginError::Invalid,
                    }));
                }
            }
        });
    }

    /// The login API accepted `username` as `ext`: the user linked to `ext.user_id` (its email
    /// and full name brought up to date), or a new one. A name held by another user is a
    /// conflict; nothing is merged.
    fn link_external(
        &mut self,
        myself: &ActorRef<DirectoryMsg>,
        username: String,
        ext: ExternalUser,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    ) {
        let holder = self.by_username.get(&username).cloned();
        let linked = self.by_external.get(&ext.user_id).and_then(|id| self.users.get(id)).cloned();
        if holder.is_some() && holder != linked.as_ref().map(|u| u.id.clone()) {
            tracing::warn!(username = %username, "external sign-in refused: the username belongs to another user");
            let _ = reply.send(Err(LoginError::Conflict));
            return;
        }
        let user = match linked {
            Some(u) if u.disabled => {
                tracing::info!(username = %u.username, source = "http_api", reason = "the user is disabled", "sign-in failed");
                let _ = reply.send(Err(LoginError::Invalid));
                return;
            }
            // The stored name stays: an API that accepts aliases must not rename the user.
            Some(u) => UserRecord {
                email: ext.email,
                full_name: ext.full_name,
                ..u
            },
            None if !valid_username(&username) => {
                tracing::info!(username = %username, source = "http_api", reason = "not a valid username for a new user", "sign-in failed");
                let _ = reply.send(Err(LoginError::Invalid));
                return;
            }
            None => UserRecord {
                password_hash: None,
                auth_source: AuthSource::HttpApi,
                external_id: Some(ext.user_id),
                email: ext.email,
                full_name: ext.full_name,
                ..UserRecord::local(username, String::new(), false)
            },
        };
        let view = user.view();
        if self.users.get(&user.id) == Some(&user) {
            let _ = reply.send(Ok(view));
            return;
        }
        match Op::put(Table::Users, user.id.as_bytes().to_vec(), &user) {
            Ok(op) => {
                tracing::info!(username = %user.username, "external user record saved");
                self.insert_user(user);
                self.publish();
                self.commit_then(myself, vec![op], move |r| {
                    let _ = reply.send(r.map(|()| view).map_err(|_| LoginError::Unavailable));
                });
            }
            Err(_) => {
                let _ = reply.send(Err(LoginError::Unavailable));
            }
        }
    }
}

impl Actor for DirectoryActor {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(&self, _myself: ActorRef<DirectoryMsg>, args: DirectoryArgs) -> Result<DirectoryState, ActorProcessingErr> {
        MAILBOX.reset();
        let (users, clients, seeded) = args
            .store
            .read(|r| {
                let mut users = Vec::new();
                r.scan(Table::Users, |_, v| {
                    match decode::<UserRecord>(v) {
                        Ok(u) => users.push(u),
                        Err(e) => tracing::warn!(error = %e, "skipping an unreadable user record"),
                    }
                    Ok(())
                })?;
                let mut clients = Vec::new();
                r.scan(Table::Clients, |_, v| {
                    match decode::<ClientRecord>(v) {
                        Ok(c) => clients.push(c),
                        Err(e) => tracing::warn!(error = %e, "skipping an unreadable client record"),
                    }
                    Ok(())
                })?;
                Ok((users, clients, r.get(Table::Meta, SEED_MARKER)?.is_some()))
            })
            .await?;
        let dummy_hash = password::hash(password::random_password(24)).await?;
        let mut st = DirectoryState {
            users: HashMap::new(),
            by_username: HashMap::new(),
            by_external: HashMap::new(),
            clients: clients.into_iter().map(|c| (c.client_id.clone(), Arc::new(c))).collect(),
            published: args.clients,
            dummy_hash,
            store: args.store,
            actors: args.actors,
            login_api_timeout: args.login_api_timeout,
        };
        for u in users {
            st.insert_user(u);
        }
        if !seeded {
            st.seed(args.admin_password, args.admin_password_file).await?;
        }
        st.publish();
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<DirectoryMsg>, msg: DirectoryMsg, st: &mut DirectoryState) -> Result<(), ActorProcessingErr> {
        MAILBOX.received();
        match msg {
            DirectoryMsg::Authenticate { username, password, reply } => {
                // Hybrid rule: a local user keeps signing in here; anyone else asks the login API.
                let local = st.user_by_name(&username).is_some_and(|u| u.auth_source == AuthSource::Local);
                if !local && let Some(timeout) = st.login_api_timeout {
                    st.external_login(&myself, username, password, timeout, reply);
                    return Ok(());
                }
                let user = st
                    .user_by_name(&username)
                    .filter(|u| !u.disabled && u.auth_source == AuthSource::Local && u.password_hash.is_some());
                let hash = user.and_then(|u| u.password_hash.clone()).unwrap_or_else(|| st.dummy_hash.clone());
                let view = user.map(UserRecord::view);
                tokio::spawn(async move {
                    let checked = password::verify(password, hash, || !reply.is_closed()).await;
                    let _ = reply.send(match (checked, view) {
                        (Ok(true), Some(v)) => Ok(v),
                        (Ok(_), _) => Err(LoginError::Invalid),
                        (Err(_), _) => Err(LoginError::Busy),
                    });
                });
            }
            DirectoryMsg::CreateUser {
                username,
                password_hash,
                is_admin,
                reply,
            } => {
                if !valid_username(&username) {
                    let _ = reply.send(Err(DirectoryError::InvalidUsername));
                } else if st.by_username.contains_key(&username) {
                    let _ = reply.send(Err(DirectoryError::UsernameTaken(username)));
                } else {
                    let user = UserRecord::local(username, password_hash, is_admin);
                    match Op::put(Table::Users, user.id.as_bytes().to_vec(), &user) {
                        Ok(op) => {
                            st.insert_user(user.clone());
                            st.publish();
                            st.write_then(&myself, vec![op], user, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                }
            }
            DirectoryMsg::SetPassword {
                username,
                password_hash,
                reply,
            } => {
                let Some(id) = st.by_username.get(&username).cloned() else {
                    let _ = reply.send(Err(DirectoryError::UnknownUser(username)));
                    return Ok(());
                };
                let Some(user) = st.users.get_mut(&id) else {
                    let _ = reply.send(Err(DirectoryError::UnknownUser(username)));
                    return Ok(());
                };
                if user.auth_source != AuthSource::Local {
                    let _ = reply.send(Err(DirectoryError::ExternalUser(username)));
                    return Ok(());
                }
                user.password_hash = Some(password_hash);
                match Op::put(Table::Users, id.as_bytes().to_vec(), &*user) {
                    Ok(op) => st.write_then(&myself, vec![op], (), reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            DirectoryMsg::ExternalLogin { username, user, reply } => st.link_external(&myself, username, user, reply),
            DirectoryMsg::ListUsers { reply } => {
                let mut users: Vec<UserRecord> = st.users.values().cloned().collect();
                users.sort_by(|a, b| a.username.cmp(&b.username));
                let _ = reply.send(users);
            }
            DirectoryMsg::CreateClient { spec, reply } => {
                let (mut client, secret) = new_client(&spec.name, spec.confidential);
                if let Err(e) = spec.apply(&mut client) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                st.save_client(&myself, client, move |c| (c, secret), reply);
            }
            DirectoryMsg::UpdateClient { client_id, spec, reply } => {
                let Some(mut client) = st.clients.get(&client_id).map(|c| (**c).clone()) else {
                    let _ = reply.send(Err(DirectoryError::UnknownClient));
                    return Ok(());
                };
                if let Err(e) = spec.apply(&mut client) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                st.save_client(&myself, client, |c| c, reply);
            }
            DirectoryMsg::SetClientEnabled { client_id, enabled, reply } => {
                let Some(mut client) = st.clients.get(&client_id).map(|c| (**c).clone()) else {
                    let _ = reply.send(Err(DirectoryError::UnknownClient));
                    return Ok(());
                };
                client.enabled = enabled;
                st.save_client(&myself, client, |c| c, reply);
            }
            DirectoryMsg::RotateClientSecret { client_id, reply } => {
                let Some(mut client) = st.clients.get(&client_id).map(|c| (**c).clone()) else {
                    let _ = reply.send(Err(DirectoryError::UnknownClient));
                    return Ok(());
                };
                if !client.confidential {
                    let _ = reply.send(Err(DirectoryError::PublicClient));
                    return Ok(());
                }
                let secret = secret::random_token(32);
                client.secret_hash = Some(secret::sha256_hex(&secret));
                st.save_client(&myself, client, move |c| (c, secret), reply);
            }
            DirectoryMsg::DeleteClient { client_id, reply } => {
                let Some(client) = st.clients.remove(&client_id) else {
                    let _ = reply.send(Err(DirectoryError::UnknownClient));
                    return Ok(());
                };
                st.publish();
                let op = Op::delete(Table::Clients, client_id.into_bytes());
                st.write_then(&myself, vec![op], (*client).clone(), reply);
            }
            DirectoryMsg::GetUser { id, reply } => {
                let _ = reply.send(st.users.get(&id).cloned());
            }
            DirectoryMsg::UpdateUser {
                id,
                is_admin,
                disabled,
                reply,
            } => {
                let Some(mut user) = st.users.get(&id).cloned() else {
                    let _ = reply.send(Err(DirectoryError::UnknownUserId));
                    return Ok(());
                };
                if let Some(a) = is_admin {
                    user.is_admin = a;
                }
                if let Some(d) = disabled {
                    user.disabled = d;
                }
                if st.leaves_no_admin(&id, Some(&user)) {
                    let _ = reply.send(Err(DirectoryError::LastAdmin));
                    return Ok(());
                }
                match Op::put(Table::Users, id.as_bytes().to_vec(), &user) {
                    Ok(op) => {
                        st.insert_user(user.clone());
                        st.publish();
                        st.write_then(&myself, vec![op], user, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            DirectoryMsg::DeleteUser { id, reply } => {
                if !st.users.contains_key(&id) {
                    let _ = reply.send(Err(DirectoryError::UnknownUserId));
                    return Ok(());
                }
                if st.leaves_no_admin(&id, None) {
                    let _ = reply.send(Err(DirectoryError::LastAdmin));
                    return Ok(());
                }
                let Some(user) = st.remove_user(&id) else {
                    let _ = reply.send(Err(DirectoryError::UnknownUserId));
                    return Ok(());
                };
                st.publish();
                st.write_then(&myself, vec![Op::delete(Table::Users, id.into_bytes())], user, reply);
            }
            DirectoryMsg::ListClients { reply } => {
                let mut clients: Vec<Arc<ClientRecord>> = st.clients.values().cloned().collect();
                clients.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.client_id.cmp(&b.client_id)));
                let _ = reply.send(clients);
            }
        }
        Ok(())
    }
}

/// This actor's mailbox depth (see [`crate::metrics::Mailbox`]).
static MAILBOX: crate::metrics::Mailbox = crate::metrics::Mailbox::new("directory");

impl crate::system::Tracked for DirectoryMsg {
    fn mailbox() -> &'static crate::metrics::Mailbox {
        &MAILBOX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_resolution() {
        let (c, _) = new_client("x", false);
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
    fn client_authentication() {
        let (public, _) = new_client("cli", false);
        let (confidential, secret) = new_client("bot", true);
        let (mut disabled, _) = new_client("off", false);
        disabled.enabled = false;
        let secret = secret.unwrap();
        let table = ClientTable {
            clients: [public.clone(), confidential.clone(), disabled.clone()]
                .into_iter()
                .map(|c| (c.client_id.clone(), Arc::new(c)))
                .collect(),
            active_users: Default::default(),
        };
        let code = |r: Result<Arc<ClientRecord>, OAuthError>| r.map(|c| c.name.clone()).map_err(|e| e.code);
        use crate::error::ErrorCode::InvalidClient;
        assert_eq!(code(table.authenticate(&public.client_id, None)), Ok("cli".into()));
        assert_eq!(code(table.authenticate(&public.client_id, Some(""))), Ok("cli".into()));
        assert_eq!(code(table.authenticate(&public.client_id, Some("x"))), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&confidential.client_id, Some(&secret))), Ok("bot".into()));
        assert_eq!(code(table.authenticate(&confidential.client_id, Some("wrong"))), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&confidential.client_id, None)), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&disabled.client_id, None)), Err(InvalidClient));
        assert_eq!(code(table.authenticate("unknown", None)), Err(InvalidClient));
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
}
