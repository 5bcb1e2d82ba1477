//! The real binary: version, help, settings errors, `.env`, and the offline commands.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// Runs the binary in `dir` with a clean environment plus `env`.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("binary runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["-v", "--version"] {
        let out = run(dir.path(), &[flag], &[], None);
        assert!(out.status.success());
        let v = text(&out.stdout);
        assert!(v.starts_with("authgate 0.") && v.contains("commit"), "{v}");
    }
    let out = run(dir.path(), &["--help"], &[], None);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for name in [
        "server",
        "user",
        "client",
        "SERVER_ADDR",
        "BASE_URL",
        "JWT_SECRET",
        "SESSION_SECRET",
        "DATABASE_PATH",
        "DEVICE_CODE_EXPIRATION",
        "POLLING_INTERVAL",
        "JWT_EXPIRATION",
        "REFRESH_TOKEN_EXPIRATION",
        "ENABLE_REFRESH_TOKENS",
        "ENABLE_TOKEN_ROTATION",
        "SESSION_MAX_AGE",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "ADMIN_PASSWORD",
        "--env-file",
    ] {
        assert!(help.contains(name), "--help does not mention {name}");
    }
}

/// Asserts a failed start: exit 2 and one line on stderr naming `setting`.
fn assert_bad_setting(out: &Output, setting: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(setting), "names {setting}: {err}");
}

#[test]
fn invalid_settings_stop_start_up_with_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.redb");
    let db = db.to_str().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("POLLING_INTERVAL", "abc", "POLLING_INTERVAL"),
        ("DEVICE_CODE_EXPIRATION", "0s", "DEVICE_CODE_EXPIRATION"),
        ("JWT_EXPIRATION", "99999999999999h", "JWT_EXPIRATION"),
        ("SERVER_ADDR", "not-an-address", "SERVER_ADDR"),
        ("BASE_URL", "ftp://x", "BASE_URL"),
        ("JWT_SECRET", "too-short", "JWT_SECRET"),
        ("SESSION_SECRET", "too-short", "SESSION_SECRET"),
        ("ENABLE_TOKEN_ROTATION", "maybe", "ENABLE_TOKEN_ROTATION"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("DATABASE_PATH", "/nonexistent-dir/for/sure/a.redb", "DATABASE_PATH"),
        ("AUDIT_RETENTION", "-5h", "AUDIT_RETENTION"),
        ("CLEANUP_INTERVAL", "18446744073709551616s", "CLEANUP_INTERVAL"),
        ("HTTP_API_TIMEOUT", "1e9s", "HTTP_API_TIMEOUT"),
        ("SESSION_MAX_AGE", "100000y", "SESSION_MAX_AGE"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "TRUSTED_PROXIES"),
        ("MAX_INFLIGHT", "0", "MAX_INFLIGHT"),
        ("LOGIN_FAILURE_LIMIT", "-1", "LOGIN_FAILURE_LIMIT"),
    ];
    for (k, v, named) in cases {
        let out = run(
            dir.path(),
            &["server"],
            &[("DATABASE_PATH", db), ("SERVER_ADDR", "127.0.0.1:0"), (k, v)],
            None,
        );
        assert_bad_setting(&out, named);
    }
    let out = run(dir.path(), &["server"], &[("DATABASE_PATH", db), ("JWT_SECRET", "short")], None);
    assert!(text(&out.stderr).contains("at least 32 bytes"));
}

