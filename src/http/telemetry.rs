//! Per-request telemetry of the front end: request ids, and the HTTP request counters and
//! latency histograms (the rest of `/metrics` lives in `authgate_actors::metrics`). Kept cheap,
//! since every poll pays for it: routes and methods are small indexes, so recording a request
//! hashes four bytes and formats nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use authgate_actors::metrics::latency_histogram;
use hyper::Method;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "other"];

/// The method as an index into a fixed set (a client cannot grow the label space).
pub fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::OPTIONS => 3,
        Method::PUT => 4,
        Method::DELETE => 5,
        _ => 6,
    }
}

pub fn method_name(index: u8) -> &'static str {
    METHODS.get(usize::from(index)).copied().unwrap_or("other")
}

/// A request's labels, as indexes; written out as `route`, `method`, `status`.
#[derive(Clone, Debug)]
struct RequestKey {
    route: u8,
    method: u8,
    status: u16,
    /// The route names, to write the label out (not part of the key: hashing them would cost
    /// more than the rest of the request's telemetry).
    names: &'static [&'static str],
}

impl RequestKey {
    fn packed(&self) -> u32 {
        u32::from(self.route) << 24 | u32::from(self.method) << 16 | u32::from(self.status)
    }
}

impl PartialEq for RequestKey {
    fn eq(&self, other: &Self) -> bool {
        self.packed() == other.packed()
    }
}

impl Eq for RequestKey {}

impl std::hash::Hash for RequestKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u32(self.packed());
    }
}

#[derive(EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

impl EncodeLabelSet for RequestKey {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        RequestLabels {
            route: self.names.get(usize::from(self.route)).copied().unwrap_or("unmatched"),
            method: method_name(self.method),
            status: self.status,
        }
        .encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The HTTP metrics: requests by route, method and status; latency by route.
pub struct HttpMetrics {
    names: &'static [&'static str],
    requests: Family<RequestKey, Counter>,
    /// One histogram per route (indexed like `names`), so observing one hashes nothing.
    durations: Vec<Histogram>,
    registry: Registry,
}

impl HttpMetrics {
    /// `names`: every route's label, by index (the last one is for unmatched paths).
    pub fn new(names: &'static [&'static str]) -> Self {
        let requests = Family::<RequestKey, Counter>::default();
        let durations_family = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let durations = names
            .iter()
            .map(|route| durations_family.get_or_create(&RouteLabel { route }).clone())
            .collect();
        let mut registry = Registry::with_prefix("authgate");
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            Unit::Seconds,
            durations_family,
        );
        Self {
            names,
            requests,
            durations,
            registry,
        }
    }

    pub fn record(&self, route: usize, method: u8, status: u16, seconds: f64) {
        let route = route.min(self.names.len().saturating_sub(1));
        if let Some(h) = self.durations.get(route) {
            h.observe(seconds);
        }
        let key = RequestKey {
            route: u8::try_from(route).unwrap_or(u8::MAX),
            method,
            status,
            names: self.names,
        };
        self.requests.get_or_create(&key).inc();
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The caller's `X-Request-Id` when it is a sane one (1 to 128 of `A-Za-z0-9-_.:`), else a
/// new id: a random per-process prefix and a counter, in hex.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(v) = headers.get(X_REQUEST_ID)
        && (1..=128).contains(&v.len())
        && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    {
        return v.clone();
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut buf = [b'-'; 25];
    // Hex into a stack buffer: no formatting machinery on the hot path.
    let _ = hex::encode_to_slice(PREFIX.to_be_bytes(), &mut buf[..8]);
    let _ = hex::encode_to_slice(n.to_be_bytes(), &mut buf[9..]);
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123.x:y_z"));
        assert_eq!(request_id(&h), "abc-123.x:y_z");
        for bad in ["has space", "", "quote\"", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 25);
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn requests_are_labelled_by_name() {
        static NAMES: [&str; 2] = ["/oauth/token", "unmatched"];
        let m = HttpMetrics::new(&NAMES);
        m.record(0, method_index(&Method::POST), 400, 0.001);
        m.record(7, method_index(&Method::PATCH), 404, 0.001);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, m.registry()).unwrap();
        assert!(
            text.contains(r#"authgate_http_requests_total{route="/oauth/token",method="POST",status="400"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_http_requests_total{route="unmatched",method="other",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authgate_http_request_duration_seconds_count{route="/oauth/token"} 1"#),
            "{text}"
        );
    }
}
