//! The supervisor at work: restarts of each kind of failure, with back-off, and state rebuilt
//! from the store. Each test starts a real system on a temporary redb file.

// The tests play the edge (a request's boundary) and read the clock as it would.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use super::*;
use crate::crypto::keys::JwtKeys;
use crate::device::{DeviceConfig, DeviceMsg};
use crate::directory::{DirectoryMsg, UserRef};
use crate::provider::ServiceConfig;
use crate::provider::login::AuthProviderMsg;
use crate::runtime::retry::RetryPolicy;
use crate::runtime::{CALL_TIMEOUT, Handle};
use crate::store::redb::StoreOptions;
use crate::time::wall_clock_ms as now;
use crate::token::{Grant, TokenConfig, TokenMsg};

fn config(login_url: Option<&str>) -> CoreConfig {
    CoreConfig {
        device: DeviceConfig {
            code_lifetime: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            issue_timeout: CALL_TIMEOUT,
        },
        token: TokenConfig {
            issuer: "http://test".into(),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            refresh_enabled: true,
            rotation: false,
            reuse_grace: Duration::ZERO,
        },
        session_max_age: Duration::from_secs(600),
        admin_password: Some("admin-password".into()),
        admin_password_file: None,
        login_api: login_url.map(|url| ServiceConfig {
            url: url.into(),
            timeout: Duration::from_secs(2),
            insecure_skip_verify: false,
            auth: crate::provider::ServiceAuth::None,
            retry: RetryPolicy {
                max_retries: 0,
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
            },
            max_concurrent: 4,
        }),
        token_api: None,
        cleanup_interval: Duration::from_secs(3600),
        audit_retention: Duration::from_secs(3600),
        offline: false,
    }
}

async fn start(dir: &tempfile::TempDir, config: CoreConfig) -> System {
    let stores = crate::store::redb::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
    System::start_with_keys(stores, config, JwtKeys::new(&[1u8; 32], "http://test"), vec![2u8; 32])
        .await
        .unwrap()
}

