//! Moving a deployment from one database to another (`authgate migrate`): every owner's
//! records, read and written through the storage port, so any backend can be either side.
//!
//! What moves: users, clients and the first-start mark; the generated secrets and the
//! signing keyring; token records and issuance marks (so old access and refresh tokens keep
//! working, and a code redeemed before cannot be redeemed again); live browser sessions; the
//! audit trail, in order. Pending device codes do not move: a device that was waiting asks
//! for a new code. The target must be empty; the counts are checked after the copy.

use std::collections::BTreeMap;

use super::audit::{AuditEvent, AuditFilter};
use super::port::StoreError;
use super::stores::Stores;
use super::token::TokenRecord;
use crate::time::Millis;

/// The secrets the supervisor keeps in the store (see `supervisor::start`).
const SECRETS: [&str; 2] = ["jwt", "session"];
/// Audit events read per page.
const AUDIT_PAGE: usize = 1_000;

/// How many records of each kind were copied (and found in the target afterwards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub users: usize,
    pub clients: usize,
    pub tokens: usize,
    pub authorizations: usize,
    pub sessions: usize,
    pub audit_events: usize,
    pub secrets: usize,
    pub keyring: bool,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} users, {} clients, {} token records of {} authorizations, {} sessions, {} audit events, {} secrets, {}",
            self.users,
            self.clients,
            self.tokens,
            self.authorizations,
            self.sessions,
            self.audit_events,
            self.secrets,
            if self.keyring { "the signing keyring" } else { "no keyring" }
        )
    }
}

/// Copies everything from `from` into the empty `to`, then counts what `to` holds. `now`
/// decides which sessions are still live.
pub async fn copy(from: &Stores, to: &Stores, now: Millis) -> Result<Copied, StoreError> {
    let target = to.directory.load().await?;
    if target.seeded || !target.users.is_empty() || !to.token.load().await?.records.is_empty() {
        return Err(StoreError::Config(
            "the target database is not empty: migrate into a new, empty database".into(),
        ));
    }
    let mut copied = Copied::default();

    // Users and clients, with the first-start mark (so the target never seeds again).
    let dir = from.directory.load().await?;
    if dir.seeded
        && let (Some(admin), Some(client)) = (dir.users.first(), dir.clients.first())
    {
        to.directory.seed(admin, client).await?;
    }
    for u in &dir.users {
        if !to.directory.save_user(u).await? {
            return Err(StoreError::Storage(format!("the username {:?} is taken twice", u.username)));
        }
    }
    for c in &dir.clients {
        to.directory.save_client(c).await?;
    }
    copied.users = dir.users.len();
    copied.clients = dir.clients.len();

    // Secrets and the keyring, as they are (not generated anew).
    for name in SECRETS {
        let fresh = crate::crypto::secret::random_token(48);
        let kept = from.server.secret(name, fresh).await?;
        if to.server.secret(name, kept.clone()).await? != kept {
            return Err(StoreError::Storage(format!("the {name} secret did not copy")));
        }
        copied.secrets += 1;
    }
    if let Some(ring) = from.server.keyring().await? {
        copied.keyring = to.server.save_keyring(None, ring).await?;
    }

    // Tokens, by authorization, with their issuance marks; marks whose records were swept.
    let data = from.token.load().await?;
    let mut by_authorization: BTreeMap<String, Vec<TokenRecord>> = BTreeMap::new();
    for r in data.records {
        by_authorization.entry(r.authorization_id.clone()).or_default().push(r);
    }
    for (id, _) in &data.issued {
        by_authorization.entry(id.clone()).or_default();
    }
    for (id, records) in &by_authorization {
        to.token.issue(id, records).await?;
        copied.tokens += records.len();
    }
    copied.authorizations = by_authorization.len();

    // Live browser sessions.
    let sessions = from.session.load(now).await?;
    for (key, rec) in &sessions {
        to.session.insert(*key, rec).await?;
    }
    copied.sessions = sessions.len();

    // The audit trail, oldest first, in pages.
    let events = all_events(from).await?;
    for chunk in events.chunks(AUDIT_PAGE) {
        to.audit.append(chunk).await?;
    }
    copied.audit_events = events.len();

    verify(to, now, &copied).await?;
    Ok(copied)
}

