//! Retries with exponential back-off, the one place the `backoff` crate is used.
//!
//! `backoff` is the chosen crate but is flagged unmaintained (RUSTSEC-2025-0012); keeping it
//! behind [`run`] means replacing it touches this file only.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};

/// How a failed call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// The first delay; each next one doubles (with ±30 % jitter).
    pub initial_delay: Duration,
    /// No delay, a server's `Retry-After` included, is longer than this.
    pub max_delay: Duration,
}

/// Jitter: each delay is drawn from ±30 % around its nominal value, so two successive nominal
/// delays (a factor 2 apart) never overlap and the waits always grow.
const JITTER: f64 = 0.3;

/// `backoff` caps the nominal interval and then adds jitter, which can overshoot the cap by the
/// jitter; this caps the wait itself.
struct Capped {
    inner: ExponentialBackoff,
    max: Duration,
}

impl Backoff for Capped {
    fn next_backoff(&mut self) -> Option<Duration> {
        self.inner.next_backoff().map(|d| d.min(self.max))
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
}

/// What one failed attempt means.
#[derive(Debug)]
pub enum Failure<E> {
    /// Worth another try, after `after` if the server said so (capped at the policy's maximum).
    Retry { error: E, after: Option<Duration> },
    /// Final: retrying cannot help.
    Fail(E),
}

/// Runs `attempt` until it succeeds, fails for good, or the retries run out; `on_retry` hears
/// of each retry and the wait before it. The caller bounds the total time.
pub async fn run<T, E, F, Fut>(policy: RetryPolicy, mut attempt: F, mut on_retry: impl FnMut(&E, Duration)) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let backoff = Capped {
        inner: ExponentialBackoffBuilder::new()
            .with_initial_interval(policy.initial_delay)
            .with_max_interval(policy.max_delay)
            .with_multiplier(2.0)
            .with_randomization_factor(JITTER)
            .with_max_elapsed_time(None)
            .build(),
        max: policy.max_delay,
    };
    let mut attempts = 0u32;
    let op = || {
        attempts += 1;
        let last = attempts > policy.max_retries;
        let fut = attempt();
        async move {
            fut.await.map_err(|f| match f {
                Failure::Retry { error, .. } if last => backoff::Error::Permanent(error),
                Failure::Retry { error, after: Some(d) } => backoff::Error::retry_after(error, d.min(policy.max_delay)),
                Failure::Retry { error, after: None } => backoff::Error::transient(error),
                Failure::Fail(error) => backoff::Error::Permanent(error),
            })
        }
    };
    backoff::future::retry_notify(backoff, op, |e: E, d| on_retry(&e, d)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(60),
        }
    }

    #[tokio::test]
    async fn retries_the_configured_number_of_times_with_growing_capped_delays() {
        let calls = Mutex::new(0);
        let mut waits = Vec::new();
        let r: Result<(), &str> = run(
            policy(4),
            || {
                *calls.lock().unwrap() += 1;
                async { Err(Failure::Retry { error: "503", after: None }) }
            },
            |_, d| waits.push(d),
        )
        .await;
        assert_eq!(r, Err("503"));
        assert_eq!(*calls.lock().unwrap(), 5, "one attempt and four retries");
        assert_eq!(waits.len(), 4);
        assert!(waits[0] < waits[1] && waits[1] < waits[2], "{waits:?}");
        assert!(waits.iter().all(|d| *d <= Duration::from_millis(60)), "{waits:?}");
    }

    #[tokio::test]
    async fn final_failures_and_successes_are_not_retried() {
        let calls = Mutex::new(0);
        let r: Result<(), &str> = run(
            policy(3),
            || {
                *calls.lock().unwrap() += 1;
                async { Err(Failure::Fail("401")) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!((r, *calls.lock().unwrap()), (Err("401"), 1));
        let r: Result<u8, &str> = run(policy(3), || async { Ok(7) }, |_, _| {}).await;
        assert_eq!(r, Ok(7));
    }

    #[tokio::test]
    async fn zero_retries_disables_retrying() {
        let calls = Mutex::new(0);
        let r: Result<(), &str> = run(
            policy(0),
            || {
                *calls.lock().unwrap() += 1;
                async {
                    Err(Failure::Retry {
                        error: "timeout",
                        after: None,
                    })
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!((r, *calls.lock().unwrap()), (Err("timeout"), 1));
    }

    #[tokio::test]
    async fn retry_after_is_honoured_up_to_the_maximum_delay() {
        let mut waits = Vec::new();
        let mut first = true;
        let _: Result<(), &str> = run(
            policy(2),
            || {
                let after = if first {
                    Duration::from_millis(40)
                } else {
                    Duration::from_secs(3600)
                };
                first = false;
                async move {
                    Err(Failure::Retry {
                        error: "429",
                        after: Some(after),
                    })
                }
            },
            |_, d| waits.push(d),
        )
        .await;
        assert_eq!(waits, vec![Duration::from_millis(40), Duration::from_millis(60)]);
    }
}
