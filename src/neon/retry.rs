//! When and how long to retry.
//!
//! Neon's guidance: 423 (a conflicting operation is running), 429 and 503 are always safe to
//! retry; connection failures before anything was sent too. Other 5xx and timeouts are retried
//! only when repeating the call cannot do harm (GET, PUT, DELETE, PATCH, and POSTs that set a
//! state, like suspend). A create that may have happened is never repeated here: the caller
//! checks for it first (see `NeonClient::create_snapshot`).
//!
//! Delays are exponential with *full jitter* (uniform in `[0, min(cap, base * 2^n)]`), which
//! spreads out clients that failed together, and bounded both in count and in total time.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::error::ApiError;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// No retry is started if it would end later than this after the first attempt began.
    pub max_elapsed: Duration,
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Upper bound of any single delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            max_elapsed: Duration::from_secs(120),
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (0-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter delay before retry number `retry`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

/// Whether a failed attempt may be repeated, and the reason label for telemetry.
pub fn retry_reason(err: &ApiError, idempotent: bool) -> Option<&'static str> {
    match err {
        ApiError::Status { status, .. } => match *status {
            423 if err.is_locked() => Some("locked"),
            423 => None,
            429 => Some("rate_limited"),
            503 => Some("unavailable"),
            s if s >= 500 && idempotent => Some("server_error"),
            _ => None,
        },
        ApiError::Connect { .. } => Some("connect"),
        ApiError::Transport { .. } if idempotent => Some("connect"),
        ApiError::Timeout { .. } if idempotent => Some("timeout"),
        _ => None,
    }
}

/// Tracks one logical call's retries.
#[derive(Debug)]
pub struct Budget<'a> {
    policy: &'a RetryPolicy,
    started: Instant,
    retries: u32,
}

impl<'a> Budget<'a> {
    pub fn start(policy: &'a RetryPolicy) -> Self {
        Budget {
            policy,
            started: Instant::now(),
            retries: 0,
        }
    }

    /// Retries done so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next retry, or `None` if the budget is spent. `retry_after` (from
    /// a 429's header) is honoured as a minimum; the jittered backoff is added on top so that
    /// clients told the same `Retry-After` do not all come back at the same instant.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.policy.max_retries {
            return None;
        }
        let backoff = self.policy.backoff(self.retries);
        // Saturating: `Retry-After` is whatever the server sent, and a delay beyond the
        // budget just means giving up now.
        let delay = retry_after.map_or(backoff, |ra| ra.saturating_add(backoff));
        if self.started.elapsed().saturating_add(delay) > self.policy.max_elapsed {
            return None;
        }
        self.retries += 1;
        Some(delay)
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            // Too large for a Duration (`1e30`): longer than any budget, so the longest.
            return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_retry_after_gives_up_instead_of_panicking() {
        let now = chrono::Utc::now();
        assert_eq!(parse_retry_after("1e30", now), Some(Duration::MAX));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("NaN", now), None);
        assert_eq!(
            parse_retry_after("2.5", now),
            Some(Duration::from_millis(2500))
        );
        let p = RetryPolicy::default();
        let mut b = Budget::start(&p);
        // A Retry-After longer than the whole budget: the error is returned, no wait.
        assert_eq!(b.next_delay(Some(Duration::MAX)), None);
        assert_eq!(b.next_delay(Some(Duration::from_secs(u64::MAX))), None);
        assert!(b.next_delay(Some(Duration::ZERO)).is_some());
    }

    fn status(s: u16) -> ApiError {
        ApiError::Status {
            status: s,
            code: None,
            message: String::new(),
            request_id: None,
            route: "/x",
        }
    }

    #[test]
    fn backoff_stays_within_full_jitter_bounds() {
        let p = RetryPolicy {
            max_retries: 10,
            max_elapsed: Duration::from_secs(600),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(3), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(2));
        assert_eq!(
            p.ceiling(60),
            Duration::from_secs(2),
            "no overflow for large n"
        );
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = p.backoff(3);
            assert!(d <= Duration::from_millis(800));
            seen_low |= d < Duration::from_millis(200);
            seen_high |= d > Duration::from_millis(600);
        }
        assert!(seen_low && seen_high, "delays spread over the whole range");
    }

    #[tokio::test(start_paused = true)]
    async fn budget_bounds_attempts_and_time() {
        let p = RetryPolicy {
            max_retries: 3,
            max_elapsed: Duration::from_secs(600),
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        };
        let mut b = Budget::start(&p);
        assert!(b.next_delay(None).is_some());
        assert!(b.next_delay(None).is_some());
        assert!(b.next_delay(None).is_some());
        assert_eq!(b.next_delay(None), None, "max_retries reached");

        let p = RetryPolicy {
            max_retries: 100,
            max_elapsed: Duration::from_secs(10),
            ..p
        };
        let mut b = Budget::start(&p);
        let d = b.next_delay(Some(Duration::from_secs(4))).unwrap();
        assert!(
            d >= Duration::from_secs(4) && d <= Duration::from_millis(4010),
            "{d:?}"
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(7))),
            None,
            "would end after max_elapsed"
        );
        let d = b.next_delay(Some(Duration::from_secs(5))).unwrap();
        assert!(
            d >= Duration::from_secs(5) && d <= Duration::from_millis(5010),
            "{d:?}"
        );
    }

    #[test]
    fn what_is_retried() {
        for s in [423, 429, 503] {
            assert!(retry_reason(&status(s), false).is_some(), "{s} always");
        }
        assert_eq!(retry_reason(&status(500), true), Some("server_error"));
        assert_eq!(
            retry_reason(&status(500), false),
            None,
            "POST 500 not blindly"
        );
        assert_eq!(retry_reason(&status(404), true), None);
        assert_eq!(retry_reason(&status(400), true), None);
        let t = ApiError::Timeout {
            route: "/x",
            request_id: "r".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(retry_reason(&t, true), Some("timeout"));
        assert_eq!(retry_reason(&t, false), None);
        let c = ApiError::Connect {
            route: "/x",
            detail: String::new(),
        };
        assert_eq!(retry_reason(&c, false), Some("connect"));
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 00:00:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