/// Every audit event of `stores`, oldest first.
async fn all_events(stores: &Stores) -> Result<Vec<AuditEvent>, StoreError> {
    let mut events = Vec::new();
    let mut before = None;
    loop {
        let page = stores.audit.page(AuditFilter::default(), before, AUDIT_PAGE).await?;
        events.extend(page.events);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    events.reverse();
    Ok(events)
}

/// Counts what `to` holds against what was copied.
async fn verify(to: &Stores, now: Millis, copied: &Copied) -> Result<(), StoreError> {
    let dir = to.directory.load().await?;
    let tokens = to.token.load().await?;
    let found = Copied {
        users: dir.users.len(),
        clients: dir.clients.len(),
        tokens: tokens.records.len(),
        authorizations: {
            let mut ids: Vec<&str> = tokens.records.iter().map(|r| r.authorization_id.as_str()).collect();
            ids.extend(tokens.issued.iter().map(|(a, _)| a.as_str()));
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        },
        sessions: to.session.load(now).await?.len(),
        audit_events: all_events(to).await?.len(),
        secrets: copied.secrets,
        keyring: to.server.keyring().await?.is_some(),
    };
    if found != *copied {
        return Err(StoreError::Storage(format!(
            "the counts differ after the copy: copied {copied}, found {found}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::EventKind;
    use crate::store::session::SessionRecord;
    use crate::store::token::{TokenKind, TokenStatus};

    const T0: Millis = 1_700_000_000_000;

    async fn populate(s: &Stores) {
        // The conformance suite's records.
        use crate::store::conformance::{client, token, user};
        assert!(s.directory.seed(&user("u1", "admin"), &client("c1")).await.unwrap());
        assert!(s.directory.save_user(&user("u2", "alice")).await.unwrap());
        s.token
            .issue(
                "auth-1",
                &[
                    token("a1", "auth-1", TokenKind::Access, TokenStatus::Active),
                    token("r1", "auth-1", TokenKind::Refresh, TokenStatus::Retired),
                    token("r2", "auth-1", TokenKind::Refresh, TokenStatus::Active),
                ],
            )
            .await
            .unwrap();
        s.token.issue("auth-swept", &[]).await.unwrap();
        let session = SessionRecord {
            user_id: "u2".into(),
            username: "alice".into(),
            csrf_token: "c".into(),
            created_at_ms: T0,
            expires_at_ms: T0 + 60_000,
        };
        s.session.insert([4; 32], &session).await.unwrap();
        let events: Vec<AuditEvent> = (0..2_500u64)
            .map(|i| AuditEvent::new(T0 + i, EventKind::LoginSucceeded, format!("user{i}"), true))
            .collect();
        s.audit.append(&events).await.unwrap();
        s.server.secret("jwt", "the-jwt-secret".into()).await.unwrap();
        s.server.save_keyring(None, b"{\"keys\":[]}".to_vec()).await.unwrap();
    }

    /// A populated redb database copies whole into an empty PostgreSQL one, which then holds
    /// the same records; copying again into the now non-empty target is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_copies_into_postgres_whole() {
        let Some(dsn) = crate::store::postgres::tests::fresh_database("copy").await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let from = crate::store::redb::open(&dir.path().join("a.redb"), Default::default()).unwrap();
        populate(&from).await;
        let to = crate::store::postgres::tests::open_on(&dsn).await;
        let copied = copy(&from, &to, T0).await.unwrap();
        assert_eq!((copied.users, copied.clients, copied.tokens, copied.authorizations), (2, 1, 3, 2));
        assert_eq!((copied.sessions, copied.audit_events, copied.secrets), (1, 2_500, 2));
        assert!(copied.keyring);
        assert_eq!(to.server.secret("jwt", "other".into()).await.unwrap(), "the-jwt-secret");
        let tokens = to.token.load().await.unwrap();
        assert_eq!(
            tokens.records.iter().find(|r| r.id == "r1").map(|r| r.status),
            Some(TokenStatus::Retired)
        );
        assert!(!to.token.issue("auth-swept", &[]).await.unwrap(), "a spent code stays spent");
        let newest = to.audit.page(AuditFilter::default(), None, 1).await.unwrap();
        assert_eq!(newest.events[0].actor, "user2499", "the trail keeps its order");
        assert!(matches!(copy(&from, &to, T0).await, Err(StoreError::Config(_))));
        from.close().await;
        to.close().await;
    }
}
