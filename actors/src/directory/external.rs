//! Sign-in through the external login API (`AUTH_MODE=http_api`), off the directory's mailbox.

use std::time::Duration;

use ractor::RpcReplyPort;

use super::msg::DirectoryMsg;
use super::records::{LoginError, UserView};
use crate::provider::login::AuthProviderMsg;
use crate::provider::{CallError, caller_gone};
use crate::runtime::Handle;
use crate::time::Millis;

/// Asks the login API; its answer comes back to the directory as [`DirectoryMsg::ExternalLogin`].
pub fn ask_login_api(
    directory: Handle<DirectoryMsg>,
    provider: Handle<AuthProviderMsg>,
    timeout: Duration,
    (username, password, now): (String, String, Millis),
    reply: RpcReplyPort<Result<UserView, LoginError>>,
) {
    tokio::spawn(async move {
        // A little beyond the provider's own deadline, so its answer wins the race.
        let wait = timeout + Duration::from_secs(1);
        let name = username.clone();
        let call = async move {
            provider
                .ask_within(wait, |r| AuthProviderMsg::Login {
                    username: name,
                    password,
                    reply: r,
                })
                .await
                .unwrap_or(Err(CallError::Gone))
        };
        // If the browser gives up, so does the call to the API.
        let asked = tokio::select! {
            r = call => r,
            () = caller_gone(&reply) => return,
        };
        match asked {
            Ok(user) => {
                if directory
                    .cast(DirectoryMsg::ExternalLogin {
                        username,
                        user,
                        now,
                        reply,
                    })
                    .is_err()
                {
                    tracing::warn!("the directory stopped during an external sign-in");
                }
            }
            Err(e) => {
                tracing::info!(username = %username, reason = %e, source = "http_api", "sign-in failed");
                let _ = reply.send(Err(match e {
                    CallError::Busy => LoginError::Busy,
                    CallError::Gone => LoginError::Unavailable,
                    _ => LoginError::Invalid,
                }));
            }
        }
    });
}
