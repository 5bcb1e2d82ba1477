//! The change feed on PostgreSQL: writes announce their changes with `pg_notify` inside their
//! own transaction (so an announcement is sent if and only if the change committed), and one
//! dedicated connection per process `LISTEN`s for the others'.
//!
//! Each announcement carries the announcing process's id, so a process ignores its own. If
//! the listening connection breaks (the server restarted, the backend was terminated, the
//! network is gone, or a liveness query goes unanswered), the owners hear
//! [`FeedEvent::Lost`] at once; the feed reconnects with back-off and, once it listens again,
//! says [`FeedEvent::Resync`].

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::change::{Change, FeedEvent};
use crate::store::port::StoreError;

/// How the listening connections show in `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "authgate-feed";
/// The channel every AuthGate process of one database listens on.
pub(super) const CHANNEL: &str = "authgate";
/// How often the listening connection is asked to prove it is alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(500);
/// How long it gets to answer.
const LIVENESS_WITHIN: Duration = Duration::from_secs(2);

/// The payload announcing `change` from process `instance`.
pub(super) fn payload(instance: &str, change: &Change) -> String {
    format!("{}{}", prefix(instance), change.encode())
}

/// What every announcement of process `instance` starts with.
pub(super) fn prefix(instance: &str) -> String {
    format!("{instance}|")
}

/// Listens until the receiver is dropped. `ready` hears once the first `LISTEN` is in place
/// (or why it could not be).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    instance: String,
    events: mpsc::UnboundedSender<FeedEvent>,
    ready: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(100);
    loop {
        match session(&config, &tls, &instance, &events, &mut ready).await {
            Ended::ReceiverGone => return,
            Ended::Broken(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::debug!(error = %e, retry_in = ?delay, "the change feed cannot reconnect yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Ended::Listened => delay = Duration::from_millis(100),
        }
    }
}

enum Ended {
    ReceiverGone,
    Broken(StoreError),
    /// It listened for a while, then broke (reported as Lost already).
    Listened,
}

async fn session(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    instance: &str,
    events: &mpsc::UnboundedSender<FeedEvent>,
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
) -> Ended {
    let (client, mut connection) = match config.connect(tls.clone()).await {
        Ok(c) => c,
        Err(e) => return Ended::Broken(StoreError::Unavailable(super::writer::with_cause(&e))),
    };
    // The connection's messages (notifications among them) as a stream, driven here.
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if note_tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        return Ended::Broken(StoreError::Unavailable(super::writer::with_cause(&e)));
    }
    match ready.take() {
        Some(r) => {
            let _ = r.send(Ok(()));
        }
        None => {
            tracing::info!("the change feed is back: reloading what may have been missed");
            if events.send(FeedEvent::Resync).is_err() {
                return Ended::ReceiverGone;
            }
        }
    }
    let mut liveness = tokio::time::interval(LIVENESS_EVERY);
    let own = prefix(instance);
    loop {
        tokio::select! {
            note = notes.recv() => {
                let Some(note) = note else {
                    break;
                };
                let Some(change) = note.split_once('|').and_then(|(_, c)| Change::decode(c)) else {
                    tracing::warn!(payload = %note, "ignoring an unreadable change announcement");
                    continue;
                };
                // A process's own changes are in its memory already.
                if note.starts_with(&own) {
                    continue;
                }
                if events.send(FeedEvent::Changed(change)).is_err() {
                    return Ended::ReceiverGone;
                }
            }
            _ = liveness.tick() => {
                let alive = tokio::time::timeout(LIVENESS_WITHIN, client.simple_query("")).await;
                if !matches!(alive, Ok(Ok(_))) {
                    break;
                }
            }
            () = events.closed() => return Ended::ReceiverGone,
        }
    }
    if events.send(FeedEvent::Lost).is_err() {
        return Ended::ReceiverGone;
    }
    tracing::warn!("the change feed is down: reading through to the database until it is back");
    Ended::Listened
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
