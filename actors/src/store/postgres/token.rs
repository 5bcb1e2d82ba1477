//! [`TokenRepo`] on PostgreSQL: `tokens` and the issuance marks in `authorizations`.
//!
//! Issuance and rotation are single statements: the mark is inserted (or the old refresh token
//! locked while still active) in a common table expression, and the token rows are written
//! only if that step succeeded. PostgreSQL re-checks the condition under the row lock, so two
//! processes racing for one code or one refresh token cannot both win.

use super::writer::{Stmt, db_error};
use super::{Db, decode, int, json};
use crate::store::change::Change;
use crate::store::port::{Pending, StoreError};
use crate::store::token::{Amendment, PageFilter, RevokeScope, StoredPage, TokenData, TokenRecord, TokenRef, TokenRepo};
use crate::time::Secs;

pub(super) struct Tokens(pub Db);

/// Writes `tokens` rows from a JSON array of records (`$1`).
macro_rules! upsert {
    () => {
        "INSERT INTO tokens (id, authorization_id, token_hash, status, expires_at, record) \
         SELECT r->>'id', r->>'authorization_id', r->>'token_hash', r->>'status', (r->>'expires_at')::bigint, r \
         FROM jsonb_array_elements($1::text::jsonb) r"
    };
}

/// Revocation is final across processes: a revoked (or retired) row is never written back to
/// active, whatever an instance with an older copy sends.
macro_rules! only_forward {
    () => {
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at, \
         record = excluded.record WHERE tokens.status = 'active' OR excluded.status = 'revoked'"
    };
}

/// The authorizations `records` belong to, each once.
fn authorizations(records: &[TokenRecord]) -> Vec<Change> {
    let mut ids: Vec<&str> = records.iter().map(|r| r.authorization_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(|a| Change::Authorization(a.to_owned())).collect()
}

async fn rows(db: &Db, sql: &str, key: &str) -> Result<Vec<TokenRecord>, StoreError> {
    let client = db.client().await?;
    let mut out = Vec::new();
    for row in client.query(sql, &[&key]).await.map_err(db_error)? {
        match decode::<TokenRecord>(row.get(0)) {
            Ok(rec) => out.push(rec),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable token record"),
        }
    }
    Ok(out)
}

fn failed<T: Send + 'static>(e: StoreError) -> Pending<T> {
    Box::pin(async move { Err(e) })
}

/// One change to the tokens of a scope, as three statements (by authorization, user,
/// client): `$1` names the scope, `$2` is the announcer, and each changed record announces
/// its authorization (PostgreSQL sends a repeated payload once).
macro_rules! by_scope {
    ($set:literal, $cond:literal) => {
        [
            concat!(
                "WITH r AS (UPDATE tokens SET ",
                $set,
                " WHERE authorization_id = $1 AND ",
                $cond,
                " RETURNING authorization_id) SELECT pg_notify('authgate', $2 || 'a' || authorization_id) FROM r"
            ),
            concat!(
                "WITH r AS (UPDATE tokens SET ",
                $set,
                " WHERE record->>'user_id' = $1 AND ",
                $cond,
                " RETURNING authorization_id) SELECT pg_notify('authgate', $2 || 'a' || authorization_id) FROM r"
            ),
            concat!(
                "WITH r AS (UPDATE tokens SET ",
                $set,
                " WHERE record->>'client_id' = $1 AND ",
                $cond,
                " RETURNING authorization_id) SELECT pg_notify('authgate', $2 || 'a' || authorization_id) FROM r"
            ),
        ]
    };
}

