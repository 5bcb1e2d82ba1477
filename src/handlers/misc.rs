//! Health check and static assets.

use std::time::{Duration, UNIX_EPOCH};

use authgate_actors::store::Table;
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
    timestamp: String,
}

/// `GET /health`: 200 when the database answers a read, 503 otherwise.
pub async fn health(app: &App, now: u64) -> Response {
    let read = app.store.read(|r| r.get(Table::Meta, b"seeded"));
    let ok = matches!(tokio::time::timeout(Duration::from_secs(2), read).await, Ok(Ok(_)));
    let timestamp = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(now)).to_string();
    if ok {
        json(
            StatusCode::OK,
            &Health {
                status: "healthy",
                database: "connected",
                timestamp,
            },
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health {
                status: "unhealthy",
                database: "unavailable",
                timestamp,
            },
        )
    }
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
