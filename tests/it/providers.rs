//! External providers: the login API and the token service, played by real HTTP servers on
//! loopback, reached through supervised provider actors with signed, retried calls.

use std::time::{Duration, Instant};

use authgate_actors::directory::{AuthSource, DirectoryMsg, UserRecord};
use authgate_actors::provider::signature::{SignedRequest, Verifier};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Person, TestServer, get_json, post_form};
use crate::upstream::{Reply, Seen, Upstream};

const INVALID: &str = "Invalid username or password";

/// A login API that knows `alice` (id ext-alice), `carol` and `dave`, with scripted failures
/// for other names.
fn login_api(req: &Seen, earlier: &[Seen]) -> Reply {
    let body = req.json();
    let user = body["username"].as_str().unwrap_or_default().to_owned();
    let tries = earlier.iter().filter(|s| s.json()["username"] == user.as_str()).count();
    let ok = |id: &str, email: &str| {
        Reply::json(
            200,
            json!({"success": true, "user_id": id, "email": email, "full_name": "Full Name", "message": "ok"}),
        )
    };
    match user.as_str() {
        "alice" if tries == 0 => ok("ext-alice", "alice@old.example"),
        "alice" => ok("ext-alice", "alice@new.example"),
        "declined" => Reply::json(200, json!({"success": false, "user_id": "x", "message": "account locked"})),
        "unauthorized" => Reply::json(401, json!({"success": false})),
        "forbidden" => Reply::json(403, json!({"success": true, "user_id": "x"})),
        "flaky" => Reply::json(500, json!({"error": "boom"})),
        "recovers" if tries < 2 => Reply::json(503, json!({})),
        "recovers" => ok("ext-recovers", "r@example"),
        "ratelimited" if tries == 0 => Reply::json(429, json!({})).header("retry-after", "1"),
        "ratelimited" => ok("ext-rl", "rl@example"),
        "badjson" => Reply::raw(200, "<html>not json</html>"),
        "nouser" => Reply::json(200, json!({"success": true, "user_id": ""})),
        "slow" => ok("ext-slow", "s@example").after(Duration::from_secs(5)),
        "sleepy" if tries == 0 => ok("ext-sleepy", "z@example").after(Duration::from_secs(3)),
        "sleepy" => ok("ext-sleepy", "z@example"),
        _ => Reply::json(200, json!({"success": false})),
    }
}

fn login_flags(up: &Upstream, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--auth-mode",
        "http_api",
        "--http-api-url",
        &up.url("/api/verify"),
        "--http-api-retry-delay",
        "60ms",
        "--http-api-max-retry-delay",
        "2s",
        "--http-api-timeout",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn start(flags: &[String]) -> TestServer {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestServer::start(&flags).await
}

async fn user(s: &TestServer, name: &str) -> Option<UserRecord> {
    let dir = s.server.actors.directory().clone();
    let users = dir.ask(|reply| DirectoryMsg::ListUsers { reply }).await.unwrap();
    users.into_iter().find(|u| u.username == name)
}

/// Signs in and returns (status, page).
async fn sign_in(s: &TestServer, username: &str, password: &str) -> (StatusCode, String) {
    let (status, page, _) = Person::new().try_login(s, username, password).await;
    (status, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_api_creates_and_updates_users_while_local_users_stay_local() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(&up, &[])).await;

    let (status, _) = sign_in(&s, "alice", "whatever-the-api-checks").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the API accepted alice");
    let alice = user(&s, "alice").await.expect("a local record was created");
    assert_eq!(alice.auth_source, AuthSource::HttpApi);
    assert_eq!(alice.external_id.as_deref(), Some("ext-alice"));
    assert_eq!(alice.email.as_deref(), Some("alice@old.example"));
    assert_eq!(alice.password_hash, None, "no password hash for an API user");
    let sent = up.seen_for("alice");
    assert_eq!(sent[0].json(), json!({"username": "alice", "password": "whatever-the-api-checks"}));
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].target, "/api/verify");

    let (status, _) = sign_in(&s, "alice", "again").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let again = user(&s, "alice").await.unwrap();
    assert_eq!(
        (again.id.as_str(), again.email.as_deref()),
        (alice.id.as_str(), Some("alice@new.example"))
    );

    // The hybrid rule: the seeded admin is local, and the API never hears of it.
    let calls = up.seen().len();
    let (status, _) = sign_in(&s, "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, page) = sign_in(&s, "admin", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains(INVALID));
    assert_eq!(up.seen().len(), calls, "local users never reach the API");

    s.stop().await;
}

