//! [`LimitRepo`] on PostgreSQL: `throttle`, one row per key, counted with one upsert so
//! concurrent attempts on several instances all count.

use super::writer::{Stmt, db_error};
use super::{Db, int};
use crate::store::limits::LimitRepo;
use crate::store::port::Pending;
use crate::time::Millis;

pub(super) struct Limits(pub Db);

impl LimitRepo for Limits {
    fn hit(&self, key: &str, window_ms: Millis, now: Millis) -> Pending<u32> {
        // Straight to a pooled connection, not through the group-commit writer: an attempt is
        // counted by the time the answer comes (autocommit), and nothing else waits on it.
        let (db, key) = (self.0.clone(), key.to_owned());
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_one(
                    "INSERT INTO throttle (key, window_start_ms, count) VALUES ($1, $2, 1) \
                     ON CONFLICT (key) DO UPDATE SET \
                       count = CASE WHEN throttle.window_start_ms <= $2 - $3 THEN 1 ELSE throttle.count + 1 END, \
                       window_start_ms = CASE WHEN throttle.window_start_ms <= $2 - $3 THEN $2 ELSE throttle.window_start_ms END \
                     RETURNING count",
                    &[&key, &int(now), &int(window_ms)],
                )
                .await
                .map_err(db_error)?;
            Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
        })
    }

    fn forgive(&self, key: &str) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "UPDATE throttle SET count = count - 1 WHERE key = $1 AND count > 0",
            vec![Box::new(key.to_owned())],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn prune(&self, before: Millis) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "DELETE FROM throttle WHERE window_start_ms < $1",
            vec![Box::new(int(before))],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn reset(&self, key: &str) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "DELETE FROM throttle WHERE key = $1",
            vec![Box::new(key.to_owned())],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}
