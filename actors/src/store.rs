//! The redb store: one embedded file, one dedicated writer thread.
//!
//! Every actor hands its changes to the writer as a batch of [`Op`]s and awaits the commit.
//! The writer takes the first batch waiting, drains every other batch already queued (up to
//! `max_batch`), applies them all in one write transaction and commits once with
//! `Durability::Immediate`: many concurrent writes share one fsync (group commit). Only after
//! that commit does any caller hear "done". Reads run on the same thread, so no redb I/O ever
//! happens on an async or actor thread, and dropping the last [`Store`] closes the file.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// Every table: raw byte keys and values; the owning actor defines the record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Server-wide values: generated secrets, the seed marker.
    Meta,
    /// User id → [`crate::directory::UserRecord`].
    Users,
    /// OAuth client id → [`crate::directory::ClientRecord`].
    Clients,
    /// SHA-256(device code) → [`crate::device::DeviceRecord`].
    DeviceCodes,
    /// Token id (jti) → [`crate::token::TokenRecord`].
    Tokens,
    /// SHA-256(session id) → [`crate::session::SessionRecord`].
    Sessions,
    /// Unix ms + sequence (big-endian) → [`crate::audit::AuditEvent`].
    Audit,
}

impl Table {
    /// Every table, in declaration order (`table as usize` indexes this array).
    pub const ALL: [Table; 7] = [
        Table::Meta,
        Table::Users,
        Table::Clients,
        Table::DeviceCodes,
        Table::Tokens,
        Table::Sessions,
        Table::Audit,
    ];

    fn def(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Meta => "meta",
            Table::Users => "users",
            Table::Clients => "clients",
            Table::DeviceCodes => "device_codes",
            Table::Tokens => "tokens",
            Table::Sessions => "sessions",
            Table::Audit => "audit",
        })
    }
}

/// One change to one record.
#[derive(Debug, Clone)]
pub enum Op {
    Put { table: Table, key: Vec<u8>, value: Vec<u8> },
    Delete { table: Table, key: Vec<u8> },
}

impl Op {
    /// A put of a serde record. Serialising plain data structs cannot fail in practice; if it
    /// ever does the error surfaces when the batch is written.
    pub fn put<T: Serialize>(table: Table, key: impl Into<Vec<u8>>, value: &T) -> Result<Op, StoreError> {
        let value = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        Ok(Op::Put {
            table,
            key: key.into(),
            value,
        })
    }
    pub fn delete(table: Table, key: impl Into<Vec<u8>>) -> Op {
        Op::Delete { table, key: key.into() }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database file {path} is in use by another process (is the server running?)")]
    Locked { path: String },
    #[error("cannot open the database file {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("database error: {0}")]
    Storage(String),
    #[error("cannot encode a record: {0}")]
    Encode(String),
    #[error("a stored record is corrupt: {0}")]
    Decode(String),
    #[error("the store is shut down")]
    Closed,
}

fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// Decodes a stored record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

/// Counters of the writer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
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

/// A read-only view of the database, handed to closures that run on the store thread.
pub struct Reader<'a> {
    txn: &'a redb::ReadTransaction,
}

impl Reader<'_> {
    /// Every record of a table, in key order.
    pub fn scan(&self, table: Table, mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// Keys below `end`, in ascending order; stops when `f` returns `false`.
    pub fn scan_range(&self, table: Table, end: &[u8], mut f: impl FnMut(&[u8]) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        for row in t.range::<&[u8]>(..end).map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            if !f(k.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Records in descending key order, starting below `before` (or at the last key); stops
    /// when `f` returns `false`.
    pub fn scan_rev(
        &self,
        table: Table,
        before: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        let rows = match before {
            Some(b) => t.range::<&[u8]>(..b).map_err(storage)?,
            None => t.range::<&[u8]>(..).map_err(storage)?,
        };
        for row in rows.rev() {
            let (k, v) = row.map_err(storage)?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }
}

type ReadJob = Box<dyn FnOnce(&Database) + Send>;

/// Where the writer reports a batch's commit.
type Done = oneshot::Sender<Result<(), StoreError>>;
/// One caller's batch, waiting for the next commit.
type PendingWrite = (Vec<Op>, Done);

enum Command {
    Write {
        ops: Vec<Op>,
        done: Done,
    },
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

/// A handle to the store; cheap to clone. The file closes when the last handle is dropped and
/// the writer has finished the queued work ([`Store::close`] waits for that).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    /// The database file (for the free-space check).
    path: std::path::PathBuf,
    stats: Arc<StoreStats>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (or creates) the database file and starts the writer thread. Blocking: call it
    /// before the runtime starts or inside `spawn_blocking`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
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
        Ok(Store {
            inner: Arc::new(Inner {
                tx,
                path: path.to_path_buf(),
                stats,
                writer: std::sync::Mutex::new(Some(writer)),
            }),
        })
    }

    /// Makes `ops` durable in one atomic step; resolves after the commit that carries them.
    pub async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.submit(ops).await
    }

    /// Queues `ops` now and returns a future that resolves after their commit. Queue order is
    /// commit order, so an actor may submit from its handler and await elsewhere.
    pub fn submit(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.inner.tx.send(Command::Write { ops, done }).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Runs `f` against a consistent snapshot on the store thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |db: &Database| {
            let result = db.begin_read().map_err(storage).and_then(|txn| f(&Reader { txn: &txn }));
            let _ = tx.send(result);
        });
        self.inner.tx.send(Command::Read(job)).map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
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
                Some(Command::Write { ops, done }) => writes.push((ops, done)),
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
            for (_, done) in writes.drain(..) {
                let _ = done.send(Err(StoreError::Storage("the database cannot be written".into())));
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
            for (_, done) in writes.drain(..) {
                let _ = done.send(result.clone());
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

fn commit(db: &Database, writes: &[PendingWrite]) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    {
        let mut tables = Table::ALL.map(|t| txn.open_table(t.def()));
        for (ops, _) in writes {
            for op in ops {
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
    txn.commit().map_err(storage)
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
            let store = Store::open(&path, StoreOptions::default()).unwrap();
            store.write(vec![Op::put(Table::Meta, b"k".to_vec(), &"v").unwrap()]).await.unwrap();
            store
                .write(vec![
                    Op::put(Table::Meta, b"gone".to_vec(), &1).unwrap(),
                    Op::delete(Table::Meta, b"gone".to_vec()),
                ])
                .await
                .unwrap();
            store.close();
        });
        rt().block_on(async {
            let store = Store::open(&path, StoreOptions::default()).unwrap();
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
        let first = Store::open(&path, StoreOptions::default()).unwrap();
        match Store::open(&path, StoreOptions::default()) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        first.close();
        Store::open(&path, StoreOptions::default()).unwrap().close();
    }

    #[test]
    fn concurrent_writes_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        rt().block_on(async {
            let store = Store::open(&path, StoreOptions::default()).unwrap();
            let mut tasks = Vec::new();
            for i in 0..500u32 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    s.write(vec![Op::put(Table::Meta, i.to_be_bytes().to_vec(), &i).unwrap()]).await
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
            let store = Store::open(&dir.path().join("t.redb"), StoreOptions { max_batch: 1 }).unwrap();
            let tasks: Vec<_> = (0..50u32)
                .map(|i| {
                    let s = store.clone();
                    tokio::spawn(async move { s.write(vec![Op::put(Table::Meta, i.to_be_bytes().to_vec(), &i).unwrap()]).await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(store.stats().commits.load(Ordering::Relaxed), 50);
            store.close();
        });
    }
}
