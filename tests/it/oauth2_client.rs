//! A real third-party client, the `oauth2` crate's device flow, against the server.

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, ClientSecret, DeviceAuthorizationUrl, HttpRequest, HttpResponse, Scope, StandardDeviceAuthorizationResponse, TokenResponse,
    TokenUrl,
};
use reqwest::StatusCode;

use crate::common::*;

/// The `oauth2` crate's HTTP hook, carried by reqwest.
pub(crate) async fn send(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let req = reqwest::Request::try_from(req)?;
    let res = http.execute(req).await?;
    let mut out = http::Response::builder().status(res.status());
    for (k, v) in res.headers() {
        out = out.header(k, v);
    }
    let body = res.bytes().await?.to_vec();
    Ok(out.body(body).expect("response parts are valid"))
}

#[tokio::test]
async fn the_oauth2_crate_completes_the_device_flow() {
    let s = TestServer::start(&[]).await;
    let client = BasicClient::new(ClientId::new(s.client_id.clone()))
        .set_device_authorization_url(DeviceAuthorizationUrl::new(s.url("/oauth/device/code")).unwrap())
        .set_token_uri(TokenUrl::new(s.url("/oauth/token")).unwrap());
    let http = crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let call = |req: HttpRequest| send(http.clone(), req);

    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("read".into()))
        .request_async(&call)
        .await
        .expect("device code");
    assert_eq!(details.interval().as_secs(), 1);

    // The person approves on another "device" while the client polls.
    let user_code = details.user_code().secret().clone();
    let base = s.base.clone();
    let approver = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let person = Person::new();
        let (_, page, _) = person.get(&format!("{base}/login")).await;
        let csrf = csrf_of(&page);
        person
            .post(
                &format!("{base}/login"),
                &[
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("csrf_token", &csrf),
                    ("next", "/device"),
                ],
            )
            .await;
        let (_, page, _) = person.get(&format!("{base}/device")).await;
        let csrf = csrf_of(&page);
        person
            .post(
                &format!("{base}/device/verify"),
                &[("user_code", &user_code), ("csrf_token", &csrf)],
            )
            .await;
        person
            .post(
                &format!("{base}/device/approve"),
                &[("user_code", &user_code), ("csrf_token", &csrf), ("action", "approve")],
            )
            .await
    });

    let token = client
        .exchange_device_access_token(&details)
        .request_async(&call, tokio::time::sleep, Some(std::time::Duration::from_secs(60)))
        .await
        .expect("the client polls until it gets a token");
    assert_eq!(approver.await.unwrap().0, StatusCode::OK);
    assert!(token.refresh_token().is_some());
    assert_eq!(
        token.scopes().map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["read".to_string()])
    );
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(token.access_token().secret())).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    s.stop().await;
}

