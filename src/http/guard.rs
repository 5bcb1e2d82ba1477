//! Protection at the edge: who the client is (its IP, through trusted proxies only), how often
//! it may fail or ask (throttles with growing lockouts), how much work is admitted at once, and
//! the security headers on every response.
//!
//! Throttle counters are ephemeral edge state, like the connection count: they live here, in
//! sharded maps, not in an actor, so checking one costs no mailbox round trip and a flood is
//! refused before it reaches any actor.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use authgate_actors::limits::LimitMsg;
use authgate_actors::supervisor::Actors;

use super::Response;

/// The client's address: the socket's peer, or, when that peer is a trusted proxy, the
/// right-most address in `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted
/// proxy. A header from anyone else is ignored.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    hops.into_iter()
        .map(|ip| ip.to_canonical())
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The key an address is throttled by: IPv4 addresses alone, IPv6 addresses by their /64
/// (one subscriber's whole prefix, so rotating addresses within it gains nothing).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        v4 => v4.to_string(),
    }
}

/// How the address a device code was requested from compares with the approving browser's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origins {
    /// One network (one IPv4 address, or one IPv6 /64).
    Same,
    /// Different networks of the same family: the phishing pattern, or a device elsewhere.
    Different,
    /// Not comparable: one is IPv4 and the other IPv6 (common on dual-stack home networks),
    /// or one is unknown.
    Unknown,
}

/// Compares the address a code was requested from with the approver's.
pub fn compare_origins(requested: Option<&str>, approver: Option<&str>) -> Origins {
    let parse = |a: Option<&str>| a.and_then(|a| a.parse::<IpAddr>().ok());
    match (parse(requested), parse(approver)) {
        (Some(a), Some(b)) if a.is_ipv4() == b.is_ipv4() => {
            if address_key(a) == address_key(b) {
                Origins::Same
            } else {
                Origins::Different
            }
        }
        _ => Origins::Unknown,
    }
}

/// [`address_key`] of an address in text (anything unparsable is its own key).
pub fn throttle_key(ip: &str) -> String {
    ip.parse::<IpAddr>().map_or_else(|_| ip.to_owned(), address_key)
}

/// Every address a proxy chain reported, first hop first. `X-Forwarded-For` wins when present
/// (the header common proxies append to); `Forwarded` counts only without it, so a client
/// cannot slip a `Forwarded` header past a proxy that only maintains `X-Forwarded-For`.
fn forwarded_hops(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut hops = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else { continue };
        hops.extend(v.split(',').filter_map(|h| parse_node(h.trim())));
    }
    if !hops.is_empty() {
        return hops;
    }
    for v in headers.get_all("forwarded") {
        let Ok(v) = v.to_str() else { continue };
        for element in v.split(',') {
            for pair in element.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else { continue };
                if k.trim().eq_ignore_ascii_case("for")
                    && let Some(ip) = parse_node(val.trim().trim_matches('"'))
                {
                    hops.push(ip);
                }
            }
        }
    }
    hops
}

/// `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`, `[2001:db8::1]:80` or `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

/// How a throttle counts.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleRule {
    /// This many events within `window` lock the key.
    pub max: u32,
    pub window: Duration,
    /// The first lockout; each next one (before the key is forgiven) doubles, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    window_start: u64,
    /// Lockouts so far (forgiven after a quiet `max_lockout`).
    strikes: u32,
    locked_until: u64,
}

const SHARDS: usize = 16;
/// A shard that has doubled since its last sweep drops entries that are neither locked nor
/// counting any more; one still this full after that keeps only its locked keys.
const SHARD_MIN_SWEEP: usize = 1024;
const SHARD_HARD_CAP: usize = 65_536;

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    /// Entries left by the last sweep.
    after_sweep: usize,
}

