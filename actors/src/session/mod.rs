//! The browser-session actor.
//!
//! Owns the server-side records of signed-in browsers (through its [`SessionRepo`]): which
//! user a session belongs to, its CSRF token and its expiry, held in a [`SessionBook`]. The
//! cookie carries only the (encrypted) session id; the store keeps SHA-256 of that id, so a
//! copied database yields no usable session.
//!
//! On a database other processes share, a session started elsewhere is read on its first
//! use here, a sign-out elsewhere arrives as [`SessionMsg::Ended`], and while the change feed
//! is down every cookie is checked against the database.

mod book;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use self::book::{NewSession, SessionBook, SessionView};
use crate::crypto::secret::{self, Digest32};
use crate::error::OAuthError;
use crate::runtime::commit::{log_failure, reply_when_durable};
use crate::store::change::Cache;
use crate::store::session::{SessionRecord, SessionRepo};
use crate::time::{Millis, millis};

/// Messages of the session actor.
pub enum SessionMsg {
    /// Starts a session for a user who just signed in; answered once durable.
    Create {
        user_id: String,
        username: String,
        now: Millis,
        reply: RpcReplyPort<Result<NewSession, OAuthError>>,
    },
    /// The live session behind a cookie's id, if any.
    Get {
        id: String,
        now: Millis,
        reply: RpcReplyPort<Option<SessionView>>,
    },
    /// Ends a session (sign-out, or replaced at sign-in); answered once durable.
    Destroy {
        id: String,
        reply: RpcReplyPort<Result<(), OAuthError>>,
    },
    /// Ends every session of a user except `keep` (a session id), e.g. after a password
    /// change, a disable or a deletion; answers how many ended, once durable.
    DestroyForUser {
        user_id: String,
        keep: Option<String>,
        reply: RpcReplyPort<Result<usize, OAuthError>>,
    },
    /// Drops the sessions expired at `now`, and deletes them from the store if `store` (see
    /// `DeviceMsg::Sweep`).
    Sweep { now: Millis, store: bool },
    /// Another process ended this session.
    Ended { key: Digest32 },
    /// The change feed went down (`up` false: check every cookie against the database) or
    /// came back (reload, then trust memory again).
    Feed { up: bool, now: Millis },
    /// Internal: a session read from the store, then the request that needed it.
    Fetched {
        key: Digest32,
        record: Option<SessionRecord>,
        then: Box<SessionMsg>,
    },
    /// Internal: every live session, read after the feed came back (at feed change `epoch`).
    Reloaded {
        sessions: Vec<(Digest32, SessionRecord)>,
        epoch: u64,
    },
}

/// How long a failed reload waits before the next try.
const RELOAD_RETRY: Duration = Duration::from_secs(1);

pub struct SessionActor;

pub struct SessionArgs {
    pub max_age: Duration,
    pub repo: Arc<dyn SessionRepo>,
    /// When loading: sessions expired by then are dropped.
    pub now: Millis,
    pub cache: Cache,
}

pub struct SessionState {
    book: SessionBook,
    max_age_ms: Millis,
    repo: Arc<dyn SessionRepo>,
    cache: Cache,
    /// Counts the feed's ups and downs, so a reload overtaken by another change is not trusted.
    epoch: u64,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(&self, _myself: ActorRef<SessionMsg>, args: SessionArgs) -> Result<SessionState, ActorProcessingErr> {
        let book = SessionBook::load(args.repo.load(args.now).await?);
        tracing::info!(sessions = book.len(), "browser sessions loaded");
        Ok(SessionState {
            book,
            max_age_ms: millis(args.max_age),
            repo: args.repo,
            cache: args.cache,
            epoch: 0,
        })
    }

