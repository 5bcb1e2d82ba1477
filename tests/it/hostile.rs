//! Every route swept with hostile input: broken encodings, huge and repeated parameters, the
//! wrong content type, JSON where a form belongs, null bytes, very long codes, HTML and SQL.
//! Every answer must be a clear 4xx (or a redirect or a page), never a 5xx or a dropped
//! connection, nothing may be reflected unescaped, and nothing stored may change.

use authgate_actors::directory::DirectoryMsg;
use authgate_actors::token::TokenMsg;
use reqwest::StatusCode;

use crate::common::{ADMIN_PASSWORD, Person, TestServer, csrf_of};

const XSS: &str = "<script>alert(1)</script>";

const GETS: [&str; 23] = [
    "/",
    "/health",
    "/login",
    "/logout",
    "/device",
    "/account",
    "/account/sessions",
    "/admin",
    "/admin/clients",
    "/admin/clients/new",
    "/admin/clients/00000000-0000-0000-0000-000000000000",
    "/admin/users",
    "/admin/sessions",
    "/admin/audit",
    "/oauth/tokeninfo",
    "/oauth/userinfo",
    "/assets/..%2f..%2fCargo.toml",
    "/favicon.ico",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/oauth/authorize",
    "/.well-known/jwks.json",
    "/metrics",
];

const POSTS: [&str; 26] = [
    "/oauth/device/code",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/introspect",
    "/oauth/userinfo",
    "/oauth/authorize",
    "/login",
    "/device/verify",
    "/device/approve",
    "/account/password",
    "/account/sessions/revoke-all",
    "/account/sessions/%00%ff/revoke",
    "/account/sessions/%00%ff/disable",
    "/account/sessions/x/rename",
    "/admin/sessions/x/disable",
    "/admin/sessions/%3Cscript%3E/enable",
    "/admin/clients/x/disable-tokens",
    "/admin/clients/x/enable-tokens",
    "/admin/clients",
    "/admin/clients/x",
    "/admin/clients/x/delete",
    "/admin/users",
    "/admin/users/x/disable",
    "/admin/sessions/x/revoke",
    "/oauth/device/code/../token",
    // Last: with a valid CSRF token this ends the session the sweep runs in.
    "/logout",
];

/// Hostile query strings for GETs.
fn queries() -> Vec<String> {
    vec![
        String::new(),
        format!("?user_code={}&next=//evil.example&page=-1", "%ff%fe%00"),
        format!("?q=%27%20OR%201%3D1%20--&user={XSS}&event=%00&before=zz&client=%c3%28&status={XSS}"),
        "?status=disabled&status=revoked&user_code=%00".into(),
        format!("?access_token={}", "A".repeat(6000)),
        "?page=99999999999999999999999&user_code=BCDF-GHJK&user_code=ZZZZ-ZZZZ".into(),
        "?a=%zz&b=%".into(),
        format!(
            "?response_type=code&client_id=%00&redirect_uri=javascript:alert(1)&state={XSS}&nonce={XSS}&code_challenge={}",
            "A".repeat(3000)
        ),
    ]
}

/// Hostile bodies for POSTs: (content type, body).
fn bodies(csrf: &str) -> Vec<(Option<&'static str>, Vec<u8>)> {
    let form = Some("application/x-www-form-urlencoded");
    let with_csrf = |b: &str| format!("{b}&csrf_token={csrf}").into_bytes();
    vec![
        (form, b"user_code=\xff\xfe&client_id=\xc3\x28&username=\xff".to_vec()),
        (form, with_csrf(&format!("x={}", "A".repeat(15_000)))),
        (form, format!("x={}", "A".repeat(20_000)).into_bytes()),
        (form, with_csrf("client_id=a&client_id=b&grant_type=x&grant_type=y&token=1&token=2")),
        (
            form,
            with_csrf("grant_type=client_credentials&client_id=x&resource=javascript:alert(1)%23x&resource=%00&resource=%3Cscript%3E"),
        ),
        (
            Some("application/json"),
            br#"{"client_id":"x","grant_type":"refresh_token"}"#.to_vec(),
        ),
        (
            form,
            with_csrf("client_id=%00&username=%00admin&user_code=ABCD%00EFGH&password=%00"),
        ),
        (form, with_csrf(&format!("user_code={}&action=approve", "B".repeat(5000)))),
        (
            form,
            with_csrf(&format!(
                "action=approve&request=response_type%3Dcode%26client_id%3D%2500%26redirect_uri%3Djavascript%3Aalert(1)%26state%3D{}",
                "%253Cscript%253E"
            )),
        ),
        (
            form,
            with_csrf("grant_type=authorization_code&code=%00&client_id=x&code_verifier=%3Cscript%3E&redirect_uri=javascript:alert(1)"),
        ),
        (
            form,
            with_csrf(&format!(
                "username=%27%20OR%201%3D1%20--%20x&password=%27%20OR%20%27%27%3D%27&name=%3Cimg%20src%3Dx%3E%20%0A&device_name=%3Cscript%3E%00&user_code={}&scopes=%3Cb%3E",
                "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
            )),
        ),
        (form, b"a=%zz&b=%&=&&&==".to_vec()),
        (None, b"client_id=x".to_vec()),
        (Some("text/plain"), b"client_id=x".to_vec()),
        (Some("multipart/form-data; boundary=x"), b"--x\r\n\r\n--x--".to_vec()),
    ]
}

