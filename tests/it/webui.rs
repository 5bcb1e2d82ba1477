//! The account and admin pages over HTTP: ownership, CSRF, admin-only access, the effects of
//! disabling and deleting on live tokens, and the audit trail each act leaves.

use std::time::Duration;

use authgate_actors::audit::{AuditFilter, AuditMsg, EventKind};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, DEVICE_GRANT, Person, TestServer, csrf_of, get_json, post_form};

/// A device flow for `client_id` approved by `person` (already signed in).
async fn authorize(s: &TestServer, person: &Person, client_id: &str) -> Value {
    let dc = s.device_code(client_id).await;
    let (status, page) = person.decide(s, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, body) = s.poll(client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn signed_in(s: &TestServer, user: &str, password: &str) -> Person {
    let p = Person::new();
    p.login(s, user, password).await;
    p
}

async fn token_ok(s: &TestServer, access: &Value) -> bool {
    get_json(&s.url("/oauth/tokeninfo"), access["access_token"].as_str()).await.0 == StatusCode::OK
}

async fn refresh(s: &TestServer, tokens: &Value, client_id: &str) -> (StatusCode, Value) {
    post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", client_id),
        ],
    )
    .await
}

/// The `data-id`s of the session rows on a page, in order.
fn row_ids(page: &str) -> Vec<String> {
    page.split("class=\"session-row\" data-id=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

/// Audit events of `kind`, newest first, read through the audit actor.
/// The recorded events of `kind`, once they have settled: recording never waits (an event
/// rides the store's next group commit after the answer went out), so the events of requests
/// just answered may still be on their way; the list is read until two reads 100 ms apart
/// agree (at most 3 s).
async fn audit(s: &TestServer, kind: EventKind) -> Vec<authgate_actors::audit::AuditEvent> {
    let actor = s.server.actors.audit_actor().clone();
    let read = || {
        let actor = actor.clone();
        async move {
            let filter = AuditFilter {
                kind: Some(kind),
                ..Default::default()
            };
            actor
                .ask(|reply| AuditMsg::Query {
                    filter,
                    before: None,
                    limit: 500,
                    reply,
                })
                .await
                .unwrap()
                .unwrap()
                .events
        }
    };
    let mut last = read().await;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = read().await;
        if now.len() == last.len() {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_see_and_revoke_only_their_own_device_authorizations() {
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    s.create_user("bob", "bob-password").await;
    let alice = signed_in(&s, "alice", "alice-password").await;
    let bob = signed_in(&s, "bob", "bob-password").await;
    let first = authorize(&s, &alice, &s.client_id).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = authorize(&s, &alice, &s.client_id).await;
    let bobs = authorize(&s, &bob, &s.client_id).await;

    let (status, page, _) = alice.get(&s.url("/account/sessions")).await;
    assert_eq!(status, StatusCode::OK);
    let ids = row_ids(&page);
    assert_eq!(ids.len(), 2, "alice sees her two devices, not bob's");
    assert!(page.contains("AuthGate CLI") && page.contains(&s.client_id));
    assert_eq!(page.matches("badge-active").count(), 2);
    let (_, bob_page, _) = bob.get(&s.url("/account/sessions")).await;
    let bob_ids = row_ids(&bob_page);
    assert_eq!(bob_ids.len(), 1);
    assert!(!ids.contains(&bob_ids[0]));
    let csrf = csrf_of(&page);

    // Someone else's authorization is "not found", and nothing happens to it.
    let (status, _, _) = alice
        .post(
            &s.url(&format!("/account/sessions/{}/revoke", bob_ids[0])),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(token_ok(&s, &bobs).await);
    // Without the session's CSRF token: 403, nothing revoked.
    let (status, _, _) = alice.post(&s.url(&format!("/account/sessions/{}/revoke", ids[1])), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = alice
        .post(&s.url("/account/sessions/revoke-all"), &[("csrf_token", "forged")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(token_ok(&s, &first).await && token_ok(&s, &second).await);

    // Newest first: ids[1] is the first authorization. Revoking it ends its tokens at once.
    let (status, _, location) = alice
        .post(&s.url(&format!("/account/sessions/{}/revoke", ids[1])), &[("csrf_token", &csrf)])
        .await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/account/sessions")));
    assert!(!token_ok(&s, &first).await, "tokeninfo says invalid at once");
    let (status, body) = refresh(&s, &first, &s.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert!(token_ok(&s, &second).await, "the other device keeps working");
    let (_, page, _) = alice.get(&s.url("/account/sessions")).await;
    assert!(page.contains("id=\"flash\"") && page.contains("was revoked"), "a flash message");
    assert_eq!(page.matches("badge-revoked").count(), 1);
    let (_, page, _) = alice.get(&s.url("/account/sessions")).await;
    assert!(!page.contains("id=\"flash\""), "shown once");

    let (status, _, _) = alice.post(&s.url("/account/sessions/revoke-all"), &[("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!token_ok(&s, &second).await);
    assert!(token_ok(&s, &bobs).await, "bob is untouched");
    let (_, page, _) = alice.get(&s.url("/account/sessions")).await;
    assert_eq!(page.matches("badge-revoked").count(), 2);
    assert!(!page.contains("id=\"revoke-all\""), "nothing left to revoke");

    let revoked = audit(&s, EventKind::TokenRevoked).await;
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|e| e.actor == "alice" && e.ip.as_deref() == Some("127.0.0.1")));

    // Signed out: the page asks to sign in.
    let (status, _, location) = Person::new().get(&s.url("/account/sessions")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().starts_with("/login?next="));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_page_and_pagination_past_fifty() {
    let s = TestServer::start(&[]).await;
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = admin.get(&s.url("/account/sessions")).await;
    assert!(page.contains("id=\"empty\"") && page.contains("No devices yet"));
    for _ in 0..51 {
        authorize(&s, &admin, &s.client_id).await;
    }
    let (_, page, _) = admin.get(&s.url("/account/sessions")).await;
    assert_eq!(row_ids(&page).len(), 50);
    assert!(page.contains("Page 1 of 2"));
    let (_, page2, _) = admin.get(&s.url("/account/sessions?page=2")).await;
    assert_eq!(row_ids(&page2).len(), 1);
    let (status, _, _) = admin.get(&s.url("/account/sessions?page=abc")).await;
    assert_eq!(status, StatusCode::OK, "a bad page number shows the first page");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_the_current_password_and_ends_other_sessions() {
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    let here = signed_in(&s, "alice", "alice-password").await;
    let elsewhere = signed_in(&s, "alice", "alice-password").await;
    let (status, page, _) = here.get(&s.url("/account")).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    let change = |current: &'static str, new: &'static str| {
        let csrf = csrf.clone();
        let here = &here;
        let url = s.url("/account/password");
        async move {
            here.post(&url, &[("csrf_token", &csrf), ("current_password", current), ("new_password", new)])
                .await
        }
    };
    let (status, page, _) = change("wrong", "new-password-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("The current password is not correct."));
    let (status, page, _) = change("alice-password", "short").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("8 to 1024"));
    let (status, _, _) = here
        .post(
            &s.url("/account/password"),
            &[("current_password", "alice-password"), ("new_password", "new-password-1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let (status, _, location) = change("alice-password", "new-password-1").await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/account")));
    let (status, page, _) = here.get(&s.url("/account")).await;
    assert_eq!(status, StatusCode::OK, "this session stays");
    assert!(page.contains("Your password was changed"));
    let (status, _, location) = elsewhere.get(&s.url("/account")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the other session ended");
    assert!(location.unwrap().starts_with("/login"));
    assert_eq!(
        Person::new().try_login(&s, "alice", "alice-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        Person::new().try_login(&s, "alice", "new-password-1").await.0,
        StatusCode::SEE_OTHER
    );
    let changed = audit(&s, EventKind::PasswordChanged).await;
    assert_eq!(changed.iter().map(|e| e.success).collect::<Vec<_>>(), vec![true, false]);
    s.stop().await;

    // The current password is guessed under the sign-in throttle: a stolen session gets no
    // more tries than the sign-in page gives.
    let s = TestServer::start(&["--login-failure-limit", "3"]).await;
    s.create_user("alice", "alice-password").await;
    let here = signed_in(&s, "alice", "alice-password").await;
    let csrf = csrf_of(&page_of(&here, &s, "/account").await);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let form = [
            ("csrf_token", csrf.as_str()),
            ("current_password", "guess"),
            ("new_password", "new-password-1"),
        ];
        statuses.push(here.post(&s.url("/account/password"), &form).await.0);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    s.stop().await;
}

const ADMIN_PAGES: [&str; 5] = [
    "/admin/clients",
    "/admin/clients/new",
    "/admin/users",
    "/admin/sessions",
    "/admin/audit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_is_for_administrators_only() {
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    let alice = signed_in(&s, "alice", "alice-password").await;
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;
    let anonymous = Person::new();
    for path in ADMIN_PAGES {
        assert_eq!(admin.get(&s.url(path)).await.0, StatusCode::OK, "{path}");
        assert_eq!(alice.get(&s.url(path)).await.0, StatusCode::FORBIDDEN, "{path}");
        let (status, _, location) = anonymous.get(&s.url(path)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert!(location.unwrap().starts_with("/login"));
    }
    let (_, page, _) = alice.get(&s.url("/account")).await;
    assert!(!page.contains("href=\"/admin/clients\""), "no admin link for a user");
    let (_, page, _) = admin.get(&s.url("/account")).await;
    assert!(page.contains("href=\"/admin/clients\""));
    // A user's valid session and CSRF token still do not reach admin actions.
    let csrf = csrf_of(&page_of(&alice, &s, "/account").await);
    for (path, form) in [
        ("/admin/clients", vec![("name", "x")]),
        (
            "/admin/users",
            vec![("username", "mallory"), ("password", "mallory-password"), ("is_admin", "1")],
        ),
    ] {
        let mut form = form;
        form.push(("csrf_token", &csrf));
        let (status, _, _) = alice.post(&s.url(path), &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(audit(&s, EventKind::UserCreated).await.is_empty());
    s.stop().await;
}

async fn page_of(p: &Person, s: &TestServer, path: &str) -> String {
    let (status, page, _) = p.get(&s.url(path)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {page}");
    page
}

/// The client id on the clients page for the row named `name`.
fn client_id_named(page: &str, name: &str) -> String {
    let at = page.find(&format!("<strong>{name}</strong>")).expect("row");
    let before = &page[..at];
    let start = before.rfind("data-id=\"").unwrap() + "data-id=\"".len();
    before[start..].split('"').next().unwrap().to_owned()
}

fn secret_on(page: &str) -> String {
    let start = page.find("id=\"client-secret\" class=\"secret\">").unwrap() + "id=\"client-secret\" class=\"secret\">".len();
    page[start..].split('<').next().unwrap().to_owned()
}

async fn device_code_with(s: &TestServer, id: &str, secret: &str) -> (StatusCode, Value) {
    let r = crate::common::http()
        .build()
        .unwrap()
        .post(s.url("/oauth/device/code"))
        .basic_auth(id, Some(secret))
        .form(&[("scope", "read")])
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_manage_clients_and_their_tokens_follow() {
    let s = TestServer::start(&[]).await;
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;
    let csrf = csrf_of(&page_of(&admin, &s, "/admin/clients").await);

    // Bad input: a clear message, nothing created.
    let (status, page, _) = admin
        .post(
            &s.url("/admin/clients"),
            &[
                ("csrf_token", &csrf),
                ("name", ""),
                ("type", "public"),
                ("grant_type", "device_code"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("client names are 1 to 100 characters"));
    let (status, page, _) = admin
        .post(
            &s.url("/admin/clients"),
            &[
                ("csrf_token", &csrf),
                ("name", "TV"),
                ("grant_type", "device_code"),
                ("scopes", "read \"bad\""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("is not a valid scope"), "{page}");
    let (status, _, _) = admin.post(&s.url("/admin/clients"), &[("name", "no csrf")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page, _) = admin
        .post(&s.url("/admin/clients"), &[("csrf_token", &csrf), ("name", "No grants")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Choose at least one grant type."));

    // A public client.
    let (status, _, location) = admin
        .post(
            &s.url("/admin/clients"),
            &[
                ("csrf_token", &csrf),
                ("name", "Living-room TV"),
                ("description", "Smart TV app"),
                ("type", "public"),
                ("grant_type", "device_code"),
                ("grant_type", "refresh_token"),
                ("scopes", "read tv:watch"),
                ("redirect_uris", "https://tv.example/cb\n"),
            ],
        )
        .await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/admin/clients")));
    let page = page_of(&admin, &s, "/admin/clients").await;
    assert!(page.contains("Living-room TV") && page.contains("Smart TV app"));
    let tv = client_id_named(&page, "Living-room TV");
    assert!(uuid::Uuid::parse_str(&tv).is_ok(), "client ids are UUIDs");
    let tokens = authorize(&s, &admin, &tv).await;
    assert_eq!(tokens["scope"], "read tv:watch");

    // A confidential client: the secret is shown once.
    let (status, page, _) = admin
        .post(
            &s.url("/admin/clients"),
            &[
                ("csrf_token", &csrf),
                ("name", "CI runner"),
                ("type", "confidential"),
                ("grant_type", "device_code"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let secret = secret_on(&page);
    let page = page_of(&admin, &s, "/admin/clients").await;
    let ci = client_id_named(&page, "CI runner");
    assert!(!page.contains(&secret), "never shown again");
    assert_eq!(device_code_with(&s, &ci, &secret).await.0, StatusCode::OK);
    let (status, page, _) = admin
        .post(&s.url(&format!("/admin/clients/{ci}/rotate-secret")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let rotated = secret_on(&page);
    assert_ne!(rotated, secret);
    assert_eq!(
        device_code_with(&s, &ci, &secret).await.0,
        StatusCode::UNAUTHORIZED,
        "the old secret is dead"
    );
    assert_eq!(device_code_with(&s, &ci, &rotated).await.0, StatusCode::OK);
    let (status, _, _) = admin
        .post(&s.url(&format!("/admin/clients/{tv}/rotate-secret")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "public clients have no secret");

    // Edit.
    let form = page_of(&admin, &s, &format!("/admin/clients/{tv}")).await;
    assert!(form.contains("value=\"Living-room TV\"") && form.contains("tv.example"), "{form}");
    let (status, _, _) = admin
        .post(
            &s.url(&format!("/admin/clients/{tv}")),
            &[
                ("csrf_token", &csrf),
                ("name", "Bedroom TV"),
                ("grant_type", "device_code"),
                ("scopes", "read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let rec = s.server.actors.clients().get(&tv).unwrap().clone();
    assert_eq!((rec.name.as_str(), rec.scopes.clone()), ("Bedroom TV", vec!["read".to_string()]));
    assert!(!rec.allows_grant("refresh_token"));

    // Disable: invalid_client, and its tokens stop validating; enable brings them back.
    let (status, _, _) = admin
        .post(&s.url(&format!("/admin/clients/{tv}/disable")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", &tv)]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    assert!(!token_ok(&s, &tokens).await);
    admin
        .post(&s.url(&format!("/admin/clients/{tv}/enable")), &[("csrf_token", &csrf)])
        .await;
    assert!(token_ok(&s, &tokens).await);

    // Delete: gone, and its tokens revoked.
    let (status, _, _) = admin
        .post(&s.url(&format!("/admin/clients/{tv}/delete")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(s.server.actors.clients().get(&tv).is_none());
    assert!(!token_ok(&s, &tokens).await);
    assert_eq!(admin.get(&s.url(&format!("/admin/clients/{tv}"))).await.0, StatusCode::NOT_FOUND);
    let (status, _, _) = admin
        .post(&s.url(&format!("/admin/clients/{tv}/delete")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let created = audit(&s, EventKind::ClientCreated).await;
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e.actor == "admin" && e.ip.as_deref() == Some("127.0.0.1")));
    assert_eq!(audit(&s, EventKind::ClientChanged).await.len(), 4, "rotate, edit, disable, enable");
    assert_eq!(audit(&s, EventKind::ClientDeleted).await[0].subject, tv);
    s.stop().await;
}

/// The id of `username`'s row on the users page.
async fn user_id(s: &TestServer, username: &str) -> String {
    let dir = s.server.actors.directory().clone();
    let users = dir
        .ask(|reply| authgate_actors::directory::DirectoryMsg::ListUsers { reply })
        .await
        .unwrap();
    users.into_iter().find(|u| u.username == username).unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_manage_users_and_disable_or_delete_ends_their_access() {
    let s = TestServer::start(&[]).await;
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;
    let csrf = csrf_of(&page_of(&admin, &s, "/admin/users").await);
    let (status, _, _) = admin
        .post(
            &s.url("/admin/users"),
            &[("csrf_token", &csrf), ("username", "carol"), ("password", "carol-password")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, page, _) = admin
        .post(
            &s.url("/admin/users"),
            &[("csrf_token", &csrf), ("username", "carol"), ("password", "carol-password")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("already exists"));
    let (status, _, _) = admin
        .post(
            &s.url("/admin/users"),
            &[("csrf_token", &csrf), ("username", "dave"), ("password", "short")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let page = page_of(&admin, &s, "/admin/users?q=car").await;
    assert!(
        page.contains("data-username=\"carol\"") && !page.contains("data-username=\"admin\""),
        "search"
    );

    let carol_id = user_id(&s, "carol").await;
    let carol = signed_in(&s, "carol", "carol-password").await;
    let tokens = authorize(&s, &carol, &s.client_id).await;
    assert_eq!(carol.get(&s.url("/admin/users")).await.0, StatusCode::FORBIDDEN);

    // Reset password.
    let act = |action: &str, extra: Vec<(&'static str, &'static str)>| {
        let mut form = vec![("csrf_token".to_owned(), csrf.clone())];
        form.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        let url = s.url(&format!("/admin/users/{carol_id}/{action}"));
        let admin = &admin;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            admin.post(&url, &pairs).await
        }
    };
    assert_eq!(
        act("password", vec![("password", "carol-new-password")]).await.0,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        Person::new().try_login(&s, "carol", "carol-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    let carol = signed_in(&s, "carol", "carol-new-password").await;

    // Grant and remove admin.
    assert_eq!(act("make-admin", vec![]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(carol.get(&s.url("/admin/users")).await.0, StatusCode::OK);
    assert_eq!(act("remove-admin", vec![]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(carol.get(&s.url("/admin/users")).await.0, StatusCode::FORBIDDEN);

    // Disable: no sign-in, no token validation, no refresh; enable restores the tokens.
    assert_eq!(act("disable", vec![]).await.0, StatusCode::SEE_OTHER);
    assert_eq!(
        Person::new().try_login(&s, "carol", "carol-new-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(carol.get(&s.url("/account")).await.0, StatusCode::SEE_OTHER, "her session ended");
    assert!(!token_ok(&s, &tokens).await);
    let (status, body) = refresh(&s, &tokens, &s.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(act("enable", vec![]).await.0, StatusCode::SEE_OTHER);
    assert!(token_ok(&s, &tokens).await);

    // Delete: the user is gone and the tokens revoked for good.
    assert_eq!(act("delete", vec![]).await.0, StatusCode::SEE_OTHER);
    assert!(!token_ok(&s, &tokens).await);
    assert_eq!(refresh(&s, &tokens, &s.client_id).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        Person::new().try_login(&s, "carol", "carol-new-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(act("delete", vec![]).await.0, StatusCode::NOT_FOUND);

    // The last enabled administrator cannot be removed.
    let admin_id = user_id(&s, "admin").await;
    for action in ["remove-admin", "disable", "delete"] {
        let (status, page, _) = admin
            .post(&s.url(&format!("/admin/users/{admin_id}/{action}")), &[("csrf_token", &csrf)])
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}");
        assert!(page.contains("no enabled administrator"));
    }
    assert_eq!(audit(&s, EventKind::UserCreated).await.len(), 1);
    assert_eq!(audit(&s, EventKind::UserChanged).await.len(), 5);
    assert_eq!(audit(&s, EventKind::UserDeleted).await[0].subject, "carol");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_revoke_anyones_authorization_and_read_the_audit_trail() {
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    let alice = signed_in(&s, "alice", "alice-password").await;
    let tokens = authorize(&s, &alice, &s.client_id).await;
    assert_eq!(refresh(&s, &tokens, &s.client_id).await.0, StatusCode::OK);
    assert_eq!(Person::new().try_login(&s, "alice", "wrong").await.0, StatusCode::UNAUTHORIZED);
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;

    let page = page_of(&admin, &s, "/admin/sessions").await;
    let ids = row_ids(&page);
    assert_eq!(ids.len(), 1);
    assert!(page.contains("alice"));
    let page = page_of(&admin, &s, "/admin/sessions?user=bob").await;
    assert!(row_ids(&page).is_empty() && page.contains("No active authorizations"));
    let csrf = csrf_of(&page);
    let (status, _, _) = admin
        .post(&s.url(&format!("/admin/sessions/{}/revoke", ids[0])), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!token_ok(&s, &tokens).await);
    assert_eq!(
        admin
            .post(&s.url("/admin/sessions/not-an-id/revoke"), &[("csrf_token", &csrf)])
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Every act so far left its event.
    for kind in [
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::DeviceCodeIssued,
        EventKind::DeviceApproved,
        EventKind::TokenIssued,
        EventKind::TokenRefreshed,
        EventKind::TokenRevoked,
    ] {
        assert!(!audit(&s, kind).await.is_empty(), "{kind:?}");
    }
    let failed = &audit(&s, EventKind::LoginFailed).await[0];
    assert_eq!(
        (failed.actor.as_str(), failed.success, failed.ip.as_deref()),
        ("alice", false, Some("127.0.0.1"))
    );
    let issued = &audit(&s, EventKind::TokenIssued).await[0];
    assert_eq!(
        (issued.subject.as_str(), issued.client_id.as_deref()),
        ("alice", Some(s.client_id.as_str()))
    );

    // The audit page: newest first, filters by event, user and client.
    let page = page_of(&admin, &s, "/admin/audit").await;
    let kinds: Vec<&str> = page
        .split("class=\"audit-row\" data-kind=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "token_revoked",
            "login_succeeded",
            "login_failed",
            "token_refreshed",
            "token_issued",
            "device_approved",
            "device_code_issued",
            "login_succeeded"
        ],
        "newest first"
    );
    let page = page_of(&admin, &s, "/admin/audit?event=login_failed").await;
    assert_eq!(page.matches("class=\"audit-row\"").count(), 1);
    let page = page_of(&admin, &s, "/admin/audit?user=alice&event=token_revoked").await;
    assert_eq!(page.matches("class=\"audit-row\"").count(), 1);
    let page = page_of(&admin, &s, &format!("/admin/audit?client={}&event=device_code_issued", s.client_id)).await;
    assert_eq!(page.matches("class=\"audit-row\"").count(), 1);
    let page = page_of(&admin, &s, "/admin/audit?event=nonsense&before=zz%00").await;
    assert!(page.contains("class=\"audit-row\""), "unknown filters are ignored");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_pages_back_and_is_pruned_past_retention() {
    // Retention long enough that nothing is pruned while the pages are read, on a loaded
    // machine and on either backend.
    let s = TestServer::start(&["--audit-retention", "8s", "--cleanup-interval", "1s"]).await;
    for _ in 0..55 {
        let _ = post_form(
            &s.url("/oauth/token"),
            &[("grant_type", DEVICE_GRANT), ("device_code", "x"), ("client_id", &s.client_id)],
        )
        .await;
        s.device_code(&s.client_id).await;
    }
    let admin = signed_in(&s, "admin", ADMIN_PASSWORD).await;
    let page = page_of(&admin, &s, "/admin/audit").await;
    assert_eq!(page.matches("class=\"audit-row\"").count(), 50);
    let start = page.find("id=\"older\" class=\"btn btn-secondary btn-small\" href=\"").unwrap();
    let href = page[start..]
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let older = page_of(&admin, &s, &href).await;
    assert_eq!(older.matches("class=\"audit-row\"").count(), 6, "55 codes + 1 sign-in, 50 per page");
    // Past retention, the periodic cleanup removes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    loop {
        if audit(&s, EventKind::DeviceCodeIssued).await.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "old events were not pruned");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.stop().await;
}
