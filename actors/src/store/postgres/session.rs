//! [`SessionRepo`] on PostgreSQL: `sessions`, keyed by SHA-256 of the session id.

use super::writer::{Stmt, db_error};
use super::{Db, decode, int, json};
use crate::store::change::Change;
use crate::store::port::Pending;
use crate::store::session::{SessionKey, SessionRecord, SessionRepo};
use crate::time::Millis;

pub(super) struct Sessions(pub Db);

impl SessionRepo for Sessions {
    fn load(&self, now: Millis) -> Pending<Vec<(SessionKey, SessionRecord)>> {
        let db = self.0.clone();
        Box::pin(async move {
            db.writer
                .submit(vec![Stmt::exec(
                    "DELETE FROM sessions WHERE expires_at_ms <= $1",
                    vec![Box::new(int(now))],
                )])
                .await?;
            let client = db.client().await?;
            let rows = client
                .query("SELECT key, record::text FROM sessions", &[])
                .await
                .map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let (key, record): (&[u8], &str) = (row.get(0), row.get(1));
                match (SessionKey::try_from(key), decode::<SessionRecord>(record)) {
                    (Ok(k), Ok(r)) => out.push((k, r)),
                    _ => tracing::warn!("skipping an unreadable session"),
                }
            }
            Ok(out)
        })
    }

    fn insert(&self, key: SessionKey, record: &SessionRecord) -> Pending<()> {
        let write = json(record).map(|r| {
            self.0.writer.submit(vec![Stmt::exec(
                "INSERT INTO sessions (key, user_id, expires_at_ms, record) VALUES ($1, $2, $3, $4::text::jsonb) \
                 ON CONFLICT (key) DO UPDATE SET user_id = excluded.user_id, expires_at_ms = excluded.expires_at_ms, record = excluded.record",
                vec![
                    Box::new(key.to_vec()),
                    Box::new(record.user_id.clone()),
                    Box::new(int(record.expires_at_ms)),
                    Box::new(r),
                ],
            )])
        });
        Box::pin(async move { write?.await.map(|_| ()) })
    }

    fn remove_for_user(&self, user_id: &str, keep: Option<SessionKey>) -> Pending<usize> {
        // One statement deletes and announces each session it deleted, so a session started
        // elsewhere up to the commit goes too.
        let write = self.0.writer.submit_counted(vec![Stmt::exec(
            "WITH gone AS (DELETE FROM sessions WHERE user_id = $1 AND key <> $2 RETURNING key) \
             SELECT pg_notify('authgate', $3 || 's' || encode(key, 'hex')) FROM gone",
            vec![
                Box::new(user_id.to_owned()),
                Box::new(keep.map(|k| k.to_vec()).unwrap_or_default()),
                Box::new(self.0.announcer()),
            ],
        )]);
        Box::pin(async move { Ok(usize::try_from(write.await?).unwrap_or(usize::MAX)) })
    }

    fn prune(&self, now: Millis) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "DELETE FROM sessions WHERE expires_at_ms <= $1",
            vec![Box::new(int(now))],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn get(&self, key: SessionKey) -> Pending<Option<SessionRecord>> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT record::text FROM sessions WHERE key = $1", &[&&key[..]])
                .await
                .map_err(db_error)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn remove(&self, keys: &[SessionKey]) -> Pending<()> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let changes: Vec<Change> = keys
            .iter()
            .filter_map(|k| k.as_slice().try_into().ok())
            .map(Change::Session)
            .collect();
        let write = self.0.writer.submit(vec![
            Stmt::exec("DELETE FROM sessions WHERE key = ANY($1)", vec![Box::new(keys)]),
            self.0.announce(&changes),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}
