//! Request parsing and response building shared by every handler.

pub mod cookies;
pub mod form;
pub mod response;

use bytes::Bytes;
use http_body_util::Full;

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

/// The socket address of the connection a request came on (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The client's IP address as text, for logs and the audit trail.
pub fn client_ip(req: &Request) -> Option<String> {
    req.extensions().get::<Peer>().map(|p| p.0.ip().to_string())
}
