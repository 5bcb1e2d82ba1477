//! Token lifecycle and the approval people can trust: disable and enable (by the owner, by an
//! administrator, one or all of a client's), naming devices, the approval page's where and
//! when, the refresh-rotation grace, and the conformance details (introspection without
//! credentials, `GET /logout`, `WWW-Authenticate` on the token endpoint). On whichever backend
//! the suite runs (`AUTHGATE_TEST_BACKEND`).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// The id of the one authorization on `person`'s My devices page, and its status.
async fn my_only_device(s: &TestServer, person: &Person) -> (String, String) {
    let (_, page, _) = person.get(&s.url("/account/sessions")).await;
    let row = page.split("class=\"session-row\"").nth(1).expect("one device row");
    let attr = |name: &str| {
        let start = row.find(&format!("{name}=\"")).map(|i| i + name.len() + 2).expect(name);
        row[start..].split('"').next().unwrap().to_owned()
    };
    (attr("data-id"), attr("data-status"))
}

/// Posts one of a row's buttons (`path` under the server) with the page's CSRF token.
async fn press(s: &TestServer, person: &Person, page: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
    let (_, html, _) = person.get(&s.url(page)).await;
    let csrf = csrf_of(&html);
    let mut fields = vec![("csrf_token", csrf.as_str())];
    fields.extend_from_slice(form);
    person.post(&s.url(path), &fields).await
}

async fn admin(s: &TestServer) -> Person {
    let p = Person::new();
    p.login(s, "admin", ADMIN_PASSWORD).await;
    p
}

