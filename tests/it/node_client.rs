//! A second ecosystem: the npm `openid-client` library runs discovery, the device flow and the
//! authorization code grant with PKCE against the server (`tests/node/flow.mjs`). Its packages
//! are installed by `scripts/test.sh` (`npm ci` in `tests/node`), which sets
//! `AUTHGATE_REQUIRE_NODE=1` so that a missing Node.js fails the run; a bare `cargo test` on a
//! machine without Node.js says so and skips.

use std::process::Command;

use reqwest::StatusCode;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_openid_client_runs_discovery_the_device_flow_and_the_code_flow() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !dir.join("node_modules/openid-client").exists() {
        assert!(
            std::env::var("AUTHGATE_REQUIRE_NODE").is_err(),
            "tests/node has no node_modules: run npm ci there (scripts/test.sh does)"
        );
        eprintln!("skipped: no tests/node/node_modules (scripts/test.sh installs it)");
        return;
    }
    let s = TestServer::start_at_own_url(&[]).await;
    let (app, _) = s
        .create_app_granting(
            "Node app",
            false,
            &["http://127.0.0.1/cb"],
            &["authorization_code", "device_code", "refresh_token"],
        )
        .await;
    let (base, app2) = (s.base.clone(), app.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("flow.mjs")
            .current_dir(&dir)
            .env("AUTHGATE_BASE", base)
            .env("AUTHGATE_APP", app2)
            .env("AUTHGATE_USER", "admin")
            .env("AUTHGATE_PASSWORD", ADMIN_PASSWORD)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openid-client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    // The code's reuse revoked its tokens (the script presented it twice).
    let access = report["access_token"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokeninfo(&s, access).await == StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the reused code's tokens are revoked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
