//! The command line: `server`, and offline `user` / `client` management on the same database.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use authgate_actors::audit::{AuditEvent, AuditMsg, EventKind};
use authgate_actors::crypto::keys;
use authgate_actors::crypto::password::{self, NewPassword};
use authgate_actors::directory::{AuthSource, ClientSpec, DirectoryMsg, UserChange, UserRef};
use authgate_actors::runtime::FLOW_TIMEOUT;
use authgate_actors::supervisor::{self, Actors};
use authgate_actors::time::Millis;
use clap::error::ErrorKind;
use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};
use crate::server::{Server, open_store, start_system};

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version = crate::VERSION,
    disable_version_flag = true,
    about = "OAuth 2.0 device authorization server for CLI tools and browserless devices",
    after_help = "Durations are Go-style: 500ms, 10s, 30m, 720h, 1h30m. The real environment wins over --env-file, which wins over ./.env."
)]
pub struct Cli {
    /// Print version and git commit
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,

    /// Read settings from this file (KEY=VALUE lines) before ./.env
    #[arg(long, value_name = "PATH", global = true)]
    env_file: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the authorization server
    Server,
    /// Manage users (redb: with the server stopped; PostgreSQL: at any time)
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients (redb: with the server stopped; PostgreSQL: at any time)
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the JWT signing keys (redb: with the server stopped; PostgreSQL: at any time, then restart every instance)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a stopped redb deployment (users, clients, keys, secrets, live tokens and sessions,
    /// the audit trail) into an empty PostgreSQL database, and check the counts
    Migrate {
        /// The redb database file to copy from (the server on it must be stopped)
        #[arg(long, value_name = "PATH")]
        from_redb: PathBuf,
        /// The empty PostgreSQL database to copy into (as DATABASE_DSN)
        #[arg(long, value_name = "DSN")]
        to_postgres: String,
    },
    /// Ask the server on SERVER_ADDR (loopback if it is 0.0.0.0 or ::) for /health; exit 0 when it answers 200
    Healthcheck {
        /// Give up after this long
        #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new signing key for JWT_SIGNING_ALGORITHM (ES256, EdDSA, RS256); the server
    /// signs with it from its next start, and the previous key keeps verifying (and stays in
    /// the JWK Set) until the tokens it signed have expired
    Rotate,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; prints a generated password unless --password-stdin is given
    Add {
        #[arg(long)]
        username: String,
        /// Make the user an administrator
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users
    List,
    /// Set a user's password and end their browser sessions; prints a generated one unless --password-stdin is given
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set the full name and email OpenID Connect gives out for a user (an empty value clears it; an omitted one stays)
    Profile {
        username: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Add a client; prints its client_id (and, if confidential, its secret, shown only once)
    Add {
        #[arg(long)]
        name: String,
        /// A confidential client (with a secret) instead of a public one
        #[arg(long)]
        confidential: bool,
        /// Grant types the client may use, comma-separated: device_code, authorization_code, refresh_token, client_credentials
        #[arg(long, value_delimiter = ',', default_value = "device_code,refresh_token")]
        grant_types: Vec<String>,
        /// A redirect URI for the authorization code grant (matched exactly; loopback on any port); repeat for several
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Scopes the client may ask for, space- or comma-separated (default: read write)
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Issue refresh tokens to OpenID Connect requests (scope openid) even without offline_access
        #[arg(long)]
        always_refresh: bool,
        /// A resource (RFC 8707) its tokens may be meant for; repeat for several
        #[arg(long = "resource", value_name = "URI")]
        resources: Vec<String>,
    },
    /// List clients
    List,
}

/// Loads `--env-file` (if named on the command line) and then `./.env`; neither overrides
/// what is already set.
fn load_env_files() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let named = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--env-file=")
            .map(str::to_owned)
            .or_else(|| (a == "--env-file").then(|| args.get(i + 1).cloned()).flatten())
    });
    if let Some(path) = named {
        dotenvy::from_path(&path).map_err(|e| format!("--env-file {path}: {e}"))?;
    }
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(format!(".env: {e}")),
    }
}

