//! The directory book: users and clients in memory, every rule, no I/O, time passed in.

use std::collections::HashMap;
use std::sync::Arc;

use super::records::{ClientSpec, DirectoryError, LoginError, UserView, new_client, valid_username};
use super::snapshot::{ClientTable, UserProfile};
use crate::crypto::password::NewPassword;
use crate::crypto::secret;
use crate::provider::login::ExternalUser;
use crate::store::directory::{AuthSource, ClientRecord, DirectoryData, UserRecord};
use crate::time::Secs;

/// Which user a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name(String),
}

/// What an administrator (or the user, for the password) changes about a user.
#[derive(Debug, Clone)]
pub enum UserChange {
    Password(NewPassword),
    Admin(bool),
    Disabled(bool),
    Delete,
    /// The name and email OpenID Connect gives out (`None`: not known). For a user of the
    /// login API, its next reply replaces them.
    Profile {
        name: Option<String>,
        email: Option<String>,
    },
}

/// A profile as typed, checked: blank means unknown; a name is at most 100 characters, an
/// email at most 254, one `@` with something on each side, no spaces; neither has control
/// characters.
pub fn profile(name: &str, email: &str) -> Result<UserChange, DirectoryError> {
    let (name, email) = (name.trim(), email.trim());
    let clean = |s: &str| !s.chars().any(|c| c.is_control() || crate::token::invisible(c));
    if name.chars().count() > 100 || !clean(name) {
        return Err(DirectoryError::InvalidProfile(
            "names are at most 100 characters, without control or invisible characters".into(),
        ));
    }
    let plausible = email.len() <= 254
        && clean(email)
        && !email.contains(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !email.is_empty() && !plausible {
        return Err(DirectoryError::InvalidProfile("that is not an email address".into()));
    }
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(UserChange::Profile {
        name: some(name),
        email: some(email),
    })
}

impl UserChange {
    /// How the audit trail and the pages describe the change.
    pub fn describe(&self) -> &'static str {
        match self {
            UserChange::Password(_) => "password reset",
            UserChange::Admin(true) => "make admin",
            UserChange::Admin(false) => "remove admin",
            UserChange::Disabled(true) => "disable",
            UserChange::Disabled(false) => "enable",
            UserChange::Delete => "deleted",
            UserChange::Profile { .. } => "profile changed",
        }
    }

    /// Whether the user's browser sessions end with it.
    pub fn ends_sessions(&self) -> bool {
        matches!(self, UserChange::Password(_) | UserChange::Disabled(true) | UserChange::Delete)
    }
}

#[derive(Default)]
pub struct DirectoryBook {
    users: HashMap<String, UserRecord>,
    by_username: HashMap<String, String>,
    /// Login-API id → user id.
    by_external: HashMap<String, String>,
    clients: HashMap<String, Arc<ClientRecord>>,
}

impl DirectoryBook {
    pub fn load(data: DirectoryData) -> Self {
        let mut book = Self {
            clients: data.clients.into_iter().map(|c| (c.client_id.clone(), Arc::new(c))).collect(),
            ..Self::default()
        };
        for u in data.users {
            book.insert_user(u);
        }
        book
    }

    /// A fresh immutable snapshot of the clients and the enabled users.
    pub fn snapshot(&self) -> ClientTable {
        ClientTable {
            clients: self.clients.clone(),
            active_users: self
                .users
                .values()
                .filter(|u| !u.disabled)
                .map(|u| {
                    let profile = UserProfile {
                        username: u.username.clone(),
                        name: u.full_name.clone(),
                        email: u.email.clone(),
                    };
                    (u.id.clone(), Arc::new(profile))
                })
                .collect(),
        }
    }

    pub fn user(&self, who: &UserRef) -> Option<&UserRecord> {
        match who {
            UserRef::Id(id) => self.users.get(id),
            UserRef::Name(name) => self.by_username.get(name).and_then(|id| self.users.get(id)),
        }
    }

