//! The token book: every token record in memory with its indexes, all rules, no I/O.

use std::collections::HashMap;

use super::types::{AuthorizationPage, AuthorizationQuery, AuthorizationStatus, AuthorizationView, Owner, RevokeTarget, TokenInfo};
use crate::crypto::secret::Digest32;
use crate::store::token::{Amendment, TokenData, TokenKind, TokenRecord, TokenStatus};
use crate::time::Secs;

/// Records are kept this long past expiry (for session lists), then swept.
pub(super) const EXPIRED_KEEP: Secs = 24 * 3600;

#[derive(Default)]
pub struct TokenBook {
    records: HashMap<String, TokenRecord>,
    refresh_by_hash: HashMap<Digest32, String>,
    /// Access tokens minted by the token service, by SHA-256.
    access_by_hash: HashMap<Digest32, String>,
    /// User id → their authorization ids.
    by_user: HashMap<String, Vec<String>>,
    by_authorization: HashMap<String, Vec<String>>,
    /// Authorization id → when its tokens were issued: remembered past its records, for as
    /// long as its device code could still be presented.
    issued: HashMap<String, Secs>,
}

fn digest_of(rec: &TokenRecord) -> Option<Digest32> {
    rec.token_hash
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <Digest32>::try_from(h).ok())
}

impl TokenBook {
    pub fn load(data: TokenData) -> Self {
        let mut book = Self {
            issued: data.issued.into_iter().collect(),
            ..Self::default()
        };
        for r in data.records {
            book.upsert(r);
        }
        book
    }

    /// Remembers that the tokens of `authorization_id` were issued at `now`.
    pub fn mark_issued(&mut self, authorization_id: &str, now: Secs) {
        self.issued.insert(authorization_id.to_owned(), now);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn by_hash(&mut self, kind: TokenKind) -> &mut HashMap<Digest32, String> {
        match kind {
            TokenKind::Refresh => &mut self.refresh_by_hash,
            TokenKind::Access => &mut self.access_by_hash,
        }
    }

    pub fn upsert(&mut self, rec: TokenRecord) {
        if let Some(h) = digest_of(&rec) {
            self.by_hash(rec.kind).insert(h, rec.id.clone());
        }
        if !self.records.contains_key(&rec.id) {
            let ids = self.by_authorization.entry(rec.authorization_id.clone()).or_default();
            if ids.is_empty() {
                self.by_user
                    .entry(rec.user_id.clone())
                    .or_default()
                    .push(rec.authorization_id.clone());
            }
            ids.push(rec.id.clone());
        }
        self.records.insert(rec.id.clone(), rec);
    }

    /// Records as the store has them now, merged in: new ones added, changed ones replaced, but
    /// a token revoked or retired here stays so (revocation is final; a read may predate a
    /// revocation of ours still being committed). Disabled and active follow the store: a read
    /// that predates a change announced since is made again (`TokenState::outdated`).
    pub fn merge(&mut self, records: Vec<TokenRecord>) {
        for mut r in records {
            if let Some(held) = self.records.get(&r.id)
                && held.status.is_final()
                && !r.status.is_final()
            {
                r.status = held.status;
            }
            self.upsert(r);
        }
    }

    /// Applies `records` (new or changed) in memory.
    pub fn apply(&mut self, records: &[TokenRecord]) {
        for r in records {
            self.upsert(r.clone());
        }
    }

    /// Removes a record; answers the authorization it belonged to if none of its records remain.
    pub fn remove(&mut self, id: &str) -> Option<String> {
        let rec = self.records.remove(id)?;
        if let Some(h) = digest_of(&rec) {
            let index = self.by_hash(rec.kind);
            if index.get(&h).is_some_and(|i| *i == rec.id) {
                index.remove(&h);
            }
        }
        let ids = self.by_authorization.get_mut(&rec.authorization_id)?;
        ids.retain(|i| i != id);
        if !ids.is_empty() {
            return None;
        }
        self.by_authorization.remove(&rec.authorization_id);
        if let Some(auths) = self.by_user.get_mut(&rec.user_id) {
            auths.retain(|a| *a != rec.authorization_id);
            if auths.is_empty() {
                self.by_user.remove(&rec.user_id);
            }
        }
        Some(rec.authorization_id)
    }

    /// Whether any record of this authorization is held.
    pub fn has_authorization(&self, authorization_id: &str) -> bool {
        self.by_authorization.contains_key(authorization_id)
    }

    /// Whether the tokens of this authorization were ever issued (a record or a mark remains).
    pub fn issued(&self, authorization_id: &str) -> bool {
        self.by_authorization.contains_key(authorization_id) || self.issued.contains_key(authorization_id)
    }

    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.records.get(id)
    }