/// Changes the log filter of the running process (SIGHUP).
type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Sets up logging. Lines are written by a dedicated thread (`tracing_appender`), so a slow
/// stderr (a busy journald, a full pipe) never blocks the runtime; past 16k waiting lines new
/// ones are dropped rather than waited for. The guard flushes what is queued when dropped.
fn init_logging(settings: &Settings) -> Result<(LogReload, tracing_appender::non_blocking::WorkerGuard), String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(&settings.log_level)?);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        // The queue is allocated up front (about 32 bytes a slot): 16k lines, not the default 128k.
        .buffered_lines_limit(16 * 1024)
        .thread_name("authgate-log")
        .finish(std::io::stderr());
    crate::daemon::watch_log_drops(writer.error_counter());
    let ansi = std::io::stderr().is_terminal();
    crate::http::access_log::install(writer.clone(), settings.log_format == LogFormat::Json, ansi);
    // Each line names where it comes from by its target (`access`, `audit`, an actor's
    // module such as `authgate_actors::device`), not by ractor's `Actor{id="0.2"}` spans.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.log_format {
        // One JSON object per line, fields flattened: what journald and log shippers want.
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    result.map_err(|e| e.to_string())?;
    let reload: LogReload = Box::new(move |level| handle.reload(log_filter(level)?).map_err(|e| e.to_string()));
    Ok((reload, guard))
}

/// The filter `LOG_LEVEL` asks for. ractor's own spans (`Actor{id="0.2"}`, one per actor) would
/// prefix every actor's line; they are off unless `LOG_LEVEL` names `ractor` itself. (ractor
/// logs nothing above `debug`.)
fn log_filter(level: &str) -> Result<EnvFilter, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid value for LOG_LEVEL: {e}"))?;
    if level.contains("ractor") {
        return Ok(filter);
    }
    let off = "ractor=off".parse().map_err(|e| format!("log filter: {e}"))?;
    Ok(filter.add_directive(off))
}

/// `LOG_LEVEL` as a reload sees it: from `--env-file` (re-read), else `./.env`, else the
/// environment the process started with.
fn reload_log_level(env_file: Option<&std::path::Path>) -> Option<String> {
    let files = env_file
        .map(std::path::Path::to_path_buf)
        .into_iter()
        .chain([PathBuf::from(".env")]);
    for path in files {
        let Ok(items) = dotenvy::from_path_iter(&path) else { continue };
        if let Some((_, v)) = items.flatten().find(|(k, _)| k == "LOG_LEVEL") {
            return Some(v);
        }
    }
    std::env::var("LOG_LEVEL").ok()
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("authgate: {message}");
    ExitCode::from(code)
}

pub fn main() -> ExitCode {
    // Before any thread exists (see its documentation).
    password::tune_allocator();
    if let Err(e) = load_env_files() {
        return fail(2, e);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(2)
                }
                _ => {
                    // One line naming the setting, not clap's multi-line report.
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
                    fail(2, format!("{first} (see authgate --help)"))
                }
            };
        }
    };
    let (reload, _log_guard) = match init_logging(&cli.settings) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(run(cli, reload))
}

async fn run(cli: Cli, reload: LogReload) -> ExitCode {
    match cli.command {
        Command::Server => {
            let signals = crate::daemon::Signals::install();
            let server = match Server::start(cli.settings).await {
                Ok(s) => s,
                Err(e) => return fail(e.exit_code(), e),
            };
            crate::daemon::ready(server.addr);
            let env_file = cli.env_file.clone();
            signals
                .run_until_stopped(|| {
                    let Some(level) = reload_log_level(env_file.as_deref()) else {
                        return;
                    };
                    match reload(&level) {
                        Ok(()) => tracing::info!(log_level = %level, "SIGHUP: reloaded LOG_LEVEL"),
                        Err(e) => tracing::warn!("SIGHUP: kept the log level: {e}"),
                    }
                })
                .await;
            crate::daemon::stopping();
            server.shutdown().await;
            ExitCode::SUCCESS
        }
        Command::Keys(KeysCommand::Rotate) => rotate_keys(&cli.settings).await,
        Command::Healthcheck { timeout } => healthcheck(&cli.settings, timeout).await,
        Command::Migrate { from_redb, to_postgres } => migrate(&cli.settings, from_redb, to_postgres).await,
        Command::User(cmd) => offline(&cli.settings, |actors, now| Box::pin(user_command(actors, now, cmd))).await,
        Command::Client(cmd) => offline(&cli.settings, |actors, now| Box::pin(client_command(actors, now, cmd))).await,
    }
}

async fn rotate_keys(settings: &Settings) -> ExitCode {
    let stores = match open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(2, format!("{}: {e}", crate::server::store_setting(&e))),
    };
    let result = supervisor::rotate_keys(&stores, &settings.key_options(Vec::new()), command_time()).await;
    stores.close().await;
    match result {
        Ok(kid) => {
            println!("{kid}");
            eprintln!(
                "New {} signing key {kid}: the server signs with it from its next start; the previous key verifies until its tokens expire.",
                settings.jwt_signing_algorithm
            );
            ExitCode::SUCCESS
        }
        Err(e @ keys::KeyError::Rotate(_)) => fail(2, e),
        Err(e) => fail(1, e),
    }
}

