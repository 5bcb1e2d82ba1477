//! Waiting for a commit off the actor: the actor applies a change to its book, starts the
//! write, and goes on with its mailbox; a task awaits the write and finishes the request.

use ractor::{ActorRef, Message, RpcReplyPort};

use crate::store::{Pending, StoreError};

/// Runs `then` with the write's outcome once it is known, off the actor's thread.
pub fn after<T: Send + 'static>(write: Pending<T>, then: impl FnOnce(Result<T, StoreError>) + Send + 'static) {
    tokio::spawn(async move { then(write.await) });
}

/// Replies `answer` once the write is durable. If it fails, the book has run ahead of the
/// store: the actor stops, the supervisor starts it again from what the store holds, and the
/// caller hears the store's error instead.
pub fn reply_when_durable<M: Message, T: Send + 'static, E: From<StoreError> + Send + 'static>(
    myself: &ActorRef<M>,
    write: Pending<()>,
    reply: RpcReplyPort<Result<T, E>>,
    answer: Result<T, E>,
) {
    let myself = myself.clone();
    after(write, move |r| {
        if let Err(e) = &r {
            rebuild(&myself, e);
        }
        let _ = reply.send(r.map_err(E::from).and(answer));
    });
}

/// Stops an actor whose book ran ahead of a failed commit, so the supervisor rebuilds it.
pub fn rebuild<M: Message>(myself: &ActorRef<M>, e: &StoreError) {
    myself.stop(Some(format!("a commit failed ({e}); rebuilding from the store")));
}

/// Housekeeping writes (sweeps) that no one waits for: a failure is logged, and the next
/// start or sweep tries again.
pub fn log_failure(write: Pending<()>, what: &'static str) {
    after(write, move |r| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not {what}; tried again later");
        }
    });
}
