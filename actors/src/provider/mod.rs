//! Provider actors: AuthGate's calls to external services.
//!
//! - [`login`]: the login API (`AUTH_MODE=http_api`)
//! - [`token_service`]: the token service (`TOKEN_PROVIDER_MODE=http_api`)
//!
//! Both share the machinery here: an [`Upstream`] (one HTTP client, the service's
//! authentication headers, retries with back-off, a total deadline) and [`Calls`] (the calls
//! in flight, bounded, each abandoned when its caller is gone). A provider actor never waits
//! on the network in its mailbox: each call runs as a task the actor's state owns, so when the
//! actor dies its calls die with it and their callers get a clean error at once.

pub mod login;
pub mod signature;
pub mod token_service;

use crate::metrics::{ProviderCounters, ProviderLabel, ProviderLabels};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::runtime::retry::{self, Failure, RetryPolicy};

/// Installs rustls' ring crypto provider for this process (idempotent). Call it before
/// building any `reqwest` client: the build has no default provider, to stay off aws-lc.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How AuthGate proves itself to a service. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceAuth {
    /// No extra headers.
    None,
    /// The shared secret in a header (by default `X-API-Secret`).
    Simple { header: HeaderName, secret: String },
    /// An HMAC-SHA256 signature per attempt (see [`signature`]).
    Hmac { secret: String },
}

impl std::fmt::Debug for ServiceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceAuth::None => f.write_str("None"),
            ServiceAuth::Simple { header, .. } => write!(f, "Simple {{ header: {header}, secret: <redacted> }}"),
            ServiceAuth::Hmac { .. } => f.write_str("Hmac { secret: <redacted> }"),
        }
    }
}

/// Checks that `url` is one reqwest can call (an absolute http or https URL).
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an http:// or https:// URL with a host")),
        Err(e) => Err(format!("{url:?} is not a valid URL ({e})")),
    }
}

/// One external service's settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The login API's URL, or the token service's base URL.
    pub url: String,
    /// Bounds a whole call, retries and their waits included.
    pub timeout: Duration,
    pub insecure_skip_verify: bool,
    pub auth: ServiceAuth,
    pub retry: RetryPolicy,
    /// Calls in flight at once; more are refused with [`CallError::Busy`].
    pub max_concurrent: usize,
}

/// A call that did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the service: {0}")]
    Unreachable(String),
    #[error("the service answered HTTP {0}")]
    Status(u16),
    #[error("the service's answer was not understood: {0}")]
    BadReply(String),
    #[error("the service declined: {0}")]
    Declined(String),
    #[error("too many calls to the service in flight")]
    Busy,
    #[error("the provider stopped before answering")]
    Gone,
    #[error("the requester stopped waiting")]
    Abandoned,
}

/// Answers bigger than this are refused rather than buffered.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// One external service: its HTTP client (made fresh for each actor incarnation), its
/// authentication, its retry policy and deadline.
pub struct Upstream {
    /// Which provider, for logs.
    name: &'static str,
    client: reqwest::Client,
    config: ServiceConfig,
    counters: ProviderCounters,
}

