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

/// Waits for SIGTERM or SIGINT. Each SIGHUP meanwhile calls `reload` (between systemd's
/// RELOADING=1 and READY=1).
pub async fn run_until_stopped(reload: impl Fn()) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            tracing::warn!("cannot listen for SIGTERM/SIGHUP; only Ctrl-C stops the server");
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
