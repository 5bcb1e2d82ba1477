//! The login-API provider actor (`AUTH_MODE=http_api`).
//!
//! Owns the HTTP client for the external login API and the login calls in flight to it.
//! It answers whether the API accepted a username and password; linking the answer to a local
//! user is the directory's business.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::{CallError, Calls, ServiceConfig, Upstream};

/// Who the login API says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    /// The API's id for the user (stored as the local user's `external_id`).
    pub user_id: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
}

/// Messages of the login-API provider.
pub enum AuthProviderMsg {
    /// Asks the API to check a username and password. A refusal, a non-2xx answer, or an
    /// answer without `success: true` and a `user_id` is an error.
    Login {
        username: String,
        password: String,
        reply: RpcReplyPort<Result<ExternalUser, CallError>>,
    },
    /// Test-only: panics in `handle`, to show supervision at work.
    #[cfg(test)]
    Panic,
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    username: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct LoginReply {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl LoginReply {
    fn into_user(self) -> Result<ExternalUser, CallError> {
        match (self.success, non_empty(self.user_id)) {
            (true, Some(user_id)) if user_id.len() <= 256 => Ok(ExternalUser {
                user_id,
                email: non_empty(self.email),
                full_name: non_empty(self.full_name),
            }),
            (true, _) => Err(CallError::BadReply("success without a usable user_id".into())),
            (false, _) => Err(CallError::Declined(
                non_empty(self.message).unwrap_or_else(|| "success: false".into()),
            )),
        }
    }
}

pub struct AuthProviderActor;

pub struct AuthProviderState {
    upstream: Arc<Upstream>,
    calls: Calls,
}

impl Actor for AuthProviderActor {
    type Msg = AuthProviderMsg;
    type State = AuthProviderState;
    type Arguments = (ServiceConfig, crate::metrics::ProviderCounters);

    async fn pre_start(
        &self,
        _myself: ActorRef<AuthProviderMsg>,
        (config, counters): Self::Arguments,
    ) -> Result<AuthProviderState, ActorProcessingErr> {
        #[cfg(test)]
        if super::fault::start_fails(&config.url) {
            return Err("injected start failure".into());
        }
        let calls = Calls::new(config.max_concurrent);
        let upstream = Upstream::new("login_api", config, counters)?;
        Ok(AuthProviderState {
            upstream: Arc::new(upstream),
            calls,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AuthProviderMsg>,
        msg: AuthProviderMsg,
        st: &mut AuthProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuthProviderMsg::Login { username, password, reply } => {
                let up = st.upstream.clone();
                st.calls.start(reply, async move {
                    let url = up.config.url.clone();
                    let body = LoginRequest {
                        username: &username,
                        password: &password,
                    };
                    up.post_json::<LoginReply>(&url, &body).await?.into_user()
                });
            }
            #[cfg(test)]
            AuthProviderMsg::Panic => panic!("injected panic in handle"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Result<ExternalUser, CallError> {
        serde_json::from_str::<LoginReply>(json).unwrap().into_user()
    }

    #[test]
    fn only_success_with_a_user_id_is_a_login() {
        assert_eq!(
            reply(r#"{"success":true,"user_id":"u-1","email":"a@x","full_name":"A"}"#),
            Ok(ExternalUser {
                user_id: "u-1".into(),
                email: Some("a@x".into()),
                full_name: Some("A".into())
            })
        );
        assert!(matches!(reply(r#"{"success":true,"user_id":""}"#), Err(CallError::BadReply(_))));
        assert!(matches!(reply(r#"{"success":true}"#), Err(CallError::BadReply(_))));
        assert_eq!(
            reply(r#"{"success":false,"user_id":"u-1","message":"locked"}"#),
            Err(CallError::Declined("locked".into()))
        );
        assert!(matches!(reply(r#"{"user_id":"u-1"}"#), Err(CallError::Declined(_))));
    }
}

/// Property tests: whatever the login API answers, parsing never panics and only a success
/// with a user id signs anyone in.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_reply_is_parsed_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = serde_json::from_slice::<LoginReply>(&bytes) {
                let _ = r.into_user();
            }
        }

        #[test]
        fn only_success_with_an_id_signs_in(success in any::<bool>(), id in proptest::option::of("\\PC{0,300}"), msg in "\\PC{0,50}") {
            let v = serde_json::json!({"success": success, "user_id": id, "message": msg});
            let r = serde_json::from_value::<LoginReply>(v).unwrap().into_user();
            let ok = success && id.as_deref().is_some_and(|i| !i.trim().is_empty() && i.trim().len() <= 256);
            prop_assert_eq!(r.is_ok(), ok);
        }
    }
}
