//! What the supervisor starts the actors with.

use std::time::Duration;

use crate::device::DeviceConfig;
use crate::provider::ServiceConfig;
use crate::token::TokenConfig;

/// Everything the actors need to start (and to restart).
#[derive(Clone)]
pub struct CoreConfig {
    pub device: DeviceConfig,
    pub token: TokenConfig,
    pub session_max_age: Duration,
    pub admin_password: Option<String>,
    /// Where a generated admin password is written on first start.
    pub admin_password_file: Option<std::path::PathBuf>,
    /// The external login API, when sign-ins go there (`AUTH_MODE=http_api`).
    pub login_api: Option<ServiceConfig>,
    /// The external token service, when it mints access tokens (`TOKEN_PROVIDER_MODE=http_api`).
    pub token_api: Option<ServiceConfig>,
    /// How often expired device codes, tokens and sessions, and audit events past retention,
    /// are removed.
    pub cleanup_interval: Duration,
    pub audit_retention: Duration,
    /// The offline CLI: only the directory, the sessions and the audit trail run; nothing is
    /// swept, nobody signs in.
    pub offline: bool,
}

/// The configured server secrets, if any; missing ones are generated once and kept in the store.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `JWT_SECRET`: the HS256 key.
    pub jwt: Option<String>,
    /// `SESSION_SECRET`: the cookie key.
    pub session: Option<String>,
}
