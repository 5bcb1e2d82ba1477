//! [`ServerRepo`] on redb: secrets, the keyring and the health probe in `meta`; the writer's
//! counters and the file system's free space for health and metrics.

use std::sync::atomic::Ordering;

use super::engine::{Engine, Guard, Op, Table, decode};
use crate::store::port::Pending;
use crate::store::server::ServerRepo;
use crate::time::Millis;

const KEYRING: &[u8] = b"jwt:keyring";

pub(super) struct Server(pub Engine);

impl ServerRepo for Server {
    fn secret(&self, name: &str, fresh: String) -> Pending<String> {
        let engine = self.0.clone();
        let key = format!("secret:{name}").into_bytes();
        Box::pin(async move {
            let k = key.clone();
            if let Some(v) = engine.read(move |r| r.get(Table::Meta, &k)).await? {
                return decode::<String>(&v);
            }
            let put = Op::put(Table::Meta, key.clone(), &fresh)?;
            if engine.submit_if(vec![Guard::absent(Table::Meta, key.clone())], vec![put]).await? {
                return Ok(fresh);
            }
            // Another writer stored one between the read and the write: theirs wins.
            let v = engine.read(move |r| r.get(Table::Meta, &key)).await?;
            v.map_or_else(
                || Err(crate::store::port::StoreError::Storage("a stored secret vanished".into())),
                |v| decode(&v),
            )
        })
    }

    fn keyring(&self) -> Pending<Option<Vec<u8>>> {
        self.0.read(|r| r.get(Table::Meta, KEYRING))
    }

    fn save_keyring(&self, previous: Option<Vec<u8>>, next: Vec<u8>) -> Pending<bool> {
        let engine = self.0.clone();
        Box::pin(async move {
            // redb has one writing process, so compare-then-write cannot be overtaken by
            // another process; the engine's queue orders this process's own writes.
            let stored = engine.read(|r| r.get(Table::Meta, KEYRING)).await?;
            if stored != previous {
                return Ok(false);
            }
            engine
                .submit(vec![Op::Put {
                    table: Table::Meta,
                    key: KEYRING.to_vec(),
                    value: next,
                }])
                .await?;
            Ok(true)
        })
    }

    fn lease(&self, _name: &str, _holder: &str, _now: Millis, _ttl_ms: Millis) -> Pending<bool> {
        // One process opens this file: the lease is always its own.
        Box::pin(async { Ok(true) })
    }

    fn ping(&self) -> Pending<()> {
        let read = self.0.read(|r| r.get(Table::Meta, b"seeded"));
        Box::pin(async move { read.await.map(|_| ()) })
    }

    fn probe(&self, now: Millis) -> Pending<()> {
        self.0
            .submit_encoded(|| Ok(vec![Op::put(Table::Meta, b"health_probe".to_vec(), &now)?]))
    }

    fn failing(&self) -> bool {
        self.0.stats().failing.load(Ordering::Relaxed)
    }

    fn free_space(&self) -> Option<u64> {
        self.0.free_space()
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.0.stats().commit_metrics.register(registry);
    }

    fn close(&self) {
        self.0.close();
    }
}
