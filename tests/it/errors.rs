//! Every OAuth error code the endpoints promise, each provoked the way a client would.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

fn err(r: &(StatusCode, Value)) -> (StatusCode, &str) {
    (r.0, r.1["error"].as_str().unwrap_or("<no error field>"))
}

#[tokio::test]
async fn token_endpoint_request_errors() {
    let s = TestServer::start(&[]).await;
    let token = s.url("/oauth/token");
    let cid = s.client_id.as_str();
    let bad = StatusCode::BAD_REQUEST;
    assert_eq!(
        err(&post_form(&token, &[("client_id", cid)]).await),
        (bad, "invalid_request"),
        "no grant_type"
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", DEVICE_GRANT), ("client_id", cid)]).await),
        (bad, "invalid_request"),
        "no device_code"
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", DEVICE_GRANT), ("device_code", "x")]).await),
        (bad, "invalid_request"),
        "no client"
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", "refresh_token"), ("client_id", cid)]).await),
        (bad, "invalid_request")
    );
    assert_eq!(
        err(&post_form(
            &token,
            &[
                ("grant_type", DEVICE_GRANT),
                ("grant_type", DEVICE_GRANT),
                ("device_code", "x"),
                ("client_id", cid)
            ]
        )
        .await),
        (bad, "invalid_request"),
        "repeated parameter"
    );
    // A supported grant without its code: invalid_request (the seeded client lacks the grant,
    // but the missing parameter is found first).
    assert_eq!(
        err(&post_form(&token, &[("grant_type", "authorization_code"), ("client_id", cid)]).await),
        (bad, "invalid_request")
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", "authorization_code"), ("code", "x"), ("client_id", cid)]).await),
        (bad, "unauthorized_client")
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", "implicit"), ("client_id", cid)]).await),
        (bad, "unsupported_grant_type")
    );
    assert_eq!(
        err(&post_form(&token, &[("grant_type", "password"), ("client_id", cid)]).await),
        (bad, "unsupported_grant_type")
    );

    // Not a form at all.
    let r = crate::common::http()
        .build()
        .unwrap()
        .post(&token)
        .json(&serde_json::json!({"grant_type": DEVICE_GRANT}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), bad);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].as_str().unwrap().contains("x-www-form-urlencoded"));

    // Too large a body.
    let huge = "a".repeat(100_000);
    assert_eq!(
        err(&post_form(&token, &[("grant_type", DEVICE_GRANT), ("device_code", &huge), ("client_id", cid)]).await),
        (bad, "invalid_request")
    );

    // Two client identities.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{cid}:"));
    let r = crate::common::http()
        .build()
        .unwrap()
        .post(&token)
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", DEVICE_GRANT), ("device_code", "x"), ("client_id", "someone-else")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), bad);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn client_errors() {
    let s = TestServer::start(&[]).await;
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", "no-such-client")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[("grant_type", DEVICE_GRANT), ("device_code", "x"), ("client_id", "no-such-client")],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

    // A client not allowed the device grant.
    let (refresh_only, _) = s.create_client("Refresh only", false, Some(&["refresh_token"])).await;
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", &refresh_only)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[("grant_type", DEVICE_GRANT), ("device_code", "x"), ("client_id", &refresh_only)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );

    // A scope the client may not ask for.
    let (status, body) = post_form(
        &s.url("/oauth/device/code"),
        &[("client_id", &s.client_id), ("scope", "read admin")],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", &s.client_id), ("scope", "read")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["device_code"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn device_grant_errors() {
    let s = TestServer::start(&[]).await;
    let bad = StatusCode::BAD_REQUEST;
    let (other_client, _) = s.create_client("Other", false, None).await;
    let dc = s.device_code(&s.client_id).await;
    let code = dc["device_code"].as_str().unwrap();

    assert_eq!(err(&s.poll(&s.client_id, "no-such-code").await), (bad, "invalid_grant"));
    assert_eq!(
        err(&s.poll(&other_client, code).await),
        (bad, "invalid_grant"),
        "another client's code"
    );

    // Polling too fast: the first poll and one quick repeat pass, the third is slow_down.
    assert_eq!(err(&s.poll(&s.client_id, code).await), (bad, "authorization_pending"));
    assert_eq!(err(&s.poll(&s.client_id, code).await), (bad, "authorization_pending"));
    assert_eq!(err(&s.poll(&s.client_id, code).await), (bad, "slow_down"));
    // After slow_down the interval is 1 s + 5 s: polling at the old pace is still too fast.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(err(&s.poll(&s.client_id, code).await), (bad, "slow_down"));
    s.stop().await;
}

#[tokio::test]
async fn expired_codes_and_tokens() {
    let s = TestServer::start(&["--device-code-expiration", "1s", "--jwt-expiration", "1s"]).await;
    let dc = s.device_code(&s.client_id).await;
    assert_eq!(dc["expires_in"], 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        err(&s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await),
        (StatusCode::BAD_REQUEST, "expired_token")
    );
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("expired"), "{page}");

    let dc = s.device_code(&s.client_id).await;
    person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    let (status, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = get_json(&s.url("/oauth/tokeninfo"), Some(tokens["access_token"].as_str().unwrap())).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    s.stop().await;
}

