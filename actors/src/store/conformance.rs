//! The port's promises, as tests any backend must pass: each conditional write keeps its
//! condition, answers `Ok(false)` when it loses and then writes nothing, and what is written
//! reads back the same after the database is closed and opened again.
//!
//! [`check`] runs them all against the [`Stores`] a backend opened; each backend's tests call
//! it (the redb backend below), so a new backend is held to the same words.

use std::sync::Arc;

use super::Stores;
use super::audit::{AuditEvent, AuditFilter, EventKind};
use super::device::{DeviceRecord, RecordState};
use super::directory::{AuthSource, ClientRecord, UserRecord};
use super::session::SessionRecord;
use super::token::{
    Amendment, AuthorizationStatus, PageFilter, Pauser, RevokeScope, StoredPage, TokenKind, TokenRecord, TokenRef, TokenStatus,
};

const T0: u64 = 1_700_000_000_000;

fn device(state: RecordState) -> DeviceRecord {
    DeviceRecord {
        user_code: "BCDFGHJK".into(),
        client_id: "cli".into(),
        scope: "read".into(),
        created_at_ms: T0,
        expires_at_ms: T0 + 600_000,
        interval_ms: 5_000,
        state,
        requested_from: None,
        resources: Vec::new(),
        code: None,
    }
}

pub(super) fn token(id: &str, authorization: &str, kind: TokenKind, status: TokenStatus) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        kind,
        token_hash: (kind == TokenKind::Refresh).then(|| format!("{id:0>64}")),
        user_id: "u1".into(),
        username: "alice".into(),
        client_id: "cli".into(),
        scope: "read".into(),
        authorization_id: authorization.into(),
        issued_at: T0 / 1000,
        expires_at: T0 / 1000 + 3600,
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

pub(super) fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.into(),
        username: name.into(),
        password_hash: Some("$argon2id$test".into()),
        is_admin: false,
        disabled: false,
        created_at: T0 / 1000,
        auth_source: AuthSource::Local,
        external_id: None,
        email: None,
        full_name: None,
    }
}

pub(super) fn client(id: &str) -> ClientRecord {
    ClientRecord {
        always_refresh: false,
        resources: Vec::new(),
        client_id: id.into(),
        name: "CLI".into(),
        description: String::new(),
        confidential: false,
        secret_hash: None,
        grant_types: vec!["refresh_token".into()],
        scopes: vec!["read".into()],
        redirect_uris: Vec::new(),
        enabled: true,
        created_at: T0 / 1000,
    }
}

/// Runs every promise against `open()`'s stores; `open` is called again to see what survived
/// a close.
pub async fn check<F: Future<Output = Stores>>(open: impl Fn() -> F) {
    let s = open().await;
    devices(&s).await;
    tokens(&s).await;
    directory(&s).await;
    sessions_and_audit(&s).await;
    server(&s).await;
    s.close().await;
    // What was acknowledged is there after the database is opened again.
    let s = open().await;
    let data = s.token.load().await.unwrap();
    assert!(data.records.iter().any(|r| r.id == "r2"), "the rotated-in token survived a close");
    assert!(data.issued.iter().any(|(a, _)| a == "auth-1"), "the issuance mark survived a close");
    assert_eq!(s.directory.load().await.unwrap().users.len(), 2);
    assert_eq!(s.server.secret("jwt", "other".into()).await.unwrap(), "first");
    s.close().await;
}

