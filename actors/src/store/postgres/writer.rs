//! Group commit, the PostgreSQL way: one task takes the writes queued since its last commit,
//! sends all their statements down one connection inside one transaction without waiting for
//! each answer (tokio-postgres pipelines them), commits once, and answers each write.
//!
//! `synchronous_commit` is left as the server has it: nothing is answered before its commit.
//! A batch that fails as a whole (a unique index refusing one write, a deadlock with another
//! process) is retried one write per transaction, so one write's failure is never another's.
//! Writes queue at the call, and one task commits them in that order: the port's "in call
//! order" promise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use deadpool_postgres::{Pool, PoolError};
use futures_util::future::try_join_all;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use crate::store::port::{Pending, StoreError};

/// One owned statement parameter.
pub(super) type Param = Box<dyn ToSql + Send + Sync>;

/// One statement of a write.
pub(super) struct Stmt {
    pub sql: &'static str,
    pub params: Vec<Param>,
    /// A condition: the statement returns one row whose first column (`bool`) says whether
    /// it held. Otherwise it is executed and its row count ignored.
    pub check: bool,
}

impl Stmt {
    pub fn exec(sql: &'static str, params: Vec<Param>) -> Stmt {
        Stmt { sql, params, check: false }
    }
    pub fn check(sql: &'static str, params: Vec<Param>) -> Stmt {
        Stmt { sql, params, check: true }
    }
}

/// A write: its statements, applied together.
struct Job {
    stmts: Vec<Stmt>,
    /// A unique index refusing this write is a lost race ([`Outcome::Refused`]), not an error.
    unique_is_false: bool,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// How a committed write went.
enum Outcome {
    /// Per statement: a condition's 1 (held) or 0, else the rows it affected.
    Done(Vec<u64>),
    /// A unique index refused it; nothing was written.
    Refused,
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
    pub stats: Arc<Stats>,
}

#[derive(Default)]
pub(super) struct Stats {
    pub commit_metrics: crate::metrics::CommitMetrics,
    /// Whether the last commit failed (the database is down or refusing writes).
    pub failing: AtomicBool,
    pub closed: AtomicBool,
}

pub(super) fn pool_error(e: PoolError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// SQLSTATE of a unique index refusing a row.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATEs of a transaction that lost to another and may simply be tried again.
const DEADLOCK: &str = "40P01";
const SERIALIZATION: &str = "40001";
/// The longest one commit may take before it is given up as failed (a half-open connection
/// must not hold every write up).
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A lost connection, or a server shutting down or not accepting connections (SQLSTATE
/// classes 08 and 57), is [`StoreError::Unavailable`]; another error the server raised carries
/// its SQLSTATE first, then its message.
pub(super) fn db_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if matches!(&db.code().code()[..2], "08" | "57") => {
            StoreError::Unavailable(format!("{} {}", db.code().code(), db.message()))
        }
        Some(db) => StoreError::Storage(format!("{} {}", db.code().code(), db.message())),
        None => StoreError::Unavailable(with_cause(&e)),
    }
}

/// An error and what caused it, on one line (tokio-postgres keeps the cause apart).
pub(super) fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl Writer {
    pub fn start(pool: Pool, max_batch: usize) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(pool, rx, max_batch, stats.clone()));
        Writer { tx, stats }
    }

    /// Queues a write now (so writes keep call order); the future answers after its commit,
    /// whether every condition held.
    pub fn submit(&self, stmts: Vec<Stmt>) -> Pending<bool> {
        self.held(stmts, false)
    }

    /// As [`Writer::submit`], with a unique-index refusal answered `Ok(false)`.
    pub fn submit_unique(&self, stmts: Vec<Stmt>) -> Pending<bool> {
        self.held(stmts, true)
    }

    /// As [`Writer::submit`], answering how many rows the last statement affected.
    pub fn submit_counted(&self, stmts: Vec<Stmt>) -> Pending<u64> {
        let done = self.queue(stmts, false);
        Box::pin(async move {
            match done.await? {
                Outcome::Done(counts) => Ok(counts.last().copied().unwrap_or(0)),
                Outcome::Refused => Ok(0),
            }
        })
    }

    fn held(&self, stmts: Vec<Stmt>, unique_is_false: bool) -> Pending<bool> {
        let checks: Vec<bool> = stmts.iter().map(|s| s.check).collect();
        let done = self.queue(stmts, unique_is_false);
        Box::pin(async move {
            match done.await? {
                Outcome::Done(counts) => Ok(counts.iter().zip(checks).all(|(n, check)| !check || *n > 0)),
                Outcome::Refused => Ok(false),
            }
        })
    }

    fn queue(&self, stmts: Vec<Stmt>, unique_is_false: bool) -> Pending<Outcome> {
        let (reply, answer) = oneshot::channel();
        let sent = if self.stats.closed.load(Ordering::Acquire) {
            false
        } else {
            self.tx
                .send(Job {
                    stmts,
                    unique_is_false,
                    reply,
                })
                .is_ok()
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Commits what is queued, then stops taking writes. Blocking: call it from
    /// `spawn_blocking` (it waits on the runtime it was started in).
    pub fn close(&self) {
        let barrier = self.queue(Vec::new(), false);
        self.stats.closed.store(true, Ordering::Release);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let _ = rt.block_on(barrier);
        }
    }
}

