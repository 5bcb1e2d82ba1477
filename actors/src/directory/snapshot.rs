//! [`ClientTable`]: the directory's published snapshot, read without a message round trip.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::crypto::secret;
use crate::error::OAuthError;
use crate::store::directory::ClientRecord;

/// An immutable snapshot of every OAuth client, published by the directory actor, with the
/// users who exist and are enabled (the token actor refuses everyone else's tokens) and what
/// OpenID Connect may say of them.
#[derive(Debug, Default)]
pub struct ClientTable {
    pub(super) clients: HashMap<String, Arc<ClientRecord>>,
    pub(super) active_users: HashMap<String, Arc<UserProfile>>,
}

/// What an `id_token` and `/oauth/userinfo` may say of a user (with the `profile` and `email`
/// scopes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub username: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// Where the directory publishes client snapshots; it outlives any one incarnation of the actor.
pub type ClientPublisher = Arc<watch::Sender<Arc<ClientTable>>>;

impl ClientTable {
    pub fn get(&self, client_id: &str) -> Option<&Arc<ClientRecord>> {
        self.clients.get(client_id)
    }

    /// Whether the user exists and is not disabled.
    pub fn user_active(&self, user_id: &str) -> bool {
        self.active_users.contains_key(user_id)
    }

    /// The profile of an enabled user.
    pub fn profile(&self, user_id: &str) -> Option<&Arc<UserProfile>> {
        self.active_users.get(user_id)
    }

    /// Whether tokens of `client_id` issued to `user_id` may be used: the client exists and
    /// is enabled, and so is the user.
    pub fn tokens_allowed(&self, client_id: &str, user_id: &str) -> bool {
        self.get(client_id).is_some_and(|c| c.enabled) && self.user_active(user_id)
    }

    /// Whether `client_id` may hold client-credentials tokens now: enabled, with the grant.
    pub fn machine_allowed(&self, client_id: &str) -> bool {
        self.get(client_id)
            .is_some_and(|c| c.enabled && c.grant_types.iter().any(|g| g == super::records::GRANT_CLIENT_CREDENTIALS))
    }

    /// RFC 6749 §2.3: authenticates a client by id and, for a confidential client, its secret
    /// (compared as SHA-256 in constant time). Unknown, disabled, or wrong → `invalid_client`.
    pub fn authenticate(&self, client_id: &str, secret: Option<&str>) -> Result<Arc<ClientRecord>, OAuthError> {
        let unknown = || OAuthError::invalid_client("client authentication failed");
        let client = self.clients.get(client_id).filter(|c| c.enabled).ok_or_else(unknown)?;
        let secret = secret.filter(|s| !s.is_empty());
        match (client.confidential, secret, client.secret_hash.as_deref()) {
            (false, None, _) => Ok(client.clone()),
            (false, Some(_), _) => Err(OAuthError::invalid_client("public clients have no secret")),
            (true, Some(s), Some(h)) if secret::ct_eq(&secret::sha256_hex(s), h) => Ok(client.clone()),
            (true, _, _) => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::records::new_client;

    #[test]
    fn client_authentication() {
        let (public, _) = new_client("cli", false, 0);
        let (confidential, secret) = new_client("bot", true, 0);
        let (mut disabled, _) = new_client("off", false, 0);
        disabled.enabled = false;
        let secret = secret.unwrap();
        let table = ClientTable {
            clients: [public.clone(), confidential.clone(), disabled.clone()]
                .into_iter()
                .map(|c| (c.client_id.clone(), Arc::new(c)))
                .collect(),
            active_users: Default::default(),
        };
        let code = |r: Result<Arc<ClientRecord>, OAuthError>| r.map(|c| c.name.clone()).map_err(|e| e.code);
        use crate::error::ErrorCode::InvalidClient;
        assert_eq!(code(table.authenticate(&public.client_id, None)), Ok("cli".into()));
        assert_eq!(code(table.authenticate(&public.client_id, Some(""))), Ok("cli".into()));
        assert_eq!(code(table.authenticate(&public.client_id, Some("x"))), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&confidential.client_id, Some(&secret))), Ok("bot".into()));
        assert_eq!(code(table.authenticate(&confidential.client_id, Some("wrong"))), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&confidential.client_id, None)), Err(InvalidClient));
        assert_eq!(code(table.authenticate(&disabled.client_id, None)), Err(InvalidClient));
        assert_eq!(code(table.authenticate("unknown", None)), Err(InvalidClient));
    }
}
