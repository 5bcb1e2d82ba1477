//! The two words every repository speaks: [`StoreError`] and [`Pending`].

use std::pin::Pin;

/// A storage operation under way: resolves once it is durable (writes) or read (reads).
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

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
    /// A setting names no database this backend can use (a malformed DSN, a refused login).
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached now; worth retrying later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema is not one this build can use.
    #[error("{0}")]
    Schema(String),
}

impl StoreError {
    pub(crate) fn storage<E: std::fmt::Display>(e: E) -> StoreError {
        StoreError::Storage(e.to_string())
    }
}