impl Tokens {
    /// Runs the statement of `sql` for `scope` (with `extra` as `$3`) once the scope's
    /// authorization marks are locked (a rotation locks its mark too): the statement starts
    /// after the lock is had, so it sees every token committed before. Answers how many
    /// records changed.
    fn rewrite(&self, scope: RevokeScope, sql: [&'static str; 3], extra: Option<String>) -> Pending<u64> {
        let (lock, change, key): (&'static str, &'static str, String) = match scope {
            RevokeScope::Authorization(a) => ("SELECT 1 FROM authorizations WHERE id = $1 FOR UPDATE", sql[0], a),
            RevokeScope::User(u) => (
                "SELECT 1 FROM authorizations WHERE id IN (SELECT authorization_id FROM tokens WHERE record->>'user_id' = $1) FOR UPDATE",
                sql[1],
                u,
            ),
            RevokeScope::Client(c) => (
                "SELECT 1 FROM authorizations WHERE id IN (SELECT authorization_id FROM tokens WHERE record->>'client_id' = $1) FOR UPDATE",
                sql[2],
                c,
            ),
        };
        let mut params: Vec<super::writer::Param> = vec![Box::new(key.clone()), Box::new(self.0.announcer())];
        if let Some(extra) = extra {
            params.push(Box::new(extra));
        }
        Box::pin(
            self.0
                .writer
                .submit_counted(vec![Stmt::exec(lock, vec![Box::new(key)]), Stmt::exec(change, params)]),
        )
    }
}

impl TokenRepo for Tokens {
    fn load(&self) -> Pending<TokenData> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let mut data = TokenData::default();
            for row in client.query("SELECT record::text FROM tokens", &[]).await.map_err(db_error)? {
                match decode::<TokenRecord>(row.get(0)) {
                    Ok(rec) => data.records.push(rec),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable token record"),
                }
            }
            for row in client
                .query("SELECT id, issued_at FROM authorizations", &[])
                .await
                .map_err(db_error)?
            {
                let (id, at): (String, i64) = (row.get(0), row.get(1));
                data.issued.push((id, u64::try_from(at).unwrap_or(0)));
            }
            Ok(data)
        })
    }

    fn issue(&self, authorization_id: &str, records: &[TokenRecord]) -> Pending<bool> {
        const SQL: &str = concat!(
            "WITH mark AS (INSERT INTO authorizations (id, issued_at) VALUES ($2, $3) ON CONFLICT DO NOTHING RETURNING 1), \
             rows AS (",
            upsert!(),
            " WHERE EXISTS (SELECT 1 FROM mark)",
            only_forward!(),
            " RETURNING 1) SELECT EXISTS (SELECT 1 FROM mark)"
        );
        let issued_at = records.iter().map(|r| r.issued_at).min().unwrap_or(0);
        match json(&records) {
            Ok(rows) => self.0.writer.submit(vec![
                Stmt::check(
                    SQL,
                    vec![Box::new(rows), Box::new(authorization_id.to_owned()), Box::new(int(issued_at))],
                ),
                self.0.announce(&[Change::Authorization(authorization_id.to_owned())]),
            ]),
            Err(e) => failed(e),
        }
    }

    fn refresh(&self, old_id: &str, records: &[TokenRecord]) -> Pending<bool> {
        // FOR UPDATE: a second refresh of the same token waits for the first to commit, then
        // sees it retired and writes nothing. The records take the device name the old token
        // has as stored (a rename another process committed is not undone by an older copy).
        const SQL: &str = "WITH old AS (SELECT record->'name' AS name FROM tokens WHERE id = $2 AND status = 'active' FOR UPDATE), \
             rows AS (INSERT INTO tokens (id, authorization_id, token_hash, status, expires_at, record) \
             SELECT r->>'id', r->>'authorization_id', r->>'token_hash', r->>'status', (r->>'expires_at')::bigint, \
                    CASE WHEN o.name IS NULL OR o.name = 'null'::jsonb THEN r ELSE jsonb_set(r, '{name}', o.name) END \
             FROM jsonb_array_elements($1::text::jsonb) r, old o \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at, record = excluded.record \
             RETURNING 1) SELECT EXISTS (SELECT 1 FROM old)";
        match json(&records) {
            Ok(rows) => {
                // The authorization's mark first: a revocation of it waits, or is waited for.
                let authorization = records.first().map(|r| r.authorization_id.clone()).unwrap_or_default();
                self.0.writer.submit(vec![
                    Stmt::exec(
                        "SELECT 1 FROM authorizations WHERE id = $1 FOR UPDATE",
                        vec![Box::new(authorization)],
                    ),
                    Stmt::check(SQL, vec![Box::new(rows), Box::new(old_id.to_owned())]),
                    self.0.announce(&authorizations(records)),
                ])
            }
            Err(e) => failed(e),
        }
    }

    fn update(&self, records: &[TokenRecord]) -> Pending<()> {
        const SQL: &str = concat!(upsert!(), only_forward!());
        if records.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        match json(&records) {
            Ok(rows) => {
                let write = self.0.writer.submit(vec![
                    Stmt::exec(SQL, vec![Box::new(rows)]),
                    self.0.announce(&authorizations(records)),
                ]);
                Box::pin(async move { write.await.map(|_| ()) })
            }
            Err(e) => failed(e),
        }
    }

    fn prune(&self, expired_before: Secs, marks_before: Secs, unseal_before: Secs) -> Pending<()> {
        let write = self.0.writer.submit(vec![
            Stmt::exec(
                "UPDATE tokens SET record = record - 'sealed_successor' \
                 WHERE record ? 'sealed_successor' AND (record->>'last_used_at')::bigint < $1",
                vec![Box::new(int(unseal_before))],
            ),
            Stmt::exec("DELETE FROM tokens WHERE expires_at < $1", vec![Box::new(int(expired_before))]),
            Stmt::exec(
                "DELETE FROM authorizations a WHERE issued_at < $1 AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.authorization_id = a.id)",
                vec![Box::new(int(marks_before))],
            ),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn owned_by(&self, owner: RevokeScope) -> Pending<Vec<TokenRecord>> {
        let db = self.0.clone();
        Box::pin(async move {
            match owner {
                RevokeScope::Authorization(a) => rows(&db, "SELECT record::text FROM tokens WHERE authorization_id = $1", &a).await,
                RevokeScope::User(u) => rows(&db, "SELECT record::text FROM tokens WHERE record->>'user_id' = $1", &u).await,
                RevokeScope::Client(c) => rows(&db, "SELECT record::text FROM tokens WHERE record->>'client_id' = $1", &c).await,
            }
        })
    }

    fn page(&self, filter: PageFilter, offset: usize, limit: usize) -> Pending<StoredPage> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let (offset, limit) = (i64::try_from(offset).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
            let rows = client
                .query(
                    "WITH a AS (SELECT authorization_id AS id, min((record->>'issued_at')::bigint) AS at, \
                                (array_agg(record->>'username' ORDER BY (record->>'issued_at')::bigint))[1] AS username, \
                                bool_or(status = 'active' AND expires_at > $1) AS live, \
                                bool_or(status = 'disabled' AND expires_at > $1) AS paused, \
                                bool_or(status = 'revoked') AS revoked \
                         FROM tokens GROUP BY authorization_id), \
                     s AS (SELECT *, CASE WHEN live THEN 'active' WHEN paused THEN 'disabled' \
                                          WHEN revoked THEN 'revoked' ELSE 'expired' END AS st FROM a), \
                     f AS (SELECT * FROM s WHERE ($2::text IS NULL OR username = $2) AND ($3::text IS NULL OR st = $3)) \
                     SELECT (SELECT count(*) FROM f), (SELECT count(*) FROM f WHERE live OR paused), \
                            coalesce((SELECT array_agg(id ORDER BY at DESC, id) FROM \
                                     (SELECT id, at FROM f ORDER BY at DESC, id LIMIT $5 OFFSET $4) p), '{}')",
                    &[
                        &int(filter.now),
                        &filter.username,
                        &filter.status.map(|s| s.name()),
                        &offset,
                        &limit,
                    ],
                )
                .await
                .map_err(db_error)?;
            let row = rows.first().ok_or_else(|| StoreError::Storage("no page".into()))?;
            let (total, live, ids): (i64, i64, Vec<String>) = (row.get(0), row.get(1), row.get(2));
            Ok(StoredPage {
                ids,
                total: usize::try_from(total).unwrap_or(0),
                live: usize::try_from(live).unwrap_or(0),
            })
        })
    }

    fn authorizations(&self, ids: &[String]) -> Pending<Vec<TokenRecord>> {
        let (db, ids) = (self.0.clone(), ids.to_vec());
        Box::pin(async move {
            let client = db.client().await?;
            let mut out = Vec::new();
            for row in client
                .query("SELECT record::text FROM tokens WHERE authorization_id = ANY($1)", &[&ids])
                .await
                .map_err(db_error)?
            {
                match decode::<TokenRecord>(row.get(0)) {
                    Ok(rec) => out.push(rec),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable token record"),
                }
            }
            Ok(out)
        })
    }

    fn revoke(&self, scope: RevokeScope) -> Pending<u64> {
        const SQL: [&str; 3] = by_scope!(
            "status = 'revoked', record = jsonb_set(record, '{status}', '\"revoked\"')",
            "status <> 'revoked'"
        );
        self.rewrite(scope, SQL, None)
    }

    fn amend(&self, scope: RevokeScope, change: Amendment) -> Pending<u64> {
        // As `Amendment::apply`: active ones, and disabled ones a lower pauser paused.
        const DISABLE: [&str; 3] = by_scope!(
            "status = 'disabled', record = jsonb_set(jsonb_set(record, '{status}', '\"disabled\"'), '{disabled_by}', to_jsonb($3::text))",
            "(status = 'active' OR (status = 'disabled' AND \
              (CASE record->>'disabled_by' WHEN 'owner' THEN 0 WHEN 'client' THEN 1 ELSE 2 END) < \
              (CASE $3 WHEN 'owner' THEN 0 WHEN 'client' THEN 1 ELSE 2 END)))"
        );
        // As `Pauser::may_enable`: an administrator enables anything, others what they paused.
        const ENABLE: [&str; 3] = by_scope!(
            "status = 'active', record = jsonb_set(record, '{status}', '\"active\"') - 'disabled_by'",
            "status = 'disabled' AND ($3 = 'admin' OR record->>'disabled_by' = $3)"
        );
        const RENAME: [&str; 3] = by_scope!(
            "record = jsonb_set(record, '{name}', to_jsonb($3::text))",
            "record->>'name' IS DISTINCT FROM $3"
        );
        match change {
            Amendment::Disable(by) => self.rewrite(scope, DISABLE, Some(by.name().to_owned())),
            Amendment::Enable(by) => self.rewrite(scope, ENABLE, Some(by.name().to_owned())),
            Amendment::Rename(name) => self.rewrite(scope, RENAME, Some(name)),
        }
    }

    fn authorization(&self, authorization_id: &str) -> Pending<Vec<TokenRecord>> {
        let (db, id) = (self.0.clone(), authorization_id.to_owned());
        Box::pin(async move { rows(&db, "SELECT record::text FROM tokens WHERE authorization_id = $1", &id).await })
    }

    fn holding(&self, token: TokenRef) -> Pending<Vec<TokenRecord>> {
        let db = self.0.clone();
        Box::pin(async move {
            match token {
                TokenRef::Id(id) => {
                    rows(
                        &db,
                        "SELECT record::text FROM tokens WHERE authorization_id = (SELECT authorization_id FROM tokens WHERE id = $1)",
                        &id,
                    )
                    .await
                }
                TokenRef::Authorization(a) => rows(&db, "SELECT record::text FROM tokens WHERE authorization_id = $1", &a).await,
                TokenRef::Hash(h) => {
                    rows(
                        &db,
                        "SELECT record::text FROM tokens WHERE authorization_id = \
                         (SELECT authorization_id FROM tokens WHERE token_hash = $1 LIMIT 1)",
                        &h,
                    )
                    .await
                }
            }
        })
    }

    fn remove(&self, ids: &[String], forget: &[String]) -> Pending<()> {
        let write = self.0.writer.submit(vec![
            Stmt::exec("DELETE FROM tokens WHERE id = ANY($1)", vec![Box::new(ids.to_vec())]),
            Stmt::exec("DELETE FROM authorizations WHERE id = ANY($1)", vec![Box::new(forget.to_vec())]),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}
