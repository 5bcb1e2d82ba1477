//! The binary as a service manager runs it: sd-notify messages on `NOTIFY_SOCKET`, SIGHUP
//! reloading `LOG_LEVEL`, a graceful SIGTERM under load, and `authgate healthcheck`.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

fn spawn(dir: &std::path::Path, addr: &str, env: &[(&str, &str)]) -> Child {
    // Through sh, which `exec`s the binary, so WATCHDOG_PID can name the server's own pid as
    // systemd's does.
    let mut cmd = Command::new("/bin/sh");
    cmd.current_dir(dir)
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" server", BIN])
        .env_clear()
        .env("SERVER_ADDR", addr)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("DEVICE_CODE_RATE_LIMIT", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn stderr_of(child: &mut Child) -> String {
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    log
}

/// The next datagram, or `None` after `within`.
fn next_message(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn healthcheck(addr: &str) -> std::process::Output {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["healthcheck", "--timeout", "2s"])
            .env_clear()
            .env("SERVER_ADDR", addr)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sd_notify_ready_reload_watchdog_stopping_and_healthcheck() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let addr = free_addr();
    std::fs::write(dir.path().join(".env"), "LOG_LEVEL=warn\n").unwrap();
    let mut child = spawn(
        dir.path(),
        &addr,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
            ("LOG_FORMAT", "json"),
        ],
    );
    // READY=1 comes once the socket listens: a request right after it is answered.
    let first = next_message(&sock, Duration::from_secs(20)).expect("a notification");
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    assert!(first.contains(&format!("STATUS=listening on {addr}")), "{first}");
    assert!(healthcheck(&addr).await.status.success());
    // Watchdog pings at half of WATCHDOG_USEC.
    let ping = next_message(&sock, Duration::from_secs(2)).expect("a watchdog ping");
    assert_eq!(ping.trim(), "WATCHDOG=1");

    // SIGHUP: RELOADING=1 then READY=1, and the new LOG_LEVEL from .env applies (info lines
    // such as the request log appear only after it).
    std::fs::write(dir.path().join(".env"), "LOG_LEVEL=info\n").unwrap();
    signal(&child, "-HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.lines().any(|l| l == "READY=1")) {
        seen.push(next_message(&sock, Duration::from_secs(5)).expect("reload notifications"));
    }
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1")).expect("RELOADING=1");
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:?}");
    let (status, _) = get_json(&format!("http://{addr}/health"), None).await;
    assert_eq!(status, 200);
    // One log line per request, with the caller's request id echoed; no secret in it.
    let r = http()
        .build()
        .unwrap()
        .post(format!("http://{addr}/oauth/token"))
        .header("x-request-id", "req-42.abc")
        .form(&[
            ("grant_type", DEVICE_GRANT),
            ("device_code", "SECRET-DEVICE-CODE"),
            ("client_id", "nobody"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42.abc");
    // An id that is not a sane one is replaced.
    let r = http()
        .build()
        .unwrap()
        .get(format!("http://{addr}/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "bad id with spaces");

    // SIGTERM: STOPPING=1, exit 0.
    signal(&child, "-TERM");
    let mut stopping = false;
    while let Some(m) = next_message(&sock, Duration::from_secs(5)) {
        if m.lines().any(|l| l == "STOPPING=1") {
            stopping = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(stopping, "no STOPPING=1; log: {log}");
    assert!(status.success(), "{status:?}: {log}");
    // Before the reload (warn) no request was logged; after it (info) one line per request, JSON.
    let lines: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(lines.len(), log.lines().count(), "every line is JSON: {log}");
    assert!(lines.iter().any(|l| l["message"] == "SIGHUP: reloaded LOG_LEVEL"), "{log}");
    let requests: Vec<_> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.len() >= 3, "{log}");
    let token = requests
        .iter()
        .find(|l| l["request_id"] == "req-42.abc")
        .expect("the request's line");
    assert_eq!(
        (token["method"].as_str(), token["path"].as_str()),
        (Some("POST"), Some("/oauth/token"))
    );
    assert_eq!(
        (token["route"].as_str(), token["status"].as_u64()),
        (Some("/oauth/token"), Some(401))
    );
    assert!(token["duration_us"].as_u64().is_some() && token["client"] == "127.0.0.1");
    assert!(!log.contains("SECRET-DEVICE-CODE"), "{log}");
    // The server is down: the health check says so.
    let out = healthcheck(&addr).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn sigterm_under_load_finishes_every_request_and_exits_clean() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut child = spawn(dir.path(), &addr, &[("LOG_LEVEL", "warn")]);
    let base = format!("http://{addr}");
    for _ in 0..200 {
        if healthcheck(&addr).await.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Load: device-code requests (for an unknown client: a full request answered 400) and
    // health checks (each a database read).
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..16 {
        let (ok, refused, failed, stop, base) = (ok.clone(), refused.clone(), failed.clone(), stop.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            // A new connection per request: a reused idle connection closed by the server
            // while a request is being written is a race any HTTP client retries, not a drop.
            let http = http().pool_max_idle_per_host(0).build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let req = if i % 2 == 0 {
                    http.post(format!("{base}/oauth/device/code")).form(&[("client_id", "nobody")])
                } else {
                    http.get(format!("{base}/health"))
                };
                match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        match r.bytes().await {
                            Ok(_) if status.as_u16() < 500 || status == 503 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(_) => {
                                failed.lock().unwrap().push(format!("status {status}"));
                                0
                            }
                            Err(e) => {
                                failed.lock().unwrap().push(format!("body: {e:?}"));
                                0
                            }
                        };
                    }
                    Err(e) if e.is_connect() => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => failed.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = ok.load(Ordering::Relaxed);
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        (s, stderr_of(&mut child))
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(status.0.success(), "exit {:?}: {}", status.0, status.1);
    assert!(before > 50, "the load ran ({before} requests)");
    assert!(refused.load(Ordering::Relaxed) > 0, "the load went on past the stop");
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The database closed clean: it opens again and serves.
    let s = TestServer::start_in(Arc::new(dir), &[]).await;
    assert_eq!(get_json(&s.url("/health"), None).await.0, 200);
    s.stop().await;
}
