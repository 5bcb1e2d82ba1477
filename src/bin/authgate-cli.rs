//! `authgate-cli`: a device-flow client, the way a CLI tool meets AuthGate (RFC 8628).
//!
//! `login` asks for a device code, shows the URL, the code and a QR code of the complete URL,
//! polls at the server's interval (slowing down when told), and keeps the tokens in a per-user
//! file readable by its owner only. Later runs reuse them, refresh them when expired, and
//! retry a request once after refreshing when the server answers 401. `status` shows the
//! login and checks it with the server; `logout` revokes (RFC 7009) and forgets it; `token`
//! prints a valid access token for scripts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Parser)]
#[command(
    name = "authgate-cli",
    version,
    about = "Sign in to an AuthGate server from a terminal with the device flow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Target {
    /// The AuthGate server
    #[arg(long, env = "AUTHGATE_SERVER", default_value = "http://localhost:8080")]
    server: String,
    /// This client's client_id (see the server's admin console or `authgate client list`)
    #[arg(long, env = "AUTHGATE_CLIENT_ID")]
    client_id: String,
    /// Where tokens are kept (mode 0600); default: $XDG_CONFIG_HOME/authgate/tokens.json or ~/.config/authgate/tokens.json
    #[arg(long, env = "AUTHGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in (reusing or refreshing stored tokens when possible)
    Login {
        #[command(flatten)]
        target: Target,
        /// Scopes to ask for, space-separated
        #[arg(long)]
        scope: Option<String>,
        /// Do not print the QR code
        #[arg(long)]
        no_qr: bool,
        /// Start a new sign-in even if stored tokens still work
        #[arg(long)]
        force: bool,
    },
    /// Show the stored login and whether the server accepts it
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Print a valid access token (refreshed if needed), for scripts
    Token {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke the stored tokens on the server and delete them here
    Logout {
        #[command(flatten)]
        target: Target,
    },
}

/// What is kept per server and client.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Stored {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Unix seconds.
    expires_at: u64,
    #[serde(default)]
    scope: String,
    /// Who signed in, from the last verified `id_token` (with `--scope openid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
}

/// What a verified `id_token` says of the person.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Identity {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.preferred_username.as_deref().unwrap_or(&self.sub))?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        if let Some(email) = &self.email {
            write!(f, " <{email}>")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Http(String),
    #[error("the server said {error}: {description}")]
    OAuth { error: String, description: String },
    #[error("token file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("not logged in to {0} (run `authgate-cli login`)")]
    NotLoggedIn(String),
    #[error("the id_token does not verify: {0}")]
    IdToken(String),
}

/// The wall clock in Unix seconds: this client reads it where it judges a token's expiry.
#[allow(clippy::disallowed_methods)] // the demo client's own clock, outside the server
fn now() -> u64 {
    authgate_actors::time::wall_clock_ms() / 1000
}

fn default_token_file() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("authgate").join("tokens.json")
}

/// The token file: every login of this user, keyed by server and client. Held under an
/// exclusive lock (a `.lock` file beside it) from reading to the last write, so two runs at
/// once neither lose each other's entries nor refresh the same refresh token twice (which,
/// with rotation on, the server would take for reuse and revoke).
struct TokenFile {
    path: PathBuf,
    entries: BTreeMap<String, Stored>,
    _lock: std::fs::File,
}

impl TokenFile {
    fn open(path: Option<PathBuf>) -> Result<TokenFile, Error> {
        let path = path.unwrap_or_else(default_token_file);
        let fail = |reason: String| Error::File {
            path: path.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| fail(e.to_string()))?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("json.lock"))
            .map_err(|e| fail(format!("cannot open its lock file: {e}")))?;
        lock.lock().map_err(|e| fail(format!("cannot lock it: {e}")))?;
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::File {
                path: path.clone(),
                reason: format!("not a token file ({e}); delete it to start over"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(fail(e.to_string())),
        };
        Ok(TokenFile {
            path,
            entries,
            _lock: lock,
        })
    }

