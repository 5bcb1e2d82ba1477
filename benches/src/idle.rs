//! Memory per idle keep-alive connection: opens many connections to a server, sends one
//! request on each and reads the answer, leaves them open, and reads the server's resident
//! memory (`/proc/PID/status`) before and after.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

#[derive(clap::Args)]
pub struct IdleArgs {
    /// The server's address (host:port, or an http:// URL)
    #[arg(long)]
    server: String,
    /// The server's process id (its memory is read from /proc)
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

/// One small form POST, answered 4xx by both AuthGate and the floor, on a kept-alive connection.
const REQUEST: &[u8] = b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\ngrant_type=idle&client_id=x";

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_owned())
}

/// Connects, asks once, reads the whole answer; the connection stays open. (Readiness and
/// `try_*` calls: the workspace's tokio has no `io-util`.)
async fn open(addr: &str) -> Result<TcpStream, String> {
    let err = |e: std::io::Error| e.to_string();
    let conn = TcpStream::connect(addr).await.map_err(err)?;
    let mut sent = 0;
    while sent < REQUEST.len() {
        conn.writable().await.map_err(err)?;
        match conn.try_write(&REQUEST[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        conn.readable().await.map_err(err)?;
        let n = match conn.try_read(&mut buf) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        };
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Ok(conn);
            }
        }
    }
}

pub async fn run(a: IdleArgs) -> Result<(), String> {
    let addr = a.server.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let before = rss_kib(a.pid)?;
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.connections {
        let (gate, addr) = (gate.clone(), addr.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            open(&addr).await
        });
    }
    let mut conns = Vec::with_capacity(a.connections);
    let mut errors = 0usize;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(c)) => conns.push(c),
            _ => errors += 1,
        }
    }
    // Let the server settle (its tasks park, freed request buffers return).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(a.pid)?;
    let mut buf = [0u8; 1];
    let open = conns
        .iter()
        .filter(|c| matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count();
    let per = after.saturating_sub(before) * 1024 / (conns.len().max(1) as u64);
    println!(
        "RESULT connections={} open={open} errors={errors} rss_before_kib={before} rss_after_kib={after} bytes_per_connection={per}",
        conns.len()
    );
    Ok(())
}
