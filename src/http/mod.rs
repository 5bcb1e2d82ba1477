//! Request parsing and response building shared by every handler.

pub mod cookies;
pub mod form;
pub mod guard;
pub mod response;

use bytes::Bytes;
use http_body_util::Full;

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

/// The socket address of the connection a request came on (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);