/// `authgate migrate --from-redb PATH --to-postgres DSN`.
async fn migrate(settings: &Settings, from: PathBuf, dsn: String) -> ExitCode {
    let redb = Settings {
        database_driver: crate::config::DatabaseDriver::Redb,
        database_path: from,
        ..settings.clone()
    };
    let postgres = Settings {
        database_driver: crate::config::DatabaseDriver::Postgres,
        database_dsn: Some(dsn),
        ..settings.clone()
    };
    if !redb.database_path.exists() {
        return fail(2, format!("--from-redb: {} does not exist", redb.database_path.display()));
    }
    let from = match open_store(&redb).await {
        Ok(s) => s,
        Err(e) => return fail(2, format!("--from-redb: {e}")),
    };
    let to = match open_store(&postgres).await {
        Ok(s) => s,
        Err(e) => {
            from.close().await;
            return fail(2, format!("--to-postgres: {e}"));
        }
    };
    let copied = authgate_actors::store::copy::copy(&from, &to, command_time()).await;
    from.close().await;
    to.close().await;
    match copied {
        Ok(copied) => {
            println!("copied and verified: {copied}");
            ExitCode::SUCCESS
        }
        Err(e @ authgate_actors::store::StoreError::Config(_)) => fail(2, format!("--to-postgres: {e}")),
        Err(e) => fail(1, e),
    }
}

/// `authgate healthcheck`, for container HEALTHCHECKs (no curl in the image).
async fn healthcheck(settings: &Settings, timeout: std::time::Duration) -> ExitCode {
    let mut addr = settings.server_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    authgate_actors::provider::install_tls_provider();
    let client = match reqwest::Client::builder().timeout(timeout).no_proxy().build() {
        Ok(c) => c,
        Err(e) => return fail(1, format!("cannot make an HTTP client: {e}")),
    };
    match client.get(format!("http://{addr}/health")).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            println!("{}", r.text().await.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let status = r.status();
            fail(1, format!("{addr}: {status}: {}", r.text().await.unwrap_or_default()))
        }
        Err(e) => fail(1, format!("{addr}: {e}")),
    }
}

type CommandFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A command's time: the command line is an edge, like a request.
#[allow(clippy::disallowed_methods)] // the CLI's edge
fn command_time() -> Millis {
    authgate_actors::time::wall_clock_ms()
}

/// Runs a management command against the directory, session and audit actors on the
/// database, started on their own (no sign-ins, no tokens, nothing swept).
async fn offline(settings: &Settings, f: impl FnOnce(Actors, Millis) -> CommandFuture) -> ExitCode {
    let system = match start_system(settings, true).await {
        Ok(s) => s,
        Err(e) => return fail(e.exit_code(), e),
    };
    let result = f(system.actors.clone(), command_time()).await;
    system.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// The password from standard input's first line, or a generated one (then printed), checked
/// against the password rule and hashed.
async fn password_from(stdin: bool) -> Result<(NewPassword, Option<String>), String> {
    let (plain, generated) = read_password(stdin)?;
    let hashed = NewPassword::new(plain.clone()).await.map_err(|e| e.to_string())?;
    Ok((hashed, generated.then_some(plain)))
}

fn read_password(stdin: bool) -> Result<(String, bool), String> {
    if !stdin {
        return Ok((password::random_password(16), true));
    }
    let input = std::io::stdin();
    if input.is_terminal() {
        eprintln!("Password: ");
    }
    let mut line = String::new();
    input
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
}

/// Records what an offline command did in the audit trail, once it is durable.
async fn audit(actors: &Actors, event: AuditEvent) -> Result<(), String> {
    match actors.audit_actor().ask(|reply| AuditMsg::RecordDurably { event, reply }).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("could not record the audit event: {e}")),
        Err(e) => Err(format!("could not record the audit event: {}", e.description)),
    }
}

fn cli_event(now: Millis, kind: EventKind, subject: &str) -> AuditEvent {
    let who = std::env::var("USER").map_or_else(|_| "cli".to_owned(), |u| format!("cli:{u}"));
    AuditEvent::new(now, kind, who, true).subject(subject)
}

/// Applies `change` to the user named `username` (the directory ends sessions where the change
/// says so) and records it in the audit trail; the user as it now is.
async fn change_user(
    actors: &Actors,
    username: &str,
    change: UserChange,
    now: Millis,
) -> Result<authgate_actors::directory::UserRecord, String> {
    let (who, what) = (UserRef::Name(username.to_owned()), change.describe());
    let user = actors
        .directory()
        .ask_within(FLOW_TIMEOUT, |reply| DirectoryMsg::ChangeUser {
            who,
            change,
            keep_session: None,
            now,
            reply,
        })
        .await
        .map_err(|e| e.description.to_string())?
        .map_err(|e| e.to_string())?;
    audit(actors, cli_event(now, EventKind::UserChanged, username).detail(what)).await?;
    Ok(user)
}

