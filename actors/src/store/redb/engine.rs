//! The redb engine: one embedded file, one dedicated writer thread.
//!
//! Each repository hands its changes to the writer as a batch of [`Op`]s, optionally behind
//! [`Guard`]s, and awaits the commit.
//! The writer takes the first batch waiting, drains every other batch already queued (up to
//! `max_batch`), applies them all in one write transaction and commits once with
//! `Durability::Immediate`: many concurrent writes share one fsync (group commit). Only after
//! that commit does any caller hear "done". Reads run on the same thread, so no redb I/O ever
//! happens on an async or actor thread, and dropping the last [`Engine`] closes the file.
//!
//! A batch's guards are checked inside the write transaction, after the batches before it in
//! the same commit were applied: a batch whose guard fails is skipped (its caller hears
//! `Ok(false)`) while the others commit. That is how the conditional operations of the port
//! keep their promises here.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::table::storage;
pub(super) use super::table::{Guard, Op, Reader, Table, decode};
use crate::store::port::StoreError;

/// Counters of the writer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub(super) struct StoreStats {
    /// Write transactions committed.
    pub commits: AtomicU64,
    /// Batches (one per caller) made durable.
    pub batches: AtomicU64,
    /// Commit time and size histograms, for `/metrics`.
    pub commit_metrics: crate::metrics::CommitMetrics,
    /// Commits that failed.
    pub failures: AtomicU64,
    /// Whether the last commit (or reopening) failed: the disk is full or broken.
    pub failing: std::sync::atomic::AtomicBool,
}

type ReadJob = Box<dyn FnOnce(&Database) + Send>;

/// Where the writer reports a batch's commit: whether its guards held (and it was applied).
type Done = oneshot::Sender<Result<bool, StoreError>>;
/// One caller's batch, waiting for the next commit.
struct PendingWrite {
    guards: Vec<Guard>,
    ops: Vec<Op>,
    done: Done,
}

enum Command {
    Write(PendingWrite),
    Read(ReadJob),
    /// Commit what is queued before it, then close the file.
    Shutdown,
}

/// How the writer commits.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// The most caller batches one transaction may carry; 1 turns group commit off (benchmarks).
    pub max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_batch: 1024 }
    }
}

/// redb's page cache. The hot state lives in the actors' memory, so the cache serves start-up
/// scans and writes; redb's default (1 GiB) would only grow the resident set.
const CACHE_BYTES: usize = 32 << 20;

