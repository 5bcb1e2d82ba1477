//! Request parsing and response building shared by every handler.

pub mod access_log;
pub mod cookies;
pub mod form;
pub mod guard;
pub mod response;
pub mod telemetry;

use bytes::Bytes;
use http_body_util::Full;

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

tokio::task_local! {
    /// The socket address of the connection the current request came on, set by the accept
    /// loop around each request (a task-local costs nothing per request, unlike an extension).
    pub static PEER: std::net::SocketAddr;
}

/// The time of a request, in Unix milliseconds: read here, at the HTTP boundary, once per
/// request (when it is routed, or for a request with a body once the body is in) and passed
/// down to every actor that needs it.
#[allow(clippy::disallowed_methods)] // the request boundary
pub fn request_time() -> authgate_actors::time::Millis {
    authgate_actors::time::wall_clock_ms()
}
