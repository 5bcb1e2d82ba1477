//! [`Handle`]: the stable address of one kind of actor.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorRef, Message, RpcReplyPort, SpawnErr};

use super::counted::Counted;
use crate::error::OAuthError;
use crate::metrics::Mailbox;

/// How long a caller waits for an actor's answer before giving up with `temporarily_unavailable`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a message whose actor asks up to two others in turn (a user's
/// disable or deletion ends sessions and revokes tokens): longer than the calls inside it, so
/// the caller never gives up on a change that was made.
pub const FLOW_TIMEOUT: Duration = Duration::from_secs(3 * CALL_TIMEOUT.as_secs());

/// The address of one kind of actor: whichever incarnation runs now (the supervisor swaps it
/// on a restart) and the depth of its mailbox, counted at the senders here and at the
/// receiver by [`Counted`]. Cheap to clone; clones share both.
pub struct Handle<M: Message> {
    inner: Arc<Inner<M>>,
}

struct Inner<M: Message> {
    /// A lock because it is written once per (re)start and read on every call.
    current: RwLock<Option<ActorRef<M>>>,
    mailbox: Arc<Mailbox>,
}

impl<M: Message> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<M: Message> Handle<M> {
    /// An address with no actor behind it yet; `name` labels its mailbox in `/metrics`.
    pub fn new(name: &'static str) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(None),
                mailbox: Arc::new(Mailbox::new(name)),
            }),
        }
    }

    /// The running incarnation, or `temporarily_unavailable` while there is none.
    pub fn current(&self) -> Result<ActorRef<M>, OAuthError> {
        self.inner
            .current
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| OAuthError::unavailable("the server is starting or restarting a component"))
    }

    pub fn mailbox(&self) -> &Mailbox {
        &self.inner.mailbox
    }

    /// Starts `actor` linked to `supervisor` and makes it the current incarnation.
    pub async fn spawn_linked<A>(&self, actor: A, args: A::Arguments, supervisor: ActorCell) -> Result<ActorId, SpawnErr>
    where
        A: Actor<Msg = M>,
    {
        let counted = Counted::new(actor, self.inner.mailbox.clone());
        let (r, _) = Actor::spawn_linked(None, counted, args, supervisor).await?;
        let id = r.get_id();
        if let Ok(mut g) = self.inner.current.write() {
            *g = Some(r);
        }
        Ok(id)
    }

    /// Starts `actor` on its own (tools and tests) and makes it the current incarnation.
    pub async fn spawn<A>(&self, actor: A, args: A::Arguments) -> Result<(ActorRef<M>, tokio::task::JoinHandle<()>), SpawnErr>
    where
        A: Actor<Msg = M>,
    {
        let counted = Counted::new(actor, self.inner.mailbox.clone());
        let (r, done) = Actor::spawn(None, counted, args).await?;
        if let Ok(mut g) = self.inner.current.write() {
            *g = Some(r.clone());
        }
        Ok((r, done))
    }

    /// Sends `msg` without waiting for an answer. When no actor takes it, the message comes
    /// back where it can (`Err(Some(msg))`).
    pub fn cast(&self, msg: M) -> Result<(), Option<M>> {
        let Ok(actor) = self.current() else { return Err(Some(msg)) };
        self.inner.mailbox.sent();
        actor.cast(msg).map_err(|e| {
            self.inner.mailbox.received();
            match e {
                ractor::MessagingErr::SendErr(m) => Some(m),
                _ => None,
            }
        })
    }

    /// Sends `build(reply)` and waits up to [`CALL_TIMEOUT`] for the answer; an actor that is
    /// down, gone or too slow is `temporarily_unavailable`.
    pub async fn ask<R: Send + 'static>(&self, build: impl FnOnce(RpcReplyPort<R>) -> M) -> Result<R, OAuthError> {
        self.ask_within(CALL_TIMEOUT, build).await
    }

    /// [`Handle::ask`] with a deadline of its own (for calls that wait on an external service).
    pub async fn ask_within<R: Send + 'static>(
        &self,
        timeout: Duration,
        build: impl FnOnce(RpcReplyPort<R>) -> M,
    ) -> Result<R, OAuthError> {
        let actor = self.current()?;
        self.inner.mailbox.sent();
        let result = actor.call(build, Some(timeout)).await;
        if result.is_err() {
            // Not delivered. (`SenderError` means delivered and its reply port dropped: the
            // actor counted it when it took the message.)
            self.inner.mailbox.received();
        }
        match result {
            Ok(CallResult::Success(r)) => Ok(r),
            Ok(CallResult::Timeout) => Err(OAuthError::unavailable("the server is busy; try again shortly")),
            Ok(CallResult::SenderError) | Err(_) => Err(OAuthError::unavailable("the server is restarting a component; try again shortly")),
        }
    }
}