/// Counts events per key (an address, a username, a session) and locks a key that has too
/// many, for a lockout that grows with each repeat. Times are Unix milliseconds.
pub struct Throttle {
    rule: ThrottleRule,
    shards: [Mutex<Shard>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    pub fn new(rule: ThrottleRule) -> Self {
        Self {
            rule,
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// `Err(wait)` while `key` is locked out.
    pub fn check(&self, key: &str, now: u64) -> Result<(), Duration> {
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        match shard.entries.get(key) {
            Some(e) if e.locked_until > now => Err(Duration::from_millis(e.locked_until - now)),
            _ => Ok(()),
        }
    }

    /// Counts one event: `Err(wait)` if the key was already locked out (the event is refused);
    /// the `max`-th event within the window is allowed and locks the key.
    pub fn hit(&self, key: &str, now: u64) -> Result<(), Duration> {
        let r = self.rule;
        let mut guard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let shard = &mut *guard;
        if shard.entries.len() >= (shard.after_sweep * 2).max(SHARD_MIN_SWEEP) {
            let quiet = Self::ms(r.window).max(Self::ms(r.max_lockout));
            shard
                .entries
                .retain(|_, e| e.locked_until > now || now.saturating_sub(e.window_start) < quiet);
            if shard.entries.len() >= SHARD_HARD_CAP {
                // Still full of live keys (a flood of distinct names): keep the locked ones.
                shard.entries.retain(|_, e| e.locked_until > now);
            }
            shard.after_sweep = shard.entries.len();
        }
        let e = shard.entries.entry(key.to_owned()).or_insert(Entry {
            count: 0,
            window_start: now,
            strikes: 0,
            locked_until: 0,
        });
        if e.locked_until > now {
            return Err(Duration::from_millis(e.locked_until - now));
        }
        if now.saturating_sub(e.window_start) >= Self::ms(r.window) {
            // A quiet spell as long as the longest lockout forgives earlier strikes.
            if now.saturating_sub(e.window_start) >= Self::ms(r.max_lockout) {
                e.strikes = 0;
            }
            e.count = 0;
            e.window_start = now;
        }
        e.count += 1;
        if e.count >= r.max {
            // This event is the last one allowed; the key is locked from now on.
            Self::strike(&r, e, now);
        }
        Ok(())
    }

    /// Locks `key` from `now`, as its `max`-th event would (when other instances counted the
    /// others); answers for how long.
    pub fn lock(&self, key: &str, now: u64) -> Duration {
        let r = self.rule;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let e = shard.entries.entry(key.to_owned()).or_insert(Entry {
            count: 0,
            window_start: now,
            strikes: 0,
            locked_until: 0,
        });
        if e.locked_until > now {
            return Duration::from_millis(e.locked_until - now);
        }
        Self::strike(&r, e, now)
    }

    /// Locks an entry from `now` for its next lockout (each one doubles, up to the most);
    /// answers for how long.
    fn strike(r: &ThrottleRule, e: &mut Entry, now: u64) -> Duration {
        e.strikes = e.strikes.saturating_add(1);
        let lock = r.lockout.saturating_mul(1u32 << (e.strikes - 1).min(16)).min(r.max_lockout);
        e.locked_until = now.saturating_add(Self::ms(lock));
        e.count = 0;
        e.window_start = now;
        lock
    }

    /// Counts one event for `key` here and, on a cluster, across every instance (`name` keeps
    /// this throttle's keys apart from the others'): `Err(wait)` when either count says the
    /// key is locked out. If the cluster-wide count cannot be had (the database is down), the
    /// count here decides.
    pub async fn hit_everywhere(&self, actors: &Actors, name: &str, key: &str, now: u64) -> Result<(), Duration> {
        self.hit(key, now)?;
        let Some(limits) = actors.limits() else { return Ok(()) };
        let (shared, window_ms) = (format!("{name}:{key}"), Self::ms(self.rule.window));
        let counted = limits
            .ask(|reply| LimitMsg::Hit {
                key: shared,
                window_ms,
                now,
                reply,
            })
            .await;
        match counted {
            Ok(Ok(n)) if n > self.rule.max => Err(self.lock(key, now)),
            Ok(Ok(n)) if n == self.rule.max => {
                // The last attempt allowed, as here: it locks the key.
                self.lock(key, now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// [`Throttle::forgive`] here and, on a cluster, in the shared count.
    pub fn forgive_everywhere(&self, actors: &Actors, name: &str, key: &str, now: u64) {
        self.forgive(key, now);
        if let Some(limits) = actors.limits() {
            let _ = limits.cast(LimitMsg::Forgive {
                key: format!("{name}:{key}"),
            });
        }
    }

    /// [`Throttle::reset`] here and, on a cluster, in the shared count.
    pub fn reset_everywhere(&self, actors: &Actors, name: &str, key: &str) {
        self.reset(key);
        if let Some(limits) = actors.limits() {
            let _ = limits.cast(LimitMsg::Reset {
                key: format!("{name}:{key}"),
            });
        }
    }

    /// Forgets `key` (a success ends a run of failures).
    pub fn reset(&self, key: &str) {
        self.shard(key).lock().unwrap_or_else(|p| p.into_inner()).entries.remove(key);
    }

    /// Takes back one counted event that turned out fine (unless it already locked the key).
    pub fn forgive(&self, key: &str, now: u64) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = shard.entries.get_mut(key)
            && e.locked_until <= now
        {
            e.count = e.count.saturating_sub(1);
        }
    }
}

/// Seconds to put in `Retry-After` (at least 1).
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The headers every response carries: a strict CSP (no inline script or style, nothing from
/// elsewhere, no framing), no MIME sniffing, no referrer, and HSTS when served over https.
pub fn secure_headers(r: &mut Response, https: bool) {
    use hyper::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
    const CSP: HeaderValue = HeaderValue::from_static(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    let h = r.headers_mut();
    // A page that sets its own (the consent page lets its form lead on to the client) keeps it.
    h.entry(CONTENT_SECURITY_POLICY).or_insert(CSP);
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if https {
        h.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
}

/// The edge limits of one server.
pub struct Guard {
    pub trusted: Vec<IpNet>,
    /// Requests being handled; when none is left, new ones are shed at once.
    pub inflight: std::sync::Arc<tokio::sync::Semaphore>,
    /// Failed sign-ins per typed username, and per address.
    pub login_user: Throttle,
    pub login_ip: Throttle,
    /// Wrong user codes per browser session, per address, and from everyone together.
    pub code_session: Throttle,
    pub code_ip: Throttle,
    pub code_global: Throttle,
    /// Device codes requested per address.
    pub device_codes: Throttle,
    /// Client-credentials tokens per client.
    pub client_tokens: Throttle,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Guard {
    pub fn new(s: &crate::config::Settings) -> Self {
        let login = |max| ThrottleRule {
            max,
            window: 15 * MINUTE,
            lockout: Duration::from_secs(30),
            max_lockout: 15 * MINUTE,
        };
        let codes = |max| ThrottleRule {
            max,
            window: MINUTE,
            lockout: MINUTE,
            max_lockout: 60 * MINUTE,
        };
        Self {
            trusted: s.trusted_proxies.0.clone(),
            inflight: std::sync::Arc::new(tokio::sync::Semaphore::new(s.max_inflight as usize)),
            login_user: Throttle::new(login(s.login_failure_limit)),
            login_ip: Throttle::new(login(s.login_failure_limit.saturating_mul(4))),
            code_session: Throttle::new(codes(s.user_code_failure_limit)),
            code_ip: Throttle::new(codes(s.user_code_failure_limit.saturating_mul(2))),
            code_global: Throttle::new(ThrottleRule {
                max: s.user_code_global_failure_limit,
                window: MINUTE,
                lockout: MINUTE,
                max_lockout: MINUTE,
            }),
            device_codes: Throttle::new(ThrottleRule {
                max: s.device_code_rate_limit,
                window: MINUTE,
                lockout: MINUTE,
                max_lockout: MINUTE,
            }),
            client_tokens: Throttle::new(ThrottleRule {
                max: s.client_credentials_rate_limit,
                window: MINUTE,
                lockout: MINUTE,
                max_lockout: MINUTE,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_network_and_family() {
        assert_eq!(compare_origins(Some("203.0.113.9"), Some("203.0.113.9")), Origins::Same);
        assert_eq!(compare_origins(Some("203.0.113.9"), Some("198.51.100.4")), Origins::Different);
        assert_eq!(
            compare_origins(Some("2001:db8:1:2::10"), Some("2001:db8:1:2:abcd::1")),
            Origins::Same,
            "one /64"
        );
        assert_eq!(
            compare_origins(Some("2001:db8:1:2::10"), Some("2001:db8:9:2::1")),
            Origins::Different
        );
        assert_eq!(compare_origins(Some("203.0.113.9"), Some("2001:db8::1")), Origins::Unknown);
        assert_eq!(compare_origins(None, Some("203.0.113.9")), Origins::Unknown);
        assert_eq!(compare_origins(Some("garbage"), Some("203.0.113.9")), Origins::Unknown);
    }

    fn rule() -> ThrottleRule {
        ThrottleRule {
            max: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(40),
        }
    }

    #[test]
    fn lockouts_start_after_the_limit_and_grow() {
        let t = Throttle::new(rule());
        let mut now = 1_000_000;
        for _ in 0..3 {
            assert!(t.hit("k", now).is_ok());
        }
        assert_eq!(t.hit("k", now), Err(Duration::from_secs(10)));
        assert!(t.check("k", now + 9_999).is_err());
        assert!(t.check("other", now).is_ok(), "keys are independent");
        now += 10_000;
        assert!(t.check("k", now).is_ok());
        for _ in 0..3 {
            assert!(t.hit("k", now).is_ok());
        }
        assert_eq!(t.hit("k", now), Err(Duration::from_secs(20)), "the second lockout doubles");
        now += 20_000;
        for _ in 0..3 {
            t.hit("k", now).unwrap();
        }
        assert_eq!(t.hit("k", now), Err(Duration::from_secs(40)));
        now += 40_000;
        for _ in 0..3 {
            t.hit("k", now).unwrap();
        }
        assert_eq!(t.hit("k", now), Err(Duration::from_secs(40)), "capped");
        t.reset("k");
        assert!(t.hit("k", now).is_ok());
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let req = |peer: &str, xff: Option<&str>, fwd: Option<&str>| {
            let mut b = hyper::Request::builder();
            if let Some(x) = xff {
                b = b.header("x-forwarded-for", x);
            }
            if let Some(f) = fwd {
                b = b.header("forwarded", f);
            }
            let r = b.body(()).unwrap();
            (peer.parse::<IpAddr>().unwrap(), r)
        };
        let pick = |(peer, r): &(IpAddr, hyper::Request<()>)| client_addr(*peer, r.headers(), &trusted);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            pick(&req("203.0.113.9", Some("1.2.3.4"), None)),
            ip("203.0.113.9"),
            "untrusted peer: header ignored"
        );
        assert_eq!(pick(&req("10.0.0.2", Some("1.2.3.4, 10.0.0.7"), None)), ip("1.2.3.4"));
        assert_eq!(
            pick(&req("10.0.0.2", Some("6.6.6.6, 1.2.3.4"), None)),
            ip("1.2.3.4"),
            "the client cannot prepend"
        );
        assert_eq!(
            pick(&req("10.0.0.2", None, Some("for=\"[2001:db8::1]:4711\";proto=https"))),
            ip("2001:db8::1")
        );
        assert_eq!(pick(&req("10.0.0.2", Some("garbage"), None)), ip("10.0.0.2"));
        assert_eq!(
            pick(&req("10.0.0.2", Some("1.2.3.4"), Some("for=9.9.9.9"))),
            ip("1.2.3.4"),
            "X-Forwarded-For wins over a Forwarded header the proxy passed through"
        );
        assert_eq!(throttle_key("2001:db8:1:2:aaaa::1"), throttle_key("2001:db8:1:2:bbbb::9"));
        assert_ne!(throttle_key("2001:db8:1:2::1"), throttle_key("2001:db8:1:3::1"));
        assert_eq!(throttle_key("192.0.2.1"), "192.0.2.1");
    }
}
