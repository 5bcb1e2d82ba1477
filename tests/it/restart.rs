//! A restart on the same database keeps what was promised.

use std::time::Duration;

use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn a_restart_keeps_tokens_valid_pending_codes_pending_and_never_reseeds() {
    let s = TestServer::start(&[]).await;
    let client_id = s.client_id.clone();
    let tokens = s.tokens_for(&client_id).await;
    let pending = s.device_code(&client_id).await;
    let approved = s.device_code(&client_id).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    person.decide(&s, approved["user_code"].as_str().unwrap(), true).await;
    let dir = s.stop().await;

    // A different ADMIN_PASSWORD at restart changes nothing: seeding happens once.
    let s = TestServer::start_in(dir, &["--admin-password", "something-else-entirely"]).await;
    assert_eq!(s.client_id, client_id, "the seeded client is the same one");
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(tokens["access_token"].as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let (status, body) = s.poll(&client_id, pending["device_code"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    let (status, body) = s.poll(&client_id, approved["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "an approval survives a restart: {body}");
    let (status, _) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The old browser session survives too, and the original admin password still works.
    let (status, _, _) = person.get(&s.url("/device")).await;
    assert_eq!(status, StatusCode::OK, "browser sessions survive restarts");
    Person::new().login(&s, "admin", ADMIN_PASSWORD).await;

    // A redeemed code stays redeemed across a restart.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &[]).await;
    let (status, body) = s.poll(&client_id, approved["device_code"].as_str().unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    s.stop().await;
}
