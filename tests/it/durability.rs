//! What was promised stays true: a full disk fails writes cleanly and recovers without a
//! restart, and `kill -9` at random moments under load loses nothing that was acknowledged.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, DEVICE_GRANT, Person, TestServer, get_json, post_form};

/// A small tmpfs mounted over a directory for the duration of a test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "the disk-full test mounts a small tmpfs and needs root (CAP_SYS_ADMIN)");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with a file, and returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    path
}

async fn health(s: &TestServer) -> (StatusCode, Value) {
    get_json(&s.url("/health"), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_cleanly_and_recovers_without_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mnt = Tmpfs::mount(dir.path(), "24m");
    let s = TestServer::start_in(dir.clone(), &[]).await;
    let before = s.tokens_for(&s.client_id).await;

    let filler = fill(dir.path());
    // Write until the database has to grow and cannot.
    let mut failed = None;
    for _ in 0..20_000 {
        let (status, body) = post_form(&s.url("/oauth/device/code"), &[("client_id", &s.client_id)]).await;
        if status != StatusCode::OK {
            failed = Some((status, body));
            break;
        }
    }
    let (status, body) = failed.expect("a write failed once the disk was full");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"], "server_error", "a clean OAuth error: {body}");
    let (status, h) = health(&s).await;
    assert_eq!(
        (status, h["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unhealthy")),
        "{h}"
    );
    // What can be served from memory still is.
    let (status, _) = get_json(&s.url("/oauth/tokeninfo"), before["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Person::new().get(&s.url("/login")).await.0, StatusCode::OK);

    // Space returns: no restart, the server recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, h) = health(&s).await;
        if status == StatusCode::OK {
            assert_eq!(h["status"], "healthy");
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = s.tokens_for(&s.client_id).await;
    for t in [&before, &after] {
        assert_eq!(
            get_json(&s.url("/oauth/tokeninfo"), t["access_token"].as_str()).await.0,
            StatusCode::OK
        );
    }
    // And all of it is on disk.
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, &[]).await;
    for t in [&before, &after] {
        assert_eq!(
            get_json(&s.url("/oauth/tokeninfo"), t["access_token"].as_str()).await.0,
            StatusCode::OK
        );
    }
    s.stop().await;
    drop(mnt);
}

/// What clients were told, across crashes.
#[derive(Default)]
pub(crate) struct Ledger {
    /// Tokens received and never revoked: (access, refresh).
    pub live: Vec<(String, String)>,
    /// Access tokens whose revocation was acknowledged.
    pub revoked: Vec<String>,
    /// Device codes whose approval was acknowledged and whose tokens were not yet received.
    pub approved: Vec<String>,
    /// Device codes whose tokens were received.
    pub redeemed: Vec<String>,
}

pub(crate) struct Daemon(pub Child);

impl Daemon {
    fn start(db: &std::path::Path, addr: &str) -> Daemon {
        Self::start_on(&[("DATABASE_PATH", db.display().to_string())], addr)
    }

    /// The real binary on the database `settings` name (environment names and values; they
    /// may also set BASE_URL, which is otherwise the instance's own address).
    pub fn start_on(settings: &[(&str, String)], addr: &str) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .arg("server")
            .env_clear()
            .env("SERVER_ADDR", addr)
            .env("BASE_URL", format!("http://{addr}"))
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("POLLING_INTERVAL", "1s")
            .env("JWT_EXPIRATION", "24h")
            .env("LOG_LEVEL", "warn")
            .env("DEVICE_CODE_RATE_LIMIT", "1000000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }

    pub fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn wait_up(base: &str) {
    let http = crate::common::http().build().unwrap();
    for _ in 0..300 {
        if http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not come up");
}

/// The seeded public client's id, from the admin console's clients page.
pub(crate) async fn cli_client_id(base: &str, person: &Person) -> String {
    let (_, page, _) = person.get(&format!("{base}/admin/clients")).await;
    let at = page.find("<strong>AuthGate CLI</strong>").expect("seeded client");
    let before = &page[..at];
    let start = before.rfind("data-id=\"").unwrap() + "data-id=\"".len();
    before[start..].split('"').next().unwrap().to_owned()
}

/// Signs in as admin; `None` if the server went away meanwhile.
pub(crate) async fn sign_in(base: &str) -> Option<Person> {
    let p = Person::new();
    let page = p.http.get(format!("{base}/login")).send().await.ok()?.text().await.ok()?;
    if !page.contains("csrf_token") {
        return None;
    }
    let csrf = crate::common::csrf_of(&page);
    let form = [
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
        ("csrf_token", csrf.as_str()),
        ("next", "/device"),
    ];
    let r = p.http.post(format!("{base}/login")).form(&form).send().await.ok()?;
    (r.status() == StatusCode::SEE_OTHER).then_some(p)
}

/// One worker's endless round as `person` (the admin, signed in by the caller: sign-ins are
/// counted before the password check, so more concurrent sign-ins of one name than
/// LOGIN_FAILURE_LIMIT would lock it): new code, approve, redeem, sometimes revoke. Every step
/// that the server acknowledged goes into the ledger; a step cut short by the kill does not.
pub(crate) async fn worker(base: String, person: Person, client_id: String, ledger: Arc<Mutex<Ledger>>, n: u64) {
    let http = crate::common::http().timeout(Duration::from_secs(5)).build().unwrap();
    let mut round = 0u64;
    loop {
        round += 1;
        let Ok(r) = http
            .post(format!("{base}/oauth/device/code"))
            .form(&[("client_id", client_id.as_str())])
            .send()
            .await
        else {
            return;
        };
        let Ok(dc) = r.json::<Value>().await else { return };
        let (Some(code), Some(user_code)) = (dc["device_code"].as_str(), dc["user_code"].as_str()) else {
            return;
        };
        let Ok(r) = person.http.get(format!("{base}/device")).send().await else {
            return;
        };
        let Ok(page) = r.text().await else { return };
        if !page.contains("csrf_token") {
            return;
        }
        let csrf = crate::common::csrf_of(&page);
        let form = [("user_code", user_code), ("csrf_token", csrf.as_str()), ("action", "approve")];
        let Ok(r) = person.http.post(format!("{base}/device/approve")).form(&form).send().await else {
            return;
        };
        let Ok(page) = r.text().await else { return };
        if !page.contains("Device approved") {
            return;
        }
        ledger.lock().unwrap().approved.push(code.to_owned());
        let Ok(r) = http
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", code),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .await
        else {
            return;
        };
        if r.status() != StatusCode::OK {
            return;
        }
        let Ok(t) = r.json::<Value>().await else { return };
        let (access, refresh) = (
            t["access_token"].as_str().unwrap().to_owned(),
            t["refresh_token"].as_str().unwrap().to_owned(),
        );
        {
            let mut l = ledger.lock().unwrap();
            l.approved.retain(|c| c != code);
            l.redeemed.push(code.to_owned());
            l.live.push((access.clone(), refresh));
        }
        if (round + n).is_multiple_of(3) {
            // Until the revocation is acknowledged, the token's fate is unknown: it leaves the
            // ledger of live tokens now.
            ledger.lock().unwrap().live.retain(|(a, _)| *a != access);
            let Ok(r) = http
                .post(format!("{base}/oauth/revoke"))
                .form(&[("token", access.as_str()), ("client_id", client_id.as_str())])
                .send()
                .await
            else {
                return;
            };
            if r.status() == StatusCode::OK {
                ledger.lock().unwrap().revoked.push(access);
            }
        }
    }
}

/// What one check found.
enum Found {
    Fine,
    Lost(usize),
    /// An approved code whose tokens came now (or that was spent just before the kill).
    Redeemed {
        code: String,
        tokens: Option<(String, String)>,
    },
}

/// Checks every promise in the ledger against the restarted server, 64 requests at a time;
/// returns what was lost (live tokens, revocations, approvals, double redemptions).
pub(crate) async fn audit_ledger(base: &str, client_id: &str, ledger: &Mutex<Ledger>) -> [usize; 4] {
    let (live, revoked, approved, redeemed) = {
        let l = ledger.lock().unwrap();
        (l.live.clone(), l.revoked.clone(), l.approved.clone(), l.redeemed.clone())
    };
    let http = crate::common::http().build().unwrap();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut checks = tokio::task::JoinSet::new();
    let info = move |http: reqwest::Client, base: String, token: String| async move {
        http.get(format!("{base}/oauth/tokeninfo"))
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
            .ok()
    };
    let poll = move |http: reqwest::Client, base: String, client_id: String, code: String| async move {
        let r = http
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", code.as_str()),
                ("client_id", client_id.as_str()),
            ])
            .send()
            .await
            .ok()?;
        let status = r.status();
        Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
    };
    let (base, client_id) = (base.to_owned(), client_id.to_owned());
    for (access, _) in live {
        let (http, base, permit) = (http.clone(), base.clone(), limit.clone().acquire_owned().await.unwrap());
        checks.spawn(async move {
            let _permit = permit;
            if info(http, base, access).await == Some(StatusCode::OK) {
                Found::Fine
            } else {
                Found::Lost(0)
            }
        });
    }
    for access in revoked {
        let (http, base, permit) = (http.clone(), base.clone(), limit.clone().acquire_owned().await.unwrap());
        checks.spawn(async move {
            let _permit = permit;
            if info(http, base, access).await == Some(StatusCode::UNAUTHORIZED) {
                Found::Fine
            } else {
                Found::Lost(1)
            }
        });
    }
    for code in approved {
        let (http, base, client_id) = (http.clone(), base.clone(), client_id.clone());
        let permit = limit.clone().acquire_owned().await.unwrap();
        checks.spawn(async move {
            let _permit = permit;
            // Approved: its tokens come now, or (if they were issued just before the kill and
            // the answer was lost) the code is spent; never pending, denied or unknown.
            match poll(http, base, client_id, code.clone()).await {
                Some((StatusCode::OK, body)) => Found::Redeemed {
                    code,
                    tokens: Some((
                        body["access_token"].as_str().unwrap_or_default().to_owned(),
                        body["refresh_token"].as_str().unwrap_or_default().to_owned(),
                    )),
                },
                Some((_, body)) if body["error"] == "invalid_grant" => Found::Redeemed { code, tokens: None },
                _ => Found::Lost(2),
            }
        });
    }
    for code in redeemed {
        let (http, base, client_id) = (http.clone(), base.clone(), client_id.clone());
        let permit = limit.clone().acquire_owned().await.unwrap();
        checks.spawn(async move {
            let _permit = permit;
            match poll(http, base, client_id, code).await {
                Some((status, body)) if status != StatusCode::OK && body["error"] == "invalid_grant" => Found::Fine,
                _ => Found::Lost(3),
            }
        });
    }
    let mut lost = [0; 4];
    let admin = sign_in(&base).await.expect("admin signs in");
    while let Some(found) = checks.join_next().await {
        match found.unwrap() {
            Found::Fine => {}
            Found::Lost(i) => lost[i] += 1,
            Found::Redeemed { code, tokens } => {
                let mut l = ledger.lock().unwrap();
                l.approved.retain(|c| *c != code);
                l.redeemed.push(code);
                l.live.extend(tokens);
            }
        }
    }
    // Every redeemed code (including those spent just before a kill) made one authorization:
    // if an approval had vanished instead, there would be fewer authorizations than codes.
    let redeemed = ledger.lock().unwrap().redeemed.len();
    let authorizations = authorizations(&base, &admin).await;
    if authorizations < redeemed {
        lost[2] += redeemed - authorizations;
    }
    lost
}

/// How many authorizations the admin has (every worker approves as admin).
async fn authorizations(base: &str, admin: &Person) -> usize {
    let rows = |page: &str| page.matches("class=\"session-row\"").count();
    let (_, first, _) = admin.get(&format!("{base}/account/sessions")).await;
    let pages = first
        .split("Page 1 of ")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(1);
    if pages == 1 {
        return rows(&first);
    }
    let (_, last, _) = admin.get(&format!("{base}/account/sessions?page={pages}")).await;
    50 * (pages - 1) + rows(&last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_under_load_loses_nothing_acknowledged() {
    let cycles: u32 = std::env::var("CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.redb");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let base = format!("http://{addr}");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total_lost = [0; 4];
    let mut client_id = String::new();
    for cycle in 0..cycles {
        let daemon = Daemon::start(&db, &addr);
        wait_up(&base).await;
        if client_id.is_empty() {
            let admin = sign_in(&base).await.expect("admin signs in");
            client_id = cli_client_id(&base, &admin).await;
        }
        let lost = audit_ledger(&base, &client_id, &ledger).await;
        (0..4).for_each(|i| total_lost[i] += lost[i]);
        // Load, then a kill at a pseudo-random moment (spread over 150..=900 ms).
        let mut workers = Vec::new();
        for n in 0..4 {
            let person = sign_in(&base).await.expect("admin signs in");
            workers.push(tokio::spawn(worker(base.clone(), person, client_id.clone(), ledger.clone(), n)));
        }
        let at = 150 + (u64::from(cycle) * 7919 + 13) % 751;
        tokio::time::sleep(Duration::from_millis(at)).await;
        daemon.kill9();
        for w in workers {
            w.abort();
        }
    }
    // A last start checks the final kill, then a clean stop.
    let daemon = Daemon::start(&db, &addr);
    wait_up(&base).await;
    let lost = audit_ledger(&base, &client_id, &ledger).await;
    (0..4).for_each(|i| total_lost[i] += lost[i]);
    let l = ledger.lock().unwrap();
    eprintln!(
        "crash test: {cycles} kills; {} live tokens, {} revocations, {} redeemed codes checked after each restart; \
         lost: tokens {}, revocations {}, approvals {}, double redemptions {}",
        l.live.len(),
        l.revoked.len(),
        l.redeemed.len(),
        total_lost[0],
        total_lost[1],
        total_lost[2],
        total_lost[3]
    );
    assert!(
        l.redeemed.len() >= cycles as usize,
        "the load did real work: {} redemptions",
        l.redeemed.len()
    );
    assert_eq!(total_lost, [0; 4], "nothing acknowledged may be lost");
    drop(l);
    // The database still closes cleanly.
    let mut daemon = daemon;
    let _ = Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status();
    assert!(daemon.0.wait().unwrap().success(), "a clean exit after SIGTERM");
}
