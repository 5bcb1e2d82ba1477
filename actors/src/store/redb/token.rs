//! [`TokenRepo`] on redb: `tokens`, token id → JSON record; `authorizations`, authorization id
//! → issued-at seconds (the mark that makes issuance happen once).

use super::engine::{Engine, Guard, Op, Table, decode};
use crate::store::port::{Pending, StoreError};
use crate::store::token::{
    Amendment, AuthorizationStatus, PageFilter, RevokeScope, StoredPage, TokenData, TokenRecord, TokenRef, TokenRepo, TokenStatus,
};
use crate::time::Secs;

pub(super) struct Tokens(pub Engine);

fn puts(records: &[TokenRecord]) -> Result<Vec<Op>, StoreError> {
    records
        .iter()
        .map(|r| Op::put(Table::Tokens, r.id.as_bytes().to_vec(), r))
        .collect()
}

fn failed<T: Send + 'static>(e: StoreError) -> Pending<T> {
    Box::pin(async move { Err(e) })
}

impl Tokens {
    /// Writes `change(record)` for every record of `scope` it changes; answers how many.
    fn rewrite(&self, scope: RevokeScope, change: impl Fn(&TokenRecord) -> Option<TokenRecord> + Send + 'static) -> Pending<u64> {
        let engine = self.0.clone();
        Box::pin(async move {
            // One process writes this file: nothing changes between the read and the write
            // that its owner's book does not already know.
            let changed = engine
                .read(move |r| {
                    let mut changed = Vec::new();
                    r.scan(Table::Tokens, |_, v| {
                        if let Ok(rec) = decode::<TokenRecord>(v) {
                            let hit = match &scope {
                                RevokeScope::Authorization(a) => rec.authorization_id == *a,
                                RevokeScope::User(u) => rec.user_id == *u,
                                RevokeScope::Client(c) => rec.client_id == *c,
                            };
                            if let Some(new) = hit.then(|| change(&rec)).flatten() {
                                changed.push(new);
                            }
                        }
                        Ok(())
                    })?;
                    Ok(changed)
                })
                .await?;
            let n = changed.len() as u64;
            engine.submit_encoded(|| puts(&changed)).await?;
            Ok(n)
        })
    }
}

impl TokenRepo for Tokens {
    fn load(&self) -> Pending<TokenData> {
        self.0.read(|r| {
            let mut data = TokenData::default();
            r.scan(Table::Tokens, |_, v| {
                match decode::<TokenRecord>(v) {
                    Ok(rec) => data.records.push(rec),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable token record"),
                }
                Ok(())
            })?;
            r.scan(Table::Authorizations, |k, v| {
                if let (Ok(id), Ok(at)) = (std::str::from_utf8(k), decode::<u64>(v)) {
                    data.issued.push((id.to_owned(), at));
                }
                Ok(())
            })?;
            Ok(data)
        })
    }

    fn issue(&self, authorization_id: &str, records: &[TokenRecord]) -> Pending<bool> {
        let issued_at = records.iter().map(|r| r.issued_at).min().unwrap_or(0);
        let key = authorization_id.as_bytes().to_vec();
        let ops = match (Op::put(Table::Authorizations, key.clone(), &issued_at), puts(records)) {
            (Ok(mark), Ok(mut ops)) => {
                ops.push(mark);
                ops
            }
            (Err(e), _) | (_, Err(e)) => return failed(e),
        };
        self.0.submit_if(vec![Guard::absent(Table::Authorizations, key)], ops)
    }

    fn refresh(&self, old_id: &str, records: &[TokenRecord]) -> Pending<bool> {
        let still_active = Guard {
            table: Table::Tokens,
            key: old_id.as_bytes().to_vec(),
            holds: |v| {
                v.and_then(|v| decode::<TokenRecord>(v).ok())
                    .is_some_and(|r| r.status == TokenStatus::Active)
            },
        };
        match puts(records) {
            Ok(ops) => self.0.submit_if(vec![still_active], ops),
            Err(e) => failed(e),
        }
    }

    fn update(&self, records: &[TokenRecord]) -> Pending<()> {
        self.0.submit_encoded(|| puts(records))
    }

    fn prune(&self, expired_before: Secs, marks_before: Secs, unseal_before: Secs) -> Pending<()> {
        let engine = self.0.clone();
        Box::pin(async move {
            let data = Tokens(engine.clone()).load().await?;
            let unsealed: Vec<TokenRecord> = data
                .records
                .iter()
                .filter(|r| r.sealed_successor.is_some() && r.last_used_at.is_some_and(|t| t < unseal_before))
                .map(|r| TokenRecord {
                    sealed_successor: None,
                    ..r.clone()
                })
                .collect();
            engine.submit_encoded(|| puts(&unsealed)).await?;
            let old: Vec<String> = data
                .records
                .iter()
                .filter(|r| r.expires_at < expired_before)
                .map(|r| r.id.clone())
                .collect();
            let live: std::collections::HashSet<&str> = data
                .records
                .iter()
                .filter(|r| r.expires_at >= expired_before)
                .map(|r| r.authorization_id.as_str())
                .collect();
            let forget: Vec<String> = data
                .issued
                .iter()
                .filter(|(a, at)| *at < marks_before && !live.contains(a.as_str()))
                .map(|(a, _)| a.clone())
                .collect();
            Tokens(engine).remove(&old, &forget).await
        })
    }