/// A handle to the engine; cheap to clone. The file closes when the last handle is dropped and
/// the writer has finished the queued work ([`Engine::close`] waits for that).
#[derive(Clone)]
pub(super) struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    /// The database file (for the free-space check).
    path: std::path::PathBuf,
    stats: Arc<StoreStats>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Opens (or creates) the database file and starts the writer thread. Blocking: call it
    /// before the runtime starts or inside `spawn_blocking`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Engine, StoreError> {
        let shown = path.display().to_string();
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: shown.clone() },
            other => StoreError::Open {
                path: shown.clone(),
                reason: other.to_string(),
            },
        })?;
        // Create every table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(storage)?;
        for t in Table::ALL {
            txn.open_table(t.def()).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;

        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let writer_stats = stats.clone();
        let max_batch = options.max_batch.max(1);
        let reopen_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(db, &reopen_path, rx, max_batch, &writer_stats))
            .map_err(|e| StoreError::Open {
                path: shown,
                reason: e.to_string(),
            })?;
        Ok(Engine {
            inner: Arc::new(Inner {
                tx,
                path: path.to_path_buf(),
                stats,
                writer: std::sync::Mutex::new(Some(writer)),
            }),
        })
    }

    /// Queues `ops` now and returns a future that resolves after their commit. Queue order is
    /// commit order, so an owner may submit from its handler and await elsewhere.
    pub fn submit(&self, ops: Vec<Op>) -> crate::store::port::Pending<()> {
        let applied = self.submit_if(Vec::new(), ops);
        Box::pin(async move { applied.await.map(|_| ()) })
    }

    /// Like [`Engine::submit`], but the batch is applied only if every guard holds inside the
    /// transaction; resolves to whether it was.
    pub fn submit_if(&self, guards: Vec<Guard>, ops: Vec<Op>) -> crate::store::port::Pending<bool> {
        let (done, rx) = oneshot::channel();
        let sent = self.inner.tx.send(Command::Write(PendingWrite { guards, ops, done })).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Encodes `ops` (a closure so that an encoding error fails only this call) and submits them.
    pub fn submit_encoded(&self, ops: impl FnOnce() -> Result<Vec<Op>, StoreError>) -> crate::store::port::Pending<()> {
        match ops() {
            Ok(ops) => self.submit(ops),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    /// Runs `f` against a consistent snapshot on the store thread.
    pub fn read<T, F>(&self, f: F) -> crate::store::port::Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |db: &Database| {
            let result = db.begin_read().map_err(storage).and_then(|txn| f(&Reader { txn: &txn }));
            let _ = tx.send(result);
        });
        let sent = self.inner.tx.send(Command::Read(job)).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Every record of `table` under a 32-byte key that decodes and passes `keep`; the rest
    /// (expired, unreadable) are deleted before this resolves.
    pub fn load_live<R, F>(&self, table: Table, keep: F) -> crate::store::port::Pending<Vec<([u8; 32], R)>>
    where
        R: DeserializeOwned + Send + 'static,
        F: Fn(&R) -> bool + Send + 'static,
    {
        let engine = self.clone();
        Box::pin(async move {
            let (live, stale) = engine
                .read(move |r| {
                    let (mut live, mut stale) = (Vec::new(), Vec::new());
                    r.scan(table, |k, v| {
                        match (<[u8; 32]>::try_from(k), decode::<R>(v)) {
                            (Ok(key), Ok(rec)) if keep(&rec) => live.push((key, rec)),
                            _ => stale.push(Op::delete(table, k.to_vec())),
                        }
                        Ok(())
                    })?;
                    Ok((live, stale))
                })
                .await?;
            if !stale.is_empty() {
                engine.submit(stale).await?;
            }
            Ok(live)
        })
    }

    /// Bytes free for an unprivileged writer on the file system holding the database.
    pub fn free_space(&self) -> Option<u64> {
        let dir = self
            .inner
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
        // right type; statvfs only writes to it and reports failure by its return value.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled the struct.
        let st = unsafe { st.assume_init() };
        // The field types differ between platforms (u32 on some 32-bit ones).
        #[allow(clippy::useless_conversion)]
        let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
        Some(blocks.saturating_mul(size))
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Commits everything queued so far, closes the file and waits (blocking) for the writer
    /// to finish. Any later write or read on any clone fails with [`StoreError::Closed`].
    pub fn close(&self) {
        let _ = self.inner.tx.send(Command::Shutdown);
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// Opens the file again after a failed commit: redb refuses every later transaction on a handle
/// that met an I/O error, so recovering (once the disk has room again) needs a fresh handle.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn reopen(path: &Path) -> Result<Database, StoreError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(storage)
}

fn writer_loop(db: Database, path: &Path, rx: mpsc::Receiver<Command>, max_batch: usize, stats: &StoreStats) {
    let mut db = Some(db);
    // Reopening may repair the file (a full scan), so it is tried at most once per REOPEN_EVERY.
    let mut last_reopen: Option<std::time::Instant> = None;
    let mut writes: Vec<PendingWrite> = Vec::new();
    let mut reads: Vec<ReadJob> = Vec::new();
    let mut stop = false;
    while let Ok(first) = rx.recv() {
        let mut queue = Some(first);
        loop {
            match queue.take() {
                Some(Command::Write(w)) => writes.push(w),
                Some(Command::Read(job)) => reads.push(job),
                Some(Command::Shutdown) => {
                    stop = true;
                    break;
                }
                None => {}
            }
            if writes.len() >= max_batch {
                break;
            }
            match rx.try_recv() {
                Ok(cmd) => queue = Some(cmd),
                Err(_) => break,
            }
        }
        if db.is_none() && last_reopen.is_none_or(|t: std::time::Instant| t.elapsed() >= REOPEN_EVERY) {
            last_reopen = Some(std::time::Instant::now());
            match reopen(path) {
                Ok(d) => {
                    tracing::warn!("database reopened after a failed commit");
                    db = Some(d);
                }
                Err(e) => tracing::error!(error = %e, "the database cannot be reopened yet"),
            }
        }
        let Some(handle) = db.as_ref() else {
            // Still unusable: fail what was asked, keep the writer alive for the next try.
            stats.failing.store(true, Ordering::Relaxed);
            for w in writes.drain(..) {
                let _ = w.done.send(Err(StoreError::Storage("the database cannot be written".into())));
            }
            reads.clear();
            if stop {
                break;
            }
            continue;
        };
        if !writes.is_empty() {
            let started = std::time::Instant::now();
            let result = commit(handle, &writes);
            stats.commit_metrics.duration.observe(started.elapsed().as_secs_f64());
            stats.commit_metrics.batch.observe(writes.len() as f64);
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.batches.fetch_add(writes.len() as u64, Ordering::Relaxed);
            stats.failing.store(result.is_err(), Ordering::Relaxed);
            if let Err(e) = &result {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batches = writes.len(), "commit failed");
            }
            for (i, w) in writes.drain(..).enumerate() {
                let _ = w.done.send(result.clone().map(|applied| applied.get(i).copied().unwrap_or(false)));
            }
            if result.is_err() {
                // Reads still run on the old handle where redb allows it; the next batch reopens.
                for job in reads.drain(..) {
                    job(handle);
                }
                db = None;
                if stop {
                    break;
                }
                continue;
            }
        }
        for job in reads.drain(..) {
            job(handle);
        }
        if stop {
            break;
        }
    }
    // Dropping the receiver makes every later send fail fast; dropping `db` closes the file.
    drop(rx);
    drop(db);
    let (commits, batches) = (stats.commits.load(Ordering::Relaxed), stats.batches.load(Ordering::Relaxed));
    tracing::info!(commits, writes = batches, writes_per_commit = %format!("{:.2}", batches as f64 / commits.max(1) as f64), "database closed");
}

/// Applies every batch whose guards hold, in order, in one transaction; answers which were.
fn commit(db: &Database, writes: &[PendingWrite]) -> Result<Vec<bool>, StoreError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    let mut applied = Vec::with_capacity(writes.len());
    {
        let mut tables = Table::ALL.map(|t| txn.open_table(t.def()));
        for w in writes {
            let mut holds = true;
            for g in &w.guards {
                let t = tables[g.table as usize].as_ref().map_err(|e| StoreError::Storage(e.to_string()))?;
                let stored = t.get(g.key.as_slice()).map_err(storage)?;
                if !(g.holds)(stored.as_ref().map(|v| v.value())) {
                    holds = false;
                    break;
                }
            }
            applied.push(holds);
            if !holds {
                continue;
            }
            for op in &w.ops {
                let (table, key) = match op {
                    Op::Put { table, key, .. } | Op::Delete { table, key } => (*table, key),
                };
                let t = tables[table as usize].as_mut().map_err(|e| StoreError::Storage(e.to_string()))?;
                match op {
                    Op::Put { value, .. } => {
                        t.insert(key.as_slice(), value.as_slice()).map_err(storage)?;
                    }
                    Op::Delete { .. } => {
                        t.remove(key.as_slice()).map_err(storage)?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(storage)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn writes_are_readable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        rt().block_on(async {
            let store = Engine::open(&path, StoreOptions::default()).unwrap();
            store
                .submit(vec![Op::put(Table::Meta, b"k".to_vec(), &"v").unwrap()])
                .await
                .unwrap();
            store
                .submit(vec![
                    Op::put(Table::Meta, b"gone".to_vec(), &1).unwrap(),
                    Op::delete(Table::Meta, b"gone".to_vec()),
                ])
                .await
                .unwrap();
            store.close();
        });
        rt().block_on(async {
            let store = Engine::open(&path, StoreOptions::default()).unwrap();
            let v = store.read(|r| r.get(Table::Meta, b"k")).await.unwrap();
            assert_eq!(decode::<String>(&v.unwrap()).unwrap(), "v");
            assert_eq!(store.read(|r| r.get(Table::Meta, b"gone")).await.unwrap(), None);
            store.close();
        });
    }

    #[test]
    fn a_second_opener_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let first = Engine::open(&path, StoreOptions::default()).unwrap();
        match Engine::open(&path, StoreOptions::default()) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        first.close();
        Engine::open(&path, StoreOptions::default()).unwrap().close();
    }

    #[test]
    fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        rt().block_on(async {
            let store = Engine::open(&path, StoreOptions::default()).unwrap();
            let mut tasks = Vec::new();
            for i in 0..500u32 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    s.submit(vec![Op::put(Table::Meta, i.to_be_bytes().to_vec(), &i).unwrap()]).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let commits = store.stats().commits.load(Ordering::Relaxed);
            assert_eq!(store.stats().batches.load(Ordering::Relaxed), 500);
            assert!(commits < 500, "500 concurrent writes took {commits} commits");
            let n = store
                .read(|r| {
                    let mut n = 0;
                    r.scan(Table::Meta, |_, _| {
                        n += 1;
                        Ok(())
                    })?;
                    Ok(n)
                })
                .await
                .unwrap();
            assert_eq!(n, 500);
            store.close();
        });
    }

    #[test]
    fn max_batch_of_one_commits_each_write_alone() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Engine::open(&dir.path().join("t.redb"), StoreOptions { max_batch: 1 }).unwrap();
            let tasks: Vec<_> = (0..50u32)
                .map(|i| {
                    let s = store.clone();
                    tokio::spawn(async move { s.submit(vec![Op::put(Table::Meta, i.to_be_bytes().to_vec(), &i).unwrap()]).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(store.stats().commits.load(Ordering::Relaxed), 50);
            store.close();
        });
    }

    #[test]
    fn a_batch_whose_guard_fails_is_skipped_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Engine::open(&dir.path().join("t.redb"), StoreOptions::default()).unwrap();
            let put = |k: &[u8], v: u32| Op::put(Table::Meta, k.to_vec(), &v).unwrap();
            // Three batches in one commit: the second is guarded by the first's key.
            let first = store.submit_if(vec![Guard::absent(Table::Meta, b"a".to_vec())], vec![put(b"a", 1)]);
            let second = store.submit_if(vec![Guard::absent(Table::Meta, b"a".to_vec())], vec![put(b"a", 2), put(b"b", 2)]);
            let third = store.submit(vec![put(b"c", 3)]);
            assert!(first.await.unwrap());
            assert!(!second.await.unwrap(), "the guard saw the first batch's write");
            third.await.unwrap();
            let read = |k: &'static [u8]| store.read(move |r| r.get(Table::Meta, k));
            assert_eq!(decode::<u32>(&read(b"a").await.unwrap().unwrap()).unwrap(), 1);
            assert_eq!(read(b"b").await.unwrap(), None, "nothing of the refused batch was written");
            assert!(read(b"c").await.unwrap().is_some());
            store.close();
        });
    }
}
