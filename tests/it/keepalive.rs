//! Keep-alive over a real socket: an idle connection waits `KEEPALIVE_TIMEOUT` for its next
//! request, one that keeps polling is kept, and a new connection that never speaks is closed
//! within 10 s (or the timeout, if shorter).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestServer;

const REQUEST: &[u8] = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://")).await.unwrap()
}

/// Sends one request and reads its whole answer (headers, then `content-length` bytes).
async fn ask(conn: &mut TcpStream) {
    conn.write_all(REQUEST).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if got.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// How long until the server closes `conn` (it sends nothing unasked), at most `within`.
async fn closed_after(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!("unasked bytes: {:?}", &buf[..n]),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_keepalive_timeout_and_a_busy_one_is_kept() {
    let s = TestServer::start(&["--keepalive-timeout", "3s"]).await;
    // Never speaks: closed at the (shorter) keep-alive timeout.
    let mut silent = connect(&s).await;
    let t = closed_after(&mut silent, Duration::from_secs(10))
        .await
        .expect("a silent connection is closed");
    assert!(t >= Duration::from_secs(2), "{t:?}");
    // One request, then idle: closed about 3 s later (the server's clock starts as it answers).
    let mut idle = connect(&s).await;
    ask(&mut idle).await;
    let t = closed_after(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle connection is closed");
    assert!(t >= Duration::from_secs(2) && t < Duration::from_secs(7), "{t:?}");
    // A request every half second for 5 s: the same connection throughout.
    let mut busy = connect(&s).await;
    for _ in 0..10 {
        ask(&mut busy).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ask(&mut busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_idle_device_keeps_its_connection_past_ten_seconds_but_a_silent_one_does_not() {
    let s = TestServer::start(&[]).await;
    let mut idle = connect(&s).await;
    ask(&mut idle).await;
    let mut silent = connect(&s).await;
    let t = closed_after(&mut silent, Duration::from_secs(15))
        .await
        .expect("a silent new connection is closed");
    assert!(
        t >= Duration::from_secs(9) && t < Duration::from_secs(13),
        "after the 10 s first-byte limit: {t:?}"
    );
    // 12 s idle (the old limit was 10 s; a device slowed to the longest interval, 60 s, needs more).
    assert_eq!(closed_after(&mut idle, Duration::from_secs(2)).await, None, "still open");
    ask(&mut idle).await;
}