async fn user_command(actors: Actors, now: Millis, cmd: UserCommand) -> Result<(), String> {
    let err = |e: authgate_actors::OAuthError| e.description.to_string();
    let dir = actors.directory();
    match cmd {
        UserCommand::Add {
            username,
            admin,
            password_stdin,
        } => {
            let (password, generated) = password_from(password_stdin).await?;
            let user = dir
                .ask(|reply| DirectoryMsg::CreateUser {
                    username,
                    password,
                    is_admin: admin,
                    now,
                    reply,
                })
                .await
                .map_err(err)?
                .map_err(|e| e.to_string())?;
            let kind = if admin { "administrator" } else { "user" };
            audit(&actors, cli_event(now, EventKind::UserCreated, &user.username).detail(kind)).await?;
            println!("user {} created (id {})", user.username, user.id);
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
        }
        UserCommand::List => {
            let users = dir.ask(|reply| DirectoryMsg::ListUsers { reply }).await.map_err(err)?;
            println!("{:<32} {:<6} {:<9} {:<9} ID", "USERNAME", "ADMIN", "DISABLED", "SOURCE");
            for u in users {
                println!(
                    "{:<32} {:<6} {:<9} {:<9} {}",
                    u.username,
                    if u.is_admin { "yes" } else { "no" },
                    if u.disabled { "yes" } else { "no" },
                    match u.auth_source {
                        AuthSource::Local => "local",
                        AuthSource::HttpApi => "http_api",
                    },
                    u.id
                );
            }
        }
        UserCommand::Passwd { username, password_stdin } => {
            let (password, generated) = password_from(password_stdin).await?;
            change_user(&actors, &username, UserChange::Password(password), now).await?;
            println!("password of {username} changed");
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
        }
        UserCommand::Profile { username, name, email } => {
            let who = UserRef::Name(username.clone());
            let found = dir
                .ask(|reply| DirectoryMsg::GetUser { who, reply })
                .await
                .map_err(err)?
                .ok_or_else(|| format!("no user named {username:?}"))?;
            let name = name.or(found.full_name).unwrap_or_default();
            let email = email.or(found.email).unwrap_or_default();
            let change = authgate_actors::directory::profile(&name, &email).map_err(|e| e.to_string())?;
            let user = change_user(&actors, &username, change, now).await?;
            println!(
                "profile of {username}: name {}, email {}",
                user.full_name.as_deref().unwrap_or("(none)"),
                user.email.as_deref().unwrap_or("(none)")
            );
        }
    }
    Ok(())
}

async fn client_command(actors: Actors, now: Millis, cmd: ClientCommand) -> Result<(), String> {
    let err = |e: authgate_actors::OAuthError| e.description.to_string();
    let dir = actors.directory();
    match cmd {
        ClientCommand::Add {
            name,
            confidential,
            grant_types,
            redirect_uris,
            scopes,
            always_refresh,
            resources,
        } => {
            let spec = ClientSpec {
                grant_types,
                redirect_uris,
                scopes: scopes.iter().flat_map(|s| s.split_whitespace()).map(str::to_owned).collect(),
                always_refresh,
                resources,
                ..ClientSpec::new(&name, confidential)
            };
            let (client, secret) = dir
                .ask(|reply| DirectoryMsg::CreateClient { spec, now, reply })
                .await
                .map_err(err)?
                .map_err(|e| e.to_string())?;
            let event = cli_event(now, EventKind::ClientCreated, &client.client_id)
                .client(client.client_id.clone())
                .detail(client.name.clone());
            audit(&actors, event).await?;
            println!("client_id: {}", client.client_id);
            if let Some(secret) = secret {
                println!("client_secret: {secret}");
                println!("(the secret is shown only now; it is stored hashed)");
            }
        }
        ClientCommand::List => {
            let clients = dir.ask(|reply| DirectoryMsg::ListClients { reply }).await.map_err(err)?;
            println!("{:<36} {:<12} {:<8} NAME", "CLIENT_ID", "TYPE", "ENABLED");
            for c in clients {
                let kind = if c.confidential { "confidential" } else { "public" };
                println!(
                    "{:<36} {:<12} {:<8} {}",
                    c.client_id,
                    kind,
                    if c.enabled { "yes" } else { "no" },
                    c.name
                );
            }
        }
    }
    Ok(())
}
