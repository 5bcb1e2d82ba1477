//! [`AuditRepo`] on PostgreSQL: `audit`, one row per event, paged newest first by
//! `(at_ms, id)`; the cursor is that pair, as hex of two big-endian integers.

use super::writer::{Stmt, db_error};
use super::{Db, decode, int, json};
use crate::store::audit::{AuditEvent, AuditFilter, AuditPage, AuditRepo};
use crate::store::port::{Pending, StoreError};
use crate::time::Millis;

/// Deletes per pruning transaction: no one transaction holds up the writes behind it.
const PRUNE_CHUNK: i64 = 5_000;

pub(super) struct Audit(pub Db);

fn cursor(before: Option<String>) -> (i64, i64) {
    before
        .and_then(|b| hex::decode(b).ok())
        .and_then(|b| {
            let (at, id) = b.split_at_checked(8)?;
            Some((i64::from_be_bytes(at.try_into().ok()?), i64::from_be_bytes(id.try_into().ok()?)))
        })
        .unwrap_or((i64::MAX, i64::MAX))
}

fn cursor_of(at: i64, id: i64) -> String {
    let mut b = at.to_be_bytes().to_vec();
    b.extend_from_slice(&id.to_be_bytes());
    hex::encode(b)
}

impl AuditRepo for Audit {
    fn append(&self, events: &[AuditEvent]) -> Pending<()> {
        if events.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let rows = match json(&events) {
            Ok(rows) => rows,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        // One statement for the whole group, in order (the id keeps ties in append order).
        let write = self.0.writer.submit(vec![Stmt::exec(
            "INSERT INTO audit (at_ms, kind, actor, subject, client_id, event) \
             SELECT (e->>'at_ms')::bigint, e->>'kind', e->>'actor', coalesce(e->>'subject', ''), e->>'client_id', e \
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n",
            vec![Box::new(rows)],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn page(&self, filter: AuditFilter, before: Option<String>, limit: usize) -> Pending<AuditPage> {
        let db = self.0.clone();
        Box::pin(async move {
            let (at, id) = cursor(before);
            let kind = filter.kind.map(|k| k.name().to_owned());
            let take = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            let client = db.client().await?;
            let rows = client
                .query(
                    "SELECT at_ms, id, event::text FROM audit \
                     WHERE (at_ms, id) < ($1, $2) \
                       AND ($3::text IS NULL OR actor = $3 OR subject = $3) \
                       AND ($4::text IS NULL OR client_id = $4) \
                       AND ($5::text IS NULL OR kind = $5) \
                     ORDER BY at_ms DESC, id DESC LIMIT $6",
                    &[&at, &id, &filter.user, &filter.client_id, &kind, &take],
                )
                .await
                .map_err(db_error)?;
            let mut page = AuditPage::default();
            let mut last = None;
            for row in rows {
                if page.events.len() == limit {
                    page.next = last;
                    break;
                }
                let (at, id, event): (i64, i64, &str) = (row.get(0), row.get(1), row.get(2));
                match decode::<AuditEvent>(event) {
                    Ok(e) => page.events.push(e),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable audit event"),
                }
                last = Some(cursor_of(at, id));
            }
            Ok(page)
        })
    }

    fn prune(&self, before: Millis) -> Pending<usize> {
        let db = self.0.clone();
        Box::pin(async move {
            let mut pruned = 0usize;
            loop {
                let client = db.client().await?;
                let n = client
                    .execute(
                        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
                        &[&int(before), &PRUNE_CHUNK],
                    )
                    .await
                    .map_err(db_error)?;
                pruned += usize::try_from(n).map_err(|e| StoreError::Storage(e.to_string()))?;
                if n < PRUNE_CHUNK as u64 {
                    return Ok(pruned);
                }
            }
        })
    }
}
