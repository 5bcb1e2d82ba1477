//! `authgate-cli`, the demo device-flow client, against a running server: the approval is done
//! over HTTP by a person with a cookie jar, as a phone's browser would.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const CLI: &str = env!("CARGO_BIN_EXE_authgate-cli");

fn cli(home: &Path, s: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(CLI);
    cmd.args(args)
        .args(["--server", &s.base, "--client-id", &s.client_id])
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn stored(home: &Path) -> Value {
    let text = std::fs::read_to_string(home.join(".config/authgate/tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn login_reuse_refresh_retry_status_and_logout() {
    let s = TestServer::start(&["--jwt-expiration", "4s"]).await;
    let home = tempfile::tempdir().unwrap();

    // login (with OpenID Connect): the code and QR appear; a person approves on another device.
    let mut child = cli(home.path(), &s, &["login", "--scope", "openid profile offline_access read write"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Read off the runtime's thread: the server answers on it meanwhile.
    let (rx, shown, user_code) = tokio::task::spawn_blocking(move || {
        let mut shown = Vec::new();
        loop {
            let line = rx.recv_timeout(Duration::from_secs(20)).expect("the client prints the code");
            shown.push(line.clone());
            if let Some(code) = line.strip_prefix("and enter the code: ") {
                return (rx, shown, code.to_owned());
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(shown[0], format!("To sign in, open {}/device", "http://localhost:8080"));
    let person = Person::new();
    person.login(&s, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(&s, &user_code, true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    // Every line the client printed: the reader ends when the pipe closes, after the exit
    // (collecting only what had arrived by then lost the last lines now and then).
    let rest: Vec<String> = tokio::task::spawn_blocking(move || rx.iter().collect()).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let all = [shown, rest].concat().join("\n");
    println!("SESSION\n{all}\nEND");
    // A terminal QR code of verification_uri_complete.
    assert!(all.contains(&format!("user_code={user_code}")), "{all}");
    assert!(
        all.lines()
            .filter(|l| l.contains('█') || l.contains('▀') || l.contains('▄'))
            .count()
            > 10,
        "{all}"
    );
    assert!(all.contains("Logged in to") && all.contains("as admin"), "{all}");
    assert!(all.contains("Signed in (verified id_token): admin"), "{all}");

    // The token file is private and holds the login.
    let file = home.path().join(".config/authgate/tokens.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key = format!("{} {}", s.base, s.client_id);
    let first = stored(home.path())[&key].clone();
    assert!(first["refresh_token"].is_string());

    // A second login reuses the stored tokens (no new device code).
    let out = run(cli(home.path(), &s, &["login"])).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Already logged in"), "{out:?}");
    assert_eq!(stored(home.path())[&key]["access_token"], first["access_token"]);

    // The server turns the access token down (401): status refreshes and retries once.
    let mut tampered = stored(home.path());
    tampered[&key]["access_token"] = "not-a-valid-token".into();
    std::fs::write(&file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let out = run(cli(home.path(), &s, &["status"])).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("User:     admin"), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Identity: admin (verified id_token, sub "),
        "{out:?}"
    );
    let renewed = stored(home.path())[&key]["access_token"].as_str().unwrap().to_owned();
    assert!(renewed != "not-a-valid-token" && renewed != first["access_token"].as_str().unwrap());

    // Expired: `token` refreshes before answering.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let out = run(cli(home.path(), &s, &["token"])).await;
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(token, renewed);
    assert_eq!(get_json(&s.url("/oauth/tokeninfo"), Some(&token)).await.0, StatusCode::OK);

    // logout revokes on the server and forgets here.
    let refresh = stored(home.path())[&key]["refresh_token"].as_str().unwrap().to_owned();
    let out = run(cli(home.path(), &s, &["logout"])).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stored(home.path()).get(&key).is_none());
    let (status, body) = post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &s.client_id),
        ],
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(get_json(&s.url("/oauth/tokeninfo"), Some(&token)).await.0, StatusCode::UNAUTHORIZED);
    let out = run(cli(home.path(), &s, &["status"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"), "{out:?}");
    s.stop().await;
}
