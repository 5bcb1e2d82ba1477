//! [`ServerRepo`] on PostgreSQL: secrets, the keyring and the health probe in `meta`; the
//! writer's state for health and metrics.

use std::sync::atomic::Ordering;

use super::writer::{Stmt, db_error};
use super::{Db, int};
use crate::store::port::{Pending, StoreError};
use crate::store::server::ServerRepo;
use crate::time::Millis;

const KEYRING: &str = "jwt:keyring";

pub(super) struct Server(pub Db);

impl ServerRepo for Server {
    fn secret(&self, name: &str, fresh: String) -> Pending<String> {
        let db = self.0.clone();
        let name = format!("secret:{name}");
        Box::pin(async move {
            // The first writer wins; everyone then reads the winner's.
            db.writer
                .submit(vec![Stmt::exec(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    vec![Box::new(name.clone()), Box::new(fresh.into_bytes())],
                )])
                .await?;
            let client = db.client().await?;
            let row = client
                .query_one("SELECT value FROM meta WHERE name = $1", &[&name])
                .await
                .map_err(db_error)?;
            String::from_utf8(row.get(0)).map_err(|e| StoreError::Decode(e.to_string()))
        })
    }

    fn keyring(&self) -> Pending<Option<Vec<u8>>> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT value FROM meta WHERE name = $1", &[&KEYRING])
                .await
                .map_err(db_error)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn save_keyring(&self, previous: Option<Vec<u8>>, next: Vec<u8>) -> Pending<bool> {
        let stmt = match previous {
            None => Stmt::check(
                "WITH w AS (INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM w)",
                vec![Box::new(KEYRING), Box::new(next)],
            ),
            Some(previous) => Stmt::check(
                "WITH w AS (UPDATE meta SET value = $2 WHERE name = $1 AND value = $3 RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM w)",
                vec![Box::new(KEYRING), Box::new(next), Box::new(previous)],
            ),
        };
        self.0.writer.submit(vec![stmt])
    }

    fn lease(&self, name: &str, holder: &str, now: Millis, ttl_ms: Millis) -> Pending<bool> {
        // The value is "holder|until_ms"; taken when free, expired, or already the holder's.
        self.0.writer.submit(vec![Stmt::check(
            "WITH w AS (INSERT INTO meta (name, value) VALUES ($1, convert_to($2 || '|' || $3::bigint::text, 'UTF8')) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value \
             WHERE split_part(convert_from(meta.value, 'UTF8'), '|', 2)::bigint < $4 \
                OR split_part(convert_from(meta.value, 'UTF8'), '|', 1) = $2 \
             RETURNING 1) SELECT EXISTS (SELECT 1 FROM w)",
            vec![
                Box::new(format!("lease:{name}")),
                Box::new(holder.to_owned()),
                Box::new(int(now.saturating_add(ttl_ms))),
                Box::new(int(now)),
            ],
        )])
    }

    fn ping(&self) -> Pending<()> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            client.query_one("SELECT 1", &[]).await.map_err(db_error)?;
            Ok(())
        })
    }

    fn probe(&self, now: Millis) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "INSERT INTO meta (name, value) VALUES ('health_probe', $1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![Box::new(int(now).to_be_bytes().to_vec())],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn failing(&self) -> bool {
        self.0.writer.stats.failing.load(Ordering::Relaxed)
    }

    fn free_space(&self) -> Option<u64> {
        None
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.0.writer.stats.commit_metrics.register(registry);
    }

    fn close(&self) {
        self.0.writer.close();
        self.0.listener.abort();
        self.0.pool.close();
    }
}
