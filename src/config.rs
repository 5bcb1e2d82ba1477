//! Settings: each one a command-line flag and an environment variable (a `.env` file in the
//! working directory, or `--env-file`, fills in what the real environment leaves unset).
//! Every value is checked while parsing, so a bad one stops start-up with one line naming it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use authgate_actors::crypto::keys::{KeyOptions, SigningAlg};
use authgate_actors::provider::{ServiceAuth, ServiceConfig};
use authgate_actors::runtime::retry::RetryPolicy;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};
use hyper::header::{HeaderName, HeaderValue};

/// Secrets shorter than this are refused.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabaseDriver {
    /// One embedded redb file: no set-up, one process.
    Redb,
    /// A PostgreSQL database.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Who does a job: AuthGate itself, or an external HTTP service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderMode {
    Local,
    #[value(name = "http_api")]
    HttpApi,
}

/// How AuthGate authenticates to an external service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceAuthMode {
    None,
    Simple,
    Hmac,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Settings (flag or environment variable; a .env file is also read)")]
pub struct Settings {
    /// Address to listen on; ":8080" means every interface, port 8080
    #[arg(long, env = "SERVER_ADDR", default_value = ":8080", value_parser = parse_addr, global = true)]
    pub server_addr: SocketAddr,

    /// Public URL of this server: used for verification_uri and as the JWT issuer
    #[arg(long, env = "BASE_URL", default_value = "http://localhost:8080", value_parser = parse_base_url, global = true)]
    pub base_url: String,

    /// HS256 key for access tokens (at least 32 bytes); generated and kept in the database if unset
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub jwt_secret: Option<String>,

    /// Access-token signature: HS256 (with JWT_SECRET), or ES256, EdDSA, RS256 with a private key generated on first start and kept in the database (or JWT_PRIVATE_KEY_FILE), published at /.well-known/jwks.json
    #[arg(long, env = "JWT_SIGNING_ALGORITHM", default_value = "HS256", global = true)]
    pub jwt_signing_algorithm: SigningAlg,

    /// PEM private key (PKCS#8; or PKCS#1 for RS256) to sign with instead of a generated one
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE", value_name = "PATH", global = true)]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Bearer token GET /metrics requires (at least 32 bytes); unset, /metrics is open (keep it off the public network)
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub metrics_token: Option<String>,

    /// Key for session cookies (at least 32 bytes); generated and kept in the database if unset
    #[arg(long, env = "SESSION_SECRET", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub session_secret: Option<String>,

    /// Storage: redb (one embedded file, DATABASE_PATH) or postgres (DATABASE_DSN)
    #[arg(long, env = "DATABASE_DRIVER", default_value = "redb", value_enum, global = true)]
    pub database_driver: DatabaseDriver,

    /// The database file (created if missing), with DATABASE_DRIVER=redb
    #[arg(long, env = "DATABASE_PATH", default_value = "authgate.redb", global = true)]
    pub database_path: PathBuf,

    /// PostgreSQL to use with DATABASE_DRIVER=postgres: "host=... user=... dbname=..." or postgres://user:pass@host/db; sslmode=require: TLS with the server's certificate verified against the system's trust store (SSL_CERT_FILE=bundle.pem replaces that store for the whole process); prefer (default) and disable: no TLS
    #[arg(long, env = "DATABASE_DSN", hide_env_values = true, global = true)]
    pub database_dsn: Option<String>,

