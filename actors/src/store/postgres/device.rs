//! [`DeviceRepo`] on PostgreSQL: `device_codes`. A decision is one conditional `UPDATE`, so
//! of two processes deciding one code, PostgreSQL lets exactly one through.

use super::writer::Stmt;
use super::writer::db_error;
use super::{Db, decode, int, json};
use crate::store::change::Change;
use crate::store::device::{DeviceKey, DeviceRecord, DeviceRepo, RecordState};
use crate::store::port::Pending;
use crate::time::Millis;

pub(super) struct Devices(pub Db);

fn status(record: &DeviceRecord) -> &'static str {
    match record.state {
        RecordState::Pending => "pending",
        RecordState::Approved { .. } => "approved",
        RecordState::Denied { .. } => "denied",
    }
}

fn key_of(bytes: &[u8]) -> Option<DeviceKey> {
    bytes.try_into().ok()
}

impl DeviceRepo for Devices {
    fn load(&self, keep_from: Millis) -> Pending<Vec<(DeviceKey, DeviceRecord)>> {
        let db = self.0.clone();
        Box::pin(async move {
            let prune = db.writer.submit(vec![Stmt::exec(
                "DELETE FROM device_codes WHERE expires_at_ms < $1",
                vec![Box::new(int(keep_from))],
            )]);
            prune.await?;
            let client = db.client().await?;
            let rows = client
                .query("SELECT key, record::text FROM device_codes", &[])
                .await
                .map_err(db_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let (key, record): (&[u8], &str) = (row.get(0), row.get(1));
                match (key_of(key), decode::<DeviceRecord>(record)) {
                    (Some(k), Ok(r)) => out.push((k, r)),
                    _ => tracing::warn!("skipping an unreadable device authorization"),
                }
            }
            Ok(out)
        })
    }

    fn insert(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool> {
        let write = json(record).map(|r| {
            self.0.writer.submit_unique(vec![Stmt::exec(
                "INSERT INTO device_codes (key, user_code, status, expires_at_ms, record) VALUES ($1, $5, $2, $3, $4::text::jsonb) \
                 ON CONFLICT (key) DO UPDATE SET status = excluded.status, expires_at_ms = excluded.expires_at_ms, record = excluded.record",
                vec![
                    Box::new(key.to_vec()),
                    Box::new(status(record)),
                    Box::new(int(record.expires_at_ms)),
                    Box::new(r),
                    Box::new(record.user_code.clone()),
                ],
            )])
        });
        Box::pin(async move { write?.await })
    }

    fn decide(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool> {
        let write = json(record).map(|r| {
            self.0.writer.submit(vec![
                Stmt::check(
                    "WITH d AS (UPDATE device_codes SET status = $2, record = $3::text::jsonb \
                 WHERE key = $1 AND status = 'pending' RETURNING 1) SELECT EXISTS (SELECT 1 FROM d)",
                    vec![Box::new(key.to_vec()), Box::new(status(record)), Box::new(r)],
                ),
                self.0.announce(&[Change::Device(key)]),
            ])
        });
        Box::pin(async move { write?.await })
    }

    fn prune(&self, before: Millis) -> Pending<()> {
        let write = self.0.writer.submit(vec![Stmt::exec(
            "DELETE FROM device_codes WHERE expires_at_ms < $1",
            vec![Box::new(int(before))],
        )]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn get(&self, key: DeviceKey) -> Pending<Option<DeviceRecord>> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT record::text FROM device_codes WHERE key = $1", &[&&key[..]])
                .await
                .map_err(db_error)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn by_user_code(&self, user_code: &str) -> Pending<Option<(DeviceKey, DeviceRecord)>> {
        let (db, user_code) = (self.0.clone(), user_code.to_owned());
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT key, record::text FROM device_codes WHERE user_code = $1", &[&user_code])
                .await
                .map_err(db_error)?;
            Ok(row.and_then(|r| Some((key_of(r.get(0))?, decode(r.get(1)).ok()?))))
        })
    }

    fn remove(&self, keys: &[DeviceKey]) -> Pending<()> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        let changes: Vec<Change> = keys
            .iter()
            .filter_map(|k| k.as_slice().try_into().ok())
            .map(Change::Device)
            .collect();
        let write = self.0.writer.submit(vec![
            Stmt::exec("DELETE FROM device_codes WHERE key = ANY($1)", vec![Box::new(keys)]),
            self.0.announce(&changes),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}