#[test]
fn dotenv_is_read_and_the_real_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "DATABASE_PATH=from-dotenv.redb\nLOG_LEVEL=warn\n").unwrap();
    let out = run(dir.path(), &["user", "list"], &[], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("from-dotenv.redb").exists());
    let out = run(dir.path(), &["user", "list"], &[("DATABASE_PATH", "from-env.redb")], None);
    assert!(out.status.success());
    assert!(dir.path().join("from-env.redb").exists());
    std::fs::write(dir.path().join("other.env"), "DATABASE_PATH=from-env-file.redb\n").unwrap();
    let out = run(dir.path(), &["--env-file", "other.env", "user", "list"], &[], None);
    assert!(out.status.success());
    assert!(dir.path().join("from-env-file.redb").exists(), "--env-file wins over .env");
    let out = run(dir.path(), &["--env-file", "missing.env", "user", "list"], &[], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn offline_user_and_client_commands() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("DATABASE_PATH", "cmd.redb"), ("ADMIN_PASSWORD", ADMIN_PASSWORD)];
    let out = run(
        dir.path(),
        &["user", "add", "--username", "bob", "--password-stdin"],
        &env,
        Some("bob-password-1\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("bob-password-1"), "a given password is never echoed");
    let out = run(dir.path(), &["user", "add", "--username", "carol", "--admin"], &env, None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("password: "), "a generated password is printed once");
    let out = run(
        dir.path(),
        &["user", "add", "--username", "bob", "--password-stdin"],
        &env,
        Some("another-password\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already exists"));
    let out = run(
        dir.path(),
        &["user", "passwd", "bob", "--password-stdin"],
        &env,
        Some("bob-password-2\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(dir.path(), &["user", "passwd", "nobody"], &env, None);
    assert_eq!(out.status.code(), Some(1));
    let out = run(dir.path(), &["user", "list"], &env, None);
    let list = text(&out.stdout);
    assert!(list.contains("admin") && list.contains("bob") && list.contains("carol"), "{list}");
    // The name and email OpenID Connect gives out: set, kept when not named, cleared when empty.
    let out = run(
        dir.path(),
        &["user", "profile", "bob", "--name", "Bob Builder", "--email", "bob@example.org"],
        &env,
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("name Bob Builder, email bob@example.org"),
        "{}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["user", "profile", "bob", "--email", ""], &env, None);
    assert!(
        text(&out.stdout).contains("name Bob Builder, email (none)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["user", "profile", "bob", "--email", "not-an-email"], &env, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an email address"), "{}", text(&out.stderr));
    let out = run(dir.path(), &["client", "add", "--name", "kubectl", "--always-refresh"], &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(dir.path(), &["client", "add", "--name", "Build bot", "--confidential"], &env, None);
    assert!(out.status.success());
    let added = text(&out.stdout);
    assert!(added.contains("client_id: ") && added.contains("client_secret: "), "{added}");
    let out = run(dir.path(), &["client", "add", "--name", "TV"], &env, None);
    assert!(!text(&out.stdout).contains("client_secret"));
    // A web app: the authorization code grant, its redirect URIs and scopes; a redirect URI a
    // browser would run is refused.
    let web = [
        "client",
        "add",
        "--name",
        "Web app",
        "--grant-types",
        "authorization_code,refresh_token",
        "--redirect-uri",
        "https://app.example/cb",
        "--redirect-uri",
        "http://127.0.0.1/cb",
        "--scopes",
        "read files:write",
    ];
    let out = run(dir.path(), &web, &env, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        dir.path(),
        &[
            "client",
            "add",
            "--name",
            "Bad",
            "--grant-types",
            "authorization_code",
            "--redirect-uri",
            "javascript:alert(1)//",
        ],
        &env,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot be a redirect URI"), "{}", text(&out.stderr));
    let out = run(dir.path(), &["client", "list"], &env, None);
    let list = text(&out.stdout);
    assert!(
        list.contains("AuthGate CLI") && list.contains("Build bot") && list.contains("confidential"),
        "{list}"
    );
}

#[tokio::test]
async fn commands_refuse_a_database_the_server_holds() {
    let s = TestServer::start(&[]).await;
    let db = db_path(s.dir.path());
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || run(Path::new("/"), &["user", "list"], &[("DATABASE_PATH", db.to_str().unwrap())], None))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("in use by another process"), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "fails fast, never hangs");
    s.stop().await;
}

#[tokio::test]
async fn the_binary_serves_with_defaults_and_logs_the_seeded_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .arg("server")
        .env_clear()
        .env("SERVER_ADDR", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = crate::common::http()
            .build()
            .unwrap()
            .get(format!("http://{addr}/health"))
            .send()
            .await
        {
            up = r.status() == 200;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // SIGTERM: a clean stop with exit status 0.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(up, "server did not come up: {log}");
    assert!(status.success(), "exit status {status:?}: {log}");
    // The generated password is in a private file beside the database, never in the log.
    let file = dir.path().join("authgate.redb.admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_eq!(password.len(), 16);
    assert!(!log.contains(&password), "the password must not be logged");
    assert!(log.contains("authgate.redb.admin-password") && log.contains("client_id="), "{log}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(log.contains("JWT_SECRET is not set"), "{log}");
    assert!(dir.path().join("authgate.redb").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_password_reset_ends_the_users_sessions_and_is_audited() {
    let s = TestServer::start(&[]).await;
    s.create_user("dave", "dave-password-1").await;
    let dave = Person::new();
    dave.login(&s, "dave", "dave-password-1").await;
    assert_eq!(dave.get(&s.url("/account")).await.0, reqwest::StatusCode::OK);
    let dir = s.stop().await;
    let db = db_path(dir.path());
    let env = [("DATABASE_PATH", db.to_str().unwrap())];
    let out = run(
        Path::new("/"),
        &["user", "passwd", "dave", "--password-stdin"],
        &env,
        Some("dave-password-2\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The rule is the server's: a short password is refused with its words, and nothing changes.
    let out = run(
        Path::new("/"),
        &["user", "passwd", "dave", "--password-stdin"],
        &env,
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("8 to 1024"), "{}", text(&out.stderr));
    let s = TestServer::start_in(dir, &[]).await;
    let (status, _, location) = dave.get(&s.url("/account")).await;
    assert_eq!(status, reqwest::StatusCode::SEE_OTHER, "the old session ended with the reset");
    assert!(location.unwrap_or_default().starts_with("/login"));
    assert_eq!(
        dave.try_login(&s, "dave", "dave-password-1").await.0,
        reqwest::StatusCode::UNAUTHORIZED
    );
    dave.login(&s, "dave", "dave-password-2").await;
    let filter = authgate_actors::audit::AuditFilter {
        user: Some("dave".into()),
        kind: Some(authgate_actors::audit::EventKind::UserChanged),
        ..Default::default()
    };
    let events = s
        .server
        .actors
        .audit_actor()
        .ask(|reply| authgate_actors::audit::AuditMsg::Query {
            filter,
            before: None,
            limit: 10,
            reply,
        })
        .await
        .unwrap()
        .unwrap()
        .events;
    assert_eq!(events.len(), 1, "one event for the reset, none for the refused one");
    assert!(
        events[0].actor.starts_with("cli") && events[0].detail == "password reset",
        "{:?}",
        events[0]
    );
    s.stop().await;
}