    /// Every user, by username.
    pub fn users(&self) -> Vec<UserRecord> {
        let mut users: Vec<UserRecord> = self.users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    /// Every client, by name.
    pub fn clients(&self) -> Vec<Arc<ClientRecord>> {
        let mut clients: Vec<Arc<ClientRecord>> = self.clients.values().cloned().collect();
        clients.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.client_id.cmp(&b.client_id)));
        clients
    }

    /// The local, enabled user a password is checked against for a sign-in.
    pub fn local_sign_in(&self, username: &str) -> Option<&UserRecord> {
        self.user(&UserRef::Name(username.to_owned()))
            .filter(|u| !u.disabled && u.auth_source == AuthSource::Local && u.password_hash.is_some())
    }

    /// Whether `username` is a local user (who keeps signing in here, whatever the mode).
    pub fn is_local(&self, username: &str) -> bool {
        self.user(&UserRef::Name(username.to_owned()))
            .is_some_and(|u| u.auth_source == AuthSource::Local)
    }

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
        let was = self.users.get(id).is_some_and(UserRecord::admin_in_charge);
        let stays = with.is_some_and(UserRecord::admin_in_charge);
        was && !stays && !self.users.values().any(|u| u.id != id && u.admin_in_charge())
    }

    /// A new local user.
    pub fn create_user(
        &mut self,
        username: String,
        password: NewPassword,
        is_admin: bool,
        now: Secs,
    ) -> Result<UserRecord, DirectoryError> {
        if !valid_username(&username) {
            return Err(DirectoryError::InvalidUsername);
        }
        if self.by_username.contains_key(&username) {
            return Err(DirectoryError::UsernameTaken(username));
        }
        let user = UserRecord::local(username, password.into_hash(), is_admin, now);
        self.insert_user(user.clone());
        Ok(user)
    }

    /// Applies `change` to the user `who`: the user as it now is (or was, when deleted).
    /// Never leaves no enabled administrator; passwords only for local users.
    pub fn change_user(&mut self, who: &UserRef, change: UserChange) -> Result<UserRecord, DirectoryError> {
        let unknown = || match who {
            UserRef::Id(_) => DirectoryError::UnknownUserId,
            UserRef::Name(n) => DirectoryError::UnknownUser(n.clone()),
        };
        let mut user = self.user(who).cloned().ok_or_else(unknown)?;
        match change {
            UserChange::Delete => {
                if self.leaves_no_admin(&user.id, None) {
                    return Err(DirectoryError::LastAdmin);
                }
                return self.remove_user(&user.id).ok_or_else(unknown);
            }
            UserChange::Password(p) => {
                if user.auth_source != AuthSource::Local {
                    return Err(DirectoryError::ExternalUser(user.username));
                }
                user.password_hash = Some(p.into_hash());
            }
            UserChange::Admin(a) => user.is_admin = a,
            UserChange::Disabled(d) => user.disabled = d,
            UserChange::Profile { name, email } => {
                user.full_name = name;
                user.email = email;
            }
        }
        if self.leaves_no_admin(&user.id, Some(&user)) {
            return Err(DirectoryError::LastAdmin);
        }
        self.insert_user(user.clone());
        Ok(user)
    }

    /// The login API accepted `username` as `ext`: the user linked to `ext.user_id` (its email
    /// and full name brought up to date), or a new one, and whether the record changed (and
    /// must be saved). A name held by another user is a conflict; nothing is merged.
    pub fn link_external(&mut self, username: String, ext: ExternalUser, now: Secs) -> Result<(UserRecord, bool), LoginError> {
        let holder = self.by_username.get(&username).cloned();
        let linked = self.by_external.get(&ext.user_id).and_then(|id| self.users.get(id)).cloned();
        if holder.is_some() && holder != linked.as_ref().map(|u| u.id.clone()) {
            tracing::warn!(username = %username, "external sign-in refused: the username belongs to another user");
            return Err(LoginError::Conflict);
        }
        let user = match linked {
            Some(u) if u.disabled => {
                tracing::info!(username = %u.username, source = "http_api", reason = "the user is disabled", "sign-in failed");
                return Err(LoginError::Invalid);
            }
            // The stored name stays: an API that accepts aliases must not rename the user.
            Some(u) => UserRecord {
                email: ext.email,
                full_name: ext.full_name,
                ..u
            },
            None if !valid_username(&username) => {
                tracing::info!(username = %username, source = "http_api", reason = "not a valid username for a new user", "sign-in failed");
                return Err(LoginError::Invalid);
            }
            None => UserRecord {
                password_hash: None,
                auth_source: AuthSource::HttpApi,
                external_id: Some(ext.user_id),
                email: ext.email,
                full_name: ext.full_name,
                ..UserRecord::local(username, String::new(), false, now)
            },
        };
        let changed = self.users.get(&user.id) != Some(&user);
        if changed {
            self.insert_user(user.clone());
        }
        Ok((user, changed))
    }

    /// A user as the store has it now (another process created, changed or deleted it).
    pub fn stored_user(&mut self, id: &str, user: Option<UserRecord>) {
        match user {
            Some(u) => {
                // Another user may have held this name until it was renamed or deleted.
                if let Some(other) = self.by_username.get(&u.username).filter(|o| **o != u.id).cloned() {
                    self.remove_user(&other);
                }
                self.insert_user(u);
            }
            None => {
                self.remove_user(id);
            }
        }
    }

    /// A client as the store has it now.
    pub fn stored_client(&mut self, client_id: &str, client: Option<ClientRecord>) {
        match client {
            Some(c) => {
                self.put_client(c);
            }
            None => {
                self.clients.remove(client_id);
            }
        }
    }

    /// Seeds the first administrator and client.
    pub fn seed(&mut self, admin: UserRecord, client: ClientRecord) {
        self.insert_user(admin);
        self.clients.insert(client.client_id.clone(), Arc::new(client));
    }

    fn client(&self, client_id: &str) -> Result<ClientRecord, DirectoryError> {
        self.clients
            .get(client_id)
            .map(|c| (**c).clone())
            .ok_or(DirectoryError::UnknownClient)
    }

    fn put_client(&mut self, client: ClientRecord) -> ClientRecord {
        self.clients.insert(client.client_id.clone(), Arc::new(client.clone()));
        client
    }

    /// A new client from `spec`, and its secret (confidential clients; shown once).
    pub fn create_client(&mut self, spec: &ClientSpec, now: Secs) -> Result<(ClientRecord, Option<String>), DirectoryError> {
        let (mut client, secret) = new_client(&spec.name, spec.confidential, now);
        spec.apply(&mut client)?;
        Ok((self.put_client(client), secret))
    }

    /// Changes a client's name, description, grant types, scopes and redirect URIs (its kind,
    /// public or confidential, stays).
    pub fn update_client(&mut self, client_id: &str, spec: &ClientSpec) -> Result<ClientRecord, DirectoryError> {
        let mut client = self.client(client_id)?;
        spec.apply(&mut client)?;
        Ok(self.put_client(client))
    }

    pub fn set_client_enabled(&mut self, client_id: &str, enabled: bool) -> Result<ClientRecord, DirectoryError> {
        let mut client = self.client(client_id)?;
        client.enabled = enabled;
        Ok(self.put_client(client))
    }

    /// A new secret for a confidential client (returned once); the old one stops working.
    pub fn rotate_client_secret(&mut self, client_id: &str) -> Result<(ClientRecord, String), DirectoryError> {
        let mut client = self.client(client_id)?;
        if !client.confidential {
            return Err(DirectoryError::PublicClient);
        }
        let secret = secret::random_token(32);
        client.secret_hash = Some(secret::sha256_hex(&secret));
        Ok((self.put_client(client), secret))
    }

    pub fn delete_client(&mut self, client_id: &str) -> Result<ClientRecord, DirectoryError> {
        let client = self.clients.remove(client_id).ok_or(DirectoryError::UnknownClient)?;
        Ok((*client).clone())
    }

    /// A sign-in's view of a user.
    pub fn view(&self, who: &UserRef) -> Option<UserView> {
        self.user(who).map(UserRecord::view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::password;

    async fn pw() -> NewPassword {
        NewPassword::new("a good password".into()).await.unwrap()
    }

    #[test]
    fn profiles_are_checked_and_blank_means_unknown() {
        let ok = |n: &str, e: &str| match profile(n, e) {
            Ok(UserChange::Profile { name, email }) => (name, email),
            _ => panic!("{n:?} {e:?} refused"),
        };
        assert_eq!(
            ok(" Ada Lovelace ", "ada@example.org"),
            (Some("Ada Lovelace".into()), Some("ada@example.org".into()))
        );
        assert_eq!(ok("", "  "), (None, None));
        for (n, e) in [
            ("x", "no-at-sign"),
            ("x", "a@b@c"),
            ("x", "@example.org"),
            ("x", "a b@c"),
            ("ta\tb", ""),
            ("A\u{202E}da", ""),
            ("x", "a\u{200B}@b.c"),
            (&*"n".repeat(101), ""),
        ] {
            assert!(profile(n, e).is_err(), "{n:?} {e:?}");
        }
    }

    #[tokio::test]
    async fn the_last_enabled_administrator_stays() {
        let mut b = DirectoryBook::default();
        let admin = b.create_user("admin".into(), pw().await, true, 1).unwrap();
        let alice = b.create_user("alice".into(), pw().await, false, 1).unwrap();
        let id = UserRef::Id(admin.id.clone());
        assert!(matches!(
            b.change_user(&id, UserChange::Disabled(true)),
            Err(DirectoryError::LastAdmin)
        ));
        assert!(matches!(
            b.change_user(&id, UserChange::Admin(false)),
            Err(DirectoryError::LastAdmin)
        ));
        assert!(matches!(b.change_user(&id, UserChange::Delete), Err(DirectoryError::LastAdmin)));
        b.change_user(&UserRef::Id(alice.id.clone()), UserChange::Admin(true)).unwrap();
        assert!(b.change_user(&id, UserChange::Delete).is_ok(), "alice is in charge now");
        assert!(b.user(&UserRef::Name("admin".into())).is_none());
    }

    #[tokio::test]
    async fn usernames_are_unique_and_valid() {
        let mut b = DirectoryBook::default();
        b.create_user("alice".into(), pw().await, false, 1).unwrap();
        assert!(matches!(
            b.create_user("alice".into(), pw().await, false, 1),
            Err(DirectoryError::UsernameTaken(_))
        ));
        assert!(matches!(
            b.create_user("a b".into(), pw().await, false, 1),
            Err(DirectoryError::InvalidUsername)
        ));
    }

    #[tokio::test]
    async fn a_login_api_user_is_linked_by_its_id_and_never_takes_anothers_name() {
        let mut b = DirectoryBook::default();
        b.create_user("alice".into(), pw().await, false, 1).unwrap();
        let ext = |id: &str| ExternalUser {
            user_id: id.into(),
            email: Some("b@example.com".into()),
            full_name: None,
        };
        assert_eq!(b.link_external("alice".into(), ext("x1"), 1).unwrap_err(), LoginError::Conflict);
        let (bob, changed) = b.link_external("bob".into(), ext("x2"), 1).unwrap();
        assert!(changed && bob.auth_source == AuthSource::HttpApi && bob.password_hash.is_none());
        let (again, changed) = b.link_external("bob".into(), ext("x2"), 2).unwrap();
        assert!(!changed && again.id == bob.id, "an unchanged record is not written again");
        assert!(matches!(
            b.change_user(&UserRef::Name("bob".into()), UserChange::Password(pw().await)),
            Err(DirectoryError::ExternalUser(_))
        ));
        assert!(b.local_sign_in("bob").is_none());
        assert!(password::keeps_rule("a good password"));
    }
}