    /// Most PostgreSQL connections for reads this process holds (plus 2 for writes and 1 listening for other instances' changes)
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value = "16", value_parser = clap::value_parser!(u32).range(2..=1000), global = true)]
    pub database_pool_size: u32,

    /// How long start-up waits for an unreachable PostgreSQL before giving up (exit status 2)
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    pub database_connect_timeout: Duration,

    /// Lifetime of a device code
    #[arg(long, env = "DEVICE_CODE_EXPIRATION", default_value = "30m", value_parser = parse_duration, global = true)]
    pub device_code_expiration: Duration,

    /// Minimum time between two polls of one device code
    #[arg(long, env = "POLLING_INTERVAL", default_value = "5s", value_parser = parse_interval, global = true)]
    pub polling_interval: Duration,

    /// Lifetime of an access token
    #[arg(long, env = "JWT_EXPIRATION", default_value = "1h", value_parser = parse_duration, global = true)]
    pub jwt_expiration: Duration,

    /// Lifetime of a refresh token
    #[arg(long, env = "REFRESH_TOKEN_EXPIRATION", default_value = "720h", value_parser = parse_duration, global = true)]
    pub refresh_token_expiration: Duration,

    /// Issue refresh tokens with access tokens
    #[arg(long, env = "ENABLE_REFRESH_TOKENS", default_value = "true", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub enable_refresh_tokens: bool,

    /// Replace the refresh token at every refresh; a replaced one used again revokes the authorization
    #[arg(long, env = "ENABLE_TOKEN_ROTATION", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub enable_token_rotation: bool,

    /// With rotation: a replaced refresh token presented again by its client within this long gets the successor already issued for it (and a fresh access token) instead of revoking the authorization; 0s is strict; at most 60s
    #[arg(long, env = "REFRESH_TOKEN_REUSE_GRACE", default_value = "0s", value_parser = parse_grace, global = true)]
    pub refresh_token_reuse_grace: Duration,

    /// Require PKCE (S256) of confidential clients too on the authorization code grant (public clients always need it)
    #[arg(long, env = "PKCE_REQUIRED", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub pkce_required: bool,

    /// How long a kept-alive connection may wait for its next request (and a request's headers may take) before it is closed; a new connection must start its first request within 10s (or this, if shorter)
    #[arg(long, env = "KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_keepalive, global = true)]
    pub keepalive_timeout: Duration,

    /// Lifetime of a browser session
    #[arg(long, env = "SESSION_MAX_AGE", default_value = "168h", value_parser = parse_duration, global = true)]
    pub session_max_age: Duration,

    /// Password of the admin user created on first start (random and logged once if unset)
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, global = true)]
    pub admin_password: Option<String>,

    /// Log format
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_enum, global = true)]
    pub log_format: LogFormat,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    /// Most writes one database commit may carry (group commit); 1 commits each write alone
    #[arg(long, env = "STORE_MAX_BATCH", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65536), global = true)]
    pub store_max_batch: u32,

    /// How long audit events are kept
    #[arg(long, env = "AUDIT_RETENTION", default_value = "2160h", value_parser = parse_duration, global = true)]
    pub audit_retention: Duration,

    /// How often expired device codes, tokens and sessions, and audit events past retention, are removed
    #[arg(long, env = "CLEANUP_INTERVAL", default_value = "1h", value_parser = parse_duration, global = true)]
    pub cleanup_interval: Duration,

    /// Proxies whose X-Forwarded-For / Forwarded headers are believed (comma-separated IPs or CIDRs); none by default
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = parse_networks, global = true)]
    pub trusted_proxies: Networks,

    /// Open connections at most; more wait in the kernel's backlog
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "10000", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: u32,

    /// Requests handled at once; beyond it polls get slow_down and other requests 503 with Retry-After
    #[arg(long, env = "MAX_INFLIGHT", default_value = "2048", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_inflight: u32,

    /// Failed sign-ins per username within 15 minutes before a lockout (30s, doubling up to 15m); an address gets four times as many
    #[arg(long, env = "LOGIN_FAILURE_LIMIT", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=10000), global = true)]
    pub login_failure_limit: u32,

    /// Wrong user codes per browser session, and per address, within a minute before a lockout (1m, doubling up to 1h)
    #[arg(long, env = "USER_CODE_FAILURE_LIMIT", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=10000), global = true)]
    pub user_code_failure_limit: u32,

    /// Wrong user codes per minute from everyone together before code entry pauses for a minute
    #[arg(long, env = "USER_CODE_GLOBAL_FAILURE_LIMIT", default_value = "600", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub user_code_global_failure_limit: u32,

    /// Device codes one address may request per minute (then 429 with Retry-After)
    #[arg(long, env = "DEVICE_CODE_RATE_LIMIT", default_value = "60", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub device_code_rate_limit: u32,

    /// Client-credentials tokens one client may get per minute (then 429 with Retry-After)
    #[arg(long, env = "CLIENT_CREDENTIALS_RATE_LIMIT", default_value = "60", value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub client_credentials_rate_limit: u32,

    /// Where passwords are checked: local (here), or http_api (the login API at HTTP_API_URL; local users such as the seeded admin still sign in here)
    #[arg(long, env = "AUTH_MODE", default_value = "local", value_enum, global = true)]
    pub auth_mode: ProviderMode,

    /// Login API: URL the username and password are POSTed to (required when AUTH_MODE=http_api)
    #[arg(long, env = "HTTP_API_URL", value_parser = parse_service_url, global = true)]
    pub http_api_url: Option<String>,

    /// Login API: deadline of one call, retries and their waits included
    #[arg(long, env = "HTTP_API_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub http_api_timeout: Duration,

    /// Login API: accept any TLS certificate (for testing only)
    #[arg(long, env = "HTTP_API_INSECURE_SKIP_VERIFY", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub http_api_insecure_skip_verify: bool,

    /// Login API: how AuthGate authenticates to it: none, simple (the secret in a header) or hmac (signed requests)
    #[arg(long, env = "HTTP_API_AUTH_MODE", default_value = "none", value_enum, global = true)]
    pub http_api_auth_mode: ServiceAuthMode,

    /// Login API: shared secret for simple or hmac authentication
    #[arg(long, env = "HTTP_API_AUTH_SECRET", hide_env_values = true, global = true)]
    pub http_api_auth_secret: Option<String>,

    /// Login API: header carrying the secret in simple mode
    #[arg(long, env = "HTTP_API_AUTH_HEADER", default_value = "X-API-Secret", value_parser = parse_header_name, global = true)]
    pub http_api_auth_header: String,

    /// Login API: retries of a failed call (connection errors, timeouts, 5xx, 429); 0 disables
    #[arg(long, env = "HTTP_API_MAX_RETRIES", default_value = "3", value_parser = clap::value_parser!(u32).range(0..=20), global = true)]
    pub http_api_max_retries: u32,

    /// Login API: delay before the first retry; each next one doubles, with jitter
    #[arg(long, env = "HTTP_API_RETRY_DELAY", default_value = "1s", value_parser = parse_duration, global = true)]
    pub http_api_retry_delay: Duration,

    /// Login API: longest delay between retries (a Retry-After header included)
    #[arg(long, env = "HTTP_API_MAX_RETRY_DELAY", default_value = "10s", value_parser = parse_duration, global = true)]
    pub http_api_max_retry_delay: Duration,

    /// Login API: calls in flight at once; more are refused at once (try again later)
    #[arg(long, env = "HTTP_API_MAX_CONCURRENT", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=10000), global = true)]
    pub http_api_max_concurrent: u32,

    /// Who mints access tokens: local (JWTs signed here) or http_api (the token service at TOKEN_API_URL); token records stay here either way
    #[arg(long, env = "TOKEN_PROVIDER_MODE", default_value = "local", value_enum, global = true)]
    pub token_provider_mode: ProviderMode,

    /// Token service: URL of the token service (its /generate and /validate are called) (required when TOKEN_PROVIDER_MODE=http_api)
    #[arg(long, env = "TOKEN_API_URL", value_parser = parse_service_url, global = true)]
    pub token_api_url: Option<String>,

    /// Token service: deadline of one call, retries and their waits included
    #[arg(long, env = "TOKEN_API_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub token_api_timeout: Duration,

    /// Token service: accept any TLS certificate (for testing only)
    #[arg(long, env = "TOKEN_API_INSECURE_SKIP_VERIFY", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new(), global = true)]
    pub token_api_insecure_skip_verify: bool,

    /// Token service: how AuthGate authenticates to it: none, simple (the secret in a header) or hmac (signed requests)
    #[arg(long, env = "TOKEN_API_AUTH_MODE", default_value = "none", value_enum, global = true)]
    pub token_api_auth_mode: ServiceAuthMode,

    /// Token service: shared secret for simple or hmac authentication
    #[arg(long, env = "TOKEN_API_AUTH_SECRET", hide_env_values = true, global = true)]
    pub token_api_auth_secret: Option<String>,

    /// Token service: header carrying the secret in simple mode
    #[arg(long, env = "TOKEN_API_AUTH_HEADER", default_value = "X-API-Secret", value_parser = parse_header_name, global = true)]
    pub token_api_auth_header: String,

    /// Token service: retries of a failed call (connection errors, timeouts, 5xx, 429); 0 disables
    #[arg(long, env = "TOKEN_API_MAX_RETRIES", default_value = "3", value_parser = clap::value_parser!(u32).range(0..=20), global = true)]
    pub token_api_max_retries: u32,

    /// Token service: delay before the first retry; each next one doubles, with jitter
    #[arg(long, env = "TOKEN_API_RETRY_DELAY", default_value = "1s", value_parser = parse_duration, global = true)]
    pub token_api_retry_delay: Duration,

    /// Token service: longest delay between retries (a Retry-After header included)
    #[arg(long, env = "TOKEN_API_MAX_RETRY_DELAY", default_value = "10s", value_parser = parse_duration, global = true)]
    pub token_api_max_retry_delay: Duration,

    /// Token service: calls in flight at once; more are refused at once (try again later)
    #[arg(long, env = "TOKEN_API_MAX_CONCURRENT", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=10000), global = true)]
    pub token_api_max_concurrent: u32,
}

