//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636, RFC 9700), driven by the
//! `oauth2` crate as the client and a cookie-keeping browser as the person, and its security
//! properties over HTTP: no open redirect on any error path, PKCE downgrades refused, codes
//! used once (reuse revokes), bound to their client and redirect URI, `state` echoed, consent
//! remembered only where the client's identity is proved.

use oauth2::basic::BasicClient;
use oauth2::{AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse, TokenUrl};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::oauth2_client::send;

/// Registered for the native app; any port matches (RFC 8252 §7.3).
const LOOPBACK: &str = "http://127.0.0.1/callback";
/// Where the native app listens in these tests.
const CALLBACK: &str = "http://127.0.0.1:43210/callback";
const WEB: &str = "https://app.example/cb";

fn authorize_url(s: &TestServer, params: &[(&str, &str)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    s.url(&format!("/oauth/authorize?{q}"))
}

/// A PKCE pair: (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (verifier.secret().clone(), challenge.as_str().to_owned())
}

/// A signed-in person approves a request for `client_id`; answers the code.
async fn code_for(s: &TestServer, person: &Person, params: &[(&str, &str)]) -> String {
    let back = person.consent(s, &authorize_url(s, params), true).await;
    let q = query_of(&back);
    q.get("code").unwrap_or_else(|| panic!("a code: {back}")).clone()
}