    async fn handle(&self, myself: ActorRef<SessionMsg>, msg: SessionMsg, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Fetched { key, record, then } => {
                st.book.stored(key, record);
                st.on(&myself, *then);
            }
            SessionMsg::Get { id, now, reply } if st.cache.read_through(st.book.holds(&secret::sha256(&id))) => {
                let key = secret::sha256(&id);
                let (read, me) = (st.repo.get(key), myself.clone());
                tokio::spawn(async move {
                    match read.await {
                        Ok(record) => {
                            let then = Box::new(SessionMsg::Get { id, now, reply });
                            let _ = me.cast(SessionMsg::Fetched { key, record, then });
                        }
                        // The database cannot say whether the session still stands: it does not.
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check a session against the database");
                            let _ = reply.send(None);
                        }
                    }
                });
            }
            msg => st.on(&myself, msg),
        }
        Ok(())
    }
}

impl SessionState {
    fn on(&mut self, myself: &ActorRef<SessionMsg>, msg: SessionMsg) {
        let st = self;
        match msg {
            SessionMsg::Create {
                user_id,
                username,
                now,
                reply,
            } => {
                let (key, rec, new) = st.book.create(user_id, username, now, st.max_age_ms);
                reply_when_durable(myself, st.repo.insert(key, &rec), reply, Ok(new));
            }
            SessionMsg::Get { id, now, reply } => {
                let _ = reply.send(st.book.get(&id, now));
            }
            SessionMsg::Destroy { id, reply } => match st.book.destroy(&id) {
                Some(key) => reply_when_durable(myself, st.repo.remove(&[key]), reply, Ok(())),
                // Started elsewhere, perhaps: end it in the database.
                None if st.cache.shared => reply_when_durable(myself, st.repo.remove(&[secret::sha256(&id)]), reply, Ok(())),
                None => {
                    let _ = reply.send(Ok(()));
                }
            },
            SessionMsg::DestroyForUser { user_id, keep, reply } if st.cache.shared => {
                // Sessions started elsewhere are not all here: the database ends them all.
                st.book.destroy_for_user(&user_id, keep.as_deref());
                let write = st.repo.remove_for_user(&user_id, keep.as_deref().map(secret::sha256));
                let myself = myself.clone();
                crate::runtime::commit::after(write, move |r| {
                    let answer = r.map_err(|e| {
                        crate::runtime::commit::rebuild(&myself, &e);
                        OAuthError::from(e)
                    });
                    let _ = reply.send(answer);
                });
            }
            SessionMsg::DestroyForUser { user_id, keep, reply } => {
                let ended = st.book.destroy_for_user(&user_id, keep.as_deref());
                reply_when_durable(myself, st.repo.remove(&ended), reply, Ok(ended.len()));
            }
            SessionMsg::Sweep { now, store } if st.cache.shared => {
                st.book.sweep(now);
                if store {
                    // Every process's expired sessions, not only those held here.
                    log_failure(st.repo.prune(now), "delete expired sessions");
                }
            }
            SessionMsg::Sweep { now, store } => {
                let expired = st.book.sweep(now);
                if store && !expired.is_empty() {
                    log_failure(st.repo.remove(&expired), "delete expired sessions");
                }
            }
            SessionMsg::Ended { key } => st.book.stored(key, None),
            SessionMsg::Feed { up: false, .. } => {
                st.epoch += 1;
                st.cache.trusted = false;
            }
            SessionMsg::Feed { up: true, now } => {
                st.epoch += 1;
                let (load, me, epoch) = (st.repo.load(now), myself.clone(), st.epoch);
                tokio::spawn(async move {
                    match load.await {
                        Ok(sessions) => {
                            let _ = me.cast(SessionMsg::Reloaded { sessions, epoch });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reload sessions; still checking each against the database, trying again in 1 s");
                            tokio::time::sleep(RELOAD_RETRY).await;
                            let now = now + millis(RELOAD_RETRY);
                            let _ = me.cast(SessionMsg::Feed { up: true, now });
                        }
                    }
                });
            }
            SessionMsg::Reloaded { sessions, epoch } => {
                if epoch == st.epoch {
                    st.book.reload(sessions);
                    st.cache.trusted = true;
                }
            }
            // Handled in `handle`.
            SessionMsg::Fetched { .. } => {}
        }
    }
}