/// The settings alone, for embedding and tests.
#[derive(clap::Parser)]
#[command(name = "authgate", args_override_self = true)]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// Parses settings from flags (the first item is the program name; a later flag overrides
    /// an earlier one) and the environment, as `authgate server` does.
    pub fn try_from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <SettingsOnly as clap::Parser>::try_parse_from(args).map(|s| s.settings)
    }

    /// The login API's settings when `AUTH_MODE=http_api`; an error names the missing setting.
    pub fn login_api(&self) -> Result<Option<ServiceConfig>, String> {
        if self.auth_mode == ProviderMode::Local {
            return Ok(None);
        }
        service(
            "HTTP_API",
            "AUTH_MODE",
            ServiceSettings {
                url: self.http_api_url.as_deref(),
                timeout: self.http_api_timeout,
                insecure_skip_verify: self.http_api_insecure_skip_verify,
                auth_mode: self.http_api_auth_mode,
                secret: self.http_api_auth_secret.as_deref(),
                header: &self.http_api_auth_header,
                max_retries: self.http_api_max_retries,
                retry_delay: self.http_api_retry_delay,
                max_retry_delay: self.http_api_max_retry_delay,
                max_concurrent: self.http_api_max_concurrent,
            },
        )
        .map(Some)
    }

    /// The token service's settings when `TOKEN_PROVIDER_MODE=http_api`.
    pub fn token_api(&self) -> Result<Option<ServiceConfig>, String> {
        if self.token_provider_mode == ProviderMode::Local {
            return Ok(None);
        }
        service(
            "TOKEN_API",
            "TOKEN_PROVIDER_MODE",
            ServiceSettings {
                url: self.token_api_url.as_deref(),
                timeout: self.token_api_timeout,
                insecure_skip_verify: self.token_api_insecure_skip_verify,
                auth_mode: self.token_api_auth_mode,
                secret: self.token_api_auth_secret.as_deref(),
                header: &self.token_api_auth_header,
                max_retries: self.token_api_max_retries,
                retry_delay: self.token_api_retry_delay,
                max_retry_delay: self.token_api_max_retry_delay,
                max_concurrent: self.token_api_max_concurrent,
            },
        )
        .map(Some)
    }

    /// Where a generated admin password is written on first start: beside the database file
    /// (redb), or `authgate.admin-password` in the working directory (PostgreSQL).
    pub fn admin_password_file(&self) -> std::path::PathBuf {
        if self.database_driver == DatabaseDriver::Postgres {
            return std::path::PathBuf::from("authgate.admin-password");
        }
        let mut name = self.database_path.file_name().unwrap_or_default().to_os_string();
        name.push(".admin-password");
        self.database_path.with_file_name(name)
    }

    /// How long a request waits for an answer that may involve the token service.
    pub fn token_wait(&self) -> Duration {
        match self.token_provider_mode {
            ProviderMode::Local => authgate_actors::runtime::CALL_TIMEOUT,
            ProviderMode::HttpApi => authgate_actors::runtime::CALL_TIMEOUT + self.token_api_timeout,
        }
    }

    /// How long a sign-in waits for an answer that may involve the login API.
    pub fn login_wait(&self) -> Duration {
        match self.auth_mode {
            ProviderMode::Local => authgate_actors::runtime::CALL_TIMEOUT,
            ProviderMode::HttpApi => authgate_actors::runtime::CALL_TIMEOUT + self.http_api_timeout,
        }
    }

    /// The signing-key settings, with `JWT_SECRET` (configured or generated).
    pub fn key_options(&self, secret: Vec<u8>) -> KeyOptions {
        KeyOptions {
            alg: self.jwt_signing_algorithm,
            key_file: self.jwt_private_key_file.clone(),
            secret,
            issuer: self.base_url.clone(),
            access_ttl: self.jwt_expiration,
        }
    }

    /// Whether the public URL is https (cookies become `Secure` and `__Host-` prefixed).
    pub fn secure(&self) -> bool {
        self.base_url.starts_with("https://")
    }
}