    fn owned_by(&self, owner: RevokeScope) -> Pending<Vec<TokenRecord>> {
        self.0.read(move |r| {
            let mut rows = Vec::new();
            r.scan(Table::Tokens, |_, v| {
                if let Ok(rec) = decode::<TokenRecord>(v) {
                    let hit = match &owner {
                        RevokeScope::Authorization(a) => rec.authorization_id == *a,
                        RevokeScope::User(u) => rec.user_id == *u,
                        RevokeScope::Client(c) => rec.client_id == *c,
                    };
                    if hit {
                        rows.push(rec);
                    }
                }
                Ok(())
            })?;
            Ok(rows)
        })
    }

    fn page(&self, filter: PageFilter, offset: usize, limit: usize) -> Pending<StoredPage> {
        let load = self.load();
        Box::pin(async move {
            // (first issue, username of the first token, its records' statuses) per authorization.
            type Seen = (Secs, String, Vec<(TokenStatus, Secs)>);
            let mut by_id: std::collections::HashMap<String, Seen> = Default::default();
            for r in load.await?.records {
                let e = by_id
                    .entry(r.authorization_id.clone())
                    .or_insert((r.issued_at, r.username.clone(), Vec::new()));
                if r.issued_at < e.0 {
                    (e.0, e.1) = (r.issued_at, r.username.clone());
                }
                e.2.push((r.status, r.expires_at));
            }
            let mut list: Vec<(String, Secs, bool)> = by_id
                .into_iter()
                .filter_map(|(id, (at, name, records))| {
                    let status = AuthorizationStatus::of(records.iter().map(|(s, e)| (s, *e)), filter.now);
                    let selected = filter.username.as_ref().is_none_or(|u| *u == name) && filter.status.is_none_or(|s| s == status);
                    let live = matches!(status, AuthorizationStatus::Active | AuthorizationStatus::Disabled);
                    selected.then_some((id, at, live))
                })
                .collect();
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Ok(StoredPage {
                total: list.len(),
                live: list.iter().filter(|a| a.2).count(),
                ids: list.into_iter().skip(offset).take(limit).map(|a| a.0).collect(),
            })
        })
    }

    fn authorizations(&self, ids: &[String]) -> Pending<Vec<TokenRecord>> {
        let ids: std::collections::HashSet<String> = ids.iter().cloned().collect();
        self.0.read(move |r| {
            let mut rows = Vec::new();
            r.scan(Table::Tokens, |_, v| {
                if let Ok(rec) = decode::<TokenRecord>(v)
                    && ids.contains(&rec.authorization_id)
                {
                    rows.push(rec);
                }
                Ok(())
            })?;
            Ok(rows)
        })
    }

    fn revoke(&self, scope: RevokeScope) -> Pending<u64> {
        self.rewrite(scope, |rec| {
            (rec.status != TokenStatus::Revoked).then(|| TokenRecord {
                status: TokenStatus::Revoked,
                ..rec.clone()
            })
        })
    }

    fn amend(&self, scope: RevokeScope, change: Amendment) -> Pending<u64> {
        self.rewrite(scope, move |rec| change.apply(rec))
    }

    fn authorization(&self, authorization_id: &str) -> Pending<Vec<TokenRecord>> {
        let id = authorization_id.to_owned();
        self.0.read(move |r| {
            let mut rows = Vec::new();
            r.scan(Table::Tokens, |_, v| {
                if let Ok(rec) = decode::<TokenRecord>(v)
                    && rec.authorization_id == id
                {
                    rows.push(rec);
                }
                Ok(())
            })?;
            Ok(rows)
        })
    }

    fn holding(&self, token: TokenRef) -> Pending<Vec<TokenRecord>> {
        let engine = self.0.clone();
        Box::pin(async move {
            let found = engine
                .read(move |r| {
                    let mut found = None;
                    r.scan(Table::Tokens, |_, v| {
                        if let Ok(rec) = decode::<TokenRecord>(v) {
                            let hit = match &token {
                                TokenRef::Id(id) => rec.id == *id,
                                TokenRef::Hash(h) => rec.token_hash.as_deref() == Some(h.as_str()),
                                TokenRef::Authorization(a) => rec.authorization_id == *a,
                            };
                            if hit {
                                found = Some(rec.authorization_id);
                            }
                        }
                        Ok(())
                    })?;
                    Ok(found)
                })
                .await?;
            match found {
                Some(a) => Tokens(engine).authorization(&a).await,
                None => Ok(Vec::new()),
            }
        })
    }

    fn remove(&self, ids: &[String], forget: &[String]) -> Pending<()> {
        let ops = ids
            .iter()
            .map(|id| Op::delete(Table::Tokens, id.as_bytes().to_vec()))
            .chain(forget.iter().map(|a| Op::delete(Table::Authorizations, a.as_bytes().to_vec())))
            .collect();
        self.0.submit(ops)
    }
}