async fn exchange(s: &TestServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut all = vec![("grant_type", "authorization_code")];
    all.extend_from_slice(form);
    post_form(&s.url("/oauth/token"), &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth2_crate_signs_a_person_in_through_the_browser_with_pkce() {
    let s = TestServer::start(&[]).await;
    let (app, _) = s.create_app("Desk app", false, &[LOOPBACK]).await;
    let client = BasicClient::new(ClientId::new(app.clone()))
        .set_auth_uri(AuthUrl::new(s.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(s.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(CALLBACK.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();

    // Not signed in: sent to sign in, then back to the request.
    let person = Person::new();
    let (status, _, location) = person.get(url.as_str()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let login = location.unwrap();
    assert!(login.starts_with("/login?next=%2Foauth%2Fauthorize%3F"), "{login}");
    let back = person.login_then(&s, &login).await;
    assert!(back.starts_with("/oauth/authorize?"), "{back}");

    // The consent page names the client, the scope and where the browser goes.
    let (status, page, _) = person.get(&s.url(&back)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for shown in ["Desk app", "read", "127.0.0.1:43210", "admin"] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    let callback = person.consent(&s, &s.url(&back), true).await;
    assert!(callback.starts_with(CALLBACK), "{callback}");
    let q = query_of(&callback);
    assert_eq!(q.get("state"), Some(state.secret()), "state echoed");
    assert_eq!(q.get("iss").map(String::as_str), Some("http://localhost:8080"), "RFC 9207 iss");

    let http = http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let call = |req| send(http.clone(), req);
    let verifier_text = verifier.secret().clone();
    let tokens = client
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&call)
        .await
        .expect("the code is exchanged");
    let access = tokens.access_token().secret().clone();
    assert_eq!(tokeninfo(&s, &access).await, StatusCode::OK);
    let refresh = tokens.refresh_token().expect("a refresh token").secret().clone();
    assert_eq!(tokens.scopes().unwrap()[0].as_str(), "read");

    // The app shows in My devices.
    let (_, page, _) = person.get(&s.url("/account/sessions")).await;
    assert!(page.contains("Desk app"), "{page}");

    // Someone who saw the code but lacks the verifier is refused and revokes nothing.
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    for (client_id, verifier) in [(app.as_str(), wrong), ("no-such-client", verifier_text.as_str())] {
        let form = [
            ("code", q["code"].as_str()),
            ("client_id", client_id),
            ("redirect_uri", CALLBACK),
            ("code_verifier", verifier),
        ];
        let (status, body) = exchange(&s, &form).await;
        assert_eq!(status.as_u16() / 100, 4, "{body}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(tokeninfo(&s, &access).await, StatusCode::OK, "a stranger cannot revoke");
    // The code again, as its client presents it: refused, and what it issued is revoked
    // (RFC 6749 §4.1.2), and the audit trail says so.
    let form = [
        ("code", q["code"].as_str()),
        ("client_id", app.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", verifier_text.as_str()),
    ];
    let (status, body) = exchange(&s, &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokeninfo(&s, &access).await == StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "reuse revoked the tokens");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = refresh_as(&s, &app, &refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    let (_, audit, _) = person.get(&s.url("/admin/audit?event=code_reuse_detected")).await;
    assert!(audit.contains("code_reuse_detected"), "{audit}");
}

async fn refresh_as(s: &TestServer, client_id: &str, refresh_token: &str) -> (StatusCode, Value) {
    post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_downgrades_other_clients_and_other_redirects_are_refused() {
    let s = TestServer::start(&[]).await;
    let (app, _) = s.create_app("Desk app", false, &[LOOPBACK]).await;
    let (other, _) = s.create_app("Other app", false, &[LOOPBACK]).await;
    let (web, secret) = s.create_app("Web app", true, &[WEB]).await;
    let secret = secret.unwrap();
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (verifier, challenge) = pkce();
    let base = [
        ("response_type", "code"),
        ("client_id", app.as_str()),
        ("redirect_uri", CALLBACK),
        ("state", "s1"),
    ];

    // A public client without PKCE, with `plain`, or with a malformed challenge: sent back
    // with invalid_request (the redirect URI is registered), and the state.
    for extra in [
        vec![],
        vec![("code_challenge", challenge.as_str()), ("code_challenge_method", "plain")],
        vec![("code_challenge", challenge.as_str())],
        vec![("code_challenge", "short"), ("code_challenge_method", "S256")],
        vec![("code_challenge_method", "S256")],
    ] {
        let mut params = base.to_vec();
        params.extend(extra.iter().copied());
        let (status, _, location) = person.get(&authorize_url(&s, &params)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{extra:?}");
        let location = location.unwrap();
        assert!(location.starts_with(CALLBACK), "{location}");
        let q = query_of(&location);
        assert_eq!(q["error"], "invalid_request", "{extra:?}: {location}");
        assert_eq!(q["state"], "s1");
        assert!(!q.contains_key("code"));
    }

    let mut params = base.to_vec();
    params.extend([("code_challenge", challenge.as_str()), ("code_challenge_method", "S256")]);
    let code = code_for(&s, &person, &params).await;
    let good = [("code", code.as_str()), ("client_id", app.as_str()), ("redirect_uri", CALLBACK)];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = good.to_vec();
        f.extend_from_slice(extra);
        f
    };
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no verifier", good.to_vec()),
        ("a wrong verifier", with(&[("code_verifier", wrong)])),
        ("a malformed verifier", with(&[("code_verifier", "short")])),
        ("the challenge as a plain verifier", {
            let mut f = good.to_vec();
            f.push(("code_verifier", challenge.as_str()));
            f
        }),
        ("another client", {
            let mut f = vec![("code", code.as_str()), ("client_id", other.as_str()), ("redirect_uri", CALLBACK)];
            f.push(("code_verifier", verifier.as_str()));
            f
        }),
        ("another port", {
            let mut f = vec![
                ("code", code.as_str()),
                ("client_id", app.as_str()),
                ("redirect_uri", "http://127.0.0.1:43211/callback"),
            ];
            f.push(("code_verifier", verifier.as_str()));
            f
        }),
        ("no redirect_uri", {
            let mut f = vec![("code", code.as_str()), ("client_id", app.as_str())];
            f.push(("code_verifier", verifier.as_str()));
            f
        }),
    ];
    for (what, form) in cases {
        let (status, body) = exchange(&s, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{what}: {body}"
        );
    }
    // None of those spent it: the rightful client still redeems it, once.
    let mut right = good.to_vec();
    right.push(("code_verifier", verifier.as_str()));
    let (status, body) = exchange(&s, &right).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A confidential client may go without PKCE (PKCE_REQUIRED is off), but a verifier for a
    // code issued without a challenge is the downgrade attack (RFC 9700 §2.1.1): refused.
    let params = [("response_type", "code"), ("client_id", web.as_str()), ("state", "w")];
    let code = code_for(&s, &person, &params).await;
    let auth = [
        ("code", code.as_str()),
        ("client_id", web.as_str()),
        ("client_secret", secret.as_str()),
    ];
    let mut downgrade = auth.to_vec();
    downgrade.push(("code_verifier", verifier.as_str()));
    let (status, body) = exchange(&s, &downgrade).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    // Without its secret, a confidential client is not itself.
    let (status, body) = exchange(&s, &[("code", code.as_str()), ("client_id", web.as_str())]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{body}"
    );
    let (status, body) = exchange(&s, &auth).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one registered URI and none named: none needed at the token endpoint: {body}"
    );
    s.stop().await;

    // PKCE_REQUIRED: confidential clients need it too.
    let s = TestServer::start(&["--pkce-required", "true"]).await;
    let (web, _) = s.create_app("Web app", true, &[WEB]).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, _, location) = person
        .get(&authorize_url(&s, &[("response_type", "code"), ("client_id", web.as_str())]))
        .await;
    let q = query_of(&location.unwrap());
    assert_eq!(q["error"], "invalid_request");
    assert!(q["error_description"].contains("PKCE"), "{q:?}");
}

/// Redirect URIs an attacker would try (the sign-in page's open-redirect list and the usual
/// parser confusions): none registered, so each gets an error page and no redirect at all.
const HOSTILE_REDIRECTS: [&str; 30] = [
    "https://evil.example/cb",
    "//evil.example",
    "/\\evil.example",
    "https://app.example.evil.example/cb",
    "https://app.example/cb/../../evil",
    "https://app.example/cb?next=https://evil.example",
    "https://app.example/cb#x",
    "https://app.example@evil.example/cb",
    "https://evil.example\\@app.example/cb",
    "https://app.example%2F@evil.example/cb",
    "https://app.example/cb%2F..%2F..%2Fevil",
    "https://APP.EXAMPLE/cb",
    "https://app.example:443/cb",
    "http://app.example/cb",
    "javascript:alert(1)//https://app.example/cb",
    "data:text/html,<script>alert(1)</script>",
    "http://127.0.0.1.evil.example/callback",
    "http://localhost.evil.example/callback",
    "http://127.0.0.1@evil.example/callback",
    "http://127.0.0.1:43210/callback/../evil",
    "http://127.0.0.1:43210@evil.example/callback",
    "http://127.0.0.1:80#@evil.example/callback",
    "HTTP://127.0.0.1/callback",
    "http://127.0.0.1:/callback",
    "http://127.0.0.1:4x/callback",
    "http://[::1]/callback",
    " https://app.example/cb",
    "https://app.example/cb\n",
    "",
    "https://app.example/cb ",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_path_redirects_anywhere_unregistered() {
    let s = TestServer::start(&[]).await;
    let (web, _) = s.create_app("Web app", true, &[WEB, LOOPBACK]).await;
    let (disabled, _) = s.create_app("Gone app", true, &[WEB]).await;
    let dir = s.server.actors.directory().clone();
    dir.ask(|reply| authgate_actors::directory::DirectoryMsg::SetClientEnabled {
        client_id: disabled.clone(),
        enabled: false,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    let signed_in = Person::new();
    signed_in.login(&s, "admin", ADMIN_PASSWORD).await;
    let stranger = Person::new();
    let mut checked = 0;
    for who in [&signed_in, &stranger] {
        for evil in HOSTILE_REDIRECTS {
            for client in [web.as_str(), "no-such-client", disabled.as_str(), ""] {
                // Everything else wrong too, so that any error path would be taken.
                let url = authorize_url(
                    &s,
                    &[
                        ("response_type", "token"),
                        ("client_id", client),
                        ("redirect_uri", evil),
                        ("state", "<script>alert(1)</script>"),
                        ("scope", "nope"),
                        ("prompt", "none"),
                    ],
                );
                let (status, page, location) = who.get(&url).await;
                assert_eq!((status, location.as_deref()), (StatusCode::BAD_REQUEST, None), "{client} {evil:?}");
                assert!(!page.contains("<script>alert(1)"), "reflected: {page}");
                checked += 1;
            }
        }
        // An unknown or disabled client with a registered-looking URI: still a page.
        for client in ["no-such-client", disabled.as_str()] {
            let (status, _, location) = who
                .get(&authorize_url(
                    &s,
                    &[("response_type", "code"), ("client_id", client), ("redirect_uri", WEB)],
                ))
                .await;
            assert_eq!((status, location), (StatusCode::BAD_REQUEST, None));
        }
        // Several registered and none named: a page too (which one would it be?).
        let (status, _, location) = who.get(&authorize_url(&s, &[("response_type", "code"), ("client_id", &web)])).await;
        assert_eq!((status, location), (StatusCode::BAD_REQUEST, None));
        // A repeated client_id or redirect_uri: a page.
        for repeated in [
            format!("client_id={web}&client_id={web}&redirect_uri={WEB}"),
            format!("client_id={web}&redirect_uri={WEB}&redirect_uri=https://evil.example/"),
        ] {
            let (status, _, location) = who.get(&s.url(&format!("/oauth/authorize?response_type=code&{repeated}"))).await;
            assert_eq!((status, location), (StatusCode::BAD_REQUEST, None), "{repeated}");
        }
    }
    assert_eq!(checked, 2 * 4 * HOSTILE_REDIRECTS.len());

    // A registered URI with anything else wrong: back to that URI only, with the error.
    let (status, _, location) = signed_in
        .get(&authorize_url(
            &s,
            &[
                ("response_type", "token"),
                ("client_id", &web),
                ("redirect_uri", WEB),
                ("state", "x"),
            ],
        ))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = location.unwrap();
    assert!(
        location.starts_with("https://app.example/cb?error=unsupported_response_type"),
        "{location}"
    );

    // A tampered consent form (the request swapped for one with another redirect URI) is
    // checked again whole: a page, no redirect.
    let (_, page, _) = signed_in
        .get(&authorize_url(
            &s,
            &[("response_type", "code"), ("client_id", &web), ("redirect_uri", WEB)],
        ))
        .await;
    let csrf = csrf_of(&page);
    let tampered = format!("response_type=code&client_id={web}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb");
    let (status, _, location) = signed_in
        .post(
            &s.url("/oauth/authorize"),
            &[("csrf_token", &csrf), ("request", &tampered), ("action", "approve")],
        )
        .await;
    assert_eq!((status, location), (StatusCode::BAD_REQUEST, None));
    // And without the session's CSRF token, nothing is approved.
    let honest = format!("response_type=code&client_id={web}&redirect_uri={WEB}");
    let (status, _, location) = signed_in
        .post(
            &s.url("/oauth/authorize"),
            &[("csrf_token", "forged"), ("request", &honest), ("action", "approve")],
        )
        .await;
    assert_eq!((status, location), (StatusCode::FORBIDDEN, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_prompts_and_remembered_consent() {
    let s = TestServer::start(&[]).await;
    let (web, secret) = s.create_app("Web app", true, &[WEB]).await;
    let (app, _) = s.create_app("Desk app", false, &[LOOPBACK]).await;
    let (verifier, challenge) = pkce();
    let person = Person::new();

    // prompt=none without a session: login_required, sent back (not to the sign-in page).
    let ask = [
        ("response_type", "code"),
        ("client_id", web.as_str()),
        ("state", "st"),
        ("prompt", "none"),
    ];
    let (_, _, location) = person.get(&authorize_url(&s, &ask)).await;
    let q = query_of(&location.unwrap());
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("login_required", "st"));

    person.login(&s, "admin", ADMIN_PASSWORD).await;
    // Signed in, never approved: consent_required.
    let (_, _, location) = person.get(&authorize_url(&s, &ask)).await;
    assert_eq!(query_of(&location.unwrap())["error"], "consent_required");

    // Deny: access_denied with the state, no code.
    let ask = [("response_type", "code"), ("client_id", web.as_str()), ("state", "st 2&x=y")];
    let back = person.consent(&s, &authorize_url(&s, &ask), false).await;
    assert!(back.starts_with(WEB), "{back}");
    let q = query_of(&back);
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("access_denied", "st 2&x=y"));
    assert!(!q.contains_key("code"));

    // Approve, redeem: the confidential client is now remembered, without a page.
    let code = code_for(&s, &person, &ask).await;
    let (status, body) = exchange(
        &s,
        &[("code", &code), ("client_id", &web), ("client_secret", secret.as_deref().unwrap())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, location) = person.get(&authorize_url(&s, &ask)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let q = query_of(&location.unwrap());
    assert!(q.contains_key("code"), "remembered: {q:?}");
    // ... but only for what was approved, and not when the client asks to be asked.
    let (status, _, _) = person
        .get(&authorize_url(
            &s,
            &[("response_type", "code"), ("client_id", &web), ("scope", "read write openid")],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "more than was approved: asked again");
    let mut again = ask.to_vec();
    again.push(("prompt", "consent"));
    let (status, _, _) = person.get(&authorize_url(&s, &again)).await;
    assert_eq!(status, StatusCode::OK, "prompt=consent: asked again");

    // Withdrawn in My devices: asked again.
    let token = s.server.actors.token().clone();
    let list = token
        .ask(|reply| authgate_actors::token::TokenMsg::ListAuthorizations {
            query: Default::default(),
            now: authgate_actors::time::wall_clock_ms(),
            reply,
        })
        .await
        .unwrap();
    let (_, page, _) = person.get(&s.url("/account/sessions")).await;
    let csrf = csrf_of(&page);
    for a in list.iter().filter(|a| a.client_id == web) {
        let (status, body, _) = person
            .post(&s.url(&format!("/account/sessions/{}/revoke", a.id)), &[("csrf_token", &csrf)])
            .await;
        assert!(status.is_redirection() || status.is_success(), "{status} {body}");
    }
    let (status, _, _) = person.get(&authorize_url(&s, &ask)).await;
    assert_eq!(status, StatusCode::OK, "withdrawn: asked again");

    // A public client's identity is not proved by anything: it is always asked (RFC 8252 §8.6).
    let public = [
        ("response_type", "code"),
        ("client_id", app.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let code = code_for(&s, &person, &public).await;
    let (status, body) = exchange(
        &s,
        &[
            ("code", &code),
            ("client_id", &app),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = person.get(&authorize_url(&s, &public)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a public client is asked every time, even with an active authorization"
    );

    // A confidential client redirecting to a loopback address (a desktop app whose secret is in
    // its binary) is asked every time too.
    let (desk, desk_secret) = s.create_app("Desk app with a secret", true, &[LOOPBACK]).await;
    let ask = [("response_type", "code"), ("client_id", desk.as_str()), ("redirect_uri", CALLBACK)];
    let code = code_for(&s, &person, &ask).await;
    let (status, body) = exchange(
        &s,
        &[
            ("code", &code),
            ("client_id", &desk),
            ("client_secret", desk_secret.as_deref().unwrap()),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = person.get(&authorize_url(&s, &ask)).await;
    assert_eq!(status, StatusCode::OK, "a loopback redirect: asked every time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_edits_redirect_uris_and_grants() {
    let s = TestServer::start(&[]).await;
    let admin = Person::new();
    admin.login(&s, "admin", ADMIN_PASSWORD).await;
    let cli = s.client_id.clone();
    let (_, page, _) = admin.get(&s.url(&format!("/admin/clients/{cli}"))).await;
    assert!(page.contains("value=\"authorization_code\""), "the form offers the grant");
    let csrf = csrf_of(&page);
    let edit = |uris: &'static str, grants: &'static [&'static str]| {
        let mut form = vec![
            ("csrf_token", csrf.clone()),
            ("name", "AuthGate CLI".to_owned()),
            ("scopes", "read write".to_owned()),
            ("redirect_uris", uris.to_owned()),
        ];
        form.extend(grants.iter().map(|g| ("grant_type", (*g).to_owned())));
        let (admin, url) = (&admin, s.url(&format!("/admin/clients/{cli}")));
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin.post(&url, &form).await
        }
    };
    // A redirect URI a browser would run is refused, with the reason, and nothing changes.
    let (status, page, _) = edit("javascript:alert(1)//", &["device_code", "authorization_code"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("cannot be a redirect URI"), "{page}");
    let ask = |s: &TestServer| {
        let (_, challenge) = pkce();
        authorize_url(
            s,
            &[
                ("response_type", "code"),
                ("client_id", s.client_id.as_str()),
                ("redirect_uri", CALLBACK),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
    };
    // Without the grant: the registered URI hears unauthorized_client... but none is registered
    // yet, so it is a page.
    let (status, _, location) = admin.get(&ask(&s)).await;
    assert_eq!((status, location), (StatusCode::BAD_REQUEST, None));

    let (status, _, _) = edit(
        "http://127.0.0.1/callback\nhttps://app.example/cb\n",
        &["device_code", "authorization_code"],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = admin.get(&s.url("/admin/clients")).await;
    assert!(page.contains("authorization_code"), "the list shows the grant");
    let back = admin.consent(&s, &ask(&s), true).await;
    assert!(query_of(&back).contains_key("code"), "{back}");

    // The grant taken away: back to the registered URI with unauthorized_client.
    let (status, _, _) = edit("http://127.0.0.1/callback\n", &["device_code"]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, location) = admin.get(&ask(&s)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(query_of(&location.unwrap())["error"], "unauthorized_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_sign_ins_ipv6_loopback_and_posted_requests() {
    let s = TestServer::start(&[]).await;
    let (web, _) = s.create_app("Web app", true, &[WEB, "http://[::1]/cb"]).await;
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    // The web app's request to its registered address, with `extra`.
    let web_url = |extra: &[(&str, &str)]| {
        let mut params = vec![("response_type", "code"), ("client_id", web.as_str()), ("redirect_uri", WEB)];
        params.extend_from_slice(extra);
        authorize_url(&s, &params)
    };

    // prompt=none with anything else: refused.
    let (_, _, location) = person.get(&web_url(&[("prompt", "none select_account")])).await;
    assert_eq!(query_of(&location.unwrap())["error"], "invalid_request");

    // prompt=login (and max_age=0) after a sign-in more than a few seconds old: the sign-in
    // form again, even though signed in, then on to the consent page.
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    for fresh in [("prompt", "login"), ("max_age", "0")] {
        let url = web_url(&[fresh]);
        let (status, _, location) = person.get(&url).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{fresh:?}");
        let login = location.unwrap();
        assert!(login.starts_with("/login?reauth=1&next=%2Foauth%2Fauthorize"), "{login}");
        let back = person.login_then(&s, &login).await;
        let (status, page, _) = person.get(&s.url(&back)).await;
        assert_eq!(status, StatusCode::OK, "signed in just now: the consent page: {page}");
        assert!(page.contains("id=\"approve\""));
        tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    }
    // A large max_age is satisfied by the sign-in of a moment ago; a malformed one is refused.
    let (status, _, _) = person.get(&web_url(&[("max_age", "3600")])).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, location) = person.get(&web_url(&[("max_age", "soon")])).await;
    assert_eq!(query_of(&location.unwrap())["error"], "invalid_request");
    // prompt=none with a stale sign-in and max_age: login_required, back to the client.
    let (_, _, location) = person.get(&web_url(&[("max_age", "1"), ("prompt", "none")])).await;
    assert_eq!(query_of(&location.unwrap())["error"], "login_required");

    // An IPv6 loopback redirect on any port: the consent page's policy lets its form lead on
    // (CSP has no IPv6 host sources, so it names the scheme), and the code arrives there.
    let v6 = "http://[::1]:51000/cb";
    let url = authorize_url(
        &s,
        &[("response_type", "code"), ("client_id", &web), ("redirect_uri", v6), ("state", "6")],
    );
    let r = person.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("form-action 'self' http:;"), "{csp}");
    let back = person.consent(&s, &url, true).await;
    assert!(back.starts_with("http://[::1]:51000/cb?code="), "{back}");

    // OIDC Core §3.1.2.1: the request may come as a POSTed form too.
    let (status, page, _) = person
        .post(
            &s.url("/oauth/authorize"),
            &[("response_type", "code"), ("client_id", &web), ("redirect_uri", WEB)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"approve\""));
}
