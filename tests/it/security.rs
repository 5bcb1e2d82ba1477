//! Abuse limits, overload shedding and security headers, each tried the way an attacker or a
//! flood would.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, DEVICE_GRANT, Person, TestServer, csrf_of, post_form};

async fn start(flags: &[&str]) -> TestServer {
    TestServer::start(flags).await
}

/// POSTs `/oauth/device/code` with extra headers; returns status, Retry-After and body.
async fn device_code_from(s: &TestServer, headers: &[(&str, &str)]) -> (StatusCode, Option<String>, Value) {
    let mut req = crate::common::http()
        .build()
        .unwrap()
        .post(s.url("/oauth/device/code"))
        .form(&[("client_id", s.client_id.as_str())]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_requests_are_limited_per_address() {
    let s = start(&["--device-code-rate-limit", "3"]).await;
    for _ in 0..3 {
        assert_eq!(device_code_from(&s, &[]).await.0, StatusCode::OK);
    }
    let (status, retry, body) = device_code_from(&s, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(body["error"], "temporarily_unavailable");
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    let (status, _, _) = device_code_from(&s, &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let s = start(&["--device-code-rate-limit", "2", "--trusted-proxies", "127.0.0.0/8"]).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(device_code_from(&s, &from("198.51.100.1")).await.0, StatusCode::OK);
    assert_eq!(device_code_from(&s, &from("198.51.100.1")).await.0, StatusCode::OK);
    assert_eq!(device_code_from(&s, &from("198.51.100.1")).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy has its own budget, and a client cannot prepend
    // a fake hop: the right-most untrusted address counts.
    assert_eq!(device_code_from(&s, &from("198.51.100.2")).await.0, StatusCode::OK);
    let (status, _, _) = device_code_from(&s, &[("x-forwarded-for", "203.0.113.50, 198.51.100.1")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = device_code_from(&s, &[("forwarded", "for=198.51.100.3;proto=https")]).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_too_fast_gets_slow_down_never_429_and_a_go_style_double_poll_passes() {
    let s = start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let code = dc["device_code"].as_str().unwrap();
    // golang.org/x/oauth2 sends each poll twice while it detects the auth style.
    for _ in 0..2 {
        let (status, body) = s.poll(&s.client_id, code).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("authorization_pending"))
        );
    }
    for _ in 0..20 {
        let (status, body) = s.poll(&s.client_id, code).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("slow_down")),
            "never 429"
        );
    }
    s.stop().await;
}

/// Submits `code` on the device page; returns status, Retry-After and the page.
async fn guess_with(s: &TestServer, p: &Person, code: &str) -> (StatusCode, Option<String>, String) {
    let (_, page, _) = p.get(&s.url("/device")).await;
    let csrf = csrf_of(&page);
    let r = p
        .http
        .post(s.url("/device/verify"))
        .form(&[("user_code", code), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_user_codes_lock_the_session_then_the_address() {
    let s = start(&["--user-code-failure-limit", "3"]).await;
    let dc = s.device_code(&s.client_id).await;
    let real = dc["user_code"].as_str().unwrap().to_owned();
    let a = Person::new();
    a.login(&s, "admin", ADMIN_PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(guess_with(&s, &a, "BCDF-GHJK").await.0, StatusCode::BAD_REQUEST);
    }
    let (status, retry, page) = guess_with(&s, &a, "BCDF-GHJK").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("Too many wrong codes"));
    assert!(retry.is_some());
    // Locked: even the right code waits, and nothing about it is revealed.
    let (_, page, _) = a.get(&s.url("/device")).await;
    let csrf = csrf_of(&page);
    let (status, page, _) = a
        .post(&s.url("/device/verify"), &[("user_code", &real), ("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!page.contains("id=\"approve\""));
    // A fresh session from the same address gets the rest of the address's budget (6), then
    // is locked too.
    let b = Person::new();
    b.login(&s, "admin", ADMIN_PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(guess_with(&s, &b, "BCDF-GHJL").await.0, StatusCode::BAD_REQUEST);
    }
    assert_eq!(guess_with(&s, &b, "BCDF-GHJL").await.0, StatusCode::TOO_MANY_REQUESTS);
    let c = Person::new();
    c.login(&s, "admin", ADMIN_PASSWORD).await;
    assert_eq!(
        guess_with(&s, &c, "BCDF-GHJM").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is locked"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_user_codes_from_everyone_together_pause_code_entry() {
    let s = start(&["--user-code-global-failure-limit", "4"]).await;
    let p = Person::new();
    p.login(&s, "admin", ADMIN_PASSWORD).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (_, page, _) = p.get(&s.url("/device")).await;
        let csrf = csrf_of(&page);
        statuses.push(
            p.post(&s.url("/device/verify"), &[("user_code", "ZZZZ-ZZZZ"), ("csrf_token", &csrf)])
                .await
                .0,
        );
    }
    assert_eq!(&statuses[..4], [StatusCode::BAD_REQUEST; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}

async fn try_as(s: &TestServer, user: &str, password: &str) -> (StatusCode, String) {
    let (status, page, _) = Person::new().try_login(s, user, password).await;
    (status, page)
}

/// The time of one failed sign-in as `user` (the form fetched beforehand).
async fn failing_sign_in_time(s: &TestServer, user: &str) -> Duration {
    let p = Person::new();
    let (_, page, _) = p.get(&s.url("/login")).await;
    let csrf = csrf_of(&page);
    let t = Instant::now();
    let (status, _, _) = p
        .post(
            &s.url("/login"),
            &[("username", user), ("password", "wrong-password"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_throttled_per_username_and_address_and_say_nothing_about_either() {
    let server = start(&["--login-failure-limit", "3"]).await;
    let s = &server;
    for user in ["admin", "ghost"] {
        for _ in 0..3 {
            let (status, page) = try_as(s, user, "wrong-password").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(page.contains("Invalid username or password"));
        }
        let (status, page) = try_as(s, user, "wrong-password").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{user}");
        assert!(
            page.contains("Too many failed sign-ins"),
            "{user}: the same page whether the user exists or not"
        );
    }
    // Locked means locked: the right password waits too.
    assert_eq!(try_as(s, "admin", ADMIN_PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);
    // The address: 4 x 3 = 12 failures in all lock it for every name.
    for user in ["u1", "u2"] {
        for _ in 0..3 {
            assert_eq!(try_as(s, user, "x").await.0, StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(try_as(s, "u3", "x").await.0, StatusCode::TOO_MANY_REQUESTS, "the address is locked");
    server.stop().await;

    // Failing for a name that exists costs as long as for one that does not (a dummy hash is
    // checked), so timing tells nothing: the two compared as a ratio in one run.
    let s = start(&[]).await;
    s.create_user("alice", "alice-password").await;
    // Alternating, so that whatever else the machine does slows both alike; medians of nine.
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        known.push(failing_sign_in_time(&s, "alice").await);
        unknown.push(failing_sign_in_time(&s, "nobody-by-this-name").await);
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[4], unknown[4]);
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "known {known:?} vs unknown {unknown:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_slow_down_or_503_and_the_server_recovers_at_once() {
    let s = start(&["--max-inflight", "2"]).await;
    let dc = s.device_code(&s.client_id).await;
    let code = dc["device_code"].as_str().unwrap().to_owned();
    // Sign-ins hold their slot for an argon2 check each; polls arrive meanwhile. Each person
    // fetched the sign-in form (and its CSRF cookie) beforehand, one at a time.
    let mut people = Vec::new();
    for _ in 0..12 {
        let p = Person::new();
        let (_, page, _) = p.get(&s.url("/login")).await;
        people.push((p, csrf_of(&page)));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (login, token, client, code) = (s.url("/login"), s.url("/oauth/token"), s.client_id.clone(), code.clone());
        let person = (i % 2 == 0).then(|| people.pop()).flatten();
        tasks.spawn(async move {
            if let Some((p, csrf)) = person {
                let r = p
                    .http
                    .post(login)
                    .form(&[("username", "admin"), ("password", "wrong"), ("csrf_token", csrf.as_str())])
                    .send()
                    .await
                    .unwrap();
                ("page", r.status(), r.headers().contains_key("retry-after"), Value::Null)
            } else {
                let r = crate::common::http()
                    .build()
                    .unwrap()
                    .post(token)
                    .form(&[
                        ("grant_type", DEVICE_GRANT),
                        ("device_code", code.as_str()),
                        ("client_id", client.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                let (status, retry) = (r.status(), r.headers().contains_key("retry-after"));
                ("poll", status, retry, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        });
    }
    let mut shed = 0;
    while let Some(r) = tasks.join_next().await {
        let (kind, status, retry, body) = r.unwrap();
        match kind {
            "poll" => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "a poll is never refused otherwise: {body}");
                let e = body["error"].as_str().unwrap();
                assert!(e == "authorization_pending" || e == "slow_down", "{e}");
            }
            _ => {
                assert!(
                    status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{status}"
                );
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(retry, "503 carries Retry-After");
                    shed += 1;
                }
            }
        }
    }
    assert!(shed > 0, "with 2 slots, some of 12 concurrent sign-ins were shed");
    // Load gone: served at once.
    assert_eq!(Person::new().get(&s.url("/login")).await.0, StatusCode::OK);
    assert_eq!(
        post_form(&s.url("/oauth/device/code"), &[("client_id", &s.client_id)]).await.0,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let s = start(&[]).await;
    let http = crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in [
        "/login",
        "/health",
        "/oauth/tokeninfo",
        "/nowhere",
        "/assets/style.css",
        "/device",
        "/admin/users",
    ] {
        let r = http.get(s.url(path)).send().await.unwrap();
        let h = r.headers();
        let csp = h.get("content-security-policy").expect(path).to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over http");
    }
    let page = Person::new().get(&s.url("/login")).await.1;
    assert!(!page.contains("<script"), "no script at all, inline or not");
    assert!(!page.contains("style=\""), "no inline styles");
    s.stop().await;

    let s = start(&["--base-url", "https://auth.example.com"]).await;
    let r = http.get(s.url("/login")).send().await.unwrap();
    assert!(r.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    s.stop().await;
}