impl Upstream {
    pub fn new(name: &'static str, config: ServiceConfig, counters: ProviderCounters) -> Result<Self, CallError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(config.insecure_skip_verify)
            .connect_timeout(if config.retry.max_retries == 0 {
                config.timeout
            } else {
                config.timeout / 2
            })
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError::Unreachable(format!("could not build the HTTP client: {e}")))?;
        Ok(Self {
            name,
            client,
            config,
            counters,
        })
    }

    /// The service URL with `path` appended to its path (for the token service's `/generate`
    /// and `/validate`); a query in the configured URL is kept after it.
    pub fn url(&self, path: &str) -> String {
        let (base, query) = match self.config.url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.config.url.as_str(), None),
        };
        let joined = format!("{}{path}", base.trim_end_matches('/'));
        match query {
            Some(q) => format!("{joined}?{q}"),
            None => joined,
        }
    }

    /// POSTs `body` as JSON to `url` and decodes a 2xx answer, retrying connection errors,
    /// timeouts, 5xx and 429 by the policy, all within the service's timeout.
    pub async fn post_json<T: DeserializeOwned>(&self, url: &str, body: &impl Serialize) -> Result<T, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::BadReply(format!("could not encode the request: {e}")))?;
        let parsed = reqwest::Url::parse(url).map_err(|e| CallError::Unreachable(format!("invalid URL: {e}")))?;
        let path_and_query = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let m = &self.counters;
        let calls = retry::run(
            self.config.retry,
            || self.attempt(parsed.clone(), &path_and_query, &body, deadline),
            |e, wait| {
                m.retries.get_or_create(&ProviderLabel { provider: self.name }).inc();
                tracing::warn!(provider = self.name, error = %e, retry_in = ?wait, "upstream call failed; retrying")
            },
        );
        let result = match tokio::time::timeout_at(deadline, calls).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.config.timeout)),
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(CallError::Timeout(_)) => "timeout",
            Err(CallError::Unreachable(_)) => "unreachable",
            Err(CallError::Status(_)) => "http_error",
            Err(CallError::BadReply(_)) => "bad_reply",
            Err(_) => "error",
        };
        m.calls
            .get_or_create(&ProviderLabels {
                provider: self.name,
                outcome,
            })
            .inc();
        result
    }

    fn headers(&self, path_and_query: &str, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self.config.auth {
            ServiceAuth::None => {}
            ServiceAuth::Simple { header, secret } => {
                if let Ok(v) = HeaderValue::from_str(secret) {
                    h.insert(header.clone(), v);
                }
            }
            ServiceAuth::Hmac { secret } => {
                // An outgoing request is an edge: its signature carries the time it is sent.
                #[allow(clippy::disallowed_methods)]
                let ts = crate::time::wall_clock_ms() / 1000;
                let sig = signature::sign(secret.as_bytes(), ts, "POST", path_and_query, body);
                let nonce = uuid::Uuid::new_v4().to_string();
                for (name, value) in [
                    (signature::SIGNATURE_HEADER, sig),
                    (signature::TIMESTAMP_HEADER, ts.to_string()),
                    (signature::NONCE_HEADER, nonce),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        h.insert(HeaderName::from_static(name), v);
                    }
                }
            }
        }
        h
    }

    /// A request or answer that broke off (a timeout, a refused or dropped connection): worth
    /// another try.
    fn transport_failure(&self, e: &reqwest::Error) -> Failure<CallError> {
        let error = if e.is_timeout() {
            CallError::Timeout(self.config.timeout)
        } else {
            CallError::Unreachable(without_url(e))
        };
        Failure::Retry { error, after: None }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        url: reqwest::Url,
        path_and_query: &str,
        body: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<T, Failure<CallError>> {
        // With retries allowed, one attempt gets at most half the budget, so a timed-out
        // attempt leaves time for another.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let per_attempt = if self.config.retry.max_retries == 0 {
            self.config.timeout
        } else {
            self.config.timeout / 2
        };
        let sent = self
            .client
            .post(url)
            .headers(self.headers(path_and_query, body))
            .body(body.to_vec())
            .timeout(per_attempt.min(remaining))
            .send()
            .await;
        let mut resp = sent.map_err(|e| self.transport_failure(&e))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            let after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Retry {
                error: CallError::Status(status.as_u16()),
                after,
            });
        }
        if !status.is_success() {
            return Err(Failure::Fail(CallError::Status(status.as_u16())));
        }
        let mut buf = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if buf.len() + c.len() <= MAX_REPLY_BYTES => buf.extend_from_slice(&c),
                Ok(Some(_)) => return Err(Failure::Fail(CallError::BadReply("the answer is larger than 1 MiB".into()))),
                Ok(None) => break,
                Err(e) => return Err(self.transport_failure(&e)),
            }
        }
        serde_json::from_slice(&buf).map_err(|e| Failure::Fail(CallError::BadReply(e.to_string())))
    }
}

/// A reqwest error's text without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = src {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&err.to_string());
        src = err.source();
    }
    if s.is_empty() { "request failed".into() } else { s }
}

/// Resolves once the caller behind `reply` has stopped waiting (checked every [`CALLER_CHECK`]),
/// so work done only for it can be dropped.
pub async fn caller_gone<T>(reply: &RpcReplyPort<T>) {
    loop {
        tokio::time::sleep(CALLER_CHECK).await;
        if reply.is_closed() {
            return;
        }
    }
}

/// The calls a provider actor has in flight: bounded by a semaphore, owned by its state (so
/// they end with the actor), each abandoned as soon as its caller stops waiting.
pub struct Calls {
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

/// How often an in-flight call checks that its caller is still waiting.
const CALLER_CHECK: Duration = Duration::from_millis(100);

impl Calls {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            tasks: JoinSet::new(),
        }
    }

    /// Runs `call` and sends its result to `reply`, or refuses at once with
    /// [`CallError::Busy`] when the limit is reached.
    pub fn start<T: Send + 'static>(
        &mut self,
        reply: RpcReplyPort<Result<T, CallError>>,
        call: impl Future<Output = Result<T, CallError>> + Send + 'static,
    ) {
        while self.tasks.try_join_next().is_some() {}
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let _ = reply.send(Err(CallError::Busy));
            return;
        };
        self.tasks.spawn(async move {
            let _permit = permit;
            let call = pin!(call);
            tokio::select! {
                r = call => {
                    let _ = reply.send(r);
                }
                () = caller_gone(&reply) => {}
            }
        });
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }
}

/// Test-only faults, so that the supervision tests can fail a provider each way it can fail.
#[cfg(test)]
pub mod fault {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    static FAIL_STARTS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

    /// The next `n` starts of a provider for `url` fail in `pre_start`.
    pub fn fail_next_starts(url: &str, n: usize) {
        FAIL_STARTS.lock().unwrap().insert(url.to_owned(), n);
    }

    /// Whether this start of a provider for `url` is to fail (and counts it).
    pub fn start_fails(url: &str) -> bool {
        let mut f = FAIL_STARTS.lock().unwrap();
        match f.get_mut(url) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}
