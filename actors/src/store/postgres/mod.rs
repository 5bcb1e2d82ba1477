//! The PostgreSQL backend: a pool of connections, embedded migrations, and one writer task
//! that commits concurrent writes together.
//!
//! [`open`] parses the DSN, waits for the database (retrying with back-off up to the connect
//! timeout), migrates the schema under an advisory lock so instances starting together do not
//! race, refuses a schema newer than this build knows, and builds one repository per owner.
//!
//! Reads go straight to the pool. Writes go through the [`writer`], which keeps the port's
//! promises: each is answered after its commit, in call order, and the conditional ones are
//! single SQL statements whose condition PostgreSQL checks under the row lock, so they hold
//! across processes.

mod audit;
mod device;
mod directory;
mod feed;
mod limits;
mod server;
mod session;
mod token;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::writer::Writer;
use super::change::Change;
use super::port::StoreError;
use super::stores::Stores;
use crate::runtime::retry::{self, Failure, RetryPolicy};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// An arbitrary, fixed key for the advisory lock migrations run under.
const MIGRATION_LOCK: i64 = 0x4175_7468_4761_7465; // "AuthGate"

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `host=... user=... dbname=...` or a `postgres://` URL.
    pub dsn: String,
    /// Most connections this process holds.
    pub pool_size: usize,
    /// How long start-up waits for an unreachable database.
    pub connect_timeout: Duration,
    /// Most writes one commit carries (group commit); 1 commits each write alone.
    pub max_batch: usize,
}

/// Checks a DSN without connecting: the error names what is wrong.
///
/// `sslmode=require` means TLS with the server's certificate verified against the system's
/// trust store and its name checked (what libpq calls `verify-full`); `prefer` (the default)
/// and `disable` connect without TLS, as over a Unix socket or a private network. No mode
/// accepts an unverified certificate.
pub fn parse_dsn(dsn: &str) -> Result<tokio_postgres::Config, StoreError> {
    // The message never repeats the DSN: it may carry a password.
    let mut config = tokio_postgres::Config::from_str(dsn)
        .map_err(|e| StoreError::Config(format!("not a PostgreSQL connection string ({})", writer::with_cause(&e))))?;
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
    }
    Ok(config)
}

/// The TLS connector: with `sslmode=require`, one that verifies the server against the
/// platform's trust store; otherwise one that is never used (those modes never start TLS), so
/// a host without a trust store needs none.
fn tls(mode: SslMode) -> Result<MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
    let config = if mode == SslMode::Require {
        builder
            .with_platform_verifier()
            .map_err(|e| StoreError::Config(format!("TLS: the system's trust store: {e}")))?
            .with_no_client_auth()
    } else {
        // Trusts nothing: any handshake would fail, and none is started.
        builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Connects (waiting up to the connect timeout), migrates, and starts the writer.
pub async fn open(options: PgOptions) -> Result<Stores, StoreError> {
    let mut config = parse_dsn(&options.dsn)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("authgate");
    }
    // A connection whose peer vanished (a cut network, a host gone) is found dead within
    // seconds rather than the kernel's default quarter of an hour.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.tcp_user_timeout(Duration::from_secs(15));
    let tls = tls(config.get_ssl_mode())?;
    migrate(&config, &tls, options.connect_timeout).await?;
    // Listen before anyone loads: a change committed after an owner's load is then announced.
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let (events, feed) = tokio::sync::mpsc::unbounded_channel();
    let (ready, listening) = tokio::sync::oneshot::channel();
    let mut feed_config = config.clone();
    feed_config.application_name(feed::APPLICATION_NAME);
    let listener = tokio::spawn(feed::listen(feed_config, tls.clone(), instance.clone(), events, ready));
    listening.await.unwrap_or(Err(StoreError::Closed))?;
    let pool = |size: usize| {
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .timeouts(Timeouts {
                wait: Some(Duration::from_secs(5)),
                create: Some(Duration::from_secs(5)),
                recycle: Some(Duration::from_secs(5)),
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))
    };
    // Reads share a pool; the writer has connections of its own, so a burst of reads (every
    // request reading through while the feed is down) never starves the commits.
    let writer = Writer::start(pool(2)?, options.max_batch.max(1));
    let pool = pool(options.pool_size.max(2))?;
    let db = Db {
        pool,
        writer,
        instance: instance.into(),
        listener: listener.abort_handle(),
    };
    Ok(Stores {
        device: Arc::new(device::Devices(db.clone())),
        token: Arc::new(token::Tokens(db.clone())),
        session: Arc::new(session::Sessions(db.clone())),
        directory: Arc::new(directory::Directory(db.clone())),
        audit: Arc::new(audit::Audit(db.clone())),
        limits: Some(Arc::new(limits::Limits(db.clone()))),
        server: Arc::new(server::Server(db)),
        feed: Arc::new(std::sync::Mutex::new(Some(feed))),
    })
}

