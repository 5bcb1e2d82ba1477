//! The limits actor's records: failure counters shared by every process of a cluster, so
//! that the sign-in and user-code throttles count attempts across instances.

use super::port::Pending;
use crate::time::Millis;

/// Counters of failed attempts per key (a username, an address, a browser session), in fixed
/// windows. Owner: the limits actor. Only a database several processes share has them: one
/// process counts in memory.
pub trait LimitRepo: Send + Sync {
    /// Counts one attempt for `key` at `now`: a window older than `window_ms` starts again.
    /// Answers the attempts counted in the current window, this one included.
    fn hit(&self, key: &str, window_ms: Millis, now: Millis) -> Pending<u32>;
    /// Takes one attempt back (it turned out not to be a failure).
    fn forgive(&self, key: &str) -> Pending<()>;
    /// Forgets `key` (a success ends a run of failures).
    fn reset(&self, key: &str) -> Pending<()>;
    /// Deletes the counters whose window started before `before`.
    fn prune(&self, before: Millis) -> Pending<()>;
}