async fn run(pool: Pool, mut rx: mpsc::UnboundedReceiver<Job>, max_batch: usize, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let started = Instant::now();
        let size = batch.len();
        let ok = commit(&pool, &mut batch).await;
        stats.commit_metrics.duration.observe(started.elapsed().as_secs_f64());
        stats.commit_metrics.batch.observe(size as f64);
        stats.failing.store(!ok, Ordering::Relaxed);
        batch.clear();
    }
}

/// Commits `jobs` together, or each alone if that fails; answers every job. Whether the
/// database took the writes.
async fn commit(pool: &Pool, jobs: &mut Vec<Job>) -> bool {
    if jobs.len() > 1 {
        let all: Vec<&[Stmt]> = jobs.iter().map(|j| j.stmts.as_slice()).collect();
        match apply(pool, &all).await {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for job in jobs.drain(..) {
                    let counts = outcomes.by_ref().take(job.stmts.len()).collect();
                    let _ = job.reply.send(Ok(Outcome::Done(counts)));
                }
                return true;
            }
            Err(e) if matches!(e, StoreError::Unavailable(_)) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return false;
            }
            // One write spoiled the transaction: give each its own.
            Err(_) => {}
        }
    }
    let mut took = true;
    for job in std::mem::take(jobs) {
        let mut answer = apply(pool, &[job.stmts.as_slice()]).await;
        // A deadlock with, or a serialization failure against, another process's transaction:
        // nothing was written, so the write is simply tried again.
        for _ in 0..3 {
            match &answer {
                Err(StoreError::Storage(m)) if m.starts_with(DEADLOCK) || m.starts_with(SERIALIZATION) => {
                    answer = apply(pool, &[job.stmts.as_slice()]).await;
                }
                _ => break,
            }
        }
        let answer = match answer {
            Ok(counts) => Ok(Outcome::Done(counts)),
            Err(StoreError::Storage(m)) if job.unique_is_false && m.starts_with(UNIQUE_VIOLATION) => Ok(Outcome::Refused),
            Err(e) => {
                took &= !matches!(e, StoreError::Unavailable(_));
                Err(e)
            }
        };
        let _ = job.reply.send(answer);
    }
    took
}

/// Runs the statements in one transaction, pipelined; each statement's outcome in order.
/// Given up after [`COMMIT_TIMEOUT`] (the connection is then dropped, which rolls back).
async fn apply(pool: &Pool, jobs: &[&[Stmt]]) -> Result<Vec<u64>, StoreError> {
    match tokio::time::timeout(COMMIT_TIMEOUT, apply_now(pool, jobs)).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable("the database did not answer a commit in time".into())),
    }
}

async fn apply_now(pool: &Pool, jobs: &[&[Stmt]]) -> Result<Vec<u64>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    // Prepare each distinct statement once (cached per connection), then send them all.
    let stmts: Vec<&Stmt> = jobs.iter().flat_map(|j| j.iter()).collect();
    let mut prepared = Vec::with_capacity(stmts.len());
    for stmt in &stmts {
        prepared.push(tx.prepare_cached(stmt.sql).await.map_err(db_error)?);
    }
    let mut runs = Vec::with_capacity(stmts.len());
    for (stmt, p) in stmts.iter().zip(&prepared) {
        runs.push(run_one(&tx, p, stmt));
    }
    let outcomes = try_join_all(runs).await.map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(outcomes)
}

async fn run_one(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &tokio_postgres::Statement,
    stmt: &Stmt,
) -> Result<u64, tokio_postgres::Error> {
    let params: Vec<&(dyn ToSql + Sync)> = stmt.params.iter().map(|b| &**b as &(dyn ToSql + Sync)).collect();
    if stmt.check {
        Ok(u64::from(tx.query_one(p, &params).await?.try_get::<_, bool>(0)?))
    } else {
        tx.execute(p, &params).await
    }
}
