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
}

impl StoreError {
    pub(crate) fn storage<E: std::fmt::Display>(e: E) -> StoreError {
        StoreError::Storage(e.to_string())
    }
}
