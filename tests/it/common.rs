//! The harness: a real server per test, and a browser-less person with a cookie jar.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use authgate::config::Settings;
use authgate::server::Server;
use authgate_actors::directory::DirectoryMsg;
use reqwest::StatusCode;
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "correct-horse-battery";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A reqwest client builder; the crypto provider its TLS needs is installed first.
pub fn http() -> reqwest::ClientBuilder {
    authgate_actors::provider::install_tls_provider();
    reqwest::Client::builder()
}

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub dir: Arc<tempfile::TempDir>,
    pub client_id: String,
}

impl TestServer {
    /// A fresh server on a new database, with `extra` settings (flags).
    pub async fn start(extra: &[&str]) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::start_in(dir, extra).await
    }

    /// A server on the database of `dir` (to restart on the same one).
    pub async fn start_in(dir: Arc<tempfile::TempDir>, extra: &[&str]) -> TestServer {
        let database = database_env(dir.path()).await;
        Self::start_on(dir, database, extra).await
    }

    /// A server on the database the settings `database` name (environment names and values).
    pub async fn start_on(dir: Arc<tempfile::TempDir>, database: Vec<(&'static str, String)>, extra: &[&str]) -> TestServer {
        let mut args = vec!["authgate".to_owned()];
        if !extra.contains(&"--server-addr") {
            args.extend(["--server-addr".into(), "127.0.0.1:0".into()]);
        }
        for (name, value) in database {
            args.push(format!("--{}", name.to_ascii_lowercase().replace('_', "-")));
            args.push(value);
        }
        args.extend([
            "--admin-password".into(),
            ADMIN_PASSWORD.into(),
            "--polling-interval".into(),
            "1s".into(),
            // Tests make many requests from one address; the limit tests set their own.
            "--device-code-rate-limit".into(),
            "1000000".into(),
            "--login-failure-limit".into(),
            "1000".into(),
            "--user-code-failure-limit".into(),
            "1000".into(),
            "--user-code-global-failure-limit".into(),
            "1000000".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let settings = Settings::try_from_args(args).expect("settings");
        let server = Server::start(settings).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        let dir_actor = server.actors.directory().clone();
        let clients = dir_actor.ask(|reply| DirectoryMsg::ListClients { reply }).await.unwrap();
        let client_id = clients
            .iter()
            .find(|c| c.name == "AuthGate CLI")
            .expect("seeded client")
            .client_id
            .clone();
        TestServer {
            server,
            base,
            dir,
            client_id,
        }
    }

    /// A fresh server whose BASE_URL (its issuer) is its own address, so that discovery from
    /// that URL works as it does in production.
    pub async fn start_at_own_url(extra: &[&str]) -> TestServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (addr, base) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
        let mut args = vec!["--server-addr", addr.as_str(), "--base-url", base.as_str()];
        args.extend_from_slice(extra);
        Self::start(&args).await
    }

    /// Creates a client of the authorization code grant (and refresh) with these redirect URIs
    /// and scopes `read write`.
    pub async fn create_app(&self, name: &str, confidential: bool, redirect_uris: &[&str]) -> (String, Option<String>) {
        self.create_app_granting(name, confidential, redirect_uris, &["authorization_code", "refresh_token"])
            .await
    }

    /// [`TestServer::create_app`] with these grants.
    pub async fn create_app_granting(
        &self,
        name: &str,
        confidential: bool,
        redirect_uris: &[&str],
        grants: &[&str],
    ) -> (String, Option<String>) {
        self.create_client_from(authgate_actors::directory::ClientSpec {
            grant_types: grants.iter().map(|g| g.to_string()).collect(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            ..authgate_actors::directory::ClientSpec::new(name, confidential)
        })
        .await
    }

    /// Creates the client `spec` describes (fixture), returning its id and secret.
    pub async fn create_client_from(&self, spec: authgate_actors::directory::ClientSpec) -> (String, Option<String>) {
        let dir = self.server.actors.directory().clone();
        let now = authgate_actors::time::wall_clock_ms();
        let (c, secret) = dir
            .ask(|reply| DirectoryMsg::CreateClient { spec, now, reply })
            .await
            .unwrap()
            .unwrap();
        (c.client_id, secret)
    }

    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.server.shutdown().await;
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a client directly (fixture), returning its id and secret.
    pub async fn create_client(&self, name: &str, confidential: bool, grants: Option<&[&str]>) -> (String, Option<String>) {
        self.create_client_from(authgate_actors::directory::ClientSpec {
            grant_types: grants.map(|g| g.iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
            ..authgate_actors::directory::ClientSpec::new(name, confidential)
        })
        .await
    }

    pub async fn create_user(&self, username: &str, password: &str) {
        let dir = self.server.actors.directory().clone();
        let password = authgate_actors::crypto::password::NewPassword::new(password.to_owned())
            .await
            .unwrap();
        let (username, now) = (username.to_owned(), authgate_actors::time::wall_clock_ms());
        dir.ask(|reply| DirectoryMsg::CreateUser {
            username,
            password,
            is_admin: false,
            now,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    }

    /// `POST /oauth/device/code` for `client_id`.
    pub async fn device_code(&self, client_id: &str) -> Value {
        let (status, body) = post_form(&self.url("/oauth/device/code"), &[("client_id", client_id)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// One poll of `/oauth/token` with the device grant.
    pub async fn poll(&self, client_id: &str, device_code: &str) -> (StatusCode, Value) {
        post_form(
            &self.url("/oauth/token"),
            &[("grant_type", DEVICE_GRANT), ("device_code", device_code), ("client_id", client_id)],
        )
        .await
    }

    /// A whole device flow for `client_id`: code, sign-in, approval, redemption.
    pub async fn tokens_for(&self, client_id: &str) -> Value {
        let dc = self.device_code(client_id).await;
        let person = Person::new();
        person.login(self, "admin", ADMIN_PASSWORD).await;
        let (status, page) = person.decide(self, dc["user_code"].as_str().unwrap(), true).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let (status, body) = self.poll(client_id, dc["device_code"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("authgate.redb")
}

/// The PostgreSQL server the suite runs on, if any: with `AUTHGATE_TEST_BACKEND=postgres`,
/// the one whose `postgres` database `AUTHGATE_TEST_PG` names (`scripts/test.sh` starts a
/// throwaway cluster and runs the suite once on each backend). Otherwise the suite runs on redb.
pub fn test_postgres() -> Option<String> {
    if std::env::var("AUTHGATE_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    let dsn = std::env::var("AUTHGATE_TEST_PG").expect("AUTHGATE_TEST_BACKEND=postgres needs AUTHGATE_TEST_PG");
    Some(dsn)
}

/// The name of the PostgreSQL database of test directory `dir`.
pub fn database_name(dir: &Path) -> String {
    use sha2::Digest;
    format!(
        "it_{}",
        &hex::encode(sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes()))[..24]
    )
}

/// The settings (environment names and values) that put a server or a command on the test
/// database of `dir`: its redb file, or on PostgreSQL a database of its own, named after `dir`
/// (so a restart in the same `dir` finds the same data) and created on first use.
pub async fn database_env(dir: &Path) -> Vec<(&'static str, String)> {
    let Some(admin) = test_postgres() else {
        return vec![("DATABASE_PATH", db_path(dir).display().to_string())];
    };
    let name = database_name(dir);
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL server");
    tokio::spawn(conn);
    if let Err(e) = client.execute(&format!("CREATE DATABASE {name}"), &[]).await {
        // 42P04: it exists already (a restart in the same directory).
        assert_eq!(e.code().map(|c| c.code()), Some("42P04"), "{e}");
    }
    vec![
        ("DATABASE_DRIVER", "postgres".to_owned()),
        ("DATABASE_DSN", format!("{admin} dbname={name}")),
    ]
}

fn plain_client() -> reqwest::Client {
    crate::common::http().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// POSTs a form; returns the status and the JSON body (`Null` if not JSON).
pub async fn post_form(url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = plain_client().post(url).form(form).send().await.expect("request");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn get_json(url: &str, bearer: Option<&str>) -> (StatusCode, Value) {
    let mut req = plain_client().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `/oauth/tokeninfo`'s status for an access token.
pub async fn tokeninfo(s: &TestServer, access: &str) -> StatusCode {
    get_json(&s.url("/oauth/tokeninfo"), Some(access)).await.0
}

/// A refresh by the seeded public client.
pub async fn refresh(s: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    post_form(
        &s.url("/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &s.client_id),
        ],
    )
    .await
}

/// Whether introspection (by the seeded public client, which may see its own tokens) calls
/// `token` active.
pub async fn introspected_active(s: &TestServer, token: &str) -> bool {
    let (status, body) = post_form(&s.url("/oauth/introspect"), &[("token", token), ("client_id", &s.client_id)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["active"] == true
}

/// The value of the first hidden `csrf_token` input of a page.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).map(|i| i + marker.len()).expect("page has a csrf_token");
    page[start..].split('"').next().unwrap().to_owned()
}

/// The value of the hidden field `name` in `page`, unescaped as a browser would.
pub fn hidden_of(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .map(|i| i + marker.len())
        .unwrap_or_else(|| panic!("page has {name}: {page}"));
    let raw = page[start..].split('"').next().unwrap();
    raw.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// The query parameters of a URL the server sent a browser to.
pub fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A person in a browser without JavaScript: follows the forms, keeps cookies.
pub struct Person {
    pub http: reqwest::Client,
}

impl Person {
    pub fn new() -> Self {
        Self {
            http: crate::common::http()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> (StatusCode, String, Option<String>) {
        let r = self.http.get(url).send().await.unwrap();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), location)
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
        let r = self.http.post(url).form(form).send().await.unwrap();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), location)
    }

    /// Signs in; returns the status and where the server sent the browser.
    pub async fn try_login(&self, s: &TestServer, username: &str, password: &str) -> (StatusCode, String, Option<String>) {
        let (_, page, _) = self.get(&s.url("/login")).await;
        let csrf = csrf_of(&page);
        self.post(
            &s.url("/login"),
            &[
                ("username", username),
                ("password", password),
                ("csrf_token", &csrf),
                ("next", "/device"),
            ],
        )
        .await
    }

    pub async fn login(&self, s: &TestServer, username: &str, password: &str) {
        let (status, body, location) = self.try_login(s, username, password).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sign-in failed: {body}");
        assert_eq!(location.as_deref(), Some("/device"));
    }

    /// Signs in through the sign-in page `next` leads to (as an authorization request sends a
    /// browser there), and answers where the browser goes afterwards.
    pub async fn login_then(&self, s: &TestServer, login_url: &str) -> String {
        let (status, page, _) = self.get(&s.url(login_url)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let csrf = csrf_of(&page);
        let next = hidden_of(&page, "next");
        let (status, body, location) = self
            .post(
                &s.url("/login"),
                &[
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("csrf_token", &csrf),
                    ("next", &next),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        location.unwrap()
    }

    /// Opens an authorization URL (signed in) and presses Approve or Deny on the consent page;
    /// answers where the browser is sent (the client's redirect URI with the answer).
    pub async fn consent(&self, s: &TestServer, authorize_url: &str, approve: bool) -> String {
        let (status, page, location) = self.get(authorize_url).await;
        assert_eq!(status, StatusCode::OK, "the consent page, not {location:?}: {page}");
        assert!(page.contains("id=\"approve\""), "{page}");
        let csrf = csrf_of(&page);
        let request = hidden_of(&page, "request");
        let action = if approve { "approve" } else { "deny" };
        let (status, body, location) = self
            .post(
                &s.url("/oauth/authorize"),
                &[("csrf_token", &csrf), ("request", &request), ("action", action)],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
        location.unwrap()
    }

    /// Enters `user_code` and approves or denies; returns the final page.
    pub async fn decide(&self, s: &TestServer, user_code: &str, approve: bool) -> (StatusCode, String) {
        let (status, page, _) = self.get(&s.url("/device")).await;
        assert_eq!(status, StatusCode::OK);
        let csrf = csrf_of(&page);
        let (status, page, _) = self
            .post(&s.url("/device/verify"), &[("user_code", user_code), ("csrf_token", &csrf)])
            .await;
        if status != StatusCode::OK {
            return (status, page);
        }
        assert!(page.contains("id=\"approve\""), "{page}");
        let action = if approve { "approve" } else { "deny" };
        let (status, page, _) = self
            .post(
                &s.url("/device/approve"),
                &[("user_code", user_code), ("csrf_token", &csrf), ("action", action)],
            )
            .await;
        (status, page)
    }
}
