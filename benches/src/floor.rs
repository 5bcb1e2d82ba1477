//! The floor: the least work any server on this HTTP stack can do for a poll. It reads a small
//! urlencoded body and answers a fixed `authorization_pending` with 400, using the same hyper
//! and hyper-util versions and connection settings as AuthGate (its keep-alive at AuthGate's default).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

const BODY: &[u8] = br#"{"error":"authorization_pending"}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match Limited::new(req.into_body(), 16 * 1024).collect().await {
        Ok(_) => StatusCode::BAD_REQUEST,
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("floor listening on {}", listener.local_addr()?);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // As AuthGate's default KEEPALIVE_TIMEOUT: hyper's header timer is also its idle limit.
        .header_read_timeout(Duration::from_secs(75))
        .keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service_fn(answer));
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
