//! The PostgreSQL backend against a real server: the port's promises, and races between
//! two separately opened stores on one database (as two processes would be).
//!
//! These run when `AUTHGATE_TEST_PG` names a server to create throwaway databases on (a DSN
//! of its `postgres` database, as `scripts/test.sh` sets up); without it they say so and pass.

use futures_util::future::join_all;

use super::{PgOptions, open};
use crate::store::audit::{AuditEvent, AuditFilter, EventKind};
use crate::store::device::{DeviceRecord, RecordState};
use crate::store::directory::{AuthSource, UserRecord};
use crate::store::token::{Amendment, Pauser, RevokeScope, TokenKind, TokenRecord, TokenStatus};
use crate::store::{StoreError, Stores};

/// A new, empty database on the test server; its DSN.
pub(crate) async fn fresh_database(tag: &str) -> Option<String> {
    let Ok(admin) = std::env::var("AUTHGATE_TEST_PG") else {
        eprintln!("AUTHGATE_TEST_PG is not set: skipping the PostgreSQL test {tag}");
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("test server");
    tokio::spawn(conn);
    let name = format!("t_{tag}_{}", uuid::Uuid::new_v4().simple());
    client
        .execute(&format!("CREATE DATABASE {name}"), &[])
        .await
        .expect("create database");
    Some(format!("{admin} dbname={name}"))
}

pub(crate) async fn open_on(dsn: &str) -> Stores {
    open(PgOptions {
        dsn: dsn.to_owned(),
        pool_size: 4,
        connect_timeout: std::time::Duration::from_secs(5),
        max_batch: 64,
    })
    .await
    .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_ports_promises() {
    let Some(dsn) = fresh_database("conformance").await else { return };
    crate::store::conformance::check(|| open_on(&dsn)).await;
}

fn token(id: &str, kind: TokenKind, status: TokenStatus) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        kind,
        token_hash: None,
        user_id: "u1".into(),
        username: "alice".into(),
        client_id: "cli".into(),
        scope: "read".into(),
        authorization_id: "auth".into(),
        issued_at: 1_700_000_000,
        expires_at: 1_700_003_600,
        status,
        last_used_at: None,
        name: None,
        successor: None,
        sealed_successor: None,
        disabled_by: None,
        auth_time: None,
        machine: false,
        resources: Vec::new(),
    }
}

/// A rename committed by one process is not undone by a rotation another makes from an older
/// copy (the new records take the stored name); a disable by one stops the other's rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_disable_hold_against_another_processs_rotation() {
    let Some(dsn) = fresh_database("rename").await else { return };
    let (a, b) = (open_on(&dsn).await, open_on(&dsn).await);
    let named = |id: &str, kind, name: &str| TokenRecord {
        name: Some(name.into()),
        ..token(id, kind, TokenStatus::Active)
    };
    assert!(
        a.token
            .issue(
                "auth",
                &[named("a1", TokenKind::Access, "TV"), named("r1", TokenKind::Refresh, "TV")]
            )
            .await
            .unwrap()
    );
    a.token
        .amend(RevokeScope::Authorization("auth".into()), Amendment::Rename("Kitchen".into()))
        .await
        .unwrap();
    let retired = TokenRecord {
        status: TokenStatus::Retired,
        ..named("r1", TokenKind::Refresh, "TV")
    };
    assert!(
        b.token
            .refresh(
                "r1",
                &[retired, named("r2", TokenKind::Refresh, "TV"), named("a2", TokenKind::Access, "TV")]
            )
            .await
            .unwrap()
    );
    let stored = a.token.authorization("auth").await.unwrap();
    assert!(stored.iter().all(|r| r.name.as_deref() == Some("Kitchen")), "{stored:?}");
    a.token
        .amend(RevokeScope::Authorization("auth".into()), Amendment::Disable(Pauser::Owner))
        .await
        .unwrap();
    let retired = TokenRecord {
        status: TokenStatus::Retired,
        ..named("r2", TokenKind::Refresh, "Kitchen")
    };
    assert!(
        !b.token
            .refresh("r2", &[retired, named("r3", TokenKind::Refresh, "Kitchen")])
            .await
            .unwrap()
    );
}

