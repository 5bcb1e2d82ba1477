//! The request log line (`target: access`, `message: request`), built by hand.
//!
//! Every request pays for this line, and `tracing-subscriber`'s formatter cost about a quarter
//! of a pending poll's instructions (a visitor and `fmt::Debug` per field, styling, the
//! timestamp through `fmt`). The line is the same, text or JSON as `LOG_FORMAT` says, but it is
//! written with plain byte pushes into a buffer each thread reuses, then handed to the same
//! non-blocking log writer as every other line (so the log thread writes it, and a full queue
//! drops and counts it like any other). Whether it is written still follows `LOG_LEVEL` (and a
//! reload): the `access` target at `info`.
//!
//! Without the daemon's logger (a server embedded in tests), no request line is written.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;

use tracing_appender::non_blocking::NonBlocking;

/// Where request lines go, and in which format; set once by the daemon's logger.
struct Sink {
    writer: NonBlocking,
    json: bool,
    ansi: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends request lines to `writer`, as JSON objects or as text (with ANSI colours on a terminal).
pub fn install(writer: NonBlocking, json: bool, ansi: bool) {
    let _ = SINK.set(Sink { writer, json, ansi });
}

/// Whether a request line is wanted now (`LOG_LEVEL` lets `access` at `info` through, and a
/// sink is installed). Cheap: tracing caches the answer per call site until a reload.
pub fn enabled() -> bool {
    SINK.get().is_some() && tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// One request, as logged.
pub struct Line<'a> {
    pub request_id: &'a [u8],
    pub method: &'static str,
    /// The path only, never the query.
    pub path: &'a str,
    pub route: &'static str,
    pub status: u16,
    pub duration_us: u64,
    pub client: Option<IpAddr>,
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// Writes the line (when a sink is installed).
pub fn write(line: &Line<'_>) {
    let Some(sink) = SINK.get() else { return };
    #[allow(clippy::disallowed_methods)] // a log line's own timestamp, as every log line has
    let now = std::time::SystemTime::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    BUF.with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else { return };
        b.clear();
        if sink.json {
            json_line(&mut b, micros, line);
        } else {
            text_line(&mut b, micros, line, sink.ansi);
        }
        // `NonBlocking` queues a copy for the log thread, or drops and counts it when full.
        let _ = sink.writer.clone().write_all(&b);
    });
}

/// A field's value, written the way each format writes it.
enum Value<'a> {
    Text(&'a [u8]),
    Number(u64),
    /// An address: bare in text (like the other lines' displayed values), quoted in JSON.
    Address(IpAddr),
}

/// Every field of the line, in order (the client's address only when known).
fn fields<'a>(l: &'a Line<'a>) -> impl Iterator<Item = (&'static str, Value<'a>)> {
    [
        ("request_id", Some(Value::Text(l.request_id))),
        ("method", Some(Value::Text(l.method.as_bytes()))),
        ("path", Some(Value::Text(l.path.as_bytes()))),
        ("route", Some(Value::Text(l.route.as_bytes()))),
        ("status", Some(Value::Number(u64::from(l.status)))),
        ("duration_us", Some(Value::Number(l.duration_us))),
        ("client", l.client.map(Value::Address)),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.map(|v| (name, v)))
}

fn text_line(b: &mut Vec<u8>, micros: u64, l: &Line<'_>, ansi: bool) {
    if ansi {
        b.extend_from_slice(b"\x1b[2m");
    }
    timestamp(b, micros);
    if ansi {
        b.extend_from_slice(b"\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2maccess\x1b[0m\x1b[2m:\x1b[0m request");
    } else {
        b.extend_from_slice(b"  INFO access: request");
    }
    for (name, value) in fields(l) {
        b.push(b' ');
        b.extend_from_slice(name.as_bytes());
        b.push(b'=');
        match value {
            Value::Text(t) => quoted(b, t),
            Value::Number(n) => number(b, n),
            Value::Address(a) => {
                let _ = write!(b, "{a}");
            }
        }
    }
    b.push(b'\n');
}

