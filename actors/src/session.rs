//! The browser-session actor.
//!
//! Owns the server-side records of signed-in browsers: which user a session belongs to, its
//! CSRF token and its expiry. The cookie carries only the (encrypted) session id; the store
//! keeps SHA-256 of that id, so a copied database yields no usable session.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::device::Millis;
use crate::error::OAuthError;
use crate::secret::{self, Digest32};
use crate::store::{Op, Store, Table, decode};

/// The stored form of a session, keyed by SHA-256(session id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: String,
    pub username: String,
    pub csrf_token: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
}

/// A session as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub user_id: String,
    pub username: String,
    pub csrf_token: String,
}

/// A freshly created session: the id goes into the cookie, and nowhere else.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
}

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
    /// Drop expired sessions.
    Sweep,
}

pub struct SessionActor;

/// A commit's outcome. A failed one leaves memory ahead of the disk, so the actor stops and
/// the supervisor rebuilds it from the store.
fn settle(myself: &ActorRef<SessionMsg>, result: Result<(), crate::store::StoreError>) -> Result<(), OAuthError> {
    if let Err(e) = &result {
        myself.stop(Some(format!("a commit failed ({e}); rebuilding from the store")));
    }
    result.map_err(OAuthError::from)
}

pub struct SessionArgs {
    pub max_age: Duration,
    pub store: Store,
}

pub struct SessionState {
    sessions: HashMap<Digest32, SessionRecord>,
    max_age: Duration,
    store: Store,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(&self, _myself: ActorRef<SessionMsg>, args: SessionArgs) -> Result<SessionState, ActorProcessingErr> {
        MAILBOX.reset();
        let now = crate::now_ms();
        let (sessions, stale) = args
            .store
            .read(move |r| {
                let mut sessions = HashMap::new();
                let mut stale = Vec::new();
                r.scan(Table::Sessions, |k, v| {
                    match (Digest32::try_from(k), decode::<SessionRecord>(v)) {
                        (Ok(key), Ok(rec)) if rec.expires_at_ms > now => {
                            sessions.insert(key, rec);
                        }
                        _ => stale.push(Op::delete(Table::Sessions, k.to_vec())),
                    }
                    Ok(())
                })?;
                Ok((sessions, stale))
            })
            .await?;
        if !stale.is_empty() {
            args.store.write(stale).await?;
        }
        Ok(SessionState {
            sessions,
            max_age: args.max_age,
            store: args.store,
        })
    }

    async fn handle(&self, myself: ActorRef<SessionMsg>, msg: SessionMsg, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
        MAILBOX.received();
        match msg {
            SessionMsg::Create {
                user_id,
                username,
                now,
                reply,
            } => {
                let id = secret::random_token(32);
                let key = secret::sha256(&id);
                let max_age = u64::try_from(st.max_age.as_millis()).unwrap_or(u64::MAX);
                let rec = SessionRecord {
                    user_id,
                    username,
                    csrf_token: secret::random_token(32),
                    created_at_ms: now,
                    expires_at_ms: now.saturating_add(max_age),
                };
                let op = match Op::put(Table::Sessions, key.to_vec(), &rec) {
                    Ok(op) => op,
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                        return Ok(());
                    }
                };
                let answer = NewSession {
                    id,
                    csrf_token: rec.csrf_token.clone(),
                };
                st.sessions.insert(key, rec);
                let done = st.store.submit(vec![op]);
                let myself = myself.clone();
                tokio::spawn(async move {
                    let _ = reply.send(settle(&myself, done.await).map(|()| answer));
                });
            }
            SessionMsg::Get { id, now, reply } => {
                let view = st
                    .sessions
                    .get(&secret::sha256(&id))
                    .filter(|r| r.expires_at_ms > now)
                    .map(|r| SessionView {
                        user_id: r.user_id.clone(),
                        username: r.username.clone(),
                        csrf_token: r.csrf_token.clone(),
                    });
                let _ = reply.send(view);
            }
            SessionMsg::Destroy { id, reply } => {
                let key = secret::sha256(&id);
                if st.sessions.remove(&key).is_none() {
                    let _ = reply.send(Ok(()));
                    return Ok(());
                }
                let done = st.store.submit(vec![Op::delete(Table::Sessions, key.to_vec())]);
                tokio::spawn(async move {
                    let _ = reply.send(settle(&myself, done.await));
                });
            }
            SessionMsg::DestroyForUser { user_id, keep, reply } => {
                let keep = keep.map(|k| secret::sha256(&k));
                let ended: Vec<Digest32> = st
                    .sessions
                    .iter()
                    .filter(|(k, r)| r.user_id == user_id && Some(**k) != keep)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &ended {
                    st.sessions.remove(k);
                }
                let n = ended.len();
                let done = st
                    .store
                    .submit(ended.iter().map(|k| Op::delete(Table::Sessions, k.to_vec())).collect());
                tokio::spawn(async move {
                    let _ = reply.send(settle(&myself, done.await).map(|()| n));
                });
            }
            SessionMsg::Sweep => {
                let now = crate::now_ms();
                let expired: Vec<Digest32> = st
                    .sessions
                    .iter()
                    .filter(|(_, r)| r.expires_at_ms <= now)
                    .map(|(k, _)| *k)
                    .collect();
                if !expired.is_empty() {
                    let ops = expired.iter().map(|k| Op::delete(Table::Sessions, k.to_vec())).collect();
                    for k in &expired {
                        st.sessions.remove(k);
                    }
                    let done = st.store.submit(ops);
                    tokio::spawn(async move {
                        if let Err(e) = done.await {
                            tracing::warn!(error = %e, "could not delete expired sessions");
                        }
                    });
                }
            }
        }
        Ok(())
    }
}

/// This actor's mailbox depth (see [`crate::metrics::Mailbox`]).
static MAILBOX: crate::metrics::Mailbox = crate::metrics::Mailbox::new("session");

impl crate::system::Tracked for SessionMsg {
    fn mailbox() -> &'static crate::metrics::Mailbox {
        &MAILBOX
    }
}
