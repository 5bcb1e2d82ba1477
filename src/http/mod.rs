//! Request parsing and response building shared by every handler.

pub mod cookies;
pub mod form;
pub mod response;

use bytes::Bytes;
use http_body_util::Full;

pub type Request = hyper::Request<hyper::body::Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;