/// Users, clients and authorizations: what no hostile request may change.
async fn state(s: &TestServer) -> (usize, usize, usize) {
    let dir = s.server.actors.directory().clone();
    let users = dir.ask(|reply| DirectoryMsg::ListUsers { reply }).await.unwrap().len();
    let clients = dir.ask(|reply| DirectoryMsg::ListClients { reply }).await.unwrap().len();
    let token = s.server.actors.token().clone();
    let auths = token
        .ask(|reply| TokenMsg::ListAuthorizations {
            query: Default::default(),
            now: authgate_actors::time::wall_clock_ms(),
            reply,
        })
        .await
        .unwrap()
        .len();
    (users, clients, auths)
}

async fn sweep(s: &TestServer, who: &str, http: &reqwest::Client, csrf: &str) -> usize {
    let mut n = 0;
    for path in GETS {
        for q in queries() {
            let url = format!("{}{path}{q}", s.base);
            let r = http
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{who} GET {path}{q}: no answer: {e}"));
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(!status.is_server_error(), "{who} GET {path}{q}: {status} {body}");
            assert!(!body.contains(XSS), "{who} GET {path}: reflected unescaped");
            n += 1;
        }
    }
    for path in POSTS {
        for (ctype, body) in bodies(csrf) {
            let mut req = http.post(format!("{}{path}", s.base)).body(body.clone());
            if let Some(c) = ctype {
                req = req.header("content-type", c);
            }
            let r = req.send().await.unwrap_or_else(|e| panic!("{who} POST {path}: no answer: {e}"));
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            assert!(!status.is_server_error(), "{who} POST {path} ({ctype:?}): {status} {text}");
            assert!(!text.contains(XSS), "{who} POST {path}: reflected unescaped");
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_hostile_input_with_a_clear_4xx_and_changes_nothing() {
    let s = TestServer::start(&[]).await;
    s.create_user("mallory", "mallory-password").await;
    // A bystander's tokens (the sweeps' own sessions may legitimately revoke their own).
    s.create_user("bystander", "bystander-password").await;
    let bystander = Person::new();
    bystander.login(&s, "bystander", "bystander-password").await;
    let dc = s.device_code(&s.client_id).await;
    bystander.decide(&s, dc["user_code"].as_str().unwrap(), true).await;
    let (_, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    let before = state(&s).await;

    let anonymous = crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut n = sweep(&s, "anonymous", &anonymous, "x").await;
    let user = Person::new();
    user.login(&s, "mallory", "mallory-password").await;
    let (_, page, _) = user.get(&s.url("/account")).await;
    n += sweep(&s, "user", &user.http, &csrf_of(&page)).await;
    let admin = Person::new();
    admin.login(&s, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = admin.get(&s.url("/admin/clients")).await;
    n += sweep(&s, "admin", &admin.http, &csrf_of(&page)).await;
    assert!(n > 900, "{n} requests");

    assert_eq!(
        state(&s).await,
        before,
        "no hostile request changed users, clients or authorizations"
    );
    let (status, _) = crate::common::get_json(&s.url("/oauth/tokeninfo"), tokens["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK, "earlier tokens still valid");
    // Still serving normally.
    assert_eq!(Person::new().get(&s.url("/login")).await.0, StatusCode::OK);
    s.stop().await;
}
