//! `GET /metrics`, read by a Prometheus text parser while a device flow runs.

use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;

use crate::common::*;

const TOKEN: &str = "metrics-token-for-the-test-0123456789";

async fn scrape(s: &TestServer) -> Scrape {
    let r = http()
        .build()
        .unwrap()
        .get(s.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn counters_move_as_a_flow_runs() {
    let s = TestServer::start(&["--metrics-token", TOKEN]).await;
    // Without the token: 401 with a Bearer challenge.
    let r = http().build().unwrap().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));

    let before = scrape(&s).await;
    let dc = s.device_code(&s.client_id).await;
    let device_code = dc["device_code"].as_str().unwrap();
    // Another device polls: the first poll, one early poll the interval rules forgive, then
    // one too fast (which adds 5 s to its interval, so the flow below uses the first code).
    let other = s.device_code(&s.client_id).await;
    let other = other["device_code"].as_str().unwrap();
    assert_eq!(s.poll(&s.client_id, other).await.1["error"], "authorization_pending");
    assert_eq!(s.poll(&s.client_id, other).await.1["error"], "authorization_pending");
    assert_eq!(s.poll(&s.client_id, other).await.1["error"], "slow_down");
    let mid = scrape(&s).await;
    assert_eq!(
        value(&mid, "authgate_device_codes_pending", &[]),
        value(&before, "authgate_device_codes_pending", &[]) + 2.0
    );
    let person = Person::new();
    let (status, _, _) = person.try_login(&s, "admin", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    let (status, tokens) = s.poll(&s.client_id, device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, _) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let after = scrape(&s).await;

    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    assert_eq!(moved("authgate_device_codes_total", &[("outcome", "issued")]), 2.0);
    assert_eq!(moved("authgate_device_codes_total", &[("outcome", "approved")]), 1.0);
    assert_eq!(moved("authgate_device_polls_total", &[("outcome", "pending")]), 2.0);
    assert_eq!(moved("authgate_device_polls_total", &[("outcome", "slow_down")]), 1.0);
    assert_eq!(moved("authgate_device_polls_total", &[("outcome", "success")]), 1.0);
    assert_eq!(moved("authgate_tokens_total", &[("outcome", "issued")]), 1.0);
    assert_eq!(moved("authgate_tokens_total", &[("outcome", "refreshed")]), 1.0);
    assert_eq!(moved("authgate_logins_total", &[("outcome", "failure")]), 1.0);
    assert_eq!(moved("authgate_logins_total", &[("outcome", "success")]), 1.0);
    assert_eq!(
        value(&after, "authgate_device_codes_pending", &[]),
        value(&before, "authgate_device_codes_pending", &[]) + 1.0
    );
    // HTTP requests by route pattern and status; latency histograms per route.
    assert!(
        moved(
            "authgate_http_requests_total",
            &[("route", "/oauth/token"), ("method", "POST"), ("status", "400")]
        ) >= 2.0
    );
    assert!(
        moved(
            "authgate_http_requests_total",
            &[("route", "/oauth/token"), ("method", "POST"), ("status", "200")]
        ) >= 2.0
    );
    assert!(moved("authgate_http_request_duration_seconds", &[("route", "/oauth/device/code")]) >= 1.0);
    // Database commits were timed and sized.
    assert!(moved("authgate_db_commit_duration_seconds", &[]) >= 3.0);
    assert!(moved("authgate_db_commit_batch_size", &[]) >= 3.0);
    // Every supervised actor is listed, running, with its restarts and mailbox depth.
    for actor in ["device", "token", "session", "directory", "audit"] {
        assert_eq!(value(&after, "authgate_actor_up", &[("actor", actor)]), 1.0, "{actor}");
        assert!(
            after
                .samples
                .iter()
                .any(|x| x.metric == "authgate_actor_restarts_total" && x.labels.get("actor") == Some(actor))
        );
        assert!(
            after
                .samples
                .iter()
                .any(|x| x.metric == "authgate_actor_mailbox_depth" && x.labels.get("actor") == Some(actor))
        );
    }
    assert_eq!(value(&after, "authgate_build_info", &[("signing_alg", "HS256")]), 1.0);
    s.stop().await;
}
