//! The token service (`TOKEN_PROVIDER_MODE=http_api`): minting and validating its access
//! tokens, always off the token actor's mailbox.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};

use super::TokenState;
use super::book::TokenBook;
use super::msg::{AwaitingMint, PendingKind, TokenMsg};
use super::types::{Grant, TokenInfo, invalid_token};
use crate::crypto::secret;
use crate::error::OAuthError;
use crate::provider::token_service::{MintedToken, TokenProviderMsg};
use crate::provider::{CallError, caller_gone};
use crate::runtime::Handle;
use crate::time::Secs;

/// What the token service's failure to mint means to the client.
fn mint_failed(e: &CallError) -> OAuthError {
    match e {
        CallError::Busy | CallError::Gone => OAuthError::unavailable("the token service is unavailable; try again shortly"),
        _ => OAuthError::server_error("the token service did not issue a token"),
    }
}

/// What a failed validation call means to the client: the service's refusal is an invalid
/// token; not reaching it is a retryable 503.
fn validation_failed(e: &CallError) -> OAuthError {
    match e {
        CallError::Declined(_) | CallError::BadReply(_) => invalid_token(),
        CallError::Status(s) if (400..500).contains(s) && *s != 429 => invalid_token(),
        _ => OAuthError::unavailable("the token service could not be reached; try again shortly"),
    }
}

impl TokenState {
    /// Asks the token service for an access token, off the mailbox; the answer comes back as
    /// [`TokenMsg::Minted`] carrying `pending`.
    pub(super) fn request_mint(&self, provider: Handle<TokenProviderMsg>, timeout: Duration, g: &Grant, scope: &str, pending: PendingKind) {
        let me = self.peers.me.clone();
        let (user_id, client_id, scopes) = (g.user_id.clone(), g.client_id.clone(), scope.to_owned());
        let expires_in = self.config.access_ttl.as_secs();
        tokio::spawn(async move {
            let call = provider.ask_within(timeout + Duration::from_secs(1), |reply| TokenProviderMsg::Generate {
                user_id,
                client_id,
                scopes,
                expires_in,
                reply,
            });
            // A requester that has gone gets nothing minted for it.
            let minted = tokio::select! {
                m = call => m.unwrap_or(Err(CallError::Gone)),
                () = caller_gone(pending.reply()) => Err(CallError::Abandoned),
            };
            if let Err(e) = &minted {
                tracing::warn!(provider = "token_api", reason = %e, "the token service did not mint a token");
            }
            let pending = AwaitingMint(pending);
            if me.cast(TokenMsg::Minted { pending, minted }).is_err() {
                tracing::warn!("the token actor stopped while a token was being minted");
            }
        });
    }

    /// The token service answered: finish the issuance or refresh, checking everything again
    /// (other requests were served meanwhile).
    pub(super) fn minted(&mut self, myself: &ActorRef<TokenMsg>, pending: AwaitingMint, minted: Result<MintedToken, CallError>) {
        match pending.0 {
            PendingKind::Issue { grant, now, reply } => {
                self.issuing.remove(&grant.authorization_id);
                match minted {
                    // Nobody is waiting: spend nothing (the device code stays approved).
                    Ok(_) if reply.is_closed() => {}
                    Ok(m) => self.issue(myself, grant, now, reply, Some(m)),
                    Err(e) => {
                        let _ = reply.send(Err(mint_failed(&e)));
                    }
                }
            }
            PendingKind::Refresh { request, reply } => match minted {
                // Nobody is waiting: leave the refresh token as it was (no rotation).
                Ok(_) if reply.is_closed() => {}
                Ok(m) => self.refresh(myself, request, reply, Some(m)),
                Err(e) => {
                    let _ = reply.send(Err(mint_failed(&e)));
                }
            },
        }
    }

    /// A token-service token: active here, and (when the service is configured) valid there.
    pub(super) fn validate_opaque(&self, token: String, now: Secs, reply: RpcReplyPort<Result<TokenInfo, OAuthError>>) {
        let info = self
            .book
            .minted_access_token(&secret::sha256(&token))
            .filter(|r| self.owner_allowed(r))
            .and_then(|r| TokenBook::active_info(r, now));
        let (Some(info), Some((provider, timeout))) = (info.clone(), self.peers.token_api.clone()) else {
            // Without the service (the mode was switched back), the record alone decides.
            let _ = reply.send(info.ok_or_else(invalid_token));
            return;
        };
        tokio::spawn(async move {
            let call = provider.ask_within(timeout + Duration::from_secs(1), |r| TokenProviderMsg::Validate { token, reply: r });
            let valid = tokio::select! {
                v = call => v.unwrap_or(Err(CallError::Gone)),
                () = caller_gone(&reply) => return,
            };
            let _ = reply.send(match valid {
                Ok(true) => Ok(info),
                Ok(false) => Err(invalid_token()),
                Err(e) => {
                    tracing::warn!(provider = "token_api", reason = %e, "could not validate a token with the token service");
                    Err(validation_failed(&e))
                }
            });
        });
    }
}
