//! Time as a value. The wall clock is read in a few marked places at the edges (the HTTP
//! boundary, the supervisor's timers, the offline CLI, a provider signing an outgoing request)
//! and passed down as [`Millis`]; actors and books never read it. `clippy.toml` disallows both
//! `SystemTime::now` and [`wall_clock_ms`], so every read carries an `#[allow]` with its reason.

/// Unix time in milliseconds.
pub type Millis = u64;
/// Unix time in seconds (token claims and records).
pub type Secs = u64;

/// The wall clock in Unix milliseconds. Call it only at an edge, and pass the value down.
#[allow(clippy::disallowed_methods)] // the one place that reads the system clock
pub fn wall_clock_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duration in milliseconds, saturating.
pub fn millis(d: std::time::Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