/// `:8080`, `0.0.0.0:8080`, `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let err = || format!("{s:?} is not an address like :8080 or 127.0.0.1:8080");
    if let Some(port) = s.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| err())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| err())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| err())
}

/// An absolute http(s) URL with a host; the trailing slash is dropped.
pub fn parse_base_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) && !s.contains(['?', '#']) => {
            Ok(s.trim_end_matches('/').to_owned())
        }
        _ => Err(format!("{s:?} is not an absolute http:// or https:// URL")),
    }
}

pub fn parse_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_SECRET_LEN {
        return Err(format!(
            "must be at least {MIN_SECRET_LEN} bytes long (generate one with: openssl rand -hex 32)"
        ));
    }
    Ok(s.to_owned())
}

/// A Go-style duration (`500ms`, `10s`, `30m`, `720h`, `1h30m`), not zero, at most ten years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 30s, 30m or 720h ({e})"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("must be at most ten years".into());
    }
    Ok(d)
}

/// The keep-alive idle timeout: from 1 s to 1 h.
pub fn parse_keepalive(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
        return Err("must be from 1s to 1h".into());
    }
    Ok(d)
}

/// The refresh-rotation grace: whole seconds from 0 (strict) to 60.
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    let d = match s.trim() {
        "0" => Duration::ZERO,
        t => humantime::parse_duration(t).map_err(|e| format!("{s:?} is not a duration like 0s, 10s or 1m ({e})"))?,
    };
    if d > Duration::from_secs(60) {
        return Err("must be at most 60s".into());
    }
    Ok(Duration::from_secs(d.as_secs()))
}

