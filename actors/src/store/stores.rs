//! [`Stores`]: every repository of one opened database.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::change::FeedEvent;
use super::{audit, device, directory, limits, server, session, token};

/// Every repository of one opened database, each to be handed to its owner.
#[derive(Clone)]
pub struct Stores {
    pub(crate) device: Arc<dyn device::DeviceRepo>,
    pub(crate) token: Arc<dyn token::TokenRepo>,
    pub(crate) session: Arc<dyn session::SessionRepo>,
    pub(crate) directory: Arc<dyn directory::DirectoryRepo>,
    pub(crate) audit: Arc<dyn audit::AuditRepo>,
    pub(crate) server: Arc<dyn server::ServerRepo>,
    /// Failure counters shared by the processes of a cluster; `None` for a database one
    /// process owns (its throttles count in memory).
    pub(crate) limits: Option<Arc<dyn limits::LimitRepo>>,
    /// What other processes change, for a database several share; taken once by the
    /// supervisor. `None` for a database one process owns.
    pub(crate) feed: Arc<Mutex<Option<mpsc::UnboundedReceiver<FeedEvent>>>>,
}

impl Stores {
    /// The change feed, if this database has one and nobody took it yet.
    pub(crate) fn take_feed(&self) -> Option<mpsc::UnboundedReceiver<FeedEvent>> {
        self.feed.lock().ok()?.take()
    }

    /// Finishes the queued writes and closes the database, off the async threads. Later
    /// operations on any repository fail with [`super::StoreError::Closed`].
    pub async fn close(&self) {
        let server = self.server.clone();
        let _ = tokio::task::spawn_blocking(move || server.close()).await;
    }
}
