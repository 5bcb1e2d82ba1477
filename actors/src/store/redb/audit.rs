//! [`AuditRepo`] on redb: `audit`, Unix ms then a sequence number (big-endian) → JSON event, so
//! a reverse scan yields the newest first and pruning by age is a range delete.

use std::sync::atomic::{AtomicU32, Ordering};

use super::engine::{Engine, Op, Table, decode};
use crate::store::audit::{AuditEvent, AuditFilter, AuditPage, AuditRepo};
use crate::store::port::Pending;
use crate::time::Millis;

/// Most rows one page looks at: reads run on the writer's thread, so a filter that matches
/// little must not hold up the writes behind it.
const MAX_SCANNED: usize = 20_000;
/// Deletes per pruning transaction, for the same reason.
const PRUNE_CHUNK: usize = 5_000;

pub(super) struct Audit {
    engine: Engine,
    /// Breaks ties between events of the same millisecond; starts at random so a restarted
    /// process does not reuse a key within the same millisecond.
    seq: AtomicU32,
}

impl Audit {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            seq: AtomicU32::new(rand::random()),
        }
    }
}

fn key(at_ms: Millis, seq: u32) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl AuditRepo for Audit {
    fn append(&self, events: &[AuditEvent]) -> Pending<()> {
        self.engine.submit_encoded(|| {
            events
                .iter()
                .map(|e| Op::put(Table::Audit, key(e.at_ms, self.seq.fetch_add(1, Ordering::Relaxed)), e))
                .collect()
        })
    }

    fn page(&self, filter: AuditFilter, before: Option<String>, limit: usize) -> Pending<AuditPage> {
        let before = before.and_then(|b| hex::decode(b).ok());
        self.engine.read(move |r| {
            let mut page = AuditPage::default();
            let mut scanned = 0usize;
            let mut last = None;
            let mut more = false;
            r.scan_rev(Table::Audit, before.as_deref(), |k, v| {
                scanned += 1;
                if let Ok(e) = decode::<AuditEvent>(v)
                    && filter.matches(&e)
                {
                    if page.events.len() == limit {
                        // One more match exists: there is an older page.
                        more = true;
                        return Ok(false);
                    }
                    page.events.push(e);
                }
                last = Some(k.to_vec());
                Ok(scanned < MAX_SCANNED)
            })?;
            if more || scanned >= MAX_SCANNED {
                page.next = last.map(hex::encode);
            }
            Ok(page)
        })
    }

    fn prune(&self, before: Millis) -> Pending<usize> {
        let engine = self.engine.clone();
        Box::pin(async move {
            let cutoff = key(before, 0);
            let mut pruned = 0usize;
            // Read the oldest chunk below the cutoff, delete it, repeat: no one transaction
            // holds up the writes queued behind it.
            loop {
                let c = cutoff.clone();
                let ops = engine
                    .read(move |r| {
                        let mut old = Vec::new();
                        r.scan_range(Table::Audit, &c, |k| {
                            old.push(Op::delete(Table::Audit, k.to_vec()));
                            Ok(old.len() < PRUNE_CHUNK)
                        })?;
                        Ok(old)
                    })
                    .await?;
                let n = ops.len();
                if n > 0 {
                    engine.submit(ops).await?;
                }
                pruned += n;
                if n < PRUNE_CHUNK {
                    return Ok(pruned);
                }
            }
        })
    }
}
