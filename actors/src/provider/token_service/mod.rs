//! The token-service provider actor (`TOKEN_PROVIDER_MODE=http_api`).
//!
//! Owns the HTTP client for the external token service and the calls in flight to it: minting
//! an access token (`POST {TOKEN_API_URL}/generate`) and asking whether one is valid
//! (`POST {TOKEN_API_URL}/validate`). The token actor keeps every record local whatever mints.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::{CallError, Calls, ServiceConfig, Upstream};

/// An access token minted by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    pub access_token: String,
    /// Seconds; `None` when the service did not say (the configured lifetime applies).
    pub expires_in: Option<u64>,
}

/// Messages of the token-service provider.
pub enum TokenProviderMsg {
    Generate {
        user_id: String,
        client_id: String,
        scopes: String,
        expires_in: u64,
        reply: RpcReplyPort<Result<MintedToken, CallError>>,
    },
    /// Whether the service still calls `token` valid.
    Validate {
        token: String,
        reply: RpcReplyPort<Result<bool, CallError>>,
    },
}

#[derive(Serialize)]
struct GenerateRequest<'a> {
    user_id: &'a str,
    client_id: &'a str,
    scopes: &'a str,
    expires_in: u64,
}

#[derive(Deserialize)]
struct GenerateReply {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    access_token: Option<String>,
    /// A number of seconds; a string of digits or a float is accepted, anything else ignored.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

fn seconds(v: Option<serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite() && *f >= 1.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
}

/// Longest access token accepted from the service.
const MAX_TOKEN_LEN: usize = 8192;

impl GenerateReply {
    fn into_token(self) -> Result<MintedToken, CallError> {
        match (self.success, self.access_token.filter(|t| !t.trim().is_empty())) {
            (true, Some(t)) if t.len() <= MAX_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(MintedToken {
                access_token: t,
                expires_in: seconds(self.expires_in),
            }),
            (true, Some(_)) => Err(CallError::BadReply(
                "the access_token is not a printable token of at most 8 KiB".into(),
            )),
            (true, None) => Err(CallError::BadReply("success without an access_token".into())),
            (false, _) => Err(CallError::Declined(self.message.unwrap_or_else(|| "success: false".into()))),
        }
    }
}

#[derive(Serialize)]
struct ValidateRequest<'a> {
    token: &'a str,
}

#[derive(Deserialize)]
struct ValidateReply {
    #[serde(default)]
    valid: bool,
}

pub struct TokenProviderActor;

pub struct TokenProviderState {
    upstream: Arc<Upstream>,
    /// Minting and validation have separate limits, so a flood of `tokeninfo` requests
    /// (unauthenticated) cannot starve token issuance.
    mints: Calls,
    validations: Calls,
}

impl Actor for TokenProviderActor {
    type Msg = TokenProviderMsg;
    type State = TokenProviderState;
    type Arguments = (ServiceConfig, crate::metrics::ProviderCounters);

    async fn pre_start(
        &self,
        _myself: ActorRef<TokenProviderMsg>,
        (config, counters): Self::Arguments,
    ) -> Result<TokenProviderState, ActorProcessingErr> {
        let (mints, validations) = (Calls::new(config.max_concurrent), Calls::new(config.max_concurrent));
        let upstream = Upstream::new("token_api", config, counters)?;
        Ok(TokenProviderState {
            upstream: Arc::new(upstream),
            mints,
            validations,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TokenProviderMsg>,
        msg: TokenProviderMsg,
        st: &mut TokenProviderState,
    ) -> Result<(), ActorProcessingErr> {
        let up = st.upstream.clone();
        match msg {
            TokenProviderMsg::Generate {
                user_id,
                client_id,
                scopes,
                expires_in,
                reply,
            } => st.mints.start(reply, async move {
                let body = GenerateRequest {
                    user_id: &user_id,
                    client_id: &client_id,
                    scopes: &scopes,
                    expires_in,
                };
                up.post_json::<GenerateReply>(&up.url("/generate"), &body).await?.into_token()
            }),
            TokenProviderMsg::Validate { token, reply } => st.validations.start(reply, async move {
                let r: ValidateReply = up.post_json(&up.url("/validate"), &ValidateRequest { token: &token }).await?;
                Ok(r.valid)
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(json: &str) -> Result<MintedToken, CallError> {
        serde_json::from_str::<GenerateReply>(json).unwrap().into_token()
    }

    #[test]
    fn a_mint_needs_success_and_a_token() {
        assert_eq!(
            generate(r#"{"success":true,"access_token":"ext.abc","token_type":"Bearer","expires_in":60,"claims":{"x":1}}"#),
            Ok(MintedToken {
                access_token: "ext.abc".into(),
                expires_in: Some(60)
            })
        );
        assert!(matches!(generate(r#"{"success":true}"#), Err(CallError::BadReply(_))));
        assert_eq!(
            generate(r#"{"success":true,"access_token":"t","expires_in":"120"}"#)
                .unwrap()
                .expires_in,
            Some(120)
        );
        assert_eq!(
            generate(r#"{"success":true,"access_token":"t","expires_in":90.0}"#)
                .unwrap()
                .expires_in,
            Some(90)
        );
        assert_eq!(
            generate(r#"{"success":true,"access_token":"t","expires_in":"soon"}"#)
                .unwrap()
                .expires_in,
            None
        );
        assert!(matches!(
            generate(r#"{"success":true,"access_token":"a b"}"#),
            Err(CallError::BadReply(_))
        ));
        assert!(matches!(
            generate(r#"{"success":false,"access_token":"x"}"#),
            Err(CallError::Declined(_))
        ));
    }
}

/// Property tests: whatever the token service answers, parsing never panics, and only a
/// printable token is accepted.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_reply_is_parsed_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = serde_json::from_slice::<GenerateReply>(&bytes)
                && let Ok(t) = r.into_token()
            {
                prop_assert!(!t.access_token.is_empty() && t.access_token.bytes().all(|b| b.is_ascii_graphic()));
            }
            let _ = serde_json::from_slice::<ValidateReply>(&bytes);
        }
    }
}