/// Waits (up to 5 s) until `handle` reaches an incarnation other than `old` that answers.
async fn next_incarnation<M: ractor::Message>(handle: &Handle<M>, old: ractor::ActorId) -> (ractor::ActorId, Instant) {
    for _ in 0..500 {
        if let Ok(a) = handle.current()
            && a.get_id() != old
        {
            return (a.get_id(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no new incarnation within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_core_actor_is_restarted_and_rebuilds_its_state_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(&dir, config(None)).await;
    let device = system.actors.device();
    let code = device
        .ask(|reply| DeviceMsg::Create {
            client_id: "c".into(),
            scope: "read".into(),
            now: now(),
            reply,
            from: None,
            resources: Vec::new(),
        })
        .await
        .unwrap()
        .unwrap();
    let old = device.current().unwrap();
    old.kill();
    next_incarnation(device, old.get_id()).await;
    let count = device.ask(|reply| DeviceMsg::Count { reply }).await.unwrap();
    assert_eq!(count, 1, "the pending code was reloaded from the store");
    let poll = device
        .ask(|reply| DeviceMsg::Poll {
            device_code_hash: crate::crypto::secret::sha256(&code.device_code),
            client_id: "c".into(),
            resources: Vec::new(),
            now: now(),
            reply,
        })
        .await
        .unwrap();
    assert_eq!(poll.unwrap_err().code, crate::ErrorCode::AuthorizationPending);
    assert_eq!(system.actors.components()["device"].restarts, 1);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authorization_yields_tokens_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(&dir, config(None)).await;
    let directory = system.actors.directory();
    let admin = directory
        .ask(|reply| DirectoryMsg::GetUser {
            who: UserRef::Name("admin".into()),
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    let client = directory.ask(|reply| DirectoryMsg::ListClients { reply }).await.unwrap().remove(0);
    let grant = Grant {
        auth_time: None,
        machine: false,
        resources: Vec::new(),
        audience: Vec::new(),
        user_id: admin.id.clone(),
        username: admin.username.clone(),
        client_id: client.client_id.clone(),
        scope: "read".into(),
        authorization_id: "auth-1".into(),
        name: None,
        nonce: None,
    };
    let token = system.actors.token();
    let issue = |g: Grant| async move {
        token
            .ask(|reply| TokenMsg::IssueForGrant {
                grant: g,
                now: now(),
                reply,
            })
            .await
            .unwrap()
    };
    assert!(issue(grant.clone()).await.is_ok());
    assert_eq!(issue(grant.clone()).await.unwrap_err().code, crate::ErrorCode::InvalidGrant);
    // The store remembers it too: a new incarnation refuses as well.
    let old = token.current().unwrap();
    old.kill();
    next_incarnation(token, old.get_id()).await;
    assert_eq!(issue(grant).await.unwrap_err().code, crate::ErrorCode::InvalidGrant);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_or_panicking_in_handle_is_restarted_with_growing_delays() {
    let dir = tempfile::tempdir().unwrap();
    let system = start(&dir, config(Some("http://127.0.0.1:9/panics"))).await;
    let login = system.actors.login_api();
    // A kill, then a panic in `handle`: each a failure within the minute, so the second
    // restart waits twice as long as the first.
    let first = login.current().unwrap();
    let killed_at = Instant::now();
    first.kill();
    let (second, back) = next_incarnation(login, first.get_id()).await;
    let first_delay = back - killed_at;
    login.cast(AuthProviderMsg::Panic).map_err(|_| "not delivered").unwrap();
    let panicked_at = Instant::now();
    let (_, back) = next_incarnation(login, second).await;
    let second_delay = back - panicked_at;
    assert!(first_delay >= Duration::from_millis(100), "{first_delay:?}");
    assert!(second_delay >= Duration::from_millis(200), "{second_delay:?}");
    let c = &system.actors.components()["login_api"];
    assert_eq!((c.state, c.restarts, c.provider), (ComponentState::Running, 2, true));
    // The core actors were never touched.
    assert_eq!(system.actors.components()["device"].restarts, 0);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_start_fails_is_tried_again_after_growing_delays() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/fails-to-start";
    let system = start(&dir, config(Some(url))).await;
    let login = system.actors.login_api();
    // Its next two starts fail in `pre_start`: 100 ms, then 200 and 400 ms after each failure.
    crate::provider::fault::fail_next_starts(url, 2);
    let first = login.current().unwrap();
    let killed_at = Instant::now();
    first.kill();
    let (_, back) = next_incarnation(login, first.get_id()).await;
    assert!(back - killed_at >= Duration::from_millis(700), "{:?}", back - killed_at);
    let c = &system.actors.components()["login_api"];
    assert_eq!((c.state, c.restarts), (ComponentState::Running, 3));
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_keeps_failing_is_reported_down_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/always-fails";
    let system = start(&dir, config(Some(url))).await;
    crate::provider::fault::fail_next_starts(url, 1_000);
    system.actors.login_api().current().unwrap().kill();
    // 100 + 200 + 400 + 800 + 1600 ms of back-off, then the cool-down.
    let mut down = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if system.actors.components()["login_api"].state == ComponentState::Down {
            down = true;
            break;
        }
    }
    assert!(down, "{:?}", system.actors.components()["login_api"]);
    assert_eq!(system.actors.components()["login_api"].restarts, MAX_RESTARTS as u64 + 1);
    crate::provider::fault::fail_next_starts(url, 0);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_generated_once_and_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    let options = |secret: Vec<u8>| crate::crypto::keys::KeyOptions {
        alg: crate::crypto::keys::SigningAlg::HS256,
        key_file: None,
        secret,
        issuer: "http://test".into(),
        access_ttl: Duration::from_secs(60),
    };
    let mut seen = Vec::new();
    for configured in [None, None, Some("configured-session-secret-of-length")] {
        let stores = crate::store::redb::open(&path, StoreOptions::default()).unwrap();
        let secrets = Secrets {
            jwt: None,
            session: configured.map(str::to_owned),
        };
        let system = System::start(stores, config(None), secrets, options, now()).await.unwrap();
        seen.push(system.session_secret.clone());
        system.shutdown().await;
    }
    assert!(seen[0].len() >= 32);
    assert_eq!(seen[0], seen[1], "the generated secret was kept");
    assert_eq!(seen[2], b"configured-session-secret-of-length");
}