/// Waits for the database, then applies the embedded migrations under an advisory lock.
async fn migrate(config: &tokio_postgres::Config, tls: &MakeRustlsConnect, wait: Duration) -> Result<(), StoreError> {
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    };
    let connecting = retry::run(
        policy,
        || async {
            config.connect(tls.clone()).await.map_err(|e| {
                let said = writer::with_cause(&e);
                match e.as_db_error() {
                    // The server answered and said no (a wrong password, no such database).
                    Some(db) => Failure::Fail(StoreError::Config(db.message().to_owned())),
                    // A certificate that does not verify, or no TLS where it is required:
                    // waiting does not change that.
                    None if said.contains("TLS") || said.contains("certificate") => Failure::Fail(StoreError::Config(said)),
                    None => Failure::Retry {
                        error: StoreError::Unavailable(said),
                        after: None,
                    },
                }
            })
        },
        |e, wait| tracing::warn!(error = %e, retry_in = ?wait, "the database is not reachable yet"),
    );
    let (mut client, connection) = match tokio::time::timeout(wait, connecting).await {
        Ok(connected) => connected?,
        Err(_) => {
            return Err(StoreError::Unavailable(format!(
                "no answer within {}s (DATABASE_CONNECT_TIMEOUT)",
                wait.as_secs()
            )));
        }
    };
    let task = tokio::spawn(connection);
    let result = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(StoreError::storage)?;
        let report = embedded::migrations::runner()
            .set_abort_missing(true)
            .set_abort_divergent(true)
            .run_async(&mut client)
            .await;
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
        let report = report.map_err(|e| match e.kind() {
            refinery::error::Kind::MissingVersion(m) => StoreError::Schema(format!(
                "the database's schema has migration {m}, which this build does not know: it was written by a newer AuthGate; run that version or newer"
            )),
            _ => StoreError::Schema(e.to_string()),
        })?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied a database migration");
        }
        Ok(())
    }
    .await;
    drop(client);
    let _ = task.await;
    result
}

/// The pool and the writer, shared by every repository of one database.
#[derive(Clone)]
pub(super) struct Db {
    pool: Pool,
    writer: Writer,
    /// This process's id in change announcements.
    instance: Arc<str>,
    listener: tokio::task::AbortHandle,
}

impl Db {
    /// The prefix of this process's announcements (for statements that build their own).
    fn announcer(&self) -> String {
        feed::prefix(&self.instance)
    }

    /// A statement announcing `changes` to the other processes, sent with the write it joins
    /// (and so only if that write commits).
    fn announce(&self, changes: &[Change]) -> writer::Stmt {
        let payloads: Vec<String> = changes.iter().map(|c| feed::payload(&self.instance, c)).collect();
        writer::Stmt::exec(
            "SELECT pg_notify('authgate', p) FROM unnest($1::text[]) AS p",
            vec![Box::new(payloads)],
        )
    }

    /// A pooled connection, for reads.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(writer::pool_error)
    }
}

/// Millisecond and second timestamps as PostgreSQL `bigint`s (clamped; they fit for ages).
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A record as JSON for a `jsonb` column. PostgreSQL's text cannot hold U+0000, which a
/// stranger can type (a username tried at a failed sign-in lands in the audit trail), so each
/// one becomes U+FFFD rather than failing the write.
fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    let s = serde_json::to_string(v).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(if s.contains("\\u0000") { without_nul(&s) } else { s })
}

/// Replaces each escaped U+0000 (`\u0000` after an even run of backslashes) in JSON text.
fn without_nul(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut backslashes = 0usize;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if c == '\\' && backslashes.is_multiple_of(2) && rest.starts_with("\\u0000") {
            out.push_str("\\ufffd");
            rest = &rest[6..];
            backslashes = 0;
            continue;
        }
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn decode<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Decode(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod json_tests {
    #[test]
    fn nul_characters_become_replacement_characters_and_nothing_else_changes() {
        let v = serde_json::json!({ "a": "x\u{0}y", "b": "a literal \\u0000 stays", "c": "\\\u{0}" });
        let out = super::json(&v).unwrap();
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["a"], "x\u{fffd}y");
        assert_eq!(back["b"], "a literal \\u0000 stays");
        assert_eq!(back["c"], "\\\u{fffd}");
    }
}
