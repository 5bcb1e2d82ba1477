//! The token actor on a database several processes share: its book holds only the
//! authorizations this process has issued, refreshed or been asked about (each read whole on
//! first use), so memory follows the tokens in use rather than every token stored. What
//! lists authorizations (the account and admin pages, a mass revocation's count) asks the
//! store, off the mailbox, and builds its answer from the records read.

use ractor::RpcReplyPort;

use super::TokenState;
use super::book::TokenBook;
use super::types::{AuthorizationPage, AuthorizationQuery, AuthorizationStatus, AuthorizationView, Owner};
use crate::error::OAuthError;
use crate::store::token::{PageFilter, RevokeScope, TokenData, TokenRecord};
use crate::time::{Millis, Secs};

/// A book of just `records`, to answer one question from.
fn book_of(records: Vec<TokenRecord>) -> TokenBook {
    TokenBook::load(TokenData {
        records,
        issued: Vec::new(),
    })
}

fn scope_of(of: &Owner) -> RevokeScope {
    match of {
        Owner::User(u) => RevokeScope::User(u.clone()),
        Owner::Client(c) => RevokeScope::Client(c.clone()),
    }
}

impl TokenState {
    /// Page `page` of the authorizations `query` selects, from the store.
    pub(super) fn page_from_store(
        &self,
        query: AuthorizationQuery,
        (page, per_page): (usize, usize),
        now: Millis,
        reply: RpcReplyPort<AuthorizationPage>,
    ) {
        let repo = self.repo.clone();
        let now: Secs = now / 1000;
        tokio::spawn(async move {
            let per_page = per_page.max(1);
            let answer = async {
                if let Some(user) = &query.user_id {
                    // One user's: all of them, then the book's own paging.
                    let records = repo.owned_by(RevokeScope::User(user.clone())).await?;
                    return Ok(book_of(records).authorization_page(&query, page, per_page, now));
                }
                let filter = PageFilter {
                    username: query.username.clone(),
                    status: query.status,
                    now,
                };
                let offset = |p: usize| (p.max(1) - 1).saturating_mul(per_page);
                let mut stored = repo.page(filter.clone(), offset(page), per_page).await?;
                let pages = stored.total.div_ceil(per_page).max(1);
                let page = page.clamp(1, pages);
                if stored.ids.is_empty() && stored.total > 0 {
                    stored = repo.page(filter, offset(page), per_page).await?;
                }
                let book = book_of(repo.authorizations(&stored.ids).await?);
                let rows = stored.ids.iter().filter_map(|id| book.authorization(id, now)).collect();
                Ok::<_, crate::store::StoreError>(AuthorizationPage {
                    rows,
                    page,
                    pages,
                    live: stored.live,
                })
            };
            match answer.await {
                Ok(p) => {
                    let _ = reply.send(p);
                }
                // The port carries no error: a caller that hears nothing shows the page as busy.
                Err(e) => tracing::warn!(error = %e, "cannot read authorizations from the database"),
            }
        });
    }

    /// Every authorization `query` selects (not paged), from the store.
    pub(super) fn list_from_store(&self, query: AuthorizationQuery, now: Millis, reply: RpcReplyPort<Vec<AuthorizationView>>) {
        let repo = self.repo.clone();
        tokio::spawn(async move {
            let records = match &query.user_id {
                Some(user) => repo.owned_by(RevokeScope::User(user.clone())).await,
                None => repo.load().await.map(|d| d.records),
            };
            match records {
                Ok(records) => {
                    let _ = reply.send(book_of(records).authorizations(&query, now / 1000));
                }
                Err(e) => tracing::warn!(error = %e, "cannot read authorizations from the database"),
            }
        });
    }

    /// Every token record of one user, newest first, from the store.
    pub(super) fn records_from_store(&self, user_id: String, reply: RpcReplyPort<Vec<TokenRecord>>) {
        let repo = self.repo.clone();
        tokio::spawn(async move {
            match repo.owned_by(RevokeScope::User(user_id.clone())).await {
                Ok(records) => {
                    let _ = reply.send(book_of(records).records_of(&user_id));
                }
                Err(e) => tracing::warn!(error = %e, "cannot read token records from the database"),
            }
        });
    }

    /// Revokes every token of a user or client, wherever issued: what this book holds is
    /// revoked here at once; the store revokes by owner, and the answer (how many
    /// authorizations were active) is counted from what it held before.
    pub(super) fn revoke_all_in_store(&mut self, of: Owner, now: Millis, reply: RpcReplyPort<Result<usize, OAuthError>>) {
        let held: Vec<TokenRecord> = self
            .book
            .authorizations_of(&of)
            .iter()
            .flat_map(|a| self.book.revoke_authorization(a))
            .collect();
        self.book.apply(&held);
        self.outdate_all();
        let (repo, me) = (self.repo.clone(), self.peers.me.clone());
        tokio::spawn(async move {
            let scope = scope_of(&of);
            let answer = async {
                let before = book_of(repo.owned_by(scope.clone()).await?);
                let live = before
                    .authorizations_of(&of)
                    .iter()
                    .filter(|a| {
                        before
                            .authorization(a, now / 1000)
                            .is_some_and(|v| matches!(v.status, AuthorizationStatus::Active | AuthorizationStatus::Disabled))
                    })
                    .count();
                repo.revoke(scope).await?;
                Ok::<_, crate::store::StoreError>(live)
            };
            let answer = answer.await;
            // Reads that started before the commit may predate the revocation.
            let _ = me.cast(super::TokenMsg::Outdated);
            if let Err(e) = &answer {
                // What was revoked in memory may not be in the store: forget it all; it is
                // read again on use.
                tracing::warn!(error = %e, "a revocation failed; held tokens are read again");
                let _ = me.cast(super::TokenMsg::Forget);
            }
            let _ = reply.send(answer.map_err(OAuthError::from));
        });
    }
}