    /// The record of a refresh token, by its SHA-256.
    pub fn refresh_token(&self, hash: &Digest32) -> Option<&TokenRecord> {
        self.refresh_by_hash.get(hash).and_then(|id| self.records.get(id))
    }

    /// The record of a token-service access token, by its SHA-256.
    pub fn minted_access_token(&self, hash: &Digest32) -> Option<&TokenRecord> {
        self.access_by_hash.get(hash).and_then(|id| self.records.get(id))
    }

    /// The record a revocation or introspection names.
    pub fn target(&self, target: &RevokeTarget) -> Option<&TokenRecord> {
        match target {
            RevokeTarget::AccessId(id) => self.records.get(id),
            RevokeTarget::Hash(h) => self.refresh_token(h).or_else(|| self.minted_access_token(h)),
        }
    }

    /// One authorization's summary, from its records.
    pub fn authorization(&self, authorization_id: &str, now: Secs) -> Option<AuthorizationView> {
        let recs: Vec<&TokenRecord> = self
            .by_authorization
            .get(authorization_id)?
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        let first = recs.iter().min_by_key(|r| r.issued_at)?;
        let status = AuthorizationStatus::of(recs.iter().map(|r| (&r.status, r.expires_at)), now);
        // Disabled tokens count as live: enabling brings them back until their own expiry.
        let live = |r: &&&TokenRecord| matches!(r.status, TokenStatus::Active | TokenStatus::Disabled) && r.expires_at > now;
        let expires_at = recs
            .iter()
            .filter(|r| live(r))
            .map(|r| r.expires_at)
            .max()
            .or_else(|| recs.iter().map(|r| r.expires_at).max())
            .unwrap_or(first.expires_at);
        let last_used_at = recs
            .iter()
            .filter_map(|r| r.last_used_at)
            .chain(recs.iter().map(|r| r.issued_at).filter(|t| *t > first.issued_at))
            .max();
        Some(AuthorizationView {
            id: authorization_id.to_owned(),
            user_id: first.user_id.clone(),
            username: first.username.clone(),
            client_id: first.client_id.clone(),
            scope: first.scope.clone(),
            // The newest name (a rename reaches every record; a record written meanwhile by a
            // rotation carries the name it had).
            name: recs
                .iter()
                .max_by_key(|r| r.issued_at)
                .and_then(|r| r.name.clone())
                .or_else(|| first.name.clone()),
            authorized_at: first.issued_at,
            last_used_at,
            expires_at,
            status,
            disabled_by: recs
                .iter()
                .filter(|r| r.status == TokenStatus::Disabled)
                .find_map(|r| r.disabled_by),
        })
    }

    /// [`TokenBook::authorization`], if `owner` (when given) is the user it belongs to.
    pub fn owned_authorization(&self, authorization_id: &str, owner: Option<&str>, now: Secs) -> Option<AuthorizationView> {
        self.authorization(authorization_id, now)
            .filter(|a| owner.is_none_or(|o| o == a.user_id))
    }

    /// The authorizations `query` selects, newest first.
    pub fn authorizations(&self, query: &AuthorizationQuery, now: Secs) -> Vec<AuthorizationView> {
        let ids: Vec<&String> = match &query.user_id {
            Some(u) => self.by_user.get(u).into_iter().flatten().collect(),
            None => self.by_authorization.keys().collect(),
        };
        let mut list: Vec<AuthorizationView> = ids
            .into_iter()
            .filter_map(|a| self.authorization(a, now))
            .filter(|a| query.status.is_none_or(|s| a.status == s))
            .filter(|a| query.username.as_ref().is_none_or(|u| a.username == *u))
            .collect();
        list.sort_by(|a, b| b.authorized_at.cmp(&a.authorized_at).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// Page `page` (1-based, clamped) of `per_page` of the authorizations `query` selects.
    pub fn authorization_page(&self, query: &AuthorizationQuery, page: usize, per_page: usize, now: Secs) -> AuthorizationPage {
        let all = self.authorizations(query, now);
        let live = all
            .iter()
            .filter(|a| matches!(a.status, AuthorizationStatus::Active | AuthorizationStatus::Disabled))
            .count();
        let per_page = per_page.max(1);
        let pages = all.len().div_ceil(per_page).max(1);
        let page = page.clamp(1, pages);
        let rows = all.into_iter().skip((page - 1) * per_page).take(per_page).collect();
        AuthorizationPage { rows, page, pages, live }
    }

    /// Every token record of one user, newest first.
    pub fn records_of(&self, user_id: &str) -> Vec<TokenRecord> {
        let mut list: Vec<TokenRecord> = self.records.values().filter(|r| r.user_id == user_id).cloned().collect();
        list.sort_by(|a, b| b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id)));
        list
    }

