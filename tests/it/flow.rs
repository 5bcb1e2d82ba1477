//! The device flow end to end over HTTP: code, sign-in with cookies and CSRF, approval,
//! polling, tokens, token info, refresh, revocation.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn health_reports_the_database() {
    let s = TestServer::start(&[]).await;
    let (status, body) = get_json(&s.url("/health"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["database"], "connected");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    s.stop().await;
}

#[tokio::test]
async fn a_device_gets_tokens_after_a_person_approves_it() {
    let s = TestServer::start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let user_code = dc["user_code"].as_str().unwrap();
    let device_code = dc["device_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code.chars().filter(|c| *c != '-').all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c)));
    assert!(device_code.len() >= 22, "at least 128 bits");
    assert_eq!(dc["verification_uri"], "http://localhost:8080/device");
    assert_eq!(
        dc["verification_uri_complete"],
        format!("http://localhost:8080/device?user_code={user_code}")
    );
    assert_eq!(dc["expires_in"], 1800);
    assert_eq!(dc["interval"], 1);

    let (status, body) = s.poll(&s.client_id, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );

    // The person opens verification_uri_complete, is sent to sign in, and comes back.
    let person = Person::new();
    let (status, _, location) = person.get(&s.url(&format!("/device?user_code={user_code}"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = location.unwrap();
    assert!(location.starts_with("/login?next="), "{location}");
    let (_, login_page, _) = person.get(&s.url(&location)).await;
    let csrf = csrf_of(&login_page);
    let next = "/device?user_code=".to_owned() + user_code;
    assert!(login_page.contains(user_code), "the sign-in form carries where to go next");
    let (status, _, location) = person
        .post(
            &s.url("/login"),
            &[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("csrf_token", &csrf),
                ("next", &next),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some(next.as_str()));
    let (status, page, _) = person.get(&s.url(&next)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(user_code), "the code form is prefilled");

    // Lower case and without the dash is the same code.
    let typed = user_code.replace('-', "").to_lowercase();
    let csrf = csrf_of(&page);
    let (status, page, _) = person
        .post(&s.url("/device/verify"), &[("user_code", &typed), ("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("AuthGate CLI") && page.contains("read") && page.contains("write"),
        "{page}"
    );
    let (status, page, _) = person
        .post(
            &s.url("/device/approve"),
            &[("user_code", &typed), ("csrf_token", &csrf), ("action", "approve")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("AuthGate CLI"), "success page names the client");
    assert!(page.contains("result-title"));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, tokens) = s.poll(&s.client_id, device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "read write");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // The code is spent.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, body) = s.poll(&s.client_id, device_code).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    // Token info, by header and by query.
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(access)).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["active"], true);
    assert_eq!(info["username"], "admin");
    assert_eq!(info["client_id"], s.client_id.as_str());
    assert_eq!(info["scope"], "read write");
    assert!(info["exp"].as_u64().unwrap() > info["iat"].as_u64().unwrap());
    let (status, _) = get_json(&s.url(&format!("/oauth/tokeninfo?access_token={access}")), None).await;
    assert_eq!(status, StatusCode::OK);

    // The JWT carries the documented claims.
    let payload = access.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    for claim in ["iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["iss"], "http://localhost:8080");
    assert_eq!(claims["sub"], info["user_id"]);

    // Refresh (fixed mode): a new access token, the same refresh token keeps working.
    let (status, refreshed) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(refreshed.get("refresh_token").is_none());
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    let (status, narrowed) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &s.client_id),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(narrowed["scope"], "read");
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &s.client_id),
            ("scope", "read admin"),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));

    // Revoking the refresh token ends the authorization: its access tokens die too.
    let (status, _) = post_form(&s.url("/oauth/revoke"), &[("token", refresh), ("token_type_hint", "refresh_token")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get_json(&s.url("/oauth/tokeninfo"), Some(access)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(refreshed["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    s.stop().await;
}

#[tokio::test]
async fn a_denied_device_gets_access_denied() {
    let s = TestServer::start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(&s, dc["user_code"].as_str().unwrap(), false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("result-title") && page.to_lowercase().contains("denied"), "{page}");
    let (status, body) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("access_denied")));
    // A decided code cannot be entered again.
    let (status, page) = person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("already been used"), "{page}");
    s.stop().await;
}

#[tokio::test]
async fn an_approved_code_redeems_exactly_once_under_concurrent_polls() {
    let s = TestServer::start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    person.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    let device_code = dc["device_code"].as_str().unwrap().to_owned();
    let polls: Vec<_> = (0..32)
        .map(|_| {
            let url = s.url("/oauth/token");
            let (cid, code) = (s.client_id.clone(), device_code.clone());
            tokio::spawn(async move { post_form(&url, &[("grant_type", DEVICE_GRANT), ("device_code", &code), ("client_id", &cid)]).await })
        })
        .collect();
    let mut successes = 0;
    for p in polls {
        let (status, body) = p.await.unwrap();
        if status == StatusCode::OK {
            successes += 1;
        } else {
            let e = body["error"].as_str().unwrap();
            assert!(e == "invalid_grant" || e == "slow_down", "unexpected {e}");
        }
    }
    assert_eq!(successes, 1);
    s.stop().await;
}

#[tokio::test]
async fn rotation_issues_new_pairs_and_reuse_revokes_the_family() {
    let s = TestServer::start(&["--enable-token-rotation", "true"]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String| {
        let url = s.url("/oauth/token");
        let cid = s.client_id.clone();
        async move {
            post_form(
                &url,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", &cid)],
            )
            .await
        }
    };
    let (status, second) = refresh(r1.clone()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let a2 = second["access_token"].as_str().unwrap().to_owned();
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(&a2)).await;
    assert_eq!(status, StatusCode::OK);

    // The retired token comes back: treat it as stolen and end the authorization.
    let (status, body) = refresh(r1).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, body) = refresh(r2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "the newest refresh token is revoked too"
    );
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(&a2)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), Some(tokens["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn without_refresh_tokens_only_an_access_token_is_issued() {
    let s = TestServer::start(&["--enable-refresh-tokens", "false"]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    s.stop().await;
}

#[tokio::test]
async fn confidential_clients_authenticate_with_basic_or_body_and_public_clients_with_empty_basic() {
    let s = TestServer::start(&[]).await;
    let (id, secret) = s.create_client("Build bot", true, None).await;
    let secret = secret.unwrap();
    let http = crate::common::http().build().unwrap();
    // HTTP Basic (RFC 6749 §2.3.1).
    let r = http
        .post(s.url("/oauth/device/code"))
        .basic_auth(&id, Some(&secret))
        .form(&[("scope", "read")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let dc: serde_json::Value = r.json().await.unwrap();
    // Secret in the body.
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", dc["device_code"].as_str().unwrap()),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    // Wrong or missing secret.
    let r = http
        .post(s.url("/oauth/device/code"))
        .basic_auth(&id, Some("wrong"))
        .form(&[("scope", "read")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", &id)]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // A public client as Go's x/oauth2 sends it: Basic with an empty password.
    let r = http
        .post(s.url("/oauth/device/code"))
        .basic_auth(&s.client_id, Some(""))
        .form(&[("scope", "read")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}
