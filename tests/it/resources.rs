//! RFC 8707 resource indicators: a `resource` on the device, token and refresh requests (and
//! client credentials), checked against the client's list, becomes the access token's `aud`;
//! a refresh may narrow it, never widen it.

use authgate_actors::directory::{ClientSpec, DirectoryMsg};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const API: &str = "https://api.example/";
const FILES: &str = "https://files.example/v1";

/// The claims of a JWT, unchecked (the server's own checks are tested elsewhere).
fn claims(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(jwt).unwrap()
}

async fn client_with_resources(s: &TestServer, name: &str, confidential: bool, grants: &[&str]) -> (String, Option<String>) {
    let spec = ClientSpec {
        resources: vec![API.into(), FILES.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        ..ClientSpec::new(name, confidential)
    };
    let now = authgate_actors::time::wall_clock_ms();
    let (c, secret) = s
        .server
        .actors
        .directory()
        .ask(|reply| DirectoryMsg::CreateClient { spec, now, reply })
        .await
        .unwrap()
        .unwrap();
    (c.client_id, secret)
}

/// A device code for `client` naming `resources`, approved by the admin: the code's JSON.
async fn approved_code(s: &TestServer, client: &str, resources: &[&str]) -> Value {
    let mut form = vec![("client_id", client)];
    form.extend(resources.iter().map(|r| ("resource", *r)));
    let (status, dc) = post_form(&s.url("/oauth/device/code"), &form).await;
    assert_eq!(status, StatusCode::OK, "{dc}");
    let person = Person::new();
    person.login(s, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    dc
}

async fn token_form(s: &TestServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    post_form(&s.url("/oauth/token"), form).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_becomes_the_audience_and_a_refresh_narrows_but_never_widens() {
    let s = TestServer::start(&[]).await;
    let (client, _) = client_with_resources(&s, "Resource app", false, &["device_code", "refresh_token"]).await;

    // Refused: not on the list, not a URI, with a fragment, and any resource for a client
    // without a list.
    for (who, bad) in [
        (client.as_str(), "https://other.example/"),
        (client.as_str(), "not a uri"),
        (client.as_str(), "https://api.example/#frag"),
        (s.client_id.as_str(), API),
    ] {
        let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", who), ("resource", bad)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_target")),
            "{bad}"
        );
    }

    // Both resources asked for; the token request picks one; one not asked for is refused
    // and leaves the code redeemable.
    let dc = approved_code(&s, &client, &[API, FILES]).await;
    let code = dc["device_code"].as_str().unwrap();
    let poll = |resource: &'static str| {
        let (client, code) = (client.clone(), code.to_owned());
        let s = &s;
        async move {
            token_form(
                s,
                &[
                    ("grant_type", DEVICE_GRANT),
                    ("device_code", &code),
                    ("client_id", &client),
                    ("resource", resource),
                ],
            )
            .await
        }
    };
    let (status, body) = poll("https://other.example/").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target")),
        "{body}"
    );
    let (status, tokens) = poll(FILES).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["aud"], FILES);
    let (status, intro) = post_form(&s.url("/oauth/introspect"), &[("token", access), ("client_id", &client)]).await;
    assert_eq!((status, intro["aud"].as_str()), (StatusCode::OK, Some(FILES)), "{intro}");
    // tokeninfo says it too, so a resource server checking tokens there can hold to it.
    let (status, info) = get_json(&s.url("/oauth/tokeninfo"), Some(access)).await;
    assert_eq!((status, info["aud"].as_str()), (StatusCode::OK, Some(FILES)), "{info}");

    // A resource the device did not ask for is refused at once, before anyone approves.
    let (status, pending) = post_form(&s.url("/oauth/device/code"), &[("client_id", &client), ("resource", API)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = token_form(
        &s,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", pending["device_code"].as_str().unwrap()),
            ("client_id", &client),
            ("resource", FILES),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target")),
        "{body}"
    );

    // Refresh: one of the granted ones, all of them, never another.
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let refresh = |resource: Option<&'static str>| {
        let (client, refresh_token) = (client.clone(), refresh_token.to_owned());
        let s = &s;
        async move {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("client_id", client.as_str()),
            ];
            form.extend(resource.map(|r| ("resource", r)));
            token_form(s, &form).await
        }
    };
    let (status, narrowed) = refresh(Some(API)).await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    assert_eq!(claims(narrowed["access_token"].as_str().unwrap())["aud"], API);
    let (status, all) = refresh(None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        claims(all["access_token"].as_str().unwrap())["aud"],
        serde_json::json!([API, FILES])
    );
    let (status, body) = refresh(Some("https://other.example/")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target")),
        "{body}"
    );

    // Without a resource, nothing changes: the audience is the client.
    let dc = approved_code(&s, &client, &[]).await;
    let (status, plain) = s.poll(&client, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(claims(plain["access_token"].as_str().unwrap())["aud"], client.as_str());
    // A refresh of an authorization granted no resource cannot ask for one.
    let (status, body) = token_form(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", plain["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
            ("resource", API),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_name_their_resource_from_the_clients_list() {
    let s = TestServer::start(&[]).await;
    let (bot, secret) = client_with_resources(&s, "Bot", true, &["client_credentials"]).await;
    let secret = secret.unwrap();
    let ask = |resource: &'static str| {
        let (bot, secret) = (bot.clone(), secret.clone());
        let s = &s;
        async move {
            token_form(
                s,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &bot),
                    ("client_secret", &secret),
                    ("resource", resource),
                ],
            )
            .await
        }
    };
    let (status, tokens) = ask(API).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(claims(tokens["access_token"].as_str().unwrap())["aud"], API);
    let (status, body) = ask("https://other.example/").await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
    s.stop().await;
}
