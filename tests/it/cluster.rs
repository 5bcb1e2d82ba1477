//! Several AuthGate instances on one PostgreSQL database, each a real server on loopback,
//! spoken to over HTTP: what one instance does, the others see (at once or within a second),
//! and what must happen once happens once across all of them.
//!
//! These need the suite's PostgreSQL (`AUTHGATE_TEST_BACKEND=postgres`, as `scripts/test.sh`
//! runs it); in the redb pass they say so and stop, since one redb file has one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// `n` instances on one new database (the first one seeds it), with `extra` settings each.
async fn cluster(n: usize, extra: &[&str]) -> Option<Vec<TestServer>> {
    if test_postgres().is_none() {
        eprintln!("cluster tests need PostgreSQL (AUTHGATE_TEST_BACKEND=postgres); skipped on redb");
        return None;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(TestServer::start_in(dir.clone(), extra).await);
    }
    Some(nodes)
}

async fn stop(nodes: Vec<TestServer>) {
    for n in nodes {
        n.stop().await;
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes; whether it held, and when.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_from_a_is_approved_on_b_and_redeemed_on_c() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let dc = a.device_code(&a.client_id).await;
    let (device_code, user_code) = (dc["device_code"].as_str().unwrap(), dc["user_code"].as_str().unwrap());
    // Pending on every instance, including those that never saw the code.
    for n in &nodes {
        let (status, body) = n.poll(&n.client_id, device_code).await;
        assert_eq!(body["error"], "authorization_pending", "{status} {body}");
    }
    let person = Person::new();
    person.login(b, "admin", ADMIN_PASSWORD).await;
    let (status, page) = person.decide(b, user_code, true).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // Redeemed on C (the poll interval is 1 s; wait it out).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, tokens) = c.poll(&c.client_id, device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    // The code is spent everywhere, and the token is known everywhere.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for n in [a, b] {
        let (status, body) = n.poll(&n.client_id, device_code).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
        assert_eq!(tokeninfo(n, access).await, StatusCode::OK);
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_redemptions_over_three_instances_succeed_once() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let a = &nodes[0];
    let dc = a.device_code(&a.client_id).await;
    let device_code = dc["device_code"].as_str().unwrap().to_owned();
    let person = Person::new();
    person.login(a, "admin", ADMIN_PASSWORD).await;
    let (status, _) = person.decide(a, dc["user_code"].as_str().unwrap(), true).await;
    assert_eq!(status, StatusCode::OK);
    // Let every instance hear of the approval, so each can try to redeem.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let polls: Vec<_> = (0..20)
        .map(|i| {
            let (url, client_id, code) = (nodes[i % 3].url("/oauth/token"), a.client_id.clone(), device_code.clone());
            tokio::spawn(async move {
                post_form(
                    &url,
                    &[("grant_type", DEVICE_GRANT), ("device_code", &code), ("client_id", &client_id)],
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for p in polls {
        answers.push(p.await.unwrap());
    }
    let won = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(won, 1, "{answers:?}");
    for (status, body) in &answers {
        assert!(status.is_success() || status.is_client_error(), "{status} {body}");
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_race_over_two_instances_wins_once_and_reuse_revokes_everywhere() {
    let Some(nodes) = cluster(3, &["--enable-token-rotation", "true"]).await else {
        return;
    };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let tokens = a.tokens_for(&a.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap().to_owned();
    // B and C hear of the new tokens.
    let access = tokens["access_token"].as_str().unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async { tokeninfo(b, access).await == StatusCode::OK })
            .await
            .is_some()
    );

    let (ra, rb) = tokio::join!(refresh(a, &old), refresh(b, &old));
    let winners: Vec<&Value> = [&ra, &rb]
        .into_iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(winners.len(), 1, "{ra:?} {rb:?}");
    let new_refresh = winners[0]["refresh_token"].as_str().unwrap().to_owned();
    let new_access = winners[0]["access_token"].as_str().unwrap().to_owned();
    for (status, body) in [&ra, &rb] {
        assert!(*status == StatusCode::OK || body["error"] == "invalid_grant", "{status} {body}");
    }

    // The loser read the authorization again and answered as one instance would: a second
    // presentation of a replaced token is reuse (no grace here), so the winner's tokens are
    // revoked too, everywhere, within a second.
    for n in [a, b, c] {
        let dead = eventually(Duration::from_secs(1), || async {
            tokeninfo(n, &new_access).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(dead.is_some(), "the racing reuse did not revoke on {}", n.base);
    }
    // The replaced token presented again (on C): the whole authorization is revoked, on every
    // instance, within a second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = refresh(c, &old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for n in [a, b, c] {
        let dead = eventually(Duration::from_secs(1), || async {
            tokeninfo(n, &new_access).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(dead.is_some(), "the new access token still works on {}", n.base);
    }
    for n in [a, b] {
        let (status, body) = refresh(n, &new_refresh).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_a_reaches_b_and_c_within_a_second() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let tokens = a.tokens_for(&a.client_id).await;
    let (access, refresh_token) = (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    for n in [b, c] {
        assert_eq!(tokeninfo(n, access).await, StatusCode::OK);
        let (status, body) = post_form(&n.url("/oauth/introspect"), &[("token", access), ("client_id", &n.client_id)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = post_form(&a.url("/oauth/revoke"), &[("token", refresh_token), ("client_id", &a.client_id)]).await;
    assert_eq!(status, StatusCode::OK);
    for n in [b, c] {
        let seen = eventually(Duration::from_secs(1), || async {
            let info = tokeninfo(n, access).await == StatusCode::UNAUTHORIZED;
            let (_, body) = post_form(&n.url("/oauth/introspect"), &[("token", access), ("client_id", &n.client_id)]).await;
            info && body["active"] == false
        })
        .await;
        assert!(seen.is_some(), "{} still accepts a revoked token after 1 s", n.base);
        let (status, _) = refresh(n, refresh_token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sign_out_on_a_ends_the_session_on_b_and_a_user_disabled_on_a_cannot_sign_in_on_c() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    // One browser, one cookie, any instance.
    let person = Person::new();
    person.login(a, "admin", ADMIN_PASSWORD).await;
    let (status, page, _) = person.get(&b.url("/device")).await;
    assert_eq!(status, StatusCode::OK, "the session started on A works on B");
    let csrf = csrf_of(&page);
    let (status, _, _) = person.post(&a.url("/logout"), &[("csrf_token", &csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let out = eventually(Duration::from_secs(1), || async {
        person.get(&b.url("/device")).await.0 == StatusCode::SEE_OTHER
    })
    .await;
    assert!(out.is_some(), "the cookie still works on B after signing out on A");

    // A user created and disabled on A, by an administrator there.
    a.create_user("erin", "erin-password-1").await;
    let erin = Person::new();
    erin.login(c, "erin", "erin-password-1").await;
    let admin = Person::new();
    admin.login(a, "admin", ADMIN_PASSWORD).await;
    let (_, page, _) = admin.get(&a.url("/admin/users?q=erin")).await;
    let id_at = page.find("/admin/users/").expect("a user row");
    let erin_id: String = page[id_at + "/admin/users/".len()..].chars().take_while(|ch| *ch != '/').collect();
    let (status, _, _) = admin
        .post(
            &a.url(&format!("/admin/users/{erin_id}/disable")),
            &[("csrf_token", &csrf_of(&page))],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let refused = eventually(Duration::from_secs(1), || async {
        Person::new().try_login(c, "erin", "erin-password-1").await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused.is_some(), "a user disabled on A still signs in on C");
    let (status, _, _) = erin.get(&c.url("/device")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "and the session started on C ended");
    stop(nodes).await;
}

/// Kills every change-feed connection of the database again and again (so each instance's
/// feed is down nearly all the time, reconnecting and resyncing in between), while A revokes
/// tokens B has just answered for from memory: B's very next answer is already the truth,
/// every time. Then the feed is let be, and changes arrive through it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_change_feed_reads_through_then_resyncs() {
    let Some(nodes) = cluster(2, &[]).await else { return };
    let [a, b] = [&nodes[0], &nodes[1]];
    let stop_killing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop_killing, dsn, db) = (stop_killing.clone(), test_postgres().unwrap(), database_name(a.dir.path()));
        tokio::spawn(async move {
            let (pg, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let mut killed = 0;
            while !stop_killing.load(std::sync::atomic::Ordering::Relaxed) {
                killed += pg
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'authgate-feed' AND datname = $1",
                        &[&db],
                    )
                    .await
                    .unwrap()
                    .len();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            killed
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..5 {
        let tokens = a.tokens_for(&a.client_id).await;
        let access = tokens["access_token"].as_str().unwrap();
        assert_eq!(tokeninfo(b, access).await, StatusCode::OK, "round {round}: B knows the token");
        let (status, _) = post_form(
            &a.url("/oauth/revoke"),
            &[("token", tokens["refresh_token"].as_str().unwrap()), ("client_id", &a.client_id)],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            tokeninfo(b, access).await,
            StatusCode::UNAUTHORIZED,
            "round {round}: B answered from a stale memory while its feed was down"
        );
    }
    stop_killing.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(killer.await.unwrap() >= 10, "the feeds were cut, again and again");

    // The feed is back: a revocation reaches B through it, and B answers for a live token
    // from memory again.
    let fresh = a.tokens_for(&a.client_id).await;
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            tokeninfo(b, fresh_access).await == StatusCode::OK
        })
        .await
        .is_some()
    );
    let (status, _) = post_form(
        &a.url("/oauth/revoke"),
        &[("token", fresh["refresh_token"].as_str().unwrap()), ("client_id", &a.client_id)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(1), || async {
            tokeninfo(b, fresh_access).await == StatusCode::UNAUTHORIZED
        })
        .await
        .is_some()
    );
    stop(nodes).await;
}

/// A redb deployment moved to PostgreSQL with `authgate migrate` (the real binary): an
/// instance on the new database accepts the old access and refresh tokens and the users'
/// passwords, and a second run into the now-populated database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redb_deployment_migrates_to_postgres() {
    if test_postgres().is_none() {
        eprintln!("the migration test needs PostgreSQL (AUTHGATE_TEST_BACKEND=postgres); skipped on redb");
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let redb = vec![("DATABASE_PATH", db_path(dir.path()).display().to_string())];
    let old = TestServer::start_on(dir.clone(), redb, &["--enable-token-rotation", "true"]).await;
    let tokens = old.tokens_for(&old.client_id).await;
    old.create_user("frank", "frank-password-1").await;
    let client_id = old.client_id.clone();
    old.stop().await;

    let target = database_env(dir.path()).await;
    let dsn = target.iter().find(|(k, _)| *k == "DATABASE_DSN").unwrap().1.clone();
    let migrate = |dsn: String| {
        let path = db_path(dir.path());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
                .args(["migrate", "--from-redb"])
                .arg(path)
                .args(["--to-postgres", &dsn])
                .env_clear()
                .env("LOG_LEVEL", "warn")
                .output()
                .unwrap()
        })
    };
    let out = migrate(dsn.clone()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("copied and verified: 2 users, 1 clients, 2 token records"), "{said}");

    let new = TestServer::start_on(dir.clone(), target, &["--enable-token-rotation", "true"]).await;
    assert_eq!(new.client_id, client_id, "the same clients, and no second seeding");
    assert_eq!(tokeninfo(&new, tokens["access_token"].as_str().unwrap()).await, StatusCode::OK);
    let (status, body) = refresh(&new, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Person::new().login(&new, "frank", "frank-password-1").await;
    Person::new().login(&new, "admin", ADMIN_PASSWORD).await;
    new.stop().await;

    let again = migrate(dsn).await.unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

/// A PostgreSQL cluster of this test's own (the suite's is shared by every other test), in a
/// temporary directory, through `scripts/pg.sh`; stopped when dropped.
struct OwnPostgres {
    dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn script(cmd: &str, dir: &std::path::Path) {
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .arg(cmd)
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn start() -> OwnPostgres {
        let dir = tempfile::Builder::new().prefix("authgate-own-pg").tempdir_in("/tmp").unwrap();
        Self::script("start", dir.path());
        OwnPostgres { dir }
    }

    fn dsn(&self) -> String {
        format!("host={} user=postgres dbname=postgres", self.dir.path().display())
    }

    fn stop(&self) {
        Self::script("stop", self.dir.path());
    }

    fn resume(&self) {
        Self::script("start", self.dir.path());
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// PostgreSQL stopped for 5 seconds under a load of new codes, polls and token checks on two
/// instances: while it is down, answers are clean (a pending poll still from memory; `/health`
/// 503; nothing hangs or fails with 500); when it is back, both instances recover without a
/// restart, and every code and token acknowledged before, during or after is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_for_five_seconds_under_load_loses_nothing_acknowledged() {
    if test_postgres().is_none() {
        eprintln!("the outage test needs PostgreSQL (AUTHGATE_TEST_BACKEND=postgres); skipped on redb");
        return;
    }
    let pg = tokio::task::spawn_blocking(OwnPostgres::start).await.unwrap();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let db = vec![("DATABASE_DRIVER", "postgres".to_owned()), ("DATABASE_DSN", pg.dsn())];
    let a = TestServer::start_on(dir.clone(), db.clone(), &[]).await;
    let b = TestServer::start_on(dir.clone(), db, &[]).await;
    let tokens = a.tokens_for(&a.client_id).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let held = a.device_code(&a.client_id).await["device_code"].as_str().unwrap().to_owned();

    // The load: new codes on both instances, polls of a held code, token checks.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = |base: String, client_id: String| {
        let (running, access, held) = (running.clone(), access.clone(), held.clone());
        tokio::spawn(async move {
            let http = http().timeout(Duration::from_secs(15)).build().unwrap();
            let (mut acknowledged, mut statuses) = (Vec::new(), Vec::new());
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .post(format!("{base}/oauth/device/code"))
                    .form(&[("client_id", &client_id)])
                    .send()
                    .await;
                let r = r.expect("an answer, never a hang");
                statuses.push(r.status());
                if r.status() == StatusCode::OK {
                    let v: Value = r.json().await.unwrap();
                    acknowledged.push(v["device_code"].as_str().unwrap().to_owned());
                }
                let poll = http
                    .post(format!("{base}/oauth/token"))
                    .form(&[("grant_type", DEVICE_GRANT), ("device_code", &held), ("client_id", &client_id)])
                    .send()
                    .await
                    .expect("an answer");
                statuses.push(poll.status());
                let info = http
                    .get(format!("{base}/oauth/tokeninfo"))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .expect("an answer");
                statuses.push(info.status());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acknowledged, statuses)
        })
    };
    let loads = [load(a.base.clone(), a.client_id.clone()), load(b.base.clone(), b.client_id.clone())];
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pg_ref = &pg;
    tokio::task::block_in_place(|| pg_ref.stop());
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = get_json(&a.url("/health"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A pending poll is still answered from memory, and errors are clean.
    let (status, body) = a.poll(&a.client_id, &held).await;
    assert!(
        body["error"] == "authorization_pending" || body["error"] == "slow_down",
        "{status} {body}"
    );
    let (status, body) = post_form(&b.url("/oauth/device/code"), &[("client_id", &b.client_id)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    tokio::task::block_in_place(|| pg_ref.resume());

    // Both recover by themselves.
    for n in [&a, &b] {
        let back = eventually(Duration::from_secs(40), || async {
            get_json(&n.url("/health"), None).await.0 == StatusCode::OK
                && post_form(&n.url("/oauth/device/code"), &[("client_id", &n.client_id)]).await.0 == StatusCode::OK
                && tokeninfo(n, &access).await == StatusCode::OK
        })
        .await;
        assert!(back.is_some(), "{} did not recover", n.base);
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for l in loads {
        let (acked, statuses) = l.await.unwrap();
        for s in &statuses {
            assert!(
                !s.is_server_error() || *s == StatusCode::SERVICE_UNAVAILABLE,
                "a 5xx other than 503 during the outage: {s}"
            );
        }
        acknowledged.extend(acked);
    }
    assert!(acknowledged.len() > 10);
    // Every acknowledged code is there, on both instances.
    for (i, code) in acknowledged.iter().enumerate() {
        let n = if i % 2 == 0 { &a } else { &b };
        let (status, body) = n.poll(&n.client_id, code).await;
        assert!(
            body["error"] == "authorization_pending" || body["error"] == "slow_down",
            "acknowledged code {i} lost: {status} {body}"
        );
    }
    a.stop().await;
    b.stop().await;
    drop(pg);
}

/// Three instances (the real binary) on one database under the crash test's mixed load (new
/// codes, approvals, redemptions, revocations), one of them killed with SIGKILL at a
/// pseudo-random moment, ten times, each time a different one: the other two keep serving,
/// and every promise in the ledger holds on a survivor and on the restarted one (no token,
/// revocation or approval lost, no code redeemed twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_three_instances_ten_times_loses_nothing() {
    use crate::durability::{Daemon, Ledger, audit_ledger, cli_client_id, sign_in, wait_up, worker};
    if test_postgres().is_none() {
        eprintln!("the cluster crash test needs PostgreSQL (AUTHGATE_TEST_BACKEND=postgres); skipped on redb");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = database_env(dir.path()).await;
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            format!("127.0.0.1:{port}")
        })
        .collect();
    let bases: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    // One public URL for all (the tokens' issuer): as behind a load balancer.
    let mut db = db;
    db.push(("BASE_URL", bases[0].clone()));
    let mut daemons: Vec<Option<Daemon>> = Vec::new();
    for (addr, base) in addrs.iter().zip(&bases) {
        daemons.push(Some(Daemon::start_on(&db, addr)));
        wait_up(base).await;
    }
    let admin = sign_in(&bases[0]).await.expect("admin signs in");
    let client_id = cli_client_id(&bases[0], &admin).await;
    let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
    let mut total_lost = [0; 4];
    for cycle in 0..10u64 {
        let victim = (cycle % 3) as usize;
        let survivor = (victim + 1) % 3;
        let mut workers = Vec::new();
        for n in 0..6u64 {
            let base = bases[n as usize % 3].clone();
            let person = sign_in(&base).await.expect("admin signs in");
            workers.push(tokio::spawn(worker(base, person, client_id.clone(), ledger.clone(), n)));
        }
        let at = 150 + (cycle * 7919 + 13) % 751;
        tokio::time::sleep(Duration::from_millis(at)).await;
        let redeemed_before = ledger.lock().unwrap().redeemed.len();
        if let Some(d) = daemons[victim].take() {
            d.kill9();
        }
        // The others keep serving: their workers go on redeeming.
        let served = eventually(Duration::from_secs(5), || async {
            ledger.lock().unwrap().redeemed.len() > redeemed_before + 2
        })
        .await;
        assert!(served.is_some(), "cycle {cycle}: the survivors stopped serving");
        for w in workers {
            w.abort();
        }
        // A survivor's lists catch up with the others' last writes within a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lost = audit_ledger(&bases[survivor], &client_id, &ledger).await;
        (0..4).for_each(|i| total_lost[i] += lost[i]);
        daemons[victim] = Some(Daemon::start_on(&db, &addrs[victim]));
        wait_up(&bases[victim]).await;
        let lost = audit_ledger(&bases[victim], &client_id, &ledger).await;
        (0..4).for_each(|i| total_lost[i] += lost[i]);
    }
    let l = ledger.lock().unwrap();
    eprintln!(
        "cluster crash test: 10 kills; {} live tokens, {} revocations, {} redeemed codes; lost: tokens {}, revocations {}, approvals {}, double redemptions {}",
        l.live.len(),
        l.revoked.len(),
        l.redeemed.len(),
        total_lost[0],
        total_lost[1],
        total_lost[2],
        total_lost[3]
    );
    assert!(l.redeemed.len() >= 30, "the load did real work: {} redemptions", l.redeemed.len());
    assert_eq!(total_lost, [0; 4], "nothing acknowledged may be lost");
}

/// `sslmode=require` over TCP to a PostgreSQL that offers TLS with a certificate from a test
/// CA (made here with openssl): with the CA trusted (`SSL_CERT_FILE`), the server starts and
/// its connections are encrypted; without it, start-up stops at once with a certificate error
/// and exit status 2; and a server without TLS is refused under `sslmode=require`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verifies_the_server_certificate() {
    use std::process::{Command, Stdio};
    if test_postgres().is_none() {
        eprintln!("the TLS test needs PostgreSQL (AUTHGATE_TEST_BACKEND=postgres); skipped on redb");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let c = certs.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(c).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=AuthGate test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        c.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pg_dir = tempfile::Builder::new().prefix("authgate-tls-pg").tempdir_in("/tmp").unwrap();
    let pg = |cmd: &str, tls: bool| {
        let mut command = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"));
        command.arg(cmd).arg(pg_dir.path()).env("PG_TCP_PORT", port.to_string());
        if tls {
            command
                .env("PG_SSL_CERT", c.join("server.pem"))
                .env("PG_SSL_KEY", c.join("server.key"));
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "pg.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    pg("start", true);
    let admin = format!("host={} port={port} user=postgres dbname=postgres", pg_dir.path().display());
    let (pg_client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    pg_client.execute("CREATE DATABASE tls", &[]).await.unwrap();

    let dsn = format!("postgres://postgres@localhost:{port}/tls?sslmode=require");
    let addr = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let run = |trust: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
        cmd.arg("server")
            .env_clear()
            .env("DATABASE_DRIVER", "postgres")
            .env("DATABASE_DSN", &dsn)
            .env("DATABASE_CONNECT_TIMEOUT", "20s")
            .env("SERVER_ADDR", &addr)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LOG_LEVEL", "warn")
            .current_dir(c)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if trust {
            cmd.env("SSL_CERT_FILE", c.join("ca.pem"));
        }
        cmd.spawn().unwrap().wait_with_output().unwrap()
    };

    // Not trusted: refused at once (no 20 s of retries), exit 2, the reason named.
    let started = Instant::now();
    let refused = tokio::task::block_in_place(|| run(false));
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("DATABASE_DSN") && said.contains("certificate"), "{said}");
    assert!(!said.contains("postgres://"), "the DSN is never repeated: {said}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Trusted: it starts, and its connections are encrypted.
    let mut server = Command::new(env!("CARGO_BIN_EXE_authgate"));
    server
        .arg("server")
        .env_clear()
        .env("DATABASE_DRIVER", "postgres")
        .env("DATABASE_DSN", &dsn)
        .env("SERVER_ADDR", &addr)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("LOG_LEVEL", "warn")
        .env("SSL_CERT_FILE", c.join("ca.pem"))
        .current_dir(c)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = server.spawn().unwrap();
    crate::durability::wait_up(&format!("http://{addr}")).await;
    let encrypted: i64 = pg_client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND datname = 'tls'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let plain: i64 = pg_client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE NOT ssl AND datname = 'tls'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 2 && plain == 0, "encrypted {encrypted}, plain {plain}");
    let _ = child.kill();
    let _ = child.wait();

    // A server without TLS: refused under sslmode=require.
    pg("stop", false);
    pg("start", false);
    let refused = tokio::task::block_in_place(|| run(true));
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("TLS"), "{said}");
    pg("stop", false);
}

/// Failed sign-ins for one username are counted across the cluster: with a limit of 4,
/// guesses spread over three instances lock the name out after 4 in all (not 4 on each), on
/// every instance it is tried next; a right password on another name still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_sign_ins_are_counted_across_the_cluster() {
    let Some(nodes) = cluster(3, &["--login-failure-limit", "4"]).await else {
        return;
    };
    let mut statuses = Vec::new();
    for i in 0..6 {
        let n = &nodes[i % 3];
        statuses.push(Person::new().try_login(n, "admin", "wrong-password").await.0);
    }
    assert_eq!(&statuses[..4], [StatusCode::UNAUTHORIZED; 4], "{statuses:?}");
    assert_eq!(&statuses[4..], [StatusCode::TOO_MANY_REQUESTS; 2], "{statuses:?}");
    // Locked out everywhere, even with the right password, until the lockout ends.
    for n in &nodes {
        let (status, _, _) = Person::new().try_login(n, "admin", ADMIN_PASSWORD).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{}", n.base);
    }
    nodes[0].create_user("grace", "grace-password-1").await;
    Person::new().login(&nodes[2], "grace", "grace-password-1").await;
    stop(nodes).await;
}

/// The management commands run against PostgreSQL while instances serve it (on redb they
/// need the server stopped): a user added with `authgate user add` signs in on a running
/// instance within a second, and `user passwd` ends that user's session there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_works_beside_running_instances() {
    let Some(nodes) = cluster(2, &[]).await else { return };
    let db = database_env(nodes[0].dir.path()).await;
    let cli = |args: &'static [&'static str], password: &'static str| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
                .args(args)
                .env_clear()
                .envs(db.iter().map(|(k, v)| (*k, v.as_str())))
                .env("LOG_LEVEL", "warn")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let out = cli(&["user", "add", "--username", "heidi", "--password-stdin"], "heidi-password-1")
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let heidi = Person::new();
    let signed_in = eventually(Duration::from_secs(1), || async {
        heidi.try_login(&nodes[1], "heidi", "heidi-password-1").await.0 == StatusCode::SEE_OTHER
    })
    .await;
    assert!(signed_in.is_some(), "a user added by the CLI cannot sign in on a running instance");
    let out = cli(&["user", "passwd", "heidi", "--password-stdin"], "heidi-password-2")
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended = eventually(Duration::from_secs(1), || async {
        heidi.get(&nodes[1].url("/device")).await.0 == StatusCode::SEE_OTHER
    })
    .await;
    assert!(
        ended.is_some(),
        "the password change did not end the session on the running instance"
    );
    Person::new().login(&nodes[0], "heidi", "heidi-password-2").await;
    stop(nodes).await;
}

/// The id of the one active authorization an admin sees on `node`.
async fn active_authorization(node: &TestServer, admin: &Person) -> String {
    let (_, page, _) = admin.get(&node.url("/admin/sessions?status=active")).await;
    page.split("data-id=\"")
        .nth(1)
        .expect("an active authorization")
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// Posts an admin console button on `node`.
async fn admin_press(node: &TestServer, admin: &Person, path: &str) -> StatusCode {
    let (_, page, _) = admin.get(&node.url("/admin/sessions")).await;
    let csrf = csrf_of(&page);
    admin.post(&node.url(path), &[("csrf_token", &csrf)]).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_on_a_reaches_b_and_c_within_a_second_and_an_enable_on_b_reaches_everyone() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let tokens = a.tokens_for(&a.client_id).await;
    let (access, refresh_token) = (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    for n in [b, c] {
        assert_eq!(tokeninfo(n, access).await, StatusCode::OK, "{} holds it", n.base);
        assert!(introspected_active(n, access).await);
    }
    let admin = Person::new();
    admin.login(a, "admin", ADMIN_PASSWORD).await;
    let id = active_authorization(a, &admin).await;
    assert_eq!(
        admin_press(a, &admin, &format!("/admin/sessions/{id}/disable")).await,
        StatusCode::SEE_OTHER
    );
    for n in [b, c] {
        let seen = eventually(Duration::from_secs(1), || async {
            tokeninfo(n, access).await == StatusCode::UNAUTHORIZED && !introspected_active(n, access).await
        })
        .await;
        assert!(seen.is_some(), "{} still accepts a disabled token after 1 s", n.base);
        assert_eq!(refresh(n, refresh_token).await.0, StatusCode::BAD_REQUEST);
    }
    // Every instance lists it as disabled (the lists read the database).
    let (_, page, _) = admin.get(&c.url("/admin/sessions?status=disabled")).await;
    assert!(page.contains(&format!("data-id=\"{id}\"")));

    // Enabled on B: back everywhere within a second, and renamed on C, seen on A.
    assert_eq!(
        admin_press(b, &admin, &format!("/admin/sessions/{id}/enable")).await,
        StatusCode::SEE_OTHER
    );
    for n in [a, b, c] {
        let back = eventually(Duration::from_secs(1), || async { tokeninfo(n, access).await == StatusCode::OK }).await;
        assert!(back.is_some(), "{} still refuses an enabled token after 1 s", n.base);
    }
    let (_, page, _) = admin.get(&c.url("/account/sessions")).await;
    let csrf = csrf_of(&page);
    let (status, _, _) = admin
        .post(
            &c.url(&format!("/account/sessions/{id}/rename")),
            &[("csrf_token", &csrf), ("name", "Hall display")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, page, _) = admin.get(&a.url("/account/sessions")).await;
    assert!(page.contains("Hall display"));
    assert_eq!(refresh(a, refresh_token).await.0, StatusCode::OK);
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn within_the_grace_a_replaced_refresh_token_gets_the_same_successor_on_any_instance() {
    let Some(nodes) = cluster(2, &["--enable-token-rotation", "true", "--refresh-token-reuse-grace", "30s"]).await else {
        return;
    };
    let [a, b] = [&nodes[0], &nodes[1]];
    // Rotated on A, presented again on B (which held the authorization before the rotation).
    let tokens = a.tokens_for(&a.client_id).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(tokeninfo(b, tokens["access_token"].as_str().unwrap()).await, StatusCode::OK);
    let (status, first) = refresh(a, old).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = refresh(b, old).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["refresh_token"], first["refresh_token"]);
    // Two threads of one client refreshing at once, on two instances: both are answered,
    // with one successor between them.
    for _ in 0..5 {
        let tokens = a.tokens_for(&a.client_id).await;
        let old = tokens["refresh_token"].as_str().unwrap();
        assert_eq!(tokeninfo(b, tokens["access_token"].as_str().unwrap()).await, StatusCode::OK);
        let ((sa, ra), (sb, rb)) = tokio::join!(refresh(a, old), refresh(b, old));
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK), "{ra} {rb}");
        assert_eq!(ra["refresh_token"], rb["refresh_token"]);
        let next = ra["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(b, next).await.0, StatusCode::OK, "the successor rotates on its own");
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_on_one_instance_racing_a_refresh_on_another_leaves_nothing_usable_until_enabled() {
    let Some(nodes) = cluster(2, &["--enable-token-rotation", "true"]).await else {
        return;
    };
    let [a, b] = [&nodes[0], &nodes[1]];
    let admin = Person::new();
    admin.login(b, "admin", ADMIN_PASSWORD).await;
    for round in 0..5 {
        let tokens = a.tokens_for(&a.client_id).await;
        let old = tokens["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(tokeninfo(b, tokens["access_token"].as_str().unwrap()).await, StatusCode::OK);
        let id = active_authorization(b, &admin).await;
        let (_, page, _) = admin.get(&b.url("/admin/sessions")).await;
        let csrf = csrf_of(&page);
        let (url, form) = (b.url(&format!("/admin/sessions/{id}/disable")), [("csrf_token", csrf.as_str())]);
        let (disabled, (status, body)) = tokio::join!(admin.post(&url, &form), refresh(a, &old));
        assert_eq!(disabled.0, StatusCode::SEE_OTHER);
        let current = if status == StatusCode::OK {
            // The refresh won: its tokens were disabled with the rest.
            let access = body["access_token"].as_str().unwrap().to_owned();
            for n in [a, b] {
                let off = eventually(Duration::from_secs(1), || async {
                    tokeninfo(n, &access).await == StatusCode::UNAUTHORIZED
                })
                .await;
                assert!(
                    off.is_some(),
                    "round {round}: a refreshed token still works on {} while disabled",
                    n.base
                );
            }
            body["refresh_token"].as_str().unwrap().to_owned()
        } else {
            assert_eq!(body["error"], "invalid_grant", "round {round}: {body}");
            old
        };
        for n in [a, b] {
            assert_eq!(refresh(n, &current).await.0, StatusCode::BAD_REQUEST, "round {round}");
        }
        // Enabled on A: the one current refresh token works on B within a second.
        assert_eq!(
            admin_press(a, &admin, &format!("/admin/sessions/{id}/enable")).await,
            StatusCode::SEE_OTHER
        );
        // (A refresh refused while still disabled changes nothing, so it may be tried again.)
        let back = eventually(Duration::from_secs(1), || async { refresh(b, &current).await.0 == StatusCode::OK }).await;
        assert!(back.is_some(), "round {round}: the enabled refresh token is still refused on B");
        assert_eq!(
            admin_press(a, &admin, &format!("/admin/sessions/{id}/revoke")).await,
            StatusCode::SEE_OTHER
        );
    }
    stop(nodes).await;
}

/// An authorization code approved on A, presented at once to B and C ten times over: one
/// presentation wins, and since the others are reuse, what it issued is revoked everywhere
/// (RFC 6749 §4.1.2); presented again later on A, still nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_authorization_code_redeems_once_across_instances_and_reuse_revokes_everywhere() {
    let Some(nodes) = cluster(3, &[]).await else { return };
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let (app, secret) = a.create_app("Web app", true, &["https://app.example/cb"]).await;
    let secret = secret.unwrap();
    let person = Person::new();
    person.login(a, "admin", ADMIN_PASSWORD).await;
    let url = a.url(&format!("/oauth/authorize?response_type=code&client_id={app}&state=s"));
    let back = person.consent(a, &url, true).await;
    let code = query_of(&back)["code"].clone();
    let form = |n: &TestServer| {
        let (url, code, app, secret) = (n.url("/oauth/token"), code.clone(), app.clone(), secret.clone());
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("client_id", &app),
                    ("client_secret", &secret),
                ],
            )
            .await
        }
    };
    let answers = futures_join((0..10).map(|i| tokio::spawn(form(if i % 2 == 0 { b } else { c }))).collect()).await;
    let won: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(won.len(), 1, "exactly one redemption: {answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{body}"
        );
    }
    let access = won[0]["access_token"].as_str().unwrap().to_owned();
    for n in [a, b, c] {
        let revoked = eventually(Duration::from_secs(2), || async {
            tokeninfo(n, &access).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert!(revoked.is_some(), "the reused code's tokens are revoked on {}", n.base);
    }
    let (status, body) = form(a).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );
    stop(nodes).await;
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<(StatusCode, Value)>>) -> Vec<(StatusCode, Value)> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