/// Two stores on one database, as two processes: of 20 concurrent issuances of one
/// authorization, 20 rotations of one refresh token and 20 decisions of one code, spread over
/// both, exactly one of each wins, and only the winner's rows are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_processes_win_once() {
    let Some(dsn) = fresh_database("races").await else { return };
    let (a, b) = (open_on(&dsn).await, open_on(&dsn).await);
    let pick = |i: usize| if i.is_multiple_of(2) { &a } else { &b };

    let issues = (0..20).map(|i| {
        let rows = [
            token(&format!("a{i}"), TokenKind::Access, TokenStatus::Active),
            token(&format!("r{i}"), TokenKind::Refresh, TokenStatus::Active),
        ];
        let write = pick(i).token.issue("auth", &rows);
        async move { write.await.unwrap() }
    });
    let won: Vec<bool> = join_all(issues).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = won.iter().position(|w| *w).unwrap();
    let data = b.token.load().await.unwrap();
    assert_eq!(data.records.len(), 2, "only the winner's tokens were written");
    let refresh = format!("r{winner}");

    let rotations = (0..20).map(|i| {
        let retired = TokenRecord {
            status: TokenStatus::Retired,
            ..token(&refresh, TokenKind::Refresh, TokenStatus::Active)
        };
        let next = token(&format!("next{i}"), TokenKind::Refresh, TokenStatus::Active);
        let write = pick(i).token.refresh(&refresh, &[retired, next]);
        async move { write.await.unwrap() }
    });
    let won: Vec<bool> = join_all(rotations).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert_eq!(
        a.token.load().await.unwrap().records.len(),
        3,
        "the winner's two tokens and the retired one"
    );
    // A revocation by authorization from one process reaches the tokens another rotated in.
    a.token.revoke(RevokeScope::Authorization("auth".into())).await.unwrap();
    let after = b.token.authorization("auth").await.unwrap();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|r| r.status == TokenStatus::Revoked), "{after:?}");

    // Revocation is final: a stale copy written as active does not bring a token back.
    let revoked = token("a0x", TokenKind::Access, TokenStatus::Revoked);
    a.token.update(std::slice::from_ref(&revoked)).await.unwrap();
    b.token
        .update(&[token("a0x", TokenKind::Access, TokenStatus::Active)])
        .await
        .unwrap();
    let stored = a.token.load().await.unwrap();
    assert_eq!(
        stored.records.iter().find(|r| r.id == "a0x").map(|r| r.status),
        Some(TokenStatus::Revoked)
    );

    let key = [3u8; 32];
    let pending = DeviceRecord {
        user_code: "BCDFGHJK".into(),
        client_id: "cli".into(),
        scope: "read".into(),
        created_at_ms: 1,
        expires_at_ms: u64::MAX / 4,
        interval_ms: 5_000,
        state: RecordState::Pending,
        requested_from: None,
        resources: Vec::new(),
        code: None,
    };
    a.device.insert(key, &pending).await.unwrap();
    let decisions = (0..20).map(|i| {
        let rec = DeviceRecord {
            state: RecordState::Denied {
                user_id: format!("u{i}"),
                decided_at_ms: 2,
            },
            ..pending.clone()
        };
        let write = pick(i).device.decide(key, &rec);
        async move { write.await.unwrap() }
    });
    let won: Vec<bool> = join_all(decisions).await;
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    a.close().await;
    b.close().await;
}

/// A username is unique across processes: the second save of a taken name is refused
/// (`Ok(false)`), and a batch it shares with other writes still commits those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_username_is_refused_and_spoils_no_batch() {
    let Some(dsn) = fresh_database("unique").await else { return };
    let (a, b) = (open_on(&dsn).await, open_on(&dsn).await);
    let user = |id: &str| UserRecord {
        id: id.into(),
        username: "carol".into(),
        password_hash: None,
        is_admin: false,
        disabled: false,
        created_at: 1,
        auth_source: AuthSource::Local,
        external_id: None,
        email: None,
        full_name: None,
    };
    assert!(a.directory.save_user(&user("u1")).await.unwrap());
    let (taken, event) = tokio::join!(
        b.directory.save_user(&user("u2")),
        b.audit.append(&[AuditEvent::new(5, EventKind::UserCreated, "admin", true)])
    );
    assert!(!taken.unwrap());
    event.unwrap();
    assert_eq!(a.audit.page(AuditFilter::default(), None, 10).await.unwrap().events.len(), 1);
    assert_eq!(a.directory.load().await.unwrap().users.len(), 1);
}

/// A database migrated by a newer build (a migration this one does not know) is refused
/// with a message that says so; a malformed DSN names the problem without connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_and_a_bad_dsn_are_refused() {
    assert!(matches!(super::parse_dsn("host=/tmp port=notanumber"), Err(StoreError::Config(_))));
    assert!(matches!(
        super::parse_dsn("postgres://u@h/db?sslmode=bogus"),
        Err(StoreError::Config(_))
    ));
    let Some(dsn) = fresh_database("newer").await else { return };
    open_on(&dsn).await.close().await;
    let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '2030-01-01T00:00:00Z', '1')",
            &[],
        )
        .await
        .unwrap();
    let refused = open(PgOptions {
        dsn,
        pool_size: 2,
        connect_timeout: std::time::Duration::from_secs(5),
        max_batch: 8,
    })
    .await;
    match refused {
        Err(StoreError::Schema(m)) => assert!(m.contains("newer AuthGate"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

/// An unreachable server is retried until the connect timeout, then refused as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let refused = open(PgOptions {
        dsn: format!("host={} user=nobody dbname=none", dir.path().display()),
        pool_size: 2,
        connect_timeout: std::time::Duration::from_millis(700),
        max_batch: 8,
    })
    .await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() >= std::time::Duration::from_millis(700));
}

/// The cleanup lease is one process's at a time, until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_until_it_expires() {
    let Some(dsn) = fresh_database("lease").await else { return };
    let (a, b) = (open_on(&dsn).await, open_on(&dsn).await);
    assert!(a.server.lease("cleanup", "a", 1_000, 500).await.unwrap());
    assert!(!b.server.lease("cleanup", "b", 1_200, 500).await.unwrap(), "held by a");
    assert!(a.server.lease("cleanup", "a", 1_400, 500).await.unwrap(), "a renews");
    assert!(!b.server.lease("cleanup", "b", 1_800, 500).await.unwrap(), "still a's");
    assert!(b.server.lease("cleanup", "b", 1_901, 500).await.unwrap(), "expired: b takes it");
    assert!(!a.server.lease("cleanup", "a", 2_000, 500).await.unwrap());
}

/// Text a stranger typed may hold U+0000, which PostgreSQL's text cannot: the event is kept,
/// with U+FFFD in its place, and the rest of the write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_typed_by_a_stranger_is_stored_not_refused() {
    let Some(dsn) = fresh_database("nul").await else { return };
    let s = open_on(&dsn).await;
    let event = AuditEvent::new(5, EventKind::LoginFailed, "eve\u{0}il", false);
    s.audit.append(&[event]).await.unwrap();
    let page = s.audit.page(AuditFilter::default(), None, 10).await.unwrap();
    assert_eq!(page.events[0].actor, "eve\u{fffd}il");
    s.close().await;
}
