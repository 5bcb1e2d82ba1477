//! How long the supervisor waits before restarting a child: 100 ms, doubling with each
//! failure within a minute, and a long cool-down once a child has failed too often.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The failures of each child within the last minute.
pub struct Restarts<K> {
    recent: HashMap<K, VecDeque<Instant>>,
    max: usize,
    cool_down: Duration,
}

const WINDOW: Duration = Duration::from_secs(60);
const FIRST_DELAY_MS: u64 = 100;

impl<K: Eq + Hash> Restarts<K> {
    pub fn new(max: usize, cool_down: Duration) -> Self {
        Self {
            recent: HashMap::new(),
            max,
            cool_down,
        }
    }

    /// `child` failed at `now`: how long to wait before restarting it, and whether it failed
    /// too often (then the wait is the cool-down and the count starts over).
    pub fn failed(&mut self, child: K, now: Instant) -> (Duration, bool) {
        let recent = self.recent.entry(child).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) > WINDOW) {
            recent.pop_front();
        }
        if recent.len() >= self.max {
            recent.clear();
            return (self.cool_down, true);
        }
        let delay = Duration::from_millis(FIRST_DELAY_MS << recent.len());
        recent.push_back(now);
        (delay, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_cool_down_and_start_over() {
        let mut r = Restarts::new(3, Duration::from_secs(15));
        let t0 = Instant::now();
        let ms = |d: (Duration, bool)| (d.0.as_millis(), d.1);
        assert_eq!(ms(r.failed("p", t0)), (100, false));
        assert_eq!(ms(r.failed("p", t0)), (200, false));
        assert_eq!(ms(r.failed("other", t0)), (100, false), "each child counts alone");
        assert_eq!(ms(r.failed("p", t0)), (400, false));
        assert_eq!(ms(r.failed("p", t0)), (15_000, true));
        assert_eq!(ms(r.failed("p", t0)), (100, false), "after the cool-down it starts over");
        // Failures older than a minute are forgotten.
        assert_eq!(ms(r.failed("other", t0 + Duration::from_secs(61))), (100, false));
    }
}
