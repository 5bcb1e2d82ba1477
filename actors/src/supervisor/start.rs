//! Starting and stopping the system: secrets and keys first, then the root and, under it,
//! every actor with its repository and peers.

use std::sync::Arc;

use ractor::{Actor, ActorRef};

use super::config::{CoreConfig, Secrets};
use super::registry::Actors;
use super::root::{Root, RootArgs, RootMsg};
use crate::crypto::keys::{JwtKeys, KeyError, KeyOptions};
use crate::crypto::secret;
use crate::runtime::CALL_TIMEOUT;
use crate::store::server::ServerRepo;
use crate::store::{Pending, StoreError, Stores};
use crate::time::Millis;

/// The store's health, for `/health` and `/metrics`: no access to any owner's records.
#[derive(Clone)]
pub struct StoreStatus(Arc<dyn ServerRepo>);

impl StoreStatus {
    /// Answers once the database answers a read.
    pub fn ping(&self) -> Pending<()> {
        self.0.ping()
    }
    /// Writes and commits a small record: the database takes writes now.
    pub fn probe(&self, now: Millis) -> Pending<()> {
        self.0.probe(now)
    }
    /// Whether the last commit failed (the disk is full or broken).
    pub fn failing(&self) -> bool {
        self.0.failing()
    }
    /// Bytes free for the database, where the backend can tell.
    pub fn free_space(&self) -> Option<u64> {
        self.0.free_space()
    }
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.0.register_metrics(registry);
    }
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("could not start the actors: {0}")]
    Actors(String),
}

/// The running actor system.
pub struct System {
    pub actors: Actors,
    pub keys: JwtKeys,
    /// The cookie key (`SESSION_SECRET`, configured or kept in the store).
    pub session_secret: Vec<u8>,
    stores: Stores,
    root: ActorRef<RootMsg>,
    root_done: tokio::task::JoinHandle<()>,
}

/// The secret `name`: the configured value if set, else the one kept in the store, else a new
/// random one kept there so tokens and sessions survive restarts.
async fn server_secret(repo: &dyn ServerRepo, name: &str, setting: &str, configured: Option<&str>) -> Result<Vec<u8>, StoreError> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let fresh = secret::random_token(48);
    let kept = repo.secret(name, fresh.clone()).await?;
    if kept == fresh {
        tracing::warn!("{setting} is not set: generated a random one and stored it in the database");
    } else {
        tracing::info!("{setting} is not set: using the one stored in the database");
    }
    Ok(kept.into_bytes())
}

impl System {
    /// Resolves the secrets, loads the signing keys, and starts the root supervisor and,
    /// under it, every actor (each loads its state). `key_options` gets the JWT secret. On
    /// failure the database is closed again.
    pub async fn start(
        stores: Stores,
        config: CoreConfig,
        secrets: Secrets,
        key_options: impl FnOnce(Vec<u8>) -> KeyOptions,
        now: Millis,
    ) -> Result<System, StartError> {
        let started = async {
            let repo = &*stores.server;
            let jwt = server_secret(repo, "jwt", "JWT_SECRET", secrets.jwt.as_deref()).await?;
            let session_secret = server_secret(repo, "session", "SESSION_SECRET", secrets.session.as_deref()).await?;
            let options = key_options(jwt);
            let keys = match JwtKeys::load(repo, options.clone(), now / 1000).await {
                // Another process sharing the database wrote the keyring between our read and
                // our write (instances starting together): read theirs.
                Err(KeyError::Changed) => JwtKeys::load(repo, options, now / 1000).await?,
                loaded => loaded?,
            };
            Self::start_with_keys(stores.clone(), config, keys, session_secret).await
        }
        .await;
        if started.is_err() {
            stores.close().await;
        }
        started
    }

    /// The offline CLI's system: the directory, session and audit actors only
    /// (`config.offline`). It signs nothing and sets no cookie, so it touches neither the
    /// secrets nor the keyring.
    pub async fn start_offline(stores: Stores, config: CoreConfig) -> Result<System, StartError> {
        let config = CoreConfig { offline: true, ..config };
        let started = Self::start_with_keys(stores.clone(), config, JwtKeys::new(&[], "offline"), Vec::new()).await;
        if started.is_err() {
            stores.close().await;
        }
        started
    }

    /// Starts the actors with keys already made (tests, and tools that sign nothing).
    pub async fn start_with_keys(stores: Stores, config: CoreConfig, keys: JwtKeys, session_secret: Vec<u8>) -> Result<System, StartError> {
        let actors = Actors::new();
        let args = RootArgs {
            config,
            keys: keys.clone(),
            stores: stores.clone(),
            actors: actors.clone(),
        };
        let (root, root_done) = Actor::spawn(None, Root, args)
            .await
            .map_err(|e| StartError::Actors(e.to_string()))?;
        tracing::info!("actors started");
        Ok(System {
            actors,
            keys,
            session_secret,
            stores,
            root,
            root_done,
        })
    }

    /// The store's health, for `/health` and `/metrics`.
    pub fn store_status(&self) -> StoreStatus {
        StoreStatus(self.stores.server.clone())
    }

    /// Stops every actor, lets queued writes commit, and closes the database.
    pub async fn shutdown(self) {
        let _ = self.root.call(RootMsg::ShuttingDown, Some(CALL_TIMEOUT)).await;
        let _ = self.root.stop_children_and_wait(None, Some(CALL_TIMEOUT)).await;
        self.root.stop(None);
        let _ = self.root_done.await;
        self.stores.close().await;
    }
}

/// `authgate keys rotate`: see [`crate::crypto::keys::rotate`]; through the keyring's owner,
/// with the server stopped or, on a shared database, running.
pub async fn rotate_keys(stores: &Stores, options: &KeyOptions, now: Millis) -> Result<String, KeyError> {
    crate::crypto::keys::rotate(&*stores.server, options, now / 1000).await
}
