//! The directory actor's messages.

use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::store::change::Change;
use crate::store::directory::DirectoryData;

use super::book::{UserChange, UserRef};
use super::records::{ClientSpec, DirectoryError, LoginError, UserView};
use crate::crypto::password::NewPassword;
use crate::provider::login::ExternalUser;
use crate::store::directory::{ClientRecord, UserRecord};
use crate::time::Millis;

/// Messages of the directory actor. Every `now` is Unix milliseconds, read at the edge.
pub enum DirectoryMsg {
    /// Checks a password and answers with the user or a [`LoginError`]. A local user is checked
    /// here (argon2id, off the actor); anyone else, when a login API is configured, there.
    Authenticate {
        username: String,
        password: String,
        now: Millis,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    },
    /// A signed-in user changes their own password: `current` is checked first, then `new`
    /// (held to the password rule) is hashed and set, and every other browser session of
    /// theirs (all but `keep_session`) ends. Answered within [`crate::runtime::FLOW_TIMEOUT`].
    ChangePassword {
        username: String,
        current: String,
        new: String,
        keep_session: String,
        now: Millis,
        reply: RpcReplyPort<Result<(), DirectoryError>>,
    },
    /// Adds a local user.
    CreateUser {
        username: String,
        password: NewPassword,
        is_admin: bool,
        now: Millis,
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    },
    /// Changes or deletes a user, never leaving no enabled administrator. A new password, a
    /// disable or a deletion ends the user's browser sessions (but `keep_session`); a deletion
    /// revokes their tokens. Answers the user as it now is (or was), within
    /// [`crate::runtime::FLOW_TIMEOUT`].
    ChangeUser {
        who: UserRef,
        change: UserChange,
        keep_session: Option<String>,
        now: Millis,
        reply: RpcReplyPort<Result<UserRecord, DirectoryError>>,
    },
    GetUser {
        who: UserRef,
        reply: RpcReplyPort<Option<UserRecord>>,
    },
    ListUsers {
        reply: RpcReplyPort<Vec<UserRecord>>,
    },
    /// Adds a client; a confidential one gets a secret, returned here once and stored hashed.
    CreateClient {
        spec: ClientSpec,
        now: Millis,
        reply: RpcReplyPort<Result<(ClientRecord, Option<String>), DirectoryError>>,
    },
    /// Changes a client's name, description, grant types, scopes and redirect URIs.
    UpdateClient {
        client_id: String,
        spec: ClientSpec,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    /// A disabled client is refused (`invalid_client`) and its tokens stop validating.
    SetClientEnabled {
        client_id: String,
        enabled: bool,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    /// A new secret for a confidential client, returned once; the old one stops working, and
    /// so do the client-credentials tokens it got (recorded with the client as their user).
    RotateClientSecret {
        client_id: String,
        now: Millis,
        reply: RpcReplyPort<Result<(ClientRecord, String), DirectoryError>>,
    },
    /// Deletes a client and revokes every token it holds (within [`crate::runtime::FLOW_TIMEOUT`]).
    DeleteClient {
        client_id: String,
        now: Millis,
        reply: RpcReplyPort<Result<ClientRecord, DirectoryError>>,
    },
    ListClients {
        reply: RpcReplyPort<Vec<Arc<ClientRecord>>>,
    },
    /// Another process changed this user or client: read it again.
    Changed {
        change: Change,
    },
    /// The change feed is down (this comes every second meanwhile) or just came back: read
    /// every user and client again.
    Reload,
    /// Internal: every user and client, as read for a reload.
    Reloaded {
        data: DirectoryData,
    },
    /// Internal: one user (`Change::User`) or client as read for a change.
    Fetched {
        change: Change,
        user: Option<Box<UserRecord>>,
        client: Option<Box<ClientRecord>>,
    },
    /// Internal: the login API accepted `username`; link or create the local record.
    ExternalLogin {
        username: String,
        user: ExternalUser,
        now: Millis,
        reply: RpcReplyPort<Result<UserView, LoginError>>,
    },
}
