//! [`Counted`]: wraps any actor so that its mailbox depth is counted where it takes messages.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::metrics::Mailbox;

/// `A`, with every message it takes counted off its [`Mailbox`] (the senders count on, in
/// [`super::Handle`]). A new incarnation starts from zero: its mailbox is new.
pub struct Counted<A> {
    actor: A,
    mailbox: Arc<Mailbox>,
}

impl<A> Counted<A> {
    pub fn new(actor: A, mailbox: Arc<Mailbox>) -> Self {
        Self { actor, mailbox }
    }
}

impl<A: Actor> Actor for Counted<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(&self, myself: ActorRef<A::Msg>, args: A::Arguments) -> Result<A::State, ActorProcessingErr> {
        self.mailbox.reset();
        self.actor.pre_start(myself, args).await
    }

    async fn post_start(&self, myself: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.actor.post_start(myself, state).await
    }

    async fn post_stop(&self, myself: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.actor.post_stop(myself, state).await
    }

    async fn handle(&self, myself: ActorRef<A::Msg>, msg: A::Msg, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.mailbox.received();
        self.actor.handle(myself, msg, state).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<A::Msg>,
        evt: SupervisionEvent,
        state: &mut A::State,
    ) -> Result<(), ActorProcessingErr> {
        self.actor.handle_supervisor_evt(myself, evt, state).await
    }
}
