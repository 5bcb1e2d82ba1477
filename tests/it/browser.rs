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

#[tokio::test]
async fn a_person_approves_a_device_in_headless_chromium() {
    let Some((_driver, webdriver)) = chromedriver().await else {
        if std::env::var_os("AUTHGATE_SKIP_BROWSER_TESTS").is_some() {
            eprintln!("skipping: chromedriver not available and AUTHGATE_SKIP_BROWSER_TESTS is set");
            return;
        }
        panic!("chromedriver is not installed: apt-get install chromium chromium-driver (or set AUTHGATE_SKIP_BROWSER_TESTS=1)");
    };
    let s = TestServer::start(&[]).await;
    let dc = s.device_code(&s.client_id).await;
    let user_code = dc["user_code"].as_str().unwrap().to_owned();

    let profile = tempfile::tempdir().unwrap();
    let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=420,900", format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a Chromium session");
    let wait = Duration::from_secs(15);

    // The device shows verification_uri_complete; the person opens it and must sign in first.
    b.goto(&s.url(&format!("/device?user_code={user_code}"))).await.unwrap();
    b.wait()
        .at_most(wait)
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(ADMIN_PASSWORD)
        .await
        .unwrap();
    b.find(Locator::Css("#login-submit")).await.unwrap().click().await.unwrap();

    // Back on the device page, the code is already filled in.
    let input = b.wait().at_most(wait).for_element(Locator::Css("#user_code")).await.unwrap();
    assert_eq!(input.prop("value").await.unwrap().as_deref(), Some(user_code.as_str()));
    b.find(Locator::Css("#verify-submit")).await.unwrap().click().await.unwrap();

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
