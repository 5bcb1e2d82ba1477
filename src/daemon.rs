//! Living under a service manager: sd-notify readiness, stopping and watchdog messages, and
//! the signals (SIGTERM/SIGINT stop, SIGHUP reloads what can change live).

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd (when `NOTIFY_SOCKET` is set; otherwise nothing happens) that the server
/// listens, and starts the watchdog pings if the unit asks for them.
pub fn ready(addr: std::net::SocketAddr) {
    let status = format!("listening on {addr}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        // Ping at half the deadline, from a runtime task: a wedged runtime misses its pings and
        // systemd restarts the service.
        let every = Duration::from_micros(usec) / 2;
        tracing::info!(every = %humantime::format_duration(every), "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd the server is shutting down (it is draining requests).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("draining requests")]);
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// The log writer's count of dropped lines, once logging is set up.
static LOG_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> = std::sync::OnceLock::new();

pub fn watch_log_drops(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(counter);
}

/// Log lines dropped so far because the writer thread was too far behind.
pub fn dropped_log_lines() -> Option<u64> {
    LOG_DROPS.get().map(|c| c.dropped_lines() as u64)
}

/// The signals a service manager sends, listened for from before start-up (so an early
/// SIGTERM or SIGHUP is not fatal: it waits here until the server runs).
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
                (Ok(term), Ok(hup)) => Some((term, hup)),
                _ => {
                    tracing::warn!("cannot listen for SIGTERM/SIGHUP; only Ctrl-C stops the server");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for SIGTERM or SIGINT. Each SIGHUP meanwhile calls `reload` (between systemd's
    /// RELOADING=1 and READY=1).
    pub async fn run_until_stopped(self, reload: impl Fn()) {
        #[cfg(unix)]
        {
            let Some((mut term, mut hup)) = self.streams else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {
                        tracing::info!("SIGINT received; shutting down");
                        return;
                    }
                    _ = term.recv() => {
                        tracing::info!("SIGTERM received; shutting down");
                        return;
                    }
                    _ = hup.recv() => {
                        let now = NotifyState::monotonic_usec_now().ok();
                        let mut states = vec![NotifyState::Reloading];
                        states.extend(now);
                        notify(&states);
                        reload();
                        notify(&[NotifyState::Ready]);
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