    /// Writes the whole file anew (a private temporary file renamed over the old one).
    fn save(&self) -> Result<(), Error> {
        let fail = |e: std::io::Error| Error::File {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tmp = self.path.with_extension(format!("json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(&self.entries).map_err(|e| fail(std::io::Error::other(e)))?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = private_file(&tmp).map_err(fail)?;
        f.write_all(&body).and_then(|()| f.sync_all()).map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

struct Client {
    http: reqwest::Client,
    server: String,
    client_id: String,
}

impl Client {
    fn new(target: &Target) -> Result<Client, Error> {
        authgate_actors::provider::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("authgate-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Client {
            http,
            server: target.server.trim_end_matches('/').to_owned(),
            client_id: target.client_id.clone(),
        })
    }

    fn key(&self) -> String {
        format!("{} {}", self.server, self.client_id)
    }

    /// Sends a request; the status and the JSON body (`Null` if there is none).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value), Error> {
        let r = request.send().await.map_err(|e| Error::Http(format!("{}: {e}", self.server)))?;
        let status = r.status();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs a form; a 2xx answer's JSON, or the OAuth error the server named.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, Error> {
        let (status, body) = self.send(self.http.post(format!("{}{path}", self.server)).form(form)).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(Error::OAuth {
            error: body["error"].as_str().unwrap_or(status.as_str()).to_owned(),
            description: body["error_description"].as_str().unwrap_or("").to_owned(),
        })
    }

    async fn refresh(&self, stored: &Stored) -> Result<Stored, Error> {
        let refresh = stored
            .refresh_token
            .as_deref()
            .ok_or_else(|| Error::NotLoggedIn(self.server.clone()))?;
        let body = self
            .post(
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", &self.client_id),
                ],
            )
            .await?;
        let mut next = stored_from(&body, stored.refresh_token.clone());
        next.identity = self.identity(&body).await?.or_else(|| stored.identity.clone());
        Ok(next)
    }

    /// The person an answer's `id_token` names, checked as a public client must: signed by a
    /// key of the server's JWK Set (asymmetric only), issued by the server its metadata names,
    /// for this client, not expired. `None` when there is no `id_token`.
    async fn identity(&self, body: &Value) -> Result<Option<Identity>, Error> {
        let Some(token) = body["id_token"].as_str() else {
            return Ok(None);
        };
        let bad = |e: &dyn std::fmt::Display| Error::IdToken(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(&e))?;
        let (_, metadata) = self
            .send(self.http.get(format!("{}/.well-known/oauth-authorization-server", self.server)))
            .await?;
        let (_, jwks) = self.send(self.http.get(format!("{}/.well-known/jwks.json", self.server))).await?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).map_err(|e| bad(&e))?;
        let jwk = header
            .kid
            .as_deref()
            .and_then(|kid| set.find(kid))
            .ok_or_else(|| bad(&"signed by a key the server does not publish"))?;
        use jsonwebtoken::Algorithm::{ES256, EdDSA, RS256};
        if ![ES256, EdDSA, RS256].contains(&header.alg) {
            return Err(bad(&format!("{:?} is not an algorithm a public client can verify", header.alg)));
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| bad(&e))?;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[&self.client_id]);
        let issuer = metadata["issuer"]
            .as_str()
            .ok_or_else(|| bad(&"the server's metadata names no issuer"))?;
        v.set_issuer(&[issuer]);
        let data = jsonwebtoken::decode::<Identity>(token, &key, &v).map_err(|e| bad(&e))?;
        Ok(Some(data.claims))
    }

    /// `GET /oauth/tokeninfo`: the status and JSON body.
    async fn tokeninfo(&self, access_token: &str) -> Result<(reqwest::StatusCode, Value), Error> {
        let url = format!("{}/oauth/tokeninfo", self.server);
        self.send(self.http.get(url).bearer_auth(access_token)).await
    }

    /// RFC 8628 §3.1–3.5: code, instructions, polling.
    async fn device_flow(&self, scope: Option<&str>, qr: bool) -> Result<Stored, Error> {
        let mut form = vec![("client_id", self.client_id.as_str())];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let code = self.post("/oauth/device/code", &form).await?;
        let field = |name: &str| code[name].as_str().unwrap_or_default().to_owned();
        let (device_code, user_code, uri) = (field("device_code"), field("user_code"), field("verification_uri"));
        let complete = code["verification_uri_complete"].as_str().map(str::to_owned);
        let mut interval = code["interval"].as_u64().unwrap_or(5).clamp(1, 300);
        let deadline = now().saturating_add(code["expires_in"].as_u64().unwrap_or(600));
        println!("To sign in, open {uri}");
        println!("and enter the code: {user_code}");
        if let (true, Some(url)) = (qr, complete.as_deref()) {
            println!("\nOr scan this with your phone ({url}):\n");
            match qrcode::QrCode::new(url) {
                Ok(q) => println!(
                    "{}",
                    // Light modules drawn, dark ones left blank: right on a dark terminal.
                    q.render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build()
                ),
                Err(e) => eprintln!("(no QR code: {e})"),
            }
        }
        println!("Waiting for approval...");
        let _ = std::io::stdout().flush();
        loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            let polled = self
                .post(
                    "/oauth/token",
                    &[
                        ("grant_type", DEVICE_GRANT),
                        ("device_code", &device_code),
                        ("client_id", &self.client_id),
                    ],
                )
                .await;
            match polled {
                Ok(body) => {
                    let mut stored = stored_from(&body, None);
                    stored.identity = self.identity(&body).await?;
                    return Ok(stored);
                }
                Err(Error::OAuth { error, .. }) if error == "authorization_pending" => {}
                // RFC 8628 §3.5: add 5 seconds to the interval for this and later polls.
                Err(Error::OAuth { error, .. }) if error == "slow_down" => interval = (interval + 5).min(300),
                // The network or the server hiccuped: the person may be approving right now, so
                // keep polling until the code expires.
                Err(Error::Http(e)) => eprintln!("(poll failed: {e}; retrying)"),
                Err(Error::OAuth { error, .. }) if error == "temporarily_unavailable" || error == "server_error" => {}
                Err(e) => return Err(e),
            }
            if now() > deadline {
                return Err(Error::OAuth {
                    error: "expired_token".into(),
                    description: "the code expired before it was approved".into(),
                });
            }
        }
    }
}