async fn devices(s: &Stores) {
    let key = [7u8; 32];
    assert!(s.device.insert(key, &device(RecordState::Pending)).await.unwrap());
    let approved = device(RecordState::Approved {
        auth_time: None,
        user_id: "u1".into(),
        username: "alice".into(),
        authorization_id: "auth-1".into(),
        decided_at_ms: T0 + 1,
        name: None,
    });
    let denied = device(RecordState::Denied {
        user_id: "u2".into(),
        decided_at_ms: T0 + 2,
    });
    // One decision per code, whichever comes first.
    assert!(s.device.decide(key, &approved).await.unwrap());
    assert!(!s.device.decide(key, &denied).await.unwrap(), "a decided code is not decided again");
    assert!(
        !s.device.decide([8u8; 32], &denied).await.unwrap(),
        "nor is a code that is not there"
    );
    let loaded = s.device.load(T0).await.unwrap();
    assert_eq!(loaded, vec![(key, approved)]);
    // Expired past the cut-off: gone from the load, and deleted.
    assert!(s.device.load(T0 + 700_000).await.unwrap().is_empty());
    assert!(s.device.load(T0).await.unwrap().is_empty(), "an expired row is deleted by the load");
    s.device.remove(&[key, [9u8; 32]]).await.unwrap();
    // Reads of one, and pruning by time whoever created it.
    assert!(s.device.insert(key, &device(RecordState::Pending)).await.unwrap());
    assert_eq!(s.device.get(key).await.unwrap(), Some(device(RecordState::Pending)));
    assert_eq!(s.device.by_user_code("BCDFGHJK").await.unwrap().map(|(k, _)| k), Some(key));
    s.device.prune(T0 + 600_001).await.unwrap();
    assert_eq!(s.device.get(key).await.unwrap(), None);
}

