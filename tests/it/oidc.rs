//! OpenID Connect on the device grant, checked by a real OIDC client library (the
//! `openidconnect` crate): the `id_token` verifies by the published JWKS (signature, issuer,
//! audience, expiry, `at_hash`), carries who signed in and when, the `offline_access` rules
//! decide the refresh token, and `/oauth/userinfo` answers by scope.

use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{AccessToken, AccessTokenHash, ClientId, IssuerUrl, Nonce};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// The issuer the test servers use (BASE_URL's default).
const ISSUER: &str = "http://localhost:8080";

/// A device flow for `scope` approved by the admin: the token response.
async fn tokens_with_scope(s: &TestServer, scope: &str) -> Value {
    tokens_for_client(s, &s.client_id, scope).await
}

async fn tokens_for_client(s: &TestServer, client_id: &str, scope: &str) -> Value {
    let (status, dc) = post_form(&s.url("/oauth/device/code"), &[("client_id", client_id), ("scope", scope)]).await;
    assert_eq!(status, StatusCode::OK, "{dc}");
    let person = Person::new();
    person.login(s, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, body) = s.poll(client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn jwks(s: &TestServer) -> CoreJsonWebKeySet {
    let r = http().build().unwrap().get(s.url("/.well-known/jwks.json")).send().await.unwrap();
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Verifies `tokens`' id_token as a public client would, and answers its claims as JSON
/// (after checking `at_hash` against the access token).
pub(crate) async fn verified(s: &TestServer, tokens: &Value, alg: CoreJwsSigningAlgorithm) -> Value {
    let id_token: CoreIdToken = tokens["id_token"].as_str().expect("an id_token").parse().unwrap();
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(s.client_id.clone()),
        IssuerUrl::new(ISSUER.into()).unwrap(),
        jwks(s).await,
    )
    .set_allowed_algs([alg.clone()]);
    let claims = id_token
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .expect("the id_token verifies");
    let access = AccessToken::new(tokens["access_token"].as_str().unwrap().to_owned());
    let key = id_token.signing_key(&verifier).unwrap();
    let expected = AccessTokenHash::from_token(&access, &alg, key).unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected), "at_hash matches the access token");
    assert_eq!(id_token.signing_alg().unwrap(), &alg);
    serde_json::to_value(claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_device_flow_gets_an_id_token_a_real_client_verifies_and_userinfo() {
    // HS256 access tokens (the default): id_tokens are signed with a generated ES256 key.
    let s = TestServer::start(&[]).await;
    let tokens = tokens_with_scope(&s, "openid profile email offline_access").await;
    assert!(tokens["refresh_token"].is_string(), "offline_access asked for: {tokens}");
    let claims = verified(&s, &tokens, CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert_eq!(claims["aud"], serde_json::json!([s.client_id]), "{claims}");
    assert_eq!(claims["preferred_username"], "admin");
    let sub = claims["sub"].as_str().unwrap().to_owned();
    let auth_time = claims["auth_time"].as_i64().expect("auth_time");
    let iat = claims["iat"].as_i64().unwrap();
    assert!(auth_time <= iat && iat - auth_time < 60, "signed in just now: {claims}");

    // userinfo: the same subject; with profile the username.
    let (status, info) = get_json(&s.url("/oauth/userinfo"), tokens["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(
        (info["sub"].as_str(), info["preferred_username"].as_str()),
        (Some(sub.as_str()), Some("admin"))
    );
    let r = http()
        .build()
        .unwrap()
        .post(s.url("/oauth/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "POST works too");

    // A refresh brings a new id_token for the same person and sign-in.
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let again = verified(&s, &refreshed, CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert_eq!(
        (again["sub"].as_str(), again["auth_time"].as_i64()),
        (Some(sub.as_str()), Some(auth_time))
    );

    // openid without offline_access: no refresh token; only openid: no profile claims.
    let bare = tokens_with_scope(&s, "openid").await;
    assert!(bare.get("refresh_token").is_none(), "{bare}");
    let claims = verified(&s, &bare, CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert!(claims.get("preferred_username").is_none(), "{claims}");
    let (_, info) = get_json(&s.url("/oauth/userinfo"), bare["access_token"].as_str()).await;
    assert!(info.get("preferred_username").is_none() && info["sub"] == sub.as_str(), "{info}");

    // A client configured to always get one gets a refresh token without offline_access.
    let spec = authgate_actors::directory::ClientSpec {
        always_refresh: true,
        ..authgate_actors::directory::ClientSpec::new("kubectl", false)
    };
    let now = authgate_actors::time::wall_clock_ms();
    let dir = s.server.actors.directory().clone();
    let (kube, _) = dir
        .ask(|reply| authgate_actors::directory::DirectoryMsg::CreateClient { spec, now, reply })
        .await
        .unwrap()
        .unwrap();
    let always = tokens_for_client(&s, &kube.client_id, "openid").await;
    assert!(always["refresh_token"].is_string() && always["id_token"].is_string(), "{always}");

    // Without openid: no id_token, a refresh token as before, and userinfo refuses.
    let plain = tokens_with_scope(&s, "read").await;
    assert!(plain.get("id_token").is_none() && plain["refresh_token"].is_string(), "{plain}");
    let r = http()
        .build()
        .unwrap()
        .get(s.url("/oauth/userinfo"))
        .bearer_auth(plain["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    for bad in [None, Some("not-a-token")] {
        let (status, body) = get_json(&s.url("/oauth/userinfo"), bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token")),
            "{bad:?}"
        );
    }
    // A revoked token's userinfo is refused.
    post_form(
        &s.url("/oauth/revoke"),
        &[("token", tokens["refresh_token"].as_str().unwrap()), ("client_id", &s.client_id)],
    )
    .await;
    let (status, _) = get_json(&s.url("/oauth/userinfo"), refreshed["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An unknown scope is still refused; the OpenID ones are allowed for every client.
    let (status, body) = post_form(
        &s.url("/oauth/device/code"),
        &[("client_id", &s.client_id), ("scope", "openid admin")],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_asymmetric_access_key_the_id_token_uses_it() {
    for (alg, core) in [
        ("ES256", CoreJwsSigningAlgorithm::EcdsaP256Sha256),
        ("EdDSA", CoreJwsSigningAlgorithm::EdDsa),
    ] {
        let s = TestServer::start(&["--jwt-signing-algorithm", alg]).await;
        let tokens = tokens_with_scope(&s, "openid offline_access").await;
        verified(&s, &tokens, core).await;
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid;
        assert_eq!(
            kid(tokens["id_token"].as_str().unwrap()),
            kid(tokens["access_token"].as_str().unwrap()),
            "{alg}: one key signs both"
        );
        assert_eq!(jwks(&s).await.keys().len(), 1, "{alg}: no second key");
        // Signed by the same key, an id_token is still no access token anywhere.
        let id_token = tokens["id_token"].as_str().unwrap();
        assert_eq!(tokeninfo(&s, id_token).await, StatusCode::UNAUTHORIZED, "{alg}");
        assert!(!introspected_active(&s, id_token).await, "{alg}");
        assert_eq!(
            get_json(&s.url("/oauth/userinfo"), Some(id_token)).await.0,
            StatusCode::UNAUTHORIZED,
            "{alg}"
        );
        s.stop().await;
    }
}

/// What an administrator sets as a user's name and email is what OpenID Connect says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_sets_the_name_and_email_the_id_token_carries() {
    let s = TestServer::start(&[]).await;
    let admin = Person::new();
    admin.login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = admin.get(&s.url("/admin/users")).await;
    let csrf = csrf_of(&page);
    let id = page.split("/admin/users/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let set = |name: &'static str, email: &'static str| {
        let (url, csrf) = (s.url(&format!("/admin/users/{id}/profile")), csrf.clone());
        let admin = &admin;
        async move {
            admin
                .post(&url, &[("csrf_token", csrf.as_str()), ("name", name), ("email", email)])
                .await
        }
    };
    let (status, page, _) = set("Ada <Admin>", "not an email").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not an email address"), "{page}");
    let (status, _, _) = set("Ada <Admin>", "ada@example.org").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = admin.get(&s.url("/admin/users")).await;
    assert!(
        page.contains("Ada &lt;Admin&gt;") && page.contains("ada@example.org"),
        "escaped and shown"
    );

    let tokens = tokens_with_scope(&s, "openid profile email").await;
    let claims = verified(&s, &tokens, CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert_eq!(
        (claims["name"].as_str(), claims["email"].as_str()),
        (Some("Ada <Admin>"), Some("ada@example.org")),
        "{claims}"
    );
    // Cleared: no longer said.
    set("", "").await;
    let tokens = tokens_with_scope(&s, "openid profile email").await;
    let claims = verified(&s, &tokens, CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
    assert!(claims.get("name").is_none() && claims.get("email").is_none(), "{claims}");
    s.stop().await;
}

/// Discovery at `/.well-known/openid-configuration`, then both grants through the
/// `openidconnect` crate's own client: the authorization code with PKCE, `state` and `nonce`
/// (the id_token must carry the nonce, and a wrong one fails), userinfo, and the device flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openidconnect_crate_discovers_and_signs_in_by_code_and_by_device() {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreDeviceAuthorizationResponse, CoreProviderMetadata, CoreUserInfoClaims,
    };
    use openidconnect::{
        AuthorizationCode, CsrfToken, DeviceAuthorizationUrl, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };

    let s = TestServer::start_at_own_url(&[]).await;
    let callback = "http://127.0.0.1:45678/cb";
    let (app, _) = s
        .create_app_granting(
            "Web app",
            false,
            &["http://127.0.0.1/cb"],
            &["authorization_code", "device_code", "refresh_token"],
        )
        .await;
    let http = http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let call = |req| crate::oauth2_client::send(http.clone(), req);
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(s.base.clone()).unwrap(), &call)
        .await
        .expect("OpenID Connect discovery");
    // One document at both addresses (RFC 8414 and OIDC Discovery never disagree).
    let (_, rfc8414) = get_json(&s.url("/.well-known/oauth-authorization-server"), None).await;
    let (_, oidc) = get_json(&s.url("/.well-known/openid-configuration"), None).await;
    assert_eq!(rfc8414, oidc);
    assert_eq!(oidc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let client = CoreClient::from_provider_metadata(meta, ClientId::new(app.clone()), None)
        .set_redirect_uri(RedirectUrl::new(callback.into()).unwrap())
        .set_device_authorization_url(DeviceAuthorizationUrl::new(s.url("/oauth/device/code")).unwrap());

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let back = person.consent(&s, url.as_str(), true).await;
    let q = query_of(&back);
    assert_eq!(q.get("state"), Some(state.secret()));
    let tokens = client
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&call)
        .await
        .expect("the code is exchanged");
    let id_token = tokens.id_token().expect("an id_token");
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &nonce).expect("the id_token verifies, nonce included");
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some("admin"));
    assert!(
        id_token.claims(&verifier, &Nonce::new("another".into())).is_err(),
        "a different nonce is refused"
    );
    assert!(tokens.refresh_token().is_none(), "openid without offline_access: no refresh token");
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
        .unwrap()
        .request_async(&call)
        .await
        .expect("userinfo");
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("admin"));

    // The device flow through the same client.
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("offline_access".into()))
        .request_async(&call)
        .await
        .expect("a device code");
    let (status, page) = person.decide(&s, details.user_code().secret(), true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&call, tokio::time::sleep, None)
        .await
        .expect("device tokens");
    let claims = tokens
        .id_token()
        .expect("an id_token")
        .claims(&verifier, |n: Option<&Nonce>| {
            if n.is_none() {
                Ok(())
            } else {
                Err("no nonce on a device grant".to_owned())
            }
        })
        .expect("verifies");
    assert_eq!(claims.audiences()[0].as_str(), app);
    assert!(tokens.refresh_token().is_some(), "offline_access asked for");
}
