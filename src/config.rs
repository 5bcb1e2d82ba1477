//! Settings: each one a command-line flag and an environment variable (a `.env` file in the
//! working directory, or `--env-file`, fills in what the real environment leaves unset).
//! Every value is checked while parsing, so a bad one stops start-up with one line naming it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

/// Secrets shorter than this are refused.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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

    /// Key for session cookies (at least 32 bytes); generated and kept in the database if unset
    #[arg(long, env = "SESSION_SECRET", hide_env_values = true, value_parser = parse_secret, global = true)]
    pub session_secret: Option<String>,

    /// The database file (created if missing)
    #[arg(long, env = "DATABASE_PATH", default_value = "authgate.redb", global = true)]
    pub database_path: PathBuf,

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

/// A poll interval: whole seconds as RFC 8628 advertises them, from 1 s to 60 s.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(60) {
        return Err("must be between 1s and 60s".into());
    }
    Ok(Duration::from_secs(d.as_secs()))
}

#[cfg(test)]
mod tests {
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
