//! `GET /metrics`: the Prometheus (OpenMetrics text) exposition.

use authgate_actors::device::DeviceMsg;
use authgate_actors::metrics::{ActorLabel, counters, gauges};
use authgate_actors::supervisor::ComponentState;
use hyper::StatusCode;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::http::response::{bytes, no_store};
use crate::http::{Request, Response, form};

const OPENMETRICS: HeaderValue = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

pub async fn metrics_page(app: &App, req: Request, now: authgate_actors::time::Millis) -> Response {
    if let Some(expected) = &app.settings.metrics_token {
        let given = form::bearer_token(req.headers()).unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            let mut r = bytes(StatusCode::UNAUTHORIZED, TEXT, "a bearer token (METRICS_TOKEN) is required\n");
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""));
            return r;
        }
    }
    // What belongs to this running system is read now.
    let mut system = Registry::with_prefix("authgate");
    let components = app.actors.components();
    system.register(
        "actor_restarts",
        "Restarts of each supervised actor since start",
        counters(components.iter().map(|(name, c)| (ActorLabel { actor: name }, c.restarts))),
    );
    system.register(
        "actor_up",
        "Whether each supervised actor is running (1) or restarting or down (0)",
        gauges(
            components
                .iter()
                .map(|(name, c)| (ActorLabel { actor: name }, i64::from(c.state == ComponentState::Running))),
        ),
    );
    system.register(
        "actor_mailbox_depth",
        "Messages sent to each actor and not yet handled",
        gauges(app.actors.mailboxes().iter().map(|m| (ActorLabel { actor: m.actor }, m.depth()))),
    );
    let pending = Gauge::<i64>::default();
    if let Ok(n) = app.actors.device().ask(|reply| DeviceMsg::CountPending { now, reply }).await {
        pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    system.register("device_codes_pending", "Device codes waiting for a person's decision", pending);
    let build = gauges([(
        BuildLabel {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("AUTHGATE_GIT_COMMIT"),
            signing_alg: app.settings.jwt_signing_algorithm.name(),
        },
        1,
    )]);
    system.register("build_info", "Version of the running server", build);
    if let Some(dropped) = crate::daemon::dropped_log_lines() {
        system.register(
            "log_lines_dropped",
            "Log lines dropped because the log writer was too far behind",
            {
                let c = prometheus_client::metrics::counter::Counter::<u64>::default();
                c.inc_by(dropped);
                c
            },
        );
    }
    app.store.register_metrics(&mut system);
    match app.actors.metrics().render(&[app.http_metrics.registry(), &system]) {
        Ok(text) => no_store(bytes(StatusCode::OK, OPENMETRICS, text)),
        Err(_) => bytes(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "could not render the metrics\n"),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    commit: &'static str,
    signing_alg: &'static str,
}