fn stored_from(body: &Value, old_refresh: Option<String>) -> Stored {
    Stored {
        access_token: body["access_token"].as_str().unwrap_or_default().to_owned(),
        // Without rotation the server sends no new refresh token: the old one stays valid.
        refresh_token: body["refresh_token"].as_str().map(str::to_owned).or(old_refresh),
        expires_at: now().saturating_add(body["expires_in"].as_u64().unwrap_or(0)),
        scope: body["scope"].as_str().unwrap_or_default().to_owned(),
        identity: None,
    }
}

/// A stored login whose access token is valid for a while yet, refreshed if it is not.
async fn fresh(client: &Client, file: &mut TokenFile) -> Result<Stored, Error> {
    let key = client.key();
    let stored = file
        .entries
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::NotLoggedIn(client.server.clone()))?;
    // A little margin for clock skew and the request's own time; a token that still expires
    // in flight gets a 401, and callers that care retry once after refreshing.
    if stored.expires_at > now() + 2 {
        return Ok(stored);
    }
    refreshed(client, file, &stored).await
}

async fn refreshed(client: &Client, file: &mut TokenFile, stored: &Stored) -> Result<Stored, Error> {
    let new = client.refresh(stored).await?;
    file.entries.insert(client.key(), new.clone());
    file.save()?;
    Ok(new)
}

/// Asks the server about the stored token, refreshing and retrying once on a 401.
async fn check(client: &Client, file: &mut TokenFile) -> Result<Value, Error> {
    let stored = fresh(client, file).await?;
    let (status, info) = client.tokeninfo(&stored.access_token).await?;
    if status != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(info);
    }
    let renewed = refreshed(client, file, &stored).await?;
    let (status, info) = client.tokeninfo(&renewed.access_token).await?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Error::NotLoggedIn(client.server.clone()));
    }
    Ok(info)
}

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Login {
            target,
            scope,
            no_qr,
            force,
        } => {
            let client = Client::new(&target)?;
            let mut file = TokenFile::open(target.token_file)?;
            if !force && file.entries.contains_key(&client.key()) {
                match check(&client, &mut file).await {
                    Ok(info) => {
                        println!(
                            "Already logged in to {} as {} (stored tokens reused).",
                            client.server,
                            info["username"].as_str().unwrap_or("?")
                        );
                        return Ok(());
                    }
                    // Unreachable server: keep the stored login, it may work again.
                    Err(e @ Error::Http(_)) => return Err(e),
                    Err(e) => eprintln!("Stored login no longer works ({e}); signing in again."),
                }
            }
            let stored = client.device_flow(scope.as_deref(), !no_qr).await?;
            file.entries.insert(client.key(), stored);
            file.save()?;
            let info = check(&client, &mut file).await?;
            println!(
                "Logged in to {} as {}. Tokens saved in {}.",
                client.server,
                info["username"].as_str().unwrap_or("?"),
                file.path.display()
            );
            if let Some(who) = file.entries.get(&client.key()).and_then(|s| s.identity.as_ref()) {
                println!("Signed in (verified id_token): {who}");
            }
            Ok(())
        }
        Command::Status { target } => {
            let client = Client::new(&target)?;
            let mut file = TokenFile::open(target.token_file)?;
            let info = check(&client, &mut file).await?;
            let stored = file
                .entries
                .get(&client.key())
                .cloned()
                .ok_or_else(|| Error::NotLoggedIn(client.server.clone()))?;
            println!("Server:   {}", client.server);
            println!("User:     {}", info["username"].as_str().unwrap_or("?"));
            if let Some(who) = &stored.identity {
                println!("Identity: {who} (verified id_token, sub {})", who.sub);
            }
            println!("Scope:    {}", stored.scope);
            println!(
                "Expires:  in {}s (refreshed automatically)",
                stored.expires_at.saturating_sub(now())
            );
            println!("Refresh:  {}", if stored.refresh_token.is_some() { "yes" } else { "no" });
            Ok(())
        }
        Command::Token { target } => {
            let client = Client::new(&target)?;
            let mut file = TokenFile::open(target.token_file)?;
            let stored = fresh(&client, &mut file).await?;
            println!("{}", stored.access_token);
            Ok(())
        }
        Command::Logout { target } => {
            let client = Client::new(&target)?;
            let mut file = TokenFile::open(target.token_file)?;
            let Some(stored) = file.entries.remove(&client.key()) else {
                println!("Not logged in to {}.", client.server);
                return Ok(());
            };
            // Revoking the refresh token ends the whole authorization (RFC 7009 §2.1).
            let tokens = stored.refresh_token.iter().chain([&stored.access_token]);
            for token in tokens {
                if let Err(e) = client
                    .post("/oauth/revoke", &[("token", token), ("client_id", &client.client_id)])
                    .await
                {
                    eprintln!("warning: could not revoke a token: {e}");
                }
            }
            file.save()?;
            println!("Logged out of {}; tokens revoked and deleted.", client.server);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authgate-cli: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate-cli: {e}");
            ExitCode::FAILURE
        }
    }
}