fn json_line(b: &mut Vec<u8>, micros: u64, l: &Line<'_>) {
    b.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(b, micros);
    b.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
    for (name, value) in fields(l) {
        b.extend_from_slice(b",\"");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\":");
        match value {
            Value::Text(t) => quoted(b, t),
            Value::Number(n) => number(b, n),
            Value::Address(a) => {
                let _ = write!(b, "\"{a}\"");
            }
        }
    }
    b.extend_from_slice(b",\"target\":\"access\"}\n");
}

/// A string in double quotes, escaped so that it is valid both as JSON and as a Rust `Debug`
/// string would read: `"` and `\` escaped, control bytes as `\u00XX`.
fn quoted(b: &mut Vec<u8>, s: &[u8]) {
    b.push(b'"');
    // Ids, paths and routes almost never need escaping: one check, one copy.
    if !s.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20 || c == 0x7f) {
        b.extend_from_slice(s);
        b.push(b'"');
        return;
    }
    for &c in s {
        match c {
            b'"' | b'\\' => b.extend_from_slice(&[b'\\', c]),
            0..0x20 | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                b.extend_from_slice(b"\\u00");
                b.push(HEX[usize::from(c >> 4)]);
                b.push(HEX[usize::from(c & 15)]);
            }
            _ => b.push(c),
        }
    }
    b.push(b'"');
}

fn number(b: &mut Vec<u8>, n: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` in exactly `width` digits, zero-padded.
fn padded(b: &mut Vec<u8>, n: u64, width: usize) {
    let digits = itoa::Buffer::new().format(n).len();
    b.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits)));
    number(b, n);
}

/// Unix microseconds as RFC 3339 UTC with microseconds (`2026-12-07T03:36:25.584814Z`), the
/// form the other log lines use.
fn timestamp(b: &mut Vec<u8>, micros: u64) {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, for non-negative days).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    padded(b, year, 4);
    b.push(b'-');
    padded(b, month, 2);
    b.push(b'-');
    padded(b, day, 2);
    b.push(b'T');
    padded(b, rem / 3_600, 2);
    b.push(b':');
    padded(b, rem % 3_600 / 60, 2);
    b.push(b':');
    padded(b, rem % 60, 2);
    b.push(b'.');
    padded(b, micros % 1_000_000, 6);
    b.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(client: Option<IpAddr>) -> Line<'static> {
        Line {
            request_id: b"req-42.abc",
            method: "POST",
            path: "/oauth/\"token\"\\\n",
            route: "/oauth/token",
            status: 401,
            duration_us: 1_552,
            client,
        }
    }

    #[test]
    fn timestamps_match_rfc3339_with_microseconds() {
        for (micros, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1_765_078_585_584_814, "2025-12-07T03:36:25.584814Z"),
            (951_782_400_000_001, "2000-02-29T00:00:00.000001Z"),
            (4_102_444_799_999_999, "2099-12-31T23:59:59.999999Z"),
        ] {
            let mut b = Vec::new();
            timestamp(&mut b, micros);
            assert_eq!(String::from_utf8(b).unwrap(), want);
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
            assert_eq!(humantime::format_rfc3339_micros(t).to_string(), want, "the same as humantime");
        }
    }

    #[test]
    fn the_json_line_is_one_object_with_every_field() {
        let mut b = Vec::new();
        json_line(&mut b, 1_765_078_585_584_814, &line(Some("127.0.0.1".parse().unwrap())));
        assert_eq!(b.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["timestamp"], "2025-12-07T03:36:25.584814Z");
        assert_eq!(v["request_id"], "req-42.abc");
        assert_eq!(v["path"], "/oauth/\"token\"\\\n", "escaped and read back whole");
        assert_eq!((v["status"].as_u64(), v["duration_us"].as_u64()), (Some(401), Some(1552)));
        assert_eq!(v["client"], "127.0.0.1");
        let mut b = Vec::new();
        json_line(&mut b, 0, &line(None));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v.get("client").is_none(), "no address, no field");
    }

    #[test]
    fn the_text_line_reads_like_the_other_lines() {
        let mut b = Vec::new();
        text_line(&mut b, 1_765_078_585_584_814, &line(Some("::1".parse().unwrap())), false);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "2025-12-07T03:36:25.584814Z  INFO access: request request_id=\"req-42.abc\" method=\"POST\" \
             path=\"/oauth/\\\"token\\\"\\\\\\u000a\" route=\"/oauth/token\" status=401 duration_us=1552 client=::1\n"
        );
    }
}