/// A poll interval: whole seconds as RFC 8628 advertises them, from 1 s to 60 s.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(60) {
        return Err("must be between 1s and 60s".into());
    }
    Ok(Duration::from_secs(d.as_secs()))
}

/// One service's settings as parsed, before they are checked together.
struct ServiceSettings<'a> {
    url: Option<&'a str>,
    timeout: Duration,
    insecure_skip_verify: bool,
    auth_mode: ServiceAuthMode,
    secret: Option<&'a str>,
    header: &'a str,
    max_retries: u32,
    retry_delay: Duration,
    max_retry_delay: Duration,
    max_concurrent: u32,
}

fn service(prefix: &str, mode_var: &str, s: ServiceSettings<'_>) -> Result<ServiceConfig, String> {
    let url = s.url.ok_or_else(|| format!("{prefix}_URL is required when {mode_var}=http_api"))?;
    let secret = || {
        s.secret
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{prefix}_AUTH_SECRET must be set (non-empty) when {prefix}_AUTH_MODE is simple or hmac"))
    };
    let auth = match s.auth_mode {
        ServiceAuthMode::None => ServiceAuth::None,
        ServiceAuthMode::Simple => {
            let secret = secret()?;
            if HeaderValue::from_str(&secret).is_err() {
                return Err(format!("{prefix}_AUTH_SECRET must be printable text to travel in a header"));
            }
            let header = HeaderName::from_bytes(s.header.as_bytes()).map_err(|_| format!("{prefix}_AUTH_HEADER is not a header name"))?;
            ServiceAuth::Simple { header, secret }
        }
        ServiceAuthMode::Hmac => ServiceAuth::Hmac { secret: secret()? },
    };
    if s.retry_delay > s.max_retry_delay {
        return Err(format!("{prefix}_RETRY_DELAY must not exceed {prefix}_MAX_RETRY_DELAY"));
    }
    if s.timeout.is_zero() {
        return Err(format!("{prefix}_TIMEOUT must be longer than zero"));
    }
    Ok(ServiceConfig {
        url: url.to_owned(),
        timeout: s.timeout,
        insecure_skip_verify: s.insecure_skip_verify,
        auth,
        retry: RetryPolicy {
            max_retries: s.max_retries,
            initial_delay: s.retry_delay,
            max_delay: s.max_retry_delay,
        },
        max_concurrent: s.max_concurrent as usize,
    })
}

