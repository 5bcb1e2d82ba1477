//! The directory actor.
//!
//! Owns the users (with their argon2id password hashes, or the external login API's id for
//! users who sign in there) and the OAuth clients (with SHA-256 of confidential clients'
//! secrets), through its [`DirectoryRepo`], held in a [`DirectoryBook`]. Both are small,
//! read-mostly registries consulted together, so one actor holds both; it seeds the first
//! admin and the CLI client on the very first start.
//!
//! Client authentication runs on every token request, so the actor also publishes an
//! immutable [`ClientTable`] snapshot after each change (a `watch` channel: the actor stays
//! the only writer, readers never wait for its mailbox).
//!
//! A change to a user that reaches further (a password reset, a disable, a deletion) or a
//! client's deletion is one message here: the directory commits its own record, then asks the
//! session actor to end the user's sessions and the token actor to revoke what must go.

mod book;
mod external;
mod msg;
pub mod records;
mod seed;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use self::book::{DirectoryBook, UserChange, UserRef, profile};
pub use self::msg::DirectoryMsg;
pub use self::records::{
    ClientSpec, DirectoryError, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, LoginError,
    OIDC_SCOPES, SEEDED_CLIENT_NAME, UserView, grant_type_name, safe_redirect_uri, valid_resource, valid_username,
};
pub use self::snapshot::{ClientPublisher, ClientTable, UserProfile};
use crate::crypto::password::{self, NewPassword, NewPasswordError};
use crate::provider::login::AuthProviderMsg;
use crate::runtime::commit::{after, rebuild};
use crate::runtime::{FLOW_TIMEOUT, Handle};
use crate::session::SessionMsg;
use crate::store::change::Change;
pub use crate::store::directory::{AuthSource, ClientRecord, UserRecord};
use crate::store::directory::{DirectoryData, DirectoryRepo};
use crate::store::{Pending, StoreError};
use crate::time::Millis;
use crate::token::{Owner, TokenMsg};

pub struct DirectoryActor;

/// The actors a directory change reaches, and the directory's own address.
#[derive(Clone)]
pub struct DirectoryPeers {
    pub me: Handle<DirectoryMsg>,
    pub session: Handle<SessionMsg>,
    pub token: Handle<TokenMsg>,
    /// The login-API provider and its timeout, when sign-ins go there (`AUTH_MODE=http_api`).
    pub login_api: Option<(Handle<AuthProviderMsg>, Duration)>,
}

pub struct DirectoryArgs {
    pub repo: Arc<dyn DirectoryRepo>,
    /// Where client snapshots go.
    pub clients: ClientPublisher,
    /// Password of the admin seeded on first start; random when `None`.
    pub admin_password: Option<String>,
    /// Where a generated admin password is written (mode 0600), so that it never reaches a log.
    pub admin_password_file: Option<std::path::PathBuf>,
    pub peers: DirectoryPeers,
    /// When seeding: the first records' creation time.
    pub now: Millis,
}

pub struct DirectoryState {
    book: DirectoryBook,
    published: ClientPublisher,
    /// Verified against when the username is unknown, so timing does not reveal which users exist.
    dummy_hash: String,
    repo: Arc<dyn DirectoryRepo>,
    peers: DirectoryPeers,
    /// A reload is under way, and whether another was asked for meanwhile.
    reloading: Option<bool>,
    /// Users and clients changed while a reload was under way (read again after it), and
    /// whether this process changed any itself meanwhile (then it reloads once more, later).
    touched: Vec<Change>,
    wrote_during_reload: std::cell::Cell<bool>,
    /// Records being read for a change, and whether another change of it came meanwhile (it
    /// is read again then, so the last read is newer than the last change).
    reading: std::collections::HashMap<String, bool>,
}

impl Actor for DirectoryActor {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(&self, _myself: ActorRef<DirectoryMsg>, args: DirectoryArgs) -> Result<DirectoryState, ActorProcessingErr> {
        let data = args.repo.load().await?;
        let seeded = data.seeded;
        let mut book = DirectoryBook::load(data);
        if !seeded {
            seed::seed(
                &mut book,
                &*args.repo,
                args.admin_password,
                args.admin_password_file,
                args.now / 1000,
            )
            .await?;
        }
        let st = DirectoryState {
            book,
            published: args.clients,
            dummy_hash: password::hash(password::random_password(24)).await?,
            repo: args.repo,
            peers: args.peers,
            reloading: None,
            touched: Vec::new(),
            wrote_during_reload: std::cell::Cell::new(false),
            reading: std::collections::HashMap::new(),
        };
        st.publish();
        Ok(st)
    }