#[tokio::test]
async fn tokeninfo_and_refresh_refuse_bad_tokens() {
    let s = TestServer::start(&[]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let unauthorized = StatusCode::UNAUTHORIZED;

    let mut tampered = access.to_owned();
    let flip = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(tampered.len() - 1.., flip);
    assert_eq!(
        err(&get_json(&s.url("/oauth/tokeninfo"), Some(&tampered)).await),
        (unauthorized, "invalid_token")
    );
    assert_eq!(
        err(&get_json(&s.url("/oauth/tokeninfo"), Some("not-a-jwt")).await),
        (unauthorized, "invalid_token")
    );
    assert_eq!(
        err(&get_json(&s.url("/oauth/tokeninfo"), None).await),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    // A token signed by a different server is unknown here.
    let other = TestServer::start(&[]).await;
    let foreign = other.tokens_for(&other.client_id).await;
    assert_eq!(
        err(&get_json(&s.url("/oauth/tokeninfo"), Some(foreign["access_token"].as_str().unwrap())).await),
        (unauthorized, "invalid_token")
    );
    other.stop().await;

    // Revoking the access token alone.
    let (status, _) = post_form(&s.url("/oauth/revoke"), &[("token", access), ("client_id", &s.client_id)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        err(&get_json(&s.url("/oauth/tokeninfo"), Some(access)).await),
        (unauthorized, "invalid_token")
    );
    // RFC 7009: unknown tokens are fine; a missing token is not.
    assert_eq!(post_form(&s.url("/oauth/revoke"), &[("token", "garbage")]).await.0, StatusCode::OK);
    assert_eq!(
        err(&post_form(&s.url("/oauth/revoke"), &[]).await),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    assert_eq!(
        err(&post_form(&s.url("/oauth/revoke"), &[("token", "x"), ("client_id", "nobody")]).await),
        (unauthorized, "invalid_client")
    );

    // Another client's refresh token, and a made-up one.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (other_client, _) = s.create_client("Other", false, None).await;
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &other_client),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // ... whose revocation attempt changes nothing.
    assert_eq!(
        post_form(&s.url("/oauth/revoke"), &[("token", refresh), ("client_id", &other_client)])
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "another client cannot revoke this client's token");
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "made-up"),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    s.stop().await;
}

#[tokio::test]
async fn pages_refuse_bad_forms_with_friendly_errors() {
    let s = TestServer::start(&[]).await;
    let person = Person::new();
    // Sign-in without the form's CSRF token, and with a wrong password.
    let (status, page, _) = person
        .post(&s.url("/login"), &[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("id=\"error\""), "{page}");
    let (status, page, _) = person.try_login(&s, "admin", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Invalid username or password"));
    let (status, page2, _) = person.try_login(&s, "nobody", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        page2.contains("Invalid username or password"),
        "the same message whichever part is wrong"
    );

    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = person.get(&s.url("/device")).await;
    let csrf = csrf_of(&page);
    // The device forms need the session's CSRF token.
    let (status, _, _) = person.post(&s.url("/device/verify"), &[("user_code", "BCDF-GHJK")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = person
        .post(&s.url("/device/verify"), &[("user_code", "BCDF-GHJK"), ("csrf_token", "forged")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = person
        .post(&s.url("/device/approve"), &[("user_code", "BCDF-GHJK"), ("action", "approve")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Wrong codes get a clear message on the form.
    for typed in ["BCDF-GHJK", "not a code", "AAAA-AAAA", &"B".repeat(5000)] {
        let (status, page, _) = person
            .post(&s.url("/device/verify"), &[("user_code", typed), ("csrf_token", &csrf)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{typed}");
        assert!(page.contains("not valid"), "{page}");
    }
    // Not signed in: sent to sign in, never served.
    let stranger = Person::new();
    let (status, _, location) = stranger
        .post(&s.url("/device/approve"), &[("user_code", "BCDF-GHJK"), ("action", "approve")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().starts_with("/login"));
    // After sign-in, `next` only leads to local paths.
    for evil in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let p = Person::new();
        let (_, page, _) = p.get(&s.url("/login")).await;
        let csrf = csrf_of(&page);
        let (status, _, location) = p
            .post(
                &s.url("/login"),
                &[
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("csrf_token", &csrf),
                    ("next", evil),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/device"), "{evil}");
    }
    // A link to /logout only asks; signing out takes the form and its CSRF token.
    let (status, page, _) = person.get(&s.url("/logout")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("logout-submit"));
    let (status, _, _) = person.get(&s.url("/device")).await;
    assert_eq!(status, StatusCode::OK, "still signed in after GET /logout");
    let (status, _, _) = person.post(&s.url("/logout"), &[("csrf_token", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = person.post(&s.url("/logout"), &[("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = person.get(&s.url("/device")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Unknown paths and methods.
    let (status, _, _) = person.get(&s.url("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = person.get(&s.url("/oauth/token")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

#[tokio::test]
async fn a_user_added_later_can_approve() {
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    let dc = s.device_code(&s.client_id).await;
    let person = Person::new();
    person.login(&s, "alice", "alice-password").await;
    let (status, _) = person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK);
    let (status, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, info) = get_json(&s.url("/oauth/tokeninfo"), Some(tokens["access_token"].as_str().unwrap())).await;
    assert_eq!(info["username"], "alice");
    s.stop().await;
}