/// Approves `user_code` as `person` with the approval page's name field set to `name`.
async fn approve_named(s: &TestServer, person: &Person, user_code: &str, name: &str) -> (StatusCode, String) {
    let (status, page, _) = person.get(&s.url(&format!("/device?user_code={user_code}"))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let csrf = csrf_of(&page);
    let form = [
        ("user_code", user_code),
        ("csrf_token", &csrf),
        ("action", "approve"),
        ("device_name", name),
    ];
    let (status, page, _) = person.post(&s.url("/device/approve"), &form).await;
    (status, page)
}

async fn audit_has(s: &TestServer, admin: &Person, event: &str, text: &str) -> bool {
    let (_, page, _) = admin.get(&s.url(&format!("/admin/audit?event={event}"))).await;
    page.contains(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_disables_a_device_and_enables_it_again() {
    let s = TestServer::start(&["--enable-token-rotation", "true"]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let (access, refresh_token) = (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    let owner = admin(&s).await;
    let (id, status) = my_only_device(&s, &owner).await;
    assert_eq!(status, "active");

    // Someone else cannot touch it.
    s.create_user("mallory", "mallory-password-1").await;
    let mallory = Person::new();
    mallory.login(&s, "mallory", "mallory-password-1").await;
    let (status, _, _) = press(&s, &mallory, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(tokeninfo(&s, access).await, StatusCode::OK);

    let (status, _, location) = press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/account/sessions")));
    let (status, body) = get_json(&s.url("/oauth/tokeninfo"), Some(access)).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    assert!(!introspected_active(&s, access).await);
    assert!(!introspected_active(&s, refresh_token).await);
    let (status, body) = refresh(&s, refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(my_only_device(&s, &owner).await.1, "disabled");
    // The admin console filters by status.
    let (_, page, _) = owner.get(&s.url("/admin/sessions?status=disabled")).await;
    assert!(page.contains(&format!("data-id=\"{id}\"")));
    let (_, page, _) = owner.get(&s.url("/admin/sessions?status=active")).await;
    assert!(!page.contains(&format!("data-id=\"{id}\"")));
    let (_, page, _) = owner.get(&s.url("/admin/sessions?status=all")).await;
    assert!(page.contains(&format!("data-id=\"{id}\"")));

    // Enabled: everything works again, until its own expiry; the refreshes refused while
    // disabled did not count as reuse (with rotation on, reuse would have revoked it all).
    let (status, _, _) = press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/enable"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(tokeninfo(&s, access).await, StatusCode::OK);
    assert!(introspected_active(&s, access).await);
    let (status, body) = refresh(&s, refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tokeninfo(&s, body["access_token"].as_str().unwrap()).await, StatusCode::OK);
    assert_eq!(
        tokeninfo(&s, access).await,
        StatusCode::OK,
        "the rotation left the first access token alone"
    );
    assert_eq!(my_only_device(&s, &owner).await.1, "active");
    assert!(audit_has(&s, &owner, "token_disabled", &id).await);
    assert!(audit_has(&s, &owner, "token_enabled", &id).await);

    // Disabling or enabling twice says so and records nothing more.
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("was disabled"), "{page}");
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("nothing to disable"), "{page}");
    let (_, audit, _) = owner.get(&s.url("/admin/audit?event=token_disabled")).await;
    assert_eq!(audit.matches(&id).count(), 2, "two disables recorded, not three");

    // An administrator's pause is not the owner's to lift.
    let (status, _, _) = press(&s, &owner, "/admin/sessions", &format!("/admin/sessions/{id}/disable"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/enable"), &[]).await;
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("only an administrator can enable it"), "{page}");
    assert!(
        page.contains("Disabled by an administrator") && !page.contains(&format!("{id}&#x2f;enable")),
        "{page}"
    );
    assert_eq!(tokeninfo(&s, access).await, StatusCode::UNAUTHORIZED);
    press(&s, &owner, "/admin/sessions", &format!("/admin/sessions/{id}/enable"), &[]).await;
    assert_eq!(tokeninfo(&s, access).await, StatusCode::OK);

    // Revoked is final: enabling brings nothing back.
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/revoke"), &[]).await;
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/enable"), &[]).await;
    assert_eq!(tokeninfo(&s, access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(my_only_device(&s, &owner).await.1, "revoked");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_disables_one_device_or_all_of_a_clients_and_enables_them() {
    let s = TestServer::start(&[]).await;
    let one = s.tokens_for(&s.client_id).await;
    let two = s.tokens_for(&s.client_id).await;
    let (a1, a2) = (one["access_token"].as_str().unwrap(), two["access_token"].as_str().unwrap());
    let admin = admin(&s).await;
    let client = s.client_id.clone();

    let (status, _, _) = press(
        &s,
        &admin,
        "/admin/clients",
        &format!("/admin/clients/{client}/disable-tokens"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        (tokeninfo(&s, a1).await, tokeninfo(&s, a2).await),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    let (_, page, _) = admin.get(&s.url("/admin/sessions?status=disabled")).await;
    assert_eq!(page.matches("class=\"session-row\"").count(), 2, "{page}");
    assert!(audit_has(&s, &admin, "token_disabled", "every authorization of the client").await);
    // The client itself stays enabled: new devices still sign in.
    let three = s.tokens_for(&s.client_id).await;
    assert_eq!(tokeninfo(&s, three["access_token"].as_str().unwrap()).await, StatusCode::OK);

    // One brought back from the admin console.
    let id = {
        let rows: Vec<&str> = page.split("data-id=\"").skip(1).map(|r| r.split('"').next().unwrap()).collect();
        rows[0].to_owned()
    };
    let (status, _, _) = press(&s, &admin, "/admin/sessions", &format!("/admin/sessions/{id}/enable"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let live = [tokeninfo(&s, a1).await, tokeninfo(&s, a2).await];
    assert_eq!(live.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{live:?}");

    let (status, _, _) = press(&s, &admin, "/admin/clients", &format!("/admin/clients/{client}/enable-tokens"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!((tokeninfo(&s, a1).await, tokeninfo(&s, a2).await), (StatusCode::OK, StatusCode::OK));
    let (status, _, _) = press(&s, &admin, "/admin/sessions", &format!("/admin/sessions/{id}/disable"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = admin.get(&s.url("/admin/sessions?status=disabled")).await;
    assert!(page.contains(&format!("data-id=\"{id}\"")));
    // Unknown ids and actions are "not found"; a bad status filter shows the active ones.
    let (status, _, _) = press(&s, &admin, "/admin/sessions", "/admin/sessions/no-such-id/disable", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = press(&s, &admin, "/admin/sessions", &format!("/admin/sessions/{id}/explode"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = press(&s, &admin, "/admin/clients", "/admin/clients/no-such-client/disable-tokens", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = admin.get(&s.url("/admin/sessions?status=%3Cscript%3E")).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_named_at_approval_and_renamed_by_their_owner() {
    let s = TestServer::start(&[]).await;
    let owner = admin(&s).await;

    // A name given at approval shows in My devices, the admin console and the audit trail.
    let dc = s.device_code(&s.client_id).await;
    let (status, page) = approve_named(&s, &owner, dc["user_code"].as_str().unwrap(), "  Living room TV ").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, _) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("<strong class=\"device-name\">Living room TV</strong>"), "{page}");
    let (_, page, _) = owner.get(&s.url("/admin/sessions")).await;
    assert!(page.contains("Living room TV"));
    assert!(audit_has(&s, &owner, "device_approved", "Living room TV").await);
    let (id, _) = my_only_device(&s, &owner).await;

    // Renamed; names are escaped wherever they show.
    let (status, _, _) = press(
        &s,
        &owner,
        "/account/sessions",
        &format!("/account/sessions/{id}/rename"),
        &[("name", "<b>Kitchen</b>")],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("&lt;b&gt;Kitchen&lt;") && !page.contains("<b>Kitchen"), "{page}");
    assert!(audit_has(&s, &owner, "device_renamed", "Kitchen").await);
    // A blank or over-long name: a clear error, nothing changes.
    for bad in ["   ", &"x".repeat(65), "tab\there"] {
        let (status, page, _) = press(
            &s,
            &owner,
            "/account/sessions",
            &format!("/account/sessions/{id}/rename"),
            &[("name", bad)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(page.contains("1 to 64 characters"), "{page}");
    }
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("&lt;b&gt;Kitchen&lt;"));
    // 64 characters (not bytes) fit.
    let long = "é".repeat(64);
    let (status, _, _) = press(
        &s,
        &owner,
        "/account/sessions",
        &format!("/account/sessions/{id}/rename"),
        &[("name", &long)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // A blank name at approval means the client's name; an over-long one is refused and the
    // code stays pending.
    let dc = s.device_code(&s.client_id).await;
    let user_code = dc["user_code"].as_str().unwrap();
    let (status, page) = approve_named(&s, &owner, user_code, &"y".repeat(65)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("1 to 64 characters") && page.contains("id=\"approve\""), "{page}");
    let (_, body) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "authorization_pending");
    let (status, _) = approve_named(&s, &owner, user_code, "").await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    assert!(page.contains("<strong class=\"device-name\">AuthGate CLI</strong>"), "{page}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_page_says_when_and_from_where_and_warns_of_another_address() {
    let s = TestServer::start(&["--trusted-proxies", "127.0.0.1/32"]).await;
    let client = http().build().unwrap();
    let code_from = |ip: &'static str| {
        let (http, url, client) = (client.clone(), s.url("/oauth/device/code"), s.client_id.clone());
        async move {
            let r = http
                .post(url)
                .header("x-forwarded-for", ip)
                .form(&[("client_id", client.as_str())])
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    // The person's browser, behind the same proxy, at 198.51.100.4.
    let person = Person {
        http: http()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(
                [(
                    reqwest::header::HeaderName::from_static("x-forwarded-for"),
                    reqwest::header::HeaderValue::from_static("198.51.100.4"),
                )]
                .into_iter()
                .collect(),
            )
            .build()
            .unwrap(),
    };

    // Signed out, verification_uri_complete leads to sign-in and back.
    let dc = code_from("203.0.113.9").await;
    let complete = dc_complete(&s, &dc);
    let (status, _, location) = person.get(&complete).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().starts_with("/login?next="));
    person.login(&s, "admin", ADMIN_PASSWORD).await;

    // Signed in: straight to the approval page, code shown, where and when, and the warning.
    let (status, page, _) = person.get(&complete).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"approve\"") && page.contains(dc["user_code"].as_str().unwrap()),
        "{page}"
    );
    assert!(page.contains("203.0.113.9") && page.contains("198.51.100.4"), "{page}");
    assert!(page.contains("just now"), "{page}");
    assert!(page.contains("id=\"elsewhere\""), "{page}");
    // Nothing is approved without the Approve press.
    let (_, body) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "authorization_pending");

    // From the same address: no warning.
    let same = code_from("198.51.100.4").await;
    let (_, page, _) = person.get(&dc_complete(&s, &same)).await;
    assert!(page.contains("id=\"approve\"") && !page.contains("id=\"elsewhere\""), "{page}");
    // A wrong code in the link: the code form with the error, nothing else.
    let (status, page, _) = person.get(&s.url("/device?user_code=BCDF-GHJK")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("id=\"user_code\"") && !page.contains("id=\"approve\""));
    s.stop().await;
}

/// `verification_uri_complete` on the test server (whose BASE_URL is the default).
fn dc_complete(s: &TestServer, dc: &Value) -> String {
    let link = dc["verification_uri_complete"].as_str().unwrap();
    s.url(&link[link.find("/device").unwrap()..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_refresh_token_within_the_grace_gets_the_same_successor_and_after_it_revokes() {
    let s = TestServer::start(&["--enable-token-rotation", "true", "--refresh-token-reuse-grace", "2s"]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let (status, first) = refresh(&s, old).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let successor = first["refresh_token"].as_str().unwrap();
    assert_ne!(successor, old);
    // The response was lost; the client tries again with the old token: the same successor,
    // a fresh access token, and both access tokens work.
    let (status, again) = refresh(&s, old).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["refresh_token"], first["refresh_token"]);
    assert_ne!(again["access_token"], first["access_token"]);
    for a in [&first, &again] {
        assert_eq!(tokeninfo(&s, a["access_token"].as_str().unwrap()).await, StatusCode::OK);
    }
    // Another client presenting it gets nothing, and changes nothing: the rightful client
    // still gets the same successor.
    let (other, _) = s.create_client("Other", false, None).await;
    let (status, _) = post_form(
        &s.url("/oauth/token"),
        &[("grant_type", "refresh_token"), ("refresh_token", old), ("client_id", &other)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, third) = refresh(&s, old).await;
    assert_eq!((status, &third["refresh_token"]), (StatusCode::OK, &first["refresh_token"]));
    // Past the grace, reuse revokes the whole authorization, as without one.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, body) = refresh(&s, old).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(refresh(&s, successor).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        tokeninfo(&s, again["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );

    // Within the grace, but the successor was itself replaced: reuse, the family is revoked.
    let tokens = s.tokens_for(&s.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let (_, first) = refresh(&s, old).await;
    let (status, second) = refresh(&s, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refresh(&s, old).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        refresh(&s, second["refresh_token"].as_str().unwrap()).await.0,
        StatusCode::BAD_REQUEST
    );
    s.stop().await;

    // Strict (the default): the first reuse revokes.
    let s = TestServer::start(&["--enable-token-rotation", "true"]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let (_, first) = refresh(&s, old).await;
    assert_eq!(refresh(&s, old).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        refresh(&s, first["refresh_token"].as_str().unwrap()).await.0,
        StatusCode::BAD_REQUEST
    );
    s.stop().await;

    // Within the grace, but the device was disabled meanwhile: refused, not reuse; enabled,
    // the successor works.
    let s = TestServer::start(&["--enable-token-rotation", "true", "--refresh-token-reuse-grace", "60s"]).await;
    let owner = admin(&s).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let (_, first) = refresh(&s, old).await;
    let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
    let row = page
        .split("class=\"session-row\"")
        .find(|r| r.contains("data-status=\"active\""))
        .unwrap();
    let id = row.split("data-id=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    let (status, body) = refresh(&s, old).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/enable"), &[]).await;
    assert_eq!(refresh(&s, first["refresh_token"].as_str().unwrap()).await.0, StatusCode::OK);

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_or_an_enable_racing_a_refresh_leaves_one_consistent_answer() {
    let s = TestServer::start(&["--enable-token-rotation", "true"]).await;
    let owner = admin(&s).await;
    for round in 0..6 {
        let tokens = s.tokens_for(&s.client_id).await;
        let old = tokens["refresh_token"].as_str().unwrap().to_owned();
        let (_, page, _) = owner.get(&s.url("/account/sessions")).await;
        // The live one (those of earlier rounds, revoked, may be listed first).
        let row = page
            .split("class=\"session-row\"")
            .find(|r| r.contains("data-status=\"active\""))
            .unwrap();
        let id = row.split("data-id=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let csrf = csrf_of(&page);
        let (url, form) = (s.url(&format!("/account/sessions/{id}/disable")), [("csrf_token", csrf.as_str())]);
        let disable = owner.post(&url, &form);
        let (disabled, (status, body)) = tokio::join!(disable, refresh(&s, &old));
        assert_eq!(disabled.0, StatusCode::SEE_OTHER);
        // Whichever came first, nothing of this authorization works while it is disabled.
        let new = if status == StatusCode::OK {
            let new = body["refresh_token"].as_str().unwrap().to_owned();
            assert_eq!(
                tokeninfo(&s, body["access_token"].as_str().unwrap()).await,
                StatusCode::UNAUTHORIZED,
                "round {round}"
            );
            Some(new)
        } else {
            assert_eq!(body["error"], "invalid_grant", "round {round}: {body}");
            None
        };
        assert_eq!(refresh(&s, new.as_deref().unwrap_or(&old)).await.0, StatusCode::BAD_REQUEST);
        // An enable racing a refresh of the live token: refused before, served after.
        let url = s.url(&format!("/account/sessions/{id}/enable"));
        let enable = owner.post(&url, &form);
        let live = new.clone().unwrap_or(old.clone());
        let (enabled, (status, body)) = tokio::join!(enable, refresh(&s, &live));
        assert_eq!(enabled.0, StatusCode::SEE_OTHER);
        let current = match status {
            StatusCode::OK => body["refresh_token"].as_str().unwrap().to_owned(),
            _ => {
                assert_eq!(body["error"], "invalid_grant", "round {round}: {body}");
                live
            }
        };
        // Enabled: the one current refresh token works, and the authorization is whole.
        let (status, body) = refresh(&s, &current).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        assert_eq!(tokeninfo(&s, body["access_token"].as_str().unwrap()).await, StatusCode::OK);
        press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/revoke"), &[]).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_authorization_stays_disabled_across_a_restart() {
    let s = TestServer::start(&[]).await;
    let tokens = s.tokens_for(&s.client_id).await;
    let (access, refresh_token) = (
        tokens["access_token"].as_str().unwrap().to_owned(),
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    );
    let owner = admin(&s).await;
    let (id, _) = my_only_device(&s, &owner).await;
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/disable"), &[]).await;
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, &[]).await;
    assert_eq!(tokeninfo(&s, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh(&s, &refresh_token).await.0, StatusCode::BAD_REQUEST);
    let owner = admin(&s).await;
    assert_eq!(my_only_device(&s, &owner).await.1, "disabled");
    press(&s, &owner, "/account/sessions", &format!("/account/sessions/{id}/enable"), &[]).await;
    assert_eq!(tokeninfo(&s, &access).await, StatusCode::OK);
    assert_eq!(refresh(&s, &refresh_token).await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_logout_signs_out_from_our_own_pages_and_asks_from_anywhere_else() {
    let s = TestServer::start(&[]).await;
    let person = admin(&s).await;
    let signed_in = |p: &Person| {
        let url = s.url("/account");
        let p = p.http.clone();
        async move { p.get(url).send().await.unwrap().status() == StatusCode::OK }
    };
    // From another site (or with no word on it): asked to confirm, still signed in.
    for headers in [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("referer", "http://evil.example/logout".to_owned())],
        vec![("referer", format!("{}.evil.example/", s.base))],
        vec![("origin", "null".to_owned())],
        vec![("sec-fetch-site", "cross-site".to_owned()), ("referer", s.url("/account"))],
        vec![("sec-fetch-site", "none".to_owned())],
        vec![],
    ] {
        let mut r = person.http.get(s.url("/logout"));
        for (k, v) in &headers {
            r = r.header(*k, v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{headers:?}");
        assert!(r.text().await.unwrap().contains("csrf_token"));
        assert!(signed_in(&person).await, "{headers:?}");
    }
    // From our own pages: signed out at once.
    for headers in [
        vec![("sec-fetch-site", "same-origin".to_owned())],
        vec![("origin", s.base.clone())],
        vec![("referer", s.url("/account/sessions"))],
    ] {
        let p = admin(&s).await;
        let mut r = p.http.get(s.url("/logout"));
        for (k, v) in &headers {
            r = r.header(*k, v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{headers:?}");
        assert_eq!(r.headers()["location"], "/login");
        assert!(!signed_in(&p).await, "{headers:?}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_client_answer_of_the_token_endpoints_carries_a_basic_challenge() {
    let s = TestServer::start(&[]).await;
    let (confidential, _) = s.create_client("Backend", true, None).await;
    let http = http().build().unwrap();
    let cases = [
        (
            "/oauth/token",
            Some((confidential.as_str(), "wrong-secret")),
            vec![("grant_type", "refresh_token"), ("refresh_token", "x")],
        ),
        (
            "/oauth/token",
            None,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", "no-such-client"),
            ],
        ),
        ("/oauth/device/code", None, vec![("client_id", "no-such-client")]),
        (
            "/oauth/introspect",
            Some((confidential.as_str(), "wrong-secret")),
            vec![("token", "x")],
        ),
        ("/oauth/introspect", None, vec![("token", "x")]),
        ("/oauth/revoke", Some((confidential.as_str(), "wrong-secret")), vec![("token", "x")]),
    ];
    for (path, basic, form) in cases {
        let mut r = http.post(s.url(path)).form(&form);
        if let Some((id, secret)) = basic {
            r = r.basic_auth(id, Some(secret));
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} {form:?}");
        let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(
            challenge.as_deref().is_some_and(|c| c.starts_with("Basic")),
            "{path}: {challenge:?}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{path}");
    }
    s.stop().await;
}