    /// The authorization ids of a user or a client.
    pub fn authorizations_of(&self, of: &Owner) -> Vec<String> {
        match of {
            Owner::User(u) => self.by_user.get(u).cloned().unwrap_or_default(),
            Owner::Client(c) => self
                .by_authorization
                .iter()
                .filter(|(_, recs)| recs.first().and_then(|r| self.records.get(r)).is_some_and(|r| r.client_id == *c))
                .map(|(a, _)| a.clone())
                .collect(),
        }
    }

    /// The records that make `change` to every token of an authorization.
    pub fn amend_authorization(&self, authorization_id: &str, change: &Amendment) -> Vec<TokenRecord> {
        self.by_authorization
            .get(authorization_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id))
            .filter_map(|r| change.apply(r))
            .collect()
    }

    /// The records that revoke every live token of an authorization.
    pub fn revoke_authorization(&self, authorization_id: &str) -> Vec<TokenRecord> {
        self.by_authorization
            .get(authorization_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id))
            .filter(|r| r.status != TokenStatus::Revoked)
            .map(|r| TokenRecord {
                status: TokenStatus::Revoked,
                ..r.clone()
            })
            .collect()
    }

    /// What `/oauth/tokeninfo` says of an active access token at `now`.
    pub fn active_info(r: &TokenRecord, now: Secs) -> Option<TokenInfo> {
        if r.kind != TokenKind::Access || r.status != TokenStatus::Active || r.expires_at <= now {
            return None;
        }
        Some(TokenInfo {
            active: true,
            user_id: r.user_id.clone(),
            username: r.username.clone(),
            client_id: r.client_id.clone(),
            scope: r.scope.clone(),
            aud: crate::crypto::keys::Audience::of(&r.resources, &r.client_id),
            exp: r.expires_at,
            iat: r.issued_at,
        })
    }

    /// The refresh tokens replaced before `before` that still keep their successor sealed, as
    /// they are once it is erased.
    pub fn unseal(&self, before: Secs) -> Vec<TokenRecord> {
        self.records
            .values()
            .filter(|r| r.sealed_successor.is_some() && r.last_used_at.is_some_and(|t| t < before))
            .map(|r| TokenRecord {
                sealed_successor: None,
                ..r.clone()
            })
            .collect()
    }

    /// Removes the records long expired at `now`, and forgets the issuance of authorizations
    /// left without records once `remember` has passed since it (a device code can no longer
    /// be presented then): the record ids and the authorization ids.
    pub fn sweep(&mut self, now: Secs, remember: Secs) -> (Vec<String>, Vec<String>) {
        let old: Vec<String> = self
            .records
            .values()
            .filter(|r| r.expires_at.saturating_add(EXPIRED_KEEP) <= now)
            .map(|r| r.id.clone())
            .collect();
        for id in &old {
            self.remove(id);
        }
        let forget: Vec<String> = self
            .issued
            .iter()
            .filter(|(a, at)| at.saturating_add(remember) <= now && !self.by_authorization.contains_key(*a))
            .map(|(a, _)| a.clone())
            .collect();
        for a in &forget {
            self.issued.remove(a);
        }
        (old, forget)
    }
}

