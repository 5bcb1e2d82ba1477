//! The pages driven in a real headless Chromium (through ChromeDriver): sign in, enter the
//! code, approve, see success, and the device gets its token.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test fails, unless AUTHGATE_SKIP_BROWSER_TESTS=1 says to skip it on purpose.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use reqwest::StatusCode;

use crate::common::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn chromedriver() -> Option<(Driver, String)> {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if crate::common::http()
            .build()
            .unwrap()
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok()
        {
            return Some((driver, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A headless Chromium session (with its driver and profile directory, which must outlive it),
/// or `None` when the test should be skipped.
async fn browser(width: u32, height: u32) -> Option<(Driver, fantoccini::Client, tempfile::TempDir)> {
    let Some((driver, webdriver)) = chromedriver().await else {
        if std::env::var_os("AUTHGATE_SKIP_BROWSER_TESTS").is_some() {
            eprintln!("skipping: chromedriver not available and AUTHGATE_SKIP_BROWSER_TESTS is set");
            return None;
        }
        panic!("chromedriver is not installed: apt-get install chromium chromium-driver (or set AUTHGATE_SKIP_BROWSER_TESTS=1)");
    };
    let profile = tempfile::tempdir().unwrap();
    let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--window-size={width},{height}"), format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a Chromium session");
    Some((driver, b, profile))
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test]
async fn a_person_approves_a_device_in_headless_chromium() {
    let Some((_driver, b, _profile)) = browser(420, 900).await else {
        return;
    };
    let s = TestServer::start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let user_code = dc["user_code"].as_str().unwrap().to_owned();
    let wait = Duration::from_secs(15);

    // The device shows verification_uri_complete; the person opens it and must sign in first.
    b.goto(&s.url(&format!("/device?user_code={user_code}"))).await.unwrap();
    fill_sign_in(&b, "admin", ADMIN_PASSWORD).await;

    // Straight to the approval page (no second step), the code shown for comparison.
    let approve = b.wait().at_most(wait).for_element(Locator::Css("#approve")).await.unwrap();
    let page = b.source().await.unwrap();
    assert!(
        page.contains("AuthGate CLI") && page.contains(&user_code),
        "the confirmation names the client and the code"
    );
    let shot = b.screenshot().await.unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("confirm.png"), shot).unwrap();
    approve.click().await.unwrap();

    let title = b.wait().at_most(wait).for_element(Locator::Css("#result-title")).await.unwrap();
    assert_eq!(title.text().await.unwrap(), "Device approved");
    let shot = b.screenshot().await.unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("approved.png"), shot).unwrap();
    b.close().await.unwrap();

    let (status, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    s.stop().await;
}

async fn sign_in(b: &fantoccini::Client, s: &TestServer, next: &str, user: &str, password: &str) {
    b.goto(&s.url(&format!("/login?next={next}"))).await.unwrap();
    fill_sign_in(b, user, password).await;
}

/// Fills in and sends the sign-in form the browser is on (or is about to be sent to).
async fn fill_sign_in(b: &fantoccini::Client, user: &str, password: &str) {
    let wait = Duration::from_secs(15);
    b.wait()
        .at_most(wait)
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    b.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
    b.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();
}

async fn token_valid(s: &TestServer, tokens: &serde_json::Value) -> bool {
    get_json(&s.url("/oauth/tokeninfo"), tokens["access_token"].as_str()).await.0 == StatusCode::OK
}

/// Whether the page fits the viewport's width (nothing to scroll sideways).
async fn fits_width(b: &fantoccini::Client) -> bool {
    let v = b
        .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", vec![])
        .await
        .unwrap();
    v.as_bool() == Some(true)
}

/// The incident story: a person signs in, finds two devices, revokes the suspicious one (its
/// token stops working at once, the other's does not), then revokes everything.
#[tokio::test]
async fn incident_response_in_headless_chromium() {
    let Some((_driver, b, _profile)) = browser(390, 844).await else {
        return;
    };
    let wait = Duration::from_secs(15);
    let s = TestServer::start(&[]).await;
    s.create_user("alice", "alice-password").await;
    let (tv, _) = s.create_client("Living-room TV", false, None).await;
    let person = Person::new();
    person.login(&s, "alice", "alice-password").await;
    let mut tokens = Vec::new();
    for client in [s.client_id.clone(), tv.clone()] {
        let dc = s.device_code(&client).await;
        assert_eq!(person.decide(&s, dc["user_code"].as_str().unwrap(), true).await.0, StatusCode::OK);
        let (status, t) = s.poll(&client, dc["device_code"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        tokens.push(t);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (cli_tokens, tv_tokens) = (&tokens[0], &tokens[1]);

    sign_in(&b, &s, "/account/sessions", "alice", "alice-password").await;
    b.wait().at_most(wait).for_element(Locator::Css("#sessions")).await.unwrap();
    let rows = b.find_all(Locator::Css("tr.session-row")).await.unwrap();
    assert_eq!(rows.len(), 2, "two authorized devices");
    let page = b.source().await.unwrap();
    assert!(page.contains("Living-room TV") && page.contains("AuthGate CLI"));
    assert!(fits_width(&b).await, "usable at 390 px: no sideways scrolling");
    std::fs::write(screenshot_path("sessions-390x844.png"), b.screenshot().await.unwrap()).unwrap();

    // The newest (the TV) is first: revoke it.
    let first = &rows[0];
    assert!(first.text().await.unwrap().contains("Living-room TV"));
    first.find(Locator::Css("button.revoke")).await.unwrap().click().await.unwrap();
    let flash = b.wait().at_most(wait).for_element(Locator::Css("#flash")).await.unwrap();
    assert!(flash.text().await.unwrap().contains("Living-room TV"));
    assert!(!token_valid(&s, tv_tokens).await, "the revoked device's token stops at once");
    assert!(token_valid(&s, cli_tokens).await, "the other device keeps working");
    let statuses: Vec<String> = {
        let mut v = Vec::new();
        for r in b.find_all(Locator::Css("tr.session-row")).await.unwrap() {
            v.push(r.attr("data-status").await.unwrap().unwrap_or_default());
        }
        v
    };
    assert_eq!(statuses, ["revoked", "active"]);

    b.find(Locator::Css("#revoke-all")).await.unwrap().click().await.unwrap();
    // The page before also had a flash message: wait for the new one.
    let deadline = std::time::Instant::now() + wait;
    loop {
        let text = match b.find(Locator::Css("#flash")).await {
            Ok(f) => f.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("all your devices") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no flash after revoke-all: {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!token_valid(&s, cli_tokens).await);
    assert!(b.find(Locator::Css("#revoke-all")).await.is_err(), "nothing left to revoke");

    // Desktop width, and the admin console on both widths.
    b.set_window_size(1280, 900).await.unwrap();
    b.refresh().await.unwrap();
    b.wait().at_most(wait).for_element(Locator::Css("#sessions")).await.unwrap();
    assert!(fits_width(&b).await);
    std::fs::write(screenshot_path("sessions-1280x900.png"), b.screenshot().await.unwrap()).unwrap();
    b.delete_all_cookies().await.unwrap();
    sign_in(&b, &s, "/admin/clients", "admin", ADMIN_PASSWORD).await;
    b.wait().at_most(wait).for_element(Locator::Css("#clients")).await.unwrap();
    assert!(fits_width(&b).await);
    std::fs::write(screenshot_path("admin-clients-1280x900.png"), b.screenshot().await.unwrap()).unwrap();
    b.set_window_size(390, 844).await.unwrap();
    b.goto(&s.url("/admin/users")).await.unwrap();
    b.wait().at_most(wait).for_element(Locator::Css("#users")).await.unwrap();
    assert!(fits_width(&b).await, "the admin pages are usable on a phone too");
    std::fs::write(screenshot_path("admin-users-390x844.png"), b.screenshot().await.unwrap()).unwrap();
    b.close().await.unwrap();
    s.stop().await;
}

/// Clicks the first element `css` finds once it is there.
async fn click(b: &fantoccini::Client, css: &str) {
    let wait = Duration::from_secs(15);
    b.wait()
        .at_most(wait)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The `data-status` of the first device row once it reads `want` (the page reloads after a
/// button).
async fn first_row_status_becomes(b: &fantoccini::Client, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = match b.find(Locator::Css("tr.session-row")).await {
            Ok(r) => r.attr("data-status").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the device row did not become {want}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A phishing-style request: the code was asked for from another address (the device is
/// behind a proxy AuthGate trusts, the person is not); the approval page warns, the person
/// names the device, approves, and pauses and resumes it from My devices. On a phone and on
/// a desktop.
#[tokio::test]
async fn a_warned_approval_a_named_device_and_disable_enable_in_headless_chromium() {
    for (width, height) in [(390, 844), (1280, 900)] {
        let Some((_driver, b, _profile)) = browser(width, height).await else {
            return;
        };
        let s = TestServer::start(&["--trusted-proxies", "127.0.0.1/32"]).await;
        let r = http()
            .build()
            .unwrap()
            .post(s.url("/oauth/device/code"))
            .header("x-forwarded-for", "203.0.113.9")
            .form(&[("client_id", s.client_id.as_str())])
            .send()
            .await
            .unwrap();
        let dc: serde_json::Value = r.json().await.unwrap();
        let user_code = dc["user_code"].as_str().unwrap().to_owned();
        let wait = Duration::from_secs(15);

        sign_in(&b, &s, &format!("/device?user_code={user_code}"), "admin", ADMIN_PASSWORD).await;
        let warning = b.wait().at_most(wait).for_element(Locator::Css("#elsewhere")).await.unwrap();
        assert!(warning.text().await.unwrap().contains("different network"));
        let from = b.find(Locator::Css("#requested-from")).await.unwrap().text().await.unwrap();
        assert!(from.contains("203.0.113.9") && from.contains("127.0.0.1"), "{from}");
        let when = b.find(Locator::Css("#requested-at")).await.unwrap().text().await.unwrap();
        assert!(when.contains("ago") || when.contains("just now"), "{when}");
        assert_eq!(b.find(Locator::Css("#user-code")).await.unwrap().text().await.unwrap(), user_code);
        assert!(fits_width(&b).await, "the approval page fits {width} px");
        std::fs::write(
            screenshot_path(&format!("confirm-warning-{width}x{height}.png")),
            b.screenshot().await.unwrap(),
        )
        .unwrap();

        b.find(Locator::Css("#device_name"))
            .await
            .unwrap()
            .send_keys("Living room TV")
            .await
            .unwrap();
        click(&b, "#approve").await;
        b.wait().at_most(wait).for_element(Locator::Css("#result-title")).await.unwrap();
        let (status, tokens) = s.poll(&s.client_id, dc["device_code"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");

        b.goto(&s.url("/account/sessions")).await.unwrap();
        let name = b
            .wait()
            .at_most(wait)
            .for_element(Locator::Css("tr.session-row .device-name"))
            .await
            .unwrap();
        assert_eq!(name.text().await.unwrap(), "Living room TV");
        click(&b, "tr.session-row button.disable").await;
        first_row_status_becomes(&b, "disabled").await;
        assert!(!token_valid(&s, &tokens).await, "a disabled device's token is refused at once");
        let flash = b.find(Locator::Css("#flash")).await.unwrap().text().await.unwrap();
        assert!(flash.contains("Living room TV"), "{flash}");
        assert!(fits_width(&b).await, "My devices fits {width} px");
        std::fs::write(
            screenshot_path(&format!("devices-disabled-{width}x{height}.png")),
            b.screenshot().await.unwrap(),
        )
        .unwrap();
        click(&b, "tr.session-row button.enable").await;
        first_row_status_becomes(&b, "active").await;
        assert!(token_valid(&s, &tokens).await, "enabled again, the same token works");
        std::fs::write(
            screenshot_path(&format!("devices-enabled-{width}x{height}.png")),
            b.screenshot().await.unwrap(),
        )
        .unwrap();
        b.close().await.unwrap();
        s.stop().await;
    }
}

/// A native app's loopback redirect (RFC 8252 §7.3): answers each request with a small page and
/// hands over the request target (path and query) it was sent to.
async fn loopback_app() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = "<!doctype html><title>Desk app</title><h1 id=\"done\">You can close this window.</h1>";
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            if target.starts_with("/callback") {
                let _ = tx.send(target).await;
            }
        }
    });
    (port, rx)
}

/// The authorization code grant as a native app runs it: the `oauth2` crate builds the request
/// with PKCE, Chromium signs in and approves on the consent page (whose form may lead on to the
/// app: the browser enforces `form-action` on that redirect too), the app's loopback listener
/// receives the code, and the crate exchanges it.
#[tokio::test]
async fn a_native_app_signs_a_person_in_by_code_in_headless_chromium() {
    use oauth2::basic::BasicClient;
    use oauth2::{AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse, TokenUrl};

    let Some((_driver, b, _profile)) = browser(420, 900).await else {
        return;
    };
    let s = TestServer::start(&[]).await;
    let (app, _) = s.create_app("Desk app", false, &["http://127.0.0.1/callback"]).await;
    let (port, mut received) = loopback_app().await;
    let client = BasicClient::new(ClientId::new(app))
        .set_auth_uri(AuthUrl::new(s.url("/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(s.url("/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(format!("http://127.0.0.1:{port}/callback")).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let wait = Duration::from_secs(15);

    b.goto(url.as_str()).await.unwrap();
    fill_sign_in(&b, "admin", ADMIN_PASSWORD).await;
    let approve = b.wait().at_most(wait).for_element(Locator::Css("#approve")).await.unwrap();
    let host = b.find(Locator::Css("#redirect-host")).await.unwrap().text().await.unwrap();
    assert_eq!(host, format!("127.0.0.1:{port}"), "the consent page names where the browser goes");
    assert!(fits_width(&b).await, "the consent page fits a phone");
    std::fs::write(screenshot_path("authorize-420x900.png"), b.screenshot().await.unwrap()).unwrap();
    approve.click().await.unwrap();
    b.wait().at_most(wait).for_element(Locator::Css("#done")).await.unwrap();
    let target = tokio::time::timeout(wait, received.recv()).await.unwrap().unwrap();
    b.close().await.unwrap();

    let q = query_of(&format!("http://127.0.0.1{target}"));
    assert_eq!(q.get("state"), Some(state.secret()));
    let http = http().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let call = |req| crate::oauth2_client::send(http.clone(), req);
    let tokens = client
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&call)
        .await
        .expect("the code is exchanged");
    assert_eq!(tokeninfo(&s, tokens.access_token().secret()).await, StatusCode::OK);
    s.stop().await;
}