async fn tokens(s: &Stores) {
    let access = token("a1", "auth-1", TokenKind::Access, TokenStatus::Active);
    let refresh = token("r1", "auth-1", TokenKind::Refresh, TokenStatus::Active);
    // An authorization is issued once.
    assert!(s.token.issue("auth-1", &[access.clone(), refresh.clone()]).await.unwrap());
    let again = token("a9", "auth-1", TokenKind::Access, TokenStatus::Active);
    assert!(!s.token.issue("auth-1", std::slice::from_ref(&again)).await.unwrap());
    // A refresh token rotates once.
    let retired = TokenRecord {
        status: TokenStatus::Retired,
        ..refresh.clone()
    };
    let next = token("r2", "auth-1", TokenKind::Refresh, TokenStatus::Active);
    assert!(s.token.refresh("r1", &[retired.clone(), next.clone()]).await.unwrap());
    let racer = token("r3", "auth-1", TokenKind::Refresh, TokenStatus::Active);
    assert!(
        !s.token.refresh("r1", &[retired, racer]).await.unwrap(),
        "the loser of a rotation writes nothing"
    );
    assert!(!s.token.refresh("missing", std::slice::from_ref(&next)).await.unwrap());
    // Revocation is written as it is.
    let revoked = TokenRecord {
        status: TokenStatus::Revoked,
        ..access
    };
    s.token.update(std::slice::from_ref(&revoked)).await.unwrap();
    let data = s.token.load().await.unwrap();
    let ids: Vec<&str> = {
        let mut ids: Vec<&str> = data.records.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids, ["a1", "r1", "r2"], "nothing of a refused write was written");
    assert_eq!(
        data.records.iter().find(|r| r.id == "a1").map(|r| r.status),
        Some(TokenStatus::Revoked)
    );
    assert_eq!(data.issued.len(), 1);
    // Sweeping records keeps the mark unless told to forget it.
    s.token.remove(&["a1".into()], &[]).await.unwrap();
    assert!(!s.token.issue("auth-1", &[again]).await.unwrap(), "the mark outlives the records");
    s.token.remove(&[], &["auth-0".into()]).await.unwrap();
    // Reads of one authorization, by the authorization or by one of its tokens.
    assert_eq!(s.token.authorization("auth-1").await.unwrap().len(), 2);
    assert_eq!(s.token.holding(TokenRef::Id("r2".into())).await.unwrap().len(), 2);
    assert_eq!(s.token.holding(TokenRef::Hash(format!("{:0>64}", "r1"))).await.unwrap().len(), 2);
    assert!(s.token.holding(TokenRef::Id("nope".into())).await.unwrap().is_empty());
    // A revocation by scope reaches every record of it, whoever wrote them.
    assert_eq!(
        s.token.revoke(RevokeScope::User("u1".into())).await.unwrap(),
        2,
        "r1 (retired) and r2"
    );
    let all = s.token.authorization("auth-1").await.unwrap();
    assert!(all.iter().any(|r| r.id == "r2" && r.status == TokenStatus::Revoked));
    // Pruning by time: expired records, then marks left without records.
    let short = TokenRecord {
        expires_at: T0 / 1000 + 10,
        ..token("p1", "auth-p", TokenKind::Access, TokenStatus::Active)
    };
    assert!(s.token.issue("auth-p", std::slice::from_ref(&short)).await.unwrap());
    s.token.prune(T0 / 1000 + 11, T0 / 1000 + 1, 0).await.unwrap();
    assert!(s.token.authorization("auth-p").await.unwrap().is_empty());
    assert!(s.token.issue("auth-p", &[short]).await.unwrap(), "its mark went with its records");
    assert_eq!(s.token.authorization("auth-1").await.unwrap().len(), 2, "the others stay");
    // Reads for the lists: by owner, by page (newest first, then by id), by authorizations.
    assert_eq!(s.token.owned_by(RevokeScope::User("u1".into())).await.unwrap().len(), 3);
    assert!(s.token.owned_by(RevokeScope::Client("other".into())).await.unwrap().is_empty());
    let all = PageFilter {
        username: None,
        status: None,
        now: T0 / 1000,
    };
    let page = s.token.page(all.clone(), 0, 10).await.unwrap();
    assert_eq!(
        (page.ids.as_slice(), page.total, page.live),
        (&["auth-1".to_owned(), "auth-p".to_owned()][..], 2, 1)
    );
    let second = s.token.page(all.clone(), 1, 1).await.unwrap();
    assert_eq!(second.ids, ["auth-p"]);
    let live = s
        .token
        .page(
            PageFilter {
                status: Some(AuthorizationStatus::Active),
                ..all.clone()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!((live.ids.len(), live.total), (1, 1));
    let nobody = s
        .token
        .page(
            PageFilter {
                username: Some("zed".into()),
                ..all
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(nobody, StoredPage::default());
    assert_eq!(s.token.authorizations(&["auth-p".into()]).await.unwrap().len(), 1);
    amendments(s).await;
}

/// Disable, enable and rename by scope: only active tokens are disabled, only disabled ones
/// enabled, revoked and retired ones stay so; a disabled refresh token does not rotate; pages
/// filter by the status.
async fn amendments(s: &Stores) {
    let access = token("d-a1", "auth-d", TokenKind::Access, TokenStatus::Active);
    let refresh = token("d-r1", "auth-d", TokenKind::Refresh, TokenStatus::Active);
    let retired = token("d-r0", "auth-d", TokenKind::Refresh, TokenStatus::Retired);
    assert!(s.token.issue("auth-d", &[access, refresh.clone(), retired]).await.unwrap());
    let statuses = || async {
        let mut all: Vec<(String, TokenStatus)> = s
            .token
            .authorization("auth-d")
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect();
        all.sort();
        all
    };
    let scope = || RevokeScope::Authorization("auth-d".into());
    assert_eq!(s.token.amend(scope(), Amendment::Disable(Pauser::Admin)).await.unwrap(), 2);
    assert_eq!(
        statuses().await,
        [
            ("d-a1".to_owned(), TokenStatus::Disabled),
            ("d-r0".to_owned(), TokenStatus::Retired),
            ("d-r1".to_owned(), TokenStatus::Disabled)
        ]
    );
    assert_eq!(
        s.token.amend(scope(), Amendment::Disable(Pauser::Owner)).await.unwrap(),
        0,
        "already disabled"
    );
    assert_eq!(
        s.token.amend(scope(), Amendment::Disable(Pauser::Admin)).await.unwrap(),
        0,
        "already the admin's"
    );
    // Only an administrator (or whoever disabled it) enables it.
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Owner)).await.unwrap(), 0);
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Client)).await.unwrap(), 0);
    assert!(
        s.token
            .authorization("auth-d")
            .await
            .unwrap()
            .iter()
            .filter(|r| r.status == TokenStatus::Disabled)
            .all(|r| r.disabled_by == Some(Pauser::Admin))
    );
    let rotated = TokenRecord {
        status: TokenStatus::Retired,
        ..refresh.clone()
    };
    assert!(
        !s.token.refresh("d-r1", &[rotated]).await.unwrap(),
        "a disabled token does not rotate"
    );
    let filter = |status| PageFilter {
        username: None,
        status: Some(status),
        now: T0 / 1000,
    };
    let paused = s.token.page(filter(AuthorizationStatus::Disabled), 0, 10).await.unwrap();
    assert_eq!(paused.ids, ["auth-d"]);
    assert!(
        !s.token
            .page(filter(AuthorizationStatus::Active), 0, 10)
            .await
            .unwrap()
            .ids
            .contains(&"auth-d".to_owned())
    );
    assert_eq!(s.token.amend(scope(), Amendment::Rename("Living room TV".into())).await.unwrap(), 3);
    assert!(
        s.token
            .authorization("auth-d")
            .await
            .unwrap()
            .iter()
            .all(|r| r.name.as_deref() == Some("Living room TV"))
    );
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Admin)).await.unwrap(), 2);
    assert!(
        s.token
            .authorization("auth-d")
            .await
            .unwrap()
            .iter()
            .all(|r| r.disabled_by.is_none())
    );
    assert_eq!(statuses().await[1].1, TokenStatus::Retired, "a retired token stays retired");
    assert!(statuses().await.iter().filter(|(_, st)| *st == TokenStatus::Active).count() == 2);
    // By client; and a revocation is final whatever is amended after it.
    assert!(
        s.token
            .amend(RevokeScope::Client("cli".into()), Amendment::Disable(Pauser::Client))
            .await
            .unwrap()
            >= 2
    );
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Owner)).await.unwrap(), 0);
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Client)).await.unwrap(), 2);
    // An owner's pause is taken over by an administrator's, which the owner cannot lift.
    assert_eq!(s.token.amend(scope(), Amendment::Disable(Pauser::Owner)).await.unwrap(), 2);
    assert_eq!(s.token.amend(scope(), Amendment::Disable(Pauser::Admin)).await.unwrap(), 2);
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Owner)).await.unwrap(), 0);
    s.token.revoke(scope()).await.unwrap();
    assert_eq!(s.token.amend(scope(), Amendment::Enable(Pauser::Admin)).await.unwrap(), 0);
    assert!(statuses().await.iter().all(|(_, st)| *st == TokenStatus::Revoked));
    let revoked = s.token.page(filter(AuthorizationStatus::Revoked), 0, 10).await.unwrap();
    assert!(revoked.ids.contains(&"auth-d".to_owned()));
    // A sealed successor is erased once its grace is over, and only then.
    let sealed = |at| TokenRecord {
        last_used_at: Some(at),
        sealed_successor: Some("seal".into()),
        ..token(&format!("s-{at}"), "auth-s", TokenKind::Refresh, TokenStatus::Retired)
    };
    assert!(s.token.issue("auth-s", &[sealed(100), sealed(200)]).await.unwrap());
    s.token.prune(0, 0, 150).await.unwrap();
    let mut kept: Vec<(String, Option<String>)> = s
        .token
        .authorization("auth-s")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.sealed_successor))
        .collect();
    kept.sort();
    assert_eq!(kept, [("s-100".to_owned(), None), ("s-200".to_owned(), Some("seal".to_owned()))]);
}