/// A list of networks (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<ipnet::IpNet>);

/// `10.0.0.0/8, 192.0.2.7, ::1`: networks or single addresses, comma-separated.
pub fn parse_networks(s: &str) -> Result<Networks, String> {
    let mut nets = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("{item:?} is not an IP address or network like 10.0.0.0/8"))?;
        nets.push(net);
    }
    Ok(Networks(nets))
}

/// An absolute http(s) URL that the HTTP client accepts (a path and query are kept as given).
pub fn parse_service_url(s: &str) -> Result<String, String> {
    if s.contains('#') || s.contains(char::is_whitespace) {
        return Err(format!("{s:?} is not an absolute http:// or https:// URL"));
    }
    authgate_actors::provider::check_url(s).map(|()| s.to_owned())
}

/// A valid HTTP header name.
pub fn parse_header_name(s: &str) -> Result<String, String> {
    HeaderName::from_bytes(s.as_bytes())
        .map(|_| s.to_owned())
        .map_err(|_| format!("{s:?} is not an HTTP header name"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_env_file_lists_every_setting_with_its_default() {
        use clap::CommandFactory;
        let example = include_str!("../config/authgate.env.example");
        let lines: Vec<&str> = example.lines().collect();
        for arg in super::SettingsOnly::command().get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            let line = lines
                .iter()
                .position(|l| l.strip_prefix('#').unwrap_or(l).starts_with(&format!("{env}=")))
                .unwrap_or_else(|| panic!("{env} is missing from config/authgate.env.example"));
            // A comment above it, or above the block of settings it belongs to.
            let block_start = lines[..line]
                .iter()
                .rposition(|l| !l.contains('=') || l.starts_with("# "))
                .unwrap_or(0);
            assert!(lines[block_start].starts_with('#'), "{env} has no comment above it");
            // A setting with a default shows that default (uncommented).
            if let Some(default) = arg.get_default_values().first().and_then(|d| d.to_str()) {
                assert_eq!(
                    lines[line],
                    format!("{env}={default}"),
                    "{env}: the example should show the default"
                );
            }
        }
    }

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr(":8080").unwrap(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!(parse_addr("127.0.0.1:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(parse_addr("localhost:9").unwrap(), "127.0.0.1:9".parse().unwrap());
        assert!(parse_addr("8080").is_err());
        assert!(parse_addr(":99999").is_err());
        assert!(parse_addr("example.com:80").is_err());
    }

    #[test]
    fn go_style_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("720h").unwrap(), Duration::from_secs(720 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("99999999999h").is_err());
        assert!(parse_duration("-5s").is_err());
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert!(parse_interval("500ms").is_err());
        assert!(parse_interval("2m").is_err());
    }

    #[test]
    fn base_urls_and_secrets() {
        assert_eq!(parse_base_url("https://auth.example.com/").unwrap(), "https://auth.example.com");
        assert!(parse_base_url("auth.example.com").is_err());
        assert!(parse_base_url("http://").is_err());
        assert!(parse_secret("short").is_err());
        assert!(parse_secret(&"x".repeat(32)).is_ok());
    }
}
