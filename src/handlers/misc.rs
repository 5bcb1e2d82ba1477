//! Health check and static assets.

use std::time::{Duration, UNIX_EPOCH};

use std::collections::BTreeMap;

use authgate_actors::supervisor::{Component, ComponentState};
use authgate_actors::time::Millis;
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, HeaderValue};
use serde::Serialize;

use crate::app::App;
use crate::http::Response;
use crate::http::response::{bytes, json};

#[derive(Serialize)]
struct Health {
    status: &'static str,
    database: &'static str,
    /// Providers not running, by name (why the status is `degraded`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<&'static str>,
    /// Every supervised actor: state and restarts.
    components: BTreeMap<&'static str, Component>,
    timestamp: String,
}

/// Below this much free space, a store whose last commit failed is still called unwritable.
const MIN_FREE_BYTES: u64 = 1 << 20;

fn unhealthy(app: &App, now: Millis, database: &'static str) -> Response {
    let body = Health {
        status: "unhealthy",
        database,
        degraded: Vec::new(),
        components: app.actors.components(),
        timestamp: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(now)).to_string(),
    };
    json(StatusCode::SERVICE_UNAVAILABLE, &body)
}

/// `GET /health`: `healthy` (200) when the database answers and every actor runs;
/// `degraded` (200, naming them) when only provider actors are down or restarting;
/// `unhealthy` (503) when the database or a core actor is not available.
pub async fn health(app: &App, now: Millis) -> Response {
    let read = app.store.ping();
    let mut db_ok = matches!(tokio::time::timeout(Duration::from_secs(2), read).await, Ok(Ok(())));
    let mut database = if db_ok { "connected" } else { "unavailable" };
    if db_ok && app.store.failing() {
        // The last commit failed (a full or broken disk): see whether there is room again and
        // writing works. (A tiny probe alone could fit in the file's free pages while real
        // writes still cannot grow it.)
        if app.store.free_space().is_some_and(|b| b < MIN_FREE_BYTES) {
            return unhealthy(app, now, "unwritable");
        }
        let probe = app.store.probe(now);
        if !matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(()))) {
            db_ok = false;
            database = "unwritable";
        }
    }
    let components = app.actors.components();
    let down = |provider: bool| {
        components
            .iter()
            .filter(|(_, c)| c.provider == provider && c.state != ComponentState::Running)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
    };
    let (core_down, degraded) = (down(false), down(true));
    let (status, code) = if !db_ok || !core_down.is_empty() {
        ("unhealthy", StatusCode::SERVICE_UNAVAILABLE)
    } else if !degraded.is_empty() {
        ("degraded", StatusCode::OK)
    } else {
        ("healthy", StatusCode::OK)
    };
    let body = Health {
        status,
        database,
        degraded,
        components,
        timestamp: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(now)).to_string(),
    };
    json(code, &body)
}

/// The files under `assets/`, compiled into the binary.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../assets/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../assets/favicon.svg")),
];

/// `GET /assets/{file}`; `None` when there is no such file.
pub fn asset(name: &str) -> Option<Response> {
    let (_, ctype, body) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut r = bytes(StatusCode::OK, HeaderValue::from_static(ctype), *body);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Some(r)
}