    async fn handle(&self, myself: ActorRef<DirectoryMsg>, msg: DirectoryMsg, st: &mut DirectoryState) -> Result<(), ActorProcessingErr> {
        match msg {
            DirectoryMsg::Reload => match st.reloading {
                Some(_) => st.reloading = Some(true),
                None => {
                    st.reloading = Some(false);
                    let (load, me) = (st.repo.load(), myself.clone());
                    tokio::spawn(async move {
                        match load.await {
                            Ok(data) => {
                                let _ = me.cast(DirectoryMsg::Reloaded { data });
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot reload users and clients; trying again in 1 s");
                                let _ = me.cast(DirectoryMsg::Reloaded {
                                    data: DirectoryData::default(),
                                });
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                                let _ = me.cast(DirectoryMsg::Reload);
                            }
                        }
                    });
                }
            },
            DirectoryMsg::Changed { change } => {
                if st.reloading.is_some() {
                    st.touched.push(change.clone());
                }
                if let Some(again) = st.reading.get_mut(&change.encode()) {
                    *again = true;
                    return Ok(());
                }
                st.reading.insert(change.encode(), false);
                let me = myself.clone();
                let (user, client) = match &change {
                    Change::User(id) => (Some(st.repo.user(id)), None),
                    Change::Client(id) => (None, Some(st.repo.client(id))),
                    _ => return Ok(()),
                };
                tokio::spawn(async move {
                    let read = async {
                        let user = match user {
                            Some(read) => read.await?,
                            None => None,
                        };
                        let client = match client {
                            Some(read) => read.await?,
                            None => None,
                        };
                        Ok::<_, StoreError>((user, client))
                    };
                    match read.await {
                        Ok((user, client)) => {
                            let _ = me.cast(DirectoryMsg::Fetched {
                                change,
                                user: user.map(Box::new),
                                client: client.map(Box::new),
                            });
                        }
                        // The feed is working, the database is not: read everything later.
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read a user or client another process changed");
                            let _ = me.cast(DirectoryMsg::Fetched {
                                change: Change::User(String::new()),
                                user: None,
                                client: None,
                            });
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            let _ = me.cast(DirectoryMsg::Reload);
                        }
                    }
                });
            }
            DirectoryMsg::Fetched { change, user, client } => {
                match &change {
                    // A failed read: nothing to apply (a reload follows).
                    Change::User(id) if id.is_empty() => {}
                    Change::User(id) => st.book.stored_user(id, user.map(|u| *u)),
                    Change::Client(id) => st.book.stored_client(id, client.map(|c| *c)),
                    _ => {}
                }
                st.publish();
                if st.reading.remove(&change.encode()) == Some(true) {
                    let _ = myself.cast(DirectoryMsg::Changed { change });
                }
            }
            DirectoryMsg::Reloaded { data } => {
                let again = st.reloading.take() == Some(true);
                // A failed read (no seed mark) keeps what is held.
                if data.seeded {
                    st.book = DirectoryBook::load(data);
                    st.publish();
                }
                // What changed during the reload may be older in the snapshot: read it again.
                for change in std::mem::take(&mut st.touched) {
                    let _ = myself.cast(DirectoryMsg::Changed { change });
                }
                if st.wrote_during_reload.replace(false) {
                    // A write of this process may have committed after the snapshot was read.
                    let me = myself.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        let _ = me.cast(DirectoryMsg::Reload);
                    });
                }
                if again {
                    let _ = myself.cast(DirectoryMsg::Reload);
                }
            }
            DirectoryMsg::Authenticate {
                username,
                password,
                now,
                reply,
            } => st.authenticate(username, password, now, reply),
            DirectoryMsg::ChangePassword {
                username,
                current,
                new,
                keep_session,
                now,
                reply,
            } => st.change_password(username, current, new, (keep_session, now), reply),
            DirectoryMsg::CreateUser {
                username,
                password,
                is_admin,
                now,
                reply,
            } => match st.book.create_user(username, password, is_admin, now / 1000) {
                Ok(user) => {
                    let write = st.repo.save_user(&user);
                    st.commit(&myself, saved_user(write), user, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            DirectoryMsg::ChangeUser {
                who,
                change,
                keep_session,
                now,
                reply,
            } => st.change_user(&myself, who, change, (keep_session, now), reply),
            DirectoryMsg::GetUser { who, reply } => {
                let _ = reply.send(st.book.user(&who).cloned());
            }
            DirectoryMsg::ListUsers { reply } => {
                let _ = reply.send(st.book.users());
            }
            DirectoryMsg::CreateClient { spec, now, reply } => {
                let made = st.book.create_client(&spec, now / 1000);
                st.save_client(&myself, made, |c| c, reply);
            }
            DirectoryMsg::UpdateClient { client_id, spec, reply } => {
                let changed = st.book.update_client(&client_id, &spec);
                st.save_client(&myself, changed.map(|c| (c, ())), |(c, ())| c, reply);
            }
            DirectoryMsg::SetClientEnabled { client_id, enabled, reply } => {
                let changed = st.book.set_client_enabled(&client_id, enabled);
                st.save_client(&myself, changed.map(|c| (c, ())), |(c, ())| c, reply);
            }
            DirectoryMsg::RotateClientSecret { client_id, now, reply } => st.rotate_secret(&myself, &client_id, now, reply),
            DirectoryMsg::DeleteClient { client_id, now, reply } => st.delete_client(&myself, &client_id, now, reply),
            DirectoryMsg::ListClients { reply } => {
                let _ = reply.send(st.book.clients());
            }
            DirectoryMsg::ExternalLogin {
                username,
                user,
                now,
                reply,
            } => match st.book.link_external(username, user, now / 1000) {
                Ok((user, false)) => {
                    let _ = reply.send(Ok(user.view()));
                }
                Ok((user, true)) => {
                    tracing::info!(username = %user.username, "external user record saved");
                    st.publish();
                    let write = saved_user(st.repo.save_user(&user));
                    let myself = myself.clone();
                    after(write, move |r| {
                        if let Err(e) = &r {
                            rebuild(&myself, e);
                        }
                        let _ = reply.send(r.map(|()| user.view()).map_err(|_| LoginError::Unavailable));
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
        }
        Ok(())
    }
}

/// A user's save, where a name taken elsewhere (a shared database) is a failed commit: the
/// book already holds the user, so it must be rebuilt from the store.
fn saved_user(write: Pending<bool>) -> Pending<()> {
    Box::pin(async move {
        match write.await? {
            true => Ok(()),
            false => Err(StoreError::Storage("the username was taken by another process".into())),
        }
    })
}

impl DirectoryState {
    /// Publishes the current clients and enabled users as a fresh immutable snapshot.
    fn publish(&self) {
        if self.reloading.is_some() {
            self.wrote_during_reload.set(true);
        }
        self.published.send_replace(Arc::new(self.book.snapshot()));
    }

    /// Publishes the book's change, commits `write`, and replies `answer` once durable.
    fn commit<T: Send + 'static>(
        &self,
        myself: &ActorRef<DirectoryMsg>,
        write: Pending<()>,
        answer: T,
        reply: RpcReplyPort<Result<T, DirectoryError>>,
    ) {
        self.publish();
        crate::runtime::commit::reply_when_durable(myself, write, reply, Ok(answer));
    }

    /// Saves the client a book operation produced (and replies `answer` of it), or replies its error.
    fn save_client<X, T: Send + 'static>(
        &self,
        myself: &ActorRef<DirectoryMsg>,
        made: Result<(ClientRecord, X), DirectoryError>,
        answer: impl FnOnce((ClientRecord, X)) -> T,
        reply: RpcReplyPort<Result<T, DirectoryError>>,
    ) {
        match made {
            Ok((client, extra)) => {
                let write = self.repo.save_client(&client);
                self.commit(myself, write, answer((client, extra)), reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn authenticate(&self, username: String, password: String, now: Millis, reply: RpcReplyPort<Result<UserView, LoginError>>) {
        // Hybrid rule: a local user keeps signing in here; anyone else asks the login API.
        if !self.book.is_local(&username)
            && let Some((provider, timeout)) = &self.peers.login_api
        {
            let who = (username, password, now);
            external::ask_login_api(self.peers.me.clone(), provider.clone(), *timeout, who, reply);
            return;
        }
        let user = self.book.local_sign_in(&username);
        let hash = user
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
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

    /// Checks the current password off the actor, then changes it through [`DirectoryMsg::ChangeUser`].
    fn change_password(
        &self,
        username: String,
        current: String,
        new: String,
        (keep, now): (String, Millis),
        reply: RpcReplyPort<Result<(), DirectoryError>>,
    ) {
        let Some(user) = self.book.local_sign_in(&username) else {
            let _ = reply.send(Err(DirectoryError::ExternalUser(username)));
            return;
        };
        let (id, hash, me) = (
            user.id.clone(),
            user.password_hash.clone().unwrap_or_default(),
            self.peers.me.clone(),
        );
        tokio::spawn(async move {
            // The new password is hashed only once the current one checks out.
            let new = match password::verify(current, hash, || !reply.is_closed()).await {
                Ok(true) => NewPassword::new(new).await.map_err(|e| match e {
                    NewPasswordError::Rule => DirectoryError::WeakPassword,
                    NewPasswordError::Busy => DirectoryError::Busy,
                }),
                Ok(false) => Err(DirectoryError::WrongPassword),
                Err(_) => Err(DirectoryError::Busy),
            };
            let outcome = match new {
                Ok(new) => me
                    .ask_within(FLOW_TIMEOUT, |r| DirectoryMsg::ChangeUser {
                        who: UserRef::Id(id),
                        change: UserChange::Password(new),
                        keep_session: Some(keep),
                        now,
                        reply: r,
                    })
                    .await
                    .map_err(|_| DirectoryError::Busy)
                    .and_then(|r| r.map(|_| ())),
                Err(e) => Err(e),
            };
            let _ = reply.send(outcome);
        });
    }

    fn change_user(
        &mut self,
        myself: &ActorRef<DirectoryMsg>,
        who: UserRef,
        change: UserChange,
        (keep_session, now): (Option<String>, Millis),
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    ) {
        let (ends_sessions, delete) = (change.ends_sessions(), matches!(change, UserChange::Delete));
        let user = match self.book.change_user(&who, change) {
            Ok(u) => u,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.publish();
        let write = if delete {
            self.repo.remove_user(&user.id)
        } else {
            saved_user(self.repo.save_user(&user))
        };
        let (myself, peers) = (myself.clone(), self.peers.clone());
        tokio::spawn(async move {
            if let Err(e) = write.await {
                rebuild(&myself, &e);
                let _ = reply.send(Err(e.into()));
                return;
            }
            if ends_sessions {
                // Best effort: a session actor that is down ends nothing now, and a disabled or
                // deleted user's sessions are refused anyway when they come back.
                let (user_id, keep) = (user.id.clone(), keep_session);
                let _ = peers.session.ask(|r| SessionMsg::DestroyForUser { user_id, keep, reply: r }).await;
            }
            // A deleted user's tokens already stop validating; the revocation makes it final.
            let revoked = !delete || revoke_all(&peers.token, Owner::User(user.id.clone()), now).await;
            let _ = reply.send(if revoked { Ok(user) } else { Err(DirectoryError::Unfinished) });
        });
    }

    fn delete_client(
        &mut self,
        myself: &ActorRef<DirectoryMsg>,
        client_id: &str,
        now: Millis,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    ) {
        let client = match self.book.delete_client(client_id) {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.publish();
        // Its tokens already stop validating (the client is gone); revoke them for good.
        let owner = Owner::Client(client.client_id.clone());
        self.write_then_revoke(myself, self.repo.remove_client(client_id), (owner, now), client, reply);
    }

    /// Once `write` is durable, revokes every token of `owner`, then answers `done` (or that
    /// the revocation could not be completed); a failed write rebuilds the actor.
    fn write_then_revoke<T: Send + 'static>(
        &self,
        myself: &ActorRef<DirectoryMsg>,
        write: crate::store::Pending<()>,
        (owner, now): (Owner, Millis),
        done: T,
        reply: RpcReplyPort<Result<T, DirectoryError>>,
    ) {
        let (myself, token) = (myself.clone(), self.peers.token.clone());
        tokio::spawn(async move {
            if let Err(e) = write.await {
                rebuild(&myself, &e);
                let _ = reply.send(Err(e.into()));
                return;
            }
            let revoked = revoke_all(&token, owner, now).await;
            let _ = reply.send(if revoked { Ok(done) } else { Err(DirectoryError::Unfinished) });
        });
    }
}

impl DirectoryState {
    /// A new secret; once it is durable, the client-credentials tokens the old one got are
    /// revoked (they are recorded with the client as their user).
    fn rotate_secret(
        &mut self,
        myself: &ActorRef<DirectoryMsg>,
        client_id: &str,
        now: Millis,
        reply: RpcReplyPort<Result<(ClientRecord, String), DirectoryError>>,
    ) {
        let (client, secret) = match self.book.rotate_client_secret(client_id) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.publish();
        let owner = Owner::User(client.client_id.clone());
        self.write_then_revoke(myself, self.repo.save_client(&client), (owner, now), (client, secret), reply);
    }
}

/// Revokes every token of a user or client; whether it was done.
async fn revoke_all(token: &Handle<TokenMsg>, of: Owner, now: Millis) -> bool {
    matches!(token.ask(|reply| TokenMsg::RevokeAll { of, now, reply }).await, Ok(Ok(_)))
}