/// RFC 6749 §4.4 through the `oauth2` crate (HTTP Basic): a confidential client with the grant
/// gets a token for itself, with no refresh token; everyone else is refused; the token lives
/// and dies with its client.
#[tokio::test]
async fn the_oauth2_crate_gets_a_client_credentials_token() {
    let s = TestServer::start(&[]).await;
    let (bot, secret) = s.create_client("Build bot", true, Some(&["client_credentials"])).await;
    let secret = secret.unwrap();
    let client = BasicClient::new(ClientId::new(bot.clone()))
        .set_client_secret(ClientSecret::new(secret.clone()))
        .set_token_uri(TokenUrl::new(s.url("/oauth/token")).unwrap());
    let http = crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let call = |req: HttpRequest| send(http.clone(), req);
    let token = client
        .exchange_client_credentials()
        .add_scope(Scope::new("read".into()))
        .request_async(&call)
        .await
        .expect("a client credentials token");
    assert!(token.refresh_token().is_none(), "no refresh token for client credentials");
    assert_eq!(token.scopes().map(|s| s.len()), Some(1));
    let access = token.access_token().secret().clone();
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(&access)).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(
        (info["user_id"].as_str(), info["client_id"].as_str()),
        (Some(bot.as_str()), Some(bot.as_str()))
    );
    let (status, intro) = post_form(
        &s.url("/oauth/introspect"),
        &[("token", &access), ("client_id", &bot), ("client_secret", &secret)],
    )
    .await;
    assert_eq!(
        (status, intro["active"].as_bool(), intro["sub"].as_str()),
        (StatusCode::OK, Some(true), Some(bot.as_str()))
    );

    let cc = |client_id: String, secret: Option<String>, scope: &'static str| {
        let url = s.url("/oauth/token");
        async move {
            let mut form = vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", client_id),
                ("scope", scope.to_owned()),
            ];
            if let Some(secret) = secret {
                form.push(("client_secret", secret));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&url, &form).await
        }
    };
    // openid is about a person: refused.
    let (status, body) = cc(bot.clone(), Some(secret.clone()), "openid").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    // A public client, a client without the grant, a wrong secret.
    let (status, body) = cc(s.client_id.clone(), None, "read").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let (other, other_secret) = s.create_client("No grant", true, None).await;
    let (status, body) = cc(other, other_secret, "read").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    let (status, body) = cc(bot.clone(), Some("wrong".into()), "read").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));

    // Disabled, its tokens stop; enabled, they work again; revoked, they end.
    let admin = Person::new();
    admin.login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = admin.get(&s.url("/admin/clients")).await;
    let csrf = csrf_of(&page);
    admin
        .post(&s.url(&format!("/admin/clients/{bot}/disable")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        get_json(&s.url("/oauth/tokeninfo"), Some(&access)).await.0,
        StatusCode::UNAUTHORIZED
    );
    admin
        .post(&s.url(&format!("/admin/clients/{bot}/enable")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(get_json(&s.url("/oauth/tokeninfo"), Some(&access)).await.0, StatusCode::OK);
    post_form(
        &s.url("/oauth/revoke"),
        &[("token", &access), ("client_id", &bot), ("client_secret", &secret)],
    )
    .await;
    assert_eq!(
        get_json(&s.url("/oauth/tokeninfo"), Some(&access)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let token_again = |secret: String| {
        let (url, bot) = (s.url("/oauth/token"), bot.clone());
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", bot.as_str()),
                ("client_secret", secret.as_str()),
            ];
            post_form(&url, &form).await
        }
    };
    // With no scope asked for: the client's own scopes; no user named anywhere.
    let (status, fresh) = token_again(secret.clone()).await;
    assert_eq!((status, fresh["scope"].as_str()), (StatusCode::OK, Some("read write")), "{fresh}");
    assert!(fresh.get("refresh_token").is_none());
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), fresh["access_token"].as_str()).await;
    assert!(status == StatusCode::OK && info.get("username").is_none(), "no user: {info}");
    // Rotating the secret (the credential these tokens stand on) ends them.
    let (_, page, _) = admin
        .post(&s.url(&format!("/admin/clients/{bot}/rotate-secret")), &[("csrf_token", &csrf)])
        .await;
    assert!(page.contains("secret"), "{page}");
    assert_eq!(
        get_json(&s.url("/oauth/tokeninfo"), fresh["access_token"].as_str()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = token_again(secret.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old secret no longer works");
    // Taking the grant away (or making it public) is refused for a public client, and the
    // grant cannot be given to one.
    let spec = authgate_actors::directory::ClientSpec {
        grant_types: vec!["client_credentials".into()],
        ..authgate_actors::directory::ClientSpec::new("Public bot", false)
    };
    let now = authgate_actors::time::wall_clock_ms();
    let refused = s
        .server
        .actors
        .directory()
        .ask(|reply| authgate_actors::directory::DirectoryMsg::CreateClient { spec, now, reply })
        .await
        .unwrap();
    assert!(refused.is_err(), "a public client cannot have client credentials");
    s.stop().await;
}

/// Each client-credentials token is a record: past the per-client limit, 429 with Retry-After.
#[tokio::test]
async fn client_credentials_are_limited_per_client() {
    let s = TestServer::start(&["--client-credentials-rate-limit", "2"]).await;
    let (bot, secret) = s.create_client("Bot", true, Some(&["client_credentials"])).await;
    let secret = secret.unwrap();
    let http = crate::common::http().build().unwrap();
    let ask = || {
        http.post(s.url("/oauth/token"))
            .basic_auth(&bot, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    for _ in 0..2 {
        assert_eq!(ask().await.unwrap().status(), StatusCode::OK);
    }
    let r = ask().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    s.stop().await;
}