/// What the login API says of a user (email, full name) is what OpenID Connect says of them:
/// in the id_token and at userinfo, by scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_apis_email_and_name_reach_the_id_token_and_userinfo() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(&up, &[])).await;
    let (status, dc) = crate::common::post_form(
        &s.url("/oauth/device/code"),
        &[("client_id", &s.client_id), ("scope", "openid profile email")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dc}");
    let alice = Person::new();
    let (status, _, _) = alice.try_login(&s, "alice", "whatever-the-api-checks").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, page) = alice.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = crate::oidc::verified(&s, &tokens, openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert_eq!(
        (
            claims["email"].as_str(),
            claims["name"].as_str(),
            claims["preferred_username"].as_str()
        ),
        (Some("alice@old.example"), Some("Full Name"), Some("alice")),
        "{claims}"
    );
    let (status, info) = crate::common::get_json(&s.url("/oauth/userinfo"), tokens["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (info["email"].as_str(), info["name"].as_str()),
        (Some("alice@old.example"), Some("Full Name"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_another_user_is_a_conflict_and_nothing_is_merged() {
    // The API vouches for "alice" as ext-alice, then for "alice" as someone else.
    let up = Upstream::start(|_: &Seen, earlier: &[Seen]| {
        let id = if earlier.is_empty() { "ext-alice" } else { "ext-impostor" };
        Reply::json(200, json!({"success": true, "user_id": id, "email": format!("{id}@example")}))
    })
    .await;
    let s = start(&login_flags(&up, &[])).await;
    assert_eq!(sign_in(&s, "alice", "pw").await.0, StatusCode::SEE_OTHER);
    let alice = user(&s, "alice").await.unwrap();
    let (status, page) = sign_in(&s, "alice", "pw").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("Username conflict with existing user. Please contact administrator."),
        "{page}"
    );
    assert_eq!(user(&s, "alice").await.unwrap(), alice, "the existing user is untouched");
    let dir = s.server.actors.directory().clone();
    let users = dir.ask(|reply| DirectoryMsg::ListUsers { reply }).await.unwrap();
    assert!(
        users.iter().all(|u| u.external_id.as_deref() != Some("ext-impostor")),
        "no second record"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_api_failures_are_generic_and_only_transient_ones_are_retried() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(
        &up,
        &["--http-api-max-retries", "3", "--http-api-retry-delay", "100ms"],
    ))
    .await;

    for name in ["declined", "unauthorized", "forbidden", "badjson", "nouser"] {
        let (status, page) = sign_in(&s, name, "pw").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(page.contains(INVALID), "{name}: the page names no reason");
        assert!(!page.contains("account locked"));
        assert_eq!(up.seen_for(name).len(), 1, "{name} is not retried");
        assert!(user(&s, name).await.is_none(), "{name}: no user created");
    }

    // 500: the first attempt and three retries, with growing waits.
    let (status, page) = sign_in(&s, "flaky", "pw").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains(INVALID));
    let at: Vec<Instant> = up.seen_for("flaky").iter().map(|s| s.at).collect();
    assert_eq!(at.len(), 4, "1 attempt + 3 retries");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Nominal waits 100, 200, 400 ms, each ±30 %: scheduling noise can only lengthen a gap,
    // so lower bounds and the first-versus-last comparison are safe on a busy machine.
    for (gap, least) in gaps.iter().zip([70, 140, 280]) {
        assert!(*gap >= Duration::from_millis(least), "{gaps:?}");
    }
    assert!(gaps[0] < gaps[2], "waits grow: {gaps:?}");

    // 503 twice, then success: signed in, and the user exists.
    assert_eq!(sign_in(&s, "recovers", "pw").await.0, StatusCode::SEE_OTHER);
    assert_eq!(up.seen_for("recovers").len(), 3);

    // 429 with Retry-After: 1 is waited out.
    assert_eq!(sign_in(&s, "ratelimited", "pw").await.0, StatusCode::SEE_OTHER);
    let at: Vec<Instant> = up.seen_for("ratelimited").iter().map(|s| s.at).collect();
    assert!(
        at[1] - at[0] >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        at[1] - at[0]
    );

    // An upstream slower than HTTP_API_TIMEOUT (2s): the whole call gives up in time.
    let t = Instant::now();
    let (status, page) = sign_in(&s, "slow", "pw").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains(INVALID));
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "bounded by the timeout: {:?}",
        t.elapsed()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_capped_at_the_maximum_delay() {
    let up = Upstream::start(|_: &Seen, earlier: &[Seen]| {
        if earlier.is_empty() {
            Reply::json(503, json!({})).header("retry-after", "3600")
        } else {
            Reply::json(200, json!({"success": true, "user_id": "ext-x"}))
        }
    })
    .await;
    let s = start(&login_flags(&up, &["--http-api-max-retry-delay", "300ms"])).await;
    assert_eq!(sign_in(&s, "x", "pw").await.0, StatusCode::SEE_OTHER);
    let at: Vec<Instant> = up.seen().iter().map(|s| s.at).collect();
    assert!(at[1] - at[0] < Duration::from_millis(1500), "{:?}", at[1] - at[0]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_auth_mode_sends_its_headers() {
    let ok = |_: &Seen, earlier: &[Seen]| {
        if earlier.is_empty() {
            Reply::json(503, json!({}))
        } else {
            Reply::json(200, json!({"success": true, "user_id": "ext-1"}))
        }
    };

    // none: no credentials at all.
    let up = Upstream::start(ok).await;
    let s = start(&login_flags(&up, &["--http-api-auth-mode", "none"])).await;
    assert_eq!(sign_in(&s, "u1", "pw").await.0, StatusCode::SEE_OTHER);
    for seen in up.seen() {
        assert_eq!(seen.header("x-api-secret"), None);
        assert_eq!(seen.header("x-signature"), None);
        assert_eq!(seen.header("content-type").as_deref(), Some("application/json"));
    }
    s.stop().await;

    // simple: the secret in the configured header.
    let up = Upstream::start(ok).await;
    let s = start(&login_flags(
        &up,
        &[
            "--http-api-auth-mode",
            "simple",
            "--http-api-auth-secret",
            "s3cret",
            "--http-api-auth-header",
            "X-Custom-Key",
        ],
    ))
    .await;
    assert_eq!(sign_in(&s, "u2", "pw").await.0, StatusCode::SEE_OTHER);
    for seen in up.seen() {
        assert_eq!(seen.header("x-custom-key").as_deref(), Some("s3cret"));
        assert_eq!(seen.header("x-signature"), None);
    }
    s.stop().await;

    // hmac: each attempt signed anew; the receiving side's verifier accepts both, and a replay
    // of either is refused.
    let up = Upstream::start(ok).await;
    let s = start(&login_flags(
        &up,
        &["--http-api-auth-mode", "hmac", "--http-api-auth-secret", "hmac-key"],
    ))
    .await;
    assert_eq!(sign_in(&s, "u3", "pw").await.0, StatusCode::SEE_OTHER);
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "a 503, then the retry");
    let verifier = Verifier::new("hmac-key");
    let now = authgate_actors::time::wall_clock_ms() / 1000;
    let check = |r: &Seen| verifier.verify(&signed(r, None), now);
    for r in &seen {
        assert_eq!(check(r), Ok(()), "signature verifies");
        let ts: u64 = r.header("x-timestamp").unwrap().parse().unwrap();
        assert!(ts.abs_diff(now) <= 5, "timestamp is the sending time");
        assert_eq!(r.header("x-signature").unwrap().len(), 64);
        assert!(
            r.header("x-signature")
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
    assert_ne!(seen[0].header("x-nonce"), seen[1].header("x-nonce"), "a fresh nonce per attempt");
    assert!(uuid::Uuid::parse_str(&seen[0].header("x-nonce").unwrap()).is_ok());
    assert!(check(&seen[0]).is_err(), "a replayed request is refused");
    let wrong = Verifier::new("other-key");
    let r = &seen[1];
    assert!(wrong.verify(&signed(r, Some("fresh")), now).is_err());
    s.stop().await;
}

/// The signed parts of a request the upstream saw (`nonce` overrides its nonce).
fn signed<'a>(r: &'a Seen, nonce: Option<&'a str>) -> SignedRequest<'a> {
    SignedRequest {
        signature: r.headers.get("x-signature").and_then(|v| v.to_str().ok()),
        timestamp: r.headers.get("x-timestamp").and_then(|v| v.to_str().ok()),
        nonce: nonce.or_else(|| r.headers.get("x-nonce").and_then(|v| v.to_str().ok())),
        method: &r.method,
        path_and_query: &r.target,
        body: &r.body,
    }
}

async fn health(s: &TestServer) -> Value {
    get_json(&s.url("/health"), None).await.1
}

/// Waits until `/health` satisfies `pred`.
async fn health_until(s: &TestServer, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(s).await;
        if pred(&h) {
            return h;
        }
        assert!(Instant::now() < deadline, "{what}: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_call_fails_that_call_cleanly_and_is_restarted() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(&up, &["--http-api-timeout", "8s"])).await;
    let h = health(&s).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(
        h["components"]["login_api"],
        json!({"state": "running", "restarts": 0, "provider": true})
    );

    // "sleepy" takes 3 s the first time; kill the provider while the call is in flight.
    let person = Person::new();
    let login = {
        let url = s.url("/login");
        let person_http = person.http.clone();
        let (_, page, _) = person.get(&url).await;
        let csrf = crate::common::csrf_of(&page);
        tokio::spawn(async move {
            let form = [
                ("username", "sleepy"),
                ("password", "pw"),
                ("csrf_token", csrf.as_str()),
                ("next", "/device"),
            ];
            let r = person_http.post(&url).form(&form).send().await.unwrap();
            (Instant::now(), r.status(), r.text().await.unwrap())
        })
    };
    while up.seen_for("sleepy").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let provider = s.server.actors.login_api().current().unwrap();
    let killed_at = Instant::now();
    provider.kill();
    let (answered_at, status, page) = login.await.unwrap();
    assert!(
        answered_at - killed_at < Duration::from_secs(1),
        "no hang: {:?}",
        answered_at - killed_at
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("The sign-in service is unavailable"), "{page}");

    let h = health_until(&s, "restarted", |h| h["components"]["login_api"]["state"] == "running").await;
    assert_eq!(h["components"]["login_api"]["restarts"], 1, "{h}");
    assert_eq!(h["status"], "healthy");
    let fresh = s.server.actors.login_api().current().unwrap();
    assert_ne!(fresh.get_id(), provider.get_id(), "a new incarnation");
    assert_eq!(sign_in(&s, "sleepy", "pw").await.0, StatusCode::SEE_OTHER, "the next login works");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_keeps_failing_is_reported_down_not_restarted_in_a_loop() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(&up, &[])).await;
    let mut last = None;
    for _ in 0..6 {
        // Wait for the next incarnation, then kill it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let p = loop {
            if let Ok(p) = s.server.actors.login_api().current()
                && Some(p.get_id()) != last
            {
                break p;
            }
            assert!(Instant::now() < deadline, "no new incarnation");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        last = Some(p.get_id());
        p.kill();
    }
    let h = health_until(&s, "down", |h| h["components"]["login_api"]["state"] == "down").await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["degraded"], json!(["login_api"]));
    assert_eq!(h["components"]["login_api"]["restarts"], 6);
    assert_eq!(h["components"]["directory"]["state"], "running");
    // Sign-ins that need the API fail cleanly; local ones still work.
    let (status, page) = sign_in(&s, "alice", "pw").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("The sign-in service is unavailable"));
    assert_eq!(sign_in(&s, "admin", ADMIN_PASSWORD).await.0, StatusCode::SEE_OTHER);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_holds_only_its_own_calls_and_the_excess_is_refused_at_once() {
    let up = Upstream::start(login_api).await;
    let flags = [
        "--http-api-max-concurrent",
        "1",
        "--http-api-timeout",
        "8s",
        "--http-api-max-retries",
        "0",
    ];
    let s = start(&login_flags(&up, &flags)).await;
    let slow = {
        let person = Person::new();
        let (_, page, _) = person.get(&s.url("/login")).await;
        let csrf = crate::common::csrf_of(&page);
        let url = s.url("/login");
        tokio::spawn(async move {
            let form = [
                ("username", "slow"),
                ("password", "pw"),
                ("csrf_token", csrf.as_str()),
                ("next", "/device"),
            ];
            person.http.post(&url).form(&form).send().await.unwrap().status()
        })
    };
    while up.seen_for("slow").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    let (status, page) = sign_in(&s, "alice", "pw").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("Too many sign-ins at once"), "{page}");
    assert!(t.elapsed() < Duration::from_secs(1), "refused at once");
    // Local sign-ins and OAuth requests are not held up by the slow call.
    let t = Instant::now();
    assert_eq!(sign_in(&s, "admin", ADMIN_PASSWORD).await.0, StatusCode::SEE_OTHER);
    s.device_code(&s.client_id).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(slow.await.unwrap(), StatusCode::SEE_OTHER, "the slow call still completes");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_settings_are_checked_at_start_up() {
    let cases: [(&[&str], &str); 3] = [
        (&["--auth-mode", "http_api"], "HTTP_API_URL is required when AUTH_MODE=http_api"),
        (
            &[
                "--token-provider-mode",
                "http_api",
                "--token-api-url",
                "http://127.0.0.1:9",
                "--token-api-auth-mode",
                "hmac",
            ],
            "TOKEN_API_AUTH_SECRET must be set",
        ),
        (
            &[
                "--auth-mode",
                "http_api",
                "--http-api-url",
                "http://127.0.0.1:9",
                "--http-api-auth-mode",
                "simple",
                "--http-api-auth-secret",
                "",
            ],
            "HTTP_API_AUTH_SECRET must be set",
        ),
    ];
    for (flags, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.redb").display().to_string();
        let mut args = vec!["authgate", "--server-addr", "127.0.0.1:0", "--database-path", &db];
        args.extend_from_slice(flags);
        let settings = authgate::config::Settings::try_from_args(args).unwrap();
        let err = authgate::server::Server::start(settings).await.err().expect("refused");
        assert!(err.to_string().contains(message), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}

/// A token service that mints `ext-<n>` tokens, says valid for those it minted, and fails to
/// mint while `refuse` is true.
struct TokenService {
    up: Upstream,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TokenService {
    async fn start() -> Self {
        let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = refuse.clone();
        let up = Upstream::start(move |req: &Seen, earlier: &[Seen]| match req.target.as_str() {
            "/api/generate" if r.load(std::sync::atomic::Ordering::SeqCst) => Reply::json(200, json!({"success": false, "message": "no"})),
            "/api/generate" => {
                let n = earlier.iter().filter(|s| s.target == "/api/generate").count() + 1;
                Reply::json(
                    200,
                    json!({"success": true, "access_token": format!("ext-{n}"), "token_type": "Bearer", "expires_in": 900, "claims": {"tier": "gold"}}),
                )
            }
            "/api/validate" => {
                let token = req.json()["token"].as_str().unwrap_or_default().to_owned();
                let valid = token.starts_with("ext-");
                Reply::json(200, json!({"valid": valid, "user_id": "u", "client_id": "c", "scopes": "read", "expires_at": 1, "claims": {}}))
            }
            _ => Reply::json(404, json!({})),
        })
        .await;
        Self { up, refuse }
    }

    fn flags(&self) -> Vec<String> {
        [
            "--token-provider-mode",
            "http_api",
            "--token-api-url",
            &self.up.url("/api"),
            "--token-api-auth-mode",
            "hmac",
            "--token-api-auth-secret",
            "token-key",
            "--enable-token-rotation",
            "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

async fn record_count(s: &TestServer) -> usize {
    let dir = s.server.actors.directory().clone();
    let users = dir.ask(|reply| DirectoryMsg::ListUsers { reply }).await.unwrap();
    let admin = users.into_iter().find(|u| u.username == "admin").unwrap();
    let token = s.server.actors.token().clone();
    let user_id = admin.id.clone();
    token
        .ask(|reply| authgate_actors::token::TokenMsg::ListForUser { user_id, reply })
        .await
        .unwrap()
        .len()
}

async fn refresh(s: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &s.client_id),
        ],
    )
    .await
}

async fn revoke(s: &TestServer, token: &str) {
    let (status, _) = post_form(&s.url("/oauth/revoke"), &[("token", token), ("client_id", &s.client_id)]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_mints_while_records_and_revocation_stay_local() {
    let svc = TokenService::start().await;
    let s = start(&svc.flags()).await;

    let tokens = s.tokens_for(&s.client_id).await;
    assert_eq!(tokens["access_token"], "ext-1");
    assert_eq!(tokens["expires_in"], 900);
    let generate = &svc.up.seen()[0];
    assert_eq!(generate.target, "/api/generate");
    let body = generate.json();
    assert_eq!(body["client_id"], s.client_id.as_str());
    assert_eq!(body["scopes"], "read write");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["user_id"].as_str().is_some_and(|u| !u.is_empty()));
    let verifier = Verifier::new("token-key");
    let now = authgate_actors::time::wall_clock_ms() / 1000;
    assert_eq!(generate.method, "POST");
    assert_eq!(verifier.verify(&signed(generate, None), now), Ok(()));

    // tokeninfo asks the service, and the local record.
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some("ext-1")).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["client_id"], s.client_id.as_str());
    assert!(
        svc.up
            .seen()
            .iter()
            .any(|r| r.target == "/api/validate" && r.json()["token"] == "ext-1")
    );
    // A token the service would call valid but that is not ours is refused.
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some("ext-999")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Refresh (rotating) mints through the service too.
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["access_token"], "ext-2");

    // Revoked here: invalid, whatever the service says.
    revoke(&s, "ext-2").await;
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some("ext-2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some("ext-1")).await;
    assert_eq!(status, StatusCode::OK, "revoking one access token leaves the other");

    // The service refuses to mint: server_error, no tokens, no records; the approval stays,
    // so the device gets its tokens once the service recovers.
    let before = record_count(&s).await;
    svc.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let dc = s.device_code(&s.client_id).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    assert_eq!(person.decide(&s, dc["user_code"].as_str().unwrap(), true).await.0, StatusCode::OK);
    let code = dc["device_code"].as_str().unwrap();
    let (status, body) = s.poll(&s.client_id, code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("server_error")),
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    assert_eq!(record_count(&s).await, before, "no records for a refused mint");
    svc.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = s.poll(&s.client_id, code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].as_str().unwrap().starts_with("ext-"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_token_provider_mode_between_runs_keeps_every_record() {
    let svc = TokenService::start().await;
    let s = start(&svc.flags()).await;
    let external = s.tokens_for(&s.client_id).await;
    let count = record_count(&s).await;
    assert_eq!(count, 2);
    let dir = s.stop().await;

    // Back to local: the external token's record still answers, its refresh token still works
    // (now minting a local JWT), and revocation still applies.
    let s = TestServer::start_in(dir, &["--enable-token-rotation", "true"]).await;
    assert_eq!(record_count(&s).await, count);
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(external["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, local) = refresh(&s, external["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{local}");
    assert_eq!(local["access_token"].as_str().unwrap().split('.').count(), 3, "a local JWT");
    let count = record_count(&s).await;
    assert_eq!(count, 4, "new access and refresh records beside the old ones");
    let dir = s.stop().await;

    // And to the service again: the local JWT still validates, the records are all there.
    let flags = svc.flags();
    let s = TestServer::start_in(dir, &flags.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(record_count(&s).await, count);
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(local["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, again) = refresh(&s, local["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(again["access_token"].as_str().unwrap().starts_with("ext-"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_requester_left_is_abandoned() {
    let up = Upstream::start(login_api).await;
    let s = start(&login_flags(&up, &["--http-api-max-concurrent", "1", "--http-api-timeout", "8s"])).await;
    let person = Person::new();
    let (_, page, _) = person.get(&s.url("/login")).await;
    let csrf = crate::common::csrf_of(&page);
    let url = s.url("/login");
    let gone = tokio::spawn(async move {
        let form = [
            ("username", "slow"),
            ("password", "pw"),
            ("csrf_token", csrf.as_str()),
            ("next", "/device"),
        ];
        let _ = person.http.post(&url).form(&form).send().await;
    });
    while up.seen_for("slow").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The browser gives up; the API call it started must not keep the only slot.
    gone.abort();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, page) = sign_in(&s, "alice", "pw").await;
        if status == StatusCode::SEE_OTHER {
            break;
        }
        assert!(page.contains("Too many sign-ins at once"), "{page}");
        assert!(Instant::now() < deadline, "the abandoned call still holds the slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