async fn directory(s: &Stores) {
    assert!(s.directory.load().await.unwrap().users.is_empty());
    assert!(s.directory.seed(&user("u1", "admin"), &client("c1")).await.unwrap());
    assert!(
        !s.directory.seed(&user("u9", "admin2"), &client("c9")).await.unwrap(),
        "the first seed wins"
    );
    assert!(s.directory.save_user(&user("u2", "alice")).await.unwrap());
    assert!(s.directory.save_client(&client("c2")).await.is_ok());
    s.directory.remove_client("c2").await.unwrap();
    s.directory.save_user(&user("u3", "bob")).await.unwrap();
    s.directory.remove_user("u3").await.unwrap();
    let data = s.directory.load().await.unwrap();
    assert!(data.seeded);
    let mut names: Vec<&str> = data.users.iter().map(|u| u.username.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["admin", "alice"]);
    assert_eq!(data.clients.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(), ["c1"]);
}

async fn sessions_and_audit(s: &Stores) {
    let rec = |expires_at_ms| SessionRecord {
        user_id: "u1".into(),
        username: "alice".into(),
        csrf_token: "csrf".into(),
        created_at_ms: T0,
        expires_at_ms,
    };
    s.session.insert([1u8; 32], &rec(T0 + 10)).await.unwrap();
    s.session.insert([2u8; 32], &rec(T0 + 1_000)).await.unwrap();
    assert_eq!(s.session.load(T0 + 10).await.unwrap().len(), 1, "expired at load time: dropped");
    s.session.remove(&[[2u8; 32]]).await.unwrap();
    assert!(s.session.load(T0).await.unwrap().is_empty(), "the expired one was deleted too");
    // Ending a user's sessions but one; reads of one; pruning by time.
    for k in 1..=3u8 {
        s.session.insert([k; 32], &rec(T0 + 1_000)).await.unwrap();
    }
    assert_eq!(s.session.remove_for_user("u1", Some([1u8; 32])).await.unwrap(), 2);
    assert!(s.session.get([1u8; 32]).await.unwrap().is_some());
    assert!(s.session.get([2u8; 32]).await.unwrap().is_none());
    s.session.prune(T0 + 1_000).await.unwrap();
    assert!(s.session.get([1u8; 32]).await.unwrap().is_none());

    // Two events of the same millisecond both stay; pages run newest first.
    let events: Vec<AuditEvent> = (0..5u64)
        .map(|i| AuditEvent::new(T0 + i / 2, EventKind::LoginFailed, format!("user{i}"), false))
        .collect();
    s.audit.append(&events).await.unwrap();
    let page = s.audit.page(AuditFilter::default(), None, 3).await.unwrap();
    assert_eq!(page.events.len(), 3);
    assert!(page.events.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
    let rest = s.audit.page(AuditFilter::default(), page.next, 3).await.unwrap();
    assert_eq!(rest.events.len(), 2);
    assert!(rest.next.is_none());
    assert_eq!(s.audit.prune(T0 + 2).await.unwrap(), 4);
}

async fn server(s: &Stores) {
    // The first writer's secret wins.
    assert_eq!(s.server.secret("jwt", "first".into()).await.unwrap(), "first");
    assert_eq!(s.server.secret("jwt", "second".into()).await.unwrap(), "first");
    // The keyring is replaced only from the version that was read.
    assert_eq!(s.server.keyring().await.unwrap(), None);
    assert!(s.server.save_keyring(None, b"{\"v\":1}".to_vec()).await.unwrap());
    assert!(
        !s.server.save_keyring(None, b"{\"v\":2}".to_vec()).await.unwrap(),
        "someone else wrote first"
    );
    assert!(
        s.server
            .save_keyring(Some(b"{\"v\":1}".to_vec()), b"{\"v\":3}".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(s.server.keyring().await.unwrap(), Some(b"{\"v\":3}".to_vec()));
    // A lease is one holder's until it expires or is renewed.
    assert!(s.server.lease("cleanup", "a", T0, 1_000).await.unwrap());
    assert!(s.server.lease("cleanup", "a", T0 + 500, 1_000).await.unwrap(), "renewed");
    s.server.ping().await.unwrap();
    s.server.probe(T0).await.unwrap();
    assert!(!s.server.failing());
}

/// The redb backend keeps every promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_the_ports_promises() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = dir.path().join("conformance.redb");
    check(|| async { super::redb::open(&path, super::redb::StoreOptions::default()).unwrap() }).await;
}