/// Whether every word of `requested` is one of `granted`.
pub fn scope_within(requested: &str, granted: &str) -> bool {
    requested.split_whitespace().all(|s| granted.split_whitespace().any(|g| g == s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret;
    use crate::store::token::Pauser;

    #[test]
    fn scope_narrowing_is_checked_word_by_word() {
        assert!(scope_within("read", "read write"));
        assert!(scope_within("write read", "read write"));
        assert!(!scope_within("admin", "read write"));
        assert!(!scope_within("rea", "read write"));
    }

    fn rec(id: &str, auth: &str, kind: TokenKind, issued_at: Secs) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            kind,
            token_hash: (kind == TokenKind::Refresh).then(|| secret::sha256_hex(id)),
            user_id: "u".into(),
            username: "alice".into(),
            client_id: "c".into(),
            scope: "read".into(),
            authorization_id: auth.into(),
            issued_at,
            expires_at: issued_at + 100,
            status: TokenStatus::Active,
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

    #[test]
    fn revoking_an_authorization_touches_only_its_tokens() {
        let mut b = TokenBook::default();
        b.upsert(rec("a1", "A", TokenKind::Access, 1));
        b.upsert(rec("r1", "A", TokenKind::Refresh, 1));
        b.upsert(rec("a2", "B", TokenKind::Access, 1));
        let change = b.revoke_authorization("A");
        let ids: Vec<_> = change.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"a1") && ids.contains(&"r1"));
        assert!(change.iter().all(|r| r.status == TokenStatus::Revoked));
        b.apply(&change);
        assert_eq!(b.records["a2"].status, TokenStatus::Active);
        assert_eq!(b.authorization("A", 50).unwrap().status, AuthorizationStatus::Revoked);
        assert!(b.refresh_token(&secret::sha256("r1")).is_some());
        assert_eq!(b.remove("r1"), None, "a1 is left");
        assert!(b.refresh_token(&secret::sha256("r1")).is_none());
        assert_eq!(b.by_authorization["A"], vec!["a1".to_string()]);
        assert_eq!(b.remove("a1"), Some("A".to_string()), "A has no record left");
        assert!(!b.issued("A"));
    }

    #[test]
    fn disabling_pauses_an_authorization_and_enabling_brings_back_what_is_unexpired() {
        let mut b = TokenBook::default();
        b.upsert(rec("a1", "A", TokenKind::Access, 1));
        b.upsert(rec("r1", "A", TokenKind::Refresh, 1));
        b.upsert(TokenRecord {
            status: TokenStatus::Retired,
            ..rec("r0", "A", TokenKind::Refresh, 1)
        });
        let off = b.amend_authorization("A", &Amendment::Disable(Pauser::Owner));
        assert_eq!(off.len(), 2, "the retired token is left as it is");
        b.apply(&off);
        assert_eq!(b.authorization("A", 50).unwrap().status, AuthorizationStatus::Disabled);
        assert!(
            TokenBook::active_info(b.get("a1").unwrap(), 50).is_none(),
            "a disabled token is not active"
        );
        // A late read of the store from before the disable may say active: the store's word is
        // taken (a read outdated by a change is made again), but retired stays retired.
        b.merge(vec![rec("a1", "A", TokenKind::Access, 1), rec("r0", "A", TokenKind::Refresh, 1)]);
        assert_eq!(b.get("a1").unwrap().status, TokenStatus::Active);
        assert_eq!(b.get("r0").unwrap().status, TokenStatus::Retired);
        b.apply(&b.amend_authorization("A", &Amendment::Disable(Pauser::Admin)));
        assert!(
            b.amend_authorization("A", &Amendment::Enable(Pauser::Owner)).is_empty(),
            "an admin's pause (taking over the owner's) is not the owner's to lift"
        );
        assert_eq!(b.authorization("A", 50).unwrap().disabled_by, Some(Pauser::Admin));
        b.apply(&b.amend_authorization("A", &Amendment::Enable(Pauser::Admin)));
        assert_eq!(b.authorization("A", 50).unwrap().status, AuthorizationStatus::Active);
        // Past their expiry, disabled tokens make an expired authorization, not a disabled one.
        b.apply(&b.amend_authorization("A", &Amendment::Disable(Pauser::Owner)));
        assert_eq!(b.authorization("A", 500).unwrap().status, AuthorizationStatus::Expired);
        b.apply(&b.amend_authorization("A", &Amendment::Rename("TV".into())));
        assert_eq!(b.authorization("A", 50).unwrap().name.as_deref(), Some("TV"));
    }

    #[test]
    fn authorizations_are_paged_newest_first_by_their_owner() {
        let mut b = TokenBook::default();
        for i in 0..7u64 {
            b.upsert(rec(&format!("a{i}"), &format!("A{i}"), TokenKind::Access, 10 + i));
        }
        let q = AuthorizationQuery {
            status: Some(AuthorizationStatus::Active),
            ..Default::default()
        };
        let first = b.authorization_page(&q, 1, 3, 50);
        assert_eq!((first.page, first.pages, first.live), (1, 3, 7));
        assert_eq!(first.rows.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["A6", "A5", "A4"]);
        let last = b.authorization_page(&q, 99, 3, 50);
        assert_eq!((last.page, last.rows.len()), (3, 1), "a page past the end is the last one");
        // Once they expire, none are active.
        assert_eq!(b.authorization_page(&q, 1, 3, 1_000).rows.len(), 0);
        let named = AuthorizationQuery {
            username: Some("bob".into()),
            ..Default::default()
        };
        assert!(b.authorizations(&named, 50).is_empty());
    }

    #[test]
    fn an_issuance_is_remembered_past_its_records_until_its_code_could_no_longer_come_back() {
        let mut b = TokenBook::default();
        b.upsert(rec("a1", "A", TokenKind::Access, 1));
        b.mark_issued("A", 1);
        b.upsert(rec("a2", "B", TokenKind::Access, 1_000_000));
        b.mark_issued("B", 1_000_000);
        let remember = 2 * EXPIRED_KEEP;
        // The record goes a day after it expired; the mark stays.
        assert_eq!(b.sweep(101 + EXPIRED_KEEP, remember), (vec!["a1".to_string()], vec![]));
        assert_eq!(b.len(), 1);
        assert!(b.issued("A"), "the code of A still cannot redeem again");
        // Once the code's lifetime has passed too, A is forgotten; B, still live, is not.
        assert_eq!(b.sweep(1 + remember, remember), (vec![], vec!["A".to_string()]));
        assert!(!b.issued("A") && b.issued("B"));
    }
}
