//! The limits actor.
//!
//! Owns the failure counters a cluster's instances share (through its [`LimitRepo`]): failed
//! sign-ins per username and address, wrong user codes per browser session and address, and
//! from everyone. Counted in the database, so a guesser gets one budget however many
//! instances serve it. It runs only on a shared database: one process counts in the front
//! end's memory alone. Each call is one statement, made off the mailbox.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::error::OAuthError;
use crate::runtime::commit::{after, log_failure};
use crate::store::limits::LimitRepo;
use crate::time::Millis;

/// Messages of the limits actor.
pub enum LimitMsg {
    /// Counts one attempt for `key`; answers the attempts in its current window of
    /// `window_ms`, this one included.
    Hit {
        key: String,
        window_ms: Millis,
        now: Millis,
        reply: RpcReplyPort<Result<u32, OAuthError>>,
    },
    /// Takes one attempt back.
    Forgive { key: String },
    /// Forgets `key`.
    Reset { key: String },
    /// Deletes counters whose window started before `before`.
    Sweep { before: Millis },
}

pub struct LimitActor;

pub struct LimitArgs {
    pub repo: Arc<dyn LimitRepo>,
}

pub struct LimitState {
    repo: Arc<dyn LimitRepo>,
}

impl Actor for LimitActor {
    type Msg = LimitMsg;
    type State = LimitState;
    type Arguments = LimitArgs;

    async fn pre_start(&self, _myself: ActorRef<LimitMsg>, args: LimitArgs) -> Result<LimitState, ActorProcessingErr> {
        Ok(LimitState { repo: args.repo })
    }

    async fn handle(&self, _myself: ActorRef<LimitMsg>, msg: LimitMsg, st: &mut LimitState) -> Result<(), ActorProcessingErr> {
        match msg {
            LimitMsg::Hit {
                key,
                window_ms,
                now,
                reply,
            } => after(st.repo.hit(&key, window_ms, now), move |r| {
                let _ = reply.send(r.map_err(OAuthError::from));
            }),
            LimitMsg::Forgive { key } => log_failure(st.repo.forgive(&key), "take back a counted attempt"),
            LimitMsg::Reset { key } => log_failure(st.repo.reset(&key), "reset an attempt counter"),
            LimitMsg::Sweep { before } => log_failure(st.repo.prune(before), "delete old attempt counters"),
        }
        Ok(())
    }
}
