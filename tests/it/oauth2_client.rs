//! A real third-party client, the `oauth2` crate's device flow, against the server.

use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, DeviceAuthorizationUrl, HttpRequest, HttpResponse, Scope, StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;

use crate::common::*;

/// The `oauth2` crate's HTTP hook, carried by reqwest.
async fn send(http: reqwest::Client, req: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
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
