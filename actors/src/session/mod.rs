//! The browser-session actor.
//!
//! Owns the server-side records of signed-in browsers (through its [`SessionRepo`]): which
//! user a session belongs to, its CSRF token and its expiry, held in a [`SessionBook`]. The
//! cookie carries only the (encrypted) session id; the store keeps SHA-256 of that id, so a
//! copied database yields no usable session.

mod book;

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use self::book::{NewSession, SessionBook, SessionView};
use crate::error::OAuthError;
use crate::runtime::commit::{log_failure, reply_when_durable};
use crate::store::session::SessionRepo;
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
    /// Drops the sessions expired at `now`.
    Sweep { now: Millis },
}

pub struct SessionActor;

pub struct SessionArgs {
    pub max_age: Duration,
    pub repo: Arc<dyn SessionRepo>,
    /// When loading: sessions expired by then are dropped.
    pub now: Millis,
}

pub struct SessionState {
    book: SessionBook,
    max_age_ms: Millis,
    repo: Arc<dyn SessionRepo>,
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
        })
    }

    async fn handle(&self, myself: ActorRef<SessionMsg>, msg: SessionMsg, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Create {
                user_id,
                username,
                now,
                reply,
            } => {
                let (key, rec, new) = st.book.create(user_id, username, now, st.max_age_ms);
                reply_when_durable(&myself, st.repo.insert(key, &rec), reply, Ok(new));
            }
            SessionMsg::Get { id, now, reply } => {
                let _ = reply.send(st.book.get(&id, now));
            }
            SessionMsg::Destroy { id, reply } => match st.book.destroy(&id) {
                Some(key) => reply_when_durable(&myself, st.repo.remove(&[key]), reply, Ok(())),
                None => {
                    let _ = reply.send(Ok(()));
                }
            },
            SessionMsg::DestroyForUser { user_id, keep, reply } => {
                let ended = st.book.destroy_for_user(&user_id, keep.as_deref());
                reply_when_durable(&myself, st.repo.remove(&ended), reply, Ok(ended.len()));
            }
            SessionMsg::Sweep { now } => {
                let expired = st.book.sweep(now);
                if !expired.is_empty() {
                    log_failure(st.repo.remove(&expired), "delete expired sessions");
                }
            }
        }
        Ok(())
    }
}
