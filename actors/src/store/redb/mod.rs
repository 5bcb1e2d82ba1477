//! The embedded backend: one redb file, written by one thread with group commit.
//!
//! [`open`] starts the [`engine`] and builds one repository per owner over it. Each repository
//! encodes its records as JSON under byte keys in its own tables; the engine's guards keep the
//! conditional operations' promises. One process opens the file for writing at a time (redb
//! refuses a second), so within it the owners' books and the file agree.

mod audit;
mod device;
mod directory;
mod engine;
mod server;
mod session;
mod table;
mod token;

use std::path::Path;
use std::sync::Arc;

use self::engine::Engine;
pub use self::engine::StoreOptions;
use super::port::StoreError;
use super::stores::Stores;

/// Opens (or creates) the database file and starts its writer thread. Blocking: call it
/// before the runtime starts or inside `spawn_blocking`. A file another process holds is
/// [`StoreError::Locked`].
pub fn open(path: &Path, options: StoreOptions) -> Result<Stores, StoreError> {
    let engine = Engine::open(path, options)?;
    Ok(Stores {
        device: Arc::new(device::Devices(engine.clone())),
        token: Arc::new(token::Tokens(engine.clone())),
        session: Arc::new(session::Sessions(engine.clone())),
        directory: Arc::new(directory::Directory(engine.clone())),
        audit: Arc::new(audit::Audit::new(engine.clone())),
        server: Arc::new(server::Server(engine)),
        feed: Default::default(),
        limits: None,
    })
}
